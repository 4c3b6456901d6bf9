//! Fuzz target: the peer datagram decoder (`net::codec`), unkeyed and keyed, on any bytes.
//! Seeds: every message kind as a plain and a keyed datagram (`corpus/datagram/`).
#![no_main]

#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::check_datagram(data);
});
