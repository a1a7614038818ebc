//! The in-memory copy of a node's log. Durability is the runtime's job: every change here is
//! mirrored by a `Persist` action.

use synod_core::{Entry, LogIndex};

use crate::message::Term;

/// A Raft log: entries at consecutive indexes from 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftLog {
    entries: Vec<Entry>,
}

impl RaftLog {
    /// A log holding `entries`, which must start at index 1 and be consecutive with
    /// non-decreasing terms.
    pub fn from_entries(entries: Vec<Entry>) -> Result<RaftLog, String> {
        for (i, e) in entries.iter().enumerate() {
            if e.index != i as u64 + 1 {
                return Err(format!(
                    "entry at position {i} has index {}, expected {}",
                    e.index,
                    i + 1
                ));
            }
            if i > 0 && e.era < entries[i - 1].era {
                return Err(format!(
                    "entry {} has term {} below its predecessor's",
                    e.index, e.era
                ));
            }
        }
        Ok(RaftLog { entries })
    }

    /// Index of the last entry, 0 when empty.
    pub fn last_index(&self) -> LogIndex {
        self.entries.len() as LogIndex
    }

    /// Term of the last entry, 0 when empty.
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(0, |e| e.era)
    }

    /// Term of the entry at `index`: 0 for index 0, `None` past the end.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.entries.get(index as usize - 1).map(|e| e.era)
    }

    /// The entry at `index`, if present.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        index
            .checked_sub(1)
            .and_then(|i| self.entries.get(i as usize))
    }

    /// Every entry, from index 1.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Entries from `from` on, at most `count_max` of them and (after the first) at most
    /// `bytes_max` bytes in all.
    pub fn slice(&self, from: LogIndex, count_max: usize, bytes_max: usize) -> Vec<Entry> {
        let start = (from.max(1) - 1) as usize;
        let mut bytes = 0usize;
        self.entries
            .iter()
            .skip(start)
            .take(count_max)
            .take_while(|e| {
                bytes += e.size_bytes();
                bytes <= bytes_max || bytes == e.size_bytes()
            })
            .cloned()
            .collect()
    }

    /// Whether a candidate whose log ends at (`last_term`, `last_index`) is at least as
    /// up-to-date as this log (paper 5.4.1): later last term wins, then the longer log.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// The first index of the run of entries with the same term as the entry at `index`.
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut first = index;
        while first > 1 && self.term(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index holding an entry of `term`, searching down from `at`.
    pub fn last_index_of_term(&self, term: Term, at: LogIndex) -> Option<LogIndex> {
        let mut index = at.min(self.last_index());
        while index > 0 {
            match self.term(index) {
                Some(t) if t == term => return Some(index),
                Some(t) if t < term => return None,
                _ => index -= 1,
            }
        }
        None
    }

    /// Appends one entry, which must come right after the last.
    pub fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "log entries are consecutive"
        );
        assert!(entry.era >= self.last_term(), "log terms never decrease");
        self.entries.push(entry);
    }

    /// Removes every entry at `index` or later.
    pub fn truncate_from(&mut self, index: LogIndex) {
        self.entries.truncate((index.max(1) - 1) as usize);
    }
}
