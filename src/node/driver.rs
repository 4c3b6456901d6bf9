//! The node's driver: everything a node decides, and no IO. It owns the Paxos core, the
//! key-value state, the pending client requests, snapshot shipping and the snapshot policy, and
//! the status it publishes. The daemon's event loop ([`crate::node::event_loop`]) and the seeded
//! simulator (`tests/sim/`) run this same code; they differ only in what carries out its effects.
//!
//! Inputs: [`Driver::advance_clock`] (milliseconds of the caller's monotonic clock),
//! [`Driver::tick`], [`Driver::receive`] (a datagram from a member), [`Driver::request`] (a client
//! request), [`Driver::wal_event`] (the WAL made records durable, or the disk is full) and
//! [`Driver::snapshot_written`] (a snapshot file is durable, or failed).
//!
//! Outputs: [`Driver::take_effects`] runs the core's `Ready` contract (`docs/architecture.md`)
//! and returns [`Effects`], which the caller carries out:
//! 1. send `effects.send`;
//! 2. run `effects.storage` on the WAL, in order (appends, compactions, snapshot marks);
//! 3. write every `effects.snapshot_writes` durably and report each with `snapshot_written`;
//! 4. publish `effects.status`;
//! 5. free `effects.forgotten` wherever that costs nothing.
//!
//! Decided commands are applied and clients answered inside the driver (a reply is a oneshot
//! send, not IO). The ordering rule holds whatever the caller does: the core withholds every vote
//! until `wal_event` reports its records durable, and a write is answered only once applied,
//! which needs a majority's durable votes. A peer's snapshot is installed only once it is durable
//! here; the WAL is compacted only below our own durable snapshot.

use crate::config::Member;
use crate::kv::{KvError, KvState};
use crate::metrics::Metrics;
use crate::net::wire::Wire;
use crate::node::handle::Request;
use crate::node::transfer::SnapshotTransfer;
use crate::paxos::idhash::IdHashBuilder;
use crate::paxos::types::{Command, CommandId, Entry, NodeId, Op, Outcome, Slot, Value};
use crate::paxos::{
    Config as CoreConfig, MemberHistory, PersistIndex, PlantedCoreBug, ProposeError, ReadId, Ready,
    Record, Recovered, Replica, Role,
};
use crate::server::{Consistency, NodeStatus, StoreError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A member heard from within this window counts towards "can reach a quorum".
pub const PEER_ALIVE_MS_MAX: u64 = 1_000;
/// The published status is refreshed every this many ticks (and at once on a role change).
pub const STATUS_REFRESH_TICKS: u64 = 5;

/// Static facts the driver needs about itself and its cluster.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub node: NodeId,
    /// The members this node knows of from its identity: the cluster's first members, and for
    /// a node that joined, those it was told of then. The address book is built from the
    /// membership in the log; these stand in only while this node does not find itself there.
    pub members: Vec<Member>,
    /// The address this node advertises (shown on `/_status`).
    pub advertise: String,
    /// The cluster's id and first members (shown on `/_status`; a joining node needs them).
    pub cluster_id: u64,
    pub first_members: Vec<Member>,
    /// How long a client request may wait for its answer.
    pub request_timeout_ms: u64,
    /// A snapshot is taken once this many slots were applied since the last one...
    pub snapshot_every_slots: u64,
    /// ... or once the WAL grew by this many bytes since the last one.
    pub snapshot_every_bytes: u64,
    /// This start's boot counter: the epoch of every command id this node hands out.
    pub boot: u64,
    /// Keep a log of every applied slot and installed snapshot ([`Driver::take_observed`]),
    /// with the state digest after each: the simulator's view of the state machine. Off in the
    /// daemon.
    pub observe: bool,
    /// A bug to plant on purpose, so that the simulator can show it catches it
    /// (`docs/paxos.md`, "Teeth"). Always `None` in the daemon.
    #[doc(hidden)]
    pub planted_bug: Option<PlantedBug>,
}

/// Bugs the simulator must catch, each a plausible mistake in this file.
#[doc(hidden)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Tell the core its records are durable as soon as they are handed out, before the sync:
    /// votes and promises leave before they would survive a crash.
    DurableBeforeSync,
    /// Answer the reads a `Ready` releases before applying the commands of that same `Ready`.
    ReadBeforeApply,
    /// Forget the pending writes (without an answer) when the leader changes.
    DropPendingOnLeaderChange,
    /// Compact the WAL as soon as a snapshot is started, before its file is durable.
    CompactBeforeSnapshotDurable,
    /// Tell the core an installed snapshot covers one slot more than it does.
    InstallSkipsSlot,
    /// Install a peer's snapshot even when it is older than the state already applied.
    InstallOlderSnapshot,
    /// A mistake in the core's membership change rule (planted in the core's config).
    Core(PlantedCoreBug),
}

