//! Peer authentication end to end (issue 6): a cluster started with `--cluster-key-file` serves,
//! and datagrams forged without the key, truncated, or replayed from another cluster change
//! nothing on a node: they are counted as dropped, and its ballot and leader stay as they were.
//!
//! To make the forgeries as strong as UDP allows, the test itself is a *member*: the three real
//! nodes list a fourth address that the test binds, so its datagrams pass the source-address
//! check and only the MAC stands between them and the Paxos core. A last, correctly keyed
//! datagram from the same socket shows that the core would have acted on them. A brand-new
//! cluster bootstraps through the safe join, which needs an answer from every other member of a
//! four-member cluster, so until the forgeries start the test's member answers join queries
//! honestly ("I know nothing"), with the key.

mod support;

use consens::internals::net::auth::ClusterKey;
use consens::internals::net::codec::{decode_keyed, encode, encode_keyed, Header};
use consens::internals::net::wire::Wire;
use consens::internals::paxos::types::{Ballot, NodeId};
use consens::internals::paxos::Message;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::cluster::*;

/// A round far above anything a three-node test cluster reaches by itself.
const FORGED_ROUND: u64 = 1_000_000;

fn write_key(path: &std::path::Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write key file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

/// Plays an honest, empty member on `socket` until `stop`: answers every join query with
/// "nothing known", so that the real nodes can finish their safe join.
fn answer_join_queries(
    socket: UdpSocket,
    cluster: u64,
    me: NodeId,
    key: ClusterKey,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            let Ok((len, from_addr)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok((_, Wire::Paxos(Message::JoinQuery { from }))) =
                decode_keyed::<Wire>(&buf[..len], cluster, Some(&key))
            else {
                continue;
            };
            let info = Wire::Paxos(Message::JoinInfo {
                voter: true,
                log_start: 0,
                promised: Ballot {
                    round: 0,
                    node: NodeId(0),
                },
                from,
                upto: from,
                more: false,
                entries: Vec::new(),
            });
            let mut out = Vec::new();
            encode_keyed(&Header { cluster, from: me }, &info, Some(&key), &mut out)
                .expect("encode");
            let _ = socket.send_to(&out, from_addr);
        }
    })
}

fn dropped(node: &Node, reason: &str) -> u64 {
    status(node)
        .and_then(|s| s["datagrams"][format!("dropped_{reason}")].as_u64())
        .unwrap_or(0)
}

