//! The line protocol's replies: [`Reply`] with its encoder (the server's side) and its parser
//! (the client's side), and the error kinds of `ERR` replies ([`ErrorKind`]): one word from a
//! fixed set, so that programs branch on the kind and never on the English message after it.

use std::fmt;

use bytes::Bytes;

use crate::line_protocol::request::ParseError;
use crate::paxos::types::Revision;
use crate::server::StoreError;

/// One reply line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `OK` (a delete) or `OK <revision>` (a put or a successful compare-and-swap).
    Ok(Option<Revision>),
    /// `VALUE <value>`; only values for which [`value_fits_line`] holds can be sent.
    Value(Bytes),
    /// `NOT_FOUND`.
    NotFound,
    /// `CONFLICT <current revision>`.
    Conflict(Revision),
    /// `PONG`.
    Pong,
    /// `BYE`, the answer to `QUIT`.
    Bye,
    /// `ERR <kind> <message>`.
    Err(ErrorReply),
    /// Any other line: the answers to `STATUS` ([`crate::line_protocol::Status`]) and `HELP`,
    /// which only the request they answer gives a meaning to.
    Text(Bytes),
}

/// What an `ERR` reply says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    /// For people; may change between versions. One line (newlines become spaces).
    pub message: String,
}

impl ErrorReply {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// The kind of an `ERR` reply. The words are part of the protocol: new kinds may be added, and a
/// client that does not know a word reads it as [`ErrorKind::Unrecognized`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// `no_quorum`: the node reaches no quorum; the request was not proposed (safe to retry).
    NoQuorum,
    /// `outcome_unknown`: the write was proposed but not confirmed in time; it may or may not
    /// have been applied (read the key before retrying).
    OutcomeUnknown,
    /// `unavailable`: this node cannot serve now (catching up, disk full, ...); not proposed,
    /// another node may serve it.
    Unavailable,
    /// `shutting_down`: the node is stopping; not proposed, another node may serve it.
    ShuttingDown,
    /// `too_large`: the command does not fit one replicated command.
    TooLarge,
    /// `bad_request`: the line is not a request (empty, NUL bytes, wrong arguments, ...).
    BadRequest,
    /// `unknown_command`: the first word is not a command.
    UnknownCommand,
    /// `invalid_key`: the key breaks the key rules.
    InvalidKey,
    /// `value_too_large`: the value is over the limit.
    ValueTooLarge,
    /// `line_too_long`: the line is over the limit; it was discarded up to its newline.
    LineTooLong,
    /// `value_has_newline`: the value cannot be shown on one line; read it over HTTP.
    ValueHasNewline,
    /// `too_many_connections`: the node refuses the connection and closes it.
    TooManyConnections,
    /// `idle_timeout`: the connection was idle too long; the node closes it.
    IdleTimeout,
    /// `refused`: the cluster decided not to make a membership change, and nothing changed
    /// (the message names the cause and the fix).
    Refused,
    /// An error word this version does not know (from a newer node); the whole text after
    /// `ERR ` is the message. Never sent.
    Unrecognized,
}

impl ErrorKind {
    /// Every kind a node sends.
    pub const SENT: [ErrorKind; 14] = [
        ErrorKind::NoQuorum,
        ErrorKind::OutcomeUnknown,
        ErrorKind::Unavailable,
        ErrorKind::ShuttingDown,
        ErrorKind::TooLarge,
        ErrorKind::BadRequest,
        ErrorKind::UnknownCommand,
        ErrorKind::InvalidKey,
        ErrorKind::ValueTooLarge,
        ErrorKind::LineTooLong,
        ErrorKind::ValueHasNewline,
        ErrorKind::TooManyConnections,
        ErrorKind::IdleTimeout,
        ErrorKind::Refused,
    ];

