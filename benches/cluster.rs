//! End to end: a real 3-node `consens serve` cluster on loopback (fsync on), driven through the
//! pipelined line-protocol client. Measures durable writes/s and linearizable reads/s with
//! `CLIENTS` concurrent clients, each keeping one request in flight.
//!
//! Run: `cargo bench --bench cluster` (figures in docs/benchmarks.md). The nodes run from temp
//! dirs on ports below the ephemeral range and are killed when the bench ends.

use consens::client::Client;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Concurrent clients (each with one request in flight).
const CLIENTS: usize = 64;
/// Requests per measured batch.
const BATCH_REQUESTS: u64 = 2_000;
/// Bytes per value.
const VALUE_BYTES: usize = 100;
/// How long the cluster may take to elect a leader and answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The three node processes; killed on drop.
struct Nodes {
    children: Vec<Child>,
    /// Holds the data dirs; removed after the processes are killed.
    _dir: tempfile::TempDir,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_base_port(start: u16) -> u16 {
    (start..30_000)
        .step_by(7)
        .find(|&p| {
            TcpListener::bind(("127.0.0.1", p)).is_ok()
                && UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        })
        .expect("a free port triple")
}

fn start_cluster() -> (Nodes, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ports = Vec::new();
    let mut next = 21_000 + (std::process::id() % 2_000) as u16;
    for _ in 0..3 {
        let p = free_base_port(next);
        ports.push(p);
        next = p + 7;
    }
    let children = ports
        .iter()
        .map(|&port| {
            let others: Vec<String> = ports
                .iter()
                .filter(|&&p| p != port)
                .map(|p| format!("127.0.0.1:{p}"))
                .collect();
            Command::new(env!("CARGO_BIN_EXE_consens"))
                .args([
                    "serve",
                    "--port",
                    &port.to_string(),
                    "--cluster",
                    &others.join(","),
                ])
                .arg("--data-dir")
                .arg(dir.path().join(port.to_string()))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn consens serve")
        })
        .collect();
    let nodes = Nodes {
        children,
        _dir: dir,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    for &port in &ports {
        while TcpStream::connect(("127.0.0.1", port + 1)).is_err() {
            assert!(Instant::now() < deadline, "node {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let lines = ports
        .iter()
        .map(|p| format!("127.0.0.1:{}", p + 1))
        .collect();
    (nodes, lines)
}

/// Runs `total` requests split over `CLIENTS` concurrent tasks; returns the elapsed time.
async fn run(client: &Client, total: u64, write: bool) -> Duration {
    let value = vec![b'v'; VALUE_BYTES];
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(CLIENTS);
    for c in 0..CLIENTS as u64 {
        let client = client.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < total {
                let key = format!("bench-{}", i % 1_000);
                if write {
                    client.put(&key, &value).await.expect("write");
                } else {
                    client.get(&key).await.expect("read");
                }
                i += CLIENTS as u64;
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_nodes, lines) = start_cluster();
    let client = runtime.block_on(async {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(client) = Client::connect(lines.clone()).await {
                if client.put("ready", "x").await.is_ok() {
                    break client;
                }
            }
            assert!(Instant::now() < deadline, "cluster not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    runtime.block_on(run(&client, 1_000, true)); // every key exists before reads
    let mut group = c.benchmark_group("cluster_3_nodes");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH_REQUESTS));
    for (name, write) in [
        ("durable_writes_64_clients", true),
        ("linearizable_reads_64_clients", false),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| runtime.block_on(run(&client, BATCH_REQUESTS, write)))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
