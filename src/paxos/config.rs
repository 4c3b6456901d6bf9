//! The core's tunables: cluster shape, timers in ticks, and the limits that keep every message
//! within one datagram and every queue bounded.

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
    /// The voters.
    pub members: Membership,
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
    /// A leader keeps at most this many undecided slots in flight.
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
}

impl Config {
    /// The defaults for member `node` of a cluster with these voters (ticks of about 10 ms).
    pub fn new(node: NodeId, members: Membership) -> Config {
        assert!(members.is_voter(node), "node {node} is not a voter");
        Config {
            node,
            members,
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
        }
    }

    /// How many members make a majority.
    pub fn quorum(&self) -> usize {
        self.members.quorum()
    }

    /// The largest command `propose` accepts: one must fit an accept message on its own.
    pub fn command_bytes_max(&self) -> usize {
        self.message_bytes_max - crate::paxos::message::MESSAGE_FIXED_BYTES_MAX - 16
    }
}
