//! An async client for a consens cluster, over the line protocol (on tokio).
//!
//! A [`Client`] talks to one node at a time over one pipelined connection
//! (module `connection`): many tasks may use one client (it is `Clone`, all clones
//! share the connection), and their requests travel together without waiting for each other.
//! When the node stops answering the client fails over to the next node in its list.
//!
//! ```no_run
//! # async fn example() -> Result<(), consens::client::ClientError> {
//! use consens::client::{CasOutcome, Client};
//!
//! // The line-protocol addresses (HTTP port + 1) of some or all of the nodes.
//! let client = Client::connect(["127.0.0.1:3001", "127.0.0.1:4001", "127.0.0.1:5001"]).await?;
//! let revision = client.put("greeting", "hello").await?;
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//! match client.compare_and_swap("greeting", revision, "hi").await? {
//!     CasOutcome::Swapped { revision } => println!("now at revision {revision}"),
//!     CasOutcome::Conflict { current } => println!("someone else wrote revision {current}"),
//! }
//! assert!(client.delete("greeting").await?);
//! # Ok(())
//! # }
//! ```
//!
//! # Failover and the outcome of writes
//!
//! A request that fails because the connection could not be made, or broke **before** the
//! request reached the socket, is retried on the next node (each node at most once per
//! request). A read (`get`, `status`) is also retried when the connection broke after sending
//! or the request timeout passed, since reading twice is harmless.
//!
//! A write (`put`, `delete`, `compare_and_swap`) that was sent but got no reply — the node died,
//! the connection broke, or [`ClientBuilder::request_timeout`] passed — is **never retried**: it
//! may have been decided, and sending it again could apply it twice as far as the caller can
//! tell (a second `put` would create a new revision; a `compare_and_swap` would report a
//! conflict with itself). It fails with [`ClientError::OutcomeUnknown`]; read the key to learn
//! what happened. The line protocol carries no request id the client could reuse, so it cannot
//! make such a retry safe itself. A node's own "outcome unknown" answer is reported the same way.
//! A timeout closes the connection (the node is taken to have stopped answering), so the other
//! requests in flight on it fail the same way: writes as "outcome unknown", reads retried.
//!
//! "No quorum" ([`ClientError::NoQuorum`]) means the node did not propose the request: it is
//! returned as is (asking another node of the same cluster would most likely wait just as long)
//! and is safe to retry.
//!
//! # Values
//!
//! The line protocol ends a request at a newline, so values (and keys) containing `\n` or NUL,
//! and values ending in `\r`, are refused before sending with [`ClientError::InvalidRequest`]:
//! use the HTTP API for arbitrary bytes. Keys follow the line protocol's key rules
//! ([`crate::server::validate_line_key`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Mutex;

pub use crate::line_protocol::members::MemberAdded;
use crate::line_protocol::{encode_request, parse_reply, Reply, Request};
pub use crate::line_protocol::{ErrorKind, MemberInfo, MemberList, Status};
use crate::paxos::types::Revision;
use crate::server::{validate_line_key, VALUE_BYTES_MAX};

pub(crate) mod commands;
mod connection;
mod error;

use connection::{CallError, Connection};
pub use error::ClientError;

/// Default time a request may wait for its reply before the client gives up on the node. Longer
/// than the node's own request timeout (5 s), so that the node's "no quorum" or "outcome
/// unknown" answer arrives first when the node is alive.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Default time to open a connection and see the node answer `PING`.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Default bound on requests queued or awaiting replies on one connection.
pub const IN_FLIGHT_MAX: usize = 1024;

/// Settings of a [`Client`]; see the setters of [`ClientBuilder`] for each.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    /// Line-protocol addresses (`host:port`), tried in this order.
    nodes: Vec<String>,
    /// How long one request may wait for its reply.
    request_timeout: Duration,
    /// How long opening a connection (and its `PING`) may take.
    connect_timeout: Duration,
    /// Requests queued or awaiting replies on the connection at once.
    in_flight_max: usize,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            nodes: Vec::new(),
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS),
            in_flight_max: IN_FLIGHT_MAX,
        }
    }
}

impl ClientBuilder {
    /// Adds nodes by their line-protocol address (`host:port`, the node's HTTP port + 1). The
    /// client uses the first that answers and fails over in list order.
    pub fn nodes<A: Into<String>>(mut self, nodes: impl IntoIterator<Item = A>) -> Self {
        self.nodes.extend(nodes.into_iter().map(Into::into));
        self
    }

