//! The properties every fuzzer checks, in one place: the cargo-fuzz targets (`fuzz/fuzz_targets/`,
//! which include this file by path) and the CI harness (`tests/fuzz_harness.rs`) call the same
//! functions, so a crash found by either is a failure of the other too.
//!
//! Each `check_*` takes the raw bytes a fuzzer produced, runs one decoder on them, and panics
//! only if a property is broken: the decoder itself must never panic, what it accepts must
//! round-trip, and what it borrows must lie inside the input. Memory bounds are asserted by the
//! harness, which counts allocations (a global allocator cannot be swapped inside libFuzzer's
//! process without fighting its own `-rss_limit_mb`, which bounds memory there instead).
//!
//! The `seed_*` functions build the committed seed corpus (`fuzz/corpus/<target>/`): valid
//! encodings of every message kind, WAL frames, request lines and HTTP requests.

#![allow(dead_code)]

use bytes::Bytes;
use consens::internals::line_protocol::{self, Scan};
use consens::internals::net::auth::ClusterKey;
use consens::internals::net::codec::{self, Header};
use consens::internals::net::wire::Wire;
use consens::internals::paxos::message::SlotState;
use consens::internals::paxos::types::{Ballot, Command, CommandId, NodeId, Op, Value};
use consens::internals::paxos::Message;
use consens::internals::snapshot::SnapshotChunk;
use consens::internals::wal::record::{self, Frame};

/// The cluster id the datagram checks decode for (seeds carry it, so mutations reach the payload).
pub const FUZZ_CLUSTER: u64 = 0x00C0_FFEE_F022_0001;
/// The cluster key of keyed seeds and of the keyed decode.
pub const FUZZ_KEY: [u8; 32] = *b"consens-fuzz-cluster-key-32bytes";
/// The line length limit the line checks scan with (the server's default is larger; a small one
/// makes the `TooLong` paths reachable).
pub const FUZZ_LINE_BYTES_MAX: usize = 256;

pub fn fuzz_key() -> ClusterKey {
    ClusterKey::from_bytes(&FUZZ_KEY).expect("the fuzz key is long enough")
}

// ---------------------------------------------------------------------------------------------
// Datagrams.

/// Decodes `data` as a peer datagram, without and with the cluster key. Whatever decodes must
/// re-encode to a datagram that decodes to the same encoding again (postcard may accept a
/// non-canonical input once; after one round it is a fixed point).
pub fn check_datagram(data: &[u8]) {
    let key = fuzz_key();
    for keyed in [None, Some(&key)] {
        let Ok((header, wire)) = codec::decode_keyed::<Wire>(data, FUZZ_CLUSTER, keyed) else {
            continue;
        };
        assert_eq!(header.cluster, FUZZ_CLUSTER);
        let mut first = Vec::new();
        codec::encode_keyed(&header, &wire, keyed, &mut first)
            .expect("a decoded datagram re-encodes");
        let (header2, wire2) = codec::decode_keyed::<Wire>(&first, FUZZ_CLUSTER, keyed)
            .expect("a re-encoded datagram decodes");
        assert_eq!(header2, header);
        let mut second = Vec::new();
        codec::encode_keyed(&header2, &wire2, keyed, &mut second).expect("encodes again");
        assert_eq!(
            first, second,
            "encoding is not a fixed point after one round"
        );
    }
}

/// One value of each shape, small and large.
fn values() -> Vec<Value> {
    let command = |seq: u64, op: Op| {
        Value::Command(Command {
            // Raw seqs: the corpus covers every u64, not only ids `CommandId::new` hands out.
            id: CommandId {
                origin: NodeId(1),
                seq,
            },
            op,
        })
    };
    vec![
        Value::Noop,
        command(
            1,
            Op::Put {
                key: Bytes::from_static(b"greeting"),
                value: Bytes::from_static(b"hello world"),
                expect: None,
            },
        ),
        command(
            2,
            Op::Put {
                key: Bytes::from_static(b"a/b%00"),
                value: Bytes::from(vec![0xAB; 300]),
                expect: Some(7),
            },
        ),
        command(
            u64::MAX,
            Op::Delete {
                key: Bytes::from_static(b"k"),
            },
        ),
    ]
}

