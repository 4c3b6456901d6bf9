//! Disaster recovery: `consens recover --force-new-cluster` turns the data dir of one survivor
//! of a cluster whose majority is gone for good into a cluster of one member, itself.
//!
//! The membership lives in the replicated log (`docs/paxos.md`, "Membership changes"), so the
//! recovery is written there too, in the survivor's own WAL: every value it voted for but never
//! learned decided is recorded as decided (what its own election would decide, being the only
//! voter left), and after them a `ForceSole` change makes it the only member from the next slot
//! on. The member keeps its id, the cluster its id, and the WAL and snapshots stay valid (they are
//! tagged with both); the identity file is not touched. Every write the lost members decided
//! without it is gone (`docs/reliability.md`, "A majority is gone for good"); that loss is why the
//! flag exists. Members added later join the recovered cluster as new members.

use std::path::{Path, PathBuf};

use crate::node::durable::{Durable, PersistError, RecoverError as WalRecoverError};
use crate::node::identity::{self, Identity, IdentityError};
use crate::node::{SNAPSHOT_DIR_NAME, WAL_DIR_NAME};
use crate::paxos::types::{Command, CommandId, Op, Slot, Value};
use crate::paxos::{MemberChange, Record};
use crate::wal::{WalIdentity, WalOptions};

/// Why a data dir could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{0} is not a node's data dir (it has no {WAL_DIR_NAME}/ directory)")]
    NotADataDir(PathBuf),
    #[error("a node is running on {0}: stop it first (recover writes to its WAL)")]
    Running(PathBuf),
    #[error(
        "{0} has no identity file: it was written by an older version; start the node once with \
         this version (it migrates the data dir), stop it, and recover again"
    )]
    NoIdentity(PathBuf),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot open the WAL in {path}: {reason}")]
    Wal { path: PathBuf, reason: String },
    #[error("cannot read the snapshots in {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },
}

/// What the recovery did.
pub struct Recovery {
    pub identity: Identity,
    /// Slots this node had voted for without knowing them decided, now decided.
    pub votes_decided: u64,
    /// The slot of the `ForceSole` change; the node is the only member from the next one on.
    pub forced_at: Slot,
}

/// Writes the recovery into `data_dir`'s WAL. Refuses a data dir a node is running on (it
/// holds the WAL's lock).
pub fn force_new_cluster(data_dir: &Path) -> Result<Recovery, RecoverError> {
    let wal_dir = data_dir.join(WAL_DIR_NAME);
    if !wal_dir.is_dir() {
        return Err(RecoverError::NotADataDir(data_dir.to_path_buf()));
    }
    let identity = identity::read(data_dir)?
        .ok_or_else(|| RecoverError::NoIdentity(data_dir.to_path_buf()))?;
    let wal_error = |reason: String| RecoverError::Wal {
        path: wal_dir.clone(),
        reason,
    };
    let options = WalOptions::new(WalIdentity {
        cluster_id: identity.cluster_id,
        node_id: identity.node_id.0,
    });
    let (mut durable, mut recovered) = Durable::open(&wal_dir, options).map_err(|e| match e {
        WalRecoverError::Wal(crate::wal::WalError::Locked { .. }) => {
            RecoverError::Running(data_dir.to_path_buf())
        }
        other => wal_error(other.to_string()),
    })?;
    let snapshot_dir = data_dir.join(SNAPSHOT_DIR_NAME);
    let snapshot_slot = crate::snapshot::list(&snapshot_dir)
        .map_err(|e| RecoverError::Snapshot {
            path: snapshot_dir.clone(),
            reason: e.to_string(),
        })?
        .into_iter()
        .max()
        .unwrap_or(0);
    drop(recovered.snapshot_installed(snapshot_slot));
    let decided = recovered.decided_upto;
    let last = recovered
        .accepted
        .keys()
        .chain(recovered.chosen.keys())
        .copied()
        .max()
        .unwrap_or(0)
        .max(decided);
    let mut records = Vec::new();
    for slot in decided + 1..=last {
        let value = recovered
            .chosen
            .get(&slot)
            .cloned()
            .or_else(|| recovered.accepted.get(&slot).map(|(_, v)| v.clone()))
            .unwrap_or(Value::Noop);
        records.push(Record::Chosen { slot, value });
    }
    let votes_decided = records.len() as u64;
    let forced_at = last + 1;
    let boot = identity::next_boot(data_dir)?;
    records.push(Record::Chosen {
        slot: forced_at,
        value: Value::Command(Command {
            id: CommandId::new(identity.node_id, boot, 0),
            op: Op::ChangeMembers(MemberChange::ForceSole {
                id: identity.node_id,
            }),
        }),
    });
    records.push(Record::Decided { upto: forced_at });
    let full = |e: PersistError| wal_error(e.to_string());
    durable.persist(records).map_err(full)?;
    durable.sync().map_err(|e| wal_error(e.to_string()))?;
    Ok(Recovery {
        identity,
        votes_decided,
        forced_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_node_or_a_wrong_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            force_new_cluster(dir.path()),
            Err(RecoverError::NotADataDir(_))
        ));
        let wal_dir = dir.path().join(WAL_DIR_NAME);
        std::fs::create_dir(&wal_dir).expect("wal dir");
        assert!(matches!(
            force_new_cluster(dir.path()),
            Err(RecoverError::NoIdentity(_))
        ));
        let identity = Identity::bootstrap(
            &[std::net::SocketAddr::from(([127, 0, 0, 1], 3000))],
            std::net::SocketAddr::from(([127, 0, 0, 1], 3000)),
        );
        identity::write(dir.path(), &identity).expect("write");
        let _running = crate::wal::lock_dir(&wal_dir).expect("lock");
        let err = force_new_cluster(dir.path()).err().expect("refused");
        assert!(matches!(err, RecoverError::Running(_)), "{err}");
    }
}
