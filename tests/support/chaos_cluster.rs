//! A cluster of real `consens serve` processes whose Paxos traffic goes through a `ChaosProxy`,
//! with the process faults a nemesis needs: kill -9, restart, SIGSTOP and SIGCONT. Every process
//! is guarded: dropping the cluster resumes paused nodes and kills them all.

#![allow(dead_code)]

use super::chaos_proxy::ChaosProxy;
use super::cluster::{free_base_port, Cluster, Node};

/// N nodes on 127.0.0.1 behind a chaos proxy.
pub struct ProxiedCluster {
    /// Declared first so that it is dropped first: the nodes die before the proxy goes.
    pub cluster: Cluster,
    pub proxy: ChaosProxy,
    /// Which nodes are stopped with SIGSTOP right now.
    paused: Vec<bool>,
}

impl ProxiedCluster {
    /// Starts `n` nodes; node i binds its peer socket at its base port and advertises the proxy's
    /// socket i. `extra_args` go to every node.
    pub fn start(n: usize, seed: u64, extra_args: &[&str]) -> ProxiedCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..n).map(|_| free_base_port()).collect();
        let proxy_ports: Vec<u16> = (0..n).map(|_| free_base_port()).collect();
        let real = ports
            .iter()
            .map(|&p| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let proxy = ChaosProxy::start(real, &proxy_ports, seed);
        let nodes = (0..n)
            .map(|i| {
                let others: Vec<String> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| proxy.advertised(j).to_string())
                    .collect();
                let data_dir = dir.path().join(ports[i].to_string());
                let mut args = vec![
                    "--port".to_string(),
                    ports[i].to_string(),
                    "--peer-port".to_string(),
                    ports[i].to_string(),
                    "--advertise".to_string(),
                    proxy.advertised(i).to_string(),
                    "--cluster".to_string(),
                    others.join(","),
                    "--data-dir".to_string(),
                    data_dir.display().to_string(),
                ];
                args.extend(extra_args.iter().map(|s| s.to_string()));
                Node::start(ports[i], &data_dir, args, Vec::new())
            })
            .collect();
        let cluster = Cluster { nodes, dir };
        for node in &cluster.nodes {
            node.wait_http();
        }
        ProxiedCluster {
            cluster,
            proxy,
            paused: vec![false; n],
        }
    }

    pub fn len(&self) -> usize {
        self.cluster.nodes.len()
    }

    pub fn http_ports(&self) -> Vec<u16> {
        self.cluster.nodes.iter().map(|n| n.port).collect()
    }

    pub fn kill9(&mut self, i: usize) {
        self.resume(i);
        self.cluster.nodes[i].kill9();
    }

    /// Restarts node i if it is not running.
    pub fn ensure_running(&mut self, i: usize) {
        self.resume(i);
        if !self.cluster.nodes[i].is_running() {
            self.cluster.nodes[i].restart();
        }
    }

    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.cluster.nodes[i].pid() {
            signal(pid, libc::SIGSTOP);
            self.paused[i] = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        if self.paused[i] {
            if let Some(pid) = self.cluster.nodes[i].pid() {
                signal(pid, libc::SIGCONT);
            }
            self.paused[i] = false;
        }
    }

    /// The node that says it leads, if any answers within a short time (paused nodes are skipped).
    pub fn leader(&self) -> Option<usize> {
        (0..self.len()).find(|&i| {
            !self.paused[i]
                && self.cluster.nodes[i].is_running()
                && super::chaos_client::role(self.cluster.nodes[i].port).as_deref()
                    == Some("leader")
        })
    }
}

impl Drop for ProxiedCluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.resume(i);
        }
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a child process this test spawned and still owns; no memory is touched.
    unsafe {
        libc::kill(pid, sig);
    }
}
