//! The `/_status` view of a node, built by the driver from the core's status.

use crate::config::Member;
use crate::config::ServeConfig;
use crate::kv::KvState;
use crate::metrics::Metrics;
use crate::node::driver::DriverConfig;
use crate::paxos::types::NodeId;
use crate::paxos::{FollowerStatus, ReplicaStatus};
use crate::server::{MemberAddr, MemberStatus, NodeStatus, MEMBER_ROLE_VOTER};
use std::collections::BTreeMap;

/// The state digest as it is shown: 16 hex digits.
pub fn digest_text(digest: u64) -> String {
    format!("{digest:016x}")
}

/// The status before the driver has published one.
pub fn initial(config: &ServeConfig) -> NodeStatus {
    NodeStatus {
        node: config.advertise.clone(),
        node_id: config.node_id.0,
        role: "starting".into(),
        leader: None,
        leader_id: None,
        ballot: "0.0".into(),
        decided: 0,
        applied: 0,
        digest: digest_text(0),
        members: config
            .members
            .iter()
            .map(|m| MemberStatus {
                id: m.id.0,
                addr: m.addr.to_string(),
                role: MEMBER_ROLE_VOTER.to_string(),
                is_self: m.id == config.node_id,
                last_heard_ms_ago: None,
                decided: None,
            })
            .collect(),
        datagrams: Default::default(),
        cluster_id: format!("{:016x}", config.cluster_id),
        first_members: Vec::new(),
    }
}

/// The status now (`now_ms` and `last_heard_ms` on the caller's clock).
#[allow(clippy::too_many_arguments)] // the driver's views, borrowed at once
pub fn build(
    config: &DriverConfig,
    removed: bool,
    address_book: &[Member],
    members: &[crate::paxos::Member],
    core: &ReplicaStatus,
    kv: &mut KvState,
    progress: &[FollowerStatus],
    last_heard_ms: &BTreeMap<NodeId, u64>,
    now_ms: u64,
    metrics: &Metrics,
) -> NodeStatus {
    NodeStatus {
        node: config.advertise.clone(),
        node_id: config.node.0,
        role: if removed {
            "removed".to_string()
        } else {
            core.role.to_string()
        },
        leader: core
            .leader
            .and_then(|l| address_book.iter().find(|m| m.id == l))
            .map(|m| m.addr.to_string()),
        leader_id: core.leader.map(|l| l.0),
        ballot: core.promised.to_string(),
        decided: core.decided,
        applied: kv.applied(),
        digest: digest_text(kv.digest()),
        members: members
            .iter()
            .map(|m| {
                let is_self = m.id == config.node;
                let decided = if is_self {
                    Some(core.decided)
                } else if core.leader == Some(m.id) {
                    Some(core.commit_seen)
                } else {
                    progress.iter().find(|p| p.node == m.id).map(|p| p.decided)
                };
                MemberStatus {
                    id: m.id.0,
                    addr: m.addr.clone(),
                    role: m.role.as_str().to_string(),
                    decided,
                    is_self,
                    last_heard_ms_ago: if is_self {
                        Some(0)
                    } else {
                        last_heard_ms.get(&m.id).map(|t| now_ms.saturating_sub(*t))
                    },
                }
            })
            .collect(),
        datagrams: crate::net::udp::datagram_counts(metrics),
        cluster_id: format!("{:016x}", config.cluster_id),
        first_members: config
            .first_members
            .iter()
            .map(|m| MemberAddr {
                id: m.id.0,
                addr: m.addr.to_string(),
            })
            .collect(),
    }
}
