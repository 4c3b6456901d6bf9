//! consens: a replicated key-value store whose nodes agree through Multi-Paxos.
//!
//! # Layout
//! - [`paxos`]: the pure consensus core and the vocabulary it shares with the rest.

pub mod cli;
pub mod paxos;
