//! Networking between members: the datagram envelope every peer message travels in.
//!
//! [`codec`] turns a header and a payload into one UDP datagram and back, checking size, magic,
//! version and cluster id so that stray or foreign datagrams are dropped (and counted by the
//! caller) instead of reaching the Paxos core. Sockets live in the node, not here.

pub mod codec;
