//! The fuzzers' CI half (issue 6): every decoder that reads bytes from outside runs on random
//! inputs and on mutations of the seed corpus, with the checks the cargo-fuzz targets use
//! (`tests/support/fuzz_checks.rs`). Nothing may panic, and memory stays bounded: this binary
//! counts every allocation, so each decoder is held to a budget proportional to its input
//! (the WAL decoder, which only borrows, to zero bytes).
//!
//! The long-running, coverage-guided half is `cargo +nightly fuzz run <target>` in `fuzz/`
//! (README, "Fuzzing"). `FUZZ_WRITE_CORPUS=1 cargo test --test fuzz_harness seed_corpus`
//! rewrites the committed seed files from the generators.

#[path = "support/fuzz_checks.rs"]
mod fuzz_checks;

use fuzz_checks::*;
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Allocation accounting.

/// Counts the bytes allocated by this thread and their high-water mark. Thread-local, so tests
/// running in parallel do not see each other's allocations.
struct CountingAlloc;

thread_local! {
    static LIVE_BYTES: Cell<usize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get().saturating_add(size);
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn on_dealloc(size: usize) {
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get().saturating_sub(size)));
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping only touches
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// The most bytes `f` had allocated at once (above what was live when it started).
fn peak_allocated<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|p| p.set(base));
    let r = f();
    let peak = PEAK_BYTES.with(Cell::get);
    (r, peak.saturating_sub(base))
}

/// A datagram decode may allocate this many times the datagram's size: owned byte strings are
/// copies (×1) and sequences preallocate at most one element per byte left (postcard's size
/// hint), an element being at most this many bytes in memory (a `(Slot, SlotState)`).
const DATAGRAM_ALLOC_PER_INPUT_BYTE_MAX: usize = 128;
/// ... plus this much whatever the size (error strings, small fixed buffers).
const DATAGRAM_ALLOC_FIXED_BYTES_MAX: usize = 4096;
/// A line parse copies the key, the value and the upper-cased command word at most once each.
const LINE_ALLOC_PER_INPUT_BYTE_MAX: usize = 3;
const LINE_ALLOC_FIXED_BYTES_MAX: usize = 1024;

// ---------------------------------------------------------------------------------------------
// Inputs: random bytes, and mutations of the seeds.

/// The corpus directory of a cargo-fuzz target.
fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target)
}

/// Every file of a target's committed corpus (seeds and whatever fuzzing found and was kept).
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

/// One edit of a byte string, as a mutation-based fuzzer would make.
#[derive(Clone, Debug)]
enum Edit {
    FlipBit(usize),
    SetByte(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Copies a slice to another place (grows the input).
    Duplicate(usize, usize, usize),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => any::<usize>().prop_map(Edit::FlipBit),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::SetByte(at, b)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        1 => (any::<usize>(), 1usize..16).prop_map(|(at, n)| Edit::Remove(at, n)),
        1 => (any::<usize>(), any::<usize>(), 1usize..64)
            .prop_map(|(from, to, n)| Edit::Duplicate(from, to, n)),
    ]
}

fn apply(mut input: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = input.len();
        match edit {
            Edit::FlipBit(at) if len > 0 => input[at % len] ^= 1 << (at / len % 8),
            Edit::SetByte(at, b) if len > 0 => input[at % len] = *b,
            Edit::Truncate(at) => input.truncate(at % (len + 1)),
            Edit::Insert(at, bytes) => {
                let at = at % (len + 1);
                input.splice(at..at, bytes.iter().copied());
            }
            Edit::Remove(at, n) if len > 0 => {
                let at = at % len;
                input.drain(at..(at + n).min(len));
            }
            Edit::Duplicate(from, to, n) if len > 0 => {
                let from = from % len;
                let piece: Vec<u8> = input[from..(from + n).min(len)].to_vec();
                let to = to % (len + 1);
                input.splice(to..to, piece);
            }
            _ => {}
        }
    }
    input
}

/// Seeds from the generators and from the committed corpus, each mutated by up to 8 edits.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(seeds),
        prop::collection::vec(edit_strategy(), 0..8),
    )
        .prop_map(|(seed, edits)| apply(seed, &edits))
}

