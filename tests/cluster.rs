//! The daemon end to end: real `consens serve` processes on 127.0.0.1 (issue 4's test list).
//!
//! Each test starts its own cluster with free ports and temp dirs; the `Cluster`/`Node` guards
//! kill every process on every path. Timing assertions are generous upper bounds (the machines
//! are shared and noisy); what the tests assert is behaviour, not speed.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::cluster::*;

/// The original project's walkthrough, exactly as written: PORT and CLUSTER in the environment,
/// `http://localhost:…` member addresses, a PUT on one node read back from the other two.
#[test]
fn readme_walkthrough_with_port_and_cluster_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3).map(|_| free_base_port()).collect();
    let mut nodes = Vec::new();
    for &port in &ports {
        let cluster = ports
            .iter()
            .filter(|&&p| p != port)
            .map(|p| format!("http://localhost:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let data_dir = dir.path().join(port.to_string());
        nodes.push(Node::start(
            port,
            &data_dir,
            vec![],
            vec![
                ("PORT".into(), port.to_string()),
                ("CLUSTER".into(), cluster),
                ("DATA_DIR".into(), data_dir.display().to_string()),
            ],
        ));
    }
    for n in &nodes {
        n.wait_http();
    }
    let deadline = Instant::now() + START_TIMEOUT;
    let created = loop {
        let a = put(&nodes[1], "mykey", b"mydata");
        if a.status == 201 || a.status == 200 {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "PUT never succeeded: {} {}",
            a.status,
            a.body_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(created.etag.is_some(), "PUT must send an ETag");
    for i in [0, 2] {
        let a = get(&nodes[i], "mykey");
        assert_eq!(a.status, 200, "GET from node {i}: {}", a.body_text());
        assert_eq!(a.body, b"mydata");
        assert_eq!(a.etag, created.etag);
    }
}

#[test]
fn minority_down_still_serves_reads_and_writes() {
    let mut cluster = Cluster::start(3, &["--request-timeout-ms", "2000"]);
    cluster.wait_ready(0);
    let victim = cluster.leader().unwrap_or(2);
    cluster.nodes[victim].kill9();
    let alive: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let ok = wait_until(Duration::from_secs(20), || {
        let a = put(&cluster.nodes[alive[0]], "k", b"after-failure");
        a.status == 200 || a.status == 201
    });
    assert!(
        ok,
        "no write succeeded with one node down:\n{}",
        cluster.logs()
    );
    for &i in &alive {
        let a = get(&cluster.nodes[i], "k");
        assert_eq!(a.status, 200, "{}", a.body_text());
        assert_eq!(a.body, b"after-failure");
    }
}

#[test]
fn majority_down_fails_fast_with_503() {
    let mut cluster = Cluster::start(3, &["--request-timeout-ms", "1000"]);
    cluster.wait_ready(0);
    cluster.nodes[1].kill9();
    cluster.nodes[2].kill9();
    // Give the survivor time to notice; then every request must fail within the timeout.
    std::thread::sleep(Duration::from_millis(1500));
    for what in ["PUT", "GET"] {
        let started = Instant::now();
        let a = match what {
            "PUT" => put(&cluster.nodes[0], "k", b"v"),
            _ => get(&cluster.nodes[0], "k"),
        };
        let elapsed = started.elapsed();
        assert_eq!(a.status, 503, "{what}: {} {}", a.status, a.body_text());
        let text = a.body_text();
        assert!(
            text.contains("no quorum") || text.contains("outcome unknown"),
            "{what}: {text}"
        );
        assert!(elapsed < Duration::from_secs(5), "{what} took {elapsed:?}");
    }
    let health = request("GET", &cluster.nodes[0], "/_health", &[], None);
    assert_eq!(health.status, 503);
}

/// Writes from several client threads while `disrupt` runs; returns every acknowledged write.
fn load_while(
    cluster: &Cluster,
    targets: Vec<usize>,
    duration: Duration,
    disrupt: impl FnOnce(),
) -> BTreeMap<String, Vec<u8>> {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        for (client, &target) in targets.iter().enumerate() {
            let acked = acked.clone();
            let stop = stop.clone();
            let node = &cluster.nodes[target];
            scope.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 100_000 {
                    let key = format!("c{client}-k{i}");
                    let value = format!("v{i}").into_bytes();
                    let a = put(node, &key, &value);
                    if a.status == 200 || a.status == 201 {
                        acked.lock().expect("lock").insert(key, value);
                    } else if a.status == 0 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    i += 1;
                }
            });
        }
        std::thread::sleep(duration / 2);
        disrupt();
        std::thread::sleep(duration / 2);
        stop.store(true, Ordering::Relaxed);
    });
    Arc::try_unwrap(acked)
        .expect("threads joined")
        .into_inner()
        .expect("lock")
}

