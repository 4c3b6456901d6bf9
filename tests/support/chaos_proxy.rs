//! A UDP chaos proxy between the members of a test cluster: it drops, duplicates, delays,
//! reorders and partitions Paxos datagrams, following the faults the test sets (a schedule) and a
//! seeded random source (the fate of each datagram).
//!
//! No daemon change is needed. The proxy owns one socket per node, bound at that node's
//! *advertised* address `P_x`; node x really binds its peer socket at `R_x` (`--peer-port`) and
//! lists the others' proxy addresses in `--cluster`. A datagram x sends to y leaves `R_x` and
//! arrives at `P_y`; the proxy knows the sender by its source port (`R_x`), decides its fate, and
//! forwards it to `R_y` *from* `P_x`, so y sees it come from x's member address, which is what the
//! receiver checks.

#![allow(dead_code)]

use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest datagram the proxy forwards (the daemon's datagrams are well below this).
const DATAGRAM_BYTES_MAX: usize = 65_536;
/// How often blocked threads wake up to notice that the proxy is stopping.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What the proxy does to datagrams right now. Probabilities are per datagram, in [0, 1].
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Chance that a datagram is dropped.
    pub drop_probability: f64,
    /// Chance that a datagram is delivered twice (the copy gets its own delay).
    pub duplicate_probability: f64,
    /// Chance that a datagram is held back for a random time up to `delay_ms_max`; held
    /// datagrams overtake one another and later ones, which reorders the stream.
    pub delay_probability: f64,
    pub delay_ms_max: u64,
    /// `blocked[from][to]`: the link from node `from` to node `to` is cut (a partition).
    pub blocked: Vec<Vec<bool>>,
}

/// Counts of what happened to datagrams, for the test's figures.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub delayed: AtomicU64,
    pub partitioned: AtomicU64,
}

/// A datagram waiting for its delivery time.
struct Held {
    due: Instant,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Reversed: the heap pops the earliest due time first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.due.cmp(&self.due)
    }
}

/// A small seeded generator: the core's SplitMix64 (`consens::internals::paxos::rng`), the proxy's only
/// source of randomness.
pub struct SplitMix(consens::internals::paxos::rng::Rng);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(consens::internals::paxos::rng::Rng::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); n > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

struct Shared {
    /// Socket i is bound at node i's advertised address.
    sockets: Vec<Arc<UdpSocket>>,
    /// Node i's real peer address (`--peer-port`).
    real: Vec<SocketAddr>,
    faults: Mutex<Faults>,
    rng: Mutex<SplitMix>,
    held: Mutex<BinaryHeap<Held>>,
    held_changed: Condvar,
    stop: AtomicBool,
    counts: ProxyCounts,
}

