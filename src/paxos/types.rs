//! The vocabulary of the replicated log: slots, ballots, node ids, client commands.
//!
//! These types are shared by the Paxos core, the key-value state machine, the wire codec and the
//! write-ahead-log adapter, so they live in one place and carry no behaviour beyond ordering and
//! size accounting. `docs/architecture.md` gives the meaning of each word.

use crate::paxos::membership::{ChangeError, MemberChange};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An index in the replicated log (one Paxos instance). Slot 0 is never used: the first command
/// lands in slot 1, so revision 0 can mean "the key does not exist".
pub type Slot = u64;

/// The slot that last wrote a key, as clients see it (ETag, `OK <revision>`). 0 means "absent".
pub type Revision = u64;

/// A member of the cluster, by its id: stable for the member's life, never a position in a list
/// (a new cluster numbers its first members `0..n`; see `docs/architecture.md`).
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct NodeId(pub u16);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A proposal number: totally ordered by round, then by node id, so two nodes never share one.
/// The field order matters: the derived `Ord` compares `round` first.
/// `Default` is [`Ballot::ZERO`].
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Ballot {
    /// Increases with every election a node starts.
    pub round: u64,
    /// Breaks ties between candidates of the same round.
    pub node: NodeId,
}

impl Ballot {
    /// Lower than every ballot a node can propose (round 0 is never used for proposals).
    pub const ZERO: Ballot = Ballot {
        round: 0,
        node: NodeId(0),
    };
}

impl std::fmt::Display for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.round, self.node.0)
    }
}

/// Bits of `CommandId::seq` that count the commands of one epoch of an origin; the epoch fills
/// the bits above.
pub const COMMAND_SEQ_COUNTER_BITS: u32 = 40;

/// Identifies a client command cluster-wide so that a retried or forwarded command is applied at
/// most once. `seq` is `epoch << COMMAND_SEQ_COUNTER_BITS | counter`: the origin node picks a
/// new epoch at every start (a durable boot counter) and hands out the counters of an epoch in
/// order, which lets the state machine remember applied ids as one window per origin and epoch
/// (`crate::applied_ids`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommandId {
    /// The node that first received the command from a client.
    pub origin: NodeId,
    /// Unique per origin, across restarts.
    pub seq: u64,
}

impl CommandId {
    /// The id of the `counter`-th command `origin` handed out in `epoch` (its boot counter).
    pub fn new(origin: NodeId, epoch: u64, counter: u64) -> CommandId {
        debug_assert!(
            counter < 1 << COMMAND_SEQ_COUNTER_BITS,
            "counter overflows its bits"
        );
        CommandId {
            origin,
            seq: (epoch << COMMAND_SEQ_COUNTER_BITS) | counter,
        }
    }

    /// The origin's epoch (boot) this command was handed out in.
    pub fn epoch(&self) -> u64 {
        self.seq >> COMMAND_SEQ_COUNTER_BITS
    }

    /// The command's place among those of its origin and epoch.
    pub fn counter(&self) -> u64 {
        self.seq & ((1 << COMMAND_SEQ_COUNTER_BITS) - 1)
    }
}

/// What a client asked the key-value store to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Write `value` under `key`. With `expect: Some(rev)` it is a compare-and-swap that succeeds
    /// only if the key's current revision is `rev` (`Some(0)`: only if the key is absent).
    Put {
        key: Bytes,
        value: Bytes,
        expect: Option<Revision>,
    },
    /// Remove `key`.
    Delete { key: Bytes },
    /// Change who belongs to the cluster (`membership.rs`); it touches no key.
    ChangeMembers(MemberChange),
}

impl Op {
    /// The key this operation touches (`None`: a membership change).
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => Some(key),
            Op::ChangeMembers(_) => None,
        }
    }
}

/// A client command with its cluster-wide identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: CommandId,
    pub op: Op,
}

impl Command {
    /// An upper bound on this command's postcard-encoded size as a [`Value`] (tag included).
    pub fn encoded_bytes_max(&self) -> usize {
        // Enum tags and varints: at most 10 bytes per u64, 3 per u16, 1 per tag, 10 per length.
        const FIXED_BYTES_MAX: usize = 1 + 1 + 3 + 10 + 1 + 10 + 10 + 1 + 10;
        match &self.op {
            Op::Put { key, value, .. } => FIXED_BYTES_MAX + key.len() + value.len(),
            Op::Delete { key } => FIXED_BYTES_MAX + key.len(),
            Op::ChangeMembers(MemberChange::AddLearner { addr }) => FIXED_BYTES_MAX + addr.len(),
            Op::ChangeMembers(_) => FIXED_BYTES_MAX,
        }
    }
}

/// What a slot holds once chosen: a client command, or a no-op that a new leader uses to fill a
/// hole it found no accepted value for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Noop,
    Command(Command),
}

impl Value {
    /// An upper bound on this value's postcard-encoded size, used to fill a datagram up to its
    /// byte budget without encoding twice.
    pub fn encoded_bytes_max(&self) -> usize {
        match self {
            Value::Noop => 1,
            Value::Command(c) => c.encoded_bytes_max(),
        }
    }
}

/// What applying one decided command to the key-value state did. The node that received the
/// command from a client turns this into the reply (HTTP status, `OK <revision>`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A put wrote a key that did not exist; `revision` is the slot that wrote it.
    Created { revision: Revision },
    /// A put overwrote an existing key; `revision` is the slot that wrote it.
    Updated { revision: Revision },
    /// A delete removed an existing key.
    Deleted,
    /// A delete found no such key.
    NotFound,
    /// A compare-and-swap found another revision (0: the key is absent) and changed nothing.
    Conflict { current: Revision },
    /// A membership change was decided; it governs slots from `effective` on. `added` is the
    /// id a new member got.
    MembersChanged {
        added: Option<NodeId>,
        effective: Slot,
    },
    /// A membership change was refused (every replica refuses it alike).
    MembersRefused(ChangeError),
}

/// A key's value as stored, with the revision (slot) that last wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub value: Bytes,
    pub revision: Revision,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballots_order_by_round_then_node() {
        let a = Ballot {
            round: 1,
            node: NodeId(2),
        };
        let b = Ballot {
            round: 2,
            node: NodeId(0),
        };
        let c = Ballot {
            round: 2,
            node: NodeId(1),
        };
        assert!(Ballot::ZERO < a && a < b && b < c);
    }

    #[test]
    fn encoded_size_bound_holds() {
        let v = Value::Command(Command {
            id: CommandId {
                origin: NodeId(u16::MAX),
                seq: u64::MAX,
            },
            op: Op::Put {
                key: Bytes::from(vec![b'k'; 300]),
                value: Bytes::from(vec![b'v'; 70_000]),
                expect: Some(u64::MAX),
            },
        });
        let n = postcard::to_stdvec(&v).expect("encode").len();
        assert!(
            n <= v.encoded_bytes_max(),
            "{n} > {}",
            v.encoded_bytes_max()
        );
        assert!(postcard::to_stdvec(&Value::Noop).expect("encode").len() <= 1);
    }
}
