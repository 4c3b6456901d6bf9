//! What travels between nodes inside a datagram envelope: Paxos messages and snapshot chunks.
//!
//! The core's [`Message`] is the only consensus traffic; snapshot chunks are the daemon's own
//! (the core only says which peer needs a snapshot). Keeping both in one enum gives every datagram
//! one decoder and one set of drop counters.

use crate::paxos::Message;
use crate::snapshot::SnapshotChunk;
use serde::{Deserialize, Serialize};

/// The payload of one peer datagram.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Wire {
    /// A message between Paxos cores.
    Paxos(Message),
    /// One piece of a state-machine snapshot for a peer that fell behind the compacted log.
    Snapshot(SnapshotChunk),
}
