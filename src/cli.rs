//! The command line: one clap-derived parser for every subcommand, and the dispatch to them.

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
    /// Inspect a write-ahead log directory (read-only).
    #[command(subcommand)]
    Wal(WalCommand),
}

/// `consens wal ...`: operator tools for the write-ahead log (`wal-format.md` §14).
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Check every segment; exit 0 if a node would start on it, 1 otherwise.
    Verify {
        /// The WAL directory.
        dir: PathBuf,
    },
    /// Print one line per record: LSN, type and a summary of the payload.
    Dump {
        /// The WAL directory.
        dir: PathBuf,
    },
}

/// Parses the process arguments, runs the chosen subcommand and turns its result into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Wal(cmd) => wal(cmd),
    }
}

fn wal(cmd: WalCommand) -> ExitCode {
    use crate::wal::tool;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match cmd {
        WalCommand::Verify { dir } => tool::verify(&dir, &mut out),
        WalCommand::Dump { dir } => tool::dump(&dir, &mut out, &tool::describe_hex),
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
