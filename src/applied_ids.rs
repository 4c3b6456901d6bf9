//! The state machine's at-most-once record: which client command ids it has applied.
//!
//! A command can be decided in more than one slot (its origin re-sends it until it sees it
//! applied, and a new leader re-proposes what it finds accepted), so the state machine applies a
//! command id the first time only. A [`CommandId`] is `(origin, epoch << 40 | counter)`, and an
//! origin hands out the counters of one epoch (one boot of that node) in order. The record is
//! therefore one window per (origin, epoch): a base counter below which every counter is done,
//! and a bitmap of the counters from there on. Commands of one origin are decided mostly in
//! order, so full words leave the front as fast as new ones are needed and a window is a word or
//! two; a counter that is never decided (a proposal refused as busy, or lost with a crashed
//! leader) holds the front open until the newest counter is [`WINDOW_COUNTERS`] ahead of it,
//! which bounds a window to 128 KiB. The record it replaces, a queue and hash set of the last
//! 2^20 ids of all origins, cost ~32 MB, a hash insert and remove per command, and ~10 MB in
//! every snapshot.
//!
//! The rules, all pure functions of the applied sequence so that replicas stay equal:
//! - a counter more than [`WINDOW_COUNTERS`] below the newest counter applied from its origin
//!   and epoch counts as applied: so late a copy is skipped rather than applied (its client was
//!   told "outcome unknown" long ago), and nothing within a window is ever applied twice;
//! - a window no command was applied to for [`WINDOW_IDLE_SLOTS_MAX`] slots is forgotten (the
//!   epochs of an origin that restarted since), checked every [`IDLE_CHECK_SLOTS`] slots, and
//!   beyond [`WINDOWS_MAX`] windows the least recently used one is forgotten; a command of a
//!   forgotten window counts as new, so a copy decided that late could be applied twice, as with
//!   any bounded record;
//! - epochs need not grow: a node that lost its boot counter starts at a random epoch
//!   (`node::identity`), possibly below its old ones, and its new window starts empty.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::paxos::types::{CommandId, NodeId, Slot, COMMAND_SEQ_COUNTER_BITS};

/// Counters remembered exactly below the newest applied counter of a window.
pub const WINDOW_COUNTERS: u64 = 1 << 20;
/// A window no command was applied to for this many slots is forgotten.
pub const WINDOW_IDLE_SLOTS_MAX: Slot = 1 << 20;
/// Idle windows are looked for at every slot that is a multiple of this.
pub const IDLE_CHECK_SLOTS: Slot = 4096;
/// At most this many windows are kept (origins times recent epochs).
pub const WINDOWS_MAX: usize = 1024;

const WORD_BITS: u64 = u64::BITS as u64;
const WINDOW_WORDS_MAX: usize = (WINDOW_COUNTERS / WORD_BITS) as usize;

/// Whose counters a window holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct WindowKey {
    origin: NodeId,
    epoch: u64,
}

/// The applied counters of one origin and epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Window {
    /// Every counter below this is done (applied, or too far behind to be remembered).
    base: u64,
    /// Bit `i` of the whole deque is counter `base + i`. Canonical form, so that equal histories
    /// give equal windows and snapshot bytes: the front word is never full (it would have been
    /// dropped and `base` moved on) and the back word is never empty (it holds the newest).
    words: VecDeque<u64>,
    /// The slot of the last command of this window (decides when it is forgotten).
    last_used: Slot,
}

impl Window {
    /// An empty window whose first counter will be `counter`: everything from
    /// [`WINDOW_COUNTERS`] below it is remembered as not applied.
    fn starting_at(counter: u64, slot: Slot) -> Window {
        Window {
            base: counter.saturating_sub(WINDOW_COUNTERS - 1),
            words: VecDeque::new(),
            last_used: slot,
        }
    }