/// One storage operation for the WAL, in the order the driver issued it.
#[derive(Debug, PartialEq, Eq)]
pub enum StorageOp {
    /// Append these core records, then sync and report `WalEvent::Durable`.
    Persist(Vec<Record>),
    /// Our own durable snapshot covers slots `<= slot`: checkpoint and drop older segments.
    Compact(Slot),
    /// A peer's snapshot (or the one loaded at start) covers slots `<= slot`: forget them.
    SnapshotInstalled(Slot),
}

/// A snapshot file to write durably; the caller reports it with [`Driver::snapshot_written`].
pub struct SnapshotWrite {
    pub slot: Slot,
    pub source: SnapshotSource,
}

/// What a snapshot file holds, and whose it is.
pub enum SnapshotSource {
    /// Our own state at `slot` (a cheap clone): serialize it off the serving thread.
    Own(KvState),
    /// A peer's snapshot, already serialized and checked.
    Peer(Vec<u8>),
}

impl SnapshotSource {
    /// Whether the snapshot is our own.
    pub fn is_own(&self) -> bool {
        matches!(self, SnapshotSource::Own(_))
    }
}

/// A snapshot write finished.
pub struct SnapshotWritten {
    pub slot: Slot,
    /// The payload that was written (for shipping to peers).
    pub payload: Vec<u8>,
    /// Whether it was our own snapshot (else a peer's, to install now).
    pub own: bool,
    pub result: Result<(), String>,
}

/// What the WAL reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalEvent {
    /// Core records up to `upto` are durable; the WAL has taken `wal_bytes` bytes since start.
    Durable { upto: PersistIndex, wal_bytes: u64 },
    /// Appends fail for lack of space; the node must answer "unavailable".
    DiskFull(String),
    /// Appends work again.
    DiskOk,
}

/// The status to publish, and whether the node can serve (reach a quorum).
pub struct Published {
    pub status: NodeStatus,
    pub healthy: bool,
}

/// Everything the caller must carry out, in the order listed in the module header.
#[derive(Default)]
#[must_use = "effects hold messages to send and records to persist"]
pub struct Effects {
    pub send: Vec<(NodeId, Wire)>,
    pub storage: Vec<StorageOp>,
    pub snapshot_writes: Vec<SnapshotWrite>,
    pub status: Option<Published>,
    /// The peers' addresses, whenever they change (and in the first effects): send to these,
    /// and take datagrams only from these.
    pub address_book: Option<Vec<Member>>,
    /// Decided values the core no longer keeps (a snapshot interval of commands takes
    /// milliseconds to free).
    pub forgotten: Vec<BTreeMap<Slot, Value>>,
}

impl Effects {
    /// Records for the WAL, after every storage operation issued before them.
    fn persist(&mut self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        match self.storage.last_mut() {
            Some(StorageOp::Persist(queued)) => queued.extend(records),
            _ => self.storage.push(StorageOp::Persist(records)),
        }
    }
}

/// What the state machine did, for the simulator's checks ([`DriverConfig::observe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// `value` was applied at `slot`; `outcome` is `None` for a no-op or a duplicate command.
    Applied {
        slot: Slot,
        value: Value,
        outcome: Option<Outcome>,
        digest: u64,
    },
    /// A peer's snapshot replaced the state; it now stands at `slot`.
    SnapshotInstalled { slot: Slot, digest: u64 },
}

