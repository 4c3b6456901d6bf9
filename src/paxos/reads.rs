//! Linearizable reads without writing to the log: the read-index round.
//!
//! A read that arrives at the leader is put in the next round. A round takes as its index the
//! leader's decided prefix when the round starts (and at least the highest slot its election
//! found, since everything chosen before it may be decided only up there), then asks every member
//! to acknowledge the leader's ballot. Acknowledgements from a majority, sent after the read
//! arrived, prove that no higher ballot had been promised by a majority, so no other leader could
//! have decided anything the index does not cover. The read may then be served as soon as the
//! serving node has applied up to the index. A non-leader asks the leader for an index
//! (`ReadIndex`) and serves the read locally once it has applied up to it.

use crate::paxos::message::Message;
use crate::paxos::quorum::MemberSet;
use crate::paxos::ready::ReadId;
use crate::paxos::replica::Replica;
use crate::paxos::types::{NodeId, Slot};
use std::collections::BTreeMap;

/// Who asked for a read the leader confirms.
#[derive(Copy, Clone, Debug)]
enum Reader {
    Local(ReadId),
    Remote(NodeId, u64),
}

/// A read round in flight.
struct Round {
    number: u64,
    index: Slot,
    acks: MemberSet,
    readers: Vec<Reader>,
    resend_at: u64,
}

/// Reads at every stage.
#[derive(Default)]
pub(crate) struct Reads {
    /// Local reads not yet handed to a leader (none known, or just lost).
    unsent: Vec<ReadId>,
    /// Local reads sent to the leader: id -> when to re-send.
    sent: BTreeMap<ReadId, u64>,
    /// ReadIndex requests to send at the next `take_ready`.
    outgoing: Vec<ReadId>,
    /// Reads with an index, waiting until it is applied here.
    waiting_apply: Vec<(ReadId, Slot)>,
    /// Leader: reads for the next round.
    next_round: Vec<Reader>,
    /// Leader: the round in flight.
    round: Option<Round>,
    /// Leader: the last round number used.
    round_number: u64,
}

impl Reads {
    /// The number of the round in flight (0: none), carried by heartbeats.
    pub(crate) fn round_in_flight(&self) -> u64 {
        self.round.as_ref().map_or(0, |r| r.number)
    }
}

/// Removes `id` from `ids`; returns whether it was there.
fn take(ids: &mut Vec<ReadId>, id: ReadId) -> bool {
    match ids.iter().position(|x| *x == id) {
        Some(at) => {
            ids.swap_remove(at);
            true
        }
        None => false,
    }
}

impl Replica {
    pub(crate) fn read_requested(&mut self, id: ReadId) {
        if self.leading().is_some() {
            self.reads.next_round.push(Reader::Local(id));
        } else if self.leader.is_some() {
            self.reads.outgoing.push(id);
        } else {
            self.reads.unsent.push(id);
        }
    }

    pub(crate) fn on_read_index(&mut self, from: NodeId, ids: Vec<u64>) {
        if self.leading().is_none() {
            return; // the reader re-sends to whoever leads
        }
        self.reads
            .next_round
            .extend(ids.into_iter().map(|id| Reader::Remote(from, id)));
    }

    pub(crate) fn on_read_index_reply(&mut self, ids: Vec<u64>, index: Slot) {
        for id in ids {
            // The read may have just been queued for re-sending (its retry timer fired before
            // this reply arrived): the reply answers it all the same. Taking replies only from
            // `sent` livelocked every read whose round trip exceeds `retry_ticks`.
            let queued = take(&mut self.reads.outgoing, id) || take(&mut self.reads.unsent, id);
            if self.reads.sent.remove(&id).is_some() || queued {
                self.reads.waiting_apply.push((id, index));
            }
        }
        if index > self.commit_seen {
            self.commit_seen = index;
        }
    }

    pub(crate) fn read_round_acked(&mut self, from: NodeId, number: u64) {
        // Leadership is confirmed by a majority of every membership that governs an undecided
        // slot: any of them could otherwise elect a leader that decides writes we do not see.
        let undecided = self.decided_upto + 1;
        let Some(round) = self.reads.round.as_mut() else {
            return;
        };
        if round.number != number || number == 0 {
            return;
        }
        if self.history.is_voter_from(from, undecided) {
            round.acks.insert(from);
        }
        self.confirm_round_if_quorum();
    }

    /// Confirms the round in flight once its acknowledgements hold a majority of every
    /// membership in force now (one may have shrunk since the round began, and the members
    /// that left will never answer).
    fn confirm_round_if_quorum(&mut self) {
        let undecided = self.decided_upto + 1;
        let Some(round) = self.reads.round.as_ref() else {
            return;
        };
        if self.history.is_quorum_from(&round.acks, undecided) {
            self.confirm_round();
        }
    }

