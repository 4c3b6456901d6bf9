//! A simulated node: the daemon's own driver (`consens::internals::node::driver::Driver`, the code that
//! runs in `consens serve`), with a simulated disk under it. The node only carries out the
//! driver's effects, as the daemon's event loop does: datagrams go to the simulated network,
//! storage operations to the simulated WAL, snapshot writes to simulated snapshot files.
//!
//! The disk: WAL records are appended when handed out but become durable only when a sync fires,
//! a random number of ticks later; then the driver hears `WalEvent::Durable`. A compaction
//! replaces the log by its checkpoint (`Recovered::checkpoint`) and syncs, as `Durable::compact`
//! does. A snapshot write completes a random number of ticks after it was asked for, or fails.
//! A crash truncates the WAL to its synced prefix and loses a snapshot write in progress; a disk
//! loss empties both.

use super::network::Network;
use super::rng::SimRng;
use consens::internals::config::Member;
use consens::internals::metrics::Metrics;
use consens::internals::net::wire::Wire;
use consens::internals::node::driver::{
    Driver, DriverConfig, Effects, Observed, PlantedBug, SnapshotSource, SnapshotWrite,
    SnapshotWritten, StorageOp, WalEvent,
};
use consens::internals::node::handle::Request;
use consens::internals::paxos::types::{CommandId, NodeId, Slot};
use consens::internals::paxos::{Config, PersistIndex, Record, Recovered, Role};
use std::sync::Arc;

/// Length of one simulated tick on the driver's clock (the daemon's tick).
pub const TICK_MS: u64 = 10;
/// A snapshot write takes up to this many ticks.
pub const SNAPSHOT_WRITE_TICKS_MAX: u64 = 20;
/// Chance that a snapshot write fails (the driver must retry later), in thousandths.
pub const SNAPSHOT_WRITE_FAIL_PER_MILLE: u64 = 50;
/// Snapshot files kept, as the daemon keeps them (`consens::internals::snapshot::SNAPSHOTS_KEPT`).
pub const SNAPSHOTS_KEPT: usize = consens::internals::snapshot::SNAPSHOTS_KEPT;

/// The WAL and the snapshot files of one node.
#[derive(Default)]
pub struct Disk {
    /// WAL records in log order (a compaction leaves only its checkpoint).
    pub records: Vec<Record>,
    /// `records[..synced]` survive a crash.
    synced: usize,
    /// Core records handed out by this incarnation (its persist index).
    handed_out: PersistIndex,
    /// When the next sync completes.
    sync_at: Option<u64>,
    /// The highest slot a snapshot covers, as the WAL was told (for checkpoints).
    snapshot_mark: Slot,
    /// Bytes the WAL took in this incarnation (the driver's snapshot trigger).
    wal_bytes: u64,
    /// Durable snapshot files: (slot, payload), oldest first.
    pub snapshots: Vec<(Slot, Vec<u8>)>,
    /// The snapshot write in progress and when it completes.
    writing: Option<(u64, SnapshotWrite)>,
}

/// How the simulation sets up every node's driver.
#[derive(Clone)]
pub struct NodeSetup {
    pub request_timeout_ms: u64,
    pub snapshot_every_slots: u64,
    pub planted_bug: Option<PlantedBug>,
}

/// One member of the simulated cluster.
pub struct SimNode {
    pub id: NodeId,
    members: u16,
    /// `None` while crashed.
    pub driver: Option<Driver>,
    pub disk: Disk,
    /// Ticks this incarnation's clock has counted (clocks may run slow).
    clock_ticks: u64,
    /// Starts so far: the boot counter every command id's epoch comes from.
    boots: u64,
    /// Lost its disk and has not yet made a `Joined` record durable again.
    pub amnesiac: bool,
    /// Own snapshots written, over all incarnations.
    pub snapshots_taken: u64,
}

impl SimNode {
    /// A node that has never run (empty disk), down until `start`.
    pub fn new(id: NodeId, members: u16) -> SimNode {
        SimNode {
            id,
            members,
            driver: None,
            disk: Disk::default(),
            clock_ticks: 0,
            boots: 0,
            amnesiac: false,
            snapshots_taken: 0,
        }
    }

    /// Whether the node has ever been started.
    pub fn has_started(&self) -> bool {
        self.boots > 0
    }

    pub fn is_up(&self) -> bool {
        self.driver.is_some()
    }

    /// True while the node runs without the durable state it once had (it may not vote yet).
    pub fn is_stateless(&self) -> bool {
        self.amnesiac
    }

    pub fn role(&self) -> Option<Role> {
        self.driver.as_ref().map(|d| d.replica().status().role)
    }

