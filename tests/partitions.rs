//! Partitions and datagram loss between real processes, made with the kernel's packet filter on
//! loopback (`tests/support/packet_filter.rs`): no proxy between the nodes, their Paxos datagrams
//! go socket to socket and nftables drops what a phase says. Clients read, put and
//! compare-and-swap over HTTP on every node throughout; every operation is recorded and each
//! key's history checked for linearizability, and after the last phase every node must reach the
//! same applied slot with the same state digest.
//!
//! The phases, each held for `FAULT_MS` and healed for `HEAL_MS`, in this order: one follower
//! isolated, the leader isolated, a bridge (the others split in two halves that only one node
//! hears both of), everything cut, and `LOSS_PERCENT` % of all datagrams lost. `PARTITION_ROUNDS`
//! repeats the rotation (CI: 1). Needs root and `nft`; skips with a message otherwise.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::chaos_client::{spawn_clients, Recorder};
use support::cluster::{wait_converged, Cluster};
use support::packet_filter::PacketFilter;

/// How long each fault holds, and how long the network is then whole before the next one.
const FAULT_MS: u64 = 2_000;
const HEAL_MS: u64 = 1_500;
/// Random loss of the last phase.
const LOSS_PERCENT: u32 = 30;
/// The nodes' own request timeout: short, so that clients see many outcomes during faults.
const NODE_REQUEST_TIMEOUT_MS: &str = "1000";
/// Rotations of the phases in CI.
const ROUNDS_DEFAULT: u64 = 1;
/// How long the healed cluster gets to converge.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

/// One cluster at a time: two on two cores would only measure the scheduler.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, Copy)]
enum Phase {
    IsolateFollower,
    IsolateLeader,
    Bridge,
    AllCut,
    Loss,
}

const PHASES: [Phase; 5] = [
    Phase::IsolateFollower,
    Phase::IsolateLeader,
    Phase::Bridge,
    Phase::AllCut,
    Phase::Loss,
];

/// Installs `phase`'s rules; returns what it did, for the log.
fn inject(
    phase: Phase,
    filter: &PacketFilter,
    ports: &[u16],
    leader: Option<usize>,
) -> Result<String, String> {
    // Without a reported leader (an election under way), node 0 stands in for it.
    let leader = leader.unwrap_or(0);
    let others = |skip: usize| -> Vec<u16> {
        (0..ports.len())
            .filter(|&i| i != skip)
            .map(|i| ports[i])
            .collect()
    };
    match phase {
        Phase::IsolateFollower => {
            let follower = (leader + 1) % ports.len();
            filter.split(&[ports[follower]], &others(follower))?;
            Ok(format!("isolated follower {}", ports[follower]))
        }
        Phase::IsolateLeader => {
            filter.split(&[ports[leader]], &others(leader))?;
            Ok(format!("isolated leader {}", ports[leader]))
        }
        Phase::Bridge => {
            // The leader in one half, a follower as the bridge, the rest in the other half.
            let bridge = (leader + 1) % ports.len();
            let rest: Vec<usize> = (0..ports.len())
                .filter(|&i| i != bridge && i != leader)
                .collect();
            let (left_rest, right) = rest.split_at((rest.len() - 1) / 2);
            let left: Vec<u16> = std::iter::once(leader)
                .chain(left_rest.iter().copied())
                .map(|i| ports[i])
                .collect();
            let right: Vec<u16> = right.iter().map(|&i| ports[i]).collect();
            filter.split(&left, &right)?;
            Ok(format!("bridge {}: {left:?} | {right:?}", ports[bridge]))
        }
        Phase::AllCut => {
            for (i, &port) in ports.iter().enumerate() {
                filter.split(&[port], &ports[i + 1..])?;
            }
            Ok("every node cut from every other".to_string())
        }
        Phase::Loss => {
            filter.lose(ports, LOSS_PERCENT)?;
            Ok(format!("{LOSS_PERCENT} % of datagrams lost"))
        }
    }
}

