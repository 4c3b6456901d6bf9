//! Networking between members: the datagram envelope ([`codec`]), what travels in it ([`wire`]),
//! and the UDP transport that sends and receives it ([`udp`]).
//!
//! [`codec`] turns a header and a payload into one UDP datagram and back, checking size, magic,
//! version and cluster id so that stray or foreign datagrams are dropped (and counted by the
//! caller) instead of reaching the Paxos core; with a cluster key ([`auth`]) it also tags every
//! datagram with a MAC and drops those whose tag does not verify. The socket is owned by the node; `udp` holds its
//! send side and the receive task.

pub mod auth;
pub mod codec;
pub mod udp;
pub mod wire;