    /// The word on the wire.
    pub fn word(self) -> &'static str {
        match self {
            ErrorKind::NoQuorum => "no_quorum",
            ErrorKind::OutcomeUnknown => "outcome_unknown",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::UnknownCommand => "unknown_command",
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::ValueTooLarge => "value_too_large",
            ErrorKind::LineTooLong => "line_too_long",
            ErrorKind::ValueHasNewline => "value_has_newline",
            ErrorKind::TooManyConnections => "too_many_connections",
            ErrorKind::IdleTimeout => "idle_timeout",
            ErrorKind::Refused => "refused",
            ErrorKind::Unrecognized => "unrecognized",
        }
    }

    /// The kind a word names, if this version knows it.
    pub fn from_word(word: &str) -> Option<ErrorKind> {
        ErrorKind::SENT.into_iter().find(|kind| kind.word() == word)
    }

    /// Whether the node closes the connection after this reply without having read or served
    /// the request it stands in for.
    pub fn closes_connection(self) -> bool {
        matches!(self, ErrorKind::TooManyConnections | ErrorKind::IdleTimeout)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

impl From<&StoreError> for ErrorReply {
    fn from(error: &StoreError) -> ErrorReply {
        let kind = match error {
            StoreError::NoQuorum => ErrorKind::NoQuorum,
            StoreError::OutcomeUnknown => ErrorKind::OutcomeUnknown,
            StoreError::Unavailable(_) => ErrorKind::Unavailable,
            StoreError::ShuttingDown => ErrorKind::ShuttingDown,
            StoreError::TooLarge => ErrorKind::TooLarge,
        };
        ErrorReply::new(kind, error.detail())
    }
}

impl From<&ParseError> for ErrorReply {
    fn from(error: &ParseError) -> ErrorReply {
        let kind = match error {
            ParseError::Empty
            | ParseError::Nul
            | ParseError::CommandNotUtf8
            | ParseError::Usage(_)
            | ParseError::BadRevision => ErrorKind::BadRequest,
            ParseError::UnknownCommand(_) => ErrorKind::UnknownCommand,
            ParseError::ValueTooLarge { .. } => ErrorKind::ValueTooLarge,
            ParseError::Key(_) => ErrorKind::InvalidKey,
        };
        ErrorReply::new(kind, error.detail())
    }
}

/// Whether `value` survives a `VALUE` line: no newline in it, and no `\r` at its end (which the
/// reader takes for half of a CRLF).
pub fn value_fits_line(value: &[u8]) -> bool {
    !value.contains(&b'\n') && value.last() != Some(&b'\r')
}

impl Reply {
    /// Writes the reply as one line, with its `\n`. A [`Reply::Value`] must fit a line
    /// ([`value_fits_line`]); newlines in messages and texts become spaces.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Ok(None) => out.extend_from_slice(b"OK"),
            Reply::Ok(Some(revision)) => out.extend_from_slice(format!("OK {revision}").as_bytes()),
            Reply::Value(value) => {
                debug_assert!(value_fits_line(value), "a VALUE reply that is not one line");
                out.extend_from_slice(b"VALUE ");
                out.extend_from_slice(value);
            }
            Reply::NotFound => out.extend_from_slice(b"NOT_FOUND"),
            Reply::Conflict(current) => {
                out.extend_from_slice(format!("CONFLICT {current}").as_bytes());
            }
            Reply::Pong => out.extend_from_slice(b"PONG"),
            Reply::Bye => out.extend_from_slice(b"BYE"),
            Reply::Err(error) => {
                out.extend_from_slice(b"ERR ");
                out.extend_from_slice(error.kind.word().as_bytes());
                out.push(b' ');
                one_line(error.message.as_bytes(), out);
            }
            Reply::Text(text) => one_line(text, out),
        }
        out.push(b'\n');
    }

    /// The reply as one line, with its `\n`.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Appends `text` with line breaks replaced by spaces.
