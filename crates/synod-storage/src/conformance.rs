//! One conformance suite for every store.
//!
//! Each check states a promise of the [`LogStore`] or [`SnapshotStore`] contract and tries
//! to break it across crashes. A store passes by providing a harness that opens it and
//! crashes it (losing, or not, whatever was not synced). The in-memory stores, the file
//! stores on a real directory and the file stores on the simulator's faulty disk all run it.

// This module is a test suite kept in the library so every store's crate can run it: a store
// that breaks a promise must make the test fail loudly, so unwrapping is the point.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use synod_core::{Entry, LogIndex, Payload, Proposal, RequestId, Snapshot, SnapshotMeta};

use crate::log::{LogState, LogStore};
use crate::snapshot::SnapshotStore;

/// Opens and crashes a log store.
pub trait LogHarness {
    /// The store under test.
    type Log: LogStore;
    /// A fresh, empty store.
    fn fresh(&mut self) -> Self::Log;
    /// Crashes the store (anything not synced may be lost, in part or whole) and opens it
    /// again from what survived.
    fn crash(&mut self, log: Self::Log) -> (Self::Log, LogState);
}

/// Opens and crashes a snapshot store.
pub trait SnapshotHarness {
    /// The store under test.
    type Store: SnapshotStore;
    /// A fresh, empty store that keeps the newest `retain` snapshots.
    fn fresh(&mut self, retain: usize) -> Self::Store;
    /// Crashes the store and opens it again.
    fn crash(&mut self, store: Self::Store, retain: usize) -> Self::Store;
}

/// A deterministic entry: its content follows from its index and era, so a checker can tell
/// a damaged or invented entry from a real one.
pub fn entry(index: LogIndex, era: u64) -> Entry {
    if index.is_multiple_of(7) {
        return Entry {
            index,
            era,
            payload: Payload::Noop,
        };
    }
    if index.is_multiple_of(11) {
        return Entry {
            index,
            era,
            payload: Payload::Marker(index * 1_000 + era),
        };
    }
    let size = (index * 37 % 300) as usize;
    let command: Vec<u8> = (0..size)
        .map(|i| (index as usize * 31 + i + era as usize) as u8)
        .collect();
    Entry {
        index,
        era,
        payload: Payload::Command(Proposal {
            id: RequestId::new(era, index),
            command: Bytes::from(command),
        }),
    }
}

fn entries(range: std::ops::RangeInclusive<LogIndex>, era: u64) -> Vec<Entry> {
    range.map(|i| entry(i, era)).collect()
}

fn indexes(state: &LogState) -> Vec<LogIndex> {
    state.entries.iter().map(|e| e.index).collect()
}

/// Runs every log store check.
pub fn log_store_suite(h: &mut impl LogHarness) {
    synced_appends_survive_a_crash(h);
    unsynced_appends_leave_a_prefix(h);
    the_last_hard_state_synced_wins(h);
    the_journal_follows_its_hard_state(h);
    a_truncation_replaces_the_suffix(h);
    compaction_moves_the_start_of_the_log(h);
    appending_with_a_gap_is_refused(h);
    long_logs_with_repeated_compaction(h);
}

/// After `sync` returns, a crash loses nothing.
pub fn synced_appends_survive_a_crash(h: &mut impl LogHarness) {
    let mut log = h.fresh();
    for batch in 0..10 {
        log.append(&entries(batch * 10 + 1..=batch * 10 + 10, 1))
            .unwrap();
        log.sync().unwrap();
    }
    let (log, state) = h.crash(log);
    assert_eq!(state.entries, entries(1..=100, 1));
    assert_eq!(log.last_index(), 100);
}

/// What was not synced may be lost, but what survives is a prefix: no gap, nothing invented.
pub fn unsynced_appends_leave_a_prefix(h: &mut impl LogHarness) {
    let mut log = h.fresh();
    log.append(&entries(1..=10, 1)).unwrap();
    log.sync().unwrap();
    log.append(&entries(11..=40, 1)).unwrap();
    let (mut log, state) = h.crash(log);
    let kept = state.entries.len() as u64;
    assert!((10..=40).contains(&kept), "kept {kept} entries");
    assert_eq!(state.entries, entries(1..=kept, 1));
    // The log goes on from what survived.
    log.append(&entries(kept + 1..=kept + 5, 2)).unwrap();
    log.sync().unwrap();
    let (_, state) = h.crash(log);
    assert_eq!(state.entries.len() as u64, kept + 5);
}

