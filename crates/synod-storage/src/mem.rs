//! In-memory stores with the same crash semantics as the file ones: staged changes vanish at
//! a crash, synced ones stay. For engine tests and as the reference the conformance suite is
//! written against.

use synod_core::{Entry, LogIndex, Snapshot, SnapshotMeta};

use crate::error::{Result, StorageError};
use crate::log::{LogState, LogStore};
use crate::snapshot::SnapshotStore;

#[derive(Clone, Debug)]
enum Change {
    HardState(Vec<u8>),
    Journal(Vec<Vec<u8>>),
    Truncate(LogIndex),
    Append(Vec<Entry>),
    Base(SnapshotMeta),
}

/// A log kept in memory.
#[derive(Clone, Debug, Default)]
pub struct MemLog {
    durable: LogState,
    staged: Vec<Change>,
    last_index: LogIndex,
}

impl MemLog {
    /// An empty log.
    pub fn new() -> MemLog {
        MemLog::default()
    }

    /// What survives a crash: the synced state. Staged changes are gone.
    pub fn crash(self) -> (MemLog, LogState) {
        let state = self.durable.clone();
        let last_index = state.last_index();
        (
            MemLog {
                durable: state.clone(),
                staged: Vec::new(),
                last_index,
            },
            state,
        )
    }

    fn apply(state: &mut LogState, change: Change) {
        match change {
            Change::HardState(h) => {
                state.hard_state = Some(h);
                state.journal.clear();
            }
            Change::Journal(records) => state.journal.extend(records),
            Change::Truncate(index) => state.entries.retain(|e| e.index < index),
            Change::Append(entries) => state.entries.extend(entries),
            Change::Base(meta) => {
                state.entries.retain(|e| e.index > meta.index);
                if state
                    .entries
                    .first()
                    .is_some_and(|e| e.index != meta.index + 1)
                {
                    state.entries.clear();
                }
                state.base = Some(meta);
            }
        }
    }
}

impl LogStore for MemLog {
    fn save_hard_state(&mut self, hard_state: &[u8]) -> Result<()> {
        self.staged.push(Change::HardState(hard_state.to_vec()));
        Ok(())
    }

    fn append_journal(&mut self, records: &[Vec<u8>]) -> Result<()> {
        self.staged.push(Change::Journal(records.to_vec()));
        Ok(())
    }

    fn truncate_from(&mut self, index: LogIndex) -> Result<()> {
        self.staged.push(Change::Truncate(index));
        self.last_index = self.last_index.min(index.saturating_sub(1));
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index != self.last_index + 1 {
            return Err(StorageError::Misuse(format!(
                "append at {} after {}",
                first.index, self.last_index
            )));
        }
        self.last_index = entries.last().map_or(self.last_index, |e| e.index);
        self.staged.push(Change::Append(entries.to_vec()));
        Ok(())
    }

    fn compact_to(&mut self, base: SnapshotMeta) -> Result<()> {
        self.staged.push(Change::Base(base));
        self.last_index = self.last_index.max(base.index);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        for change in self.staged.drain(..) {
            MemLog::apply(&mut self.durable, change);
        }
        Ok(())
    }

    fn last_index(&self) -> LogIndex {
        self.last_index
    }
}

/// Snapshots kept in memory; `save` is durable at once.
#[derive(Clone, Debug)]
pub struct MemSnapshots {
    stored: Vec<Snapshot>,
    retain: usize,
}

impl MemSnapshots {
    /// No snapshots; keeps the newest `retain`.
    pub fn new(retain: usize) -> MemSnapshots {
        MemSnapshots {
            stored: Vec::new(),
            retain: retain.max(1),
        }
    }
}

impl SnapshotStore for MemSnapshots {
    fn save(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.stored.retain(|s| s.meta != snapshot.meta);
        self.stored.push(snapshot.clone());
        self.stored.sort_by_key(|s| s.meta);
        let excess = self.stored.len().saturating_sub(self.retain);
        self.stored.drain(..excess);
        Ok(())
    }

    fn latest(&self) -> Result<Option<Snapshot>> {
        Ok(self.stored.last().cloned())
    }

    fn list(&self) -> Result<Vec<SnapshotMeta>> {
        Ok(self.stored.iter().map(|s| s.meta).collect())
    }

    fn delete(&mut self, meta: SnapshotMeta) -> Result<()> {
        self.stored.retain(|s| s.meta != meta);
        Ok(())
    }
}