fn one_line(text: &[u8], out: &mut Vec<u8>) {
    out.extend(
        text.iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
}

/// Classifies one reply line (without its `\n`; a trailing `\r` is dropped).
pub fn parse_reply(line: &[u8]) -> Reply {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line {
        b"OK" => return Reply::Ok(None),
        b"NOT_FOUND" => return Reply::NotFound,
        b"PONG" => return Reply::Pong,
        b"BYE" => return Reply::Bye,
        _ => {}
    }
    if let Some(value) = line.strip_prefix(b"VALUE ") {
        return Reply::Value(Bytes::copy_from_slice(value));
    }
    if let Some(revision) = line.strip_prefix(b"OK ").and_then(parse_revision) {
        return Reply::Ok(Some(revision));
    }
    if let Some(revision) = line.strip_prefix(b"CONFLICT ").and_then(parse_revision) {
        return Reply::Conflict(revision);
    }
    if let Some(rest) = line.strip_prefix(b"ERR ") {
        let rest = String::from_utf8_lossy(rest);
        let (word, message) = rest.split_once(' ').unwrap_or((&rest, ""));
        return Reply::Err(match ErrorKind::from_word(word) {
            Some(kind) => ErrorReply::new(kind, message),
            None => ErrorReply::new(ErrorKind::Unrecognized, rest.as_ref()),
        });
    }
    Reply::Text(Bytes::copy_from_slice(line))
}

fn parse_revision(bytes: &[u8]) -> Option<Revision> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_line(line: &[u8]) -> Reply {
        let (last, body) = line.split_last().expect("a line");
        assert_eq!(*last, b'\n', "every reply ends with a newline");
        assert!(!body.contains(&b'\n'), "a reply is one line");
        parse_reply(body)
    }

    #[test]
    fn replies_read_as_written() {
        assert_eq!(parse_reply(b"OK"), Reply::Ok(None));
        assert_eq!(parse_reply(b"OK 17\r"), Reply::Ok(Some(17)));
        assert_eq!(parse_reply(b"CONFLICT 3"), Reply::Conflict(3));
        assert_eq!(parse_reply(b"VALUE "), Reply::Value(Bytes::new()));
        assert_eq!(
            parse_reply(b"OK x"),
            Reply::Text(Bytes::from_static(b"OK x"))
        );
        assert_eq!(
            parse_reply(b"CONFLICT -1"),
            Reply::Text(Bytes::from_static(b"CONFLICT -1"))
        );
        assert_eq!(
            parse_reply(b"ERR no_quorum the request was not proposed"),
            Reply::Err(ErrorReply::new(
                ErrorKind::NoQuorum,
                "the request was not proposed"
            ))
        );
        assert_eq!(
            parse_reply(b"ERR idle_timeout"),
            Reply::Err(ErrorReply::new(ErrorKind::IdleTimeout, ""))
        );
    }

    #[test]
    fn an_unknown_error_word_keeps_the_whole_text() {
        assert_eq!(
            parse_reply(b"ERR lease_expired lease 7 expired"),
            Reply::Err(ErrorReply::new(
                ErrorKind::Unrecognized,
                "lease_expired lease 7 expired"
            ))
        );
    }

    #[test]
    fn every_kind_has_its_own_word() {
        for kind in ErrorKind::SENT {
            assert_eq!(ErrorKind::from_word(kind.word()), Some(kind));
            assert!(kind
                .word()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        assert_eq!(ErrorKind::from_word(ErrorKind::Unrecognized.word()), None);
    }

    #[test]
    fn store_and_parse_errors_become_their_kinds() {
        let reply = |e: ErrorReply| parse_line(&Reply::Err(e).to_line());
        assert_eq!(
            reply((&StoreError::Unavailable("disk full".into())).into()),
            Reply::Err(ErrorReply::new(ErrorKind::Unavailable, "disk full"))
        );
        assert!(matches!(
            reply((&StoreError::ShuttingDown).into()),
            Reply::Err(ErrorReply {
                kind: ErrorKind::ShuttingDown,
                ..
            })
        ));
        let parsed = crate::line_protocol::parse_request(b"PUT _k v").unwrap_err();
        assert_eq!(
            reply((&parsed).into()),
            Reply::Err(ErrorReply::new(
                ErrorKind::InvalidKey,
                "keys starting with '_' are reserved"
            ))
        );
    }

    #[test]
    fn messages_and_texts_stay_on_one_line() {
        let error = Reply::Err(ErrorReply::new(ErrorKind::Unavailable, "two\nlines\r"));
        assert_eq!(error.to_line(), b"ERR unavailable two lines \n");
        assert_eq!(Reply::Text(Bytes::from_static(b"a\nb")).to_line(), b"a b\n");
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        let value = prop::collection::vec(any::<u8>(), 0..64)
            .prop_filter("fits a line", |v| value_fits_line(v))
            .prop_map(Bytes::from);
        let kind = prop::sample::select(ErrorKind::SENT.to_vec());
        // Messages as nodes write them: printable, one line.
        let message = "[ -~]{0,40}";
        prop_oneof![
            any::<Option<u64>>().prop_map(Reply::Ok),
            value.prop_map(Reply::Value),
            Just(Reply::NotFound),
            any::<u64>().prop_map(Reply::Conflict),
            Just(Reply::Pong),
            Just(Reply::Bye),
            (kind, message).prop_map(|(kind, message)| Reply::Err(ErrorReply::new(kind, message))),
        ]
    }

    proptest! {
        #[test]
        fn every_reply_reads_back_as_itself(reply in arb_reply()) {
            prop_assert_eq!(parse_line(&reply.to_line()), reply);
        }

        #[test]
        fn any_line_parses_without_panicking(line in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_reply(&line);
        }
    }
}
