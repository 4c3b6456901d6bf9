//! The WAL adapter: maps the core's [`Record`]s to WAL records and back, and keeps the log small.
//!
//! The WAL knows bytes and LSNs; the core knows records and persist indexes. This adapter is the
//! thin layer between them (`docs/architecture.md`):
//! - **Encoding.** Every core record is one WAL record of type [`RECORD_TYPE_CONSENSUS`] whose
//!   payload is the postcard encoding of [`Record`] (`wal-format.md` §6).
//! - **Persist indexes.** The core numbers the records it hands out 1, 2, 3…; after a sync the
//!   adapter reports how many of them are durable. Records the adapter writes on its own
//!   (checkpoints) are not counted.
//! - **Disk full.** When an append fails for lack of space, the record and every later one wait in
//!   a bounded backlog, in order, and nothing past the last appended record is ever reported
//!   durable; the WAL writer (`wal_writer.rs`) retries, and the node answers "unavailable" until
//!   a retry succeeds.
//! - **Compaction.** After a state-machine snapshot covers slot S, the adapter re-appends a
//!   checkpoint of everything recovery still needs (the latest promise, the voter mark, the decided
//!   prefix, accepted and chosen values above S), syncs it, and only then drops the older segments.
//!   Their files are deleted on a thread of their own (50–75 ms for a 64 MiB segment, which
//!   would hold up the next group commit); dropping the adapter waits for that thread.

use crate::paxos::types::Slot;
use crate::paxos::{PersistIndex, Record, Recovered};
use crate::wal::{DetachedSegments, Lsn, Wal, WalError, WalOptions, RECORD_TYPE_CONSENSUS};
use std::collections::VecDeque;
use std::path::Path;

/// At most this many records wait for disk space before the node gives up and exits: the core's
/// window bounds how many a leader produces, so hitting this means the disk stays full for long.
pub const BACKLOG_RECORDS_MAX: usize = 1 << 20;

/// Why records could not be persisted.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The disk is full: the records wait in the backlog; retry later.
    #[error("{0}")]
    DiskFull(String),
    /// Anything else, including every sync failure: the node must exit.
    #[error(transparent)]
    Fatal(#[from] WalError),
}

/// Why the WAL could not be opened and replayed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(
        "corrupt WAL record at LSN {lsn} in {dir}: its checksum is valid but its payload is not a \
         consensus record ({reason})"
    )]
    Undecodable {
        dir: String,
        lsn: Lsn,
        reason: String,
    },
    #[error("unknown WAL record type {record_type} at LSN {lsn} in {dir} (corrupt, or written by a newer consens)")]
    UnknownType {
        dir: String,
        lsn: Lsn,
        record_type: u8,
    },
}

/// The WAL plus the bookkeeping that ties it to the core.
pub struct Durable {
    wal: Wal,
    /// Everything the WAL holds, folded: the source of checkpoints.
    mirror: Recovered,
    /// Core records appended to the WAL so far (the backlog comes after them).
    appended: PersistIndex,
    /// Core records known durable.
    synced: PersistIndex,
    /// Core records handed out but not yet appended because the disk was full.
    backlog: VecDeque<Record>,
    /// Something was appended (core record or checkpoint) since the last sync.
    dirty: bool,
    /// Reused encode buffer.
    buf: Vec<u8>,
    /// Payload bytes appended since the node started (a metric and the snapshot trigger).
    bytes_total: u64,
    /// Threads deleting compacted segment files; joined on drop.
    removals: Vec<std::thread::JoinHandle<()>>,
}

