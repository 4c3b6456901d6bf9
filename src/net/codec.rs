//! The datagram envelope: a fixed header followed by a postcard payload.
//!
//! Every datagram between members has this layout (integers little-endian):
//!
//! | offset | bytes | field    | meaning                                                        |
//! |--------|-------|----------|----------------------------------------------------------------|
//! | 0      | 4     | magic    | [`MAGIC`], `b"CNSP"`: drops datagrams of other protocols early |
//! | 4      | 1     | version  | [`FORMAT_VERSION`]: the layout of what follows                  |
//! | 5      | 1     | flags    | [`FLAG_MAC`] if a MAC tag ends the datagram; other bits: drop  |
//! | 6      | 8     | cluster  | the cluster id: members of another cluster are dropped         |
//! | 14     | 2     | from     | the sender's [`NodeId`]                                        |
//! | 16     | n     | payload  | postcard encoding of the message                               |
//! | 16+n   | 16    | tag      | only with [`FLAG_MAC`]: MAC of bytes `0..16+n` (`net::auth`)    |
//!
//! **Peer authentication** (`docs/security.md`). A node started with a cluster key
//! ([`ClusterKey`]) sets [`FLAG_MAC`] and appends the tag when encoding, and when decoding drops,
//! as [`DropReason::BadMac`], every datagram of its cluster that lacks the flag or whose tag does
//! not verify, before the payload is parsed. A node without a key drops datagrams that carry the
//! flag, also as `BadMac`: keyed and unkeyed nodes never talk, and both sides count why. The
//! cluster id is checked before the MAC, so a datagram of another cluster is counted as such.
//! Datagrams without a key are byte-for-byte those of before the flag existed.
//!
//! Decoding never panics, and its allocations are bounded by the datagram: postcard reads from the
//! borrowed slice, a byte string longer than the bytes left fails before allocating, and a
//! sequence's preallocation is capped by the bytes left (postcard's `size_hint`), itself at most
//! [`DATAGRAM_BYTES_MAX`]. Message types should avoid `HashMap` fields: serde preallocates maps
//! from the claimed length (up to its 1 MiB "cautious" cap) before any element is read.
//! `tests/fuzz_harness.rs` holds decoding to an allocation budget proportional to the datagram,
//! and `fuzz/fuzz_targets/datagram.rs` fuzzes it (keyed and unkeyed). A datagram is
//! at most [`DATAGRAM_BYTES_MAX`] bytes, so senders batch up to that budget (`docs/reliability.md`).

use serde::{de::DeserializeOwned, Serialize};

use crate::net::auth::{ClusterKey, MAC_TAG_BYTES};
use crate::paxos::types::NodeId;

/// The largest datagram sent or accepted: the maximum UDP payload over IPv4
/// (65,535 bytes of IP packet − 20 bytes of IPv4 header − 8 bytes of UDP header). IPv6 allows
/// 65,527 but we keep one limit for both so a message that fits one family fits the other.
pub const DATAGRAM_BYTES_MAX: usize = 65_507;

/// The first four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"CNSP";

/// The envelope's format version; bumped when the header or payload layout changes.
pub const FORMAT_VERSION: u8 = 1;

/// The size of the fixed header in front of the payload.
pub const HEADER_BYTES: usize = 16;

/// The flags byte of a datagram without a MAC.
const FLAGS_NONE: u8 = 0;
/// Flag: the datagram ends with a [`MAC_TAG_BYTES`]-byte MAC tag ([`crate::net::auth`]).
pub const FLAG_MAC: u8 = 0x01;
/// Every flag this version defines; a datagram with any other bit set is dropped.
const FLAGS_KNOWN: u8 = FLAG_MAC;
/// Offset of the flags byte in the header.
const FLAGS_OFFSET: usize = 5;

