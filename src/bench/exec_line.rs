//! Runs bench operations over the line protocol through [`crate::client::Client`].

use bytes::Bytes;

use crate::bench::runner::{Done, Failure};
use crate::bench::workload::OpKind;
use crate::client::{CasOutcome, Client, ClientError};
use crate::paxos::types::Revision;

/// Runs one operation; `expected` is the revision a `Cas` compares against.
pub async fn run_op(
    client: &Client,
    op: OpKind,
    key: &str,
    value: &Bytes,
    expected: Revision,
) -> Result<Done, Failure> {
    let result = match op {
        OpKind::Put => client.put(key, value).await.map(Done::Written),
        OpKind::Get => client.get(key).await.map(|_| Done::Read),
        OpKind::Cas => client
            .compare_and_swap(key, expected, value)
            .await
            .map(|outcome| match outcome {
                CasOutcome::Swapped { revision } => Done::Written(revision),
                CasOutcome::Conflict { current } => Done::Conflict(current),
            }),
    };
    result.map_err(|e: ClientError| Failure {
        kind: e.kind().to_string(),
        message: e.to_string(),
    })
}
