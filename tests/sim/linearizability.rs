//! A Wing–Gong linearizability checker for one key's history (with Lowe's memoization of
//! visited (linearized set, state) pairs), over the model of `types::{Op, Outcome}`.
//!
//! An operation whose outcome is unknown (a write that timed out or whose node crashed) has a
//! completion time of +infinity and may or may not have taken effect: the search may linearize
//! it anywhere after its invocation, or never. If it took effect it did so at the revision (slot)
//! the cluster decided it in, which the simulator knows; one that was never decided anywhere
//! cannot have taken effect and is left out of the history by the caller.

use consens::internals::paxos::types::Outcome;
use std::collections::HashSet;

/// A key's state: `(value id, revision)`, or absent.
pub type KeyState = Option<(u64, u64)>;

/// What a client asked for on this key. Values are ids (every write writes a fresh one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    Put { value: u64, expect: Option<u64> },
    Delete,
    Read,
}

/// What the client saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    Write(Outcome),
    Read(KeyState),
    /// No answer: took effect at `revision`, or not at all.
    Unknown {
        revision: u64,
    },
}

/// One operation of the history, with its invocation and completion on a global event clock.
#[derive(Clone, Debug)]
pub struct HistOp {
    /// Who issued it (shown when a history fails).
    pub client: usize,
    pub invoke: u64,
    /// `u64::MAX` for an unknown outcome.
    pub complete: u64,
    pub op: KvOp,
    pub observed: Observed,
}

/// A search gives up after visiting this many states (reported as inconclusive, not as a pass).
pub const SEARCH_STATES_MAX: usize = 2_000_000;

/// Why a history is not (known to be) linearizable.
#[derive(Debug)]
pub enum NotLinearizable {
    Violation(String),
    Inconclusive(String),
}

/// The model: applying `op` to `state`, writing `revision` if it writes.
fn step(state: KeyState, op: &KvOp, revision: u64) -> (KeyState, Option<Outcome>) {
    match op {
        KvOp::Put { value, expect } => {
            let current = state.map_or(0, |(_, r)| r);
            if expect.is_some_and(|e| e != current) {
                return (state, Some(Outcome::Conflict { current }));
            }
            let outcome = if current == 0 {
                Outcome::Created { revision }
            } else {
                Outcome::Updated { revision }
            };
            (Some((*value, revision)), Some(outcome))
        }
        KvOp::Delete => match state {
            Some(_) => (None, Some(Outcome::Deleted)),
            None => (None, Some(Outcome::NotFound)),
        },
        KvOp::Read => (state, None),
    }
}

/// The state after linearizing `op` now, or `None` if what the client saw rules that out.
fn linearize(state: KeyState, op: &HistOp) -> Option<KeyState> {
    match &op.observed {
        Observed::Write(outcome) => {
            let revision = match outcome {
                Outcome::Created { revision } | Outcome::Updated { revision } => *revision,
                _ => 0,
            };
            let (next, got) = step(state, &op.op, revision);
            (got.as_ref() == Some(outcome)).then_some(next)
        }
        Observed::Read(seen) => (*seen == state).then_some(state),
        Observed::Unknown { revision } => Some(step(state, &op.op, *revision).0),
    }
}

struct Search<'a> {
    ops: &'a [HistOp],
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
            if !self.is_done(i) && !matches!(self.ops[i].observed, Observed::Unknown { .. }) {
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
            if let Some(next) = linearize(state, &self.ops[i]) {
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

/// Checks one key's history (any order; sorted here by invocation).
pub fn check_key(mut ops: Vec<HistOp>) -> Result<(), NotLinearizable> {
    ops.sort_by_key(|o| (o.invoke, o.complete));
    let mut search = Search {
        ops: &ops,
        done: vec![0; ops.len().div_ceil(64).max(1)],
        seen: HashSet::new(),
        deepest: 0,
        depth: 0,
    };
    if search.run(None)? {
        return Ok(());
    }
    let deepest = search.deepest;
    let shown: Vec<String> = ops
        .iter()
        .take(deepest + 8)
        .skip(deepest.saturating_sub(8))
        .map(|o| {
            let complete = match o.complete {
                u64::MAX => "never".to_string(),
                c => c.to_string(),
            };
            format!(
                "c{} {:?} invoked {} completed {complete}: {:?}",
                o.client, o.op, o.invoke, o.observed
            )
        })
        .collect();
    Err(NotLinearizable::Violation(format!(
        "no linearization of {} operations (at most {deepest} could be ordered); around there:\n    {}",
        ops.len(),
        shown.join("\n    ")
    )))
}
