//! The properties every run must keep, checked as the run goes and at its end:
//! - agreement: no two nodes apply different values for the same slot;
//! - order: each node applies slots 1, 2, 3… with no gaps and none twice, except that a
//!   snapshot (installed from a peer, or loaded at a start) moves it forward to its slot;
//! - the state machine: the first application of every slot gives the outcome the model
//!   (`kv.rs`) gives, and every node's state digest at a slot is the same (also after a
//!   snapshot install or a restart from a snapshot);
//! - determinism: a command has the same slot and outcome everywhere;
//! - durability: every acknowledged write took effect at the slot and with the outcome its
//!   client was told, and every node's final state covers it;
//! - refusals: a write the node answered "no quorum" or "unavailable" never takes effect;
//! - linearizability of each key's client history (`linearizability.rs`);
//! - convergence: after the faults heal, every node stands at the same slot with the same digest
//!   and the same membership;
//! - quorums: every decided slot was voted for, at one ballot, by a majority of the voters of
//!   the membership that governs it (so no two memberships can both decide a slot, and no
//!   learner's or removed member's vote ever made a decision), and that ballot's phase 1 had
//!   complete promises covering the slot from a majority of the same membership.

use super::client::{HistEntry, Result};
use super::kv::ModelKv;
use super::linearizability::{check_key, HistOp, NotLinearizable, Observed};
use super::node::SimNode;
use consens::internals::node::driver::Observed as DriverObserved;
use consens::internals::paxos::types::{Ballot, CommandId, NodeId, Outcome, Slot, Value};
use consens::internals::paxos::MemberHistory;
use std::collections::{BTreeMap, BTreeSet};

/// What the checker learned so far, and what went wrong.
pub struct Checker {
    /// The value applied at each slot by the first node that applied it.
    chosen: BTreeMap<Slot, Value>,
    /// The state digest after each slot, as the first node to get there had it.
    digests: BTreeMap<Slot, u64>,
    /// Where and with what outcome each command first took effect.
    outcomes: BTreeMap<CommandId, (Slot, Outcome)>,
    /// The model state machine, fed the chosen sequence in slot order.
    model: ModelKv,
    /// Per node: the last slot this incarnation applied (or loaded).
    last_applied: Vec<Slot>,
    /// Votes seen on the wire for slots not yet applied anywhere: slot -> ballot -> voters.
    votes: BTreeMap<Slot, BTreeMap<Ballot, BTreeSet<NodeId>>>,
    /// Promises seen on the wire: ballot -> acceptor -> (first slot covered, complete).
    promises: BTreeMap<Ballot, BTreeMap<NodeId, (Slot, bool)>>,
    pub violations: Vec<String>,
}

impl Checker {
    pub fn new(members: usize, first: MemberHistory) -> Checker {
        Checker {
            chosen: BTreeMap::new(),
            digests: BTreeMap::from([(0, 0)]),
            outcomes: BTreeMap::new(),
            model: ModelKv::new(first),
            last_applied: vec![0; members],
            votes: BTreeMap::new(),
            promises: BTreeMap::new(),
            violations: Vec::new(),
        }
    }

    /// A node joined the cluster (it has applied nothing yet).
    pub fn node_added(&mut self) {
        self.last_applied.push(0);
    }

    /// The membership history of the chosen sequence so far.
    pub fn members(&self) -> &MemberHistory {
        self.model.members()
    }

    /// The highest slot any node has applied.
    pub fn chosen_upto(&self) -> Slot {
        self.chosen.last_key_value().map_or(0, |(slot, _)| *slot)
    }

    /// Votes sent on the wire: `voter` voted at `ballot` for `slots`.
    pub fn votes_sent(&mut self, voter: NodeId, ballot: Ballot, slots: &[Slot]) {
        let upto = self.chosen_upto();
        for &slot in slots.iter().filter(|s| **s > upto) {
            self.votes
                .entry(slot)
                .or_default()
                .entry(ballot)
                .or_default()
                .insert(voter);
        }
    }

