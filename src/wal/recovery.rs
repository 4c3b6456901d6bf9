//! Recovery: scanning every segment and sorting what it finds by the decision table of
//! `wal-format.md` §9 into a clean end, a torn tail (truncate and start) or corruption (refuse).
//!
//! The scan itself never writes: `scan` is shared by `Wal::open` (which then truncates a torn
//! tail) and by the read-only operator tools. The decision table is the `decide_stop`
//! function, one match arm per row, so code and spec can be compared line by line.

use super::record::{self, Frame, RecordRef, RECORD_ALIGNMENT_BYTES};
use super::segment::{self, SegmentHeader, SEGMENT_HEADER_BYTES, SEGMENT_TMP_SUFFIX};
use super::{Lsn, WalError, WalIdentity};
use memmap2::Mmap;
use std::path::{Path, PathBuf};

/// A torn tail found (and, by `Wal::open`, truncated): a bad or partial record in the last
/// segment with no valid record after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The last segment, which holds the torn bytes.
    pub file: PathBuf,
    /// Where the torn bytes start (the log's end after truncation).
    pub offset: u64,
    /// The LSN the torn record would have had (the log's next LSN).
    pub lsn: Lsn,
    /// Which check failed at `offset`.
    pub why: String,
    /// End of the non-zero bytes: truncation zeroes `offset..dirty_end`.
    pub dirty_end: u64,
    /// Set when the file itself was cut short: truncation first preallocates it back to this
    /// size (its header's segment size).
    pub restore_bytes: Option<u64>,
}

/// The outcome of a scan (`wal-format.md` §9).
#[derive(Debug)]
pub enum Verdict {
    /// Every segment ends in zeroes right after its last valid record.
    Clean,
    /// Row 6: a torn tail that recovery truncates.
    TornTail(TornTail),
    /// Rows 2, 4, 7, 8, 9, 10: recovery refuses to start; always a `WalError::Corrupt`.
    Corrupt(WalError),
}

/// One segment as scanned.
#[derive(Debug)]
pub(crate) struct ScannedSegment {
    /// The file, for messages and for the active segment.
    pub path: PathBuf,
    /// The LSN of its first record (from its header, equal to its name).
    pub first_lsn: Lsn,
    /// Read-only mapping of the whole file; the records are borrowed from it.
    pub map: Mmap,
    /// Offset just past its last valid record.
    pub end: usize,
}

/// What recovery found: the valid records (borrowed from read-only mappings) and the verdict.
#[derive(Debug)]
pub struct Recovery {
    pub(crate) segments: Vec<ScannedSegment>,
    /// The LSN of the first record still in the log (1 for a new log; more after compaction).
    pub first_lsn: Lsn,
    /// The LSN the next append gets: one past the last valid record.
    pub next_lsn: Lsn,
    /// The torn tail that was truncated, if any (already logged).
    pub truncated: Option<TornTail>,
    /// Identity found in the segments (for the tools, which have none of their own).
    pub identity: Option<WalIdentity>,
    /// Set when the scan found corruption (rows 2, 4, 7–10); the records before it are kept
    /// so the tools can still show them, but `Wal::open` refuses.
    pub corruption: Option<Corruption>,
    count: usize,
    /// Set by `Wal::open`, which goes on writing the last segment: once the records are no
    /// longer lent, its cached pages (read in by the scan as large folios) are dropped
    /// (`segment::drop_cached_pages`).
    drop_last_segment_cache: bool,
}

impl Drop for Recovery {
    fn drop(&mut self) {
        let last = self.segments.pop();
        // Unmap first: the kernel keeps pages that a mapping still uses.
        self.segments.clear();
        if let Some(ScannedSegment { path, map, .. }) = last {
            drop(map);
            if self.drop_last_segment_cache {
                segment::drop_cached_pages(&path);
            }
        }
    }
}