fn seeds_of(generated: Vec<(String, Vec<u8>)>, target: &str) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = generated.into_iter().map(|(_, bytes)| bytes).collect();
    all.extend(corpus(target));
    all
}

/// Random bytes: short ones, mostly, where the decoders' branches are.
fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), 0..2048),
    ]
}

// ---------------------------------------------------------------------------------------------
// Per target: the shared check plus the allocation budget.

fn datagram(bytes: &[u8]) {
    use consens::internals::net::codec;
    use consens::internals::net::wire::Wire;
    let key = fuzz_key();
    let budget = DATAGRAM_ALLOC_PER_INPUT_BYTE_MAX * bytes.len() + DATAGRAM_ALLOC_FIXED_BYTES_MAX;
    for keyed in [None, Some(&key)] {
        let (_, peak) =
            peak_allocated(|| codec::decode_keyed::<Wire>(bytes, FUZZ_CLUSTER, keyed).is_ok());
        assert!(
            peak <= budget,
            "decoding {} bytes allocated {peak} bytes (budget {budget})",
            bytes.len()
        );
    }
    check_datagram(bytes);
}

fn wal_segment(bytes: &[u8]) {
    use consens::internals::wal::record;
    // Decoding borrows from the segment: no allocation at all, at any aligned offset.
    for offset in (0..=bytes.len()).step_by(record::RECORD_ALIGNMENT_BYTES) {
        let (_, peak) =
            peak_allocated(|| matches!(record::decode(bytes, offset), record::Frame::Valid { .. }));
        assert_eq!(peak, 0, "decode allocated at offset {offset}");
    }
    check_wal_segment(bytes);
}

fn lines(bytes: &[u8]) {
    use consens::internals::line_protocol;
    let (_, scan_peak) = peak_allocated(|| {
        matches!(
            line_protocol::scan_line(bytes, FUZZ_LINE_BYTES_MAX),
            line_protocol::Scan::Incomplete
        )
    });
    assert_eq!(scan_peak, 0, "scanning allocated");
    let budget = LINE_ALLOC_PER_INPUT_BYTE_MAX * bytes.len() + LINE_ALLOC_FIXED_BYTES_MAX;
    let (_, peak) = peak_allocated(|| line_protocol::parse_request(bytes).is_ok());
    assert!(
        peak <= budget,
        "parsing {} bytes allocated {peak}",
        bytes.len()
    );
    check_lines(bytes);
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = http_runtime();
}

fn http(bytes: &[u8]) -> Option<u16> {
    RUNTIME.with(|runtime| check_http(runtime, bytes))
}

/// Proptest cases per property: enough to cover the branches of small decoders in well under a
/// second each, so the whole harness stays within a few seconds of CI time.
const CASES: u32 = 2048;
const HTTP_CASES: u32 = 1024;

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn datagram_random(bytes in random_bytes()) {
        datagram(&bytes);
        // Again behind a valid header, so the payload decoder sees the garbage.
        let mut framed = seed_datagrams()[0].1[..consens::internals::net::codec::HEADER_BYTES].to_vec();
        framed.extend_from_slice(&bytes);
        datagram(&framed);
    }

    #[test]
    fn datagram_mutated(bytes in mutated(seeds_of(seed_datagrams(), "datagram"))) {
        datagram(&bytes);
    }

    #[test]
    fn wal_record_random(bytes in random_bytes()) {
        wal_segment(&bytes);
    }

    #[test]
    fn wal_record_mutated(bytes in mutated(seeds_of(seed_wal_segments(), "wal_record"))) {
        wal_segment(&bytes);
    }

    #[test]
    fn line_parse_random(bytes in random_bytes()) {
        lines(&bytes);
    }

    #[test]
    fn line_parse_mutated(bytes in mutated(seeds_of(seed_lines(), "line_parse"))) {
        lines(&bytes);
    }
}

