//! The storage conformance suite on the simulator's disk, where a crash really loses what was
//! not synced (or tears it), and checks of the simulated disk itself.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use synod_core::{Persist, PersistId, Rng, Snapshot, SnapshotMeta};
use synod_sim::{SimDir, Unsynced};
use synod_storage::conformance::{
    entry, log_store_suite, snapshot_store_suite, LogHarness, SnapshotHarness,
};
use synod_storage::*;

/// Segments of 1 MiB: what these tests write fits in one, and a segment's space, allocated
/// when it is created, stays small.
const OPTIONS: WalOptions = WalOptions::with_segment_bytes(1 << 20);

/// The file stores on a simulated disk; every crash tears unsynced writes at a random point.
struct SimDisk {
    rng: Rng,
    options: WalOptions,
}

impl LogHarness for SimDisk {
    type Log = FileLog<SimDir>;
    fn fresh(&mut self) -> FileLog<SimDir> {
        FileLog::open(SimDir::new("wal"), self.options).unwrap().0
    }
    fn crash(&mut self, log: FileLog<SimDir>) -> (FileLog<SimDir>, LogState) {
        let mut dir = log.into_dir();
        dir.crash(&mut self.rng, Unsynced::Torn);
        FileLog::open(dir, self.options).unwrap()
    }
}

impl SnapshotHarness for SimDisk {
    type Store = FileSnapshots<SimDir>;
    fn fresh(&mut self, retain: usize) -> FileSnapshots<SimDir> {
        FileSnapshots::open(SimDir::new("snap"), retain).unwrap()
    }
    fn crash(&mut self, store: FileSnapshots<SimDir>, retain: usize) -> FileSnapshots<SimDir> {
        let mut dir = store.into_dir();
        dir.crash(&mut self.rng, Unsynced::Torn);
        FileSnapshots::open(dir, retain).unwrap()
    }
}

#[test]
fn the_file_log_conforms_on_the_simulated_disk() {
    for seed in 0..20 {
        log_store_suite(&mut SimDisk {
            rng: Rng::new(seed),
            options: OPTIONS,
        });
        log_store_suite(&mut SimDisk {
            rng: Rng::new(seed),
            options: WalOptions::with_segment_bytes(2 << 10),
        });
    }
}

#[test]
fn the_file_snapshot_store_conforms_on_the_simulated_disk() {
    for seed in 0..20 {
        snapshot_store_suite(&mut SimDisk {
            rng: Rng::new(seed),
            options: OPTIONS,
        });
    }
}

#[test]
fn records_handed_over_by_flush_are_durable_after_sync() {
    let mut rng = Rng::new(1);
    let (mut log, _) = FileLog::open(SimDir::new("wal"), OPTIONS).unwrap();
    log.append(&[entry(1, 1), entry(2, 1)]).unwrap();
    log.flush().unwrap();
    log.sync().unwrap();
    let mut dir = log.into_dir();
    dir.crash(&mut rng, Unsynced::Lost);
    let (_, state) = FileLog::open(dir, OPTIONS).unwrap();
    assert_eq!(
        state.last_index(),
        2,
        "sync after flush must still reach the disk"
    );
}

#[test]
fn without_torn_writes_a_crash_loses_exactly_what_was_not_synced() {
    let mut rng = Rng::new(2);
    let (mut log, _) = FileLog::open(SimDir::new("wal"), OPTIONS).unwrap();
    log.append(&[entry(1, 1)]).unwrap();
    log.sync().unwrap();
    log.append(&[entry(2, 1)]).unwrap();
    log.flush().unwrap();
    let mut dir = log.into_dir();
    dir.crash(&mut rng, Unsynced::Lost);
    let (_, state) = FileLog::open(dir, OPTIONS).unwrap();
    assert_eq!(state.last_index(), 1);
    assert!(state.repairs.is_empty());
}

/// A process killed between its write and its fdatasync leaves the write in the page cache:
/// the next life reads it, and acts on it (a vote granted again, an append acknowledged
/// again, with nothing new to write). A power loss after that must not take it away.
#[test]
fn what_a_restart_read_outlasts_a_later_power_loss() {
    for seed in 0..8 {
        let mut rng = Rng::new(seed);
        let (mut log, _) = FileLog::open(SimDir::new("wal"), OPTIONS).unwrap();
        log.save_hard_state(b"term 1").unwrap();
        log.append(&[entry(1, 1)]).unwrap();
        log.sync().unwrap();
        log.save_hard_state(b"term 2, voted for n3").unwrap();
        log.append(&[entry(2, 2)]).unwrap();
        log.flush().unwrap();
        // Killed: no crash of the disk, the kernel keeps what was written.
        let (log, state) = FileLog::open(log.into_dir(), OPTIONS).unwrap();
        assert_eq!(
            state.hard_state.as_deref(),
            Some(&b"term 2, voted for n3"[..])
        );
        assert_eq!(state.last_index(), 2);
        let mut dir = log.into_dir();
        dir.crash(&mut rng, Unsynced::Lost);
        let (_, state) = FileLog::open(dir, OPTIONS).unwrap();
        assert_eq!(
            state.hard_state.as_deref(),
            Some(&b"term 2, voted for n3"[..]),
            "seed {seed}: the vote the last life read is gone"
        );
        assert_eq!(state.last_index(), 2, "seed {seed}");
    }
}

