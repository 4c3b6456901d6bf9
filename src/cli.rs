//! The command line: one clap-derived parser for every subcommand, and the dispatch to them.

use crate::bench::BenchArgs;
use crate::client::commands::{ClientCommand, NodeArgs};
use crate::config::{ServeArgs, ServeConfig};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// consens: a replicated key-value store that agrees through Multi-Paxos.
#[derive(Debug, Parser)]
#[command(name = "consens", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a node: HTTP on PORT, Paxos peers on UDP PORT, the line protocol on PORT+1.
    /// With no flags: a one-node cluster on 127.0.0.1:3000 with data in ./consens-data/3000.
    Serve(ServeArgs),
    /// Inspect a write-ahead log directory (read-only).
    #[command(subcommand)]
    Wal(WalCommand),
    /// Print a key's value (exit 1 if not found).
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Write a key; prints its new revision.
    Put {
        /// The key.
        key: String,
        /// The value (no newline or NUL: the line protocol carries it; use HTTP for raw bytes).
        value: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Delete a key (exit 1 if it did not exist).
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Compare-and-swap: write only if the key is at REVISION (0: only if absent). Prints the new
    /// revision, or the current one with exit 1 on conflict.
    Cas {
        /// The key.
        key: String,
        /// The revision the key must be at.
        revision: u64,
        /// The new value.
        value: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Print a node's status (role, leader, slots, health) as JSON.
    Status {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// The cluster's members.
    #[command(subcommand)]
    Member(MemberCommand),
    /// The cluster's leadership.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// Drive a running cluster with load and report throughput, latency and errors.
    Bench(BenchArgs),
    /// Disaster recovery, when a majority of the members is gone for good: make this stopped
    /// node's data dir a cluster of one member, itself (`docs/reliability.md`).
    Recover {
        /// The data dir of the surviving node (it must not be running).
        #[arg(long)]
        data_dir: PathBuf,
        /// Required: writes the lost members decided without this node are lost for good.
        #[arg(long)]
        force_new_cluster: bool,
    },
}

/// `consens member ...`: the cluster's membership.
#[derive(Debug, Subcommand)]
pub(crate) enum MemberCommand {
    /// List the members: id, address, role, caught-up slot and last contact, as the node asked
    /// sees them (ask the leader to see every member's progress).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Add a learner at ADDR (the new node's host:port, its PORT) and print its id and what it
    /// needs to join. A node started with `serve --join` does this itself.
    Add {
        /// The new member's host:port.
        addr: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Make learner ID a voter (refused until it has caught up with the leader).
    Promote {
        /// The learner's id (`consens member list` shows the ids).
        id: u16,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Remove member ID for good (a voter or a learner; removing the leader hands leadership
    /// over first). Refused when the voters that stay could not reach a majority of
    /// themselves, unless --force.
    Remove {
        /// The member's id.
        id: u16,
        /// Remove it even though the voters that stay cannot reach a majority now (the cluster
        /// stays unavailable until enough of them are back).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// `consens leader ...`: who leads.
#[derive(Debug, Subcommand)]
pub(crate) enum LeaderCommand {
    /// Move leadership to member ID and wait until it leads (it must be up and caught up; the
    /// leader stays otherwise). Any node passes the request to the leader.
    Transfer {
        /// The member to lead (`consens member list` shows the ids).
        id: u16,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// `consens wal ...`: operator tools for the write-ahead log (`wal-format.md` §14).
#[derive(Debug, Subcommand)]
pub(crate) enum WalCommand {
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
        Command::Get { key, node } => {
            crate::client::commands::run(ClientCommand::Get { key }, &node)
        }
        Command::Put { key, value, node } => {
            crate::client::commands::run(ClientCommand::Put { key, value }, &node)
        }
        Command::Del { key, node } => {
            crate::client::commands::run(ClientCommand::Del { key }, &node)
        }
        Command::Cas {
            key,
            revision,
            value,
            node,
        } => crate::client::commands::run(
            ClientCommand::Cas {
                key,
                revision,
                value,
            },
            &node,
        ),
        Command::Status { node } => crate::client::commands::run(ClientCommand::Status, &node),
        Command::Member(MemberCommand::List { json, node }) => {
            crate::client::commands::run(ClientCommand::MemberList { json }, &node)
        }
        Command::Member(MemberCommand::Add { addr, node }) => {
            crate::client::commands::run(ClientCommand::MemberAdd { addr }, &node)
        }
        Command::Member(MemberCommand::Promote { id, node }) => {
            crate::client::commands::run(ClientCommand::MemberPromote { id }, &node)
        }
        Command::Member(MemberCommand::Remove { id, force, node }) => {
            crate::client::commands::run(ClientCommand::MemberRemove { id, force }, &node)
        }
        Command::Leader(LeaderCommand::Transfer { id, node }) => {
            crate::client::commands::run(ClientCommand::LeaderTransfer { to: id }, &node)
        }
        Command::Bench(args) => crate::bench::run(&args),
        Command::Recover {
            data_dir,
            force_new_cluster,
        } => recover(&data_dir, force_new_cluster),
    }
}

fn recover(data_dir: &std::path::Path, force: bool) -> ExitCode {
    if !force {
        eprintln!(
            "consens: recover makes {} a new cluster of one member; writes the other members \
             decided without it are lost for good. Do it only when a majority is gone for good \
             (docs/reliability.md), and say so with --force-new-cluster",
            data_dir.display()
        );
        return ExitCode::from(2);
    }
    match crate::node::recover::force_new_cluster(data_dir) {
        Ok(recovery) => {
            println!(
                "{} is now a cluster of one member: member {} at {} (cluster {:016x}); every \
                 other member is removed. {} slot(s) it had voted for without knowing them \
                 decided are now decided; the change is in slot {}. Start it with its usual \
                 --port/--advertise and no --cluster; other machines join it with --join.",
                data_dir.display(),
                recovery.identity.node_id.0,
                recovery.identity.own_addr(),
                recovery.identity.cluster_id,
                recovery.votes_decided,
                recovery.forced_at,
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("consens: {e}");
            ExitCode::FAILURE
        }
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
    crate::node::memory::disable_transparent_huge_pages();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
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