/// Pieces of a request line and headers that make the router's branches likely.
fn http_request_strategy() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec![
        "GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS", "get", "X-CUSTOM",
    ]);
    let segment = prop_oneof![
        Just("_".to_string()),
        Just("%5F".to_string()),
        Just("%5f".to_string()),
        Just("_status".to_string()),
        Just("_health".to_string()),
        Just("_metrics".to_string()),
        Just("%".to_string()),
        Just("%zz".to_string()),
        Just("%00".to_string()),
        Just("%ff%fe".to_string()),
        Just("/".to_string()),
        "[a-z0-9]{1,8}",
        "(%[0-9a-fA-F]{2}){1,4}",
        (1usize..3000).prop_map(|n| "k".repeat(n)),
    ];
    let path = prop::collection::vec(segment, 0..4).prop_map(|s| s.concat());
    let query = prop::sample::select(vec![
        "",
        "?stale=true",
        "?stale",
        "?stale=1",
        "?x=%zz&stale",
    ]);
    let header_value = prop_oneof![
        Just("*".to_string()),
        Just("\"1\"".to_string()),
        Just("\"0\"".to_string()),
        Just("1".to_string()),
        Just("\"18446744073709551616\"".to_string()),
        Just("W/\"1\"".to_string()),
        Just("\"1\", \"2\"".to_string()),
        Just("".to_string()),
        "[ -~]{0,24}",
    ];
    let header = prop_oneof![
        header_value.clone().prop_map(|v| format!("If-Match: {v}")),
        header_value.prop_map(|v| format!("If-None-Match: {v}")),
        prop_oneof![
            Just("0".to_string()),
            Just("61441".to_string()),
            Just("99999999999999999999999".to_string()),
            Just("-1".to_string()),
            Just("abc".to_string()),
            (0u64..200_000).prop_map(|n| n.to_string()),
        ]
        .prop_map(|v| format!("Content-Length: {v}")),
    ];
    let headers = prop::collection::vec(header, 0..3);
    let body = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (61_430usize..61_450).prop_map(|n| vec![b'v'; n]),
    ];
    (method, path, query, headers, body).prop_map(|(method, path, query, headers, body)| {
        let mut raw = format!("{method} /{path}{query} HTTP/1.1\r\n");
        for h in headers {
            raw.push_str(&h);
            raw.push_str("\r\n");
        }
        raw.push_str("\r\n");
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(&body);
        raw
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: HTTP_CASES, ..ProptestConfig::default() })]

    #[test]
    fn http_structured(raw in http_request_strategy()) {
        http(&raw);
    }

    #[test]
    fn http_mutated(raw in mutated(seeds_of(seed_http(), "http_request"))) {
        http(&raw);
    }
}

/// Bodies above the limit are refused as 413, declared or not; a huge declared length is
/// refused before any of it is read.
#[test]
fn http_oversized_bodies_are_413() {
    let limit = consens::internals::server::VALUE_BYTES_MAX;
    let mut raw = b"PUT /k HTTP/1.1\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b'v', limit + 1));
    assert_eq!(http(&raw), Some(413));
    let raw = b"PUT /k HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nv".to_vec();
    assert_eq!(http(&raw), Some(413));
    let mut raw = b"PUT /k HTTP/1.1\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b'v', limit));
    assert_eq!(http(&raw), Some(201));
}

/// The harness's own instrument: allocations are seen, and freed memory is not counted twice.
#[test]
fn allocation_counter_counts() {
    let (v, peak) = peak_allocated(|| vec![7u8; 10_000]);
    assert!(peak >= 10_000, "{peak}");
    drop(v);
    let ((), peak) = peak_allocated(|| {
        for _ in 0..10 {
            drop(vec![7u8; 1000]);
        }
    });
    assert!((1000..2000).contains(&peak), "{peak}");
    let (_, peak) = peak_allocated(|| 1 + 1);
    assert_eq!(peak, 0);
}