/// As above, for a snapshot renamed into place by a life killed before it synced the
/// directory: the next life reads it and compacts its log through it.
#[test]
fn a_snapshot_a_restart_read_outlasts_a_later_power_loss() {
    let snapshot = |index| Snapshot {
        membership: None,
        meta: SnapshotMeta { index, era: 1 },
        data: bytes::Bytes::from(format!("state through {index}")),
    };
    // The bytes and the name a save writes, taken from a store of their own.
    let mut scratch = FileSnapshots::open(SimDir::new("scratch"), 2).unwrap();
    scratch.save(&snapshot(9)).unwrap();
    let scratch = scratch.into_dir();
    let name = scratch.list().unwrap().pop().unwrap();
    let bytes = scratch.read(&name).unwrap();
    for seed in 0..16 {
        let mut rng = Rng::new(seed);
        let mut store = FileSnapshots::open(SimDir::new("snap"), 2).unwrap();
        store.save(&snapshot(4)).unwrap();
        // A save that got as far as the rename: the data synced, the directory not.
        let mut dir = store.into_dir();
        dir.create(&name).unwrap();
        dir.append(&name, &bytes).unwrap();
        dir.sync(&name).unwrap();
        let store = FileSnapshots::open(dir, 2).unwrap();
        assert_eq!(store.latest().unwrap().map(|s| s.meta.index), Some(9));
        let mut dir = store.into_dir();
        dir.crash(&mut rng, Unsynced::Lost);
        let store = FileSnapshots::open(dir, 2).unwrap();
        assert_eq!(
            store.latest().unwrap().map(|s| s.meta.index),
            Some(9),
            "seed {seed}: the snapshot the last life read is gone"
        );
    }
}