/// The hard state is replaced as a whole: after a crash it is the last synced value or a
/// later staged one, never a mix.
pub fn the_last_hard_state_synced_wins(h: &mut impl LogHarness) {
    let mut log = h.fresh();
    log.save_hard_state(b"term 1, vote n2").unwrap();
    log.sync().unwrap();
    log.save_hard_state(b"term 2, vote n3").unwrap();
    log.sync().unwrap();
    let (mut log, state) = h.crash(log);
    assert_eq!(state.hard_state.as_deref(), Some(&b"term 2, vote n3"[..]));
    log.save_hard_state(b"term 3, no vote").unwrap();
    let (_, state) = h.crash(log);
    let hard_state = state.hard_state.expect("a synced hard state survives");
    assert!(hard_state == b"term 2, vote n3" || hard_state == b"term 3, no vote");
}

/// Journal records come back in order, after the hard state they follow; a new hard state
/// discards them; a crash keeps a prefix of the unsynced ones. Across segment changes too.
pub fn the_journal_follows_its_hard_state(h: &mut impl LogHarness) {
    let mut log = h.fresh();
    log.append_journal(&[b"before any hard state".to_vec()])
        .unwrap();
    log.save_hard_state(b"checkpoint 1").unwrap();
    let records: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_le_bytes().repeat(64)).collect();
    for (i, pair) in records.chunks(2).enumerate() {
        log.append_journal(pair).unwrap();
        // Entries in between, so that a small segment limit seals segments under the journal.
        log.append(&entries(i as u64 * 5 + 1..=i as u64 * 5 + 5, 1))
            .unwrap();
        log.sync().unwrap();
    }
    // A snapshot covers every entry: segments holding only covered entries may go, and the
    // journal they held must be restated in the segments that stay.
    log.compact_to(SnapshotMeta { index: 500, era: 1 }).unwrap();
    for i in 0..40 {
        log.append(&entries(501 + i * 5..=505 + i * 5, 1)).unwrap();
        log.sync().unwrap();
    }
    let (mut log, state) = h.crash(log);
    assert_eq!(state.hard_state.as_deref(), Some(&b"checkpoint 1"[..]));
    assert_eq!(state.journal, records, "every synced record, in order");
    log.save_hard_state(b"checkpoint 2").unwrap();
    log.append_journal(&[b"after 2".to_vec()]).unwrap();
    log.sync().unwrap();
    log.append_journal(&[b"unsynced a".to_vec(), b"unsynced b".to_vec()])
        .unwrap();
    let (_, state) = h.crash(log);
    assert_eq!(state.hard_state.as_deref(), Some(&b"checkpoint 2"[..]));
    assert!(
        [1, 2, 3].contains(&state.journal.len())
            && state.journal[0] == b"after 2"
            && state.journal[1..]
                == [b"unsynced a".to_vec(), b"unsynced b".to_vec()][..state.journal.len() - 1],
        "a prefix of the unsynced records: {:?}",
        state.journal
    );
}

/// Truncating then appending replaces the log's suffix.
pub fn a_truncation_replaces_the_suffix(h: &mut impl LogHarness) {
    let mut log = h.fresh();
    log.append(&entries(1..=10, 1)).unwrap();
    log.sync().unwrap();
    log.truncate_from(6).unwrap();
    assert_eq!(log.last_index(), 5);
    log.append(&entries(6..=8, 2)).unwrap();
    log.sync().unwrap();
    let (_, state) = h.crash(log);
    let mut expected = entries(1..=5, 1);
    expected.extend(entries(6..=8, 2));
    assert_eq!(state.entries, expected);
}

