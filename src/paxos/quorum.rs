//! Sets of members: who promised, who accepted a slot, who acknowledged a read round. Ids are
//! not dense (`membership.rs`), so a set is a short inline list rather than a bit mask; sets are
//! counted against one membership's voters, so a set never needs more room than two of them.

use crate::paxos::membership::VOTERS_MAX;
use crate::paxos::types::NodeId;

/// How many members a set holds at most: the voters of an old and of a new configuration.
const MEMBER_SET_CAPACITY: usize = 2 * VOTERS_MAX;

/// A set of members.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberSet {
    len: u8,
    ids: [NodeId; MEMBER_SET_CAPACITY],
}

impl MemberSet {
    /// The set holding only `node`.
    pub fn of(node: NodeId) -> MemberSet {
        let mut set = MemberSet::default();
        set.insert(node);
        set
    }

    /// Adds `node`; returns whether it was new.
    pub fn insert(&mut self, node: NodeId) -> bool {
        if self.contains(node) {
            return false;
        }
        let len = usize::from(self.len);
        assert!(
            len < MEMBER_SET_CAPACITY,
            "a member set holds at most {MEMBER_SET_CAPACITY} members"
        );
        self.ids[len] = node;
        self.len += 1;
        true
    }

    pub fn contains(&self, node: NodeId) -> bool {
        self.ids[..usize::from(self.len)].contains(&node)
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_members() {
        let mut s = MemberSet::of(NodeId(3));
        assert!(!s.insert(NodeId(3)));
        assert!(s.insert(NodeId(60_000)));
        assert!(s.contains(NodeId(60_000)) && !s.contains(NodeId(0)));
        assert_eq!(s.len(), 2);
    }
}
