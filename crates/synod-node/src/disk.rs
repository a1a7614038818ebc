//! The node's disk: a thread that owns the write-ahead log and the snapshot store.
//!
//! The node loop hands it persists and snapshots and never waits. The thread takes whatever
//! has queued up, writes it all, and syncs once (group commit): under load, one fsync covers
//! the persists of many client writes. It then reports the newest persist as durable, which by
//! the engine contract covers every earlier one. A storage error is fatal: the node cannot
//! keep its promises without its disk, so it stops rather than answer from memory.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use synod_core::{Entry, Persist, PersistId, Snapshot};
use synod_storage::{
    save_snapshot, write_persist, FileLog, FileSnapshots, LogStore, RealDir, SnapshotStore,
    StorageError, WalOptions,
};
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::metrics::Metrics;

/// Snapshots kept on disk.
const SNAPSHOTS_KEPT: usize = 2;

/// What the node finds on disk when it starts.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The engine's hard state.
    pub hard_state: Option<Vec<u8>>,
    /// The newest snapshot.
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot.
    pub entries: Vec<Entry>,
}

/// Work for the disk thread.
enum Job {
    Persist(Persist),
    Snapshot(Snapshot),
}

/// What the disk thread reports.
#[derive(Debug)]
pub enum DiskEvent {
    /// Every persist up to this one is durable.
    Durable(PersistId),
    /// A snapshot of the node's own state machine is saved and the log compacted through it.
    SnapshotSaved(Snapshot),
    /// The disk failed; the node must stop.
    Failed(StorageError),
}

/// The handle the node loop holds.
#[derive(Debug)]
pub struct Disk {
    jobs: Option<std_mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// Where a node keeps its log and snapshots under its data directory.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

/// See [`wal_dir`].
pub fn snap_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snap")
}

impl Disk {
    /// Opens the data directory (creating it on first start), recovers what it holds, and
    /// starts the disk thread. A damaged log or snapshot is an error naming the file: the
    /// node must not start from a disk it cannot trust.
    pub fn open(
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<(Disk, mpsc::UnboundedReceiver<DiskEvent>, Recovered), StorageError> {
        let snapshots = FileSnapshots::open(RealDir::open(snap_dir(data_dir))?, SNAPSHOTS_KEPT)?;
        let snapshot = snapshots.latest()?;
        let (mut log, state) =
            FileLog::open(RealDir::open(wal_dir(data_dir))?, WalOptions::default())?;
        for repair in &state.repairs {
            warn!(repair = %repair, "repaired the log's tail");
        }
        let (hard_state, entries) =
            synod_storage::recover(&mut log, state, snapshot.as_ref().map(|s| s.meta))?;
        let (jobs, queue) = std_mpsc::channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("synod-disk".into())
            .spawn(move || run(log, snapshots, queue, events, metrics))
            .map_err(|e| {
                StorageError::io("start the disk thread", data_dir.display().to_string(), e)
            })?;
        let recovered = Recovered {
            hard_state,
            snapshot,
            entries,
        };
        Ok((
            Disk {
                jobs: Some(jobs),
                thread: Some(thread),
            },
            events_rx,
            recovered,
        ))
    }

    /// Queues a persist.
    pub fn persist(&self, persist: Persist) {
        self.submit(Job::Persist(persist));
    }

    /// Queues saving a snapshot of the node's own state machine.
    pub fn save_snapshot(&self, snapshot: Snapshot) {
        self.submit(Job::Snapshot(snapshot));
    }

    fn submit(&self, job: Job) {
        // The thread only goes away after a failure, which it has reported already.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    /// Lets the thread finish what is queued (writing and syncing it), then waits for it.
    pub fn close(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                error!("the disk thread panicked");
            }
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.close();
    }
}

fn run(
    mut log: FileLog<RealDir>,
    mut snapshots: FileSnapshots<RealDir>,
    queue: std_mpsc::Receiver<Job>,
    events: mpsc::UnboundedSender<DiskEvent>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::new();
    while let Ok(first) = queue.recv() {
        batch.push(first);
        batch.extend(queue.try_iter());
        if let Err(e) = write_batch(&mut log, &mut snapshots, &mut batch, &events, &metrics) {
            error!(error = %e, "storage failed; the node stops");
            let _ = events.send(DiskEvent::Failed(e));
            return;
        }
    }
}

fn write_batch(
    log: &mut FileLog<RealDir>,
    snapshots: &mut FileSnapshots<RealDir>,
    batch: &mut Vec<Job>,
    events: &mpsc::UnboundedSender<DiskEvent>,
    metrics: &Metrics,
) -> Result<(), StorageError> {
    let mut newest = None;
    let mut saved = Vec::new();
    for job in batch.drain(..) {
        match job {
            Job::Persist(persist) => {
                write_persist(log, snapshots, &persist)?;
                newest = Some(persist.id);
            }
            Job::Snapshot(snapshot) => {
                save_snapshot(log, snapshots, &snapshot)?;
                saved.push(snapshot);
            }
        }
    }
    if let Some(id) = newest {
        let started = Instant::now();
        log.sync()?;
        metrics.fsync.observe(started.elapsed());
        let _ = events.send(DiskEvent::Durable(id));
    }
    for snapshot in saved {
        metrics.snapshots.inc();
        let _ = events.send(DiskEvent::SnapshotSaved(snapshot));
    }
    Ok(())
}
