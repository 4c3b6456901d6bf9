//! The client library, the client subcommands and `consens bench` against real `consens serve`
//! processes on 127.0.0.1 (tests/support/cluster.rs), plus a fake node for the one case a real
//! node cannot be made to produce on cue: a write received and never answered.
//!
//! Every test bounds its own time ([`TEST_TIMEOUT`]) and its nodes die with the test's guards.
//!
//! Teeth (each break tried on purpose, each caught by the named test):
//! - retrying a write after the connection broke post-send (`&& false` on the `OnlyIfNotSent`
//!   check in `Client::call`): `a_write_sent_but_unanswered_is_outcome_unknown_and_a_read_fails_over`
//!   failed with "expected OutcomeUnknown, got Ok(2)";
//! - replies matched last-in-first-out instead of FIFO in the connection's reader:
//!   `pipelining_many_requests_over_one_client` failed with "reply matched to the wrong request".

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use consens::client::{CasOutcome, Client, ClientError};
use support::cluster::{consens, wait_until, Cluster};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The longest any test here may run once its cluster is up.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `test` on a fresh multi-threaded runtime, failing if it takes longer than
/// [`TEST_TIMEOUT`].
fn bounded<F: Future<Output = ()>>(test: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, test)
            .await
            .expect("test exceeded its time bound");
    });
}

fn line_addrs(cluster: &Cluster) -> Vec<String> {
    cluster
        .nodes
        .iter()
        .map(|n| n.line_addr().to_string())
        .collect()
}

#[test]
fn put_get_delete_cas_status_against_three_nodes() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(0);
    let nodes = line_addrs(&cluster);
    bounded(async {
        let client = Client::connect(nodes.clone()).await.expect("connect");
        assert_eq!(
            client.current_node().await.as_deref(),
            Some(nodes[0].as_str())
        );

        let r1 = client.put("k", "hello world").await.expect("put");
        assert_eq!(
            client.get("k").await.expect("get").as_deref(),
            Some(&b"hello world"[..])
        );
        assert_eq!(client.get("absent").await.expect("get"), None);

        let r2 = match client.compare_and_swap("k", r1, "v2").await.expect("cas") {
            CasOutcome::Swapped { revision } => revision,
            other => panic!("expected a swap, got {other:?}"),
        };
        assert!(r2 > r1);
        assert_eq!(
            client.compare_and_swap("k", r1, "late").await.expect("cas"),
            CasOutcome::Conflict { current: r2 }
        );
        // (A conflicting compare-and-swap is decided too, so it takes a slot: not r2 + 1.)
        match client.compare_and_swap("new", 0, "x").await.expect("cas") {
            CasOutcome::Swapped { revision } => assert!(revision > r2),
            other => panic!("expected a swap, got {other:?}"),
        }
        assert!(matches!(
            client.compare_and_swap("new", 0, "again").await,
            Ok(CasOutcome::Conflict { .. })
        ));

        assert!(client.delete("k").await.expect("delete"));
        assert!(!client.delete("k").await.expect("delete"));
        assert_eq!(client.get("k").await.expect("get"), None);

        // Every node serves the same data: read through another node.
        let other = Client::connect([nodes[2].clone()]).await.expect("connect");
        assert_eq!(
            other.get("new").await.expect("get").as_deref(),
            Some(&b"x"[..])
        );

        // The node republishes its status every few ticks: wait for it to name the leader.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            let status = client.status().await.expect("status");
            if (status.leader.is_some() && status.healthy) || Instant::now() > deadline {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status.members, 3);
        assert!(status.healthy, "{status:?}");
        assert!(status.leader.is_some(), "{status:?}");
        client.ping().await.expect("ping");

        // Refused before sending, with clear errors.
        for (key, value) in [("k", "a\nb"), ("k", "a\0b"), ("a b", "v"), ("_r", "v")] {
            match client.put(key, value).await {
                Err(ClientError::InvalidRequest(_)) => {}
                other => panic!("{key:?}={value:?}: expected InvalidRequest, got {other:?}"),
            }
        }
    });
}

