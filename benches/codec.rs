//! Peer message encode and decode: what one datagram costs the CPU, with and without the
//! cluster-key MAC. Messages are the ones that dominate traffic: a full batch of accepts (64
//! commands of 100-byte values), the votes that answer it, and a heartbeat.
//!
//! Run: `cargo bench --bench codec` (figures in docs/benchmarks.md).

use bytes::Bytes;
use consens::internals::net::auth::ClusterKey;
use consens::internals::net::codec::{decode_keyed, encode_keyed, Header};
use consens::internals::net::wire::Wire;
use consens::internals::paxos::types::{Ballot, Command, CommandId, NodeId, Op, Value};
use consens::internals::paxos::Message;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Commands in the accept batch.
const BATCH_COMMANDS: u64 = 64;
/// Bytes per value in the batch.
const VALUE_BYTES: usize = 100;
const CLUSTER: u64 = 0xC0FF_EE00;

fn messages() -> Vec<(&'static str, Wire)> {
    let ballot = Ballot {
        round: 7,
        node: NodeId(1),
    };
    let entries = (0..BATCH_COMMANDS)
        .map(|i| {
            (
                1_000 + i,
                Value::Command(Command {
                    id: CommandId {
                        origin: NodeId(2),
                        seq: (5 << 40) | i,
                    },
                    op: Op::Put {
                        key: Bytes::from(format!("key-{i:04}")),
                        value: Bytes::from(vec![b'v'; VALUE_BYTES]),
                        expect: None,
                    },
                }),
            )
        })
        .collect();
    vec![
        (
            "accept_64x100B",
            Wire::Paxos(Message::Accept {
                ballot,
                commit: 999,
                entries,
            }),
        ),
        (
            "accepted_64",
            Wire::Paxos(Message::Accepted {
                ballot,
                slots: (1_000..1_000 + BATCH_COMMANDS).collect(),
            }),
        ),
        (
            "heartbeat",
            Wire::Paxos(Message::Heartbeat {
                ballot,
                commit: 1_063,
                read_round: 3,
            }),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let header = Header {
        cluster: CLUSTER,
        from: NodeId(1),
    };
    let key = ClusterKey::from_bytes(&[7u8; 32]).expect("a 32-byte key");
    let mut group = c.benchmark_group("codec");
    for (name, wire) in messages() {
        for (keyed, key) in [("plain", None), ("mac", Some(&key))] {
            let mut buf = Vec::with_capacity(65_536);
            encode_keyed(&header, &wire, key, &mut buf).expect("encodes");
            group.throughput(Throughput::Bytes(buf.len() as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("encode/{keyed}"), name),
                &wire,
                |b, wire| {
                    b.iter(|| {
                        encode_keyed(&header, black_box(wire), key, &mut buf).expect("encodes");
                        black_box(buf.len())
                    })
                },
            );
            let datagram = buf.clone();
            group.bench_with_input(
                BenchmarkId::new(format!("decode/{keyed}"), name),
                &datagram,
                |b, datagram| {
                    b.iter(|| {
                        let decoded: (Header, Wire) =
                            decode_keyed(black_box(datagram), CLUSTER, key).expect("decodes");
                        black_box(decoded)
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
