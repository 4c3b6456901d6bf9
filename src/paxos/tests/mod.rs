//! Unit tests of the core through a tiny perfect-network driver: elections, decisions, reads,
//! restarts and the safe join; `membership.rs` has those of membership changes. The
//! hostile-network simulator is `tests/simulation.rs`.

mod membership;

use crate::paxos::types::{Command, CommandId, NodeId, Op, Slot, Value};
use crate::paxos::{
    Config, Membership, Message, Ready, Record, Recovered, Replica, Role, TransferError,
};
use bytes::Bytes;
use std::collections::VecDeque;

fn voters(count: u16) -> Membership {
    Membership::first_ids(count).expect("a valid cluster size")
}

/// Nodes with instant, lossless delivery and storage that syncs at every step.
struct Cluster {
    /// `nodes[i]` is member `ids[i]`.
    ids: Vec<NodeId>,
    nodes: Vec<Replica>,
    /// Durable records per node (a crash keeps exactly these).
    disks: Vec<Vec<Record>>,
    applied: Vec<Vec<(Slot, Value)>>,
    reads: Vec<Vec<u64>>,
    wire: VecDeque<(NodeId, NodeId, Message)>,
    up: Vec<bool>,
    /// Peers each node's core asked to be shipped a snapshot (`Ready::send_snapshot`).
    snapshots_asked: Vec<Vec<NodeId>>,
    /// Decided values kept below a snapshot (`Config::log_retain_slots`) on every node.
    log_retain_slots: u64,
    /// The cluster's first membership.
    first: Membership,
    /// `Config::member_change_delay_slots` of every node.
    delay_slots: u64,
}

impl Cluster {
    fn new(n: u16) -> Cluster {
        Cluster::with_ids(&(0..n).collect::<Vec<_>>())
    }

    /// A cluster whose members have these ids (`nodes[i]` is member `ids[i]`).
    fn with_ids(ids: &[u16]) -> Cluster {
        let ids: Vec<NodeId> = ids.iter().copied().map(NodeId).collect();
        let membership = Membership::new(ids.iter().copied()).expect("valid ids");
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                Replica::new(
                    Config::new(*id, membership.clone()),
                    Recovered::empty(),
                    i as u64 + 1,
                )
            })
            .collect();
        let k = ids.len();
        Cluster {
            ids,
            nodes,
            disks: vec![Vec::new(); k],
            applied: vec![Vec::new(); k],
            reads: vec![Vec::new(); k],
            wire: VecDeque::new(),
            up: vec![true; k],
            snapshots_asked: vec![Vec::new(); k],
            log_retain_slots: Config::new(NodeId(0), voters(1)).log_retain_slots,
            delay_slots: Config::new(NodeId(0), voters(1)).member_change_delay_slots,
            first: membership,
        }
    }

    /// The configuration every node of this cluster runs with.
    fn config(&self, id: NodeId) -> Config {
        let mut config = Config::new(id, self.first.clone());
        config.log_retain_slots = self.log_retain_slots;
        config.member_change_delay_slots = self.delay_slots;
        config
    }

    /// Starts a brand-new node with id `id` (a learner once a change adds it); its index.
    fn add_node(&mut self, id: u16) -> usize {
        let id = NodeId(id);
        let mut config = self.config(id);
        config.new_member = true;
        self.nodes.push(Replica::new(
            config,
            Recovered::empty(),
            1_000 + u64::from(id.0),
        ));
        self.ids.push(id);
        self.disks.push(Vec::new());
        self.applied.push(Vec::new());
        self.reads.push(Vec::new());
        self.up.push(true);
        self.snapshots_asked.push(Vec::new());
        self.nodes.len() - 1
    }

    fn drain(&mut self) {
        for _ in 0..10_000 {
            let mut idle = true;
            for i in 0..self.nodes.len() {
                if !self.up[i] {
                    continue;
                }
                loop {
                    let ready: Ready = self.nodes[i].take_ready();
                    if ready.is_empty() {
                        break;
                    }
                    idle = false;
                    self.disks[i].extend(ready.persist);
                    self.nodes[i].durable(ready.persist_upto);
                    for (to, m) in ready.messages {
                        self.wire.push_back((self.ids[i], to, m));
                    }
                    self.applied[i].extend(ready.apply);
                    self.reads[i].extend(ready.reads_ready);
                    self.snapshots_asked[i].extend(ready.send_snapshot);
                }
            }
            while let Some((from, to, m)) = self.wire.pop_front() {
                idle = false;
                let to = self.index_of(to);
                if self.up[to] {
                    self.nodes[to].receive(from, m);
                }
            }
            if idle {
                return;
            }
        }
        panic!("the cluster never went quiet");
    }

    fn ticks(&mut self, n: usize) {
        for _ in 0..n {
            for i in 0..self.nodes.len() {
                if self.up[i] {
                    self.nodes[i].tick();
                }
            }
            self.drain();
        }
    }

    fn index_of(&self, id: NodeId) -> usize {
        self.ids
            .iter()
            .position(|m| *m == id)
            .unwrap_or_else(|| panic!("a message to {id}, who is not a member"))
    }

    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.up[i] && self.nodes[i].status().role == Role::Leader)
    }

    fn restart(&mut self, i: usize, lose_disk: bool) {
        if lose_disk {
            self.disks[i].clear();
        }
        let mut recovered = Recovered::empty();
        for r in &self.disks[i] {
            recovered.apply(r);
        }
        let config = self.config(self.ids[i]);
        self.nodes[i] = Replica::new(config, recovered, 99 + i as u64);
        self.applied[i].clear();
        self.up[i] = true;
    }
}

