//! Byte-level access to a node's WAL for storage-fault tests: the newest segment file and the
//! offsets of its record frames, found by walking the segment as `wal-format.md` lays it out (a
//! 64-byte segment header, then 8-byte-aligned frames whose `u32` payload length sits at byte 4).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const SEGMENT_HEADER_BYTES: usize = 64;
pub const RECORD_HEADER_BYTES: usize = 24;
/// The page size the zeroed-page fault uses.
pub const PAGE_BYTES: usize = 4096;

/// The node's newest WAL segment.
pub fn newest_segment(data_dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files.pop().expect("a segment")
}

/// Offsets of every record frame in a segment, up to the first all-zero header.
pub fn frames(bytes: &[u8]) -> Vec<usize> {
    let mut at = SEGMENT_HEADER_BYTES;
    let mut found = Vec::new();
    while at + RECORD_HEADER_BYTES <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if len == 0 && bytes[at..at + RECORD_HEADER_BYTES].iter().all(|b| *b == 0) {
            break;
        }
        found.push(at);
        at += (RECORD_HEADER_BYTES + len).div_ceil(8) * 8;
    }
    found
}

/// Runs `consens wal <subcommand> DATA_DIR/wal`; returns whether it exited 0, and its stdout
/// followed by its stderr.
pub fn wal_command(subcommand: &str, data_dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consens"))
        .args(["wal", subcommand])
        .arg(data_dir.join("wal"))
        .output()
        .expect("run consens wal");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}
