//! Sets of members as 64-bit masks: who promised, who accepted a slot, who acknowledged a read
//! round. Members are at most [`MEMBERS_MAX`](crate::paxos::config::MEMBERS_MAX).

use crate::paxos::types::NodeId;

/// A set of members.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberSet(u64);

impl MemberSet {
    /// The set holding only `node`.
    pub fn of(node: NodeId) -> MemberSet {
        let mut set = MemberSet::default();
        set.insert(node);
        set
    }

    /// Adds `node`; returns whether it was new.
    pub fn insert(&mut self, node: NodeId) -> bool {
        let bit = 1u64 << node.0;
        let new = self.0 & bit == 0;
        self.0 |= bit;
        new
    }

    pub fn contains(&self, node: NodeId) -> bool {
        self.0 & (1u64 << node.0) != 0
    }

    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_members() {
        let mut s = MemberSet::of(NodeId(3));
        assert!(!s.insert(NodeId(3)));
        assert!(s.insert(NodeId(63)));
        assert!(s.contains(NodeId(63)) && !s.contains(NodeId(0)));
        assert_eq!(s.len(), 2);
    }
}
