//! The store's history: every change since the last compaction, in revision order. It serves
//! reads at a past revision (by undoing newer changes) and watches that start in the past.
//! A persistent vector, as the store's maps are: a snapshot's copy of it costs nothing.

use std::cmp::Ordering;

use crate::request::KeyValue;

/// What a change did to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was written.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change to one key, as etcd's `mvccpb.Event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change. For a delete, only the key and the revision of the delete
    /// (`mod_revision`) are set, as in etcd.
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// Changes from the compaction revision on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct History {
    pub(crate) events: imbl::Vector<Event>,
    /// Reads before this revision fail; 0 before the first compaction.
    pub(crate) compacted: i64,
    /// What the changes kept cost the store (see [`cost`]).
    pub(crate) bytes: u64,
}

/// What one change costs the store: its key, its new value, and a fixed share for the rest
/// of the event (revisions, version, lease, the previous value's handle).
pub(crate) fn cost(event: &Event) -> u64 {
    (event.kv.key.len() + event.kv.value.len()) as u64 + ENTRY_OVERHEAD
}

/// What the store counts for each change kept and each live key beyond their key and value
/// bytes: about what their bookkeeping takes in memory.
pub(crate) const ENTRY_OVERHEAD: u64 = 64;

impl History {
    pub(crate) fn push(&mut self, event: Event) {
        debug_assert!(self
            .events
            .back()
            .is_none_or(|last| last.revision() <= event.revision()));
        self.bytes += cost(&event);
        self.events.push_back(event);
    }

    /// Changes at `revision` or later, oldest first.
    pub(crate) fn from(&self, revision: i64) -> impl DoubleEndedIterator<Item = &Event> {
        let start = self.first_at(revision);
        self.events.focus().narrow(start..).into_iter()
    }

    /// Forgets the changes before `revision`.
    pub(crate) fn compact(&mut self, revision: i64) {
        let keep_from = self.first_at(revision);
        let freed: u64 = self
            .events
            .focus()
            .narrow(..keep_from)
            .into_iter()
            .map(cost)
            .sum();
        self.bytes -= freed;
        self.events = self.events.skip(keep_from);
        self.compacted = revision;
    }

    /// The position of the first change at `revision` or later (one revision can hold many
    /// changes: a transaction's).
    fn first_at(&self, revision: i64) -> usize {
        let before = |e: &Event| {
            if e.revision() < revision {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        };
        // `before` never answers Equal, so the search ends where the changes at `revision`
        // or later begin.
        match self.events.binary_search_by(before) {
            Ok(at) | Err(at) => at,
        }
    }

    /// Counts [`History::bytes`] again, after events were put in directly.
    pub(crate) fn recount(&mut self) {
        self.bytes = self.events.iter().map(cost).sum();
    }

    /// Revision of the newest change recorded, 0 if none is.
    pub(crate) fn newest(&self) -> i64 {
        self.events.back().map_or(0, Event::revision)
    }
}
