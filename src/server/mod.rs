//! The client-facing servers and the view of the node they share.
//!
//! The servers turn bytes from clients into requests and replies into bytes; they never touch
//! Paxos (`docs/architecture.md`). What they need from the node is the [`Store`] trait: propose a write and
//! wait for its [`Outcome`], read a key, report status and health. The node implements it over
//! its event loop; [`memory::MemoryStore`] implements it over a local [`crate::kv::KvState`] for
//! tests and benches.
//!
//! - [`http`]: the HTTP API (axum), for curl and programs.
//! - [`line`](mod@line): the line protocol, for netcat; its wire format (shared with the
//!   client) is [`crate::line_protocol`].
//!
//! Both servers share the limits below and the key rules of [`validate_key`].

use std::future::Future;

use bytes::Bytes;
use serde::Serialize;

use crate::paxos::types::{Entry, Op, Outcome};

pub mod http;
pub mod line;
pub mod members;
pub mod memory;

/// The longest key, in bytes. Keys travel in every Accept of their slot and in the line
/// protocol's request line, so they stay short.
pub const KEY_BYTES_MAX: usize = 1024;

/// The longest value, in bytes. A command must fit one UDP datagram with its key and the
/// message overhead: 60 KiB + [`KEY_BYTES_MAX`] + a few hundred bytes of framing stays below
/// [`crate::net::codec::DATAGRAM_BYTES_MAX`] (65,507).
pub const VALUE_BYTES_MAX: usize = 60 * 1024;

/// Keys starting with this byte are reserved for endpoints such as `/_status`.
pub const KEY_RESERVED_PREFIX: u8 = b'_';

/// How fresh a read must be.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read started (goes through the leader).
    Linearizable,
    /// This node's applied state, possibly behind the cluster; served even without a quorum.
    Stale,
}

/// Why the node could not serve a request. HTTP answers with the `Display` text (a name, then
/// [`StoreError::detail`]); the line protocol with an error kind and the detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No quorum was reachable; the request was not proposed, so retrying is safe.
    NoQuorum,
    /// The request was proposed but its decision was not seen in time (`docs/architecture.md`:
    /// timeouts are not failures).
    OutcomeUnknown,
    /// The node cannot serve now for the given reason (catching up, no leader known, ...).
    Unavailable(String),
    /// The node is stopping and takes no new requests.
    ShuttingDown,
    /// The node refused the request as too large to replicate (the servers already enforce
    /// [`KEY_BYTES_MAX`] and [`VALUE_BYTES_MAX`]; this is the node's own last check).
    TooLarge,
}

impl StoreError {
    /// What happened, for the person at the terminal, without the error's name.
    pub fn detail(&self) -> String {
        match self {
            StoreError::NoQuorum => "the request was not proposed".to_string(),
            StoreError::OutcomeUnknown => "the request was proposed but not confirmed in time; \
                it may or may not have been applied"
                .to_string(),
            StoreError::Unavailable(why) => why.clone(),
            StoreError::ShuttingDown => "the node takes no new requests".to_string(),
            StoreError::TooLarge => "the request does not fit one replicated command".to_string(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            StoreError::NoQuorum => "no quorum",
            StoreError::OutcomeUnknown => "outcome unknown",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::ShuttingDown => "shutting down",
            StoreError::TooLarge => "too large",
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name(), self.detail())
    }
}

impl std::error::Error for StoreError {}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// The member's id (stable across address changes).
    pub id: u16,
    /// The member's advertised peer address.
    pub addr: String,
    /// "voter" (it votes in every quorum) or "learner" (it receives the log, and votes once
    /// promoted).
    pub role: String,
    /// Whether this entry is the node answering.
    pub is_self: bool,
    /// How long ago this node last heard from the member (0 for itself); `None` if never.
    pub last_heard_ms_ago: Option<u64>,
    /// The slot the member has caught up to (its decided prefix), where the answering node knows
    /// it: its own always; every member's on the leader (from their heartbeat answers); the
    /// leader's on a follower.
    pub decided: Option<u64>,
}

/// The role of a member that votes (the other is "learner").
pub const MEMBER_ROLE_VOTER: &str = "voter";

/// A member's id and peer address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberAddr {
    pub id: u16,
    pub addr: String,
}

