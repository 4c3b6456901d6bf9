//! The `MEMBERS` reply: the cluster's members as the answering node sees them, as one line, and
//! the same list as `GET /_members` returns it in JSON. Written by the servers from the node's
//! [`NodeStatus`], read back by the client into a [`MemberList`].
//!
//! ```text
//! leader=0 self=1 member=0,127.0.0.1:3000,voter,812,3 member=1,127.0.0.1:3010,voter,812,0
//! member=2,127.0.0.1:3020,voter,-,-
//! ```
//! (one line on the wire). Each `member=` pair is `id,address,role,caught-up slot,ms since last
//! contact`; `-` is "not known here". The leader knows every member's caught-up slot (from their
//! heartbeat answers); a follower knows its own and the leader's. Readers skip pairs they do not
//! know and fields beyond the five, so a newer node may add either.

use serde::Serialize;

use crate::server::members::MemberChanged;
use crate::server::{MemberAddr, NodeStatus};

/// One member in a [`MemberList`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    /// The member's id: stable for its life, never reused.
    pub id: u16,
    /// The address its peers reach it at.
    pub addr: String,
    /// "voter".
    pub role: String,
    /// The slot it has caught up to (its decided prefix), if the answering node knows it.
    pub caught_up_slot: Option<u64>,
    /// How long ago the answering node last heard from it (0 for itself), if ever.
    pub last_contact_ms_ago: Option<u64>,
}

/// The members as one node sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberList {
    /// The leader's id, if the answering node knows one.
    pub leader: Option<u16>,
    /// The answering node's id.
    #[serde(rename = "self")]
    pub self_id: u16,
    /// Every member, by id.
    pub members: Vec<MemberInfo>,
}

/// The shown value of an unknown field.
const UNKNOWN: &str = "-";
/// The fields of one `member=` pair, in order.
const MEMBER_FIELDS: usize = 5;

impl MemberList {
    /// What a node answers, from its own view.
    pub fn of_node(status: &NodeStatus) -> MemberList {
        let mut members: Vec<MemberInfo> = status
            .members
            .iter()
            .map(|m| MemberInfo {
                id: m.id,
                addr: m.addr.clone(),
                role: m.role.clone(),
                caught_up_slot: m.decided,
                last_contact_ms_ago: m.last_heard_ms_ago,
            })
            .collect();
        members.sort_by_key(|m| m.id);
        MemberList {
            leader: status.leader_id,
            self_id: status.node_id,
            members,
        }
    }

    /// The member with this id.
    pub fn member(&self, id: u16) -> Option<&MemberInfo> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The line (without its `\n`).
    pub fn encode(&self) -> String {
        let shown = |n: Option<u64>| n.map_or_else(|| UNKNOWN.to_string(), |n| n.to_string());
        let mut line = format!(
            "leader={} self={}",
            shown(self.leader.map(u64::from)),
            self.self_id
        );
        for m in &self.members {
            line.push_str(&format!(
                " member={},{},{},{},{}",
                m.id,
                m.addr,
                m.role,
                shown(m.caught_up_slot),
                shown(m.last_contact_ms_ago)
            ));
        }
        line
    }

    /// Reads a `MEMBERS` line; the error names the first pair that is malformed.
    pub fn parse(line: &[u8]) -> Result<MemberList, String> {
        let text =
            std::str::from_utf8(line).map_err(|_| "members line is not UTF-8".to_string())?;
        let (mut leader, mut self_id, mut members) = (None, None, Vec::new());
        for (name, value) in text.split(' ').filter_map(|pair| pair.split_once('=')) {
            match name {
                "leader" => leader = Some(optional(value, "leader", text)?),
                "self" => self_id = Some(number(value, "self", text)?),
                "member" => members.push(member(value, text)?),
                _ => {}
            }
        }
        let leader = leader.ok_or_else(|| format!("members line lacks 'leader': {text}"))?;
        Ok(MemberList {
            leader: leader
                .map(|id| u16::try_from(id).map_err(|_| format!("leader id out of range: {text}")))
                .transpose()?,
            self_id: u16::try_from(
                self_id.ok_or_else(|| format!("members line lacks 'self': {text}"))?,
            )
            .map_err(|_| format!("self id out of range: {text}"))?,
            members,
        })
    }
}

