//! The command line: one clap-derived parser for every subcommand, and the dispatch to them.

use clap::{Parser, Subcommand};
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
pub enum Command {}

/// Parses the process arguments, runs the chosen subcommand and turns its result into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {}
}