/// A client write not yet handed to the core: the node knows no leader or no quorum yet.
struct WaitingWrite {
    id: CommandId,
    /// When the client stops waiting; expiring here means "no quorum" (nothing was proposed).
    deadline_ms: u64,
    op: Op,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// A client write proposed to the core, answered when its command id is applied.
struct PendingWrite {
    /// Expiring here means "outcome unknown": the command may still be decided.
    deadline_ms: u64,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// A linearizable read waiting for the core's read-index round.
struct PendingRead {
    deadline_ms: u64,
    key: bytes::Bytes,
    reply: oneshot::Sender<Result<Option<Entry>, StoreError>>,
}

/// A leadership transfer waiting to see its target lead.
struct PendingTransfer {
    to: NodeId,
    deadline_ms: u64,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// A peer's snapshot, checked and decoded, waiting for (or being given) its durable write.
struct PeerSnapshot {
    slot: Slot,
    state: KvState,
    payload: Vec<u8>,
}

/// One node's decisions. See the module header for the contract.
pub struct Driver {
    config: DriverConfig,
    /// The cluster's first membership (what a snapshot older than membership changes assumes).
    first_members: MemberHistory,
    replica: Replica,
    kv: KvState,
    metrics: Arc<Metrics>,
    transfer: SnapshotTransfer,
    /// The caller's clock, in milliseconds; only ever moves forward.
    now_ms: u64,
    ticks: u64,
    /// Why WAL appends fail right now (disk full), as the WAL last reported.
    disk_full: Option<String>,
    waiting_writes: VecDeque<WaitingWrite>,
    pending_writes: HashMap<CommandId, PendingWrite, IdHashBuilder>,
    pending_reads: HashMap<ReadId, PendingRead>,
    /// Leadership transfers asked for, answered once this node sees the target lead.
    pending_transfers: Vec<PendingTransfer>,
    /// Low bits of the next command id's `seq` (the boot counter fills the high bits).
    next_command: u64,
    /// The next read id: the boot counter in the high bits, as in command ids.
    next_read: ReadId,
    /// When each member was last heard from (absent: never).
    last_heard_ms: BTreeMap<NodeId, u64>,
    /// Slot covered by the newest durable snapshot here (own or installed).
    snapshot_slot: Slot,
    /// A snapshot file is being written (one at a time, own or a peer's).
    snapshot_writing: Option<SnapshotWriting>,
    /// A peer's snapshot that arrived while another write was in flight.
    peer_snapshot_queued: Option<PeerSnapshot>,
    /// The WAL's byte count as last reported, and when the newest snapshot was taken.
    wal_bytes: u64,
    wal_bytes_at_snapshot: u64,
    /// The role and leader the last published status showed.
    published_view: Option<(Role, Option<NodeId>)>,
    /// The members in force as the address book was last built from them.
    members_in_force: Vec<crate::paxos::Member>,
    /// The core's membership epoch they were built at (`None`: not yet).
    members_epoch_seen: Option<u64>,
    /// Every peer's id and address (`Effects::address_book`).
    address_book: Vec<Member>,
    /// This node has been a member of the newest membership it knew (see [`Driver::removed`]).
    was_member: bool,
    removal_logged: bool,
    effects: Effects,
    observed: Option<Vec<Observed>>,
}

/// The snapshot write in flight.
enum SnapshotWriting {
    Own,
    /// A peer's: installed once durable.
    Peer(PeerSnapshot),
}

impl Driver {
    /// Rebuilds a node from what its disk held: the newest snapshot (slot, payload) and the WAL
    /// folded into `recovered`. The first effects tell the WAL which slots the snapshot covers.
    pub fn recover(
        config: DriverConfig,
        mut core: CoreConfig,
        mut recovered: Recovered,
        snapshot: Option<(Slot, &[u8])>,
        metrics: Arc<Metrics>,
        seed: u64,
    ) -> Result<Driver, KvError> {
        if let Some(PlantedBug::Core(bug)) = config.planted_bug {
            core.planted_bug = Some(bug);
        }
        let first_members =
            MemberHistory::new(core.members.clone(), core.member_change_delay_slots);
        let (kv, snapshot_slot) = match snapshot {
            Some((slot, payload)) => (KvState::from_snapshot_bytes(payload, &first_members)?, slot),
            None => (KvState::new(first_members.clone()), 0),
        };
        if kv.applied() != snapshot_slot {
            return Err(KvError::Invalid(format!(
                "the snapshot file says slot {snapshot_slot}, its state says {}",
                kv.applied()
            )));
        }
        let mut effects = Effects::default();
        if snapshot_slot > 0 {
            // At start-up nothing waits: freeing inline is fine.
            drop(recovered.snapshot_installed(snapshot_slot));
            recovered.history = Some(kv.members().clone());
            effects
                .storage
                .push(StorageOp::SnapshotInstalled(snapshot_slot));
        }
        Ok(Driver {
            first_members,
            replica: Replica::new(core, recovered, seed),
            kv,
            metrics,
            transfer: SnapshotTransfer::new(snapshot),
            now_ms: 0,
            ticks: 0,
            disk_full: None,
            waiting_writes: VecDeque::new(),
            pending_writes: HashMap::default(),
            pending_reads: HashMap::new(),
            pending_transfers: Vec::new(),
            next_command: 0,
            // Read ids are unique across boots, as command ids are: a peer's late answer to a
            // read of the previous boot must not release a new read that reused its id (the
            // simulator found that stale read: docs/paxos.md).
            next_read: CommandId::new(config.node, config.boot, 1).seq,
            last_heard_ms: BTreeMap::new(),
            snapshot_slot,
            snapshot_writing: None,
            peer_snapshot_queued: None,
            wal_bytes: 0,
            wal_bytes_at_snapshot: 0,
            published_view: None,
            members_in_force: Vec::new(),
            members_epoch_seen: None,
            address_book: Vec::new(),
            was_member: false,
            removal_logged: false,
            effects,
            observed: config.observe.then(Vec::new),
            config,
        })
    }

