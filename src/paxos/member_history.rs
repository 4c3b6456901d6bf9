//! [`MemberHistory`]: which membership governs which slot. This is the reconfiguration rule
//! (Lamport's α, "Paxos Made Simple" §3, and "Reconfiguring a State Machine"): a membership
//! change decided in slot `c` governs every slot from `c + delay_slots` on; slots below keep the
//! membership they had. A leader proposes slot `s` only once every slot `<= s - delay_slots` is
//! decided, so it always knows which membership's majority must vote for `s` and which
//! membership's majority must have promised its ballot. `docs/paxos.md` ("Membership changes")
//! argues why that is safe under any interleaving of crashes, losses and leader changes.
//!
//! The history is folded from decided values in slot order, on every replica alike (the core
//! folds as slots become decided, the state machine as it applies them and carries the history in
//! its snapshots), so it is the same function of the log everywhere.

use crate::paxos::membership::{ChangeError, MemberChange, Membership};
use crate::paxos::quorum::MemberSet;
use crate::paxos::types::{CommandId, NodeId, Op, Outcome, Slot, Value};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The slot delay the daemon uses: a change decided in slot `c` takes effect at `c + 8192`.
/// It is part of the protocol, the same on every member for the life of a cluster; it also
/// bounds how far a leader may run ahead of its decided prefix (`Config::window_slots`).
pub const MEMBER_CHANGE_DELAY_SLOTS: u64 = 8_192;
/// The ids of this many most recent membership changes are remembered, so that a change a
/// client retried and that got decided twice is applied once (the state machine's own record of
/// applied ids cannot serve: the core folds changes too, and must agree with it).
pub const CHANGE_IDS_REMEMBERED: usize = 256;

/// One membership and the first slot it governs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Era {
    /// The first slot this membership governs.
    pub start: Slot,
    /// The slot whose decided change made it (0: the cluster's first membership).
    pub decided_at: Slot,
    pub membership: Membership,
}

/// The memberships that govern slots from some point on, folded from the decided log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HistoryWire", into = "HistoryWire")]
pub struct MemberHistory {
    delay_slots: u64,
    /// Ascending by `start`; never empty. The first governs every slot below the second's start.
    eras: Vec<Era>,
    /// Every decided slot up to here is folded in.
    folded_upto: Slot,
    /// The command ids of the latest changes folded (refused ones too), oldest first.
    change_ids: VecDeque<CommandId>,
}

#[derive(Serialize, Deserialize)]
struct HistoryWire {
    delay_slots: u64,
    eras: Vec<Era>,
    folded_upto: Slot,
    change_ids: Vec<CommandId>,
}

/// Why bytes do not decode to a history.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("a member history needs at least one membership")]
    Empty,
    #[error("memberships are not in increasing slot order")]
    Unordered,
    #[error("a membership change delay of 0 slots")]
    NoDelay,
    #[error("{0} remembered change ids, more than {CHANGE_IDS_REMEMBERED}")]
    TooManyChangeIds(usize),
}

impl TryFrom<HistoryWire> for MemberHistory {
    type Error = HistoryError;
    fn try_from(w: HistoryWire) -> Result<MemberHistory, HistoryError> {
        if w.eras.is_empty() {
            return Err(HistoryError::Empty);
        }
        if w.eras.windows(2).any(|p| p[0].start >= p[1].start) {
            return Err(HistoryError::Unordered);
        }
        if w.delay_slots == 0 {
            return Err(HistoryError::NoDelay);
        }
        if w.change_ids.len() > CHANGE_IDS_REMEMBERED {
            return Err(HistoryError::TooManyChangeIds(w.change_ids.len()));
        }
        Ok(MemberHistory {
            delay_slots: w.delay_slots,
            eras: w.eras,
            folded_upto: w.folded_upto,
            change_ids: w.change_ids.into(),
        })
    }
}

impl From<MemberHistory> for HistoryWire {
    fn from(h: MemberHistory) -> HistoryWire {
        HistoryWire {
            delay_slots: h.delay_slots,
            eras: h.eras,
            folded_upto: h.folded_upto,
            change_ids: h.change_ids.into(),
        }
    }
}

impl MemberHistory {
    /// A cluster's history before any change: `first` governs every slot.
    pub fn new(first: Membership, delay_slots: u64) -> MemberHistory {
        assert!(
            delay_slots > 0,
            "a change needs a delay of at least one slot"
        );
        MemberHistory {
            delay_slots,
            eras: vec![Era {
                start: 1,
                decided_at: 0,
                membership: first,
            }],
            folded_upto: 0,
            change_ids: VecDeque::new(),
        }
    }

    pub fn delay_slots(&self) -> u64 {
        self.delay_slots
    }

    /// Every decided slot up to here is folded in.
    pub fn folded_upto(&self) -> Slot {
        self.folded_upto
    }