/// Every message kind at least once.
pub fn seed_wires() -> Vec<(&'static str, Wire)> {
    let b = Ballot {
        round: 3,
        node: NodeId(1),
    };
    let v = values();
    let commands: Vec<Command> = v
        .iter()
        .filter_map(|x| match x {
            Value::Command(c) => Some(c.clone()),
            Value::Noop => None,
        })
        .collect();
    let states = vec![
        (
            4,
            SlotState::Accepted {
                ballot: b,
                value: v[1].clone(),
            },
        ),
        (
            5,
            SlotState::Decided {
                value: v[0].clone(),
            },
        ),
    ];
    let entries: Vec<(u64, Value)> = v
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, x)| (i as u64 + 10, x))
        .collect();
    let paxos = |m: Message| Wire::Paxos(m);
    vec![
        ("prepare", paxos(Message::Prepare { ballot: b, from: 1 })),
        (
            "promise",
            paxos(Message::Promise {
                ballot: b,
                from: 1,
                upto: 5,
                more: true,
                log_start: 0,
                entries: states.clone(),
            }),
        ),
        (
            "accept",
            paxos(Message::Accept {
                ballot: b,
                commit: 9,
                entries: entries.clone(),
            }),
        ),
        (
            "accepted",
            paxos(Message::Accepted {
                ballot: b,
                slots: vec![10, 11, 12, 1 << 40],
            }),
        ),
        ("nack", paxos(Message::Nack { promised: b })),
        (
            "heartbeat",
            paxos(Message::Heartbeat {
                ballot: b,
                commit: 12,
                read_round: 2,
            }),
        ),
        (
            "heartbeat_ack",
            paxos(Message::HeartbeatAck {
                ballot: b,
                read_round: 2,
                decided: 12,
            }),
        ),
        ("forward", paxos(Message::Forward { commands })),
        (
            "read_index",
            paxos(Message::ReadIndex {
                ids: vec![1, 2, 300],
            }),
        ),
        (
            "read_index_reply",
            paxos(Message::ReadIndexReply {
                ids: vec![1, 2],
                index: 12,
            }),
        ),
        ("catch_up", paxos(Message::CatchUp { from: 3 })),
        (
            "decided",
            paxos(Message::Decided {
                commit: 13,
                entries,
            }),
        ),
        (
            "snapshot_needed",
            paxos(Message::SnapshotNeeded { log_start: 100 }),
        ),
        ("join_query", paxos(Message::JoinQuery { from: 1 })),
        (
            "transfer_leadership",
            paxos(Message::TransferLeadership { to: NodeId(2) }),
        ),
        (
            "handover",
            paxos(Message::Handover {
                ballot: b,
                to: NodeId(1),
            }),
        ),
        (
            "join_info",
            paxos(Message::JoinInfo {
                voter: true,
                log_start: 0,
                promised: b,
                from: 1,
                upto: 5,
                more: false,
                entries: states,
            }),
        ),
        (
            "snapshot_chunk",
            Wire::Snapshot(SnapshotChunk {
                slot: 100,
                total_bytes: 64,
                crc: 0xDEAD_BEEF,
                offset: 32,
                data: Bytes::from(vec![0x5A; 32]),
            }),
        ),
    ]
}

/// Every message kind as an unkeyed and as a keyed datagram of [`FUZZ_CLUSTER`].
pub fn seed_datagrams() -> Vec<(String, Vec<u8>)> {
    let key = fuzz_key();
    let header = Header {
        cluster: FUZZ_CLUSTER,
        from: NodeId(2),
    };
    let mut seeds = Vec::new();
    for (name, wire) in seed_wires() {
        for (suffix, keyed) in [("plain", None), ("keyed", Some(&key))] {
            let mut out = Vec::new();
            codec::encode_keyed(&header, &wire, keyed, &mut out).expect("seed encodes");
            seeds.push((format!("{name}_{suffix}"), out));
        }
    }
    seeds
}

// ---------------------------------------------------------------------------------------------
// WAL record frames.