    /// A promise sent on the wire: `acceptor` promised `ballot` for the slots from `first`
    /// (one chunk; `last` if it completes the promise).
    pub fn promise_sent(&mut self, acceptor: NodeId, ballot: Ballot, first: Slot, last: bool) {
        let entry = self
            .promises
            .entry(ballot)
            .or_default()
            .entry(acceptor)
            .or_insert((first, false));
        entry.0 = entry.0.min(first);
        entry.1 |= last;
    }

    /// Why `slot` was not decided by the rule, if it was not: a majority of the voters of its
    /// membership must have voted for it at one ballot, whose phase 1 had complete promises
    /// covering the slot from a majority of that same membership. A leader's own vote and
    /// promise never cross the wire: they count as given at its own ballot (and a lone voter,
    /// who sends no messages at all, decides alone).
    fn not_decided_by_the_rule(&mut self, slot: Slot) -> Option<String> {
        let membership = self.model.members().at(slot);
        let majority = |members: &BTreeSet<NodeId>| {
            let held = membership
                .voters()
                .iter()
                .filter(|v| members.contains(v))
                .count();
            held >= membership.quorum()
        };
        let Some(by_ballot) = self.votes.remove(&slot) else {
            return (membership.voters().len() != 1)
                .then(|| "no votes for it were ever sent".to_string());
        };
        let mut voted_at = Vec::new();
        for (ballot, mut voters) in by_ballot {
            voters.insert(ballot.node);
            if !majority(&voters) {
                continue;
            }
            let mut promised: BTreeSet<NodeId> = self
                .promises
                .get(&ballot)
                .into_iter()
                .flatten()
                .filter(|(_, (first, complete))| *complete && *first <= slot)
                .map(|(acceptor, _)| *acceptor)
                .collect();
            promised.insert(ballot.node);
            if majority(&promised) {
                return None;
            }
            voted_at.push(ballot);
        }
        Some(if voted_at.is_empty() {
            "no majority of its membership's voters voted for it at one ballot".to_string()
        } else {
            format!(
                "it was voted for at {voted_at:?}, but no majority of its membership's voters \
                 had promised that ballot for it"
            )
        })
    }

    /// Node `node` (re)started with its state machine at `slot` with `digest` (from its newest
    /// snapshot, or empty).
    pub fn restarted(&mut self, node: usize, slot: Slot, digest: u64) {
        self.last_applied[node] = slot;
        self.check_digest(node, slot, digest, "restarted from a snapshot");
    }

    /// The slot a command was first decided in, if any node applied it.
    pub fn decided_slot(&self, id: CommandId) -> Option<Slot> {
        self.outcomes.get(&id).map(|(slot, _)| *slot)
    }

    fn check_digest(&mut self, node: usize, slot: Slot, digest: u64, how: &str) {
        match self.digests.get(&slot) {
            Some(known) if *known != digest => self.violations.push(format!(
                "state: n{node} {how} at slot {slot} with digest {digest:016x}, another node \
                 had {known:016x} there"
            )),
            Some(_) => {}
            None => {
                self.digests.insert(slot, digest);
            }
        }
    }

    /// What node `node`'s state machine did.
    pub fn observed(&mut self, node: usize, observed: &DriverObserved) {
        match observed {
            DriverObserved::Applied {
                slot,
                value,
                outcome,
                digest,
            } => self.applied(node, *slot, value, outcome.as_ref(), *digest),
            DriverObserved::SnapshotInstalled { slot, digest } => {
                let last = self.last_applied[node];
                if *slot <= last {
                    self.violations.push(format!(
                        "order: n{node} installed a snapshot of slot {slot} after applying slot \
                         {last}"
                    ));
                }
                self.last_applied[node] = *slot;
                self.check_digest(node, *slot, *digest, "installed a snapshot");
            }
        }
    }

