//! [`Replica`]: one member's whole protocol state (acceptor, proposer, learner) and the plumbing
//! that turns inputs into a [`Ready`]. The roles' handlers live beside it: `acceptor.rs`,
//! `leader.rs`, `learner.rs`, `reads.rs`, `join.rs`.
//!
//! The ordering rule lives here, in [`Replica::send_after_persist`]: a message that depends on
//! acceptor state is held in `gated` with the persist index it needs, and only `durable()` moves
//! it to the outbox. `take_ready` never hands out a held message, so the caller cannot send it
//! early, whatever order it runs its effects in.

use crate::paxos::config::Config;
use crate::paxos::join::Join;
use crate::paxos::leader::{Campaign, Leadership};
use crate::paxos::member_history::MemberHistory;
use crate::paxos::membership::{Member, MemberRole};
use crate::paxos::message::{Message, MESSAGE_FIXED_BYTES_MAX, SLOT_BYTES_MAX};
use crate::paxos::reads::Reads;
use crate::paxos::ready::{FollowerStatus, ReadId, Ready, ReplicaStatus, Role};
use crate::paxos::rng::Rng;
use crate::paxos::storage::{PersistIndex, Record, Recovered};
use crate::paxos::types::{Ballot, Command, CommandId, NodeId, Slot, Value};
use std::collections::{BTreeMap, VecDeque};

/// Why the core refused a client command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("command of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    #[error("too many commands waiting for a decision ({limit})")]
    Busy { limit: usize },
}

/// What a node is doing, with the state each role needs.
pub(crate) enum RoleState {
    Follower,
    Candidate(Campaign),
    Leader(Leadership),
}

/// A client command this node received and re-sends until it is decided.
pub(crate) struct OwnCommand {
    pub(crate) command: Command,
    /// The tick at which it is re-sent.
    pub(crate) resend_at: u64,
    /// The tick at which it is given up on.
    pub(crate) expires_at: u64,
}

/// One member's Multi-Paxos state machine. See the contract in [`crate::paxos`].
pub struct Replica {
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    /// Logical time: ticks since this replica was built.
    pub(crate) now: u64,

    // ---- acceptor ----
    /// The highest ballot promised (never goes down).
    pub(crate) promised: Ballot,
    /// Whether this node may vote (it holds state it can vouch for: see `join.rs`).
    pub(crate) voter: bool,
    /// Votes for slots not yet known decided: slot -> (ballot, value).
    pub(crate) accepted: BTreeMap<Slot, (Ballot, Value)>,

    // ---- learner ----
    /// Decided values above `log_start` (possibly beyond `decided_upto`, learned out of order).
    pub(crate) log: BTreeMap<Slot, Value>,
    /// Slots at or below this are no longer held (covered by the caller's snapshot).
    pub(crate) log_start: Slot,
    /// Every slot up to here is decided and held (or compacted).
    pub(crate) decided_upto: Slot,
    /// Which membership governs which slot, folded up to `decided_upto`.
    pub(crate) history: MemberHistory,
    /// The memberships in force changed since the leader last looked (`refresh_members`).
    pub(crate) members_changed: bool,
    /// Counts those changes, for callers that rebuild what depends on them.
    pub(crate) members_epoch: u64,
    /// The last `Decided` record handed out.
    pub(crate) decided_recorded: Slot,
    /// Every slot up to here was handed out for applying.
    pub(crate) applied: Slot,
    /// The highest decided prefix any leader reported.
    pub(crate) commit_seen: Slot,
    /// Who reported `commit_seen` (asked first for catch-up when no leader is known).
    pub(crate) commit_source: Option<NodeId>,
    /// When the next catch-up request may go out.
    pub(crate) catch_up_at: u64,

    // ---- leadership ----
    pub(crate) role: RoleState,
    /// The leader this node follows and its ballot.
    pub(crate) leader: Option<(NodeId, Ballot)>,
    /// When a leader was last heard from (for leader stickiness).
    pub(crate) leader_heard_at: u64,
    /// When this node campaigns if it hears from no leader.
    pub(crate) election_at: u64,
    /// The highest round seen in any ballot (a new campaign goes above it).
    pub(crate) round_seen: u64,
    /// Elections started (a statistic).
    pub(crate) campaigns: u64,