    /// How long a request may wait for its reply (default [`REQUEST_TIMEOUT_MS`]). A write
    /// that times out fails with [`ClientError::OutcomeUnknown`], and the connection is dropped.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long connecting to one node may take (default [`CONNECT_TIMEOUT_MS`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many requests may be queued or awaiting replies on the connection (default
    /// [`IN_FLIGHT_MAX`]); further callers wait. The node itself serves up to
    /// [`crate::server::line::PIPELINE_DEPTH_MAX`] of them concurrently.
    pub fn in_flight_max(mut self, requests: usize) -> Self {
        self.in_flight_max = requests.max(1);
        self
    }

    /// Connects to the first node that answers.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), consens::client::ClientError> {
    /// use std::time::Duration;
    /// let client = consens::client::Client::builder()
    ///     .nodes(["127.0.0.1:3001", "127.0.0.1:4001"])
    ///     .request_timeout(Duration::from_secs(2))
    ///     .connect()
    ///     .await?;
    /// println!("{:?}", client.status().await?);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(self) -> Result<Client, ClientError> {
        if self.nodes.is_empty() {
            return Err(ClientError::InvalidRequest("no nodes given".into()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                config: self,
                current: Mutex::new(Current {
                    index: 0,
                    connection: None,
                }),
            }),
        };
        client.connection().await?;
        Ok(client)
    }
}

/// An async client for a consens cluster; see the [module docs](self) for failover rules.
/// Cloning is cheap and clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("nodes", &self.inner.config.nodes)
            .finish_non_exhaustive()
    }
}

/// What every clone shares.
struct Inner {
    /// The settings it was built with.
    config: ClientBuilder,
    /// The node in use; a tokio mutex because connecting happens while holding it, so that
    /// concurrent requests wait for one connection instead of opening many.
    current: Mutex<Current>,
}

/// The node in use.
struct Current {
    /// Index into the node list of the node connected to, or to try first.
    index: usize,
    /// The live connection, if any.
    connection: Option<Arc<Connection>>,
}

/// The result of [`Client::compare_and_swap`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The key was at the expected revision and now holds the new value at `revision`.
    Swapped {
        /// The key's new revision.
        revision: Revision,
    },
    /// The key was not at the expected revision; nothing was written.
    Conflict {
        /// The key's current revision (0: the key does not exist).
        current: Revision,
    },
}

/// Whether a request may be sent again after it was possibly received.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Retry {
    /// Reads: harmless to repeat.
    Idempotent,
    /// Writes: never repeated once possibly sent.
    OnlyIfNotSent,
}

