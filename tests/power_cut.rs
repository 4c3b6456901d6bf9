//! Whole-cluster power cuts under write load: every node's data dir is on a filesystem of its own,
//! the power of all nodes is cut at once, and every node restarts from what its device held.
//! Acknowledged writes lost must be 0, and the nodes must converge to one state.
//!
//! Unlike kill -9 (`tests/durability.rs`), a cut drops the page cache, so a missing or misplaced
//! msync loses writes here (`tests/support/power.rs` says how a cut is made). The harness shows
//! its teeth twice: a file written without a sync is gone after a cut, and a node whose WAL sync
//! is planted broken (skipped, or run before the bytes are written) loses acknowledged writes.
//!
//! `POWER_CUTS=<n>` sets the number of cuts of the correct cluster (CI: 3); `scripts/chaos.sh`
//! runs more. Needs root, loop devices and `mkfs.ext4`; skips with a message otherwise.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::cluster::*;
use support::power::{LoopDisk, WritebackPause};

const NODES: usize = 3;
/// Cuts of the correct cluster in CI.
const POWER_CUTS_DEFAULT: u64 = 3;
/// Cuts a planted sync bug gets before the harness is declared toothless.
const TEETH_CUTS_MAX: u64 = 5;
/// Each node's filesystem: room for two 64 MiB WAL segments and a few snapshots (sparse).
const DISK_BYTES: u64 = 512 << 20;
/// How long the clients write before each cut.
const LOAD_MS: u64 = 700;
/// How long the cluster idles between the last acknowledged write and an after-load cut.
const IDLE_BEFORE_CUT_MS: u64 = 100;
/// Each client write gives up after this long (the node's own request timeout is shorter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long restarted nodes get to elect a leader and take a write.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// When a cut comes. Both matter: under load the cut lands between a batch's write and its
/// sync; after the load, the last acknowledged batch has no later write to push it out, so a
/// sync that runs late (or never) loses it for certain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CutMoment {
    UnderLoad,
    AfterLoad,
}

impl CutMoment {
    /// Cuts alternate, starting under load.
    fn of(cut: u64) -> CutMoment {
        if cut % 2 == 0 {
            CutMoment::UnderLoad
        } else {
            CutMoment::AfterLoad
        }
    }
}

/// A cluster whose nodes keep their data dirs on loop-mounted disks of their own.
struct PoweredCluster {
    // Dropped in this order: the nodes die, the disks are unmounted, their images removed.
    cluster: Cluster,
    disks: Vec<LoopDisk>,
    _images: tempfile::TempDir,
    _pause: WritebackPause,
}

impl PoweredCluster {
    /// Starts `NODES` nodes with `extra_args`, or says why this machine cannot.
    fn start(extra_args: &[&str]) -> Result<PoweredCluster, String> {
        let pause = WritebackPause::start()?;
        let images = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut disks = Vec::new();
        let mut failure = None;
        let cluster = Cluster::start_placed(NODES, extra_args, |dir, port| {
            let mount = images.path().join(format!("disk-{port}"));
            match LoopDisk::create(
                &images.path().join(format!("{port}.img")),
                &mount,
                DISK_BYTES,
            ) {
                Ok(disk) => disks.push(disk),
                Err(e) => failure = Some(e),
            }
            (mount.join("data"), dir.join(format!("{port}.log")))
        });
        if let Some(why) = failure {
            return Err(why);
        }
        Ok(PoweredCluster {
            cluster,
            disks,
            _images: images,
            _pause: pause,
        })
    }

    /// Cuts every node's power at once, then boots every node from what its disk holds.
    fn cut_and_restart(&mut self) {
        let pids: Vec<i32> = self.cluster.nodes.iter().filter_map(Node::pid).collect();
        for pid in pids {
            // SAFETY: kill(2) on processes this test spawned and has not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for node in &mut self.cluster.nodes {
            node.kill9();
        }
        for disk in &mut self.disks {
            if let Err(e) = disk.cut() {
                panic!("power cut of {}: {e}", disk.image.display());
            }
        }
        for node in &mut self.cluster.nodes {
            node.restart();
        }
    }

    /// Writes fresh keys through every node for `LOAD_MS`, then cuts the power at `moment`.
    fn load_then_cut(
        &mut self,
        cut: u64,
        moment: CutMoment,
        acked: &Mutex<BTreeMap<String, String>>,
    ) {
        let ports: Vec<u16> = self.cluster.nodes.iter().map(|n| n.port).collect();
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let clients: Vec<_> = ports
                .iter()
                .enumerate()
                .map(|(client, &port)| {
                    let (stop, acked) = (&stop, acked);
                    let prefix = format!("cut{cut}-c{client}");
                    scope
                        .spawn(move || write_fresh_keys(port, &prefix, CLIENT_TIMEOUT, stop, acked))
                })
                .collect();
            std::thread::sleep(Duration::from_millis(LOAD_MS));
            if moment == CutMoment::AfterLoad {
                stop.store(true, Ordering::Relaxed);
                for client in clients {
                    client.join().expect("client thread");
                }
                std::thread::sleep(Duration::from_millis(IDLE_BEFORE_CUT_MS));
            }
            self.cut_and_restart();
            stop.store(true, Ordering::Relaxed);
        });
    }

    /// True once every node answers HTTP and a write goes through.
    fn ready(&self) -> bool {
        let nodes = &self.cluster.nodes;
        wait_until(READY_TIMEOUT, || {
            nodes
                .iter()
                .all(|n| TcpStream::connect(("127.0.0.1", n.port)).is_ok())
                && matches!(put(&nodes[0], "ready-probe", b"x").status, 200 | 201)
        })
    }
}

