//! Runs bench operations over the HTTP API: one HTTP/1.1 keep-alive connection (hyper's
//! low-level client) per request in flight, reconnecting to the next node after a broken one.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ETAG, HOST, IF_MATCH, IF_NONE_MATCH};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::bench::runner::{Done, Failure};
use crate::bench::workload::OpKind;
use crate::paxos::types::Revision;

/// One HTTP connection of a bench worker, with the node list to fail over to.
pub struct HttpConn {
    /// HTTP addresses (`host:port`) of the nodes.
    nodes: Vec<String>,
    /// The node in use (index into `nodes`).
    index: usize,
    /// The open connection, if any.
    sender: Option<SendRequest<Full<Bytes>>>,
    /// How long connecting plus one exchange may take.
    timeout: Duration,
}

fn failure(kind: &str, message: impl Into<String>) -> Failure {
    Failure {
        kind: kind.to_string(),
        message: message.into(),
    }
}

impl HttpConn {
    /// A connection that will open on first use, to `nodes[start % len]`.
    pub fn new(nodes: Vec<String>, start: usize, timeout: Duration) -> HttpConn {
        let index = start % nodes.len().max(1);
        HttpConn {
            nodes,
            index,
            sender: None,
            timeout,
        }
    }

    async fn connect(&mut self) -> Result<(), Failure> {
        let addr = &self.nodes[self.index];
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| failure("connect", format!("{addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failure("connect", format!("{addr}: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    fn broken(&mut self) {
        self.sender = None;
        self.index = (self.index + 1) % self.nodes.len().max(1);
    }

    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Option<Revision>, Bytes), Failure> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(failure("connect", "no connection"));
        };
        sender
            .ready()
            .await
            .map_err(|e| failure("connection", e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failure("connection", e.to_string()))?;
        let status = response.status();
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_matches('"').parse().ok());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failure("connection", e.to_string()))?
            .to_bytes();
        Ok((status, etag, body))
    }

    /// Runs one operation; `expected` is the revision a `Cas` compares against (0: create only).
    pub async fn run_op(
        &mut self,
        op: OpKind,
        key: &str,
        value: &Bytes,
        expected: Revision,
    ) -> Result<Done, Failure> {
        let host = self.nodes[self.index].clone();
        let builder = Request::builder()
            .uri(format!("/{key}"))
            .header(HOST, host.as_str());
        let request = match op {
            OpKind::Put => builder.method(Method::PUT).body(Full::new(value.clone())),
            OpKind::Get => builder.method(Method::GET).body(Full::new(Bytes::new())),
            OpKind::Cas if expected == 0 => builder
                .method(Method::PUT)
                .header(IF_NONE_MATCH, "*")
                .body(Full::new(value.clone())),
            OpKind::Cas => builder
                .method(Method::PUT)
                .header(IF_MATCH, format!("\"{expected}\""))
                .body(Full::new(value.clone())),
        }
        .map_err(|e| failure("invalid_request", e.to_string()))?;
        let exchanged = match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(failure("timeout", format!("no reply from {host} in time"))),
        };
        let (status, etag, body) = match exchanged {
            Ok(answer) => answer,
            Err(e) => {
                self.broken();
                return Err(e);
            }
        };
        match (op, status) {
            (OpKind::Put | OpKind::Cas, StatusCode::OK | StatusCode::CREATED) => {
                Ok(Done::Written(etag.unwrap_or(0)))
            }
            (OpKind::Get, StatusCode::OK | StatusCode::NOT_FOUND) => Ok(Done::Read),
            (OpKind::Cas, StatusCode::PRECONDITION_FAILED) => Ok(Done::Conflict(etag.unwrap_or(0))),
            (_, StatusCode::SERVICE_UNAVAILABLE) => {
                let text = String::from_utf8_lossy(&body).trim().to_string();
                let kind = if text.starts_with("no quorum") {
                    "no_quorum"
                } else if text.starts_with("outcome unknown") {
                    "outcome_unknown"
                } else {
                    "unavailable"
                };
                Err(failure(kind, text))
            }
            (_, status) => Err(failure(
                &format!("http_{}", status.as_u16()),
                String::from_utf8_lossy(&body).trim().to_string(),
            )),
        }
    }
}
