//! consens: a replicated key-value store whose nodes agree through Multi-Paxos.
//!
//! # Layout
//! - [`paxos`]: the pure consensus core and the vocabulary it shares with the rest.
//! - [`wal`]: the memory-mapped, checksummed write-ahead log (format: `wal-format.md`).
//! - [`cli`]: the command line.

pub mod cli;
pub mod paxos;
pub mod wal;
