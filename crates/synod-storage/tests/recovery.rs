//! Recovery of the file log and snapshot store from damage on disk.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use std::path::{Path, PathBuf};

use synod_core::{Snapshot, SnapshotMeta};
mod common;

use common::TempDir;
use synod_storage::conformance::entry;
use synod_storage::*;

const SMALL: WalOptions = WalOptions::with_segment_bytes(8 << 10);

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

/// Where the records of segment file `file` end (the file goes on, in space allocated ahead).
fn records_end(file: &Path) -> usize {
    let dir = RealDir::open(file.parent().unwrap()).unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let scan = wal::scan(&dir).unwrap();
    let last = scan.records.iter().rfind(|r| &*r.file == name).unwrap();
    (last.offset + last.size) as usize
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
fn the_active_segment_is_allocated_ahead_and_sealed_ones_end_with_their_last_record() {
    let dir = TempDir::new("allocated");
    drop(write_log(&dir.0, 300));
    let files = segments(&dir.0);
    assert!(files.len() > 2, "{files:?}");
    let (active, sealed) = files.split_last().unwrap();
    for file in sealed {
        let len = std::fs::metadata(file).unwrap().len() as usize;
        assert_eq!(len, records_end(file), "{}", file.display());
    }
    let len = std::fs::metadata(active).unwrap().len();
    assert!(
        len >= SMALL.segment_bytes && len as usize > records_end(active),
        "the active segment's space is allocated ahead: {len} bytes"
    );
    let scan = wal::scan(&RealDir::open(&dir.0).unwrap()).unwrap();
    assert_eq!(scan.unwritten_bytes, len - records_end(active) as u64);
    assert_eq!(scan.torn_tail, None);
}

#[test]
fn zeros_after_the_last_record_are_unwritten_space_and_writing_goes_on_there() {
    let dir = TempDir::new("zeros");
    drop(write_log(&dir.0, 20));
    let (mut log, state) = reopen(&dir.0).unwrap();
    assert_eq!((state.last_index(), state.repairs.len()), (20, 0));
    log.append(&(21..=25).map(|i| entry(i, 1)).collect::<Vec<_>>())
        .unwrap();
    log.sync().unwrap();
    drop(log);
    let (_, state) = reopen(&dir.0).unwrap();
    assert_eq!(
        state.entries,
        (1..=25).map(|i| entry(i, 1)).collect::<Vec<_>>()
    );
    assert!(state.repairs.is_empty(), "{:?}", state.repairs);
    // Zeros past the file's end, as a file system that recorded a length but not the data
    // leaves them: no record there either.
    let last = segments(&dir.0).pop().unwrap();
    let mut data = std::fs::read(&last).unwrap();
    data.extend_from_slice(&[0; 4096]);
    std::fs::write(&last, data).unwrap();
    let (_, state) = reopen(&dir.0).unwrap();
    assert_eq!((state.last_index(), state.repairs.len()), (25, 0));
}

/// A fresh log in `path` of one command and a no-op entry (which ends in a zero byte), written
/// and synced together, the command's length chosen so that the no-op ends a byte into a
/// sector, that byte alone in its sector: that entry's record, which a pad record follows.
fn log_ending_a_byte_into_a_sector(path: &Path) -> wal::Located {
    let noop = |index| synod_core::Entry {
        index,
        era: 1,
        payload: synod_core::Payload::Noop,
    };
    // Where the no-op ends, after a command of `bytes`, in a log written afresh.
    let try_with = |bytes: usize| -> (wal::Located, Option<wal::Record>) {
        let dir = RealDir::open(path).unwrap();
        for old in segments(path) {
            std::fs::remove_file(old).unwrap();
        }
        let (mut log, _) = FileLog::open(dir, SMALL).unwrap();
        log.append(&[command(1, bytes), noop(2)]).unwrap();
        log.sync().unwrap();
        let scan = wal::scan(&RealDir::open(path).unwrap()).unwrap();
        let at = scan
            .records
            .iter()
            .rposition(|r| matches!(r.record, wal::Record::Entry(_)))
            .unwrap();
        let after = scan.records.get(at + 1).map(|r| r.record.clone());
        (scan.records[at].clone(), after)
    };
    let end = |e: &wal::Located| (e.offset + e.size) as usize % record::SECTOR_BYTES;
    // A byte more of command moves the end by one byte, or two where a length's varint grows.
    let guess = (1 + record::SECTOR_BYTES - end(&try_with(0).0)) % record::SECTOR_BYTES;
    for bytes in guess.saturating_sub(3)..guess + 3 {
        let (entry, after) = try_with(bytes);
        if end(&entry) == 1 {
            assert_eq!(after, Some(wal::Record::Pad), "a pad record follows it");
            return entry;
        }
    }
    panic!("no command length near {guess} bytes ends the no-op a byte into a sector");
}

/// Flips a bit in `victim`'s payload, in `file` of the log in `dir`: the log must refuse to
/// open, naming corruption.
fn flip_a_bit_and_expect_corruption(dir: &Path, file: &Path, victim: &wal::Located) {
    let mut data = std::fs::read(file).unwrap();
    data[victim.offset as usize + record::HEADER_BYTES] ^= 0x04;
    std::fs::write(file, data).unwrap();
    let err = reopen(dir).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}

/// Cuts segment `file` to its records (durably), as the log does before it starts the next.
fn cut_to_its_records(file: &Path) {
    let end = records_end(file) as u64;
    std::fs::File::options()
        .write(true)
        .open(file)
        .and_then(|f| {
            f.set_len(end)?;
            f.sync_all()
        })
        .unwrap();
}

#[test]
fn a_flipped_bit_in_a_last_record_ending_in_a_sector_of_zeros_is_corruption_not_a_torn_write() {
    // Followed by unwritten space, without the pad record after it, a flipped bit in such a
    // record would read as a torn write (a record with a zeroed sector) and an acknowledged
    // entry would be dropped.
    let dir = TempDir::new("pad");
    let victim = log_ending_a_byte_into_a_sector(&dir.0);
    let file = segments(&dir.0).pop().unwrap();
    flip_a_bit_and_expect_corruption(&dir.0, &file, &victim);
}

#[test]
fn a_record_ending_in_a_sector_of_zeros_that_lost_its_pad_to_a_crash_is_padded_at_start() {
    // The write that held the record and its pad reached the disk but for that last sector:
    // the record reads intact (its one byte there is a zero), the pad is gone. Opening puts a
    // pad after it before anything else, so a flipped bit in it later is still corruption.
    let dir = TempDir::new("lost-pad");
    let victim = log_ending_a_byte_into_a_sector(&dir.0);
    let file = segments(&dir.0).pop().unwrap();
    let end = (victim.offset + victim.size) as usize;
    let mut data = std::fs::read(&file).unwrap();
    let sector_end = (end - 1 + record::SECTOR_BYTES).min(data.len());
    data[end - 1..sector_end].fill(0);
    std::fs::write(&file, &data).unwrap();
    let (log, state) = reopen(&dir.0).unwrap();
    assert!(state.repairs.is_empty(), "{:?}", state.repairs);
    drop(log);
    let scan = wal::scan(&RealDir::open(&dir.0).unwrap()).unwrap();
    let at = scan
        .records
        .iter()
        .position(|r| r.offset == victim.offset)
        .unwrap();
    assert_eq!(scan.records[at].record, victim.record);
    assert_eq!(
        scan.records.get(at + 1).map(|r| &r.record),
        Some(&wal::Record::Pad)
    );
    flip_a_bit_and_expect_corruption(&dir.0, &file, &victim);
}

#[test]
fn an_empty_segment_a_crash_left_after_the_last_is_removed() {
    // The next segment's name reached the disk, its allocation and header did not.
    let dir = TempDir::new("empty-segment");
    drop(write_log(&dir.0, 30));
    let last = segments(&dir.0).pop().unwrap();
    let seq: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    cut_to_its_records(&last);
    let next = dir.0.join(format!("{:020}.wal", seq + 1));
    std::fs::write(&next, []).unwrap();
    let (mut log, state) = reopen(&dir.0).unwrap();
    assert_eq!((state.last_index(), state.repairs.len()), (30, 1));
    assert!(!next.exists(), "the segment that never was is gone");
    log.append(&(31..=35).map(|i| entry(i, 1)).collect::<Vec<_>>())
        .unwrap();
    log.sync().unwrap();
    drop(log);
    let (_, state) = reopen(&dir.0).unwrap();
    assert_eq!((state.last_index(), state.repairs.len()), (35, 0));
}

#[test]
fn a_torn_tail_is_cut_off_and_reported() {
    let dir = TempDir::new("torn");
    drop(write_log(&dir.0, 30));
    let last = segments(&dir.0).pop().unwrap();
    let full = std::fs::read(&last).unwrap();
    let records = wal::scan(&RealDir::open(&dir.0).unwrap()).unwrap().records;
    let entry_30 = records
        .iter()
        .rfind(|r| matches!(r.record, wal::Record::Entry(_)))
        .unwrap();
    // The last entry was only partly written when the machine stopped, and the file's length
    // recorded as far as the write got.
    let torn_at = (entry_30.offset + entry_30.size) as usize - 7;
    std::fs::write(&last, &full[..torn_at]).unwrap();
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
    let end = records_end(&last) - 1;
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
        membership: None,
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
        membership: None,
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
        journal: vec![],
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

/// Zeroes the 512-byte disk sector holding byte `at` of `file`, as a crash does to a sector
/// whose data never reached the disk although the file's length covers it.
fn zero_sector_at(file: &Path, at: usize) {
    let mut data = std::fs::read(file).unwrap();
    let start = at - at % record::SECTOR_BYTES;
    let end = (start + record::SECTOR_BYTES).min(data.len());
    data[start..end].fill(0);
    std::fs::write(file, data).unwrap();
}

/// Entry `index` of era 1: a command of `bytes` bytes that are not zero, so that none of
/// its sectors reads as zeros.
fn command(index: u64, bytes: usize) -> synod_core::Entry {
    let mut e = entry(index, 1);
    e.payload = synod_core::Payload::Command(synod_core::Proposal {
        id: synod_core::RequestId::new(1, index),
        command: bytes::Bytes::from(vec![0x5a; bytes]),
    });
    e
}

/// Entries 1..=count, one 300-byte command each, synced one at a time.
fn write_wide_log(path: &Path, count: u64) {
    let (mut log, _) = FileLog::open(RealDir::open(path).unwrap(), SMALL).unwrap();
    for i in 1..=count {
        log.append(&[command(i, 300)]).unwrap();
        log.sync().unwrap();
    }
}

#[test]
fn a_last_record_with_a_zeroed_sector_is_a_torn_write_cut_and_reported() {
    let dir = TempDir::new("zero-sector");
    write_wide_log(&dir.0, 12);
    let last = segments(&dir.0).pop().unwrap();
    // The file's length covers the last record, but its final sector reads back as zeros.
    zero_sector_at(&last, records_end(&last) - 40);
    let (_, state) = reopen(&dir.0).unwrap();
    assert_eq!(state.last_index(), 11, "entries 1..=11 are intact");
    assert_eq!(state.repairs.len(), 1, "{:?}", state.repairs);
    assert!(
        state.repairs[0].contains("zeroed sector"),
        "{:?}",
        state.repairs
    );
    // Cut for good: the next start finds nothing to repair.
    let (_, again) = reopen(&dir.0).unwrap();
    assert_eq!((again.last_index(), again.repairs.len()), (11, 0));
}

/// A write that never completed may reach the disk out of order: the sector its first record
/// starts in lost (reading as it did before: the synced records before it, then zeros) while
/// a later one arrived. Wherever the write starts, that must read as a torn write, cut off,
/// not as damage that stops the member: the writer never starts a write so close to a
/// sector's end that the zeros left there are too few to tell.
#[test]
fn a_write_whose_first_sector_was_lost_is_cut_wherever_it_starts() {
    let mut starts = std::collections::BTreeSet::new();
    for first in (0..700).step_by(9) {
        let dir = TempDir::new("lost-first-sector");
        let (mut log, _) = FileLog::open(RealDir::open(&dir.0).unwrap(), SMALL).unwrap();
        log.append(&[command(1, first)]).unwrap();
        log.sync().unwrap();
        let file = segments(&dir.0).pop().unwrap();
        let start = records_end(&file);
        // Two sectors and more: some sector after the first reaches the disk.
        log.append(&[command(2, 1200)]).unwrap();
        log.sync().unwrap();
        drop(log);
        let in_sector = start % record::SECTOR_BYTES;
        starts.insert(in_sector);
        assert!(
            in_sector == 0 || record::SECTOR_BYTES - in_sector >= record::ZERO_RUN_BYTES_MIN,
            "a write starts {in_sector} bytes into a sector"
        );
        let mut data = std::fs::read(&file).unwrap();
        data[start..start - in_sector + record::SECTOR_BYTES].fill(0);
        std::fs::write(&file, data).unwrap();
        let (_, state) = reopen(&dir.0)
            .unwrap_or_else(|e| panic!("a write starting {in_sector} bytes into a sector: {e}"));
        assert_eq!(
            (state.last_index(), state.repairs.len()),
            (1, 1),
            "{:?}",
            state.repairs
        );
    }
    assert!(starts.len() > 40, "writes started at {starts:?}");
}

/// A torn write cut at a record inside it can leave the log ending a few bytes before a
/// sector's end, where the pad would have to run into the next sector: a write of two sectors
/// whose first a crash could lose alone. The log seals that segment and goes on in a new one.
#[test]
fn a_log_cut_to_a_few_bytes_before_a_sectors_end_goes_on_in_a_new_segment() {
    let dir = TempDir::new("cut-near-sector-end");
    // Entry 1 alone, then entries 2 and 3 in one write, entry 2 sized to end 5 bytes before
    // a sector's end (found by trying: its size moves its end byte by byte).
    let end_of_2 = |bytes: usize| -> (usize, PathBuf) {
        let opened = RealDir::open(&dir.0).unwrap();
        for old in segments(&dir.0) {
            std::fs::remove_file(old).unwrap();
        }
        let (mut log, _) = FileLog::open(opened, SMALL).unwrap();
        log.append(&[command(1, 10)]).unwrap();
        log.sync().unwrap();
        log.append(&[command(2, bytes), command(3, 1200)]).unwrap();
        log.sync().unwrap();
        drop(log);
        let scan = wal::scan(&RealDir::open(&dir.0).unwrap()).unwrap();
        let second = scan
            .records
            .iter()
            .find(|r| matches!(&r.record, wal::Record::Entry(e) if e.index == 2))
            .unwrap();
        let file = segments(&dir.0).pop().unwrap();
        ((second.offset + second.size) as usize, file)
    };
    let target = record::SECTOR_BYTES - 5;
    let (first, _) = end_of_2(100);
    let guess =
        100 + (target + record::SECTOR_BYTES - first % record::SECTOR_BYTES) % record::SECTOR_BYTES;
    let (end, file) = (guess.saturating_sub(2)..guess + 3)
        .map(end_of_2)
        .find(|(end, _)| end % record::SECTOR_BYTES == target)
        .expect("some size ends entry 2 five bytes before a sector's end");
    // Entry 3 was torn: its second sector never reached the disk.
    zero_sector_at(&file, end + record::SECTOR_BYTES + 10);
    let (log, state) = reopen(&dir.0).unwrap();
    assert_eq!((state.last_index(), state.repairs.len()), (2, 1));
    drop(log);
    assert_eq!(
        segments(&dir.0).len(),
        2,
        "writing goes on in a new segment"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().len() as usize,
        end,
        "the old one is sealed at its last record, with no pad after it"
    );
    let (_, again) = reopen(&dir.0).unwrap();
    assert_eq!((again.last_index(), again.repairs.len()), (2, 0));
}

#[test]
fn a_zeroed_sector_before_the_last_record_cuts_everything_after_it() {
    // Records written by one unsynced write can reach the disk out of order: a later sector
    // may be there while an earlier one is not. None of it was synced, so all of it goes.
    let dir = TempDir::new("zero-mid");
    write_wide_log(&dir.0, 12);
    let last = segments(&dir.0).pop().unwrap();
    let records = wal::scan(&RealDir::open(&dir.0).unwrap()).unwrap().records;
    let third_last = &records[records.len() - 3];
    assert!(matches!(&third_last.record, wal::Record::Entry(e) if e.index == 10));
    // A sector within entry 10 (records are wider than a sector) never reached the disk.
    zero_sector_at(&last, third_last.offset as usize + 320);
    let (_, state) = reopen(&dir.0).unwrap();
    assert!(
        (9..=10).contains(&state.last_index()),
        "{}",
        state.last_index()
    );
    assert_eq!(state.repairs.len(), 1);
}

#[test]
fn a_zeroed_sector_in_a_sealed_segment_is_corruption() {
    let dir = TempDir::new("zero-sealed");
    write_wide_log(&dir.0, 80);
    let files = segments(&dir.0);
    assert!(files.len() > 2);
    let sealed = &files[files.len() - 2];
    let len = std::fs::metadata(sealed).unwrap().len() as usize;
    zero_sector_at(sealed, len / 2);
    assert!(matches!(reopen(&dir.0), Err(StorageError::Corrupt { .. })));
}

#[test]
fn garbage_in_the_last_record_is_corruption_not_a_torn_write() {
    // Without a zeroed sector a damaged record cannot be told from damage to synced data.
    let dir = TempDir::new("garbage-last");
    write_wide_log(&dir.0, 12);
    let last = segments(&dir.0).pop().unwrap();
    let mut data = std::fs::read(&last).unwrap();
    let len = records_end(&last);
    data[len - 200..len - 100].fill(0xa7);
    std::fs::write(&last, data).unwrap();
    let err = reopen(&dir.0).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}

#[test]
fn a_snapshot_larger_than_the_largest_record_is_saved_in_chunks_and_read_back() {
    // 256 MiB was the limit of one record: a store that large killed every node at its next
    // snapshot. A snapshot is now a header and chunks, each a record of its own.
    let dir = TempDir::new("big-snapshot");
    let size = record::PAYLOAD_BYTES_MAX + 4096 + 7;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let snapshot = Snapshot {
        membership: None,
        meta: SnapshotMeta { index: 77, era: 3 },
        data: bytes::Bytes::from(data),
    };
    let mut store = FileSnapshots::open(RealDir::open(&dir.0).unwrap(), 2).unwrap();
    store.save(&snapshot).unwrap();
    let file_len = std::fs::metadata(dir.0.join("00000000000000000077-00000000000000000003.snap"))
        .unwrap()
        .len() as usize;
    let chunks = size.div_ceil(SNAPSHOT_CHUNK_BYTES);
    assert!(file_len < size + (chunks + 1) * (record::HEADER_BYTES + 64));
    let store = FileSnapshots::open(RealDir::open(&dir.0).unwrap(), 2).unwrap();
    let back = store.latest().unwrap().unwrap();
    assert_eq!(back.meta, snapshot.meta);
    assert!(back.data == snapshot.data, "the data reads back whole");
}

#[test]
fn a_snapshot_cut_at_a_chunk_boundary_or_damaged_in_a_chunk_is_refused() {
    let dir = TempDir::new("snap-chunks");
    let meta = SnapshotMeta { index: 4, era: 1 };
    let snapshot = Snapshot {
        membership: None,
        meta,
        data: bytes::Bytes::from(vec![3u8; 10_000]),
    };
    let mut store = FileSnapshots::open(RealDir::open(&dir.0).unwrap(), 2)
        .unwrap()
        .with_chunk_bytes(1000);
    store.save(&snapshot).unwrap();
    let file = dir.0.join("00000000000000000004-00000000000000000001.snap");
    let whole = std::fs::read(&file).unwrap();
    let chunk_record = record::HEADER_BYTES + 1000;
    let reopen_snap = || FileSnapshots::open(RealDir::open(&dir.0).unwrap(), 2).unwrap();
    // Cut after the header and three whole chunks: every record intact, data missing.
    let header_len = whole.len() - 10 * chunk_record;
    std::fs::write(&file, &whole[..header_len + 3 * chunk_record]).unwrap();
    let err = reopen_snap().latest().unwrap_err();
    assert!(err.to_string().contains("cut short"), "{err}");
    // A flipped bit in the seventh chunk: refused, naming where that chunk starts.
    let mut damaged = whole.clone();
    damaged[header_len + 6 * chunk_record + 500] ^= 4;
    std::fs::write(&file, damaged).unwrap();
    match reopen_snap().latest().unwrap_err() {
        StorageError::Corrupt { offset, .. } => {
            assert_eq!(offset, (header_len + 6 * chunk_record) as u64)
        }
        other => panic!("expected corruption, got {other}"),
    }
    std::fs::write(&file, &whole).unwrap();
    assert_eq!(reopen_snap().latest().unwrap(), Some(snapshot));
}

#[test]
fn a_version_1_snapshot_file_still_reads() {
    let dir = TempDir::new("snap-v1");
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut body = b"SYNODSNP".to_vec();
    let mut fields = synod_core::codec::Encoder::new();
    fields.u64(1).u64(6).u64(2).bytes(b"old state");
    body.extend_from_slice(&fields.finish());
    let mut file = Vec::new();
    record::encode(16, &body, &mut file);
    std::fs::write(
        dir.0.join("00000000000000000006-00000000000000000002.snap"),
        file,
    )
    .unwrap();
    let store = FileSnapshots::open(RealDir::open(&dir.0).unwrap(), 2).unwrap();
    let snapshot = store.latest().unwrap().unwrap();
    assert_eq!(snapshot.meta, SnapshotMeta { index: 6, era: 2 });
    assert_eq!(&snapshot.data[..], b"old state");
}

#[test]
fn opening_a_data_directory_creates_the_log_and_snapshot_directories() {
    let dir = TempDir::new("data-dir");
    let nested = dir.0.join("a").join("b");
    let mut data = RealDir::open(&nested).unwrap();
    let (stores, recovered) =
        open_node_stores(&mut data, "raft", &StorageOptions::default()).unwrap();
    assert!(nested.join(WAL_DIR).is_dir() && nested.join(SNAP_DIR).is_dir());
    assert_eq!(recovered, Recovered::default());
    drop(stores);
    // A second start finds them and creates nothing.
    let (_, again) = open_node_stores(&mut data, "raft", &StorageOptions::default()).unwrap();
    assert_eq!(again, Recovered::default());
}

#[test]
fn a_segment_whose_header_never_reached_the_disk_is_removed_so_the_last_one_stays_last() {
    let dir = TempDir::new("torn-segment");
    drop(write_log(&dir.0, 30));
    let files = segments(&dir.0);
    let last = files.last().unwrap().clone();
    let seq: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    // A crash while the next segment was being started: the last one was cut to its
    // records (durably, as the log does first), and 9 bytes of the next one's header made it.
    cut_to_its_records(&last);
    let next = dir.0.join(format!("{:020}.wal", seq + 1));
    std::fs::write(&next, [7u8; 9]).unwrap();
    let (mut log, state) = reopen(&dir.0).unwrap();
    assert_eq!((state.last_index(), state.repairs.len()), (30, 1));
    assert!(!next.exists(), "the segment that never was is gone");
    // Appends go on in the last real segment; a later crash tears its tail: still a torn
    // write at the end of the log, not damage in a sealed segment.
    log.append(&(31..=35).map(|i| entry(i, 1)).collect::<Vec<_>>())
        .unwrap();
    log.sync().unwrap();
    drop(log);
    let active = segments(&dir.0).pop().unwrap();
    let full = std::fs::read(&active).unwrap();
    std::fs::write(&active, &full[..records_end(&active) - 5]).unwrap();
    let (_, state) = reopen(&dir.0).unwrap();
    assert_eq!(state.last_index(), 34);
}

#[test]
fn a_data_directory_keeps_the_protocol_it_was_written_with() {
    let dir = TempDir::new("protocol");
    let options = StorageOptions::default();
    let mut data = RealDir::open(&dir.0).unwrap();
    // Nothing written yet: any protocol may take the directory, and the first one keeps it.
    drop(open_node_stores(&mut data, "multi-paxos", &options).unwrap());
    let recorded = std::fs::read_to_string(dir.0.join(PROTOCOL_FILE)).unwrap();
    assert_eq!(recorded.trim(), "multi-paxos");
    let refused = open_node_stores(&mut data, "raft", &options).unwrap_err();
    assert!(
        matches!(&refused, StorageError::WrongProtocol { found, wanted, .. }
            if found == "multi-paxos" && wanted == "raft"),
        "{refused}"
    );
    let message = refused.to_string();
    assert!(message.contains("--protocol multi-paxos"), "{message}");
    drop(open_node_stores(&mut data, "multi-paxos", &options).unwrap());
}

#[test]
fn a_data_directory_from_before_the_protocol_file_is_raft_s() {
    let dir = TempDir::new("protocol-legacy");
    drop(write_log(&dir.0.join(WAL_DIR), 10));
    let mut data = RealDir::open(&dir.0).unwrap();
    let options = StorageOptions::default();
    let refused = open_node_stores(&mut data, "basic-paxos", &options).unwrap_err();
    assert!(
        matches!(&refused, StorageError::WrongProtocol { found, .. } if found == "raft"),
        "{refused}"
    );
    assert!(
        !dir.0.join(PROTOCOL_FILE).exists(),
        "a refusal writes nothing"
    );
    let (_, recovered) = open_node_stores(&mut data, "raft", &options).unwrap();
    assert_eq!(recovered.entries.len(), 10);
    let recorded = std::fs::read_to_string(dir.0.join(PROTOCOL_FILE)).unwrap();
    assert_eq!(recorded.trim(), "raft");
}

#[test]
fn a_damaged_protocol_file_is_refused() {
    let dir = TempDir::new("protocol-damaged");
    let mut data = RealDir::open(&dir.0).unwrap();
    std::fs::write(dir.0.join(PROTOCOL_FILE), [0xff, 0, 3]).unwrap();
    let refused = open_node_stores(&mut data, "raft", &StorageOptions::default()).unwrap_err();
    assert!(matches!(refused, StorageError::Corrupt { .. }), "{refused}");
}