impl Durable {
    /// Opens (or creates) the WAL in `dir` and replays it.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Durable, Recovered), RecoverError> {
        let (wal, recovery) = Wal::open(dir, options)?;
        if let Some(torn) = &recovery.truncated {
            tracing::warn!(?torn, "WAL had a torn tail; truncated it and starting");
        }
        let mut recovered = Recovered::empty();
        for record in recovery.records() {
            if record.record_type != RECORD_TYPE_CONSENSUS {
                return Err(RecoverError::UnknownType {
                    dir: dir.display().to_string(),
                    lsn: record.lsn,
                    record_type: record.record_type,
                });
            }
            let decoded: Record =
                postcard::from_bytes(record.payload).map_err(|e| RecoverError::Undecodable {
                    dir: dir.display().to_string(),
                    lsn: record.lsn,
                    reason: e.to_string(),
                })?;
            recovered.apply(&decoded);
        }
        tracing::info!(
            records = recovery.len(),
            first_lsn = recovery.first_lsn,
            next_lsn = recovery.next_lsn,
            "WAL replayed"
        );
        let durable = Durable {
            wal,
            mirror: recovered.clone(),
            appended: 0,
            synced: 0,
            backlog: VecDeque::new(),
            dirty: false,
            buf: Vec::with_capacity(1024),
            bytes_total: 0,
            removals: Vec::new(),
        };
        Ok((durable, recovered))
    }

    /// True while records wait for disk space.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Appends `records` after any backlog. On a full disk the rest waits in the backlog.
    pub fn persist(&mut self, records: Vec<Record>) -> Result<(), PersistError> {
        self.backlog.extend(records);
        if self.backlog.len() > BACKLOG_RECORDS_MAX {
            return Err(PersistError::Fatal(WalError::Io {
                context: format!(
                    "{} records waited for disk space; giving up",
                    self.backlog.len()
                ),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            }));
        }
        while let Some(record) = self.backlog.pop_front() {
            match self.append_one(&record) {
                Ok(_) => {
                    self.mirror.apply(&record);
                    self.appended += 1;
                }
                Err(e) if e.is_disk_full() => {
                    // Keep it first in line: records are appended in order or not at all.
                    self.backlog.push_front(record);
                    return Err(PersistError::DiskFull(e.to_string()));
                }
                Err(e) => return Err(PersistError::Fatal(e)),
            }
        }
        Ok(())
    }

    fn append_one(&mut self, record: &Record) -> Result<Lsn, WalError> {
        self.buf.clear();
        // Encoding a value we built ourselves into a Vec cannot fail short of a broken invariant.
        let encoded = postcard::to_extend(record, std::mem::take(&mut self.buf))
            .expect("postcard encodes a consensus record into a Vec");
        let lsn = self.wal.append(RECORD_TYPE_CONSENSUS, &encoded);
        if lsn.is_ok() {
            self.dirty = true;
            self.bytes_total += encoded.len() as u64;
        }
        self.buf = encoded;
        lsn
    }

    /// Group commit: one msync for everything appended since the last sync. Returns the core's
    /// new durable persist index, or `None` when nothing new became durable.
    pub fn sync(&mut self) -> Result<Option<PersistIndex>, WalError> {
        if !self.dirty {
            return Ok(None);
        }
        self.wal.sync()?;
        self.dirty = false;
        if self.synced == self.appended {
            return Ok(None);
        }
        self.synced = self.appended;
        Ok(Some(self.synced))
    }

    /// Payload bytes appended since the node started.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total
    }

    /// True if something was appended since the last sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// A snapshot from a peer now covers slots `<= upto`.
    pub fn snapshot_installed(&mut self, upto: Slot) {
        self.forget(upto);
    }

    /// Forgets the votes the snapshot covers; frees them off this thread (it syncs next).
    fn forget(&mut self, upto: Slot) {
        let trimmed = self.mirror.snapshot_installed(upto);
        if !trimmed.is_empty() {
            crate::node::memory::drop_in_background(trimmed);
        }
    }

    /// Our own snapshot now durably covers slots `<= upto`: checkpoint and drop older segments.
    /// Returns the core's new durable persist index when the checkpoint's sync covered more.
    pub fn compact(&mut self, upto: Slot) -> Result<Option<PersistIndex>, PersistError> {
        self.forget(upto);
        if self.has_backlog() {
            // The checkpoint must not overtake records still waiting for space.
            return Ok(None);
        }
        let checkpoint = self.mirror.checkpoint();
        let first = self.wal.next_lsn();
        for record in &checkpoint {
            match self.append_one(record) {
                Ok(_) => {}
                Err(e) if e.is_disk_full() => return Err(PersistError::DiskFull(e.to_string())),
                Err(e) => return Err(PersistError::Fatal(e)),
            }
        }
        let newly_durable = self.sync()?;
        let detached = self.wal.detach_before(first).map_err(PersistError::Fatal)?;
        tracing::debug!(
            snapshot_slot = upto,
            checkpoint_records = checkpoint.len(),
            "WAL compacted"
        );
        if !detached.is_empty() {
            self.remove_in_background(detached);
        }
        Ok(newly_durable)
    }

    /// Deletes compacted segment files on a thread of their own.
    fn remove_in_background(&mut self, detached: DetachedSegments) {
        self.removals.retain(|handle| !handle.is_finished());
        let spawned = std::thread::Builder::new()
            .name("consens-wal-rm".into())
            .spawn(move || match detached.remove() {
                Ok(_) => {}
                Err(e) if e.is_fatal() => crate::node::wal_writer::fatal_wal_error(e),
                Err(e) => tracing::warn!(
                    error = %e,
                    "compacted WAL segments not removed; the next start finds and removes them"
                ),
            });
        match spawned {
            Ok(handle) => self.removals.push(handle),
            // The files stay; the next start finds them and a later compaction removes them.
            Err(error) => tracing::warn!(%error, "no thread to remove compacted WAL segments on"),
        }
    }
}

