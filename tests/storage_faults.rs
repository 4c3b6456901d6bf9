//! Storage faults in one node's WAL of a 3-node cluster, at daemon level (issue 6):
//! - a bit flip and a zeroed 4 KiB page in the middle of the log: the node refuses to start
//!   (`wal-format.md` §9 row 7: "corrupt", the file, the offset), the other two keep serving, and
//!   the documented operator procedure (`docs/reliability.md`: move `wal/` and `snapshots/` aside,
//!   keep `members` and `boot`, restart) rebuilds the node from its peers losing nothing
//!   acknowledged — checked by then stopping another node so that the rebuilt one is needed for
//!   every quorum;
//! - a torn tail: the node truncates it (row 6), starts and catches up;
//! - a full disk (a small tmpfs as the node's data dir): the node answers "unavailable" without
//!   crashing, the others keep serving, and it recovers once space returns.
//!
//! The one-node versions of the torn tail and the corrupt record are in `daemon_storage.rs`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::cluster::*;
use support::wal_bytes::*;

/// Keys written before the fault, and after it while the victim is down.
const KEYS_BEFORE: usize = 200;
const KEYS_DURING: usize = 30;
/// How long a rebuilt or recovering node may take to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

fn put_ok(node: &Node, key: &str, value: &[u8]) -> bool {
    let a = put(node, key, value);
    a.status == 200 || a.status == 201
}

/// Writes `count` keys `prefix-i` through `node`, each retried until acknowledged.
fn write_keys(node: &Node, prefix: &str, count: usize, acked: &mut BTreeMap<String, String>) {
    for i in 0..count {
        let key = format!("{prefix}-{i}");
        let value = format!("value-of-{key}");
        let ok = wait_until(Duration::from_secs(20), || {
            put_ok(node, &key, value.as_bytes())
        });
        assert!(ok, "write {key} through node {} never succeeded", node.port);
        acked.insert(key, value);
    }
}

fn verify_wal(data_dir: &Path) -> (bool, String) {
    wal_command("verify", data_dir)
}

/// The operator procedure for a node that refuses to start (`docs/reliability.md`): move its
/// log and snapshots aside (kept for inspection), keep `identity` and `boot`, start it again.
fn operator_rebuild(data_dir: &Path) {
    for dir in ["wal", "snapshots"] {
        let from = data_dir.join(dir);
        if from.exists() {
            let to = data_dir.join(format!("{dir}.refused"));
            std::fs::rename(&from, &to).expect("move aside");
        }
    }
    assert!(data_dir.join("identity").exists() && data_dir.join("boot").exists());
}

/// A 3-node cluster with `KEYS_BEFORE` acknowledged keys; returns it, the acked keys and the
/// index of a follower (the victim).
fn cluster_with_data() -> (Cluster, BTreeMap<String, String>, usize) {
    let cluster = Cluster::start(3, &["--request-timeout-ms", "2000"]);
    cluster.wait_ready(0);
    let mut acked = BTreeMap::new();
    write_keys(&cluster.nodes[0], "before", KEYS_BEFORE, &mut acked);
    let leader = cluster.leader().unwrap_or(0);
    let victim = (leader + 1) % 3;
    (cluster, acked, victim)
}

/// Every acknowledged key, read linearizably through node `via`.
fn assert_all_present(cluster: &Cluster, via: usize, acked: &BTreeMap<String, String>) {
    for (key, value) in acked {
        let mut a = get(&cluster.nodes[via], key);
        for _ in 0..20 {
            if a.status != 503 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            a = get(&cluster.nodes[via], key);
        }
        assert_eq!(
            (a.status, a.body_text()),
            (200, value.clone()),
            "acknowledged {key} lost through node {via}:\n{}",
            cluster.logs()
        );
    }
}

/// Waits until node `i` holds `key` locally (a stale read): it caught up at least that far.
fn wait_caught_up(cluster: &Cluster, i: usize, key: &str) {
    let ok = wait_until(CATCH_UP_TIMEOUT, || {
        get_stale(&cluster.nodes[i], key).status == 200
    });
    assert!(
        ok,
        "node {i} did not catch up to {key}:\n{}",
        cluster.logs()
    );
}