    fn confirm_round(&mut self) {
        let Some(round) = self.reads.round.take() else {
            return;
        };
        let mut remote: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
        for reader in round.readers {
            match reader {
                Reader::Local(id) => self.reads.waiting_apply.push((id, round.index)),
                Reader::Remote(node, id) => remote.entry(node).or_default().push(id),
            }
        }
        for (node, ids) in remote {
            self.send(
                node,
                Message::ReadIndexReply {
                    ids,
                    index: round.index,
                },
            );
        }
    }

    /// Starts a round if reads wait for one and none is in flight; sends ReadIndex requests.
    pub(crate) fn flush_reads(&mut self) {
        if let Some((ballot, recovered_upto)) = self.leading() {
            // A new leader starts read rounds only once it has decided everything its election
            // found: until then it may not know the membership of every slot it recovered, nor
            // whether its election covers it, and a majority it does not know of may have
            // decided writes beyond them (the simulator found such a stale read once
            // membership changes ran: docs/paxos.md).
            let recovered = self.decided_upto >= recovered_upto;
            if self.reads.round.is_none() && !self.reads.next_round.is_empty() && recovered {
                self.reads.round_number += 1;
                let number = self.reads.round_number;
                let me = self.config.node;
                let acks = if self.history.is_voter_from(me, self.decided_upto + 1) {
                    MemberSet::of(me)
                } else {
                    MemberSet::default()
                };
                self.reads.round = Some(Round {
                    number,
                    index: self.decided_upto,
                    acks,
                    readers: std::mem::take(&mut self.reads.next_round),
                    resend_at: self.now + self.config.retry_ticks,
                });
                if self.history.is_quorum_from(&acks, self.decided_upto + 1) {
                    self.confirm_round();
                } else {
                    self.broadcast_heartbeat(ballot, number, MemberSet::default());
                }
            }
            return;
        }
        if self.reads.outgoing.is_empty() {
            return;
        }
        let Some((leader, _)) = self.leader else {
            let outgoing = std::mem::take(&mut self.reads.outgoing);
            self.reads.unsent.extend(outgoing);
            return;
        };
        let resend_at = self.now + self.config.retry_ticks;
        let ids = std::mem::take(&mut self.reads.outgoing);
        for chunk in ids.chunks(crate::paxos::READ_IDS_PER_MESSAGE_MAX) {
            for id in chunk {
                self.reads.sent.insert(*id, resend_at);
            }
            self.send(
                leader,
                Message::ReadIndex {
                    ids: chunk.to_vec(),
                },
            );
        }
    }

    /// Hands out the reads whose index is applied.
    pub(crate) fn release_reads(&mut self) {
        let applied = self.applied;
        let ready = &mut self.reads_ready;
        self.reads.waiting_apply.retain(|(id, index)| {
            if *index <= applied {
                ready.push(*id);
                false
            } else {
                true
            }
        });
    }

    pub(crate) fn tick_reads(&mut self) {
        let now = self.now;
        if let Some((ballot, _)) = self.leading() {
            self.confirm_round_if_quorum();
            if let Some(round) = self.reads.round.as_mut() {
                if now >= round.resend_at {
                    round.resend_at = now + self.config.retry_ticks;
                    let (number, acks) = (round.number, round.acks);
                    self.broadcast_heartbeat(ballot, number, acks);
                }
            }
            return;
        }
        if self.leader.is_none() {
            return;
        }
        let due: Vec<ReadId> = self
            .reads
            .sent
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.reads.sent.remove(&id);
            self.reads.outgoing.push(id);
        }
        let unsent = std::mem::take(&mut self.reads.unsent);
        self.reads.outgoing.extend(unsent);
    }

    /// The leader changed (or we stopped leading): reads not yet confirmed go to the new one.
    pub(crate) fn reads_leader_changed(&mut self) {
        let mut local = Vec::new();
        let pending = self
            .reads
            .round
            .take()
            .map(|r| r.readers)
            .unwrap_or_default()
            .into_iter()
            .chain(std::mem::take(&mut self.reads.next_round));
        for reader in pending {
            if let Reader::Local(id) = reader {
                local.push(id);
            }
        }
        local.extend(std::mem::take(&mut self.reads.sent).into_keys());
        local.extend(std::mem::take(&mut self.reads.outgoing));
        local.extend(std::mem::take(&mut self.reads.unsent));
        for id in local {
            self.read_requested(id);
        }
    }
}
