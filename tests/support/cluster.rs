//! Real `consens` processes on 127.0.0.1 for integration tests: free ports, temp data dirs, logs
//! kept for failure messages, and a guard that kills every process on every path (Drop).

#![allow(dead_code)]

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for a node to start answering HTTP.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-HTTP-request timeout of the test client (longer than the node's own request timeout).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Test ports come from below Linux's ephemeral range (32768–60999), so that a restarted node
/// never finds its port taken by some client connection's local end.
const TEST_PORT_MIN: u16 = 12_000;
const TEST_PORT_MAX: u16 = 32_000;

/// Finds a base port P with TCP P, UDP P and TCP P+1 free on 127.0.0.1.
pub fn free_base_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(TEST_PORT_MAX - TEST_PORT_MIN) / 2;
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..2000 {
        let k = (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(7))) % span;
        let port = TEST_PORT_MIN + 2 * u16::try_from(k).expect("span fits u16");
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        let line = TcpListener::bind(("127.0.0.1", port + 1));
        if tcp.is_ok() && udp.is_ok() && line.is_ok() {
            return port;
        }
    }
    panic!("no free port triple found on 127.0.0.1");
}

/// One `consens serve` process.
pub struct Node {
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    /// Starts `consens serve` with `args` (plus `envs`), logging to a file beside the data dir.
    pub fn start(
        port: u16,
        data_dir: &Path,
        args: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> Node {
        Node::start_logging_to(port, data_dir, &data_dir.with_extension("log"), args, envs)
    }

    /// Like [`Node::start`], with the log at `log_path`.
    pub fn start_logging_to(
        port: u16,
        data_dir: &Path,
        log_path: &Path,
        args: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> Node {
        let mut node = Node {
            port,
            data_dir: data_dir.to_path_buf(),
            log_path: log_path.to_path_buf(),
            args,
            envs,
            child: None,
            starts: 0,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "node {} is already running",
            self.port
        );
        self.starts += 1;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        let log_err = log.try_clone().expect("clone log handle");
        let mut command = Command::new(env!("CARGO_BIN_EXE_consens"));
        command
            .arg("serve")
            .args(&self.args)
            .env("RUST_LOG", "consens=info")
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        self.child = Some(command.spawn().expect("spawn consens"));
    }

    /// Starts the process again with the same arguments and data dir.
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn line_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port + 1))
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (e.g. libc::SIGTERM) and waits up to `timeout` for the exit status.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        // SAFETY: kill(2) with a pid we spawned and still own; no memory is touched.
        unsafe {
            libc::kill(pid, signal);
        }
        self.wait_exit(timeout)
    }

    /// Waits until the process exits by itself (for starts that must be refused).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the node answers HTTP at all (any status).
    pub fn wait_http(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("node {} did not start; log:\n{}", self.port, self.log());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// N nodes on 127.0.0.1 with temp data dirs, started with `--port` and `--cluster`.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// Holds the data dirs and logs; removed when the cluster is dropped (after the nodes).
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(n: usize, extra_args: &[&str]) -> Cluster {
        Cluster::start_placed(n, extra_args, |dir, port| {
            (dir.join(port.to_string()), dir.join(format!("{port}.log")))
        })
    }

    /// Like [`Cluster::start`], with each node's data dir and log where `place(temp dir, port)`
    /// says (for data dirs on filesystems of their own).
    pub fn start_placed(
        n: usize,
        extra_args: &[&str],
        mut place: impl FnMut(&Path, u16) -> (PathBuf, PathBuf),
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..n).map(|_| free_base_port()).collect();
        let nodes = ports
            .iter()
            .map(|&port| {
                let others: Vec<String> = ports
                    .iter()
                    .filter(|&&p| p != port)
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect();
                let mut args = vec!["--port".to_string(), port.to_string()];
                if !others.is_empty() {
                    args.push("--cluster".to_string());
                    args.push(others.join(","));
                }
                let (data_dir, log_path) = place(dir.path(), port);
                args.push("--data-dir".to_string());
                args.push(data_dir.display().to_string());
                args.extend(extra_args.iter().map(|s| s.to_string()));
                Node::start_logging_to(port, &data_dir, &log_path, args, Vec::new())
            })
            .collect();
        let cluster = Cluster { nodes, dir };
        for node in &cluster.nodes {
            node.wait_http();
        }
        cluster
    }

    /// Waits until a write through node `via` succeeds (a leader exists and a quorum answers).
    pub fn wait_ready(&self, via: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let r = put(&self.nodes[via], "ready-probe", b"x");
            if r.status == 200 || r.status == 201 {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "cluster not ready via node {}: last answer {} {}; logs:\n{}",
                    via,
                    r.status,
                    r.body_text(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("==== node {} ====\n{}", n.port, tail(&n.log(), 60)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Index of the node that reports itself leader, waiting a little for the status pages
    /// (refreshed every few ticks) to show one.
    pub fn leader(&self) -> Option<usize> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(i) = self.leader_now() {
                return Some(i);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Index of the node that reports itself leader right now, if any.
    pub fn leader_now(&self) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.is_running()
                && status(n)
                    .and_then(|s| {
                        s.get("role")
                            .and_then(|r| r.as_str())
                            .map(|r| r == "leader")
                    })
                    .unwrap_or(false)
        })
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An HTTP answer, or status 0 with the transport error in the body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build()
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> Answer {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => {
            return Answer {
                status: 0,
                etag: None,
                body: t.to_string().into_bytes(),
            }
        }
    };
    let status = response.status();
    let etag = response.header("etag").map(|s| s.to_string());
    let mut body = Vec::new();
    let _ = std::io::Read::read_to_end(&mut response.into_reader(), &mut body);
    Answer { status, etag, body }
}

pub fn request(
    method: &str,
    node: &Node,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Answer {
    let mut req = agent().request(method, &format!("{}{}", node.http(), path));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    answer(match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    })
}

/// Runs the `consens` binary with `args` (a client subcommand, `recover`, ...) and returns its
/// exit code, stdout and stderr.
pub fn consens(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_consens"))
        .args(args)
        .output()
        .expect("run consens");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn put(node: &Node, key: &str, value: &[u8]) -> Answer {
    request("PUT", node, &format!("/{key}"), &[], Some(value))
}

pub fn get(node: &Node, key: &str) -> Answer {
    request("GET", node, &format!("/{key}"), &[], None)
}

pub fn get_stale(node: &Node, key: &str) -> Answer {
    request("GET", node, &format!("/{key}?stale=true"), &[], None)
}

pub fn delete(node: &Node, key: &str) -> Answer {
    request("DELETE", node, &format!("/{key}"), &[], None)
}

pub fn status(node: &Node) -> Option<serde_json::Value> {
    let a = request("GET", node, "/_status", &[], None);
    if a.status != 200 {
        return None;
    }
    serde_json::from_slice(&a.body).ok()
}

/// Waits (up to `timeout`) until every node reports the same applied slot and state digest on
/// `/_status`, and returns that slot; otherwise describes what each node reported. After a run's
/// faults end, this is the convergence check: replicas that applied the same slots must hold the
/// same state.
pub fn wait_converged(nodes: &[Node], timeout: Duration) -> Result<u64, String> {
    let mut last = Vec::new();
    let converged = wait_until(timeout, || {
        last = nodes
            .iter()
            .map(|node| {
                status(node)
                    .and_then(|s| Some((s["applied"].as_u64()?, s["digest"].as_str()?.to_string())))
            })
            .collect();
        last.iter().all(|s| s.is_some() && *s == last[0])
    });
    match (converged, last.first()) {
        (true, Some(Some((applied, _)))) => Ok(*applied),
        _ => Err(format!(
            "nodes did not converge within {timeout:?}: (applied, digest) per node: {last:?}"
        )),
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Node {
    /// The running process's pid, for signalling from threads that only borrow the node.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }
}

/// Writes fresh keys (`{prefix}-{i}`, each once) through node port `port` until `stop`;
/// acknowledged ones go to `acked` with their values. Each write gives up after `timeout`.
pub fn write_fresh_keys(
    port: u16,
    prefix: &str,
    timeout: Duration,
    stop: &std::sync::atomic::AtomicBool,
    acked: &std::sync::Mutex<std::collections::BTreeMap<String, String>>,
) {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_millis(300))
        .timeout(timeout)
        .build();
    let mut i = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 100_000 {
        let key = format!("{prefix}-{i}");
        let value = format!("value-of-{key}");
        if let Ok(r) = agent
            .put(&format!("http://127.0.0.1:{port}/{key}"))
            .send_string(&value)
        {
            if r.status() == 200 || r.status() == 201 {
                acked.lock().expect("acked").insert(key, value);
            }
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
        i += 1;
    }
}

/// Reads every acknowledged key back (linearizably, round-robin over `nodes`) and describes each
/// one that does not hold exactly its value.
pub fn lost_writes(
    nodes: &[Node],
    acked: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut lost = Vec::new();
    for (n, (key, value)) in acked.iter().enumerate() {
        let a = get(&nodes[n % nodes.len()], key);
        if a.status != 200 || a.body != value.as_bytes() {
            lost.push(format!("{key}: {} {}", a.status, a.body_text()));
        }
    }
    lost
}
