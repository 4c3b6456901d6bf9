//! The deterministic key-value state machine that decided log slots are applied to.
//!
//! [`KvState`] owns the ordered map of keys, the last applied slot, and the record of the
//! command ids it has applied ([`AppliedIds`]), so a command that was retried or forwarded and
//! got decided in two slots changes the state only once. Everything here is a pure function of
//! the decided sequence: two nodes that apply the same slots hold equal states and produce
//! identical snapshot bytes (`docs/architecture.md`). There is no IO, clock or
//! randomness.
//!
//! It also folds membership changes into the [`MemberHistory`] (which membership governs which
//! slot) and carries it in its snapshots, so that a node that installs one knows the cluster's
//! members as of that slot; the Paxos core folds the same changes the same way.
//!
//! A broken invariant of the caller (applying a slot out of order) is a programmer error and
//! panics; garbage snapshot bytes are an operating error and return [`KvError`].

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::applied_ids::{AppliedIds, WindowRecord};
use crate::paxos::member_history::MemberHistory;
use crate::paxos::types::{CommandId, Entry, Op, Outcome, Revision, Slot, Value};

/// The first byte of every snapshot, bumped whenever the snapshot layout changes.
/// Version 3 adds the membership history; version 2 stores applied ids as windows per origin and
/// epoch; version 1 (a list of the last 2^20 ids) is still read. Versions 1 and 2 predate
/// membership changes, so the cluster's first membership governs their every slot.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 3;
/// The version 1 layout's bound on its list of applied ids.
const V1_APPLIED_IDS_MAX: usize = 1 << 20;

/// Why snapshot bytes could not be turned back into a [`KvState`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The snapshot was written by a layout this build does not know.
    #[error("unsupported snapshot format version {version} (expected {SNAPSHOT_FORMAT_VERSION})")]
    UnsupportedVersion { version: u8 },
    /// The bytes do not decode (truncated, corrupt, or trailing garbage).
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// The bytes decode but describe a state no sequence of slots could produce.
    #[error("invalid snapshot: {0}")]
    Invalid(String),
}

/// The key-value state after applying slots `1..=applied`.
#[derive(Clone, Debug)]
pub struct KvState {
    /// Which membership governs which slot, folded up to `applied`.
    members: MemberHistory,
    /// The last slot applied; the next call to [`KvState::apply`] must bring `applied + 1`.
    applied: Slot,
    /// Keys in byte order, so snapshots and scans are deterministic.
    entries: BTreeMap<Bytes, Stored>,
    /// Which command ids were applied (the at-most-once rule).
    applied_ids: AppliedIds,
    /// The wrapping sum of the digests of the entries that have one ([`Stored::digest`]), kept
    /// as entries change; [`KvState::digest`] adds those of `unhashed` first.
    hashed_sum: u64,
    /// Keys written since the digest was last asked for, whose entries have no digest yet (a
    /// key may be listed twice, or be gone since). Hashing a value when the digest is asked for,
    /// not when it is applied, hashes a key written many times in between once, and never
    /// hashes a value that was replaced before anyone asked.
    unhashed: Vec<Bytes>,
}

/// Entries written without a digest being asked for beyond this many are hashed at once, so
/// that `unhashed` stays bounded on a node whose digest nobody reads.
const UNHASHED_KEYS_MAX: usize = 4096;

/// Equal states are equal whatever digests each has computed so far.
impl PartialEq for KvState {
    fn eq(&self, other: &KvState) -> bool {
        self.applied == other.applied
            && self.members == other.members
            && self.applied_ids == other.applied_ids
            && self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((k1, s1), (k2, s2))| k1 == k2 && s1.entry == s2.entry)
    }
}

impl Eq for KvState {}

/// One stored entry with its share of the digest once computed, kept so that replacing or
/// deleting it never reads the old value again (on a large state it is cold in the cache).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    entry: Entry,
    /// `None` until [`KvState::digest`] hashes it; the key is then in `unhashed`.
    digest: Option<u64>,
}

/// The snapshot layout, borrowed for encoding. Field order is the byte order.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u8,
    applied: Slot,
    entries: EntriesRef<'a>,
    applied_ids: Vec<WindowRecord>,
    members: &'a MemberHistory,
}

