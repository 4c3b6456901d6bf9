//! The seeded deterministic simulator of the Paxos core (`tests/sim/`), as a test.
//!
//! - `cargo test` runs the CI batch: [`CI_SEEDS`] seeds on [`WORKERS`] threads.
//! - `SIM_SEEDS=N cargo test --test simulation` runs N seeds (seeds 1..=N).
//! - `SIM_SEED=S cargo test --test simulation -- --nocapture` replays seed S, prints its trace,
//!   and checks that a second run of it gives the same trace hash.
//!
//! Every run ends with exactly one line `simulation: <seeds> seeds, <ops> client ops,
//! <faults> faults, <violations> violations`, written straight to stdout so that it shows even
//! when the test harness captures output. A failing seed prints its seed, its violations, the
//! tail of its trace and the one-line command that replays it.

mod sim;

use consens::internals::node::driver::PlantedBug;
use consens::internals::paxos::PlantedCoreBug;
use sim::linearizability::{check_key, HistOp, KvOp, NotLinearizable, Observed};
use sim::Report;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Seeds in the CI batch (`cargo test`): sized to take 1–3 minutes on 2 cores.
const CI_SEEDS: u64 = 4_000;
/// Each planted bug must be caught within this many seeds (counted from seed 1).
const PLANTED_BUG_SEEDS_MAX: u64 = 200;
/// At most one run in this many may see no membership change take effect.
const MEMBER_CHANGE_RUNS_MISSED_MAX_DIVISOR: usize = 20;
/// Threads the batch runs on.
const WORKERS: usize = 2;
/// Each worker's stack (the linearizability search recurses once per operation).
const WORKER_STACK_BYTES: usize = 64 << 20;
/// Trace lines shown for a failing seed.
const TRACE_TAIL_LINES: usize = 60;

fn out(line: &str) {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    writeln!(lock, "{line}").expect("stdout is writable");
    lock.flush().expect("stdout is writable");
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

fn replay_command(seed: u64) -> String {
    format!("SIM_SEED={seed} cargo test --test simulation -- --nocapture")
}

fn report_failure(report: &Report) {
    out(&format!(
        "FAILED: seed {} ({} nodes), {} violation(s):",
        report.seed,
        report.members,
        report.violations.len()
    ));
    for v in report.violations.iter().take(10) {
        out(&format!("  - {v}"));
    }
    out(&format!("  last {TRACE_TAIL_LINES} trace lines:"));
    let skip = report.trace.len().saturating_sub(TRACE_TAIL_LINES);
    for line in &report.trace[skip..] {
        out(&format!("    {line}"));
    }
    out(&format!("  replay: {}", replay_command(report.seed)));
}

/// Runs one seed; a panic (an assertion of the core or of the simulator) is a violation.
fn run_catching(seed: u64) -> Report {
    run_catching_with(seed, None)
}

/// [`run_catching`] with a bug planted in every node's driver.
fn run_catching_with(seed: u64, bug: Option<PlantedBug>) -> Report {
    match std::panic::catch_unwind(|| sim::run_with(seed, bug)) {
        Ok(report) => report,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".to_string());
            Report {
                seed,
                violations: vec![format!("panic: {why}")],
                ..Report::default()
            }
        }
    }
}

fn run_on_workers(seeds: Vec<u64>) -> Vec<Report> {
    let next = AtomicU64::new(0);
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            std::thread::Builder::new()
                .stack_size(WORKER_STACK_BYTES)
                .spawn_scoped(scope, || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&seed) = seeds.get(i) else { break };
                    let mut report = run_catching(seed);
                    report.trace.shrink_to_fit();
                    reports.lock().expect("no worker panicked").push(report);
                })
                .expect("spawn a worker");
        }
    });
    let mut reports = reports.into_inner().expect("no worker panicked");
    reports.sort_by_key(|r| r.seed);
    reports
}

