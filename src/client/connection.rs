//! One pipelined line-protocol connection: a writer task and a reader task around one TCP stream.
//!
//! Callers hand a request line to [`Connection::call`] and await its reply line. The writer task
//! takes requests from a bounded channel, queues each caller's reply sender (a oneshot) to the
//! reader *before* writing its bytes, batches whatever else is waiting into the same write (first
//! letting the callers that the reader's last read woke queue their next requests), and flushes. The reader task splits the byte stream into lines and hands each to the oldest queued
//! sender: the server answers in request order, so FIFO matching is exact.
//!
//! **Bounded.** At most `in_flight_max` requests are queued or awaiting replies per connection
//! (a semaphore; callers wait for a permit), and a reply line longer than
//! [`REPLY_BYTES_MAX`] closes the connection as a protocol error.
//!
//! **Failure.** When either task meets an IO error, EOF, or an unsolicited line, or when
//! [`Connection::close`] is called, the connection is dead for good: requests still in the
//! channel fail with [`CallError::NotSent`] (they never reached the socket), requests already
//! handed to the socket fail with [`CallError::Lost`] (the node may have received and applied
//! them). The [`crate::client::Client`] turns these into failover or "outcome unknown".

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};

use crate::line_protocol::{parse_reply, Reply};
use crate::server::line::LINE_BYTES_MAX;

/// The longest reply line accepted: a `VALUE` with the largest value, with room to spare.
pub const REPLY_BYTES_MAX: usize = LINE_BYTES_MAX + 1024;
/// The most bytes of requests the writer gathers into one write.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// How much the reader asks the socket for at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why [`Connection::call`] got no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The request never reached the socket (or the node closed the connection without reading
    /// it): it was certainly not applied, so it may be sent elsewhere.
    NotSent(String),
    /// The request was handed to the socket and the connection died before its reply came: the
    /// node may have applied it.
    Lost(String),
}

/// A request on its way to the writer task.
struct Job {
    /// The request line, with its `\n`.
    line: Bytes,
    /// Where the reply goes.
    reply: oneshot::Sender<Result<Bytes, CallError>>,
    /// Holds one unit of the in-flight bound until the reply is delivered.
    permit: OwnedSemaphorePermit,
}

/// A request written (or being written) to the socket, waiting for its reply line.
struct Pending {
    /// Where the reply goes.
    reply: oneshot::Sender<Result<Bytes, CallError>>,
    /// Released when the reply is delivered or the request fails.
    _permit: OwnedSemaphorePermit,
}

/// State both tasks and all callers share.
struct Shared {
    /// Set once the connection is dead; never cleared.
    closed: AtomicBool,
    /// Wakes both tasks when the connection is closed from outside or by the other task.
    close_notify: Notify,
    /// Replies the reader handed out from its last read of the socket: how many callers it
    /// just woke (the writer batches their next requests when there are several).
    replies_last_read: AtomicUsize,
    /// Socket writes the writer made (for the test of request batching).
    #[cfg(test)]
    writes: std::sync::atomic::AtomicU64,
    /// Why the connection died, for error messages (the first reason wins).
    reason: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn close(&self, reason: String) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert(reason);
        }
        self.closed.store(true, Ordering::Release);
        self.close_notify.notify_waiters();
    }

    fn reason(&self) -> String {
        self.reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| "connection closed".to_string())
    }
}

/// One connection to one node. Cheap to share behind an `Arc`; dropping the last handle closes it.
pub(crate) struct Connection {
    /// The node's address as the caller named it, for messages.
    addr: String,
    /// Into the writer task.
    jobs: mpsc::Sender<Job>,
    /// The in-flight bound.
    permits: Arc<Semaphore>,
    /// Shared with the tasks.
    shared: Arc<Shared>,
}

