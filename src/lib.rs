//! consens: a replicated key-value store whose nodes agree through Multi-Paxos.
//!
//! # Layout
//! - [`paxos`]: the pure consensus core (no IO) and the vocabulary it shares with the rest.
//! - [`wal`]: the checksummed, memory-mapped write-ahead log (spec: `wal-format.md`).
//! - [`kv`]: the deterministic key-value state machine that decided commands are applied to;
//!   [`applied_ids`] is its at-most-once record: one window of applied counters per origin.
//! - [`net`]: the datagram envelope (`codec`), what travels in it (`wire`), the UDP transport.
//! - [`node`]: the node. Its driver (`node::driver`) decides everything without IO (core,
//!   key-value state, pending requests, snapshots) and is what the simulator runs; the event
//!   loop around it owns the sockets, the timers and the WAL (synced on a thread of its own) and
//!   carries the driver's effects out (votes leave only once the WAL reports them durable).
//!   `docs/architecture.md` shows the data flow.
//! - [`server`]: HTTP and line-protocol front ends; they talk to the node through a `Store`.
//! - [`line_protocol`]: the line protocol's wire format, shared by its server and the client.
//! - [`metrics`]: Prometheus metrics served on `/_metrics`.
//! - [`snapshot`]: state-machine snapshots on disk and in chunks on the wire.
//! - [`client`]: the async client library (line protocol, pipelined, with failover and typed
//!   errors) and the `consens get|put|del|cas|status` subcommands built on it.
//! - [`bench`]: `consens bench`, the load tool (line protocol via [`client`], or HTTP).
//! - [`config`], [`cli`]: flags, address resolution, subcommands.

pub mod applied_ids;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod fs_durable;
pub mod kv;
pub mod line_protocol;
pub mod metrics;
pub mod net;
pub mod node;
pub mod paxos;
pub mod server;
pub mod snapshot;
pub mod wal;
