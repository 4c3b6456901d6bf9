//! [`Membership`]: who belongs to the cluster, who of them votes, and how a [`MemberChange`]
//! turns one membership into the next. Members are named by their id, not by a position, so
//! that a member keeps its id when others come and go; ids are handed out in increasing order
//! and never reused (a removed member that comes back is a new member).
//!
//! A change is a command in the replicated log: every replica applies the same changes in the
//! same order with [`Membership::apply`], which is deterministic, so all agree on the outcome.
//! Which slots a membership governs is `member_history.rs`'s concern.

use crate::paxos::quorum::MemberSet;
use crate::paxos::types::NodeId;
use serde::{Deserialize, Serialize};

/// The most voters a cluster may have. Quorum sets are inline arrays sized from it (see
/// `quorum.rs`); beyond nine, every write waits for more syncs than it gains in fault tolerance.
pub const VOTERS_MAX: usize = 9;
/// The most learners a cluster may have at once (each costs the leader a stream of accepts).
pub const LEARNERS_MAX: usize = 8;
/// The longest member address accepted (`host:port`), in bytes.
pub const MEMBER_ADDR_BYTES_MAX: usize = 255;

/// Whether a member votes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    /// Counts towards every quorum of the slots its membership governs.
    Voter,
    /// Receives the log and serves stale reads, but its votes and promises count for nothing.
    Learner,
}

impl MemberRole {
    /// The name users see (`/_members`, `MEMBERS`, `consens member list`).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
        }
    }
}

/// One member: its id, the address its peers reach it at (`host:port`, as the operator gave
/// it: the core never resolves it), and its role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub addr: String,
    pub role: MemberRole,
}

/// The members of a cluster: distinct ids, sorted, `1..=VOTERS_MAX` voters and at most
/// `LEARNERS_MAX` learners, and the next id to hand out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MembershipWire", into = "MembershipWire")]
pub struct Membership {
    members: Vec<Member>,
    /// Ids of the voters, sorted (derived from `members`).
    voters: Vec<NodeId>,
    /// Above every id ever handed out in this cluster.
    next_id: u16,
}

/// How a membership travels (snapshots, log values): decoding re-checks every rule.
#[derive(Serialize, Deserialize)]
struct MembershipWire {
    members: Vec<Member>,
    next_id: u16,
}

impl TryFrom<MembershipWire> for Membership {
    type Error = MembershipError;
    fn try_from(wire: MembershipWire) -> Result<Membership, MembershipError> {
        Membership::with_next_id(wire.members, wire.next_id)
    }
}

impl From<Membership> for MembershipWire {
    fn from(m: Membership) -> MembershipWire {
        MembershipWire {
            members: m.members,
            next_id: m.next_id,
        }
    }
}

/// Why a list of members is not a membership.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("a cluster needs at least one voter")]
    Empty,
    #[error("{0} voters; at most {VOTERS_MAX} are supported")]
    TooMany(usize),
    #[error("{0} learners; at most {LEARNERS_MAX} are supported")]
    TooManyLearners(usize),
    #[error("member {0} is listed twice")]
    Duplicate(NodeId),
    #[error("member id {0} is not below the next id to hand out")]
    IdNotBelowNext(NodeId),
}

/// A change to the membership, decided through the log like any command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// A new member at `addr` joins as a learner; it gets the next unused id.
    AddLearner { addr: String },
    /// Learner `id` becomes a voter.
    Promote { id: NodeId },
    /// Member `id` (voter or learner) leaves for good. Unless `force`, the leader refuses it when
    /// the voters that stay could not reach a majority of themselves.
    Remove { id: NodeId, force: bool },
    /// Disaster recovery (`consens recover --force-new-cluster`): `id` becomes the only member,
    /// a voter, from the next slot on. Never proposed through consensus: the recovering node
    /// writes it into its own log, because the majority that could decide it is gone.
    ForceSole { id: NodeId },
    /// A change the leader refused before proposing it (`reason` says why: a learner not caught
    /// up, a removal that leaves no reachable majority). It is decided like the change would
    /// have been, so that the member that asked, whichever it is, gets the answer.
    Refused {
        change: Box<MemberChange>,
        reason: String,
    },
}

/// Why a change was refused. Refusing is deterministic: every replica refuses the same changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChangeError {
    #[error("{0} is not a member")]
    NotAMember(NodeId),
    #[error("{0} is already a voter")]
    AlreadyAVoter(NodeId),
    #[error("{0} is the last voter; add and promote another member first")]
    LastVoter(NodeId),
    #[error("the cluster already has {VOTERS_MAX} voters")]
    TooManyVoters,
    #[error("the cluster already has {LEARNERS_MAX} learners; promote or remove one first")]
    TooManyLearners,
    #[error("address {0} already belongs to member {1}")]
    AddressInUse(String, NodeId),
    #[error("address {0:?} is not host:port of at most {MEMBER_ADDR_BYTES_MAX} bytes")]
    BadAddress(String),
    #[error("member ids are exhausted")]
    IdsExhausted,
    #[error("refused: {0}")]
    Unsafe(String),
}