impl Connection {
    /// Connects to `addr` (resolving it), within `connect_timeout`, and checks with a `PING`
    /// that a consens node answers (a node over its connection cap answers with an error).
    pub(crate) async fn connect(
        addr: &str,
        connect_timeout: Duration,
        in_flight_max: usize,
    ) -> Result<Connection, String> {
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(format!("cannot connect to {addr}: {e}")),
            Err(_) => {
                return Err(format!(
                    "cannot connect to {addr}: no answer within {connect_timeout:?}"
                ))
            }
        };
        // Requests are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let in_flight_max = in_flight_max.clamp(1, Semaphore::MAX_PERMITS);
        let (jobs_tx, jobs_rx) = mpsc::channel(in_flight_max);
        let (pending_tx, pending_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            close_notify: Notify::new(),
            replies_last_read: AtomicUsize::new(0),
            #[cfg(test)]
            writes: std::sync::atomic::AtomicU64::new(0),
            reason: std::sync::Mutex::new(None),
        });
        tokio::spawn(write_loop(jobs_rx, pending_tx, writer, shared.clone()));
        tokio::spawn(read_loop(reader, pending_rx, shared.clone()));
        let connection = Connection {
            addr: addr.to_string(),
            jobs: jobs_tx,
            permits: Arc::new(Semaphore::new(in_flight_max)),
            shared,
        };
        let ping = tokio::time::timeout(
            connect_timeout,
            connection.call(Bytes::from_static(b"PING\n")),
        )
        .await;
        match ping {
            Ok(Ok(line)) if parse_reply(&line) == Reply::Pong => Ok(connection),
            Ok(Ok(line)) => {
                connection.close("unexpected answer to PING".into());
                Err(format!(
                    "{addr} answered PING with '{}'",
                    String::from_utf8_lossy(&line)
                ))
            }
            Ok(Err(CallError::NotSent(e) | CallError::Lost(e))) => Err(format!("{addr}: {e}")),
            Err(_) => {
                connection.close("no answer to PING".into());
                Err(format!(
                    "{addr} did not answer PING within {connect_timeout:?}"
                ))
            }
        }
    }

    /// The node's address as given to [`Connection::connect`].
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection died (every later call fails with [`CallError::NotSent`]).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Kills the connection: pending requests fail as described in the module docs.
    pub(crate) fn close(&self, reason: String) {
        self.shared.close(reason);
    }

    /// Sends one request line (ending in `\n`) and waits for its reply line (without `\n`).
    /// Waits for a slot when `in_flight_max` requests are already out.
    pub(crate) async fn call(&self, line: Bytes) -> Result<Bytes, CallError> {
        if self.is_closed() {
            return Err(CallError::NotSent(self.shared.reason()));
        }
        let permit = tokio::select! {
            permit = self.permits.clone().acquire_owned() => permit
                .map_err(|_| CallError::NotSent("connection closed".into()))?,
            () = self.shared.close_notify.notified() => {
                return Err(CallError::NotSent(self.shared.reason()));
            }
        };
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                line,
                reply,
                permit,
            })
            .await
            .map_err(|_| CallError::NotSent(self.shared.reason()))?;
        match answer.await {
            Ok(result) => result,
            // Both tasks answer every job before ending; a dropped sender means a task vanished
            // (a panic), so nothing can be said about whether the request was sent.
            Err(_) => Err(CallError::Lost(self.shared.reason())),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close("connection dropped by the client".into());
    }
}

/// Moves jobs from the channel to the socket, queueing their reply senders to the reader first.
async fn write_loop(
    mut jobs: mpsc::Receiver<Job>,
    pending: mpsc::UnboundedSender<Pending>,
    mut writer: OwnedWriteHalf,
    shared: Arc<Shared>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BATCH_BYTES_MAX);
    loop {
        let closed = shared.close_notify.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if shared.closed.load(Ordering::Acquire) {
            break;
        }
        let first = tokio::select! {
            job = jobs.recv() => job,
            () = &mut closed => None,
        };
        let Some(mut job) = first else { break };
        // When the reader's last read woke several callers, they are about to send again. Let
        // them run and queue first: the runtime runs the task a send just woke (this one) before
        // the others, so otherwise every request went out in a write of its own (measured: one
        // `sendto` per request with 8 callers pipelining on a connection; with this, ~7 per
        // write, and the load generator's CPU per request roughly halves). A lone caller's
        // request is written at once (the yield would cost it ~15 µs).
        if shared.replies_last_read.load(Ordering::Relaxed) > 1 {
            tokio::task::yield_now().await;
        }
        buf.clear();
        loop {
            buf.extend_from_slice(&job.line);
            let Job { reply, permit, .. } = job;
            if let Err(mpsc::error::SendError(p)) = pending.send(Pending {
                reply,
                _permit: permit,
            }) {
                // The reader is gone, so this line will not be written: not sent.
                let _ = p.reply.send(Err(CallError::NotSent(shared.reason())));
                shared.close("reader ended".into());
                break;
            }
            if buf.len() >= WRITE_BATCH_BYTES_MAX {
                break;
            }
            match jobs.try_recv() {
                Ok(next) => job = next,
                Err(_) => break,
            }
        }
        if shared.closed.load(Ordering::Acquire) {
            break;
        }
        #[cfg(test)]
        shared.writes.fetch_add(1, Ordering::Relaxed);
        let written = tokio::select! {
            written = writer.write_all(&buf) => written,
            () = &mut closed => Err(io::Error::other("closed while writing")),
        };
        if let Err(e) = written {
            shared.close(format!("write failed: {e}"));
            break;
        }
    }
    // Whatever is still in the channel never reached the socket.
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        let _ = job.reply.send(Err(CallError::NotSent(shared.reason())));
    }
    let _ = writer.shutdown().await;
}