    // ---- clients ----
    /// Own client commands not yet seen decided.
    pub(crate) own: BTreeMap<CommandId, OwnCommand>,
    /// Commands to pass to the leader at the next `take_ready`.
    pub(crate) forward_buf: Vec<Command>,
    pub(crate) reads: Reads,
    /// Present while this node learns from the others before it may vote.
    pub(crate) join: Option<Join>,

    // ---- effects ----
    pub(crate) persist: Vec<Record>,
    pub(crate) persist_issued: PersistIndex,
    pub(crate) persist_durable: PersistIndex,
    /// Messages that may leave only once `persist_durable` reaches the index they carry.
    pub(crate) gated: VecDeque<(PersistIndex, NodeId, Message)>,
    pub(crate) outbox: Vec<(NodeId, Message)>,
    /// Messages this node sends itself (its own acceptor, its own leader).
    pub(crate) self_inbox: VecDeque<Message>,
    pub(crate) apply_out: Vec<(Slot, Value)>,
    pub(crate) reads_ready: Vec<ReadId>,
    pub(crate) send_snapshot: Vec<NodeId>,
}

impl Replica {
    /// Builds a replica from its durable state. `seed` drives its election back-offs.
    pub fn new(config: Config, recovered: Recovered, seed: u64) -> Replica {
        let mut history = recovered.history.unwrap_or_else(|| {
            MemberHistory::new(config.members.clone(), config.member_change_delay_slots)
        });
        assert!(
            history.folded_upto() >= recovered.snapshot,
            "the snapshot's membership history stops at slot {} below the snapshot at {}",
            history.folded_upto(),
            recovered.snapshot
        );
        let mut log = BTreeMap::new();
        let mut accepted = recovered.accepted;
        for slot in recovered.snapshot + 1..=recovered.decided_upto {
            let value = recovered
                .chosen
                .get(&slot)
                .cloned()
                .or_else(|| accepted.remove(&slot).map(|(_, v)| v));
            let value = value.unwrap_or_else(|| {
                panic!("recovered state says slot {slot} is decided but holds no value for it")
            });
            log.insert(slot, value);
        }
        for (slot, value) in recovered.chosen.range(recovered.decided_upto + 1..) {
            log.insert(*slot, value.clone());
            accepted.remove(slot);
        }
        let decided_upto = recovered.decided_upto.max(recovered.snapshot);
        for slot in history.folded_upto() + 1..=decided_upto {
            history.fold(slot, &log[&slot]);
        }
        history.trim_below(decided_upto + 1);
        // A cluster of one has no one to join from (and no one who could disagree); a new member
        // has never voted.
        let voter =
            recovered.voter || config.new_member || history.latest().voters() == [config.node];
        let mut replica = Replica {
            rng: Rng::new(seed),
            now: 0,
            promised: recovered.promised,
            voter,
            accepted,
            log,
            log_start: recovered.snapshot,
            decided_upto,
            history,
            members_changed: false,
            members_epoch: 0,
            decided_recorded: recovered.decided_upto,
            applied: recovered.snapshot,
            commit_seen: recovered.decided_upto,
            commit_source: None,
            catch_up_at: 0,
            role: RoleState::Follower,
            leader: None,
            leader_heard_at: 0,
            election_at: 0,
            round_seen: recovered.promised.round,
            campaigns: 0,
            own: BTreeMap::new(),
            forward_buf: Vec::new(),
            reads: Reads::default(),
            join: None,
            persist: Vec::new(),
            persist_issued: 0,
            persist_durable: 0,
            gated: VecDeque::new(),
            outbox: Vec::new(),
            self_inbox: VecDeque::new(),
            apply_out: Vec::new(),
            reads_ready: Vec::new(),
            send_snapshot: Vec::new(),
            config,
        };
        if replica.config.new_member && !recovered.voter {
            // Recorded so that a restart does not need the caller to say it again.
            replica.persist(Record::Joined);
        }
        if !replica.voter {
            let peers = replica.join_peers();
            replica.join = Some(Join::new(peers));
        }
        replica.advance_decided();
        replica.reset_election_timer();
        replica
    }