/// The entries, encoded as a map of key to [`Entry`] (the digests are not part of a snapshot).
struct EntriesRef<'a>(&'a BTreeMap<Bytes, Stored>);

impl Serialize for EntriesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, stored)| (key, &stored.entry)))
    }
}

/// The snapshot layout, owned for decoding. Entries decode as a sequence (same bytes as the map)
/// so that duplicate or unordered keys are detected instead of silently merged.
#[derive(Deserialize)]
struct SnapshotOwned {
    version: u8,
    applied: Slot,
    entries: Vec<(Bytes, Entry)>,
    applied_ids: Vec<WindowRecord>,
    members: MemberHistory,
}

/// The version 2 layout: version 3 without the membership history.
#[derive(Deserialize)]
struct SnapshotOwnedV2 {
    version: u8,
    applied: Slot,
    entries: Vec<(Bytes, Entry)>,
    applied_ids: Vec<WindowRecord>,
}

/// The version 1 layout: the same, with the last applied ids listed oldest first.
#[derive(Deserialize)]
struct SnapshotOwnedV1 {
    version: u8,
    applied: Slot,
    entries: Vec<(Bytes, Entry)>,
    applied_ids: Vec<CommandId>,
}

impl KvState {
    /// An empty state: nothing applied, no keys, and `members` (the cluster's first membership)
    /// governing slot 1.
    pub fn new(members: MemberHistory) -> KvState {
        KvState {
            members,
            applied: 0,
            entries: BTreeMap::new(),
            applied_ids: AppliedIds::default(),
            hashed_sum: 0,
            unhashed: Vec::new(),
        }
    }

    /// Which membership governs which slot, as of the applied slot.
    pub fn members(&self) -> &MemberHistory {
        &self.members
    }