    // ------------------------------------------------------------------ inputs

    /// The caller's clock now reads `now_ms` (a clock that went back is ignored).
    pub fn advance_clock(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// One tick of logical time: the core's timers, snapshot shipping, request deadlines.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.replica.tick();
        let send = &mut self.effects.send;
        let chunks = self
            .transfer
            .tick(&mut |peer, chunk| send.push((peer, Wire::Snapshot(chunk))));
        if chunks > 0 {
            self.metrics
                .transfers
                .get_or_create(&crate::metrics::TransferLabels {
                    kind: "snapshot_chunk_sent",
                })
                .inc_by(chunks as u64);
        }
        self.expire();
        self.propose_waiting();
        if self.ticks % STATUS_REFRESH_TICKS == 0 {
            self.publish_status();
        }
    }

    /// A datagram from member `from` (already authenticated and decoded).
    pub fn receive(&mut self, from: NodeId, wire: Wire) {
        self.last_heard_ms.insert(from, self.now_ms);
        match wire {
            Wire::Paxos(message) => self.replica.receive(from, message),
            Wire::Snapshot(chunk) => {
                self.metrics.transfer("snapshot_chunk_received");
                if let Some((meta, payload)) = self.transfer.receive(chunk) {
                    self.peer_snapshot_assembled(meta.slot, payload);
                }
            }
        }
    }

    /// A client request. Returns the command id a write will carry (the simulator follows its
    /// writes by it); `None` for reads and for requests refused at once.
    pub fn request(&mut self, request: Request) -> Option<CommandId> {
        let deadline_ms = self.now_ms + self.config.request_timeout_ms;
        if self.removed() {
            // It hears from nobody any more: say so at once, so clients go elsewhere, instead
            // of letting their requests time out.
            let error = StoreError::Unavailable(format!(
                "this node (member {}) was removed from the cluster; ask another member \
                 (`consens member list` on one of them shows who is left), and stop this node",
                self.config.node.0
            ));
            match request {
                Request::Write { reply, .. } => drop(reply.send(Err(error))),
                Request::Read {
                    key,
                    consistency: Consistency::Stale,
                    reply,
                } => drop(reply.send(Ok(self.kv.get(&key).cloned()))),
                Request::Read { reply, .. } => drop(reply.send(Err(error))),
                Request::TransferLeadership { reply, .. } => drop(reply.send(Err(error))),
            }
            return None;
        }
        if let Some(reason) = &self.disk_full {
            let error = StoreError::Unavailable(format!("disk full: {reason}"));
            match request {
                Request::Write { reply, .. } => drop(reply.send(Err(error))),
                Request::Read { reply, .. } => drop(reply.send(Err(error))),
                // Moving leadership away from a node whose disk is full is what helps.
                Request::TransferLeadership { to, reply } => self.transfer(to, reply),
            }
            return None;
        }
        match request {
            Request::TransferLeadership { to, reply } => {
                self.transfer(to, reply);
                None
            }
            Request::Write { op, reply } => {
                let id = CommandId::new(self.config.node, self.config.boot, self.next_command);
                self.next_command += 1;
                self.waiting_writes.push_back(WaitingWrite {
                    id,
                    deadline_ms,
                    op,
                    reply,
                });
                self.propose_waiting();
                Some(id)
            }
            Request::Read {
                key,
                consistency: Consistency::Stale,
                reply,
            } => {
                let _ = reply.send(Ok(self.kv.get(&key).cloned()));
                None
            }
            Request::Read {
                key,
                consistency: Consistency::Linearizable,
                reply,
            } => {
                let id = self.next_read;
                self.next_read += 1;
                self.pending_reads.insert(
                    id,
                    PendingRead {
                        deadline_ms,
                        key,
                        reply,
                    },
                );
                self.replica.read(id);
                None
            }
        }
    }

    /// Starts moving leadership to `to`; `reply` is answered by `settle_transfers`.
    fn transfer(&mut self, to: NodeId, reply: oneshot::Sender<Result<(), StoreError>>) {
        if self.replica.status().leader == Some(to) {
            let _ = reply.send(Ok(()));
            return;
        }
        match self.replica.transfer_leadership(to) {
            Ok(()) => self.pending_transfers.push(PendingTransfer {
                to,
                deadline_ms: self.now_ms + self.config.request_timeout_ms,
                reply,
            }),
            Err(e) => {
                let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
            }
        }
    }

