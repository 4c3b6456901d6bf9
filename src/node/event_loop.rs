//! The node's event loop: the only owner of the Paxos core, the key-value state, the WAL adapter
//! and the peer socket's send side.
//!
//! Every input (a datagram, a client request, a tick, a durability report of the WAL thread) is
//! fed to the core; then [`NodeLoop::drive`] drains the core's `Ready` until it is quiet: send
//! what the core released → hand the records to persist to the WAL thread
//! ([`crate::node::wal_writer`]) → apply decided commands → answer clients. The WAL thread
//! appends and msyncs while the loop goes on, and reports each sync back; only then does the
//! loop tell the core `durable`. Promise and accepted replies are withheld inside the core until
//! `durable` covers them, so sending before the sync is safe by construction; it lets peers work
//! while our msync runs. A sync failure is fatal (fsyncgate): the WAL thread exits the process.

use crate::kv::KvState;
use crate::net::udp::PeerNet;
use crate::net::wire::Wire;
use crate::node::handle::Request;
use crate::node::transfer::{SnapshotTransfer, SnapshotWritten};
use crate::node::wal_writer::{WalEvent, WalWriter};
use crate::paxos::idhash::IdHashBuilder;
use crate::paxos::types::{Command, CommandId, Entry, NodeId, Outcome, Slot, Value};
use crate::paxos::{ProposeError, ReadId, Ready, Replica};
use crate::server::{Consistency, NodeStatus, StoreError};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Wall-clock length of one logical tick of the core.
pub const TICK_MS: u64 = 10;
/// How many requests or datagrams the loop takes from a channel per wake-up (bounds latency of
/// the other inputs and the size of one group commit).
pub const INPUT_BATCH_MAX: usize = 1024;
/// A member heard from within this window counts towards "can reach a quorum".
pub const PEER_ALIVE_MS_MAX: u64 = 1_000;
/// The status that handles read is refreshed every this many ticks.
pub const STATUS_REFRESH_TICKS: u64 = 5;
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

