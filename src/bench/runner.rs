//! Runs the workers of a bench: opens the connections, prefills the keys, drives the mix until
//! the duration or the request count is reached, and shows progress meanwhile.
//!
//! Each worker keeps exactly one request in flight; a bench client with `--pipeline N` is N
//! workers sharing that client's connection (line protocol) or N workers with a connection each
//! (HTTP). Workers start at node `client mod nodes` to spread the load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::bench::args::{BenchArgs, Protocol};
use crate::bench::exec_http::HttpConn;
use crate::bench::exec_line;
use crate::bench::report::Tally;
use crate::bench::workload::{key_name, make_value, Mix, OpKind, Rng};
use crate::client::Client;
use crate::paxos::types::Revision;

/// How often the progress bar is redrawn, in milliseconds.
const PROGRESS_TICK_MS: u64 = 100;
/// Workers used to write every key once before the run, at most.
const PREFILL_WORKERS_MAX: usize = 64;
/// Entries of the shared table of last-seen revisions (keys beyond it share entries, which
/// only makes some compare-and-swaps conflict).
const REVISIONS_TRACKED_MAX: u64 = 1 << 20;

/// The revision last seen for each key by any worker, so compare-and-swaps mostly expect the
/// right one (a conflict still happens when another worker wrote the key in between).
pub struct Revisions(Vec<AtomicU64>);

impl Revisions {
    /// A table for `keys` keys.
    pub fn new(keys: u64) -> Revisions {
        let len = keys.clamp(1, REVISIONS_TRACKED_MAX);
        Revisions((0..len).map(|_| AtomicU64::new(0)).collect())
    }

    fn slot(&self, key: u64) -> &AtomicU64 {
        // len ≥ 1 and fits usize (it is a Vec's length); the remainder is below it.
        &self.0[usize::try_from(key % self.0.len() as u64).unwrap_or(0)]
    }

    fn get(&self, key: u64) -> Revision {
        self.slot(key).load(Ordering::Relaxed)
    }

    fn saw(&self, key: u64, revision: Revision) {
        self.slot(key).fetch_max(revision, Ordering::Relaxed);
    }
}

/// What a successful operation returned.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// A put or a compare-and-swap wrote the key at this revision (0 if not reported).
    Written(Revision),
    /// A get answered (found or not).
    Read,
    /// A compare-and-swap met this other current revision.
    Conflict(Revision),
}

/// A failed operation.
#[derive(Clone, Debug)]
pub struct Failure {
    /// A short stable name to count by (`no_quorum`, `outcome_unknown`, `connection`, ...).
    pub kind: String,
    /// The full message.
    pub message: String,
}

/// One worker's way to the cluster.
pub enum Exec {
    /// A clone of its bench client's line-protocol client.
    Line(Client),
    /// Its own HTTP connection.
    Http(HttpConn),
}

impl Exec {
    async fn run_op(
        &mut self,
        op: OpKind,
        key: &str,
        value: &Bytes,
        expected: Revision,
    ) -> Result<Done, Failure> {
        match self {
            Exec::Line(client) => exec_line::run_op(client, op, key, value, expected).await,
            Exec::Http(conn) => conn.run_op(op, key, value, expected).await,
        }
    }
}

/// Opens the workers' connections: `clients × pipeline` workers.
pub async fn open(args: &BenchArgs) -> Result<(Vec<Exec>, usize), String> {
    let nodes = args.nodes();
    let pipeline = args.pipeline();
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut execs = Vec::with_capacity(args.clients * pipeline);
    match args.protocol {
        Protocol::Line => {
            for c in 0..args.clients {
                let mut rotated = nodes.clone();
                rotated.rotate_left(c % nodes.len());
                let client = Client::builder()
                    .nodes(rotated)
                    .request_timeout(timeout)
                    .connect()
                    .await
                    .map_err(|e| format!("client {c}: {e}"))?;
                execs.extend((0..pipeline).map(|_| Exec::Line(client.clone())));
            }
            Ok((execs, args.clients))
        }
        Protocol::Http => {
            for c in 0..args.clients {
                execs.extend(
                    (0..pipeline).map(|_| Exec::Http(HttpConn::new(nodes.clone(), c, timeout))),
                );
            }
            Ok((execs, args.clients * pipeline))
        }
    }
}

/// When the measured run stops.
enum Stop {
    /// At this instant (requests in flight then still finish).
    At(Instant),
    /// After this many requests have been started.
    After(u64),
}

/// What all workers of one phase share.
struct Plan {
    /// The stopping rule.
    stop: Stop,
    /// Requests started so far (claimed by workers).
    started: AtomicU64,
    /// Requests finished so far (for the progress bar).
    finished: AtomicU64,
    /// Requests that failed so far (for the progress bar).
    failed: AtomicU64,
    /// The operations, or `None` to write each key once in order (prefill).
    mix: Option<Mix>,
    /// Distinct keys.
    keys: u64,
    /// Key name prefix.
    key_prefix: String,
    /// The value every write sends.
    value: Bytes,
    /// Last-seen revisions, shared with the other phase.
    revisions: Arc<Revisions>,
}

