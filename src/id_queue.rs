//! A first-in first-out queue of command ids that is cheap to copy: the state machine's record of
//! recently applied ids (up to a million of them) must be copied at every snapshot, on the event
//! loop, and a flat copy of 16 MB stalled every client for up to tens of milliseconds.
//!
//! The ids live in fixed-size chunks behind `Arc`s. A copy clones the chunk pointers; appending
//! to a chunk that a copy still shares clones that one chunk first (copy-on-write), and whole
//! chunks are dropped from the front as ids are forgotten. It serializes exactly like a
//! `VecDeque<CommandId>` (a length, then the ids oldest first), so snapshots are unchanged.

use crate::paxos::types::CommandId;
use serde::ser::{Serialize, SerializeSeq, Serializer};
use std::collections::VecDeque;
use std::sync::Arc;

/// Ids per chunk: a copy costs one pointer per this many ids; a shared tail chunk costs up to
/// this many ids (64 KiB) to copy on the next append.
pub const ID_QUEUE_CHUNK_IDS: usize = 4096;

/// See the module documentation.
#[derive(Clone, Default)]
pub struct IdQueue {
    /// Every chunk but the last is full; none is empty.
    chunks: VecDeque<Arc<Vec<CommandId>>>,
    /// Ids of the front chunk already popped.
    head: usize,
    len: usize,
}

impl IdQueue {
    /// How many ids the queue holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the queue holds no id.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `id` as the newest.
    pub fn push_back(&mut self, id: CommandId) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < ID_QUEUE_CHUNK_IDS => Arc::make_mut(last).push(id),
            _ => {
                let mut chunk = Vec::with_capacity(ID_QUEUE_CHUNK_IDS);
                chunk.push(id);
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    /// Removes and returns the oldest id.
    pub fn pop_front(&mut self) -> Option<CommandId> {
        let first = self.chunks.front()?;
        let id = first[self.head];
        self.head += 1;
        if self.head == first.len() {
            self.chunks.pop_front();
            self.head = 0;
        }
        self.len -= 1;
        Some(id)
    }

    /// The ids, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &CommandId> + '_ {
        let head = self.head;
        self.chunks
            .iter()
            .enumerate()
            .flat_map(move |(i, chunk)| chunk[if i == 0 { head } else { 0 }..].iter())
    }
}

impl From<Vec<CommandId>> for IdQueue {
    fn from(ids: Vec<CommandId>) -> IdQueue {
        let mut queue = IdQueue::default();
        for id in ids {
            queue.push_back(id);
        }
        queue
    }
}

impl PartialEq for IdQueue {
    fn eq(&self, other: &IdQueue) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for IdQueue {}

impl std::fmt::Debug for IdQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for IdQueue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for id in self.iter() {
            seq.serialize_element(id)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::types::NodeId;
    use proptest::prelude::*;

    fn id(seq: u64) -> CommandId {
        CommandId {
            origin: NodeId(3),
            seq,
        }
    }

    proptest! {
        /// Against a VecDeque: same contents after any pushes and pops, same bytes when
        /// serialized, and a copy taken midway never changes.
        #[test]
        fn behaves_like_a_vecdeque(ops in proptest::collection::vec(0u8..4, 0..20_000)) {
            let mut queue = IdQueue::default();
            let mut model = VecDeque::new();
            let mut copy: Option<(IdQueue, VecDeque<CommandId>)> = None;
            for (i, op) in ops.iter().enumerate() {
                if *op == 0 {
                    prop_assert_eq!(queue.pop_front(), model.pop_front());
                } else {
                    queue.push_back(id(i as u64));
                    model.push_back(id(i as u64));
                }
                if i == ops.len() / 2 {
                    copy = Some((queue.clone(), model.clone()));
                }
            }
            prop_assert_eq!(queue.len(), model.len());
            prop_assert!(queue.iter().eq(model.iter()));
            prop_assert_eq!(
                postcard::to_stdvec(&queue).expect("encodes"),
                postcard::to_stdvec(&model).expect("encodes")
            );
            if let Some((queue_then, model_then)) = copy {
                prop_assert!(queue_then.iter().eq(model_then.iter()));
            }
        }
    }

    #[test]
    fn a_copy_shares_full_chunks() {
        let queue = IdQueue::from(
            (0..(3 * ID_QUEUE_CHUNK_IDS as u64))
                .map(id)
                .collect::<Vec<_>>(),
        );
        let copy = queue.clone();
        assert!(queue
            .chunks
            .iter()
            .zip(copy.chunks.iter())
            .all(|(a, b)| Arc::ptr_eq(a, b)));
        assert_eq!(copy, queue);
    }
}
