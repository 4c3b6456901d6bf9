//! The properties every run must keep, checked as the run goes and at its end:
//! - agreement: no two nodes apply different values for the same slot;
//! - order: each node applies slots 1, 2, 3… with no gaps and none twice, so every node's
//!   applied sequence is a prefix of every other's;
//! - determinism of the state machine: a command has the same slot and outcome everywhere;
//! - durability: every acknowledged write is in every node's final applied sequence, at the slot
//!   and with the outcome its client was told;
//! - linearizability of each key's client history (`linearizability.rs`);
//! - convergence: after the faults heal, every node applies the same sequence.

use super::client::{HistEntry, Result};
use super::linearizability::{check_key, HistOp, NotLinearizable, Observed};
use super::node::SimNode;
use consens::paxos::types::{CommandId, Outcome, Slot, Value};
use std::collections::BTreeMap;

/// What the checker learned so far, and what went wrong.
pub struct Checker {
    /// The value applied at each slot by the first node that applied it.
    chosen: BTreeMap<Slot, Value>,
    /// Where and with what outcome each command first took effect.
    outcomes: BTreeMap<CommandId, (Slot, Outcome)>,
    /// Per node: the last slot this incarnation applied.
    last_applied: Vec<Slot>,
    pub violations: Vec<String>,
}

impl Checker {
    pub fn new(members: usize) -> Checker {
        Checker {
            chosen: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            last_applied: vec![0; members],
            violations: Vec::new(),
        }
    }

    /// Node `node` restarted: it applies again from the start.
    pub fn restarted(&mut self, node: usize) {
        self.last_applied[node] = 0;
    }

    /// The slot a command was first decided in, if any node applied it.
    pub fn decided_slot(&self, id: CommandId) -> Option<Slot> {
        self.outcomes.get(&id).map(|(slot, _)| *slot)
    }

    pub fn applied(&mut self, node: usize, slot: Slot, value: &Value, outcome: Option<&Outcome>) {
        let last = self.last_applied[node];
        if slot != last + 1 {
            self.violations.push(format!(
                "order: n{node} applied slot {slot} right after slot {last}"
            ));
        }
        self.last_applied[node] = slot;
        match self.chosen.get(&slot) {
            Some(known) if known != value => self.violations.push(format!(
                "agreement: n{node} applied {value:?} at slot {slot}, another node applied {known:?}"
            )),
            Some(_) => {}
            None => {
                self.chosen.insert(slot, value.clone());
            }
        }
        if let (Value::Command(command), Some(outcome)) = (value, outcome) {
            match self.outcomes.get(&command.id) {
                Some((s, o)) if (*s, o) != (slot, outcome) => self.violations.push(format!(
                    "determinism: n{node} applied {:?} at slot {slot} with {outcome:?}, \
                     another node at slot {s} with {o:?}",
                    command.id
                )),
                Some(_) => {}
                None => {
                    self.outcomes.insert(command.id, (slot, outcome.clone()));
                }
            }
        }
    }

    /// End-of-run checks, once every node is up and the cluster has settled.
    pub fn finish(&mut self, nodes: &[SimNode], history: &[HistEntry]) {
        // Agreement of what each core holds as decided, beyond what was applied.
        for (i, node) in nodes.iter().enumerate() {
            let Some(replica) = node.replica.as_ref() else {
                self.violations
                    .push(format!("convergence: n{i} is down at the end"));
                continue;
            };
            for (slot, value) in &self.chosen {
                if let Some(held) = replica.decided_value(*slot) {
                    if held != value {
                        self.violations.push(format!(
                            "agreement: n{i} holds {held:?} as decided at slot {slot}, \
                             {value:?} was applied"
                        ));
                    }
                }
            }
        }
        // Prefix property and convergence.
        let longest = nodes
            .iter()
            .map(|n| &n.applied)
            .max_by_key(|a| a.len())
            .cloned()
            .unwrap_or_default();
        for (i, node) in nodes.iter().enumerate() {
            if !longest.starts_with(&node.applied) {
                self.violations
                    .push(format!("prefix: n{i}'s applied sequence is not a prefix"));
            }
            if node.applied.len() != longest.len() {
                self.violations.push(format!(
                    "convergence: n{i} applied {} slots after healing, another node {}",
                    node.applied.len(),
                    longest.len()
                ));
            }
        }
        // Durability of acknowledged writes.
        for entry in history {
            let (Some(id), Result::Write(outcome)) = (entry.command, &entry.result) else {
                continue;
            };
            match self.outcomes.get(&id) {
                Some((slot, o)) if o == outcome => {
                    for (i, node) in nodes.iter().enumerate() {
                        let there = node.applied.get((*slot - 1) as usize);
                        let holds = matches!(there, Some((s, Value::Command(c))) if *s == *slot && c.id == id);
                        if !holds {
                            self.violations.push(format!(
                                "durability: acknowledged write {id:?} ({outcome:?}) is not at \
                                 slot {slot} on n{i}"
                            ));
                        }
                    }
                }
                other => self.violations.push(format!(
                    "durability: acknowledged write {id:?} ({outcome:?}) took effect as {other:?}"
                )),
            }
        }
        // Linearizability per key.
        let mut per_key: BTreeMap<usize, Vec<HistOp>> = BTreeMap::new();
        for entry in history {
            let observed = match &entry.result {
                Result::Write(outcome) => Observed::Write(outcome.clone()),
                Result::Read(state) => Observed::Read(*state),
                Result::Unknown | Result::Pending => {
                    match entry.command.and_then(|id| self.decided_slot(id)) {
                        Some(revision) => Observed::Unknown { revision },
                        None => continue, // never decided: it never took effect
                    }
                }
                Result::Dropped => continue,
            };
            let complete = match observed {
                Observed::Unknown { .. } => u64::MAX,
                _ => entry
                    .complete
                    .expect("answered operations have a completion"),
            };
            per_key.entry(entry.key).or_default().push(HistOp {
                client: entry.client,
                invoke: entry.invoke,
                complete,
                op: entry.op.clone(),
                observed,
            });
        }
        for (key, ops) in per_key {
            match check_key(ops) {
                Ok(()) => {}
                Err(NotLinearizable::Violation(why)) => self.violations.push(format!(
                    "linearizability: key {}: {why}",
                    super::client::key_name(key)
                )),
                Err(NotLinearizable::Inconclusive(why)) => self.violations.push(format!(
                    "linearizability: key {} could not be checked: {why}",
                    super::client::key_name(key)
                )),
            }
        }
    }
}
