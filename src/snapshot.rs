//! State-machine snapshots on disk and in flight.
//!
//! A snapshot covers every slot up to `slot`: the WAL below it can be compacted, and a peer that
//! fell behind the compacted log gets it instead of the slots. On disk it is one file,
//! `snapshot-<slot, 20 digits>.snap`, written atomically (temp file, fsync, rename, fsync the
//! directory) and checksummed:
//!
//! | offset | bytes | field                                      |
//! |--------|-------|--------------------------------------------|
//! | 0      | 4     | magic `CSNP`                               |
//! | 4      | 1     | format version (1)                         |
//! | 5      | 3     | zero                                       |
//! | 8      | 8     | cluster id (little-endian)                 |
//! | 16     | 8     | slot covered (little-endian)               |
//! | 24     | 8     | payload length (little-endian)             |
//! | 32     | 4     | CRC-32 (IEEE) of bytes 0..32 and payload   |
//! | 36     | 4     | zero                                       |
//! | 40     | n     | payload (the state machine's own encoding) |
//!
//! In flight it travels as [`SnapshotChunk`]s that each fit one datagram.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"CSNP";
const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_BYTES: usize = 40;
/// Payload bytes per chunk in flight (fits a datagram with the envelope and chunk fields).
pub const CHUNK_BYTES_MAX: usize = 60_000;
/// The largest snapshot this build accepts from disk or a peer.
pub const SNAPSHOT_BYTES_MAX: u64 = 4 << 30;
/// Snapshot files kept on disk (the newest ones).
pub const SNAPSHOTS_KEPT: usize = 2;

/// Why a snapshot could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// One piece of a snapshot for a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The slot the whole snapshot covers.
    pub slot: u64,
    /// The whole payload's length and CRC-32: the receiver checks the assembled payload.
    pub total_bytes: u64,
    pub crc: u32,
    /// Where this piece starts in the payload.
    pub offset: u64,
    pub data: Bytes,
}

/// What a complete snapshot is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub slot: u64,
    pub total_bytes: u64,
    pub crc: u32,
}

/// Encodes a snapshot file's bytes.
pub fn encode_file(cluster_id: u64, slot: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&cluster_id.to_le_bytes());
    out.extend_from_slice(&slot.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[..32]);
    crc.update(payload);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    out
}

/// Checks a snapshot file's bytes; returns (slot, payload).
pub fn decode_file(bytes: &[u8], cluster_id: u64) -> Result<(u64, &[u8]), String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("{} bytes, shorter than the header", bytes.len()));
    }
    if &bytes[0..4] != MAGIC {
        return Err("bad magic".into());
    }
    if bytes[4] != VERSION {
        return Err(format!("unknown version {}", bytes[4]));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if u64_at(8) != cluster_id {
        return Err("written by another cluster".into());
    }
    let slot = u64_at(16);
    let len = u64_at(24);
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() as u64 != len {
        return Err(format!(
            "payload is {} bytes, header says {len}",
            payload.len()
        ));
    }
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&bytes[32..36]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..32]);
    crc.update(payload);
    if crc.finalize() != u32::from_le_bytes(crc_bytes) {
        return Err("checksum mismatch".into());
    }
    Ok((slot, payload))
}

