//! Snapshot files and shipping: this node's newest snapshot, sending it to peers that fell behind
//! the compacted log, and assembling one from a peer.
//!
//! Sending is paced and repeated rather than acknowledged chunk by chunk: while a peer keeps
//! asking (its core keeps requesting catch-up, so ours keeps naming it in `send_snapshot`), every
//! tick sends the next few chunks, cycling through the snapshot; a receiver keeps what it got and
//! fills the gaps on the next pass. A peer that stopped asking (it installed the snapshot) is
//! dropped after [`TRANSFER_IDLE_TICKS`].
//!
//! The node's own snapshots are written on a short-lived thread
//! ([`SnapshotTransfer::store_in_background`]): a large key space runs to megabytes, and
//! serializing, writing and two fsyncs on the event loop stalled every client for tens of
//! milliseconds.

use crate::net::udp::PeerNet;
use crate::net::wire::Wire;
use crate::paxos::types::NodeId;
use crate::snapshot::{self, SnapshotChunk, SnapshotError, SnapshotMeta, SNAPSHOT_BYTES_MAX};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc::UnboundedSender;

/// A background snapshot write finished (see [`SnapshotTransfer::store_in_background`]).
pub struct SnapshotWritten {
    pub slot: u64,
    pub payload: Vec<u8>,
    pub result: Result<(), SnapshotError>,
}

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

/// This node's snapshots, on disk and in flight.
pub struct SnapshotTransfer {
    dir: PathBuf,
    cluster_id: u64,
    /// The newest snapshot (own or installed) as chunks ready to send, with its slot.
    latest: Option<(u64, Vec<SnapshotChunk>)>,
    /// Its payload as loaded at start (handed to the state machine once).
    loaded: Option<(u64, Vec<u8>)>,
    outgoing: BTreeMap<NodeId, Outgoing>,
    incoming: Option<Incoming>,
    ticks: u64,
}

impl SnapshotTransfer {
    /// Opens the snapshot directory and loads the newest snapshot (a corrupt one is an error).
    pub fn open(dir: &Path, cluster_id: u64) -> Result<SnapshotTransfer, SnapshotError> {
        let loaded = snapshot::load_latest(dir, cluster_id)?;
        let latest = loaded.as_ref().map(|(slot, payload)| {
            (
                *slot,
                snapshot::chunks(*slot, &Bytes::from(payload.clone())),
            )
        });
        Ok(SnapshotTransfer {
            dir: dir.to_path_buf(),
            cluster_id,
            latest,
            loaded,
            outgoing: BTreeMap::new(),
            incoming: None,
            ticks: 0,
        })
    }

    /// The snapshot loaded at start, once: (slot, payload).
    pub fn take_loaded(&mut self) -> Option<(u64, Vec<u8>)> {
        self.loaded.take()
    }

    /// Stores a snapshot durably (own, or received from a peer) and makes it the one we send.
    pub fn store(&mut self, slot: u64, payload: Vec<u8>) -> Result<(), SnapshotError> {
        snapshot::store(&self.dir, self.cluster_id, slot, &payload)?;
        self.stored(slot, payload);
        Ok(())
    }

    /// Writes a snapshot durably on a thread of its own (megabytes and two fsyncs must not stall
    /// the event loop) and reports to `done`; the caller then hands it back to [`Self::stored`].
    /// An error means no thread could be started and nothing will be reported.
    /// `serialize` runs on that thread too, so the caller only pays for a copy of its state.
    pub fn store_in_background(
        &self,
        slot: u64,
        serialize: impl FnOnce() -> Vec<u8> + Send + 'static,
        done: UnboundedSender<SnapshotWritten>,
    ) -> std::io::Result<()> {
        let (dir, cluster_id) = (self.dir.clone(), self.cluster_id);
        let spawned = std::thread::Builder::new()
            .name("consens-snapshot".to_string())
            .spawn(move || {
                let payload = serialize();
                let result = snapshot::store(&dir, cluster_id, slot, &payload);
                let _ = done.send(SnapshotWritten {
                    slot,
                    payload,
                    result,
                });
            });
        spawned.map(|_| ())
    }

    /// A snapshot of ours is durable: make it the one we send.
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

    /// Sends the next chunks to every peer that still asks; returns how many went out.
    pub fn tick(&mut self, peers: &mut PeerNet) -> usize {
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
                peers.send(*peer, &Wire::Snapshot(chunk.clone()));
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