fn put(origin: u16, seq: u64, key: &str) -> Command {
    Command {
        id: CommandId::new(NodeId(origin), 0, seq),
        op: Op::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            expect: None,
        },
    }
}

fn commands(applied: &[(Slot, Value)]) -> Vec<CommandId> {
    applied
        .iter()
        .filter_map(|(_, v)| match v {
            Value::Command(c) => Some(c.id),
            Value::Noop => None,
        })
        .collect()
}

#[test]
fn three_nodes_elect_one_leader_and_decide_in_order_everywhere() {
    let mut c = Cluster::new(3);
    c.ticks(100);
    let leader = c.leader().expect("a leader is elected");
    assert_eq!(
        (0..3)
            .filter(|&i| c.nodes[i].status().role == Role::Leader)
            .count(),
        1
    );
    for seq in 0..50 {
        let origin = (seq % 3) as u16;
        c.nodes[usize::from(origin)]
            .propose(put(origin, seq, "k"))
            .expect("proposed");
    }
    c.ticks(20);
    let ids = commands(&c.applied[leader]);
    assert_eq!(ids.len(), 50, "every command applied once");
    for i in 0..3 {
        assert_eq!(
            c.applied[i], c.applied[leader],
            "node {i} applied the same sequence"
        );
        let slots: Vec<Slot> = c.applied[i].iter().map(|(s, _)| *s).collect();
        assert!(slots.windows(2).all(|w| w[1] == w[0] + 1), "no gaps");
    }
}

#[test]
fn members_with_sparse_ids_elect_decide_lose_a_disk_and_rejoin() {
    // Ids are names, not positions: nothing may index by them.
    let mut c = Cluster::with_ids(&[3, 17, 60_000]);
    c.ticks(100);
    let leader = c.leader().expect("a leader is elected");
    for seq in 0..30 {
        let at = seq as usize % 3;
        let origin = c.ids[at].0;
        c.nodes[at]
            .propose(put(origin, seq, "k"))
            .expect("proposed");
    }
    c.ticks(20);
    assert_eq!(commands(&c.applied[leader]).len(), 30);
    let victim = (leader + 1) % 3;
    c.restart(victim, true);
    assert_eq!(c.nodes[victim].status().role, Role::Joining);
    c.ticks(100);
    assert_ne!(c.nodes[victim].status().role, Role::Joining);
    for i in 0..3 {
        assert_eq!(c.applied[i].last(), c.applied[leader].last(), "node {i}");
    }
    c.up[leader] = false;
    c.ticks(300);
    let new = c.leader().expect("the survivors elect a leader");
    assert_ne!(new, leader);
    c.nodes[new]
        .propose(put(c.ids[new].0, 99, "k"))
        .expect("proposed");
    c.ticks(10);
    assert_eq!(commands(&c.applied[new]).len(), 31);
}

