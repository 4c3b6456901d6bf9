//! The line protocol server: one request per line, one reply per line, for netcat and scripts.
//! The wire format (requests, replies, error kinds, the `STATUS` line) is
//! [`crate::line_protocol`], shared with the client; this module owns the connections: the
//! connection cap, the idle timeout, the line-length limit, pipelining and graceful shutdown.
//! A malformed request gets an `ERR` reply and the connection stays usable.
//!
//! **Pipelining.** A client may send many requests without waiting. Up to [`PIPELINE_DEPTH_MAX`]
//! requests per connection run concurrently; replies are written in request order. Requests on
//! the same key from one connection run one after the other, so `PUT k v` then `GET k` reads `v`.
//!
//! **Limits.** A line longer than `line_bytes_max` gets `ERR line_too_long`; the rest of it is
//! discarded up to the next newline, so a connection's buffer never holds more than the limit plus
//! one read. Beyond `connections_max` connections, new ones get `ERR too_many_connections` and are
//! closed. A connection with nothing in flight and nothing received for `idle_timeout` gets
//! `ERR idle_timeout` and is closed.
//!
//! **Shutdown.** When the shutdown future completes the server stops accepting; every connection
//! stops reading, finishes the requests it has in flight, writes their replies and closes.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;

use crate::line_protocol::members::MemberAdded;
use crate::line_protocol::reply::value_fits_line;
use crate::line_protocol::request::HELP_TEXT;
use crate::line_protocol::{
    parse_request, scan_line, ErrorKind, ErrorReply, MemberList, ParseError, Reply, Request, Scan,
    Status,
};
use crate::paxos::types::{Op, Outcome};
use crate::server::members::{change_members, MemberRequest, MemberRequestError};
use crate::server::{check_transfer_target, Consistency, Store, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Default cap on simultaneous connections (each costs a task and up to two line buffers).
pub const CONNECTIONS_MAX: usize = 1024;
/// Default idle time after which a connection is closed.
pub const IDLE_TIMEOUT_SECS: u64 = 300;
/// Default longest line: a `CAS` with the largest key and value fits.
pub const LINE_BYTES_MAX: usize = VALUE_BYTES_MAX + KEY_BYTES_MAX + 64;
/// Requests of one connection in flight at once; reading pauses when the window is full.
pub const PIPELINE_DEPTH_MAX: usize = 64;
/// How much one read takes from the socket.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// How long to wait after a failed accept (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF_MS: u64 = 100;

/// Tunables of [`serve_line`].
#[derive(Clone, Debug)]
pub struct LineOptions {
    /// Connections beyond this many are refused, so clients cannot exhaust memory or descriptors.
    pub connections_max: usize,
    /// Idle connections are closed after this long, so abandoned netcats do not hold slots.
    pub idle_timeout: Duration,
    /// The longest request line in bytes (without its terminator); bounds per-connection memory.
    pub line_bytes_max: usize,
}

impl Default for LineOptions {
    fn default() -> Self {
        LineOptions {
            connections_max: CONNECTIONS_MAX,
            idle_timeout: Duration::from_secs(IDLE_TIMEOUT_SECS),
            line_bytes_max: LINE_BYTES_MAX,
        }
    }
}

/// Serves the line protocol on `listener` until `shutdown` completes, then waits for every
/// connection to finish its in-flight requests. Accept errors are logged and retried, so this
/// only returns once shut down.
pub async fn serve_line<S: Store>(
    listener: TcpListener,
    store: S,
    options: LineOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // `stop` tells connections to finish; `done` closes when the last connection task ends.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let permits = Arc::new(Semaphore::new(
        options.connections_max.min(Semaphore::MAX_PERMITS),
    ));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "line protocol: accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS)).await;
                continue;
            }
        };
        // Replies are small and often follow one another while the previous is unacknowledged:
        // Nagle's algorithm would hold them for the client's delayed ACK.
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%peer, %error, "line protocol: TCP_NODELAY not set");
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // A fresh socket's send buffer is empty, so this short write completes at once.
            let refusal = Reply::Err(ErrorReply::new(
                ErrorKind::TooManyConnections,
                format!(
                    "this node serves at most {} connections; try another node or later",
                    options.connections_max
                ),
            ));
            let _ = socket.try_write(&refusal.to_line());
            tracing::debug!(%peer, "line protocol: refused, too many connections");
            continue;
        };
        let connection = Connection {
            store: store.clone(),
            options: options.clone(),
            key_tails: HashMap::new(),
        };
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.run(socket, stop).await {
                tracing::debug!(%peer, %error, "line protocol: connection ended with an error");
            }
            drop(permit);
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    // Resolves with `None` once every connection task dropped its `done` sender.
    let _ = done_rx.recv().await;
    Ok(())
}