    fn applied(
        &mut self,
        node: usize,
        slot: Slot,
        value: &Value,
        outcome: Option<&Outcome>,
        digest: u64,
    ) {
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
                let next = self.chosen.last_key_value().map_or(1, |(s, _)| s + 1);
                if slot != next {
                    self.violations.push(format!(
                        "order: slot {slot} was applied first by n{node}, before any node \
                         applied slot {next}"
                    ));
                }
                if let Some(why) = self.not_decided_by_the_rule(slot) {
                    self.violations.push(format!(
                        "quorums: slot {slot} ({value:?}) was decided, but {why} (voters {:?})",
                        self.model.members().at(slot).voters()
                    ));
                }
                self.chosen.insert(slot, value.clone());
                let model = self.model.apply(slot, value);
                if model.as_ref() != outcome {
                    self.violations.push(format!(
                        "state: n{node} applied slot {slot} with {outcome:?}, the model gives \
                         {model:?}"
                    ));
                }
            }
        }
        self.check_digest(node, slot, digest, "applied a slot");
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
    /// Nodes in `retired` left the cluster for good and are not checked for convergence.
    pub fn finish(&mut self, nodes: &mut [SimNode], retired: &[bool], history: &[HistEntry]) {
        // Agreement of what each core holds as decided, beyond what was applied.
        let mut finals = Vec::new();
        for (i, node) in nodes.iter_mut().enumerate() {
            if retired[i] {
                continue;
            }
            let Some(driver) = node.driver.as_mut() else {
                self.violations
                    .push(format!("convergence: n{i} is down at the end"));
                continue;
            };
            for (slot, value) in &self.chosen {
                if let Some(held) = driver.replica().decided_value(*slot) {
                    if held != value {
                        self.violations.push(format!(
                            "agreement: n{i} holds {held:?} as decided at slot {slot}, \
                             {value:?} was applied"
                        ));
                    }
                }
            }
            let (slot, digest) = driver.applied_digest();
            let members = driver.kv().members().latest();
            if members != self.model.members().latest() {
                self.violations.push(format!(
                    "convergence: n{i} ends with members {members:?}, the chosen sequence gives \
                     {:?}",
                    self.model.members().latest()
                ));
            }
            finals.push((i, slot, digest));
        }
        // Convergence: the same slot and the same state everywhere.
        if let Some(&(_, slot, digest)) = finals.first() {
            for &(i, s, d) in &finals[1..] {
                if (s, d) != (slot, digest) {
                    self.violations.push(format!(
                        "convergence: n{i} ends at slot {s} with digest {d:016x}, n{} at slot \
                         {slot} with {digest:016x}",
                        finals[0].0
                    ));
                }
            }
        }
        let applied_everywhere = finals.iter().map(|f| f.1).min().unwrap_or(0);
        // Durability of acknowledged writes; refused writes never take effect.
        for entry in history {
            let Some(id) = entry.command else {
                continue;
            };
            match (&entry.result, self.outcomes.get(&id)) {
                (Result::Write(outcome), Some((slot, o))) if o == outcome => {
                    let there = matches!(
                        self.chosen.get(slot),
                        Some(Value::Command(c)) if c.id == id
                    );
                    if !there || *slot > applied_everywhere {
                        self.violations.push(format!(
                            "durability: acknowledged write {id:?} ({outcome:?}) at slot {slot} \
                             is not in every node's final state (applied everywhere up to \
                             {applied_everywhere})"
                        ));
                    }
                }
                (Result::Write(outcome), other) => self.violations.push(format!(
                    "durability: acknowledged write {id:?} ({outcome:?}) took effect as {other:?}"
                )),
                (Result::Refused, Some((slot, _))) => self.violations.push(format!(
                    "refusal: write {id:?} was answered as never proposed, yet took effect at \
                     slot {slot}"
                )),
                _ => {}
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
                Result::Dropped | Result::Refused => continue,
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
