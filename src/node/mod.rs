//! The node: wires the Paxos core, the WAL, the peer socket and the client servers into one
//! running process.
//!
//! [`serve`] is the whole start-up and shut-down story, in order:
//! 1. check the data directory's identity (member set) and bump the boot counter;
//! 2. load the newest snapshot, open and replay the WAL (a torn tail is truncated, corruption
//!    refuses to start), and rebuild the core from what was durable;
//! 3. bind the peer UDP socket and the HTTP and line-protocol listeners (what we advertise is what
//!    we bind);
//! 4. run the event loop until SIGTERM or Ctrl-C, then stop accepting clients, let in-flight
//!    requests finish, sync the WAL and exit.
//!
//! Layout: `driver` (every decision of the node, without IO: core, kv, pending requests,
//! snapshot policy; the simulator runs it too), `event_loop` (the tokio shell that feeds the
//! driver and carries out its effects), `wal_writer` (the thread that owns the WAL and runs
//! group commit), `durable` (WAL adapter), `handle` (the servers' `Store`), `transfer`
//! (snapshot shipping), `identity` (members and boot counter files), `status` (the `/_status`
//! view), `memory` (memory work kept off the serving threads), `recover` (a survivor's data dir
//! made a one-member cluster).

pub mod driver;
pub mod durable;
pub(crate) mod event_loop;
pub mod handle;
pub mod identity;
pub mod join;
pub mod memory;
pub mod recover;
pub(crate) mod status;
pub mod transfer;
pub(crate) mod wal_writer;

use crate::config::Member;
use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::net::codec::Header;
use crate::net::udp::{self, PeerNet};
use crate::paxos::Config as CoreConfig;
use crate::paxos::{MemberRole, Membership};
use crate::server::{http, line, NodeStatus};
use crate::wal::{WalIdentity, WalOptions};
use driver::{Driver, DriverConfig};
use durable::Durable;
use event_loop::{LoopParts, NodeLoop, SnapshotFiles};
use handle::NodeHandle;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use wal_writer::WalWriter;

/// Capacity of the queue from client handles to the event loop (requests beyond it wait).
pub const REQUEST_QUEUE_MAX: usize = 16_384;
/// Subdirectory of the data dir holding WAL segments.
pub const WAL_DIR_NAME: &str = "wal";
/// Subdirectory of the data dir holding state-machine snapshots.
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";

/// Why the node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Recover(#[from] durable::RecoverError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Join(#[from] join::JoinError),
    #[error("the snapshot in {dir} does not decode: {reason} (corrupt)")]
    SnapshotState { dir: String, reason: String },
    #[error("cannot {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the WAL thread: {source}")]
    WalThread { source: std::io::Error },
    #[error("cannot create the data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
}

