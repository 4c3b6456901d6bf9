//! The `consens` binary: parses the command line and hands over to [`consens::cli`].
//!
//! The global allocator is mimalloc: a node allocates and frees small buffers per request
//! (commands, HTTP heads, channel messages), and glibc's malloc was ~10% of the leader's CPU
//! under load (docs/benchmarks.md).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    consens::cli::main()
}