/// The answer to `MEMBER ADD` (and `POST /_members`): what a node that joins needs to know.
/// Its id, the cluster's id, the members the cluster was created with (its membership history
/// starts from them) and the members in force now (whom it reaches until it has caught up).
///
/// ```text
/// id=3 addr=127.0.0.1:3030 effective=8203 cluster=0000c0ffee000001 first=0,127.0.0.1:3000
/// first=1,127.0.0.1:3010 peer=0,127.0.0.1:3000 peer=1,127.0.0.1:3010 peer=3,127.0.0.1:3030
/// ```
/// (one line on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberAdded {
    pub id: u16,
    pub addr: String,
    pub effective_slot: u64,
    pub cluster_id: String,
    pub first_members: Vec<MemberAddr>,
    pub members: Vec<MemberAddr>,
}

impl MemberAdded {
    /// The answer to an add that was decided, from the answering node's view.
    pub fn of(changed: &MemberChanged, status: &NodeStatus) -> MemberAdded {
        let addr = changed.addr.clone().unwrap_or_default();
        let mut members: Vec<MemberAddr> = status
            .members
            .iter()
            .map(|m| MemberAddr {
                id: m.id,
                addr: m.addr.clone(),
            })
            .collect();
        if !members.iter().any(|m| m.id == changed.id) {
            members.push(MemberAddr {
                id: changed.id,
                addr: addr.clone(),
            });
        }
        members.sort_by_key(|m| m.id);
        MemberAdded {
            id: changed.id,
            addr,
            effective_slot: changed.effective_slot,
            cluster_id: status.cluster_id.clone(),
            first_members: status.first_members.clone(),
            members,
        }
    }

    /// The line (without its `\n`).
    pub fn encode(&self) -> String {
        let mut line = format!(
            "id={} addr={} effective={} cluster={}",
            self.id, self.addr, self.effective_slot, self.cluster_id
        );
        for m in &self.first_members {
            line.push_str(&format!(" first={},{}", m.id, m.addr));
        }
        for m in &self.members {
            line.push_str(&format!(" peer={},{}", m.id, m.addr));
        }
        line
    }

    /// Reads a `MEMBER ADD` answer; the error names what is missing or malformed.
    pub fn parse(line: &[u8]) -> Result<MemberAdded, String> {
        let text = std::str::from_utf8(line).map_err(|_| "the line is not UTF-8".to_string())?;
        let (mut id, mut addr, mut effective, mut cluster) = (None, None, None, None);
        let (mut first, mut members) = (Vec::new(), Vec::new());
        let member_addr = |value: &str| -> Result<MemberAddr, String> {
            let (id, addr) = value
                .split_once(',')
                .ok_or_else(|| format!("a member needs 'id,address': {text}"))?;
            Ok(MemberAddr {
                id: u16::try_from(number(id, "member id", text)?)
                    .map_err(|_| format!("member id out of range: {text}"))?,
                addr: addr.to_string(),
            })
        };
        for (name, value) in text.split(' ').filter_map(|pair| pair.split_once('=')) {
            match name {
                "id" => id = Some(number(value, "id", text)?),
                "addr" => addr = Some(value.to_string()),
                "effective" => effective = Some(number(value, "effective", text)?),
                "cluster" => cluster = Some(value.to_string()),
                "first" => first.push(member_addr(value)?),
                "peer" => members.push(member_addr(value)?),
                _ => {}
            }
        }
        let missing = |what: &str| format!("the answer lacks '{what}': {text}");
        Ok(MemberAdded {
            id: u16::try_from(id.ok_or_else(|| missing("id"))?)
                .map_err(|_| format!("id out of range: {text}"))?,
            addr: addr.ok_or_else(|| missing("addr"))?,
            effective_slot: effective.ok_or_else(|| missing("effective"))?,
            cluster_id: cluster.ok_or_else(|| missing("cluster"))?,
            first_members: first,
            members,
        })
    }
}

