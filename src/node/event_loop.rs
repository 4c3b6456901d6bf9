//! The node's event loop: the tokio shell around the [`Driver`]. It owns the sockets' channels,
//! the WAL thread's handle, the snapshot files, the ticker and the wall clock, and does nothing
//! but move inputs into the driver and carry its effects out.
//!
//! Each wake-up: set the driver's clock, feed it what woke the loop (a tick, WAL reports,
//! datagrams, client requests, a finished snapshot write), then take its effects: send the
//! datagrams, hand the storage operations to the WAL thread ([`crate::node::wal_writer`]), start
//! snapshot writes on threads of their own, publish the status. The WAL thread appends and
//! msyncs while the loop goes on, and reports each sync back; votes wait inside the core until
//! then, so sending before the sync is safe by construction and lets peers work while our msync
//! runs. A sync failure is fatal (fsyncgate): the WAL thread exits the process.

use crate::config::Member;
use crate::net::udp::PeerNet;
use crate::net::wire::Wire;
use crate::node::driver::{
    Driver, Effects, SnapshotSource, SnapshotWrite, SnapshotWritten, WalEvent,
};
use crate::node::handle::Request;
use crate::node::wal_writer::WalWriter;
use crate::paxos::types::NodeId;
use crate::server::NodeStatus;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Wall-clock length of one logical tick of the core.
pub const TICK_MS: u64 = 10;
/// How many requests or datagrams the loop takes from a channel per wake-up (bounds latency of
/// the other inputs and the size of one group commit).
pub const INPUT_BATCH_MAX: usize = 1024;
/// The kernel's count of datagrams it dropped on the peer socket is read every this many ticks.
pub const KERNEL_DROPS_POLL_TICKS: u64 = 100;

/// What ended one wait of the event loop (the inputs themselves are in the loop's buffers).
enum WokenBy {
    Tick,
    WalEvents,
    SnapshotWritten(SnapshotWritten),
    Datagrams,
    Requests,
}

/// Where this node's snapshot files live.
pub struct SnapshotFiles {
    pub dir: PathBuf,
    pub cluster_id: u64,
}

/// Everything [`NodeLoop::new`] needs, assembled by `node::serve`.
pub struct LoopParts {
    pub driver: Driver,
    pub wal: WalWriter,
    pub wal_events: mpsc::UnboundedReceiver<WalEvent>,
    pub peers: PeerNet,
    pub snapshots: SnapshotFiles,
    pub requests: mpsc::Receiver<Request>,
    pub inbound: mpsc::Receiver<(NodeId, Wire)>,
    pub status_tx: watch::Sender<NodeStatus>,
    pub healthy: Arc<AtomicBool>,
    /// The receive task's address book.
    pub address_book_tx: watch::Sender<Vec<Member>>,
}

pub struct NodeLoop {
    driver: Driver,
    wal: WalWriter,
    wal_events: mpsc::UnboundedReceiver<WalEvent>,
    peers: PeerNet,
    snapshots: SnapshotFiles,
    requests: mpsc::Receiver<Request>,
    inbound: mpsc::Receiver<(NodeId, Wire)>,
    status_tx: watch::Sender<NodeStatus>,
    healthy: Arc<AtomicBool>,
    address_book_tx: watch::Sender<Vec<Member>>,
    snapshot_written_tx: mpsc::UnboundedSender<SnapshotWritten>,
    snapshot_written: mpsc::UnboundedReceiver<SnapshotWritten>,
    /// The driver's clock reads milliseconds since this instant.
    started: Instant,
    ticks: u64,
}

impl NodeLoop {
    pub fn new(parts: LoopParts) -> NodeLoop {
        let (snapshot_written_tx, snapshot_written) = mpsc::unbounded_channel();
        NodeLoop {
            driver: parts.driver,
            wal: parts.wal,
            wal_events: parts.wal_events,
            peers: parts.peers,
            snapshots: parts.snapshots,
            requests: parts.requests,
            inbound: parts.inbound,
            status_tx: parts.status_tx,
            healthy: parts.healthy,
            address_book_tx: parts.address_book_tx,
            snapshot_written_tx,
            snapshot_written,
            started: Instant::now(),
            ticks: 0,
        }
    }

