//! Membership changes through the log, on the perfect-network harness of `mod.rs`: a learner
//! catches up and decides nothing until promoted; a change takes effect `delay` slots after its
//! decision, padded with no-ops when nothing else is written; two changes asked at once are
//! applied one after the other; a removed leader hands over and a removed member stops
//! bidding for leadership.

use super::*;
use crate::paxos::{MemberChange, MemberRole};

/// The delay these tests run with: small, so that a change takes effect within a few batches.
const DELAY_SLOTS: u64 = 8;

fn cluster(n: u16) -> Cluster {
    let mut c = Cluster::new(n);
    c.delay_slots = DELAY_SLOTS;
    for i in 0..usize::from(n) {
        c.restart(i, false);
    }
    c.ticks(100);
    c
}

fn change(seq: u64, change: MemberChange) -> Command {
    Command {
        id: CommandId::new(NodeId(900), 0, seq),
        op: Op::ChangeMembers(change),
    }
}

fn propose_at_leader(c: &mut Cluster, command: Command) {
    let leader = c.leader().expect("a leader");
    c.nodes[leader].propose(command).expect("proposed");
}

/// The slot at which node `i` applied the command with id `id`.
fn slot_of(c: &Cluster, i: usize, id: CommandId) -> Option<Slot> {
    c.applied[i].iter().find_map(|(slot, v)| match v {
        Value::Command(cmd) if cmd.id == id => Some(*slot),
        _ => None,
    })
}

fn applied_everywhere(c: &Cluster, nodes: &[usize], id: CommandId) -> bool {
    nodes.iter().all(|&i| slot_of(c, i, id).is_some())
}

#[test]
fn a_learner_catches_up_decides_nothing_and_counts_once_promoted() {
    let mut c = cluster(3);
    for seq in 0..20 {
        propose_at_leader(&mut c, put(0, seq, "before"));
    }
    c.ticks(10);
    let learner = c.add_node(3);
    let add = change(
        1,
        MemberChange::AddLearner {
            addr: "n3:3000".into(),
        },
    );
    propose_at_leader(&mut c, add.clone());
    c.ticks(30);
    let added_at = slot_of(&c, 0, add.id).expect("the change is decided");
    for i in 0..4 {
        let history = c.nodes[i].member_history();
        assert_eq!(
            history
                .at(added_at + DELAY_SLOTS)
                .member(NodeId(3))
                .map(|m| m.role),
            Some(MemberRole::Learner),
            "node {i} sees the learner from slot {added_at} + delay"
        );
    }
    // With nothing else written, no-ops fill the slots until the change is in force.
    let leader = c.leader().expect("a leader");
    assert!(c.nodes[leader].status().decided >= added_at + DELAY_SLOTS - 1);
    assert_eq!(c.nodes[learner].member_role(), Some(MemberRole::Learner));
    assert_eq!(
        c.applied[learner].last(),
        c.applied[leader].last(),
        "the learner applied everything the leader did"
    );

    // A learner's vote decides nothing: with the two other voters down, the leader and the
    // learner are no majority.
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &others {
        c.up[i] = false;
    }
    let stalled = put(0, 100, "stalled");
    c.nodes[leader].propose(stalled.clone()).expect("proposed");
    c.ticks(40);
    assert!(
        slot_of(&c, leader, stalled.id).is_none() && slot_of(&c, learner, stalled.id).is_none(),
        "a leader and a learner decided a write without a majority of voters"
    );
    for &i in &others {
        c.restart(i, false);
    }
    c.ticks(100);
    assert!(applied_everywhere(&c, &[0, 1, 2, learner], stalled.id));

    // Promoted, then the two first voters removed: the promoted learner's vote is what lets
    // {n2, n3} decide without n0 and n1.
    propose_at_leader(&mut c, change(2, MemberChange::Promote { id: NodeId(3) }));
    propose_at_leader(
        &mut c,
        change(
            3,
            MemberChange::Remove {
                id: NodeId(0),
                force: false,
            },
        ),
    );
    propose_at_leader(
        &mut c,
        change(
            4,
            MemberChange::Remove {
                id: NodeId(1),
                force: false,
            },
        ),
    );
    c.ticks(200);
    for i in [2, learner] {
        let history = c.nodes[i].member_history();
        assert_eq!(
            history.latest().voters(),
            &[NodeId(2), NodeId(3)],
            "node {i}"
        );
        let decided = c.nodes[i].status().decided;
        assert_eq!(history.at(decided + 1).voters(), &[NodeId(2), NodeId(3)]);
    }
    assert_eq!(c.nodes[0].member_role(), None, "n0 knows it was removed");
    c.up[0] = false;
    c.up[1] = false;
    c.ticks(100);
    let after = put(2, 200, "after");
    propose_at_leader(&mut c, after.clone());
    c.ticks(20);
    assert!(applied_everywhere(&c, &[2, learner], after.id));
}