    /// The entry stored under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.entries.get(key).map(|stored| &stored.entry)
    }

    /// The last applied slot (0 before the first).
    pub fn applied(&self) -> Slot {
        self.applied
    }

    /// A 64-bit digest of the keys, values and revisions: equal states at the same applied slot
    /// give equal digests on every node, whatever its build. It covers the entries, not the
    /// at-most-once record (a pure function of the same applied sequence).
    pub fn digest(&mut self) -> u64 {
        for key in std::mem::take(&mut self.unhashed) {
            if let Some(stored) = self.entries.get_mut(&key) {
                if stored.digest.is_none() {
                    let digest = entry_digest(&key, &stored.entry);
                    stored.digest = Some(digest);
                    self.hashed_sum = self.hashed_sum.wrapping_add(digest);
                }
            }
        }
        self.hashed_sum
    }

    /// Stores `entry` under `key` without its digest yet, and takes the old entry's digest (if
    /// it had one) out of the sum.
    fn store(&mut self, key: &Bytes, entry: Entry) {
        let stored = Stored {
            entry,
            digest: None,
        };
        if let Some(old) = self.entries.insert(key.clone(), stored) {
            self.forget_digest(&old);
        }
        self.unhashed.push(key.clone());
        if self.unhashed.len() > UNHASHED_KEYS_MAX {
            self.digest();
        }
    }

    fn forget_digest(&mut self, old: &Stored) {
        if let Some(digest) = old.digest {
            self.hashed_sum = self.hashed_sum.wrapping_sub(digest);
        }
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the command with this id was applied (and is still remembered).
    pub fn was_applied(&self, id: &CommandId) -> bool {
        self.applied_ids.contains(id)
    }

    /// Applies the value decided in `slot`, which must be the slot right after the last applied.
    ///
    /// Returns the command's id and what it did, or `None` for a no-op and for a command whose id
    /// was already applied (a duplicate changes nothing; its first application answered it).
    ///
    /// # Panics
    /// If `slot != applied + 1`: the caller skipped or repeated a slot, which would make replicas
    /// diverge.
    pub fn apply(&mut self, slot: Slot, value: &Value) -> Option<(CommandId, Outcome)> {
        assert_eq!(
            slot,
            self.applied + 1,
            "slots must be applied in order without gaps (applied {})",
            self.applied
        );
        self.applied = slot;
        self.applied_ids.on_slot(slot);
        // Folded before the duplicate check: the core folds every decided value, duplicates
        // included (a repeated change is refused alike everywhere), and both must agree.
        let changed = self.members.fold(slot, value);
        self.members.trim_below(slot + 1);
        let Value::Command(command) = value else {
            return None;
        };
        if !self.applied_ids.insert(command.id, slot) {
            return None;
        }
        let outcome = match &command.op {
            // `None`: the history already folded this change's id, a duplicate, no effect.
            Op::ChangeMembers(_) => self.members.outcome(slot, changed)?,
            Op::Put { key, value, expect } => {
                let current: Revision = self.entries.get(key).map_or(0, |s| s.entry.revision);
                match expect {
                    Some(expected) if *expected != current => Outcome::Conflict { current },
                    _ => {
                        let entry = Entry {
                            value: value.clone(),
                            revision: slot,
                        };
                        self.store(key, entry);
                        if current == 0 {
                            Outcome::Created { revision: slot }
                        } else {
                            Outcome::Updated { revision: slot }
                        }
                    }
                }
            }
            Op::Delete { key } => match self.entries.remove(key) {
                Some(old) => {
                    self.forget_digest(&old);
                    Outcome::Deleted
                }
                None => Outcome::NotFound,
            },
        };
        Some((command.id, outcome))
    }

    /// The whole state as bytes: postcard of (format version, applied, entries in key order,
    /// applied-id windows in key order). Equal states give equal bytes. A clone of the state is
    /// cheap (reference-counted keys and values, windows of a few words), so a snapshot is
    /// cloned where it is taken and encoded elsewhere.
    pub fn to_snapshot_bytes(&self) -> Vec<u8> {
        let snapshot = SnapshotRef {
            version: SNAPSHOT_FORMAT_VERSION,
            applied: self.applied,
            entries: EntriesRef(&self.entries),
            applied_ids: self.applied_ids.to_records(),
            members: &self.members,
        };
        // Encoding into a Vec only fails on types serde cannot express; ours are plain data.
        postcard::to_stdvec(&snapshot).expect("a KvState always encodes")
    }

    /// Rebuilds a state from [`KvState::to_snapshot_bytes`] (this version, 2 or 1; the older
    /// ones get `first_members`, the cluster's first membership, which governed all their
    /// slots). Never panics: garbage gives an error.
    pub fn from_snapshot_bytes(
        bytes: &[u8],
        first_members: &MemberHistory,
    ) -> Result<KvState, KvError> {
        match bytes.first() {
            None => Err(KvError::Malformed("empty snapshot".into())),
            Some(&SNAPSHOT_FORMAT_VERSION) => {
                let snapshot: SnapshotOwned = decode_whole(bytes)?;
                debug_assert_eq!(snapshot.version, SNAPSHOT_FORMAT_VERSION);
                if snapshot.members.folded_upto() != snapshot.applied {
                    return Err(KvError::Invalid(format!(
                        "the membership history stops at slot {}, the state at {}",
                        snapshot.members.folded_upto(),
                        snapshot.applied
                    )));
                }
                if snapshot.members.delay_slots() != first_members.delay_slots() {
                    return Err(KvError::Invalid(format!(
                        "membership changes take effect after {} slots there, {} here",
                        snapshot.members.delay_slots(),
                        first_members.delay_slots()
                    )));
                }
                let entries = entries_checked(snapshot.entries, snapshot.applied)?;
                let applied_ids = AppliedIds::from_records(snapshot.applied_ids, snapshot.applied)
                    .map_err(KvError::Invalid)?;
                Ok(KvState {
                    members: snapshot.members,
                    applied: snapshot.applied,
                    hashed_sum: 0,
                    unhashed: entries.keys().cloned().collect(),
                    entries,
                    applied_ids,
                })
            }
            Some(2) => {
                let snapshot: SnapshotOwnedV2 = decode_whole(bytes)?;
                debug_assert_eq!(snapshot.version, 2);
                let entries = entries_checked(snapshot.entries, snapshot.applied)?;
                let applied_ids = AppliedIds::from_records(snapshot.applied_ids, snapshot.applied)
                    .map_err(KvError::Invalid)?;
                Ok(KvState {
                    members: first_members
                        .clone()
                        .assume_unchanged_upto(snapshot.applied),
                    applied: snapshot.applied,
                    hashed_sum: 0,
                    unhashed: entries.keys().cloned().collect(),
                    entries,
                    applied_ids,
                })
            }
            Some(1) => {
                let snapshot: SnapshotOwnedV1 = decode_whole(bytes)?;
                debug_assert_eq!(snapshot.version, 1);
                let entries = entries_checked(snapshot.entries, snapshot.applied)?;
                if snapshot.applied_ids.len() > V1_APPLIED_IDS_MAX {
                    return Err(KvError::Invalid(format!(
                        "{} applied ids, more than {V1_APPLIED_IDS_MAX}",
                        snapshot.applied_ids.len()
                    )));
                }
                Ok(KvState {
                    members: first_members
                        .clone()
                        .assume_unchanged_upto(snapshot.applied),
                    applied: snapshot.applied,
                    hashed_sum: 0,
                    unhashed: entries.keys().cloned().collect(),
                    entries,
                    applied_ids: AppliedIds::from_ids(&snapshot.applied_ids, snapshot.applied),
                })
            }
            Some(&version) => Err(KvError::UnsupportedVersion { version }),
        }
    }
}

