//! The storage conformance suite on the simulator's disk, where a crash really loses what was
//! not synced (or tears it), and checks of the simulated disk itself.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use synod_core::Rng;
use synod_sim::SimDir;
use synod_storage::conformance::{
    entry, log_store_suite, snapshot_store_suite, LogHarness, SnapshotHarness,
};
use synod_storage::*;

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
        dir.crash(&mut self.rng, true);
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
        dir.crash(&mut self.rng, true);
        FileSnapshots::open(dir, retain).unwrap()
    }
}

#[test]
fn the_file_log_conforms_on_the_simulated_disk() {
    for seed in 0..20 {
        log_store_suite(&mut SimDisk {
            rng: Rng::new(seed),
            options: WalOptions::default(),
        });
        log_store_suite(&mut SimDisk {
            rng: Rng::new(seed),
            options: WalOptions {
                segment_bytes: 2 << 10,
            },
        });
    }
}

#[test]
fn the_file_snapshot_store_conforms_on_the_simulated_disk() {
    for seed in 0..20 {
        snapshot_store_suite(&mut SimDisk {
            rng: Rng::new(seed),
            options: WalOptions::default(),
        });
    }
}

#[test]
fn records_handed_over_by_flush_are_durable_after_sync() {
    let mut rng = Rng::new(1);
    let (mut log, _) = FileLog::open(SimDir::new("wal"), WalOptions::default()).unwrap();
    log.append(&[entry(1, 1), entry(2, 1)]).unwrap();
    log.flush().unwrap();
    log.sync().unwrap();
    let mut dir = log.into_dir();
    dir.crash(&mut rng, false);
    let (_, state) = FileLog::open(dir, WalOptions::default()).unwrap();
    assert_eq!(
        state.last_index(),
        2,
        "sync after flush must still reach the disk"
    );
}

#[test]
fn without_torn_writes_a_crash_loses_exactly_what_was_not_synced() {
    let mut rng = Rng::new(2);
    let (mut log, _) = FileLog::open(SimDir::new("wal"), WalOptions::default()).unwrap();
    log.append(&[entry(1, 1)]).unwrap();
    log.sync().unwrap();
    log.append(&[entry(2, 1)]).unwrap();
    log.flush().unwrap();
    let mut dir = log.into_dir();
    dir.crash(&mut rng, false);
    let (_, state) = FileLog::open(dir, WalOptions::default()).unwrap();
    assert_eq!(state.last_index(), 1);
    assert!(state.repairs.is_empty());
}

#[test]
fn torn_writes_are_repaired_and_flipped_bits_refused() {
    let mut torn = 0;
    for seed in 0..50 {
        let mut rng = Rng::new(seed);
        let (mut log, _) = FileLog::open(SimDir::new("wal"), WalOptions::default()).unwrap();
        log.append(&(1..=20).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.sync().unwrap();
        log.append(&(21..=40).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.flush().unwrap();
        let mut dir = log.into_dir();
        dir.crash(&mut rng, true);
        let (log, state) = FileLog::open(dir, WalOptions::default()).unwrap();
        assert!(state.last_index() >= 20);
        torn += state.repairs.len();
        let mut dir = log.into_dir();
        let flipped = dir.flip_random_bit(&mut rng).unwrap();
        let err = FileLog::open(dir, WalOptions::default()).unwrap_err();
        assert!(
            matches!(err, StorageError::Corrupt { .. }),
            "{flipped}: {err}"
        );
    }
    assert!(torn > 30, "most crashes cut a record in half: {torn} of 50");
}
