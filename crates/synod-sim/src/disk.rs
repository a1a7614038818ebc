//! The simulated disk: directories of in-memory files with POSIX durability rules, and only
//! the faults Synod claims to survive.
//!
//! - Data written but not yet synced is lost at a crash: the file reads as it did before the
//!   write (zeros, in space allocated ahead). With disk faults on, part of it may survive
//!   instead: a prefix cut anywhere, or the whole length with some 512-byte sectors never
//!   written, reading back as they were before, or as zeros past the old end (a file system
//!   that recorded the length before the data, as ext4 with delayed allocation and XFS can).
//! - File and directory creations, renames and removals not yet made durable by `sync_dir` of
//!   their directory may be undone; a directory undone takes everything in it along.
//! - With disk faults on, the nemesis may damage a disk: flip a bit in stored (synced) data,
//!   or crash a node so that its unwritten sectors read back as stale garbage. A node cannot
//!   tell either from the other, so it must refuse to start; the nemesis counts that node as
//!   down for good, within its fault budget.
//!
//! The log and snapshot store run on this through the same `Dir` trait as on real files, and
//! nodes open their data directory with the same `open_node_stores` as the server.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use synod_core::{Persist, Rng};
use synod_storage::record::{SECTOR_BYTES, ZERO_RUN_BYTES_MIN};
use synod_storage::{
    open_node_stores, Dir, NodeStores, Recovered, Result, StorageError, StorageOptions, WalOptions,
    SNAP_DIR, WAL_DIR,
};

type FileId = u64;

/// Lays `data` over `file` from byte `at` on, growing it (with zeros up to `at`) if needed.
fn overlay(file: &mut Vec<u8>, at: usize, data: &[u8]) {
    let end = at + data.len();
    if file.len() < end {
        file.resize(end, 0);
    }
    file[at..end].copy_from_slice(data);
}

#[derive(Clone, Debug, Default)]
struct SimFile {
    /// What a crash keeps.
    durable: Vec<u8>,
    /// Written since the last sync: one run of bytes from `pending_at` on, laid over `durable`
    /// (a run that covers every write since, with what the file held between them).
    pending: Vec<u8>,
    pending_at: usize,
}

impl SimFile {
    fn len(&self) -> usize {
        match self.pending.len() {
            0 => self.durable.len(),
            n => self.durable.len().max(self.pending_at + n),
        }
    }

    /// What the file reads as.
    fn contents(&self) -> Vec<u8> {
        let mut all = self.durable.clone();
        overlay(&mut all, self.pending_at, &self.pending);
        all
    }

    fn write_at(&mut self, at: usize, data: &[u8]) {
        let pending_end = self.pending_at + self.pending.len();
        if self.pending.is_empty() {
            self.pending_at = at;
        } else if at < self.pending_at || at > pending_end {
            // Widen the run to cover the write, filled with what the file holds now.
            let start = self.pending_at.min(at);
            let end = pending_end.max(at + data.len());
            let mut run: Vec<u8> = (start..end)
                .map(|p| self.durable.get(p).copied().unwrap_or(0))
                .collect();
            run[self.pending_at - start..pending_end - start].copy_from_slice(&self.pending);
            self.pending = run;
            self.pending_at = start;
        }
        overlay(&mut self.pending, at - self.pending_at, data);
    }

    fn sync(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        overlay(&mut self.durable, self.pending_at, &pending);
    }

    /// What a crash of the machine leaves of the unsynced data (a crash of the process alone,
    /// `Unsynced::Kept`, never gets here: `SimDir::crash` keeps everything). Returns whether
    /// it left garbage.
    fn crash(&mut self, rng: &mut Rng, unsynced: Unsynced) -> bool {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() || unsynced == Unsynced::Lost {
            return false;
        }
        let start = self.pending_at;
        if unsynced == Unsynced::Torn && rng.chance(0.5) {
            // The write got as far as some byte: a clean cut. Where it grew the file, the
            // length was recorded that far; where it wrote over space the file already had, a
            // disk writes whole sectors, so the cut falls on a sector boundary.
            let mut cut = start + rng.range_inclusive(0, pending.len() as u64) as usize;
            if cut < self.durable.len() {
                cut = start.max(cut - cut % SECTOR_BYTES);
            }
            overlay(&mut self.durable, start, &pending[..cut - start]);
            return false;
        }
        // The length covers the write, but its data reached the disk only up to a sector
        // boundary (or not at all), and maybe not every sector before it either; a sector not
        // written reads as before (zeros past the old end). Zeros in less than
        // ZERO_RUN_BYTES_MIN of a sector are not simulated: a node cannot tell them from
        // damage, and refuses to start on them (the log never starts a write that close to a
        // sector's end, so the first sector of a write, lost, always shows more).
        let end = start + pending.len();
        let before: Vec<u8> = (start..end)
            .map(|p| self.durable.get(p).copied().unwrap_or(0))
            .collect();
        overlay(&mut self.durable, start, &pending);
        let boundaries: Vec<usize> = (start / SECTOR_BYTES + 1..)
            .map(|k| k * SECTOR_BYTES)
            .take_while(|&b| b + ZERO_RUN_BYTES_MIN <= end)
            .collect();
        let written_to = match rng.index(boundaries.len() + 1) {
            0 => start,
            i => boundaries[i - 1],
        };
        let mut garbage = false;
        let mut sector = start - start % SECTOR_BYTES;
        while sector < end {
            let (from, to) = (sector.max(start), (sector + SECTOR_BYTES).min(end));
            let lost = from >= written_to || (to - from >= ZERO_RUN_BYTES_MIN && rng.chance(0.1));
            if lost {
                if unsynced == Unsynced::Garbage {
                    for b in &mut self.durable[from..to] {
                        *b = rng.next_u64() as u8;
                    }
                    garbage = true;
                } else {
                    self.durable[from..to].copy_from_slice(&before[from - start..to - start]);
                }
            }
            sector += SECTOR_BYTES;
        }
        garbage
    }
}

