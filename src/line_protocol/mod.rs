//! The line protocol's wire format, shared by the server (`server::line`) and the client
//! (`client`): requests, replies, error kinds and the `STATUS` line, each with its encoder and
//! its parser side by side, so the two ends cannot drift apart. Pure functions, no IO: fuzzed
//! and round-trip tested here.
//!
//! One request per line, one reply per line, LF or CRLF:
//!
//! ```text
//! PUT <key> <value>              -> OK <revision>
//! GET <key>                      -> VALUE <value>  | NOT_FOUND
//! DEL <key>                      -> OK             | NOT_FOUND
//! CAS <key> <revision> <value>   -> OK <revision>  | CONFLICT <current revision>
//! PING -> PONG   STATUS -> name=value pairs   MEMBERS -> one member=... pair per member
//! HELP -> the commands   QUIT -> BYE, then close
//! anything that fails            -> ERR <kind> <message>
//! ```
//!
//! `<kind>` is one lowercase word from a fixed set ([`ErrorKind`]) for programs to branch on;
//! `<message>` is for people and may change. [`request`] owns the request grammar, [`reply`] the
//! replies and error kinds, [`status`] the `STATUS` line, [`members`] the `MEMBERS` line.

pub mod members;
pub mod reply;
pub mod request;
pub mod status;

pub use members::{MemberInfo, MemberList};
pub use reply::{parse_reply, ErrorKind, ErrorReply, Reply};
pub use request::{encode_request, parse_request, scan_line, ParseError, Request, Scan};
pub use status::Status;