    /// The membership that governs `slot` (known for every slot `<= folded_upto + delay`).
    pub fn at(&self, slot: Slot) -> &Membership {
        &self.era_at(slot).membership
    }

    fn era_at(&self, slot: Slot) -> &Era {
        let i = self.eras.partition_point(|e| e.start <= slot);
        &self.eras[i.saturating_sub(1)]
    }

    /// The newest membership known (it may not govern any decided slot yet).
    pub fn latest(&self) -> &Membership {
        &self.eras.last().expect("never empty").membership
    }

    /// The eras that govern slots `>= slot`: the one in force at `slot` and every later one.
    pub fn eras_from(&self, slot: Slot) -> &[Era] {
        let i = self.eras.partition_point(|e| e.start <= slot);
        &self.eras[i.saturating_sub(1)..]
    }

    /// The first slot of a membership that does not govern `slot` yet, if one is pending.
    pub fn pending_start(&self, slot: Slot) -> Option<Slot> {
        let last = self.eras.last().expect("never empty");
        (last.start > slot).then_some(last.start)
    }

    /// Whether `set` holds a majority of every membership governing slots `>= slot`.
    pub fn is_quorum_from(&self, set: &MemberSet, slot: Slot) -> bool {
        self.eras_from(slot)
            .iter()
            .all(|e| e.membership.is_quorum(set))
    }

    /// Whether `node` votes in any membership governing slots `>= slot`.
    pub fn is_voter_from(&self, node: NodeId, slot: Slot) -> bool {
        self.eras_from(slot)
            .iter()
            .any(|e| e.membership.is_voter(node))
    }