#[test]
fn pipelining_many_requests_over_one_client() {
    const REQUESTS: usize = 2000;
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(0);
    let nodes = line_addrs(&cluster);
    bounded(async {
        let client = Client::connect(nodes).await.expect("connect");
        let started = Instant::now();
        let puts: Vec<_> = (0..REQUESTS)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { client.put(format!("p{i}"), format!("v{i}")).await })
            })
            .collect();
        let mut revisions = Vec::with_capacity(REQUESTS);
        for put in puts {
            revisions.push(put.await.expect("task").expect("put"));
        }
        revisions.sort_unstable();
        revisions.dedup();
        assert_eq!(revisions.len(), REQUESTS, "every put got its own revision");

        let gets: Vec<_> = (0..REQUESTS)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { (i, client.get(format!("p{i}")).await) })
            })
            .collect();
        for get in gets {
            let (i, value) = get.await.expect("task");
            assert_eq!(
                value.expect("get").as_deref(),
                Some(format!("v{i}").as_bytes()),
                "reply matched to the wrong request"
            );
        }
        eprintln!(
            "{} pipelined requests over one connection in {:?}",
            2 * REQUESTS,
            started.elapsed()
        );
    });
}

#[test]
fn fails_over_when_the_node_in_use_is_killed() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(0);
    let nodes = line_addrs(&cluster);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = runtime
        .block_on(Client::connect(nodes.clone()))
        .expect("connect");
    runtime
        .block_on(client.put("before", "1"))
        .expect("put before the kill");
    assert_eq!(
        runtime.block_on(client.current_node()).as_deref(),
        Some(nodes[0].as_str())
    );

    cluster.nodes[0].kill9();

    runtime.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            // A read is retried on another node by itself (a new leader may take a moment).
            let deadline = Instant::now() + Duration::from_secs(30);
            let value = loop {
                match client.get("before").await {
                    Ok(value) => break value,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("get while failing over: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("no node served the read: {e}"),
                }
            };
            assert_eq!(value.as_deref(), Some(&b"1"[..]));
            let now = client.current_node().await;
            assert!(
                now.as_deref() != Some(nodes[0].as_str()),
                "still on the killed node: {now:?}"
            );
            // Writes work again through the surviving majority.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match client.put("after", "2").await {
                    Ok(_) => break,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("put while failing over: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("writes did not resume: {e}\n{}", cluster.logs()),
                }
            }
            assert_eq!(
                client.get("after").await.expect("get").as_deref(),
                Some(&b"2"[..])
            );
        })
        .await
        .expect("test exceeded its time bound");
    });
}

#[test]
fn no_quorum_when_a_majority_is_down() {
    let mut cluster = Cluster::start(3, &["--request-timeout-ms", "1000"]);
    cluster.wait_ready(0);
    let survivor = cluster.nodes[0].line_addr().to_string();
    cluster.nodes[1].kill9();
    cluster.nodes[2].kill9();
    // The node stops proposing once it has not heard from a quorum for a moment.
    assert!(
        wait_until(Duration::from_secs(10), || {
            support::cluster::status(&cluster.nodes[0]).is_some_and(|s| {
                s.get("members")
                    .and_then(|m| m.as_array())
                    .is_some_and(|m| {
                        m.iter()
                            .filter(|m| m["is_self"] == false)
                            .filter(|m| m["last_heard_ms_ago"].as_u64().is_some_and(|ms| ms < 1000))
                            .count()
                            == 0
                    })
            })
        }),
        "the survivor kept hearing from dead peers"
    );
    bounded(async {
        let client = Client::builder()
            .nodes([survivor.clone()])
            .request_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect");
        let started = Instant::now();
        match client.put("k", "v").await {
            Err(ClientError::NoQuorum { node }) => assert_eq!(node, survivor),
            other => panic!("expected NoQuorum, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "took {:?}",
            started.elapsed()
        );
        assert!(!client.status().await.expect("status").healthy);
    });
}

/// A fake node: answers `PING` with `PONG`, then drops the connection on the first other
/// request without answering it, as a node killed right after receiving a request would.
async fn fake_node_that_dies_after_receiving() -> (String, tokio::task::JoinHandle<Vec<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let task = tokio::spawn(async move {
        let mut received = Vec::new();
        // Serve two connections at most: the test makes no more.
        for _ in 0..2 {
            let Ok(Ok((socket, _))) =
                tokio::time::timeout(Duration::from_secs(10), listener.accept()).await
            else {
                break;
            };
            let (reader, mut writer) = socket.into_split();
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "PING" {
                    let _ = writer.write_all(b"PONG\n").await;
                } else {
                    received.push(line);
                    break;
                }
            }
        }
        received
    });
    (addr, task)
}