fn number(value: &str, what: &str, line: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("members field '{what}' is not a number: {line}"))
}

fn optional(value: &str, what: &str, line: &str) -> Result<Option<u64>, String> {
    if value == UNKNOWN {
        return Ok(None);
    }
    number(value, what, line).map(Some)
}

fn member(value: &str, line: &str) -> Result<MemberInfo, String> {
    let fields: Vec<&str> = value.split(',').collect();
    if fields.len() < MEMBER_FIELDS {
        return Err(format!(
            "a member pair needs {MEMBER_FIELDS} comma-separated fields: {line}"
        ));
    }
    Ok(MemberInfo {
        id: u16::try_from(number(fields[0], "member id", line)?)
            .map_err(|_| format!("member id out of range: {line}"))?,
        addr: fields[1].to_string(),
        role: fields[2].to_string(),
        caught_up_slot: optional(fields[3], "caught-up slot", line)?,
        last_contact_ms_ago: optional(fields[4], "last contact", line)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list() -> MemberList {
        MemberList {
            leader: Some(0),
            self_id: 1,
            members: vec![
                MemberInfo {
                    id: 0,
                    addr: "127.0.0.1:3000".into(),
                    role: "voter".into(),
                    caught_up_slot: Some(812),
                    last_contact_ms_ago: Some(3),
                },
                MemberInfo {
                    id: 7,
                    addr: "[::1]:3010".into(),
                    role: "voter".into(),
                    caught_up_slot: None,
                    last_contact_ms_ago: None,
                },
            ],
        }
    }

    #[test]
    fn the_line_names_every_member() {
        assert_eq!(
            list().encode(),
            "leader=0 self=1 member=0,127.0.0.1:3000,voter,812,3 member=7,[::1]:3010,voter,-,-"
        );
        assert_eq!(MemberList::parse(list().encode().as_bytes()), Ok(list()));
    }

    #[test]
    fn newer_pairs_and_fields_are_skipped() {
        let line = "leader=- self=1 term=9 member=0,127.0.0.1:3000,learner,5,1,extra";
        let parsed = MemberList::parse(line.as_bytes()).expect("parses");
        assert_eq!(parsed.leader, None);
        assert_eq!(parsed.member(0).map(|m| m.role.as_str()), Some("learner"));
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        for (line, reason) in [
            ("self=1", "lacks 'leader'"),
            ("leader=0", "lacks 'self'"),
            ("leader=x self=1", "'leader' is not a number"),
            ("leader=0 self=1 member=0,a,voter", "5 comma-separated"),
            ("leader=0 self=1 member=70000,a,voter,-,-", "out of range"),
        ] {
            let err = MemberList::parse(line.as_bytes()).expect_err(line);
            assert!(err.contains(reason), "{line}: {err}");
        }
    }

    proptest! {
        #[test]
        fn any_list_reads_back(
            leader in proptest::option::of(any::<u16>()),
            self_id in any::<u16>(),
            members in proptest::collection::vec(
                (any::<u16>(), "[0-9a-f:.\\[\\]]{1,40}", "[a-z]{1,8}",
                 proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>())),
                0..9,
            ),
        ) {
            let list = MemberList {
                leader,
                self_id,
                members: members
                    .into_iter()
                    .map(|(id, addr, role, caught_up_slot, last_contact_ms_ago)| MemberInfo {
                        id, addr, role, caught_up_slot, last_contact_ms_ago,
                    })
                    .collect(),
            };
            prop_assert_eq!(MemberList::parse(list.encode().as_bytes()), Ok(list));
        }
    }
}
