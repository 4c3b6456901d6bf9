//! The nemesis of the chaos runs: it rotates through the faults of issue 6 — partitions
//! (majority/minority, an isolated leader), kill -9 (one node, the leader, a majority, all),
//! SIGSTOP pauses, a lossy network (drop, duplicate, delay, reorder), and an operator moving
//! leadership to a random member — each followed by healing and restarts. Targets are picked with a seeded generator; the seed fixes the schedule (the
//! processes' own timing is the operating system's).

#![allow(dead_code)]

use super::chaos_cluster::ProxiedCluster;
use super::chaos_proxy::SplitMix;
use std::collections::BTreeMap;

/// The faults, in rotation order.
pub const FAULTS: [&str; 9] = [
    "partition-minority",
    "transfer-leader",
    "isolate-leader",
    "kill-one",
    "kill-leader",
    "pause-one",
    "kill-majority",
    "lossy-network",
    "kill-all",
];

/// Background noise during every phase: a little loss, duplication and reordering.
const NOISE_DROP: f64 = 0.02;
const NOISE_DUPLICATE: f64 = 0.02;
const NOISE_DELAY: f64 = 0.1;
const NOISE_DELAY_MS_MAX: u64 = 10;
/// The lossy-network fault.
const LOSSY_DROP: f64 = 0.2;
const LOSSY_DUPLICATE: f64 = 0.1;
const LOSSY_DELAY: f64 = 0.4;
const LOSSY_DELAY_MS_MAX: u64 = 40;

pub struct Nemesis {
    rng: SplitMix,
    next: usize,
    /// How many times each fault was injected.
    pub injected: BTreeMap<&'static str, u64>,
    /// What happened, one line per fault (printed with a failing history).
    pub log: Vec<String>,
}

impl Nemesis {
    pub fn new(seed: u64) -> Nemesis {
        let mut rng = SplitMix::new(seed);
        let next = rng.below(FAULTS.len() as u64) as usize;
        Nemesis {
            rng,
            next,
            injected: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    pub fn background_noise(cluster: &ProxiedCluster) {
        cluster
            .proxy
            .set_noise(NOISE_DROP, NOISE_DUPLICATE, NOISE_DELAY, NOISE_DELAY_MS_MAX);
    }

    fn pick(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    /// `count` distinct nodes, `first` among them if given.
    fn pick_set(&mut self, n: usize, count: usize, first: Option<usize>) -> Vec<usize> {
        let mut set: Vec<usize> = first.into_iter().collect();
        while set.len() < count {
            let i = self.pick(n);
            if !set.contains(&i) {
                set.push(i);
            }
        }
        set
    }

    /// Injects the next fault of the rotation; `at_ms` is for the log.
    pub fn inject(&mut self, cluster: &mut ProxiedCluster, at_ms: u128) {
        let fault = FAULTS[self.next % FAULTS.len()];
        self.next += 1;
        let n = cluster.len();
        let majority = n / 2 + 1;
        let what = match fault {
            "partition-minority" => {
                let minority = self.pick_set(n, n - majority, None);
                let rest: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
                cluster.proxy.partition(&minority, &rest);
                format!("minority {minority:?} cut off from {rest:?}")
            }
            "transfer-leader" => {
                let (via, to) = (self.pick(n), self.pick(n));
                let ports = cluster.http_ports();
                match super::chaos_client::member_id(ports[to]) {
                    Some(id) => {
                        let answer = super::chaos_client::transfer_leader(ports[via], id);
                        format!("node {via} asked to move leadership to node {to} (member {id}): {answer:?}")
                    }
                    None => format!("node {to} did not say its id; no transfer"),
                }
            }
            "isolate-leader" => {
                let leader = cluster.leader().unwrap_or_else(|| self.pick(n));
                cluster.proxy.isolate(leader);
                format!("leader {leader} isolated")
            }
            "kill-one" => {
                let i = self.pick(n);
                cluster.kill9(i);
                format!("kill -9 node {i}")
            }
            "kill-leader" => {
                let leader = cluster.leader().unwrap_or_else(|| self.pick(n));
                cluster.kill9(leader);
                format!("kill -9 leader {leader}")
            }
            "pause-one" => {
                let i = match cluster.leader() {
                    Some(l) if self.rng.chance(0.5) => l,
                    _ => self.pick(n),
                };
                cluster.pause(i);
                format!("SIGSTOP node {i}")
            }
            "kill-majority" => {
                let set = self.pick_set(n, majority, cluster.leader());
                for &i in &set {
                    cluster.kill9(i);
                }
                format!("kill -9 majority {set:?}")
            }
            "lossy-network" => {
                cluster.proxy.set_noise(
                    LOSSY_DROP,
                    LOSSY_DUPLICATE,
                    LOSSY_DELAY,
                    LOSSY_DELAY_MS_MAX,
                );
                "lossy network".to_string()
            }
            "kill-all" => {
                for i in 0..n {
                    cluster.kill9(i);
                }
                "kill -9 all nodes".to_string()
            }
            _ => unreachable!("unknown fault {fault}"),
        };
        *self.injected.entry(fault).or_default() += 1;
        self.log.push(format!("{at_ms} ms: {what}"));
    }

    /// Undoes every fault: links healed, noise back to background, every node running.
    pub fn heal(&mut self, cluster: &mut ProxiedCluster, at_ms: u128) {
        cluster.proxy.heal();
        Self::background_noise(cluster);
        for i in 0..cluster.len() {
            cluster.ensure_running(i);
        }
        self.log.push(format!("{at_ms} ms: healed, all running"));
    }

    pub fn faults_injected(&self) -> u64 {
        self.injected.values().sum()
    }
}
