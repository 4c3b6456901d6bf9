//! The model key-value state machine each simulated node applies decided values to. It mirrors
//! the semantics of `consens::internals::paxos::types::{Op, Outcome}` and nothing more: a put writes
//! revision = slot; `expect: Some(r)` is a compare-and-swap on the key's revision (0 = absent);
//! a delete removes. It applies each command id at most once (a command decided in two slots
//! takes effect in the first).

use bytes::Bytes;
use consens::internals::paxos::types::{CommandId, Entry, Op, Outcome, Slot};
use std::collections::{BTreeMap, BTreeSet};

/// One node's key-value state.
#[derive(Default)]
pub struct ModelKv {
    entries: BTreeMap<Bytes, Entry>,
    /// Command ids already applied (the at-most-once rule).
    applied_ids: BTreeSet<CommandId>,
}

impl ModelKv {
    /// Applies `op` decided in `slot`; `None` if command `id` was already applied, or if it is a
    /// membership change (`checks.rs` follows those with its own history).
    pub fn apply(&mut self, slot: Slot, id: CommandId, op: &Op) -> Option<Outcome> {
        if !self.applied_ids.insert(id) {
            return None;
        }
        Some(match op {
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
            // Its outcome depends on the membership, which the checker's history decides.
            Op::ChangeMembers(_) => return None,
        })
    }
}