#[test]
fn keyed_cluster_serves_and_ignores_forged_truncated_and_foreign_datagrams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_bytes = [0x5Au8; 32];
    let key_path = dir.path().join("cluster.key");
    write_key(&key_path, &key_bytes);
    let key_arg = key_path.display().to_string();

    // Three real nodes and one member address held by the test.
    let ports: Vec<u16> = (0..3).map(|_| free_base_port()).collect();
    let fake_socket = UdpSocket::bind("127.0.0.1:0").expect("bind the test's member socket");
    let fake_addr = fake_socket.local_addr().expect("local addr");
    let nodes: Vec<Node> = ports
        .iter()
        .map(|&port| {
            let mut cluster: Vec<String> = ports
                .iter()
                .filter(|&&p| p != port)
                .map(|p| format!("127.0.0.1:{p}"))
                .collect();
            cluster.push(fake_addr.to_string());
            let data_dir = dir.path().join(port.to_string());
            let args = vec![
                "--port".to_string(),
                port.to_string(),
                "--cluster".to_string(),
                cluster.join(","),
                "--data-dir".to_string(),
                data_dir.display().to_string(),
                "--cluster-key-file".to_string(),
                key_arg.clone(),
            ];
            Node::start(port, &data_dir, args, Vec::new())
        })
        .collect();
    // The member list as every node numbers it, and the test's id in it.
    let mut members: Vec<SocketAddr> = ports
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    members.push(fake_addr);
    members.sort();
    let cluster_id = consens::internals::config::cluster_id(&members);
    let fake_id = NodeId(
        u16::try_from(
            members
                .iter()
                .position(|m| *m == fake_addr)
                .expect("member"),
        )
        .expect("small"),
    );
    let right_key = ClusterKey::from_bytes(&key_bytes).expect("key");
    let stop = Arc::new(AtomicBool::new(false));
    let responder = answer_join_queries(
        fake_socket.try_clone().expect("clone socket"),
        cluster_id,
        fake_id,
        right_key.clone(),
        stop.clone(),
    );
    for node in &nodes {
        node.wait_http();
    }
    // End to end: a write through one node is read on the others (3 of 4 members: a quorum).
    let ready = wait_until(START_TIMEOUT, || {
        let a = put(&nodes[0], "k", b"v1");
        a.status == 200 || a.status == 201
    });
    assert!(
        ready,
        "the keyed cluster never served a write; logs:\n{}",
        nodes
            .iter()
            .map(|n| n.log())
            .collect::<Vec<_>>()
            .join("\n====\n")
    );
    for node in &nodes {
        let a = get(node, "k");
        assert_eq!(a.status, 200, "{}", a.body_text());
        assert_eq!(a.body, b"v1");
    }

    // The member list as every node numbers it, and the test's id in it.
    let mut members: Vec<SocketAddr> = ports
        .iter()
        .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    members.push(fake_addr);
    members.sort();
    let cluster_id = consens::internals::config::cluster_id(&members);
    let fake_id = NodeId(
        u16::try_from(
            members
                .iter()
                .position(|m| *m == fake_addr)
                .expect("member"),
        )
        .expect("small"),
    );
    stop.store(true, Ordering::Relaxed);
    responder.join().expect("responder thread");
    let target = &nodes[0];
    let target_addr = SocketAddr::from(([127, 0, 0, 1], target.port));

    let forged_ballot = Ballot {
        round: FORGED_ROUND,
        node: fake_id,
    };
    let prepare = Wire::Paxos(Message::Prepare {
        ballot: forged_ballot,
        from: 1,
    });
    let heartbeat = Wire::Paxos(Message::Heartbeat {
        ballot: forged_ballot,
        commit: 1_000_000,
        read_round: 0,
    });
    let ours = Header {
        cluster: cluster_id,
        from: fake_id,
    };
    let foreign = Header {
        cluster: cluster_id ^ 1,
        from: fake_id,
    };
    let wrong_key = ClusterKey::from_bytes(&[0xA5u8; 32]).expect("key");
    let datagram = |header: &Header, wire: &Wire, key: Option<&ClusterKey>| {
        let mut out = Vec::new();
        encode_keyed(header, wire, key, &mut out).expect("encode");
        out
    };

    let before = status(target).expect("status");
    let bad_mac_before = dropped(target, "bad_mac");
    let malformed_before = dropped(target, "malformed");
    let foreign_before = dropped(target, "foreign_cluster");

    // Per message: counted as `bad_mac` (at least), as `foreign_cluster`, and in all.
    let mut bad_mac = 0;
    let mut foreign_cluster = 0;
    let mut total = 0;
    for wire in [&prepare, &heartbeat] {
        let good = datagram(&ours, wire, Some(&right_key));
        let mut plain = Vec::new();
        encode(&ours, wire, &mut plain).expect("encode");
        let mut flipped = good.clone();
        flipped[20] ^= 0x04;
        let forgeries = [
            // Forged with a wrong key.
            datagram(&ours, wire, Some(&wrong_key)),
            // Without a tag at all (what an unkeyed node, or anyone, would send).
            plain,
            // Correctly keyed, then a single bit flipped in the payload.
            flipped,
            // Correctly keyed, then cut inside the tag.
            good[..good.len() - 1].to_vec(),
        ];
        bad_mac += forgeries.len();
        // Cut into the payload, and inside the header: `bad_mac` or `malformed` (truncated).
        let cuts = [good[..good.len() - 20].to_vec(), good[..10].to_vec()];
        // Replayed from another cluster: keyed with the right key and with another.
        let replays = [
            datagram(&foreign, wire, Some(&right_key)),
            datagram(&foreign, wire, Some(&wrong_key)),
        ];
        foreign_cluster += replays.len();
        total += forgeries.len() + cuts.len() + replays.len();
        for d in forgeries.iter().chain(&cuts).chain(&replays) {
            fake_socket.send_to(d, target_addr).expect("send");
        }
    }

    let counted = wait_until(Duration::from_secs(10), || {
        let mac = dropped(target, "bad_mac") - bad_mac_before;
        let malformed = dropped(target, "malformed") - malformed_before;
        let foreign = dropped(target, "foreign_cluster") - foreign_before;
        mac >= bad_mac as u64
            && foreign >= foreign_cluster as u64
            && mac + malformed + foreign >= total as u64
    });
    assert!(counted, "drops not counted: {:?}", status(target));

    // Nothing changed: no node follows or promised the forged ballot, and the cluster serves.
    let a = put(target, "k", b"v2");
    assert!(a.status == 200 || a.status == 201, "{}", a.body_text());
    let fake_name = fake_addr.to_string();
    for node in &nodes {
        let s = status(node).expect("status");
        let ballot = s["ballot"].as_str().unwrap_or("").to_string();
        let round: u64 = ballot
            .split('.')
            .next()
            .and_then(|r| r.parse().ok())
            .unwrap_or(u64::MAX);
        assert!(round < FORGED_ROUND, "{s}");
        assert_ne!(s["leader"].as_str(), Some(fake_name.as_str()), "{s}");
        assert_eq!(get(node, "k").body, b"v2");
    }
    assert_eq!(
        status(target).expect("status")["ballot"],
        before["ballot"],
        "the target's ballot moved"
    );

    // The control: the same Heartbeat, correctly keyed from the same socket, is acted on (the
    // node follows the forged ballot's leader). So the datagrams above were refused by the MAC
    // check, not for some other reason. (A Prepare would be ignored anyway while the real
    // leader is alive: leader stickiness.)
    let keyed_heartbeat = datagram(&ours, &heartbeat, Some(&right_key));
    let moved = wait_until(Duration::from_secs(10), || {
        fake_socket
            .send_to(&keyed_heartbeat, target_addr)
            .expect("send");
        status(target).is_some_and(|s| s["leader"].as_str() == Some(fake_name.as_str()))
    });
    assert!(
        moved,
        "a keyed Heartbeat was not acted on: {:?}",
        status(target)
    );
}

#[test]
fn a_short_key_file_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("short.key");
    write_key(&key_path, b"hunter2\n");
    let port = free_base_port();
    let data_dir = dir.path().join("node");
    let mut node = Node::start(
        port,
        &data_dir,
        vec![
            "--port".to_string(),
            port.to_string(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--cluster-key-file".to_string(),
            key_path.display().to_string(),
        ],
        Vec::new(),
    );
    let exit = node
        .wait_exit(Duration::from_secs(10))
        .expect("the node exits");
    assert!(!exit.success());
    let log = node.log();
    assert!(log.contains("at least 32"), "{log}");
}