impl Client {
    /// A builder to set the nodes and timeouts.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with default settings to the first of `nodes` (line-protocol addresses,
    /// `host:port`) that answers.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), consens::client::ClientError> {
    /// let client = consens::client::Client::connect(["127.0.0.1:3001"]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect<A: Into<String>>(
        nodes: impl IntoIterator<Item = A>,
    ) -> Result<Client, ClientError> {
        Client::builder().nodes(nodes).connect().await
    }

    /// The address of the node currently connected to, if any.
    pub async fn current_node(&self) -> Option<String> {
        let current = self.inner.current.lock().await;
        current
            .connection
            .as_ref()
            .filter(|c| !c.is_closed())
            .map(|c| c.addr().to_string())
    }

    /// Reads `key` (linearizable: reflects every write acknowledged before the call).
    /// `Ok(None)` if the key does not exist.
    ///
    /// ```no_run
    /// # async fn example(client: consens::client::Client) -> Result<(), consens::client::ClientError> {
    /// match client.get("config/mode").await? {
    ///     Some(value) => println!("{}", String::from_utf8_lossy(&value)),
    ///     None => println!("not set"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, ClientError> {
        let key = checked_key(key.as_ref())?;
        let (reply, node) = self.call(&Request::Get { key }, Retry::Idempotent).await?;
        match reply {
            Reply::Value(value) => Ok(Some(value)),
            Reply::NotFound => Ok(None),
            other => Err(unexpected("GET", other, &node)),
        }
    }

    /// Writes `value` under `key` and returns the key's new revision.
    ///
    /// ```no_run
    /// # async fn example(client: consens::client::Client) -> Result<(), consens::client::ClientError> {
    /// let revision = client.put("config/mode", "fast").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Revision, ClientError> {
        let key = checked_key(key.as_ref())?;
        let value = checked_value(value.as_ref())?;
        let (reply, node) = self
            .call(&Request::Put { key, value }, Retry::OnlyIfNotSent)
            .await?;
        match reply {
            Reply::Ok(Some(revision)) => Ok(revision),
            other => Err(unexpected("PUT", other, &node)),
        }
    }

    /// Deletes `key`; `Ok(true)` if it existed, `Ok(false)` if there was nothing to delete.
    ///
    /// ```no_run
    /// # async fn example(client: consens::client::Client) -> Result<(), consens::client::ClientError> {
    /// if !client.delete("config/mode").await? {
    ///     println!("was not set");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, ClientError> {
        let key = checked_key(key.as_ref())?;
        let (reply, node) = self
            .call(&Request::Del { key }, Retry::OnlyIfNotSent)
            .await?;
        match reply {
            Reply::Ok(None) => Ok(true),
            Reply::NotFound => Ok(false),
            other => Err(unexpected("DEL", other, &node)),
        }
    }

    /// Writes `value` under `key` only if the key is at revision `expected` (0: only if the key
    /// does not exist). A mismatch is not an error: it is [`CasOutcome::Conflict`] with the
    /// current revision, ready for the next attempt.
    ///
    /// ```no_run
    /// # async fn example(client: consens::client::Client) -> Result<(), consens::client::ClientError> {
    /// use consens::client::CasOutcome;
    /// // Create only if absent.
    /// match client.compare_and_swap("lock", 0, "me").await? {
    ///     CasOutcome::Swapped { .. } => println!("acquired"),
    ///     CasOutcome::Conflict { current } => println!("held (revision {current})"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Revision,
        value: impl AsRef<[u8]>,
    ) -> Result<CasOutcome, ClientError> {
        let key = checked_key(key.as_ref())?;
        let value = checked_value(value.as_ref())?;
        let request = Request::Cas {
            key,
            revision: expected,
            value,
        };
        let (reply, node) = self.call(&request, Retry::OnlyIfNotSent).await?;
        match reply {
            Reply::Ok(Some(revision)) => Ok(CasOutcome::Swapped { revision }),
            Reply::Conflict(current) => Ok(CasOutcome::Conflict { current }),
            other => Err(unexpected("CAS", other, &node)),
        }
    }

    /// The state of the node currently connected to (role, leader, slots, health).
    ///
    /// ```no_run
    /// # async fn example(client: consens::client::Client) -> Result<(), consens::client::ClientError> {
    /// let status = client.status().await?;
    /// println!("{} is {}; leader {:?}", status.node, status.role, status.leader);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn status(&self) -> Result<Status, ClientError> {
        let (reply, node) = self.call(&Request::Status, Retry::Idempotent).await?;
        match reply {
            Reply::Text(line) => Status::parse(&line).map_err(ClientError::Protocol),
            other => Err(unexpected("STATUS", other, &node)),
        }
    }

    /// The cluster's members as the node currently connected to sees them: ids, addresses,
    /// roles, and how far each has caught up (every member's on the leader).
    ///
    /// ```no_run
    /// # async fn example(client: consens::client::Client) -> Result<(), consens::client::ClientError> {
    /// for member in client.members().await?.members {
    ///     println!("{} at {}: {}", member.id, member.addr, member.role);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn members(&self) -> Result<MemberList, ClientError> {
        let (reply, node) = self.call(&Request::Members, Retry::Idempotent).await?;
        match reply {
            Reply::Text(line) => MemberList::parse(&line).map_err(ClientError::Protocol),
            other => Err(unexpected("MEMBERS", other, &node)),
        }
    }

    /// Moves leadership to member `to` (a voter) and returns once the node connected to sees it
    /// lead; any node passes the request to the leader. Leadership moves only to a member that
    /// is up and caught up: otherwise this fails with [`ClientError::Unavailable`] and the
    /// leader stays.
    ///
    /// ```no_run
    /// # async fn example(client: consens::client::Client) -> Result<(), consens::client::ClientError> {
    /// client.transfer_leadership(2).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn transfer_leadership(&self, to: u16) -> Result<(), ClientError> {
        let request = Request::TransferLeader { to };
        let (reply, node) = self.call(&request, Retry::Idempotent).await?;
        match reply {
            Reply::Ok(None) => Ok(()),
            other => Err(unexpected("LEADER TRANSFER", other, &node)),
        }
    }

    /// Adds a learner at `addr` (the new node's `host:port`, its PORT) and returns, once
    /// decided, what the new node needs to join: its id, the cluster's id and members.
    /// `consens serve --join` does this itself; call it to add a node by hand before starting
    /// it. A refusal is [`ClientError::Rejected`] with [`ErrorKind::Refused`].
    ///
    /// ```no_run
    /// # async fn example(client: consens::client::Client) -> Result<(), consens::client::ClientError> {
    /// let added = client.add_member("10.0.0.4:3000").await?;
    /// println!("member {} joins cluster {}", added.id, added.cluster_id);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn add_member(&self, addr: &str) -> Result<MemberAdded, ClientError> {
        if addr.is_empty() || addr.contains([' ', '\n', '\r', '\0']) {
            return Err(ClientError::InvalidRequest(format!(
                "{addr:?} is not a host:port"
            )));
        }
        let request = Request::MemberAdd {
            addr: addr.to_string(),
        };
        let (reply, node) = self.call(&request, Retry::OnlyIfNotSent).await?;
        match reply {
            Reply::Text(line) => MemberAdded::parse(&line).map_err(ClientError::Protocol),
            other => Err(unexpected("MEMBER ADD", other, &node)),
        }
    }

    /// Promotes learner `id` to voter; returns the first slot the new membership governs.
    /// Refused ([`ErrorKind::Refused`]) until the learner has caught up with the leader.
    pub async fn promote_member(&self, id: u16) -> Result<u64, ClientError> {
        let (reply, node) = self
            .call(&Request::MemberPromote { id }, Retry::OnlyIfNotSent)
            .await?;
        match reply {
            Reply::Ok(Some(slot)) => Ok(slot),
            other => Err(unexpected("MEMBER PROMOTE", other, &node)),
        }
    }

    /// Removes member `id` (a voter or a learner); returns the first slot the new membership
    /// governs. Refused ([`ErrorKind::Refused`]) when the voters that stay could not reach a
    /// majority of themselves, unless `force`. Removing the leader hands leadership over first.
    pub async fn remove_member(&self, id: u16, force: bool) -> Result<u64, ClientError> {
        let (reply, node) = self
            .call(&Request::MemberRemove { id, force }, Retry::OnlyIfNotSent)
            .await?;
        match reply {
            Reply::Ok(Some(slot)) => Ok(slot),
            other => Err(unexpected("MEMBER REMOVE", other, &node)),
        }
    }

    /// Checks that the node currently connected to answers.
    pub async fn ping(&self) -> Result<(), ClientError> {
        let (reply, node) = self.call(&Request::Ping, Retry::Idempotent).await?;
        match reply {
            Reply::Pong => Ok(()),
            other => Err(unexpected("PING", other, &node)),
        }
    }

    /// The live connection, opening one if needed: first to the current node, then to each
    /// following node in turn, each at most once.
    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let config = &self.inner.config;
        let mut current = self.inner.current.lock().await;
        if let Some(connection) = current.connection.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        current.connection = None;
        let count = config.nodes.len();
        let mut last = String::new();
        for step in 0..count {
            let index = (current.index + step) % count;
            match Connection::connect(
                &config.nodes[index],
                config.connect_timeout,
                config.in_flight_max,
            )
            .await
            {
                Ok(connection) => {
                    let connection = Arc::new(connection);
                    current.index = index;
                    current.connection = Some(connection.clone());
                    return Ok(connection);
                }
                Err(e) => last = e,
            }
        }
        Err(ClientError::AllNodesFailed {
            attempts: count,
            last,
        })
    }

    /// Forgets `failed` (if it is still the current connection) and moves on to the next node.
    async fn fail_over(&self, failed: &Arc<Connection>, reason: String) {
        failed.close(reason);
        let mut current = self.inner.current.lock().await;
        if current
            .connection
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, failed))
        {
            current.connection = None;
            current.index = (current.index + 1) % self.inner.config.nodes.len();
        }
    }

    /// Sends `request` with failover (module docs), returning the reply and the node that gave it.
    async fn call(&self, request: &Request, retry: Retry) -> Result<(Reply, String), ClientError> {
        let mut line = Vec::new();
        encode_request(request, &mut line);
        let line = Bytes::from(line);
        // Each node once, plus one more connection to the first: a connection that broke while
        // idle is only noticed when used.
        let attempts_max = self.inner.config.nodes.len() + 1;
        let mut last: Option<ClientError> = None;
        for _attempt in 0..attempts_max {
            let connection = match self.connection().await {
                Ok(c) => c,
                // No node could even be connected to: nothing more to try.
                Err(e) => return Err(last.filter(is_unavailable).unwrap_or(e)),
            };
            let node = connection.addr().to_string();
            let outcome = tokio::time::timeout(
                self.inner.config.request_timeout,
                connection.call(line.clone()),
            )
            .await;
            let lost = match outcome {
                Ok(Ok(reply_line)) => match parse_reply(&reply_line) {
                    Reply::Err(error) => match error.kind {
                        ErrorKind::NoQuorum => return Err(ClientError::NoQuorum { node }),
                        ErrorKind::OutcomeUnknown => {
                            return Err(ClientError::OutcomeUnknown {
                                node,
                                reason: error.to_string(),
                            })
                        }
                        ErrorKind::Unavailable | ErrorKind::ShuttingDown => {
                            // Not proposed: any request may go to another node.
                            self.fail_over(&connection, error.to_string()).await;
                            last = Some(ClientError::Unavailable(format!("{node}: {error}")));
                            continue;
                        }
                        // The connection turns these into NotSent; one seen here is out of place.
                        ErrorKind::TooManyConnections | ErrorKind::IdleTimeout => {
                            return Err(ClientError::Protocol(format!(
                                "{node} answered a request with {error}"
                            )))
                        }
                        kind => {
                            return Err(ClientError::Rejected {
                                kind,
                                message: error.message,
                            })
                        }
                    },
                    reply => return Ok((reply, node)),
                },
                Ok(Err(CallError::NotSent(reason))) => {
                    self.fail_over(&connection, reason.clone()).await;
                    last = Some(ClientError::AllNodesFailed {
                        attempts: 0,
                        last: format!("{node}: {reason}"),
                    });
                    continue;
                }
                Ok(Err(CallError::Lost(reason))) => reason,
                Err(_) => format!("no reply within {:?}", self.inner.config.request_timeout),
            };
            // Possibly received by the node.
            self.fail_over(&connection, lost.clone()).await;
            if retry == Retry::OnlyIfNotSent {
                return Err(ClientError::OutcomeUnknown { node, reason: lost });
            }
            last = Some(ClientError::AllNodesFailed {
                attempts: 0,
                last: format!("{node}: {lost}"),
            });
        }
        Err(match last {
            Some(e @ ClientError::Unavailable(_)) => e,
            Some(ClientError::AllNodesFailed { last, .. }) => ClientError::AllNodesFailed {
                attempts: attempts_max,
                last,
            },
            Some(other) => other,
            None => ClientError::AllNodesFailed {
                attempts: attempts_max,
                last: "no attempt made".into(),
            },
        })
    }
}

