//! The line protocol's replies, parsed: pure functions from one reply line to a [`Reply`], and
//! the `STATUS` line to a [`Status`]. No IO, so they are tested byte by byte here.
//!
//! The reply grammar is the server's (see [`crate::server::line`]): `OK [<revision>]`,
//! `VALUE <value>`, `NOT_FOUND`, `CONFLICT <revision>`, `PONG`, `ERR <reason>`, and for
//! `STATUS` one line of `name=value` pairs.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::paxos::types::Revision;

/// One reply line, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `OK` (a delete) or `OK <revision>` (a put or a successful compare-and-swap).
    Ok(Option<Revision>),
    /// `VALUE <value>`.
    Value(Bytes),
    /// `NOT_FOUND`.
    NotFound,
    /// `CONFLICT <current revision>`.
    Conflict(Revision),
    /// `PONG`.
    Pong,
    /// `ERR <reason>`, with the reason classified.
    Err(ServerError),
    /// Anything else (the `STATUS` line is one).
    Other(Bytes),
}

/// An `ERR` reply's reason, classified by the prefixes of the server's error texts
/// ([`crate::server::StoreError`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServerError {
    /// `no quorum: ...`: not proposed.
    NoQuorum,
    /// `outcome unknown: ...`: proposed, not confirmed.
    OutcomeUnknown(String),
    /// `unavailable: ...` or `shutting down`: this node cannot serve now; not proposed.
    Unavailable(String),
    /// `idle timeout` or `too many connections`: the node closes the connection without having
    /// read (or served) the request this line answers.
    Closing(String),
    /// Anything else (a malformed request, a too large value, ...).
    Other(String),
}

/// Classifies one reply line (without its `\n`; a trailing `\r` is dropped).
pub(crate) fn parse_reply(line: &[u8]) -> Reply {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line {
        b"OK" => return Reply::Ok(None),
        b"NOT_FOUND" => return Reply::NotFound,
        b"PONG" => return Reply::Pong,
        _ => {}
    }
    if let Some(value) = line.strip_prefix(b"VALUE ") {
        return Reply::Value(Bytes::copy_from_slice(value));
    }
    if let Some(rest) = line.strip_prefix(b"OK ") {
        if let Some(revision) = parse_revision(rest) {
            return Reply::Ok(Some(revision));
        }
    }
    if let Some(rest) = line.strip_prefix(b"CONFLICT ") {
        if let Some(revision) = parse_revision(rest) {
            return Reply::Conflict(revision);
        }
    }
    if let Some(reason) = line.strip_prefix(b"ERR ") {
        return Reply::Err(classify_error(&String::from_utf8_lossy(reason)));
    }
    Reply::Other(Bytes::copy_from_slice(line))
}

fn parse_revision(bytes: &[u8]) -> Option<Revision> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn classify_error(reason: &str) -> ServerError {
    if reason.starts_with("no quorum") {
        ServerError::NoQuorum
    } else if reason.starts_with("outcome unknown") {
        ServerError::OutcomeUnknown(reason.to_string())
    } else if let Some(why) = reason.strip_prefix("unavailable: ") {
        ServerError::Unavailable(why.to_string())
    } else if reason.starts_with("shutting down") {
        ServerError::Unavailable(reason.to_string())
    } else if reason.starts_with("idle timeout") || reason.starts_with("too many connections") {
        ServerError::Closing(reason.to_string())
    } else {
        ServerError::Other(reason.to_string())
    }
}

/// A node's state as its `STATUS` line reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// The node's advertised address.
    pub node: String,
    /// The node's id (its index in the sorted member list).
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

/// Parses the `STATUS` reply line; `None` names the first field that is missing or malformed.
pub(crate) fn parse_status(line: &[u8]) -> Result<Status, String> {
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
        leader: (leader != "-").then_some(leader),
        ballot: text_field("ballot")?,
        decided: number("decided")?,
        applied: number("applied")?,
        digest: text_field("digest")?,
        members: number("members")?,
        heard: number("heard")?,
        healthy: text_field("healthy")? == "true",
        fields: fields.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply(b"OK"), Reply::Ok(None));
        assert_eq!(parse_reply(b"OK 17"), Reply::Ok(Some(17)));
        assert_eq!(parse_reply(b"OK 17\r"), Reply::Ok(Some(17)));
        assert_eq!(parse_reply(b"NOT_FOUND"), Reply::NotFound);
        assert_eq!(parse_reply(b"PONG"), Reply::Pong);
        assert_eq!(parse_reply(b"CONFLICT 3"), Reply::Conflict(3));
        assert_eq!(
            parse_reply(b"VALUE hello world"),
            Reply::Value(Bytes::from_static(b"hello world"))
        );
        assert_eq!(parse_reply(b"VALUE "), Reply::Value(Bytes::new()));
        assert_eq!(
            parse_reply(b"OK x"),
            Reply::Other(Bytes::from_static(b"OK x"))
        );
        assert_eq!(
            parse_reply(b"CONFLICT -1"),
            Reply::Other(Bytes::from_static(b"CONFLICT -1"))
        );
    }

    #[test]
    fn errors_are_classified_by_the_servers_texts() {
        use crate::server::StoreError;
        let err = |e: StoreError| parse_reply(format!("ERR {e}").as_bytes());
        assert_eq!(err(StoreError::NoQuorum), Reply::Err(ServerError::NoQuorum));
        assert!(matches!(
            err(StoreError::OutcomeUnknown),
            Reply::Err(ServerError::OutcomeUnknown(_))
        ));
        assert_eq!(
            err(StoreError::Unavailable("disk full".into())),
            Reply::Err(ServerError::Unavailable("disk full".into()))
        );
        assert!(matches!(
            err(StoreError::ShuttingDown),
            Reply::Err(ServerError::Unavailable(_))
        ));
        assert!(matches!(
            parse_reply(b"ERR idle timeout, closing"),
            Reply::Err(ServerError::Closing(_))
        ));
        assert!(matches!(
            parse_reply(b"ERR too many connections"),
            Reply::Err(ServerError::Closing(_))
        ));
        assert_eq!(
            parse_reply(b"ERR invalid key: empty"),
            Reply::Err(ServerError::Other("invalid key: empty".into()))
        );
    }

    #[test]
    fn status_line() {
        let line = b"node=127.0.0.1:3000 id=0 role=leader leader=127.0.0.1:3000 ballot=2.0 \
decided=12 applied=12 digest=00000000000000ab members=3 heard=3 healthy=true";
        let status = parse_status(line).expect("parses");
        assert_eq!(status.node, "127.0.0.1:3000");
        assert_eq!(status.role, "leader");
        assert_eq!(status.leader.as_deref(), Some("127.0.0.1:3000"));
        assert_eq!((status.decided, status.members, status.heard), (12, 3, 3));
        assert!(status.healthy);
        let no_leader = parse_status(
            b"node=a id=1 role=follower leader=- ballot=0.0 decided=0 applied=0 digest=0000000000000000 members=3 heard=1 healthy=false",
        )
        .expect("parses");
        assert_eq!(no_leader.leader, None);
        assert!(parse_status(b"node=a id=x").is_err());
    }
}
