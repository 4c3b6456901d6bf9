//! `consens serve`'s flags and the node configuration derived from them.
//!
//! The flags keep the original project's interface (`PORT=3000 CLUSTER=http://localhost:4000,…`)
//! and add what a real deployment needs. Deriving the configuration resolves every address once,
//! here: `localhost` may resolve to `::1` or `127.0.0.1`, so a name resolves to its IPv4 address
//! when it has one (on every node alike), and the address we advertise is the one we bind unless
//! `--advertise` says otherwise. The members are sorted so that every node numbers them the same
//! way: a node's id is its index in that list, and the cluster's identity is a hash of it.

use crate::net::auth::{ClusterKey, KeyError};
use crate::paxos::types::NodeId;
use crate::server::line::LineOptions;
use crate::wal::PlantedSyncBug;
use clap::Args;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// The HTTP port (and UDP peer port) when none is given, as in the original project.
pub const PORT_DEFAULT: u16 = 3000;
/// Where data goes when `--data-dir` is not given: `./consens-data/<port>`.
pub const DATA_DIR_ROOT_DEFAULT: &str = "consens-data";
/// How long a client request may wait for a quorum before it fails.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// A state-machine snapshot is taken (and the WAL compacted) every this many applied slots.
pub const SNAPSHOT_EVERY_SLOTS_DEFAULT: u64 = 100_000;
/// ... or every this many bytes appended to the WAL, whichever comes first.
pub const SNAPSHOT_EVERY_BYTES_DEFAULT: u64 = 256 << 20;
/// Decided slots kept in memory below the snapshot for peers that are a little behind.
pub const CATCH_UP_RETAIN_SLOTS_DEFAULT: u64 = 10_000;
/// Async worker threads of a node. One: the Paxos event loop is single-threaded anyway, and on
/// the benchmark machine (3 nodes on 2 cores) a second worker only adds cross-thread wake-ups,
/// 60–150 µs per write (docs/benchmarks.md). The WAL and snapshots have threads of their own.
pub const WORKER_THREADS_DEFAULT: u16 = 1;
/// More async worker threads than this are refused (a typo guard, not a tuning limit).
pub const WORKER_THREADS_MAX: i64 = 256;

