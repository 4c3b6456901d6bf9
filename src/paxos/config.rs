//! The core's tunables: cluster shape, timers in ticks, and the limits that keep every message
//! within one datagram and every queue bounded.

use crate::paxos::member_history::MEMBER_CHANGE_DELAY_SLOTS;
use crate::paxos::membership::Membership;
use crate::paxos::types::NodeId;

/// Default byte budget of one message: a UDP datagram over IPv4 carries at most 65,507 bytes and
/// the daemon's envelope needs a few dozen of them.
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 65_000;

/// How one core behaves. Every duration is counted in logical ticks of the caller's clock.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub node: NodeId,
    /// The cluster's first membership, before any change in the log: what governs slot 1 (the
    /// log and snapshots say what governs later slots, `member_history.rs`).
    pub members: Membership,
    /// A membership change decided in slot `c` governs slots from `c + member_change_delay_slots`
    /// on. Part of the protocol: it must be the same on every member for the cluster's life.
    pub member_change_delay_slots: u64,
    /// This node was just added to the cluster as a new member (a learner with an id never used
    /// before): it cannot have voted, so it needs no safe join (`join.rs`). Only the start that
    /// joined may say so: a member that lost its disk must never claim it.
    pub new_member: bool,
    /// A leader sends a heartbeat (with its decided prefix) this often.
    pub heartbeat_ticks: u64,
    /// A follower that hears from no leader for this long (randomized up to twice as long) runs
    /// an election; a candidate that is not elected within it starts over with a higher ballot.
    pub election_timeout_ticks: u64,
    /// Requests that need an answer (prepares, accepts, catch-up, reads, joins) are re-sent
    /// after this long without one.
    pub retry_ticks: u64,
    /// A client command this node received is re-sent to the leader this often until decided.
    pub command_retry_ticks: u64,
    /// ... and given up on after this long (the caller has long reported "outcome unknown").
    pub command_expiry_ticks: u64,
    /// At most this many own client commands wait for a decision; `propose` refuses more.
    pub own_commands_max: usize,
    /// A leader keeps at most this many undecided slots in flight (never more than
    /// `member_change_delay_slots`: beyond it, the leader would not know the slot's membership).
    pub window_slots: u64,
    /// A leader has at most this many accept batches unanswered per follower; proposals that
    /// arrive meanwhile wait and leave as one batch with the next answer (self-clocked
    /// batching: one datagram and one follower sync per round trip, not per command). A batch
    /// unanswered for `retry_ticks` no longer counts (lost, or its member is down). One beats
    /// two on the benchmark machine: a follower syncs each batch that arrives during its
    /// previous sync on its own anyway, so a second batch in flight mostly doubled the syncs
    /// (docs/benchmarks.md, A/B of 2026-11-25).
    pub accept_batches_in_flight_max: usize,
    /// A leader queues at most this many commands beyond the window; more are refused.
    pub queue_commands_max: usize,
    /// No message is built larger than this (postcard bytes, bounded from above).
    pub message_bytes_max: usize,
    /// A leader preparing a handover (`Replica::transfer_leadership`) gives up if the target has
    /// not reported caught up within this long.
    pub transfer_timeout_ticks: u64,
    /// Decided values kept in memory below the snapshot point, so that a peer that is only a
    /// little behind catches up from the log instead of needing a whole snapshot.
    pub log_retain_slots: u64,
    /// A bug in the membership change rule to plant on purpose, so that the simulator can show
    /// it catches it (`docs/paxos.md`, "Teeth"). Always `None` in the daemon.
    #[doc(hidden)]
    pub planted_bug: Option<PlantedCoreBug>,
}

/// Mistakes in the membership change rule the simulator must catch.
#[doc(hidden)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PlantedCoreBug {
    /// Count a learner's vote towards a slot's majority.
    CountLearnerVotes,
    /// Let the leader run further ahead than the change delay: it proposes (and counts votes
    /// for) slots whose membership may be changed by a slot it has not seen decided yet.
    WindowBeyondChangeDelay,
    /// Elect a leader with a majority of the newest membership alone, and never re-elect when
    /// a change brings in new voters: the old and the new majority decide independently.
    NewMajorityAlone,
}

impl Config {
    /// The defaults for member `node` of a cluster that started with `members` (ticks of about
    /// 10 ms). `node` need not be among them: it may have joined later.
    pub fn new(node: NodeId, members: Membership) -> Config {
        Config {
            node,
            members,
            member_change_delay_slots: MEMBER_CHANGE_DELAY_SLOTS,
            new_member: false,
            heartbeat_ticks: 5,
            election_timeout_ticks: 30,
            retry_ticks: 5,
            command_retry_ticks: 20,
            command_expiry_ticks: 3_000,
            own_commands_max: 100_000,
            window_slots: 8_192,
            accept_batches_in_flight_max: 1,
            queue_commands_max: 200_000,
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            log_retain_slots: 10_000,
            transfer_timeout_ticks: 100,
            planted_bug: None,
        }
    }

    /// How far a leader may propose beyond its decided prefix.
    pub fn proposal_window_slots(&self) -> u64 {
        if self.planted_bug == Some(PlantedCoreBug::WindowBeyondChangeDelay) {
            return self.window_slots;
        }
        self.window_slots.min(self.member_change_delay_slots)
    }

    /// The largest command `propose` accepts: one must fit an accept message on its own.
    pub fn command_bytes_max(&self) -> usize {
        self.message_bytes_max - crate::paxos::message::MESSAGE_FIXED_BYTES_MAX - 16
    }
}