/// Who sent a datagram, and for which cluster.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The cluster id; receivers drop datagrams of other clusters (a stale config, a test
    /// cluster on the same ports).
    pub cluster: u64,
    /// The sending member. Not authenticated: UDP sources can be forged, see the MAC flag.
    pub from: NodeId,
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The datagram would exceed [`DATAGRAM_BYTES_MAX`]: the sender must batch less.
    #[error("datagram of {len} bytes exceeds the maximum of {DATAGRAM_BYTES_MAX}")]
    TooLarge { len: usize },
    /// postcard refused the payload (a type serde cannot express).
    #[error("payload does not encode: {0}")]
    Serialize(String),
}

/// Why a received datagram was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Longer than [`DATAGRAM_BYTES_MAX`].
    #[error("oversized datagram of {len} bytes")]
    Oversized { len: usize },
    /// Ends before the header or the payload does.
    #[error("truncated datagram")]
    Truncated,
    /// Does not start with [`MAGIC`]: not ours.
    #[error("bad magic")]
    BadMagic,
    /// Written by another format version.
    #[error("unsupported format version {version}")]
    BadVersion { version: u8 },
    /// From another cluster (the id it carried).
    #[error("from another cluster ({cluster})")]
    WrongCluster { cluster: u64 },
    /// Unknown flags, an undecodable payload, or bytes after the payload.
    #[error("malformed datagram: {0}")]
    Malformed(String),
    /// Not authenticated: this node has a cluster key and the datagram has no tag or a wrong one,
    /// or this node has no key and the datagram carries one (mixed keyed and unkeyed members).
    #[error("bad MAC: {0}")]
    BadMac(&'static str),
}

/// Encodes `header` and `payload` into `out` (cleared first), without a MAC. On error `out` is
/// left empty.
pub fn encode<T: Serialize>(
    header: &Header,
    payload: &T,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    encode_keyed(header, payload, None, out)
}

/// Encodes `header` and `payload` into `out` (cleared first), tagged with `key` if there is one.
/// On error `out` is left empty.
pub fn encode_keyed<T: Serialize>(
    header: &Header,
    payload: &T,
    key: Option<&ClusterKey>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(if key.is_some() { FLAG_MAC } else { FLAGS_NONE });
    out.extend_from_slice(&header.cluster.to_le_bytes());
    out.extend_from_slice(&header.from.0.to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_BYTES);
    let buffer = std::mem::take(out);
    match postcard::to_extend(payload, buffer) {
        Ok(buffer) => *out = buffer,
        Err(e) => return Err(EncodeError::Serialize(e.to_string())),
    }
    if let Some(key) = key {
        let tag = key.tag(out);
        out.extend_from_slice(&tag);
    }
    if out.len() > DATAGRAM_BYTES_MAX {
        let len = out.len();
        out.clear();
        return Err(EncodeError::TooLarge { len });
    }
    Ok(())
}

/// Decodes an unkeyed datagram of cluster `cluster`, or says why it must be dropped.
pub fn decode<T: DeserializeOwned>(
    datagram: &[u8],
    cluster: u64,
) -> Result<(Header, T), DropReason> {
    decode_keyed(datagram, cluster, None)
}

