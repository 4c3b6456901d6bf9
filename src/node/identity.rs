//! The node's identity on disk: which cluster it belongs to, which member it is, the members the
//! cluster was created with, the members it was told of when it joined (if it joined), and a
//! boot counter. Who belongs to the cluster now is in the replicated log, not here
//! (`docs/paxos.md`, "Membership changes"); the first members are what the log starts from.
//!
//! The identity is recorded once, when the node first starts, and read back at every later
//! start: the cluster id and member ids are not recomputed from addresses, so that a later
//! version can move a member to a new address without changing who it is (docs/architecture.md,
//! "Node identity"). A start whose `--cluster` list or advertised address does not match the
//! record is refused with a message naming both (a typo in `--cluster` must not silently form a
//! second cluster over the same data). Data dirs written before the identity file existed hold
//! a sorted `members` list instead; they are migrated on start, with the ids and cluster id the
//! older version derived from that list, so their WAL and snapshots keep their meaning.
//!
//! The boot counter makes client command ids unique across restarts: it is bumped and synced at
//! every start, and goes into the high bits of every `CommandId::seq` this process hands out.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use crate::config::Member;
use crate::paxos::types::NodeId;

/// File holding the identity (see [`Identity::render`] for the format).
pub const IDENTITY_FILE_NAME: &str = "identity";
/// File of data dirs from before the identity file: the member list, one `ip:port` per line,
/// sorted; a member's id was its index.
pub const LEGACY_MEMBERS_FILE_NAME: &str = "members";
/// File holding the boot counter as decimal text.
pub const BOOT_FILE_NAME: &str = "boot";
/// First line of the identity file: its format and version. Version 2 adds `peer` lines (a
/// node that joined a running cluster); a file without them is written as version 1, which
/// older versions read.
const IDENTITY_FORMAT_LINE: &str = "consens-identity 1";
const IDENTITY_FORMAT_LINE_2: &str = "consens-identity 2";
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

/// Who this node is, as recorded in its data dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Tags every datagram, WAL segment and snapshot of the cluster.
    pub cluster_id: u64,
    /// This node's member id.
    pub node_id: NodeId,
    /// The members the cluster was created with, sorted by id. Ids are distinct but need not
    /// be dense.
    pub members: Vec<Member>,
    /// For a node that joined a running cluster: the members it was told of then (itself
    /// included), sorted by id; whom it reaches until it has learned the membership from the
    /// log. Empty for a member the cluster was created with.
    pub peers: Vec<Member>,
}

/// How [`establish`] found the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Established {
    /// A new data dir: the identity was created from the flags.
    Created,
    /// An older data dir's `members` file was turned into an identity file.
    Migrated,
    /// The identity file was there and matches the flags.
    Found,
}

impl Identity {
    /// The identity a new cluster's member gets: ids in the order of the sorted `members`, and
    /// the cluster id hashed from them (what every earlier version used, so migrated data dirs
    /// keep theirs). `members` must be sorted and hold `advertise`.
    pub fn bootstrap(members: &[SocketAddr], advertise: SocketAddr) -> Identity {
        let position = members
            .iter()
            .position(|m| *m == advertise)
            .expect("the advertised address is one of the members");
        Identity {
            cluster_id: crate::config::cluster_id(members),
            node_id: id_at(position),
            members: members
                .iter()
                .enumerate()
                .map(|(i, addr)| Member {
                    id: id_at(i),
                    addr: *addr,
                })
                .collect(),
            peers: Vec::new(),
        }
    }

    /// Whether this node joined a running cluster (it is not one of the first members).
    pub fn joined(&self) -> bool {
        !self.peers.is_empty()
    }

