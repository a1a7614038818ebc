//! The log store contract: what a caller may rely on after each call returns, and after a
//! crash.

use synod_core::{Entry, LogIndex, Persist, Snapshot, SnapshotMeta};

use crate::error::{Result, StorageError};
use crate::snapshot::SnapshotStore;

/// What a log store holds when opened after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// The engine's hard state, as last saved.
    pub hard_state: Option<Vec<u8>>,
    /// The engine's journal records saved after that hard state, oldest first.
    pub journal: Vec<Vec<u8>>,
    /// The log was compacted through here (a snapshot covers it); entries continue after it.
    pub base: Option<SnapshotMeta>,
    /// Consecutive entries after the base (from index 1 without one).
    pub entries: Vec<Entry>,
    /// Torn writes cut off during recovery, one line each, for the operator's log.
    pub repairs: Vec<String>,
}

impl LogState {
    /// Index of the last entry, or of the base when no entry follows it; 0 when empty.
    pub fn last_index(&self) -> LogIndex {
        self.entries
            .last()
            .map(|e| e.index)
            .or(self.base.map(|b| b.index))
            .unwrap_or(0)
    }

    /// The entries a restarting node keeps on top of its latest snapshot (or all of them,
    /// without one), by the rule of Raft's section 7: entries the snapshot covers go; what
    /// follows stays only if the log holds the snapshot's last entry with the same era (or
    /// the log was compacted to exactly that point). A snapshot saved just before a crash may
    /// be newer than the log's own base; one older than the base means a snapshot is missing.
    pub fn entries_after(self, snapshot: Option<SnapshotMeta>) -> Result<Vec<Entry>> {
        let base = self.base.unwrap_or_default();
        let snapshot = snapshot.unwrap_or_default();
        if snapshot.index < base.index {
            return Err(StorageError::Misuse(format!(
                "the log is compacted through {} but the newest snapshot ends at {}",
                base.index, snapshot.index
            )));
        }
        if snapshot == base {
            return Ok(self.entries);
        }
        let holds_snapshot_end = self
            .entries
            .iter()
            .any(|e| e.index == snapshot.index && e.era == snapshot.era);
        if !holds_snapshot_end {
            return Ok(Vec::new());
        }
        Ok(self
            .entries
            .into_iter()
            .filter(|e| e.index > snapshot.index)
            .collect())
    }
}

/// A durable log with the engine's hard state beside it.
///
/// Changes are staged in call order and become durable together at [`LogStore::sync`]: after
/// `sync` returns, a crash loses none of them. A crash before that keeps some prefix of the
/// changes made since the last `sync` (possibly none), never a mix or a gap: a hard state is
/// either the old value or the new one, and the log is a consecutive run of entries.
pub trait LogStore {
    /// Replaces the hard state, and discards the journal.
    fn save_hard_state(&mut self, hard_state: &[u8]) -> Result<()>;

    /// Appends records to the engine's journal (kept until the next hard state).
    fn append_journal(&mut self, records: &[Vec<u8>]) -> Result<()>;

    /// Removes every entry at `index` or later.
    fn truncate_from(&mut self, index: LogIndex) -> Result<()>;

    /// Appends entries. The first must come right after the last entry (or the base).
    fn append(&mut self, entries: &[Entry]) -> Result<()>;

    /// Declares every entry through `base.index` covered by a durable snapshot: they may be
    /// deleted, and the log continues right after `base.index`, even if it held fewer entries.
    fn compact_to(&mut self, base: SnapshotMeta) -> Result<()>;

    /// Makes every staged change durable, with one data sync for all of them (group commit).
    fn sync(&mut self) -> Result<()>;

    /// Index of the last entry (staged ones included), or of the base; 0 when empty.
    fn last_index(&self) -> LogIndex;
}

/// Writes an engine's `Persist` to the stores, in the contract's order: snapshot, hard state,
/// journal, truncation, entries. The log part is staged (durable at the next `sync`); a snapshot is
/// saved at once, but only after the log, with this persist's hard state and truncation, is
/// synced: a durable snapshot must never run ahead of the durable term, or a restart would
/// find entries from a term the node never recorded; nor ahead of the truncation that goes
/// with it, or a crash that kept the compaction record but lost the truncation would leave
/// the snapshot's history followed by the tail of another.
pub fn write_persist(
    log: &mut impl LogStore,
    snapshots: &mut impl SnapshotStore,
    persist: &Persist,
) -> Result<()> {
    let Some(snapshot) = &persist.snapshot else {
        return write_persist_to_log(log, persist);
    };
    if let Some(hard_state) = &persist.hard_state {
        log.save_hard_state(hard_state)?;
    }
    if let Some(index) = persist.truncate_from {
        if index <= log.last_index() {
            log.truncate_from(index)?;
        }
    }
    log.sync()?;
    snapshots.save(snapshot)?;
    log.compact_to(snapshot.meta)?;
    let rest = Persist {
        hard_state: None,
        truncate_from: None,
        snapshot: None,
        ..persist.clone()
    };
    write_persist_to_log(log, &rest)
}

/// The log's part of a `Persist` (hard state, journal, truncation, entries), staged; all of it
/// when the persist carries no snapshot. A runtime that shares its snapshot store with another
/// thread calls this for such persists, so appending never waits for a snapshot being written.
pub fn write_persist_to_log(log: &mut impl LogStore, persist: &Persist) -> Result<()> {
    if let Some(hard_state) = &persist.hard_state {
        log.save_hard_state(hard_state)?;
    }
    if !persist.journal.is_empty() {
        log.append_journal(&persist.journal)?;
    }
    if let Some(index) = persist.truncate_from {
        log.truncate_from(index)?;
    }
    if !persist.entries.is_empty() {
        log.append(&persist.entries)?;
    }
    Ok(())
}

/// Saves a snapshot the node took of its own state machine and compacts the log through it.
/// The log is synced first, for the reason given at [`write_persist`]; the compaction record
/// is staged (a crash before the next `sync` is handled by [`recover`]).
pub fn save_snapshot(
    log: &mut impl LogStore,
    snapshots: &mut impl SnapshotStore,
    snapshot: &Snapshot,
) -> Result<()> {
    log.sync()?;
    snapshots.save(snapshot)?;
    log.compact_to(snapshot.meta)
}

/// What a restarting engine is handed back from its log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Its hard state.
    pub hard_state: Option<Vec<u8>>,
    /// Its journal records written after that hard state, oldest first.
    pub journal: Vec<Vec<u8>>,
    /// The log after its newest snapshot.
    pub entries: Vec<Entry>,
}

/// Opens what a restarting node needs: the log after its newest snapshot (see
/// [`LogState::entries_after`]), with the log store made to agree with that snapshot when a
/// crash came between saving the snapshot and recording it in the log.
pub fn recover(
    log: &mut impl LogStore,
    mut state: LogState,
    snapshot: Option<SnapshotMeta>,
) -> Result<Restored> {
    let hard_state = state.hard_state.take();
    let journal = std::mem::take(&mut state.journal);
    let base = state.base.unwrap_or_default();
    let last = state.last_index();
    let entries = state.entries_after(snapshot)?;
    if let Some(meta) = snapshot.filter(|m| *m != base) {
        log.compact_to(meta)?;
        if entries.is_empty() && last > meta.index {
            log.truncate_from(meta.index + 1)?;
        }
        log.sync()?;
    }
    Ok(Restored {
        hard_state,
        journal,
        entries,
    })
}
