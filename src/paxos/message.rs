//! The messages Paxos cores exchange. Pure data: the daemon wraps them in a datagram envelope
//! (`net::codec`), the simulator moves them between in-memory cores.
//!
//! Every message fits one datagram: a core never builds one larger than
//! [`Config::message_bytes_max`](crate::paxos::Config) (bounded with [`Message::encoded_bytes_max`]),
//! and replies that could be larger (promises, catch-up, join information) are pulled in chunks by
//! the side that needs them. Every handler is idempotent, so duplicates are harmless, and every
//! request that needs an answer is retransmitted on a tick timer by its sender.

use crate::paxos::types::{Ballot, Command, NodeId, Slot, Value};
use serde::{Deserialize, Serialize};

/// What an acceptor knows of one slot, as reported in a promise or join reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotState {
    /// The acceptor voted for `value` at `ballot` (and does not know the slot is decided).
    Accepted { ballot: Ballot, value: Value },
    /// The acceptor knows `value` was chosen for this slot.
    Decided { value: Value },
}

impl SlotState {
    /// An upper bound on this entry's encoded size (slot number included).
    pub fn encoded_bytes_max(&self) -> usize {
        const SLOT_AND_TAG_BYTES_MAX: usize = 10 + 1 + 10 + 3;
        match self {
            SlotState::Accepted { value, .. } | SlotState::Decided { value } => {
                SLOT_AND_TAG_BYTES_MAX + value.encoded_bytes_max()
            }
        }
    }
}

/// One Paxos message between two members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a: a candidate asks for a promise on `ballot` and for what the acceptor knows of
    /// every slot `>= from`. Re-sent with a higher `from` to pull the rest of a chunked promise.
    Prepare { ballot: Ballot, from: Slot },
    /// Phase 1b: the acceptor promised `ballot`. `entries` covers slots `from..=upto` (slots it
    /// knows nothing of are absent); `more` says that slots above `upto` remain to be pulled.
    /// `log_start` is the acceptor's compaction point: it cannot report slots `<= log_start`.
    Promise {
        ballot: Ballot,
        from: Slot,
        upto: Slot,
        more: bool,
        log_start: Slot,
        entries: Vec<(Slot, SlotState)>,
    },
    /// Phase 2a: the leader of `ballot` proposes `entries`; `commit` is its decided prefix.
    Accept {
        ballot: Ballot,
        commit: Slot,
        entries: Vec<(Slot, Value)>,
    },
    /// Phase 2b: the acceptor voted for `slots` at `ballot` (durably).
    Accepted { ballot: Ballot, slots: Vec<Slot> },
    /// The acceptor has promised `promised`, higher than the ballot of the request it refuses.
    Nack { promised: Ballot },
    /// The leader of `ballot` is alive; `commit` is its decided prefix. A non-zero `read_round`
    /// asks for an acknowledgement that confirms leadership for the reads of that round.
    Heartbeat {
        ballot: Ballot,
        commit: Slot,
        read_round: u64,
    },
    /// The acceptor has promised nothing above `ballot`; it has decided up to `decided`.
    HeartbeatAck {
        ballot: Ballot,
        read_round: u64,
        decided: Slot,
    },
    /// Client commands a non-leader passes to the leader (re-sent until decided).
    Forward { commands: Vec<Command> },
    /// A non-leader asks the leader for the read index of its reads `ids` (its own numbering).
    ReadIndex { ids: Vec<u64> },
    /// The leader confirmed its leadership after the reads `ids` arrived: they may be served once
    /// the reader has applied `index`.
    ReadIndexReply { ids: Vec<u64>, index: Slot },
    /// A learner asks for the decided values of slots `>= from`.
    CatchUp { from: Slot },
    /// Decided values (a reply to [`Message::CatchUp`]); `commit` is the sender's decided prefix.
    Decided {
        commit: Slot,
        entries: Vec<(Slot, Value)>,
    },
    /// The slots asked for are compacted on the sender: the daemon ships a snapshot instead.
    SnapshotNeeded { log_start: Slot },
    /// A node with empty storage asks what a member knows, for slots `>= from` (safe join).
    JoinQuery { from: Slot },
    /// What the member knows: its promise, and what it holds of slots `from..=upto`. `voter` is
    /// false while the member is itself still joining (its empty answer vouches for nothing).
    /// `log_start` is its compaction point: every slot `<= log_start` is decided, and it reports
    /// none of them.
    JoinInfo {
        voter: bool,
        promised: Ballot,
        log_start: Slot,
        from: Slot,
        upto: Slot,
        more: bool,
        entries: Vec<(Slot, SlotState)>,
    },
    /// A member passes an operator's request to move leadership to `to` to the leader.
    TransferLeadership { to: NodeId },
    /// The leader of `ballot` hands leadership to `to`: `to` campaigns at once, and the others
    /// stop deferring to the sender so that they promise to `to` (`handover.rs`).
    Handover { ballot: Ballot, to: NodeId },
}

/// Encoded size of the fixed part of any message (tags, ballots, slot numbers, lengths).
pub const MESSAGE_FIXED_BYTES_MAX: usize = 96;
/// Encoded size of one slot number or read id (a postcard varint of a u64).
pub const SLOT_BYTES_MAX: usize = 10;

impl Message {
    /// An upper bound on the postcard-encoded size of this message, used to keep every message
    /// within one datagram without encoding twice.
    pub fn encoded_bytes_max(&self) -> usize {
        let entries: usize = match self {
            Message::Promise { entries, .. } | Message::JoinInfo { entries, .. } => {
                entries.iter().map(|(_, e)| e.encoded_bytes_max()).sum()
            }
            Message::Accept { entries, .. } | Message::Decided { entries, .. } => entries
                .iter()
                .map(|(_, v)| SLOT_BYTES_MAX + v.encoded_bytes_max())
                .sum(),
            Message::Accepted { slots, .. } => slots.len() * SLOT_BYTES_MAX,
            Message::Forward { commands } => commands.iter().map(Command::encoded_bytes_max).sum(),
            Message::ReadIndex { ids } | Message::ReadIndexReply { ids, .. } => {
                ids.len() * SLOT_BYTES_MAX
            }
            _ => 0,
        };
        MESSAGE_FIXED_BYTES_MAX + entries
    }
}
