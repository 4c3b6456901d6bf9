//! The `consens get|put|del|cas|status|member list|add|promote|remove|leader transfer` subcommands: thin wrappers
//! over [`Client`] for shells.
//!
//! Every subcommand takes `--node host:port` (a node's line-protocol address, its HTTP port + 1;
//! repeat it or separate with commas to allow failover). Exit codes, so scripts can branch:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (`get` printed the value, `put`/`cas` the new revision) |
//! | 1 | not found (`get`, `del`) or conflict (`cas`, which prints the current revision) |
//! | 2 | bad usage (from the argument parser) or an invalid key/value |
//! | 3 | failed: no quorum, unavailable, no node reachable, ... (not applied) |
//! | 4 | outcome unknown: the write may or may not have been applied |

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use crate::client::{CasOutcome, Client, ClientError, MemberList, REQUEST_TIMEOUT_MS};

/// Exit code for "not found" and "conflict".
const EXIT_NOT_FOUND_OR_CONFLICT: u8 = 1;
/// Exit code for requests refused before sending.
const EXIT_INVALID: u8 = 2;
/// Exit code for failures where nothing was applied.
const EXIT_FAILED: u8 = 3;
/// Exit code for writes whose outcome is unknown.
const EXIT_OUTCOME_UNKNOWN: u8 = 4;

/// Where to send the request; shared by every client subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Line-protocol address of a node (its HTTP port + 1), as host:port. Repeat it or separate
    /// several with commas: the client fails over in that order.
    #[arg(
        long = "node",
        env = "CONSENS_NODE",
        value_delimiter = ',',
        default_value = "127.0.0.1:3001"
    )]
    pub nodes: Vec<String>,
    /// Give up waiting for a reply after this many milliseconds.
    #[arg(long, env = "CONSENS_TIMEOUT_MS", default_value_t = REQUEST_TIMEOUT_MS)]
    pub timeout_ms: u64,
}

/// The client subcommands.
#[derive(Debug, Clone)]
pub enum ClientCommand {
    /// Print a key's value.
    Get {
        /// The key.
        key: String,
    },
    /// Write a key, print its revision.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// Compare-and-swap, print the new revision (or the current one on conflict).
    Cas {
        /// The key.
        key: String,
        /// The revision the key must be at (0: absent).
        revision: u64,
        /// The new value.
        value: String,
    },
    /// Print the node's status as JSON.
    Status,
    /// Print the members as a table, or as JSON.
    MemberList {
        /// JSON instead of a table.
        json: bool,
    },
    /// Move leadership to a member.
    LeaderTransfer {
        /// The member's id.
        to: u16,
    },
    /// Add a learner at this address.
    MemberAdd { addr: String },
    /// Promote a learner.
    MemberPromote { id: u16 },
    /// Remove a member.
    MemberRemove { id: u16, force: bool },
}

/// Runs one client subcommand on a fresh single-threaded runtime and maps the result to an
/// exit code (module docs).
pub fn run(command: ClientCommand, node: &NodeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("consens: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(command, node)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("consens: {e}");
            ExitCode::from(match e {
                ClientError::InvalidRequest(_) | ClientError::Rejected { .. } => EXIT_INVALID,
                ClientError::OutcomeUnknown { .. } => EXIT_OUTCOME_UNKNOWN,
                _ => EXIT_FAILED,
            })
        }
    }
}

async fn execute(command: ClientCommand, node: &NodeArgs) -> Result<ExitCode, ClientError> {
    let client = Client::builder()
        .nodes(node.nodes.iter().cloned())
        .request_timeout(Duration::from_millis(node.timeout_ms))
        .connect()
        .await?;
    let mut out = std::io::stdout().lock();
    let printed = match command {
        ClientCommand::Get { key } => match client.get(&key).await? {
            Some(value) => out.write_all(&value).and_then(|()| out.write_all(b"\n")),
            None => return Ok(not_found(&key)),
        },
        ClientCommand::Put { key, value } => {
            let revision = client.put(&key, &value).await?;
            writeln!(out, "{revision}")
        }
        ClientCommand::Del { key } => {
            if !client.delete(&key).await? {
                return Ok(not_found(&key));
            }
            Ok(())
        }
        ClientCommand::Cas {
            key,
            revision,
            value,
        } => match client.compare_and_swap(&key, revision, &value).await? {
            CasOutcome::Swapped { revision } => writeln!(out, "{revision}"),
            CasOutcome::Conflict { current } => {
                eprintln!("consens: conflict: '{key}' is at revision {current}, not {revision}");
                let _ = writeln!(out, "{current}");
                return Ok(ExitCode::from(EXIT_NOT_FOUND_OR_CONFLICT));
            }
        },
        ClientCommand::Status => {
            let status = client.status().await?;
            let json = serde_json::to_string_pretty(&status)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            writeln!(out, "{json}")
        }
        ClientCommand::MemberList { json: true } => {
            let members = client.members().await?;
            let json = serde_json::to_string_pretty(&members)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            writeln!(out, "{json}")
        }
        ClientCommand::LeaderTransfer { to } => {
            client.transfer_leadership(to).await?;
            writeln!(out, "member {to} leads")
        }
        ClientCommand::MemberAdd { addr } => {
            let added = client.add_member(&addr).await?;
            writeln!(
                out,
                "member {} added at {} as a learner (in force from slot {}); start it with \
                 `consens serve --join <any member's host:port>`, or promote it once it has \
                 caught up: `consens member promote {}`",
                added.id, added.addr, added.effective_slot, added.id
            )
        }
        ClientCommand::MemberPromote { id } => {
            let slot = client.promote_member(id).await?;
            writeln!(out, "member {id} is a voter from slot {slot}")
        }
        ClientCommand::MemberRemove { id, force } => {
            let slot = client.remove_member(id, force).await?;
            writeln!(
                out,
                "member {id} is removed from slot {slot}; stop it once `consens member list` \
                 shows every other member caught up past that slot"
            )
        }
        ClientCommand::MemberList { json: false } => {
            let members = client.members().await?;
            out.write_all(member_table(&members).as_bytes())
        }
    };
    Ok(match printed.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consens: cannot write output: {e}");
            ExitCode::FAILURE
        }
    })
}

/// The members as an aligned table, one row per member, the leader and the answering node
/// marked; "-" where the answering node does not know.
pub fn member_table(list: &MemberList) -> String {
    let known = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut rows = vec![[
        "ID".to_string(),
        "ADDRESS".to_string(),
        "ROLE".to_string(),
        "CAUGHT-UP SLOT".to_string(),
        "LAST CONTACT MS".to_string(),
        String::new(),
    ]];
    for m in &list.members {
        let mut marks = Vec::new();
        if list.leader == Some(m.id) {
            marks.push("leader");
        }
        if list.self_id == m.id {
            marks.push("answered");
        }
        rows.push([
            m.id.to_string(),
            m.addr.clone(),
            m.role.clone(),
            known(m.caught_up_slot),
            known(m.last_contact_ms_ago),
            marks.join(", "),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut table = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

fn not_found(key: &str) -> ExitCode {
    eprintln!("consens: '{key}' not found");
    ExitCode::from(EXIT_NOT_FOUND_OR_CONFLICT)
}
