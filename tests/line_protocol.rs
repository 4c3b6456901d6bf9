//! The line protocol over real TCP on 127.0.0.1, byte by byte, with a [`MemoryStore`] behind.
//! Every read is bounded by [`READ_TIMEOUT`], so a hung server fails the test instead of hanging.
//!
//! Teeth (each break tried on purpose, each caught by the named test):
//! - replies in completion order (`FuturesUnordered`): `pipelined_replies_keep_request_order`;
//! - no per-key wait within a connection: the same test (`GET a` after `PUT a 1` saw NOT_FOUND);
//! - a pipeline window of 1 (no concurrency): `pipelined_requests_run_concurrently`;
//! - not discarding the rest of an unterminated over-long line:
//!   `over_long_line_is_refused_then_next_line_works`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use consens::internals::paxos::types::Op;
use consens::internals::server::line::{serve_line, LineOptions};
use consens::internals::server::memory::MemoryStore;
use consens::internals::server::{Store, StoreError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any single read may take before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A running server; dropping it aborts the server task.
struct Server {
    addr: std::net::SocketAddr,
    store: MemoryStore,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start(options: LineOptions) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let store = MemoryStore::new();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_line(listener, store.clone(), options, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            store,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    async fn default() -> Server {
        Server::start(LineOptions::default()).await
    }

    async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Triggers shutdown and waits (bounded) for the server to return.
    async fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(READ_TIMEOUT, task)
                .await
                .expect("server stops in time")
                .expect("server task");
            result.expect("serve_line returns Ok");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client {
            stream: BufReader::new(stream),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("send");
    }

    /// The next reply line as raw bytes, without its `\n`; panics on EOF or timeout.
    async fn line_bytes(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let n = tokio::time::timeout(READ_TIMEOUT, self.stream.read_until(b'\n', &mut line))
            .await
            .expect("reply in time")
            .expect("read");
        assert!(n > 0, "unexpected EOF");
        assert_eq!(line.pop(), Some(b'\n'), "reply ends with a newline");
        line
    }

    async fn line(&mut self) -> String {
        String::from_utf8(self.line_bytes().await).expect("UTF-8 reply")
    }

    /// Sends one request and returns its reply.
    async fn ask(&mut self, request: &str) -> String {
        self.send(request.as_bytes()).await;
        self.send(b"\n").await;
        self.line().await
    }

    /// Asserts the server closes the connection (EOF) within the timeout.
    async fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        let result = tokio::time::timeout(READ_TIMEOUT, self.stream.read_to_end(&mut rest))
            .await
            .expect("EOF in time");
        if let Ok(n) = result {
            assert_eq!(n, 0, "unexpected bytes before EOF: {rest:?}");
        }
    }
}

#[tokio::test]
async fn every_command_and_reply() {
    let server = Server::default().await;
    let mut c = server.client().await;
    assert_eq!(c.ask("PUT k v").await, "OK 1");
    assert_eq!(c.ask("GET k").await, "VALUE v");
    assert_eq!(c.ask("PUT k hello  spaced world ").await, "OK 2");
    assert_eq!(c.ask("GET k").await, "VALUE hello  spaced world ");
    // A failed compare-and-swap still uses a slot, so later revisions count it.
    assert_eq!(c.ask("CAS k 1 x").await, "CONFLICT 2");
    assert_eq!(c.ask("CAS k 2 x y").await, "OK 4");
    assert_eq!(c.ask("GET k").await, "VALUE x y");
    assert_eq!(c.ask("CAS new 0 a").await, "OK 5");
    assert_eq!(c.ask("CAS new 0 b").await, "CONFLICT 5");
    assert_eq!(c.ask("CAS absent 3 b").await, "CONFLICT 0");
    assert_eq!(c.ask("PUT empty ").await, "OK 8");
    assert_eq!(c.ask("GET empty").await, "VALUE ");
    assert_eq!(c.ask("DEL k").await, "OK");
    assert_eq!(c.ask("DEL k").await, "NOT_FOUND");
    assert_eq!(c.ask("GET k").await, "NOT_FOUND");
    assert_eq!(c.ask("PING").await, "PONG");
    assert_eq!(c.ask("ping").await, "PONG");
    assert_eq!(c.ask("gEt new").await, "VALUE a");
    assert!(c
        .ask("HELP")
        .await
        .starts_with("commands: PUT <key> <value>"));
    let status = c.ask("STATUS").await;
    assert!(
        status.starts_with(
            "node=memory id=0 role=leader leader=memory ballot=1.0 decided=10 applied=10"
        ),
        "{status}"
    );
    assert_eq!(c.ask("QUIT").await, "BYE");
    c.expect_eof().await;
}

#[tokio::test]
async fn crlf_and_lf_and_unterminated_last_line() {
    let server = Server::default().await;
    let mut c = server.client().await;
    c.send(b"PING\r\nPUT a b\r\nGET a\r\nPUT c d\nGET c\n")
        .await;
    assert_eq!(c.line().await, "PONG");
    assert_eq!(c.line().await, "OK 1");
    assert_eq!(c.line().await, "VALUE b");
    assert_eq!(c.line().await, "OK 2");
    assert_eq!(c.line().await, "VALUE d");
    // A last line without a newline, then EOF: still answered, then closed.
    c.send(b"GET a").await;
    c.stream.get_mut().shutdown().await.expect("half-close");
    assert_eq!(c.line().await, "VALUE b");
    c.expect_eof().await;
}

#[tokio::test]
async fn pipelined_replies_keep_request_order() {
    let server = Server::default().await;
    server.store.set_write_delay(Duration::from_millis(150));
    let mut c = server.client().await;
    // Writes are slow, PING and errors are instant: replies must still come in request order,
    // and the GET must see the PUT before it on the same key.
    c.send(b"PUT a 1\nPING\nFOO\nGET a\nPUT b 2\nPING\nDEL a\nGET a\n")
        .await;
    for expected in [
        "OK 1",
        "PONG",
        "ERR unknown_command 'FOO' (try HELP)",
        "VALUE 1",
        "OK 2",
        "PONG",
        "OK",
        "NOT_FOUND",
    ] {
        assert_eq!(c.line().await, expected);
    }
}

#[tokio::test]
async fn pipelined_requests_run_concurrently() {
    let server = Server::default().await;
    let delay = Duration::from_millis(100);
    server.store.set_write_delay(delay);
    let mut c = server.client().await;
    let count = 20u32;
    let mut batch = Vec::new();
    for i in 0..count {
        batch.extend_from_slice(format!("PUT key{i} v{i}\n").as_bytes());
    }
    let started = Instant::now();
    c.send(&batch).await;
    for _ in 0..count {
        assert!(c.line().await.starts_with("OK "));
    }
    // One after the other would take count × delay (2 s).
    assert!(
        started.elapsed() < delay * (count / 2),
        "pipelined writes ran one by one: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bad_input_gets_err_and_connection_stays_usable() {
    let server = Server::default().await;
    let mut c = server.client().await;
    let cases: &[(&[u8], &str)] = &[
        (b"FOO bar\n", "ERR unknown_command 'FOO' (try HELP)"),
        (b"\n", "ERR bad_request empty line"),
        (b"PUT k\n", "ERR bad_request usage: PUT <key> <value>"),
        (b"PUT\n", "ERR bad_request usage: PUT <key> <value>"),
        (b"GET\n", "ERR bad_request usage: GET <key>"),
        (b"GET a b\n", "ERR bad_request usage: GET <key>"),
        (b"DEL\n", "ERR bad_request usage: DEL <key>"),
        (
            b"CAS k 1\n",
            "ERR bad_request usage: CAS <key> <revision> <value>",
        ),
        (
            b"CAS k one v\n",
            "ERR bad_request bad revision: expected a decimal number",
        ),
        (b"PING now\n", "ERR bad_request usage: PING"),
        (
            b"PUT k a\x00b\n",
            "ERR bad_request NUL bytes are not allowed",
        ),
        (
            b"\xff\xfe k\n",
            "ERR bad_request command word is not valid UTF-8",
        ),
        (
            b"PUT _k v\n",
            "ERR invalid_key keys starting with '_' are reserved",
        ),
        (b"GET  k\n", "ERR bad_request usage: GET <key>"),
        (b"PUT  v\n", "ERR invalid_key empty"),
        (
            b"GET k\x01\n",
            "ERR invalid_key spaces and control characters are not allowed",
        ),
    ];
    for (request, expected) in cases {
        c.send(request).await;
        assert_eq!(c.line().await, *expected, "request {request:?}");
    }
    let long_key = "k".repeat(1025);
    assert_eq!(
        c.ask(&format!("GET {long_key}")).await,
        "ERR invalid_key 1025 bytes, the maximum is 1024"
    );
    assert_eq!(c.ask("PING").await, "PONG");
}

#[tokio::test]
async fn over_long_line_is_refused_then_next_line_works() {
    let server = Server::start(LineOptions {
        line_bytes_max: 100,
        ..LineOptions::default()
    })
    .await;
    let mut c = server.client().await;
    // Terminated within one write.
    c.send(&[b'a'; 101]).await;
    c.send(b"\nPING\n").await;
    assert_eq!(
        c.line().await,
        "ERR line_too_long the line is longer than 100 bytes and was discarded"
    );
    assert_eq!(c.line().await, "PONG");
    // Unterminated across many writes: one error, the rest discarded up to the newline.
    c.send(b"PUT k ").await;
    for _ in 0..50 {
        c.send(&[b'x'; 1000]).await;
    }
    c.send(b"\nGET k\n").await;
    assert_eq!(
        c.line().await,
        "ERR line_too_long the line is longer than 100 bytes and was discarded"
    );
    assert_eq!(c.line().await, "NOT_FOUND");
    // Exactly at the limit, with CRLF, is fine.
    let mut line = b"PUT k ".to_vec();
    line.resize(100, b'v');
    line.extend_from_slice(b"\r\n");
    c.send(&line).await;
    assert_eq!(c.line().await, "OK 1");
}

#[tokio::test]
async fn store_errors_become_err_lines() {
    let server = Server::default().await;
    let mut c = server.client().await;
    server.store.set_failure(Some(StoreError::NoQuorum));
    assert_eq!(
        c.ask("PUT k v").await,
        "ERR no_quorum the request was not proposed"
    );
    assert_eq!(
        c.ask("GET k").await,
        "ERR no_quorum the request was not proposed"
    );
    server.store.set_failure(Some(StoreError::OutcomeUnknown));
    assert_eq!(
        c.ask("DEL k").await,
        "ERR outcome_unknown the request was proposed but not confirmed in time; it may or may not have been applied"
    );
    server
        .store
        .set_failure(Some(StoreError::Unavailable("catching up".into())));
    assert_eq!(c.ask("CAS k 0 v").await, "ERR unavailable catching up");
    server.store.set_failure(None);
    assert_eq!(c.ask("PUT k v").await, "OK 1");
}

#[tokio::test]
async fn values_with_newlines_are_not_sent_raw() {
    let server = Server::default().await;
    server
        .store
        .write(Op::Put {
            key: Bytes::from_static(b"multi"),
            value: Bytes::from_static(b"line1\nline2"),
            expect: None,
        })
        .await
        .expect("write");
    let mut c = server.client().await;
    assert!(c
        .ask("GET multi")
        .await
        .starts_with("ERR value_has_newline "));
    assert_eq!(c.ask("PING").await, "PONG");
}

#[tokio::test]
async fn binary_values_round_trip() {
    let server = Server::default().await;
    let mut c = server.client().await;
    c.send(b"PUT bin a\x01\xff\tz\r\n").await;
    assert_eq!(c.line().await, "OK 1");
    c.send(b"GET bin\n").await;
    assert_eq!(c.line_bytes().await, b"VALUE a\x01\xff\tz");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused() {
    let server = Server::start(LineOptions {
        connections_max: 2,
        ..LineOptions::default()
    })
    .await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    assert_eq!(a.ask("PING").await, "PONG");
    assert_eq!(b.ask("PING").await, "PONG");
    let mut refused = server.client().await;
    assert!(refused
        .line()
        .await
        .starts_with("ERR too_many_connections "));
    refused.expect_eof().await;
    // Closing one frees its slot.
    assert_eq!(a.ask("QUIT").await, "BYE");
    a.expect_eof().await;
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let mut c = server.client().await;
        c.send(b"PING\n").await;
        match c.line().await.as_str() {
            "PONG" => break,
            refused
                if refused.starts_with("ERR too_many_connections ")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => panic!("unexpected reply {other}"),
        }
    }
    assert_eq!(b.ask("PING").await, "PONG");
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server = Server::start(LineOptions {
        idle_timeout: Duration::from_millis(200),
        ..LineOptions::default()
    })
    .await;
    let mut c = server.client().await;
    // Activity keeps it open past the timeout.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(c.ask("PING").await, "PONG");
    }
    let started = Instant::now();
    assert_eq!(
        c.line().await,
        "ERR idle_timeout nothing received for 200 ms; closing"
    );
    c.expect_eof().await;
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut server = Server::default().await;
    server.store.set_write_delay(Duration::from_millis(300));
    let mut c = server.client().await;
    let mut idle = server.client().await;
    assert_eq!(idle.ask("PING").await, "PONG");
    c.send(b"PUT k v\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let addr = server.addr;
    server.shut_down().await;
    // The in-flight write was answered before the server returned; both connections close.
    assert_eq!(c.line().await, "OK 1");
    c.expect_eof().await;
    idle.expect_eof().await;
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}
