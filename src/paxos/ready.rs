//! What the core hands back to its caller: [`Ready`] (effects as data) and [`ReplicaStatus`].

use crate::paxos::message::Message;
use crate::paxos::storage::{PersistIndex, Record};
use crate::paxos::types::{Ballot, NodeId, Slot, Value};

/// Identifies a linearizable read the caller asked for (the caller's own numbering).
pub type ReadId = u64;

/// The effects of everything the core was told since the last `take_ready`, to be carried out
/// in this order (see the contract in [`crate::paxos`]):
/// 1. append `persist` to the log;
/// 2. send `messages` (none of them depends on a record of this or any unsynced `Ready`:
///    replies that do are held inside the core until `durable` covers their records);
/// 3. sync, then call `Replica::durable(persist_upto)`;
/// 4. apply `apply` to the state machine, in order;
/// 5. answer `reads_ready` from the state machine (after step 4);
/// 6. ship a state-machine snapshot to each peer in `send_snapshot`.
#[derive(Debug, Default)]
#[must_use = "a Ready holds records to persist and messages to send"]
pub struct Ready {
    /// Records to append, in order.
    pub persist: Vec<Record>,
    /// The persist index of the last record in `persist` (of all records handed out so far).
    pub persist_upto: PersistIndex,
    /// Messages safe to send now.
    pub messages: Vec<(NodeId, Message)>,
    /// Decided values to apply, in slot order, with no gaps.
    pub apply: Vec<(Slot, Value)>,
    /// Linearizable reads that may now be answered from the state machine.
    pub reads_ready: Vec<ReadId>,
    /// Peers that need a snapshot because the slots they lack are compacted here.
    pub send_snapshot: Vec<NodeId>,
}

impl Ready {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.messages.is_empty()
            && self.apply.is_empty()
            && self.reads_ready.is_empty()
            && self.send_snapshot.is_empty()
    }
}

/// What a node is doing in the protocol.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Has empty storage and is learning from the others before it may vote.
    Joining,
    /// Follows a leader (or waits for one).
    Follower,
    /// Runs phase 1 for its ballot.
    Candidate,
    /// Won phase 1 and proposes.
    Leader,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Joining => "joining",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// What a leader knows of one voter (`Replica::follower_progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerStatus {
    pub node: NodeId,
    /// Its decided prefix, as it last reported it: the slot it has caught up to.
    pub decided: Slot,
    /// Ticks since it last answered the leader (since the leadership began if it never did).
    pub heard_ticks_ago: u64,
}

/// A snapshot of the core's view, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub node: NodeId,
    pub role: Role,
    /// The leader this node follows (itself when leading).
    pub leader: Option<NodeId>,
    /// The highest ballot this node's acceptor promised.
    pub promised: Ballot,
    /// Every slot up to here is decided and known here.
    pub decided: Slot,
    /// Every slot up to here was handed out for applying.
    pub applied: Slot,
    /// The highest decided prefix heard of (from the leader).
    pub commit_seen: Slot,
    /// Slots at or below this are compacted (covered by a snapshot).
    pub log_start: Slot,
    /// Own client commands waiting for a decision.
    pub commands_pending: usize,
    /// Undecided slots in flight (when leading).
    pub in_flight: usize,
    /// Elections this node started since it was built.
    pub campaigns: u64,
}