/// One entry's share of [`KvState::digest`]: XXH3-64 over the key's XXH3-64, the value's
/// CRC-32, both lengths and the revision. Both functions are fixed by their specs, so digests
/// compare across processes, builds and versions. The value goes through the CRC because every
/// written value is hashed once and the CRC is the faster of the two on long inputs
/// (`docs/benchmarks.md`); two different values of one length and revision then give the same
/// digest with probability 2^-32.
fn entry_digest(key: &[u8], entry: &Entry) -> u64 {
    use xxhash_rust::xxh3::xxh3_64;
    let mut parts = [0u8; 36];
    parts[..8].copy_from_slice(&xxh3_64(key).to_le_bytes());
    parts[8..12].copy_from_slice(&crc32fast::hash(&entry.value).to_le_bytes());
    parts[12..20].copy_from_slice(&(key.len() as u64).to_le_bytes());
    parts[20..28].copy_from_slice(&(entry.value.len() as u64).to_le_bytes());
    parts[28..].copy_from_slice(&entry.revision.to_le_bytes());
    xxh3_64(&parts)
}

/// Decodes `bytes` as one `T` with nothing after it.
fn decode_whole<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, KvError> {
    let (value, rest): (T, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| KvError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(KvError::Malformed(format!(
            "{} trailing bytes after the snapshot",
            rest.len()
        )));
    }
    Ok(value)
}

