//! The node's disk: a thread that owns the write-ahead log, and one that writes the node's own
//! snapshots.
//!
//! The node loop hands it persists and snapshots and never waits. A snapshot of the node's
//! own state machine arrives as a copy of the store: the log is synced (so the snapshot never
//! runs ahead of the durable term), then the snapshot thread encodes the copy and writes it,
//! hundreds of megabytes perhaps, while the disk thread goes on appending and syncing the log;
//! once it is durable the node loop asks the disk thread to compact the log through it. The thread takes whatever
//! has queued up, writes it all, and syncs once (group commit): under load, one fsync covers
//! the persists of many client writes. It then reports the newest persist as durable, which by
//! the engine contract covers every earlier one. A storage error is fatal: the node cannot
//! keep its promises without its disk, so it stops rather than answer from memory. So is a
//! panic in the thread: it is caught and reported as a failure, never left as a node that
//! looks alive but can persist nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use synod_core::{Membership, Persist, PersistId, Snapshot, SnapshotMeta};
use synod_kv::KvStore;
use synod_storage::{
    open_node_stores, write_persist, write_persist_to_log, FileLog, FileSnapshots, LogStore,
    RealDir, Recovered, SnapshotStore, StorageError, StorageOptions, SNAP_DIR, WAL_DIR,
};
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::metrics::Metrics;

/// Work for the disk thread.
enum Job {
    Persist(Persist),
    /// Snapshot this copy of the state machine, as of `meta`.
    Snapshot(SnapshotMeta, Option<Membership>, Box<KvStore>),
    /// The snapshot is durable: compact the log through it.
    Compact(Snapshot),
}

/// What the disk threads report.
#[derive(Debug)]
pub enum DiskEvent {
    /// Every persist up to this one is durable.
    Durable(PersistId),
    /// A snapshot of the node's own state machine is durable; the log is not compacted yet.
    SnapshotWritten(Snapshot),
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

    /// Queues saving a snapshot of `state`, a copy of the node's own state machine as of
    /// `meta`; [`DiskEvent::SnapshotWritten`] follows once it is durable.
    pub fn save_snapshot(
        &self,
        meta: SnapshotMeta,
        membership: Option<Membership>,
        state: Box<KvStore>,
    ) {
        self.submit(Job::Snapshot(meta, membership, state));
    }

