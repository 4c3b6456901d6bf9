//! Snapshot shipping: chunks of this node's newest snapshot for peers that fell behind the
//! compacted log, and a snapshot assembled from a peer's chunks. No IO: chunks to send are
//! handed back to the driver ([`crate::node::driver`]), which puts them in its effects; files are
//! the shell's business.
//!
//! Sending is paced and repeated rather than acknowledged chunk by chunk: while a peer keeps
//! asking (its core keeps requesting catch-up, so ours keeps naming it in `send_snapshot`), every
//! tick sends the next few chunks, cycling through the snapshot; a receiver keeps what it got and
//! fills the gaps on the next pass. A peer that stopped asking (it installed the snapshot) is
//! dropped after [`TRANSFER_IDLE_TICKS`].

use crate::paxos::types::NodeId;
use crate::snapshot::{self, SnapshotChunk, SnapshotMeta, SNAPSHOT_BYTES_MAX};
use bytes::Bytes;
use std::collections::BTreeMap;

/// Chunks sent to one peer per tick (about 1 MB: loopback and LAN sockets keep up).
pub const CHUNKS_PER_TICK: usize = 16;
/// A peer that has not asked for a snapshot for this long is no longer sent one.
pub const TRANSFER_IDLE_TICKS: u64 = 100;

struct Outgoing {
    next: usize,
    asked_at: u64,
}

struct Incoming {
    meta: SnapshotMeta,
    parts: BTreeMap<u64, Bytes>,
    bytes: u64,
}

/// This node's snapshots in flight, both ways.
#[derive(Default)]
pub struct SnapshotTransfer {
    /// The newest durable snapshot (own or installed) as chunks ready to send, with its slot.
    latest: Option<(u64, Vec<SnapshotChunk>)>,
    outgoing: BTreeMap<NodeId, Outgoing>,
    incoming: Option<Incoming>,
    ticks: u64,
}

impl SnapshotTransfer {
    /// Shipping that starts with `latest` (slot, payload), the snapshot found on disk at start.
    pub fn new(latest: Option<(u64, &[u8])>) -> SnapshotTransfer {
        SnapshotTransfer {
            latest: latest.map(|(slot, payload)| {
                (
                    slot,
                    snapshot::chunks(slot, &Bytes::copy_from_slice(payload)),
                )
            }),
            ..SnapshotTransfer::default()
        }
    }

    /// A snapshot (own or a peer's) is durable here: make it the one we send.
    pub fn stored(&mut self, slot: u64, payload: Vec<u8>) {
        self.latest = Some((slot, snapshot::chunks(slot, &Bytes::from(payload))));
    }

    /// `peer` needs our snapshot (its core asked for compacted slots).
    pub fn send_latest(&mut self, peer: NodeId) {
        let ticks = self.ticks;
        self.outgoing
            .entry(peer)
            .or_insert(Outgoing {
                next: 0,
                asked_at: ticks,
            })
            .asked_at = ticks;
    }

    /// Hands the next chunks for every peer that still asks to `send`; returns how many.
    pub fn tick(&mut self, send: &mut impl FnMut(NodeId, SnapshotChunk)) -> usize {
        self.ticks += 1;
        let ticks = self.ticks;
        self.outgoing
            .retain(|_, o| ticks < o.asked_at + TRANSFER_IDLE_TICKS);
        let Some((_, chunks)) = &self.latest else {
            return 0;
        };
        let mut sent = 0;
        for (peer, out) in self.outgoing.iter_mut() {
            for _ in 0..CHUNKS_PER_TICK.min(chunks.len()) {
                let chunk = &chunks[out.next % chunks.len()];
                send(*peer, chunk.clone());
                out.next = (out.next + 1) % chunks.len();
                sent += 1;
            }
        }
        sent
    }

    /// Takes one chunk from a peer; returns the whole snapshot once it is complete and intact.
    pub fn receive(&mut self, chunk: SnapshotChunk) -> Option<(SnapshotMeta, Vec<u8>)> {
        if chunk.total_bytes > SNAPSHOT_BYTES_MAX
            || chunk.offset.checked_add(chunk.data.len() as u64)? > chunk.total_bytes
        {
            tracing::debug!("snapshot chunk out of bounds dropped");
            return None;
        }
        let meta = SnapshotMeta {
            slot: chunk.slot,
            total_bytes: chunk.total_bytes,
            crc: chunk.crc,
        };
        let newer = self
            .incoming
            .as_ref()
            .is_none_or(|i| i.meta != meta && meta.slot >= i.meta.slot);
        if newer {
            self.incoming = Some(Incoming {
                meta,
                parts: BTreeMap::new(),
                bytes: 0,
            });
        }
        let incoming = self.incoming.as_mut()?;
        if incoming.meta != meta {
            return None; // an older snapshot than the one being assembled
        }
        if !incoming.parts.contains_key(&chunk.offset) {
            incoming.bytes += chunk.data.len() as u64;
            incoming.parts.insert(chunk.offset, chunk.data);
        }
        if incoming.bytes < meta.total_bytes {
            return None;
        }
        let incoming = self.incoming.take()?;
        let mut payload = Vec::with_capacity(meta.total_bytes as usize);
        for (offset, data) in incoming.parts {
            if offset != payload.len() as u64 {
                tracing::warn!("snapshot chunks overlap; discarding the transfer");
                return None;
            }
            payload.extend_from_slice(&data);
        }
        if snapshot::payload_crc(&payload) != meta.crc {
            tracing::warn!(
                slot = meta.slot,
                "received snapshot fails its checksum; discarded"
            );
            return None;
        }
        Some((meta, payload))
    }
}