    /// Marks `counter` applied; false if it was already (or counts as such).
    fn insert(&mut self, counter: u64) -> bool {
        if counter < self.base {
            return false;
        }
        let mut word = (counter - self.base) / WORD_BITS;
        if word >= WINDOW_WORDS_MAX as u64 {
            // Slide so that the counter's word is the last one; counters left behind are done.
            let shift = word + 1 - WINDOW_WORDS_MAX as u64;
            if shift >= self.words.len() as u64 {
                self.words.clear();
            } else {
                self.words.drain(..shift as usize);
            }
            self.base += shift * WORD_BITS;
            word -= shift;
        }
        // Bounded by WINDOW_WORDS_MAX above.
        let word = word as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << ((counter - self.base) % WORD_BITS);
        if self.words[word] & mask != 0 {
            return false;
        }
        self.words[word] |= mask;
        while self.words.front() == Some(&u64::MAX) {
            self.words.pop_front();
            self.base += WORD_BITS;
        }
        true
    }

    fn contains(&self, counter: u64) -> bool {
        if counter < self.base {
            return true;
        }
        let offset = counter - self.base;
        self.words
            .get((offset / WORD_BITS) as usize)
            .is_some_and(|word| word & (1u64 << (offset % WORD_BITS)) != 0)
    }

    /// The bitmap as runs: (counters not applied, then counters applied), from `base`.
    fn runs(&self) -> Vec<(u32, u32)> {
        let mut runs = Vec::new();
        let mut zeros = 0u32;
        let mut ones = 0u32;
        for &word in &self.words {
            let mut bits = word;
            let mut left = WORD_BITS as u32;
            while left > 0 {
                if bits & 1 == 1 {
                    let n = bits.trailing_ones().min(left);
                    ones += n;
                    bits = bits.checked_shr(n).unwrap_or(0);
                    left -= n;
                } else {
                    let n = bits.trailing_zeros().min(left);
                    if ones > 0 {
                        runs.push((zeros, ones));
                        zeros = 0;
                        ones = 0;
                    }
                    zeros += n;
                    bits = bits.checked_shr(n).unwrap_or(0);
                    left -= n;
                }
            }
        }
        if ones > 0 {
            runs.push((zeros, ones));
        }
        runs
    }
}

/// One window as a snapshot stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRecord {
    origin: NodeId,
    epoch: u64,
    base: u64,
    last_used: Slot,
    /// Length of the bitmap in 64-bit words.
    words: u32,
    /// The set bits, as (bits not set, then bits set) from `base`.
    runs: Vec<(u32, u32)>,
}

/// See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AppliedIds {
    windows: BTreeMap<WindowKey, Window>,
}

fn key_of(id: &CommandId) -> WindowKey {
    WindowKey {
        origin: id.origin,
        epoch: id.epoch(),
    }
}

impl AppliedIds {
    /// Records `id` as applied by the command decided in `slot`; false if it was applied
    /// before (or counts as applied, see the module documentation): the caller skips it.
    pub fn insert(&mut self, id: CommandId, slot: Slot) -> bool {
        let key = key_of(&id);
        if !self.windows.contains_key(&key) && self.windows.len() >= WINDOWS_MAX {
            self.forget_least_recently_used();
        }
        let window = self
            .windows
            .entry(key)
            .or_insert_with(|| Window::starting_at(id.counter(), slot));
        window.last_used = slot;
        window.insert(id.counter())
    }

    /// Whether `id` was applied (or counts as applied).
    pub fn contains(&self, id: &CommandId) -> bool {
        self.windows
            .get(&key_of(id))
            .is_some_and(|window| window.contains(id.counter()))
    }

    /// Called for every applied slot: at every [`IDLE_CHECK_SLOTS`]th, forgets the windows no
    /// command was applied to for [`WINDOW_IDLE_SLOTS_MAX`] slots.
    pub fn on_slot(&mut self, slot: Slot) {
        if slot % IDLE_CHECK_SLOTS == 0 {
            self.windows
                .retain(|_, window| slot.saturating_sub(window.last_used) <= WINDOW_IDLE_SLOTS_MAX);
        }
    }