/// Corrupts the victim's stopped log with `damage`, checks the refusal, keeps the cluster
/// serving, applies the operator procedure and checks that nothing acknowledged was lost.
fn refused_then_rebuilt_from_peers(fault: &str, damage: impl FnOnce(&mut [u8]) -> usize) {
    let (mut cluster, mut acked, victim) = cluster_with_data();
    let data_dir = cluster.nodes[victim].data_dir.clone();
    cluster.nodes[victim]
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .expect("the victim stops");
    let path = newest_segment(&data_dir);
    let mut bytes = std::fs::read(&path).expect("read segment");
    let offset = damage(&mut bytes);
    std::fs::write(&path, &bytes).expect("write segment");

    let (ok, report) = verify_wal(&data_dir);
    assert!(!ok, "{fault}: verify must refuse: {report}");
    assert!(report.contains("corrupt"), "{fault}: {report}");
    cluster.nodes[victim].restart();
    let status = cluster.nodes[victim]
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{fault}: a node with a corrupt WAL must exit"));
    assert!(!status.success(), "{fault}: refused with a failure status");
    let log = cluster.nodes[victim].log();
    let file_name = path.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        log.contains("corrupt") && log.contains(file_name) && log.contains("offset"),
        "{fault}: the refusal names the file and offset (damage at {offset}):\n{log}"
    );

    // The other two keep serving, reads and writes.
    let alive = (victim + 1) % 3;
    write_keys(&cluster.nodes[alive], "during", KEYS_DURING, &mut acked);
    assert_all_present(&cluster, (victim + 2) % 3, &acked);

    // The operator procedure; the node rejoins through the safe join and catches up.
    operator_rebuild(&data_dir);
    cluster.nodes[victim].restart();
    cluster.nodes[victim].wait_http();
    let last = format!("during-{}", KEYS_DURING - 1);
    wait_caught_up(&cluster, victim, &last);
    write_keys(&cluster.nodes[victim], "rebuilt", 5, &mut acked);

    // Now the rebuilt node is needed for every quorum: stop one of the others.
    cluster.nodes[alive].kill9();
    assert_all_present(&cluster, victim, &acked);
    println!(
        "storage fault {fault} at offset {offset}: refused, rebuilt from peers, {} acknowledged keys checked, 0 lost",
        acked.len()
    );
}

#[test]
fn a_bit_flip_in_the_middle_refuses_start_and_the_node_is_rebuilt_from_peers() {
    refused_then_rebuilt_from_peers("bit flip", |bytes| {
        let frames = frames(bytes);
        assert!(frames.len() > 10, "too few records: {}", frames.len());
        let at = frames[frames.len() / 2] + RECORD_HEADER_BYTES;
        bytes[at] ^= 0x10;
        at
    });
}

#[test]
fn a_zeroed_page_in_the_middle_refuses_start_and_the_node_is_rebuilt_from_peers() {
    refused_then_rebuilt_from_peers("zeroed 4 KiB page", |bytes| {
        let frames = frames(bytes);
        let end = *frames.last().expect("records");
        let page = (frames[frames.len() / 2] / PAGE_BYTES) * PAGE_BYTES;
        assert!(
            page >= PAGE_BYTES && page + 2 * PAGE_BYTES <= end,
            "the log is too short for a page in the middle: ends at {end}"
        );
        bytes[page..page + PAGE_BYTES].fill(0);
        page
    });
}

#[test]
fn a_torn_tail_on_one_node_is_truncated_and_the_node_catches_up() {
    let (mut cluster, mut acked, victim) = cluster_with_data();
    let data_dir = cluster.nodes[victim].data_dir.clone();
    cluster.nodes[victim].kill9();
    let path = newest_segment(&data_dir);
    let mut bytes = std::fs::read(&path).expect("read segment");
    let last = *frames(&bytes).last().expect("records");
    bytes[last + RECORD_HEADER_BYTES] ^= 0xFF;
    std::fs::write(&path, &bytes).expect("write segment");
    let (ok, report) = verify_wal(&data_dir);
    assert!(ok, "verify must accept a torn tail: {report}");
    write_keys(
        &cluster.nodes[(victim + 1) % 3],
        "during",
        KEYS_DURING,
        &mut acked,
    );
    cluster.nodes[victim].restart();
    cluster.nodes[victim].wait_http();
    wait_caught_up(&cluster, victim, &format!("during-{}", KEYS_DURING - 1));
    assert!(
        cluster.nodes[victim].log().contains("torn"),
        "the truncation is logged"
    );
    cluster.nodes[(victim + 1) % 3].kill9();
    assert_all_present(&cluster, victim, &acked);
}

/// A tmpfs mounted for one test; unmounted (lazily) on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size_bytes: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem holding `path` with a file until the disk is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xAAu8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