    /// The members' addresses, in id order.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.addr).collect()
    }

    /// This node's own address.
    pub fn own_addr(&self) -> SocketAddr {
        self.members
            .iter()
            .chain(&self.peers)
            .find(|m| m.id == self.node_id)
            .expect("parse, bootstrap and join make this node a member")
            .addr
    }

    /// The file's text: a format line, then `cluster <16 hex digits>`, `self <id>`, one
    /// `member <id> <ip:port>` line per first member and one `peer <id> <ip:port>` line per
    /// member told of at the join, by id.
    pub fn render(&self) -> String {
        let format = if self.peers.is_empty() {
            IDENTITY_FORMAT_LINE
        } else {
            IDENTITY_FORMAT_LINE_2
        };
        let mut text = format!(
            "{format}\ncluster {:016x}\nself {}\n",
            self.cluster_id, self.node_id.0
        );
        for m in &self.members {
            text.push_str(&format!("member {} {}\n", m.id.0, m.addr));
        }
        for m in &self.peers {
            text.push_str(&format!("peer {} {}\n", m.id.0, m.addr));
        }
        text
    }

    /// Reads [`Identity::render`]'s text back; the reason names the first thing that is wrong.
    pub fn parse(text: &str) -> Result<Identity, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        match lines.next() {
            Some(IDENTITY_FORMAT_LINE | IDENTITY_FORMAT_LINE_2) => {}
            Some(other) => {
                return Err(format!(
                    "first line is {other:?}, expected {IDENTITY_FORMAT_LINE:?}"
                ))
            }
            None => return Err("the file is empty".into()),
        }
        let (mut cluster_id, mut node_id, mut members) = (None, None, Vec::new());
        let mut peers = Vec::new();
        let parse_member = |id: &str, addr: &str| -> Result<Member, String> {
            Ok(Member {
                id: parse_id(id)?,
                addr: addr
                    .parse()
                    .map_err(|e| format!("bad member address {addr:?}: {e}"))?,
            })
        };
        for line in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["cluster", hex] => {
                    cluster_id = Some(
                        u64::from_str_radix(hex, 16)
                            .map_err(|e| format!("bad cluster id {hex:?}: {e}"))?,
                    )
                }
                ["self", id] => node_id = Some(parse_id(id)?),
                ["member", id, addr] => members.push(parse_member(id, addr)?),
                ["peer", id, addr] => peers.push(parse_member(id, addr)?),
                _ => return Err(format!("unexpected line {line:?}")),
            }
        }
        let cluster_id = cluster_id.ok_or("no cluster line")?;
        let node_id = node_id.ok_or("no self line")?;
        if members.is_empty() {
            return Err("no member lines".into());
        }
        members.sort_by_key(|m| m.id);
        peers.sort_by_key(|m| m.id);
        crate::paxos::Membership::new(members.iter().map(|m| m.id))
            .map_err(|e| format!("the member lines are not a cluster: {e}"))?;
        if !members.iter().chain(&peers).any(|m| m.id == node_id) {
            return Err(format!("self {} is not a member", node_id.0));
        }
        Ok(Identity {
            cluster_id,
            node_id,
            members,
            peers,
        })
    }
}

fn id_at(index: usize) -> NodeId {
    NodeId(u16::try_from(index).expect("at most VOTERS_MAX members"))
}