    fn forget_least_recently_used(&mut self) {
        let oldest = self
            .windows
            .iter()
            .min_by_key(|(key, window)| (window.last_used, **key))
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            self.windows.remove(&key);
        }
    }

    /// How many windows are kept.
    #[cfg(test)]
    pub(crate) fn windows(&self) -> usize {
        self.windows.len()
    }

    /// Bitmap words held, over all windows (memory is eight bytes each).
    #[cfg(test)]
    pub(crate) fn words(&self) -> usize {
        self.windows.values().map(|w| w.words.len()).sum()
    }

    /// The record as a snapshot stores it, windows in key order.
    pub fn to_records(&self) -> Vec<WindowRecord> {
        self.windows
            .iter()
            .map(|(key, window)| WindowRecord {
                origin: key.origin,
                epoch: key.epoch,
                base: window.base,
                last_used: window.last_used,
                // At most WINDOW_WORDS_MAX.
                words: window.words.len() as u32,
                runs: window.runs(),
            })
            .collect()
    }

    /// Rebuilds the record from [`AppliedIds::to_records`] of a state that applied up to
    /// `applied`. Anything no history could produce is an error naming what is wrong.
    pub fn from_records(records: Vec<WindowRecord>, applied: Slot) -> Result<AppliedIds, String> {
        if records.len() > WINDOWS_MAX {
            return Err(format!(
                "{} id windows, more than {WINDOWS_MAX}",
                records.len()
            ));
        }
        let mut windows = BTreeMap::new();
        let mut previous: Option<WindowKey> = None;
        for record in records {
            let key = WindowKey {
                origin: record.origin,
                epoch: record.epoch,
            };
            if previous.is_some_and(|p| p >= key) {
                return Err("id windows not in strictly ascending order".into());
            }
            previous = Some(key);
            windows.insert(key, window_from_record(record, applied)?);
        }
        Ok(AppliedIds { windows })
    }

    /// The record of a version 1 snapshot, which listed the last applied ids oldest first.
    pub fn from_ids(ids: &[CommandId], applied: Slot) -> AppliedIds {
        let mut record = AppliedIds::default();
        for id in ids {
            record.insert(*id, applied);
        }
        record
    }
}

