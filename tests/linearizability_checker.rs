//! The linearizability checker has teeth: hand-written histories that are and are not
//! linearizable (a stale read, a lost acknowledged write, two compare-and-swaps from one revision,
//! revisions going backwards, an unknown write taking effect before it was invoked).

mod support;

use support::linearizability::*;

fn op(invoke: u64, complete: u64, op: KvOp, observed: Observed) -> HistOp {
    HistOp {
        client: 0,
        node: 0,
        invoke,
        complete,
        op,
        observed,
    }
}

fn put(i: u64, c: u64, value: u64, revision: u64, created: bool) -> HistOp {
    op(
        i,
        c,
        KvOp::Put { value },
        Observed::Written { revision, created },
    )
}

fn read(i: u64, c: u64, seen: KeyState) -> HistOp {
    op(i, c, KvOp::Read, Observed::Read(seen))
}

#[test]
fn a_sequential_history_passes() {
    let h = vec![
        put(0, 1, 1, 5, true),
        read(2, 3, Some((1, 5))),
        op(
            4,
            5,
            KvOp::Cas {
                expect: 5,
                value: 2,
            },
            Observed::Written {
                revision: 9,
                created: false,
            },
        ),
        op(
            6,
            7,
            KvOp::Cas {
                expect: 5,
                value: 3,
            },
            Observed::Conflict { current: 9 },
        ),
        read(8, 9, Some((2, 9))),
    ];
    check_key(h).expect("linearizable");
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_caught() {
    let h = vec![
        put(0, 1, 1, 5, true),
        put(2, 3, 2, 7, false),
        read(4, 5, Some((1, 5))),
    ];
    assert!(matches!(check_key(h), Err(NotLinearizable::Violation(_))));
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    let h = vec![put(0, 1, 1, 5, true), read(2, 3, None)];
    assert!(matches!(check_key(h), Err(NotLinearizable::Violation(_))));
}

#[test]
fn two_successful_cas_from_one_revision_are_caught() {
    let cas = |i, c, value, revision| {
        op(
            i,
            c,
            KvOp::Cas { expect: 5, value },
            Observed::Written {
                revision,
                created: false,
            },
        )
    };
    let h = vec![put(0, 1, 1, 5, true), cas(2, 10, 2, 7), cas(3, 11, 3, 8)];
    assert!(matches!(check_key(h), Err(NotLinearizable::Violation(_))));
}

#[test]
fn revisions_must_increase_along_the_order() {
    let h = vec![put(0, 1, 1, 9, true), put(2, 3, 2, 4, false)];
    assert!(matches!(check_key(h), Err(NotLinearizable::Violation(_))));
}

#[test]
fn an_unknown_write_may_or_may_not_have_happened() {
    let unknown = |i, value| op(i, u64::MAX, KvOp::Put { value }, Observed::Unknown);
    // Seen by a later read: it happened.
    check_key(vec![
        put(0, 1, 1, 5, true),
        unknown(2, 2),
        read(10, 11, Some((2, 8))),
    ])
    .expect("it took effect");
    // Never seen: it did not (or was overwritten).
    check_key(vec![
        put(0, 1, 1, 5, true),
        unknown(2, 2),
        read(10, 11, Some((1, 5))),
    ])
    .expect("it did not take effect");
    // But it cannot take effect before it was invoked.
    let h = vec![
        read(0, 1, Some((2, 8))),
        unknown(2, 2),
        put(3, 4, 1, 9, false),
    ];
    assert!(matches!(check_key(h), Err(NotLinearizable::Violation(_))));
}

#[test]
fn concurrent_operations_may_take_either_order() {
    let h = vec![
        put(0, 10, 1, 5, true),
        read(1, 2, None),
        read(3, 11, Some((1, 5))),
    ];
    check_key(h).expect("the read of nothing went first");
}
