//! The WAL writer: a dedicated thread that owns the [`Durable`] adapter and runs group commit
//! off the event loop.
//!
//! The event loop hands the core's records over as soon as the core produces them and goes on
//! working (sending accepts, reading datagrams, answering reads) while the thread appends and
//! msyncs. Whatever arrives during one msync is appended and synced by the next one, so commits
//! pipeline: one sync in flight per node at all times under load, and never a loop stalled on
//! the disk. After each sync the thread reports the core's new durable persist index back as a
//! [`WalEvent::Durable`]; only then does the core release the promises and votes that depend on
//! it, so the ordering rule (`docs/architecture.md`) is unchanged.
//!
//! Order is the channel's order: records, checkpoints ([`WalCommand::Compact`]) and snapshot
//! marks are applied exactly in the order the loop issued them.
//!
//! A full disk is reported once per episode ([`WalEvent::DiskFull`], then [`WalEvent::DiskOk`]);
//! meanwhile the thread retries the backlog with an exponential back-off. A failed sync, or any
//! other WAL error, ends the process (fsyncgate: see [`fatal_wal_error`]).

use crate::metrics::Metrics;
use crate::node::driver::{StorageOp, WalEvent};
use crate::node::durable::{Durable, PersistError};
use crate::paxos::types::Slot;
use crate::paxos::Record;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// First retry of appends after the disk filled up.
pub const DISK_FULL_RETRY_MS_MIN: u64 = 10;
/// Longest pause between retries while the disk stays full.
pub const DISK_FULL_RETRY_MS_MAX: u64 = 1_000;

/// What the event loop asks of the WAL thread.
enum WalCommand {
    /// Append these core records (after any disk-full backlog), then sync.
    Persist(Vec<Record>),
    /// A snapshot from a peer now covers slots `<= slot`.
    SnapshotInstalled(Slot),
    /// Our own durable snapshot covers slots `<= slot`: checkpoint and drop older segments.
    Compact(Slot),
}

/// The loop's handle on the WAL thread.
pub struct WalWriter {
    commands: Option<Sender<WalCommand>>,
    thread: Option<JoinHandle<()>>,
}

impl WalWriter {
    /// Starts the thread. It reports to `events` until the writer is closed.
    pub fn start(
        durable: Durable,
        metrics: Arc<Metrics>,
        events: UnboundedSender<WalEvent>,
    ) -> std::io::Result<WalWriter> {
        let (commands, inbox) = std::sync::mpsc::channel();
        let worker = Worker {
            durable,
            metrics,
            events,
            bytes_reported: 0,
            disk_full: false,
            retry_ms: DISK_FULL_RETRY_MS_MIN,
        };
        let thread = std::thread::Builder::new()
            .name("consens-wal".to_string())
            .spawn(move || worker.run(inbox))?;
        Ok(WalWriter {
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    /// Queues one of the driver's storage operations; durability is reported later as a
    /// [`WalEvent`].
    pub fn run(&self, op: StorageOp) {
        match op {
            StorageOp::Persist(records) => self.persist(records),
            StorageOp::SnapshotInstalled(slot) => self.send(WalCommand::SnapshotInstalled(slot)),
            StorageOp::Compact(slot) => self.send(WalCommand::Compact(slot)),
        }
    }

    /// Queues records for append and sync.
    pub fn persist(&self, records: Vec<Record>) {
        if !records.is_empty() {
            self.send(WalCommand::Persist(records));
        }
    }

    /// Appends and syncs everything queued, then stops the thread.
    pub fn close(&mut self) {
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                fatal_wal_error("the WAL thread panicked");
            }
        }
    }

    fn send(&self, command: WalCommand) {
        let delivered = self
            .commands
            .as_ref()
            .is_some_and(|c| c.send(command).is_ok());
        if !delivered {
            // The thread only stops when closed or after a fatal error (which exits the process).
            fatal_wal_error("the WAL thread is gone");
        }
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        self.close();
    }
}

struct Worker {
    durable: Durable,
    metrics: Arc<Metrics>,
    events: UnboundedSender<WalEvent>,
    /// The WAL's byte count as last reported (for the metric's increments).
    bytes_reported: u64,
    /// The last report was `DiskFull`.
    disk_full: bool,
    /// Current back-off while the disk is full.
    retry_ms: u64,
}

impl Worker {
    fn run(mut self, inbox: Receiver<WalCommand>) {
        loop {
            // Wait for work; while the disk is full, wake up to retry the backlog.
            let first = if self.durable.has_backlog() {
                match inbox.recv_timeout(Duration::from_millis(self.retry_ms)) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match inbox.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                }
            };
            // Group commit: everything queued while the previous sync ran goes into this one.
            let mut appended = first.is_none() && self.persist(Vec::new());
            if let Some(command) = first {
                appended |= self.handle(command);
            }
            while let Ok(command) = inbox.try_recv() {
                appended |= self.handle(command);
            }
            if appended {
                self.sync();
            }
        }
        // Closed: sync what was appended (a backlog that still does not fit stays unwritten and
        // was never acknowledged).
        self.sync();
    }

    /// Runs one command; true if it appended something that needs a sync.
    fn handle(&mut self, command: WalCommand) -> bool {
        match command {
            WalCommand::Persist(records) => self.persist(records),
            WalCommand::SnapshotInstalled(slot) => {
                self.durable.snapshot_installed(slot);
                false
            }
            WalCommand::Compact(slot) => {
                // `compact` syncs the checkpoint with everything appended before it (one msync).
                match self.durable.compact(slot) {
                    Ok(Some(upto)) => self.report(WalEvent::Durable {
                        upto,
                        wal_bytes: self.durable.bytes_total(),
                    }),
                    Ok(None) => {}
                    Err(PersistError::DiskFull(reason)) => {
                        tracing::warn!(%reason, "WAL compaction postponed: disk full");
                    }
                    Err(PersistError::Fatal(e)) => fatal_wal_error(e),
                }
                false
            }
        }
    }