#[test]
fn leadership_moves_to_the_named_voter_without_losing_a_decision() {
    let mut c = Cluster::new(3);
    c.ticks(100);
    let old = c.leader().expect("a leader");
    for seq in 0..10 {
        c.nodes[old]
            .propose(put(old as u16, seq, "k"))
            .expect("proposed");
    }
    let target = (old + 1) % 3;
    let via = (old + 2) % 3;
    // A follower passes the request on to the leader.
    c.nodes[via]
        .transfer_leadership(NodeId(target as u16))
        .expect("passed on");
    c.ticks(20);
    assert_eq!(c.leader(), Some(target), "the named voter leads");
    let leaders = (0..3)
        .filter(|&i| c.nodes[i].status().role == Role::Leader)
        .count();
    assert_eq!(leaders, 1);
    for seq in 10..15 {
        c.nodes[old]
            .propose(put(old as u16, seq, "k"))
            .expect("proposed");
    }
    c.ticks(20);
    for i in 0..3 {
        assert_eq!(commands(&c.applied[i]).len(), 15, "node {i}");
        assert_eq!(c.applied[i], c.applied[target], "node {i}");
    }
    assert_eq!(
        c.nodes[0].transfer_leadership(NodeId(9)),
        Err(TransferError::NotAVoter(NodeId(9)))
    );
}

#[test]
fn a_handover_to_a_member_that_is_down_is_given_up_and_the_leader_resumes() {
    let mut c = Cluster::new(3);
    c.ticks(100);
    let old = c.leader().expect("a leader");
    let target = (old + 1) % 3;
    c.up[target] = false;
    c.nodes[old]
        .transfer_leadership(NodeId(target as u16))
        .expect("started");
    c.nodes[old]
        .propose(put(old as u16, 1, "k"))
        .expect("proposed");
    c.ticks(20);
    assert!(
        commands(&c.applied[old]).is_empty(),
        "no new command enters the window while a handover waits"
    );
    let timeout = Config::new(NodeId(0), voters(1)).transfer_timeout_ticks as usize;
    c.ticks(timeout + 30);
    assert_eq!(c.leader(), Some(old), "the leader gave up and stayed");
    assert_eq!(commands(&c.applied[old]).len(), 1, "and resumed proposing");
}

#[test]
fn single_node_cluster_decides_alone() {
    let mut c = Cluster::new(1);
    c.ticks(80);
    assert_eq!(c.leader(), Some(0));
    c.nodes[0].propose(put(0, 1, "a")).expect("proposed");
    c.nodes[0].read(7);
    c.drain();
    assert_eq!(commands(&c.applied[0]).len(), 1);
    assert_eq!(c.reads[0], vec![7]);
}

#[test]
fn reads_are_served_on_followers_after_a_quorum_round() {
    let mut c = Cluster::new(3);
    c.ticks(100);
    let leader = c.leader().expect("leader");
    let follower = (leader + 1) % 3;
    c.nodes[follower]
        .propose(put(follower as u16, 1, "x"))
        .expect("proposed");
    c.drain();
    c.nodes[follower].read(42);
    c.nodes[leader].read(43);
    c.ticks(2);
    assert_eq!(c.reads[follower], vec![42]);
    assert_eq!(c.reads[leader], vec![43]);
    assert!(c.nodes[follower].status().applied >= c.applied[leader].last().map_or(0, |x| x.0));
}