/// A client write not yet handed to the core: the node knows no leader or no quorum yet.
struct WaitingWrite {
    /// When the client stops waiting; expiring here means "no quorum" (nothing was proposed).
    deadline: Instant,
    op: crate::paxos::types::Op,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// A client write proposed to the core, answered when its command id is applied.
struct PendingWrite {
    /// Expiring here means "outcome unknown": the command may still be decided.
    deadline: Instant,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// A linearizable read waiting for the core's read-index round.
struct PendingRead {
    deadline: Instant,
    key: Bytes,
    reply: oneshot::Sender<Result<Option<Entry>, StoreError>>,
}

/// Static facts the loop needs about itself and its cluster.
pub struct LoopConfig {
    pub node: NodeId,
    pub members: Vec<std::net::SocketAddr>,
    pub advertise: String,
    pub request_timeout: Duration,
    pub snapshot_every_slots: u64,
    pub snapshot_every_bytes: u64,
    pub boot: u64,
}

pub struct NodeLoop {
    config: LoopConfig,
    replica: Replica,
    kv: KvState,
    wal: WalWriter,
    wal_events: mpsc::UnboundedReceiver<WalEvent>,
    /// Why WAL appends fail right now (disk full), as the WAL thread last reported.
    disk_full: Option<String>,
    peers: PeerNet,
    transfer: SnapshotTransfer,
    requests: mpsc::Receiver<Request>,
    inbound: mpsc::Receiver<(NodeId, Wire)>,
    status_tx: watch::Sender<NodeStatus>,
    healthy: Arc<AtomicBool>,
    waiting_writes: VecDeque<WaitingWrite>,
    pending_writes: HashMap<CommandId, PendingWrite, IdHashBuilder>,
    pending_reads: HashMap<ReadId, PendingRead>,
    /// Low bits of the next command id's `seq` (the boot counter fills the high bits).
    next_command: u64,
    next_read: ReadId,
    /// When each member was last heard from (None: never); index = NodeId.
    last_heard: Vec<Option<Instant>>,
    ticks: u64,
    /// Slot covered by the newest durable snapshot of our own.
    snapshot_slot: Slot,
    /// A snapshot of ours is being written in the background (one at a time).
    snapshot_writing: bool,
    snapshot_written_tx: mpsc::UnboundedSender<SnapshotWritten>,
    snapshot_written: mpsc::UnboundedReceiver<SnapshotWritten>,
    /// The WAL's appended byte count when the newest snapshot was taken (a snapshot trigger).
    wal_bytes_at_snapshot: u64,
    /// The role and leader the last published status showed.
    published_view: Option<(crate::paxos::Role, Option<NodeId>)>,
}

/// Everything [`NodeLoop::new`] needs, assembled by `node::serve`.
pub struct LoopParts {
    pub config: LoopConfig,
    pub replica: Replica,
    pub kv: KvState,
    pub wal: WalWriter,
    pub wal_events: mpsc::UnboundedReceiver<WalEvent>,
    pub peers: PeerNet,
    pub transfer: SnapshotTransfer,
    pub requests: mpsc::Receiver<Request>,
    pub inbound: mpsc::Receiver<(NodeId, Wire)>,
    pub status_tx: watch::Sender<NodeStatus>,
    pub healthy: Arc<AtomicBool>,
    pub snapshot_slot: Slot,
}

impl NodeLoop {
    pub fn new(parts: LoopParts) -> NodeLoop {
        let members = parts.config.members.len();
        let (snapshot_written_tx, snapshot_written) = mpsc::unbounded_channel();
        NodeLoop {
            config: parts.config,
            replica: parts.replica,
            kv: parts.kv,
            wal: parts.wal,
            wal_events: parts.wal_events,
            disk_full: None,
            peers: parts.peers,
            transfer: parts.transfer,
            requests: parts.requests,
            inbound: parts.inbound,
            status_tx: parts.status_tx,
            healthy: parts.healthy,
            waiting_writes: VecDeque::new(),
            pending_writes: HashMap::default(),
            pending_reads: HashMap::new(),
            next_command: 0,
            next_read: 1,
            last_heard: vec![None; members],
            ticks: 0,
            snapshot_slot: parts.snapshot_slot,
            snapshot_writing: false,
            snapshot_written_tx,
            snapshot_written,
            wal_bytes_at_snapshot: 0,
            published_view: None,
        }
    }

    /// Runs until `shutdown` flips, then syncs the WAL and answers what is still pending.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(Duration::from_millis(TICK_MS));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut requests = Vec::with_capacity(INPUT_BATCH_MAX);
        let mut datagrams = Vec::with_capacity(INPUT_BATCH_MAX);
        let mut wal_events = Vec::new();
        self.drive();
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
            match woken_by {
                WokenBy::Tick => self.on_tick(),
                WokenBy::WalEvents => {
                    for event in wal_events.drain(..) {
                        self.on_wal_event(event);
                    }
                }
                WokenBy::SnapshotWritten(written) => self.on_snapshot_written(written),
                WokenBy::Datagrams => {
                    for (from, wire) in datagrams.drain(..) {
                        self.on_wire(from, wire);
                    }
                }
                WokenBy::Requests => {
                    for request in requests.drain(..) {
                        self.on_request(request);
                    }
                }
            }
            self.drive();
            let busy = woke.elapsed();
            self.peers
                .metrics()
                .loop_iteration_seconds
                .observe(busy.as_secs_f64());
        }
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Finish what can be finished without new input, make everything durable, then tell the
        // clients still waiting that this node is going away.
        self.drive();
        self.wal.close();
        for w in self.waiting_writes.drain(..) {
            let _ = w.reply.send(Err(StoreError::ShuttingDown));
        }
        for (_, w) in self.pending_writes.drain() {
            let _ = w.reply.send(Err(StoreError::OutcomeUnknown));
        }
        for (_, r) in self.pending_reads.drain() {
            let _ = r.reply.send(Err(StoreError::ShuttingDown));
        }
        tracing::info!(node = %self.config.node, "event loop stopped; WAL synced");
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        self.replica.tick();
        let chunks = self.transfer.tick(&mut self.peers);
        if chunks > 0 {
            self.peers
                .metrics()
                .transfers
                .get_or_create(&crate::metrics::TransferLabels {
                    kind: "snapshot_chunk_sent",
                })
                .inc_by(chunks as u64);
        }
        self.expire(Instant::now());
        self.propose_waiting();
        if self.ticks % KERNEL_DROPS_POLL_TICKS == 0 {
            self.peers.count_kernel_drops();
        }
        if self.ticks % STATUS_REFRESH_TICKS == 0 {
            self.publish_status();
        }
    }

