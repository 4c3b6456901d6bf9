//! The seeded deterministic simulator of a consens cluster: one run = one seed. Each node runs
//! the daemon's own driver (`consens::internals::node::driver`: core, key-value state, pending requests,
//! snapshot policy and shipping) over a simulated disk and network. The simulation owns the
//! run's clock and phases (chaos, then heal, repeated, then a final settle), and wires the other
//! modules together: `network` (hostile wire), `node` (driver + disk), `client` (requests and
//! their history), `faults` (what goes wrong, when), `checks` (the properties), `kv` (the model
//! state machine) and `linearizability` (the per-key checker). `rng` is the single source of
//! randomness, so a seed replays the same run; `TraceHash` proves it.

pub mod checks;
pub mod client;
pub mod faults;
pub mod kv;
pub mod linearizability;
pub mod network;
pub mod node;
pub mod rng;

use checks::Checker;
use client::Clients;
use consens::internals::node::driver::{Observed, PlantedBug};
use consens::internals::node::handle::Request;
use consens::internals::paxos::membership::{MemberChange, MemberRole};
use consens::internals::paxos::types::{NodeId, Op, Outcome, Slot, Value};
use consens::internals::paxos::{Config, MemberHistory, Membership, Role};
use consens::internals::server::StoreError;
use faults::{Fault, Schedule};
use network::{Conditions, Network};
use node::{NodeSetup, SimNode, TICK_MS};
use rng::{SimRng, TraceHash};
use std::collections::BTreeSet;
use tokio::sync::oneshot::{self, error::TryRecvError};

/// Chaos and heal alternate this many times per run.
pub const CYCLES: usize = 2;
/// Ticks of random faults per cycle.
pub const CHAOS_TICKS: u64 = 1_200;
/// Ticks of a perfect network with every node up per cycle (clients keep going).
pub const HEAL_TICKS: u64 = 400;
/// After the faults heal, every pending client operation completes within this many ticks.
pub const LIVENESS_TICKS: u64 = 400;
/// During chaos a client gives up on an operation after this many ticks.
pub const CLIENT_TIMEOUT_TICKS: u64 = 250;
/// Ticks the cluster gets at the end, clients stopped, to converge before the final checks.
pub const SETTLE_TICKS: u64 = 150;
/// A write waits up to this many ticks for its sync during chaos, and when healed.
pub const SYNC_TICKS_MAX_CHAOS: u64 = 8;
pub const SYNC_TICKS_MAX_HEALED: u64 = 2;
/// Per seed, the core's election timeout is drawn from this range (ticks).
pub const ELECTION_TIMEOUT_TICKS_MIN: u64 = 8;
pub const ELECTION_TIMEOUT_TICKS_MAX: u64 = 40;
/// Clients beyond one reader and one writer per node.
pub const EXTRA_CLIENTS: usize = 2;
/// The driver answers a request it could not finish within this many ticks ("no quorum" or
/// "outcome unknown"), before the clients give up on their own.
pub const REQUEST_TIMEOUT_TICKS: u64 = 200;
/// Once the faults heal, an operation invoked this many ticks later must succeed.
pub const HEAL_GRACE_TICKS: u64 = 150;
/// Per seed, a node takes a snapshot every this many applied slots (drawn from the range), so
/// that snapshots and compaction happen in every run.
pub const SNAPSHOT_EVERY_SLOTS_MIN: u64 = 5;
pub const SNAPSHOT_EVERY_SLOTS_MAX: u64 = 60;
/// Per seed, the core keeps this many decided slots below a snapshot for peers a little behind
/// (drawn from the range): a follower further behind must install a snapshot.
pub const LOG_RETAIN_SLOTS_MAX: u64 = 30;
/// Per seed, a membership change takes effect this many slots after its decision (drawn from
/// the range): small, so that changes take effect within a run and overlap with faults.
pub const MEMBER_CHANGE_DELAY_SLOTS_MIN: u64 = 2;
pub const MEMBER_CHANGE_DELAY_SLOTS_MAX: u64 = 40;
/// The membership nemesis grows the voters up to this many and shrinks them down to
/// `VOTERS_KEPT_MIN` (changes asked for before earlier ones are decided may overshoot).
pub const VOTERS_GROWN_MAX: usize = 7;
pub const VOTERS_KEPT_MIN: usize = 3;
/// Chance that an isolated leader's clock also runs slow (so it keeps leading longer, which a
/// correct core must survive: it may rely on no clock for safety), in thousandths.
pub const SLOW_ISOLATED_LEADER_PER_MILLE: u64 = 500;

