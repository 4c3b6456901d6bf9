//! One segment file: its name, its header, its creation (really preallocated, synced) and its
//! memory maps (`wal-format.md` §3, §4, §8).
//!
//! A segment is created under a temporary name, preallocated with `fallocate` (never a sparse
//! `set_len`: writing through a mapping into an unbacked page of a full disk raises SIGBUS),
//! given its header, fsynced, renamed into place and its directory fsynced. Only then is it
//! mapped and written in place. A file with a final name therefore always has a whole header.

use super::{Lsn, WalError, WalIdentity};
use memmap2::{Mmap, MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The first bytes of every segment (`wal-format.md` §4).
pub const SEGMENT_MAGIC: [u8; 8] = *b"CONSWAL\0";
/// The format version this code writes and reads (`wal-format.md` §4).
pub const SEGMENT_FORMAT_VERSION: u16 = 1;
/// Size of the segment header; the first record starts right after it (`wal-format.md` §4).
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// File name suffix of a segment (`wal-format.md` §3).
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a segment being created; such files are deleted by recovery (`wal-format.md` §3).
pub const SEGMENT_TMP_SUFFIX: &str = ".wal.tmp";
/// Segment sizes must be a multiple of this (the page size msync works in) (`wal-format.md` §12).
pub const SEGMENT_BYTES_ALIGNMENT: usize = 4096;
/// Smallest allowed segment (tests use it to force rotations) (`wal-format.md` §12).
pub const SEGMENT_BYTES_MIN: usize = 8 * 1024;
/// Largest allowed segment (`wal-format.md` §12).
pub const SEGMENT_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// Default segment size (`wal-format.md` §12).
pub const SEGMENT_BYTES_DEFAULT: usize = 64 * 1024 * 1024;

/// Offset of the header CRC, which covers the bytes before it (`wal-format.md` §4, §6).
const HEADER_CRC_OFFSET: usize = 60;

/// The fields of a segment header (`wal-format.md` §4).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Which cluster and node wrote this segment: a segment from elsewhere is refused.
    pub identity: WalIdentity,
    /// The LSN of the first record in this segment; also the file's name.
    pub first_lsn: Lsn,
    /// The file's size when created; a different size on disk means damage.
    pub segment_bytes: u64,
}

impl SegmentHeader {
    /// The 64 header bytes, CRC included.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&self.identity.node_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.identity.cluster_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32fast::hash(&b[..HEADER_CRC_OFFSET]);
        b[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header; the error says which check failed.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, &'static str> {
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err("file shorter than a segment header");
        }
        let b = &b[..SEGMENT_HEADER_BYTES];
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&b[HEADER_CRC_OFFSET..]);
        if crc32fast::hash(&b[..HEADER_CRC_OFFSET]) != u32::from_le_bytes(crc) {
            return Err("segment header checksum mismatch");
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let u64_at = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        if u16_at(8) != SEGMENT_FORMAT_VERSION {
            return Err("unknown segment format version");
        }
        if b[12..16].iter().chain(&b[40..60]).any(|&x| x != 0) {
            return Err("non-zero reserved segment header bytes");
        }
        Ok(SegmentHeader {
            identity: WalIdentity {
                cluster_id: u64_at(16),
                node_id: u16_at(10),
            },
            first_lsn: u64_at(24),
            segment_bytes: u64_at(32),
        })
    }
}

/// The file name of the segment whose first record has `first_lsn` (`wal-format.md` §3).
pub fn file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// The first LSN a segment file name stands for, or `None` if it is not a segment name.
pub fn parse_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Test hook that makes chosen operations fail as a full disk would (`wal-format.md` §11).
/// Shared through an `Arc` so a test can arm it while the `Wal` holds it.
#[derive(Debug, Default)]
pub struct FaultInjector {
    /// How many of the next segment preallocations fail with ENOSPC.
    enospc_preallocations: AtomicU32,
    /// How many of the next `Wal::sync` msyncs fail with EIO.
    eio_syncs: AtomicU32,
}

impl FaultInjector {
    /// Makes the next `count` segment preallocations fail with ENOSPC.
    pub fn fail_next_preallocations(&self, count: u32) {
        self.enospc_preallocations.store(count, Ordering::SeqCst);
    }

    /// Makes the next `count` msyncs of `Wal::sync` fail with EIO (to test that it is fatal).
    pub fn fail_next_syncs(&self, count: u32) {
        self.eio_syncs.store(count, Ordering::SeqCst);
    }