#[test]
fn a_write_sent_but_unanswered_is_outcome_unknown_and_a_read_fails_over() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(0);
    let real = cluster.nodes[0].line_addr().to_string();
    bounded(async {
        let (fake, received) = fake_node_that_dies_after_receiving().await;
        let client = Client::connect([fake.clone(), real.clone()])
            .await
            .expect("connect");
        assert_eq!(client.current_node().await.as_deref(), Some(fake.as_str()));
        // The write reached the fake node, which died: it must not be sent to the real node.
        match client.put("w", "v").await {
            Err(ClientError::OutcomeUnknown { node, .. }) => assert_eq!(node, fake),
            other => panic!("expected OutcomeUnknown, got {other:?}"),
        }
        let real_client = Client::connect([real.clone()]).await.expect("connect");
        assert_eq!(
            real_client.get("w").await.expect("get"),
            None,
            "the unanswered write was retried on another node"
        );
        // The client moved on: the next request goes to the real node.
        client.put("w2", "v").await.expect("put after failover");
        assert_eq!(client.current_node().await.as_deref(), Some(real.as_str()));

        // A read that reached a dying node is retried elsewhere.
        let (fake2, received2) = fake_node_that_dies_after_receiving().await;
        let reader = Client::connect([fake2, real.clone()])
            .await
            .expect("connect");
        assert_eq!(
            reader.get("w2").await.expect("read fails over").as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(received.await.expect("fake"), vec!["PUT w v".to_string()]);
        assert_eq!(received2.await.expect("fake"), vec!["GET w2".to_string()]);
    });
}

