//! The Multi-Paxos core: a pure state machine. No IO, no clock, no threads, no randomness of its
//! own: the caller feeds it inputs and carries out the effects it hands back as data, which is
//! what lets the deterministic simulator (`tests/simulation.rs`) replay any run from its seed.
//!
//! # The contract
//!
//! Inputs, to a [`Replica`]:
//! - [`Replica::receive`]: a message from another member;
//! - [`Replica::tick`]: one unit of logical time (every timeout is counted in ticks);
//! - [`Replica::propose`]: a client command (put, delete, compare-and-swap), with a unique id;
//! - [`Replica::read`]: a linearizable read;
//! - [`Replica::durable`]: the first N records handed out are durable;
//! - [`Replica::transfer_leadership`]: an operator asks for leadership to move to a voter;
//! - [`Replica::snapshot_taken`] / [`Replica::snapshot_installed`]: the state machine's
//!   snapshot covers a prefix of the log.
//!
//! Outputs: [`Replica::take_ready`] returns a [`Ready`]. The caller carries it out in order:
//! 1. append `ready.persist` to stable storage, in order;
//! 2. send `ready.messages`;
//! 3. sync the storage, then call `durable(ready.persist_upto)`;
//! 4. apply `ready.apply` to the state machine (slot order, no gaps), then answer the clients
//!    whose commands were applied;
//! 5. answer `ready.reads_ready` from the state machine;
//! 6. ship a snapshot to every peer in `ready.send_snapshot`;
//!
//! and calls `take_ready` again until it comes back empty (`durable` may release messages).
//!
//! **The ordering rule is in the types.** A promise, a vote, or anything else that vouches for
//! acceptor state is never put in `ready.messages` before the records it depends on were
//! reported durable: the core holds it back and releases it from `durable()`. A caller that
//! sends everything `take_ready` gives it, whenever it likes, cannot break the rule; a caller that
//! never calls `durable` simply never votes.
//!
//! **Restart.** The caller folds the durable records, in order, into a [`Recovered`]
//! ([`Recovered::apply`]), applies its snapshot with [`Recovered::snapshot_installed`], and builds
//! a new `Replica` from it. Decided slots above the snapshot are handed out for applying again.
//!
//! **What the core assumes of storage**: a record reported durable is never lost; records become
//! durable in the order they were handed out. A node that lost its storage starts from
//! [`Recovered::empty`] and does not vote until it has completed the safe join (`join.rs`).
//!
//! # Invariants asserted
//! A promise never goes down (`Replica::promise`); a decided slot never changes value
//! (`learner.rs`, `decide`); slots are applied in order with no gaps (`apply_decided`); the
//! caller never reports more records durable than were handed out (`durable`).
//!
//! # Layout
//! `types` (shared vocabulary), `message` (what travels), `storage` (records, recovered state),
//! `config`, `ready` (outputs, status), `replica` (state and plumbing), `acceptor`, `leader`,
//! `learner`, `reads`, `join`, `handover` (leadership transfer), `guard` (what a leader refuses
//! to change), `membership` (who belongs and
//! who votes), `member_history` (which membership governs which slot),
//! `quorum`, `rng`. The protocol as built is described in
//! `docs/paxos.md`.

mod acceptor;
pub mod config;
mod guard;
mod handover;
pub(crate) mod idhash;
mod join;
mod leader;
mod learner;
pub mod member_history;
pub mod membership;
pub mod message;
mod quorum;
mod reads;
pub mod ready;
pub mod replica;
pub mod rng;
pub mod storage;
pub mod types;

pub use config::{Config, PlantedCoreBug};
pub use guard::PROMOTION_LAG_SLOTS_MAX;
pub use handover::TransferError;
pub use member_history::{MemberHistory, MEMBER_CHANGE_DELAY_SLOTS};
pub use membership::{
    ChangeError, Member, MemberChange, MemberRole, Membership, MembershipError, VOTERS_MAX,
};
pub use message::{Message, SlotState};
pub use ready::{FollowerStatus, ReadId, Ready, ReplicaStatus, Role};
pub use replica::{ProposeError, Replica};
pub use storage::{PersistIndex, Record, Recovered};

/// At most this many read ids travel in one `ReadIndex` message.
pub const READ_IDS_PER_MESSAGE_MAX: usize = 4096;
#[cfg(test)]
mod tests;