#[test]
fn removing_the_leader_hands_leadership_to_a_voter_that_stays() {
    let mut c = cluster(3);
    let old = c.leader().expect("a leader");
    let old_id = c.ids[old];
    propose_at_leader(
        &mut c,
        change(
            1,
            MemberChange::Remove {
                id: old_id,
                force: false,
            },
        ),
    );
    c.ticks(150);
    let new = c.leader().expect("a new leader");
    assert_ne!(new, old, "the removed member stopped leading");
    assert!(c.nodes[new].member_history().latest().is_voter(c.ids[new]));
    assert_eq!(c.nodes[old].member_role(), None);
    // It stays quiet: no campaigns, though it hears from nobody any more.
    let campaigns = c.nodes[old].status().campaigns;
    c.ticks(200);
    assert_eq!(c.nodes[old].status().campaigns, campaigns);
    assert_eq!(
        c.leader(),
        Some(new),
        "and it never disturbed the new leader"
    );
    let write = put(1, 1, "k");
    c.nodes[new].propose(write.clone()).expect("proposed");
    c.ticks(20);
    let stayed: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    assert!(applied_everywhere(&c, &stayed, write.id));
}

#[test]
fn two_changes_asked_at_once_are_applied_one_after_the_other() {
    let mut c = cluster(3);
    c.add_node(3);
    c.add_node(4);
    let first = change(1, MemberChange::AddLearner { addr: "a:1".into() });
    let second = change(2, MemberChange::AddLearner { addr: "b:1".into() });
    let leader = c.leader().expect("a leader");
    c.nodes[leader].propose(first.clone()).expect("proposed");
    c.nodes[leader].propose(second.clone()).expect("proposed");
    c.ticks(100);
    let (a, b) = (
        slot_of(&c, 0, first.id).expect("first decided"),
        slot_of(&c, 0, second.id).expect("second decided"),
    );
    assert!(
        b >= a + DELAY_SLOTS,
        "the second change ({b}) entered before the first ({a}) took effect"
    );
    for i in 0..5 {
        let latest = c.nodes[i].member_history().latest();
        let learners: Vec<(NodeId, &str)> = latest
            .members()
            .iter()
            .filter(|m| m.role == MemberRole::Learner)
            .map(|m| (m.id, m.addr.as_str()))
            .collect();
        assert_eq!(
            learners,
            vec![(NodeId(3), "a:1"), (NodeId(4), "b:1")],
            "node {i}"
        );
    }
}

#[test]
fn a_restarted_node_rebuilds_the_membership_from_its_log() {
    let mut c = cluster(3);
    c.add_node(3);
    propose_at_leader(
        &mut c,
        change(1, MemberChange::AddLearner { addr: "a:1".into() }),
    );
    c.ticks(50);
    let before = c.nodes[0].member_history().clone();
    assert!(before.latest().is_member(NodeId(3)));
    c.restart(0, false);
    c.ticks(50);
    assert_eq!(c.nodes[0].member_history().latest(), before.latest());
}

/// The reason the change with id `id` was refused, as node `i` applied it (`None`: decided as
/// asked, or not applied there).
fn refusal(c: &Cluster, i: usize, id: CommandId) -> Option<String> {
    c.applied[i].iter().find_map(|(_, v)| match v {
        Value::Command(cmd) if cmd.id == id => match &cmd.op {
            Op::ChangeMembers(MemberChange::Refused { reason, .. }) => Some(reason.clone()),
            _ => None,
        },
        _ => None,
    })
}

#[test]
fn the_leader_refuses_to_promote_a_learner_that_is_down_or_to_remove_a_reachable_majority() {
    let mut c = cluster(3);
    let learner = c.add_node(3);
    propose_at_leader(
        &mut c,
        change(1, MemberChange::AddLearner { addr: "a:1".into() }),
    );
    c.ticks(50);
    // The learner goes down: its promotion is refused, with the reason, and nothing changes.
    c.up[learner] = false;
    c.ticks(200);
    let promote = change(2, MemberChange::Promote { id: NodeId(3) });
    propose_at_leader(&mut c, promote.clone());
    c.ticks(50);
    let why = refusal(&c, 0, promote.id).expect("the promotion was refused");
    assert!(why.contains("has not answered"), "{why}");
    assert!(!c.nodes[0].member_history().latest().is_voter(NodeId(3)));

    // One of three voters down: removing a live one would leave one of the two that stay
    // reachable.
    let leader = c.leader().expect("a leader");
    let down = (0..3).find(|&i| i != leader).expect("another voter");
    let live = (0..3)
        .find(|&i| i != leader && i != down)
        .expect("a third voter");
    c.up[down] = false;
    c.ticks(200);
    assert_eq!(c.leader(), Some(leader), "two of three still lead");
    let remove = change(
        3,
        MemberChange::Remove {
            id: c.ids[live],
            force: false,
        },
    );
    c.nodes[leader].propose(remove.clone()).expect("proposed");
    c.ticks(50);
    let why = refusal(&c, leader, remove.id).expect("the removal was refused");
    assert!(why.contains("no majority"), "{why}");
    assert!(c.nodes[leader]
        .member_history()
        .latest()
        .is_voter(c.ids[live]));
    // Forced, it goes through.
    let forced = change(
        4,
        MemberChange::Remove {
            id: c.ids[live],
            force: true,
        },
    );
    c.nodes[leader].propose(forced.clone()).expect("proposed");
    c.ticks(50);
    assert_eq!(refusal(&c, leader, forced.id), None);
    assert!(
        slot_of(&c, leader, forced.id).is_some(),
        "the forced removal was decided"
    );
    assert!(!c.nodes[leader]
        .member_history()
        .latest()
        .is_member(c.ids[live]));
}
