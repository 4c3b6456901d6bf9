//! Simulated clients and the history they record. Each client is attached to one node and has
//! at most one operation in flight: a put, delete, compare-and-swap or linearizable read on one
//! of a few keys, sent to the node's driver as the servers send it (`Request`, answered on a
//! oneshot channel). Invocations and completions are stamped on one global event clock, which is
//! all the linearizability checker needs. A write that times out, whose node crashes, or that the
//! node answers "outcome unknown" has an unknown outcome; a write the node refused ("no quorum",
//! "unavailable") must never take effect; a read without an answer is dropped (reads have no
//! effect).

use super::linearizability::{KeyState, KvOp};
use super::node::SimNode;
use super::rng::SimRng;
use bytes::Bytes;
use consens::internals::node::handle::Request;
use consens::internals::paxos::types::{CommandId, Entry, Op, Outcome};
use consens::internals::server::{Consistency, StoreError};
use tokio::sync::oneshot::{self, error::TryRecvError};

/// The keys clients touch (few, so that operations collide).
pub const KEYS: [&[u8]; 3] = [b"apple", b"berry", b"cherry"];
/// A client waits up to this long between two operations.
pub const CLIENT_THINK_TICKS_MAX: u64 = 12;

/// What became of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Result {
    Pending,
    Write(Outcome),
    Read(KeyState),
    /// A write with no answer: it may or may not have taken effect.
    Unknown,
    /// A write the node refused before proposing it: it must never take effect.
    Refused,
    /// A read with no answer: left out of the history.
    Dropped,
}

/// One operation as the client saw it.
#[derive(Clone, Debug)]
pub struct HistEntry {
    pub client: usize,
    pub key: usize,
    pub op: KvOp,
    /// The command id of a write.
    pub command: Option<CommandId>,
    pub invoke: u64,
    /// The tick it was invoked at.
    pub invoked_tick: u64,
    pub complete: Option<u64>,
    pub result: Result,
}

/// What a client is waiting for: the node's answer.
enum Waiting {
    Write(oneshot::Receiver<std::result::Result<Outcome, StoreError>>),
    Read(oneshot::Receiver<std::result::Result<Option<Entry>, StoreError>>),
}

struct Client {
    node: usize,
    /// Only reads (so that every node serves reads even while writers wait).
    reader: bool,
    /// Index in the history of the operation in flight, what it waits for, and its deadline.
    pending: Option<(usize, Waiting, u64)>,
    next_at: u64,
    /// The last revision this client saw per key (compare-and-swaps mostly expect it).
    seen_revision: [u64; KEYS.len()],
}

/// All clients and the history.
pub struct Clients {
    clients: Vec<Client>,
    pub history: Vec<HistEntry>,
    clock: u64,
    next_value: u64,
    pub ops_invoked: u64,
}

/// Encodes a value id as the bytes a put writes.
pub fn value_bytes(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_be_bytes())
}

/// Decodes what a read returned.
pub fn value_id(bytes: &Bytes) -> u64 {
    let array: [u8; 8] = bytes[..]
        .try_into()
        .expect("the simulator writes 8-byte values");
    u64::from_be_bytes(array)
}

impl Clients {
    /// `count` clients, attached round-robin to `members` nodes; the first `members` only read.
    pub fn new(count: usize, members: usize) -> Clients {
        Clients {
            clients: (0..count)
                .map(|i| Client {
                    node: i % members,
                    reader: i < members,
                    pending: None,
                    next_at: 0,
                    seen_revision: [0; KEYS.len()],
                })
                .collect(),
            history: Vec::new(),
            clock: 0,
            next_value: 1,
            ops_invoked: 0,
        }
    }

    fn tick_clock(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Operations still waiting for an answer.
    pub fn pending(&self) -> usize {
        self.clients.iter().filter(|c| c.pending.is_some()).count()
    }

    /// Idle clients start their next operation (when `issue`), each with a deadline `timeout`
    /// ticks away. Returns trace lines.
    pub fn issue(
        &mut self,
        rng: &mut SimRng,
        now: u64,
        nodes: &mut [SimNode],
        timeout: u64,
        trace: &mut Vec<String>,
    ) {
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            if client.pending.is_some() || now < client.next_at {
                continue;
            }
            let node = client.node;
            let key = rng.index(KEYS.len());
            let seen = client.seen_revision[key];
            let kind = if client.reader { 0 } else { rng.below(10) };
            self.clients[c].next_at = now + rng.below(CLIENT_THINK_TICKS_MAX + 1);
            if !nodes[node].is_up() {
                continue; // refused: nothing happened
            }
            let key_bytes = Bytes::from_static(KEYS[key]);
            if kind < 3 {
                let (reply, answer) = oneshot::channel();
                nodes[node].request(Request::Read {
                    key: key_bytes,
                    consistency: Consistency::Linearizable,
                    reply,
                });
                let invoke = self.tick_clock();
                self.history.push(HistEntry {
                    client: c,
                    key,
                    op: KvOp::Read,
                    command: None,
                    invoke,
                    invoked_tick: now,
                    complete: None,
                    result: Result::Pending,
                });
                self.clients[c].pending =
                    Some((self.history.len() - 1, Waiting::Read(answer), now + timeout));
                trace.push(format!("t{now} c{c}@n{node} read {}", key_name(key)));
            } else {
                let (op, kv_op) = if kind < 5 {
                    (Op::Delete { key: key_bytes }, KvOp::Delete)
                } else {
                    let value = self.next_value;
                    self.next_value += 1;
                    let expect = match kind {
                        5 | 6 => None,
                        7 | 8 => Some(seen),
                        _ => Some(rng.below(4)),
                    };
                    (
                        Op::Put {
                            key: key_bytes,
                            value: value_bytes(value),
                            expect,
                        },
                        KvOp::Put { value, expect },
                    )
                };
                let (reply, answer) = oneshot::channel();
                let Some(id) = nodes[node].request(Request::Write { op, reply }) else {
                    continue; // refused at once: nothing happened
                };
                let invoke = self.tick_clock();
                trace.push(format!(
                    "t{now} c{c}@n{node} {kv_op:?} {} as {}.{}",
                    key_name(key),
                    id.origin,
                    id.seq
                ));
                self.history.push(HistEntry {
                    client: c,
                    key,
                    op: kv_op,
                    command: Some(id),
                    invoke,
                    invoked_tick: now,
                    complete: None,
                    result: Result::Pending,
                });
                self.clients[c].pending = Some((
                    self.history.len() - 1,
                    Waiting::Write(answer),
                    now + timeout,
                ));
            }
            self.ops_invoked += 1;
        }
    }

