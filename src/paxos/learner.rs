//! The learner: which slots are decided, with what value, and handing them out for applying
//! strictly in order. Also catch-up: a node that is behind pulls decided values from the leader
//! (or, if they are compacted there, is sent a snapshot).
//!
//! Invariants asserted here: a decided slot never changes value; slots are handed out for
//! applying once each, in order, with no gaps.

use crate::paxos::message::{Message, SlotState, MESSAGE_FIXED_BYTES_MAX};
use crate::paxos::replica::Replica;
use crate::paxos::storage::Record;
use crate::paxos::types::{Ballot, NodeId, Slot, Value};

impl Replica {
    /// `value` was chosen for `slot`. `voted_at` is the ballot at which the caller knows this
    /// node's own vote for the slot carries `value` (then no `Chosen` record is needed: the
    /// `Accepted` record already holds it).
    pub(crate) fn decide(&mut self, slot: Slot, value: Value, voted_at: Option<Ballot>) {
        if slot <= self.log_start {
            return;
        }
        if let Some(known) = self.log.get(&slot) {
            assert!(
                *known == value,
                "slot {slot} was decided twice with different values"
            );
            return;
        }
        let own_vote = self.accepted.remove(&slot);
        let vote_holds_value = match (&own_vote, voted_at) {
            (Some((ballot, _)), Some(at)) if *ballot == at => true,
            (Some((_, voted)), _) => *voted == value,
            (None, _) => false,
        };
        if !vote_holds_value {
            self.persist(Record::Chosen {
                slot,
                value: value.clone(),
            });
        }
        if let Value::Command(command) = &value {
            if let crate::paxos::replica::RoleState::Leader(leadership) = &mut self.role {
                leadership.queued.remove(&command.id);
            }
        }
        self.log.insert(slot, value);
        self.advance_decided();
    }

    /// Moves `decided_upto` over every slot now held, folding each into the membership history
    /// (in slot order, as the state machine does).
    pub(crate) fn advance_decided(&mut self) {
        while let Some(value) = self.log.get(&(self.decided_upto + 1)) {
            self.decided_upto += 1;
            if let Some(Ok(_)) = self.history.fold(self.decided_upto, value) {
                self.members_changed = true;
                self.members_epoch += 1;
            }
        }
        assert_eq!(
            self.history.folded_upto(),
            self.decided_upto,
            "the membership history must be folded up to the decided prefix"
        );
        if self.history.trim_below(self.decided_upto + 1) {
            self.members_changed = true;
            self.members_epoch += 1;
        }
        self.commit_seen = self.commit_seen.max(self.decided_upto);
    }

    /// Hands out one `Decided` record for everything decided since the last one.
    pub(crate) fn record_decided(&mut self) {
        if self.decided_upto > self.decided_recorded {
            self.decided_recorded = self.decided_upto;
            self.persist(Record::Decided {
                upto: self.decided_upto,
            });
        }
    }

    /// Hands out decided slots for applying, in order.
    pub(crate) fn apply_decided(&mut self) {
        while self.applied < self.decided_upto {
            let slot = self.applied + 1;
            let value = self
                .log
                .get(&slot)
                .unwrap_or_else(|| panic!("slot {slot} is decided but not held: a gap"))
                .clone();
            if let Value::Command(command) = &value {
                if command.id.origin == self.config.node {
                    self.own.remove(&command.id);
                }
            }
            self.apply_out.push((slot, value));
            self.applied = slot;
        }
    }

    /// The leader of `ballot` says every slot `<= commit` is decided. A slot this node voted for
    /// at `ballot` holds the leader's proposal, which is the decided value; any other slot must
    /// be pulled (catch-up).
    pub(crate) fn learn_commit(&mut self, from: NodeId, ballot: Ballot, commit: Slot) {
        if commit > self.commit_seen {
            self.commit_seen = commit;
            self.commit_source = Some(from);
        }
        while self.decided_upto < commit {
            let slot = self.decided_upto + 1;
            match self.accepted.get(&slot) {
                Some((voted, value)) if *voted == ballot => {
                    let value = value.clone();
                    self.decide(slot, value, Some(ballot));
                }
                _ => break,
            }
        }
    }

