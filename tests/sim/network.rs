//! The simulated network: every message between replicas goes through here, and may be lost,
//! duplicated, delayed (which reorders it) or cut off by a partition. Delivery order is a pure
//! function of the run's RNG: in-flight messages sit in a `BTreeMap` keyed by delivery tick and a
//! random tie-breaker.

use super::rng::SimRng;
use consens::internals::net::wire::Wire;
use consens::internals::paxos::types::{Ballot, NodeId, Slot};
use consens::internals::paxos::Message;
use std::collections::BTreeMap;

/// How hostile the network is right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conditions {
    /// Chance that a message is dropped, in thousandths.
    pub loss_per_mille: u64,
    /// Chance that a message is delivered twice, in thousandths.
    pub dup_per_mille: u64,
    /// Every copy is delivered after `1..=delay_ticks_max` ticks.
    pub delay_ticks_max: u64,
    /// Chance that a copy is a straggler instead, delivered after up to
    /// [`STRAGGLER_TICKS_MAX`] ticks (a message stuck in some queue), in thousandths.
    pub straggler_per_mille: u64,
}

/// The longest a straggler takes to arrive, in ticks.
pub const STRAGGLER_TICKS_MAX: u64 = 300;

impl Conditions {
    /// No loss, no duplicates, next-tick delivery.
    pub fn perfect() -> Conditions {
        Conditions {
            loss_per_mille: 0,
            dup_per_mille: 0,
            delay_ticks_max: 1,
            straggler_per_mille: 0,
        }
    }
}

/// A message on the wire.
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub message: Wire,
}

/// All messages in flight, the conditions, and the partition.
pub struct Network {
    /// In flight, keyed by (delivery tick, random tie-breaker, send number).
    in_flight: BTreeMap<(u64, u64, u64), Envelope>,
    sent: u64,
    pub conditions: Conditions,
    /// Partition group per node: messages only flow within a group. `None`: fully connected.
    partition: Option<Vec<u8>>,
    /// Messages handed to the network, for the summary.
    pub messages_sent: u64,
    /// Votes sent since the checker last took them: (voter, ballot, slots). A vote counts as
    /// given once sent, whether or not the network delivers it.
    pub votes: Vec<(NodeId, Ballot, Vec<Slot>)>,
    /// Promises sent since the checker last took them: (acceptor, ballot, first slot of the
    /// chunk, whether it is the last chunk).
    pub promises: Vec<(NodeId, Ballot, Slot, bool)>,
}

impl Network {
    pub fn new() -> Network {
        Network {
            in_flight: BTreeMap::new(),
            sent: 0,
            conditions: Conditions::perfect(),
            partition: None,
            messages_sent: 0,
            votes: Vec::new(),
            promises: Vec::new(),
        }
    }

    /// Splits the cluster: `groups[i]` is node i's side (a node added since is on side 0).
    pub fn partition(&mut self, groups: Vec<u8>) {
        self.partition = Some(groups);
    }

    pub fn heal_partition(&mut self) {
        self.partition = None;
    }

    fn connected(&self, a: NodeId, b: NodeId) -> bool {
        match &self.partition {
            None => true,
            Some(groups) => {
                let side = |n: NodeId| groups.get(usize::from(n.0)).copied().unwrap_or(0);
                side(a) == side(b)
            }
        }
    }

    /// Hands `message` to the network at tick `now`.
    pub fn send(&mut self, rng: &mut SimRng, now: u64, from: NodeId, to: NodeId, message: Wire) {
        self.messages_sent += 1;
        match &message {
            Wire::Paxos(Message::Accepted { ballot, slots }) => {
                self.votes.push((from, *ballot, slots.clone()));
            }
            Wire::Paxos(Message::Promise {
                ballot,
                from: first,
                more,
                ..
            }) => self.promises.push((from, *ballot, *first, !more)),
            _ => {}
        }
        if !self.connected(from, to) || rng.chance(self.conditions.loss_per_mille) {
            return;
        }
        if rng.chance(self.conditions.dup_per_mille) {
            self.enqueue(rng, now, from, to, message.clone());
        }
        self.enqueue(rng, now, from, to, message);
    }

    fn enqueue(&mut self, rng: &mut SimRng, now: u64, from: NodeId, to: NodeId, message: Wire) {
        let delay_max = if rng.chance(self.conditions.straggler_per_mille) {
            STRAGGLER_TICKS_MAX
        } else {
            self.conditions.delay_ticks_max.max(1)
        };
        let at = now + rng.between(1, delay_max);
        self.sent += 1;
        let key = (at, rng.next_u64(), self.sent);
        self.in_flight.insert(key, Envelope { from, to, message });
    }

    /// Removes and returns every message due at or before `now`, in delivery order. Messages
    /// that cross a partition are dropped here too (they were in flight when it started).
    pub fn due(&mut self, now: u64) -> Vec<Envelope> {
        let mut out = Vec::new();
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let envelope = entry.remove();
            if self.connected(envelope.from, envelope.to) {
                out.push(envelope);
            }
        }
        out
    }
}