#[test]
fn leader_killed_mid_load_a_new_leader_takes_over() {
    let mut cluster = Cluster::start(3, &["--request-timeout-ms", "2000"]);
    cluster.wait_ready(0);
    let leader = cluster.leader().expect("a leader after the first write");
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let leader_port = cluster.nodes[leader].port;
    let acked = {
        let cluster_ref = &cluster;
        // Kill through a raw pid: the load threads borrow the cluster immutably.
        let pid = cluster_ref.nodes[leader].pid().expect("running");
        load_while(
            cluster_ref,
            followers.clone(),
            Duration::from_secs(4),
            move || {
                // SAFETY: kill(2) on a child we spawned.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            },
        )
    };
    cluster.nodes[leader].kill9();
    let new_leader = wait_until(Duration::from_secs(10), || {
        cluster.leader_now().is_some_and(|l| l != leader)
    });
    assert!(
        new_leader,
        "no new leader after killing {leader_port}:\n{}",
        cluster.logs()
    );
    // Clients carried on: writes succeed after the kill, and nothing acknowledged is lost.
    let a = put(&cluster.nodes[followers[0]], "after", b"yes");
    assert!(a.status == 200 || a.status == 201, "{}", a.body_text());
    assert!(!acked.is_empty(), "no write was acknowledged at all");
    for (key, value) in &acked {
        let a = get(&cluster.nodes[followers[1]], key);
        assert_eq!(a.status, 200, "acknowledged {key} lost: {}", a.body_text());
        assert_eq!(&a.body, value, "acknowledged {key} has the wrong value");
    }
}

#[test]
fn kill_all_nodes_mid_load_then_restart_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &["--request-timeout-ms", "2000"]);
    cluster.wait_ready(0);
    let pids: Vec<i32> = cluster.nodes.iter().filter_map(|n| n.pid()).collect();
    let acked = load_while(&cluster, vec![0, 1, 2], Duration::from_secs(3), move || {
        for pid in pids {
            // SAFETY: kill(2) on children we spawned.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    });
    for node in &mut cluster.nodes {
        node.kill9();
    }
    assert!(
        !acked.is_empty(),
        "no write was acknowledged before the kill"
    );
    for node in &mut cluster.nodes {
        node.restart();
    }
    for node in &cluster.nodes {
        node.wait_http();
    }
    cluster.wait_ready(1);
    for (key, value) in &acked {
        let a = get(&cluster.nodes[2], key);
        assert_eq!(
            a.status, 200,
            "acknowledged {key} lost after kill -9 of all nodes"
        );
        assert_eq!(&a.body, value);
    }
}

#[test]
fn lagging_node_catches_up_through_a_snapshot() {
    let mut cluster = Cluster::start(
        3,
        &[
            "--snapshot-every-slots",
            "50",
            "--catch-up-retain-slots",
            "0",
        ],
    );
    cluster.wait_ready(0);
    cluster.nodes[2].kill9();
    for i in 0..300 {
        let a = put(
            &cluster.nodes[i % 2],
            &format!("key{i}"),
            format!("value{i}").as_bytes(),
        );
        assert!(
            a.status == 200 || a.status == 201,
            "write {i}: {}",
            a.body_text()
        );
    }
    cluster.nodes[2].restart();
    cluster.nodes[2].wait_http();
    let caught_up = wait_until(Duration::from_secs(20), || {
        get_stale(&cluster.nodes[2], "key299").body == b"value299"
    });
    assert!(caught_up, "node did not catch up:\n{}", cluster.logs());
    for i in 0..300 {
        let a = get_stale(&cluster.nodes[2], &format!("key{i}"));
        assert_eq!(
            a.body,
            format!("value{i}").as_bytes(),
            "key{i} after catch-up"
        );
    }
    let log = cluster.nodes[2].log();
    assert!(
        log.contains("installed a snapshot from a peer"),
        "catch-up did not go through a snapshot; log:\n{log}"
    );
}

#[test]
fn restart_with_another_member_set_is_refused() {
    let mut cluster = Cluster::start(1, &[]);
    cluster.wait_ready(0);
    let node = &mut cluster.nodes[0];
    node.kill9();
    node.args.push("--cluster".into());
    node.args.push("127.0.0.1:1".into());
    node.restart();
    let status = node.wait_exit(Duration::from_secs(10)).expect("must exit");
    assert!(!status.success());
    let log = node.log();
    assert!(log.contains("refusing to start"), "{log}");
}

/// A data dir of a version before the identity file holds a sorted `members` list instead (its
/// WAL and snapshots are the same format): every node of a cluster restarted from such dirs
/// migrates them to the same identity, and nothing written before is lost.
#[test]
fn data_dirs_of_the_older_format_migrate_and_keep_their_data() {
    let mut cluster = Cluster::start(3, &["--snapshot-every-slots", "20"]);
    cluster.wait_ready(0);
    for i in 0..60 {
        let a = put(
            &cluster.nodes[i % 3],
            &format!("old/{i}"),
            format!("v{i}").as_bytes(),
        );
        assert!(a.status == 200 || a.status == 201, "{a:?}");
    }
    let mut members: Vec<std::net::SocketAddr> = cluster
        .nodes
        .iter()
        .map(|n| std::net::SocketAddr::from(([127, 0, 0, 1], n.port)))
        .collect();
    members.sort();
    let legacy: String = members.iter().map(|m| format!("{m}\n")).collect();
    let mut identities = Vec::new();
    for node in &mut cluster.nodes {
        node.kill9();
        let identity = node.data_dir.join("identity");
        identities.push(std::fs::read_to_string(&identity).expect("identity file"));
        std::fs::remove_file(&identity).expect("remove identity");
        std::fs::write(node.data_dir.join("members"), &legacy).expect("write members");
    }
    for node in &mut cluster.nodes {
        node.restart();
    }
    for node in &cluster.nodes {
        node.wait_http();
    }
    cluster.wait_ready(1);
    for (node, before) in cluster.nodes.iter().zip(&identities) {
        let after = std::fs::read_to_string(node.data_dir.join("identity")).expect("migrated");
        assert_eq!(&after, before, "same ids and cluster id after migration");
        assert!(!node.data_dir.join("members").exists());
        assert!(
            node.log().contains("migrated the data dir"),
            "{}",
            node.log()
        );
        for i in 0..60 {
            let a = get(node, &format!("old/{i}"));
            assert_eq!(a.status, 200, "old/{i} on {}: {a:?}", node.port);
            assert_eq!(a.body, format!("v{i}").as_bytes());
        }
    }
}

#[test]
fn members_with_sparse_ids_serve_and_survive_a_whole_cluster_restart() {
    // Member ids are names that later versions hand out and never reuse, so nothing in the
    // node may treat them as positions. Re-create a 3-node cluster whose ids are 4, 9 and 23.
    let mut cluster = Cluster::start(3, &[]);
    let mut addrs: Vec<(u16, std::net::SocketAddr)> = cluster
        .nodes
        .iter()
        .map(|n| (n.port, std::net::SocketAddr::from(([127, 0, 0, 1], n.port))))
        .collect();
    addrs.sort_by_key(|(_, addr)| *addr);
    let ids = [4u16, 9, 23];
    let members: String = ids
        .iter()
        .zip(&addrs)
        .map(|(id, (_, addr))| format!("member {id} {addr}\n"))
        .collect();
    for node in &mut cluster.nodes {
        node.kill9();
        std::fs::remove_dir_all(&node.data_dir).expect("wipe data dir");
        std::fs::create_dir_all(&node.data_dir).expect("data dir");
        let me = addrs
            .iter()
            .position(|(p, _)| *p == node.port)
            .expect("listed");
        let identity = format!(
            "consens-identity 1\ncluster 00000000c0ffee42\nself {}\n{members}",
            ids[me]
        );
        std::fs::write(node.data_dir.join("identity"), identity).expect("write identity");
    }
    for node in &mut cluster.nodes {
        node.restart();
    }
    for node in &cluster.nodes {
        node.wait_http();
    }
    cluster.wait_ready(0);
    for i in 0..30 {
        let a = put(&cluster.nodes[i % 3], &format!("sparse/{i}"), b"v");
        assert!(a.status == 200 || a.status == 201, "{a:?}");
    }
    for node in &mut cluster.nodes {
        node.kill9();
    }
    for node in &mut cluster.nodes {
        node.restart();
    }
    for node in &cluster.nodes {
        node.wait_http();
    }
    cluster.wait_ready(1);
    for node in &cluster.nodes {
        for i in 0..30 {
            let a = get(node, &format!("sparse/{i}"));
            assert_eq!(a.status, 200, "sparse/{i} on {}: {a:?}", node.port);
        }
        let status = status(node).expect("status");
        let mut listed: Vec<u64> = status["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter_map(|m| m["id"].as_u64())
            .collect();
        listed.sort();
        assert_eq!(listed, [4, 9, 23], "{status}");
        let me = addrs
            .iter()
            .position(|(p, _)| *p == node.port)
            .expect("listed");
        assert_eq!(status["node_id"].as_u64(), Some(u64::from(ids[me])));
    }
}

#[test]
fn sigterm_shuts_down_gracefully_and_keeps_data() {
    let mut cluster = Cluster::start(1, &[]);
    cluster.wait_ready(0);
    let a = put(&cluster.nodes[0], "durable", b"yes");
    assert!(a.status == 200 || a.status == 201);
    let status = cluster.nodes[0]
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    cluster.nodes[0].restart();
    cluster.nodes[0].wait_http();
    cluster.wait_ready(0);
    assert_eq!(get(&cluster.nodes[0], "durable").body, b"yes");
}

/// The line protocol against a real node, byte by byte: writes and reads from two nodes, a CAS
/// conflict, bad input that leaves the connection usable, and QUIT.
#[test]
fn line_protocol_against_a_real_cluster() {
    use std::io::{BufRead, BufReader, Write};
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(0);
    let connect = |i: usize| {
        let stream =
            std::net::TcpStream::connect(cluster.nodes[i].line_addr()).expect("connect line port");
        stream
            .set_read_timeout(Some(HTTP_TIMEOUT))
            .expect("read timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        (stream, reader)
    };
    let ask = |conn: &mut (std::net::TcpStream, BufReader<std::net::TcpStream>), line: &[u8]| {
        conn.0.write_all(line).expect("send");
        let mut reply = String::new();
        conn.1.read_line(&mut reply).expect("reply");
        reply
    };
    let mut a = connect(0);
    let mut b = connect(2);
    let put = ask(&mut a, b"PUT greeting hello world\r\n");
    let revision: u64 = put
        .strip_prefix("OK ")
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("PUT reply {put:?}"));
    assert_eq!(ask(&mut b, b"GET greeting\n"), "VALUE hello world\n");
    assert_eq!(
        ask(
            &mut b,
            format!("CAS greeting {} hi\n", revision + 100).as_bytes()
        ),
        format!("CONFLICT {revision}\n")
    );
    assert!(ask(&mut b, b"FROB x\n").starts_with("ERR unknown_command "));
    assert!(ask(&mut b, b"GET a\0b\n").starts_with("ERR bad_request "));
    assert_eq!(ask(&mut b, b"PING\n"), "PONG\n");
    assert_eq!(ask(&mut a, b"DEL greeting\n"), "OK\n");
    assert_eq!(ask(&mut b, b"GET greeting\n"), "NOT_FOUND\n");
    ask(&mut a, b"QUIT\n");
    let mut rest = String::new();
    assert_eq!(a.1.read_line(&mut rest).expect("eof"), 0, "QUIT closes");
}

/// Datagrams from outside the cluster, malformed ones and forged ones are dropped and counted,
/// and the node keeps serving.
#[test]
fn stray_and_malformed_datagrams_are_dropped_and_counted() {
    use consens::internals::net::codec::{encode, Header};
    use consens::internals::net::wire::Wire;
    use consens::internals::paxos::types::{Ballot, NodeId};
    use consens::internals::paxos::Message;
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(0);
    let node = &cluster.nodes[0];
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], node.port));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let members = vec![target];
    let heartbeat = Wire::Paxos(Message::Heartbeat {
        ballot: Ballot {
            round: 1_000,
            node: NodeId(0),
        },
        commit: 1_000_000,
        read_round: 0,
    });
    let mut foreign = Vec::new();
    let other_cluster = consens::internals::config::cluster_id(&members) ^ 1;
    encode(
        &Header {
            cluster: other_cluster,
            from: NodeId(0),
        },
        &heartbeat,
        &mut foreign,
    )
    .expect("encode");
    let mut forged = Vec::new();
    encode(
        &Header {
            cluster: consens::internals::config::cluster_id(&members),
            from: NodeId(0),
        },
        &heartbeat,
        &mut forged,
    )
    .expect("encode");
    let mut truncated = forged.clone();
    truncated.truncate(forged.len() - 3);
    for datagram in [
        &b"garbage"[..],
        &[0u8; 0][..],
        &foreign[..],
        &forged[..],
        &truncated[..],
        &[0xFFu8; 60_000][..],
    ] {
        socket.send_to(datagram, target).expect("send");
    }
    let counted = wait_until(Duration::from_secs(5), || {
        status(node).is_some_and(|s| {
            let d = &s["datagrams"];
            d["dropped_malformed"].as_u64().unwrap_or(0) >= 4
                && d["dropped_foreign_cluster"].as_u64() == Some(1)
                && d["dropped_unknown_sender"].as_u64() == Some(1)
        })
    });
    assert!(counted, "drops not counted: {:?}", status(node));
    let a = put(node, "still", b"serving");
    assert!(a.status == 200 || a.status == 201, "{}", a.body_text());
}