    /// The voters of every membership governing slots `>= slot`, sorted, each once.
    pub fn voters_from(&self, slot: Slot) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .eras_from(slot)
            .iter()
            .flat_map(|e| e.membership.voters().iter().copied())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Every member (voter or learner) of a membership governing slots `>= slot`, sorted.
    pub fn members_from(&self, slot: Slot) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .eras_from(slot)
            .iter()
            .flat_map(|e| e.membership.members().iter().map(|m| m.id))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Folds the value decided in `slot`, the slot after `folded_upto` (earlier slots are
    /// ignored: a snapshot may have covered them). Returns what a membership change did; `None`
    /// for any other value, and for a change whose command id was folded before (a retried
    /// command decided twice).
    pub fn fold(
        &mut self,
        slot: Slot,
        value: &Value,
    ) -> Option<Result<Option<NodeId>, ChangeError>> {
        if slot <= self.folded_upto {
            return None;
        }
        assert_eq!(
            slot,
            self.folded_upto + 1,
            "membership history folded out of order"
        );
        self.folded_upto = slot;
        let (id, change) = change_of(value)?;
        if self.change_ids.contains(&id) {
            return None;
        }
        if self.change_ids.len() == CHANGE_IDS_REMEMBERED {
            self.change_ids.pop_front();
        }
        self.change_ids.push_back(id);
        let result = self.latest().apply(change);
        Some(result.map(|(membership, added)| {
            let start = match change {
                // Disaster recovery: nobody else is left to disagree, so no delay is needed.
                MemberChange::ForceSole { .. } => slot + 1,
                _ => slot + self.delay_slots,
            };
            // A leader proposes a change only when none is pending, but a forced one may
            // overtake a pending change: it replaces it.
            self.eras.retain(|e| e.start < start);
            self.eras.push(Era {
                start,
                decided_at: slot,
                membership,
            });
            added
        }))
    }

    /// What the change folded in `slot` did, as a client is told it, from what [`fold`]
    /// returned: `None` for a duplicate (or not a change).
    ///
    /// [`fold`]: MemberHistory::fold
    pub fn outcome(
        &self,
        slot: Slot,
        folded: Option<Result<Option<NodeId>, ChangeError>>,
    ) -> Option<Outcome> {
        Some(match folded? {
            Ok(added) => Outcome::MembersChanged {
                added,
                effective: self.pending_start(slot).unwrap_or(slot + 1),
            },
            Err(refused) => Outcome::MembersRefused(refused),
        })
    }

    /// This history, taken as folded up to `slot` with no change in between: for state written
    /// before membership changes existed (older snapshot layouts), when none could be decided.
    pub fn assume_unchanged_upto(mut self, slot: Slot) -> MemberHistory {
        self.folded_upto = self.folded_upto.max(slot);
        self
    }

    /// Forgets memberships that govern no slot `>= slot` any more; returns whether any went.
    pub fn trim_below(&mut self, slot: Slot) -> bool {
        let keep_from = self
            .eras
            .partition_point(|e| e.start <= slot)
            .saturating_sub(1);
        self.eras.drain(..keep_from);
        keep_from > 0
    }
}

/// The membership change `value` carries, with its command id, if it is one.
pub fn change_of(value: &Value) -> Option<(CommandId, &MemberChange)> {
    match value {
        Value::Command(c) => match &c.op {
            Op::ChangeMembers(change) => Some((c.id, change)),
            _ => None,
        },
        Value::Noop => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::types::{Command, CommandId};

    fn change(change: MemberChange) -> Value {
        Value::Command(Command {
            id: CommandId {
                origin: NodeId(0),
                seq: 1,
            },
            op: Op::ChangeMembers(change),
        })
    }

    fn fold_upto(h: &mut MemberHistory, upto: Slot, at: Slot, value: &Value) {
        for slot in h.folded_upto() + 1..=upto {
            let v = if slot == at {
                value.clone()
            } else {
                Value::Noop
            };
            h.fold(slot, &v);
        }
    }

    #[test]
    fn a_change_governs_slots_from_its_slot_plus_the_delay() {
        let mut h = MemberHistory::new(Membership::first_ids(3).expect("valid"), 10);
        let add = change(MemberChange::AddLearner { addr: "h:1".into() });
        fold_upto(&mut h, 5, 5, &add);
        assert_eq!(h.at(14).voters().len(), 3);
        assert!(!h.at(14).is_member(NodeId(3)));
        assert!(h.at(15).is_member(NodeId(3)));
        assert_eq!(h.pending_start(6), Some(15));
        assert_eq!(h.eras_from(6).len(), 2);
        assert_eq!(h.members_from(6).len(), 4);
        assert_eq!(h.voters_from(6).len(), 3);
        h.trim_below(15);
        assert_eq!(
            h.eras_from(1).len(),
            1,
            "the old membership governs nothing >= 15"
        );
        assert_eq!(h.pending_start(15), None);
    }

    #[test]
    fn a_refused_change_changes_nothing_and_says_why() {
        let mut h = MemberHistory::new(Membership::first_ids(1).expect("valid"), 10);
        let result = h.fold(
            1,
            &change(MemberChange::Remove {
                id: NodeId(0),
                force: false,
            }),
        );
        assert_eq!(result, Some(Err(ChangeError::LastVoter(NodeId(0)))));
        assert_eq!(h.eras_from(1).len(), 1);
        assert_eq!(h.fold(2, &Value::Noop), None);
        assert_eq!(
            h.fold(1, &Value::Noop),
            None,
            "folded slots are not folded again"
        );
    }

    #[test]
    fn quorums_must_hold_in_every_membership_still_in_force() {
        let mut h = MemberHistory::new(Membership::first_ids(3).expect("valid"), 4);
        fold_upto(
            &mut h,
            1,
            1,
            &change(MemberChange::Remove {
                id: NodeId(2),
                force: false,
            }),
        );
        let mut set = MemberSet::of(NodeId(0));
        set.insert(NodeId(2));
        assert!(
            h.at(2).is_quorum(&set),
            "{{0, 2}} is a majority of {{0, 1, 2}}"
        );
        assert!(
            !h.is_quorum_from(&set, 2),
            "but not of {{0, 1}}, in force from slot 5"
        );
        set.insert(NodeId(1));
        assert!(h.is_quorum_from(&set, 2));
    }

    #[test]
    fn a_change_decided_twice_is_applied_once() {
        let mut h = MemberHistory::new(Membership::first_ids(3).expect("valid"), 2);
        let add = change(MemberChange::AddLearner { addr: "h:1".into() });
        assert_eq!(h.fold(1, &add), Some(Ok(Some(NodeId(3)))));
        let Value::Command(command) = &add else {
            unreachable!("a command")
        };
        let remove = Value::Command(Command {
            id: CommandId {
                origin: NodeId(0),
                seq: 2,
            },
            op: Op::ChangeMembers(MemberChange::Remove {
                id: NodeId(3),
                force: false,
            }),
        });
        assert!(matches!(h.fold(2, &remove), Some(Ok(None))));
        // The add again, once its member is gone: it must not add a second member.
        assert_eq!(h.fold(3, &Value::Command(command.clone())), None);
        assert!(!h.latest().is_member(NodeId(4)));
    }

    #[test]
    fn a_forced_change_takes_effect_at_once_and_survives_encoding() {
        let mut h = MemberHistory::new(Membership::first_ids(3).expect("valid"), 100);
        fold_upto(
            &mut h,
            7,
            7,
            &change(MemberChange::ForceSole { id: NodeId(1) }),
        );
        assert_eq!(h.at(8).voters(), &[NodeId(1)]);
        let bytes = postcard::to_stdvec(&h).expect("encode");
        assert_eq!(
            postcard::from_bytes::<MemberHistory>(&bytes).expect("decode"),
            h
        );
    }
}
