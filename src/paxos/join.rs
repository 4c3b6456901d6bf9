//! The safe join: a node that comes up with empty storage may be brand new, or may have lost a
//! disk holding promises and votes; it cannot tell which. Before it may vote it learns, from a
//! majority of the *other* members, their highest promise and what they hold of every slot, and
//! adopts it durably (promise, votes, decided values, then a `Joined` record).
//!
//! Why this is enough: the answers must intersect every quorum this node was ever part of in a
//! member that still holds its state. Then every promise it made is matched or exceeded by a
//! promise it adopts, and every value that could have been chosen with its vote is reported by a
//! member of that intersection (at the same or a higher ballot, which by Paxos carries the same
//! value). Each adopted vote is a proposal some leader really made, so holding it is as if this
//! node had voted late.
//!
//! Members that are themselves still joining answer too (that is how a brand-new cluster, all
//! empty, bootstraps: every member hears "nothing" from the others and joins with nothing), but
//! their answer says so, and it cannot stand in for a member that holds state: such a member may
//! have lost its disk, votes for chosen values included. [`join_is_safe`] counts the worst case.
//! The assumption is the usual one: at most a minority of members lose their storage at once.
//!
//! Compaction: an answerer reports nothing of the slots it compacted (`log_start`); they are
//! decided, but this node holds no value for them and so cannot vouch that it voted for nothing
//! there. It therefore adopts the answers only once it holds every slot up to the highest
//! `log_start` reported as decided (asking for them through catch-up, which brings a snapshot or
//! the values): then a prepare for those slots gets their decided values from it, or its own
//! `log_start`, which tells the candidate it cannot report them. Adopting earlier let a candidate that
//! had not decided them count this node's empty promise and fill decided slots with no-ops (the
//! simulator found it as soon as it ran snapshots: `docs/paxos.md`).

use crate::paxos::message::{Message, SlotState, MESSAGE_FIXED_BYTES_MAX};
use crate::paxos::quorum::MemberSet;
use crate::paxos::replica::Replica;
use crate::paxos::storage::Record;
use crate::paxos::types::{Ballot, NodeId, Slot, Value};
use std::collections::BTreeMap;

/// What a joining node has learned so far.
pub(crate) struct Join {
    /// Per other member: the next slot to pull (`None`: that member's answer is complete).
    next_from: BTreeMap<NodeId, Option<Slot>>,
    /// Members whose whole answer arrived.
    complete: MemberSet,
    /// Those of them that were still joining themselves (no state to vouch for).
    complete_stateless: MemberSet,
    /// The highest promise reported.
    promised: Ballot,
    /// The highest-ballot vote reported, per slot.
    votes: BTreeMap<Slot, (Ballot, Value)>,
    /// Decided values reported, per slot.
    decided: BTreeMap<Slot, Value>,
    /// The highest compaction point reported, and who reported it.
    compacted: Slot,
    compacted_by: Option<NodeId>,
    /// Enough members answered; adopting waits until slots `..=compacted` are decided here.
    answered: bool,
    /// When queries are re-sent to members that have not answered in full.
    resend_at: u64,
}

impl Join {
    /// A join that asks each of `peers` (every voter but this node).
    pub(crate) fn new(peers: Vec<NodeId>) -> Join {
        Join {
            next_from: peers.into_iter().map(|p| (p, Some(1))).collect(),
            complete: MemberSet::default(),
            complete_stateless: MemberSet::default(),
            promised: Ballot::ZERO,
            votes: BTreeMap::new(),
            decided: BTreeMap::new(),
            compacted: 0,
            compacted_by: None,
            answered: false,
            resend_at: 0,
        }
    }
}

impl Replica {
    pub(crate) fn tick_join(&mut self) {
        let now = self.now;
        self.join_when_caught_up();
        let Some(join) = self.join.as_mut() else {
            return;
        };
        if now < join.resend_at {
            return;
        }
        join.resend_at = now + self.config.retry_ticks;
        let asks: Vec<(NodeId, Slot)> = join
            .next_from
            .iter()
            .filter_map(|(peer, n)| n.map(|slot| (*peer, slot)))
            .collect();
        for (to, from) in asks {
            self.send(to, Message::JoinQuery { from });
        }
    }