    /// Answers the transfers whose target now leads, and those past their deadline.
    fn settle_transfers(&mut self) {
        if self.pending_transfers.is_empty() {
            return;
        }
        let leader = self.replica.status().leader;
        let now = self.now_ms;
        let timeout_ms = self.config.request_timeout_ms;
        for t in std::mem::take(&mut self.pending_transfers) {
            if leader == Some(t.to) {
                let _ = t.reply.send(Ok(()));
            } else if t.deadline_ms <= now || t.reply.is_closed() {
                let still = leader.map_or_else(
                    || "no leader is known".to_string(),
                    |l| format!("member {} still leads", l.0),
                );
                let _ = t.reply.send(Err(StoreError::Unavailable(format!(
                    "leadership did not move to member {} within {timeout_ms} ms ({still}); it may \
                     be down or far behind: check `consens member list` and try again",
                    t.to.0
                ))));
            } else {
                self.pending_transfers.push(t);
            }
        }
    }

    /// A report of the WAL: durability moves the core on; a full disk makes the node
    /// unavailable until appends work again.
    pub fn wal_event(&mut self, event: WalEvent) {
        match event {
            WalEvent::Durable { upto, wal_bytes } => {
                self.wal_bytes = self.wal_bytes.max(wal_bytes);
                if self.config.planted_bug != Some(PlantedBug::DurableBeforeSync) {
                    self.replica.durable(upto);
                }
            }
            WalEvent::DiskFull(reason) => {
                self.fail_unproposed(StoreError::Unavailable(format!("disk full: {reason}")));
                self.disk_full = Some(reason);
            }
            WalEvent::DiskOk => self.disk_full = None,
        }
    }

    /// A snapshot file is durable (or failed). Our own: only now may the core drop log entries
    /// below it and the WAL the segments it covers. A peer's: only now is it installed.
    pub fn snapshot_written(&mut self, written: SnapshotWritten) {
        let writing = self.snapshot_writing.take();
        let SnapshotWritten {
            slot,
            payload,
            own,
            result,
        } = written;
        match writing {
            Some(SnapshotWriting::Own) => {
                assert!(own, "an own snapshot write reported as a peer's")
            }
            Some(SnapshotWriting::Peer(_)) => {
                assert!(!own, "a peer snapshot write reported as our own")
            }
            None => panic!("a snapshot write reported that was never started"),
        }
        if let Err(e) = result {
            tracing::warn!(slot, error = %e, "snapshot not written; will retry later");
        } else if let Some(SnapshotWriting::Peer(peer)) = writing {
            self.install(peer);
        } else if slot > self.snapshot_slot {
            self.snapshot_slot = slot;
            self.transfer.stored(slot, payload);
            self.metrics.transfer("snapshot_taken");
            let forgotten = self.replica.snapshot_taken(slot);
            if !forgotten.is_empty() {
                self.effects.forgotten.push(forgotten);
            }
            if self.config.planted_bug != Some(PlantedBug::CompactBeforeSnapshotDurable) {
                self.effects.storage.push(StorageOp::Compact(slot));
            }
        }
        // Otherwise a peer's newer snapshot was installed meanwhile.
        if let Some(peer) = self.peer_snapshot_queued.take() {
            self.write_peer_snapshot(peer);
        }
    }

    /// The node stops: answer everything still waiting (the caller has synced the WAL).
    pub fn shutdown(&mut self) {
        for w in self.waiting_writes.drain(..) {
            let _ = w.reply.send(Err(StoreError::ShuttingDown));
        }
        for (_, w) in self.pending_writes.drain() {
            let _ = w.reply.send(Err(StoreError::OutcomeUnknown));
        }
        for (_, r) in self.pending_reads.drain() {
            let _ = r.reply.send(Err(StoreError::ShuttingDown));
        }
        for t in self.pending_transfers.drain(..) {
            let _ = t.reply.send(Err(StoreError::ShuttingDown));
        }
    }

    // ----------------------------------------------------------------- outputs

    /// Drains the core until it is quiet, applying what was decided and answering clients, and
    /// returns what the caller must carry out.
    pub fn take_effects(&mut self) -> Effects {
        self.drive();
        std::mem::take(&mut self.effects)
    }

