//! The write-ahead log: the public contract and [`Wal`], the handle that appends, syncs,
//! rotates and compacts. The normative format is `wal-format.md` at the repository root.
//!
//! The WAL knows bytes, records, segments and LSNs, not Paxos: a record is a type byte (1..=255)
//! and an opaque payload. It is what makes acceptor state survive a total outage, so its
//! contract is strict:
//!
//! - [`Wal::append`] writes a record into the mapped active segment and returns its LSN. The
//!   record is **not durable** until a later [`Wal::sync`] returns.
//! - [`Wal::sync`] is the group commit: one `msync(MS_SYNC)` of the dirty range. It returns the
//!   LSN bound `d` such that **every record with LSN < d is durable**. Only then may anything
//!   that depends on those records (a Promise, an Accepted reply) leave the node.
//! - A failed sync is **fatal** ([`WalError::is_fatal`]): the kernel may have dropped the dirty
//!   pages and may report success next time, so the `Wal` refuses every later call and the
//!   caller must log the error and exit non-zero, then recover from disk and peers. Nothing is
//!   ever retried here.
//! - A full disk surfaces as an error with [`WalError::is_disk_full`]; the log stays consistent
//!   and appends work again once space is freed (`wal-format.md` §11).
//!
//! # Layout
//! - [`record`]: the frame of one record (encode, decode, CRC).
//! - [`segment`]: one preallocated, memory-mapped segment file and its header.
//! - [`recovery`]: the scan and the recovery decision table.
//! - [`tool`]: `consens wal verify` and `consens wal dump`.

pub mod record;
pub mod recovery;
pub mod segment;
pub mod tool;

pub use record::{RecordRef, RECORD_PAYLOAD_BYTES_MAX, RECORD_TYPE_CONSENSUS};
pub use recovery::{Corruption, Recovery, TornTail, Verdict};
pub use segment::FaultInjector;

use segment::{ActiveSegment, SegmentHeader, SEGMENT_HEADER_BYTES};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A log sequence number: 1 for the first record ever, +1 per record, never reused.
pub type Lsn = u64;

/// Who owns a log. Every segment header carries it; recovery refuses segments of another
/// cluster or node, so a misplaced data directory cannot be replayed as our own votes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct WalIdentity {
    /// Random at cluster creation, shared by all members.
    pub cluster_id: u64,
    /// This member's id.
    pub node_id: u16,
}

/// How a [`Wal`] is opened.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Whose log this is; checked against every segment header.
    pub identity: WalIdentity,
    /// Size of each new segment file, a multiple of 4 KiB in
    /// `SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX` (`wal-format.md` §12). Existing segments keep
    /// the size they were created with.
    pub segment_bytes: usize,
    /// Test hook that injects ENOSPC into segment preallocation (`wal-format.md` §11).
    pub fault: Option<Arc<FaultInjector>>,
    /// A deliberately broken sync, so that the power-cut test can show it catches one.
    #[doc(hidden)]
    pub planted_sync_bug: Option<PlantedSyncBug>,
}

/// The page granularity [`PlantedSyncBug::BeforeWrite`] rounds to (the smallest Linux page).
const PLANTED_BUG_PAGE_BYTES: usize = 4096;

/// Ways to break [`Wal::sync`] on purpose. Nothing but the power-cut test's proof that it has
/// teeth sets one: with either, acknowledged writes live only in the page cache.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlantedSyncBug {
    /// Report everything appended as durable without any msync.
    Skip,
    /// msync each batch before its bytes are written, as code that syncs and then appends does:
    /// a sync covers only what earlier batches wrote, up to the page the batch starts in, so a
    /// batch's bytes reach the disk only with a later sync. (The bytes are in the map by the
    /// time `sync` runs, so the emulation leaves out the page they share with earlier bytes.)
    BeforeWrite,
}

impl WalOptions {
    /// Defaults: 64 MiB segments, no fault injection.
    pub fn new(identity: WalIdentity) -> WalOptions {
        WalOptions {
            identity,
            segment_bytes: segment::SEGMENT_BYTES_DEFAULT,
            fault: None,
            planted_sync_bug: None,
        }
    }

    /// Sets the size of new segments (tests use small ones to force rotation).
    pub fn segment_bytes(mut self, bytes: usize) -> WalOptions {
        self.segment_bytes = bytes;
        self
    }