    /// Runs until `shutdown` flips, then syncs the WAL and answers what is still pending.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(Duration::from_millis(TICK_MS));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut requests = Vec::with_capacity(INPUT_BATCH_MAX);
        let mut datagrams = Vec::with_capacity(INPUT_BATCH_MAX);
        let mut wal_events = Vec::new();
        self.carry_out();
        loop {
            let woken_by = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = ticker.tick() => WokenBy::Tick,
                n = self.wal_events.recv_many(&mut wal_events, INPUT_BATCH_MAX) => {
                    if n == 0 { break; }
                    WokenBy::WalEvents
                }
                Some(written) = self.snapshot_written.recv() => WokenBy::SnapshotWritten(written),
                n = self.inbound.recv_many(&mut datagrams, INPUT_BATCH_MAX) => {
                    if n == 0 { break; }
                    WokenBy::Datagrams
                }
                n = self.requests.recv_many(&mut requests, INPUT_BATCH_MAX) => {
                    if n == 0 { break; }
                    WokenBy::Requests
                }
            };
            let woke = Instant::now();
            self.driver
                .advance_clock(woke.duration_since(self.started).as_millis() as u64);
            match woken_by {
                WokenBy::Tick => {
                    self.ticks += 1;
                    self.driver.tick();
                    if self.ticks % KERNEL_DROPS_POLL_TICKS == 0 {
                        self.peers.count_kernel_drops();
                    }
                }
                WokenBy::WalEvents => {
                    for event in wal_events.drain(..) {
                        self.driver.wal_event(event);
                    }
                }
                WokenBy::SnapshotWritten(written) => self.driver.snapshot_written(written),
                WokenBy::Datagrams => {
                    for (from, wire) in datagrams.drain(..) {
                        self.driver.receive(from, wire);
                    }
                }
                WokenBy::Requests => {
                    for request in requests.drain(..) {
                        // The command id is the simulator's to follow; the daemon needs none.
                        let _ = self.driver.request(request);
                    }
                }
            }
            self.carry_out();
            self.peers
                .metrics()
                .loop_iteration_seconds
                .observe(woke.elapsed().as_secs_f64());
        }
        // Finish what can be finished without new input, make everything durable, then tell
        // the clients still waiting that this node is going away.
        self.carry_out();
        self.wal.close();
        self.driver.shutdown();
        tracing::info!("event loop stopped; WAL synced");
    }

    /// Carries out the driver's effects in the order its contract gives.
    fn carry_out(&mut self) {
        let Effects {
            send,
            storage,
            snapshot_writes,
            status,
            address_book,
            forgotten,
        } = self.driver.take_effects();
        // The new book first: the datagrams below may go to members it just added.
        if let Some(book) = address_book {
            tracing::info!(members = ?book.iter().map(|m| (m.id.0, m.addr)).collect::<Vec<_>>(),
                "peer address book");
            self.peers.set_members(book.clone());
            self.address_book_tx.send_replace(book);
        }
        for (to, wire) in &send {
            self.peers.send(*to, wire);
        }
        for op in storage {
            self.wal.run(op);
        }
        for write in snapshot_writes {
            self.write_snapshot(write);
        }
        if let Some(published) = status {
            self.healthy.store(published.healthy, Ordering::Relaxed);
            self.status_tx.send_replace(published.status);
        }
        if !forgotten.is_empty() {
            crate::node::memory::drop_in_background(forgotten);
        }
    }

    /// Writes a snapshot file durably on a thread of its own (megabytes and two fsyncs must not
    /// stall the loop; our own state is serialized there too) and reports back to the loop.
    fn write_snapshot(&self, write: SnapshotWrite) {
        let SnapshotWrite { slot, source } = write;
        let own = source.is_own();
        let (dir, cluster_id) = (self.snapshots.dir.clone(), self.snapshots.cluster_id);
        let done = self.snapshot_written_tx.clone();
        let spawned = std::thread::Builder::new()
            .name("consens-snapshot".to_string())
            .spawn(move || {
                let payload = match source {
                    SnapshotSource::Own(state) => state.to_snapshot_bytes(),
                    SnapshotSource::Peer(payload) => payload,
                };
                let result = crate::snapshot::store(&dir, cluster_id, slot, &payload)
                    .map_err(|e| e.to_string());
                let _ = done.send(SnapshotWritten {
                    slot,
                    payload,
                    own,
                    result,
                });
            });
        if let Err(error) = spawned {
            // The driver waits for a report; give it the failure so that it tries again later.
            let _ = self.snapshot_written_tx.send(SnapshotWritten {
                slot,
                payload: Vec::new(),
                own,
                result: Err(format!("no thread to write the snapshot on: {error}")),
            });
        }
    }
}