    // ------------------------------------------------------------------ inputs

    /// One tick of logical time passed.
    pub fn tick(&mut self) {
        self.now += 1;
        self.tick_join();
        self.tick_leadership();
        self.tick_own_commands();
        self.tick_reads();
        self.tick_catch_up();
    }

    /// A message arrived from member `from` (the transport authenticated it). Our own are
    /// ignored, and so are bids for leadership from nodes that vote in no membership in force
    /// here: a removed member must not disrupt the cluster. Everything else is taken from
    /// anyone, because a node that is behind does not yet know the newest members; no vote or
    /// promise is counted unless its sender votes in the membership of the slot.
    pub fn receive(&mut self, from: NodeId, message: Message) {
        if from == self.config.node {
            return;
        }
        let bids_for_leadership = matches!(
            message,
            Message::Prepare { .. } | Message::Handover { .. } | Message::TransferLeadership { .. }
        );
        if bids_for_leadership && !self.history.is_voter_from(from, self.decided_upto + 1) {
            return;
        }
        self.handle(from, message);
    }

    /// A client asked for `command`. The caller learns the outcome when the command is applied
    /// (by its id); a refused command was not proposed.
    pub fn propose(&mut self, command: Command) -> Result<(), ProposeError> {
        let bytes = command.encoded_bytes_max();
        let limit = self.config.command_bytes_max();
        if bytes > limit {
            return Err(ProposeError::TooLarge { bytes, limit });
        }
        if self.own.len() >= self.config.own_commands_max {
            return Err(ProposeError::Busy {
                limit: self.config.own_commands_max,
            });
        }
        let id = command.id;
        self.own.insert(
            id,
            OwnCommand {
                command: command.clone(),
                resend_at: self.now + self.config.command_retry_ticks,
                expires_at: self.now + self.config.command_expiry_ticks,
            },
        );
        self.submit(command);
        Ok(())
    }

    /// A client asked for a linearizable read; `id` comes back in `Ready::reads_ready` once the
    /// state machine may answer it.
    pub fn read(&mut self, id: ReadId) {
        self.read_requested(id);
    }

    /// The first `upto` records handed out are durable.
    pub fn durable(&mut self, upto: PersistIndex) {
        assert!(
            upto <= self.persist_issued,
            "durable({upto}) beyond the {} records handed out",
            self.persist_issued
        );
        if upto <= self.persist_durable {
            return;
        }
        self.persist_durable = upto;
        while let Some((needed, _, _)) = self.gated.front() {
            if *needed > upto {
                break;
            }
            if let Some((_, to, message)) = self.gated.pop_front() {
                self.send_released(to, message);
            }
        }
    }

    /// Sends a message the disk held back. Votes released by the same sync to the same leader
    /// travel as one `Accepted` (one datagram per sync, not one per accept batch received).
    fn send_released(&mut self, to: NodeId, message: Message) {
        let slots_max = (self.config.message_bytes_max - MESSAGE_FIXED_BYTES_MAX) / SLOT_BYTES_MAX;
        if let Message::Accepted { ballot, slots } = &message {
            if let Some((
                last_to,
                Message::Accepted {
                    ballot: last_ballot,
                    slots: last_slots,
                },
            )) = self.outbox.last_mut()
            {
                if *last_to == to
                    && last_ballot == ballot
                    && last_slots.len() + slots.len() <= slots_max
                {
                    last_slots.extend_from_slice(slots);
                    return;
                }
            }
        }
        self.send(to, message);
    }