    /// Breaks [`Wal::sync`] on purpose (the power-cut test's teeth).
    #[doc(hidden)]
    pub fn planted_sync_bug(mut self, bug: Option<PlantedSyncBug>) -> WalOptions {
        self.planted_sync_bug = bug;
        self
    }

    /// Installs a fault injector.
    pub fn fault_injector(mut self, fault: Arc<FaultInjector>) -> WalOptions {
        self.fault = Some(fault);
        self
    }

    /// The largest payload that fits one segment of this size.
    pub fn payload_bytes_max(&self) -> usize {
        let room = self
            .segment_bytes
            .saturating_sub(SEGMENT_HEADER_BYTES + record::RECORD_HEADER_BYTES);
        (room / record::RECORD_ALIGNMENT_BYTES * record::RECORD_ALIGNMENT_BYTES)
            .min(RECORD_PAYLOAD_BYTES_MAX)
    }

    fn check(&self) -> Result<(), WalError> {
        let b = self.segment_bytes;
        if !(segment::SEGMENT_BYTES_MIN..=segment::SEGMENT_BYTES_MAX).contains(&b)
            || b % segment::SEGMENT_BYTES_ALIGNMENT != 0
        {
            return Err(WalError::InvalidOptions(format!(
                "segment_bytes {b} must be a multiple of {} in {}..={}",
                segment::SEGMENT_BYTES_ALIGNMENT,
                segment::SEGMENT_BYTES_MIN,
                segment::SEGMENT_BYTES_MAX
            )));
        }
        Ok(())
    }
}

/// Everything that can go wrong with the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system error; see [`WalError::is_disk_full`].
    #[error("WAL I/O error: {context}: {source}")]
    Io {
        /// What the WAL was doing, with the path.
        context: String,
        /// The OS error (ENOSPC, EDQUOT, EACCES, ...).
        source: std::io::Error,
    },
    /// Recovery refuses to start (`wal-format.md` §9).
    #[error("corrupt WAL: {} at offset {offset} (lsn {lsn}): {reason}", file.display())]
    Corrupt {
        /// The damaged segment file.
        file: PathBuf,
        /// Where in the file the problem starts (0: the segment header).
        offset: u64,
        /// The LSN expected at that point.
        lsn: Lsn,
        /// Which check failed (decision table row, in words).
        reason: String,
    },
    /// An msync or fsync failed. Fatal: log it and exit non-zero; never retry (§8).
    #[error("WAL sync failed (fatal, exit and recover): {context}: {source}")]
    SyncFailed {
        /// What was being synced, with the path and range.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A sync failed earlier; this handle refuses all work. Fatal.
    #[error("WAL unusable after an earlier failed sync (fatal, exit and recover)")]
    Poisoned,
    /// The payload is larger than a record may be (`wal-format.md` §12).
    #[error("WAL record of {bytes} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// The payload's size.
        bytes: usize,
        /// The largest payload these options allow.
        max: usize,
    },
    /// Record type 0 is reserved (`wal-format.md` §7).
    #[error("WAL record type 0 is reserved")]
    ReservedRecordType,
    /// Another process (or another `Wal` in this one) holds the directory.
    #[error("WAL directory {} is locked by another process", dir.display())]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
    /// Bad options, e.g. a segment size out of range.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
}

