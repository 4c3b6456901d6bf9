//! Fuzz target: the line protocol's scanner and parser (`line_protocol::request`) on a buffer of
//! pipelined lines. Seeds: valid and invalid requests (`corpus/line_parse/`).
#![no_main]

#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::check_lines(data);
});
