//! The acceptor: promises (phase 1b) and votes (phase 2b), and following a leader.
//!
//! Safety rests here: an acceptor never accepts below its promise, never lowers its promise,
//! and never lets a promise or vote leave before the records behind it are durable (every reply
//! goes through `send_after_persist`). A node that is not a voter (empty storage, join not done)
//! answers neither prepares nor accepts.

use crate::paxos::message::{Message, MESSAGE_FIXED_BYTES_MAX};
use crate::paxos::replica::{Replica, RoleState};
use crate::paxos::storage::Record;
use crate::paxos::types::{Ballot, NodeId, Slot, Value};

impl Replica {
    pub(crate) fn on_prepare(&mut self, from: NodeId, ballot: Ballot, slot: Slot) {
        if !self.voter {
            return;
        }
        self.round_seen = self.round_seen.max(ballot.round);
        if ballot < self.promised {
            self.nack(from);
            return;
        }
        if ballot > self.promised && self.leader_is_alive_and_not(ballot.node) {
            // Leader stickiness: a live leader keeps its job; a node that merely lost touch
            // with it must not depose it. The candidate retries after its timeout.
            return;
        }
        if ballot > self.promised {
            self.promise(ballot);
            if from != self.config.node {
                self.step_down_below(ballot);
                self.leader = None;
                self.reset_election_timer();
            }
        }
        let budget = self.config.message_bytes_max - MESSAGE_FIXED_BYTES_MAX;
        let (entries, upto, more) = self.slot_states(slot, budget);
        self.send_after_persist(
            from,
            Message::Promise {
                ballot,
                from: slot,
                upto,
                more,
                log_start: self.log_start,
                entries,
            },
        );
    }

    pub(crate) fn on_accept(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        commit: Slot,
        entries: Vec<(Slot, Value)>,
    ) {
        if !self.voter {
            self.follow(from, ballot);
            self.learn_commit(from, ballot, commit);
            return;
        }
        if ballot < self.promised {
            self.nack(from);
            return;
        }
        self.promise(ballot);
        self.follow(from, ballot);
        let mut slots = Vec::with_capacity(entries.len());
        for (slot, value) in entries {
            slots.push(slot);
            self.store_vote(slot, ballot, value);
        }
        self.send_after_persist(from, Message::Accepted { ballot, slots });
        self.learn_commit(from, ballot, commit);
    }

    pub(crate) fn on_heartbeat(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        commit: Slot,
        read_round: u64,
    ) {
        if ballot < self.promised {
            if self.voter {
                self.nack(from);
            }
            return;
        }
        self.follow(from, ballot);
        self.learn_commit(from, ballot, commit);
        if self.voter {
            // The acknowledgement says "I have promised nothing above `ballot`", which is true
            // now whether or not our own promise records are durable yet.
            self.send(
                from,
                Message::HeartbeatAck {
                    ballot,
                    read_round,
                    decided: self.decided_upto,
                },
            );
        }
    }

    /// Records a vote for `value` in `slot` at `ballot`. A slot already decided here keeps its
    /// decided value: the proposal carries that same value (Paxos guarantees it), so the vote
    /// stands without storing it again.
    pub(crate) fn store_vote(&mut self, slot: Slot, ballot: Ballot, value: Value) {
        if slot <= self.log_start || self.log.contains_key(&slot) {
            return;
        }
        self.persist(Record::Accepted {
            slot,
            ballot,
            value: value.clone(),
        });
        self.accepted.insert(slot, (ballot, value));
    }

    /// Tells `to` that we promised a higher ballot than the one it asked with.
    fn nack(&mut self, to: NodeId) {
        self.send(
            to,
            Message::Nack {
                promised: self.promised,
            },
        );
    }

    /// Takes `from` as the leader of `ballot` (if that is newer than what we follow).
    pub(crate) fn follow(&mut self, from: NodeId, ballot: Ballot) {
        if from == self.config.node {
            return;
        }
        self.round_seen = self.round_seen.max(ballot.round);
        self.step_down_below(ballot);
        let newer = self.leader.is_none_or(|(_, b)| b < ballot);
        if newer {
            self.leader = Some((from, ballot));
        }
        if self.leader.is_some_and(|(_, b)| b == ballot) {
            self.leader_heard_at = self.now;
            self.reset_election_timer();
            if newer {
                self.leader_changed();
            }
        }
    }

    /// True if we follow a leader other than `candidate` and heard from it recently, or lead.
    fn leader_is_alive_and_not(&self, candidate: NodeId) -> bool {
        match self.role {
            RoleState::Leader(_) => candidate != self.config.node,
            _ => match self.leader {
                Some((leader, _)) => {
                    leader != candidate
                        && self.now < self.leader_heard_at + self.config.election_timeout_ticks
                }
                None => false,
            },
        }
    }
}