#[test]
fn a_new_leader_keeps_what_the_old_one_decided() {
    let mut c = Cluster::new(3);
    c.ticks(100);
    let old = c.leader().expect("leader");
    for seq in 0..10 {
        c.nodes[old]
            .propose(put(old as u16, seq, "k"))
            .expect("proposed");
    }
    c.drain();
    let before = c.applied[old].clone();
    c.up[old] = false;
    c.ticks(200);
    let new = c.leader().expect("a new leader");
    assert_ne!(new, old);
    c.nodes[new]
        .propose(put(new as u16, 100, "k"))
        .expect("proposed");
    c.ticks(5);
    assert!(
        c.applied[new].starts_with(&before),
        "decided slots never change"
    );
    c.restart(old, false);
    c.ticks(100);
    assert_eq!(
        c.applied[old], c.applied[new],
        "the old leader caught up after restart"
    );
}

#[test]
fn whole_cluster_restart_keeps_every_decided_command() {
    let mut c = Cluster::new(3);
    c.ticks(100);
    let leader = c.leader().expect("leader");
    for seq in 0..20 {
        c.nodes[leader]
            .propose(put(leader as u16, seq, "k"))
            .expect("proposed");
    }
    c.drain();
    let decided = commands(&c.applied[leader]);
    assert_eq!(decided.len(), 20);
    for i in 0..3 {
        c.restart(i, false);
    }
    c.ticks(200);
    let leader = c.leader().expect("a leader after the restart");
    c.nodes[leader]
        .propose(put(leader as u16, 500, "k"))
        .expect("proposed");
    c.ticks(5);
    for i in 0..3 {
        let ids = commands(&c.applied[i]);
        assert!(ids.starts_with(&decided), "node {i} lost decided commands");
    }
}

#[test]
fn a_node_that_lost_its_disk_rejoins_before_voting() {
    let mut c = Cluster::new(3);
    c.ticks(100);
    let leader = c.leader().expect("leader");
    for seq in 0..5 {
        c.nodes[leader]
            .propose(put(leader as u16, seq, "k"))
            .expect("proposed");
    }
    c.drain();
    let victim = (leader + 1) % 3;
    c.restart(victim, true);
    assert_eq!(c.nodes[victim].status().role, Role::Joining);
    c.ticks(50);
    assert_ne!(
        c.nodes[victim].status().role,
        Role::Joining,
        "join completes"
    );
    assert!(c.disks[victim].contains(&Record::Joined));
    assert_eq!(commands(&c.applied[victim]).len(), 5, "and it caught up");
}

#[test]
fn two_lost_disks_of_a_choosing_quorum_wait_for_its_last_member() {
    // Five nodes; a command is chosen by the leader and two others only. Both others lose their
    // disks and the leader goes down: only the leader still holds the command. The two joiners
    // must not vouch for each other's emptiness (together with the two members that never saw
    // the command they would make a majority that forgets it); they wait for the leader.
    let mut c = Cluster::new(5);
    c.ticks(100);
    let leader = c.leader().expect("leader");
    let others: Vec<usize> = (0..5).filter(|&i| i != leader).collect();
    let (insiders, outsiders) = (&others[..2], &others[2..]);
    for &o in outsiders {
        c.up[o] = false;
    }
    c.nodes[leader]
        .propose(put(leader as u16, 1, "chosen"))
        .expect("proposed");
    c.drain();
    let chosen = c.applied[leader].clone();
    assert_eq!(
        commands(&chosen).len(),
        1,
        "decided by the leader and the insiders"
    );
    for &i in insiders {
        c.restart(i, true);
    }
    c.up[leader] = false;
    for &o in outsiders {
        c.restart(o, false);
    }
    c.ticks(300);
    for &i in insiders {
        assert_eq!(
            c.nodes[i].status().role,
            Role::Joining,
            "node {i} joined without any member that holds the chosen command"
        );
    }
    c.restart(leader, false);
    c.ticks(300);
    for i in 0..5 {
        assert_ne!(c.nodes[i].status().role, Role::Joining, "node {i} joins");
        let slot = chosen.last().map(|(s, _)| *s).expect("a slot");
        let at_slot: Vec<_> = c.applied[i].iter().filter(|(s, _)| *s == slot).collect();
        assert!(
            at_slot
                .iter()
                .all(|(_, v)| commands(&[(slot, v.clone())]) == commands(&chosen)),
            "node {i} applied something else at slot {slot}"
        );
    }
}

