//! The client's typed errors: what went wrong, and whether the request may have been applied.
//!
//! The distinction that matters most to a caller is between errors where the request was
//! certainly **not** applied ([`ClientError::NoQuorum`], [`ClientError::Unavailable`],
//! [`ClientError::InvalidRequest`], [`ClientError::Rejected`], [`ClientError::AllNodesFailed`])
//! and [`ClientError::OutcomeUnknown`], where a write was sent and may or may not have been
//! decided (`docs/architecture.md`: timeouts are not failures). Only the first kind is safe to retry blindly.

/// Why a [`crate::client::Client`] request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not reach a quorum, so it did not propose the request: safe to retry.
    #[error("no quorum: the request was not proposed ({node})")]
    NoQuorum {
        /// The node that answered.
        node: String,
    },
    /// A write was sent but no decision came back: the node said so, the connection broke
    /// after sending, or the client's request timeout passed. It may or may not have been
    /// applied; read the key to find out before retrying.
    #[error("outcome unknown: the request was sent to {node} but not confirmed ({reason}); it may or may not have been applied")]
    OutcomeUnknown {
        /// The node the request was sent to.
        node: String,
        /// What happened: the node's own answer, a broken connection or a timeout.
        reason: String,
    },
    /// Every node that was tried said it cannot serve now (catching up, disk full, stopping).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request was refused before it left this process (bad key, value with a newline, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The node refused the request (`ERR <kind> <message>`: a malformed request, an invalid
    /// key, a too large value, ...); it was not applied.
    #[error("rejected by the node ({kind}): {message}")]
    Rejected {
        /// The machine-readable reason.
        kind: crate::line_protocol::ErrorKind,
        /// The node's explanation, for people.
        message: String,
    },
    /// The node's reply did not fit the protocol (a bug or not a consens node).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An IO error outside any request, such as resolving the node addresses.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// No node could be reached (connect failed, or the connection broke before the request was
    /// sent, on every node tried). The request was not applied.
    #[error("all nodes failed after {attempts} attempts; last: {last}")]
    AllNodesFailed {
        /// How many connections or sends were tried.
        attempts: usize,
        /// The last failure, for the person at the terminal.
        last: String,
    },
}

impl ClientError {
    /// A short, stable name for the error's kind, for counting errors by kind (`consens bench`).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::NoQuorum { .. } => "no_quorum",
            ClientError::OutcomeUnknown { .. } => "outcome_unknown",
            ClientError::Unavailable(_) => "unavailable",
            ClientError::InvalidRequest(_) => "invalid_request",
            ClientError::Rejected { .. } => "rejected",
            ClientError::Protocol(_) => "protocol",
            ClientError::Io(_) => "io",
            ClientError::AllNodesFailed { .. } => "all_nodes_failed",
        }
    }

    /// Whether the request may have been applied although it failed (only for
    /// [`ClientError::OutcomeUnknown`]).
    pub fn maybe_applied(&self) -> bool {
        matches!(self, ClientError::OutcomeUnknown { .. })
    }
}
