//! Hand-written histories with known verdicts, and generated ones.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use synod_check::generate::{linearizable_history, Spec};
use synod_check::*;
use synod_core::Rng;

/// Builds a history from `(client, input, call, end, output)` rows; `None` output means the
/// client never learned the outcome.
fn history(
    rows: &[(u64, KvInput, Time, Time, Option<KvOutput>)],
) -> Vec<Operation<KvInput, KvOutput>> {
    let mut h = History::new();
    for (client, input, call, end, output) in rows.iter().cloned() {
        let id = h.invoke(client, input, call);
        match output {
            Some(out) => h.ok(id, out, end),
            None => h.indeterminate(id, end),
        }
    }
    h.operations().to_vec()
}

fn read(key: Key) -> KvInput {
    KvInput::Read { key }
}
fn write(key: Key, value: Value) -> KvInput {
    KvInput::Write { key, value }
}
fn cas(key: Key, expected: Option<Value>, new: Value) -> KvInput {
    KvInput::Cas { key, expected, new }
}
fn saw(v: Option<Value>) -> Option<KvOutput> {
    Some(KvOutput::Read(v))
}
const W: Option<KvOutput> = Some(KvOutput::Written);

/// Rows for `n` overlapping writes of 1 to `n` to key 0 whose end nobody saw: every order of
/// them, and every subset, may explain what is read after them.
fn unseen_writes_to_key_0(n: u64) -> Vec<(u64, KvInput, Time, Time, Option<KvOutput>)> {
    (0..n).map(|i| (i, write(0, i + 1), i, 100, None)).collect()
}

