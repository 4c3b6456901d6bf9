//! consens: a replicated key-value store whose nodes agree through Multi-Paxos.
//!
//! # What this crate offers
//! - [`client`]: the async client library (line protocol, pipelined, with failover and typed
//!   errors): [`client::Client`], [`client::ClientError`], [`client::ErrorKind`].
//! - [`cli::main`]: the `consens` program (`serve`, the client subcommands, `bench`, `wal`).
//!
//! Everything else is the node's inside and is private to the crate. `docs/architecture.md`
//! describes it; in brief:
//! - `paxos`: the pure consensus core (no IO) and the vocabulary it shares with the rest.
//! - `wal`: the checksummed, memory-mapped write-ahead log (spec: `wal-format.md`).
//! - `kv`: the deterministic key-value state machine that decided commands are applied to;
//!   `applied_ids` is its at-most-once record: one window of applied counters per origin.
//! - `net`: the datagram envelope (`codec`), what travels in it (`wire`), the UDP transport.
//! - `node`: the node. Its driver (`node::driver`) decides everything without IO (core,
//!   key-value state, pending requests, snapshots) and is what the simulator runs; the event
//!   loop around it owns the sockets, the timers and the WAL (synced on a thread of its own) and
//!   carries the driver's effects out (votes leave only once the WAL reports them durable).
//! - `server`: HTTP and line-protocol front ends; they talk to the node through a `Store`.
//! - `line_protocol`: the line protocol's wire format, shared by its server and the client.
//! - `metrics`: Prometheus metrics served on `/_metrics`.
//! - `snapshot`: state-machine snapshots on disk and in chunks on the wire.
//! - `bench`: `consens bench`, the load tool (line protocol via [`client`], or HTTP).
//! - `config`, `cli`: flags, address resolution, subcommands.

mod applied_ids;
mod bench;
pub mod cli;
pub mod client;
mod config;
mod fs_durable;
mod kv;
mod line_protocol;
mod metrics;
mod net;
mod node;
mod paxos;
mod server;
mod snapshot;
mod wal;

/// The crate's insides, reachable for its own simulator, integration tests, fuzz targets and
/// benchmarks, which live outside `src/` and so cannot see `pub(crate)` items.
///
/// Not an API: nothing here is stable, documented for users, or meant to be used by another
/// crate. Each module re-exports the module of the same name at the crate root.
#[doc(hidden)]
pub mod internals {
    macro_rules! reexport {
        ($($module:ident),* $(,)?) => {
            $(pub mod $module {
                pub use crate::$module::*;
            })*
        };
    }
    reexport!(
        config,
        kv,
        line_protocol,
        metrics,
        net,
        node,
        paxos,
        server,
        snapshot,
        wal
    );
}
