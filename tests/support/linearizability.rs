//! A Wing–Gong linearizability checker (with Lowe's memoization of visited (linearized set,
//! state) pairs) for one key of consens seen from outside: a register with revisions, written by
//! put and compare-and-swap (`If-Match: "<rev>"`) and read by linearizable GETs.
//!
//! Adapted from the simulator's checker (branch `sim`), for black-box histories: the revision an
//! unacknowledged write would have got is not known. Values are unique per write, so a read that
//! saw a value tells its revision; a write with unknown outcome that nobody read gets a wildcard
//! revision. An operation with unknown outcome (a timeout, a dropped connection, "outcome
//! unknown") completes at +infinity: the search may linearize it anywhere after its invocation,
//! or never.
//!
//! Revisions are slots, so along the linearization a key's revision strictly increases.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

/// Revision 0 in a state means "some revision we never learned" (a write with unknown outcome
/// that no read observed); real revisions start at 1.
pub const REVISION_UNKNOWN: u64 = 0;
/// A search gives up after visiting this many states (reported as inconclusive, not as a pass).
pub const SEARCH_STATES_MAX: usize = 2_000_000;

/// A key's state: `(value id, revision)`, or absent.
pub type KeyState = Option<(u64, u64)>;

/// What a client asked for on one key. Values are ids; every write writes a fresh one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    Put { value: u64 },
    Cas { expect: u64, value: u64 },
    Read,
}

/// What the client saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// 201 (`created`) or 200 with this revision.
    Written {
        revision: u64,
        created: bool,
    },
    /// 412: the key's revision was `current` (0: absent).
    Conflict {
        current: u64,
    },
    Read(KeyState),
    /// No answer: took effect (once), or not at all.
    Unknown,
}

/// One operation with its invocation and completion times (nanoseconds from a common origin).
#[derive(Clone, Debug)]
pub struct HistOp {
    /// Who issued it, and through which node (shown when a history fails).
    pub client: usize,
    pub node: usize,
    pub invoke: u64,
    /// `u64::MAX` for an unknown outcome.
    pub complete: u64,
    pub op: KvOp,
    pub observed: Observed,
}

/// Why a history is not (known to be) linearizable.
#[derive(Debug)]
pub enum NotLinearizable {
    Violation(String),
    Inconclusive(String),
}

/// The state after linearizing `op` now, or `None` if what the client saw rules that out.
/// `unknown_revision` is the revision a write of unknown outcome gets if it takes effect.
fn linearize(state: KeyState, op: &HistOp, unknown_revision: u64) -> Option<KeyState> {
    let current = state.map_or(0, |(_, r)| r);
    let newer = |revision: u64| current == REVISION_UNKNOWN || revision > current;
    let matches =
        |expect: u64| state.is_some() && (current == REVISION_UNKNOWN || current == expect);
    match (&op.op, &op.observed) {
        (KvOp::Read, Observed::Read(seen)) => match (state, seen) {
            (None, None) => Some(state),
            (Some((v, r)), Some((sv, sr))) if v == *sv && (r == *sr || r == REVISION_UNKNOWN) => {
                Some(Some((v, *sr)))
            }
            _ => None,
        },
        (KvOp::Put { value }, Observed::Written { revision, created }) => {
            (*created == state.is_none() && newer(*revision)).then_some(Some((*value, *revision)))
        }
        (KvOp::Put { value }, Observed::Unknown) => Some(Some((*value, unknown_revision))),
        (KvOp::Cas { expect, value }, Observed::Written { revision, created }) => {
            (!created && matches(*expect) && newer(*revision)).then_some(Some((*value, *revision)))
        }
        (KvOp::Cas { expect, .. }, Observed::Conflict { current: seen }) => {
            let fits = match state {
                None => *seen == 0,
                Some(_) if current == REVISION_UNKNOWN => *seen != *expect && *seen != 0,
                Some(_) => current != *expect && *seen == current,
            };
            fits.then_some(state)
        }
        (KvOp::Cas { expect, value }, Observed::Unknown) => {
            if matches(*expect) {
                Some(Some((*value, unknown_revision)))
            } else {
                Some(state)
            }
        }
        _ => None,
    }
}

