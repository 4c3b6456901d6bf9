//! Keeping the kernel's and the allocator's memory work off the threads that serve clients.
//!
//! Two sources of multi-millisecond stalls on the event loop and the WAL thread, found by timing
//! every loop iteration under load (docs/benchmarks.md, "Where the time went"):
//! - **Freeing a snapshot interval of commands.** When a snapshot lets the core forget 100,000
//!   decided slots, dropping them frees every key and value they hold: 10–16 ms of cache misses,
//!   once per interval on every node. [`drop_in_background`] frees such structures on a
//!   short-lived thread of their own.
//! - **Transparent huge pages.** The allocator asks for huge pages on its heap; the first touch
//!   of each one makes the kernel zero 2 MiB in one page fault, which took ~8 ms on the
//!   benchmark VM and happened dozens of times a minute under load (a heap that is freed and
//!   refilled). [`disable_transparent_huge_pages`] turns them off for the process, as Redis and
//!   most databases recommend; 4 KiB faults spread the same zeroing thinly.

/// Drops `value` on a new thread; if no thread can be started, drops it here (slower, never lost).
pub fn drop_in_background<T: Send + 'static>(value: T) {
    let spawned = std::thread::Builder::new()
        .name("consens-drop".into())
        .spawn(move || drop(value));
    if let Err(error) = spawned {
        // The closure, and the value with it, was dropped by the failed spawn.
        tracing::debug!(%error, "no thread to free memory on; freed inline");
    }
}

/// Turns transparent huge pages off for this process (Linux `PR_SET_THP_DISABLE`); call it
/// before the heap grows. Elsewhere, or on a kernel without the setting, it does nothing.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
        let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            tracing::debug!(%error, "transparent huge pages could not be turned off");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Tell(mpsc::Sender<String>);

    impl Drop for Tell {
        fn drop(&mut self) {
            let name = std::thread::current().name().unwrap_or("").to_string();
            let _ = self.0.send(name);
        }
    }

    #[test]
    fn the_value_is_dropped_on_another_thread() {
        let (tx, rx) = mpsc::channel();
        drop_in_background(Tell(tx));
        let thread = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("dropped within 10 s");
        assert_eq!(thread, "consens-drop");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn transparent_huge_pages_are_off_afterwards() {
        disable_transparent_huge_pages();
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
        // Kernels since 5.0 report the setting; older ones have no line to check.
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }
}
