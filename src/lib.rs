//! consens: a replicated key-value store whose nodes agree through Multi-Paxos.
//!
//! # Layout
//! - [`paxos`]: the pure consensus core and the vocabulary it shares with the rest.
//! - [`kv`]: the deterministic key-value state machine that decided slots are applied to.
//! - [`net`]: the datagram envelope (header + postcard payload) every peer message travels in.
//! - [`server`]: the client-facing servers (HTTP and the line protocol) over the [`server::Store`]
//!   view of the node, and an in-memory store for tests and benches.

pub mod cli;
pub mod kv;
pub mod net;
pub mod paxos;
pub mod server;