#[test]
fn torn_writes_are_repaired_and_flipped_bits_refused() {
    let mut torn = 0;
    for seed in 0..50 {
        let mut rng = Rng::new(seed);
        let (mut log, _) = FileLog::open(SimDir::new("wal"), OPTIONS).unwrap();
        log.append(&(1..=20).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.sync().unwrap();
        log.append(&(21..=40).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.flush().unwrap();
        let mut dir = log.into_dir();
        dir.crash(&mut rng, Unsynced::Torn);
        let (log, state) = FileLog::open(dir, OPTIONS).unwrap();
        assert!(state.last_index() >= 20);
        torn += state.repairs.len();
        let mut dir = log.into_dir();
        let flipped = dir.flip_random_bit(&mut rng).unwrap();
        let err = FileLog::open(dir, OPTIONS).unwrap_err();
        assert!(
            matches!(err, StorageError::Corrupt { .. }),
            "{flipped}: {err}"
        );
    }
    assert!(torn > 30, "most crashes cut a record in half: {torn} of 50");
}

/// A snapshot from the leader replaces the tail of another history: the persist carries the
/// snapshot and a truncation of that tail. Whatever a crash keeps of the log records written
/// after the snapshot, a restart never finds the snapshot followed by the other tail.
#[test]
fn a_crash_after_a_snapshot_install_never_leaves_the_snapshot_beside_another_tail() {
    let meta = SnapshotMeta { index: 4, era: 8 };
    let mut compaction_lost = 0;
    for seed in 0..60 {
        let mut rng = Rng::new(seed);
        let (mut log, _) = FileLog::open(SimDir::new("wal"), OPTIONS).unwrap();
        let mut snapshots = FileSnapshots::open(SimDir::new("snap"), 2).unwrap();
        log.append(&(1..=6).map(|i| entry(i, 7)).collect::<Vec<_>>())
            .unwrap();
        log.sync().unwrap();
        let persist = Persist {
            id: PersistId(1),
            snapshot: Some(Snapshot {
                membership: None,
                meta,
                data: bytes::Bytes::from_static(b"state through 4"),
            }),
            hard_state: Some(b"epoch 8".to_vec()),
            journal: Vec::new(),
            truncate_from: Some(5),
            entries: Vec::new(),
        };
        write_persist(&mut log, &mut snapshots, &persist).unwrap();
        log.flush().unwrap();
        let mut dir = log.into_dir();
        dir.crash(&mut rng, Unsynced::Torn);
        let (mut log, state) = FileLog::open(dir, OPTIONS).unwrap();
        if state.base != Some(meta) {
            compaction_lost += 1;
        }
        let newest = snapshots.latest().unwrap().map(|s| s.meta);
        assert_eq!(newest, Some(meta), "the snapshot is saved durably at once");
        let restored = recover(&mut log, state, newest).unwrap();
        assert_eq!(
            restored.entries,
            Vec::new(),
            "seed {seed}: entries of era 7 after a snapshot of era 8"
        );
    }
    assert!(
        compaction_lost > 0,
        "some crashes lost the compaction record"
    );
}

/// Opens a node's stores in `data`, writes and syncs a hard state, crashes, opens again:
/// what hard state does the node find?
fn hard_state_after_first_start_and_crash(seed: u64, bugs: InjectedBugs) -> Option<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut options = StorageOptions::default();
    options.wal.bugs = bugs;
    let mut data = SimDir::new("n1");
    let (mut stores, _) = open_node_stores(&mut data, "raft", &options).unwrap();
    stores
        .log
        .save_hard_state(b"voted for n2 in term 7")
        .unwrap();
    stores.log.sync().unwrap();
    data.put_back(WAL_DIR, stores.log.into_dir());
    data.put_back(SNAP_DIR, stores.snapshots.into_dir());
    data.crash(&mut rng, Unsynced::Lost);
    open_node_stores(&mut data, "raft", &options)
        .unwrap()
        .1
        .hard_state
}

#[test]
fn the_log_directory_created_at_first_start_survives_a_crash() {
    for seed in 0..40 {
        assert_eq!(
            hard_state_after_first_start_and_crash(seed, InjectedBugs::NONE).as_deref(),
            Some(&b"voted for n2 in term 7"[..]),
            "seed {seed}"
        );
    }
}

#[test]
fn without_syncing_the_data_directory_a_crash_can_take_the_whole_log() {
    let bugs = InjectedBugs {
        skip_directory_sync: true,
        ..InjectedBugs::NONE
    };
    let lost = (0..40)
        .filter(|&seed| hard_state_after_first_start_and_crash(seed, bugs).is_none())
        .count();
    assert!(
        lost > 5,
        "the simulated disk undoes unsynced directories: {lost} of 40"
    );
}

/// A synced log of entries 1..=20 and 20 more unsynced, each wider than a disk sector, then a
/// crash that treats the unsynced ones as `unsynced` says.
fn crash_with_wide_unsynced_entries(seed: u64, unsynced: Unsynced) -> SimDir {
    let mut rng = Rng::new(seed);
    let wide = |i| {
        let mut e = entry(i, 1);
        e.payload = synod_core::Payload::Command(synod_core::Proposal {
            id: synod_core::RequestId::new(1, i),
            command: bytes::Bytes::from(vec![0x3c; 700]),
        });
        e
    };
    let (mut log, _) = FileLog::open(SimDir::new("wal"), OPTIONS).unwrap();
    log.append(&(1..=20).map(wide).collect::<Vec<_>>()).unwrap();
    log.sync().unwrap();
    log.append(&(21..=40).map(wide).collect::<Vec<_>>())
        .unwrap();
    log.flush().unwrap();
    let mut dir = log.into_dir();
    dir.crash(&mut rng, unsynced);
    dir
}

#[test]
fn torn_writes_with_zeroed_sectors_are_cut_and_the_synced_log_kept() {
    let mut zeroed = 0;
    for seed in 0..60 {
        let dir = crash_with_wide_unsynced_entries(seed, Unsynced::Torn);
        let (_, state) = FileLog::open(dir, OPTIONS)
            .unwrap_or_else(|e| panic!("seed {seed}: a torn write refused: {e}"));
        assert!(state.last_index() >= 20, "seed {seed}");
        zeroed += state
            .repairs
            .iter()
            .filter(|r| r.contains("zeroed sector"))
            .count();
    }
    assert!(zeroed > 10, "zeroed sectors were simulated: {zeroed} of 60");
}

#[test]
fn the_old_rule_takes_a_zeroed_sector_for_corruption() {
    let mut options = OPTIONS;
    options.bugs.torn_write_only_as_a_clean_cut = true;
    let refused = (0..60)
        .filter(|&seed| {
            let dir = crash_with_wide_unsynced_entries(seed, Unsynced::Torn);
            FileLog::open(dir, options).is_err()
        })
        .count();
    assert!(refused > 10, "{refused} of 60");
}

#[test]
fn garbage_in_unsynced_sectors_is_refused_as_damage() {
    let mut refused = 0;
    for seed in 0..60 {
        let dir = crash_with_wide_unsynced_entries(seed, Unsynced::Garbage);
        match FileLog::open(dir, OPTIONS) {
            Err(StorageError::Corrupt { .. }) => refused += 1,
            Err(other) => panic!("seed {seed}: {other}"),
            Ok((_, state)) => assert!(state.last_index() >= 20, "seed {seed}"),
        }
    }
    assert!(refused > 20, "{refused} of 60");
}

/// A simulated directory whose syncs of any file but `keep` fail once armed: a crash in the
/// middle of starting a new log segment, after its bytes were handed over, before they were
/// durable.
struct FailingSyncs {
    inner: SimDir,
    armed: bool,
    keep: String,
}

impl Dir for FailingSyncs {
    fn list(&self) -> Result<Vec<String>> {
        self.inner.list()
    }
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        self.inner.read(name)
    }
    fn open_read(&self, name: &str) -> Result<Box<dyn std::io::Read + '_>> {
        self.inner.open_read(name)
    }
    fn len(&self, name: &str) -> Result<u64> {
        self.inner.len(name)
    }
    fn subdir(&mut self, name: &str) -> Result<Self> {
        Ok(FailingSyncs {
            inner: self.inner.subdir(name)?,
            armed: false,
            keep: String::new(),
        })
    }
    fn create(&mut self, name: &str) -> Result<()> {
        self.inner.create(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.inner.append(name, data)
    }
    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<()> {
        self.inner.write_at(name, offset, data)
    }
    fn preallocate(&mut self, name: &str, len: u64) -> Result<()> {
        self.inner.preallocate(name, len)
    }
    fn sync(&mut self, name: &str) -> Result<()> {
        if self.armed && name != self.keep {
            // The file's directory entry reached the disk (another sync took it along); its
            // data did not.
            self.inner.sync_dir()?;
            return Err(StorageError::Misuse(format!(
                "injected: sync of {name} fails"
            )));
        }
        self.inner.sync(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> Result<()> {
        self.inner.truncate(name, len)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&mut self, name: &str) -> Result<()> {
        self.inner.remove(name)
    }
    fn sync_dir(&mut self) -> Result<()> {
        self.inner.sync_dir()
    }
    fn describe(&self, name: &str) -> String {
        self.inner.describe(name)
    }
}

/// The hard state and journal a sealed segment holds survive a crash that tears the next
/// segment's restatement of them, and survive the sealed segment being purged afterwards.
#[test]
fn a_crash_while_a_segment_starts_loses_no_hard_state_or_journal() {
    let options = WalOptions::with_segment_bytes(4 << 10);
    let records: Vec<Vec<u8>> = (0..24u8).map(|i| vec![i; 300]).collect();
    for seed in 0..40 {
        let mut rng = Rng::new(seed);
        let dir = FailingSyncs {
            inner: SimDir::new("wal"),
            armed: false,
            keep: "00000000000000000001.wal".into(),
        };
        let (mut log, _) = FileLog::open(dir, options).unwrap();
        log.save_hard_state(b"term 7").unwrap();
        log.append_journal(&records).unwrap();
        log.append(&[entry(1, 7)]).unwrap();
        log.flush().unwrap();
        // The sync fills the first segment; starting the second fails before it is durable.
        log.dir_mut().armed = true;
        assert!(log.sync().is_err(), "seed {seed}: the injected failure");
        let mut dir = log.into_dir();
        dir.inner.crash(&mut rng, Unsynced::Torn);
        dir.armed = false;
        let (mut log, state) = FileLog::open(dir, options).unwrap();
        assert_eq!(
            state.hard_state.as_deref(),
            Some(&b"term 7"[..]),
            "seed {seed}"
        );
        assert_eq!(state.journal, records, "seed {seed}");
        // Entries go on, a snapshot covers them, and the first segment is purged.
        for i in 2..=20 {
            log.append(&[entry(i, 7)]).unwrap();
            log.sync().unwrap();
        }
        log.compact_to(synod_core::SnapshotMeta { index: 20, era: 7 })
            .unwrap();
        log.append(&[entry(21, 7)]).unwrap();
        log.sync().unwrap();
        let mut dir = log.into_dir();
        assert!(
            !dir.inner.list().unwrap().contains(&dir.keep),
            "seed {seed}: the first segment was purged"
        );
        dir.inner.crash(&mut rng, Unsynced::Torn);
        let (_, state) = FileLog::open(dir, options).unwrap();
        assert_eq!(
            state.hard_state.as_deref(),
            Some(&b"term 7"[..]),
            "seed {seed}"
        );
        assert_eq!(state.journal, records, "seed {seed}");
    }
}
