//! Throughput of the pure Paxos core: a 3-node cluster of `Replica`s exchanging messages in
//! memory (no IO, storage "syncs" instantly), measuring commands decided and applied on the
//! leader per second, with batching: [`COMMANDS_PER_ITERATION`] commands are proposed to the
//! leader at once and the cluster is pumped until the leader has applied them all.
//!
//! Run: `cargo bench --bench core -- --warm-up-time 1 --measurement-time 5`.

use bytes::Bytes;
use consens::internals::paxos::types::{Command, CommandId, NodeId, Op, Value};
use consens::internals::paxos::{Config, Membership, Message, Recovered, Replica, Role};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::collections::VecDeque;

/// Commands proposed per measured iteration.
const COMMANDS_PER_ITERATION: u64 = 10_000;
/// Members of the benchmarked cluster.
const MEMBERS: u16 = 3;
/// Ticks allowed for the first election.
const ELECTION_TICKS_MAX: usize = 1_000;
/// Distinct keys the commands write.
const KEYS: u64 = 100;

struct Cluster {
    nodes: Vec<Replica>,
    wire: VecDeque<(NodeId, NodeId, Message)>,
    /// Commands applied per node.
    applied: Vec<u64>,
}

impl Cluster {
    fn new() -> Cluster {
        let nodes = (0..MEMBERS)
            .map(|i| {
                Replica::new(
                    Config::new(NodeId(i), Membership::first_ids(MEMBERS).expect("valid")),
                    Recovered::empty(),
                    7 + u64::from(i),
                )
            })
            .collect();
        Cluster {
            nodes,
            wire: VecDeque::new(),
            applied: vec![0; usize::from(MEMBERS)],
        }
    }

    /// Carries out every node's effects and delivers every message until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for (i, node) in self.nodes.iter_mut().enumerate() {
                loop {
                    let ready = node.take_ready();
                    if ready.is_empty() {
                        break;
                    }
                    moved = true;
                    node.durable(ready.persist_upto);
                    let from = NodeId(i as u16);
                    self.wire
                        .extend(ready.messages.into_iter().map(|(to, m)| (from, to, m)));
                    self.applied[i] += ready
                        .apply
                        .iter()
                        .filter(|(_, v)| matches!(v, Value::Command(_)))
                        .count() as u64;
                }
            }
            while let Some((from, to, message)) = self.wire.pop_front() {
                moved = true;
                self.nodes[usize::from(to.0)].receive(from, message);
            }
            if !moved {
                return;
            }
        }
    }

    fn elect(&mut self) -> usize {
        for _ in 0..ELECTION_TICKS_MAX {
            for node in &mut self.nodes {
                node.tick();
            }
            self.pump();
            if let Some(leader) = self
                .nodes
                .iter()
                .position(|n| n.status().role == Role::Leader)
            {
                return leader;
            }
        }
        panic!("no leader within {ELECTION_TICKS_MAX} ticks");
    }
}

fn commands(leader: usize) -> Vec<Command> {
    (0..COMMANDS_PER_ITERATION)
        .map(|seq| Command {
            id: CommandId {
                origin: NodeId(leader as u16),
                seq,
            },
            op: Op::Put {
                key: Bytes::from(format!("key-{}", seq % KEYS)),
                value: Bytes::from_static(b"sixteen bytes!!!"),
                expect: None,
            },
        })
        .collect()
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(COMMANDS_PER_ITERATION));
    group.bench_function("3 nodes, 10k commands to the leader", |b| {
        b.iter_batched(
            || {
                let mut cluster = Cluster::new();
                let leader = cluster.elect();
                let commands = commands(leader);
                (cluster, leader, commands)
            },
            |(mut cluster, leader, commands)| {
                let before = cluster.applied[leader];
                for command in commands {
                    cluster.nodes[leader]
                        .propose(command)
                        .expect("the leader takes it");
                }
                cluster.pump();
                assert_eq!(
                    cluster.applied[leader] - before,
                    COMMANDS_PER_ITERATION,
                    "every command applied on the leader"
                );
                cluster
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