#[test]
fn cli_subcommands_and_bench_against_one_node() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(0);
    let node = cluster.nodes[0].line_addr().to_string();
    let n = ["--node", node.as_str()];
    let with = |args: &[&str]| {
        let all: Vec<&str> = args.iter().chain(n.iter()).copied().collect();
        consens(&all)
    };

    let (code, out, err) = with(&["put", "cli/k", "hello there"]);
    assert_eq!(code, 0, "{err}");
    let revision: u64 = out.trim().parse().expect("put prints the revision");
    assert_eq!(
        with(&["get", "cli/k"]),
        (0, "hello there\n".into(), String::new())
    );
    let (code, out, _) = with(&["cas", "cli/k", &revision.to_string(), "v2"]);
    assert_eq!(code, 0);
    let next: u64 = out.trim().parse().expect("cas prints the revision");
    assert!(next > revision);
    let (code, out, err) = with(&["cas", "cli/k", &revision.to_string(), "v3"]);
    assert_eq!((code, out.trim()), (1, next.to_string().as_str()), "{err}");
    assert!(err.contains("conflict"), "{err}");
    let (code, out, _) = with(&["status"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).expect("status is JSON");
    assert_eq!(status["role"], "leader");
    assert_eq!(with(&["del", "cli/k"]).0, 0);
    let (code, _, err) = with(&["get", "cli/k"]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(with(&["del", "cli/k"]).0, 1);
    assert_eq!(with(&["put", "_reserved", "v"]).0, 2);
    // Nothing listens on port 1: every node failed, nothing applied.
    let (code, _, err) = consens(&["get", "k", "--node", "127.0.0.1:1"]);
    assert_eq!(code, 3, "{err}");

    // A short bench, machine-readable.
    let (code, out, err) = consens(&[
        "bench",
        "--nodes",
        &node,
        "--requests",
        "200",
        "--clients",
        "4",
        "--mix",
        "put=50,get=40,cas=10",
        "--keys",
        "50",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("bench JSON");
    for field in [
        "throughput_ops_per_sec",
        "elapsed_secs",
        "requests",
        "errors",
        "errors_total",
        "pipeline",
        "protocol",
    ] {
        assert!(report.get(field).is_some(), "missing {field}: {out}");
    }
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            report["latency_ms"][p].is_number(),
            "missing latency {p}: {out}"
        );
    }
    assert_eq!(report["requests"], 200, "{out}");
    assert_eq!(report["errors_total"], 0, "{out}");
    assert_eq!(report["protocol"], "line");

    // The same over HTTP.
    let http = format!("127.0.0.1:{}", cluster.nodes[0].port);
    let (code, out, err) = consens(&[
        "bench",
        "--protocol",
        "http",
        "--nodes",
        &http,
        "--requests",
        "100",
        "--clients",
        "2",
        "--mix",
        "put=50,get=50",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("bench JSON");
    assert_eq!(report["errors_total"], 0, "{out}");
    assert_eq!(report["protocol"], "http");
}

#[test]
fn refused_connections_and_idle_closes_are_handled() {
    let cluster = Cluster::start(1, &["--connections-max", "2", "--idle-timeout-secs", "1"]);
    cluster.wait_ready(0);
    let node = cluster.nodes[0].line_addr().to_string();
    bounded(async {
        let a = Client::connect([node.clone()])
            .await
            .expect("first connection");
        let b = Client::connect([node.clone()])
            .await
            .expect("second connection");
        // Over the node's cap: the node answers "ERR too_many_connections ..." instead of PONG.
        match Client::connect([node.clone()]).await {
            Err(ClientError::AllNodesFailed { last, .. }) => {
                assert!(last.contains("too_many_connections"), "{last}")
            }
            other => panic!("expected AllNodesFailed, got {other:?}"),
        }
        // Both connections idle past the node's idle timeout; the node closes them. The next
        // request notices, reconnects and succeeds: nothing had been sent, so even a write is
        // safe to send on the new connection.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        a.put("after-idle", "v")
            .await
            .expect("put after idle close");
        assert_eq!(
            b.get("after-idle")
                .await
                .expect("get after idle close")
                .as_deref(),
            Some(&b"v"[..])
        );
    });
}

/// `GET /_members` as JSON from `node`.
fn members_json(node: &support::cluster::Node) -> serde_json::Value {
    let answer = support::cluster::request("GET", node, "/_members", &[], None);
    assert_eq!(answer.status, 200, "{}", answer.body_text());
    serde_json::from_slice(&answer.body).expect("/_members is JSON")
}

#[test]
fn member_list_on_every_front_end_shows_how_far_each_member_caught_up() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(0);
    for i in 0..20 {
        let a = support::cluster::put(&cluster.nodes[i % 3], &format!("m/{i}"), b"v");
        assert!(a.status == 200 || a.status == 201, "{}", a.body_text());
    }
    let role = |i: usize| {
        support::cluster::status(&cluster.nodes[i]).map(|s| s["role"].as_str().map(str::to_owned))
    };
    let leader = (0..3)
        .find(|&i| role(i) == Some(Some("leader".into())))
        .expect("one node leads");
    // The status is republished every few ticks: wait for it to show the writes.
    let leader_decided =
        || support::cluster::status(&cluster.nodes[leader]).and_then(|s| s["decided"].as_u64());
    assert!(wait_until(Duration::from_secs(10), || leader_decided()
        .is_some_and(|d| d >= 20)));
    let leader_status = support::cluster::status(&cluster.nodes[leader]).expect("status");
    let leader_id = leader_status["node_id"].as_u64().expect("id");
    let decided = leader_status["decided"].as_u64().expect("decided");

    // The leader learns every member's progress from the heartbeat answers.
    let caught_up = wait_until(Duration::from_secs(10), || {
        members_json(&cluster.nodes[leader])["members"]
            .as_array()
            .is_some_and(|ms| {
                ms.iter()
                    .all(|m| m["caught_up_slot"].as_u64().is_some_and(|s| s >= decided))
            })
    });
    let on_leader = members_json(&cluster.nodes[leader]);
    assert!(caught_up, "{on_leader}");
    assert_eq!(on_leader["leader"].as_u64(), Some(leader_id));
    assert_eq!(on_leader["self"].as_u64(), Some(leader_id));
    let members = on_leader["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    for m in members {
        assert_eq!(m["role"], "voter", "{m}");
        assert!(m["last_contact_ms_ago"].as_u64().is_some(), "{m}");
        assert!(m["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")));
    }

    // A follower knows its own progress and the leader's, not the other follower's.
    let follower = (leader + 1) % 3;
    let on_follower = members_json(&cluster.nodes[follower]);
    let follower_id = on_follower["self"].as_u64().expect("self");
    let known: Vec<(u64, bool)> = on_follower["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let id = m["id"].as_u64().expect("id");
            (id, m["caught_up_slot"].as_u64().is_some())
        })
        .collect();
    for (id, is_known) in known {
        assert_eq!(
            is_known,
            id == follower_id || id == leader_id,
            "member {id}: {on_follower}"
        );
    }

    // The line protocol and the Rust client carry the same list.
    let line = cluster.nodes[follower].line_addr().to_string();
    bounded(async {
        let client = Client::connect([line.clone()]).await.expect("connect");
        let list = client.members().await.expect("MEMBERS");
        assert_eq!(list.self_id as u64, follower_id);
        assert_eq!(list.leader.map(u64::from), Some(leader_id));
        assert_eq!(list.members.len(), 3);
        assert!(list.members.iter().all(|m| m.role == "voter"));
    });

    // The CLI prints a table with the leader marked, or JSON.
    let leader_line = cluster.nodes[leader].line_addr().to_string();
    let (code, out, err) = consens(&["member", "list", "--node", &leader_line]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert!(rows[0].starts_with("ID"), "{out}");
    assert_eq!(
        rows.iter()
            .filter(|r| r.ends_with("leader, answered"))
            .count(),
        1,
        "{out}"
    );
    let (code, out, err) = consens(&["member", "list", "--json", "--node", &leader_line]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["members"].as_array().map(Vec::len), Some(3), "{out}");
}

/// The member id of node `i` and whether it leads, from its `/_status`.
fn id_and_role(cluster: &Cluster, i: usize) -> Option<(u64, String)> {
    let status = support::cluster::status(&cluster.nodes[i])?;
    Some((
        status["node_id"].as_u64()?,
        status["role"].as_str()?.to_owned(),
    ))
}

#[test]
fn leadership_moves_on_every_front_end_while_writes_keep_flowing() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(0);
    let ids: Vec<u64> = (0..3)
        .map(|i| id_and_role(&cluster, i).expect("status").0)
        .collect();
    let leads = |i: usize| id_and_role(&cluster, i).is_some_and(|(_, role)| role == "leader");
    let leader_index = || (0..3).find(|&i| leads(i));
    assert!(wait_until(Duration::from_secs(10), || leader_index().is_some()));

    // Writes through every node for the whole test; each acknowledged one must survive.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let nodes: Vec<(String, u16)> = cluster.nodes.iter().map(|n| (n.http(), n.port)).collect();
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build();
            let mut acknowledged = Vec::new();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 5_000 {
                let (base, _) = &nodes[i % nodes.len()];
                let key = format!("moving/{i}");
                if agent
                    .put(&format!("{base}/{key}"))
                    .send_bytes(b"v")
                    .is_ok_and(|r| r.status() == 200 || r.status() == 201)
                {
                    acknowledged.push(key);
                }
                i += 1;
            }
            acknowledged
        })
    };

    // HTTP, asked of a node that is neither the leader nor the target.
    let old = leader_index().expect("a leader");
    let target = (old + 1) % 3;
    let via = (old + 2) % 3;
    let body = format!("{{\"id\": {}}}", ids[target]);
    let a = support::cluster::request(
        "POST",
        &cluster.nodes[via],
        "/_leader",
        &[],
        Some(body.as_bytes()),
    );
    assert_eq!(a.status, 200, "{}", a.body_text());
    let json: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON");
    assert_eq!(json["leader"].as_u64(), Some(ids[target]));
    assert!(wait_until(Duration::from_secs(5), || leads(target)));
    let a = support::cluster::request("GET", &cluster.nodes[old], "/_leader", &[], None);
    let json: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let a = support::cluster::request("GET", &cluster.nodes[old], "/_leader", &[], None);
            serde_json::from_slice::<serde_json::Value>(&a.body)
                .is_ok_and(|j| j["leader"].as_u64() == Some(ids[target]))
        }),
        "{json}"
    );

    // The line protocol through the Rust client: back to the old leader.
    let line = cluster.nodes[via].line_addr().to_string();
    bounded(async {
        let client = Client::connect([line.clone()]).await.expect("connect");
        client
            .transfer_leadership(ids[old] as u16)
            .await
            .expect("LEADER TRANSFER");
    });
    assert!(wait_until(Duration::from_secs(5), || leads(old)));

    // The CLI, to the third member.
    let (code, out, err) = consens(&[
        "leader",
        "transfer",
        &ids[via].to_string(),
        "--node",
        &cluster.nodes[target].line_addr().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("member {} leads", ids[via]));
    assert!(wait_until(Duration::from_secs(5), || leads(via)));

    // Mistakes are refused with the cause, and move nothing.
    let a = support::cluster::request(
        "POST",
        &cluster.nodes[old],
        "/_leader",
        &[],
        Some(b"{\"id\": 99}"),
    );
    assert_eq!(a.status, 400);
    assert!(a.body_text().contains("not a voter"), "{}", a.body_text());
    let a = support::cluster::request("POST", &cluster.nodes[old], "/_leader", &[], Some(b"2"));
    assert_eq!(a.status, 400);
    assert!(a.body_text().contains("{\"id\": 2}"), "{}", a.body_text());
    let (code, _, err) = consens(&[
        "leader",
        "transfer",
        "99",
        "--node",
        &cluster.nodes[old].line_addr().to_string(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a voter"), "{err}");
    assert!(leads(via), "a refused transfer moves nothing");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = writer.join().expect("writer");
    assert!(
        !acknowledged.is_empty(),
        "writes flowed during the transfers"
    );
    for key in &acknowledged {
        let a = support::cluster::get(&cluster.nodes[old], key);
        assert_eq!(
            a.status,
            200,
            "acknowledged {key} is readable: {}",
            a.body_text()
        );
    }
}
