//! The peer transport: one UDP socket per node, a receive task, and counters of what was dropped.
//!
//! Datagrams are lost, duplicated, reordered and may come from anyone (`docs/reliability.md`), so the
//! receiver checks everything before the event loop sees it: size, envelope, cluster identity,
//! the MAC when the cluster has a key (`docs/security.md`), that the claimed sender is a member,
//! and that the datagram came from that member's address.
//! Anything else is dropped and counted, never a crash. Sending never blocks the event loop: a
//! datagram the kernel cannot take right now is dropped and the core's retransmit timers cover it.
//! The socket gets large kernel buffers ([`enlarge_buffers`]); what the kernel still drops on
//! receive is read back from procfs and counted too.

use crate::config::Member;
use crate::metrics::{DropLabels, Metrics};
use crate::net::auth::ClusterKey;
use crate::net::codec::{self, DropReason, Header, DATAGRAM_BYTES_MAX};
use crate::net::wire::Wire;
use crate::paxos::types::NodeId;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Capacity of the queue from the receive task to the event loop; beyond it datagrams are dropped.
pub const INBOUND_QUEUE_DATAGRAMS_MAX: usize = 8192;

/// The kernel's cumulative count of datagrams dropped on one socket (the `drops` column of
/// `/proc/net/udp` and `udp6`), found by the socket's inode. Linux only; elsewhere, or when
/// procfs is missing, there is nothing to count.
struct KernelDrops {
    inode: u64,
    seen: u64,
}

impl KernelDrops {
    fn of(socket: &UdpSocket) -> Option<KernelDrops> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
            let inode = link
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            let mut drops = KernelDrops { inode, seen: 0 };
            drops.seen = drops.read()?;
            Some(drops)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = socket;
            None
        }
    }

    fn read(&self) -> Option<u64> {
        ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|path| {
            let table = std::fs::read_to_string(path).ok()?;
            drops_of_inode(&table, self.inode)
        })
    }

    /// Drops since the last call.
    fn poll(&mut self) -> u64 {
        let Some(now) = self.read() else { return 0 };
        let new = now.saturating_sub(self.seen);
        self.seen = now;
        new
    }
}

/// The `drops` column of the row of `/proc/net/udp`-format `table` whose inode is `inode`.
fn drops_of_inode(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let row_inode: u64 = fields.get(9)?.parse().ok()?;
        if row_inode != inode {
            return None;
        }
        fields.get(12)?.parse().ok()
    })
}

/// Kernel receive and send buffer asked for on the peer socket. Batches travel as datagrams of
/// up to 64 KiB, and Linux's default receive buffer (208 KiB, of which a 64 KiB datagram takes
/// more than 64 KiB) held only two or three: under load the kernel dropped hundreds of datagrams a
/// second, and each lost forward cost its clients a 200 ms retry.
pub const PEER_SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Asks the kernel for [`PEER_SOCKET_BUFFER_BYTES`] of receive and send buffer on `socket`
/// (beyond `net.core.rmem_max`/`wmem_max` too when the process may, as root can); returns the
/// receive buffer the kernel granted, comparable with what was asked for (Linux reports twice
/// the size it granted, the double being its bookkeeping allowance; this halves it back).
pub fn enlarge_buffers(socket: &UdpSocket) -> std::io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let wanted = libc::c_int::try_from(PEER_SOCKET_BUFFER_BYTES).unwrap_or(libc::c_int::MAX);
        for (forced, capped) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            // The forced form needs CAP_NET_ADMIN; without it, the plain form is capped by the
            // sysctl limit.
            if set_int_option(fd, forced, wanted).is_err() {
                set_int_option(fd, capped, wanted)?;
            }
        }
        let mut granted: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `granted` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut granted as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(usize::try_from(granted).unwrap_or(0) / 2)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Ok(0)
    }
}

#[cfg(target_os = "linux")]
fn set_int_option(fd: libc::c_int, option: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: `value` outlives the call and the length given is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Why a datagram was dropped, as the metrics and the status page name it.
fn drop_reason(reason: &DropReason) -> &'static str {
    match reason {
        DropReason::Oversized { .. } => DROPPED_OVERSIZED,
        DropReason::WrongCluster { .. } => DROPPED_FOREIGN_CLUSTER,
        DropReason::BadMac(_) => DROPPED_BAD_MAC,
        DropReason::Truncated
        | DropReason::BadMagic
        | DropReason::BadVersion { .. }
        | DropReason::Malformed(_) => DROPPED_MALFORMED,
    }
}

