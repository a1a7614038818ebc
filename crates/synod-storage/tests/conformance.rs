//! The conformance suite on the in-memory stores and on the file stores in a real directory.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use std::path::PathBuf;

mod common;

use common::TempDir;
use synod_storage::conformance::{
    log_store_suite, snapshot_store_suite, LogHarness, SnapshotHarness,
};
use synod_storage::*;

struct Mem;

impl LogHarness for Mem {
    type Log = MemLog;
    fn fresh(&mut self) -> MemLog {
        MemLog::new()
    }
    fn crash(&mut self, log: MemLog) -> (MemLog, LogState) {
        log.crash()
    }
}

impl SnapshotHarness for Mem {
    type Store = MemSnapshots;
    fn fresh(&mut self, retain: usize) -> MemSnapshots {
        MemSnapshots::new(retain)
    }
    fn crash(&mut self, store: MemSnapshots, _retain: usize) -> MemSnapshots {
        store
    }
}

/// File stores in a real directory. A process "crash" here keeps unsynced writes (the page
/// cache survives), which the contract allows; the SIGKILL test covers real process death.
struct Files {
    dirs: Vec<TempDir>,
    options: WalOptions,
}

impl Files {
    fn new(segment_bytes: u64) -> Files {
        Files {
            dirs: Vec::new(),
            options: WalOptions::with_segment_bytes(segment_bytes),
        }
    }
    fn new_dir(&mut self) -> PathBuf {
        self.dirs.push(TempDir::new("conformance"));
        self.dirs.last().unwrap().0.clone()
    }
}

impl LogHarness for Files {
    type Log = FileLog<RealDir>;
    fn fresh(&mut self) -> FileLog<RealDir> {
        let dir = RealDir::open(self.new_dir()).unwrap();
        FileLog::open(dir, self.options).unwrap().0
    }
    fn crash(&mut self, log: FileLog<RealDir>) -> (FileLog<RealDir>, LogState) {
        let path = self.dirs.last().unwrap().0.clone();
        drop(log);
        FileLog::open(RealDir::open(path).unwrap(), self.options).unwrap()
    }
}

impl SnapshotHarness for Files {
    type Store = FileSnapshots<RealDir>;
    fn fresh(&mut self, retain: usize) -> FileSnapshots<RealDir> {
        FileSnapshots::open(RealDir::open(self.new_dir()).unwrap(), retain).unwrap()
    }
    fn crash(&mut self, store: FileSnapshots<RealDir>, retain: usize) -> FileSnapshots<RealDir> {
        let path = self.dirs.last().unwrap().0.clone();
        drop(store);
        FileSnapshots::open(RealDir::open(path).unwrap(), retain).unwrap()
    }
}

#[test]
fn the_in_memory_log_conforms() {
    log_store_suite(&mut Mem);
}

#[test]
fn the_in_memory_snapshot_store_conforms() {
    snapshot_store_suite(&mut Mem);
}

#[test]
fn the_file_log_conforms() {
    log_store_suite(&mut Files::new(WalOptions::default().segment_bytes));
}

#[test]
fn the_file_log_conforms_with_tiny_segments() {
    // A few kilobytes per segment: rollover and purging happen all the time.
    log_store_suite(&mut Files::new(4 << 10));
}

#[test]
fn the_file_snapshot_store_conforms() {
    snapshot_store_suite(&mut Files::new(1 << 20));
}
