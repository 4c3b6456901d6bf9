//! The `/_status` view of a node, built by the event loop from the core's status.

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::node::event_loop::LoopConfig;
use crate::paxos::ReplicaStatus;
use crate::server::{MemberStatus, NodeStatus};
use std::time::Instant;

/// The status before the event loop has published one.
pub fn initial(config: &ServeConfig) -> NodeStatus {
    NodeStatus {
        node: config.advertise.clone(),
        node_id: config.node_id.0,
        role: "starting".into(),
        leader: None,
        ballot: "0.0".into(),
        decided: 0,
        applied: 0,
        members: config
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| MemberStatus {
                addr: m.to_string(),
                is_self: i == usize::from(config.node_id.0),
                last_heard_ms_ago: None,
            })
            .collect(),
        datagrams: Default::default(),
    }
}

/// The status now.
pub fn build(
    config: &LoopConfig,
    core: &ReplicaStatus,
    applied: u64,
    last_heard: &[Option<Instant>],
    now: Instant,
    metrics: &Metrics,
) -> NodeStatus {
    NodeStatus {
        node: config.advertise.clone(),
        node_id: config.node.0,
        role: core.role.to_string(),
        leader: core
            .leader
            .and_then(|l| config.members.get(usize::from(l.0)))
            .map(|a| a.to_string()),
        ballot: core.promised.to_string(),
        decided: core.decided,
        applied,
        members: config
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let is_self = i == usize::from(config.node.0);
                MemberStatus {
                    addr: m.to_string(),
                    is_self,
                    last_heard_ms_ago: if is_self {
                        Some(0)
                    } else {
                        last_heard
                            .get(i)
                            .copied()
                            .flatten()
                            .map(|t| now.duration_since(t).as_millis() as u64)
                    },
                }
            })
            .collect(),
        datagrams: crate::net::udp::datagram_counts(metrics),
    }
}
