//! `consens bench`: a load tool that drives a running cluster and reports what it saw.
//!
//! It goes through the client library ([`crate::client::Client`], pipelined line protocol) or
//! through the HTTP API (`--protocol http`), runs a mix of puts, linearizable gets and
//! compare-and-swaps over `--keys` keys for `--duration` or `--requests`, shows a progress bar
//! while running (only when stdout is a terminal), and prints throughput, latency percentiles
//! from an HDR histogram, and errors by kind (`--json` for machines).
//!
//! ```text
//! consens bench --nodes 127.0.0.1:3001,127.0.0.1:4001,127.0.0.1:5001 --clients 64 --duration 10s
//! consens bench --protocol http --nodes 127.0.0.1:3000 --clients 64 --mix put=50,get=50 --json
//! ```
//!
//! - [`args`]: the flags. - [`workload`]: the mix, keys, values, random numbers.
//! - [`runner`]: connections, prefill, workers, progress. - [`exec_line`], [`exec_http`]: one
//!   operation over each protocol. - [`report`]: tallies, percentiles, output.

use std::io::IsTerminal;
use std::process::ExitCode;

pub mod args;
pub mod exec_http;
pub mod exec_line;
pub mod report;
pub mod runner;
pub mod workload;

pub use args::BenchArgs;

/// Runs `consens bench`; exit 0 if the run completed (errors are reported, not fatal), 1 if
/// it could not start, 2 for invalid flags.
pub fn run(args: &BenchArgs) -> ExitCode {
    if let Err(e) = args.validate() {
        eprintln!("consens bench: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("consens bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_async(args)) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let written = if args.json {
                serde_json::to_writer(&mut out, &report)
                    .map_err(std::io::Error::other)
                    .and_then(|()| std::io::Write::write_all(&mut out, b"\n"))
            } else {
                report.write_text(&mut out)
            };
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("consens bench: cannot write the report: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("consens bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_async(args: &BenchArgs) -> Result<report::Report, String> {
    let (execs, connections) = runner::open(args).await?;
    let revisions = std::sync::Arc::new(runner::Revisions::new(args.keys));
    let prefilled = !args.no_prefill && args.mix.reads_existing();
    let execs = if prefilled {
        let tally = runner::prefill(&execs, args, revisions.clone()).await;
        if tally.errors_total() > 0 {
            let kinds: Vec<String> = tally
                .error_samples
                .iter()
                .map(|(kind, sample)| format!("{kind}: {sample}"))
                .collect();
            return Err(format!(
                "prefill failed for {} of {} keys: {}",
                tally.errors_total(),
                args.keys,
                kinds.join("; ")
            ));
        }
        execs
    } else {
        execs
    };
    let show_progress = std::io::stdout().is_terminal();
    let (tally, elapsed) = runner::load(execs, args, revisions, show_progress).await;
    let setup = report::Setup {
        protocol: args.protocol,
        nodes: args.nodes(),
        clients: args.clients,
        pipeline: args.pipeline(),
        connections,
        value_size: args.value_size,
        keys: args.keys,
        mix: args.mix.to_string(),
        prefilled,
    };
    Ok(report::Report::new(setup, &tally, elapsed.as_secs_f64()))
}
