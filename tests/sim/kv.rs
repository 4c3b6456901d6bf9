//! The model key-value state machine each simulated node applies decided values to. It mirrors
//! the semantics of `consens::internals::paxos::types::{Op, Outcome}` and nothing more: a put writes
//! revision = slot; `expect: Some(r)` is a compare-and-swap on the key's revision (0 = absent);
//! a delete removes. It applies each command id at most once (a command decided in two slots
//! takes effect in the first). Membership changes are folded with the library's own
//! `MemberHistory` (its rules have unit tests; what the simulator checks is that the core
//! decides every slot with a majority of the membership this history gives it).

use bytes::Bytes;
use consens::internals::paxos::types::{CommandId, Entry, Op, Outcome, Slot, Value};
use consens::internals::paxos::MemberHistory;
use std::collections::{BTreeMap, BTreeSet};

/// One node's key-value state.
pub struct ModelKv {
    entries: BTreeMap<Bytes, Entry>,
    /// Command ids already applied (the at-most-once rule).
    applied_ids: BTreeSet<CommandId>,
    /// Which membership governs which slot, folded up to the last applied slot.
    members: MemberHistory,
}

impl ModelKv {
    /// An empty state of a cluster that starts with `members`.
    pub fn new(members: MemberHistory) -> ModelKv {
        ModelKv {
            entries: BTreeMap::new(),
            applied_ids: BTreeSet::new(),
            members,
        }
    }

    /// The membership history, folded up to the last applied slot (never trimmed).
    pub fn members(&self) -> &MemberHistory {
        &self.members
    }

    /// Applies `value` decided in `slot`; `None` for a no-op and for a command whose id was
    /// already applied.
    pub fn apply(&mut self, slot: Slot, value: &Value) -> Option<Outcome> {
        let changed = self.members.fold(slot, value);
        let Value::Command(command) = value else {
            return None;
        };
        if !self.applied_ids.insert(command.id) {
            return None;
        }
        Some(match &command.op {
            Op::Put { key, value, expect } => {
                let current = self.entries.get(key).map_or(0, |e| e.revision);
                if let Some(expected) = expect {
                    if *expected != current {
                        return Some(Outcome::Conflict { current });
                    }
                }
                self.entries.insert(
                    key.clone(),
                    Entry {
                        value: value.clone(),
                        revision: slot,
                    },
                );
                if current == 0 {
                    Outcome::Created { revision: slot }
                } else {
                    Outcome::Updated { revision: slot }
                }
            }
            Op::Delete { key } => match self.entries.remove(key) {
                Some(_) => Outcome::Deleted,
                None => Outcome::NotFound,
            },
            Op::ChangeMembers(_) => self.members.outcome(slot, changed)?,
        })
    }
}
