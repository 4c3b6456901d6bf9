//! [`Membership`]: who votes. Members are named by their id, not by a position, so that a
//! member keeps its id when others come and go and an id never has to be dense.

use crate::paxos::types::NodeId;

/// The most voters a cluster may have. Quorum sets are inline arrays sized from it (see
/// `quorum.rs`); beyond nine, every write waits for more syncs than it gains in fault tolerance.
pub const VOTERS_MAX: usize = 9;

/// The voting members of a cluster: distinct ids, sorted, `1..=VOTERS_MAX` of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    voters: Vec<NodeId>,
}

/// Why a list of ids is not a membership.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("a cluster needs at least one voter")]
    Empty,
    #[error("{0} voters; at most {VOTERS_MAX} are supported")]
    TooMany(usize),
    #[error("member {0} is listed twice")]
    Duplicate(NodeId),
}

impl Membership {
    /// The membership of these voters, in any order.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Result<Membership, MembershipError> {
        let mut voters: Vec<NodeId> = voters.into_iter().collect();
        voters.sort();
        if let Some(pair) = voters.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(MembershipError::Duplicate(pair[0]));
        }
        match voters.len() {
            0 => Err(MembershipError::Empty),
            n if n > VOTERS_MAX => Err(MembershipError::TooMany(n)),
            _ => Ok(Membership { voters }),
        }
    }

    /// Voters `0..count`: the ids a newly bootstrapped cluster gives its members.
    pub fn first_ids(count: u16) -> Result<Membership, MembershipError> {
        Membership::new((0..count).map(NodeId))
    }

    /// The voters, sorted by id.
    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters.binary_search(&node).is_ok()
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_need_not_be_dense_and_are_kept_sorted() {
        let m = Membership::new([NodeId(7), NodeId(2), NodeId(40)]).expect("valid");
        assert_eq!(m.voters(), &[NodeId(2), NodeId(7), NodeId(40)]);
        assert!(m.is_voter(NodeId(7)) && !m.is_voter(NodeId(3)));
        assert_eq!(m.quorum(), 2);
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
}