    /// Compacts the log through a snapshot reported written; [`DiskEvent::SnapshotSaved`]
    /// follows.
    pub fn compact(&self, snapshot: Snapshot) {
        self.submit(Job::Compact(snapshot));
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

/// The snapshot store, shared by the disk thread (snapshots received from a leader) and the
/// snapshot thread (the node's own).
type SharedSnapshots = Arc<Mutex<FileSnapshots<RealDir>>>;

fn run(
    log: FileLog<RealDir>,
    snapshots: FileSnapshots<RealDir>,
    queue: std_mpsc::Receiver<Job>,
    events: mpsc::UnboundedSender<DiskEvent>,
    metrics: Arc<Metrics>,
) {
    let snapshots: SharedSnapshots = Arc::new(Mutex::new(snapshots));
    let (own, own_queue) = std_mpsc::channel();
    let writer = {
        let (snapshots, events) = (snapshots.clone(), events.clone());
        std::thread::Builder::new()
            .name("synod-snapshot".into())
            .spawn(move || write_own_snapshots(&snapshots, own_queue, &events))
    };
    let writer = match writer {
        Ok(writer) => writer,
        Err(e) => {
            let failure = format!("cannot start the snapshot thread: {e}");
            let _ = events.send(DiskEvent::Failed(failure));
            return;
        }
    };
    let mut disk = DiskThread {
        log,
        snapshots,
        own,
        compacted: 0,
    };
    let mut batch = Vec::new();
    while let Ok(first) = queue.recv() {
        batch.push(first);
        batch.extend(queue.try_iter());
        let written = catch_unwind(AssertUnwindSafe(|| {
            disk.write_batch(&mut batch, &events, &metrics)
        }));
        let failure = match written {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("the disk thread panicked: {}", panic_message(&panic)),
        };
        error!(error = %failure, "storage failed; the node stops");
        let _ = events.send(DiskEvent::Failed(failure));
        break;
    }
    // The snapshot being written is finished (or fails) before the node's disk is closed.
    drop(disk.own);
    if writer.join().is_err() {
        error!("the snapshot thread panicked");
    }
}

/// A snapshot of the node's own state machine to write: its position, the membership as of
/// it, and the store.
type OwnSnapshot = (SnapshotMeta, Option<Membership>, Box<KvStore>);

/// Encodes and writes the node's own snapshots, one after another.
fn write_own_snapshots(
    snapshots: &SharedSnapshots,
    queue: std_mpsc::Receiver<OwnSnapshot>,
    events: &mpsc::UnboundedSender<DiskEvent>,
) {
    yield_to_the_node_loop();
    while let Ok((meta, membership, state)) = queue.recv() {
        let written = catch_unwind(AssertUnwindSafe(|| {
            let snapshot = Snapshot {
                membership,
                meta,
                data: Bytes::from(state.snapshot()),
            };
            drop(state);
            lock(snapshots).save(&snapshot).map(|()| snapshot)
        }));
        let failure = match written {
            Ok(Ok(snapshot)) => {
                let _ = events.send(DiskEvent::SnapshotWritten(snapshot));
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("the snapshot thread panicked: {}", panic_message(&panic)),
        };
        error!(error = %failure, "storage failed; the node stops");
        let _ = events.send(DiskEvent::Failed(failure));
        return;
    }
}

/// How much lower than the node loop's the CPU priority of a snapshot thread is (a nice
/// value: at 10, the thread gets about a tenth of the CPU the loop gets when the two want the
/// same core, and all of it when the loop is idle).
#[cfg(target_os = "linux")]
const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority, for a thread that encodes or decodes a snapshot:
/// seconds of CPU for a store of millions of keys, which must not take the node loop's core
/// while the loop answers clients and peers (on a machine with fewer cores than busy threads,
/// the scheduler otherwise shares the core evenly, and every put waits its turn). Best effort:
/// a thread the system will not lower runs as it was.
pub(crate) fn yield_to_the_node_loop() {
    // On Linux a nice value belongs to a thread, so this one alone is lowered, not the process;
    // relative to the process's own (a server started at nice 15 must not be raised to 10).
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let lowered = getpriority_process(None)
            .and_then(|nice| setpriority_process(None, (nice + BACKGROUND_NICE).min(19)));
        if let Err(e) = lowered {
            warn!(error = %e, "cannot lower a snapshot thread's priority");
        }
    }
}

/// The snapshot store, with a snapshot from the leader written by a thread of lower priority
/// (see [`yield_to_the_node_loop`]) while the disk thread waits: writing a gigabyte takes
/// seconds of CPU (checksums, copies, the kernel's writeback), which must not take a core
/// from the node loops it shares the machine with, while the same member decodes the same
/// snapshot on another thread. The order of the writes is the disk thread's, unchanged. A
/// thread of its own rather than the disk thread lowered for the while: a thread may lower its
/// priority but, unprivileged, not raise it back.
struct SavedInBackground<'a>(&'a mut FileSnapshots<RealDir>);

impl SnapshotStore for SavedInBackground<'_> {
    fn save(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let saved = std::thread::scope(|scope| {
            let writer = std::thread::Builder::new()
                .name("snapshot-save".into())
                .spawn_scoped(scope, || {
                    yield_to_the_node_loop();
                    self.0.save(snapshot)
                });
            let writer = writer
                .map_err(|e| warn!(error = %e, "cannot start a thread to save a snapshot"))
                .ok()?;
            match writer.join() {
                Ok(saved) => Some(saved),
                // The disk thread catches it and stops the node, as if it were its own.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        // Without a thread to spare, the disk thread writes it itself.
        saved.unwrap_or_else(|| self.0.save(snapshot))
    }

    fn latest(&self) -> Result<Option<Snapshot>, StorageError> {
        self.0.latest()
    }

    fn list(&self) -> Result<Vec<SnapshotMeta>, StorageError> {
        self.0.list()
    }

    fn delete(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.0.delete(meta)
    }
}

fn lock(snapshots: &SharedSnapshots) -> MutexGuard<'_, FileSnapshots<RealDir>> {
    snapshots.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the disk thread owns.
struct DiskThread {
    log: FileLog<RealDir>,
    snapshots: SharedSnapshots,
    /// Where the node's own snapshots go to be written.
    own: std_mpsc::Sender<OwnSnapshot>,
    /// The log is compacted through this index.
    compacted: u64,
}

/// The message a panic carried.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string())
}

impl DiskThread {
    fn write_batch(
        &mut self,
        batch: &mut Vec<Job>,
        events: &mpsc::UnboundedSender<DiskEvent>,
        metrics: &Metrics,
    ) -> Result<(), StorageError> {
        let mut newest = None;
        let mut saved = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Persist(persist) => {
                    // Only a snapshot from the leader needs the snapshot store: an append
                    // must not wait while the snapshot thread writes one of ours.
                    match &persist.snapshot {
                        Some(snapshot) => {
                            self.compacted = self.compacted.max(snapshot.meta.index);
                            let mut snapshots = lock(&self.snapshots);
                            let mut snapshots = SavedInBackground(&mut snapshots);
                            write_persist(&mut self.log, &mut snapshots, &persist)?;
                        }
                        None => write_persist_to_log(&mut self.log, &persist)?,
                    }
                    newest = Some(persist.id);
                }
                Job::Snapshot(meta, membership, state) => {
                    // A durable snapshot must not run ahead of the durable log (see
                    // `write_persist`): what the copy applied is synced before it is written.
                    self.log.sync()?;
                    if self.own.send((meta, membership, state)).is_err() {
                        return Err(StorageError::Misuse("the snapshot thread stopped".into()));
                    }
                }
                Job::Compact(snapshot) => {
                    // A snapshot from the leader may have moved the log further meanwhile.
                    if snapshot.meta.index > self.compacted {
                        self.log.compact_to(snapshot.meta)?;
                        self.compacted = snapshot.meta.index;
                    }
                    saved.push(snapshot);
                }
            }
        }
        if newest.is_some() || !saved.is_empty() {
            let started = Instant::now();
            self.log.sync()?;
            metrics.fsync.observe(started.elapsed());
        }
        if let Some(id) = newest {
            let _ = events.send(DiskEvent::Durable(id));
        }
        for snapshot in saved {
            metrics.snapshots.inc();
            let _ = events.send(DiskEvent::SnapshotSaved(snapshot));
        }
        Ok(())
    }
}