impl Plan {
    /// Claims the next request; `None` when the phase is over. Returns the request's number.
    fn claim(&self) -> Option<u64> {
        match self.stop {
            Stop::At(deadline) => {
                (Instant::now() < deadline).then(|| self.started.fetch_add(1, Ordering::Relaxed))
            }
            Stop::After(total) => {
                let n = self.started.fetch_add(1, Ordering::Relaxed);
                (n < total).then_some(n)
            }
        }
    }
}

async fn worker(mut exec: Exec, plan: Arc<Plan>, seed: u64) -> (Exec, Tally) {
    let mut tally = Tally::new();
    let mut rng = Rng::new(seed);
    while let Some(n) = plan.claim() {
        let (op, index) = match &plan.mix {
            Some(mix) => (mix.choose(&mut rng), rng.below(plan.keys)),
            None => (OpKind::Put, n),
        };
        let key = key_name(&plan.key_prefix, index);
        let expected = plan.revisions.get(index);
        let started = Instant::now();
        let result = exec.run_op(op, &key, &plan.value, expected).await;
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(done) => {
                tally.ok(op.name(), latency_us);
                match done {
                    Done::Written(revision) | Done::Conflict(revision) => {
                        if matches!(done, Done::Conflict(_)) {
                            tally.cas_conflicts += 1;
                        }
                        plan.revisions.saw(index, revision);
                    }
                    Done::Read => {}
                }
            }
            Err(failure) => {
                tally.error(&failure.kind, &failure.message);
                plan.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        plan.finished.fetch_add(1, Ordering::Relaxed);
    }
    (exec, tally)
}

/// Runs every worker under `plan`; returns the workers (to reuse) and the merged tally.
async fn run_phase(execs: Vec<Exec>, plan: Arc<Plan>, seed: u64) -> (Vec<Exec>, Tally) {
    let tasks: Vec<_> = execs
        .into_iter()
        .enumerate()
        .map(|(i, exec)| {
            let seed = seed.wrapping_add(i as u64).wrapping_mul(0x9E37_79B9);
            tokio::spawn(worker(exec, plan.clone(), seed))
        })
        .collect();
    let mut execs = Vec::with_capacity(tasks.len());
    let mut total = Tally::new();
    for task in tasks {
        match task.await {
            Ok((exec, tally)) => {
                execs.push(exec);
                total.merge(tally);
            }
            Err(e) => total.error("worker_panicked", &e.to_string()),
        }
    }
    (execs, total)
}

/// Writes every key once with `PREFILL_WORKERS_MAX` workers of their own (line protocol:
/// clones of the first client, pipelined on its connection; HTTP: fresh connections), so that
/// even a one-client run prefills quickly. Returns the prefill's tally (its errors are reported
/// to the caller).
pub async fn prefill(execs: &[Exec], args: &BenchArgs, revisions: Arc<Revisions>) -> Tally {
    let timeout = Duration::from_millis(args.timeout_ms);
    let workers: Vec<Exec> = match execs.first() {
        Some(Exec::Line(client)) => (0..PREFILL_WORKERS_MAX)
            .map(|_| Exec::Line(client.clone()))
            .collect(),
        Some(Exec::Http(_)) => (0..PREFILL_WORKERS_MAX)
            .map(|i| Exec::Http(HttpConn::new(args.nodes(), i, timeout)))
            .collect(),
        None => Vec::new(),
    };
    let plan = Arc::new(Plan {
        stop: Stop::After(args.keys),
        started: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        mix: None,
        keys: args.keys,
        key_prefix: args.key_prefix.clone(),
        value: make_value(args.value_size),
        revisions,
    });
    run_phase(workers, plan, 0).await.1
}

/// Runs the measured phase; returns the tally and the elapsed wall time.
pub async fn load(
    execs: Vec<Exec>,
    args: &BenchArgs,
    revisions: Arc<Revisions>,
    show_progress: bool,
) -> (Tally, Duration) {
    let duration = args
        .duration
        .unwrap_or(Duration::from_secs(super::args::DURATION_SECS_DEFAULT));
    let started = Instant::now();
    let stop = match args.requests {
        Some(total) => Stop::After(total),
        None => Stop::At(started + duration),
    };
    let bar = progress_bar(&stop, duration, show_progress);
    let plan = Arc::new(Plan {
        stop,
        started: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        mix: Some(args.mix.clone()),
        keys: args.keys,
        key_prefix: args.key_prefix.clone(),
        value: make_value(args.value_size),
        revisions,
    });
    let ticker = {
        let plan = plan.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(PROGRESS_TICK_MS));
            loop {
                interval.tick().await;
                let finished = plan.finished.load(Ordering::Relaxed);
                let elapsed = started.elapsed();
                match plan.stop {
                    Stop::At(_) => {
                        bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
                    }
                    Stop::After(_) => bar.set_position(finished),
                }
                let rate = finished as f64 / elapsed.as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "{finished} done, {rate:.0} ops/s, {} errors",
                    plan.failed.load(Ordering::Relaxed)
                ));
            }
        })
    };
    let (_execs, tally) = run_phase(execs, plan, 1).await;
    let elapsed = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    (tally, elapsed)
}

/// A progress bar on stdout, or a hidden one when stdout is not a terminal (or not wanted).
fn progress_bar(stop: &Stop, duration: Duration, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let (len, template) = match stop {
        Stop::At(_) => (
            u64::try_from(duration.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}%  {msg}",
        ),
        Stop::After(total) => (
            *total,
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len}  {msg}",
        ),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stdout());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
