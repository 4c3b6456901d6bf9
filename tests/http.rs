//! The HTTP API over real TCP on 127.0.0.1, with a [`MemoryStore`] behind. Requests are raw
//! HTTP/1.1 bytes with `Connection: close`; every exchange is bounded by [`EXCHANGE_TIMEOUT`].

use std::time::Duration;

use axum::body::Body;
use consens::internals::server::http::{router, serve_http};
use consens::internals::server::memory::MemoryStore;
use consens::internals::server::{Consistency, StoreError, VALUE_BYTES_MAX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// The longest one request/response exchange may take before the test fails.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

struct Server {
    addr: std::net::SocketAddr,
    store: MemoryStore,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let store = MemoryStore::new();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_http(listener, store.clone(), async {
            let _ = rx.await;
        }));
        Server {
            addr,
            store,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        exchange(self.addr, method, path, headers, body).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

/// Sends one request on a fresh connection and reads the whole response (the server closes the
/// connection after it). The response is split at the blank line; bodies here are never chunked.
async fn exchange(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    tokio::time::timeout(EXCHANGE_TIMEOUT, async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&bytes).await.expect("send");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        parse_response(&response)
    })
    .await
    .expect("response in time")
}

fn parse_response(response: &[u8]) -> Reply {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&response[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let reply = Reply {
        status,
        headers,
        body: response[split + 4..].to_vec(),
    };
    assert_ne!(reply.header("transfer-encoding"), Some("chunked"));
    reply
}

#[tokio::test]
async fn put_get_delete() {
    let s = Server::start().await;
    let r = s.request("PUT", "/k", &[], b"v1").await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.text(), "created, revision 1\n");
    let r = s.request("PUT", "/k", &[], b"v2").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_eq!(r.text(), "updated, revision 2\n");
    let r = s.request("GET", "/k", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"v2"[..]));
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_eq!(
        s.store.last_read_consistency(),
        Some(Consistency::Linearizable)
    );
    let r = s.request("DELETE", "/k", &[], b"").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let r = s.request("DELETE", "/k", &[], b"").await;
    assert_eq!((r.status, r.text()), (404, "not found\n"));
    let r = s.request("GET", "/k", &[], b"").await;
    assert_eq!((r.status, r.text()), (404, "not found\n"));
    let r = s.request("POST", "/k", &[], b"").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, DELETE"));
}

#[tokio::test]
async fn keys_are_the_percent_decoded_path() {
    let s = Server::start().await;
    assert_eq!(s.request("PUT", "/a/b%20c", &[], b"x").await.status, 201);
    assert_eq!(s.request("PUT", "/%FF%00", &[], b"raw").await.status, 201);
    let r = s.request("GET", "/a/b%20c?stale=false", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"x"[..]));
    let r = s.request("GET", "/%ff%00", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"raw"[..]));
    assert_eq!(s.request("GET", "/a", &[], b"").await.status, 404);
}