/// How a crash treats data that was written but not synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsynced {
    /// The process was killed and the machine stayed up: the kernel keeps it, and the
    /// directory changes not yet synced, in its cache. The next life reads them back; they
    /// become durable only when synced, and a power loss before that treats them as the
    /// other kinds say.
    Kept,
    /// It is lost.
    Lost,
    /// Part of it may survive: a prefix, or the whole length with some sectors never written
    /// (zeros). What a power loss does; a node must survive it.
    Torn,
    /// As `Torn`, but sectors never written read back as stale garbage: damage.
    Garbage,
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
    /// Subdirectories; `None` while one is lent out to a store.
    subdirs: BTreeMap<String, Option<SimDir>>,
    /// The subdirectories as of the last `sync_dir`.
    synced_subdirs: BTreeSet<String>,
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
            subdirs: BTreeMap::new(),
            synced_subdirs: BTreeSet::new(),
        }
    }

    /// Takes back a subdirectory lent out by `subdir`.
    pub fn put_back(&mut self, name: &str, dir: SimDir) {
        self.subdirs.insert(name.to_string(), Some(dir));
    }

    /// A subdirectory that is not lent out.
    pub fn subdir_mut(&mut self, name: &str) -> Option<&mut SimDir> {
        self.subdirs.get_mut(name).and_then(Option::as_mut)
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

    /// What a crash leaves: namespace changes not yet synced are undone (or kept), and data
    /// not yet synced is treated as `unsynced` says (all of it kept, unsynced, by a crash of
    /// the process alone), here and in every subdirectory (which
    /// must all have been put back). Returns whether garbage was left anywhere.
    pub fn crash(&mut self, rng: &mut Rng, unsynced: Unsynced) -> bool {
        if unsynced == Unsynced::Kept {
            return false;
        }
        let names_changed = self.names != self.synced_names
            || self.subdirs.keys().cloned().collect::<BTreeSet<_>>() != self.synced_subdirs;
        if names_changed && rng.chance(0.5) {
            self.names = self.synced_names.clone();
            let synced = &self.synced_subdirs;
            self.subdirs.retain(|name, _| synced.contains(name));
        }
        self.synced_names = self.names.clone();
        self.synced_subdirs = self.subdirs.keys().cloned().collect();
        let live: BTreeSet<FileId> = self.names.values().copied().collect();
        self.contents.retain(|id, _| live.contains(id));
        let mut garbage = false;
        for file in self.contents.values_mut() {
            garbage |= file.crash(rng, unsynced);
        }
        for dir in self.subdirs.values_mut().flatten() {
            garbage |= dir.crash(rng, unsynced);
        }
        garbage
    }

    /// Flips one random bit of synced data, in a random file. Returns where, if any file holds
    /// data. A file's trailing zeros are mostly space allocated but never written, which a
    /// real disk hands back as zeros without reading it: the bit is one of the data, or of the
    /// sector after it (written, on a real disk, with the data's last sector).
    pub fn flip_random_bit(&mut self, rng: &mut Rng) -> Option<String> {
        let written = |f: &SimFile| {
            let data = f.durable.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            f.durable.len().min(data + SECTOR_BYTES)
        };
        let candidates: Vec<(String, FileId)> = self
            .names
            .iter()
            .filter(|(_, id)| self.contents.get(id).is_some_and(|f| written(f) > 0))
            .map(|(n, id)| (n.clone(), *id))
            .collect();
        let (name, id) = rng.pick(&candidates)?.clone();
        let file = self.contents.get_mut(&id)?;
        let byte = rng.index(written(file));
        let bit = rng.range(0, 8);
        file.durable[byte] ^= 1 << bit;
        Some(format!(
            "bit {bit} of byte {byte} of {}",
            self.describe(&name)
        ))
    }

    /// Bytes stored, synced or not.
    pub fn size_bytes(&self) -> usize {
        self.contents.values().map(SimFile::len).sum()
    }
}

impl Dir for SimDir {
    fn list(&self) -> Result<Vec<String>> {
        Ok(self.names.keys().cloned().collect())
    }