impl Membership {
    /// The membership of these voters, in any order, with no addresses (tests, the simulator).
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Result<Membership, MembershipError> {
        Membership::of_members(
            voters
                .into_iter()
                .map(|id| Member {
                    id,
                    addr: String::new(),
                    role: MemberRole::Voter,
                })
                .collect(),
        )
    }

    /// Voters `0..count`: the ids a newly bootstrapped cluster gives its members.
    pub fn first_ids(count: u16) -> Result<Membership, MembershipError> {
        Membership::new((0..count).map(NodeId))
    }

    /// The membership of these members; the next id is above the highest of them.
    pub fn of_members(members: Vec<Member>) -> Result<Membership, MembershipError> {
        let next_id = members
            .iter()
            .map(|m| m.id.0)
            .max()
            .map_or(0, |id| id.saturating_add(1));
        Membership::with_next_id(members, next_id)
    }

    /// The membership of these members, handing out `next_id` next.
    pub fn with_next_id(
        mut members: Vec<Member>,
        next_id: u16,
    ) -> Result<Membership, MembershipError> {
        members.sort_by_key(|m| m.id);
        if let Some(pair) = members.windows(2).find(|pair| pair[0].id == pair[1].id) {
            return Err(MembershipError::Duplicate(pair[0].id));
        }
        if let Some(m) = members.iter().find(|m| m.id.0 >= next_id) {
            return Err(MembershipError::IdNotBelowNext(m.id));
        }
        let voters: Vec<NodeId> = members
            .iter()
            .filter(|m| m.role == MemberRole::Voter)
            .map(|m| m.id)
            .collect();
        let learners = members.len() - voters.len();
        match voters.len() {
            0 => Err(MembershipError::Empty),
            n if n > VOTERS_MAX => Err(MembershipError::TooMany(n)),
            _ if learners > LEARNERS_MAX => Err(MembershipError::TooManyLearners(learners)),
            _ => Ok(Membership {
                members,
                voters,
                next_id,
            }),
        }
    }