struct Search<'a> {
    ops: &'a [HistOp],
    unknown_revisions: Vec<u64>,
    done: Vec<u64>,
    seen: HashSet<(Vec<u64>, KeyState)>,
    deepest: usize,
    depth: usize,
}

impl Search<'_> {
    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    /// True if every known operation not yet linearized can be, starting from `state`.
    fn run(&mut self, state: KeyState) -> Result<bool, NotLinearizable> {
        let n = self.ops.len();
        let mut first_complete = u64::MAX;
        let mut remaining_known = false;
        for i in 0..n {
            if !self.is_done(i) && self.ops[i].observed != Observed::Unknown {
                remaining_known = true;
                first_complete = first_complete.min(self.ops[i].complete);
            }
        }
        if !remaining_known {
            return Ok(true);
        }
        if !self.seen.insert((self.done.clone(), state)) {
            return Ok(false);
        }
        if self.seen.len() > SEARCH_STATES_MAX {
            return Err(NotLinearizable::Inconclusive(format!(
                "search gave up after {SEARCH_STATES_MAX} states ({n} operations)"
            )));
        }
        // Only operations invoked before the first pending completion can go next.
        for i in 0..n {
            if self.ops[i].invoke > first_complete {
                break;
            }
            if self.is_done(i) {
                continue;
            }
            if let Some(next) = linearize(state, &self.ops[i], self.unknown_revisions[i]) {
                self.flip(i);
                self.depth += 1;
                self.deepest = self.deepest.max(self.depth);
                let ok = self.run(next)?;
                self.depth -= 1;
                self.flip(i);
                if ok {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// Renders a history (for failure messages and the chaos script's output).
pub fn render(ops: &[HistOp]) -> String {
    ops.iter()
        .map(|o| {
            let complete = match o.complete {
                u64::MAX => "never".to_string(),
                c => format!("{:.3}ms", c as f64 / 1e6),
            };
            format!(
                "c{} via n{} {:?} [{:.3}ms, {complete}]: {:?}",
                o.client,
                o.node,
                o.op,
                o.invoke as f64 / 1e6,
                o.observed
            )
        })
        .collect::<Vec<_>>()
        .join("\n    ")
}

/// Checks one key's history (any order; sorted here by invocation).
pub fn check_key(mut ops: Vec<HistOp>) -> Result<(), NotLinearizable> {
    ops.sort_by_key(|o| (o.invoke, o.complete));
    // A read that saw a value tells the revision its (unique) write got.
    let read_revision: HashMap<u64, u64> = ops
        .iter()
        .filter_map(|o| match o.observed {
            Observed::Read(Some((v, r))) => Some((v, r)),
            _ => None,
        })
        .collect();
    let unknown_revisions = ops
        .iter()
        .map(|o| match o.op {
            KvOp::Put { value } | KvOp::Cas { value, .. } => read_revision
                .get(&value)
                .copied()
                .unwrap_or(REVISION_UNKNOWN),
            KvOp::Read => REVISION_UNKNOWN,
        })
        .collect();
    let mut search = Search {
        ops: &ops,
        unknown_revisions,
        done: vec![0; ops.len().div_ceil(64).max(1)],
        seen: HashSet::new(),
        deepest: 0,
        depth: 0,
    };
    if search.run(None)? {
        return Ok(());
    }
    let deepest = search.deepest;
    let around = &ops[deepest.saturating_sub(8)..(deepest + 8).min(ops.len())];
    Err(NotLinearizable::Violation(format!(
        "no linearization of {} operations (at most {deepest} could be ordered); around there:\n    {}",
        ops.len(),
        render(around)
    )))
}