#[tokio::test]
async fn conditional_puts() {
    let s = Server::start().await;
    // If-Match on an absent key fails.
    let r = s.request("PUT", "/c", &[("If-Match", "\"5\"")], b"x").await;
    assert_eq!(
        (r.status, r.text()),
        (412, "precondition failed: the key does not exist\n")
    );
    let r = s.request("PUT", "/c", &[("If-Match", "*")], b"x").await;
    assert_eq!(r.status, 412);
    // A failed compare-and-swap still uses a slot (slot 1 above): revisions below count it.
    // If-None-Match: * creates only.
    let r = s
        .request("PUT", "/c", &[("If-None-Match", "*")], b"x")
        .await;
    assert_eq!((r.status, r.header("etag")), (201, Some("\"2\"")));
    let r = s
        .request("PUT", "/c", &[("If-None-Match", "*")], b"y")
        .await;
    assert_eq!((r.status, r.header("etag")), (412, Some("\"2\"")));
    assert_eq!(r.text(), "precondition failed: the current revision is 2\n");
    // If-Match with the current revision swaps; with an old one fails.
    let r = s.request("PUT", "/c", &[("If-Match", "\"2\"")], b"y").await;
    assert_eq!((r.status, r.header("etag")), (200, Some("\"4\"")));
    let r = s.request("PUT", "/c", &[("If-Match", "\"2\"")], b"z").await;
    assert_eq!((r.status, r.header("etag")), (412, Some("\"4\"")));
    let r = s.request("PUT", "/c", &[("If-Match", "*")], b"z").await;
    assert_eq!((r.status, r.header("etag")), (200, Some("\"6\"")));
    let r = s.request("GET", "/c", &[], b"").await;
    assert_eq!(r.body, b"z");
    // Malformed conditions are refused, not ignored.
    let r = s
        .request("PUT", "/c", &[("If-Match", "\"abc\"")], b"z")
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().ends_with('\n'));
    let r = s
        .request("DELETE", "/c", &[("If-Match", "\"3\"")], b"")
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn limits_and_bad_keys() {
    let s = Server::start().await;
    // The largest value is accepted.
    let max = vec![b'v'; VALUE_BYTES_MAX];
    assert_eq!(s.request("PUT", "/big", &[], &max).await.status, 201);
    // A declared larger body is refused before it is read (send only the headers).
    let r = exchange_declared_length(s.addr, VALUE_BYTES_MAX + 1).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.text(),
        format!("value too large: the maximum is {VALUE_BYTES_MAX} bytes\n")
    );
    // Keys.
    let r = s.request("PUT", "/_reserved", &[], b"x").await;
    assert_eq!(
        (r.status, r.text()),
        (400, "invalid key: keys starting with '_' are reserved\n")
    );
    assert_eq!(
        s.request("PUT", "/%5Freserved", &[], b"x").await.status,
        400
    );
    assert_eq!(
        s.request("DELETE", "/_reserved", &[], b"").await.status,
        400
    );
    let r = s.request("GET", "/_nope", &[], b"").await;
    assert_eq!(r.status, 404);
    assert!(r
        .text()
        .starts_with("not found: paths starting with /_ are reserved"));
    let r = s.request("PUT", "/", &[], b"x").await;
    assert_eq!((r.status, r.text()), (400, "invalid key: empty\n"));
    let long = format!("/{}", "k".repeat(1025));
    let r = s.request("PUT", &long, &[], b"x").await;
    assert_eq!(
        (r.status, r.text()),
        (400, "invalid key: 1025 bytes, the maximum is 1024\n")
    );
}

/// A PUT whose Content-Length is `len`, without the body.
async fn exchange_declared_length(addr: std::net::SocketAddr, len: usize) -> Reply {
    tokio::time::timeout(EXCHANGE_TIMEOUT, async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "PUT /big HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        parse_response(&response)
    })
    .await
    .expect("response in time")
}

/// A PUT of `body` to `path` through the router, in process (no socket).
async fn put_in_process(store: &MemoryStore, path: &str, body: Body) -> axum::response::Response {
    let request = axum::http::Request::put(path).body(body).expect("request");
    router(store.clone())
        .oneshot(request)
        .await
        .expect("infallible")
}

#[tokio::test]
async fn streamed_body_over_the_limit_is_413() {
    // No Content-Length: the limit is enforced while reading. In-process, so the unread rest of
    // the body cannot turn into a TCP reset that hides the response.
    let store = MemoryStore::new();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b'a'; VALUE_BYTES_MAX]), Ok(vec![b'b'; 10])];
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let response = put_in_process(&store, "/streamed", body).await;
    assert_eq!(response.status(), 413);
    assert!(store.snapshot().get(b"streamed").is_none());
}

#[tokio::test]
async fn stale_reads_work_without_quorum() {
    let s = Server::start().await;
    assert_eq!(s.request("PUT", "/k", &[], b"v").await.status, 201);
    s.store.set_failure(Some(StoreError::NoQuorum));
    let r = s.request("GET", "/k", &[], b"").await;
    assert_eq!(
        (r.status, r.text()),
        (503, "no quorum: the request was not proposed\n")
    );
    assert_eq!(
        s.store.last_read_consistency(),
        Some(Consistency::Linearizable)
    );
    let r = s.request("GET", "/k?stale=true", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"v"[..]));
    assert_eq!(s.store.last_read_consistency(), Some(Consistency::Stale));
}

