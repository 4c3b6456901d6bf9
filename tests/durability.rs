//! The durability figure of issue 6: whole-cluster kill -9 cycles under write load, then every
//! acknowledged write is read back. Acknowledged writes lost must be 0.
//!
//! Each cycle restarts the three nodes, waits for a write to go through, lets one client per node
//! write fresh keys for a short while, and kills every node with SIGKILL while the writes are
//! still in flight. Every key is written once, so an acknowledged key must afterwards hold exactly
//! its value; writes without an answer may or may not be there and are not checked.
//!
//! `KILL_CYCLES=<n>` sets the number of cycles (CI: 50); `scripts/chaos.sh` runs more.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::cluster::*;

/// Whole-cluster kill -9 cycles in CI.
const KILL_CYCLES_DEFAULT: u64 = 50;
/// How long the clients write before the kill, per cycle.
const LOAD_MS: u64 = 250;
const NODES: usize = 3;
/// Each client write gives up after this long (the node's own request timeout is shorter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

#[test]
fn whole_cluster_kill9_cycles_under_load_lose_no_acknowledged_write() {
    let cycles = std::env::var("KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILL_CYCLES_DEFAULT);
    let started = Instant::now();
    let mut cluster = Cluster::start(NODES, &["--request-timeout-ms", "1000"]);
    let acked = Mutex::new(BTreeMap::new());
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    for cycle in 0..cycles {
        if cycle > 0 {
            for node in &mut cluster.nodes {
                node.restart();
            }
            for node in &cluster.nodes {
                node.wait_http();
            }
        }
        cluster.wait_ready((cycle as usize) % NODES);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for (client, &port) in ports.iter().enumerate() {
                let (stop, acked) = (&stop, &acked);
                let prefix = format!("cycle{cycle}-c{client}");
                scope.spawn(move || write_fresh_keys(port, &prefix, CLIENT_TIMEOUT, stop, acked));
            }
            std::thread::sleep(Duration::from_millis(LOAD_MS));
            // kill -9 every node while writes are in flight.
            for node in &mut cluster.nodes {
                node.kill9();
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    for node in &mut cluster.nodes {
        node.restart();
    }
    for node in &cluster.nodes {
        node.wait_http();
    }
    cluster.wait_ready(0);
    let acked = acked.into_inner().expect("acked");
    let lost = lost_writes(&cluster.nodes, &acked);
    let converged = wait_converged(&cluster.nodes, Duration::from_secs(10));
    println!(
        "durability: kill cycles: {cycles} (whole cluster, kill -9 under load), acknowledged writes: {}, lost: {}, converged at slot {converged:?} ({:.1} s)",
        acked.len(),
        lost.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(!acked.is_empty(), "no write was acknowledged at all");
    if let Err(why) = converged {
        panic!(
            "convergence after the kill cycles: {why}\n{}",
            cluster.logs()
        );
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}\n{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        cluster.logs()
    );
}