    /// The voters, sorted by id.
    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    /// Every member, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| &self.members[i])
    }

    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters.binary_search(&node).is_ok()
    }

    pub fn is_member(&self, node: NodeId) -> bool {
        self.member(node).is_some()
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `set` holds a majority of the voters (members of `set` that do not vote here
    /// count for nothing).
    pub fn is_quorum(&self, set: &MemberSet) -> bool {
        self.voters.iter().filter(|v| set.contains(**v)).count() >= self.quorum()
    }

    /// The id the next added member gets.
    pub fn next_id(&self) -> u16 {
        self.next_id
    }

    /// The membership after `change`, and the id of the member it added.
    pub fn apply(
        &self,
        change: &MemberChange,
    ) -> Result<(Membership, Option<NodeId>), ChangeError> {
        let mut members = self.members.clone();
        let mut next_id = self.next_id;
        let mut added = None;
        match change {
            MemberChange::AddLearner { addr } => {
                if addr.is_empty() || addr.len() > MEMBER_ADDR_BYTES_MAX || !addr.contains(':') {
                    return Err(ChangeError::BadAddress(addr.clone()));
                }
                if let Some(m) = members.iter().find(|m| m.addr == *addr) {
                    return Err(ChangeError::AddressInUse(addr.clone(), m.id));
                }
                if members.len() - self.voters.len() >= LEARNERS_MAX {
                    return Err(ChangeError::TooManyLearners);
                }
                if next_id == u16::MAX {
                    return Err(ChangeError::IdsExhausted);
                }
                let id = NodeId(next_id);
                next_id += 1;
                members.push(Member {
                    id,
                    addr: addr.clone(),
                    role: MemberRole::Learner,
                });
                added = Some(id);
            }
            MemberChange::Promote { id } => {
                let member = members
                    .iter_mut()
                    .find(|m| m.id == *id)
                    .ok_or(ChangeError::NotAMember(*id))?;
                if member.role == MemberRole::Voter {
                    return Err(ChangeError::AlreadyAVoter(*id));
                }
                if self.voters.len() >= VOTERS_MAX {
                    return Err(ChangeError::TooManyVoters);
                }
                member.role = MemberRole::Voter;
            }
            MemberChange::Remove { id, .. } => {
                if !self.is_member(*id) {
                    return Err(ChangeError::NotAMember(*id));
                }
                if self.voters == [*id] {
                    return Err(ChangeError::LastVoter(*id));
                }
                members.retain(|m| m.id != *id);
            }
            MemberChange::Refused { reason, .. } => {
                return Err(ChangeError::Unsafe(reason.clone()))
            }
            MemberChange::ForceSole { id } => {
                if id.0 == u16::MAX {
                    return Err(ChangeError::IdsExhausted);
                }
                let addr = self.member(*id).map(|m| m.addr.clone()).unwrap_or_default();
                members = vec![Member {
                    id: *id,
                    addr,
                    role: MemberRole::Voter,
                }];
                next_id = next_id.max(id.0.saturating_add(1));
            }
        }
        let next = Membership::with_next_id(members, next_id)
            .unwrap_or_else(|e| panic!("a checked change made an invalid membership: {e}"));
        Ok((next, added))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(m: &Membership, addr: &str) -> (Membership, NodeId) {
        let (next, added) = m
            .apply(&MemberChange::AddLearner { addr: addr.into() })
            .expect("added");
        (next, added.expect("an id"))
    }

    #[test]
    fn ids_need_not_be_dense_and_are_kept_sorted() {
        let m = Membership::new([NodeId(7), NodeId(2), NodeId(40)]).expect("valid");
        assert_eq!(m.voters(), &[NodeId(2), NodeId(7), NodeId(40)]);
        assert!(m.is_voter(NodeId(7)) && !m.is_voter(NodeId(3)));
        assert_eq!(m.quorum(), 2);
        assert_eq!(m.next_id(), 41);
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        assert_eq!(Membership::new([]), Err(MembershipError::Empty));
        assert_eq!(
            Membership::new([NodeId(1), NodeId(1)]),
            Err(MembershipError::Duplicate(NodeId(1)))
        );
        assert_eq!(
            Membership::first_ids(VOTERS_MAX as u16 + 1),
            Err(MembershipError::TooMany(VOTERS_MAX + 1))
        );
        assert_eq!(Membership::first_ids(4).expect("valid").quorum(), 3);
    }

    #[test]
    fn learners_join_with_fresh_ids_and_a_removed_id_is_never_reused() {
        let m = Membership::first_ids(3).expect("valid");
        let (m, four) = add(&m, "10.0.0.4:3000");
        assert_eq!(four, NodeId(3));
        assert!(m.is_member(four) && !m.is_voter(four));
        assert_eq!(m.quorum(), 2, "a learner does not change the quorum");
        let (m, _) = m
            .apply(&MemberChange::Promote { id: four })
            .expect("promoted");
        assert!(m.is_voter(four) && m.quorum() == 3);
        let (m, _) = m
            .apply(&MemberChange::Remove {
                id: four,
                force: false,
            })
            .expect("removed");
        let (_, again) = add(&m, "10.0.0.4:3000");
        assert_eq!(again, NodeId(4), "a member that comes back is a new member");
    }

    #[test]
    fn every_refusal_names_its_cause() {
        let one = Membership::first_ids(1).expect("valid");
        assert_eq!(
            one.apply(&MemberChange::Remove {
                id: NodeId(0),
                force: false
            }),
            Err(ChangeError::LastVoter(NodeId(0)))
        );
        assert_eq!(
            one.apply(&MemberChange::Promote { id: NodeId(0) }),
            Err(ChangeError::AlreadyAVoter(NodeId(0)))
        );
        assert_eq!(
            one.apply(&MemberChange::Promote { id: NodeId(5) }),
            Err(ChangeError::NotAMember(NodeId(5)))
        );
        assert_eq!(
            one.apply(&MemberChange::AddLearner {
                addr: "nocolon".into()
            }),
            Err(ChangeError::BadAddress("nocolon".into()))
        );
        let (with_learner, id) = add(&one, "h:1");
        assert_eq!(
            with_learner.apply(&MemberChange::AddLearner { addr: "h:1".into() }),
            Err(ChangeError::AddressInUse("h:1".into(), id))
        );
        let mut full = one.clone();
        for i in 0..LEARNERS_MAX {
            full = add(&full, &format!("h:{i}")).0;
        }
        assert_eq!(
            full.apply(&MemberChange::AddLearner {
                addr: "h:99".into()
            }),
            Err(ChangeError::TooManyLearners)
        );
        let nine = Membership::first_ids(VOTERS_MAX as u16).expect("valid");
        let (nine, learner) = add(&nine, "h:10");
        assert_eq!(
            nine.apply(&MemberChange::Promote { id: learner }),
            Err(ChangeError::TooManyVoters)
        );
    }

    #[test]
    fn a_forced_sole_member_keeps_its_id_and_address() {
        let m = Membership::first_ids(3).expect("valid");
        let (m, _) = add(&m, "h:1");
        let (m, _) = m
            .apply(&MemberChange::ForceSole { id: NodeId(3) })
            .expect("forced");
        assert_eq!(m.voters(), &[NodeId(3)]);
        assert_eq!(m.members()[0].addr, "h:1");
        assert_eq!(m.next_id(), 4);
    }

    #[test]
    fn a_decoded_membership_is_checked_again() {
        let m = Membership::first_ids(3).expect("valid");
        let bytes = postcard::to_stdvec(&m).expect("encode");
        assert_eq!(
            postcard::from_bytes::<Membership>(&bytes).expect("decode"),
            m
        );
        let bad = postcard::to_stdvec(&MembershipWire {
            members: m.members().to_vec(),
            next_id: 1,
        })
        .expect("encode");
        assert!(postcard::from_bytes::<Membership>(&bad).is_err());
    }
}