impl WalError {
    /// True for ENOSPC or EDQUOT: the caller reports "unavailable" and may retry later.
    pub fn is_disk_full(&self) -> bool {
        match self {
            WalError::Io { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
            _ => false,
        }
    }

    /// True for errors after which the process must exit (failed msync/fsync).
    pub fn is_fatal(&self) -> bool {
        matches!(self, WalError::SyncFailed { .. } | WalError::Poisoned)
    }
}

/// A closed (full) segment: only its name matters until compaction removes it.
#[derive(Debug)]
struct ClosedSegment {
    /// Its file.
    path: PathBuf,
    /// The LSN of its first record.
    first_lsn: Lsn,
}

/// The open write-ahead log of one node. Single writer: the directory is locked while it lives.
pub struct Wal {
    /// The log directory.
    dir: PathBuf,
    /// Held for its `flock`; released when the `Wal` is dropped (or the process dies).
    _lock: File,
    /// The options it was opened with.
    options: WalOptions,
    /// Full segments, oldest first; candidates for compaction.
    closed: Vec<ClosedSegment>,
    /// The segment appended to.
    active: ActiveSegment,
    /// Where the next frame goes in the active segment.
    write_offset: usize,
    /// Everything in the active segment before this offset is durable.
    synced_offset: usize,
    /// Where the previous sync's range started (only [`PlantedSyncBug::BeforeWrite`] uses it).
    previous_sync_from: usize,
    /// The LSN the next append gets.
    next_lsn: Lsn,
    /// Every LSN below this is durable.
    durable_lsn_end: Lsn,
    /// Set by a failed sync: the handle refuses everything after that.
    poisoned: bool,
}

/// How long `Wal::open` waits for the directory lock before giving up with `Locked`
/// (`wal-format.md` §8, §12).
pub const LOCK_WAIT_MS_MAX: u64 = 200;

/// Takes an exclusive `flock` on `DIR/LOCK` so two processes never append to one log. The lock
/// dies with the process (even on SIGKILL). It waits up to [`LOCK_WAIT_MS_MAX`]: a previous
/// owner may be exiting, and a child forked by this process shares the descriptor until it
/// execs, so a lock can outlive the drop of a `Wal` by a moment.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, WalError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| WalError::Io {
            context: format!("open {}", path.display()),
            source,
        })?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LOCK_WAIT_MS_MAX);
    // SAFETY: plain syscall on a descriptor we own.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if std::time::Instant::now() >= deadline {
            return Err(WalError::Locked {
                dir: dir.to_path_buf(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(file)
}

impl Wal {
    /// Opens (or creates) the log in `dir` and runs recovery (`wal-format.md` §9): a torn tail
    /// is truncated (zeroed and synced) and logged; corruption is refused with
    /// [`WalError::Corrupt`]. The returned [`Recovery`] lends the valid records for replay.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovery), WalError> {
        options.check()?;
        std::fs::create_dir_all(dir).map_err(|source| WalError::Io {
            context: format!("create {}", dir.display()),
            source,
        })?;
        let lock = lock_dir(dir)?;
        for tmp in recovery::list(dir)?.tmps {
            tracing::warn!(file = %tmp.display(), "removing incomplete segment left by a crash");
            std::fs::remove_file(&tmp).map_err(|source| WalError::Io {
                context: format!("remove {}", tmp.display()),
                source,
            })?;
        }
        let mut rec = recovery::scan(dir, Some(options.identity))?;
        if let Some(err) = rec.corruption.as_ref().map(recovery::Corruption::to_error) {
            tracing::error!(%err, "refusing to start");
            return Err(err);
        }
        if rec.segments.is_empty() {
            let path = segment::create(
                dir,
                SegmentHeader {
                    identity: options.identity,
                    first_lsn: 1,
                    segment_bytes: options.segment_bytes as u64,
                },
                options.fault.as_deref(),
            )?;
            tracing::info!(file = %path.display(), "created a new WAL");
            rec = recovery::scan(dir, Some(options.identity))?;
            assert!(rec.corruption.is_none() && rec.is_empty() && rec.segments.len() == 1);
        }
        let last = rec.segments.last().expect("at least one segment");
        if let Some(bytes) = rec.truncated.as_ref().and_then(|t| t.restore_bytes) {
            tracing::warn!(file = %last.path.display(), bytes, "restoring the length of a cut-off segment");
            segment::restore_length(&last.path, bytes)?;
        }
        let write_offset = last.end;
        if let Some(torn) = &rec.truncated {
            let from = usize::try_from(torn.offset).expect("offset within a mapped segment");
            let to = usize::try_from(torn.dirty_end).expect("offset within a mapped segment");
            assert_eq!(from, write_offset);
            tracing::warn!(
                file = %torn.file.display(), offset = torn.offset, lsn = torn.lsn, why = %torn.why,
                "truncating a torn tail"
            );
            segment::zero_range(&last.path, from, to)?;
        }
        let active = ActiveSegment::open(&last.path, last.first_lsn)?;
        rec.drop_last_segment_cache_when_released();
        let wal = Wal::assemble(dir, lock, options, &rec, active, write_offset);
        Ok((wal, rec))
    }

    fn assemble(
        dir: &Path,
        lock: File,
        options: WalOptions,
        rec: &Recovery,
        active: ActiveSegment,
        write_offset: usize,
    ) -> Wal {
        let closed = rec.segments[..rec.segments.len() - 1]
            .iter()
            .map(|s| ClosedSegment {
                path: s.path.clone(),
                first_lsn: s.first_lsn,
            })
            .collect();
        Wal {
            dir: dir.to_path_buf(),
            _lock: lock,
            options,
            closed,
            active,
            write_offset,
            synced_offset: write_offset,
            previous_sync_from: write_offset,
            next_lsn: rec.next_lsn,
            durable_lsn_end: rec.next_lsn,
            poisoned: false,
        }
    }

    /// Appends one record and returns its LSN. Not durable until [`Wal::sync`] returns. May
    /// rotate to a new segment, which first syncs the full one (so this can return a fatal
    /// [`WalError::SyncFailed`]) and preallocates the next (so it can fail with a disk-full
    /// error, after which nothing changed and a later append may succeed).
    pub fn append(&mut self, record_type: u8, payload: &[u8]) -> Result<Lsn, WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        if record_type == record::RECORD_TYPE_RESERVED {
            return Err(WalError::ReservedRecordType);
        }
        let max = self.options.payload_bytes_max();
        if payload.len() > max {
            return Err(WalError::RecordTooLarge {
                bytes: payload.len(),
                max,
            });
        }
        let frame = record::frame_bytes(payload.len());
        if self.write_offset + frame > self.active.map.len() {
            self.rotate()?;
        }
        let at = self.write_offset;
        let dst = &mut self.active.map[at..at + frame];
        debug_assert!(record::is_zero(dst), "appending over written bytes");
        let lsn = self.next_lsn;
        let n = record::encode(dst, lsn, record_type, payload);
        assert_eq!(n, frame);
        debug_assert!(
            matches!(
                record::decode(&self.active.map, at),
                record::Frame::Valid { record, next_offset }
                    if record.lsn == lsn && next_offset == at + frame && record.payload == payload
            ),
            "a frame just written does not read back"
        );
        self.write_offset += frame;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Group commit: one msync(MS_SYNC) of everything appended since the last sync. Returns
    /// `d` such that every LSN `< d` is durable (`d == next_lsn()`). A failure is fatal: the
    /// handle is poisoned and the caller must exit (`wal-format.md` §8).
    pub fn sync(&mut self) -> Result<Lsn, WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        let injected = self
            .options
            .fault
            .as_deref()
            .is_some_and(FaultInjector::take_sync_fault);
        let result = if injected {
            Err(WalError::SyncFailed {
                context: format!("msync {} (injected fault)", self.active.path.display()),
                source: std::io::Error::from_raw_os_error(libc::EIO),
            })
        } else {
            match self.options.planted_sync_bug {
                None => self
                    .active
                    .sync_range(self.synced_offset, self.write_offset),
                Some(PlantedSyncBug::Skip) => Ok(()),
                Some(PlantedSyncBug::BeforeWrite) => {
                    let to = self.synced_offset / PLANTED_BUG_PAGE_BYTES * PLANTED_BUG_PAGE_BYTES;
                    self.active.sync_range(self.previous_sync_from.min(to), to)
                }
            }
        };
        if let Err(e) = result {
            self.poisoned = true;
            tracing::error!(err = %e, "WAL sync failed; this is fatal");
            return Err(e);
        }
        self.previous_sync_from = self.synced_offset;
        self.synced_offset = self.write_offset;
        self.durable_lsn_end = self.next_lsn;
        Ok(self.durable_lsn_end)
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Every LSN below this is durable (as of the last successful sync).
    pub fn durable_lsn_end(&self) -> Lsn {
        self.durable_lsn_end
    }

    /// The LSN of the oldest record still kept.
    pub fn first_lsn(&self) -> Lsn {
        self.closed
            .first()
            .map_or(self.active.first_lsn, |s| s.first_lsn)
    }

    /// The number of segment files, the active one included.
    pub fn segment_count(&self) -> usize {
        self.closed.len() + 1
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Closes the full active segment (after syncing it) and starts a new one.
    fn rotate(&mut self) -> Result<(), WalError> {
        // Sync first: a torn tail can then only ever be in the last segment (§8, §9 row 4).
        self.sync()?;
        let started = std::time::Instant::now();
        let created = segment::create(
            &self.dir,
            SegmentHeader {
                identity: self.options.identity,
                first_lsn: self.next_lsn,
                segment_bytes: self.options.segment_bytes as u64,
            },
            self.options.fault.as_deref(),
        );
        let path = match created {
            Ok(path) => path,
            Err(e) => {
                // A failed fsync of the new file or the directory is as fatal as a failed msync.
                if e.is_fatal() {
                    self.poisoned = true;
                    tracing::error!(err = %e, "WAL sync failed during rotation; this is fatal");
                }
                return Err(e);
            }
        };
        let new = ActiveSegment::open(&path, self.next_lsn)?;
        let old = std::mem::replace(&mut self.active, new);
        tracing::debug!(
            file = %path.display(),
            create_us = started.elapsed().as_micros() as u64,
            "rotated to a new segment"
        );
        self.closed.push(ClosedSegment {
            path: old.path,
            first_lsn: old.first_lsn,
        });
        self.write_offset = SEGMENT_HEADER_BYTES;
        self.synced_offset = SEGMENT_HEADER_BYTES;
        self.previous_sync_from = SEGMENT_HEADER_BYTES;
        Ok(())
    }

    /// Removes whole closed segments whose records all have LSN `< keep_from`, oldest first,
    /// never the active segment; returns how many were removed. The caller must first append
    /// (and sync) a checkpoint of everything recovery still needs that is older than
    /// `keep_from` (latest promise, join mark, accepted values above the snapshot): see
    /// `wal-format.md` §10. [`Wal::detach_before`] and [`DetachedSegments::remove`] are the
    /// same in two steps, for callers that remove files on another thread.
    pub fn compact(&mut self, keep_from: Lsn) -> Result<usize, WalError> {
        let detached = self.detach_before(keep_from)?;
        let result = detached.remove();
        if result.as_ref().is_err_and(WalError::is_fatal) {
            self.poisoned = true;
        }
        result
    }

    /// Takes the closed segments whose records all have LSN `< keep_from` out of the log,
    /// oldest first, without touching the files: they are no longer read or counted, and
    /// [`DetachedSegments::remove`] deletes them. Removing a 64 MiB segment takes 50–75 ms
    /// (the kernel drops its cached pages), too long for the thread that runs group commit.
    /// Files that are never removed (a crash first) are found again at the next start and
    /// removed by a later compaction; replaying them is harmless (§10).
    pub fn detach_before(&mut self, keep_from: Lsn) -> Result<DetachedSegments, WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        let mut count = 0;
        // A closed segment's records end where the next segment starts.
        while self.closed.len() > count {
            let next_first = self
                .closed
                .get(count + 1)
                .map_or(self.active.first_lsn, |s| s.first_lsn);
            if next_first > keep_from {
                break;
            }
            count += 1;
        }
        let paths = self.closed.drain(..count).map(|s| s.path).collect();
        Ok(DetachedSegments {
            dir: self.dir.clone(),
            paths,
            keep_from,
        })
    }
}

/// Segment files taken out of a [`Wal`] by [`Wal::detach_before`], still on disk.
#[must_use = "the files stay on disk until removed"]
pub struct DetachedSegments {
    dir: PathBuf,
    /// Oldest first.
    paths: Vec<PathBuf>,
    keep_from: Lsn,
}

impl DetachedSegments {
    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Deletes the files, oldest first, then syncs the directory; returns how many were
    /// removed. A failed directory fsync is fatal like any failed sync (§8).
    pub fn remove(self) -> Result<usize, WalError> {
        if self.paths.is_empty() {
            return Ok(0);
        }
        for path in &self.paths {
            std::fs::remove_file(path).map_err(|source| WalError::Io {
                context: format!("remove {}", path.display()),
                source,
            })?;
        }
        segment::sync_dir(&self.dir)?;
        let removed = self.paths.len();
        tracing::info!(removed, keep_from = self.keep_from, "compacted the WAL");
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> WalOptions {
        WalOptions::new(WalIdentity {
            cluster_id: 9,
            node_id: 1,
        })
        .segment_bytes(8192)
    }

    #[test]
    fn append_sync_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut wal, rec) = Wal::open(dir.path(), opts()).expect("open");
            assert!(rec.is_empty());
            assert_eq!((rec.first_lsn, rec.next_lsn), (1, 1));
            for i in 0..300u32 {
                assert_eq!(
                    wal.append(1, &i.to_le_bytes()).expect("append"),
                    u64::from(i) + 1
                );
            }
            assert_eq!(wal.sync().expect("sync"), 301);
            assert!(wal.segment_count() > 1);
        }
        let (wal, rec) = Wal::open(dir.path(), opts()).expect("reopen");
        assert!(rec.truncated.is_none());
        assert_eq!(rec.len(), 300);
        assert_eq!(wal.next_lsn(), 301);
        for (i, r) in rec.records().enumerate() {
            assert_eq!(r.lsn, i as u64 + 1);
            assert_eq!(r.payload, &(i as u32).to_le_bytes());
        }
    }

    #[test]
    fn second_open_is_locked_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _wal = Wal::open(dir.path(), opts()).expect("open");
        assert!(matches!(
            Wal::open(dir.path(), opts()),
            Err(WalError::Locked { .. })
        ));
    }

    #[test]
    fn other_identity_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Wal::open(dir.path(), opts()).expect("open"));
        let mut other = opts();
        other.identity.node_id = 2;
        let err = Wal::open(dir.path(), other).err().expect("refused");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn reserved_type_and_oversize_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), opts()).expect("open");
        assert!(matches!(
            wal.append(0, b"x"),
            Err(WalError::ReservedRecordType)
        ));
        let big = vec![1u8; opts().payload_bytes_max() + 1];
        assert!(matches!(
            wal.append(1, &big),
            Err(WalError::RecordTooLarge { .. })
        ));
        let fits = vec![1u8; opts().payload_bytes_max()];
        wal.append(1, &fits).expect("largest payload fits");
        wal.append(1, &fits).expect("and again in a new segment");
        wal.sync().expect("sync");
    }

    #[test]
    fn compaction_keeps_the_active_segment_and_what_is_needed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), opts()).expect("open");
        for _ in 0..1000 {
            wal.append(2, &[7u8; 40]).expect("append");
        }
        wal.sync().expect("sync");
        let before = wal.segment_count();
        assert!(before > 3);
        assert_eq!(wal.compact(1).expect("compact"), 0);
        let keep_from = 500;
        let removed = wal.compact(keep_from).expect("compact");
        assert!(removed > 0 && wal.first_lsn() <= keep_from);
        assert_eq!(wal.segment_count(), before - removed);
        let removed_all = wal.compact(u64::MAX).expect("compact all");
        assert_eq!(wal.segment_count(), 1);
        assert!(removed_all > 0);
        let first = wal.first_lsn();
        drop(wal);
        let (wal, rec) = Wal::open(dir.path(), opts()).expect("reopen");
        assert_eq!(rec.first_lsn, first);
        assert_eq!(rec.next_lsn, 1001);
        assert_eq!(rec.records().count() as u64, 1001 - first);
        assert_eq!(wal.next_lsn(), 1001);
    }

    #[test]
    fn detached_segments_never_removed_are_replayed_and_removed_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), opts()).expect("open");
        for i in 0..1000u32 {
            wal.append(1, &i.to_le_bytes()).expect("append");
        }
        wal.sync().expect("sync");
        let before = wal.segment_count();
        let detached = wal.detach_before(500).expect("detach");
        assert!(!detached.is_empty());
        let detached_count = detached.paths.len();
        assert_eq!(wal.segment_count(), before - detached_count);
        assert!(wal.first_lsn() > 1, "the open log no longer counts them");
        // The process dies before the files are deleted.
        drop(detached);
        drop(wal);
        let (mut wal, rec) = Wal::open(dir.path(), opts()).expect("reopen");
        assert_eq!(rec.first_lsn, 1, "the leftover segments are found again");
        assert_eq!(rec.records().count(), 1000);
        assert_eq!(wal.segment_count(), before);
        // A later compaction removes them for good.
        assert!(wal.compact(500).expect("compact") >= detached_count);
        drop(wal);
        let (_, rec) = Wal::open(dir.path(), opts()).expect("reopen");
        assert!(rec.first_lsn > 1 && rec.first_lsn <= 500);
        assert_eq!(rec.next_lsn, 1001);
    }

    /// Pages of `path` in the page cache (`mincore` over a fresh, untouched read-only mapping).
    fn cached_pages(path: &Path) -> usize {
        let file = File::open(path).expect("open segment");
        // SAFETY: a test-owned file nobody truncates while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.expect("map segment");
        let pages = map.len().div_ceil(4096);
        let mut resident = vec![0u8; pages];
        // SAFETY: `map` is a live mapping of `map.len()` bytes and `resident` has one byte per
        // page of it.
        let rc = unsafe {
            libc::mincore(
                map.as_ptr() as *mut libc::c_void,
                map.len(),
                resident.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        resident.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[test]
    fn the_active_segment_leaves_the_page_cache_once_recovery_is_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        // SAFETY: statfs on a path we own into a zeroed struct.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        let c_dir = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes())
            .expect("path without NUL");
        assert_eq!(unsafe { libc::statfs(c_dir.as_ptr(), &mut fs) }, 0);
        if fs.f_type == libc::TMPFS_MAGIC {
            eprintln!("skipped: on tmpfs the page cache is the storage and cannot be dropped");
            return;
        }
        let options = || opts().segment_bytes(4 << 20);
        {
            let (mut wal, _) = Wal::open(dir.path(), options()).expect("open");
            for i in 0..2000u32 {
                wal.append(1, &[i as u8; 100]).expect("append");
            }
            wal.sync().expect("sync");
        }
        let (mut wal, rec) = Wal::open(dir.path(), options()).expect("reopen");
        let segment = wal.active.path.clone();
        let pages = (4 << 20) / 4096;
        // The scan reads the whole segment in (and large folios of it, by readahead) ...
        assert!(
            cached_pages(&segment) > pages / 2,
            "recovery maps the whole segment"
        );
        assert_eq!(rec.records().count(), 2000);
        drop(rec);
        // ... and once the records are replayed, none of it stays for the writer's mapping.
        let left = cached_pages(&segment);
        assert!(left <= 2, "{left} of {pages} pages still cached");
        wal.append(1, b"after").expect("append");
        assert_eq!(wal.sync().expect("sync"), 2002);
        drop(wal);
        let (_, rec) = Wal::open(dir.path(), options()).expect("reopen");
        let last = rec.records().last().expect("records");
        assert_eq!((last.lsn, last.payload), (2001, &b"after"[..]));
    }

    #[test]
    fn failed_sync_is_fatal_and_never_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fault = Arc::new(FaultInjector::default());
        let (mut wal, _) =
            Wal::open(dir.path(), opts().fault_injector(fault.clone())).expect("open");
        wal.append(1, b"a").expect("append");
        assert_eq!(wal.sync().expect("sync"), 2);
        wal.append(1, b"b").expect("append");
        fault.fail_next_syncs(1);
        let err = wal.sync().expect_err("injected EIO");
        assert!(err.is_fatal() && !err.is_disk_full(), "{err}");
        assert_eq!(wal.durable_lsn_end(), 2, "nothing new is reported durable");
        // The fault is used up, yet the handle refuses: a second msync would prove nothing.
        assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
        assert!(matches!(wal.append(1, b"c"), Err(WalError::Poisoned)));
        assert!(matches!(wal.compact(1), Err(WalError::Poisoned)));
        assert!(WalError::Poisoned.is_fatal());
    }

    #[test]
    fn injected_disk_full_then_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fault = Arc::new(FaultInjector::default());
        let (mut wal, _) =
            Wal::open(dir.path(), opts().fault_injector(fault.clone())).expect("open");
        fault.fail_next_preallocations(3);
        let mut failures = 0;
        let mut appended = 0u64;
        while appended < 400 {
            match wal.append(1, &appended.to_le_bytes()) {
                Ok(lsn) => {
                    assert_eq!(lsn, appended + 1);
                    appended += 1;
                }
                Err(e) => {
                    assert!(e.is_disk_full(), "{e}");
                    assert!(!e.is_fatal());
                    failures += 1;
                }
            }
        }
        assert_eq!(failures, 3);
        wal.sync().expect("sync");
        drop(wal);
        let (_, rec) = Wal::open(dir.path(), opts()).expect("reopen");
        assert_eq!(rec.len(), 400);
        assert!(rec
            .records()
            .enumerate()
            .all(|(i, r)| r.payload == (i as u64).to_le_bytes()));
    }
}
