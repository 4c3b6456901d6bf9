//! The `STATUS` reply: a node's state as one line of `name=value` pairs, written by the server
//! from its [`NodeStatus`] and read back by the client into a [`Status`].
//!
//! ```text
//! node=127.0.0.1:3000 id=0 role=leader leader=127.0.0.1:3000 ballot=2.0 decided=12 applied=12
//! digest=00000000000000ab members=3 heard=3 healthy=true
//! ```
//! (one line on the wire). `leader=-` means no leader is known. Readers keep the pairs they do
//! not know in [`Status::fields`], so a newer node may add pairs.
//!
//! [`Status`] is not [`NodeStatus`] on purpose: `NodeStatus` is the node's full view for
//! `/_status` (every member, datagram counters) and may grow freely with the node; `Status` is
//! the flat summary a line can carry and a client of any version can parse, so its fields only
//! ever gain new pairs.

use std::collections::BTreeMap;

use crate::server::NodeStatus;

/// A node's state as its `STATUS` line reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// The node's advertised address.
    pub node: String,
    /// The node's member id.
    pub node_id: u16,
    /// "leader", "follower", ... as the node calls it.
    pub role: String,
    /// The leader this node believes in, if any.
    pub leader: Option<String>,
    /// The highest ballot the node knows, as `round.node`.
    pub ballot: String,
    /// The highest slot known decided.
    pub decided: u64,
    /// The highest slot applied to the key-value state.
    pub applied: u64,
    /// The digest of the key-value state at `applied` (16 hex digits): nodes at the same
    /// applied slot must show the same digest.
    pub digest: String,
    /// How many members the cluster has, this node included.
    pub members: u64,
    /// How many members the node heard from recently, itself included.
    pub heard: u64,
    /// Whether the node reaches a quorum (can serve writes and linearizable reads).
    pub healthy: bool,
    /// Every `name=value` pair of the line, also those this version does not know.
    pub fields: BTreeMap<String, String>,
}

/// The shown value of an absent leader.
const NO_LEADER: &str = "-";

impl Status {
    /// What a node answers to `STATUS`, from its own view of itself.
    pub fn of_node(status: &NodeStatus, healthy: bool) -> Status {
        let heard = status
            .members
            .iter()
            .filter(|m| m.is_self || m.last_heard_ms_ago.is_some())
            .count();
        let mut shown = Status {
            node: status.node.clone(),
            node_id: status.node_id,
            role: status.role.clone(),
            leader: status.leader.clone(),
            ballot: status.ballot.clone(),
            decided: status.decided,
            applied: status.applied,
            digest: status.digest.clone(),
            members: status.members.len() as u64,
            heard: heard as u64,
            healthy,
            fields: BTreeMap::new(),
        };
        shown.fields = shown
            .named_pairs()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        shown
    }

