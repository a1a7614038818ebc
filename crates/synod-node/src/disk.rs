//! The node's disk: a thread that owns the write-ahead log and the snapshot store.
//!
//! The node loop hands it persists and snapshots and never waits. The thread takes whatever
//! has queued up, writes it all, and syncs once (group commit): under load, one fsync covers
//! the persists of many client writes. It then reports the newest persist as durable, which by
//! the engine contract covers every earlier one. A storage error is fatal: the node cannot
//! keep its promises without its disk, so it stops rather than answer from memory. So is a
//! panic in the thread: it is caught and reported as a failure, never left as a node that
//! looks alive but can persist nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use synod_core::{Persist, PersistId, Snapshot};
use synod_storage::{
    open_node_stores, save_snapshot, write_persist, FileLog, FileSnapshots, LogStore, RealDir,
    Recovered, StorageError, StorageOptions, SNAP_DIR, WAL_DIR,
};
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::metrics::Metrics;

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
    /// The disk failed, or the thread panicked; the node must stop.
    Failed(String),
}

/// The handle the node loop holds.
#[derive(Debug)]
pub struct Disk {
    jobs: Option<std_mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// Where a node keeps its log under its data directory.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(WAL_DIR)
}

/// Where a node keeps its snapshots under its data directory.
pub fn snap_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(SNAP_DIR)
}

impl Disk {
    /// Opens the data directory (creating it on first start), recovers what it holds, and
    /// starts the disk thread. A damaged log or snapshot is an error naming the file: the
    /// node must not start from a disk it cannot trust.
    pub fn open(
        data_dir: &Path,
        protocol: &str,
        metrics: Arc<Metrics>,
    ) -> Result<(Disk, mpsc::UnboundedReceiver<DiskEvent>, Recovered), StorageError> {
        let mut data = RealDir::open(data_dir)?;
        let (stores, recovered) =
            open_node_stores(&mut data, protocol, &StorageOptions::default())?;
        for repair in &recovered.repairs {
            warn!(repair = %repair, "repaired the log's tail");
        }
        let (jobs, queue) = std_mpsc::channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("synod-disk".into())
            .spawn(move || run(stores.log, stores.snapshots, queue, events, metrics))
            .map_err(|e| {
                StorageError::io("start the disk thread", data_dir.display().to_string(), e)
            })?;
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
        let written = catch_unwind(AssertUnwindSafe(|| {
            write_batch(&mut log, &mut snapshots, &mut batch, &events, &metrics)
        }));
        let failure = match written {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("the disk thread panicked: {}", panic_message(&panic)),
        };
        error!(error = %failure, "storage failed; the node stops");
        let _ = events.send(DiskEvent::Failed(failure));
        return;
    }
}

/// The message a panic carried.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string())
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