    pub(crate) fn tick_catch_up(&mut self) {
        if self.decided_upto >= self.commit_seen || self.now < self.catch_up_at {
            return;
        }
        self.request_catch_up();
    }

    fn request_catch_up(&mut self) {
        let target = match (self.leader, self.commit_source) {
            (Some((leader, _)), _) if leader != self.config.node => leader,
            (_, Some(source)) if source != self.config.node => source,
            _ => return,
        };
        self.catch_up_at = self.now + self.config.retry_ticks;
        self.send(
            target,
            Message::CatchUp {
                from: self.decided_upto + 1,
            },
        );
    }

    pub(crate) fn on_catch_up(&mut self, from: NodeId, slot: Slot) {
        if slot <= self.log_start {
            self.send(
                from,
                Message::SnapshotNeeded {
                    log_start: self.log_start,
                },
            );
            if !self.send_snapshot.contains(&from) {
                self.send_snapshot.push(from);
            }
            return;
        }
        let budget = self.config.message_bytes_max - MESSAGE_FIXED_BYTES_MAX;
        let mut entries = Vec::new();
        let mut bytes = 0;
        for (s, value) in self.log.range(slot..) {
            let size = 10 + value.encoded_bytes_max();
            if bytes + size > budget {
                break;
            }
            bytes += size;
            entries.push((*s, value.clone()));
        }
        if entries.is_empty() && self.decided_upto < slot {
            return;
        }
        self.send(
            from,
            Message::Decided {
                commit: self.decided_upto,
                entries,
            },
        );
    }

    pub(crate) fn on_decided(&mut self, from: NodeId, commit: Slot, entries: Vec<(Slot, Value)>) {
        let before = self.decided_upto;
        for (slot, value) in entries {
            self.decide(slot, value, None);
        }
        if commit > self.commit_seen {
            self.commit_seen = commit;
            self.commit_source = Some(from);
        }
        if self.decided_upto > before && self.decided_upto < self.commit_seen {
            // Pull the next chunk right away.
            self.request_catch_up();
        }
    }

    /// What this node knows of slots `>= from`, as many as fit `budget` bytes: decided values
    /// and its votes. Returns the entries, the last slot covered, and whether more remain.
    pub(crate) fn slot_states(
        &self,
        from: Slot,
        budget: usize,
    ) -> (Vec<(Slot, SlotState)>, Slot, bool) {
        let start = from.max(self.log_start + 1);
        let mut decided = self.log.range(start..).peekable();
        let mut voted = self.accepted.range(start..).peekable();
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut upto = start.saturating_sub(1);
        loop {
            let next_decided = decided.peek().map(|(s, _)| **s);
            let next_voted = voted.peek().map(|(s, _)| **s);
            let (slot, state) = match (next_decided, next_voted) {
                (None, None) => return (entries, upto, false),
                (Some(d), v) if v.is_none_or(|v| d <= v) => {
                    if v == Some(d) {
                        voted.next();
                    }
                    let (_, value) = decided.next().expect("peeked");
                    (
                        d,
                        SlotState::Decided {
                            value: value.clone(),
                        },
                    )
                }
                (_, Some(v)) => {
                    let (_, (ballot, value)) = voted.next().expect("peeked");
                    (
                        v,
                        SlotState::Accepted {
                            ballot: *ballot,
                            value: value.clone(),
                        },
                    )
                }
                (Some(_), None) => unreachable!("covered by the decided arm"),
            };
            let size = state.encoded_bytes_max();
            if bytes + size > budget && !entries.is_empty() {
                return (entries, upto, true);
            }
            bytes += size;
            upto = slot;
            entries.push((slot, state));
        }
    }
}
