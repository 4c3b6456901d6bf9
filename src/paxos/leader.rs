//! The proposer: elections (phase 1a, collecting promises), and leading (phase 2a, counting
//! votes, batching commands into accept messages within the byte budget and the window).
//!
//! A candidate's ballot is above every round it has seen, and its own promise for it is durable
//! before any prepare leaves (so a restarted node can never reuse a ballot with a different
//! value). With promises from a majority, it re-proposes, for every slot from its first undecided
//! one to the highest any acceptor reported, the decided value if one was reported, else the
//! value accepted at the highest ballot, else a no-op; then it proposes new commands.

use crate::paxos::config::PlantedCoreBug;
use crate::paxos::guard::LeaderView;
use crate::paxos::handover::Transfer;
use crate::paxos::idhash::IdHashBuilder;
use crate::paxos::membership::MemberChange;
use crate::paxos::message::{Message, SlotState, MESSAGE_FIXED_BYTES_MAX};
use crate::paxos::quorum::MemberSet;
use crate::paxos::replica::{Replica, RoleState};
use crate::paxos::types::{Ballot, Command, CommandId, NodeId, Op, Slot, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};

/// A candidate's phase 1.
pub(crate) struct Campaign {
    pub(crate) ballot: Ballot,
    /// The first slot the candidate does not know decided.
    pub(crate) from: Slot,
    /// Per voter: the next slot to pull from its promise (`None`: promise complete).
    pub(crate) next_from: BTreeMap<NodeId, Option<Slot>>,
    /// Members whose whole promise arrived.
    pub(crate) promised: MemberSet,
    /// Highest-ballot votes reported, per slot.
    pub(crate) votes: BTreeMap<Slot, (Ballot, Value)>,
    /// Decided values reported, per slot.
    pub(crate) decided: BTreeMap<Slot, Value>,
    /// When the campaign is given up for a higher ballot.
    pub(crate) deadline: u64,
    /// When prepares are re-sent to members still missing.
    pub(crate) resend_at: u64,
}

/// One slot a leader proposed and counts votes for.
pub(crate) struct Proposal {
    pub(crate) value: Value,
    pub(crate) votes: MemberSet,
    pub(crate) decided: bool,
    /// When the accept was last sent to anyone (`None`: not yet).
    pub(crate) sent_at: Option<u64>,
}

/// A leader's phase 2.
pub(crate) struct Leadership {
    pub(crate) ballot: Ballot,
    /// The voters whose promise of `ballot` elected us. A leader proposes only in slots whose
    /// membership has a majority in it; a change that brings in voters beyond it means a new
    /// election (`refresh_members`).
    pub(crate) promised: MemberSet,
    /// Proposals for slots `base..base + proposals.len()`, the undecided tail of the log.
    pub(crate) proposals: VecDeque<Proposal>,
    pub(crate) base: Slot,
    /// What the leader knows of each voter, itself included.
    pub(crate) followers: BTreeMap<NodeId, FollowerProgress>,
    /// Commands waiting for room in the window.
    pub(crate) queue: VecDeque<Command>,
    /// Ids of commands in `queue` or undecided in `proposals` (to drop re-sent duplicates).
    pub(crate) queued: HashSet<CommandId, IdHashBuilder>,
    /// The highest slot phase 1 found: reads wait until it is decided.
    pub(crate) recovered_upto: Slot,
    /// When the next heartbeat goes out.
    pub(crate) heartbeat_at: u64,
    /// A handover being prepared: no new commands enter the window meanwhile.
    pub(crate) transfer: Option<Transfer>,
}

/// A leader's view of one voter.
#[derive(Clone)]
pub(crate) struct FollowerProgress {
    /// Every proposal up to this slot was sent to it once.
    pub(crate) sent_upto: Slot,
    /// The last slot and send time of each accept batch it has not answered yet (flow control,
    /// see `Config::accept_batches_in_flight_max`).
    pub(crate) batches_in_flight: VecDeque<(Slot, u64)>,
    /// When it last answered this leader.
    pub(crate) heard_at: u64,
    /// The decided prefix last told to it (on an accept or a heartbeat).
    pub(crate) commit_sent: Slot,
    /// The decided prefix it last reported (heartbeat acks): how far it has caught up.
    pub(crate) decided: Slot,
}