/// The running proxy; dropping it stops its threads.
pub struct ChaosProxy {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl ChaosProxy {
    /// Binds one proxy socket per node on 127.0.0.1 (free ports) and forwards to `real[i]`.
    pub fn start(real: Vec<SocketAddr>, proxy_ports: &[u16], seed: u64) -> ChaosProxy {
        let n = real.len();
        let sockets: Vec<Arc<UdpSocket>> = proxy_ports
            .iter()
            .map(|&p| {
                let s = UdpSocket::bind(("127.0.0.1", p)).expect("bind proxy socket");
                s.set_read_timeout(Some(POLL_INTERVAL)).expect("timeout");
                Arc::new(s)
            })
            .collect();
        let shared = Arc::new(Shared {
            sockets,
            real,
            faults: Mutex::new(Faults {
                blocked: vec![vec![false; n]; n],
                ..Faults::default()
            }),
            rng: Mutex::new(SplitMix::new(seed)),
            held: Mutex::new(BinaryHeap::new()),
            held_changed: Condvar::new(),
            stop: AtomicBool::new(false),
            counts: ProxyCounts::default(),
        });
        let mut threads = Vec::new();
        for to in 0..n {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || receive_loop(&shared, to)));
        }
        {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || delivery_loop(&shared)));
        }
        ChaosProxy { shared, threads }
    }

    /// Node i's advertised (proxy) address.
    pub fn advertised(&self, i: usize) -> SocketAddr {
        self.shared.sockets[i].local_addr().expect("local addr")
    }

    pub fn nodes(&self) -> usize {
        self.shared.real.len()
    }

    /// Replaces the noise settings (loss, duplication, delay), keeping the partition.
    pub fn set_noise(&self, drop: f64, duplicate: f64, delay: f64, delay_ms_max: u64) {
        let mut f = self.shared.faults.lock().expect("faults");
        f.drop_probability = drop;
        f.duplicate_probability = duplicate;
        f.delay_probability = delay;
        f.delay_ms_max = delay_ms_max;
    }

    /// Cuts every link between the two sides (both directions); other links are kept as is.
    pub fn partition(&self, side_a: &[usize], side_b: &[usize]) {
        let mut f = self.shared.faults.lock().expect("faults");
        for &a in side_a {
            for &b in side_b {
                f.blocked[a][b] = true;
                f.blocked[b][a] = true;
            }
        }
    }

    /// Cuts node `i` off from everyone.
    pub fn isolate(&self, i: usize) {
        let others: Vec<usize> = (0..self.nodes()).filter(|&j| j != i).collect();
        self.partition(&[i], &others);
    }

    /// Restores every link.
    pub fn heal(&self) {
        let mut f = self.shared.faults.lock().expect("faults");
        for row in f.blocked.iter_mut() {
            row.iter_mut().for_each(|b| *b = false);
        }
    }

    pub fn counts(&self) -> &ProxyCounts {
        &self.shared.counts
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.held_changed.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Receives on proxy socket `to` (node `to`'s advertised address) and decides each datagram's fate.
fn receive_loop(shared: &Shared, to: usize) {
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    while !shared.stop.load(Ordering::Relaxed) {
        let (len, source) = match shared.sockets[to].recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        // The sender is known by its real peer address; anything else is not ours to forward.
        let Some(from) = shared.real.iter().position(|r| *r == source) else {
            continue;
        };
        let faults = shared.faults.lock().expect("faults").clone();
        if faults.blocked[from][to] {
            shared.counts.partitioned.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (dropped, copies, delays) = {
            let mut rng = shared.rng.lock().expect("rng");
            let dropped = rng.chance(faults.drop_probability);
            let copies = if rng.chance(faults.duplicate_probability) {
                2
            } else {
                1
            };
            let delays: Vec<u64> = (0..copies)
                .map(|_| {
                    if faults.delay_ms_max > 0 && rng.chance(faults.delay_probability) {
                        1 + rng.below(faults.delay_ms_max)
                    } else {
                        0
                    }
                })
                .collect();
            (dropped, copies, delays)
        };
        if dropped {
            shared.counts.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if copies > 1 {
            shared.counts.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        for delay_ms in delays {
            if delay_ms == 0 {
                forward(shared, from, to, &buf[..len]);
            } else {
                shared.counts.delayed.fetch_add(1, Ordering::Relaxed);
                shared.held.lock().expect("held").push(Held {
                    due: Instant::now() + Duration::from_millis(delay_ms),
                    from,
                    to,
                    bytes: buf[..len].to_vec(),
                });
                shared.held_changed.notify_one();
            }
        }
    }
}

/// Delivers held datagrams when they are due.
fn delivery_loop(shared: &Shared) {
    let mut held = shared.held.lock().expect("held");
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        match held.peek().map(|h| h.due) {
            Some(due) if due <= now => {
                let h = held.pop().expect("peeked");
                drop(held);
                forward(shared, h.from, h.to, &h.bytes);
                held = shared.held.lock().expect("held");
            }
            Some(due) => {
                held = shared
                    .held_changed
                    .wait_timeout(held, (due - now).min(POLL_INTERVAL))
                    .expect("held")
                    .0;
            }
            None => {
                held = shared
                    .held_changed
                    .wait_timeout(held, POLL_INTERVAL)
                    .expect("held")
                    .0;
            }
        }
    }
}

/// Sends from node `from`'s advertised socket to node `to`'s real peer socket. A partition set
/// while the datagram was held still applies.
fn forward(shared: &Shared, from: usize, to: usize, bytes: &[u8]) {
    if shared.faults.lock().expect("faults").blocked[from][to] {
        shared.counts.partitioned.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if shared.sockets[from].send_to(bytes, shared.real[to]).is_ok() {
        shared.counts.forwarded.fetch_add(1, Ordering::Relaxed);
    }
}
