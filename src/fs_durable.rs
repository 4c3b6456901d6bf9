//! Small files that must survive a crash whole or not at all: the node identity files and
//! snapshots. One helper, so the crash-safe write sequence is written (and reviewed) once.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Writes `contents` to `dir/name` atomically and durably: write a temp file, fsync it, rename it
/// over the target, fsync the directory. A crash leaves the old file or the new one, never a mix.
pub fn write_durably(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}