    fn on_wire(&mut self, from: NodeId, wire: Wire) {
        if let Some(slot) = self.last_heard.get_mut(usize::from(from.0)) {
            *slot = Some(Instant::now());
        }
        match wire {
            Wire::Paxos(message) => self.replica.receive(from, message),
            Wire::Snapshot(chunk) => {
                self.peers.metrics().transfer("snapshot_chunk_received");
                if let Some((meta, payload)) = self.transfer.receive(chunk) {
                    self.install_snapshot(meta, payload);
                }
            }
        }
    }

    fn on_request(&mut self, request: Request) {
        let deadline = Instant::now() + self.config.request_timeout;
        if let Some(reason) = &self.disk_full {
            reject(
                request,
                StoreError::Unavailable(format!("disk full: {reason}")),
            );
            return;
        }
        match request {
            Request::Write { op, reply } => {
                self.waiting_writes.push_back(WaitingWrite {
                    deadline,
                    op,
                    reply,
                });
                self.propose_waiting();
            }
            Request::Read {
                key,
                consistency: Consistency::Stale,
                reply,
            } => {
                let _ = reply.send(Ok(self.kv.get(&key).cloned()));
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
                        deadline,
                        key,
                        reply,
                    },
                );
                self.replica.read(id);
            }
        }
    }

    /// Hands waiting writes to the core once a leader is known and a quorum was heard from.
    /// Until then they wait, so a write that times out there was never proposed ("no quorum").
    fn propose_waiting(&mut self) {
        if self.waiting_writes.is_empty() || !self.can_propose() {
            return;
        }
        while let Some(w) = self.waiting_writes.pop_front() {
            if w.reply.is_closed() {
                continue;
            }
            let id = CommandId {
                origin: self.config.node,
                seq: (self.config.boot << crate::node::identity::COMMAND_SEQ_COUNTER_BITS)
                    | self.next_command,
            };
            self.next_command += 1;
            match self.replica.propose(Command { id, op: w.op }) {
                Ok(()) => {
                    self.peers.metrics().proposals.inc();
                    self.pending_writes.insert(
                        id,
                        PendingWrite {
                            deadline: w.deadline,
                            reply: w.reply,
                        },
                    );
                }
                Err(e @ ProposeError::TooLarge { .. }) => {
                    let _ = w.reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
                Err(e @ ProposeError::Busy { .. }) => {
                    let _ = w.reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
    }

    fn can_propose(&self) -> bool {
        self.quorum_reachable(Instant::now())
    }

    /// Whether this node can get a command decided right now, as far as it can tell: a leader
    /// needs recent answers from a majority (its followers answer every heartbeat); a follower
    /// needs a leader it heard from recently (followers do not talk to each other, so the
    /// leader's own check covers the rest, and it steps down when it loses its majority).
    fn quorum_reachable(&self, now: Instant) -> bool {
        let alive_window = Duration::from_millis(PEER_ALIVE_MS_MAX);
        let heard_recently = |i: usize| {
            i == usize::from(self.config.node.0)
                || self
                    .last_heard
                    .get(i)
                    .copied()
                    .flatten()
                    .is_some_and(|t| now.duration_since(t) <= alive_window)
        };
        match self.replica.status().leader {
            None => false,
            Some(leader) if leader == self.config.node => {
                let alive = (0..self.config.members.len())
                    .filter(|&i| heard_recently(i))
                    .count();
                alive > self.config.members.len() / 2
            }
            Some(leader) => heard_recently(usize::from(leader.0)),
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .waiting_writes
            .front()
            .is_some_and(|w| w.deadline <= now)
        {
            if let Some(w) = self.waiting_writes.pop_front() {
                let _ = w.reply.send(Err(StoreError::NoQuorum));
            }
        }
        let expired: Vec<CommandId> = self
            .pending_writes
            .iter()
            .filter(|(_, w)| w.deadline <= now || w.reply.is_closed())
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
            .filter(|(_, r)| r.deadline <= now || r.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(r) = self.pending_reads.remove(&id) {
                let _ = r.reply.send(Err(StoreError::NoQuorum));
            }
        }
    }

    /// Drains the core until it has nothing more to say, running each `Ready` in the safe order.
    fn drive(&mut self) {
        loop {
            let ready = self.replica.take_ready();
            if ready.is_empty() {
                break;
            }
            let Ready {
                persist,
                persist_upto: _,
                messages,
                apply,
                reads_ready,
                send_snapshot,
            } = ready;
            for (to, message) in messages {
                self.count_message(&message);
                self.peers.send(to, &Wire::Paxos(message));
            }
            self.wal.persist(persist);
            self.apply(apply);
            for id in reads_ready {
                if let Some(read) = self.pending_reads.remove(&id) {
                    let _ = read.reply.send(Ok(self.kv.get(&read.key).cloned()));
                }
            }
            for peer in send_snapshot {
                self.transfer.send_latest(peer);
            }
        }
        self.publish_status_on_role_change();
    }

    /// A report of the WAL thread: durability moves the core on; a full disk makes the node
    /// unavailable until appends work again.
    fn on_wal_event(&mut self, event: WalEvent) {
        match event {
            WalEvent::Durable(upto) => self.replica.durable(upto),
            WalEvent::DiskFull(reason) => {
                self.fail_all(StoreError::Unavailable(format!("disk full: {reason}")));
                self.disk_full = Some(reason);
            }
            WalEvent::DiskOk => self.disk_full = None,
        }
    }

    fn fail_all(&mut self, error: StoreError) {
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
            if slot <= self.kv.applied() {
                // Already covered by a snapshot we installed; the core may still report it.
                continue;
            }
            if let Some((id, outcome)) = self.kv.apply(slot, &value) {
                if let Some(write) = self.pending_writes.remove(&id) {
                    let _ = write.reply.send(Ok(outcome));
                }
            }
        }
        self.maybe_snapshot();
    }

    /// Takes a snapshot when enough slots or WAL bytes went by since the last one. The state is
    /// copied here (it must be the state at `applied`); serializing and writing it happen in the
    /// background, and [`Self::on_snapshot_written`] finishes the job.
    fn maybe_snapshot(&mut self) {
        if self.snapshot_writing {
            return;
        }
        let applied = self.kv.applied();
        let wal_bytes = self.wal.bytes_appended();
        let slots_due = applied >= self.snapshot_slot + self.config.snapshot_every_slots;
        let bytes_due = applied > self.snapshot_slot
            && wal_bytes.saturating_sub(self.wal_bytes_at_snapshot)
                >= self.config.snapshot_every_bytes;
        if !slots_due && !bytes_due {
            return;
        }
        // A clone (reference counts and a few words of applied ids) is far cheaper than
        // serializing.
        let started = Instant::now();
        let state = self.kv.clone();
        tracing::debug!(
            slot = applied,
            copy_us = started.elapsed().as_micros() as u64,
            "taking a snapshot"
        );
        self.wal_bytes_at_snapshot = wal_bytes;
        let serialize = move || state.to_snapshot_bytes();
        match self.transfer.store_in_background(
            applied,
            serialize,
            self.snapshot_written_tx.clone(),
        ) {
            Ok(()) => self.snapshot_writing = true,
            Err(e) => tracing::warn!(error = %e, "no thread to write a snapshot; will retry later"),
        }
    }

    /// A snapshot of ours is durable (or failed): only now may the core drop log entries below it
    /// and the WAL drop the segments it covers.
    fn on_snapshot_written(&mut self, written: SnapshotWritten) {
        self.snapshot_writing = false;
        let SnapshotWritten {
            slot,
            payload,
            result,
        } = written;
        if let Err(e) = result {
            tracing::warn!(error = %e, "snapshot not written; will retry later");
            return;
        }
        if slot <= self.snapshot_slot {
            // A peer's newer snapshot was installed meanwhile.
            return;
        }
        self.snapshot_slot = slot;
        self.transfer.stored(slot, payload);
        self.peers.metrics().transfer("snapshot_taken");
        let forgotten = self.replica.snapshot_taken(slot);
        if !forgotten.is_empty() {
            crate::node::memory::drop_in_background(forgotten);
        }
        self.wal.compact(slot);
    }

    fn install_snapshot(&mut self, meta: crate::snapshot::SnapshotMeta, payload: Vec<u8>) {
        if meta.slot <= self.kv.applied() {
            return;
        }
        let kv = match KvState::from_snapshot_bytes(&payload) {
            Ok(kv) => kv,
            Err(e) => {
                tracing::warn!(error = %e, "peer snapshot rejected");
                return;
            }
        };
        // The snapshot must be durable here before the core treats its slots as applied.
        if let Err(e) = self.transfer.store(meta.slot, payload) {
            tracing::warn!(error = %e, "peer snapshot not stored; will ask again");
            return;
        }
        tracing::info!(slot = meta.slot, "installed a snapshot from a peer");
        self.peers.metrics().transfer("snapshot_installed");
        self.kv = kv;
        self.snapshot_slot = meta.slot;
        self.wal.snapshot_installed(meta.slot);
        self.replica.snapshot_installed(meta.slot);
    }

    /// Counts what the metrics want to know of an outgoing message.
    fn count_message(&self, message: &crate::paxos::Message) {
        use crate::paxos::Message;
        let metrics = self.peers.metrics();
        match message {
            Message::Accept { entries, .. } if !entries.is_empty() => {
                metrics.batch_commands.observe(entries.len() as f64)
            }
            Message::CatchUp { .. } => metrics.transfer("catch_up_requested"),
            Message::Decided { .. } => metrics.transfer("catch_up_served"),
            _ => {}
        }
    }

    /// Publishes the status at once when the node's role or leader changed, so that status
    /// pages and health checks never lag behind an election.
    fn publish_status_on_role_change(&mut self) {
        let core = self.replica.status();
        let view = (core.role, core.leader);
        if self.published_view != Some(view) {
            self.published_view = Some(view);
            self.publish_status();
        }
    }

    fn publish_status(&mut self) {
        let now = Instant::now();
        let healthy = self.quorum_reachable(now);
        let core = self.replica.status();
        let metrics = self.peers.metrics();
        metrics.slots_in_flight.set(core.in_flight as i64);
        metrics.ballot_round.set(core.promised.round as i64);
        metrics
            .elections
            .inc_by(core.campaigns.saturating_sub(metrics.elections.get()));
        self.healthy.store(healthy, Ordering::Relaxed);
        let status = crate::node::status::build(
            &self.config,
            &self.replica.status(),
            self.kv.applied(),
            &self.last_heard,
            now,
            self.peers.metrics(),
        );
        self.status_tx.send_replace(status);
    }
}

fn reject(request: Request, error: StoreError) {
    match request {
        Request::Write { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Request::Read { reply, .. } => {
            let _ = reply.send(Err(error));
        }
    }
}