/// Drop reasons (metric labels and status keys).
pub const DROPPED_OVERSIZED: &str = "oversized";
pub const DROPPED_MALFORMED: &str = "malformed";
pub const DROPPED_FOREIGN_CLUSTER: &str = "foreign_cluster";
pub const DROPPED_BAD_MAC: &str = "bad_mac";
pub const DROPPED_UNKNOWN_SENDER: &str = "unknown_sender";
pub const DROPPED_QUEUE_FULL: &str = "queue_full";
/// Dropped by the kernel before we could read them: the socket's receive buffer was full.
pub const DROPPED_KERNEL_BUFFER: &str = "kernel_receive_buffer";
const DROP_REASONS: [&str; 7] = [
    DROPPED_OVERSIZED,
    DROPPED_MALFORMED,
    DROPPED_FOREIGN_CLUSTER,
    DROPPED_BAD_MAC,
    DROPPED_UNKNOWN_SENDER,
    DROPPED_QUEUE_FULL,
    DROPPED_KERNEL_BUFFER,
];

/// Datagram counts by name, for the status page.
pub fn datagram_counts(metrics: &Metrics) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::from([
        ("sent".to_string(), metrics.datagrams_sent.get()),
        ("sent_bytes".to_string(), metrics.datagram_bytes_sent.get()),
        (
            "send_failed".to_string(),
            metrics.datagrams_send_failed.get(),
        ),
        ("received".to_string(), metrics.datagrams_received.get()),
        (
            "received_bytes".to_string(),
            metrics.datagram_bytes_received.get(),
        ),
    ]);
    for reason in DROP_REASONS {
        let n = metrics
            .datagrams_dropped
            .get(&DropLabels { reason })
            .map_or(0, |c| c.get());
        counts.insert(format!("dropped_{reason}"), n);
    }
    counts
}

/// The send side, owned by the event loop.
pub struct PeerNet {
    socket: Arc<UdpSocket>,
    header: Header,
    /// Tags every datagram when the cluster has a key.
    key: Option<ClusterKey>,
    members: Vec<Member>,
    metrics: Arc<Metrics>,
    /// Reused encode buffer.
    buf: Vec<u8>,
    /// The kernel's count of datagrams it dropped for this socket, as last read.
    kernel_drops: Option<KernelDrops>,
}

impl PeerNet {
    pub fn new(
        socket: Arc<UdpSocket>,
        header: Header,
        key: Option<ClusterKey>,
        members: Vec<Member>,
        metrics: Arc<Metrics>,
    ) -> PeerNet {
        let kernel_drops = KernelDrops::of(&socket);
        PeerNet {
            socket,
            header,
            key,
            members,
            metrics,
            buf: Vec::with_capacity(DATAGRAM_BYTES_MAX),
            kernel_drops,
        }
    }

    /// Adds the datagrams the kernel dropped since the last call (a full receive buffer) to the
    /// drop counters. Reads `/proc/net/udp*`: call it about once a second, not per datagram.
    pub fn count_kernel_drops(&mut self) {
        if let Some(drops) = &mut self.kernel_drops {
            let new = drops.poll();
            if new > 0 {
                tracing::debug!(
                    new,
                    "the kernel dropped peer datagrams: receive buffer full"
                );
                self.metrics.dropped_many(DROPPED_KERNEL_BUFFER, new);
            }
        }
    }

    /// The metrics this sender shares with the receive task and the event loop.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// From now on, sends to these members (the address book changed with the membership).
    pub fn set_members(&mut self, members: Vec<Member>) {
        self.members = members;
    }

