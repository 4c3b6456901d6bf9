//! Membership operations, the same on every front end: add a learner, promote it, remove a
//! member. Each is a command decided through the log (`docs/paxos.md`, "Membership changes");
//! this module turns an operator's request into it and its outcome into an answer. The address
//! of a new member is resolved here, once, so that every replica reads the same `ip:port` from
//! the log.

use crate::config::{resolve, PORT_DEFAULT};
use crate::paxos::types::{NodeId, Op, Outcome, Slot};
use crate::paxos::MemberChange;
use crate::server::{Store, StoreError};
use serde::Serialize;

/// What an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberRequest {
    /// A new member at `addr` (`host:port`, its peer port) joins as a learner.
    Add { addr: String },
    /// Learner `id` becomes a voter (refused until it has caught up).
    Promote { id: u16 },
    /// Member `id` leaves (refused if the voters that stay could not reach a majority, unless
    /// `force`).
    Remove { id: u16, force: bool },
}

/// A change that was decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberChanged {
    /// The member it concerns (for an add: the id the new member got).
    pub id: u16,
    /// For an add: the new member's address as resolved and recorded.
    pub addr: Option<String>,
    /// The first slot the new membership governs.
    pub effective_slot: Slot,
}

/// Why a membership request did not go through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberRequestError {
    /// The request itself is malformed (an address that does not resolve).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The cluster decided not to make the change, and nothing changed; the message names the
    /// cause and the fix.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Carries out `request` through `store` and waits for its decision.
pub async fn change_members<S: Store>(
    store: &S,
    request: MemberRequest,
) -> Result<MemberChanged, MemberRequestError> {
    let (change, asked_id, addr) = match request {
        MemberRequest::Add { addr } => {
            let given = addr.clone();
            let resolved = tokio::task::spawn_blocking(move || resolve(&given, PORT_DEFAULT))
                .await
                .map_err(|e| MemberRequestError::BadRequest(format!("cannot resolve: {e}")))?
                .map_err(|e| MemberRequestError::BadRequest(e.to_string()))?
                .to_string();
            (
                MemberChange::AddLearner {
                    addr: resolved.clone(),
                },
                None,
                Some(resolved),
            )
        }
        MemberRequest::Promote { id } => (MemberChange::Promote { id: NodeId(id) }, Some(id), None),
        MemberRequest::Remove { id, force } => (
            MemberChange::Remove {
                id: NodeId(id),
                force,
            },
            Some(id),
            None,
        ),
    };
    match store.write(Op::ChangeMembers(change)).await? {
        Outcome::MembersChanged { added, effective } => {
            let id = added.map(|id| id.0).or(asked_id).ok_or_else(|| {
                MemberRequestError::Store(StoreError::Unavailable(
                    "an added member came back without an id".into(),
                ))
            })?;
            Ok(MemberChanged {
                id,
                addr,
                effective_slot: effective,
            })
        }
        Outcome::MembersRefused(why) => Err(MemberRequestError::Refused(why.to_string())),
        other => Err(MemberRequestError::Store(StoreError::Unavailable(format!(
            "a membership change came back as {other:?}"
        )))),
    }
}