#[test]
fn join_needs_answers_that_cover_every_quorum_it_may_have_voted_in() {
    use crate::paxos::join::join_is_safe;
    // members, answered, stateless -> safe
    assert!(join_is_safe(3, 2, 0), "3 nodes: both others hold state");
    assert!(
        join_is_safe(3, 2, 2),
        "3 nodes, brand new: everyone answered"
    );
    assert!(!join_is_safe(3, 1, 0), "3 nodes: one answer is no majority");
    assert!(join_is_safe(5, 3, 0), "5 nodes: three members with state");
    assert!(
        !join_is_safe(5, 3, 1),
        "5 nodes: a stateless answer may be a lost disk"
    );
    assert!(join_is_safe(5, 4, 1), "5 nodes: everyone answered");
    assert!(
        !join_is_safe(5, 3, 3),
        "5 nodes, brand new: waits for the fifth"
    );
    assert!(
        join_is_safe(5, 4, 4),
        "5 nodes, brand new: everyone answered"
    );
    assert!(join_is_safe(4, 3, 3), "4 nodes: all others answered");
    assert!(
        !join_is_safe(4, 2, 0),
        "4 nodes: two answers are no majority"
    );
}

#[test]
fn a_follower_that_has_not_answered_gets_what_was_held_back_in_one_batch() {
    let mut c = Cluster::new(3);
    c.ticks(100);
    let leader = c.leader().expect("leader");
    let follower = NodeId(((leader + 1) % 3) as u16);
    // Accept batches to `follower` in one Ready: (ballot, slots) each.
    let batches = |ready: &Ready| -> Vec<(crate::paxos::types::Ballot, Vec<Slot>)> {
        ready
            .messages
            .iter()
            .filter_map(|(to, m)| match m {
                Message::Accept {
                    ballot, entries, ..
                } if *to == follower => Some((*ballot, entries.iter().map(|(s, _)| *s).collect())),
                _ => None,
            })
            .collect()
    };
    let l = &mut c.nodes[leader];
    let mut sent = Vec::new();
    for seq in 0..10 {
        l.propose(put(leader as u16, seq, "k")).expect("proposed");
        let ready = l.take_ready();
        l.durable(ready.persist_upto);
        sent.extend(batches(&ready));
    }
    let in_flight_max = Config::new(follower, voters(3)).accept_batches_in_flight_max;
    assert_eq!(
        sent.len(),
        in_flight_max,
        "unanswered: only {in_flight_max} batches go out"
    );
    assert!(sent.iter().all(|(_, slots)| slots.len() == 1));
    // The follower answers its first batch: the commands held back leave as one batch.
    let (ballot, slots) = sent[0].clone();
    l.receive(follower, Message::Accepted { ballot, slots });
    let ready = l.take_ready();
    let released = batches(&ready);
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0].1.len(), 10 - in_flight_max);
}

#[test]
fn snapshots_trim_the_log_and_a_node_behind_them_is_shipped_one() {
    let mut c = Cluster::new(3);
    c.log_retain_slots = 0;
    for i in 0..3 {
        c.restart(i, false);
    }
    c.ticks(100);
    let leader = c.leader().expect("leader");
    let lagging = (leader + 1) % 3;
    c.up[lagging] = false;
    for seq in 0..20 {
        c.nodes[leader]
            .propose(put(leader as u16, seq, "k"))
            .expect("proposed");
    }
    c.drain();
    let decided = c.nodes[leader].status().decided;
    for i in (0..3).filter(|&i| i != lagging) {
        assert_eq!(c.nodes[i].status().applied, decided);
        // No slots retained below the snapshot: the lagging node cannot catch up from the log.
        let forgotten = c.nodes[i].snapshot_taken(decided);
        assert_eq!(
            forgotten.len() as u64,
            decided,
            "every decided slot left the log"
        );
        assert_eq!(c.nodes[i].status().log_start, decided);
    }
    c.up[lagging] = true;
    c.ticks(50);
    assert!(
        c.snapshots_asked
            .iter()
            .any(|asked| asked.contains(&NodeId(lagging as u16))),
        "a member asked for a snapshot to be shipped to the lagging node"
    );
    assert!(
        c.nodes[lagging].status().decided < decided,
        "it cannot catch up alone"
    );
    // The snapshot arrives and is installed: the node stands at its slot and follows on.
    let history = c.nodes[c.leader().expect("leader")]
        .member_history()
        .clone();
    c.nodes[lagging].snapshot_installed(decided, &history);
    let status = c.nodes[lagging].status();
    assert_eq!((status.applied, status.log_start), (decided, decided));
    let leader = c.leader().expect("leader");
    c.nodes[leader]
        .propose(put(leader as u16, 100, "after"))
        .expect("proposed");
    c.ticks(20);
    assert_eq!(
        c.applied[lagging].last().map(|(s, _)| *s),
        Some(c.nodes[leader].status().decided),
        "the installed node applies what comes after the snapshot"
    );
}

