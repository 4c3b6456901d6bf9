//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod chaos_client;
pub mod chaos_cluster;
pub mod chaos_proxy;
pub mod cluster;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod packet_filter;
pub mod power;
pub mod wal_bytes;