/// Decodes a datagram of cluster `cluster` whose tag must verify with `key` (if there is one;
/// without a key, a tagged datagram is dropped), or says why it must be dropped.
pub fn decode_keyed<T: DeserializeOwned>(
    datagram: &[u8],
    cluster: u64,
    key: Option<&ClusterKey>,
) -> Result<(Header, T), DropReason> {
    let len = datagram.len();
    if len > DATAGRAM_BYTES_MAX {
        return Err(DropReason::Oversized { len });
    }
    if len < MAGIC.len() {
        return Err(DropReason::Truncated);
    }
    if datagram[..MAGIC.len()] != MAGIC {
        return Err(DropReason::BadMagic);
    }
    if len < HEADER_BYTES {
        return Err(DropReason::Truncated);
    }
    let version = datagram[4];
    if version != FORMAT_VERSION {
        return Err(DropReason::BadVersion { version });
    }
    let flags = datagram[FLAGS_OFFSET];
    if flags & !FLAGS_KNOWN != 0 {
        return Err(DropReason::Malformed(format!("unknown flags {flags:#04x}")));
    }
    let mut cluster_bytes = [0u8; 8];
    cluster_bytes.copy_from_slice(&datagram[6..14]);
    let sender_cluster = u64::from_le_bytes(cluster_bytes);
    if sender_cluster != cluster {
        return Err(DropReason::WrongCluster {
            cluster: sender_cluster,
        });
    }
    let from = NodeId(u16::from_le_bytes([datagram[14], datagram[15]]));
    let body = authenticated_body(datagram, flags, key)?;
    let (payload, rest) = match postcard::take_from_bytes::<T>(&body[HEADER_BYTES..]) {
        Ok(decoded) => decoded,
        Err(postcard::Error::DeserializeUnexpectedEnd) => return Err(DropReason::Truncated),
        Err(e) => return Err(DropReason::Malformed(e.to_string())),
    };
    if !rest.is_empty() {
        return Err(DropReason::Malformed(format!(
            "{} trailing bytes after the payload",
            rest.len()
        )));
    }
    Ok((
        Header {
            cluster: sender_cluster,
            from,
        },
        payload,
    ))
}

