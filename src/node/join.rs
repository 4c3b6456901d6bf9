//! Joining a running cluster: the first start of a node with `--join` asks any member it can
//! reach to add it as a learner (`MEMBER ADD`, over the line protocol on the member's PORT+1),
//! and records the identity that member answers with: the id the cluster handed out, the
//! cluster id, the members the cluster was created with (its membership history starts from
//! them) and the members in force (whom it reaches until it has caught up from the log). The
//! first member being down does not matter: the next one is asked.
//!
//! With `--auto-promote`, the node then asks for its own promotion until the leader grants it;
//! the leader refuses while the node is behind (`paxos/guard.rs`), so it is never promoted
//! before it has caught up.

use std::net::SocketAddr;
use std::time::Duration;

use crate::client::{Client, ClientError, ErrorKind, MemberAdded};
use crate::config::Member;
use crate::node::identity::Identity;
use crate::paxos::types::NodeId;
use crate::server::members::{change_members, MemberRequest, MemberRequestError};
use crate::server::Store;

/// How long one member gets to add this node (its decision waits for a quorum).
pub const JOIN_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// An auto-promoting learner asks again this often while the leader says it is behind.
pub const PROMOTE_RETRY_MS: u64 = 1_000;

/// Why the node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "cannot join through any of [{tried}]: {reasons}; check that they run and that this \
         node's --advertise address is reachable from them"
    )]
    NoMemberAdded { tried: String, reasons: String },
    #[error("member {asked} answered the join with something unusable: {reason}")]
    BadAnswer { asked: SocketAddr, reason: String },
}

/// Asks the members at `through` (their PORT), in order, to add this node at `advertise`;
/// returns the identity to record.
pub async fn join(through: &[SocketAddr], advertise: SocketAddr) -> Result<Identity, JoinError> {
    let mut reasons = Vec::new();
    for &member in through {
        let line = SocketAddr::new(member.ip(), member.port().wrapping_add(1));
        let added = async {
            let client = Client::builder()
                .nodes([line.to_string()])
                .request_timeout(Duration::from_millis(JOIN_REQUEST_TIMEOUT_MS))
                .connect()
                .await?;
            client.add_member(&advertise.to_string()).await
        }
        .await;
        match added {
            Ok(added) => return identity_of(&added, member),
            Err(ClientError::Rejected {
                kind: ErrorKind::Refused,
                message,
            }) => reasons.push(format!(
                "{member}: {message} (if this node joined before and lost its data dir, remove \
                 that member with `consens member remove <id>` and start again)"
            )),
            Err(e) => reasons.push(format!("{member}: {e}")),
        }
    }
    Err(JoinError::NoMemberAdded {
        tried: through
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        reasons: reasons.join("; "),
    })
}

fn identity_of(added: &MemberAdded, asked: SocketAddr) -> Result<Identity, JoinError> {
    let bad = |reason: String| JoinError::BadAnswer { asked, reason };
    let members = |list: &[crate::server::MemberAddr]| -> Result<Vec<Member>, JoinError> {
        list.iter()
            .map(|m| {
                Ok(Member {
                    id: NodeId(m.id),
                    addr: m
                        .addr
                        .parse()
                        .map_err(|e| bad(format!("member address {:?}: {e}", m.addr)))?,
                })
            })
            .collect()
    };
    let identity = Identity {
        cluster_id: u64::from_str_radix(&added.cluster_id, 16)
            .map_err(|e| bad(format!("cluster id {:?}: {e}", added.cluster_id)))?,
        node_id: NodeId(added.id),
        members: members(&added.first_members)?,
        peers: members(&added.members)?,
    };
    // The same checks a recorded identity passes when it is read back.
    Identity::parse(&identity.render()).map_err(bad)
}

/// Asks for this node's promotion until it is a voter (or the node stops): the leader refuses
/// while it is behind, so this is promotion on catch-up.
pub async fn promote_when_caught_up<S: Store>(store: S, id: u16) {
    loop {
        let voter = store
            .status()
            .members
            .iter()
            .any(|m| m.id == id && m.role == crate::server::MEMBER_ROLE_VOTER);
        if voter {
            tracing::info!(id, "this node is a voter");
            return;
        }
        match change_members(&store, MemberRequest::Promote { id }).await {
            Ok(changed) => {
                tracing::info!(id, from_slot = changed.effective_slot, "promoted to voter");
            }
            Err(MemberRequestError::Refused(why)) => {
                tracing::debug!(id, %why, "not promoted yet");
            }
            Err(e) => tracing::debug!(id, error = %e, "promotion not decided yet"),
        }
        tokio::time::sleep(Duration::from_millis(PROMOTE_RETRY_MS)).await;
    }
}