    /// Sends `wire` to member `to`, or drops it (counted) if it cannot go right now.
    pub fn send(&mut self, to: NodeId, wire: &Wire) {
        let Some(addr) = self.members.iter().find(|m| m.id == to).map(|m| m.addr) else {
            // A member whose address in the log is unusable: the core retries, the operator
            // sees the member never answer.
            tracing::debug!(%to, "datagram to a member with no address dropped");
            self.metrics.datagrams_send_failed.inc();
            return;
        };
        self.buf.clear();
        if let Err(e) = codec::encode_keyed(&self.header, wire, self.key.as_ref(), &mut self.buf) {
            // The core budgets every message to fit; failing here is a broken invariant upstream,
            // but dropping is safe (retransmission or the client's timeout covers it).
            tracing::error!(error = %e, %to, "datagram not encodable; dropped");
            self.metrics.datagrams_send_failed.inc();
            return;
        }
        match self.socket.try_send_to(&self.buf, addr) {
            Ok(_) => {
                self.metrics.datagrams_sent.inc();
                self.metrics
                    .datagram_bytes_sent
                    .inc_by(self.buf.len() as u64);
            }
            Err(e) => {
                tracing::trace!(error = %e, %addr, "datagram not sent");
                self.metrics.datagrams_send_failed.inc();
            }
        }
    }
}

/// Receives datagrams until the queue to the event loop closes. With a `key`, only datagrams
/// whose MAC verifies reach the event loop; only those from a member of the address book
/// (`members`, which the event loop updates as the membership changes) at its address do.
pub async fn receive_loop(
    socket: Arc<UdpSocket>,
    cluster: u64,
    key: Option<ClusterKey>,
    members: watch::Receiver<Vec<Member>>,
    inbound: mpsc::Sender<(NodeId, Wire)>,
    metrics: Arc<Metrics>,
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
        metrics.datagrams_received.inc();
        metrics.datagram_bytes_received.inc_by(len as u64);
        let (header, wire) = match codec::decode_keyed::<Wire>(&buf[..len], cluster, key.as_ref()) {
            Ok(x) => x,
            Err(reason) => {
                tracing::debug!(%from_addr, %reason, "datagram dropped");
                metrics.dropped(drop_reason(&reason));
                continue;
            }
        };
        let sender_ok = members
            .borrow()
            .iter()
            .any(|m| m.id == header.from && m.addr == from_addr);
        if !sender_ok {
            tracing::debug!(%from_addr, from = %header.from, "datagram from a non-member dropped");
            metrics.dropped(DROPPED_UNKNOWN_SENDER);
            continue;
        }
        match inbound.try_send((header.from, wire)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics.dropped(DROPPED_QUEUE_FULL);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drops_column_is_read_for_our_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:5208 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17
  102: 0100007F:5209 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 0
";
        assert_eq!(drops_of_inode(table, 4242), Some(17));
        assert_eq!(drops_of_inode(table, 4343), Some(0));
        assert_eq!(drops_of_inode(table, 1), None);
        assert_eq!(drops_of_inode("header only", 4242), None);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn datagrams_the_kernel_drops_are_counted() {
        let receiver = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        // The smallest receive buffer the kernel allows, so that it fills at once.
        use std::os::fd::AsRawFd;
        set_int_option(receiver.as_raw_fd(), libc::SO_RCVBUF, 1).expect("setsockopt");
        let mut drops = KernelDrops::of(&receiver).expect("procfs shows the socket");
        assert_eq!(drops.poll(), 0);
        let sender = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let to = receiver.local_addr().expect("addr");
        for _ in 0..50 {
            sender.send_to(&[7u8; 1024], to).await.expect("send");
        }
        // Loopback delivers (or drops) during the send, nobody read: most of the 50 are gone.
        let dropped = drops.poll();
        assert!(dropped >= 40, "{dropped} counted");
        assert_eq!(drops.poll(), 0, "counted once");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_peer_socket_gets_a_large_receive_buffer() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let granted = enlarge_buffers(&socket).expect("setsockopt");
        // Without CAP_NET_ADMIN the kernel caps the request at net.core.rmem_max; with it,
        // nothing caps it.
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let floor = PEER_SOCKET_BUFFER_BYTES.min(cap);
        assert!(
            granted >= floor,
            "granted {granted} bytes, expected at least {floor}"
        );
        // A socket left alone reports Linux's default, 212,992 bytes: 106,496 in these units.
        assert!(
            granted > 106_496,
            "granted {granted}: no more than Linux's default"
        );
    }
}