fn window_from_record(record: WindowRecord, applied: Slot) -> Result<Window, String> {
    let WindowRecord {
        origin,
        epoch,
        base,
        last_used,
        words,
        runs,
    } = record;
    let name = format!("id window of node {} epoch {epoch}", origin.0);
    if epoch >> (u64::BITS - COMMAND_SEQ_COUNTER_BITS) != 0 {
        return Err(format!("{name}: epoch out of range"));
    }
    let words = words as usize;
    if words > WINDOW_WORDS_MAX {
        return Err(format!(
            "{name}: {words} words, more than {WINDOW_WORDS_MAX}"
        ));
    }
    let end = base.checked_add(words as u64 * WORD_BITS);
    if end.is_none_or(|end| end > 1 << COMMAND_SEQ_COUNTER_BITS) {
        return Err(format!("{name}: counters out of range"));
    }
    if last_used > applied {
        return Err(format!("{name}: used in slot {last_used}, after {applied}"));
    }
    let mut bits = VecDeque::from(vec![0u64; words]);
    let bits_total = words as u64 * WORD_BITS;
    let mut at = 0u64;
    for (i, &(zeros, ones)) in runs.iter().enumerate() {
        if ones == 0 || (zeros == 0 && i > 0) {
            return Err(format!("{name}: runs not in canonical form"));
        }
        at += u64::from(zeros);
        let end = at + u64::from(ones);
        if end > bits_total {
            return Err(format!("{name}: runs past the end of the bitmap"));
        }
        for bit in at..end {
            bits[(bit / WORD_BITS) as usize] |= 1u64 << (bit % WORD_BITS);
        }
        at = end;
    }
    if bits.front() == Some(&u64::MAX) || bits.back() == Some(&0) {
        return Err(format!("{name}: bitmap not in canonical form"));
    }
    Ok(Window {
        base,
        words: bits,
        last_used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn id(origin: u16, epoch: u64, counter: u64) -> CommandId {
        CommandId::new(NodeId(origin), epoch, counter)
    }

    #[test]
    fn in_order_counters_are_applied_once_and_keep_the_window_small() {
        let mut applied = AppliedIds::default();
        for counter in 0..10_000 {
            assert!(applied.insert(id(1, 3, counter), counter + 1));
            assert!(!applied.insert(id(1, 3, counter), counter + 1), "a retry");
            assert!(applied.words() <= 1, "{} words", applied.words());
        }
        assert!(applied.contains(&id(1, 3, 0)) && applied.contains(&id(1, 3, 9_999)));
        assert!(!applied.contains(&id(1, 3, 10_000)));
        assert!(!applied.contains(&id(2, 3, 5)), "another origin");
        assert!(!applied.contains(&id(1, 4, 5)), "another epoch");
    }

    #[test]
    fn out_of_order_counters_are_exact_within_the_window() {
        let mut applied = AppliedIds::default();
        for counter in (0..500).rev() {
            assert!(applied.insert(id(0, 1, counter * 7 % 500), 1));
        }
        for counter in 0..500 {
            assert!(!applied.insert(id(0, 1, counter), 2));
        }
        assert_eq!(
            applied.words(),
            1,
            "full words left the front; 500 % 64 remain"
        );
    }

    #[test]
    fn a_counter_never_decided_is_held_open_until_the_window_passes_it() {
        let mut applied = AppliedIds::default();
        // Counter 0 was refused as busy and never decided; everything after it is.
        for counter in 1..=WINDOW_COUNTERS - 1 {
            applied.insert(id(0, 1, counter), 1);
        }
        assert!(!applied.contains(&id(0, 1, 0)));
        assert!(applied.words() <= WINDOW_WORDS_MAX);
        // Still inside the window: applied now, exactly once.
        let mut late = applied.clone();
        assert!(late.insert(id(0, 1, 0), 2));
        assert!(!late.insert(id(0, 1, 0), 3));
        // One more counter and 0 falls out: a copy decided that late is skipped, not applied.
        applied.insert(id(0, 1, WINDOW_COUNTERS), 2);
        assert!(applied.contains(&id(0, 1, 0)));
        assert!(!applied.insert(id(0, 1, 0), 3));
        assert!(applied.words() <= WINDOW_WORDS_MAX);
        assert_eq!(
            applied.words(),
            1,
            "full words left the front once 0 was passed"
        );
    }

    #[test]
    fn a_jump_far_ahead_keeps_the_window_bounded() {
        let mut applied = AppliedIds::default();
        assert!(applied.insert(id(0, 1, 5), 1));
        assert!(applied.insert(id(0, 1, 10 * WINDOW_COUNTERS), 2));
        assert!(applied.words() <= WINDOW_WORDS_MAX);
        // Counters within the window below the newest are still open; older ones are done.
        assert!(applied.insert(id(0, 1, 10 * WINDOW_COUNTERS - 100), 3));
        assert!(!applied.insert(id(0, 1, 6), 3));
    }

    #[test]
    fn a_new_epoch_starts_empty_even_below_the_old_one() {
        let mut applied = AppliedIds::default();
        for counter in 0..100 {
            applied.insert(id(2, 50, counter), counter + 1);
        }
        // The node lost its boot counter and restarted at a lower random epoch.
        assert!(applied.insert(id(2, 7, 0), 101));
        assert!(applied.insert(id(2, 7, 1), 102));
        assert!(
            !applied.insert(id(2, 50, 99), 103),
            "old epoch still remembered"
        );
        assert_eq!(applied.windows(), 2);
    }

    #[test]
    fn idle_windows_are_forgotten_and_busy_ones_kept() {
        let mut applied = AppliedIds::default();
        applied.insert(id(0, 1, 0), 1);
        applied.insert(id(1, 1, 0), 1);
        let mut slot = 1;
        while slot <= WINDOW_IDLE_SLOTS_MAX + 2 * IDLE_CHECK_SLOTS {
            slot += 1;
            if slot % 1000 == 0 {
                applied.insert(id(1, 1, slot), slot);
            }
            applied.on_slot(slot);
        }
        assert!(!applied.contains(&id(0, 1, 0)), "idle window forgotten");
        assert!(applied.contains(&id(1, 1, 0)), "busy window kept");
        assert_eq!(applied.windows(), 1);
    }

    #[test]
    fn beyond_the_window_limit_the_least_recently_used_is_forgotten() {
        let mut applied = AppliedIds::default();
        for epoch in 0..WINDOWS_MAX as u64 {
            applied.insert(id(0, epoch, 0), epoch + 1);
        }
        applied.insert(id(0, 0, 1), WINDOWS_MAX as u64 + 1);
        applied.insert(id(1, 0, 0), WINDOWS_MAX as u64 + 2);
        assert_eq!(applied.windows(), WINDOWS_MAX);
        assert!(applied.contains(&id(0, 0, 0)), "used recently");
        assert!(!applied.contains(&id(0, 1, 0)), "least recently used");
    }

    #[test]
    fn garbage_records_are_refused() {
        let good = WindowRecord {
            origin: NodeId(0),
            epoch: 1,
            base: 10,
            last_used: 5,
            words: 1,
            runs: vec![(1, 2)],
        };
        assert!(AppliedIds::from_records(vec![good.clone()], 5).is_ok());
        let bad = [
            WindowRecord {
                last_used: 6,
                ..good.clone()
            },
            WindowRecord {
                runs: vec![(70, 1)],
                ..good.clone()
            },
            WindowRecord {
                runs: vec![],
                ..good.clone()
            },
            WindowRecord {
                runs: vec![(0, 64)],
                ..good.clone()
            },
            WindowRecord {
                runs: vec![(1, 1), (0, 1)],
                ..good.clone()
            },
            WindowRecord {
                words: WINDOW_WORDS_MAX as u32 + 1,
                ..good.clone()
            },
            WindowRecord {
                epoch: u64::MAX,
                ..good.clone()
            },
            WindowRecord {
                base: u64::MAX - 3,
                ..good.clone()
            },
        ];
        for record in bad {
            assert!(
                AppliedIds::from_records(vec![record.clone()], 5).is_err(),
                "{record:?}"
            );
        }
        assert!(AppliedIds::from_records(vec![good.clone(), good], 5).is_err());
    }

    proptest! {
        /// Against a plain set of every id (no counter is far enough behind to be forgotten),
        /// and through a snapshot round trip after every step.
        #[test]
        fn matches_a_set_of_every_id_and_round_trips(
            ops in prop::collection::vec((0u16..3, 0u64..3, 0u64..400), 0..300)
        ) {
            let mut applied = AppliedIds::default();
            let mut model = BTreeSet::new();
            for (slot, (origin, epoch, counter)) in ops.into_iter().enumerate() {
                let slot = slot as Slot + 1;
                let command = id(origin, epoch, counter);
                prop_assert_eq!(applied.insert(command, slot), model.insert(command));
                let back = AppliedIds::from_records(applied.to_records(), slot)
                    .map_err(TestCaseError::fail)?;
                prop_assert_eq!(&back, &applied);
            }
            for command in &model {
                prop_assert!(applied.contains(command));
            }
        }
    }
}