/// Flags of `consens serve`. Every flag has an environment variable too.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTP on TCP PORT, Paxos peers on UDP PORT, the line protocol on TCP PORT+1.
    #[arg(long, env = "PORT", default_value_t = PORT_DEFAULT)]
    pub port: u16,
    /// The other members, comma-separated: `host:port` or `http://host:port` (their PORT).
    /// Empty: a one-node cluster.
    #[arg(long, env = "CLUSTER", value_delimiter = ',', num_args = 0..)]
    pub cluster: Vec<String>,
    /// Data directory (WAL, snapshots, identity). Default: ./consens-data/<PORT>.
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Join a running cluster through any of these members (`host:port`, their PORT; the
    /// first that answers adds this node as a learner). `JOIN=true` (or a bare `--join`), as
    /// in the original project, joins through the `--cluster` members. Only the first start
    /// joins; later starts find the identity in the data dir.
    #[arg(long, env = "JOIN", value_delimiter = ',', num_args = 0..,
          default_missing_value = "true")]
    pub join: Vec<String>,
    /// Once joined and caught up, promote this node to voter on its own (otherwise: `consens
    /// member promote <id>`).
    #[arg(long, env = "AUTO_PROMOTE", default_value_t = false)]
    pub auto_promote: bool,
    /// IP address to bind every listener and the peer socket to.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1")]
    pub listen: IpAddr,
    /// The `host:port` the other members know this node by (as it appears in their
    /// `--cluster`). Default: the listen address and PORT. Needed when listening on 0.0.0.0.
    #[arg(long, env = "ADVERTISE")]
    pub advertise: Option<String>,
    /// Override: HTTP port (default PORT).
    #[arg(long, env = "HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Override: line-protocol port (default PORT+1).
    #[arg(long, env = "LINE_PORT")]
    pub line_port: Option<u16>,
    /// Override: UDP peer port (default PORT). Members are named by their peer port.
    #[arg(long, env = "PEER_PORT")]
    pub peer_port: Option<u16>,
    /// How long a request may wait for a quorum before failing with 503 / ERR.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = REQUEST_TIMEOUT_MS_DEFAULT)]
    pub request_timeout_ms: u64,
    /// Take a snapshot and compact the WAL every this many applied slots.
    #[arg(long, env = "SNAPSHOT_EVERY_SLOTS", default_value_t = SNAPSHOT_EVERY_SLOTS_DEFAULT)]
    pub snapshot_every_slots: u64,
    /// Also take a snapshot once the WAL has grown by this many bytes since the last one.
    #[arg(long, env = "SNAPSHOT_EVERY_BYTES", default_value_t = SNAPSHOT_EVERY_BYTES_DEFAULT)]
    pub snapshot_every_bytes: u64,
    /// Decided slots kept in memory below the newest snapshot, so that a peer only a little
    /// behind catches up from the log instead of receiving the whole snapshot.
    #[arg(long, env = "CATCH_UP_RETAIN_SLOTS", default_value_t = CATCH_UP_RETAIN_SLOTS_DEFAULT)]
    pub catch_up_retain_slots: u64,
    /// Close idle line-protocol connections after this many seconds.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = crate::server::line::IDLE_TIMEOUT_SECS)]
    pub idle_timeout_secs: u64,
    /// At most this many line-protocol connections at once.
    #[arg(long, env = "CONNECTIONS_MAX", default_value_t = crate::server::line::CONNECTIONS_MAX)]
    pub connections_max: usize,
    /// Async worker threads (client connections, peer datagrams and the event loop share them).
    /// Raise it on a machine with cores to spare and many HTTP clients.
    #[arg(long, env = "WORKER_THREADS", default_value_t = WORKER_THREADS_DEFAULT,
          value_parser = clap::value_parser!(u16).range(1..=WORKER_THREADS_MAX))]
    pub worker_threads: u16,
    /// A file holding the cluster's shared secret (raw bytes, at least 32; the same file on
    /// every member). Peers then authenticate every datagram with HMAC-SHA-256 and drop the
    /// rest. Without it, anyone who reaches the UDP port can forge Paxos messages.
    #[arg(long, env = "CLUSTER_KEY_FILE")]
    pub cluster_key_file: Option<PathBuf>,
    /// Breaks the WAL's sync on purpose: only for the power-cut test's proof that it has teeth.
    #[arg(long, hide = true, value_enum)]
    pub planted_sync_bug: Option<PlantedSyncBug>,
}

/// Why the flags do not describe a node that can start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot resolve member address {given:?}: {reason}")]
    Resolve { given: String, reason: String },
    #[error("PORT {0} leaves no room for the line protocol on PORT+1; pass --line-port")]
    PortRange(u16),
    #[error("listening on {0} (any address): pass --advertise host:port so the others can name this node")]
    AdvertiseNeeded(IpAddr),
    #[error("the cluster has {0} members; at most {max} are supported", max = crate::paxos::VOTERS_MAX)]
    TooManyMembers(usize),
    #[error(transparent)]
    ClusterKey(#[from] KeyError),
    #[error(
        "JOIN=true joins through the --cluster members, but none is given; pass --join host:port"
    )]
    JoinWhom,
}

/// One member of the cluster: a stable id and the address its peers reach it at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// Everything `node::serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    /// Every member's id and peer address, by id; `node_id` is among them. From the flags (ids
    /// in the order of the sorted addresses) until `with_identity` puts the data dir's record in.
    pub members: Vec<Member>,
    pub node_id: NodeId,
    /// Tags the cluster's datagrams, WAL and snapshots (a hash of the member list a cluster is
    /// created with, then recorded); datagrams of another cluster are dropped.
    pub cluster_id: u64,
    pub peer_bind_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub line_addr: SocketAddr,
    /// This node's name in the member list, as text.
    pub advertise: String,
    pub request_timeout: Duration,
    pub snapshot_every_slots: u64,
    pub snapshot_every_bytes: u64,
    pub catch_up_retain_slots: u64,
    pub idle_timeout: Duration,
    pub connections_max: usize,
    pub worker_threads: usize,
    /// The shared secret that tags and verifies every peer datagram; `None`: unauthenticated.
    pub cluster_key: Option<ClusterKey>,
    /// A deliberately broken WAL sync (tests only).
    pub planted_sync_bug: Option<PlantedSyncBug>,
    /// `--cluster` named other members (a restart may leave it out).
    pub cluster_given: bool,
    /// Members to join through on a first start (their HTTP/peer `PORT`; empty: bootstrap).
    pub join: Vec<SocketAddr>,
    /// Promote this node to voter once it has joined and caught up.
    pub auto_promote: bool,
}