#[test]
fn simulation() {
    let started = std::time::Instant::now();
    let (seeds, replay): (Vec<u64>, bool) = match env_u64("SIM_SEED") {
        Some(seed) => (vec![seed], true),
        None => (
            (1..=env_u64("SIM_SEEDS").unwrap_or(CI_SEEDS)).collect(),
            false,
        ),
    };
    let mut reports = run_on_workers(seeds.clone());
    // Determinism: the first seed again must give the same trace.
    let again = std::thread::Builder::new()
        .stack_size(WORKER_STACK_BYTES)
        .spawn(move || run_catching(seeds[0]))
        .expect("spawn")
        .join()
        .expect("the rerun finished");
    if replay {
        for line in &reports[0].trace {
            out(line);
        }
        out(&format!(
            "seed {}: {} nodes, trace hash {:016x}",
            again.seed, again.members, again.trace_hash
        ));
    }
    if again.trace_hash != reports[0].trace_hash {
        let first = reports[0].trace_hash;
        reports[0].violations.push(format!(
            "determinism: seed {} gave trace hash {first:016x}, then {:016x}",
            again.seed, again.trace_hash
        ));
    }
    let ops: u64 = reports.iter().map(|r| r.ops).sum();
    let faults: u64 = reports.iter().map(|r| r.faults).sum();
    let taken: u64 = reports.iter().map(|r| r.snapshots_taken).sum();
    let installed: u64 = reports.iter().map(|r| r.snapshots_installed).sum();
    let changes: u64 = reports.iter().map(|r| r.member_changes).sum();
    // Snapshots and compaction must be exercised by every run, and membership changes by
    // nearly every run (one is asked for every 200 chaos ticks, but a run may see them all
    // refused or undecided), or the batch proves less than it claims.
    for report in reports.iter_mut().filter(|r| r.snapshots_taken == 0) {
        report
            .violations
            .push("coverage: no node took a snapshot in this run".to_string());
    }
    let without_changes = reports.iter().filter(|r| r.member_changes == 0).count();
    assert!(
        without_changes * MEMBER_CHANGE_RUNS_MISSED_MAX_DIVISOR <= reports.len(),
        "coverage: {without_changes} of {} runs saw no membership change take effect",
        reports.len()
    );
    let mut violations = 0;
    for report in reports.iter().filter(|r| !r.violations.is_empty()) {
        violations += report.violations.len();
        report_failure(report);
    }
    eprintln!("simulation took {:.1?}", started.elapsed());
    out(&format!(
        "simulation: {} seeds, {ops} client ops, {faults} faults, {taken} snapshots taken, \
         {installed} installed from peers, {changes} membership changes, {violations} violations",
        reports.len()
    ));
    let failed: Vec<u64> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(|r| r.seed)
        .collect();
    assert!(failed.is_empty(), "violations in seeds {failed:?}");
}

/// The linearizability checker has teeth: a read that misses an acknowledged write fails, and
/// an unknown-outcome write may explain a read.
#[test]
fn linearizability_checker_rejects_a_stale_read() {
    use consens::internals::paxos::types::Outcome;
    let put = |invoke, complete, value, observed| HistOp {
        client: 0,
        invoke,
        complete,
        op: KvOp::Put {
            value,
            expect: None,
        },
        observed,
    };
    let read = |invoke, complete, seen| HistOp {
        client: 1,
        invoke,
        complete,
        op: KvOp::Read,
        observed: Observed::Read(seen),
    };
    let created = Observed::Write(Outcome::Created { revision: 4 });
    // Put completes, then a read that does not see it.
    let stale = vec![put(1, 2, 7, created.clone()), read(3, 4, None)];
    assert!(matches!(
        check_key(stale),
        Err(NotLinearizable::Violation(_))
    ));
    // The same read, concurrent with the put, is fine.
    assert!(check_key(vec![put(1, 4, 7, created.clone()), read(2, 3, None)]).is_ok());
    // An unknown write explains a later read of its value, and also its absence.
    let unknown = Observed::Unknown { revision: 9 };
    assert!(check_key(vec![
        put(1, u64::MAX, 8, unknown.clone()),
        read(3, 4, Some((8, 9)))
    ])
    .is_ok());
    assert!(check_key(vec![put(1, u64::MAX, 8, unknown), read(3, 4, None)]).is_ok());
    // But a value can't come back after it was overwritten.
    let updated = Observed::Write(Outcome::Updated { revision: 5 });
    let flip = vec![
        put(1, 2, 7, created),
        put(3, 4, 8, updated),
        read(5, 6, Some((7, 4))),
    ];
    assert!(check_key(flip).is_err());
}

/// The simulator has teeth: each bug planted in the driver is caught within
/// [`PLANTED_BUG_SEEDS_MAX`] seeds. Prints the first seed that caught each, for `docs/paxos.md`.
#[test]
fn planted_driver_bugs_are_caught() {
    let bugs = [
        PlantedBug::DurableBeforeSync,
        PlantedBug::ReadBeforeApply,
        PlantedBug::DropPendingOnLeaderChange,
        PlantedBug::CompactBeforeSnapshotDurable,
        PlantedBug::InstallSkipsSlot,
        PlantedBug::InstallOlderSnapshot,
        PlantedBug::Core(PlantedCoreBug::CountLearnerVotes),
        PlantedBug::Core(PlantedCoreBug::WindowBeyondChangeDelay),
        PlantedBug::Core(PlantedCoreBug::NewMajorityAlone),
    ];
    let mut missed = Vec::new();
    for bug in bugs {
        let caught = std::thread::Builder::new()
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || {
                (1..=PLANTED_BUG_SEEDS_MAX).find_map(|seed| {
                    let report = run_catching_with(seed, Some(bug));
                    report.violations.first().map(|v| (seed, v.clone()))
                })
            })
            .expect("spawn")
            .join()
            .expect("the search finished");
        match caught {
            Some((seed, violation)) => {
                let short: String = violation.chars().take(160).collect();
                out(&format!("planted {bug:?}: caught by seed {seed}: {short}"));
            }
            None => missed.push(bug),
        }
    }
    assert!(
        missed.is_empty(),
        "planted bugs not caught within {PLANTED_BUG_SEEDS_MAX} seeds: {missed:?}"
    );
}