impl Recovery {
    /// The number of valid records, `next_lsn - first_lsn`.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The segment files found, oldest first.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.segments.iter().map(|s| s.path.as_path())
    }

    /// Bytes in use (headers and frames) and bytes allocated, over all segments.
    pub fn bytes_used_and_allocated(&self) -> (u64, u64) {
        self.segments.iter().fold((0, 0), |(u, a), s| {
            (u + s.end as u64, a + s.map.len() as u64)
        })
    }

    /// Every valid record, in LSN order. Each is checked again as it is read.
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'_>> {
        self.segments.iter().flat_map(|s| {
            let mut offset = SEGMENT_HEADER_BYTES;
            let mut lsn = s.first_lsn;
            std::iter::from_fn(move || {
                if offset >= s.end {
                    return None;
                }
                match record::decode(&s.map, offset) {
                    Frame::Valid {
                        record,
                        next_offset,
                    } => {
                        assert_eq!(record.lsn, lsn, "record changed under the scan");
                        offset = next_offset;
                        lsn += 1;
                        Some(record)
                    }
                    other => panic!(
                        "{} changed on disk after recovery scanned it: {other:?} at {offset}",
                        s.path.display()
                    ),
                }
            })
        })
    }
}

/// Where a segment's valid records stop, and why.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stop {
    /// Zero header and the rest of the segment is zero.
    ZeroesToTheEnd,
    /// Zero header followed by non-zero bytes somewhere in the segment.
    ZeroHeaderThenBytes,
    /// A frame that fails a check.
    Bad(&'static str),
}

/// What to do where a segment's valid records stop (`wal-format.md` §9).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    /// Row 3: this segment is done; go on with the next one.
    NextSegment,
    /// Row 5: the log ends here cleanly.
    CleanEnd,
    /// Rows 6 and 6b: a torn tail; truncate it and start.
    TornTail,
    /// Rows 4 and 7: refuse to start, for this reason.
    Corrupt(String),
}

/// The decision table of `wal-format.md` §9 for the point where a segment's valid records stop.
/// `valid_after` is the first valid frame (file, offset, LSN) after the stop, if any.
fn decide_stop(
    is_last_segment: bool,
    stop: Stop,
    valid_after: Option<(PathBuf, usize, Lsn)>,
) -> Decision {
    match (is_last_segment, stop, valid_after) {
        // Row 3: a full (or rotated) segment ends in zeroes; the next segment goes on.
        (false, Stop::ZeroesToTheEnd, _) => Decision::NextSegment,
        // Row 4: bad bytes in a segment that is not the last: rotation synced it, so no torn
        // write can be there.
        (false, Stop::ZeroHeaderThenBytes | Stop::Bad(_), _) => Decision::Corrupt(
            "bad record in a segment that is not the last one (a torn tail can only be in the last segment)"
                .into(),
        ),
        // Row 5: clean end.
        (true, Stop::ZeroesToTheEnd, _) => Decision::CleanEnd,
        // Row 7: a bad record followed by a valid one is corruption.
        (true, _, Some((file, offset, lsn))) => Decision::Corrupt(format!(
            "bad record followed by a valid record (lsn {lsn} at {}:{offset})",
            file.display()
        )),
        // Rows 6, 6b: a bad or partial record with nothing valid after it: a torn tail.
        (true, Stop::ZeroHeaderThenBytes | Stop::Bad(_), None) => Decision::TornTail,
    }
}

/// Scans forward from `from` (8-aligned) for the first frame that decodes as valid.
fn first_valid_frame(map: &[u8], from: usize) -> Option<(usize, Lsn)> {
    let mut at = from.next_multiple_of(RECORD_ALIGNMENT_BYTES);
    while at + record::RECORD_HEADER_BYTES <= map.len() {
        // Skip zero words fast: no frame starts with an all-zero header.
        if map[at..at + 8] == [0u8; 8] && map[at + 8] == 0 {
            at += RECORD_ALIGNMENT_BYTES;
            continue;
        }
        if let Frame::Valid { record, .. } = record::decode(map, at) {
            return Some((at, record.lsn));
        }
        at += RECORD_ALIGNMENT_BYTES;
    }
    None
}

/// The offset just past the last non-zero byte of `map[from..]` (or `from` if all zero).
fn last_nonzero_end(map: &[u8], from: usize) -> usize {
    map[from..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(from, |i| from + i + 1)
}

/// Where and why recovery refuses to start (the fields of `WalError::Corrupt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The damaged segment file.
    pub file: PathBuf,
    /// Where in it the problem was found (0 for a header problem).
    pub offset: u64,
    /// The LSN expected at that point.
    pub lsn: Lsn,
    /// Which check failed.
    pub reason: String,
}

impl Corruption {
    /// The error `Wal::open` returns for it.
    pub fn to_error(&self) -> WalError {
        WalError::Corrupt {
            file: self.file.clone(),
            offset: self.offset,
            lsn: self.lsn,
            reason: self.reason.clone(),
        }
    }
}