    /// Collects the answers the nodes gave. Returns the history indexes answered now, and a
    /// line for every request a running node dropped without an answer (a driver bug: it owes
    /// every request an answer, "outcome unknown" at worst; a crash ends a node's requests
    /// before this is asked).
    pub fn poll(&mut self, trace: &mut Vec<String>) -> (Vec<usize>, Vec<String>) {
        let mut answered = Vec::new();
        let mut dropped = Vec::new();
        for c in 0..self.clients.len() {
            let Some((h, waiting, _)) = self.clients[c].pending.as_mut() else {
                continue;
            };
            let h = *h;
            let (result, hung_up) = match waiting {
                Waiting::Write(answer) => match answer.try_recv() {
                    Ok(Ok(outcome)) => (Result::Write(outcome), false),
                    Ok(Err(StoreError::OutcomeUnknown)) => (Result::Unknown, false),
                    Ok(Err(_)) => (Result::Refused, false),
                    Err(TryRecvError::Empty) => continue,
                    Err(TryRecvError::Closed) => (Result::Unknown, true),
                },
                Waiting::Read(answer) => match answer.try_recv() {
                    Ok(Ok(entry)) => (
                        Result::Read(entry.map(|e| (value_id(&e.value), e.revision))),
                        false,
                    ),
                    Ok(Err(_)) => (Result::Dropped, false),
                    Err(TryRecvError::Empty) => continue,
                    Err(TryRecvError::Closed) => (Result::Dropped, true),
                },
            };
            self.clients[c].pending = None;
            let complete = self.tick_clock();
            let node = self.clients[c].node;
            let entry = &mut self.history[h];
            if hung_up {
                dropped.push(format!(
                    "requests: n{node} dropped {:?} on key {} of client c{c} (invoked at event \
                     {}) without an answer",
                    entry.op,
                    key_name(entry.key),
                    entry.invoke
                ));
            } else {
                entry.complete = Some(complete);
            }
            match &result {
                Result::Write(Outcome::Created { revision } | Outcome::Updated { revision }) => {
                    self.clients[c].seen_revision[entry.key] = *revision;
                }
                Result::Write(Outcome::Conflict { current }) => {
                    self.clients[c].seen_revision[entry.key] = *current;
                }
                Result::Read(state) => {
                    self.clients[c].seen_revision[entry.key] = state.map_or(0, |(_, r)| r);
                }
                _ => {}
            }
            trace.push(format!("  c{c} <- {result:?}"));
            entry.result = result;
            answered.push(h);
        }
        (answered, dropped)
    }

    /// Gives up on operations past their deadline; returns the history indexes given up on.
    pub fn expire(&mut self, now: u64) -> Vec<usize> {
        let mut expired = Vec::new();
        for c in 0..self.clients.len() {
            if matches!(self.clients[c].pending, Some((_, _, deadline)) if deadline <= now) {
                expired.push(self.give_up(c));
            }
        }
        expired
    }

    /// Node `node` crashed: its clients' operations end without an answer.
    pub fn node_crashed(&mut self, node: usize) {
        for c in 0..self.clients.len() {
            if self.clients[c].node == node && self.clients[c].pending.is_some() {
                self.give_up(c);
            }
        }
    }

    /// Node `from` left the cluster for good: its clients' operations end without an answer
    /// and the clients carry on at node `to`.
    pub fn move_clients(&mut self, from: usize, to: usize) {
        self.node_crashed(from);
        for client in &mut self.clients {
            if client.node == from {
                client.node = to;
            }
        }
    }

    /// Moves every deadline to at most `deadline` (liveness after the faults heal).
    pub fn set_deadlines(&mut self, deadline: u64) {
        for client in &mut self.clients {
            if let Some((_, _, d)) = client.pending.as_mut() {
                *d = deadline;
            }
        }
    }

    fn give_up(&mut self, c: usize) -> usize {
        // Dropping the receiver tells the node the client left.
        let (h, waiting, _) = self.clients[c].pending.take().expect("pending");
        self.history[h].result = match waiting {
            Waiting::Write(_) => Result::Unknown,
            Waiting::Read(_) => Result::Dropped,
        };
        h
    }
}

pub fn key_name(key: usize) -> String {
    String::from_utf8_lossy(KEYS[key]).into_owned()
}