/// Every seed decodes as what it was made to be (so mutations start from deep inside the
/// decoders), and the committed corpus holds every seed. `FUZZ_WRITE_CORPUS=1` rewrites them.
#[test]
fn seed_corpus_is_valid_and_committed() {
    let write = std::env::var_os("FUZZ_WRITE_CORPUS").is_some();
    let key = fuzz_key();
    for (name, bytes) in seed_datagrams() {
        let keyed = name.ends_with("_keyed").then_some(&key);
        consens::internals::net::codec::decode_keyed::<consens::internals::net::wire::Wire>(
            &bytes,
            FUZZ_CLUSTER,
            keyed,
        )
        .unwrap_or_else(|e| panic!("seed {name} does not decode: {e}"));
    }
    for (name, bytes) in seed_lines() {
        if name != "incomplete" {
            assert!(bytes.ends_with(b"\n"), "seed {name}");
        }
    }
    let targets = [
        ("datagram", seed_datagrams()),
        ("wal_record", seed_wal_segments()),
        ("line_parse", seed_lines()),
        ("http_request", seed_http()),
    ];
    let mut missing = Vec::new();
    for (target, seeds) in targets {
        let dir = corpus_dir(target);
        for (name, bytes) in seeds {
            let path = dir.join(format!("seed-{name}"));
            if write {
                std::fs::create_dir_all(&dir).expect("create corpus dir");
                std::fs::write(&path, &bytes).expect("write seed");
            } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
                missing.push(path.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "seed files missing or stale (FUZZ_WRITE_CORPUS=1 cargo test --test fuzz_harness \
         seed_corpus rewrites them): {missing:?}"
    );
}

/// The corpus replays clean: every committed file, unmutated, through its target's checks.
#[test]
fn committed_corpus_replays_clean() {
    for target in ["datagram", "wal_record", "line_parse", "http_request"] {
        assert!(
            !corpus(target).is_empty(),
            "no corpus found for {target} in {}",
            corpus_dir(target).display()
        );
    }
    for bytes in corpus("datagram") {
        datagram(&bytes);
    }
    for bytes in corpus("wal_record") {
        wal_segment(&bytes);
    }
    for bytes in corpus("line_parse") {
        lines(&bytes);
    }
    for bytes in corpus("http_request") {
        http(&bytes);
    }
}

/// The datagram budget by construction: a sequence preallocates at most one element per byte
/// left (postcard's size hint), so the budget per input byte must cover the largest element of
/// any sequence in a message, plus one byte for copied byte strings.
#[test]
fn datagram_budget_covers_the_largest_sequence_element() {
    use consens::internals::paxos::types::{Command, Slot, Value};
    use consens::internals::paxos::SlotState;
    let largest = [
        std::mem::size_of::<(Slot, SlotState)>(),
        std::mem::size_of::<(Slot, Value)>(),
        std::mem::size_of::<Command>(),
        std::mem::size_of::<u64>(),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    assert!(
        largest < DATAGRAM_ALLOC_PER_INPUT_BYTE_MAX,
        "a sequence element takes {largest} bytes: raise DATAGRAM_ALLOC_PER_INPUT_BYTE_MAX"
    );
}

/// The worst inputs for preallocation: many tiny elements (each a few bytes on the wire, over a
/// hundred in memory), whole and cut short (then the claimed length exceeds the bytes left).
#[test]
fn datagram_dense_sequences_stay_within_budget() {
    use consens::internals::net::codec::{encode, Header};
    use consens::internals::net::wire::Wire;
    use consens::internals::paxos::types::{Ballot, NodeId, Value};
    use consens::internals::paxos::{Message, SlotState};
    let header = Header {
        cluster: FUZZ_CLUSTER,
        from: NodeId(1),
    };
    let n = 20_000;
    let promise = Wire::Paxos(Message::Promise {
        ballot: Ballot::ZERO,
        from: 0,
        upto: 0,
        more: false,
        log_start: 0,
        entries: (0..n)
            .map(|_| (0, SlotState::Decided { value: Value::Noop }))
            .collect(),
    });
    let accepted = Wire::Paxos(Message::Accepted {
        ballot: Ballot::ZERO,
        slots: vec![0; n],
    });
    for wire in [promise, accepted] {
        let mut out = Vec::new();
        encode(&header, &wire, &mut out).expect("fits a datagram");
        datagram(&out);
        datagram(&out[..out.len() / 2]);
    }
}