#[test]
fn a_node_that_lost_its_disk_joins_a_compacted_cluster_only_once_it_holds_the_compacted_slots() {
    let mut c = Cluster::new(3);
    c.log_retain_slots = 0;
    for i in 0..3 {
        c.restart(i, false);
    }
    c.ticks(100);
    let leader = c.leader().expect("leader");
    for seq in 0..10 {
        c.nodes[leader]
            .propose(put(leader as u16, seq, "k"))
            .expect("proposed");
    }
    c.drain();
    let decided = c.nodes[leader].status().decided;
    let victim = (leader + 1) % 3;
    for i in (0..3).filter(|&i| i != victim) {
        drop(c.nodes[i].snapshot_taken(decided));
    }
    c.restart(victim, true);
    c.ticks(100);
    // The answerers hold nothing of slots 1..=decided: adopting their answers now would let the
    // victim promise a candidate that those slots are free.
    assert_eq!(c.nodes[victim].status().role, Role::Joining);
    assert!(!c.disks[victim].contains(&Record::Joined));
    let history = c.nodes[leader].member_history().clone();
    c.nodes[victim].snapshot_installed(decided, &history);
    c.drain();
    assert_ne!(
        c.nodes[victim].status().role,
        Role::Joining,
        "join completes"
    );
    assert!(c.disks[victim].contains(&Record::Joined));
}

#[test]
fn a_joining_node_does_not_vote() {
    let mut c = Cluster::new(3);
    c.restart(0, true);
    // Nobody else is up: node 0 can never learn from a majority of the others.
    c.up[1] = false;
    c.up[2] = false;
    c.ticks(200);
    assert_eq!(c.nodes[0].status().role, Role::Joining);
    assert!(c.disks[0].is_empty(), "a non-voter persists no promise");
}

#[test]
fn oversized_commands_are_refused() {
    let mut r = Replica::new(Config::new(NodeId(0), voters(1)), Recovered::empty(), 1);
    let big = Command {
        id: CommandId::new(NodeId(0), 0, 1),
        op: Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0u8; 70_000]),
            expect: None,
        },
    };
    assert!(r.propose(big).is_err());
}

#[test]
fn a_command_is_decided_without_waiting_for_any_timer() {
    let mut c = Cluster::new(3);
    c.ticks(100);
    let leader = c.leader().expect("leader");
    let follower = (leader + 1) % 3;
    c.nodes[leader]
        .propose(put(leader as u16, 1, "a"))
        .expect("proposed");
    c.drain();
    assert_eq!(
        commands(&c.applied[leader]).len(),
        1,
        "decided on the leader at once"
    );
    c.nodes[follower]
        .propose(put(follower as u16, 2, "b"))
        .expect("proposed");
    c.drain();
    assert_eq!(
        commands(&c.applied[leader]).len(),
        2,
        "a forwarded command too"
    );
    // The leader's commit notice reaches every follower within the same drain: the follower
    // whose client waits applies its own command without a heartbeat.
    for i in 0..3 {
        assert_eq!(
            commands(&c.applied[i]),
            commands(&c.applied[leader]),
            "node {i} applied both without a timer"
        );
    }
}
