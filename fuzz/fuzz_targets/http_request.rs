//! Fuzz target: HTTP path and header handling (`server::http::router` over a `MemoryStore`),
//! the input being a raw HTTP/1.1 request. Seeds: requests of every kind (`corpus/http_request/`).
#![no_main]

#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;

use std::sync::OnceLock;

/// One runtime for the whole fuzzing process.
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let runtime = RUNTIME.get_or_init(fuzz_checks::http_runtime);
    fuzz_checks::check_http(runtime, data);
});
