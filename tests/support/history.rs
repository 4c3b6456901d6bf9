//! Checks a run's recorded client histories for linearizability, key by key, and counts what it
//! saw: shared by the chaos runs (`tests/chaos.rs`) and the partition runs
//! (`tests/partitions.rs`), so both judge a history by the same rules.

use super::chaos_client::Recorder;
use super::linearizability::{check_key, render, NotLinearizable, Observed};

/// What the check of one run found.
pub struct Checked {
    /// Operations checked, over `keys` keys.
    pub ops: usize,
    pub keys: usize,
    /// Writes whose outcome the client could not know.
    pub unknown: usize,
    /// Answers the clients did not expect (counted as unknown outcomes).
    pub unexpected: Vec<String>,
    /// One line per key that is not linearizable; the first carries the key's whole history.
    pub failures: Vec<String>,
}

/// Checks every key's history in `recorder`.
pub fn check(recorder: Recorder) -> Checked {
    let histories = recorder.ops.into_inner().expect("ops");
    let unexpected = recorder.unexpected.into_inner().expect("unexpected");
    let mut checked = Checked {
        ops: 0,
        keys: histories.len(),
        unknown: 0,
        unexpected,
        failures: Vec::new(),
    };
    for (key, ops) in histories {
        checked.ops += ops.len();
        checked.unknown += ops
            .iter()
            .filter(|o| o.observed == Observed::Unknown)
            .count();
        let shown = render(&ops);
        match check_key(ops) {
            Ok(()) => {}
            Err(NotLinearizable::Violation(why)) | Err(NotLinearizable::Inconclusive(why)) => {
                // The first failing key's whole history is printed; the others are summarized.
                let history = if checked.failures.is_empty() {
                    format!("\n  whole history of {key}:\n    {shown}")
                } else {
                    String::new()
                };
                checked.failures.push(format!("key {key}: {why}{history}"));
            }
        }
    }
    checked
}