    /// Consumes one armed sync fault, if any.
    pub(crate) fn take_sync_fault(&self) -> bool {
        self.eio_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn take_preallocation_fault(&self) -> bool {
        self.enospc_preallocations
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> WalError {
    move |source| WalError::Io { context, source }
}

/// Allocates real blocks for the whole file, so later writes through the map cannot hit ENOSPC.
fn preallocate(file: &File, bytes: usize) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(bytes).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: plain syscall on a file descriptor we own; mode 0 allocates and extends.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        // No fallocate: write real zeroes past the current end, which allocates just as well.
        let zeroes = vec![0u8; 1 << 20];
        let mut at = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
        while at < bytes {
            let n = zeroes.len().min(bytes - at);
            file.write_all_at(&zeroes[..n], at as u64)?;
            at += n;
        }
        Ok(())
    }
}

/// Writes zeroes over `[from, to)` of a segment with `pwrite` and syncs it: the truncation of a
/// torn tail (`wal-format.md` §9 row 6). Not through the writable mapping, so that the writer's
/// mapping starts with no page of its own and its cached pages can be dropped after recovery
/// (see [`drop_cached_pages`]).
pub(crate) fn zero_range(path: &Path, from: usize, to: usize) -> Result<(), WalError> {
    const CHUNK_BYTES: usize = 64 * 1024;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(format!("open {}", path.display())))?;
    let zeroes = vec![0u8; CHUNK_BYTES.min(to.saturating_sub(from))];
    let mut at = from;
    while at < to {
        let n = zeroes.len().min(to - at);
        file.write_all_at(&zeroes[..n], at as u64)
            .map_err(io(format!(
                "zero bytes {at}..{} of {}",
                at + n,
                path.display()
            )))?;
        at += n;
    }
    file.sync_data().map_err(|source| WalError::SyncFailed {
        context: format!("fsync {} after zeroing bytes {from}..{to}", path.display()),
        source,
    })
}

/// Asks the kernel to drop the clean page-cache pages of the file at `path` that no mapping uses
/// (`POSIX_FADV_DONTNEED`). Recovery reads a segment through a populated mapping, which pulls
/// it in by readahead as large folios (up to 2 MiB here); the writer's mapping would then reuse
/// them, and every msync writes back, and walks the buffers of, a whole large folio: a single
/// client's sync went from 0.13 to 1.3 ms once the writer reached them. Pages faulted in by the
/// writer's `MADV_RANDOM` mapping are single pages. Only a hint: errors are logged and ignored.
pub(crate) fn drop_cached_pages(path: &Path) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) => {
                tracing::debug!(error = %e, file = %path.display(), "cannot open to drop its cache");
                return;
            }
        };
        // SAFETY: plain syscall on a file descriptor we own; it only drops clean cached pages.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            let e = std::io::Error::from_raw_os_error(rc);
            tracing::debug!(error = %e, file = %path.display(), "posix_fadvise(DONTNEED) failed");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
}

/// Preallocates a cut-off segment file back to its full size and fsyncs it (recovery of a
/// torn tail in a short last segment, `wal-format.md` §9 row 6).
pub(crate) fn restore_length(path: &Path, bytes: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(format!("open {}", path.display())))?;
    let bytes =
        usize::try_from(bytes).map_err(|_| WalError::InvalidOptions("segment size".into()))?;
    preallocate(&file, bytes).map_err(io(format!("preallocate {}", path.display())))?;
    file.sync_all().map_err(|source| WalError::SyncFailed {
        context: format!("fsync {}", path.display()),
        source,
    })
}

/// fsyncs a directory so that creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let d = File::open(dir).map_err(io(format!("open directory {}", dir.display())))?;
    d.sync_all().map_err(|source| WalError::SyncFailed {
        context: format!("fsync directory {}", dir.display()),
        source,
    })
}