/// Walks `segment` frame by frame from offset 0, as recovery does. Every valid frame must lie
/// inside the segment, advance by its aligned size, and re-encode to its own header and payload.
/// (Not the padding: `wal-format.md` §5 has the writer zero it but validity does not require it,
/// so a frame with non-zero padding and a CRC over it is valid; cargo-fuzz found one. The CRC
/// covers the padding, so such a frame cannot come from a torn write.)
pub fn check_wal_segment(segment: &[u8]) {
    let mut offset = 0;
    while offset <= segment.len() {
        match record::decode(segment, offset) {
            Frame::Valid {
                record: r,
                next_offset,
            } => {
                let size = record::frame_bytes(r.payload.len());
                assert_eq!(next_offset, offset + size);
                assert!(next_offset <= segment.len());
                assert_ne!(r.record_type, record::RECORD_TYPE_RESERVED);
                let mut again = vec![0u8; size];
                record::encode(&mut again, r.lsn, r.record_type, r.payload);
                // Bytes 4.. (after the CRC) up to the end of the payload.
                let fields = 4..record::RECORD_HEADER_BYTES + r.payload.len();
                assert_eq!(
                    &again[fields.clone()],
                    &segment[offset..next_offset][fields]
                );
                offset = next_offset;
            }
            Frame::Zero | Frame::Bad { .. } => break,
        }
    }
}

/// A few records, back to back, followed by zeroes (as in a preallocated segment).
pub fn seed_wal_segments() -> Vec<(String, Vec<u8>)> {
    let frames = |payloads: &[(&[u8], u8)]| {
        let total: usize = payloads
            .iter()
            .map(|(p, _)| record::frame_bytes(p.len()))
            .sum();
        let mut buf = vec![0u8; total + 64];
        let mut at = 0;
        for (lsn, (payload, record_type)) in payloads.iter().enumerate() {
            at += record::encode(&mut buf[at..], lsn as u64 + 1, *record_type, payload);
        }
        buf
    };
    let consensus: Vec<u8> =
        postcard::to_stdvec(&(1u8, 42u64, values()[1].clone())).expect("payload encodes");
    vec![
        ("spec_example".into(), frames(&[(&[0x00, 0x07, 0x02], 1)])),
        ("empty_payload".into(), frames(&[(b"", 1)])),
        (
            "three_records".into(),
            frames(&[
                (b"first", record::RECORD_TYPE_CONSENSUS),
                (&consensus, record::RECORD_TYPE_CONSENSUS),
                (&[0xFF; 100], 200),
            ]),
        ),
        ("zeroes".into(), vec![0u8; 48]),
    ]
}

// ---------------------------------------------------------------------------------------------
// The line protocol.

/// Scans `buf` line by line as the server does, and parses every complete line. Scan results
/// must stay inside the buffer; a parsed request must survive encode → parse unchanged.
pub fn check_lines(buf: &[u8]) {
    let mut rest = buf;
    loop {
        match line_protocol::scan_line(rest, FUZZ_LINE_BYTES_MAX) {
            Scan::Incomplete => {
                assert!(rest.len() <= FUZZ_LINE_BYTES_MAX + 1);
                assert!(!rest.contains(&b'\n'));
                break;
            }
            Scan::TooLong { consumed: None } => {
                assert!(!rest.contains(&b'\n'));
                break;
            }
            Scan::TooLong { consumed: Some(n) } => {
                assert!(n >= 1 && n <= rest.len() && rest[n - 1] == b'\n');
                rest = &rest[n..];
            }
            Scan::Line { line, consumed } => {
                assert!(consumed >= 1 && consumed <= rest.len() && rest[consumed - 1] == b'\n');
                assert!(line.len() <= FUZZ_LINE_BYTES_MAX && !line.contains(&b'\n'));
                check_line(line);
                rest = &rest[consumed..];
            }
        }
    }
    // The whole input as one line, too (the parser must not rely on the scanner).
    check_line(buf);
}

