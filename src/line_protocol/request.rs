//! The line protocol's parser: pure functions from bytes to requests, no IO, so it can be fuzzed.
//!
//! Parsing happens in two steps, as in mini-redis: [`scan_line`] finds the next complete line in
//! a buffer and tells "incomplete, read more" apart from "too long, discard"; [`parse_request`]
//! turns one complete line into a [`Request`] or a [`ParseError`], which becomes an `ERR` reply
//! (`line_protocol::reply`). [`encode_request`] is the client's side. The grammar (one request per line, LF or CRLF):
//!
//! ```text
//! PUT <key> <value>              GET <key>        DEL <key>
//! CAS <key> <revision> <value>   PING   STATUS   MEMBERS   LEADER TRANSFER <member id>
//! MEMBER ADD <host:port>   MEMBER PROMOTE <member id>   MEMBER REMOVE <member id> [FORCE]
//! HELP   QUIT
//! ```
//!
//! Command words are case-insensitive ASCII. Fields are separated by exactly one space. The value
//! is the rest of the line after one space: it may contain spaces and any byte except newline
//! and NUL (a value ending in `\r` loses it, since `\r\n` ends a line). Keys follow
//! [`validate_line_key`].

use bytes::Bytes;

use crate::paxos::types::Revision;
use crate::server::{validate_line_key, KeyError, VALUE_BYTES_MAX};

/// One request of the line protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Put {
        key: Bytes,
        value: Bytes,
    },
    Get {
        key: Bytes,
    },
    Del {
        key: Bytes,
    },
    /// Write only if the key's revision is `revision` (0: only if absent).
    Cas {
        key: Bytes,
        revision: Revision,
        value: Bytes,
    },
    Ping,
    Status,
    /// List the members (`line_protocol::members`).
    Members,
    /// Move leadership to member `to`.
    TransferLeader {
        to: u16,
    },
    /// Add a learner at `addr` (its `host:port`).
    MemberAdd {
        addr: String,
    },
    /// Promote learner `id` to voter.
    MemberPromote {
        id: u16,
    },
    /// Remove member `id`; `force` skips the reachable-majority check.
    MemberRemove {
        id: u16,
        force: bool,
    },
    Help,
    Quit,
}

/// What [`scan_line`] found at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan<'a> {
    /// No newline yet and the line may still fit: read more.
    Incomplete,
    /// A complete line without its terminator; `consumed` bytes (with `\n`) can be dropped.
    Line { line: &'a [u8], consumed: usize },
    /// The line is longer than the limit. `Some(n)`: it ends within the buffer, drop `n` bytes.
    /// `None`: it does not end yet, drop the whole buffer and keep discarding up to the next
    /// newline.
    TooLong { consumed: Option<usize> },
}

/// Finds the first line in `buf`. A line is at most `line_bytes_max` bytes, not counting its
/// `\n` or `\r\n` terminator.
pub fn scan_line(buf: &[u8], line_bytes_max: usize) -> Scan<'_> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(newline) => {
            let mut line = &buf[..newline];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.len() > line_bytes_max {
                Scan::TooLong {
                    consumed: Some(newline + 1),
                }
            } else {
                Scan::Line {
                    line,
                    consumed: newline + 1,
                }
            }
        }
        // One more byte than the limit may still be the `\r` of a `\r\n`.
        None if buf.len() > line_bytes_max.saturating_add(1) => Scan::TooLong { consumed: None },
        None => Scan::Incomplete,
    }
}

/// Why a line is not a valid request. The `Display` text names the problem; the `ERR` reply
/// carries its kind and [`ParseError::detail`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty line")]
    Empty,
    #[error("NUL bytes are not allowed")]
    Nul,
    #[error("command word is not valid UTF-8")]
    CommandNotUtf8,
    #[error("unknown command '{0}' (try HELP)")]
    UnknownCommand(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("bad revision: expected a decimal number")]
    BadRevision,
    #[error("value too large: {len} bytes, the maximum is {VALUE_BYTES_MAX}")]
    ValueTooLarge { len: usize },
    #[error("{0}")]
    Key(#[from] KeyError),
}