/// What one run did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub members: usize,
    pub ops: u64,
    pub faults: u64,
    pub violations: Vec<String>,
    /// Snapshots taken and installed from peers in the run (every run must have some).
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    /// Membership changes that took effect (decided and not refused).
    pub member_changes: u64,
    pub trace_hash: u64,
    /// The run's trace (faults, client operations, answers), for replays and failures.
    pub trace: Vec<String>,
}

/// The core's timers, drawn per seed: short election timeouts against slow networks make for
/// duelling candidates and stale leaders, which is where Paxos bugs live.
struct Timers {
    election_timeout_ticks: u64,
    heartbeat_ticks: u64,
    retry_ticks: u64,
    command_retry_ticks: u64,
    log_retain_slots: u64,
    member_change_delay_slots: u64,
}

struct Simulation {
    rng: SimRng,
    timers: Timers,
    setup: NodeSetup,
    now: u64,
    members: u16,
    nodes: Vec<SimNode>,
    network: Network,
    clients: Clients,
    checker: Checker,
    schedule: Schedule,
    /// Per node: the chance, in thousandths, that its clock ticks in a simulated tick.
    tick_per_mille: Vec<u64>,
    /// Clock faults wait until then (a slow isolated leader stays slow while isolated).
    slow_until: Option<u64>,
    /// When each crashed node restarts (chaos only).
    down_until: Vec<Option<u64>>,
    /// Nodes removed from the cluster and stopped for good, as an operator would.
    retired: Vec<bool>,
    /// Removed nodes to stop once their removal is in force: (node, first slot without it).
    retire_at: Vec<(usize, Slot)>,
    /// Slots of the membership changes already acted on.
    member_changes_seen: BTreeSet<Slot>,
    /// Answers to membership changes asked for (kept open, or the driver drops the request).
    operator_answers: Vec<oneshot::Receiver<std::result::Result<Outcome, StoreError>>>,
    healed: bool,
    /// When the faults last healed.
    healed_at: u64,
    faults: u64,
    snapshots_installed: u64,
    hash: TraceHash,
    trace: Vec<String>,
}

/// Runs the simulation for `seed`, with `planted_bug` (if any) planted in every node's driver.
pub fn run_with(seed: u64, planted_bug: Option<PlantedBug>) -> Report {
    let mut rng = SimRng::new(seed);
    let members: u16 = if rng.chance(500) { 3 } else { 5 };
    let n = usize::from(members);
    let election_timeout_ticks =
        rng.between(ELECTION_TIMEOUT_TICKS_MIN, ELECTION_TIMEOUT_TICKS_MAX);
    let timers = Timers {
        election_timeout_ticks,
        heartbeat_ticks: rng.between(1, election_timeout_ticks / 4),
        retry_ticks: rng.between(2, 8),
        command_retry_ticks: rng.between(5, 30),
        log_retain_slots: rng.below(LOG_RETAIN_SLOTS_MAX + 1),
        member_change_delay_slots: rng
            .between(MEMBER_CHANGE_DELAY_SLOTS_MIN, MEMBER_CHANGE_DELAY_SLOTS_MAX),
    };
    let first = MemberHistory::new(
        Membership::first_ids(members).expect("3 or 5 voters"),
        timers.member_change_delay_slots,
    );
    let setup = NodeSetup {
        request_timeout_ms: REQUEST_TIMEOUT_TICKS * TICK_MS,
        snapshot_every_slots: rng.between(SNAPSHOT_EVERY_SLOTS_MIN, SNAPSHOT_EVERY_SLOTS_MAX),
        planted_bug,
    };
    let mut sim = Simulation {
        rng,
        timers,
        setup,
        now: 0,
        members,
        nodes: (0..members)
            .map(|i| SimNode::new(NodeId(i), members))
            .collect(),
        network: Network::new(),
        clients: Clients::new(2 * n + EXTRA_CLIENTS, n),
        checker: Checker::new(n, first),
        schedule: Schedule::new(),
        tick_per_mille: vec![1000; n],
        slow_until: None,
        down_until: vec![None; n],
        retired: vec![false; n],
        retire_at: Vec::new(),
        member_changes_seen: BTreeSet::new(),
        operator_answers: Vec::new(),
        healed: false,
        healed_at: 0,
        faults: 0,
        snapshots_installed: 0,
        hash: TraceHash::default(),
        trace: Vec::new(),
    };
    sim.trace.push(format!(
        "seed {seed}: {n} nodes, election timeout {} ticks, heartbeat {}, retry {}, command retry {}, \
         snapshot every {} slots, {} slots retained, changes take effect after {} slots",
        sim.timers.election_timeout_ticks,
        sim.timers.heartbeat_ticks,
        sim.timers.retry_ticks,
        sim.timers.command_retry_ticks,
        sim.setup.snapshot_every_slots,
        sim.timers.log_retain_slots,
        sim.timers.member_change_delay_slots,
    ));
    for i in 0..n {
        sim.start(i);
    }
    for _ in 0..CYCLES {
        sim.healed = false;
        for _ in 0..CHAOS_TICKS {
            sim.chaos();
            sim.step(true);
        }
        sim.heal();
        for _ in 0..HEAL_TICKS {
            sim.step(true);
        }
    }
    // Stop the clients, wait for what is pending (bounded by the liveness deadline), settle.
    let mut waited = 0;
    while sim.clients.pending() > 0 && waited <= LIVENESS_TICKS {
        sim.step(false);
        waited += 1;
    }
    for _ in 0..SETTLE_TICKS {
        sim.step(false);
    }
    sim.checker
        .finish(&mut sim.nodes, &sim.retired, &sim.clients.history);
    sim.hash.add(sim.rng.next_u64());
    let snapshots_taken = sim.nodes.iter().map(|n| n.snapshots_taken).sum();
    Report {
        seed,
        members: n,
        ops: sim.clients.ops_invoked,
        faults: sim.faults,
        violations: sim.checker.violations,
        snapshots_taken,
        snapshots_installed: sim.snapshots_installed,
        member_changes: sim.member_changes_seen.len() as u64,
        trace_hash: sim.hash.value(),
        trace: sim.trace,
    }
}