impl Leadership {
    fn next_slot(&self) -> Slot {
        self.base + self.proposals.len() as Slot
    }
}

impl Proposal {
    fn new(value: Value) -> Proposal {
        Proposal {
            value,
            votes: MemberSet::default(),
            decided: false,
            sent_at: None,
        }
    }
}

impl Replica {
    pub(crate) fn tick_leadership(&mut self) {
        if !self.voter {
            return;
        }
        let now = self.now;
        match &mut self.role {
            RoleState::Follower => {
                // A learner, or a member that is being removed, never bids for leadership (the
                // voters of the newest membership can lead every slot still to decide).
                let votes = self.history.latest().is_voter(self.config.node);
                if now >= self.election_at && votes {
                    self.start_campaign();
                }
            }
            RoleState::Candidate(campaign) => {
                if now >= campaign.deadline {
                    self.start_campaign();
                } else if now >= campaign.resend_at {
                    campaign.resend_at = now + self.config.retry_ticks;
                    let ballot = campaign.ballot;
                    let missing: Vec<(NodeId, Slot)> = campaign
                        .next_from
                        .iter()
                        .filter_map(|(voter, n)| n.map(|slot| (*voter, slot)))
                        .collect();
                    for (to, from) in missing {
                        self.send_after_persist(to, Message::Prepare { ballot, from });
                    }
                }
            }
            RoleState::Leader(_) => {
                self.tick_leader();
                self.tick_transfer();
            }
        }
    }

    fn tick_leader(&mut self) {
        let now = self.now;
        let contact_window = 2 * self.config.election_timeout_ticks;
        let retry = self.config.retry_ticks;
        let undecided = self.decided_upto + 1;
        let RoleState::Leader(leadership) = &mut self.role else {
            return;
        };
        let me = self.config.node;
        let mut in_touch = MemberSet::default();
        for (&member, f) in &leadership.followers {
            let heard = member == me || now < f.heard_at + contact_window;
            if heard && self.history.is_voter_from(member, undecided) {
                in_touch.insert(member);
            }
        }
        if !self.history.is_quorum_from(&in_touch, undecided) {
            // Cut off from a majority: stop claiming leadership so that clients hear
            // "no quorum" and a connected node can take over.
            self.step_down();
            return;
        }
        // Re-send accepts that got no majority in time, to the members that did not vote.
        let ballot = leadership.ballot;
        let mut resend: BTreeMap<NodeId, Vec<(Slot, Value)>> = BTreeMap::new();
        for (i, p) in leadership.proposals.iter_mut().enumerate() {
            let Some(sent) = p.sent_at else { break };
            if p.decided || now < sent + retry {
                continue;
            }
            p.sent_at = Some(now);
            let slot = leadership.base + i as Slot;
            for &peer in self.history.at(slot).voters() {
                // Our own acceptor never loses a message: its vote may only wait for the disk.
                if peer != me && !p.votes.contains(peer) {
                    resend
                        .entry(peer)
                        .or_default()
                        .push((slot, p.value.clone()));
                }
            }
        }
        let heartbeat_due = now >= leadership.heartbeat_at;
        if heartbeat_due {
            leadership.heartbeat_at = now + self.config.heartbeat_ticks;
        }
        for (peer, entries) in resend {
            self.send_accepts(peer, ballot, entries);
        }
        if heartbeat_due {
            let read_round = self.reads.round_in_flight();
            self.broadcast_heartbeat(ballot, read_round, MemberSet::default());
        }
    }