impl ParseError {
    /// What is wrong, without what the error kind already says.
    pub fn detail(&self) -> String {
        match self {
            ParseError::UnknownCommand(word) => format!("'{word}' (try HELP)"),
            ParseError::ValueTooLarge { len } => {
                format!("{len} bytes, the maximum is {VALUE_BYTES_MAX}")
            }
            ParseError::Key(key) => key.detail(),
            other => other.to_string(),
        }
    }
}

/// The longest command word shown back in an "unknown command" error.
const UNKNOWN_COMMAND_SHOWN_CHARS_MAX: usize = 32;

/// The usage line of each command, as the error of a malformed request and in `HELP`.
pub const USAGE_PUT: &str = "PUT <key> <value>";
pub const USAGE_GET: &str = "GET <key>";
pub const USAGE_DEL: &str = "DEL <key>";
pub const USAGE_CAS: &str = "CAS <key> <revision> <value>";
pub const USAGE_LEADER: &str = "LEADER TRANSFER <member id>";
pub const USAGE_MEMBER: &str =
    "MEMBER ADD <host:port> | MEMBER PROMOTE <member id> | MEMBER REMOVE <member id> [FORCE]";

/// The one-line reply to `HELP`.
pub const HELP_TEXT: &str = "commands: PUT <key> <value> | GET <key> | DEL <key> | \
CAS <key> <revision> <value> (revision 0: create only) | PING | STATUS | MEMBERS | LEADER TRANSFER <member id> | \
MEMBER ADD <host:port> | MEMBER PROMOTE <member id> | MEMBER REMOVE <member id> [FORCE] | HELP | QUIT";

/// Splits at the first space: (before, Some(after)) or (all, None).
fn split_space(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|&b| b == b' ') {
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
        None => (bytes, None),
    }
}

fn key(bytes: &[u8]) -> Result<Bytes, ParseError> {
    validate_line_key(bytes)?;
    Ok(Bytes::copy_from_slice(bytes))
}

fn value(bytes: &[u8]) -> Result<Bytes, ParseError> {
    if bytes.len() > VALUE_BYTES_MAX {
        return Err(ParseError::ValueTooLarge { len: bytes.len() });
    }
    Ok(Bytes::copy_from_slice(bytes))
}

fn revision(bytes: &[u8]) -> Result<Revision, ParseError> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadRevision);
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::BadRevision)
}

