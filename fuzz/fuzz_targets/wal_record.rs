//! Fuzz target: the WAL record frame decoder (`wal::record`), walking a segment frame by frame
//! as recovery does. Seeds: valid frames followed by zeroes (`corpus/wal_record/`).
#![no_main]

#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::check_wal_segment(data);
});
