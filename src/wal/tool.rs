//! The operator commands `consens wal verify DIR` and `consens wal dump DIR` (`wal-format.md` §14).
//!
//! Both are read-only: they run the same scan as recovery but never truncate, never create
//! files and take no lock, so they are safe on a copy of a data directory or a stopped node.
//! Payload decoding is pluggable so the WAL stays ignorant of Paxos: the daemon passes a
//! describer that decodes consensus records; the CLI default prints type, length and hex.

use super::recovery::{self, Recovery, Verdict};
use super::WalError;
use std::io::Write;
use std::path::Path;

/// How many payload bytes the default describer shows in hex (`wal-format.md` §14).
pub const DESCRIBE_HEX_BYTES_MAX: usize = 16;

/// The default payload describer: length and the first bytes in hex.
pub fn describe_hex(_record_type: u8, payload: &[u8]) -> String {
    let shown: Vec<String> = payload
        .iter()
        .take(DESCRIBE_HEX_BYTES_MAX)
        .map(|b| format!("{b:02x}"))
        .collect();
    let more = if payload.len() > DESCRIBE_HEX_BYTES_MAX {
        " .."
    } else {
        ""
    };
    format!("len={} hex={}{more}", payload.len(), shown.join(""))
}

fn open_scan(dir: &Path) -> Result<Recovery, WalError> {
    if !dir.is_dir() {
        return Err(WalError::Io {
            context: format!("{} is not a directory", dir.display()),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    recovery::scan(dir, None)
}

fn summary(rec: &Recovery, out: &mut dyn Write) -> std::io::Result<()> {
    let files: Vec<_> = rec.files().collect();
    let (used, allocated) = rec.bytes_used_and_allocated();
    writeln!(out, "segments: {}", files.len())?;
    if let (Some(first), Some(last)) = (files.first(), files.last()) {
        writeln!(out, "files: {} .. {}", first.display(), last.display())?;
    }
    if let Some(id) = rec.identity {
        writeln!(out, "cluster: {:#018x} node: {}", id.cluster_id, id.node_id)?;
    }
    if rec.is_empty() {
        writeln!(out, "records: 0 (next lsn {})", rec.next_lsn)?;
    } else {
        writeln!(
            out,
            "records: {} (lsn {}..={})",
            rec.len(),
            rec.first_lsn,
            rec.next_lsn - 1
        )?;
    }
    writeln!(out, "bytes: {used} used of {allocated} allocated")
}

/// Prints what `open` would conclude and why. Returns `Ok(true)` when a node would start on
/// this directory (clean end, or a torn tail it would truncate), `Ok(false)` on corruption or
/// an unreadable directory; the CLI maps that to exit status 0 or 1.
pub fn verify(dir: &Path, out: &mut dyn Write) -> std::io::Result<bool> {
    let rec = match open_scan(dir) {
        Ok(rec) => rec,
        Err(e) => {
            writeln!(out, "problem: {e}")?;
            writeln!(out, "result: FAILED")?;
            return Ok(false);
        }
    };
    summary(&rec, out)?;
    match rec.verdict() {
        Verdict::Clean => {
            writeln!(out, "result: OK (clean end)")?;
            Ok(true)
        }
        Verdict::TornTail(t) => {
            writeln!(
                out,
                "problem: torn tail in {} at offset {} (lsn {}): {}",
                t.file.display(),
                t.offset,
                t.lsn,
                t.why
            )?;
            writeln!(
                out,
                "result: OK (recoverable: opening the log truncates the torn tail; no valid record is lost)"
            )?;
            Ok(true)
        }
        Verdict::Corrupt(e) => {
            writeln!(out, "problem: {e}")?;
            writeln!(out, "result: CORRUPT (a node refuses to start on this log)")?;
            Ok(false)
        }
    }
}

/// Prints one line per valid record (`lsn=N type=T <describe>`), then a `#` line for a torn tail
/// or corruption. Returns `Ok(false)` on corruption or an unreadable directory.
pub fn dump(
    dir: &Path,
    out: &mut dyn Write,
    describe: &dyn Fn(u8, &[u8]) -> String,
) -> std::io::Result<bool> {
    let rec = match open_scan(dir) {
        Ok(rec) => rec,
        Err(e) => {
            writeln!(out, "# problem: {e}")?;
            return Ok(false);
        }
    };
    for r in rec.records() {
        writeln!(
            out,
            "lsn={} type={} {}",
            r.lsn,
            r.record_type,
            describe(r.record_type, r.payload)
        )?;
    }
    match rec.verdict() {
        Verdict::Clean => Ok(true),
        Verdict::TornTail(t) => {
            writeln!(
                out,
                "# torn tail in {} at offset {} (lsn {}): {}",
                t.file.display(),
                t.offset,
                t.lsn,
                t.why
            )?;
            Ok(true)
        }
        Verdict::Corrupt(e) => {
            writeln!(out, "# {e}")?;
            Ok(false)
        }
    }
}
