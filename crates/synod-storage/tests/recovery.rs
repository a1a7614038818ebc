//! Recovery of the file log and snapshot store from damage on disk.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use std::path::{Path, PathBuf};

use synod_core::{Snapshot, SnapshotMeta};
mod common;

use common::TempDir;
use synod_storage::conformance::entry;
use synod_storage::*;

const SMALL: WalOptions = WalOptions {
    segment_bytes: 8 << 10,
};

/// Writes entries 1..=count in batches of 10, synced.
fn write_log(path: &Path, count: u64) -> FileLog<RealDir> {
    let (mut log, _) = FileLog::open(RealDir::open(path).unwrap(), SMALL).unwrap();
    for start in (1..=count).step_by(10) {
        let batch: Vec<_> = (start..start + 10).map(|i| entry(i, 1)).collect();
        log.append(&batch).unwrap();
        log.sync().unwrap();
    }
    log
}

fn segments(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

fn reopen(path: &Path) -> Result<(FileLog<RealDir>, LogState)> {
    FileLog::open(RealDir::open(path).unwrap(), SMALL)
}

#[test]
fn segments_roll_over_and_compaction_deletes_the_covered_ones() {
    let dir = TempDir::new("rollover");
    let mut log = write_log(&dir.0, 400);
    let before = segments(&dir.0).len();
    assert!(
        before > 5,
        "400 entries in 8 KiB segments make many segments: {before}"
    );
    log.compact_to(SnapshotMeta { index: 350, era: 1 }).unwrap();
    log.sync().unwrap();
    let after = segments(&dir.0).len();
    assert!(
        after < before / 2,
        "covered segments were deleted: {before} -> {after}"
    );
    drop(log);
    let (_, state) = reopen(&dir.0).unwrap();
    assert_eq!(state.base, Some(SnapshotMeta { index: 350, era: 1 }));
    assert_eq!(state.entries.first().map(|e| e.index), Some(351));
    assert_eq!(state.last_index(), 400);
}

#[test]
fn a_torn_tail_is_cut_off_and_reported() {
    let dir = TempDir::new("torn");
    drop(write_log(&dir.0, 30));
    let last = segments(&dir.0).pop().unwrap();
    let full = std::fs::read(&last).unwrap();
    // The last record was only partly written when the machine stopped.
    std::fs::write(&last, &full[..full.len() - 7]).unwrap();
    let (_, state) = reopen(&dir.0).unwrap();
    assert_eq!(
        state.last_index(),
        29,
        "the torn entry 30 is gone, 1..=29 are intact"
    );
    assert_eq!(
        state.entries,
        (1..=29).map(|i| entry(i, 1)).collect::<Vec<_>>()
    );
    assert_eq!(state.repairs.len(), 1);
    assert!(
        state.repairs[0].contains("torn write")
            && state.repairs[0].contains(&last.display().to_string()),
        "{:?}",
        state.repairs
    );
    // The repair is durable: the next open finds a clean log.
    let (_, again) = reopen(&dir.0).unwrap();
    assert!(again.repairs.is_empty());
    assert_eq!(again.last_index(), 29);
}

#[test]
fn a_zero_filled_tail_is_torn_too() {
    let dir = TempDir::new("zeros");
    drop(write_log(&dir.0, 20));
    let last = segments(&dir.0).pop().unwrap();
    let mut data = std::fs::read(&last).unwrap();
    data.extend_from_slice(&[0; 4096]);
    std::fs::write(&last, data).unwrap();
    let (_, state) = reopen(&dir.0).unwrap();
    assert_eq!(state.last_index(), 20);
    assert_eq!(state.repairs.len(), 1);
}

#[test]
fn a_corrupt_byte_in_the_middle_refuses_to_start_naming_file_and_offset() {
    let dir = TempDir::new("corrupt");
    drop(write_log(&dir.0, 200));
    let files = segments(&dir.0);
    let victim = &files[files.len() / 2];
    let mut data = std::fs::read(victim).unwrap();
    let offset = data.len() / 2;
    data[offset] ^= 0x40;
    std::fs::write(victim, data).unwrap();
    let err = reopen(&dir.0).unwrap_err();
    match &err {
        StorageError::Corrupt {
            file, offset: at, ..
        } => {
            assert_eq!(file, &victim.display().to_string());
            assert!(
                *at <= offset as u64,
                "the damaged record starts at or before the flipped byte"
            );
        }
        other => panic!("expected corruption, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&victim.display().to_string()) && message.contains("byte"),
        "{message}"
    );
}

#[test]
fn a_damaged_last_record_is_corruption_not_a_torn_write() {
    // The record is complete: a crash cannot produce this, so the log must not quietly drop it.
    let dir = TempDir::new("lastflip");
    drop(write_log(&dir.0, 20));
    let last = segments(&dir.0).pop().unwrap();
    let mut data = std::fs::read(&last).unwrap();
    let end = data.len() - 1;
    data[end] ^= 1;
    std::fs::write(&last, data).unwrap();
    assert!(matches!(reopen(&dir.0), Err(StorageError::Corrupt { .. })));
}

#[test]
fn a_missing_segment_in_the_middle_refuses_to_start() {
    let dir = TempDir::new("missing");
    drop(write_log(&dir.0, 200));
    let files = segments(&dir.0);
    std::fs::remove_file(&files[2]).unwrap();
    let err = reopen(&dir.0).unwrap_err();
    assert!(
        matches!(err, StorageError::MissingSegment { missing: 3, .. }),
        "{err}"
    );
}

#[test]
fn a_damaged_snapshot_refuses_to_load() {
    let dir = TempDir::new("snapshot");
    let mut store = FileSnapshots::open(RealDir::open(&dir.0).unwrap(), 2).unwrap();
    let snapshot = Snapshot {
        meta: SnapshotMeta { index: 9, era: 2 },
        data: bytes::Bytes::from(vec![7u8; 500]),
    };
    store.save(&snapshot).unwrap();
    let file = std::fs::read_dir(&dir.0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut data = std::fs::read(&file).unwrap();
    data[300] ^= 0x10;
    std::fs::write(&file, data).unwrap();
    let store = FileSnapshots::open(RealDir::open(&dir.0).unwrap(), 2).unwrap();
    let err = store.latest().unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { .. }) && err.to_string().contains(".snap"),
        "{err}"
    );
}

#[test]
fn a_snapshot_save_interrupted_before_its_rename_leaves_the_store_as_it_was() {
    let dir = TempDir::new("snaptemp");
    let mut store = FileSnapshots::open(RealDir::open(&dir.0).unwrap(), 2).unwrap();
    let first = Snapshot {
        meta: SnapshotMeta { index: 5, era: 1 },
        data: bytes::Bytes::from_static(b"state"),
    };
    store.save(&first).unwrap();
    std::fs::write(
        dir.0
            .join("00000000000000000009-00000000000000000001.snap.tmp"),
        b"half a snap",
    )
    .unwrap();
    let store = FileSnapshots::open(RealDir::open(&dir.0).unwrap(), 2).unwrap();
    assert_eq!(store.latest().unwrap(), Some(first));
    assert!(
        !dir.0
            .join("00000000000000000009-00000000000000000001.snap.tmp")
            .exists(),
        "the leftover is removed"
    );
}

#[test]
fn a_restart_keeps_the_log_after_the_newest_snapshot_by_the_rule_of_section_7() {
    let state = |base: Option<(u64, u64)>, terms: &[(u64, u64)]| LogState {
        hard_state: None,
        base: base.map(|(index, era)| SnapshotMeta { index, era }),
        entries: terms.iter().map(|&(i, t)| entry(i, t)).collect(),
        repairs: vec![],
    };
    let meta = |index, era| Some(SnapshotMeta { index, era });
    let indexes = |v: Vec<synod_core::Entry>| v.iter().map(|e| e.index).collect::<Vec<_>>();
    // The log recorded the snapshot's base: everything after it stays.
    assert_eq!(
        indexes(
            state(Some((5, 1)), &[(6, 1), (7, 2)])
                .entries_after(meta(5, 1))
                .unwrap()
        ),
        vec![6, 7]
    );
    // A crash came between saving the snapshot and compacting the log: the covered prefix goes.
    assert_eq!(
        indexes(
            state(None, &[(1, 1), (2, 1), (3, 2)])
                .entries_after(meta(2, 1))
                .unwrap()
        ),
        vec![3]
    );
    // The log's entry at the snapshot's end has another era: the log after it conflicts.
    assert!(state(None, &[(1, 1), (2, 1), (3, 2)])
        .entries_after(meta(2, 3))
        .unwrap()
        .is_empty());
    // The log is shorter than the snapshot (it was installed from the leader).
    assert!(state(None, &[(1, 1)])
        .entries_after(meta(9, 2))
        .unwrap()
        .is_empty());
    // No snapshot: the whole log.
    assert_eq!(
        indexes(state(None, &[(1, 1), (2, 1)]).entries_after(None).unwrap()),
        vec![1, 2]
    );
    // A log compacted past the newest snapshot means a snapshot is missing: refuse.
    assert!(state(Some((8, 1)), &[(9, 1)])
        .entries_after(meta(5, 1))
        .is_err());
}
