//! Disaster recovery: `consens recover --force-new-cluster` turns the data dir of one survivor
//! of a cluster whose majority is gone for good into a cluster of one member, itself.
//!
//! Nothing in the data is rewritten: the member keeps its id, the cluster keeps its id (so the
//! WAL and snapshots, tagged with both, stay valid), and only the identity file's member list
//! shrinks to this node. Started again, the node is the only voter: it elects itself, and its
//! phase 1 finds only its own votes, so every value it accepted but never learned decided is
//! decided now, and every write the lost members decided without it is gone
//! (`docs/reliability.md`, "A majority is gone for good"). That loss is why the flag exists.

use std::path::{Path, PathBuf};

use crate::node::identity::{self, Identity, IdentityError};
use crate::node::WAL_DIR_NAME;

/// Why a data dir could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{0} is not a node's data dir (it has no {WAL_DIR_NAME}/ directory)")]
    NotADataDir(PathBuf),
    #[error("a node is running on {0}: stop it first (recover rewrites its identity)")]
    Running(PathBuf),
    #[error(
        "{0} has no identity file: it was written by an older version; start the node once with \
         this version (it migrates the data dir), stop it, and recover again"
    )]
    NoIdentity(PathBuf),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot lock {path}: {reason}")]
    Lock { path: PathBuf, reason: String },
}

/// What the recovery did: the identity before and after.
pub struct Recovery {
    pub before: Identity,
    pub after: Identity,
}

/// Rewrites `data_dir`'s identity so that its node is the cluster's only member. Refuses a data
/// dir a node is running on (it holds the WAL's lock).
pub fn force_new_cluster(data_dir: &Path) -> Result<Recovery, RecoverError> {
    let wal_dir = data_dir.join(WAL_DIR_NAME);
    if !wal_dir.is_dir() {
        return Err(RecoverError::NotADataDir(data_dir.to_path_buf()));
    }
    // Held until the new identity is durable, so that a node cannot start halfway through.
    let _lock = crate::wal::lock_dir(&wal_dir).map_err(|e| match e {
        crate::wal::WalError::Locked { .. } => RecoverError::Running(data_dir.to_path_buf()),
        other => RecoverError::Lock {
            path: wal_dir.clone(),
            reason: other.to_string(),
        },
    })?;
    let before = identity::read(data_dir)?
        .ok_or_else(|| RecoverError::NoIdentity(data_dir.to_path_buf()))?;
    let own = before
        .members
        .iter()
        .find(|m| m.id == before.node_id)
        .copied()
        .expect("a parsed identity holds its own member");
    let after = Identity {
        members: vec![own],
        ..before.clone()
    };
    identity::write(data_dir, &after)?;
    Ok(Recovery { before, after })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Member;
    use crate::paxos::types::NodeId;

    fn member(id: u16, port: u16) -> Member {
        Member {
            id: NodeId(id),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[test]
    fn the_survivor_keeps_its_id_and_cluster_and_becomes_the_only_member() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join(WAL_DIR_NAME)).expect("wal dir");
        let before = Identity {
            cluster_id: 0xc0ffee,
            node_id: NodeId(9),
            members: vec![member(4, 3000), member(9, 4000), member(23, 5000)],
        };
        identity::write(dir.path(), &before).expect("write");
        let recovery = force_new_cluster(dir.path()).expect("recovered");
        assert_eq!(recovery.before, before);
        let after = identity::read(dir.path()).expect("read").expect("present");
        assert_eq!(after, recovery.after);
        assert_eq!((after.cluster_id, after.node_id), (0xc0ffee, NodeId(9)));
        assert_eq!(after.members, vec![member(9, 4000)]);
    }

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
        let _running = crate::wal::lock_dir(&wal_dir).expect("lock");
        let err = force_new_cluster(dir.path()).err().expect("refused");
        assert!(matches!(err, RecoverError::Running(_)), "{err}");
    }
}