impl ServeConfig {
    pub fn from_args(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
        let peer_port = args.peer_port.unwrap_or(args.port);
        let http_port = args.http_port.unwrap_or(args.port);
        let line_port = match args.line_port {
            Some(p) => p,
            None => args
                .port
                .checked_add(1)
                .ok_or(ConfigError::PortRange(args.port))?,
        };
        let advertise = match &args.advertise {
            Some(a) => resolve(a, peer_port)?,
            None if args.listen.is_unspecified() => {
                return Err(ConfigError::AdvertiseNeeded(args.listen))
            }
            None => SocketAddr::new(args.listen, peer_port),
        };
        let join_words: Vec<&str> = args
            .join
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        let join_given: Vec<&str> = match join_words.as_slice() {
            [] | ["false"] => Vec::new(),
            ["true"] => args.cluster.iter().map(|s| s.trim()).collect(),
            list => list.to_vec(),
        };
        let mut join = Vec::new();
        for given in join_given.into_iter().filter(|s| !s.is_empty()) {
            let addr = resolve(given, PORT_DEFAULT)?;
            if addr != advertise && !join.contains(&addr) {
                join.push(addr);
            }
        }
        if join_words == ["true"] && join.is_empty() {
            return Err(ConfigError::JoinWhom);
        }
        let mut members = vec![advertise];
        for given in args
            .cluster
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            let addr = resolve(given, PORT_DEFAULT)?;
            if !members.contains(&addr) {
                members.push(addr);
            }
        }
        members.sort();
        if members.len() > crate::paxos::VOTERS_MAX {
            return Err(ConfigError::TooManyMembers(members.len()));
        }
        let bootstrap = crate::node::identity::Identity::bootstrap(&members, advertise);
        let cluster_key = match &args.cluster_key_file {
            Some(path) => Some(ClusterKey::load(path)?),
            None => None,
        };
        let data_dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DATA_DIR_ROOT_DEFAULT).join(args.port.to_string()));
        Ok(ServeConfig {
            data_dir,
            cluster_id: bootstrap.cluster_id,
            node_id: bootstrap.node_id,
            peer_bind_addr: SocketAddr::new(args.listen, peer_port),
            http_addr: SocketAddr::new(args.listen, http_port),
            line_addr: SocketAddr::new(args.listen, line_port),
            advertise: advertise.to_string(),
            members: bootstrap.members,
            request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
            snapshot_every_slots: args.snapshot_every_slots.max(1),
            snapshot_every_bytes: args.snapshot_every_bytes.max(1),
            catch_up_retain_slots: args.catch_up_retain_slots,
            idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
            connections_max: args.connections_max.max(1),
            worker_threads: usize::from(args.worker_threads),
            cluster_key,
            planted_sync_bug: args.planted_sync_bug,
            cluster_given: members.len() > 1 && join.is_empty(),
            join,
            auto_promote: args.auto_promote,
        })
    }

    /// This configuration with the cluster id, member ids and addresses of the identity recorded
    /// in the data dir, which win over what the flags imply (`node::identity`).
    pub fn with_identity(mut self, identity: &crate::node::identity::Identity) -> ServeConfig {
        self.cluster_id = identity.cluster_id;
        self.node_id = identity.node_id;
        self.members = if identity.joined() {
            identity.peers.clone()
        } else {
            identity.members.clone()
        };
        self
    }

    /// The members' peer addresses as the flags gave them, sorted.
    pub fn member_addrs_sorted(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self.members.iter().map(|m| m.addr).collect();
        addrs.sort();
        addrs
    }

    /// The address this node's peers reach it at.
    pub fn own_peer_addr(&self) -> SocketAddr {
        self.members
            .iter()
            .find(|m| m.id == self.node_id)
            .expect("this node is one of the members")
            .addr
    }

    /// The line server's limits.
    pub fn line_options(&self) -> LineOptions {
        LineOptions {
            connections_max: self.connections_max,
            idle_timeout: self.idle_timeout,
            ..LineOptions::default()
        }
    }
}