/// The CRC-32 of a payload, as carried by chunks.
pub fn payload_crc(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

/// Splits a payload into chunks.
pub fn chunks(slot: u64, payload: &Bytes) -> Vec<SnapshotChunk> {
    let crc = payload_crc(payload);
    let total_bytes = payload.len() as u64;
    if payload.is_empty() {
        return vec![SnapshotChunk {
            slot,
            total_bytes,
            crc,
            offset: 0,
            data: Bytes::new(),
        }];
    }
    (0..payload.len())
        .step_by(CHUNK_BYTES_MAX)
        .map(|at| SnapshotChunk {
            slot,
            total_bytes,
            crc,
            offset: at as u64,
            data: payload.slice(at..(at + CHUNK_BYTES_MAX).min(payload.len())),
        })
        .collect()
}

fn file_name(slot: u64) -> String {
    format!("snapshot-{slot:020}.snap")
}

fn slot_of(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()
}

/// Stores a snapshot durably, then removes all but the newest [`SNAPSHOTS_KEPT`].
pub fn store(dir: &Path, cluster_id: u64, slot: u64, payload: &[u8]) -> Result<(), SnapshotError> {
    let io_err = |source| SnapshotError::Io {
        path: dir.join(file_name(slot)),
        source,
    };
    crate::fs_durable::write_durably(
        dir,
        &file_name(slot),
        &encode_file(cluster_id, slot, payload),
    )
    .map_err(io_err)?;
    let mut slots = list(dir)?;
    slots.sort_unstable();
    let excess = slots.len().saturating_sub(SNAPSHOTS_KEPT);
    for old in &slots[..excess] {
        let path = dir.join(file_name(*old));
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "old snapshot not removed");
        }
    }
    Ok(())
}

pub(crate) fn list(dir: &Path) -> Result<Vec<u64>, SnapshotError> {
    let entries = fs::read_dir(dir).map_err(|source| SnapshotError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut slots = Vec::new();
    for entry in entries.flatten() {
        if let Some(slot) = entry.file_name().to_str().and_then(slot_of) {
            slots.push(slot);
        }
    }
    Ok(slots)
}

/// Loads the newest snapshot in `dir`, if any: (slot, payload). A corrupt newest snapshot is an
/// error (the node refuses to start rather than silently falling back past acknowledged state).
pub fn load_latest(dir: &Path, cluster_id: u64) -> Result<Option<(u64, Vec<u8>)>, SnapshotError> {
    let Some(slot) = list(dir)?.into_iter().max() else {
        return Ok(None);
    };
    let path = dir.join(file_name(slot));
    let bytes = fs::read(&path).map_err(|source| SnapshotError::Io {
        path: path.clone(),
        source,
    })?;
    let (found, payload) =
        decode_file(&bytes, cluster_id).map_err(|reason| SnapshotError::Corrupt {
            path: path.clone(),
            reason,
        })?;
    if found != slot {
        return Err(SnapshotError::Corrupt {
            path,
            reason: format!("file name says slot {slot}, header says {found}"),
        });
    }
    Ok(Some((slot, payload.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_every_flipped_byte_is_caught() {
        let bytes = encode_file(7, 42, b"hello state");
        assert_eq!(decode_file(&bytes, 7), Ok((42, &b"hello state"[..])));
        assert!(decode_file(&bytes, 8).is_err(), "another cluster");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            if (5..8).contains(&i) || (36..40).contains(&i) {
                continue; // reserved zero bytes
            }
            assert!(decode_file(&bad, 7).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn store_keeps_the_newest_and_loads_the_latest() {
        let dir = tempfile::tempdir().expect("tempdir");
        for slot in [10, 20, 30] {
            store(dir.path(), 1, slot, format!("s{slot}").as_bytes()).expect("store");
        }
        assert_eq!(list(dir.path()).expect("list").len(), SNAPSHOTS_KEPT);
        let (slot, payload) = load_latest(dir.path(), 1).expect("load").expect("some");
        assert_eq!((slot, payload.as_slice()), (30, &b"s30"[..]));
        fs::write(dir.path().join(file_name(30)), b"CSNPgarbage").expect("write");
        let err = load_latest(dir.path(), 1).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn chunks_cover_the_payload() {
        let payload = Bytes::from(vec![9u8; CHUNK_BYTES_MAX * 2 + 5]);
        let parts = chunks(3, &payload);
        assert_eq!(parts.len(), 3);
        let total: usize = parts.iter().map(|c| c.data.len()).sum();
        assert_eq!(total, payload.len());
        assert!(parts.iter().all(|c| c.crc == payload_crc(&payload)));
    }
}
