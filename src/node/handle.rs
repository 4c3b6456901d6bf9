//! The servers' door into the node: a cheap, clonable handle that implements [`Store`].
//!
//! A handle never touches Paxos, the WAL or the key-value state: it sends a request to the node's
//! event loop and awaits the answer. The loop owns every deadline and decides between "no quorum"
//! (the command was never proposed) and "outcome unknown" (it was proposed but not confirmed in
//! time), because only the loop knows which of the two happened.

use crate::metrics::Metrics;
use crate::paxos::types::{Entry, NodeId, Op, Outcome};
use crate::server::{Consistency, NodeStatus, Store, StoreError};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

/// Requests the node's driver accepts from handles (and from the simulator's clients).
pub enum Request {
    Write {
        op: Op,
        reply: oneshot::Sender<Result<Outcome, StoreError>>,
    },
    Read {
        key: Bytes,
        consistency: Consistency,
        reply: oneshot::Sender<Result<Option<Entry>, StoreError>>,
    },
    /// Move leadership to member `to`; answered once this node sees `to` lead.
    TransferLeadership {
        to: NodeId,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// A clonable [`Store`] backed by the node's event loop.
#[derive(Clone)]
pub struct NodeHandle {
    /// Where requests go; bounded so a flood of clients waits instead of growing memory.
    pub(crate) requests: mpsc::Sender<Request>,
    /// The loop republishes its status every few ticks; handles read the latest copy.
    pub(crate) status: watch::Receiver<NodeStatus>,
    /// Whether this node heard from a quorum recently (kept by the loop).
    pub(crate) healthy: Arc<AtomicBool>,
    /// Requests are counted and timed here, whichever server they came through.
    pub(crate) metrics: Arc<Metrics>,
}

impl NodeHandle {
    async fn write_inner(&self, op: Op) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Write { op, reply })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        // Once the loop holds the request it may have proposed it: an answer that never comes
        // is "outcome unknown", never "not proposed".
        answer.await.unwrap_or(Err(StoreError::OutcomeUnknown))
    }

    async fn read_inner(
        &self,
        key: Bytes,
        consistency: Consistency,
    ) -> Result<Option<Entry>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Read {
                key,
                consistency,
                reply,
            })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        answer.await.unwrap_or(Err(StoreError::ShuttingDown))
    }
}

/// The metric label of a failed request.
fn error_label(error: &StoreError) -> &'static str {
    match error {
        StoreError::NoQuorum => "no_quorum",
        StoreError::OutcomeUnknown => "outcome_unknown",
        StoreError::Unavailable(_) => "unavailable",
        StoreError::ShuttingDown => "shutting_down",
        StoreError::TooLarge => "too_large",
    }
}

impl Store for NodeHandle {
    async fn write(&self, op: Op) -> Result<Outcome, StoreError> {
        let kind = match &op {
            Op::Put { expect: None, .. } => "put",
            Op::Put {
                expect: Some(_), ..
            } => "cas",
            Op::Delete { .. } => "delete",
            Op::ChangeMembers(_) => "member_change",
        };
        let started = Instant::now();
        let result = self.write_inner(op).await;
        let outcome = match &result {
            Ok(Outcome::Created { .. } | Outcome::Updated { .. } | Outcome::Deleted) => "ok",
            Ok(Outcome::NotFound) => "not_found",
            Ok(Outcome::Conflict { .. }) => "conflict",
            Ok(Outcome::MembersChanged { .. }) => "ok",
            Ok(Outcome::MembersRefused(_)) => "refused",
            Err(e) => error_label(e),
        };
        self.metrics
            .request(kind, outcome, started.elapsed().as_secs_f64());
        result
    }

    async fn read(
        &self,
        key: Bytes,
        consistency: Consistency,
    ) -> Result<Option<Entry>, StoreError> {
        let kind = match consistency {
            Consistency::Linearizable => "get",
            Consistency::Stale => "get_stale",
        };
        let started = Instant::now();
        let result = self.read_inner(key, consistency).await;
        let outcome = match &result {
            Ok(Some(_)) => "ok",
            Ok(None) => "not_found",
            Err(e) => error_label(e),
        };
        self.metrics
            .request(kind, outcome, started.elapsed().as_secs_f64());
        result
    }

    async fn transfer_leadership(&self, to: u16) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::TransferLeadership {
                to: NodeId(to),
                reply,
            })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        answer.await.unwrap_or(Err(StoreError::ShuttingDown))
    }

    fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn metrics_text(&self) -> Option<String> {
        Some(self.metrics.render())
    }
}
