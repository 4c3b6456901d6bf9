//! Membership changes on real `consens serve` processes: nodes join a running cluster with
//! `--join` (the first member they name being down), are promoted by hand (CLI) and on their
//! own (`--auto-promote`), and the first members are removed over HTTP and the line protocol,
//! 3 → 5 → 3 voters, with writes before, during and after; then every remaining node is killed
//! with kill -9 and restarted, and every acknowledged write and the membership are still there.
//!
//! Timing bounds are generous (shared, noisy machines); the assertions are about behaviour.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;
use support::cluster::*;

/// Long enough for a learner to catch up and a change to be decided on a loaded machine.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts a new node that joins through the nodes at `through` (their PORT).
fn join_node(cluster: &Cluster, through: &[u16], extra: &[&str]) -> Node {
    let port = free_base_port();
    let data_dir = cluster.dir.path().join(port.to_string());
    let joined: Vec<String> = through.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec![
        "--port".to_string(),
        port.to_string(),
        "--data-dir".to_string(),
        data_dir.display().to_string(),
        "--join".to_string(),
        joined.join(","),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Node::start(port, &data_dir, args, Vec::new())
}

/// The members as `node` lists them: (id, role) pairs.
fn members(node: &Node) -> Vec<(u64, String)> {
    let answer = request("GET", node, "/_members", &[], None);
    let list: serde_json::Value = serde_json::from_str(&answer.body_text()).unwrap_or_default();
    list["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .map(|m| {
                    (
                        m["id"].as_u64().unwrap_or(u64::MAX),
                        m["role"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The member id of the node.
fn id_of(node: &Node) -> u64 {
    status(node)
        .and_then(|s| s["node_id"].as_u64())
        .expect("the node reports its id")
}

fn voters(node: &Node) -> Vec<u64> {
    members(node)
        .into_iter()
        .filter(|(_, role)| role == "voter")
        .map(|(id, _)| id)
        .collect()
}

/// Sends one line-protocol request to `node` and returns the reply line.
fn line(node: &Node, request: &str) -> String {
    let stream = std::net::TcpStream::connect(node.line_addr()).expect("connect line port");
    stream
        .set_read_timeout(Some(CHANGE_TIMEOUT))
        .expect("read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    (&stream)
        .write_all(format!("{request}\r\n").as_bytes())
        .expect("send");
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("reply");
    reply.trim_end().to_string()
}

fn put_ok(node: &Node, key: &str) {
    let answer = put(node, key, key.as_bytes());
    assert!(
        answer.status == 200 || answer.status == 201,
        "{key}: {answer:?}"
    );
}

#[test]
fn a_cluster_grows_from_3_to_5_voters_and_back_to_3_without_losing_a_write() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(0);
    let mut written = Vec::new();
    for i in 0..20 {
        let key = format!("before/{i}");
        put_ok(&cluster.nodes[i % 3], &key);
        written.push(key);
    }

    // Node 3 joins through the first member, which is down, and the second: it is added as a
    // learner with a new id and catches up.
    let first_port = cluster.nodes[0].port;
    cluster.nodes[0].kill9();
    let n3 = join_node(&cluster, &[first_port, cluster.nodes[1].port], &[]);
    n3.wait_http();
    cluster.nodes[0].restart();
    cluster.nodes[0].wait_http();
    assert!(
        wait_until(CHANGE_TIMEOUT, || members(&cluster.nodes[1])
            .contains(&(3, "learner".to_string()))),
        "member 3 is not a learner: {:?}\n{}",
        members(&cluster.nodes[1]),
        n3.log()
    );
    assert!(
        wait_until(CHANGE_TIMEOUT, || written
            .iter()
            .all(|k| get_stale(&n3, k).status == 200)),
        "the learner did not catch up:\n{}",
        n3.log()
    );

    // A promotion of an id that is no member is refused with the reason, over HTTP.
    let refused = request("POST", &cluster.nodes[1], "/_members/77/promote", &[], None);
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(refused.body_text().contains("not a member"), "{refused:?}");

    // Promoted by hand through the CLI, while writes keep flowing.
    let node_arg = cluster.nodes[2].line_addr().to_string();
    let (code, out, err) = consens(&["member", "promote", "3", "--node", &node_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is a voter"), "{out}");
    for i in 0..10 {
        let key = format!("during/{i}");
        put_ok(&n3, &key);
        written.push(key);
    }

    // Node 4 joins and promotes itself once caught up.
    let n4 = join_node(&cluster, &[n3.port], &["--auto-promote"]);
    n4.wait_http();
    assert!(
        wait_until(CHANGE_TIMEOUT, || voters(&cluster.nodes[1]).len() == 5),
        "not five voters: {:?}\n{}",
        members(&cluster.nodes[1]),
        n4.log()
    );
    for i in 0..10 {
        let key = format!("five/{i}");
        put_ok(&n4, &key);
        written.push(key);
    }

    // Back to three: the first members at nodes[0] and nodes[1] (their ids follow the sorted
    // addresses, not the order they were started in) removed, one over HTTP, one over the
    // line protocol.
    let gone = [id_of(&cluster.nodes[0]), id_of(&cluster.nodes[1])];
    let removed = request("DELETE", &n3, &format!("/_members/{}", gone[0]), &[], None);
    assert_eq!(removed.status, 200, "{removed:?}");
    let reply = line(&n4, &format!("MEMBER REMOVE {}", gone[1]));
    assert!(reply.starts_with("OK "), "{reply}");
    let mut staying = vec![id_of(&cluster.nodes[2]), 3, 4];
    staying.sort();
    assert!(
        wait_until(CHANGE_TIMEOUT, || voters(&n3) == staying),
        "voters {:?}",
        members(&n3)
    );
    // Stop the removed members once the others have caught up past their removal.
    let stays = [&cluster.nodes[2], &n3, &n4];
    put_ok(&n3, "after/marker");
    written.push("after/marker".to_string());
    let caught_up = wait_until(CHANGE_TIMEOUT, || {
        stays
            .iter()
            .all(|n| get_stale(n, "after/marker").status == 200)
    });
    if !caught_up {
        for n in stays {
            eprintln!(
                "node {}: marker {}, status {:?}\n{}",
                n.port,
                get_stale(n, "after/marker").status,
                status(n),
                n.log()
            );
        }
        panic!("the members that stay did not all catch up past the removals");
    }
    // A removed node that still runs says so, at once, instead of letting requests time out.
    assert!(
        wait_until(CHANGE_TIMEOUT, || status(&cluster.nodes[0])
            .is_some_and(|s| s["role"] == "removed")),
        "{:?}",
        status(&cluster.nodes[0])
    );
    let refused = put(&cluster.nodes[0], "to/removed", b"v");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body_text().contains("was removed"), "{refused:?}");
    cluster.nodes[0].kill9();
    cluster.nodes[1].kill9();
    for i in 0..10 {
        let key = format!("after/{i}");
        put_ok(&cluster.nodes[2], &key);
        written.push(key);
    }

    // kill -9 of every member left, and a restart (no --join needed: the data dir knows).
    let mut n3 = n3;
    let mut n4 = n4;
    cluster.nodes[2].kill9();
    n3.kill9();
    n4.kill9();
    cluster.nodes[2].restart();
    n3.restart();
    n4.restart();
    for node in [&cluster.nodes[2], &n3, &n4] {
        node.wait_http();
    }
    assert!(
        wait_until(CHANGE_TIMEOUT, || put(&n4, "restarted", b"v").status < 300),
        "no writes after the restart:\n{}",
        n4.log()
    );
    for key in &written {
        for node in [&cluster.nodes[2], &n3, &n4] {
            let answer = get(node, key);
            assert_eq!(answer.status, 200, "{key} on {}: {answer:?}", node.port);
        }
    }
    assert_eq!(voters(&n3), staying);
}

#[test]
fn every_node_of_a_cluster_is_replaced_one_at_a_time_and_a_kill_9_mid_change_loses_nothing() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(0);
    let mut written = Vec::new();
    let mut nodes: Vec<Node> = std::mem::take(&mut cluster.nodes);
    for round in 0..3 {
        for i in 0..5 {
            let key = format!("round{round}/{i}");
            put_ok(&nodes[i % nodes.len()], &key);
            written.push(key);
        }
        // A new machine joins through the members still there and promotes itself.
        let through: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let new = join_node(&cluster, &through, &["--auto-promote"]);
        new.wait_http();
        let new_id = id_of(&new);
        assert!(
            wait_until(CHANGE_TIMEOUT, || voters(&nodes[0]).contains(&new_id)),
            "member {new_id} is no voter: {:?}\n{}",
            members(&nodes[0]),
            new.log()
        );
        // The oldest machine is retired: removed through the new one, stopped once the others
        // have caught up past its removal.
        let old = nodes.remove(0);
        let old_id = id_of(&old);
        let removed = request("DELETE", &new, &format!("/_members/{old_id}"), &[], None);
        assert_eq!(removed.status, 200, "{removed:?}");
        nodes.push(new);
        let marker = format!("round{round}/marker");
        put_ok(&nodes[0], &marker);
        written.push(marker.clone());
        assert!(
            wait_until(CHANGE_TIMEOUT, || nodes.iter().all(|n| get_stale(
                n, &marker
            )
            .status
                == 200)),
            "round {round}: not every member caught up"
        );
        // Its removal is in force at every member that stays (each decided past it).
        assert!(
            wait_until(CHANGE_TIMEOUT, || nodes
                .iter()
                .all(|n| !voters(n).contains(&old_id))),
            "round {round}: member {old_id} is still a voter somewhere"
        );
        drop(old);
    }
    // None of the first members is left; the cluster serves every write ever acknowledged.
    for key in &written {
        assert_eq!(get(&nodes[0], key).status, 200, "{key}");
    }

    // A change in flight when every node is killed with kill -9: it is either decided or not,
    // and nothing acknowledged is lost.
    let node_arg = nodes[1].line_addr().to_string();
    let added =
        std::thread::spawn(move || consens(&["member", "add", "127.0.0.1:9", "--node", &node_arg]));
    std::thread::sleep(Duration::from_millis(20));
    for node in &mut nodes {
        node.kill9();
    }
    let _ = added.join();
    for node in &mut nodes {
        node.restart();
    }
    for node in &nodes {
        node.wait_http();
    }
    assert!(
        wait_until(CHANGE_TIMEOUT, || put(&nodes[2], "after/kill", b"v").status
            < 300),
        "no writes after the restart:\n{}",
        nodes[2].log()
    );
    for key in &written {
        assert_eq!(get(&nodes[2], key).status, 200, "{key}");
    }
    // The member that was being added, if its addition was decided, is a learner that never
    // answers: it can never be promoted, and the voters are the three replacements.
    let voting = voters(&nodes[0]);
    assert_eq!(voting.len(), 3, "{:?}", members(&nodes[0]));
    if let Some((id, _)) = members(&nodes[0]).into_iter().find(|(_, r)| r == "learner") {
        let refused = request(
            "POST",
            &nodes[0],
            &format!("/_members/{id}/promote"),
            &[],
            None,
        );
        assert_eq!(refused.status, 409, "{refused:?}");
    }
}