    /// Starts phase 1 with a ballot above every round seen.
    pub(crate) fn start_campaign(&mut self) {
        self.step_down();
        self.campaigns += 1;
        let round = self.round_seen.max(self.promised.round) + 1;
        let ballot = Ballot {
            round,
            node: self.config.node,
        };
        self.leader = None;
        self.promise(ballot);
        let from = self.decided_upto + 1;
        let base = self.config.election_timeout_ticks.max(1);
        let deadline = self.now + base + self.rng.below(base);
        // Every membership that governs an undecided slot must promise: a majority of each.
        let voters = self.history.voters_from(from);
        self.role = RoleState::Candidate(Campaign {
            ballot,
            from,
            next_from: voters.iter().map(|voter| (*voter, Some(from))).collect(),
            promised: MemberSet::default(),
            votes: BTreeMap::new(),
            decided: BTreeMap::new(),
            deadline,
            resend_at: self.now + self.config.retry_ticks,
        });
        // Gated: the ballot must be durable before anyone hears of it.
        for to in voters {
            self.send_after_persist(to, Message::Prepare { ballot, from });
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        slot: Slot,
        upto: Slot,
        more: bool,
        log_start: Slot,
        entries: Vec<(Slot, SlotState)>,
    ) {
        let RoleState::Candidate(campaign) = &mut self.role else {
            return;
        };
        if ballot != campaign.ballot || campaign.next_from.get(&from) != Some(&Some(slot)) {
            return; // stale or duplicate chunk, or not a voter's
        }
        if log_start >= campaign.from {
            // That acceptor compacted slots we have not decided: we are too far behind to
            // lead. Catch up (a snapshot) and let the election timer try again.
            self.commit_seen = self.commit_seen.max(log_start);
            self.commit_source = Some(from);
            self.step_down();
            self.catch_up_at = self.now;
            return;
        }
        for (s, state) in entries {
            match state {
                SlotState::Decided { value } => {
                    campaign.decided.insert(s, value);
                }
                SlotState::Accepted { ballot: b, value } => {
                    let higher = campaign.votes.get(&s).is_none_or(|(known, _)| *known < b);
                    if higher {
                        campaign.votes.insert(s, (b, value));
                    }
                }
            }
        }
        if more {
            campaign.next_from.insert(from, Some(upto + 1));
            self.send(
                from,
                Message::Prepare {
                    ballot,
                    from: upto + 1,
                },
            );
            return;
        }
        campaign.next_from.insert(from, None);
        campaign.promised.insert(from);
        let elected = if self.config.planted_bug == Some(PlantedCoreBug::NewMajorityAlone) {
            self.history.latest().is_quorum(&campaign.promised)
        } else {
            self.history
                .is_quorum_from(&campaign.promised, campaign.from)
        };
        if elected {
            self.become_leader();
        }
    }

    fn become_leader(&mut self) {
        let role = std::mem::replace(&mut self.role, RoleState::Follower);
        let RoleState::Candidate(campaign) = role else {
            unreachable!("only a candidate is elected");
        };
        // Slots this node learned decided during the campaign count too: a new command must
        // never land in a slot that is already decided.
        let last = campaign
            .votes
            .keys()
            .next_back()
            .copied()
            .max(campaign.decided.keys().next_back().copied())
            .max(self.log.keys().next_back().copied())
            .unwrap_or(0)
            .max(campaign.from - 1)
            .max(self.decided_upto);
        // Slots this node learned decided while it campaigned (catch-up, and perhaps its own
        // snapshot and compaction since) need no phase 2: proposals start after them. Starting at
        // `campaign.from` regardless left compacted slots in the window that were never sent, and
        // the leader stalled (simulator seed 2350, docs/paxos.md).
        let base = campaign.from.max(self.decided_upto + 1);
        let mut proposals = VecDeque::new();
        let mut queued = HashSet::default();
        for slot in base..=last {
            let value = self
                .log
                .get(&slot)
                .or_else(|| campaign.decided.get(&slot))
                .cloned()
                .or_else(|| campaign.votes.get(&slot).map(|(_, v)| v.clone()))
                .unwrap_or(Value::Noop);
            if let Value::Command(c) = &value {
                queued.insert(c.id);
            }
            proposals.push_back(Proposal::new(value));
        }
        let now = self.now;
        let fresh = FollowerProgress {
            sent_upto: base - 1,
            batches_in_flight: VecDeque::new(),
            heard_at: now,
            commit_sent: 0,
            decided: 0,
        };
        let followers = self
            .history
            .members_from(base)
            .into_iter()
            .map(|member| (member, fresh.clone()))
            .collect();
        self.leader = Some((self.config.node, campaign.ballot));
        self.members_changed = false;
        self.role = RoleState::Leader(Leadership {
            ballot: campaign.ballot,
            promised: campaign.promised,
            proposals,
            base,
            followers,
            queue: VecDeque::new(),
            queued,
            recovered_upto: last,
            heartbeat_at: now,
            transfer: None,
        });
        self.leader_changed();
    }

    /// Catches the leader up with a change of the memberships in force: members new to them get
    /// accepts and heartbeats, members no longer in any stop getting them. If a membership now
    /// in force has no majority among the voters that promised our ballot, we cannot propose in
    /// its slots: a new election gathers those promises (and whatever its new voters hold).
    fn refresh_members(&mut self) {
        if !std::mem::take(&mut self.members_changed) {
            return;
        }
        let now = self.now;
        let RoleState::Leader(leadership) = &mut self.role else {
            return;
        };
        let members = self.history.members_from(leadership.base);
        leadership.followers.retain(|id, _| members.contains(id));
        for id in members {
            leadership
                .followers
                .entry(id)
                .or_insert_with(|| FollowerProgress {
                    sent_upto: leadership.base - 1,
                    batches_in_flight: VecDeque::new(),
                    heard_at: now,
                    commit_sent: 0,
                    decided: 0,
                });
        }
        let covered = self
            .history
            .is_quorum_from(&leadership.promised, leadership.base);
        if !covered && self.config.planted_bug != Some(PlantedCoreBug::NewMajorityAlone) {
            self.start_campaign();
        }
    }

    /// Things to redo when the leader we follow (or are) changes.
    pub(crate) fn leader_changed(&mut self) {
        self.resubmit_own();
        self.reads_leader_changed();
    }

    /// Adds a client command to the leader's queue (unless already queued or in flight).
    pub(crate) fn enqueue(&mut self, command: Command) {
        let limit = self.config.queue_commands_max;
        let RoleState::Leader(leadership) = &mut self.role else {
            return;
        };
        if leadership.queue.len() >= limit || !leadership.queued.insert(command.id) {
            return;
        }
        leadership.queue.push_back(command);
    }

    /// Moves queued commands into the window and sends each member the proposals it has not
    /// seen, as one batch, unless it already has `accept_batches_in_flight_max` unanswered
    /// batches: then they wait for its answer, which calls this again. A member with nothing new
    /// and nothing in flight is told the decided prefix right away, so that clients waiting on it
    /// are answered now, not at the next heartbeat.
    pub(crate) fn flush_leader(&mut self) {
        self.refresh_members();
        let window = self.config.proposal_window_slots();
        let decided_upto = self.decided_upto;
        let now = self.now;
        let retry = self.config.retry_ticks;
        let in_flight_max = self.config.accept_batches_in_flight_max;
        let me = self.config.node;
        let RoleState::Leader(leadership) = &mut self.role else {
            return;
        };
        let cap = decided_upto + window;
        while leadership.transfer.is_none() && leadership.next_slot() <= cap {
            let Some(command) = leadership.queue.front() else {
                break;
            };
            // One membership change at a time: it enters only once every slot before it is
            // decided and no other change is pending, so that at most two memberships are ever
            // in force and every replica folds changes against the same membership. The
            // commands behind it wait with it (two changes are serialized, not lost).
            let next = leadership.next_slot();
            if matches!(command.op, Op::ChangeMembers(_))
                && (!leadership.proposals.is_empty() || self.history.pending_start(next).is_some())
            {
                break;
            }
            let mut command = leadership.queue.pop_front().expect("peeked");
            if let Op::ChangeMembers(change) = &command.op {
                let view = LeaderView {
                    me,
                    now,
                    contact_window_ticks: 2 * self.config.election_timeout_ticks,
                    decided_upto,
                    newest: self.history.latest(),
                    followers: &leadership.followers,
                };
                if let Some(reason) = view.refusal(change) {
                    command.op = Op::ChangeMembers(MemberChange::Refused {
                        change: Box::new(change.clone()),
                        reason,
                    });
                }
            }
            leadership
                .proposals
                .push_back(Proposal::new(Value::Command(command)));
        }
        // A decided change takes effect `member_change_delay_slots` later: with no commands to
        // fill the slots before it (none queued, or only a change that waits for this one),
        // fill them with no-ops so that it takes effect now.
        if let Some(start) = self.history.pending_start(leadership.next_slot()) {
            while leadership.transfer.is_none()
                && leadership.next_slot() < start
                && leadership.next_slot() <= cap
            {
                leadership.proposals.push_back(Proposal::new(Value::Noop));
            }
        }
        let ballot = leadership.ballot;
        let base = leadership.base;
        // Proposals phase 1 recovered beyond the window wait: their membership is not known yet.
        let last = (leadership.next_slot() - 1).min(cap);
        let mut accepts = Vec::new();
        let mut commit_notices = Vec::new();
        for (&member, follower) in leadership.followers.iter_mut() {
            // Slots decided while this member was held back leave `proposals`; they come from
            // the decided log instead (what was compacted away, catch-up covers).
            let from = (follower.sent_upto + 1).max(self.log_start + 1);
            let flights = &mut follower.batches_in_flight;
            if member != me {
                // Unanswered for a retry period: lost, or the member is slow or down. The retry
                // timer re-sends what it did not vote for; stop holding new batches back for it.
                while flights.front().is_some_and(|&(_, at)| now >= at + retry) {
                    flights.pop_front();
                }
            }
            if from > last {
                if member != me && flights.is_empty() && follower.commit_sent < decided_upto {
                    follower.commit_sent = decided_upto;
                    commit_notices.push(member);
                }
                continue;
            }
            if member != me {
                // Our own acceptor is never flow-controlled: its vote only waits for the disk.
                if flights.len() >= in_flight_max {
                    continue;
                }
                flights.push_back((last, now));
            }
            let mut entries = Vec::with_capacity((last + 1 - from) as usize);
            for slot in from..base {
                if let Some(value) = self.log.get(&slot) {
                    entries.push((slot, value.clone()));
                }
            }
            for slot in from.max(base)..=last {
                let p = &mut leadership.proposals[(slot - base) as usize];
                p.sent_at.get_or_insert(now);
                entries.push((slot, p.value.clone()));
            }
            follower.sent_upto = last;
            follower.commit_sent = decided_upto;
            accepts.push((member, entries));
        }
        for (to, entries) in accepts {
            self.send_accepts(to, ballot, entries);
        }
        for to in commit_notices {
            self.send(
                to,
                Message::Heartbeat {
                    ballot,
                    commit: decided_upto,
                    read_round: 0,
                },
            );
        }
    }

    /// Sends `entries` to `to` in as many accept messages as the byte budget needs.
    fn send_accepts(&mut self, to: NodeId, ballot: Ballot, entries: Vec<(Slot, Value)>) {
        let budget = self.config.message_bytes_max - MESSAGE_FIXED_BYTES_MAX;
        let commit = self.decided_upto;
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (slot, value) in entries {
            let size = 10 + value.encoded_bytes_max();
            if bytes + size > budget && !batch.is_empty() {
                let full = std::mem::take(&mut batch);
                self.send(
                    to,
                    Message::Accept {
                        ballot,
                        commit,
                        entries: full,
                    },
                );
                bytes = 0;
            }
            bytes += size;
            batch.push((slot, value));
        }
        if !batch.is_empty() {
            self.send(
                to,
                Message::Accept {
                    ballot,
                    commit,
                    entries: batch,
                },
            );
        }
    }

    pub(crate) fn on_accepted(&mut self, from: NodeId, ballot: Ballot, slots: &[Slot]) {
        let now = self.now;
        let RoleState::Leader(leadership) = &mut self.role else {
            return;
        };
        if ballot != leadership.ballot {
            return;
        }
        let Some(follower) = leadership.followers.get_mut(&from) else {
            return; // not a voter of this leadership
        };
        follower.heard_at = now;
        if let Some(&answered) = slots.iter().max() {
            let flights = &mut follower.batches_in_flight;
            while flights.front().is_some_and(|&(upto, _)| upto <= answered) {
                flights.pop_front();
            }
        }
        for &slot in slots {
            if slot < leadership.base {
                continue;
            }
            let Some(p) = leadership
                .proposals
                .get_mut((slot - leadership.base) as usize)
            else {
                continue;
            };
            // Only the voters of the slot's own membership count (a learner's vote is stored
            // there, but decides nothing).
            let membership = self.history.at(slot);
            if self.config.planted_bug == Some(PlantedCoreBug::CountLearnerVotes) {
                if membership.is_member(from)
                    && p.votes.insert(from)
                    && p.votes.len() >= membership.quorum()
                {
                    p.decided = true;
                }
                continue;
            }
            if membership.is_voter(from) && p.votes.insert(from) && membership.is_quorum(&p.votes) {
                p.decided = true;
            }
        }
        // Decide the decided prefix of the window, in order.
        let mut newly = Vec::new();
        while leadership.proposals.front().is_some_and(|p| p.decided) {
            let p = leadership.proposals.pop_front().expect("front exists");
            newly.push((leadership.base, p.value));
            leadership.base += 1;
        }
        for (slot, value) in newly {
            self.decide(slot, value, Some(ballot));
        }
    }

    pub(crate) fn on_nack(&mut self, promised: Ballot) {
        self.round_seen = self.round_seen.max(promised.round);
        let mine = match &self.role {
            RoleState::Leader(l) => l.ballot,
            RoleState::Candidate(c) => c.ballot,
            RoleState::Follower => return,
        };
        if promised > mine {
            let was_leader = matches!(self.role, RoleState::Leader(_));
            self.step_down();
            if was_leader {
                // Someone campaigned past us. Most likely a node that lost touch with us: we
                // are still the best placed to lead, so try again soon with a higher ballot.
                let base = self.config.election_timeout_ticks.max(1);
                self.election_at = self.now + 1 + self.rng.below(base / 2 + 1);
            }
        }
    }

    pub(crate) fn on_heartbeat_ack(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        read_round: u64,
        decided: Slot,
    ) {
        let now = self.now;
        let RoleState::Leader(leadership) = &mut self.role else {
            return;
        };
        if ballot != leadership.ballot {
            return;
        }
        let Some(follower) = leadership.followers.get_mut(&from) else {
            return; // not a voter of this leadership
        };
        follower.heard_at = now;
        follower.decided = follower.decided.max(decided);
        self.read_round_acked(from, read_round);
        self.try_handover();
    }

    /// Sends a heartbeat of `ballot` with our decided prefix to every peer not in `skip`.
    pub(crate) fn broadcast_heartbeat(&mut self, ballot: Ballot, read_round: u64, skip: MemberSet) {
        let commit = self.decided_upto;
        for peer in self.peers() {
            if !skip.contains(peer) {
                self.send(
                    peer,
                    Message::Heartbeat {
                        ballot,
                        commit,
                        read_round,
                    },
                );
            }
        }
    }

    /// Steps down if we lead or campaign with a ballot below `ballot`.
    pub(crate) fn step_down_below(&mut self, ballot: Ballot) {
        let mine = match &self.role {
            RoleState::Leader(l) => l.ballot,
            RoleState::Candidate(c) => c.ballot,
            RoleState::Follower => return,
        };
        if mine < ballot {
            self.step_down();
        }
    }

    /// Becomes a follower with no leader known; pending reads wait for the next leader.
    pub(crate) fn step_down(&mut self) {
        let was_leader = matches!(self.role, RoleState::Leader(_));
        if matches!(self.role, RoleState::Follower) {
            return;
        }
        self.role = RoleState::Follower;
        if self.leader.is_some_and(|(n, _)| n == self.config.node) {
            self.leader = None;
        }
        self.reset_election_timer();
        if was_leader {
            self.reads_leader_changed();
        }
    }

    /// The leader's view for read rounds: its ballot, decided prefix, and the slot reads must
    /// wait for. `None` unless this node leads.
    pub(crate) fn leading(&self) -> Option<(Ballot, Slot)> {
        match &self.role {
            RoleState::Leader(l) => Some((l.ballot, l.recovered_upto)),
            _ => None,
        }
    }
}
