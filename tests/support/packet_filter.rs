//! Network faults between real processes made with the kernel's own packet filter (nftables) on
//! loopback: cut the Paxos datagrams from one node to another, isolate a node, drop a share of
//! them at random. Unlike the chaos proxy (`chaos_proxy.rs`), nothing sits between the nodes:
//! they talk to each other's real sockets and the kernel drops what a rule says.
//!
//! Each [`PacketFilter`] owns one table of its own (`inet consens_test_<pid>_<n>`), with one
//! chain on the output hook whose rules match only UDP between 127.0.0.1 ports the test names,
//! so nothing else on the machine is touched. [`PacketFilter::heal`] flushes the chain; drop
//! deletes the table on every path.
//!
//! Needs root and `nft`; [`PacketFilter::new`] says why not where either is missing, and callers
//! skip.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The chain the rules go in.
const CHAIN: &str = "peers_out";
/// The named counter every drop rule counts into.
const DROPPED: &str = "dropped";

/// A table of drop rules for UDP datagrams between loopback ports.
pub struct PacketFilter {
    table: String,
}

impl PacketFilter {
    /// Creates an empty table and chain, or says why this machine cannot.
    pub fn new() -> Result<PacketFilter, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".to_string());
        }
        let table = format!(
            "consens_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let filter = PacketFilter { table };
        let setup = format!(
            "add table inet {t}\n\
             add counter inet {t} {DROPPED}\n\
             add chain inet {t} {CHAIN} {{ type filter hook output priority 0; policy accept; }}\n",
            t = filter.table
        );
        nft_script(&setup)?;
        Ok(filter)
    }

    /// Drops every datagram sent from UDP port `from` to UDP port `to` on 127.0.0.1.
    pub fn cut(&self, from: u16, to: u16) -> Result<(), String> {
        self.add_rule(&format!("udp sport {from} udp dport {to}"))
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&self, a: u16, b: u16) -> Result<(), String> {
        self.cut(a, b)?;
        self.cut(b, a)
    }

    /// Cuts both directions between every port of `left` and every port of `right`.
    pub fn split(&self, left: &[u16], right: &[u16]) -> Result<(), String> {
        for &a in left {
            for &b in right {
                self.cut_both(a, b)?;
            }
        }
        Ok(())
    }

    /// Drops `percent` % of the datagrams among `ports`, each independently at random.
    pub fn lose(&self, ports: &[u16], percent: u32) -> Result<(), String> {
        let set = port_set(ports);
        self.add_rule(&format!(
            "udp sport {set} udp dport {set} numgen random mod 100 < {percent}"
        ))
    }

    /// Removes every rule: the network is whole again.
    pub fn heal(&self) -> Result<(), String> {
        nft_script(&format!("flush chain inet {} {CHAIN}\n", self.table))
    }

    /// Datagrams dropped by the rules so far (rules flushed by `heal` included).
    pub fn dropped(&self) -> Result<u64, String> {
        let out = nft(&["-j", "list", "counter", "inet", &self.table, DROPPED])?;
        let json: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("nft -j output: {e}"))?;
        json["nftables"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find_map(|item| item["counter"]["packets"].as_u64())
            })
            .ok_or_else(|| format!("no packet count in nft's answer: {out}"))
    }

    fn add_rule(&self, matches: &str) -> Result<(), String> {
        nft_script(&format!(
            "add rule inet {} {CHAIN} ip saddr 127.0.0.1 ip daddr 127.0.0.1 {matches} counter name {DROPPED} drop\n",
            self.table
        ))
    }
}

impl Drop for PacketFilter {
    fn drop(&mut self) {
        if let Err(e) = nft(&["delete", "table", "inet", &self.table]) {
            eprintln!("packet filter: could not delete table {}: {e}", self.table);
        }
    }
}

/// `{ a, b, c }` in nft's syntax.
fn port_set(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

/// Runs `nft` with `args`; returns its standard output.
fn nft(args: &[&str]) -> Result<String, String> {
    let out = Command::new("nft")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a script of nft commands atomically (`nft -f -`).
fn nft_script(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("nft has no stdin")?
        .write_all(script.as_bytes())
        .map_err(|e| format!("writing to nft: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft -f: {} (script: {script:?})",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