/// The datagram without its tag, once the tag (if this node has a key) verified.
fn authenticated_body<'a>(
    datagram: &'a [u8],
    flags: u8,
    key: Option<&ClusterKey>,
) -> Result<&'a [u8], DropReason> {
    let tagged = flags & FLAG_MAC != 0;
    match (key, tagged) {
        (None, false) => Ok(datagram),
        (None, true) => Err(DropReason::BadMac(
            "tagged, but this node has no cluster key",
        )),
        (Some(_), false) => Err(DropReason::BadMac(
            "no tag, but this node has a cluster key",
        )),
        (Some(key), true) => {
            let Some(body_len) = datagram.len().checked_sub(MAC_TAG_BYTES) else {
                return Err(DropReason::Truncated);
            };
            if body_len < HEADER_BYTES {
                return Err(DropReason::Truncated);
            }
            let (body, tag) = datagram.split_at(body_len);
            if key.verify(body, tag) {
                Ok(body)
            } else {
                Err(DropReason::BadMac("tag does not verify"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::types::{Command, CommandId, Op, Value};
    use bytes::Bytes;
    use proptest::prelude::*;

    const CLUSTER: u64 = 0xC0FF_EE00_0000_0042;

    fn header() -> Header {
        Header {
            cluster: CLUSTER,
            from: NodeId(3),
        }
    }

    fn command(value_bytes: usize) -> Value {
        Value::Command(Command {
            id: CommandId::new(NodeId(3), 0, 99),
            op: Op::Put {
                key: Bytes::from_static(b"key"),
                value: Bytes::from(vec![7u8; value_bytes]),
                expect: Some(4),
            },
        })
    }

    #[test]
    fn round_trip_and_layout() {
        let mut out = Vec::new();
        encode(&header(), &command(10), &mut out).expect("encode");
        assert_eq!(&out[..4], b"CNSP");
        assert_eq!(out[4], FORMAT_VERSION);
        assert_eq!(out[5], 0);
        assert_eq!(&out[6..14], &CLUSTER.to_le_bytes());
        assert_eq!(&out[14..16], &3u16.to_le_bytes());
        let (h, v): (Header, Value) = decode(&out, CLUSTER).expect("decode");
        assert_eq!(h, header());
        assert_eq!(v, command(10));
    }

    #[test]
    fn drop_reasons() {
        let mut out = Vec::new();
        encode(&header(), &command(10), &mut out).expect("encode");
        let dec = |d: &[u8]| decode::<Value>(d, CLUSTER).map(|_| ());

        assert_eq!(dec(&out[..2]), Err(DropReason::Truncated));
        assert_eq!(dec(&out[..10]), Err(DropReason::Truncated));
        assert_eq!(dec(&out[..out.len() - 1]), Err(DropReason::Truncated));
        assert_eq!(dec(b"HTTP/1.1 200 OK"), Err(DropReason::BadMagic));
        assert_eq!(
            decode::<Value>(&out, CLUSTER + 1).map(|_| ()),
            Err(DropReason::WrongCluster { cluster: CLUSTER })
        );
        let mut bad = out.clone();
        bad[4] = 9;
        assert_eq!(dec(&bad), Err(DropReason::BadVersion { version: 9 }));
        let mut bad = out.clone();
        bad[5] = 2;
        assert!(matches!(dec(&bad), Err(DropReason::Malformed(_))));
        let mut bad = out.clone();
        bad[5] = FLAG_MAC;
        assert!(matches!(dec(&bad), Err(DropReason::BadMac(_))));
        let mut bad = out.clone();
        bad.push(0);
        assert!(matches!(dec(&bad), Err(DropReason::Malformed(m)) if m.contains("trailing")));
        let big = vec![0u8; DATAGRAM_BYTES_MAX + 1];
        assert_eq!(
            dec(&big),
            Err(DropReason::Oversized {
                len: DATAGRAM_BYTES_MAX + 1
            })
        );
        // Every reason reads well in a log line.
        assert_eq!(DropReason::BadMagic.to_string(), "bad magic");
    }

    #[test]
    fn encode_refuses_oversized() {
        let mut out = Vec::new();
        let err = encode(&header(), &command(DATAGRAM_BYTES_MAX), &mut out).unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { len } if len > DATAGRAM_BYTES_MAX));
        assert!(out.is_empty());
        // The largest value the servers accept fits with room to spare.
        let limit = crate::server::VALUE_BYTES_MAX;
        encode(&header(), &command(limit), &mut out).expect("a max-size value fits");
    }

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_bytes(&[byte; crate::net::auth::CLUSTER_KEY_BYTES_MIN]).expect("key")
    }

    #[test]
    fn keyed_layout_and_round_trip() {
        let k = key(1);
        let mut plain = Vec::new();
        encode(&header(), &command(10), &mut plain).expect("encode");
        let mut out = Vec::new();
        encode_keyed(&header(), &command(10), Some(&k), &mut out).expect("encode");
        assert_eq!(out.len(), plain.len() + MAC_TAG_BYTES);
        assert_eq!(out[5], FLAG_MAC);
        assert_eq!(
            &out[6..plain.len()],
            &plain[6..],
            "same header fields and payload"
        );
        let body = &out[..out.len() - MAC_TAG_BYTES];
        assert_eq!(&out[body.len()..], &k.tag(body)[..]);
        let (h, v): (Header, Value) = decode_keyed(&out, CLUSTER, Some(&k)).expect("decode");
        assert_eq!(h, header());
        assert_eq!(v, command(10));
    }

    #[test]
    fn keyed_decode_rejects_forged_flipped_truncated_and_untagged() {
        let k = key(1);
        let mut out = Vec::new();
        encode_keyed(&header(), &command(10), Some(&k), &mut out).expect("encode");
        let dec = |d: &[u8]| decode_keyed::<Value>(d, CLUSTER, Some(&k)).map(|_| ());

        // Forged: a well-formed datagram tagged with another key.
        let mut forged = Vec::new();
        encode_keyed(&header(), &command(10), Some(&key(2)), &mut forged).expect("encode");
        assert!(matches!(dec(&forged), Err(DropReason::BadMac(_))));

        // Every single bit flip is caught (flag, cluster, magic and version have their own
        // reasons; everything else fails the MAC).
        for bit in 0..out.len() * 8 {
            let mut copy = out.clone();
            copy[bit / 8] ^= 1 << (bit % 8);
            assert!(
                dec(&copy).is_err(),
                "bit {bit} flipped yet the datagram decoded"
            );
        }

        // Every truncation is caught.
        for len in 0..out.len() {
            assert!(dec(&out[..len]).is_err(), "truncated to {len} yet decoded");
        }
        assert_eq!(dec(&out[..HEADER_BYTES + 3]), Err(DropReason::Truncated));

        // Untagged (an unkeyed member, or an attacker stripping the tag and the flag).
        let mut plain = Vec::new();
        encode(&header(), &command(10), &mut plain).expect("encode");
        assert!(matches!(dec(&plain), Err(DropReason::BadMac(_))));
        let mut stripped = out[..out.len() - MAC_TAG_BYTES].to_vec();
        stripped[5] = 0;
        assert!(matches!(dec(&stripped), Err(DropReason::BadMac(_))));

        // Another cluster is named as such, before the MAC is looked at.
        assert_eq!(
            decode_keyed::<Value>(&out, CLUSTER + 1, Some(&k)).map(|_| ()),
            Err(DropReason::WrongCluster { cluster: CLUSTER })
        );

        // A node without a key refuses tagged datagrams.
        assert!(matches!(
            decode::<Value>(&out, CLUSTER).map(|_| ()),
            Err(DropReason::BadMac(_))
        ));
    }

    #[test]
    fn keyed_encode_counts_the_tag_against_the_limit() {
        let k = key(1);
        let mut out = Vec::new();
        // The largest plain datagram: header, a 3-byte length prefix and the bytes.
        let fits = DATAGRAM_BYTES_MAX - HEADER_BYTES - 3;
        encode(&header(), &vec![0u8; fits], &mut out).expect("fits plain");
        assert_eq!(out.len(), DATAGRAM_BYTES_MAX);
        let err = encode_keyed(&header(), &vec![0u8; fits], Some(&k), &mut out).unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { .. }));
        assert!(out.is_empty());
        // The core's message budget leaves room for header and tag.
        const {
            assert!(
                crate::paxos::config::MESSAGE_BYTES_MAX_DEFAULT + HEADER_BYTES + MAC_TAG_BYTES
                    <= DATAGRAM_BYTES_MAX
            )
        };
    }

    proptest! {
        #[test]
        fn keyed_round_trips(
            cluster in any::<u64>(),
            from in any::<u16>(),
            payload in prop::collection::vec(any::<u8>(), 0..2000),
            key_bytes in prop::collection::vec(any::<u8>(), 32..80),
        ) {
            let k = ClusterKey::from_bytes(&key_bytes).expect("key");
            let h = Header { cluster, from: NodeId(from) };
            let mut out = Vec::new();
            encode_keyed(&h, &payload, Some(&k), &mut out).expect("encode");
            let (h2, p2): (Header, Vec<u8>) = decode_keyed(&out, cluster, Some(&k)).expect("decode");
            prop_assert_eq!(h2, h);
            prop_assert_eq!(p2, payload);
        }

        #[test]
        fn round_trips(
            cluster in any::<u64>(),
            from in any::<u16>(),
            payload in prop::collection::vec(any::<u8>(), 0..2000),
            tag in any::<u64>(),
        ) {
            let h = Header { cluster, from: NodeId(from) };
            let mut out = Vec::new();
            encode(&h, &(tag, payload.clone()), &mut out).expect("encode");
            let (h2, p2): (Header, (u64, Vec<u8>)) = decode(&out, cluster).expect("decode");
            prop_assert_eq!(h2, h);
            prop_assert_eq!(p2, (tag, payload));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode::<Value>(&bytes, CLUSTER);
            // Again behind a valid header, so the payload decoder sees the garbage.
            let mut framed = Vec::new();
            encode(&header(), &(), &mut framed).expect("encode");
            framed.extend_from_slice(&bytes);
            let _ = decode::<Value>(&framed, CLUSTER);
            let _ = decode::<(u64, Vec<Bytes>, String)>(&framed, CLUSTER);
        }
    }
}
