//! The simulated disk: a directory of in-memory files with POSIX durability rules, and only
//! the faults Synod claims to survive.
//!
//! - Data appended but not yet synced is lost at a crash. With disk faults on, any prefix of
//!   it may survive instead, cut anywhere, so the last write may be torn.
//! - File creations, renames and removals not yet made durable by `sync_dir` may be undone.
//! - With disk faults on, the nemesis may flip a bit in stored (synced) data. The checksums must
//!   catch it when the node next reads it: the node then refuses to start.
//!
//! The log and snapshot store run on this through the same `Dir` trait as on real files.

use std::collections::BTreeMap;

use synod_core::Persist;
use synod_core::{Entry, Rng, Snapshot};
use synod_storage::{Dir, FileLog, FileSnapshots, Result, SnapshotStore, StorageError, WalOptions};

type FileId = u64;

#[derive(Clone, Debug, Default)]
struct SimFile {
    durable: Vec<u8>,
    /// Appended since the last sync.
    pending: Vec<u8>,
}

/// One simulated directory.
#[derive(Clone, Debug)]
pub struct SimDir {
    label: String,
    names: BTreeMap<String, FileId>,
    /// The names as of the last `sync_dir`.
    synced_names: BTreeMap<String, FileId>,
    contents: BTreeMap<FileId, SimFile>,
    next_id: FileId,
}

impl SimDir {
    /// An empty directory; `label` names it in error messages (e.g. `n3/wal`).
    pub fn new(label: impl Into<String>) -> SimDir {
        SimDir {
            label: label.into(),
            names: BTreeMap::new(),
            synced_names: BTreeMap::new(),
            contents: BTreeMap::new(),
            next_id: 1,
        }
    }

    fn file(&self, name: &str) -> Result<&SimFile> {
        self.names
            .get(name)
            .and_then(|id| self.contents.get(id))
            .ok_or_else(|| {
                StorageError::io(
                    "open",
                    self.describe(name),
                    std::io::ErrorKind::NotFound.into(),
                )
            })
    }

    fn file_mut(&mut self, name: &str) -> Result<&mut SimFile> {
        let path = self.describe(name);
        let id = *self.names.get(name).ok_or_else(|| {
            StorageError::io("open", path.clone(), std::io::ErrorKind::NotFound.into())
        })?;
        self.contents
            .get_mut(&id)
            .ok_or_else(|| StorageError::io("open", path, std::io::ErrorKind::NotFound.into()))
    }

    /// What a crash leaves. Unsynced appends are lost, or, with `torn_writes`, cut to a random
    /// prefix; namespace changes not yet synced are undone, or kept.
    pub fn crash(&mut self, rng: &mut Rng, torn_writes: bool) {
        if self.names != self.synced_names && rng.chance(0.5) {
            self.names = self.synced_names.clone();
        }
        self.synced_names = self.names.clone();
        let live: std::collections::BTreeSet<FileId> = self.names.values().copied().collect();
        self.contents.retain(|id, _| live.contains(id));
        for file in self.contents.values_mut() {
            let pending = std::mem::take(&mut file.pending);
            if torn_writes && !pending.is_empty() {
                let kept = rng.range_inclusive(0, pending.len() as u64) as usize;
                file.durable.extend_from_slice(&pending[..kept]);
            }
        }
    }

    /// Flips one random bit of synced data, in a random file. Returns where, if any file holds
    /// data.
    pub fn flip_random_bit(&mut self, rng: &mut Rng) -> Option<String> {
        let candidates: Vec<(String, FileId)> = self
            .names
            .iter()
            .filter(|(_, id)| self.contents.get(id).is_some_and(|f| !f.durable.is_empty()))
            .map(|(n, id)| (n.clone(), *id))
            .collect();
        let (name, id) = rng.pick(&candidates)?.clone();
        let file = self.contents.get_mut(&id)?;
        let byte = rng.index(file.durable.len());
        let bit = rng.range(0, 8);
        file.durable[byte] ^= 1 << bit;
        Some(format!(
            "bit {bit} of byte {byte} of {}",
            self.describe(&name)
        ))
    }

    /// Bytes stored, synced or not.
    pub fn size_bytes(&self) -> usize {
        self.contents
            .values()
            .map(|f| f.durable.len() + f.pending.len())
            .sum()
    }
}