/// Runs one node until it is told to stop.
pub async fn serve(config: ServeConfig) -> Result<(), NodeError> {
    let data_dir = &config.data_dir;
    let wal_dir = data_dir.join(WAL_DIR_NAME);
    let snapshot_dir = data_dir.join(SNAPSHOT_DIR_NAME);
    for dir in [data_dir, &wal_dir, &snapshot_dir] {
        std::fs::create_dir_all(dir).map_err(|source| NodeError::DataDir {
            dir: dir.display().to_string(),
            source,
        })?;
    }
    // A first start with --join: a member of the running cluster hands out this node's identity.
    let joined_now = !config.join.is_empty() && identity::read(data_dir)?.is_none();
    if joined_now {
        let advertise = config.own_peer_addr();
        tracing::info!(through = ?config.join, %advertise, "joining a running cluster");
        let identity = join::join(&config.join, advertise).await?;
        identity::write(data_dir, &identity)?;
        tracing::info!(id = identity.node_id.0, "added to the cluster as a learner");
    }
    let (identity, established) = identity::establish(
        data_dir,
        &config.member_addrs_sorted(),
        config.own_peer_addr(),
        config.cluster_given,
    )?;
    if established == identity::Established::Migrated {
        tracing::info!(
            data_dir = %data_dir.display(),
            "migrated the data dir's member list to an identity file (same ids and cluster id)"
        );
    }
    let config = config.with_identity(&identity);
    let data_dir = &config.data_dir;
    let boot = identity::next_boot(data_dir)?;

    // Recover: the newest snapshot and the WAL; the driver folds them together.
    let snapshot = crate::snapshot::load_latest(&snapshot_dir, config.cluster_id)?;
    let wal_options = WalOptions::new(WalIdentity {
        cluster_id: config.cluster_id,
        node_id: config.node_id.0,
    })
    .planted_sync_bug(config.planted_sync_bug);
    if let Some(bug) = config.planted_sync_bug {
        tracing::warn!(
            ?bug,
            "the WAL's sync is broken on purpose: acknowledged writes can be lost"
        );
    }
    let (durable, recovered) = Durable::open(&wal_dir, wal_options)?;

    // The membership the log starts from: the first members, with the addresses they were
    // created with (every member's identity holds the same list).
    let membership = Membership::of_members(
        identity
            .members
            .iter()
            .map(|m| crate::paxos::Member {
                id: m.id,
                addr: m.addr.to_string(),
                role: MemberRole::Voter,
            })
            .collect(),
    )
    .expect("the identity's member list was checked when it was read");
    let mut core_config = CoreConfig::new(config.node_id, membership);
    // Only the start that joined may say it never voted (`paxos::Config::new_member`).
    core_config.new_member = joined_now;
    core_config.log_retain_slots = config.catch_up_retain_slots;
    let seed = random_seed(boot, config.node_id.0);
    let metrics = Arc::new(Metrics::new());
    let known_members: Vec<Member> = if identity.joined() {
        identity.peers.clone()
    } else {
        identity.members.clone()
    };
    let driver_config = DriverConfig {
        node: config.node_id,
        members: known_members.clone(),
        cluster_id: config.cluster_id,
        first_members: identity.members.clone(),
        advertise: config.advertise.clone(),
        request_timeout_ms: config.request_timeout.as_millis() as u64,
        snapshot_every_slots: config.snapshot_every_slots,
        snapshot_every_bytes: config.snapshot_every_bytes,
        boot,
        observe: false,
        planted_bug: None,
    };
    let driver = Driver::recover(
        driver_config,
        core_config,
        recovered,
        snapshot
            .as_ref()
            .map(|(slot, payload)| (*slot, payload.as_slice())),
        metrics.clone(),
        seed,
    )
    .map_err(|e| NodeError::SnapshotState {
        dir: snapshot_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    drop(snapshot);

    // Bind everything before announcing readiness.
    let peer_socket = UdpSocket::bind(config.peer_bind_addr)
        .await
        .map_err(|source| NodeError::Bind {
            what: "bind the peer UDP socket on",
            addr: config.peer_bind_addr,
            source,
        })?;
    match udp::enlarge_buffers(&peer_socket) {
        Ok(granted) if granted < udp::PEER_SOCKET_BUFFER_BYTES => tracing::warn!(
            granted,
            wanted = udp::PEER_SOCKET_BUFFER_BYTES,
            "the kernel granted the peer socket a smaller receive buffer than asked for: under \
             load, datagrams may be dropped and retried; raise net.core.rmem_max"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not size the peer socket's buffers"),
    }
    let peer_socket = Arc::new(peer_socket);
    let http_listener = listen("listen for HTTP on", config.http_addr).await?;
    let line_listener = listen("listen for the line protocol on", config.line_addr).await?;

    let (inbound_tx, inbound_rx) = mpsc::channel(udp::INBOUND_QUEUE_DATAGRAMS_MAX);
    // Until the driver's first effects say who is in force, the members the identity knows.
    let (address_book_tx, address_book_rx) = watch::channel(known_members.clone());
    let receiver = tokio::spawn(udp::receive_loop(
        peer_socket.clone(),
        config.cluster_id,
        config.cluster_key.clone(),
        address_book_rx,
        inbound_tx,
        metrics.clone(),
    ));
    let header = Header {
        cluster: config.cluster_id,
        from: config.node_id,
    };
    let peers = PeerNet::new(
        peer_socket,
        header,
        config.cluster_key.clone(),
        known_members,
        metrics.clone(),
    );

    let (wal_events_tx, wal_events_rx) = mpsc::unbounded_channel();
    let wal = WalWriter::start(durable, metrics.clone(), wal_events_tx)
        .map_err(|source| NodeError::WalThread { source })?;

    let (requests_tx, requests_rx) = mpsc::channel(REQUEST_QUEUE_MAX);
    let initial_status = status::initial(&config);
    let (status_tx, status_rx) = watch::channel::<NodeStatus>(initial_status);
    let healthy = Arc::new(AtomicBool::new(false));
    let handle = NodeHandle {
        requests: requests_tx,
        status: status_rx,
        healthy: healthy.clone(),
        metrics: metrics.clone(),
    };

    let node_loop = NodeLoop::new(LoopParts {
        driver,
        wal,
        wal_events: wal_events_rx,
        peers,
        snapshots: SnapshotFiles {
            dir: snapshot_dir.clone(),
            cluster_id: config.cluster_id,
        },
        requests: requests_rx,
        inbound: inbound_rx,
        status_tx,
        healthy,
        address_book_tx,
    });

    // Shutdown: the signal flips `stop`; servers stop accepting and finish in-flight requests;
    // then the loop stops, syncs the WAL and answers what is left.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (loop_stop_tx, loop_stop_rx) = watch::channel(false);
    let http_task = tokio::spawn(http::serve_http(
        http_listener,
        handle.clone(),
        wait_for(stop_rx.clone()),
    ));
    let line_task = tokio::spawn(line::serve_line(
        line_listener,
        handle.clone(),
        config.line_options(),
        wait_for(stop_rx.clone()),
    ));
    let loop_task = tokio::spawn(node_loop.run(loop_stop_rx));
    let promoter = config.auto_promote.then(|| {
        tokio::spawn(join::promote_when_caught_up(
            handle.clone(),
            config.node_id.0,
        ))
    });
    tracing::info!(
        node = %config.advertise,
        node_id = %config.node_id,
        http = %config.http_addr,
        line = %config.line_addr,
        peers = %config.peer_bind_addr,
        members = config.members.len(),
        peer_auth = config.cluster_key.is_some(),
        data_dir = %config.data_dir.display(),
        "consens node serving"
    );

    shutdown_signal().await;
    if let Some(promoter) = promoter {
        promoter.abort();
    }
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    for (name, task) in [("http", http_task), ("line", line_task)] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(server = name, error = %e, "server stopped with an error"),
            Err(e) => tracing::warn!(server = name, error = %e, "server task failed"),
        }
    }
    drop(handle);
    let _ = loop_stop_tx.send(true);
    if let Err(e) = loop_task.await {
        tracing::error!(error = %e, "event loop task failed");
    }
    receiver.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Binds a TCP listener, naming what it was for if that fails.
async fn listen(what: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { what, addr, source })
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The core's seed: differs between nodes and boots so that election back-offs do not collide.
fn random_seed(boot: u64, node: u16) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(boot);
    hasher.write_u16(node);
    hasher.finish()
}