/// Compaction drops the covered prefix and lets the log continue after the base, even past
/// its old end (a snapshot installed from the leader).
pub fn compaction_moves_the_start_of_the_log(h: &mut impl LogHarness) {
    let mut log = h.fresh();
    log.append(&entries(1..=50, 1)).unwrap();
    log.compact_to(SnapshotMeta { index: 30, era: 1 }).unwrap();
    log.sync().unwrap();
    let (mut log, state) = h.crash(log);
    assert_eq!(state.base, Some(SnapshotMeta { index: 30, era: 1 }));
    assert_eq!(indexes(&state), (31..=50).collect::<Vec<_>>());
    log.compact_to(SnapshotMeta { index: 80, era: 3 }).unwrap();
    assert_eq!(log.last_index(), 80);
    log.append(&entries(81..=85, 3)).unwrap();
    log.sync().unwrap();
    let (_, state) = h.crash(log);
    assert_eq!(state.base, Some(SnapshotMeta { index: 80, era: 3 }));
    assert_eq!(state.entries, entries(81..=85, 3));
    assert_eq!(state.last_index(), 85);
}

/// Appends must continue the log.
pub fn appending_with_a_gap_is_refused(h: &mut impl LogHarness) {
    let mut log = h.fresh();
    log.append(&entries(1..=3, 1)).unwrap();
    assert!(log.append(&entries(5..=6, 1)).is_err());
    assert!(log.append(&entries(3..=3, 1)).is_err());
}

/// Thousands of entries, synced in batches, compacted as a snapshotting node would, with
/// crashes in between: the log is always exactly what was written after the last base.
pub fn long_logs_with_repeated_compaction(h: &mut impl LogHarness) {
    let mut log = h.fresh();
    let mut next = 1;
    for round in 1..=8u64 {
        for _ in 0..25 {
            log.append(&entries(next..=next + 19, round)).unwrap();
            next += 20;
            log.sync().unwrap();
        }
        let base = SnapshotMeta {
            index: next - 101,
            era: round,
        };
        log.compact_to(base).unwrap();
        log.save_hard_state(&round.to_le_bytes()).unwrap();
        log.sync().unwrap();
        let (reopened, state) = h.crash(log);
        log = reopened;
        assert_eq!(state.base, Some(base));
        assert_eq!(indexes(&state), (base.index + 1..next).collect::<Vec<_>>());
        assert_eq!(state.hard_state.as_deref(), Some(&round.to_le_bytes()[..]));
    }
}

fn snapshot(index: LogIndex, era: u64) -> Snapshot {
    let data: Vec<u8> = (0..index * 3).map(|i| (i * 7 + era) as u8).collect();
    // Every other one holds a membership, which must come back as it went in.
    let membership = era.is_multiple_of(2).then(|| {
        synod_core::Membership::of_voters(&[synod_core::NodeId(1), synod_core::NodeId(index)])
    });
    Snapshot {
        meta: SnapshotMeta { index, era },
        membership,
        data: Bytes::from(data),
    }
}

/// Runs every snapshot store check.
pub fn snapshot_store_suite(h: &mut impl SnapshotHarness) {
    let mut store = h.fresh(3);
    assert_eq!(store.latest().unwrap(), None);
    for (index, era) in [(10, 1), (20, 1), (30, 2), (40, 2)] {
        store.save(&snapshot(index, era)).unwrap();
        assert_eq!(
            store.latest().unwrap(),
            Some(snapshot(index, era)),
            "a save is visible at once"
        );
    }
    let metas: Vec<u64> = store.list().unwrap().iter().map(|m| m.index).collect();
    assert_eq!(
        metas,
        vec![20, 30, 40],
        "only the newest 3 are kept, oldest first"
    );
    let mut store = h.crash(store, 3);
    assert_eq!(
        store.latest().unwrap(),
        Some(snapshot(40, 2)),
        "a saved snapshot survives a crash"
    );
    store.delete(SnapshotMeta { index: 40, era: 2 }).unwrap();
    let store = h.crash(store, 3);
    assert_eq!(store.latest().unwrap(), Some(snapshot(30, 2)));
    let empty = Snapshot {
        meta: SnapshotMeta { index: 50, era: 3 },
        membership: None,
        data: Bytes::new(),
    };
    let mut store = store;
    store.save(&empty).unwrap();
    let store = h.crash(store, 3);
    assert_eq!(
        store.latest().unwrap(),
        Some(empty),
        "an empty state machine is a valid snapshot"
    );
}
