//! A node's own storage at daemon level: a torn WAL tail is truncated and the node starts; a WAL
//! corrupt in the middle makes the node refuse to start, naming the file, the offset and the
//! word "corrupt"; the operator's `consens wal verify` agrees with the node.
//!
//! Record frames are found with `support::wal_bytes`, which walks a segment as `wal-format.md`
//! lays it out.

mod support;

use std::path::Path;
use std::time::Duration;
use support::cluster::*;
use support::wal_bytes::{frames, newest_segment as segment, wal_command, RECORD_HEADER_BYTES};

/// A one-node cluster with a few writes, stopped gracefully so that its WAL is complete.
fn node_with_writes() -> Cluster {
    let mut cluster = Cluster::start(1, &[]);
    cluster.wait_ready(0);
    for i in 0..5 {
        let a = put(&cluster.nodes[0], &format!("k{i}"), b"v");
        assert!(a.status == 200 || a.status == 201, "{}", a.body_text());
    }
    cluster.nodes[0]
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .expect("stops");
    cluster
}

fn verify(data_dir: &Path) -> (bool, String) {
    wal_command("verify", data_dir)
}

#[test]
fn a_torn_tail_is_truncated_and_the_node_starts() {
    let mut cluster = node_with_writes();
    let data_dir = cluster.nodes[0].data_dir.clone();
    let (_, dump) = wal_command("dump", &data_dir);
    for needle in [
        "promised ballot=",
        "accepted slot=",
        "put key=\"k0\"",
        "decided upto=",
    ] {
        assert!(
            dump.contains(needle),
            "{needle} missing from the dump:\n{dump}"
        );
    }
    let path = segment(&data_dir);
    let mut bytes = std::fs::read(&path).expect("read segment");
    let last = *frames(&bytes).last().expect("records");
    // A torn write: the last record's payload is half garbage.
    bytes[last + RECORD_HEADER_BYTES] ^= 0xFF;
    std::fs::write(&path, &bytes).expect("write segment");
    let (ok, report) = verify(&data_dir);
    assert!(ok, "verify must accept a torn tail: {report}");
    cluster.nodes[0].restart();
    cluster.nodes[0].wait_http();
    cluster.wait_ready(0);
    for i in 0..4 {
        let a = get(&cluster.nodes[0], &format!("k{i}"));
        assert_eq!(a.status, 200, "k{i} after truncating the torn tail");
    }
    assert!(
        cluster.nodes[0].log().contains("torn"),
        "the truncation is logged"
    );
}

#[test]
fn a_corrupt_record_in_the_middle_refuses_start_naming_file_and_offset() {
    let mut cluster = node_with_writes();
    let data_dir = cluster.nodes[0].data_dir.clone();
    let path = segment(&data_dir);
    let mut bytes = std::fs::read(&path).expect("read segment");
    let first = frames(&bytes)[0];
    bytes[first + RECORD_HEADER_BYTES] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write segment");
    let (ok, report) = verify(&data_dir);
    assert!(!ok, "verify must refuse corruption: {report}");
    assert!(report.contains("corrupt"), "{report}");
    cluster.nodes[0].restart();
    let status = cluster.nodes[0]
        .wait_exit(Duration::from_secs(20))
        .expect("a node with a corrupt WAL exits");
    assert!(!status.success());
    let log = cluster.nodes[0].log();
    let file_name = path.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(log.contains("corrupt"), "{log}");
    assert!(log.contains(file_name), "the file is named: {log}");
    assert!(
        log.contains(&format!("at offset {first}")),
        "the offset {first} is named: {log}"
    );
}
