//! The command line: one clap-derived parser for every subcommand, and the dispatch to them.

use crate::config::{ServeArgs, ServeConfig};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// consens: a replicated key-value store that agrees through Multi-Paxos.
#[derive(Debug, Parser)]
#[command(name = "consens", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: HTTP on PORT, Paxos peers on UDP PORT, the line protocol on PORT+1.
    /// With no flags: a one-node cluster on 127.0.0.1:3000 with data in ./consens-data/3000.
    Serve(ServeArgs),
    /// Inspect a write-ahead log directory (read-only).
    #[command(subcommand)]
    Wal(WalCommand),
}

/// `consens wal ...`: operator tools for the write-ahead log (`wal-format.md` §14).
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Check every segment; exit 0 if a node would start on it, 1 otherwise.
    Verify {
        /// The WAL directory (`<data-dir>/wal`).
        dir: PathBuf,
    },
    /// Print one line per record: LSN, type and a summary of the payload.
    Dump {
        /// The WAL directory (`<data-dir>/wal`).
        dir: PathBuf,
    },
}

/// Parses the process arguments, runs the chosen subcommand and turns its result into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Wal(cmd) => wal(cmd),
    }
}

fn wal(cmd: WalCommand) -> ExitCode {
    use crate::wal::tool;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match cmd {
        WalCommand::Verify { dir } => tool::verify(&dir, &mut out),
        WalCommand::Dump { dir } => tool::dump(&dir, &mut out, &crate::node::durable::describe),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("consens: cannot write output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk) is dropped; by default
        // tracing-subscriber reports it with eprintln!, which panics in whatever task logged.
        .log_internal_errors(false)
        .try_init();
}

fn serve(args: &ServeArgs) -> ExitCode {
    init_tracing();
    let config = match ServeConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("consens: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("consens: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::node::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node stopped");
            eprintln!("consens: {e}");
            ExitCode::FAILURE
        }
    }
}