/// Resolves `host:port`, `http://host:port` or `host` (with `default_port`), preferring IPv4.
pub fn resolve(given: &str, default_port: u16) -> Result<SocketAddr, ConfigError> {
    let err = |reason: String| ConfigError::Resolve {
        given: given.to_string(),
        reason,
    };
    let rest = given
        .strip_prefix("http://")
        .or_else(|| given.strip_prefix("udp://"))
        .unwrap_or(given);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(err("expected host:port".into()));
    }
    if let Ok(addr) = rest.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = rest.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|e| err(format!("bad port {p:?}: {e}")))?,
        ),
        None => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        // Every node must name the others the same way; `localhost` is the loopback we bind.
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| err("no address found".into()))
}

/// FNV-1a over the sorted member list: the same on every node of the cluster.
pub fn cluster_id(members: &[SocketAddr]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for member in members {
        for byte in member.to_string().bytes().chain(std::iter::once(b'\n')) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeConfig {
        let w = Wrapper::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .expect("flags parse");
        ServeConfig::from_args(&w.serve).expect("config")
    }

    #[test]
    fn defaults_are_a_single_node_on_3000() {
        let c = parse(&[]);
        assert_eq!(c.http_addr, "127.0.0.1:3000".parse().expect("addr"));
        assert_eq!(c.line_addr, "127.0.0.1:3001".parse().expect("addr"));
        assert_eq!(c.peer_bind_addr, "127.0.0.1:3000".parse().expect("addr"));
        assert_eq!(c.members.len(), 1);
        assert_eq!(c.data_dir, PathBuf::from("consens-data/3000"));
    }

    #[test]
    fn worker_threads_default_to_one_and_are_bounded() {
        assert_eq!(parse(&[]).worker_threads, 1);
        assert_eq!(parse(&["--worker-threads", "4"]).worker_threads, 4);
        for bad in ["0", "257", "-1", "many"] {
            let parsed = Wrapper::try_parse_from(["serve", "--worker-threads", bad]);
            assert!(parsed.is_err(), "--worker-threads {bad} was accepted");
        }
    }

    #[test]
    fn original_walkthrough_members_agree_on_ids_and_cluster() {
        let a = parse(&[
            "--port",
            "3000",
            "--cluster",
            "http://localhost:4000,http://localhost:5000",
        ]);
        let b = parse(&[
            "--port",
            "4000",
            "--cluster",
            "localhost:3000,127.0.0.1:5000",
        ]);
        assert_eq!(a.members, b.members);
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(a.node_id, NodeId(0));
        assert_eq!(b.node_id, NodeId(1));
    }

    #[test]
    fn listing_oneself_in_the_cluster_is_harmless() {
        let c = parse(&[
            "--port",
            "3000",
            "--cluster",
            "localhost:3000,localhost:4000",
        ]);
        assert_eq!(c.members.len(), 2);
    }

    #[test]
    fn cluster_key_file_is_loaded_or_refused() {
        assert!(parse(&[]).cluster_key.is_none());
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("cluster.key");
        std::fs::write(&good, [5u8; 32]).expect("write");
        let good = good.display().to_string();
        assert!(parse(&["--cluster-key-file", &good]).cluster_key.is_some());
        let short = dir.path().join("short.key");
        std::fs::write(&short, b"hunter2").expect("write");
        let short = short.display().to_string();
        let w = Wrapper::try_parse_from(["serve", "--cluster-key-file", &short]).expect("parse");
        let err = ServeConfig::from_args(&w.serve).expect_err("a 7-byte key is refused");
        assert!(err.to_string().contains("at least 32"), "{err}");
    }

    #[test]
    fn bad_addresses_are_clear_errors() {
        assert!(resolve("http://localhost:notaport", 1).is_err());
        assert!(resolve("", 1).is_err());
        assert!(resolve("http://a/b/c", 1).is_err());
    }
}