    /// The caller's snapshot covers every slot `<= upto` (which it has applied): values below it
    /// may be dropped, keeping `log_retain_slots` for peers that are a little behind. Returns the
    /// decided values no longer kept, for the caller to free where it costs nothing (a snapshot
    /// interval of commands takes milliseconds to free).
    #[must_use = "dropping it frees every command it holds; drop it where that costs nothing"]
    pub fn snapshot_taken(&mut self, upto: Slot) -> BTreeMap<Slot, Value> {
        assert!(upto <= self.applied, "snapshot beyond the applied slots");
        let start = upto.saturating_sub(self.config.log_retain_slots);
        if start <= self.log_start {
            return BTreeMap::new();
        }
        self.log_start = start;
        let kept = self.log.split_off(&(start + 1));
        std::mem::replace(&mut self.log, kept)
    }

    /// The caller installed a peer's snapshot covering every slot `<= upto`.
    /// `history` is the snapshot's membership history (folded up to `upto`).
    pub fn snapshot_installed(&mut self, upto: Slot, history: &MemberHistory) {
        if upto <= self.applied {
            return;
        }
        if upto > self.decided_upto {
            self.history = history.clone();
            self.members_changed = true;
            self.members_epoch += 1;
        }
        self.log_start = self.log_start.max(upto);
        self.log = self.log.split_off(&(upto + 1));
        self.accepted = self.accepted.split_off(&(upto + 1));
        self.decided_upto = self.decided_upto.max(upto);
        self.applied = upto;
        self.commit_seen = self.commit_seen.max(upto);
        if let RoleState::Leader(_) | RoleState::Candidate(_) = self.role {
            // Our view of the log was far behind: let an up-to-date node lead.
            self.step_down();
        }
        self.advance_decided();
        self.join_when_caught_up();
    }

    // ----------------------------------------------------------------- outputs

    /// Everything the caller must do now, in the order documented on [`Ready`].
    pub fn take_ready(&mut self) -> Ready {
        loop {
            while let Some(message) = self.self_inbox.pop_front() {
                let me = self.config.node;
                self.handle(me, message);
            }
            self.flush_leader();
            self.flush_forwards();
            self.flush_reads();
            if self.self_inbox.is_empty() {
                break;
            }
        }
        self.record_decided();
        self.apply_decided();
        self.release_reads();
        Ready {
            persist: std::mem::take(&mut self.persist),
            persist_upto: self.persist_issued,
            messages: std::mem::take(&mut self.outbox),
            apply: std::mem::take(&mut self.apply_out),
            reads_ready: std::mem::take(&mut self.reads_ready),
            send_snapshot: std::mem::take(&mut self.send_snapshot),
        }
    }