/// What one or more cuts did to the acknowledged writes.
struct Verdict {
    acked: usize,
    lost: Vec<String>,
    ready: bool,
    converged: Result<u64, String>,
}

impl Verdict {
    fn of(powered: &PoweredCluster, acked: &Mutex<BTreeMap<String, String>>) -> Verdict {
        let acked = acked.lock().expect("acked").clone();
        let ready = powered.ready();
        let lost = if ready {
            lost_writes(&powered.cluster.nodes, &acked)
        } else {
            vec!["the cluster did not come back".to_string()]
        };
        let converged = if ready {
            wait_converged(&powered.cluster.nodes, Duration::from_secs(10))
        } else {
            Err("not ready".to_string())
        };
        Verdict {
            acked: acked.len(),
            lost,
            ready,
            converged,
        }
    }

    fn clean(&self) -> bool {
        self.ready && self.lost.is_empty() && self.converged.is_ok()
    }
}

fn skip(why: &str) {
    println!("SKIPPED: power-cut tests need root, loop devices and mkfs.ext4 ({why})");
}

#[test]
fn a_power_cut_keeps_what_was_synced_and_loses_what_was_not() {
    let _pause = match WritebackPause::start() {
        Ok(pause) => pause,
        Err(why) => return skip(&why),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut disk = match LoopDisk::create(
        &dir.path().join("disk.img"),
        &dir.path().join("mnt"),
        64 << 20,
    ) {
        Ok(disk) => disk,
        Err(why) => return skip(&why),
    };
    let payload = vec![b's'; 100_000];
    {
        let mut synced = std::fs::File::create(disk.mount.join("synced")).expect("create");
        synced.write_all(&payload).expect("write");
        synced.sync_all().expect("fsync");
        std::fs::File::open(&disk.mount)
            .and_then(|d| d.sync_all())
            .expect("fsync dir");
        let mut unsynced = std::fs::File::create(disk.mount.join("unsynced")).expect("create");
        unsynced.write_all(&payload).expect("write");
    }
    disk.cut().expect("power cut");
    assert_eq!(
        std::fs::read(disk.mount.join("synced")).ok().as_deref(),
        Some(&payload[..]),
        "a synced file must survive a cut"
    );
    let unsynced = std::fs::read(disk.mount.join("unsynced")).unwrap_or_default();
    assert_ne!(
        unsynced, payload,
        "a file never synced survived the cut: the harness cannot catch a missing sync"
    );
}

#[test]
fn whole_cluster_power_cuts_under_load_lose_no_acknowledged_write() {
    let cuts = std::env::var("POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(POWER_CUTS_DEFAULT);
    let started = Instant::now();
    let mut powered = match PoweredCluster::start(&["--request-timeout-ms", "1000"]) {
        Ok(powered) => powered,
        Err(why) => return skip(&why),
    };
    let acked = Mutex::new(BTreeMap::new());
    for cut in 0..cuts {
        assert!(
            powered.ready(),
            "the cluster did not come back before cut {cut}\n{}",
            powered.cluster.logs()
        );
        powered.load_then_cut(cut, CutMoment::of(cut), &acked);
    }
    let verdict = Verdict::of(&powered, &acked);
    println!(
        "power cut: cuts: {cuts} (whole cluster, alternately under load and just after it), acknowledged writes: {}, lost: {}, converged at slot {:?} ({:.1} s)",
        verdict.acked,
        verdict.lost.len(),
        verdict.converged,
        started.elapsed().as_secs_f64()
    );
    assert!(verdict.acked > 0, "no write was acknowledged at all");
    assert!(
        verdict.clean(),
        "after {cuts} power cuts: {} of {} acknowledged writes lost ({:?}); convergence: {:?}\n{}",
        verdict.lost.len(),
        verdict.acked,
        &verdict.lost[..verdict.lost.len().min(20)],
        verdict.converged,
        powered.cluster.logs()
    );
}

/// Runs cuts of a cluster whose WAL sync is broken as `bug` says until one loses an acknowledged
/// write (or the cluster does not come back); returns how many cuts that took.
fn cuts_to_catch(bug: &str) -> Result<u64, String> {
    let mut powered =
        PoweredCluster::start(&["--request-timeout-ms", "1000", "--planted-sync-bug", bug])?;
    let acked = Mutex::new(BTreeMap::new());
    for cut in 0..TEETH_CUTS_MAX {
        if !powered.ready() {
            return Ok(cut);
        }
        let moment = CutMoment::of(cut);
        powered.load_then_cut(cut, moment, &acked);
        let verdict = Verdict::of(&powered, &acked);
        if !verdict.clean() {
            println!(
                "power cut: planted sync bug {bug:?} caught by cut {} ({moment:?}): {} of {} acknowledged writes lost, ready: {}, convergence: {:?}",
                cut + 1,
                verdict.lost.len(),
                verdict.acked,
                verdict.ready,
                verdict.converged
            );
            return Ok(cut + 1);
        }
    }
    panic!("a WAL with planted sync bug {bug:?} lost nothing in {TEETH_CUTS_MAX} power cuts: the harness has no teeth");
}

#[test]
fn a_wal_that_skips_its_sync_or_syncs_before_writing_loses_acknowledged_writes() {
    for bug in ["skip", "before-write"] {
        match cuts_to_catch(bug) {
            Ok(cuts) => assert!(cuts >= 1, "{bug}: caught before any cut"),
            Err(why) => return skip(&why),
        }
    }
}
