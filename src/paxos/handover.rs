//! Leadership transfer: the leader hands its job to a named voter, as etcd's `move-leader` and
//! Consul's `transfer-leader` do (an operator draining a machine, or about to remove the leader).
//!
//! The leader stops admitting new commands into its window, waits until every slot it proposed
//! is decided and the target has reported that whole prefix decided in a heartbeat answer given
//! after the transfer was asked for (an older one does not show the target is up), and then sends every peer a `Handover`: the target campaigns at once, the others stop
//! deferring to the old leader (leader stickiness), and the old leader steps down. The target's
//! ballot is above every round it has seen, so any majority elects it, and being caught up it is
//! not sent away to fetch a snapshot first. Safety does not rest on any of this: a handover is an
//! ordinary election that starts early. A target that does not report caught up within
//! `Config::transfer_timeout_ticks` (down, or far behind) is given up on and the leader resumes;
//! the caller sees the leader unchanged.

use crate::paxos::message::Message;
use crate::paxos::replica::{Replica, RoleState};
use crate::paxos::types::{Ballot, NodeId};

/// A handover the leader is preparing.
pub(crate) struct Transfer {
    pub(crate) to: NodeId,
    /// When it was asked for: only an answer from the target after this shows it is up.
    pub(crate) started: u64,
    /// When the leader gives up and resumes.
    pub(crate) deadline: u64,
}

/// Why a transfer was not started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("member {0} is not a voter of this cluster")]
    NotAVoter(NodeId),
    #[error("no leader is known to hand leadership over")]
    NoLeader,
}

impl Replica {
    /// Asks for leadership to move to voter `to`. The leader starts the handover; any other
    /// node passes the request to the leader it follows. The caller learns the result from
    /// `status().leader`.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if !self.history.latest().is_voter(to) {
            return Err(TransferError::NotAVoter(to));
        }
        match (&self.role, self.leader) {
            (RoleState::Leader(_), _) => {
                self.start_transfer(to);
                Ok(())
            }
            (_, Some((leader, _))) => {
                if leader != to {
                    self.send(leader, Message::TransferLeadership { to });
                }
                Ok(())
            }
            _ => Err(TransferError::NoLeader),
        }
    }

    pub(crate) fn on_transfer_leadership(&mut self, to: NodeId) {
        if self.history.latest().is_voter(to) {
            self.start_transfer(to);
        }
    }

    /// Starts (or retargets) a handover if this node leads and `to` is another voter.
    fn start_transfer(&mut self, to: NodeId) {
        let now = self.now;
        let deadline = now + self.config.transfer_timeout_ticks;
        let me = self.config.node;
        let RoleState::Leader(leadership) = &mut self.role else {
            return;
        };
        if to == me {
            leadership.transfer = None;
            return;
        }
        leadership.transfer = Some(Transfer {
            to,
            started: now,
            deadline,
        });
        self.poll_transfer_target();
    }

    /// Hands over if the target is caught up, gives up past the deadline, and otherwise asks the
    /// target for its decided prefix again (a heartbeat, whose answer carries it).
    pub(crate) fn tick_transfer(&mut self) {
        let now = self.now;
        let RoleState::Leader(leadership) = &mut self.role else {
            return;
        };
        let Some(transfer) = &leadership.transfer else {
            if let Some(to) = self.successor() {
                self.start_transfer(to);
            }
            return;
        };
        if now >= transfer.deadline {
            leadership.transfer = None;
            return;
        }
        if !self.try_handover() {
            self.poll_transfer_target();
        }
    }

    /// While this node leads but is no voter of the newest membership (an operator removed
    /// it): the voter of that membership best placed to take over, the one furthest caught up
    /// among those that answered recently.
    fn successor(&self) -> Option<NodeId> {
        let RoleState::Leader(leadership) = &self.role else {
            return None;
        };
        let newest = self.history.latest();
        if newest.is_voter(self.config.node) {
            return None;
        }
        let recent = 2 * self.config.election_timeout_ticks;
        newest
            .voters()
            .iter()
            .filter_map(|id| leadership.followers.get(id).map(|f| (*id, f)))
            .filter(|(_, f)| self.now < f.heard_at + recent)
            .max_by_key(|(id, f)| (f.decided, std::cmp::Reverse(*id)))
            .map(|(id, _)| id)
    }

    fn poll_transfer_target(&mut self) {
        let commit = self.decided_upto;
        let RoleState::Leader(leadership) = &self.role else {
            return;
        };
        let Some(transfer) = &leadership.transfer else {
            return;
        };
        let (to, ballot) = (transfer.to, leadership.ballot);
        self.send(
            to,
            Message::Heartbeat {
                ballot,
                commit,
                read_round: 0,
            },
        );
    }

    /// Hands over now if a handover waits and the target holds everything decided; returns
    /// whether it did.
    pub(crate) fn try_handover(&mut self) -> bool {
        let decided_upto = self.decided_upto;
        let RoleState::Leader(leadership) = &self.role else {
            return false;
        };
        let Some(transfer) = &leadership.transfer else {
            return false;
        };
        let (to, started) = (transfer.to, transfer.started);
        // What the target reported before the transfer began says nothing of whether it is up.
        let caught_up = leadership.proposals.is_empty()
            && leadership
                .followers
                .get(&to)
                .is_some_and(|f| f.heard_at > started && f.decided >= decided_upto);
        if !caught_up {
            return false;
        }
        let ballot = leadership.ballot;
        for peer in self.peers() {
            self.send(peer, Message::Handover { ballot, to });
        }
        self.step_down();
        self.leader = None;
        true
    }

    pub(crate) fn on_handover(&mut self, from: NodeId, ballot: Ballot, to: NodeId) {
        if self.leader != Some((from, ballot)) {
            return; // not from the leader we follow: stale
        }
        self.leader = None;
        if to == self.config.node && self.voter && self.join.is_none() {
            self.start_campaign();
        }
    }
}