/// The WAL preallocates 64 MiB segments; the tmpfs holds two and a little more, and a filler
/// file takes all that is left after the first, so the second cannot be created until the filler
/// is removed.
const TMPFS_BYTES: u64 = 136 * 1024 * 1024;
/// Values this large fill the victim's segment in about a thousand writes.
const BIG_VALUE_BYTES: usize = 60_000;
/// Bound on the writes it may take (64 MiB / 60 kB is about 1,120).
const FILL_WRITES_MAX: usize = 2_000;

#[test]
fn a_full_disk_makes_one_follower_unavailable_and_it_recovers_when_space_returns() {
    full_disk_on_one_node(false);
}

#[test]
fn a_full_disk_on_the_leader_makes_it_unavailable_and_it_recovers_when_space_returns() {
    full_disk_on_one_node(true);
}

/// Moves leadership to node `to` by killing whoever leads (and restarting it) until `to` does.
fn make_leader(cluster: &mut Cluster, to: usize) {
    for _ in 0..LEADER_MOVES_MAX {
        match cluster.leader() {
            Some(l) if l == to => return,
            Some(l) => {
                cluster.nodes[l].kill9();
                cluster.wait_ready(to);
                cluster.nodes[l].restart();
                cluster.nodes[l].wait_http();
            }
            None => cluster.wait_ready(to),
        }
    }
    panic!("node {to} never became leader:\n{}", cluster.logs());
}

/// Attempts at moving leadership to the full-disk node.
const LEADER_MOVES_MAX: usize = 30;

fn full_disk_on_one_node(victim_leads: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    // The data dir is the mount point itself; the node's log goes beside it, off the small disk.
    let small = match Tmpfs::mount(&dir.path().join("small"), TMPFS_BYTES) {
        Ok(m) => m,
        Err(reason) => {
            println!("SKIPPED: cannot mount a small tmpfs ({reason})");
            return;
        }
    };
    let ports: Vec<u16> = (0..3).map(|_| free_base_port()).collect();
    let victim = 2;
    let nodes = (0..3)
        .map(|i| {
            let others: Vec<String> = (0..3)
                .filter(|&j| j != i)
                .map(|j| format!("127.0.0.1:{}", ports[j]))
                .collect();
            let data_dir = if i == victim {
                small.path.clone()
            } else {
                dir.path().join(ports[i].to_string())
            };
            let args = vec![
                "--port".to_string(),
                ports[i].to_string(),
                "--cluster".to_string(),
                others.join(","),
                "--data-dir".to_string(),
                data_dir.display().to_string(),
                "--request-timeout-ms".to_string(),
                "2000".to_string(),
            ];
            let node = Node::start(ports[i], &data_dir, args, Vec::new());
            node.wait_http();
            node
        })
        .collect();
    let mut cluster = Cluster {
        nodes,
        dir: tempfile::tempdir().expect("tempdir"),
    };
    cluster.wait_ready(0);
    make_leader(&mut cluster, if victim_leads { victim } else { 0 });
    let filler = small.path.join("filler");
    fill(&filler);

    // Large writes through another node until the victim's segment is full and it cannot
    // create the next one.
    let big = vec![b'x'; BIG_VALUE_BYTES];
    let mut unavailable = None;
    let mut acked = 0usize;
    let mut last_probe = String::new();
    for i in 0..FILL_WRITES_MAX {
        assert!(
            put_ok(&cluster.nodes[0], &format!("big-{}", i % 50), &big),
            "the healthy nodes must keep serving (write {i}):\n{}",
            cluster.logs()
        );
        acked += 1;
        if i % 25 == 24 {
            let a = put(&cluster.nodes[victim], "probe", b"p");
            if a.status == 503 && a.body_text().contains("unavailable") {
                unavailable = Some(a.body_text());
                break;
            }
            last_probe = format!("{} {}", a.status, a.body_text());
        }
    }
    let reason = unavailable.unwrap_or_else(|| {
        panic!(
            "the victim never answered unavailable after {acked} big writes (last probe: {last_probe}):\n{}",
            cluster.logs()
        )
    });
    assert!(reason.contains("disk full"), "{reason}");
    // No SIGBUS: the process is still there and still answers.
    assert!(
        cluster.nodes[victim]
            .wait_exit(Duration::from_millis(200))
            .is_none(),
        "the victim died on a full disk:\n{}",
        cluster.nodes[victim].log()
    );
    let a = get(&cluster.nodes[victim], "_health");
    assert_ne!(a.status, 0, "the victim still answers HTTP");
    assert!(put_ok(&cluster.nodes[1], "while-full", b"ok"));

    // Space returns: the node serves again and catches up.
    std::fs::remove_file(&filler).expect("remove filler");
    let ok = wait_until(CATCH_UP_TIMEOUT, || {
        put_ok(&cluster.nodes[victim], "after-space", b"back")
    });
    assert!(
        ok,
        "the victim did not recover when space returned:\n{}",
        cluster.logs()
    );
    wait_caught_up(&cluster, victim, "while-full");
    // The node retries every tick; it warns once per episode, not at every retry.
    let log = cluster.nodes[victim].log();
    let warnings = log.matches("WAL append failed").count();
    assert!((1..=2).contains(&warnings), "{warnings} disk-full warnings");
    assert!(log.contains("WAL appends work again"), "{log}");
    println!(
        "disk full on the {}: unavailable after {acked} big writes ({reason}), recovered when space returned",
        if victim_leads { "leader" } else { "follower" }
    );
    drop(cluster);
    drop(small);
}