fn violation(ops: &[Operation<KvInput, KvOutput>]) -> Violation {
    match check_kv(ops) {
        Verdict::Violation(v) => v,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn concurrent_reads_may_see_either_side_of_a_write() {
    let ops = history(&[
        (1, write(1, 10), 0, 10, W),
        (2, write(1, 20), 20, 50, W),
        (3, read(1), 25, 30, saw(Some(10))),
        (4, read(1), 30, 40, saw(Some(20))),
        (3, read(1), 60, 70, saw(Some(20))),
    ]);
    assert_eq!(check_kv(&ops), Verdict::Linearizable);
}

/// A key the search cannot decide within its budget does not hide a violation on another key;
/// with none elsewhere, the verdict names the undecided key.
#[test]
fn an_undecided_key_does_not_hide_a_violation_on_another() {
    // Key 0: twenty overlapping writes nobody saw the end of, then reads; too many orders for
    // a budget of 50 configurations.
    let mut rows = unseen_writes_to_key_0(20);
    rows.push((30, read(0), 200, 210, saw(Some(7))));
    rows.push((31, read(0), 220, 230, saw(Some(3))));
    let undecided = history(&rows);
    assert_eq!(
        check_kv_within(&undecided, 50),
        Verdict::Inconclusive { keys: vec![0] }
    );
    assert_eq!(check_kv(&undecided), Verdict::Linearizable);

    // Key 1, after it in the search's order: a stale read.
    rows.push((40, write(1, 1), 0, 10, W));
    rows.push((41, write(1, 2), 20, 30, W));
    rows.push((42, read(1), 40, 50, saw(Some(1))));
    let both = history(&rows);
    let Verdict::Violation(v) = check_kv_within(&both, 50) else {
        panic!("the stale read on key 1 went unseen");
    };
    assert_eq!(v.key, 1);
}

/// The search first gives every key a small share of its budget, then the whole budget to the
/// keys still undecided: a key too hard for the first pass is decided by the second.
#[test]
fn a_key_too_hard_for_the_first_pass_is_decided_with_the_whole_budget() {
    let mut rows = unseen_writes_to_key_0(12);
    rows.push((30, read(0), 200, 210, saw(Some(7))));
    let ops = history(&rows);
    // The fewest configurations one search needs to decide it, found by a search of its own.
    let needed = (1..2_000_000)
        .find(|&b| matches!(check(&Register, &ops, b), SearchResult::Linearizable))
        .unwrap();
    assert!(needed >= 40, "too easy to need a second pass: {needed}");
    // A twentieth of that does not decide it; the whole of it, given to check_kv_within, does.
    assert!(matches!(
        check(&Register, &ops, needed / 20),
        SearchResult::Inconclusive
    ));
    assert_eq!(check_kv_within(&ops, needed), Verdict::Linearizable);
}

/// A violation the search needs long to prove on one key does not delay a plain one on a
/// key after it: the first pass, on every key, finds the plain one.
#[test]
fn a_plain_violation_is_named_before_a_hard_one_on_an_earlier_key() {
    // Key 0: twelve writes nobody saw the end of, then a read of a value none of them wrote:
    // wrong, but only every order of the writes tried shows it.
    let mut rows = unseen_writes_to_key_0(12);
    rows.push((30, read(0), 200, 210, saw(Some(99))));
    let hard = history(&rows);
    let proves = |budget| {
        matches!(
            check(&Register, &hard, budget),
            SearchResult::Violation { .. }
        )
    };
    let budget = (0..40).map(|p| 1u64 << p).find(|&b| proves(b)).unwrap();
    assert!(budget >= 64, "too easy to need a second pass: {budget}");
    // Key 1: a stale read.
    rows.push((40, write(1, 1), 0, 10, W));
    rows.push((41, write(1, 2), 20, 30, W));
    rows.push((42, read(1), 40, 50, saw(Some(1))));
    let Verdict::Violation(v) = check_kv_within(&history(&rows), budget) else {
        panic!("a violation went unseen");
    };
    assert_eq!(v.key, 1, "the plain violation is found first");
    // Alone, key 0 is still proved wrong within the whole budget.
    let Verdict::Violation(v) = check_kv_within(&hard, budget) else {
        panic!("key 0's violation went unseen");
    };
    assert_eq!(v.key, 0);
}

/// With no budget nothing is decided, not even a single write.
#[test]
fn a_budget_of_zero_decides_nothing() {
    let ops = history(&[(1, write(1, 10), 0, 10, W)]);
    assert_eq!(
        check_kv_within(&ops, 0),
        Verdict::Inconclusive { keys: vec![1] }
    );
    assert_eq!(check_kv_within(&ops, 1), Verdict::Linearizable);
}

#[test]
fn a_stale_read_is_caught() {
    // Both writes complete, then a read returns the first value.
    let ops = history(&[
        (1, write(1, 10), 0, 10, W),
        (1, write(1, 20), 20, 30, W),
        (2, read(1), 40, 50, saw(Some(10))),
    ]);
    let v = violation(&ops);
    assert_eq!(v.key, 1);
    assert!(v.stuck.contains("read k1"), "{v}");
}

#[test]
fn a_lost_write_is_caught() {
    // An acknowledged write vanishes: a later read sees the initial state.
    let ops = history(&[(1, write(2, 7), 0, 10, W), (2, read(2), 20, 30, saw(None))]);
    assert_eq!(violation(&ops).key, 2);
}

#[test]
fn two_compare_and_swaps_from_one_value_cannot_both_succeed() {
    let ops = history(&[
        (1, write(3, 1), 0, 5, W),
        (1, cas(3, Some(1), 2), 10, 20, Some(KvOutput::Cas(true))),
        (2, cas(3, Some(1), 3), 30, 40, Some(KvOutput::Cas(true))),
    ]);
    assert_eq!(violation(&ops).key, 3);
}

#[test]
fn a_compare_and_swap_that_fails_when_it_should_hold_is_caught() {
    let ops = history(&[
        (1, write(3, 1), 0, 5, W),
        (2, cas(3, Some(1), 2), 10, 20, Some(KvOutput::Cas(false))),
    ]);
    assert_eq!(violation(&ops).key, 3);
}

#[test]
fn reading_a_value_never_written_is_caught() {
    let ops = history(&[
        (1, write(4, 1), 0, 5, W),
        (2, read(4), 10, 20, saw(Some(99))),
    ]);
    assert_eq!(violation(&ops).key, 4);
}

#[test]
fn indeterminate_writes_may_land_late_or_never() {
    // The write's client gave up at 10, yet its value shows up at 50: allowed.
    let late = history(&[
        (1, write(5, 1), 0, 10, None),
        (2, read(5), 20, 30, saw(None)),
        (2, read(5), 50, 60, saw(Some(1))),
    ]);
    assert_eq!(check_kv(&late), Verdict::Linearizable);
    // Or never.
    let never = history(&[
        (1, write(5, 1), 0, 10, None),
        (2, read(5), 50, 60, saw(None)),
    ]);
    assert_eq!(check_kv(&never), Verdict::Linearizable);
    // But not before it was invoked.
    let early = history(&[
        (2, read(5), 0, 5, saw(Some(1))),
        (1, write(5, 1), 10, 20, None),
    ]);
    assert_eq!(violation(&early).key, 5);
    // And once seen, it cannot un-happen.
    let flicker = history(&[
        (1, write(5, 1), 0, 10, None),
        (2, read(5), 20, 30, saw(Some(1))),
        (2, read(5), 40, 50, saw(None)),
    ]);
    assert_eq!(violation(&flicker).key, 5);
}

#[test]
fn failed_operations_are_ignored() {
    let mut h = History::new();
    let w = h.invoke(1, write(6, 1), 0);
    h.fail(w, 5);
    let r = h.invoke(2, read(6), 10);
    h.ok(r, KvOutput::Read(None), 20);
    assert_eq!(check_kv(h.operations()), Verdict::Linearizable);
    assert_eq!(h.tally(), (1, 1, 0));
}

#[test]
fn keys_are_checked_independently_and_the_bad_one_is_named() {
    let ops = history(&[
        (1, write(1, 1), 0, 10, W),
        (2, write(2, 2), 0, 10, W),
        (1, read(1), 20, 30, saw(Some(1))),
        (2, read(2), 20, 30, saw(Some(1))),
    ]);
    let v = violation(&ops);
    assert_eq!(v.key, 2);
    let report = v.to_string();
    assert!(
        report.contains("key k2") && report.contains(">>"),
        "{report}"
    );
}

#[test]
fn generated_linearizable_histories_pass() {
    let mut rng = Rng::new(1);
    for _ in 0..50 {
        let spec = Spec {
            operations: 400,
            clients: 6,
            keys: 3,
            duration_max: 40,
            indeterminate_share: 0.05,
        };
        let ops = linearizable_history(&mut rng, &spec);
        assert_eq!(check_kv(&ops), Verdict::Linearizable);
    }
}

#[test]
fn a_single_corrupted_read_in_a_generated_history_is_caught() {
    let mut rng = Rng::new(2);
    for round in 0..30 {
        let mut ops = linearizable_history(&mut rng, &Spec::default());
        let reads: Vec<usize> = (0..ops.len())
            .filter(|&i| matches!(ops[i].outcome, Outcome::Ok(KvOutput::Read(_))))
            .collect();
        let victim = reads[rng.index(reads.len())];
        ops[victim].outcome = Outcome::Ok(KvOutput::Read(Some(u64::MAX)));
        let key = ops[victim].input.key();
        assert_eq!(violation(&ops).key, key, "round {round}");
    }
}
