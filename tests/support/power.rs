//! Power cuts for integration tests: each node's data dir on its own small ext4 filesystem in a
//! loop-mounted image file, and a cut that keeps only what that filesystem sent to its device.
//!
//! kill -9 leaves the page cache alone, so the kernel still writes a dead node's unsynced pages
//! out later and a missing msync goes unnoticed. A cut here copies each image file while the
//! filesystem on it is still mounted: the copy holds what the device received (every msync and
//! fsync, and journal commits) and nothing that was only in the filesystem's page cache. The
//! original is then unmounted and thrown away, and the copy mounted in its place, as a machine
//! boots from its disk after power returns; ext4 replays its journal as it would then.
//!
//! So that "what the device received" is only what was synced, [`WritebackPause`] turns the
//! kernel's periodic writeback off for the test's duration (restored on drop) and each filesystem
//! is mounted with a long journal commit interval.
//!
//! Needs root, `mount` with loop devices and `mkfs.ext4`; [`LoopDisk::create`] says why not
//! where one is missing, and callers skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// Seconds between ext4's own journal commits: far longer than a test, so only syncs commit.
const JOURNAL_COMMIT_SECS: u32 = 3_600;
/// Writeback age while paused (the kernel's maximum is far above this; an hour is enough).
const DIRTY_EXPIRE_CENTISECS_PAUSED: u64 = 360_000;

const DIRTY_WRITEBACK: &str = "/proc/sys/vm/dirty_writeback_centisecs";
const DIRTY_EXPIRE: &str = "/proc/sys/vm/dirty_expire_centisecs";

/// One test at a time changes the writeback sysctls and owns loop devices.
static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// The kernel's periodic writeback is off while this lives; the old settings come back on drop.
pub struct WritebackPause {
    saved: Vec<(&'static str, String)>,
    _exclusive: MutexGuard<'static, ()>,
}

impl WritebackPause {
    pub fn start() -> Result<WritebackPause, String> {
        let exclusive = EXCLUSIVE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut pause = WritebackPause {
            saved: Vec::new(),
            _exclusive: exclusive,
        };
        for (path, value) in [
            (DIRTY_WRITEBACK, 0),
            (DIRTY_EXPIRE, DIRTY_EXPIRE_CENTISECS_PAUSED),
        ] {
            let old = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
            std::fs::write(path, value.to_string()).map_err(|e| format!("write {path}: {e}"))?;
            pause.saved.push((path, old.trim().to_string()));
        }
        Ok(pause)
    }
}

impl Drop for WritebackPause {
    fn drop(&mut self) {
        for (path, old) in self.saved.iter().rev() {
            if let Err(e) = std::fs::write(path, old) {
                eprintln!("could not restore {path} to {old}: {e}");
            }
        }
    }
}

/// A small ext4 filesystem in an image file, loop-mounted at `mount`.
pub struct LoopDisk {
    pub image: PathBuf,
    pub mount: PathBuf,
    mounted: bool,
}

impl LoopDisk {
    /// Creates a sparse image of `bytes`, makes ext4 on it and mounts it at `mount`.
    pub fn create(image: &Path, mount: &Path, bytes: u64) -> Result<LoopDisk, String> {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".to_string());
        }
        let file = std::fs::File::create(image).map_err(|e| format!("create image: {e}"))?;
        file.set_len(bytes)
            .map_err(|e| format!("size image: {e}"))?;
        drop(file);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image))?;
        std::fs::create_dir_all(mount).map_err(|e| format!("create mount point: {e}"))?;
        let mut disk = LoopDisk {
            image: image.to_path_buf(),
            mount: mount.to_path_buf(),
            mounted: false,
        };
        disk.mount()?;
        Ok(disk)
    }

    fn mount(&mut self) -> Result<(), String> {
        run(Command::new("mount")
            .arg("-o")
            .arg(format!("loop,commit={JOURNAL_COMMIT_SECS}"))
            .arg(&self.image)
            .arg(&self.mount))?;
        self.mounted = true;
        Ok(())
    }

    fn unmount(&mut self) -> Result<(), String> {
        if self.mounted {
            run(Command::new("umount").arg(&self.mount))?;
            self.mounted = false;
        }
        Ok(())
    }

    /// Cuts the power: what the device holds now is what the filesystem holds after it. Every
    /// process writing to the filesystem must be dead first (their open files pin the mount).
    pub fn cut(&mut self) -> Result<(), String> {
        let copy = self.image.with_extension("cut");
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.image)
            .arg(&copy))?;
        // Unmounting writes the lost page cache out to the old image, which is then discarded.
        self.unmount()?;
        std::fs::rename(&copy, &self.image).map_err(|e| format!("replace image: {e}"))?;
        self.mount()
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.mounted {
            // Lazily, so that a test failing with a process still inside does not leak the mount.
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("{:?}: {e}", command.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} {:?} failed: {}",
            command.get_program(),
            command.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
