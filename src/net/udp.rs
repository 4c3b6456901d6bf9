//! The peer transport: one UDP socket per node, a receive task, and counters of what was dropped.
//!
//! Datagrams are lost, duplicated, reordered and may come from anyone (`GUIDE.md` §4), so the
//! receiver checks everything before the event loop sees it: size, envelope, cluster identity,
//! that the claimed sender is a member, and that the datagram came from that member's address.
//! Anything else is dropped and counted, never a crash. Sending never blocks the event loop: a
//! datagram the kernel cannot take right now is dropped and the core's retransmit timers cover it.

use crate::net::codec::{self, DropReason, Header, DATAGRAM_BYTES_MAX};
use crate::net::wire::Wire;
use crate::paxos::types::NodeId;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Capacity of the queue from the receive task to the event loop; beyond it datagrams are dropped.
pub const INBOUND_QUEUE_DATAGRAMS_MAX: usize = 8192;

/// Counts of datagrams by fate, shared by the receive task, the sender and the status page.
#[derive(Debug, Default)]
pub struct NetCounters {
    pub sent: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub send_failed: AtomicU64,
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    pub dropped_oversized: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub dropped_foreign: AtomicU64,
    pub dropped_unknown_sender: AtomicU64,
    pub dropped_queue_full: AtomicU64,
}

impl NetCounters {
    fn count(&self, reason: &DropReason) {
        let counter = match reason {
            DropReason::Oversized { .. } => &self.dropped_oversized,
            DropReason::WrongCluster { .. } => &self.dropped_foreign,
            _ => &self.dropped_malformed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter by name, for the status page.
    pub fn by_name(&self) -> std::collections::BTreeMap<String, u64> {
        [
            ("sent", &self.sent),
            ("sent_bytes", &self.sent_bytes),
            ("send_failed", &self.send_failed),
            ("received", &self.received),
            ("received_bytes", &self.received_bytes),
            ("dropped_oversized", &self.dropped_oversized),
            ("dropped_malformed", &self.dropped_malformed),
            ("dropped_foreign_cluster", &self.dropped_foreign),
            ("dropped_unknown_sender", &self.dropped_unknown_sender),
            ("dropped_queue_full", &self.dropped_queue_full),
        ]
        .into_iter()
        .map(|(name, c)| (name.to_string(), c.load(Ordering::Relaxed)))
        .collect()
    }

    /// Total datagrams dropped for any reason.
    pub fn dropped(&self) -> u64 {
        [
            &self.dropped_oversized,
            &self.dropped_malformed,
            &self.dropped_foreign,
            &self.dropped_unknown_sender,
            &self.dropped_queue_full,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// The send side, owned by the event loop.
pub struct PeerNet {
    socket: Arc<UdpSocket>,
    header: Header,
    members: Vec<SocketAddr>,
    counters: Arc<NetCounters>,
    /// Reused encode buffer.
    buf: Vec<u8>,
}

impl PeerNet {
    pub fn new(
        socket: Arc<UdpSocket>,
        header: Header,
        members: Vec<SocketAddr>,
        counters: Arc<NetCounters>,
    ) -> PeerNet {
        PeerNet {
            socket,
            header,
            members,
            counters,
            buf: Vec::with_capacity(DATAGRAM_BYTES_MAX),
        }
    }

    /// The counters this sender shares with the receive task.
    pub fn counters(&self) -> &NetCounters {
        &self.counters
    }

    /// Sends `wire` to member `to`, or drops it (counted) if it cannot go right now.
    pub fn send(&mut self, to: NodeId, wire: &Wire) {
        let Some(addr) = self.members.get(usize::from(to.0)).copied() else {
            panic!("the core addressed {to}, which is not a member");
        };
        self.buf.clear();
        if let Err(e) = codec::encode(&self.header, wire, &mut self.buf) {
            // The core budgets every message to fit; failing here is a broken invariant upstream,
            // but dropping is safe (retransmission or the client's timeout covers it).
            tracing::error!(error = %e, %to, "datagram not encodable; dropped");
            self.counters.send_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.socket.try_send_to(&self.buf, addr) {
            Ok(_) => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .sent_bytes
                    .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::trace!(error = %e, %addr, "datagram not sent");
                self.counters.send_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Receives datagrams until the queue to the event loop closes.
pub async fn receive_loop(
    socket: Arc<UdpSocket>,
    cluster: u64,
    members: Vec<SocketAddr>,
    inbound: mpsc::Sender<(NodeId, Wire)>,
    counters: Arc<NetCounters>,
) {
    // One byte more than the largest valid datagram, so an oversized one is seen as such
    // instead of silently truncated to a valid-looking size.
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX + 1];
    loop {
        let (len, from_addr) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors (a peer's port closed) surface here on some platforms: not fatal.
                tracing::trace!(error = %e, "recv_from failed");
                if inbound.is_closed() {
                    return;
                }
                continue;
            }
        };
        counters.received.fetch_add(1, Ordering::Relaxed);
        counters
            .received_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        let (header, wire) = match codec::decode::<Wire>(&buf[..len], cluster) {
            Ok(x) => x,
            Err(reason) => {
                tracing::debug!(%from_addr, %reason, "datagram dropped");
                counters.count(&reason);
                continue;
            }
        };
        let sender_ok = members
            .get(usize::from(header.from.0))
            .is_some_and(|addr| *addr == from_addr);
        if !sender_ok {
            tracing::debug!(%from_addr, from = %header.from, "datagram from a non-member dropped");
            counters
                .dropped_unknown_sender
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match inbound.try_send((header.from, wire)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
