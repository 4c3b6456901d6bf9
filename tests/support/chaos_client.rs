//! Chaos clients: threads that put, compare-and-swap and read a few keys over HTTP, each through
//! its own node, and record every operation with its invocation and completion times and what
//! came back, classified for the linearizability checker:
//!
//! - 201/200 with an ETag: written at that revision; 412: conflict with the current revision;
//! - 503 "no quorum": nothing was proposed, the operation did not happen (left out);
//! - a refused connection: the request never reached a node (left out);
//! - any other failure of a write (timeout, reset, 503 "outcome unknown", 5xx): **unknown**, it
//!   may or may not have taken effect; a read that fails is left out.

#![allow(dead_code)]

use super::chaos_proxy::SplitMix;
use super::linearizability::{HistOp, KvOp, Observed};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a client waits for one answer; longer than the nodes' request timeout, so a timeout
/// here means the node is paused, dead or cut off mid-request.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client rests after a failed request before the next one.
pub const CLIENT_BACKOFF: Duration = Duration::from_millis(30);
/// Keys in use at any time; the nemesis moves clients to fresh keys at every phase so that each
/// key's history stays short and the check stays fast.
pub const KEYS_PER_EPOCH: u64 = 3;

/// Every operation of a run, by key.
pub struct Recorder {
    origin: Instant,
    pub ops: Mutex<BTreeMap<String, Vec<HistOp>>>,
    /// Value ids are unique across the run.
    next_value: AtomicU64,
    /// The current key epoch (keys are `e<epoch>-k<j>`).
    pub epoch: AtomicU64,
    pub unexpected: Mutex<Vec<String>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            origin: Instant::now(),
            ops: Mutex::new(BTreeMap::new()),
            next_value: AtomicU64::new(1),
            epoch: AtomicU64::new(0),
            unexpected: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).expect("fits u64")
    }

    fn record(&self, key: String, op: HistOp) {
        self.ops
            .lock()
            .expect("ops")
            .entry(key)
            .or_default()
            .push(op);
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_millis(500))
        .timeout(CLIENT_TIMEOUT)
        .build()
}

/// An HTTP answer, or why there was none.
enum Reply {
    Status {
        status: u16,
        etag: Option<u64>,
        body: String,
    },
    /// The connection was refused: the request never left.
    Refused,
    /// Timed out or broke after the request may have been sent.
    Lost,
}

fn call(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::ConnectionFailed => {
            return Reply::Refused
        }
        Err(ureq::Error::Transport(_)) => return Reply::Lost,
    };
    let status = response.status();
    let etag = response
        .header("etag")
        .and_then(|e| e.trim_matches('"').parse().ok());
    match response.into_string() {
        Ok(body) => Reply::Status { status, etag, body },
        Err(_) => Reply::Lost,
    }
}

/// A write's outcome for the history; `None`: it did not happen (leave it out).
fn write_outcome(reply: Reply, recorder: &Recorder, what: &str) -> Option<Observed> {
    match reply {
        Reply::Refused => None,
        Reply::Lost => Some(Observed::Unknown),
        Reply::Status { status, etag, body } => match (status, etag) {
            (201, Some(revision)) => Some(Observed::Written {
                revision,
                created: true,
            }),
            (200, Some(revision)) => Some(Observed::Written {
                revision,
                created: false,
            }),
            (412, current) => Some(Observed::Conflict {
                current: current.unwrap_or(0),
            }),
            (503, _) if body.starts_with("no quorum") => None,
            (503, _) => Some(Observed::Unknown),
            _ => {
                recorder
                    .unexpected
                    .lock()
                    .expect("unexpected")
                    .push(format!("{what}: {status} {body}"));
                Some(Observed::Unknown)
            }
        },
    }
}

/// `CHAOS_STALE_READS=1` breaks the clients on purpose: reads ask for the node's local state
/// (`?stale=true`), which is not linearizable; the checker must then report violations. This is
/// how the chaos runs' teeth were shown (`docs/reliability.md`).
fn stale_reads() -> bool {
    std::env::var("CHAOS_STALE_READS").is_ok_and(|v| v == "1")
}