impl Dir for SimDir {
    fn list(&self) -> Result<Vec<String>> {
        Ok(self.names.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let file = self.file(name)?;
        let mut data = file.durable.clone();
        data.extend_from_slice(&file.pending);
        Ok(data)
    }

    fn create(&mut self, name: &str) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.contents.insert(id, SimFile::default());
        self.names.insert(name.to_string(), id);
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.file_mut(name)?.pending.extend_from_slice(data);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> Result<()> {
        let file = self.file_mut(name)?;
        let pending = std::mem::take(&mut file.pending);
        file.durable.extend_from_slice(&pending);
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<()> {
        let file = self.file_mut(name)?;
        let mut all = std::mem::take(&mut file.durable);
        all.append(&mut file.pending);
        all.truncate(len as usize);
        file.durable = all;
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let id = self.names.remove(from).ok_or_else(|| {
            StorageError::io(
                "rename",
                self.describe(from),
                std::io::ErrorKind::NotFound.into(),
            )
        })?;
        self.names.insert(to.to_string(), id);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<()> {
        self.names.remove(name).map(|_| ()).ok_or_else(|| {
            StorageError::io(
                "remove",
                self.describe(name),
                std::io::ErrorKind::NotFound.into(),
            )
        })
    }

    fn sync_dir(&mut self) -> Result<()> {
        self.synced_names = self.names.clone();
        // Files no name refers to any more are gone for good.
        let live: std::collections::BTreeSet<FileId> = self.names.values().copied().collect();
        self.contents.retain(|id, _| live.contains(id));
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.label)
    }
}

/// What a node gets back from its disk when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The engine's hard state.
    pub hard_state: Option<Vec<u8>>,
    /// The newest snapshot.
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot.
    pub entries: Vec<Entry>,
    /// Torn writes cut off while opening the log.
    pub repairs: Vec<String>,
}

/// Segments are kept small in the simulator so that they roll over and get purged often.
pub const SEGMENT_BYTES: u64 = 16 << 10;
/// Snapshots kept per node.
pub const SNAPSHOTS_KEPT: usize = 2;

/// A node's disk: the log and snapshot store while the node runs, bare directories while it
/// is down.
#[derive(Debug)]
pub(crate) struct NodeDisk {
    open: Option<(FileLog<SimDir>, FileSnapshots<SimDir>)>,
    closed: Option<(SimDir, SimDir)>,
}

impl NodeDisk {
    pub(crate) fn new(node: u64) -> NodeDisk {
        NodeDisk {
            open: None,
            closed: Some((
                SimDir::new(format!("n{node}/wal")),
                SimDir::new(format!("n{node}/snap")),
            )),
        }
    }

    /// The log and snapshot store of a running node.
    pub(crate) fn stores(&mut self) -> (&mut FileLog<SimDir>, &mut FileSnapshots<SimDir>) {
        let (wal, snaps) = self.open.as_mut().expect("a running node's disk is open");
        (wal, snaps)
    }

    /// Opens the stores and reads back what they hold. On an error the disk is unusable.
    pub(crate) fn open(&mut self) -> Result<Recovered> {
        let Some((wal_dir, snap_dir)) = self.closed.take() else {
            return Err(StorageError::Misuse("the disk is already open".to_string()));
        };
        let snaps = FileSnapshots::open(snap_dir, SNAPSHOTS_KEPT)?;
        let snapshot = snaps.latest()?;
        let (mut wal, state) = FileLog::open(
            wal_dir,
            WalOptions {
                segment_bytes: SEGMENT_BYTES,
            },
        )?;
        let repairs = state.repairs.clone();
        let (hard_state, entries) =
            synod_storage::recover(&mut wal, state, snapshot.as_ref().map(|s| s.meta))?;
        self.open = Some((wal, snaps));
        Ok(Recovered {
            hard_state,
            snapshot,
            entries,
            repairs,
        })
    }

    /// The machine stops: what was not synced is lost (or, with torn writes, cut short).
    pub(crate) fn crash(&mut self, rng: &mut Rng, torn_writes: bool) {
        if let Some((wal, snaps)) = self.open.take() {
            let (mut wal_dir, mut snap_dir) = (wal.into_dir(), snaps.into_dir());
            wal_dir.crash(rng, torn_writes);
            snap_dir.crash(rng, torn_writes);
            self.closed = Some((wal_dir, snap_dir));
        }
    }

    /// Flips a bit in the stored data of a stopped node's disk.
    pub(crate) fn corrupt(&mut self, rng: &mut Rng) -> Option<String> {
        let (wal_dir, snap_dir) = self.closed.as_mut()?;
        if rng.chance(0.5) {
            wal_dir
                .flip_random_bit(rng)
                .or_else(|| snap_dir.flip_random_bit(rng))
        } else {
            snap_dir
                .flip_random_bit(rng)
                .or_else(|| wal_dir.flip_random_bit(rng))
        }
    }

    /// Saves a snapshot the node took and compacts its log through it.
    pub(crate) fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        let (wal, snaps) = self.stores();
        synod_storage::save_snapshot(wal, snaps, snapshot)?;
        wal.flush()
    }

    /// Writes an engine's persist, unsynced (a snapshot in it is saved at once).
    pub(crate) fn write(&mut self, persist: &Persist) -> Result<()> {
        let (wal, snaps) = self.stores();
        synod_storage::write_persist(wal, snaps, persist)?;
        wal.flush()
    }

    /// Makes everything written durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        synod_storage::LogStore::sync(self.stores().0)
    }
}