impl Simulation {
    fn config(&self, i: usize) -> Config {
        let voters = Membership::first_ids(self.members).expect("3 or 5 voters");
        let mut config = Config::new(NodeId(i as u16), voters);
        config.election_timeout_ticks = self.timers.election_timeout_ticks;
        config.heartbeat_ticks = self.timers.heartbeat_ticks;
        config.retry_ticks = self.timers.retry_ticks;
        config.command_retry_ticks = self.timers.command_retry_ticks;
        config.log_retain_slots = self.timers.log_retain_slots;
        config.member_change_delay_slots = self.timers.member_change_delay_slots;
        // A node the cluster added starts its first life as a new member; after that its disk
        // says what it is.
        config.new_member = i >= usize::from(self.members) && !self.nodes[i].has_started();
        config
    }

    fn start(&mut self, i: usize) {
        let seed = self.rng.next_u64();
        let config = self.config(i);
        self.nodes[i].start(config, &self.setup, seed);
        let driver = self.nodes[i].driver.as_mut().expect("just started");
        let (slot, digest) = driver.applied_digest();
        self.checker.restarted(i, slot, digest);
        self.trace.push(format!(
            "t{} n{i} started at slot {slot} (decided {})",
            self.now,
            driver.replica().status().decided
        ));
        self.down_until[i] = None;
    }