/// `/_metrics` serves Prometheus text with what an operator needs to see where time goes.
#[test]
fn metrics_show_requests_wal_syncs_and_datagrams() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(0);
    let leader = cluster.leader().expect("leader");
    for i in 0..10 {
        let a = put(&cluster.nodes[leader], &format!("m{i}"), b"v");
        assert!(a.status == 200 || a.status == 201, "{}", a.body_text());
    }
    assert_eq!(get(&cluster.nodes[leader], "m0").status, 200);
    let m = request("GET", &cluster.nodes[leader], "/_metrics", &[], None);
    assert_eq!(m.status, 200);
    let text = m.body_text();
    for needle in [
        r#"consens_requests_total{kind="put",outcome="ok"}"#,
        r#"consens_request_seconds_count{kind="get",outcome="ok"}"#,
        "consens_proposals_total",
        "consens_batch_commands_count",
        "consens_slots_in_flight",
        "consens_wal_sync_seconds_count",
        "consens_wal_bytes_total",
        "consens_loop_iteration_seconds_count",
        "consens_elections_total",
        "consens_ballot_round",
        "consens_datagrams_sent_total",
        "consens_datagrams_received_total",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let value = |series: &str| {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let puts_ok = value(r#"consens_requests_total{kind="put",outcome="ok"}"#);
    assert!(puts_ok >= 10, "{puts_ok} puts counted");
    // Every request woke the event loop at least once.
    let iterations = value("consens_loop_iteration_seconds_count");
    assert!(iterations >= 11, "{iterations} loop iterations timed");
}

/// In a five-node cluster every node takes writes and linearizable reads, followers included
/// (they do not hear from each other, only from the leader).
#[test]
fn five_node_cluster_serves_through_every_node() {
    let cluster = Cluster::start(5, &[]);
    cluster.wait_ready(0);
    for i in 0..5 {
        let a = put(
            &cluster.nodes[i],
            &format!("five{i}"),
            format!("v{i}").as_bytes(),
        );
        assert!(
            a.status == 200 || a.status == 201,
            "write through node {i}: {} {}",
            a.status,
            a.body_text()
        );
        let b = get(&cluster.nodes[(i + 2) % 5], &format!("five{i}"));
        assert_eq!(b.status, 200, "{}", b.body_text());
        assert_eq!(b.body, format!("v{i}").as_bytes());
    }
    for node in &cluster.nodes {
        let healthy = wait_until(Duration::from_secs(5), || {
            request("GET", node, "/_health", &[], None).status == 200
        });
        assert!(healthy, "node {} unhealthy: {:?}", node.port, status(node));
    }
}

#[test]
fn a_survivor_recovered_as_a_new_cluster_serves_what_it_held() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(0);
    for i in 0..40 {
        let a = put(&cluster.nodes[i % 3], &format!("kept/{i}"), b"v");
        assert!(a.status == 200 || a.status == 201, "{a:?}");
    }
    // Every write above was acknowledged before the majority "burns down", so a survivor that
    // applied them all holds them: wait for node 0 to have applied them.
    let survivor = 0;
    assert!(wait_until(Duration::from_secs(10), || {
        (0..40).all(|i| get_stale(&cluster.nodes[survivor], &format!("kept/{i}")).status == 200)
    }));
    let data_dir = cluster.nodes[survivor].data_dir.display().to_string();

    // Refused while the node runs, and without the flag.
    let (code, _, err) = consens(&["recover", "--data-dir", &data_dir, "--force-new-cluster"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stop it first"), "{err}");
    for node in &mut cluster.nodes {
        node.kill9();
    }
    let identity_before =
        std::fs::read_to_string(cluster.nodes[survivor].data_dir.join("identity")).expect("id");
    let (code, _, err) = consens(&["recover", "--data-dir", &data_dir]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force-new-cluster"), "{err}");
    let unchanged =
        std::fs::read_to_string(cluster.nodes[survivor].data_dir.join("identity")).expect("id");
    assert_eq!(
        unchanged, identity_before,
        "nothing changes without the flag"
    );

    let (code, out, err) = consens(&["recover", "--data-dir", &data_dir, "--force-new-cluster"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cluster of one member"), "{out}");

    // The survivor starts alone (no --cluster) and serves every write it held, and new ones.
    let node = &mut cluster.nodes[survivor];
    if let Some(at) = node.args.iter().position(|a| a == "--cluster") {
        node.args.drain(at..at + 2);
    }
    node.restart();
    node.wait_http();
    cluster.wait_ready(survivor);
    let node = &cluster.nodes[survivor];
    for i in 0..40 {
        let a = get(node, &format!("kept/{i}"));
        assert_eq!(a.status, 200, "kept/{i}: {a:?}");
    }
    let a = put(node, "after/recover", b"v");
    assert!(a.status == 200 || a.status == 201, "{a:?}");
    let status = status(node).expect("status");
    assert_eq!(
        status["members"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(status["role"], "leader", "{status}");
}