/// Parses one complete line (without its terminator).
pub fn parse_request(line: &[u8]) -> Result<Request, ParseError> {
    if line.is_empty() {
        return Err(ParseError::Empty);
    }
    if line.contains(&0) {
        return Err(ParseError::Nul);
    }
    let (word, args) = split_space(line);
    let word = std::str::from_utf8(word).map_err(|_| ParseError::CommandNotUtf8)?;
    let upper = word.to_ascii_uppercase();
    match upper.as_str() {
        "PUT" => {
            let (k, v) = split_space(args.ok_or(ParseError::Usage(USAGE_PUT))?);
            let v = v.ok_or(ParseError::Usage(USAGE_PUT))?;
            Ok(Request::Put {
                key: key(k)?,
                value: value(v)?,
            })
        }
        "GET" | "DEL" => {
            let usage = if upper == "GET" { USAGE_GET } else { USAGE_DEL };
            let k = args.ok_or(ParseError::Usage(usage))?;
            if k.contains(&b' ') {
                return Err(ParseError::Usage(usage));
            }
            let k = key(k)?;
            Ok(if upper == "GET" {
                Request::Get { key: k }
            } else {
                Request::Del { key: k }
            })
        }
        "CAS" => {
            let (k, rest) = split_space(args.ok_or(ParseError::Usage(USAGE_CAS))?);
            let (r, v) = split_space(rest.ok_or(ParseError::Usage(USAGE_CAS))?);
            let v = v.ok_or(ParseError::Usage(USAGE_CAS))?;
            let k = key(k)?;
            Ok(Request::Cas {
                key: k,
                revision: revision(r)?,
                value: value(v)?,
            })
        }
        "LEADER" => {
            let (sub, id) = split_space(args.ok_or(ParseError::Usage(USAGE_LEADER))?);
            if !sub.eq_ignore_ascii_case(b"TRANSFER") {
                return Err(ParseError::Usage(USAGE_LEADER));
            }
            let id = id.ok_or(ParseError::Usage(USAGE_LEADER))?;
            let to = std::str::from_utf8(id)
                .ok()
                .and_then(|t| t.parse::<u16>().ok())
                .ok_or(ParseError::Usage(USAGE_LEADER))?;
            Ok(Request::TransferLeader { to })
        }
        "MEMBER" => {
            let usage = ParseError::Usage(USAGE_MEMBER);
            let (sub, rest) = split_space(args.ok_or(usage.clone())?);
            let rest = rest.ok_or(usage.clone())?;
            let text = std::str::from_utf8(rest).map_err(|_| usage.clone())?;
            let id = |t: &str| t.parse::<u16>().map_err(|_| usage.clone());
            let words: Vec<&str> = text.split(' ').collect();
            match (sub.to_ascii_uppercase().as_slice(), words.as_slice()) {
                (b"ADD", [addr]) if !addr.is_empty() => Ok(Request::MemberAdd {
                    addr: (*addr).to_string(),
                }),
                (b"PROMOTE", [n]) => Ok(Request::MemberPromote { id: id(n)? }),
                (b"REMOVE", [n]) => Ok(Request::MemberRemove {
                    id: id(n)?,
                    force: false,
                }),
                (b"REMOVE", [n, force]) if force.eq_ignore_ascii_case("FORCE") => {
                    Ok(Request::MemberRemove {
                        id: id(n)?,
                        force: true,
                    })
                }
                _ => Err(usage),
            }
        }
        "PING" | "STATUS" | "MEMBERS" | "HELP" | "QUIT" => {
            if args.is_some() {
                return Err(ParseError::Usage(match upper.as_str() {
                    "PING" => "PING",
                    "STATUS" => "STATUS",
                    "MEMBERS" => "MEMBERS",
                    "HELP" => "HELP",
                    _ => "QUIT",
                }));
            }
            Ok(match upper.as_str() {
                "PING" => Request::Ping,
                "STATUS" => Request::Status,
                "MEMBERS" => Request::Members,
                "HELP" => Request::Help,
                _ => Request::Quit,
            })
        }
        _ => Err(ParseError::UnknownCommand(
            word.chars()
                .take(UNKNOWN_COMMAND_SHOWN_CHARS_MAX)
                .filter(|c| !c.is_control())
                .collect(),
        )),
    }
}