/// Runs `rounds` rotations of the phases on a `nodes`-node cluster; returns the summary line
/// (empty when this machine cannot run it, after saying why).
fn run(nodes: usize, rounds: u64) -> Result<String, String> {
    let filter = match PacketFilter::new() {
        Ok(filter) => filter,
        Err(why) => {
            println!("SKIPPED: partition tests need root and nftables (nft): {why}");
            return Ok(String::new());
        }
    };
    let cluster = Cluster::start(nodes, &["--request-timeout-ms", NODE_REQUEST_TIMEOUT_MS]);
    cluster.wait_ready(0);
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let recorder = Recorder::new();
    let stop = AtomicBool::new(false);
    let seed = u64::from(ports[0]);
    let started = Instant::now();
    let mut log = Vec::new();
    let mut filter_failure = None;
    let mut idle_phases = Vec::new();
    std::thread::scope(|scope| {
        spawn_clients(scope, &ports, seed, &recorder, &stop);
        'rounds: for _ in 0..rounds {
            for phase in PHASES {
                recorder.epoch.fetch_add(1, Ordering::Relaxed);
                let at = started.elapsed().as_millis();
                match inject(phase, &filter, &ports, cluster.leader_now()) {
                    Ok(what) => log.push(format!("{at} ms: {what}")),
                    Err(e) => {
                        filter_failure = Some(e);
                        break 'rounds;
                    }
                }
                let before = filter.dropped();
                std::thread::sleep(Duration::from_millis(FAULT_MS));
                let healed = filter.heal().and(filter.dropped());
                match (before, healed) {
                    (Ok(before), Ok(after)) => {
                        log.push(format!(
                            "{} ms: healed ({} datagrams dropped)",
                            started.elapsed().as_millis(),
                            after - before
                        ));
                        if after == before {
                            idle_phases.push(format!("{phase:?}"));
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        filter_failure = Some(e);
                        break 'rounds;
                    }
                }
                std::thread::sleep(Duration::from_millis(HEAL_MS));
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    if let Some(e) = filter_failure {
        return Err(format!("the packet filter failed: {e}"));
    }
    let checked = support::history::check(recorder);
    let mut failures = checked.failures;
    let converged = wait_converged(&cluster.nodes, CONVERGE_TIMEOUT);
    if let Err(why) = &converged {
        failures.push(format!("convergence: {why}"));
    }
    let dropped = filter.dropped()?;
    let summary = format!(
        "partitions: {nodes} nodes, {rounds} round(s) of {} phases: {} operations checked ({} unknown) over {} keys; \
         datagrams dropped by the filter {dropped}; unexpected answers {}; converged at slot {:?}; violations {}",
        PHASES.len(),
        checked.ops,
        checked.unknown,
        checked.keys,
        checked.unexpected.len(),
        converged.as_ref().ok(),
        failures.len()
    );
    println!("{summary}\n  {}", log.join("\n  "));
    // A phase whose rules dropped nothing, or clients that completed nothing, would make a pass
    // vacuous.
    if !idle_phases.is_empty() {
        failures.push(format!(
            "the packet filter dropped no datagram in {idle_phases:?}: those faults did not happen"
        ));
    }
    if checked.ops == 0 {
        failures.push("no operation completed".into());
    }
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(format!(
            "{summary}\nNOT LINEARIZABLE, NOT CONVERGED OR VACUOUS\nphases:\n  {}\n{}\nnode logs:\n{}",
            log.join("\n  "),
            failures.join("\n"),
            cluster.logs()
        ))
    }
}

fn run_batch(nodes: usize) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rounds = std::env::var("PARTITION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT);
    if let Err(report) = run(nodes, rounds) {
        panic!("{report}");
    }
}

#[test]
fn three_nodes_stay_linearizable_through_kernel_made_partitions_and_loss() {
    run_batch(3);
}

#[test]
fn five_nodes_stay_linearizable_through_kernel_made_partitions_and_loss() {
    run_batch(5);
}