    /// Appends `records` after the backlog; true if anything was appended or may need a sync.
    fn persist(&mut self, records: Vec<Record>) -> bool {
        match self.durable.persist(records) {
            Ok(()) => {
                if self.disk_full {
                    self.disk_full = false;
                    self.retry_ms = DISK_FULL_RETRY_MS_MIN;
                    tracing::info!("WAL appends work again; this node is available");
                    self.report(WalEvent::DiskOk);
                }
            }
            Err(PersistError::DiskFull(reason)) => {
                if self.disk_full {
                    tracing::debug!(%reason, "WAL append still failing: disk full");
                    self.retry_ms = (self.retry_ms * 2).min(DISK_FULL_RETRY_MS_MAX);
                } else {
                    tracing::warn!(%reason, "WAL append failed; this node is unavailable until space returns");
                    self.disk_full = true;
                    self.report(WalEvent::DiskFull(reason));
                }
            }
            Err(PersistError::Fatal(e)) => fatal_wal_error(e),
        }
        // Records before the one that did not fit were appended and still need their sync.
        self.durable.is_dirty()
    }

    /// Group commit: one msync for everything appended, then report what became durable.
    fn sync(&mut self) {
        if !self.durable.is_dirty() {
            return;
        }
        let started = Instant::now();
        match self.durable.sync() {
            Ok(durable) => {
                self.metrics
                    .wal_sync_seconds
                    .observe(started.elapsed().as_secs_f64());
                let total = self.durable.bytes_total();
                self.metrics
                    .wal_bytes
                    .inc_by(total.saturating_sub(self.bytes_reported));
                self.bytes_reported = total;
                if let Some(upto) = durable {
                    self.report(WalEvent::Durable {
                        upto,
                        wal_bytes: total,
                    });
                }
            }
            Err(e) => fatal_wal_error(e),
        }
    }

    fn report(&self, event: WalEvent) {
        // The loop is gone only at shutdown, when nobody waits for durability any more.
        let _ = self.events.send(event);
    }
}

/// A failed msync/fsync may have dropped dirty pages while a retry would report success
/// ("fsyncgate"): acknowledge nothing more, exit, and let recovery read what really is on disk.
pub fn fatal_wal_error(error: impl std::fmt::Display) -> ! {
    tracing::error!(%error, "WAL failed; exiting so that nothing unsynced is acknowledged");
    // Not eprintln!: it panics when stderr cannot be written (say, a log file on the full disk),
    // and a panic would end one thread instead of the process.
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("consens: fatal: WAL failed: {error}\n"),
    );
    std::process::exit(70)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::durable::tests::options;
    use crate::paxos::types::{Ballot, NodeId};
    use crate::paxos::PersistIndex;
    use crate::wal::FaultInjector;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    fn promise(round: u64) -> Record {
        Record::Promised {
            ballot: Ballot {
                round,
                node: NodeId(0),
            },
        }
    }

    /// Waits (bounded) for the next event.
    fn next(events: &mut UnboundedReceiver<WalEvent>) -> WalEvent {
        for _ in 0..2_000 {
            if let Ok(event) = events.try_recv() {
                return event;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no WAL event within 2 s");
    }

    /// Waits until the reported durable index reaches `upto`, returning the other events seen.
    fn durable_upto(events: &mut UnboundedReceiver<WalEvent>, upto: PersistIndex) -> Vec<WalEvent> {
        let mut others = Vec::new();
        loop {
            match next(events) {
                WalEvent::Durable { upto: n, wal_bytes } if n >= upto => {
                    assert!(wal_bytes > 0, "durable records take WAL bytes");
                    return others;
                }
                WalEvent::Durable { .. } => {}
                other => others.push(other),
            }
        }
    }

    #[test]
    fn records_become_durable_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (durable, _) = Durable::open(dir.path(), options()).expect("open");
        let (tx, mut events) = unbounded_channel();
        let mut writer =
            WalWriter::start(durable, Arc::new(Metrics::new()), tx).expect("thread starts");
        for round in 1..=300u64 {
            writer.persist(vec![promise(round)]);
        }
        assert!(durable_upto(&mut events, 300).is_empty());
        writer.close();
        let (_, recovered) = Durable::open(dir.path(), options()).expect("reopen");
        assert_eq!(recovered.promised.round, 300);
    }

    #[test]
    fn a_full_disk_is_reported_once_and_the_backlog_lands_when_space_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fault = Arc::new(FaultInjector::default());
        let (durable, _) =
            Durable::open(dir.path(), options().fault_injector(fault.clone())).expect("open");
        let (tx, mut events) = unbounded_channel();
        let mut writer =
            WalWriter::start(durable, Arc::new(Metrics::new()), tx).expect("thread starts");
        // Enough failed preallocations to take a few back-off rounds.
        fault.fail_next_preallocations(4);
        for round in 1..=500u64 {
            writer.persist(vec![promise(round)]);
        }
        let others = durable_upto(&mut events, 500);
        assert!(
            matches!(&others[..], [WalEvent::DiskFull(reason), WalEvent::DiskOk] if reason.contains("No space")),
            "{others:?}"
        );
        writer.close();
        let (_, recovered) = Durable::open(dir.path(), options()).expect("reopen");
        assert_eq!(recovered.promised.round, 500);
    }
}
