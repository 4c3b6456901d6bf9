//! The datagram envelope: a fixed header followed by a postcard payload.
//!
//! Every datagram between members has this layout (integers little-endian):
//!
//! | offset | bytes | field    | meaning                                                        |
//! |--------|-------|----------|----------------------------------------------------------------|
//! | 0      | 4     | magic    | [`MAGIC`], `b"CNSP"`: drops datagrams of other protocols early |
//! | 4      | 1     | version  | [`FORMAT_VERSION`]: the layout of what follows                  |
//! | 5      | 1     | flags    | 0; reserved for an optional MAC trailer (unknown bits: drop)   |
//! | 6      | 8     | cluster  | the cluster id: members of another cluster are dropped         |
//! | 14     | 2     | from     | the sender's [`NodeId`]                                        |
//! | 16     | n     | payload  | postcard encoding of the message; nothing may follow it        |
//!
//! Decoding never panics, and its allocations are bounded by the datagram: postcard reads from the
//! borrowed slice, a byte string longer than the bytes left fails before allocating, and a
//! sequence's preallocation is capped by the bytes left (postcard's `size_hint`), itself at most
//! [`DATAGRAM_BYTES_MAX`]. Message types should avoid `HashMap` fields: serde preallocates maps
//! from the claimed length (up to its 1 MiB "cautious" cap) before any element is read. A datagram is
//! at most [`DATAGRAM_BYTES_MAX`] bytes, so senders batch up to that budget (GUIDE.md §4, UDP).

use serde::{de::DeserializeOwned, Serialize};

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

/// The flags byte of this version: no flag is defined yet (a MAC flag will be the first).
const FLAGS_NONE: u8 = 0;

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
}

/// Encodes `header` and `payload` into `out` (cleared first). On error `out` is left empty.
pub fn encode<T: Serialize>(
    header: &Header,
    payload: &T,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(FLAGS_NONE);
    out.extend_from_slice(&header.cluster.to_le_bytes());
    out.extend_from_slice(&header.from.0.to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_BYTES);
    let buffer = std::mem::take(out);
    match postcard::to_extend(payload, buffer) {
        Ok(buffer) => *out = buffer,
        Err(e) => return Err(EncodeError::Serialize(e.to_string())),
    }
    if out.len() > DATAGRAM_BYTES_MAX {
        let len = out.len();
        out.clear();
        return Err(EncodeError::TooLarge { len });
    }
    Ok(())
}

/// Decodes a datagram of cluster `cluster`, or says why it must be dropped.
pub fn decode<T: DeserializeOwned>(
    datagram: &[u8],
    cluster: u64,
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
    let flags = datagram[5];
    if flags != FLAGS_NONE {
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
    let (payload, rest) = match postcard::take_from_bytes::<T>(&datagram[HEADER_BYTES..]) {
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
            id: CommandId {
                origin: NodeId(3),
                seq: 99,
            },
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
        bad[5] = 1;
        assert!(matches!(dec(&bad), Err(DropReason::Malformed(_))));
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

    proptest! {
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