    /// The pairs this version writes, in their order on the line.
    fn named_pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("node", self.node.clone()),
            ("id", self.node_id.to_string()),
            ("role", self.role.clone()),
            (
                "leader",
                self.leader.clone().unwrap_or_else(|| NO_LEADER.to_string()),
            ),
            ("ballot", self.ballot.clone()),
            ("decided", self.decided.to_string()),
            ("applied", self.applied.to_string()),
            ("digest", self.digest.clone()),
            ("members", self.members.to_string()),
            ("heard", self.heard.to_string()),
            ("healthy", self.healthy.to_string()),
        ]
    }

    /// The line (without its `\n`): the named pairs, then any other pair in [`Status::fields`].
    pub fn encode(&self) -> String {
        let named = self.named_pairs();
        let extra = self
            .fields
            .iter()
            .filter(|(name, _)| !named.iter().any(|(known, _)| known == name))
            .map(|(name, value)| (name.as_str(), value.clone()));
        let pairs: Vec<String> = named
            .iter()
            .map(|(name, value)| (*name, value.clone()))
            .chain(extra)
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        pairs.join(" ")
    }

    /// Reads a `STATUS` line; the error names the first field that is missing or malformed.
    pub fn parse(line: &[u8]) -> Result<Status, String> {
        let text = std::str::from_utf8(line).map_err(|_| "status line is not UTF-8".to_string())?;
        let fields: BTreeMap<String, String> = text
            .split(' ')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let text_field = |name: &str| {
            fields
                .get(name)
                .cloned()
                .ok_or_else(|| format!("status line lacks '{name}': {text}"))
        };
        let number = |name: &str| {
            text_field(name)?
                .parse::<u64>()
                .map_err(|_| format!("status field '{name}' is not a number: {text}"))
        };
        let leader = text_field("leader")?;
        Ok(Status {
            node: text_field("node")?,
            node_id: u16::try_from(number("id")?)
                .map_err(|_| format!("status field 'id' out of range: {text}"))?,
            role: text_field("role")?,
            leader: (leader != NO_LEADER).then_some(leader),
            ballot: text_field("ballot")?,
            decided: number("decided")?,
            applied: number("applied")?,
            digest: text_field("digest")?,
            members: number("members")?,
            heard: number("heard")?,
            healthy: match text_field("healthy")?.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(format!("status field 'healthy' is not a boolean: {text}")),
            },
            fields: fields.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::MemberStatus;
    use proptest::prelude::*;

    fn node_status(leader: Option<&str>, heard: usize) -> NodeStatus {
        NodeStatus {
            node: "127.0.0.1:3000".into(),
            node_id: 0,
            role: "leader".into(),
            leader: leader.map(str::to_string),
            leader_id: leader.map(|_| 0),
            ballot: "2.0".into(),
            decided: 12,
            applied: 11,
            digest: "00000000000000ab".into(),
            members: (0..3)
                .map(|i| MemberStatus {
                    id: i,
                    role: "voter".into(),
                    decided: Some(12),
                    addr: format!("127.0.0.1:{}", 3000 + 10 * usize::from(i)),
                    is_self: i == 0,
                    last_heard_ms_ago: (i > 0 && usize::from(i) <= heard).then_some(5),
                })
                .collect(),
            datagrams: BTreeMap::new(),
            cluster_id: "00000000000000c1".into(),
            first_members: Vec::new(),
        }
    }

    #[test]
    fn the_line_reads_back_as_the_nodes_status() {
        let status = Status::of_node(&node_status(Some("127.0.0.1:3000"), 2), true);
        assert_eq!(
            status.encode(),
            "node=127.0.0.1:3000 id=0 role=leader leader=127.0.0.1:3000 ballot=2.0 decided=12 \
             applied=11 digest=00000000000000ab members=3 heard=3 healthy=true"
        );
        assert_eq!(Status::parse(status.encode().as_bytes()), Ok(status));
        let alone = Status::of_node(&node_status(None, 0), false);
        let read = Status::parse(alone.encode().as_bytes()).expect("parses");
        assert_eq!((read.leader, read.heard, read.healthy), (None, 1, false));
    }

    #[test]
    fn pairs_a_newer_node_adds_are_kept() {
        let mut status = Status::of_node(&node_status(None, 1), true);
        status.fields.insert("learners".into(), "1".into());
        let read = Status::parse(status.encode().as_bytes()).expect("parses");
        assert_eq!(read.fields.get("learners").map(String::as_str), Some("1"));
        assert_eq!(read, status);
    }

    #[test]
    fn a_missing_or_malformed_field_is_named() {
        let line = Status::of_node(&node_status(None, 1), true).encode();
        let broken = |from: &str, to: &str| Status::parse(line.replace(from, to).as_bytes());
        assert!(broken("id=0", "id=x")
            .unwrap_err()
            .contains("'id' is not a number"));
        assert!(broken("healthy=true", "healthy=yes")
            .unwrap_err()
            .contains("'healthy' is not a boolean"));
        assert!(broken("role=leader ", "")
            .unwrap_err()
            .contains("lacks 'role'"));
    }

    proptest! {
        #[test]
        fn any_status_reads_back_as_itself(
            decided in any::<u64>(), applied in any::<u64>(), heard in 0usize..3,
            healthy in any::<bool>(), leader in proptest::option::of("[a-z0-9.:]{1,20}"),
        ) {
            let mut node = node_status(leader.as_deref(), heard);
            node.decided = decided;
            node.applied = applied;
            let status = Status::of_node(&node, healthy);
            prop_assert_eq!(Status::parse(status.encode().as_bytes()), Ok(status));
        }
    }
}