type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

fn ready(reply: Reply) -> ReplyFuture {
    Box::pin(std::future::ready(reply))
}

fn error_reply(error: impl Into<ErrorReply>) -> Reply {
    Reply::Err(error.into())
}

/// One client connection.
struct Connection<S> {
    /// The node, shared with every other connection.
    store: S,
    /// The server's limits.
    options: LineOptions,
    /// For each key with a request in flight, a receiver that resolves when the latest of them
    /// finishes: the next request on that key waits for it (per-key order within a connection).
    key_tails: HashMap<Bytes, oneshot::Receiver<()>>,
}

impl<S: Store> Connection<S> {
    async fn run(mut self, socket: TcpStream, mut stop: watch::Receiver<bool>) -> io::Result<()> {
        let (mut reader, writer) = socket.into_split();
        let mut writer = BufWriter::new(writer);
        let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let mut in_flight: FuturesOrdered<ReplyFuture> = FuturesOrdered::new();
        // Inside an over-long line: drop bytes up to the next newline.
        let mut discarding = false;
        // Still taking requests (false after QUIT or shutdown).
        let mut accepting = true;
        // The client closed its sending side.
        let mut eof = false;
        let mut last_activity = Instant::now();
        // Each reply is encoded here before it is written.
        let mut line = Vec::new();

        loop {
            // Turn complete lines into in-flight requests, up to the pipeline window.
            while accepting && in_flight.len() < PIPELINE_DEPTH_MAX {
                if discarding {
                    match buf.iter().position(|&b| b == b'\n') {
                        Some(newline) => {
                            buf.advance(newline + 1);
                            discarding = false;
                        }
                        None => {
                            buf.clear();
                            break;
                        }
                    }
                }
                match scan_line(&buf, self.options.line_bytes_max) {
                    Scan::Incomplete => break,
                    Scan::Line { line, consumed } => {
                        let parsed = parse_request(line);
                        buf.advance(consumed);
                        if parsed == Ok(Request::Quit) {
                            accepting = false;
                        }
                        in_flight.push_back(self.start(parsed));
                    }
                    Scan::TooLong { consumed } => {
                        match consumed {
                            Some(consumed) => buf.advance(consumed),
                            None => {
                                buf.clear();
                                discarding = true;
                            }
                        }
                        in_flight.push_back(ready(error_reply(ErrorReply::new(
                            ErrorKind::LineTooLong,
                            format!(
                                "the line is longer than {} bytes and was discarded",
                                self.options.line_bytes_max
                            ),
                        ))));
                    }
                }
            }
            if in_flight.is_empty() && (!accepting || (eof && buf.is_empty())) {
                break;
            }
            let idle_deadline = last_activity + self.options.idle_timeout;

            tokio::select! {
                Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                    line.clear();
                    reply.encode(&mut line);
                    // Encode every reply that is already done too, then write and flush once.
                    while let Some(Some(reply)) = in_flight.next().now_or_never() {
                        reply.encode(&mut line);
                    }
                    writer.write_all(&line).await?;
                    writer.flush().await?;
                    last_activity = Instant::now();
                }
                read = reader.read(&mut chunk),
                    if accepting && !eof && in_flight.len() < PIPELINE_DEPTH_MAX =>
                {
                    let n = read?;
                    if n == 0 {
                        eof = true;
                        // A last line without a newline is still a request.
                        if discarding {
                            buf.clear();
                        } else if !buf.is_empty() {
                            buf.extend_from_slice(b"\n");
                        }
                    } else {
                        buf.extend_from_slice(&chunk[..n]);
                        last_activity = Instant::now();
                    }
                }
                () = tokio::time::sleep_until(idle_deadline), if in_flight.is_empty() && !eof => {
                    let idle = Reply::Err(ErrorReply::new(
                        ErrorKind::IdleTimeout,
                        format!(
                            "nothing received for {} ms; closing",
                            self.options.idle_timeout.as_millis()
                        ),
                    ));
                    writer.write_all(&idle.to_line()).await?;
                    break;
                }
                _ = stop.changed(), if accepting => {
                    accepting = false;
                }
            }
        }
        writer.flush().await?;
        writer.shutdown().await
    }

    /// Starts serving one parsed line; the returned future yields its reply.
    fn start(&mut self, parsed: Result<Request, ParseError>) -> ReplyFuture {
        let request = match parsed {
            Ok(request) => request,
            Err(error) => return ready(error_reply(&error)),
        };
        match request {
            Request::Ping => ready(Reply::Pong),
            Request::Help => ready(Reply::Text(Bytes::from_static(HELP_TEXT.as_bytes()))),
            Request::Quit => ready(Reply::Bye),
            Request::Status => {
                let status = Status::of_node(&self.store.status(), self.store.healthy());
                ready(Reply::Text(Bytes::from(status.encode())))
            }
            Request::Members => {
                let members = MemberList::of_node(&self.store.status());
                ready(Reply::Text(Bytes::from(members.encode())))
            }
            Request::TransferLeader { to } => {
                if let Err(why) = check_transfer_target(&self.store.status(), to) {
                    return ready(error_reply(ErrorReply::new(ErrorKind::BadRequest, why)));
                }
                let store = self.store.clone();
                Box::pin(async move {
                    match store.transfer_leadership(to).await {
                        Ok(()) => Reply::Ok(None),
                        Err(e) => error_reply(&e),
                    }
                })
            }
            Request::MemberAdd { addr } => self.member(MemberRequest::Add { addr }),
            Request::MemberPromote { id } => self.member(MemberRequest::Promote { id }),
            Request::MemberRemove { id, force } => self.member(MemberRequest::Remove { id, force }),
            Request::Get { key } => {
                let store = self.store.clone();
                self.after_key(key.clone(), async move {
                    match store.read(key, Consistency::Linearizable).await {
                        Ok(Some(entry)) if !value_fits_line(&entry.value) => {
                            error_reply(ErrorReply::new(
                                ErrorKind::ValueHasNewline,
                                "the value has a line break and cannot be shown on one line; \
                                 read it over HTTP",
                            ))
                        }
                        Ok(Some(entry)) => Reply::Value(entry.value),
                        Ok(None) => Reply::NotFound,
                        Err(error) => error_reply(&error),
                    }
                })
            }
            Request::Put { key, value } => self.write(Op::Put {
                key,
                value,
                expect: None,
            }),
            Request::Cas {
                key,
                revision,
                value,
            } => self.write(Op::Put {
                key,
                value,
                expect: Some(revision),
            }),
            Request::Del { key } => self.write(Op::Delete { key }),
        }
    }

    /// A membership change: `MEMBER ADD` answers with what a joining node needs
    /// ([`MemberAdded`]), `PROMOTE` and `REMOVE` with `OK <first slot of the new membership>`.
    fn member(&mut self, request: MemberRequest) -> ReplyFuture {
        let store = self.store.clone();
        let adding = matches!(request, MemberRequest::Add { .. });
        Box::pin(async move {
            match change_members(&store, request).await {
                Ok(changed) if adding => Reply::Text(Bytes::from(
                    MemberAdded::of(&changed, &store.status()).encode(),
                )),
                Ok(changed) => Reply::Ok(Some(changed.effective_slot)),
                Err(MemberRequestError::BadRequest(why)) => {
                    error_reply(ErrorReply::new(ErrorKind::BadRequest, why))
                }
                Err(MemberRequestError::Refused(why)) => {
                    error_reply(ErrorReply::new(ErrorKind::Refused, why))
                }
                Err(MemberRequestError::Store(error)) => error_reply(&error),
            }
        })
    }

    fn write(&mut self, op: Op) -> ReplyFuture {
        let store = self.store.clone();
        // Requests on one key are answered in order; one without a key orders on the empty key.
        let key = op.key().cloned().unwrap_or_default();
        self.after_key(key, async move {
            match store.write(op).await {
                Ok(Outcome::Created { revision } | Outcome::Updated { revision }) => {
                    Reply::Ok(Some(revision))
                }
                Ok(Outcome::Conflict { current }) => Reply::Conflict(current),
                Ok(Outcome::Deleted) => Reply::Ok(None),
                Ok(Outcome::NotFound) => Reply::NotFound,
                Ok(other @ (Outcome::MembersChanged { .. } | Outcome::MembersRefused(_))) => {
                    Reply::Err(ErrorReply::new(
                        ErrorKind::Unavailable,
                        format!("a key write came back as a membership change: {other:?}"),
                    ))
                }
                Err(error) => error_reply(&error),
            }
        })
    }

    /// Runs `work` after the previous in-flight request on `key` from this connection finished.
    fn after_key(
        &mut self,
        key: Bytes,
        work: impl Future<Output = Reply> + Send + 'static,
    ) -> ReplyFuture {
        // Forget keys whose last request finished, so the map stays as small as the window.
        if self.key_tails.len() >= PIPELINE_DEPTH_MAX {
            self.key_tails.retain(|_, tail| {
                matches!(tail.try_recv(), Err(oneshot::error::TryRecvError::Empty))
            });
        }
        let (done_tx, done_rx) = oneshot::channel();
        let previous = self.key_tails.insert(key, done_rx);
        Box::pin(async move {
            if let Some(previous) = previous {
                // Err means the previous request was dropped: nothing to wait for either.
                let _ = previous.await;
            }
            let reply = work.await;
            let _ = done_tx.send(());
            reply
        })
    }
}