/// Parses one line; an accepted request must encode to a line that parses to the same request.
pub fn check_line(line: &[u8]) {
    match line_protocol::parse_request(line) {
        Ok(request) => {
            let mut encoded = Vec::new();
            line_protocol::encode_request(&request, &mut encoded);
            assert_eq!(
                encoded.pop(),
                Some(b'\n'),
                "encoded requests end with a newline"
            );
            assert_eq!(line_protocol::parse_request(&encoded), Ok(request));
        }
        Err(error) => {
            // Every error is a one-line reason.
            let reason = error.to_string();
            assert!(!reason.is_empty() && !reason.contains('\n'), "{reason:?}");
        }
    }
}

pub fn seed_lines() -> Vec<(String, Vec<u8>)> {
    let lines: [(&str, &[u8]); 16] = [
        ("put", b"PUT greeting hello world\n"),
        ("get", b"GET greeting\r\n"),
        ("del", b"del greeting\n"),
        ("cas", b"CAS greeting 1 hi there\n"),
        ("cas_create", b"CAS k 0 v\n"),
        ("simple", b"PING\nSTATUS\nHELP\nQUIT\n"),
        ("pipelined", b"PUT a 1\nGET a\nCAS a 1 2\nDEL a\nGET a\n"),
        ("bad_revision", b"CAS k 12x v\n"),
        ("reserved_key", b"GET _status\n"),
        ("nul", b"PUT k a\x00b\n"),
        ("unknown", b"FROB x\n"),
        ("usage", b"PUT onlykey\nGET\nPING extra\n"),
        ("utf8_key", "PUT clé/1 valeur\n".as_bytes()),
        ("incomplete", b"PUT k partial"),
        (
            "membership",
            b"MEMBERS\nLEADER TRANSFER 0\nLEADER\nLEADER TRANSFER 99999\n",
        ),
        (
            "member_changes",
            b"MEMBER ADD 127.0.0.1:9\nMEMBER PROMOTE 7\nMEMBER REMOVE 7 FORCE\nMEMBER JOIN 7\nMEMBER ADD\n",
        ),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = lines
        .iter()
        .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
        .collect();
    let mut long = b"PUT k ".to_vec();
    long.extend(std::iter::repeat_n(b'v', FUZZ_LINE_BYTES_MAX + 10));
    long.extend_from_slice(b"\nPING\n");
    seeds.push(("too_long".into(), long));
    seeds
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// The statuses the HTTP API may answer with a [`MemoryStore`](consens::internals::server::memory) behind.
pub const HTTP_STATUSES: [u16; 9] = [200, 201, 204, 400, 404, 405, 409, 412, 413];

/// A raw HTTP/1.1 request in pieces, before any validation.
pub struct RawRequest {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Reads `data` as a raw HTTP/1.1 request (request line, `Name: value` header lines, a blank
/// line, the body), leniently: pieces the `http` crate refuses are what hyper would refuse
/// before the router sees them, so such inputs end the check.
pub fn split_http(data: &[u8]) -> Option<RawRequest> {
    let (head, body) = match data.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => (&data[..at], data[at + 4..].to_vec()),
        None => (data, Vec::new()),
    };
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next()?;
    let mut parts = request_line.split(|&b| b == b' ');
    let method = parts.next()?.to_vec();
    let target = parts.next()?.to_vec();
    let headers = lines
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let value = &line[colon + 1..];
            let value = value.strip_prefix(b" ").unwrap_or(value);
            Some((line[..colon].to_vec(), value.to_vec()))
        })
        .collect();
    Some(RawRequest {
        method,
        target,
        headers,
        body,
    })
}

/// Builds the request the router would see, or `None` if hyper would have refused it.
pub fn http_request(data: &[u8]) -> Option<axum::http::Request<axum::body::Body>> {
    use axum::http::{HeaderName, HeaderValue, Method, Request, Uri};
    let RawRequest {
        method,
        target,
        headers,
        body,
    } = split_http(data)?;
    let method = Method::from_bytes(&method).ok()?;
    let uri = Uri::try_from(target).ok()?;
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        let name = HeaderName::from_bytes(&name).ok()?;
        let value = HeaderValue::from_bytes(&value).ok()?;
        builder = builder.header(name, value);
    }
    builder.body(axum::body::Body::from(body)).ok()
}