/// Creates a new segment in `dir` (temporary name, fallocate, header, fsync, rename, fsync dir)
/// and returns its path. On any error the temporary file is removed and nothing else changed.
pub(crate) fn create(
    dir: &Path,
    header: SegmentHeader,
    fault: Option<&FaultInjector>,
) -> Result<PathBuf, WalError> {
    let bytes = usize::try_from(header.segment_bytes).expect("segment size checked in options");
    let path = dir.join(file_name(header.first_lsn));
    let tmp = dir.join(format!("{:020}{SEGMENT_TMP_SUFFIX}", header.first_lsn));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io(format!("create {}", tmp.display())))?;
        if fault.is_some_and(FaultInjector::take_preallocation_fault) {
            return Err(WalError::Io {
                context: format!("preallocate {} (injected fault)", tmp.display()),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        preallocate(&file, bytes).map_err(io(format!(
            "preallocate {bytes} bytes for {}",
            tmp.display()
        )))?;
        let encoded = header.encode();
        assert!(SegmentHeader::decode(&encoded) == Ok(header));
        file.write_all_at(&encoded, 0)
            .map_err(io(format!("write header of {}", tmp.display())))?;
        file.sync_all().map_err(|source| WalError::SyncFailed {
            context: format!("fsync new segment {}", tmp.display()),
            source,
        })?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(io(format!(
        "rename {} to {}",
        tmp.display(),
        path.display()
    )))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Maps a whole segment file read-only (for recovery and the operator tools).
pub(crate) fn map_read(path: &Path) -> Result<Mmap, WalError> {
    let file = File::open(path).map_err(io(format!("open {}", path.display())))?;
    // SAFETY: the directory is locked by the owning `Wal` (or the tool only reads); nobody
    // truncates a segment file while it is mapped, so no access can fall past EOF.
    unsafe { MmapOptions::new().populate().map(&file) }
        .map_err(io(format!("map {}", path.display())))
}

/// The segment being appended to: a writable shared mapping of a preallocated file.
pub(crate) struct ActiveSegment {
    /// The file path, for error messages.
    pub path: PathBuf,
    /// The LSN of this segment's first record (its name).
    pub first_lsn: Lsn,
    /// The writable mapping of the whole file.
    pub map: MmapMut,
}

impl ActiveSegment {
    /// Maps an existing segment (already checked by recovery, or just created) for writing.
    pub fn open(path: &Path, first_lsn: Lsn) -> Result<ActiveSegment, WalError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(format!("open {}", path.display())))?;
        // SAFETY: the file is fully preallocated (fallocate) and never truncated while mapped,
        // and the directory lock keeps other consens processes away.
        let map = unsafe { MmapOptions::new().map_mut(&file) }
            .map_err(io(format!("map {}", path.display())))?;
        // No readahead on faults: it brings the file in as large folios, and msync writes a
        // dirty folio back whole, so every small group commit then wrote up to megabytes (the
        // sync went from 0.2 to 1+ ms after a burst of 4 KiB writes). Only a hint: ignore errors.
        if let Err(e) = map.advise(memmap2::Advice::Random) {
            tracing::debug!(error = %e, file = %path.display(), "madvise(MADV_RANDOM) failed");
        }
        Ok(ActiveSegment {
            path: path.to_path_buf(),
            first_lsn,
            map,
        })
    }

    /// msync(MS_SYNC) of `[from, to)` (memmap2 widens the start to a page boundary).
    pub fn sync_range(&self, from: usize, to: usize) -> Result<(), WalError> {
        assert!(from <= to && to <= self.map.len());
        if from == to {
            return Ok(());
        }
        self.map
            .flush_range(from, to - from)
            .map_err(|source| WalError::SyncFailed {
                context: format!("msync {} bytes {from}..{to}", self.path.display()),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("1.wal"), None);
        assert_eq!(parse_file_name("00000000000000000001.wal.tmp"), None);
    }

    #[test]
    fn header_round_trips_and_catches_flips() {
        let h = SegmentHeader {
            identity: WalIdentity {
                cluster_id: 0xdead_beef,
                node_id: 3,
            },
            first_lsn: 77,
            segment_bytes: 8192,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for bit in 0..SEGMENT_HEADER_BYTES * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&c).is_err(), "bit {bit}");
        }
    }

    /// The segment header of the worked example in `wal-format.md` §13 (checked against an
    /// independent CRC-32 implementation, Python's `zlib.crc32`).
    #[test]
    fn worked_example_header_matches_the_spec() {
        let h = SegmentHeader {
            identity: WalIdentity {
                cluster_id: 0x0123_4567_89ab_cdef,
                node_id: 2,
            },
            first_lsn: 1,
            segment_bytes: 8192,
        };
        let hex: Vec<String> = h.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(" "),
            "43 4f 4e 53 57 41 4c 00 01 00 02 00 00 00 00 00 \
             ef cd ab 89 67 45 23 01 01 00 00 00 00 00 00 00 \
             00 20 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
             00 00 00 00 00 00 00 00 00 00 00 00 22 94 8a d9"
        );
    }

    #[test]
    fn injected_enospc_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fault = FaultInjector::default();
        fault.fail_next_preallocations(1);
        let h = SegmentHeader {
            identity: WalIdentity {
                cluster_id: 1,
                node_id: 1,
            },
            first_lsn: 1,
            segment_bytes: 8192,
        };
        let err = create(dir.path(), h, Some(&fault)).expect_err("fault armed");
        assert!(err.is_disk_full());
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
        let path = create(dir.path(), h, Some(&fault)).expect("fault used up");
        assert_eq!(std::fs::metadata(path).expect("stat").len(), 8192);
    }
}
