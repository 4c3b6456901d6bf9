//! The node's identity on disk: the member set it was first started with, and a boot counter.
//!
//! A node's acceptor state only means something inside the cluster it was created for, so the first
//! start records the sorted member list in `members` and every later start must present the same
//! list: anything else is refused with a message naming both lists (a typo in `--cluster` must not
//! silently form a second cluster over the same data). The boot counter makes client command ids
//! unique across restarts: it is bumped and synced at every start, and goes into the high bits of
//! every `CommandId::seq` this process hands out.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// File holding the member list, one `ip:port` per line, sorted.
pub const MEMBERS_FILE_NAME: &str = "members";
/// File holding the boot counter as decimal text.
pub const BOOT_FILE_NAME: &str = "boot";
/// Bits of `CommandId::seq` left for the per-boot counter; the boot counter fills the rest.
pub use crate::paxos::types::COMMAND_SEQ_COUNTER_BITS;

/// Boot counters stay below this: they fill the bits of `CommandId::seq` above the per-boot counter.
pub const BOOT_MAX: u64 = 1 << (64 - COMMAND_SEQ_COUNTER_BITS);

/// A random starting point in `[BOOT_MAX / 4, BOOT_MAX / 2)`: far from every earlier boot of a
/// node that lost its counter (they started at a random point too, and count up by one per
/// start), with room for millions of restarts before `BOOT_MAX`.
fn first_boot_base() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    BOOT_MAX / 4 + hasher.finish() % (BOOT_MAX / 4)
}

/// Why the node's identity on disk does not fit this start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "refusing to start: {dir} belongs to a cluster with members [{recorded}], but this node was \
         started with members [{given}]; start it with the original --cluster list, or use a new --data-dir"
    )]
    MembersChanged {
        dir: PathBuf,
        recorded: String,
        given: String,
    },
    #[error("cannot read or write the node identity in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the identity file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn render(members: &[SocketAddr]) -> String {
    members
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks (or, on first start, records) the member set. `members` must be sorted.
pub fn check_members(dir: &Path, members: &[SocketAddr]) -> Result<(), IdentityError> {
    let path = dir.join(MEMBERS_FILE_NAME);
    let given: String = members.iter().map(|m| format!("{m}\n")).collect();
    match fs::read_to_string(&path) {
        Ok(recorded) => {
            let recorded_members: Result<Vec<SocketAddr>, _> =
                recorded.lines().map(|l| l.trim().parse()).collect();
            let recorded_members = recorded_members.map_err(|e| IdentityError::Corrupt {
                path: path.clone(),
                reason: format!("not a list of ip:port lines ({e})"),
            })?;
            if recorded_members != members {
                return Err(IdentityError::MembersChanged {
                    dir: dir.to_path_buf(),
                    recorded: render(&recorded_members),
                    given: render(members),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            crate::fs_durable::write_durably(dir, MEMBERS_FILE_NAME, given.as_bytes())
                .map_err(io_error(&path))
        }
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// Bumps the boot counter durably and returns the new value (1 on the first start).
pub fn next_boot(dir: &Path) -> Result<u64, IdentityError> {
    let path = dir.join(BOOT_FILE_NAME);
    let previous = match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|e| IdentityError::Corrupt {
                path: path.clone(),
                reason: format!("not a number ({e})"),
            })?,
        // No counter yet: a new node, or one that lost its data dir. Start at a random point of
        // the upper half of the range, so that a node that lost its counter does not reuse the
        // command ids of its earlier boots (the state machine would take them for retries).
        Err(e) if e.kind() == io::ErrorKind::NotFound => first_boot_base(),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let boot = previous + 1;
    if boot >= BOOT_MAX {
        return Err(IdentityError::Corrupt {
            path,
            reason: format!("boot counter {previous} is out of range (must stay below {BOOT_MAX})"),
        });
    }
    crate::fs_durable::write_durably(dir, BOOT_FILE_NAME, format!("{boot}\n").as_bytes())
        .map_err(io_error(&path))?;
    Ok(boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(ports: &[u16]) -> Vec<SocketAddr> {
        ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect()
    }

    #[test]
    fn first_start_records_members_and_later_starts_must_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        check_members(dir.path(), &addrs(&[3000, 4000, 5000])).expect("first start");
        check_members(dir.path(), &addrs(&[3000, 4000, 5000])).expect("same members");
        let err = check_members(dir.path(), &addrs(&[3000, 4000])).expect_err("changed");
        let text = err.to_string();
        assert!(text.contains("refusing to start"), "{text}");
        assert!(text.contains("127.0.0.1:5000"), "{text}");
    }

    #[test]
    fn corrupt_members_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(MEMBERS_FILE_NAME), "not an address\n").expect("write");
        let err = check_members(dir.path(), &addrs(&[3000])).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn boot_counter_increases_across_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = next_boot(dir.path()).expect("boot");
        assert!(
            (BOOT_MAX / 4..BOOT_MAX / 2).contains(&(first - 1)),
            "{first}"
        );
        assert_eq!(next_boot(dir.path()).expect("boot"), first + 1);
        assert_eq!(next_boot(dir.path()).expect("boot"), first + 2);
    }

    #[test]
    fn a_lost_counter_starts_somewhere_else() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let first = next_boot(a.path()).expect("boot");
        assert_ne!(next_boot(b.path()).expect("boot"), first);
    }

    #[test]
    fn an_out_of_range_counter_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join(BOOT_FILE_NAME),
            format!("{}\n", BOOT_MAX - 1),
        )
        .expect("write");
        assert!(next_boot(dir.path()).is_err());
    }
}