/// Starts one client per node plus one more on the first node (so one node always serves two
/// clients at once), each running until `stop`.
pub fn spawn_clients<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    http_ports: &[u16],
    seed: u64,
    recorder: &'scope Recorder,
    stop: &'scope AtomicBool,
) {
    for client in 0..=http_ports.len() {
        let node = client % http_ports.len();
        let port = http_ports[node];
        scope.spawn(move || run_client(client, node, port, seed, recorder, stop));
    }
}

/// Runs one client against the node with HTTP port `port` until `stop`.
pub fn run_client(
    client: usize,
    node: usize,
    port: u16,
    seed: u64,
    recorder: &Recorder,
    stop: &AtomicBool,
) {
    let agent = agent();
    let mut rng = SplitMix::new(seed ^ (client as u64).wrapping_mul(0x9E37_79B9));
    let mut last_revision: HashMap<String, u64> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let epoch = recorder.epoch.load(Ordering::Relaxed);
        let key = format!("e{epoch}-k{}", rng.below(KEYS_PER_EPOCH));
        let url = format!("http://127.0.0.1:{port}/{key}");
        let dice = rng.below(100);
        let read_url = if stale_reads() {
            format!("{url}?stale=true")
        } else {
            url.clone()
        };
        let invoke = recorder.now();
        let (op, observed) = if dice < 40 {
            let reply = call(agent.get(&read_url).call());
            let seen = match reply {
                Reply::Status {
                    status: 200,
                    etag: Some(revision),
                    body,
                } => body.parse().ok().map(|value| Some((value, revision))),
                Reply::Status { status: 404, .. } => Some(None),
                _ => None,
            };
            if let Some(Some((_, revision))) = seen {
                last_revision.insert(key.clone(), revision);
            }
            (KvOp::Read, seen.map(Observed::Read))
        } else {
            let value = recorder.next_value.fetch_add(1, Ordering::Relaxed);
            let (op, request) = if dice < 75 {
                (KvOp::Put { value }, agent.put(&url))
            } else {
                let expect = last_revision.get(&key).copied().unwrap_or(1);
                (
                    KvOp::Cas { expect, value },
                    agent.put(&url).set("If-Match", &format!("\"{expect}\"")),
                )
            };
            let reply = call(request.send_string(&value.to_string()));
            let observed = write_outcome(reply, recorder, &format!("{op:?} {key}"));
            match observed {
                Some(Observed::Written { revision, .. }) => {
                    last_revision.insert(key.clone(), revision);
                }
                Some(Observed::Conflict { current }) if current > 0 => {
                    last_revision.insert(key.clone(), current);
                }
                _ => {}
            }
            (op, observed)
        };
        let complete = recorder.now();
        match observed {
            Some(observed) => {
                let unknown = observed == Observed::Unknown;
                recorder.record(
                    key,
                    HistOp {
                        client,
                        node,
                        invoke,
                        complete: if unknown { u64::MAX } else { complete },
                        op,
                        observed,
                    },
                );
                if unknown {
                    std::thread::sleep(CLIENT_BACKOFF);
                }
            }
            None => std::thread::sleep(CLIENT_BACKOFF),
        }
    }
}

/// The role a node reports on `/_status` ("leader", "follower", …), if it answers quickly.
pub fn role(port: u16) -> Option<String> {
    status_field(port, "role")?.as_str().map(str::to_string)
}

/// The member id a node reports on `/_status`, if it answers quickly.
pub fn member_id(port: u16) -> Option<u64> {
    status_field(port, "node_id")?.as_u64()
}

fn status_field(port: u16, field: &str) -> Option<serde_json::Value> {
    let response = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(500))
        .build()
        .get(&format!("http://127.0.0.1:{port}/_status"))
        .call()
        .ok()?;
    let status: serde_json::Value = serde_json::from_str(&response.into_string().ok()?).ok()?;
    status.get(field).cloned()
}

/// Asks the node on `port` to move leadership to member `id` (`POST /_leader`); the HTTP status,
/// or `None` if it did not answer in time.
pub fn transfer_leader(port: u16, id: u64) -> Option<u16> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(3))
        .build();
    match agent
        .post(&format!("http://127.0.0.1:{port}/_leader"))
        .send_string(&format!("{{\"id\": {id}}}"))
    {
        Ok(response) => Some(response.status()),
        Err(ureq::Error::Status(code, _)) => Some(code),
        Err(_) => None,
    }
}
