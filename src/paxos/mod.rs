//! The Multi-Paxos core: a pure state machine (no IO, clock, threads or randomness of its own).
//!
//! The contract with the caller is documented here once the core lands (issue 2).

pub mod types;