/// Splits replies into lines and hands each to the oldest pending request.
async fn read_loop(
    mut reader: OwnedReadHalf,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    shared: Arc<Shared>,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    'outer: loop {
        let closed = shared.close_notify.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if shared.closed.load(Ordering::Acquire) {
            break;
        }
        let read = tokio::select! {
            read = reader.read_buf(&mut buf) => read,
            () = &mut closed => break,
        };
        match read {
            Ok(0) => {
                shared.close("the node closed the connection".into());
                break;
            }
            Ok(_) => {}
            Err(e) => {
                shared.close(format!("read failed: {e}"));
                break;
            }
        }
        let mut replies = 0;
        while let Some(newline) = buf.iter().position(|&b| b == b'\n') {
            let mut line = buf.split_to(newline + 1).freeze();
            line.truncate(newline);
            // The writer queues a sender before writing its line, so a reply always finds one;
            // a line without one is unsolicited (the node closing on us).
            let Ok(p) = pending.try_recv() else {
                shared.close(format!(
                    "unsolicited line from the node: '{}'",
                    String::from_utf8_lossy(&line)
                ));
                break 'outer;
            };
            match parse_reply(&line) {
                Reply::Err(error) if error.kind.closes_connection() => {
                    // The node stopped reading before this request: it was not served.
                    let reason = error.to_string();
                    let _ = p.reply.send(Err(CallError::NotSent(reason.clone())));
                    shared.close(format!("the node is closing the connection: {reason}"));
                    break 'outer;
                }
                _ => {}
            }
            let _ = p.reply.send(Ok(line));
            replies += 1;
        }
        shared.replies_last_read.store(replies, Ordering::Relaxed);
        if buf.len() > REPLY_BYTES_MAX {
            shared.close(format!("reply line longer than {REPLY_BYTES_MAX} bytes"));
            break;
        }
    }
    shared.close("reader ended".into());
    pending.close();
    let reason = shared.reason();
    while let Ok(p) = pending.try_recv() {
        let _ = p.reply.send(Err(CallError::Lost(reason.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    /// A node that answers `PING`, then waits for `callers` request lines at a time and answers
    /// them in one write, as a loaded node does.
    async fn fake_node(callers: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (reader, mut writer) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(reader).lines();
            if !matches!(lines.next_line().await, Ok(Some(l)) if l == "PING") {
                return;
            }
            if writer.write_all(b"PONG\n").await.is_err() {
                return;
            }
            loop {
                for _ in 0..callers {
                    if !matches!(lines.next_line().await, Ok(Some(_))) {
                        return;
                    }
                }
                if writer.write_all(&b"OK\n".repeat(callers)).await.is_err() {
                    return;
                }
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_woken_together_send_their_next_requests_together() {
        const CALLERS: usize = 8;
        const ROUNDS: usize = 50;
        let addr = fake_node(CALLERS).await;
        let connection = Arc::new(
            Connection::connect(&addr, Duration::from_secs(5), 64)
                .await
                .expect("connect"),
        );
        let calls = (0..CALLERS).map(|_| {
            let connection = connection.clone();
            tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    let reply = connection.call(Bytes::from_static(b"GET k\n")).await;
                    assert_eq!(reply, Ok(Bytes::from_static(b"OK")));
                }
            })
        });
        let all = futures_util::future::join_all(calls);
        let done = tokio::time::timeout(Duration::from_secs(20), all)
            .await
            .expect("the calls finish");
        assert!(done.iter().all(Result::is_ok), "a caller failed");
        // One write for PING, then one per round when batched (measured 56-64 in all), one per
        // request when not (measured 194-401: some requests still meet in the channel).
        let writes = connection.shared.writes.load(Ordering::Relaxed) as usize;
        assert!(
            writes <= 1 + CALLERS * ROUNDS / 4,
            "{writes} writes for {} requests",
            CALLERS * ROUNDS
        );
    }
}