    pub(crate) fn on_join_query(&mut self, from: NodeId, slot: Slot) {
        let budget = self.config.message_bytes_max - MESSAGE_FIXED_BYTES_MAX;
        let (entries, upto, more) = self.slot_states(slot, budget);
        // A member whose own compacted prefix the joiner asks for reports its votes above it;
        // the joiner gets the compacted part as a snapshot through catch-up.
        self.send_after_persist(
            from,
            Message::JoinInfo {
                voter: self.voter,
                promised: self.promised,
                log_start: self.log_start,
                from: slot,
                upto,
                more,
                entries,
            },
        );
    }

    #[allow(clippy::too_many_arguments)] // the fields of one message
    pub(crate) fn on_join_info(
        &mut self,
        from: NodeId,
        voter: bool,
        promised: Ballot,
        log_start: Slot,
        slot: Slot,
        upto: Slot,
        more: bool,
        entries: Vec<(Slot, SlotState)>,
    ) {
        let members = self.history.latest().voters().len();
        let Some(join) = self.join.as_mut() else {
            return;
        };
        let Some(next_from) = join.next_from.get_mut(&from) else {
            return; // not one of the voters asked
        };
        if *next_from != Some(slot) {
            return; // stale or duplicate chunk
        }
        join.promised = join.promised.max(promised);
        if log_start > join.compacted {
            join.compacted = log_start;
            join.compacted_by = Some(from);
        }
        for (s, state) in entries {
            match state {
                SlotState::Decided { value } => {
                    join.decided.insert(s, value);
                }
                SlotState::Accepted { ballot, value } => {
                    if join.votes.get(&s).is_none_or(|(b, _)| *b < ballot) {
                        join.votes.insert(s, (ballot, value));
                    }
                }
            }
        }
        if more {
            *next_from = Some(upto + 1);
            self.send(from, Message::JoinQuery { from: upto + 1 });
            return;
        }
        *next_from = None;
        join.complete.insert(from);
        if !voter {
            join.complete_stateless.insert(from);
        }
        if !join.answered
            && join_is_safe(members, join.complete.len(), join.complete_stateless.len())
        {
            join.answered = true;
            let (compacted, source) = (join.compacted, join.compacted_by);
            if self.decided_upto >= compacted {
                self.adopt_join();
            } else {
                // Fetch the compacted prefix first; `join_when_caught_up` ends the join.
                self.commit_seen = self.commit_seen.max(compacted);
                self.commit_source = source;
                self.catch_up_at = self.now;
            }
        }
    }

    /// Ends a join that was waiting to hold the slots its answerers compacted.
    pub(crate) fn join_when_caught_up(&mut self) {
        let ready = self
            .join
            .as_ref()
            .is_some_and(|j| j.answered && self.decided_upto >= j.compacted);
        if ready {
            self.adopt_join();
        }
    }

    fn adopt_join(&mut self) {
        let Some(join) = self.join.take() else {
            return;
        };
        if join.promised > self.promised {
            self.promise(join.promised);
        }
        self.round_seen = self.round_seen.max(join.promised.round);
        for (slot, (ballot, value)) in join.votes {
            self.store_vote(slot, ballot, value);
        }
        for (slot, value) in join.decided {
            self.decide(slot, value, None);
        }
        self.persist(Record::Joined);
        self.voter = true;
        self.reset_election_timer();
    }
}

/// Whether answers from `answered` other members, `stateless` of them still joining themselves,
/// are enough for a node with empty storage to join a `members`-node cluster.
///
/// The worst case: this node and some of the stateless answerers lost their disks (at most a
/// minority of the cluster, this node included) and were voters in a quorum that chose a value,
/// together with members that have not answered. That quorum escapes the answers iff it fits in
/// those members; it must not fit. The answers must also be a majority, as any promise is.
pub(crate) fn join_is_safe(members: usize, answered: usize, stateless: usize) -> bool {
    let quorum = members / 2 + 1;
    let minority = (members - 1) / 2;
    let lost_disks_max = stateless.min(minority.saturating_sub(1));
    let silent = (members - 1).saturating_sub(answered);
    answered >= quorum && 1 + lost_disks_max + silent < quorum
}