    /// The node's view, for status pages and tests.
    pub fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            node: self.config.node,
            role: self.role(),
            leader: self.leader.map(|(n, _)| n),
            promised: self.promised,
            decided: self.decided_upto,
            applied: self.applied,
            commit_seen: self.commit_seen,
            log_start: self.log_start,
            commands_pending: self.own.len(),
            in_flight: match &self.role {
                RoleState::Leader(l) => l.proposals.len(),
                _ => 0,
            },
            campaigns: self.campaigns,
        }
    }

    /// While this node leads: each voter's decided prefix as last reported to it (its own is
    /// current) and how many ticks ago it last answered. Empty otherwise.
    pub fn follower_progress(&self) -> Vec<FollowerStatus> {
        let RoleState::Leader(leadership) = &self.role else {
            return Vec::new();
        };
        leadership
            .followers
            .iter()
            .map(|(&node, f)| {
                let own = node == self.config.node;
                FollowerStatus {
                    node,
                    decided: if own { self.decided_upto } else { f.decided },
                    heard_ticks_ago: if own {
                        0
                    } else {
                        self.now.saturating_sub(f.heard_at)
                    },
                }
            })
            .collect()
    }

    /// The decided value of `slot`, if this node holds it (for checkers and catch-up tests).
    pub fn decided_value(&self, slot: Slot) -> Option<&Value> {
        if slot > self.decided_upto {
            return None;
        }
        self.log.get(&slot)
    }

    pub(crate) fn role(&self) -> Role {
        match self.role {
            _ if self.join.is_some() => Role::Joining,
            RoleState::Follower => Role::Follower,
            RoleState::Candidate(_) => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    // ---------------------------------------------------------------- plumbing

    fn handle(&mut self, from: NodeId, message: Message) {
        match message {
            Message::Prepare { ballot, from: slot } => self.on_prepare(from, ballot, slot),
            Message::Promise {
                ballot,
                from: slot,
                upto,
                more,
                log_start,
                entries,
            } => self.on_promise(from, ballot, slot, upto, more, log_start, entries),
            Message::Accept {
                ballot,
                commit,
                entries,
            } => self.on_accept(from, ballot, commit, entries),
            Message::Accepted { ballot, slots } => self.on_accepted(from, ballot, &slots),
            Message::Nack { promised } => self.on_nack(promised),
            Message::Heartbeat {
                ballot,
                commit,
                read_round,
            } => self.on_heartbeat(from, ballot, commit, read_round),
            Message::HeartbeatAck {
                ballot,
                read_round,
                decided,
            } => self.on_heartbeat_ack(from, ballot, read_round, decided),
            Message::Forward { commands } => self.on_forward(commands),
            Message::ReadIndex { ids } => self.on_read_index(from, ids),
            Message::ReadIndexReply { ids, index } => self.on_read_index_reply(ids, index),
            Message::CatchUp { from: slot } => self.on_catch_up(from, slot),
            Message::Decided { commit, entries } => self.on_decided(from, commit, entries),
            Message::SnapshotNeeded { .. } => {}
            Message::JoinQuery { from: slot } => self.on_join_query(from, slot),
            Message::JoinInfo {
                voter,
                promised,
                log_start,
                from: slot,
                upto,
                more,
                entries,
            } => self.on_join_info(from, voter, promised, log_start, slot, upto, more, entries),
            Message::TransferLeadership { to } => self.on_transfer_leadership(to),
            Message::Handover { ballot, to } => self.on_handover(from, ballot, to),
        }
    }

    /// Queues `message` for `to` now (to ourselves: handled before `take_ready` returns).
    pub(crate) fn send(&mut self, to: NodeId, message: Message) {
        if to == self.config.node {
            self.self_inbox.push_back(message);
        } else {
            self.outbox.push((to, message));
        }
    }

    /// Queues `message` for `to` once every record handed out so far is durable: the ordering
    /// rule for promises, votes and anything else that vouches for acceptor state.
    pub(crate) fn send_after_persist(&mut self, to: NodeId, message: Message) {
        if self.persist_issued > self.persist_durable {
            self.gated.push_back((self.persist_issued, to, message));
        } else {
            self.send(to, message);
        }
    }

    /// Hands `record` to the caller to make durable.
    pub(crate) fn persist(&mut self, record: Record) {
        self.persist_issued += 1;
        self.persist.push(record);
    }

    /// Raises the promise (never lowers it) and records it.
    pub(crate) fn promise(&mut self, ballot: Ballot) {
        assert!(
            ballot >= self.promised,
            "a promise never goes down: {} -> {ballot}",
            self.promised
        );
        if ballot > self.promised {
            self.promised = ballot;
            self.round_seen = self.round_seen.max(ballot.round);
            self.persist(Record::Promised { ballot });
        }
    }

    /// Every member of a membership in force (voters and learners) but this one: who hears
    /// heartbeats and handovers.
    pub(crate) fn peers(&self) -> Vec<NodeId> {
        let me = self.config.node;
        let mut members = self.history.members_from(self.decided_upto + 1);
        members.retain(|n| *n != me);
        members
    }

    /// The voters a node with empty storage learns from before it may vote (`join.rs`).
    pub(crate) fn join_peers(&self) -> Vec<NodeId> {
        let me = self.config.node;
        let voters = self.history.latest().voters();
        voters.iter().copied().filter(|n| *n != me).collect()
    }

    /// The members of every membership in force here (the one governing the first undecided
    /// slot, and a newer one if it is pending), each once, with its newest role and address:
    /// whom this node must be able to reach.
    pub fn members_in_force(&self) -> Vec<Member> {
        let mut members: Vec<Member> = Vec::new();
        for era in self.history.eras_from(self.decided_upto + 1).iter().rev() {
            for m in era.membership.members() {
                if !members.iter().any(|known| known.id == m.id) {
                    members.push(m.clone());
                }
            }
        }
        members.sort_by_key(|m| m.id);
        members
    }

    /// Goes up whenever the memberships in force change: [`Replica::members_in_force`] is the
    /// same between two calls that see the same value.
    pub fn members_epoch(&self) -> u64 {
        self.members_epoch
    }

    /// The membership history as folded here (for status pages and checkers).
    pub fn member_history(&self) -> &MemberHistory {
        &self.history
    }

    /// This node's role in the newest membership it knows (`None`: it was removed, or has not
    /// yet learned that it was added).
    pub fn member_role(&self) -> Option<MemberRole> {
        self.history
            .latest()
            .member(self.config.node)
            .map(|m| m.role)
    }

    /// A randomized election timeout in `[base, 2 * base)`.
    pub(crate) fn reset_election_timer(&mut self) {
        let base = self.config.election_timeout_ticks.max(1);
        self.election_at = self.now + base + self.rng.below(base);
    }

    /// Sends `command` towards the leader (or queues it if this node leads).
    pub(crate) fn submit(&mut self, command: Command) {
        match (&mut self.role, self.leader) {
            (RoleState::Leader(_), _) => self.enqueue(command),
            (_, Some(_)) => self.forward_buf.push(command),
            // No leader known: `tick_own_commands` retries once one is.
            _ => {}
        }
    }

    fn tick_own_commands(&mut self) {
        let now = self.now;
        let expired: Vec<CommandId> = self
            .own
            .iter()
            .filter(|(_, c)| c.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.own.remove(&id);
        }
        if self.leader.is_none() {
            return;
        }
        let retry = self.config.command_retry_ticks;
        let due: Vec<Command> = self
            .own
            .values_mut()
            .filter(|c| c.resend_at <= now)
            .map(|c| {
                c.resend_at = now + retry;
                c.command.clone()
            })
            .collect();
        for command in due {
            self.submit(command);
        }
    }

    /// Re-sends every own command now (a new leader is known).
    pub(crate) fn resubmit_own(&mut self) {
        let retry = self.config.command_retry_ticks;
        let now = self.now;
        let all: Vec<Command> = self
            .own
            .values_mut()
            .map(|c| {
                c.resend_at = now + retry;
                c.command.clone()
            })
            .collect();
        for command in all {
            self.submit(command);
        }
    }

    fn flush_forwards(&mut self) {
        if self.forward_buf.is_empty() {
            return;
        }
        let Some((leader, _)) = self.leader else {
            self.forward_buf.clear();
            return;
        };
        if leader == self.config.node {
            for command in std::mem::take(&mut self.forward_buf) {
                self.enqueue(command);
            }
            return;
        }
        let budget = self.config.message_bytes_max - crate::paxos::message::MESSAGE_FIXED_BYTES_MAX;
        let mut batch = Vec::new();
        let mut bytes = 0;
        for command in std::mem::take(&mut self.forward_buf) {
            let size = command.encoded_bytes_max();
            if bytes + size > budget && !batch.is_empty() {
                self.send(leader, Message::Forward { commands: batch });
                batch = Vec::new();
                bytes = 0;
            }
            bytes += size;
            batch.push(command);
        }
        if !batch.is_empty() {
            self.send(leader, Message::Forward { commands: batch });
        }
    }

    fn on_forward(&mut self, commands: Vec<Command>) {
        match self.role {
            RoleState::Leader(_) => {
                for command in commands {
                    self.enqueue(command);
                }
            }
            // Not the leader: the origin re-sends to whoever leads (never passed on, so two
            // nodes with stale views cannot bounce a command between them).
            _ => drop(commands),
        }
    }
}
