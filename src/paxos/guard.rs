//! Guard rails on membership changes: what a leader refuses to propose, because it knows what
//! no other member does (how far each member has caught up, who answered lately). The
//! mistakes they stop are the ones users make with etcd and Consul: promoting a member that is
//! still far behind (the cluster stalls while it catches up, or loses its majority), and
//! removing members until the rest cannot reach a majority of themselves.
//!
//! A refused change is not dropped: the leader proposes it as `MemberChange::Refused` with the
//! reason, so that whichever member the operator asked answers with it, as it would with the
//! decided change. Safety never rests on these checks; they are about liveness.

use crate::paxos::leader::FollowerProgress;
use crate::paxos::membership::{MemberChange, MemberRole, Membership};
use crate::paxos::types::{NodeId, Slot};
use std::collections::BTreeMap;

/// A learner is caught up, and may be promoted, when the decided prefix it last reported is at
/// most this many slots behind the leader's.
pub const PROMOTION_LAG_SLOTS_MAX: u64 = 1_000;

/// What the leader knows of the cluster right now.
pub(crate) struct LeaderView<'a> {
    pub(crate) me: NodeId,
    pub(crate) now: u64,
    /// A member heard from within this many ticks counts as reachable.
    pub(crate) contact_window_ticks: u64,
    pub(crate) decided_upto: Slot,
    pub(crate) newest: &'a Membership,
    pub(crate) followers: &'a BTreeMap<NodeId, FollowerProgress>,
}

impl LeaderView<'_> {
    fn heard_recently(&self, id: NodeId) -> bool {
        id == self.me
            || self
                .followers
                .get(&id)
                .is_some_and(|f| self.now < f.heard_at + self.contact_window_ticks)
    }

    /// Why the leader refuses `change`, if it does.
    pub(crate) fn refusal(&self, change: &MemberChange) -> Option<String> {
        match change {
            MemberChange::Promote { id } => {
                let learner = self
                    .newest
                    .member(*id)
                    .is_some_and(|m| m.role == MemberRole::Learner);
                if !learner {
                    return None; // refused when applied, with the precise reason
                }
                let Some(f) = self.followers.get(id) else {
                    return Some(format!("member {} has never answered the leader", id.0));
                };
                if !self.heard_recently(*id) {
                    return Some(format!(
                        "member {} has not answered the leader lately; promote it once it is up \
                         and caught up",
                        id.0
                    ));
                }
                let behind = self.decided_upto.saturating_sub(f.decided);
                (behind > PROMOTION_LAG_SLOTS_MAX).then(|| {
                    format!(
                        "member {} has caught up to slot {} of {} ({behind} behind, at most \
                         {PROMOTION_LAG_SLOTS_MAX} allowed); promote it once it has caught up \
                         (`consens member list` shows how far it is)",
                        id.0, f.decided, self.decided_upto
                    )
                })
            }
            MemberChange::Remove { id, force: false } => {
                let staying: Vec<NodeId> = self
                    .newest
                    .voters()
                    .iter()
                    .copied()
                    .filter(|v| v != id)
                    .collect();
                if staying.is_empty() {
                    return None; // refused when applied: the last voter
                }
                let reachable = staying.iter().filter(|v| self.heard_recently(**v)).count();
                (reachable <= staying.len() / 2).then(|| {
                    format!(
                        "removing member {} would leave {reachable} of the {} voters that stay \
                         reachable, no majority of them; bring the others back first, or force \
                         the removal (the cluster stays unavailable until a majority of them is \
                         back)",
                        id.0,
                        staying.len()
                    )
                })
            }
            MemberChange::ForceSole { .. } => Some(
                "making one member the only one is done with `consens recover \
                 --force-new-cluster` on a stopped node, never through the cluster"
                    .to_string(),
            ),
            MemberChange::AddLearner { .. }
            | MemberChange::Remove { force: true, .. }
            | MemberChange::Refused { .. } => None,
        }
    }
}