fn parse_id(text: &str) -> Result<NodeId, String> {
    text.parse::<u16>()
        .map(NodeId)
        .map_err(|e| format!("bad member id {text:?}: {e}"))
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
    #[error(
        "refusing to start: {dir} belongs to member {id} at {recorded}, but this node advertises \
         {given}; start it with --advertise {recorded}, or use a new --data-dir"
    )]
    AddressChanged {
        dir: PathBuf,
        id: u16,
        recorded: SocketAddr,
        given: SocketAddr,
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

/// Reads a file that may be missing.
fn read_optional(path: &Path) -> Result<Option<String>, IdentityError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// The identity recorded in `dir`'s identity file, if there is one.
pub fn read(dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let path = dir.join(IDENTITY_FILE_NAME);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    Identity::parse(&text)
        .map(Some)
        .map_err(|reason| IdentityError::Corrupt { path, reason })
}

/// Records `identity` in `dir`, durably (replacing the file in one step).
pub fn write(dir: &Path, identity: &Identity) -> Result<(), IdentityError> {
    crate::fs_durable::write_durably(dir, IDENTITY_FILE_NAME, identity.render().as_bytes())
        .map_err(io_error(&dir.join(IDENTITY_FILE_NAME)))
}

/// Reads (or, on a first start, records) the identity, migrating an older data dir's `members`
/// file. `members` (sorted, holding `advertise`) are the flags' member list; if `--cluster` was
/// given (`cluster_given`), they must match the first members on record (a restart may leave it
/// out: the cluster's membership is in its log).
pub fn establish(
    dir: &Path,
    members: &[SocketAddr],
    advertise: SocketAddr,
    cluster_given: bool,
) -> Result<(Identity, Established), IdentityError> {
    let legacy_path = dir.join(LEGACY_MEMBERS_FILE_NAME);
    let (identity, established) = match read(dir)? {
        Some(identity) => (identity, Established::Found),
        None => match read_optional(&legacy_path)? {
            Some(text) => {
                let recorded: Result<Vec<SocketAddr>, _> =
                    text.lines().map(|l| l.trim().parse()).collect();
                let mut recorded = recorded.map_err(|e| IdentityError::Corrupt {
                    path: legacy_path.clone(),
                    reason: format!("not a list of ip:port lines ({e})"),
                })?;
                // Older versions wrote the list sorted; sorting again costs nothing and keeps
                // the ids they derived even from a hand-edited file.
                recorded.sort();
                if !recorded.contains(&advertise) {
                    return Err(IdentityError::MembersChanged {
                        dir: dir.to_path_buf(),
                        recorded: render(&recorded),
                        given: render(members),
                    });
                }
                (
                    Identity::bootstrap(&recorded, advertise),
                    Established::Migrated,
                )
            }
            None => (
                Identity::bootstrap(members, advertise),
                Established::Created,
            ),
        },
    };
    let mut recorded = identity.addresses();
    recorded.sort();
    let flags_checked = cluster_given || established != Established::Found;
    if flags_checked && !identity.joined() && recorded != members {
        return Err(IdentityError::MembersChanged {
            dir: dir.to_path_buf(),
            recorded: render(&recorded),
            given: render(members),
        });
    }
    if identity.own_addr() != advertise {
        return Err(IdentityError::AddressChanged {
            dir: dir.to_path_buf(),
            id: identity.node_id.0,
            recorded: identity.own_addr(),
            given: advertise,
        });
    }
    if established != Established::Found {
        write(dir, &identity)?;
    }
    // The identity file is durable now; the legacy list is only a leftover (also after a crash
    // between the two steps of a migration).
    match fs::remove_file(&legacy_path) {
        Ok(()) => fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&legacy_path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&legacy_path)(e)),
    }
    Ok((identity, established))
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

    fn identity_of(
        dir: &Path,
        ports: &[u16],
        own: u16,
    ) -> Result<(Identity, Established), IdentityError> {
        establish(dir, &addrs(ports), addrs(&[own])[0], ports.len() > 1)
    }

    #[test]
    fn first_start_records_identity_and_later_starts_must_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, how) = identity_of(dir.path(), &[3000, 4000, 5000], 4000).expect("first start");
        assert_eq!(how, Established::Created);
        assert_eq!(first.node_id, NodeId(1));
        assert_eq!(
            first.cluster_id,
            crate::config::cluster_id(&addrs(&[3000, 4000, 5000]))
        );
        let (again, how) = identity_of(dir.path(), &[3000, 4000, 5000], 4000).expect("same");
        assert_eq!((again, how), (first, Established::Found));

        let err = identity_of(dir.path(), &[3000, 4000], 4000).expect_err("changed");
        let text = err.to_string();
        assert!(text.contains("refusing to start"), "{text}");
        assert!(text.contains("127.0.0.1:5000"), "{text}");
    }

    #[test]
    fn a_data_dir_started_under_another_address_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        identity_of(dir.path(), &[3000, 4000, 5000], 4000).expect("first start");
        let err = identity_of(dir.path(), &[3000, 4000, 5000], 5000).expect_err("other member");
        assert!(
            matches!(err, IdentityError::AddressChanged { id: 1, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("--advertise 127.0.0.1:4000"),
            "{err}"
        );
    }

    #[test]
    fn an_older_members_file_is_migrated_with_the_ids_and_cluster_it_implied() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join(LEGACY_MEMBERS_FILE_NAME),
            "127.0.0.1:3000\n127.0.0.1:4000\n127.0.0.1:5000\n",
        )
        .expect("write");
        let (identity, how) = identity_of(dir.path(), &[3000, 4000, 5000], 5000).expect("migrate");
        assert_eq!(how, Established::Migrated);
        assert_eq!(
            identity,
            Identity::bootstrap(&addrs(&[3000, 4000, 5000]), addrs(&[5000])[0])
        );
        assert_eq!(identity.node_id, NodeId(2));
        assert!(!dir.path().join(LEGACY_MEMBERS_FILE_NAME).exists());
        let text = fs::read_to_string(dir.path().join(IDENTITY_FILE_NAME)).expect("identity");
        assert_eq!(Identity::parse(&text), Ok(identity));
    }

    #[test]
    fn an_older_members_file_still_guards_against_a_changed_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join(LEGACY_MEMBERS_FILE_NAME),
            "127.0.0.1:3000\n127.0.0.1:4000\n",
        )
        .expect("write");
        let err = identity_of(dir.path(), &[3000, 4000, 5000], 3000).expect_err("changed");
        assert!(matches!(err, IdentityError::MembersChanged { .. }), "{err}");
        // Nothing was rewritten: the old file is still the record.
        assert!(dir.path().join(LEGACY_MEMBERS_FILE_NAME).exists());
        assert!(!dir.path().join(IDENTITY_FILE_NAME).exists());
    }

    #[test]
    fn a_leftover_members_file_next_to_the_identity_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        identity_of(dir.path(), &[3000, 4000], 3000).expect("first start");
        fs::write(
            dir.path().join(LEGACY_MEMBERS_FILE_NAME),
            "127.0.0.1:3000\n127.0.0.1:4000\n",
        )
        .expect("write");
        let (_, how) = identity_of(dir.path(), &[3000, 4000], 3000).expect("restart");
        assert_eq!(how, Established::Found);
        assert!(!dir.path().join(LEGACY_MEMBERS_FILE_NAME).exists());
    }

    #[test]
    fn corrupt_identity_files_are_reported_with_the_reason() {
        let cases = [
            ("", "empty"),
            ("consens-identity 9\n", "first line"),
            ("consens-identity 1\ncluster zz\nself 0\nmember 0 127.0.0.1:3000\n", "cluster id"),
            ("consens-identity 1\ncluster 1\nmember 0 127.0.0.1:3000\n", "no self"),
            ("consens-identity 1\ncluster 1\nself 0\n", "no member"),
            ("consens-identity 1\ncluster 1\nself 1\nmember 0 127.0.0.1:3000\n", "not a member"),
            ("consens-identity 1\ncluster 1\nself 0\nmember 0 127.0.0.1:3000\nmember 0 127.0.0.1:4000\n", "listed twice"),
            ("consens-identity 1\ncluster 1\nself 0\nmember 0 nowhere\n", "address"),
            ("consens-identity 1\ncluster 1\nself 0\nmember 0 127.0.0.1:3000\nextra\n", "unexpected"),
        ];
        for (text, reason) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            fs::write(dir.path().join(IDENTITY_FILE_NAME), text).expect("write");
            let err = identity_of(dir.path(), &[3000], 3000).expect_err(text);
            assert!(
                matches!(err, IdentityError::Corrupt { .. }),
                "{text:?}: {err}"
            );
            assert!(err.to_string().contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn member_ids_need_not_be_dense() {
        let text = "consens-identity 1\ncluster 2a\nself 9\nmember 23 127.0.0.1:5000\n\
                    member 4 127.0.0.1:3000\nmember 9 127.0.0.1:4000\n";
        let identity = Identity::parse(text).expect("valid");
        assert_eq!(identity.node_id, NodeId(9));
        assert_eq!(identity.own_addr().port(), 4000);
        let ids: Vec<u16> = identity.members.iter().map(|m| m.id.0).collect();
        assert_eq!(ids, [4, 9, 23], "kept sorted by id");
        assert_eq!(Identity::parse(&identity.render()), Ok(identity));
    }

    #[test]
    fn corrupt_legacy_members_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join(LEGACY_MEMBERS_FILE_NAME),
            "not an address\n",
        )
        .expect("write");
        let err = identity_of(dir.path(), &[3000], 3000).expect_err("corrupt");
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