fn corrupt(file: &Path, offset: usize, lsn: Lsn, reason: impl Into<String>) -> Corruption {
    Corruption {
        file: file.to_path_buf(),
        offset: offset as u64,
        lsn,
        reason: reason.into(),
    }
}

/// The files of a log directory.
pub(crate) struct Listing {
    /// Segment files by first LSN (from the name), sorted.
    pub segments: Vec<(Lsn, PathBuf)>,
    /// Leftover `*.wal.tmp` files of a creation a crash interrupted.
    pub tmps: Vec<PathBuf>,
}

/// Lists the segment files of `dir` (sorted by first LSN) and the leftover temporary files.
pub(crate) fn list(dir: &Path) -> Result<Listing, WalError> {
    let mut segments = Vec::new();
    let mut tmps = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| WalError::Io {
        context: format!("list {}", dir.display()),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| WalError::Io {
            context: format!("list {}", dir.display()),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(lsn) = segment::parse_file_name(name) {
            segments.push((lsn, entry.path()));
        } else if name.ends_with(SEGMENT_TMP_SUFFIX) {
            tmps.push(entry.path());
        }
    }
    segments.sort();
    Ok(Listing { segments, tmps })
}

/// Scans every segment of `dir`, read-only. With `identity`, segments of another cluster or
/// node are corruption; without, the first segment's identity is the reference.
/// IO errors are returned as `Err`; corruption is reported in the result so that the tools can
/// still print what came before it.
pub(crate) fn scan(dir: &Path, identity: Option<WalIdentity>) -> Result<Recovery, WalError> {
    let files = list(dir)?.segments;
    let mut rec = Recovery {
        segments: Vec::new(),
        first_lsn: files.first().map_or(1, |(lsn, _)| *lsn),
        next_lsn: files.first().map_or(1, |(lsn, _)| *lsn),
        truncated: None,
        identity,
        corruption: None,
        count: 0,
        drop_last_segment_cache: false,
    };
    let mut maps = Vec::with_capacity(files.len());
    for (_, path) in &files {
        maps.push(segment::map_read(path)?);
    }
    let n = files.len();
    let mut maps = maps.into_iter();
    for (i, (name_lsn, path)) in files.iter().enumerate() {
        let map = maps.next().expect("one map per file");
        let is_last = i + 1 == n;
        // Rows 8, 9, 10: the segment header.
        let header = match SegmentHeader::decode(&map) {
            Ok(h) => h,
            Err(why) => {
                rec.corruption = Some(corrupt(path, 0, rec.next_lsn, why));
                return Ok(rec);
            }
        };
        // Row 6b: a last segment cut short (an interrupted copy, say) is a torn tail; elsewhere
        // a wrong size is corruption.
        let short = is_last && (map.len() as u64) < header.segment_bytes;
        let header_problem = if (header.segment_bytes != map.len() as u64 && !short)
            || header.segment_bytes % RECORD_ALIGNMENT_BYTES as u64 != 0
            || header.segment_bytes > segment::SEGMENT_BYTES_MAX as u64
        {
            Some(format!(
                "segment header says {} bytes but the file has {}",
                header.segment_bytes,
                map.len()
            ))
        } else if header.first_lsn != *name_lsn {
            Some(format!(
                "segment header says first lsn {} but the file name says {name_lsn}",
                header.first_lsn
            ))
        } else if rec.identity.is_some_and(|id| id != header.identity) {
            let id = rec.identity.expect("checked");
            Some(format!(
                "segment written by another cluster or node (cluster {} node {}, expected cluster {} node {})",
                header.identity.cluster_id, header.identity.node_id, id.cluster_id, id.node_id
            ))
        } else if i > 0 && header.first_lsn != rec.next_lsn {
            Some(format!(
                "gap in LSNs: segment starts at {} but the previous one ends before {}",
                header.first_lsn, rec.next_lsn
            ))
        } else {
            None
        };
        if let Some(why) = header_problem {
            rec.corruption = Some(corrupt(path, 0, rec.next_lsn, why));
            return Ok(rec);
        }
        rec.identity = Some(header.identity);
        if i == 0 {
            rec.first_lsn = header.first_lsn;
            rec.next_lsn = header.first_lsn;
        }
        // Rows 1 and 2: walk the valid frames.
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut records = 0usize;
        let stop = loop {
            match record::decode(&map, offset) {
                Frame::Valid {
                    record,
                    next_offset,
                } => {
                    if record.lsn != rec.next_lsn {
                        rec.corruption = Some(corrupt(
                            path,
                            offset,
                            rec.next_lsn,
                            format!(
                                "gap in LSNs: found lsn {} where lsn {} belongs",
                                record.lsn, rec.next_lsn
                            ),
                        ));
                        break None;
                    }
                    rec.next_lsn += 1;
                    records += 1;
                    offset = next_offset;
                }
                Frame::Zero => {
                    break Some(if record::is_zero(&map[offset..]) {
                        Stop::ZeroesToTheEnd
                    } else {
                        Stop::ZeroHeaderThenBytes
                    })
                }
                Frame::Bad { why } => break Some(Stop::Bad(why)),
            }
        };
        rec.count += records;
        let Some(stop) = stop else {
            rec.segments.push(ScannedSegment {
                path: path.clone(),
                first_lsn: header.first_lsn,
                map,
                end: offset,
            });
            return Ok(rec);
        };
        let stop = match stop {
            Stop::ZeroesToTheEnd if short => {
                Stop::Bad("segment file shorter than its header says (cut off)")
            }
            other => other,
        };
        let valid_after = if stop == Stop::ZeroesToTheEnd {
            None
        } else {
            first_valid_frame(&map, offset + RECORD_ALIGNMENT_BYTES)
                .map(|(at, lsn)| (path.clone(), at, lsn))
        };
        let why = match stop {
            Stop::ZeroesToTheEnd => String::new(),
            Stop::ZeroHeaderThenBytes => "zero record header followed by non-zero bytes".into(),
            Stop::Bad(why) => why.into(),
        };
        let decision = decide_stop(is_last, stop, valid_after);
        let dirty_end = last_nonzero_end(&map, offset);
        rec.segments.push(ScannedSegment {
            path: path.clone(),
            first_lsn: header.first_lsn,
            map,
            end: offset,
        });
        match decision {
            Decision::NextSegment => continue,
            Decision::CleanEnd => return Ok(rec),
            Decision::TornTail => {
                rec.truncated = Some(TornTail {
                    file: path.clone(),
                    offset: offset as u64,
                    lsn: rec.next_lsn,
                    why,
                    dirty_end: dirty_end as u64,
                    restore_bytes: short.then_some(header.segment_bytes),
                });
                return Ok(rec);
            }
            Decision::Corrupt(reason) => {
                rec.corruption = Some(corrupt(
                    path,
                    offset,
                    rec.next_lsn,
                    format!("{why}: {reason}"),
                ));
                return Ok(rec);
            }
        }
    }
    Ok(rec)
}

impl Recovery {
    /// When this recovery is dropped (its records replayed), drop the clean cached pages of
    /// its last segment, the one the log goes on writing.
    pub(crate) fn drop_last_segment_cache_when_released(&mut self) {
        self.drop_last_segment_cache = true;
    }

    /// The verdict of the scan (row numbers in `wal-format.md` §9).
    pub fn verdict(&self) -> Verdict {
        match (&self.corruption, &self.truncated) {
            (Some(c), _) => Verdict::Corrupt(c.to_error()),
            (None, Some(t)) => Verdict::TornTail(t.clone()),
            (None, None) => Verdict::Clean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table_rows() {
        let p = PathBuf::from("x");
        let corrupt = |d: Decision| matches!(d, Decision::Corrupt(_));
        let bad = Stop::Bad("x");
        let after = Some((p, 8, 3));
        assert_eq!(
            decide_stop(false, Stop::ZeroesToTheEnd, None),
            Decision::NextSegment
        );
        assert!(corrupt(decide_stop(false, bad, None)));
        assert!(corrupt(decide_stop(false, Stop::ZeroHeaderThenBytes, None)));
        assert_eq!(
            decide_stop(true, Stop::ZeroesToTheEnd, None),
            Decision::CleanEnd
        );
        assert_eq!(decide_stop(true, bad, None), Decision::TornTail);
        assert_eq!(
            decide_stop(true, Stop::ZeroHeaderThenBytes, None),
            Decision::TornTail
        );
        assert!(corrupt(decide_stop(true, bad, after.clone())));
        assert!(corrupt(decide_stop(true, Stop::ZeroHeaderThenBytes, after)));
    }
}