/// Sends `data` (a raw request, see [`split_http`]) through the router with a fresh
/// [`MemoryStore`](consens::internals::server::memory::MemoryStore); the answer must be one of
/// [`HTTP_STATUSES`], with a body of bounded size. Returns the status, if a request was built.
pub fn check_http(runtime: &tokio::runtime::Runtime, data: &[u8]) -> Option<u16> {
    use tower::ServiceExt;
    let request = http_request(data)?;
    let store = consens::internals::server::memory::MemoryStore::new();
    let router = consens::internals::server::http::router(store);
    let status = runtime.block_on(async move {
        let response = router
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status().as_u16();
        // No reply is larger than the largest value plus a status line's worth.
        let body = axum::body::to_bytes(
            response.into_body(),
            consens::internals::server::VALUE_BYTES_MAX + 64 * 1024,
        )
        .await
        .expect("a reply body of bounded size");
        assert!(body.len() <= consens::internals::server::VALUE_BYTES_MAX + 64 * 1024);
        status
    });
    assert!(
        HTTP_STATUSES.contains(&status),
        "unexpected status {status}"
    );
    Some(status)
}

/// One runtime per fuzzing process: building one per input would dominate the time.
pub fn http_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

pub fn seed_http() -> Vec<(String, Vec<u8>)> {
    let requests: [(&str, &str); 24] = [
        (
            "put",
            "PUT /mykey HTTP/1.1\r\nContent-Length: 6\r\n\r\nmydata",
        ),
        ("get", "GET /mykey HTTP/1.1\r\n\r\n"),
        ("get_stale", "GET /mykey?stale=true HTTP/1.1\r\n\r\n"),
        ("head", "HEAD /mykey HTTP/1.1\r\n\r\n"),
        ("delete", "DELETE /mykey HTTP/1.1\r\n\r\n"),
        ("cas", "PUT /mykey HTTP/1.1\r\nIf-Match: \"1\"\r\n\r\nnewer"),
        (
            "if_match_any",
            "PUT /mykey HTTP/1.1\r\nIf-Match: *\r\n\r\nx",
        ),
        (
            "create_only",
            "PUT /other HTTP/1.1\r\nIf-None-Match: *\r\n\r\nx",
        ),
        (
            "both_conditions",
            "PUT /k HTTP/1.1\r\nIf-Match: \"1\"\r\nIf-None-Match: *\r\n\r\nx",
        ),
        (
            "bad_if_match",
            "PUT /k HTTP/1.1\r\nIf-Match: W/\"1\", \"2\"\r\n\r\nx",
        ),
        (
            "huge_length",
            "PUT /k HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nx",
        ),
        ("percent_key", "PUT /a%2Fb/%00%ff HTTP/1.1\r\n\r\nv"),
        ("reserved", "PUT /%5Fstatus HTTP/1.1\r\n\r\nv"),
        ("status", "GET /_status HTTP/1.1\r\n\r\n"),
        ("health", "GET /_health HTTP/1.1\r\n\r\n"),
        ("members", "GET /_members HTTP/1.1\r\n\r\n"),
        ("leader", "GET /_leader HTTP/1.1\r\n\r\n"),
        (
            "leader_transfer",
            "POST /_leader HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"id\": 0}",
        ),
        (
            "leader_transfer_bad",
            "POST /_leader HTTP/1.1\r\nContent-Length: 11\r\n\r\n{\"id\": 777}",
        ),
        (
            "member_add",
            "POST /_members HTTP/1.1\r\nContent-Length: 23\r\n\r\n{\"addr\": \"127.0.0.1:9\"}",
        ),
        (
            "member_promote",
            "POST /_members/7/promote HTTP/1.1\r\n\r\n",
        ),
        (
            "member_remove",
            "DELETE /_members/7?force=true HTTP/1.1\r\n\r\n",
        ),
        (
            "member_bad_path",
            "POST /_members/x/demote HTTP/1.1\r\n\r\n",
        ),
        ("bad_method", "PATCH /k HTTP/1.1\r\n\r\n"),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = requests
        .iter()
        .map(|(name, text)| (name.to_string(), text.as_bytes().to_vec()))
        .collect();
    let long_key = format!("GET /{} HTTP/1.1\r\n\r\n", "k".repeat(1100));
    seeds.push(("long_key".into(), long_key.into_bytes()));
    seeds
}