/// Kills a raw child process on every path.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node whose log output cannot be written (stderr on a full disk, here `/dev/full`) still
/// starts and serves: a log line that fails is dropped, it does not panic the task that logged.
#[test]
fn a_node_whose_log_cannot_be_written_still_serves() {
    let Ok(full) = std::fs::File::options().write(true).open("/dev/full") else {
        println!("SKIPPED: no /dev/full");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_base_port();
    let child = Command::new(env!("CARGO_BIN_EXE_consens"))
        .args(["serve", "--port", &port.to_string(), "--data-dir"])
        .arg(dir.path().join("node"))
        .env("RUST_LOG", "consens=info")
        .stdout(full.try_clone().expect("clone"))
        .stderr(full)
        .spawn()
        .expect("spawn consens");
    let _guard = ChildGuard(child);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let ok = wait_until(Duration::from_secs(20), || {
        agent
            .put(&format!("http://127.0.0.1:{port}/k"))
            .send_string("v")
            .is_ok_and(|r| r.status() == 201 || r.status() == 200)
    });
    assert!(ok, "the node never served with an unwritable stderr");
}

/// The boot counter the operator writes when a node lost its whole data dir, `boot` included
/// (`docs/reliability.md` §4): above any number of starts the node ever had.
const BOOT_AFTER_TOTAL_LOSS: &str = "1000000\n";

/// A node loses its whole data dir; writes through it before the loss and after the rebuild.
/// Returns the writes' answers after the rebuild.
fn whole_data_dir_lost(boot_restored: bool) -> Vec<String> {
    let mut cluster = Cluster::start(3, &["--request-timeout-ms", "2000"]);
    cluster.wait_ready(0);
    let mut acked = BTreeMap::new();
    write_keys(&cluster.nodes[2], "old", 20, &mut acked);
    cluster.nodes[2].kill9();
    let data_dir = cluster.nodes[2].data_dir.clone();
    std::fs::remove_dir_all(&data_dir).expect("wipe the data dir");
    if boot_restored {
        std::fs::create_dir_all(&data_dir).expect("data dir");
        std::fs::write(data_dir.join("boot"), BOOT_AFTER_TOTAL_LOSS).expect("boot");
    }
    cluster.nodes[2].restart();
    cluster.nodes[2].wait_http();
    wait_caught_up(&cluster, 2, "old-19");
    let mut failed = Vec::new();
    for i in 0..20 {
        let key = format!("new-{i}");
        let a = put(&cluster.nodes[2], &key, b"w");
        if a.status == 200 || a.status == 201 {
            acked.insert(key, "w".to_string());
        } else {
            failed.push(format!("{key}: {} {}", a.status, a.body_text().trim()));
        }
    }
    assert_all_present(&cluster, 0, &acked);
    failed
}

/// Whole-disk loss with the documented procedure: the node rejoins (safe join) and writes
/// through it work at once, nothing acknowledged is lost.
#[test]
fn a_node_that_lost_its_whole_data_dir_rejoins_with_a_fresh_boot_counter() {
    let failed = whole_data_dir_lost(true);
    assert!(
        failed.is_empty(),
        "writes through the rebuilt node failed: {failed:?}"
    );
}

/// A node that lost its boot counter too (whole data dir gone) takes writes at once: a missing
/// counter starts at a random point far from the old boots, so its command ids are new and the
/// state machine does not take its writes for retries.
#[test]
fn a_node_that_lost_its_boot_counter_can_take_writes() {
    let failed = whole_data_dir_lost(false);
    assert!(
        failed.is_empty(),
        "writes through the rebuilt node failed: {failed:?}"
    );
}
