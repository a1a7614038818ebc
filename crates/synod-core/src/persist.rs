//! Persistence bookkeeping for the engines that keep a log (Raft, ZAB): the changes one step
//! made that must reach disk, and the persists pushed but not yet durable, which say how far
//! the log is durable (a leader counts itself in a quorum only that far).

use std::collections::VecDeque;

use crate::engine::{Action, Persist, PersistId};
use crate::entry::Entry;
use crate::ids::LogIndex;
use crate::snapshot::Snapshot;

/// Changes made during one step that must reach disk before dependent messages leave.
#[derive(Debug, Default)]
pub struct Draft {
    /// A snapshot received from a peer.
    pub snapshot: Option<Snapshot>,
    /// The engine's hard state changed.
    pub hard_state: bool,
    /// Log entries from here on are removed.
    pub truncate_from: Option<LogIndex>,
    /// Entries appended.
    pub entries: Vec<Entry>,
}

impl Draft {
    fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && !self.hard_state
            && self.truncate_from.is_none()
            && self.entries.is_empty()
    }
}

/// The draft of this step, and the persists on their way to disk.
#[derive(Debug)]
pub struct PersistQueue {
    /// What this step changed so far.
    pub draft: Draft,
    next_id: u64,
    /// Persists not yet durable, with the last log index each makes durable.
    unpersisted: VecDeque<(PersistId, Option<LogIndex>)>,
    durable_index: LogIndex,
    last_pushed: PersistId,
    durable: PersistId,
}

impl PersistQueue {
    /// Nothing pending; the log is durable through `durable_index` (what a restart found).
    pub fn new(durable_index: LogIndex) -> PersistQueue {
        PersistQueue {
            draft: Draft::default(),
            next_id: 1,
            unpersisted: VecDeque::new(),
            durable_index,
            last_pushed: PersistId(0),
            durable: PersistId(0),
        }
    }

    /// The log is durable through here.
    pub fn durable_index(&self) -> LogIndex {
        self.durable_index
    }

    /// The last persist pushed.
    pub fn last_pushed(&self) -> PersistId {
        self.last_pushed
    }

    /// Every persist up to here is durable.
    pub fn durable(&self) -> PersistId {
        self.durable
    }

    /// Whether a message must wait for the draft even if it depends on no new entry: the
    /// hard state changed, or entries were removed.
    pub fn holds_more_than_entries(&self) -> bool {
        self.draft.hard_state || self.draft.truncate_from.is_some()
    }

    /// Log entries from `index` on were removed: from the draft, from disk (by the next
    /// persist), and from what counts as durable.
    pub fn truncate(&mut self, index: LogIndex) {
        self.draft.entries.retain(|e| e.index < index);
        self.draft.truncate_from = Some(self.draft.truncate_from.map_or(index, |t| t.min(index)));
        self.durable_index = self.durable_index.min(index - 1);
        for (_, covers) in self.unpersisted.iter_mut() {
            if let Some(last) = covers {
                *last = (*last).min(index - 1);
            }
        }
    }

    /// Pushes the draft as one persist, if it holds anything; `hard_state` encodes the hard
    /// state when it changed, and `last_index` is where the log ends once it is written.
    pub fn flush<M>(
        &mut self,
        last_index: LogIndex,
        hard_state: impl FnOnce() -> Vec<u8>,
        out: &mut Vec<Action<M>>,
    ) {
        if self.draft.is_empty() {
            return;
        }
        let draft = std::mem::take(&mut self.draft);
        let id = PersistId(self.next_id);
        self.next_id += 1;
        self.last_pushed = id;
        let touches_log =
            draft.snapshot.is_some() || draft.truncate_from.is_some() || !draft.entries.is_empty();
        self.unpersisted
            .push_back((id, touches_log.then_some(last_index)));
        out.push(Action::Persist(Persist {
            id,
            snapshot: draft.snapshot,
            hard_state: draft.hard_state.then(hard_state),
            journal: Vec::new(),
            truncate_from: draft.truncate_from,
            entries: draft.entries,
        }));
    }

    /// Every persist through `id` is durable.
    pub fn persisted(&mut self, id: PersistId) {
        while let Some(&(pending, covers)) = self.unpersisted.front() {
            if pending > id {
                break;
            }
            self.unpersisted.pop_front();
            if let Some(last) = covers {
                self.durable_index = last;
            }
        }
        self.durable = self.durable.max(id);
    }
}