/// Writes `request` as a line (with `\n`), the inverse of [`parse_request`]; used by tests and
/// clients.
pub fn encode_request(request: &Request, out: &mut Vec<u8>) {
    match request {
        Request::Put { key, value } => {
            out.extend_from_slice(b"PUT ");
            out.extend_from_slice(key);
            out.push(b' ');
            out.extend_from_slice(value);
        }
        Request::Get { key } => {
            out.extend_from_slice(b"GET ");
            out.extend_from_slice(key);
        }
        Request::Del { key } => {
            out.extend_from_slice(b"DEL ");
            out.extend_from_slice(key);
        }
        Request::Cas {
            key,
            revision,
            value,
        } => {
            out.extend_from_slice(b"CAS ");
            out.extend_from_slice(key);
            out.extend_from_slice(format!(" {revision} ").as_bytes());
            out.extend_from_slice(value);
        }
        Request::Ping => out.extend_from_slice(b"PING"),
        Request::Status => out.extend_from_slice(b"STATUS"),
        Request::Members => out.extend_from_slice(b"MEMBERS"),
        Request::TransferLeader { to } => {
            out.extend_from_slice(format!("LEADER TRANSFER {to}").as_bytes())
        }
        Request::MemberAdd { addr } => {
            out.extend_from_slice(format!("MEMBER ADD {addr}").as_bytes())
        }
        Request::MemberPromote { id } => {
            out.extend_from_slice(format!("MEMBER PROMOTE {id}").as_bytes())
        }
        Request::MemberRemove { id, force } => out.extend_from_slice(
            format!("MEMBER REMOVE {id}{}", if *force { " FORCE" } else { "" }).as_bytes(),
        ),
        Request::Help => out.extend_from_slice(b"HELP"),
        Request::Quit => out.extend_from_slice(b"QUIT"),
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn scanning() {
        assert_eq!(scan_line(b"PING", 10), Scan::Incomplete);
        assert_eq!(
            scan_line(b"PING\r\nGET", 10),
            Scan::Line {
                line: b"PING",
                consumed: 6
            }
        );
        assert_eq!(
            scan_line(b"PING\nGET", 10),
            Scan::Line {
                line: b"PING",
                consumed: 5
            }
        );
        // Exactly at the limit, with CRLF, still fits.
        assert!(matches!(scan_line(b"0123\r", 4), Scan::Incomplete));
        assert!(matches!(scan_line(b"0123\r\n", 4), Scan::Line { .. }));
        assert_eq!(
            scan_line(b"01234\n", 4),
            Scan::TooLong { consumed: Some(6) }
        );
        assert_eq!(scan_line(b"012345", 4), Scan::TooLong { consumed: None });
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse_request(b"put k hello world"),
            Ok(Request::Put {
                key: b("k"),
                value: b("hello world")
            })
        );
        assert_eq!(
            parse_request(b"PUT k "),
            Ok(Request::Put {
                key: b("k"),
                value: b("")
            })
        );
        assert_eq!(parse_request(b"Get k"), Ok(Request::Get { key: b("k") }));
        assert_eq!(parse_request(b"DEL k"), Ok(Request::Del { key: b("k") }));
        assert_eq!(
            parse_request(b"CAS k 0 v v"),
            Ok(Request::Cas {
                key: b("k"),
                revision: 0,
                value: b("v v")
            })
        );
        assert_eq!(parse_request(b"ping"), Ok(Request::Ping));
        assert_eq!(parse_request(b"STATUS"), Ok(Request::Status));
        assert_eq!(parse_request(b"members"), Ok(Request::Members));
        assert_eq!(
            parse_request(b"member add 10.0.0.4:3000"),
            Ok(Request::MemberAdd {
                addr: "10.0.0.4:3000".into()
            })
        );
        assert_eq!(
            parse_request(b"MEMBER REMOVE 4 force"),
            Ok(Request::MemberRemove { id: 4, force: true })
        );
        assert_eq!(
            parse_request(b"MEMBER PROMOTE 4"),
            Ok(Request::MemberPromote { id: 4 })
        );
        for bad in [
            &b"MEMBER"[..],
            b"MEMBER ADD",
            b"MEMBER PROMOTE x",
            b"MEMBER REMOVE 4 now",
            b"MEMBER JOIN 4",
        ] {
            assert_eq!(
                parse_request(bad),
                Err(ParseError::Usage(USAGE_MEMBER)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_request(b"leader transfer 7"),
            Ok(Request::TransferLeader { to: 7 })
        );
        assert_eq!(parse_request(b"HELP"), Ok(Request::Help));
        assert_eq!(parse_request(b"quit"), Ok(Request::Quit));
    }

    #[test]
    fn errors() {
        let err = |line: &[u8]| parse_request(line).unwrap_err().to_string();
        assert_eq!(err(b""), "empty line");
        assert_eq!(err(b"FOO k"), "unknown command 'FOO' (try HELP)");
        assert_eq!(err(b"PUT k"), "usage: PUT <key> <value>");
        assert_eq!(err(b"PUT"), "usage: PUT <key> <value>");
        assert_eq!(err(b"GET"), "usage: GET <key>");
        for line in [
            &b"LEADER"[..],
            b"LEADER TRANSFER",
            b"LEADER MOVE 1",
            b"LEADER TRANSFER x",
            b"LEADER TRANSFER 70000",
            b"LEADER TRANSFER 1 2",
        ] {
            assert_eq!(err(line), "usage: LEADER TRANSFER <member id>", "{line:?}");
        }
        assert_eq!(err(b"MEMBERS all"), "usage: MEMBERS");
        assert_eq!(err(b"GET a b"), "usage: GET <key>");
        assert_eq!(err(b"CAS k 1"), "usage: CAS <key> <revision> <value>");
        assert_eq!(err(b"CAS k x v"), "bad revision: expected a decimal number");
        assert_eq!(
            err(b"CAS k -1 v"),
            "bad revision: expected a decimal number"
        );
        assert_eq!(
            err(b"CAS k 99999999999999999999999 v"),
            "bad revision: expected a decimal number"
        );
        assert_eq!(err(b"PUT k a\0b"), "NUL bytes are not allowed");
        assert_eq!(err(b"\xffPUT k v"), "command word is not valid UTF-8");
        assert_eq!(err(b"PING x"), "usage: PING");
        assert_eq!(
            err(b"PUT _k v"),
            "invalid key: keys starting with '_' are reserved"
        );
        assert_eq!(err(b"PUT  v"), "invalid key: empty");
        assert_eq!(
            err(b"GET a\x01"),
            "invalid key: spaces and control characters are not allowed"
        );
        let long = [b"PUT k ".as_slice(), &vec![b'v'; VALUE_BYTES_MAX + 1]].concat();
        assert!(err(&long).starts_with("value too large"));
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let key = "[a-zA-Z0-9/.:-]{1,20}".prop_map(|s| Bytes::from(s.into_bytes()));
        // Any byte but NUL and newline; not ending in '\r' (eaten as part of CRLF).
        let value = prop::collection::vec(any::<u8>(), 0..50).prop_map(|mut v| {
            v.retain(|&b| b != 0 && b != b'\n');
            while v.last() == Some(&b'\r') {
                v.pop();
            }
            Bytes::from(v)
        });
        prop_oneof![
            (key.clone(), value.clone()).prop_map(|(key, value)| Request::Put { key, value }),
            key.clone().prop_map(|key| Request::Get { key }),
            key.clone().prop_map(|key| Request::Del { key }),
            (key, any::<u64>(), value).prop_map(|(key, revision, value)| Request::Cas {
                key,
                revision,
                value
            }),
            Just(Request::Ping),
            Just(Request::Status),
            Just(Request::Members),
            any::<u16>().prop_map(|to| Request::TransferLeader { to }),
            "[a-z0-9.]{1,20}:[0-9]{1,5}".prop_map(|addr| Request::MemberAdd { addr }),
            any::<u16>().prop_map(|id| Request::MemberPromote { id }),
            (any::<u16>(), any::<bool>())
                .prop_map(|(id, force)| Request::MemberRemove { id, force }),
            Just(Request::Help),
            Just(Request::Quit),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), max in 0usize..64) {
            let _ = parse_request(&bytes);
            match scan_line(&bytes, max) {
                Scan::Line { line, consumed } => {
                    prop_assert!(line.len() <= max && consumed <= bytes.len());
                    let _ = parse_request(line);
                }
                Scan::TooLong { consumed: Some(n) } => prop_assert!(n <= bytes.len()),
                Scan::TooLong { consumed: None } => prop_assert!(bytes.len() > max + 1),
                Scan::Incomplete => prop_assert!(bytes.len() <= max + 1),
            }
        }

        #[test]
        fn encode_then_parse_round_trips(request in arb_request()) {
            let mut line = Vec::new();
            encode_request(&request, &mut line);
            match scan_line(&line, usize::MAX) {
                Scan::Line { line: l, consumed } => {
                    prop_assert_eq!(consumed, line.len());
                    prop_assert_eq!(parse_request(l), Ok(request));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