    /// The applied slots and installed snapshots since the last call ([`DriverConfig::observe`]).
    pub fn take_observed(&mut self) -> Vec<Observed> {
        self.observed
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The core, for status pages and the simulator's checks.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The key-value state as applied here.
    pub fn kv(&self) -> &KvState {
        &self.kv
    }

    /// The applied slot and the state's digest there (`KvState::digest`).
    pub fn applied_digest(&mut self) -> (Slot, u64) {
        (self.kv.applied(), self.kv.digest())
    }

    /// Client requests this node still owes an answer.
    pub fn requests_pending(&self) -> usize {
        self.waiting_writes.len()
            + self.pending_writes.len()
            + self.pending_reads.len()
            + self.pending_transfers.len()
    }

    // ------------------------------------------------------------------- inside

    /// Runs each `Ready` of the core in the contract's order until the core is quiet.
    fn drive(&mut self) {
        loop {
            let ready = self.replica.take_ready();
            if ready.is_empty() {
                break;
            }
            let Ready {
                persist,
                persist_upto,
                messages,
                apply,
                reads_ready,
                send_snapshot,
            } = ready;
            for (to, message) in messages {
                self.count_message(&message);
                self.effects.send.push((to, Wire::Paxos(message)));
            }
            self.effects.persist(persist);
            if self.config.planted_bug == Some(PlantedBug::DurableBeforeSync) {
                self.replica.durable(persist_upto);
            }
            if self.config.planted_bug == Some(PlantedBug::ReadBeforeApply) {
                self.answer_reads(reads_ready);
                self.apply(apply);
            } else {
                self.apply(apply);
                self.answer_reads(reads_ready);
            }
            for peer in send_snapshot {
                self.transfer.send_latest(peer);
            }
        }
        self.refresh_address_book();
        self.publish_status_on_role_change();
        self.settle_transfers();
    }

    /// Rebuilds the address book when the members in force change: every member of a
    /// membership in force, and, while this node does not find itself among them (a new member
    /// still catching up), the members its identity knows of. A member removed for good drops
    /// out, and with it its datagrams.
    fn refresh_address_book(&mut self) {
        // Runs after every `Ready`: only look again when the core says something changed.
        let epoch = self.replica.members_epoch();
        if self.members_epoch_seen == Some(epoch) {
            return;
        }
        self.members_epoch_seen = Some(epoch);
        let in_force = self.replica.members_in_force();
        let mut book: Vec<Member> = Vec::new();
        for m in &in_force {
            match m.addr.parse() {
                Ok(addr) => book.push(Member { id: m.id, addr }),
                // The core never resolves addresses; the servers put resolved ones in the log.
                Err(e) => tracing::warn!(id = %m.id, addr = %m.addr, error = %e,
                    "a member's address in the log is not ip:port; it cannot be reached"),
            }
        }
        if !in_force.iter().any(|m| m.id == self.config.node) {
            for hint in &self.config.members {
                if !book.iter().any(|m| m.id == hint.id) {
                    book.push(*hint);
                }
            }
        }
        book.sort_by_key(|m| m.id);
        self.members_in_force = in_force;
        match self.replica.member_role() {
            Some(_) => self.was_member = true,
            None if self.was_member && !self.removal_logged => {
                self.removal_logged = true;
                tracing::warn!(
                    id = self.config.node.0,
                    "this node was removed from the cluster: it no longer votes and refuses \
                     requests; stop it once the other members have caught up past its removal"
                );
            }
            None => {}
        }
        if book != self.address_book {
            self.address_book = book.clone();
            self.effects.address_book = Some(book);
        }
    }

    /// Whether this node was a member and the newest membership it knows no longer has it.
    /// (A node that joined is not a member of the history it starts from; it becomes one once
    /// it has caught up past its own addition.)
    pub fn removed(&self) -> bool {
        self.was_member && self.replica.member_role().is_none()
    }

    /// Every peer's id and address, as the address book has them.
    pub fn address_book(&self) -> &[Member] {
        &self.address_book
    }

    fn answer_reads(&mut self, reads_ready: Vec<ReadId>) {
        for id in reads_ready {
            if let Some(read) = self.pending_reads.remove(&id) {
                let _ = read.reply.send(Ok(self.kv.get(&read.key).cloned()));
            }
        }
    }

    /// Hands waiting writes to the core once a leader is known and a quorum was heard from.
    /// Until then they wait, so a write that times out there was never proposed ("no quorum").
    fn propose_waiting(&mut self) {
        if self.waiting_writes.is_empty() || !self.quorum_reachable() {
            return;
        }
        while let Some(w) = self.waiting_writes.pop_front() {
            if w.reply.is_closed() {
                continue;
            }
            match self.replica.propose(Command { id: w.id, op: w.op }) {
                Ok(()) => {
                    self.metrics.proposals.inc();
                    self.pending_writes.insert(
                        w.id,
                        PendingWrite {
                            deadline_ms: w.deadline_ms,
                            reply: w.reply,
                        },
                    );
                }
                Err(e @ (ProposeError::TooLarge { .. } | ProposeError::Busy { .. })) => {
                    let _ = w.reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
    }

    /// Whether this node can get a command decided right now, as far as it can tell: a leader
    /// needs recent answers from a majority (its followers answer every heartbeat); a follower
    /// needs a leader it heard from recently (followers do not talk to each other, so the
    /// leader's own check covers the rest, and it steps down when it loses its majority).
    fn quorum_reachable(&self) -> bool {
        let heard_recently = |node: NodeId| {
            node == self.config.node
                || self
                    .last_heard_ms
                    .get(&node)
                    .is_some_and(|t| self.now_ms.saturating_sub(*t) <= PEER_ALIVE_MS_MAX)
        };
        match self.replica.status().leader {
            None => false,
            Some(leader) if leader == self.config.node => {
                // A majority of every membership that governs a slot still to decide.
                let undecided = self.replica.status().decided + 1;
                self.replica
                    .member_history()
                    .eras_from(undecided)
                    .iter()
                    .all(|era| {
                        let voters = era.membership.voters();
                        voters.iter().filter(|id| heard_recently(**id)).count() > voters.len() / 2
                    })
            }
            Some(leader) => heard_recently(leader),
        }
    }

    /// Answers the requests whose deadline passed, and forgets those whose client left.
    fn expire(&mut self) {
        let now = self.now_ms;
        while self
            .waiting_writes
            .front()
            .is_some_and(|w| w.deadline_ms <= now)
        {
            if let Some(w) = self.waiting_writes.pop_front() {
                let _ = w.reply.send(Err(StoreError::NoQuorum));
            }
        }
        let expired: Vec<CommandId> = self
            .pending_writes
            .iter()
            .filter(|(_, w)| w.deadline_ms <= now || w.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(w) = self.pending_writes.remove(&id) {
                let _ = w.reply.send(Err(StoreError::OutcomeUnknown));
            }
        }
        let expired: Vec<ReadId> = self
            .pending_reads
            .iter()
            .filter(|(_, r)| r.deadline_ms <= now || r.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(r) = self.pending_reads.remove(&id) {
                let _ = r.reply.send(Err(StoreError::NoQuorum));
            }
        }
    }

    /// The disk is full: what was not proposed yet is refused (proposed writes stay pending:
    /// they may still be decided by the others).
    fn fail_unproposed(&mut self, error: StoreError) {
        for w in self.waiting_writes.drain(..) {
            let _ = w.reply.send(Err(error.clone()));
        }
        for (_, r) in self.pending_reads.drain() {
            let _ = r.reply.send(Err(error.clone()));
        }
    }

    fn apply(&mut self, decided: Vec<(Slot, Value)>) {
        if decided.is_empty() {
            return;
        }
        for (slot, value) in decided {
            assert!(
                slot > self.kv.applied(),
                "the core handed out slot {slot} again (applied {})",
                self.kv.applied()
            );
            let applied = self.kv.apply(slot, &value);
            if let Some((id, outcome)) = &applied {
                if let Some(write) = self.pending_writes.remove(id) {
                    let _ = write.reply.send(Ok(outcome.clone()));
                }
            }
            if let Some(observed) = self.observed.as_mut() {
                observed.push(Observed::Applied {
                    slot,
                    value,
                    outcome: applied.map(|(_, outcome)| outcome),
                    digest: self.kv.digest(),
                });
            }
        }
        self.maybe_snapshot();
    }

    /// Takes a snapshot when enough slots or WAL bytes went by since the last one. The state is
    /// copied here (it must be the state at `applied`); the caller serializes and writes it.
    fn maybe_snapshot(&mut self) {
        if self.snapshot_writing.is_some() {
            return;
        }
        let applied = self.kv.applied();
        let slots_due = applied >= self.snapshot_slot + self.config.snapshot_every_slots;
        let bytes_due = applied > self.snapshot_slot
            && self.wal_bytes.saturating_sub(self.wal_bytes_at_snapshot)
                >= self.config.snapshot_every_bytes;
        if !slots_due && !bytes_due {
            return;
        }
        self.wal_bytes_at_snapshot = self.wal_bytes;
        self.snapshot_writing = Some(SnapshotWriting::Own);
        // A clone (reference counts and a few words of applied ids) is far cheaper than
        // serializing.
        self.effects.snapshot_writes.push(SnapshotWrite {
            slot: applied,
            source: SnapshotSource::Own(self.kv.clone()),
        });
        if self.config.planted_bug == Some(PlantedBug::CompactBeforeSnapshotDurable) {
            self.effects.storage.push(StorageOp::Compact(applied));
        }
    }

    /// A peer's snapshot arrived whole: check it, then have it written (durable before it is
    /// installed, since the core then treats its slots as applied).
    fn peer_snapshot_assembled(&mut self, slot: Slot, payload: Vec<u8>) {
        let older_ok = self.config.planted_bug == Some(PlantedBug::InstallOlderSnapshot);
        if slot <= self.kv.applied() && !older_ok {
            return;
        }
        let state = match KvState::from_snapshot_bytes(&payload, &self.first_members) {
            Ok(state) if state.applied() == slot => state,
            Ok(state) => {
                tracing::warn!(
                    slot,
                    state_slot = state.applied(),
                    "peer snapshot rejected: its state is at another slot"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "peer snapshot rejected");
                return;
            }
        };
        let peer = PeerSnapshot {
            slot,
            state,
            payload,
        };
        if self.snapshot_writing.is_some() {
            if self
                .peer_snapshot_queued
                .as_ref()
                .is_none_or(|queued| queued.slot < slot)
            {
                self.peer_snapshot_queued = Some(peer);
            }
            return;
        }
        self.write_peer_snapshot(peer);
    }

    fn write_peer_snapshot(&mut self, peer: PeerSnapshot) {
        let older_ok = self.config.planted_bug == Some(PlantedBug::InstallOlderSnapshot);
        if peer.slot <= self.kv.applied() && !older_ok {
            return;
        }
        self.effects.snapshot_writes.push(SnapshotWrite {
            slot: peer.slot,
            source: SnapshotSource::Peer(peer.payload.clone()),
        });
        self.snapshot_writing = Some(SnapshotWriting::Peer(peer));
    }

    /// A peer's snapshot is durable here: it replaces the state, unless we got there first.
    fn install(&mut self, peer: PeerSnapshot) {
        let older_ok = self.config.planted_bug == Some(PlantedBug::InstallOlderSnapshot);
        if peer.slot <= self.kv.applied() && !older_ok {
            return;
        }
        tracing::info!(slot = peer.slot, "installed a snapshot from a peer");
        self.metrics.transfer("snapshot_installed");
        let PeerSnapshot {
            slot,
            state,
            payload,
        } = peer;
        self.kv = state;
        self.snapshot_slot = self.snapshot_slot.max(slot);
        self.transfer.stored(slot, payload);
        let told = if self.config.planted_bug == Some(PlantedBug::InstallSkipsSlot) {
            slot + 1
        } else {
            slot
        };
        self.effects
            .storage
            .push(StorageOp::SnapshotInstalled(told));
        self.replica.snapshot_installed(told, self.kv.members());
        // Writes of ours that the snapshot already holds were decided and applied, but their
        // outcomes are not in it: say so now rather than at their deadline.
        let covered: Vec<CommandId> = self
            .pending_writes
            .keys()
            .filter(|id| self.kv.was_applied(id))
            .copied()
            .collect();
        for id in covered {
            if let Some(write) = self.pending_writes.remove(&id) {
                let _ = write.reply.send(Err(StoreError::OutcomeUnknown));
            }
        }
        if let Some(observed) = self.observed.as_mut() {
            observed.push(Observed::SnapshotInstalled {
                slot,
                digest: self.kv.digest(),
            });
        }
    }

    /// Counts what the metrics want to know of an outgoing message.
    fn count_message(&self, message: &crate::paxos::Message) {
        use crate::paxos::Message;
        match message {
            Message::Accept { entries, .. } if !entries.is_empty() => {
                self.metrics.batch_commands.observe(entries.len() as f64)
            }
            Message::CatchUp { .. } => self.metrics.transfer("catch_up_requested"),
            Message::Decided { .. } => self.metrics.transfer("catch_up_served"),
            _ => {}
        }
    }

    /// Publishes the status at once when the node's role or leader changed, so that status
    /// pages and health checks never lag behind an election.
    fn publish_status_on_role_change(&mut self) {
        let core = self.replica.status();
        let view = (core.role, core.leader);
        if self.published_view != Some(view) {
            let leader_changed = self
                .published_view
                .is_some_and(|(_, leader)| leader != core.leader);
            if leader_changed
                && self.config.planted_bug == Some(PlantedBug::DropPendingOnLeaderChange)
            {
                self.pending_writes.clear();
            }
            self.published_view = Some(view);
            self.publish_status();
        }
    }

    fn publish_status(&mut self) {
        let healthy = self.quorum_reachable();
        let core = self.replica.status();
        self.metrics.slots_in_flight.set(core.in_flight as i64);
        self.metrics.ballot_round.set(core.promised.round as i64);
        self.metrics
            .elections
            .inc_by(core.campaigns.saturating_sub(self.metrics.elections.get()));
        let removed = self.removed();
        let status = crate::node::status::build(
            &self.config,
            removed,
            &self.address_book,
            &self.members_in_force,
            &core,
            &mut self.kv,
            &self.replica.follower_progress(),
            &self.last_heard_ms,
            self.now_ms,
            &self.metrics,
        );
        self.effects.status = Some(Published { status, healthy });
    }
}
