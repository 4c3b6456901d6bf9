//! What the core asks its caller to make durable, and the state it is rebuilt from after a restart.
//!
//! The core never touches a disk. It hands out [`Record`]s in order, numbered 1, 2, 3… for the
//! lifetime of the `Replica` (a [`PersistIndex`]); the caller appends them to its log in that
//! order, syncs, and reports with `Replica::durable(index)` how many are durable. On restart the
//! caller folds the durable records, in order, into a [`Recovered`] and builds a new `Replica`
//! from it. What the core assumes of its storage is exactly this: a record reported durable is
//! never lost, and records become durable in order (a prefix of what was handed out).

use crate::paxos::member_history::MemberHistory;
use crate::paxos::types::{Ballot, Slot, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many records, counted from 1, the caller has been handed (or has made durable).
pub type PersistIndex = u64;

/// One fact the core needs to survive a crash (`wal-format.md`, record type 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The acceptor promised to ignore ballots below `ballot`.
    Promised { ballot: Ballot },
    /// This node completed the safe join: it holds what a majority of the others knew, and may
    /// vote. A node without this record never answers a prepare or an accept.
    Joined,
    /// The acceptor voted for `value` in `slot` at `ballot`.
    Accepted {
        slot: Slot,
        ballot: Ballot,
        value: Value,
    },
    /// `value` was chosen for `slot` (learned from another node, not from our own vote).
    Chosen { slot: Slot, value: Value },
    /// Every slot `<= upto` is decided; its value is its `Chosen` record or, without one, its
    /// last `Accepted` record.
    Decided { upto: Slot },
}

/// The core's durable state, folded from records (and trimmed by snapshots).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The highest ballot promised.
    pub promised: Ballot,
    /// Whether a `Joined` record was seen (the node may vote).
    pub voter: bool,
    /// Votes for slots above the snapshot, by slot.
    pub accepted: BTreeMap<Slot, (Ballot, Value)>,
    /// Chosen values learned from others, for slots above the snapshot.
    pub chosen: BTreeMap<Slot, Value>,
    /// Every slot `<= decided_upto` is decided.
    pub decided_upto: Slot,
    /// The slots `<= snapshot` are covered by the caller's state-machine snapshot: their values
    /// are no longer needed here, and they count as applied.
    pub snapshot: Slot,
    /// The membership history as of `snapshot`, from the snapshot's state (`None`: no snapshot,
    /// the history starts from `Config::members`). The caller sets it; records never carry it.
    pub history: Option<MemberHistory>,
}

impl Recovered {
    /// The state of a node that has never stored anything.
    pub fn empty() -> Recovered {
        Recovered::default()
    }

    /// True if nothing at all was recovered (a brand-new node, or one that lost its disk).
    pub fn is_empty(&self) -> bool {
        *self == Recovered::default()
    }

    /// Folds one record, in log order, into the state.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Promised { ballot } => {
                // Records are appended in order, so a promise never goes down in a valid log.
                self.promised = self.promised.max(*ballot);
            }
            Record::Joined => self.voter = true,
            Record::Accepted {
                slot,
                ballot,
                value,
            } => {
                if *slot > self.snapshot {
                    self.accepted.insert(*slot, (*ballot, value.clone()));
                }
            }
            Record::Chosen { slot, value } => {
                if *slot > self.snapshot {
                    self.chosen.insert(*slot, value.clone());
                }
            }
            Record::Decided { upto } => self.decided_upto = self.decided_upto.max(*upto),
        }
    }

    /// The records that rebuild this state on their own: what a log must keep when everything
    /// older is dropped (a WAL checkpoint, `wal-format.md` §10).
    pub fn checkpoint(&self) -> Vec<Record> {
        let mut records = vec![Record::Promised {
            ballot: self.promised,
        }];
        if self.voter {
            records.push(Record::Joined);
        }
        for (slot, (ballot, value)) in &self.accepted {
            records.push(Record::Accepted {
                slot: *slot,
                ballot: *ballot,
                value: value.clone(),
            });
        }
        for (slot, value) in &self.chosen {
            records.push(Record::Chosen {
                slot: *slot,
                value: value.clone(),
            });
        }
        if self.decided_upto > self.snapshot {
            records.push(Record::Decided {
                upto: self.decided_upto,
            });
        }
        records
    }

    /// The caller's snapshot now covers every slot `<= upto`. Returns the votes and chosen values
    /// no longer kept, for the caller to free where it costs nothing (a snapshot interval of
    /// commands takes milliseconds to free).
    pub fn snapshot_installed(&mut self, upto: Slot) -> Trimmed {
        if upto <= self.snapshot {
            return Trimmed::default();
        }
        self.snapshot = upto;
        self.decided_upto = self.decided_upto.max(upto);
        let accepted = self.accepted.split_off(&(upto + 1));
        let chosen = self.chosen.split_off(&(upto + 1));
        Trimmed {
            accepted: std::mem::replace(&mut self.accepted, accepted),
            chosen: std::mem::replace(&mut self.chosen, chosen),
        }
    }
}

/// What [`Recovered::snapshot_installed`] took out: the votes and chosen values of slots the
/// snapshot covers.
#[derive(Default)]
#[must_use = "dropping it frees every command it holds; drop it where that costs nothing"]
pub struct Trimmed {
    pub accepted: BTreeMap<Slot, (Ballot, Value)>,
    pub chosen: BTreeMap<Slot, Value>,
}

impl Trimmed {
    /// Whether nothing was taken out.
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty() && self.chosen.is_empty()
    }
}