    /// Starts (or restarts) the node from its disk, as `consens serve` does: the newest
    /// snapshot file and the synced WAL records.
    pub fn start(&mut self, core: Config, setup: &NodeSetup, seed: u64) {
        assert_eq!(
            core.members.voters().len(),
            usize::from(self.members),
            "config for another cluster"
        );
        self.disk.records.truncate(self.disk.synced);
        let mut recovered = Recovered::empty();
        for record in &self.disk.records {
            recovered.apply(record);
        }
        self.disk.handed_out = 0;
        self.disk.sync_at = None;
        self.disk.wal_bytes = 0;
        self.disk.writing = None;
        self.boots += 1;
        self.clock_ticks = 0;
        let config = DriverConfig {
            node: self.id,
            members: (0..self.members)
                .map(|i| Member {
                    id: NodeId(i),
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 20_000 + i)),
                })
                .collect(),
            advertise: format!("n{}", self.id.0),
            cluster_id: 0,
            first_members: Vec::new(),
            request_timeout_ms: setup.request_timeout_ms,
            snapshot_every_slots: setup.snapshot_every_slots,
            snapshot_every_bytes: u64::MAX,
            boot: self.boots,
            observe: true,
            planted_bug: setup.planted_bug,
        };
        let snapshot = self
            .disk
            .snapshots
            .last()
            .map(|(slot, payload)| (*slot, payload.as_slice()));
        let driver = Driver::recover(
            config,
            core,
            recovered,
            snapshot,
            Arc::new(Metrics::new()),
            seed,
        )
        .expect("the simulator's snapshot files decode");
        self.driver = Some(driver);
    }

    /// Crashes the node: unsynced records and a snapshot write in progress are lost; with
    /// `lose_disk`, everything.
    pub fn crash(&mut self, lose_disk: bool) {
        self.driver = None;
        self.disk.records.truncate(self.disk.synced);
        self.disk.sync_at = None;
        self.disk.writing = None;
        if lose_disk {
            self.disk = Disk::default();
            self.amnesiac = true;
        }
    }

    /// One tick of this node's clock.
    pub fn tick(&mut self) {
        if let Some(driver) = self.driver.as_mut() {
            self.clock_ticks += 1;
            driver.advance_clock(self.clock_ticks * TICK_MS);
            driver.tick();
        }
    }

    /// A datagram arrives.
    pub fn receive(&mut self, from: NodeId, wire: Wire) {
        if let Some(driver) = self.driver.as_mut() {
            driver.receive(from, wire);
        }
    }

    /// A client request arrives; returns the command id a write carries.
    pub fn request(&mut self, request: Request) -> Option<CommandId> {
        self.driver.as_mut().and_then(|d| d.request(request))
    }

    /// Completes the pending WAL sync and snapshot write if they are due.
    pub fn complete_io(&mut self, rng: &mut SimRng, now: u64) {
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        if self.disk.sync_at.is_some_and(|at| at <= now) {
            self.disk.sync_at = None;
            self.disk.synced = self.disk.records.len();
            driver.wal_event(WalEvent::Durable {
                upto: self.disk.handed_out,
                wal_bytes: self.disk.wal_bytes,
            });
            if self.amnesiac && self.disk.records.contains(&Record::Joined) {
                self.amnesiac = false;
            }
        }
        if self.disk.writing.as_ref().is_some_and(|(at, _)| *at <= now) {
            let (_, SnapshotWrite { slot, source }) =
                self.disk.writing.take().expect("checked just above");
            let own = source.is_own();
            let payload = match source {
                SnapshotSource::Own(state) => state.to_snapshot_bytes(),
                SnapshotSource::Peer(payload) => payload,
            };
            let result = if rng.chance(SNAPSHOT_WRITE_FAIL_PER_MILLE) {
                Err("simulated write failure".to_string())
            } else {
                self.disk.snapshots.push((slot, payload.clone()));
                self.disk.snapshots.sort_by_key(|(slot, _)| *slot);
                let excess = self.disk.snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
                self.disk.snapshots.drain(..excess);
                self.snapshots_taken += u64::from(own);
                Ok(())
            };
            driver.snapshot_written(SnapshotWritten {
                slot,
                payload,
                own,
                result,
            });
        }
    }

    /// Takes the driver's effects and carries them out, as the daemon's event loop does;
    /// returns what its state machine did. `sync_ticks_max` bounds how long a write waits for
    /// its sync.
    pub fn carry_out(
        &mut self,
        rng: &mut SimRng,
        now: u64,
        network: &mut Network,
        sync_ticks_max: u64,
    ) -> Vec<Observed> {
        let Some(driver) = self.driver.as_mut() else {
            return Vec::new();
        };
        let Effects {
            send,
            storage,
            snapshot_writes,
            status: _,
            // The simulated network routes by id.
            address_book: _,
            forgotten: _,
        } = driver.take_effects();
        for (to, wire) in send {
            network.send(rng, now, self.id, to, wire);
        }
        for op in storage {
            match op {
                StorageOp::Persist(records) => {
                    self.disk.handed_out += records.len() as u64;
                    for record in &records {
                        self.disk.wal_bytes +=
                            postcard::to_stdvec(record).map_or(0, |bytes| bytes.len() as u64);
                    }
                    self.disk.records.extend(records);
                    if self.disk.sync_at.is_none() {
                        self.disk.sync_at = Some(now + rng.below(sync_ticks_max + 1));
                    }
                }
                StorageOp::SnapshotInstalled(slot) => {
                    self.disk.snapshot_mark = self.disk.snapshot_mark.max(slot);
                }
                StorageOp::Compact(slot) => {
                    self.disk.snapshot_mark = self.disk.snapshot_mark.max(slot);
                    let mut mirror = Recovered::empty();
                    for record in &self.disk.records {
                        mirror.apply(record);
                    }
                    drop(mirror.snapshot_installed(self.disk.snapshot_mark));
                    self.disk.records = mirror.checkpoint();
                    self.disk.synced = self.disk.records.len();
                    if self.amnesiac && self.disk.records.contains(&Record::Joined) {
                        self.amnesiac = false;
                    }
                    driver.wal_event(WalEvent::Durable {
                        upto: self.disk.handed_out,
                        wal_bytes: self.disk.wal_bytes,
                    });
                }
            }
        }
        for write in snapshot_writes {
            assert!(
                self.disk.writing.is_none(),
                "the driver started a second snapshot write while one was in flight"
            );
            let at = now + rng.between(1, SNAPSHOT_WRITE_TICKS_MAX);
            self.disk.writing = Some((at, write));
        }
        driver.take_observed()
    }
}
