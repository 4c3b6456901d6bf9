//! Crash during appends, for real: a child process (this test binary re-invoked with an
//! environment variable) appends, syncs and reports each durable LSN on stdout; the parent kills
//! it with SIGKILL at a random moment, reopens the log and checks that every LSN reported
//! durable is there, byte for byte, then starts the next child on the same directory.
//!
//! Replay a failure with `CONSENS_WAL_CRASH_SEED=<seed> cargo test --test wal_crash`.
//! `CONSENS_WAL_CRASH_ITERATIONS` raises the number of kills (default 60, bounded to 15 s).

use consens::internals::wal::{Wal, WalIdentity, WalOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DIR_ENV: &str = "CONSENS_WAL_CRASH_DIR";
const SEGMENT_BYTES: usize = 16 * 1024;
/// How far behind the last durable LSN the child compacts.
const COMPACT_LAG: u64 = 200;

fn options() -> WalOptions {
    WalOptions::new(WalIdentity {
        cluster_id: 77,
        node_id: 1,
    })
    .segment_bytes(SEGMENT_BYTES)
}

fn payload(lsn: u64) -> Vec<u8> {
    let len = (lsn * 37 % 300) as usize;
    (0..len)
        .map(|i| (lsn as u8) ^ (i as u8).wrapping_mul(7))
        .collect()
}

/// The child: does nothing unless started by the parent with `CONSENS_WAL_CRASH_DIR` set.
#[test]
fn crash_child_appender() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let (mut wal, rec) = Wal::open(Path::new(&dir), options()).expect("child open");
    drop(rec);
    let mut out = std::io::stdout().lock();
    writeln!(out, "started {}", wal.next_lsn()).expect("stdout");
    out.flush().expect("stdout");
    loop {
        let lsn = wal.next_lsn();
        for l in lsn..lsn + 1 + lsn % 8 {
            assert_eq!(wal.append(1, &payload(l)).expect("append"), l);
        }
        let durable = wal.sync().expect("sync");
        writeln!(out, "durable {durable}").expect("stdout");
        out.flush().expect("stdout");
        if lsn % 13 == 0 && durable > COMPACT_LAG {
            wal.compact(durable - COMPACT_LAG).expect("compact");
        }
    }
}

/// Kills the child on every path.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn sigkill_during_appends_loses_no_durable_lsn() {
    let seed = std::env::var("CONSENS_WAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let iterations: u32 = std::env::var("CONSENS_WAL_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    eprintln!(
        "wal_crash seed {seed} (replay: CONSENS_WAL_CRASH_SEED={seed} cargo test --test wal_crash)"
    );
    let mut rng = XorShift(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut durable_max = 0u64;
    let mut kills = 0;
    let mut torn = 0;
    for i in 0..iterations {
        if Instant::now() > deadline {
            eprintln!("time bound reached after {i} kills");
            break;
        }
        let mut child = KillOnDrop(
            Command::new(&exe)
                .args([
                    "crash_child_appender",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(DIR_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn child"),
        );
        let stdout = child.0.stdout.take().expect("piped stdout");
        let reported = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let reader = {
            let reported = reported.clone();
            let started = started.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // libtest may print "test name ... " before the child's first line.
                    let mut words = line.split_whitespace();
                    while let Some(word) = words.next() {
                        match (word, words.clone().next().map(str::parse::<u64>)) {
                            ("durable", Some(Ok(n))) => {
                                reported.fetch_max(n, Ordering::SeqCst);
                            }
                            ("started", Some(Ok(_))) => started.store(1, Ordering::SeqCst),
                            _ => {}
                        }
                    }
                }
            })
        };
        // Half the kills land while the child is still starting (maybe mid-recovery), the
        // other half while it appends, at a random moment.
        let wait_start = Instant::now();
        if rng.next() % 2 == 0 {
            while started.load(Ordering::SeqCst) == 0
                && wait_start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(Duration::from_micros(rng.next() % 40_000));
        } else {
            std::thread::sleep(Duration::from_micros(rng.next() % 20_000));
        }
        drop(child); // SIGKILL, then reap.
        reader.join().expect("reader thread");
        kills += 1;
        durable_max = durable_max.max(reported.load(Ordering::SeqCst));

        let (wal, rec) = Wal::open(dir.path(), options()).unwrap_or_else(|e| {
            panic!("seed {seed} kill {i}: recovery refused after SIGKILL: {e}")
        });
        assert!(
            rec.next_lsn >= durable_max,
            "seed {seed} kill {i}: lsn {} reported durable, but recovery ends before lsn {}",
            durable_max - 1,
            rec.next_lsn
        );
        assert!(
            rec.first_lsn <= durable_max.saturating_sub(COMPACT_LAG).max(1),
            "seed {seed} kill {i}: compaction dropped needed records (first lsn {})",
            rec.first_lsn
        );
        let mut expected = rec.first_lsn;
        for r in rec.records() {
            assert_eq!(r.lsn, expected);
            assert_eq!(
                r.payload,
                payload(r.lsn),
                "seed {seed} kill {i}: lsn {}",
                r.lsn
            );
            expected += 1;
        }
        assert_eq!(expected, rec.next_lsn);
        torn += usize::from(rec.truncated.is_some());
        drop((wal, rec));
    }
    assert!(kills > 0);
    assert!(durable_max > 1, "the children never reported a durable LSN");
    eprintln!(
        "wal_crash: {kills} kills, {torn} torn tails truncated, durable up to lsn {}",
        durable_max - 1
    );
}