/// A snapshot of the node's state for `/_status` and `STATUS`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// This node's advertised address.
    pub node: String,
    /// This node's member id (`docs/architecture.md`, "Node identity").
    pub node_id: u16,
    /// "leader", "follower", "candidate", ... as the node calls it.
    pub role: String,
    /// The address of the leader this node believes in, if any.
    pub leader: Option<String>,
    /// That leader's member id.
    pub leader_id: Option<u16>,
    /// The highest ballot this node knows, as `round.node`.
    pub ballot: String,
    /// The highest slot known decided.
    pub decided: u64,
    /// The highest slot applied to the key-value state.
    pub applied: u64,
    /// The digest of the key-value state at `applied`, as 16 hex digits (`KvState::digest`):
    /// two nodes that show the same `applied` must show the same digest.
    pub digest: String,
    /// Every member of a membership in force, including this node.
    pub members: Vec<MemberStatus>,
    /// The cluster's id, as 16 hex digits (it tags every datagram, WAL segment and snapshot).
    pub cluster_id: String,
    /// The members the cluster was created with: its membership history starts from them,
    /// so a node joining the cluster needs them.
    pub first_members: Vec<MemberAddr>,
    /// Peer datagrams by fate: sent, received, and dropped by reason (oversized, malformed,
    /// from another cluster, failing the MAC check, from a non-member, queue full).
    pub datagrams: std::collections::BTreeMap<String, u64>,
}

/// What the servers need from the node. Cheap to clone (an `Arc` inside): every connection and
/// every in-flight request holds a clone.
pub trait Store: Clone + Send + Sync + 'static {
    /// Proposes `op` and waits until it is decided and applied, returning what it did.
    fn write(&self, op: Op) -> impl Future<Output = Result<Outcome, StoreError>> + Send;
    /// Reads `key` at the given consistency.
    fn read(
        &self,
        key: Bytes,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send;
    /// Moves leadership to member `to` (a voter, checked with [`check_transfer_target`]) and
    /// waits until this node sees it lead.
    fn transfer_leadership(&self, to: u16) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The node's current state, for humans.
    fn status(&self) -> NodeStatus;
    /// Whether the node can reach a quorum (and so serve writes and linearizable reads).
    fn healthy(&self) -> bool;
    /// The node's metrics in the Prometheus text format, if it keeps any (`/_metrics`).
    fn metrics_text(&self) -> Option<String> {
        None
    }
}

/// Whether `id` names a voter of the cluster `status` describes; the error says which members
/// there are and where to see them.
pub fn check_transfer_target(status: &NodeStatus, id: u16) -> Result<(), String> {
    let voter = status
        .members
        .iter()
        .any(|m| m.id == id && m.role == MEMBER_ROLE_VOTER);
    if voter {
        return Ok(());
    }
    let ids: Vec<String> = status.members.iter().map(|m| m.id.to_string()).collect();
    Err(format!(
        "member {id} is not a voter of this cluster (voters: {}); `consens member list` shows them",
        ids.join(", ")
    ))
}

/// Why a key is refused. The `Display` text is "invalid key: " and the [`KeyError::detail`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    TooLong { len: usize },
    Reserved,
    ControlOrSpace,
}

impl KeyError {
    /// What is wrong with the key.
    pub fn detail(&self) -> String {
        match self {
            KeyError::Empty => "empty".to_string(),
            KeyError::TooLong { len } => format!("{len} bytes, the maximum is {KEY_BYTES_MAX}"),
            KeyError::Reserved => "keys starting with '_' are reserved".to_string(),
            KeyError::ControlOrSpace => "spaces and control characters are not allowed".to_string(),
        }
    }
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid key: {}", self.detail())
    }
}

impl std::error::Error for KeyError {}

/// The rules every key obeys, whichever server it came through: 1..=[`KEY_BYTES_MAX`] bytes,
/// not starting with [`KEY_RESERVED_PREFIX`]. Other bytes are allowed (HTTP keys are raw,
/// percent-decoded bytes).
pub fn validate_key(key: &[u8]) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(KeyError::TooLong { len: key.len() });
    }
    if key[0] == KEY_RESERVED_PREFIX {
        return Err(KeyError::Reserved);
    }
    Ok(())
}

/// [`validate_key`] plus the line protocol's rule: no spaces or control characters (they would
/// be taken as separators or garble a terminal).
pub fn validate_line_key(key: &[u8]) -> Result<(), KeyError> {
    validate_key(key)?;
    if key.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(KeyError::ControlOrSpace);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        assert_eq!(validate_key(b""), Err(KeyError::Empty));
        assert_eq!(validate_key(b"_status"), Err(KeyError::Reserved));
        assert_eq!(
            validate_key(&[b'k'; KEY_BYTES_MAX + 1]),
            Err(KeyError::TooLong {
                len: KEY_BYTES_MAX + 1
            })
        );
        assert_eq!(validate_key(&[b'k'; KEY_BYTES_MAX]), Ok(()));
        assert_eq!(validate_key(b"a b\x00"), Ok(()));
        assert_eq!(validate_line_key(b"a b"), Err(KeyError::ControlOrSpace));
        assert_eq!(validate_line_key(b"a\x7f"), Err(KeyError::ControlOrSpace));
        assert_eq!(validate_line_key("clé/1".as_bytes()), Ok(()));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            StoreError::NoQuorum.to_string(),
            "no quorum: the request was not proposed"
        );
        assert!(StoreError::OutcomeUnknown
            .to_string()
            .starts_with("outcome unknown: the request was proposed but not confirmed in time"));
    }
}