impl Drop for Durable {
    /// Waits for segment removals still running, so that a log reopened in this process never
    /// sees a file vanish under it.
    fn drop(&mut self) {
        for handle in self.removals.drain(..) {
            let _ = handle.join();
        }
    }
}

/// A one-line summary of a WAL record's payload, for `consens wal dump`.
pub fn describe(record_type: u8, payload: &[u8]) -> String {
    if record_type != RECORD_TYPE_CONSENSUS {
        // Not ours (or from a newer build): show the bytes.
        return crate::wal::tool::describe_hex(record_type, payload);
    }
    match postcard::from_bytes::<Record>(payload) {
        Ok(Record::Promised { ballot }) => format!("promised ballot={ballot}"),
        Ok(Record::Joined) => "joined".to_string(),
        Ok(Record::Accepted {
            slot,
            ballot,
            value,
        }) => format!(
            "accepted slot={slot} ballot={ballot} {}",
            describe_value(&value)
        ),
        Ok(Record::Chosen { slot, value }) => {
            format!("chosen slot={slot} {}", describe_value(&value))
        }
        Ok(Record::Decided { upto }) => format!("decided upto={upto}"),
        Err(e) => format!(
            "undecodable ({e}): {}",
            crate::wal::tool::describe_hex(record_type, payload)
        ),
    }
}

fn describe_value(value: &crate::paxos::types::Value) -> String {
    use crate::paxos::types::{Op, Value};
    match value {
        Value::Noop => "noop".to_string(),
        Value::Command(c) => {
            let id = format!("id={}:{}", c.id.origin, c.id.seq);
            match &c.op {
                Op::Put { key, value, expect } => format!(
                    "{id} put key={:?} value_bytes={}{}",
                    String::from_utf8_lossy(key),
                    value.len(),
                    expect
                        .map(|r| format!(" if_revision={r}"))
                        .unwrap_or_default()
                ),
                Op::Delete { key } => {
                    format!("{id} delete key={:?}", String::from_utf8_lossy(key))
                }
                Op::ChangeMembers(change) => format!("{id} members {change:?}"),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::paxos::types::{Ballot, NodeId};
    use crate::wal::WalIdentity;

    /// Small segments, so that a few thousand records roll several (shared with `wal_writer`).
    pub(crate) fn options() -> WalOptions {
        WalOptions::new(WalIdentity {
            cluster_id: 7,
            node_id: 0,
        })
        .segment_bytes(crate::wal::segment::SEGMENT_BYTES_MIN)
    }

    fn segment_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .expect("read dir")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
            .count()
    }

    #[test]
    fn compaction_removes_the_old_segments_and_keeps_the_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut durable, _) = Durable::open(dir.path(), options()).expect("open");
        for round in 1..=2_000u64 {
            let ballot = Ballot {
                round,
                node: NodeId(0),
            };
            durable
                .persist(vec![Record::Promised { ballot }])
                .expect("append");
        }
        durable.sync().expect("sync");
        let before = segment_files(dir.path());
        assert!(before > 3, "{before} segments: the test needs several");
        durable.compact(0).expect("compact");
        // Dropping the adapter waits for the removal thread.
        drop(durable);
        let after = segment_files(dir.path());
        assert!(after <= 2, "{after} of {before} segments left");
        let (_, recovered) = Durable::open(dir.path(), options()).expect("reopen");
        assert_eq!(recovered.promised.round, 2_000);
    }
}
