//! Simulated clients and the history they record. Each client is attached to one node and has
//! at most one operation in flight: a put, delete, compare-and-swap or read on one of a few keys.
//! Invocations and completions are stamped on one global event clock, which is all the
//! linearizability checker needs. A write that times out, or whose node crashes, has an unknown
//! outcome; a read that does is dropped (reads have no effect).

use super::linearizability::{KeyState, KvOp};
use super::node::SimNode;
use super::rng::SimRng;
use bytes::Bytes;
use consens::paxos::types::{Command, CommandId, NodeId, Op, Outcome};
use consens::paxos::ReadId;

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
    pub complete: Option<u64>,
    pub result: Result,
}

/// What a client is waiting for.
#[derive(Clone, Debug)]
enum Waiting {
    Write(CommandId),
    Read(ReadId),
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
    next_seq: u64,
    next_read: ReadId,
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
            next_seq: 1,
            next_read: 1,
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
                let id = self.next_read;
                self.next_read += 1;
                let invoke = self.tick_clock();
                self.history.push(HistEntry {
                    client: c,
                    key,
                    op: KvOp::Read,
                    command: None,
                    invoke,
                    complete: None,
                    result: Result::Pending,
                });
                self.clients[c].pending =
                    Some((self.history.len() - 1, Waiting::Read(id), now + timeout));
                nodes[node].read(id, key_bytes);
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
                let id = CommandId {
                    origin: NodeId(node as u16),
                    seq: self.next_seq,
                };
                self.next_seq += 1;
                let command = Command { id, op };
                let replica = nodes[node].replica.as_mut().expect("checked up");
                if replica.propose(command).is_err() {
                    continue;
                }
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
                    complete: None,
                    result: Result::Pending,
                });
                self.clients[c].pending =
                    Some((self.history.len() - 1, Waiting::Write(id), now + timeout));
            }
            self.ops_invoked += 1;
        }
    }

    /// Node `node` applied command `id` with `outcome` (the first time it applied that id).
    pub fn applied(
        &mut self,
        node: usize,
        id: CommandId,
        outcome: &Outcome,
        trace: &mut Vec<String>,
    ) {
        let found = self.clients.iter().position(|c| {
            c.node == node && matches!(c.pending, Some((_, Waiting::Write(w), _)) if w == id)
        });
        if let Some(c) = found {
            let (h, _, _) = self.clients[c].pending.take().expect("found pending");
            let complete = self.tick_clock();
            let entry = &mut self.history[h];
            entry.complete = Some(complete);
            entry.result = Result::Write(outcome.clone());
            if let Outcome::Created { revision } | Outcome::Updated { revision } = outcome {
                self.clients[c].seen_revision[entry.key] = *revision;
            }
            if let Outcome::Conflict { current } = outcome {
                self.clients[c].seen_revision[entry.key] = *current;
            }
            trace.push(format!("  c{c} <- {outcome:?}"));
        }
    }

    /// Node `node` answered read `id`.
    pub fn read_done(
        &mut self,
        node: usize,
        id: ReadId,
        entry: Option<(Bytes, u64)>,
        trace: &mut Vec<String>,
    ) {
        let found = self.clients.iter().position(|c| {
            c.node == node && matches!(c.pending, Some((_, Waiting::Read(r), _)) if r == id)
        });
        if let Some(c) = found {
            let (h, _, _) = self.clients[c].pending.take().expect("found pending");
            let complete = self.tick_clock();
            let state = entry.map(|(v, r)| (value_id(&v), r));
            self.clients[c].seen_revision[self.history[h].key] = state.map_or(0, |(_, r)| r);
            self.history[h].complete = Some(complete);
            self.history[h].result = Result::Read(state);
            trace.push(format!("  c{c} <- read {state:?}"));
        }
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

    /// Moves every deadline to at most `deadline` (liveness after the faults heal).
    pub fn set_deadlines(&mut self, deadline: u64) {
        for client in &mut self.clients {
            if let Some((_, _, d)) = client.pending.as_mut() {
                *d = deadline;
            }
        }
    }

    fn give_up(&mut self, c: usize) -> usize {
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