#[tokio::test]
async fn store_errors_map_to_503() {
    let s = Server::start().await;
    s.store.set_failure(Some(StoreError::NoQuorum));
    let r = s.request("PUT", "/k", &[], b"v").await;
    assert_eq!(
        (r.status, r.text()),
        (503, "no quorum: the request was not proposed\n")
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    s.store.set_failure(Some(StoreError::OutcomeUnknown));
    let r = s.request("DELETE", "/k", &[], b"").await;
    assert_eq!(
        (r.status, r.text()),
        (503, "outcome unknown: the request was proposed but not confirmed in time; it may or may not have been applied\n")
    );
    assert_eq!(r.header("retry-after"), None);
    s.store
        .set_failure(Some(StoreError::Unavailable("catching up".into())));
    let r = s.request("PUT", "/k", &[], b"v").await;
    assert_eq!((r.status, r.text()), (503, "unavailable: catching up\n"));
    s.store.set_failure(Some(StoreError::ShuttingDown));
    let r = s.request("PUT", "/k", &[], b"v").await;
    assert_eq!(
        (r.status, r.text()),
        (503, "shutting down: the node takes no new requests\n")
    );
    s.store.set_failure(Some(StoreError::TooLarge));
    let r = s.request("PUT", "/k", &[], b"v").await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn status_and_health() {
    let s = Server::start().await;
    assert_eq!(s.request("PUT", "/k", &[], b"v").await.status, 201);
    let r = s.request("GET", "/_status", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(json["node"], "memory");
    assert_eq!(json["node_id"], 0);
    assert_eq!(json["role"], "leader");
    assert_eq!(json["leader"], "memory");
    assert_eq!(json["ballot"], "1.0");
    assert_eq!(json["decided"], 1);
    assert_eq!(json["applied"], 1);
    assert_eq!(json["members"][0]["addr"], "memory");
    assert_eq!(json["members"][0]["is_self"], true);
    assert_eq!(
        json["members"][0]["last_heard_ms_ago"], 0,
        "itself: just now"
    );
    assert_eq!(json["members"][0]["role"], "voter");

    let r = s.request("GET", "/_members", &[], b"").await;
    assert_eq!(r.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(
        (json["leader"].clone(), json["self"].clone()),
        (0.into(), 0.into())
    );
    assert_eq!(json["members"][0]["caught_up_slot"], 1);
    assert_eq!(s.request("DELETE", "/_members", &[], b"").await.status, 405);

    let r = s.request("GET", "/_health", &[], b"").await;
    assert_eq!((r.status, r.text()), (200, "ok\n"));
    s.store.set_healthy(false);
    let r = s.request("GET", "/_health", &[], b"").await;
    assert_eq!((r.status, r.text()), (503, "no quorum\n"));
    assert_eq!(s.request("PUT", "/_health", &[], b"").await.status, 405);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut s = Server::start().await;
    s.store.set_write_delay(Duration::from_millis(300));
    let addr = s.addr;
    let in_flight = tokio::spawn(exchange(addr, "PUT", "/slow", &[], b"v"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = s.shutdown.take().expect("sender").send(());
    let r = in_flight.await.expect("client task");
    assert_eq!(r.status, 201);
    let task = s.task.take().expect("task");
    tokio::time::timeout(EXCHANGE_TIMEOUT, task)
        .await
        .expect("server stops in time")
        .expect("server task")
        .expect("serve_http returns Ok");
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

#[tokio::test]
async fn a_stored_value_does_not_share_the_request_buffer() {
    // A body that arrives in one piece is a slice of a larger buffer (hyper's read buffer on a
    // real connection; here the caller's `Bytes`). The store must keep a copy of its own size,
    // or every small value pins the whole buffer for as long as it is stored.
    let store = MemoryStore::new();
    let buffer = bytes::Bytes::from(vec![b'v'; 8192]);
    let body = buffer.slice(0..100);
    let response = put_in_process(&store, "/pinned", Body::from(body)).await;
    assert_eq!(response.status(), 201);
    let stored = store
        .snapshot()
        .get(b"pinned")
        .expect("stored")
        .value
        .clone();
    assert_eq!(stored.len(), 100);
    let buffer_range = buffer.as_ptr_range();
    assert!(
        !buffer_range.contains(&stored.as_ptr()),
        "the stored value points into the request's buffer"
    );
}