fn is_unavailable(e: &ClientError) -> bool {
    matches!(e, ClientError::Unavailable(_))
}

fn unexpected(command: &str, reply: Reply, node: &str) -> ClientError {
    ClientError::Protocol(format!(
        "unexpected reply to {command} from {node}: {reply:?}"
    ))
}

/// Applies the line protocol's key rules before sending.
fn checked_key(key: &[u8]) -> Result<Bytes, ClientError> {
    validate_line_key(key).map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
    Ok(Bytes::copy_from_slice(key))
}

/// Refuses values the line protocol cannot carry (module docs, "Values").
fn checked_value(value: &[u8]) -> Result<Bytes, ClientError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(ClientError::InvalidRequest(format!(
            "value too large: {} bytes, the maximum is {VALUE_BYTES_MAX}",
            value.len()
        )));
    }
    if value.contains(&b'\n') {
        return Err(ClientError::InvalidRequest(
            "the value contains a newline, which the line protocol cannot carry; use HTTP".into(),
        ));
    }
    if value.contains(&0) {
        return Err(ClientError::InvalidRequest(
            "the value contains a NUL byte, which the line protocol cannot carry; use HTTP".into(),
        ));
    }
    if value.last() == Some(&b'\r') {
        return Err(ClientError::InvalidRequest(
            "the value ends with '\\r', which the line protocol would drop; use HTTP".into(),
        ));
    }
    Ok(Bytes::copy_from_slice(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_the_line_protocol_cannot_carry_are_refused() {
        assert!(checked_value(b"fine value with spaces\t and tabs").is_ok());
        for bad in [&b"a\nb"[..], b"a\0b", b"ends\r"] {
            assert!(matches!(
                checked_value(bad),
                Err(ClientError::InvalidRequest(_))
            ));
        }
        assert!(checked_value(&vec![b'v'; VALUE_BYTES_MAX + 1]).is_err());
        assert!(checked_key(b"a b").is_err());
        assert!(checked_key(b"_reserved").is_err());
        assert!(checked_key(b"ok/key").is_ok());
    }

    #[tokio::test]
    async fn no_nodes_is_an_invalid_request() {
        let empty: [&str; 0] = [];
        assert!(matches!(
            Client::connect(empty).await,
            Err(ClientError::InvalidRequest(_))
        ));
    }
}