    fn open_read(&self, name: &str) -> Result<Box<dyn Read + '_>> {
        Ok(Box::new(std::io::Cursor::new(self.file(name)?.contents())))
    }

    fn len(&self, name: &str) -> Result<u64> {
        Ok(self.file(name)?.len() as u64)
    }

    fn subdir(&mut self, name: &str) -> Result<SimDir> {
        match self.subdirs.get_mut(name) {
            Some(slot) => slot.take().ok_or_else(|| {
                StorageError::Misuse(format!("{} is already open", self.describe(name)))
            }),
            None => {
                self.subdirs.insert(name.to_string(), None);
                Ok(SimDir::new(self.describe(name)))
            }
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        Ok(self.file(name)?.contents())
    }

    fn create(&mut self, name: &str) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.contents.insert(id, SimFile::default());
        self.names.insert(name.to_string(), id);
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let file = self.file_mut(name)?;
        file.write_at(file.len(), data);
        Ok(())
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<()> {
        self.file_mut(name)?.write_at(offset as usize, data);
        Ok(())
    }

    fn preallocate(&mut self, name: &str, len: u64) -> Result<()> {
        let file = self.file_mut(name)?;
        let (len, now) = (len as usize, file.len());
        if len > now {
            file.write_at(now, &vec![0; len - now]);
        }
        Ok(())
    }

    fn sync(&mut self, name: &str) -> Result<()> {
        self.file_mut(name)?.sync();
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<()> {
        let file = self.file_mut(name)?;
        file.sync();
        file.durable.truncate(len as usize);
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
        self.synced_subdirs = self.subdirs.keys().cloned().collect();
        // Files no name refers to any more are gone for good.
        let live: std::collections::BTreeSet<FileId> = self.names.values().copied().collect();
        self.contents.retain(|id, _| live.contains(id));
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.label)
    }
}

/// Segments are kept small in the simulator so that they roll over and get purged often.
pub const SEGMENT_BYTES: u64 = 16 << 10;
/// Snapshot files are written in small chunks, so every snapshot spans several.
pub const SNAPSHOT_CHUNK_BYTES: usize = 512;

/// A node's disk: its data directory, with the log and snapshot store open in it while the
/// node runs.
#[derive(Debug)]
pub(crate) struct NodeDisk {
    data: SimDir,
    open: Option<NodeStores<SimDir>>,
    options: StorageOptions,
}

impl NodeDisk {
    pub(crate) fn new(node: u64, bugs: synod_storage::InjectedBugs) -> NodeDisk {
        let mut wal = WalOptions::with_segment_bytes(SEGMENT_BYTES);
        wal.bugs = bugs;
        NodeDisk {
            data: SimDir::new(format!("n{node}")),
            open: None,
            options: StorageOptions {
                wal,
                snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES,
                ..StorageOptions::default()
            },
        }
    }

    /// The log and snapshot store of a running node.
    pub(crate) fn stores(&mut self) -> &mut NodeStores<SimDir> {
        self.open.as_mut().expect("a running node's disk is open")
    }

    /// Opens the stores, as the server does, and reads back what they hold. On an error the
    /// disk is unusable.
    pub(crate) fn open(&mut self, protocol: &str) -> Result<Recovered> {
        if self.open.is_some() {
            return Err(StorageError::Misuse("the disk is already open".to_string()));
        }
        let (stores, recovered) = open_node_stores(&mut self.data, protocol, &self.options)?;
        self.open = Some(stores);
        Ok(recovered)
    }

    /// The machine stops: what was not synced is lost, or treated as `unsynced` says. Returns
    /// whether garbage was left.
    pub(crate) fn crash(&mut self, rng: &mut Rng, unsynced: Unsynced) -> bool {
        if let Some(stores) = self.open.take() {
            self.data.put_back(WAL_DIR, stores.log.into_dir());
            self.data.put_back(SNAP_DIR, stores.snapshots.into_dir());
        }
        self.data.crash(rng, unsynced)
    }

    /// Flips a bit in the stored data of a stopped node's disk.
    pub(crate) fn corrupt(&mut self, rng: &mut Rng) -> Option<String> {
        let (first, second) = if rng.chance(0.5) {
            (WAL_DIR, SNAP_DIR)
        } else {
            (SNAP_DIR, WAL_DIR)
        };
        if let Some(flipped) = self
            .data
            .subdir_mut(first)
            .and_then(|d| d.flip_random_bit(rng))
        {
            return Some(flipped);
        }
        self.data
            .subdir_mut(second)
            .and_then(|d| d.flip_random_bit(rng))
    }

    /// Saves a snapshot the node took and compacts its log through it.
    pub(crate) fn save_snapshot(&mut self, snapshot: &synod_core::Snapshot) -> Result<()> {
        let stores = self.stores();
        synod_storage::save_snapshot(&mut stores.log, &mut stores.snapshots, snapshot)?;
        stores.log.flush()
    }

    /// Writes an engine's persist, unsynced (a snapshot in it is saved at once).
    pub(crate) fn write(&mut self, persist: &Persist) -> Result<()> {
        let stores = self.stores();
        synod_storage::write_persist(&mut stores.log, &mut stores.snapshots, persist)?;
        stores.log.flush()
    }

    /// Makes everything written durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        synod_storage::LogStore::sync(&mut self.stores().log)
    }
}