/// The map of a snapshot's entries, which must be in strictly ascending key order with
/// revisions in `1..=applied`.
fn entries_checked(
    entries: Vec<(Bytes, Entry)>,
    applied: Slot,
) -> Result<BTreeMap<Bytes, Stored>, KvError> {
    let mut previous: Option<&Bytes> = None;
    for (key, entry) in &entries {
        if previous.is_some_and(|p| p >= key) {
            return Err(KvError::Invalid(
                "keys not in strictly ascending order".into(),
            ));
        }
        if entry.revision == 0 || entry.revision > applied {
            return Err(KvError::Invalid(format!(
                "revision {} outside 1..={applied}",
                entry.revision
            )));
        }
        previous = Some(key);
    }
    Ok(entries
        .into_iter()
        .map(|(key, entry)| {
            let stored = Stored {
                entry,
                digest: None,
            };
            (key, stored)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::types::{Command, NodeId};
    use proptest::prelude::*;

    /// A three-voter cluster's first membership.
    fn first() -> MemberHistory {
        MemberHistory::new(
            crate::paxos::Membership::first_ids(3).expect("valid"),
            crate::paxos::MEMBER_CHANGE_DELAY_SLOTS,
        )
    }

    fn id(seq: u64) -> CommandId {
        CommandId::new(NodeId(1), 0, seq)
    }

    fn put(seq: u64, key: &str, value: &str, expect: Option<Revision>) -> Value {
        Value::Command(Command {
            id: id(seq),
            op: Op::Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                expect,
            },
        })
    }

    fn del(seq: u64, key: &str) -> Value {
        Value::Command(Command {
            id: id(seq),
            op: Op::Delete {
                key: Bytes::copy_from_slice(key.as_bytes()),
            },
        })
    }

    #[test]
    fn the_digest_follows_the_entries_and_survives_a_snapshot() {
        let mut kv = KvState::new(first());
        assert_eq!(kv.digest(), 0);
        kv.apply(1, &put(1, "a", "x", None));
        let one_key = kv.digest();
        assert_ne!(one_key, 0);
        kv.apply(2, &put(2, "b", "y", None));
        kv.apply(3, &del(3, "b"));
        // Same entries as after slot 1, so the same digest: it is a function of the entries.
        assert_eq!(kv.digest(), one_key);
        kv.apply(4, &put(4, "a", "x", None));
        assert_ne!(kv.digest(), one_key, "a new revision changes the digest");
        let mut restored =
            KvState::from_snapshot_bytes(&kv.to_snapshot_bytes(), &first()).expect("decodes");
        assert_eq!(restored.digest(), kv.digest());
        let mut other = KvState::new(first());
        other.apply(1, &put(9, "a", "z", None));
        assert_ne!(other.digest(), one_key, "another value, another digest");
    }

    #[test]
    fn the_digest_does_not_depend_on_when_it_is_asked_for() {
        // One state asked after every slot, one only at the end, one past the unhashed bound.
        let (mut eager, mut lazy) = (KvState::new(first()), KvState::new(first()));
        let ops: Vec<Value> = (1..=200u64)
            .map(|slot| match slot % 7 {
                0 => del(slot, &format!("k{}", slot % 5)),
                _ => put(slot, &format!("k{}", slot % 5), &format!("v{slot}"), None),
            })
            .collect();
        for (slot, op) in (1..).zip(&ops) {
            eager.apply(slot, op);
            eager.digest();
            lazy.apply(slot, op);
        }
        assert_eq!(lazy.digest(), eager.digest());
        let mut many = KvState::new(first());
        let slots = UNHASHED_KEYS_MAX as u64 * 2 + 3;
        let mut asked = KvState::new(first());
        for slot in 1..=slots {
            let op = put(slot, &format!("k{}", slot % 3000), "v", None);
            many.apply(slot, &op);
            asked.apply(slot, &op);
            if slot % 1000 == 0 {
                asked.digest();
            }
        }
        assert!(many.unhashed.len() <= UNHASHED_KEYS_MAX);
        assert_eq!(many.digest(), asked.digest());
        assert_eq!(many, asked);
    }

    #[test]
    fn put_get_update_delete() {
        let mut kv = KvState::new(first());
        assert!(kv.is_empty());
        assert_eq!(
            kv.apply(1, &put(1, "a", "x", None)),
            Some((id(1), Outcome::Created { revision: 1 }))
        );
        assert_eq!(kv.apply(2, &Value::Noop), None);
        assert_eq!(
            kv.apply(3, &put(2, "a", "y", None)),
            Some((id(2), Outcome::Updated { revision: 3 }))
        );
        let entry = kv.get(b"a").expect("present");
        assert_eq!((entry.value.as_ref(), entry.revision), (&b"y"[..], 3));
        assert_eq!(kv.len(), 1);
        assert_eq!(kv.apply(4, &del(3, "a")), Some((id(3), Outcome::Deleted)));
        assert_eq!(kv.apply(5, &del(4, "a")), Some((id(4), Outcome::NotFound)));
        assert!(kv.get(b"a").is_none());
        assert_eq!(kv.applied(), 5);
    }

    #[test]
    fn a_snapshot_copy_encodes_like_the_state_and_stays_put() {
        let mut kv = KvState::new(first());
        kv.apply(1, &put(1, "a", "x", None));
        kv.apply(2, &put(2, "b", "y", None));
        kv.apply(3, &del(3, "a"));
        let copy = kv.clone();
        let bytes = kv.to_snapshot_bytes();
        assert_eq!(copy.to_snapshot_bytes(), bytes);
        // Later applies do not leak into the copy.
        kv.apply(4, &put(4, "c", "z", None));
        assert_eq!(copy.to_snapshot_bytes(), bytes);
        assert_ne!(kv.to_snapshot_bytes(), bytes);
        let back =
            KvState::from_snapshot_bytes(&copy.to_snapshot_bytes(), &first()).expect("decodes");
        assert_eq!(back.applied(), 3);
        assert!(back.get(b"b").is_some() && back.get(b"a").is_none());
    }

    #[test]
    fn compare_and_swap() {
        let mut kv = KvState::new(first());
        // Expect absent (0) on an absent key: creates.
        assert_eq!(
            kv.apply(1, &put(1, "k", "v1", Some(0))),
            Some((id(1), Outcome::Created { revision: 1 }))
        );
        // Expect absent on a present key: conflict with the current revision.
        assert_eq!(
            kv.apply(2, &put(2, "k", "v2", Some(0))),
            Some((id(2), Outcome::Conflict { current: 1 }))
        );
        // Wrong revision: conflict, nothing written.
        assert_eq!(
            kv.apply(3, &put(3, "k", "v2", Some(7))),
            Some((id(3), Outcome::Conflict { current: 1 }))
        );
        assert_eq!(kv.get(b"k").map(|e| e.revision), Some(1));
        // Right revision: updates.
        assert_eq!(
            kv.apply(4, &put(4, "k", "v2", Some(1))),
            Some((id(4), Outcome::Updated { revision: 4 }))
        );
        // Expecting a revision on an absent key reports current 0.
        assert_eq!(
            kv.apply(5, &put(5, "other", "v", Some(4))),
            Some((id(5), Outcome::Conflict { current: 0 }))
        );
    }

    #[test]
    fn duplicate_command_is_applied_once() {
        let mut kv = KvState::new(first());
        assert!(kv.apply(1, &put(1, "a", "x", None)).is_some());
        assert!(kv.was_applied(&id(1)));
        // The same command decided again in a later slot changes nothing.
        assert_eq!(kv.apply(2, &put(1, "a", "x", None)), None);
        assert_eq!(kv.get(b"a").map(|e| e.revision), Some(1));
        assert_eq!(kv.applied(), 2);
    }

    #[test]
    #[should_panic(expected = "without gaps")]
    fn gap_panics() {
        let mut kv = KvState::new(first());
        kv.apply(2, &Value::Noop);
    }

    #[test]
    fn snapshot_rejects_garbage() {
        assert!(KvState::from_snapshot_bytes(&[], &first()).is_err());
        assert!(matches!(
            KvState::from_snapshot_bytes(&[9, 0, 0, 0], &first()),
            Err(KvError::UnsupportedVersion { version: 9 })
        ));
        let mut kv = KvState::new(first());
        kv.apply(1, &put(1, "a", "x", None));
        let mut bytes = kv.to_snapshot_bytes();
        bytes.push(0);
        assert!(matches!(
            KvState::from_snapshot_bytes(&bytes, &first()),
            Err(KvError::Malformed(_))
        ));
        bytes.pop();
        bytes.pop();
        assert!(KvState::from_snapshot_bytes(&bytes, &first()).is_err());
        // A revision newer than the applied slot cannot happen.
        let bad = postcard::to_stdvec(&(
            SNAPSHOT_FORMAT_VERSION,
            1u64,
            vec![(
                Bytes::from_static(b"a"),
                Entry {
                    value: Bytes::new(),
                    revision: 5,
                },
            )],
            Vec::<WindowRecord>::new(),
            first().assume_unchanged_upto(1),
        ))
        .expect("encode");
        assert!(matches!(
            KvState::from_snapshot_bytes(&bad, &first()),
            Err(KvError::Invalid(_))
        ));
        // A membership history that stops short of the state cannot happen either.
        let short = postcard::to_stdvec(&(
            SNAPSHOT_FORMAT_VERSION,
            1u64,
            Vec::<(Bytes, Entry)>::new(),
            Vec::<WindowRecord>::new(),
            first(),
        ))
        .expect("encode");
        assert!(matches!(
            KvState::from_snapshot_bytes(&short, &first()),
            Err(KvError::Invalid(_))
        ));
    }

    #[test]
    fn a_snapshot_carries_the_membership_and_a_version_2_one_gets_the_first() {
        use crate::paxos::MemberChange;
        let mut kv = KvState::new(first());
        let add = Value::Command(Command {
            id: id(1),
            op: Op::ChangeMembers(MemberChange::AddLearner {
                addr: "10.0.0.9:3000".into(),
            }),
        });
        let delay = crate::paxos::MEMBER_CHANGE_DELAY_SLOTS;
        assert_eq!(
            kv.apply(1, &add),
            Some((
                id(1),
                Outcome::MembersChanged {
                    added: Some(NodeId(3)),
                    effective: 1 + delay,
                }
            ))
        );
        let again = Value::Command(Command {
            id: id(2),
            ..match add {
                Value::Command(c) => c,
                Value::Noop => unreachable!(),
            }
        });
        assert!(matches!(
            kv.apply(2, &again),
            Some((
                _,
                Outcome::MembersRefused(crate::paxos::ChangeError::AddressInUse(..))
            ))
        ));
        let restored =
            KvState::from_snapshot_bytes(&kv.to_snapshot_bytes(), &first()).expect("decodes");
        assert_eq!(restored.members(), kv.members());
        assert!(restored.members().at(1 + delay).is_member(NodeId(3)));

        let v2 = postcard::to_stdvec(&(
            2u8,
            4u64,
            Vec::<(Bytes, Entry)>::new(),
            Vec::<WindowRecord>::new(),
        ))
        .expect("encode");
        let old = KvState::from_snapshot_bytes(&v2, &first()).expect("version 2 decodes");
        assert_eq!(old.members().folded_upto(), 4);
        assert_eq!(old.members().latest(), first().latest());
    }

    #[test]
    fn a_version_1_snapshot_is_still_read() {
        let v1 = postcard::to_stdvec(&(
            1u8,
            3u64,
            vec![(
                Bytes::from_static(b"a"),
                Entry {
                    value: Bytes::from_static(b"x"),
                    revision: 2,
                },
            )],
            vec![id(7), id(9)],
        ))
        .expect("encode");
        let mut kv = KvState::from_snapshot_bytes(&v1, &first()).expect("version 1 decodes");
        assert_eq!(kv.applied(), 3);
        assert_eq!(kv.get(b"a").map(|e| e.revision), Some(2));
        assert!(kv.was_applied(&id(7)) && kv.was_applied(&id(9)));
        assert!(!kv.was_applied(&id(8)));
        // Its ids are still skipped as duplicates, and it is written back as the new version.
        assert_eq!(kv.apply(4, &put(9, "b", "y", None)), None);
        assert!(kv.apply(5, &put(8, "b", "y", None)).is_some());
        assert_eq!(kv.to_snapshot_bytes()[0], SNAPSHOT_FORMAT_VERSION);
    }

    #[test]
    fn the_applied_ids_of_a_busy_origin_stay_small() {
        let mut kv = KvState::new(first());
        for seq in 0..20_000u64 {
            assert!(kv.apply(seq + 1, &put(seq, "k", "v", None)).is_some());
        }
        assert!(kv.applied_ids.words() <= 1);
        assert!(kv.to_snapshot_bytes().len() < 100, "one key, one window");
    }

    /// A small alphabet of keys and ids so that updates, conflicts and duplicates actually happen.
    fn arb_value() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec!["a", "b", "c", ""]);
        prop_oneof![
            1 => Just(Value::Noop),
            4 => (0u64..20, key.clone(), "[a-z]{0,4}", prop::option::of(0u64..6))
                .prop_map(|(seq, k, v, e)| put(seq, k, &v, e)),
            2 => (0u64..20, key).prop_map(|(seq, k)| del(seq, k)),
        ]
    }

    proptest! {
        #[test]
        fn same_sequence_same_state_and_snapshot_round_trips(
            values in prop::collection::vec(arb_value(), 0..60)
        ) {
            let mut a = KvState::new(first());
            let mut b = KvState::new(first());
            for (i, v) in values.iter().enumerate() {
                let slot = i as u64 + 1;
                prop_assert_eq!(a.apply(slot, v), b.apply(slot, v));
            }
            prop_assert_eq!(&a, &b);
            let bytes = a.to_snapshot_bytes();
            prop_assert_eq!(&bytes, &b.to_snapshot_bytes());
            let restored = KvState::from_snapshot_bytes(&bytes, &first()).expect("round trip");
            prop_assert_eq!(&restored, &a);
            prop_assert_eq!(restored.to_snapshot_bytes(), bytes);
        }

        #[test]
        fn garbage_snapshot_never_panics(mut bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = KvState::from_snapshot_bytes(&bytes, &first());
            // Again with a valid version byte, to get past the first check.
            bytes.insert(0, SNAPSHOT_FORMAT_VERSION);
            let _ = KvState::from_snapshot_bytes(&bytes, &first());
        }
    }
}