    fn crash(&mut self, i: usize, lose_disk: bool, until: u64) {
        if !self.nodes[i].is_up() {
            return;
        }
        self.nodes[i].crash(lose_disk);
        self.clients.node_crashed(i);
        self.down_until[i] = Some(until);
        let what = if lose_disk { " and lost its disk" } else { "" };
        self.trace
            .push(format!("t{} n{i} crashed{what} until t{until}", self.now));
    }

    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].role() == Some(Role::Leader))
            .max_by_key(|&i| {
                self.nodes[i]
                    .driver
                    .as_ref()
                    .map(|d| d.replica().status().promised)
            })
    }

    /// At most a minority may be without their durable state at once. And only while the
    /// cluster still has its first membership: a member that lost its disk rejoins through the
    /// safe join, which asks the newest voters it knows, and with an empty disk it knows only
    /// the first ones. After a change, a lost disk means replacing the member (a new one is
    /// added, the old one removed), which the membership nemesis does.
    fn may_lose_disk(&self, i: usize) -> bool {
        if !self.member_changes_seen.is_empty() {
            return false;
        }
        let stateless = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].is_stateless())
            .count();
        stateless < (self.nodes.len() - 1) / 2
    }

    fn chaos(&mut self) {
        for i in 0..self.nodes.len() {
            if self.retired[i] {
                continue;
            }
            if self.down_until[i].is_some_and(|until| self.now >= until) {
                self.start(i);
                self.trace.push(format!("t{} n{i} restarted", self.now));
            }
        }
        let n = self.nodes.len();
        let faults = self.schedule.chaos_tick(&mut self.rng, self.now, n);
        for fault in faults {
            self.trace.push(format!("t{} fault {fault:?}", self.now));
            match fault {
                Fault::Conditions(c) => {
                    if c != Conditions::perfect() {
                        self.faults += 1;
                    }
                    self.network.conditions = c;
                }
                // A slow isolated leader keeps its slow clock until its partition heals.
                Fault::ClockSkew { .. } | Fault::ClocksAligned
                    if self.slow_until.is_some_and(|until| self.now < until) => {}
                Fault::ClockSkew { node, per_mille } => {
                    self.faults += 1;
                    self.tick_per_mille = vec![1000; n];
                    self.tick_per_mille[node] = per_mille;
                }
                Fault::ClocksAligned => self.tick_per_mille = vec![1000; n],
                Fault::IsolateLeader { until } => {
                    self.faults += 1;
                    let victim = match self.leader() {
                        Some(l) => l,
                        None => self.rng.index(n),
                    };
                    let groups = (0..n).map(|i| u8::from(i == victim)).collect();
                    self.trace.push(format!("t{} isolated n{victim}", self.now));
                    if self.rng.chance(SLOW_ISOLATED_LEADER_PER_MILLE) {
                        self.tick_per_mille = vec![1000; n];
                        self.tick_per_mille[victim] = self.rng.between(50, 300);
                        self.slow_until = Some(until);
                    }
                    self.network.partition(groups);
                }
                Fault::Split { .. } => {
                    self.faults += 1;
                    // A random minority (at least one node) on one side.
                    let minority = 1 + self.rng.index((n - 1) / 2);
                    let mut groups = vec![0u8; n];
                    let mut placed = 0;
                    while placed < minority {
                        let i = self.rng.index(n);
                        if groups[i] == 0 {
                            groups[i] = 1;
                            placed += 1;
                        }
                    }
                    self.network.partition(groups);
                }
                Fault::HealPartition => self.network.heal_partition(),
                Fault::CrashOne { lose_disk, until } => {
                    self.faults += 1;
                    let i = self.rng.index(n);
                    let lose_disk = lose_disk && self.may_lose_disk(i);
                    self.crash(i, lose_disk, until);
                }
                Fault::CrashLeader { until } => {
                    self.faults += 1;
                    if let Some(i) = self.leader() {
                        self.crash(i, false, until);
                    }
                }
                Fault::CrashAll { until } => {
                    self.faults += 1;
                    for i in 0..n {
                        self.crash(i, false, until);
                    }
                }
                Fault::ChangeMembers { pick } => {
                    self.faults += 1;
                    self.ask_member_change(pick);
                }
                Fault::TransferLeader { via, to } => {
                    self.faults += 1;
                    self.trace
                        .push(format!("t{} transfer to n{to} asked of n{via}", self.now));
                    // The answer only says whether `via` saw `to` lead in time; the checks judge
                    // what the transfer did to the cluster.
                    let (reply, _answer) = tokio::sync::oneshot::channel();
                    self.nodes[via].request(Request::TransferLeadership {
                        to: NodeId(to as u16),
                        reply,
                    });
                }
            }
        }
    }

    /// The faults heal: a perfect network, every node up; pending operations must now finish.
    fn heal(&mut self) {
        self.healed = true;
        self.healed_at = self.now;
        self.schedule.heal();
        self.network.heal_partition();
        self.network.conditions = Conditions::perfect();
        self.tick_per_mille = vec![1000; self.nodes.len()];
        self.slow_until = None;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_up() && !self.retired[i] {
                self.start(i);
            }
        }
        self.clients.set_deadlines(self.now + LIVENESS_TICKS);
        self.trace.push(format!("t{} healed", self.now));
    }

    /// One tick of the whole world.
    fn step(&mut self, issue: bool) {
        self.now += 1;
        let now = self.now;
        for (node, per_mille) in self.nodes.iter_mut().zip(&self.tick_per_mille) {
            if node.is_up() && (*per_mille >= 1000 || self.rng.chance(*per_mille)) {
                node.tick();
            }
        }
        if issue {
            let timeout = if self.healed {
                LIVENESS_TICKS
            } else {
                CLIENT_TIMEOUT_TICKS
            };
            self.clients.issue(
                &mut self.rng,
                now,
                &mut self.nodes,
                timeout,
                &mut self.trace,
            );
        }
        for (voter, ballot, slots) in std::mem::take(&mut self.network.votes) {
            self.checker.votes_sent(voter, ballot, &slots);
        }
        for (acceptor, ballot, first, last) in std::mem::take(&mut self.network.promises) {
            self.checker.promise_sent(acceptor, ballot, first, last);
        }
        for envelope in self.network.due(now) {
            let to = usize::from(envelope.to.0);
            if self.nodes.get(to).is_some_and(|n| n.is_up()) {
                self.hash.add(now);
                self.hash
                    .add(u64::from(envelope.from.0) << 16 | u64::from(envelope.to.0));
                self.nodes[to].receive(envelope.from, envelope.message);
            }
        }
        for node in &mut self.nodes {
            node.complete_io(&mut self.rng, now);
        }
        let sync_max = if self.healed {
            SYNC_TICKS_MAX_HEALED
        } else {
            SYNC_TICKS_MAX_CHAOS
        };
        for i in 0..self.nodes.len() {
            let observed = self.nodes[i].carry_out(&mut self.rng, now, &mut self.network, sync_max);
            for event in &observed {
                self.handle(i, event);
            }
        }
        self.retire_removed();
        self.operator_answers
            .retain_mut(|answer| matches!(answer.try_recv(), Err(TryRecvError::Empty)));
        let (answered, dropped) = self.clients.poll(&mut self.trace);
        self.checker.violations.extend(dropped);
        for h in answered {
            let entry = &self.clients.history[h];
            let failed = matches!(
                entry.result,
                client::Result::Unknown | client::Result::Refused | client::Result::Dropped
            );
            if self.healed && failed && entry.invoked_tick >= self.healed_at + HEAL_GRACE_TICKS {
                self.checker.violations.push(format!(
                    "liveness: {:?} on key {} by client c{} (invoked at t{}, {HEAL_GRACE_TICKS}+ \
                     ticks after the faults healed) ended {:?}",
                    entry.op,
                    client::key_name(entry.key),
                    entry.client,
                    entry.invoked_tick,
                    entry.result
                ));
            }
        }
        for h in self.clients.expire(now) {
            let entry = &self.clients.history[h];
            self.trace
                .push(format!("t{now} c{} timed out", entry.client));
            if self.healed {
                let status = self.status_line();
                self.trace.push(format!("t{now} status: {status}"));
                self.checker.violations.push(format!(
                    "liveness: {:?} on key {} by client c{} (invoked at event {}) did not \
                     complete within {LIVENESS_TICKS} ticks of the faults healing",
                    entry.op,
                    client::key_name(entry.key),
                    entry.client,
                    entry.invoke
                ));
            }
        }
    }

    /// An operator asks a random running node for a membership change that keeps the cluster
    /// between `VOTERS_KEPT_MIN` and `VOTERS_GROWN_MAX` voters: add a learner, promote one,
    /// remove a learner or a voter (perhaps the leader). A series of them replaces members.
    fn ask_member_change(&mut self, pick: u64) {
        let latest = self.checker.members().latest().clone();
        let voters = latest.voters().to_vec();
        let learners: Vec<NodeId> = latest
            .members()
            .iter()
            .filter(|m| m.role == MemberRole::Learner)
            .map(|m| m.id)
            .collect();
        let change = if !learners.is_empty() && pick % 4 != 0 {
            let id = learners[(pick / 4) as usize % learners.len()];
            if voters.len() < VOTERS_GROWN_MAX {
                MemberChange::Promote { id }
            } else {
                MemberChange::Remove { id, force: false }
            }
        } else if voters.len() > VOTERS_KEPT_MIN && pick % 2 == 0 {
            MemberChange::Remove {
                id: voters[(pick / 2) as usize % voters.len()],
                force: false,
            }
        } else {
            MemberChange::AddLearner {
                addr: format!("sim:{}", latest.next_id()),
            }
        };
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_up())
            .collect();
        if running.is_empty() {
            return;
        }
        let via = running[(pick / 16) as usize % running.len()];
        self.trace.push(format!(
            "t{} member change {change:?} asked of n{via}",
            self.now
        ));
        let (reply, answer) = oneshot::channel();
        self.nodes[via].request(Request::Write {
            op: Op::ChangeMembers(change),
            reply,
        });
        self.operator_answers.push(answer);
    }

    /// A membership change decided in `slot` was applied (by some node; acted on once): a new
    /// member is started, a removed one is stopped once its removal is in force.
    fn member_change_applied(&mut self, slot: Slot, change: &MemberChange, outcome: &Outcome) {
        let Outcome::MembersChanged { added, effective } = outcome else {
            return;
        };
        if !self.member_changes_seen.insert(slot) {
            return;
        }
        self.trace.push(format!(
            "t{} member change {change:?} decided at slot {slot}, in force from slot {effective}",
            self.now
        ));
        if let Some(id) = added {
            let i = usize::from(id.0);
            assert_eq!(i, self.nodes.len(), "member ids are handed out in order");
            self.nodes.push(SimNode::new(*id, self.members));
            self.tick_per_mille.push(1000);
            self.down_until.push(None);
            self.retired.push(false);
            self.checker.node_added();
            self.start(i);
        }
        if let MemberChange::Remove { id, .. } = change {
            // A removed node refuses clients from the moment it knows: they move now.
            let i = usize::from(id.0);
            // The checker folds this change only after this call: skip the removed member.
            let stays = self
                .checker
                .members()
                .latest()
                .voters()
                .iter()
                .copied()
                .find(|v| v != id);
            if let Some(stays) = stays {
                self.clients.move_clients(i, usize::from(stays.0));
            }
            self.retire_at.push((i, *effective));
        }
    }

    /// Stops, for good, the removed members whose removal is in force at every member that
    /// stays (each of them holds every slot before it decided); their clients move to a member
    /// that stays. Stopping one earlier can lose the cluster: a member that stays but missed
    /// the last slots of the old membership needs that membership's majority to learn them,
    /// and the removed member may be part of every such majority (`docs/paxos.md`, "Membership
    /// changes").
    fn retire_removed(&mut self) {
        let stays: Vec<usize> = self
            .checker
            .members()
            .latest()
            .members()
            .iter()
            .map(|m| usize::from(m.id.0))
            .collect();
        let caught_up = |nodes: &[SimNode], from: Slot| {
            stays.iter().all(|&j| {
                nodes[j]
                    .driver
                    .as_ref()
                    .is_some_and(|d| d.replica().status().decided + 1 >= from)
            })
        };
        let due: Vec<usize> = self
            .retire_at
            .iter()
            .filter(|(_, from)| caught_up(&self.nodes, *from))
            .map(|(i, _)| *i)
            .collect();
        self.retire_at.retain(|(i, _)| !due.contains(i));
        for i in due {
            let stays = self.checker.members().latest().voters()[0];
            self.nodes[i].crash(false);
            self.retired[i] = true;
            self.down_until[i] = None;
            self.clients.move_clients(i, usize::from(stays.0));
            self.trace
                .push(format!("t{} n{i} left the cluster and stopped", self.now));
        }
    }

    /// Every running node's view, for the trace.
    fn status_line(&self) -> String {
        let status: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.driver.as_ref())
            .map(|d| {
                let s = d.replica().status();
                format!(
                    "{}:{} leader {:?} promised {} decided {} applied {} seen {} log start {}",
                    s.node,
                    s.role,
                    s.leader,
                    s.promised,
                    s.decided,
                    s.applied,
                    s.commit_seen,
                    s.log_start
                )
            })
            .collect();
        status.join("; ")
    }

    fn handle(&mut self, i: usize, event: &Observed) {
        match event {
            Observed::Applied {
                slot,
                value,
                outcome,
                ..
            } => {
                self.hash.add(i as u64);
                self.hash.add(*slot);
                if let Value::Command(c) = value {
                    self.hash.add(c.id.seq);
                    if let (Op::ChangeMembers(change), Some(outcome)) = (&c.op, outcome) {
                        self.member_change_applied(*slot, change, outcome);
                    }
                }
            }
            Observed::SnapshotInstalled { slot, .. } => {
                self.snapshots_installed += 1;
                self.hash.add(i as u64);
                self.hash.add(*slot);
                self.trace.push(format!(
                    "t{} n{i} installed a snapshot of slot {slot}",
                    self.now
                ));
            }
        }
        let before = self.checker.violations.len();
        self.checker.observed(i, event);
        if let Some(first) = self.checker.violations.get(before) {
            self.trace.push(format!("t{} violation: {first}", self.now));
            let status = self.status_line();
            self.trace.push(format!("t{} status: {status}", self.now));
        }
    }
}
