//! The in-memory copy of a node's log, for the engines that keep one (Raft, ZAB,
//! primary-backup, DNS-style): the entries after the last snapshot. Durability is the
//! runtime's job: every change here is mirrored by a `Persist` action.

use crate::engine::Action;
use crate::entry::{Entry, Payload};
use crate::ids::LogIndex;
use crate::membership::Membership;
use crate::snapshot::SnapshotMeta;

/// A log: a snapshot base, then entries at consecutive indexes whose eras (Raft terms, ZAB
/// epochs) never decrease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log {
    /// The log was compacted through here; index 0 (era 0) when never compacted.
    base: SnapshotMeta,
    entries: Vec<Entry>,
}

impl Log {
    /// The newest membership entry at or below `index`, with its index (engines whose
    /// membership rules from the moment it is held: Raft, ZAB).
    pub fn membership_through(&self, index: LogIndex) -> Option<(LogIndex, Membership)> {
        self.entries
            .iter()
            .rev()
            .skip_while(|e| e.index > index)
            .find_map(|e| match &e.payload {
                Payload::Membership { membership, .. } => Some((e.index, membership.clone())),
                _ => None,
            })
    }

    /// The membership in force as of `index`: the newest membership entry at or below it,
    /// with its index, else `base` (the one the log starts from) at index 0.
    pub fn membership_or(
        &self,
        index: LogIndex,
        base: impl FnOnce() -> Membership,
    ) -> (LogIndex, Membership) {
        self.membership_through(index)
            .unwrap_or_else(|| (0, base()))
    }

    /// A log holding `entries` after `base`: they must follow it at consecutive indexes, with
    /// eras that never decrease.
    pub fn from_parts(base: SnapshotMeta, entries: Vec<Entry>) -> Result<Log, String> {
        let mut previous = (base.index, base.era);
        for e in &entries {
            if e.index != previous.0 + 1 {
                return Err(format!("entry {} follows index {}", e.index, previous.0));
            }
            if e.era < previous.1 {
                return Err(format!(
                    "entry {} has era {} below its predecessor's {}",
                    e.index, e.era, previous.1
                ));
            }
            previous = (e.index, e.era);
        }
        Ok(Log { base, entries })
    }

    /// Where the log was compacted to.
    pub fn base(&self) -> SnapshotMeta {
        self.base
    }

    /// Index of the last entry (of the base, when no entry follows it).
    pub fn last_index(&self) -> LogIndex {
        self.base.index + self.entries.len() as LogIndex
    }

    /// Era of the last entry (of the base, when no entry follows it).
    pub fn last_era(&self) -> u64 {
        self.entries.last().map_or(self.base.era, |e| e.era)
    }

    /// Era of the entry at `index`: known for the base and the entries after it, `None`
    /// before the base (compacted) or past the end.
    pub fn era(&self, index: LogIndex) -> Option<u64> {
        if index == self.base.index {
            return Some(self.base.era);
        }
        self.entry(index).map(|e| e.era)
    }

    /// The entry at `index`, if it is held (after the base, up to the end).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let position = index.checked_sub(self.base.index)?.checked_sub(1)?;
        self.entries.get(position as usize)
    }

    /// Every entry held, from just after the base.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Entries from `from` (which must be after the base) on, at most `count_max` of them and
    /// (after the first) at most `bytes_max` bytes in all.
    pub fn slice(&self, from: LogIndex, count_max: usize, bytes_max: usize) -> Vec<Entry> {
        let start = from.saturating_sub(self.base.index + 1) as usize;
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

    /// Whether a log ending at (`last_era`, `last_index`) is at least as up-to-date as this
    /// one (Raft paper 5.4.1): a later last era wins, then the longer log.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_era: u64) -> bool {
        (last_era, last_index) >= (self.last_era(), self.last_index())
    }

    /// The first index held of the run of entries with the same era as the one at `index`.
    pub fn first_index_of_era_at(&self, index: LogIndex) -> LogIndex {
        let Some(era) = self.era(index) else {
            return index;
        };
        let mut first = index;
        while first > self.base.index + 1 && self.era(first - 1) == Some(era) {
            first -= 1;
        }
        first
    }

    /// The last index holding an entry of `era`, searching down from `at` to the base.
    pub fn last_index_of_era(&self, era: u64, at: LogIndex) -> Option<LogIndex> {
        let mut index = at.min(self.last_index());
        while index >= self.base.index {
            match self.era(index) {
                Some(t) if t == era => return Some(index),
                Some(t) if t < era => return None,
                _ if index == self.base.index => return None,
                _ => index -= 1,
            }
        }
        None
    }

    /// Pushes `Action::Apply` for each entry after `*applied` through `through`, in order, and
    /// moves `*applied` there. Those entries are committed, so in the log: a snapshot covers
    /// only what was applied.
    pub fn apply_through<M>(
        &self,
        applied: &mut LogIndex,
        through: LogIndex,
        out: &mut Vec<Action<M>>,
    ) {
        while *applied < through {
            let entry = self
                .entry(*applied + 1)
                .expect("committed entries are in the log until applied");
            *applied += 1;
            out.push(Action::Apply(entry.clone()));
        }
    }

    /// Appends one entry, which must come right after the last.
    pub fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "log entries are consecutive"
        );
        assert!(entry.era >= self.last_era(), "log eras never decrease");
        self.entries.push(entry);
    }

    /// Removes every entry at `index` or later; never the base.
    pub fn truncate_from(&mut self, index: LogIndex) {
        assert!(
            index > self.base.index,
            "entry {index} is inside the snapshot"
        );
        self.entries
            .truncate((index - self.base.index - 1) as usize);
    }

    /// Makes `base` the new start of the log (Raft paper section 7): entries it covers are dropped.
    /// If the log holds the base's entry with the same era, what follows it stays; otherwise
    /// the whole log is discarded. Returns whether entries after the base were discarded.
    pub fn compact_to(&mut self, base: SnapshotMeta) -> bool {
        if base.index <= self.base.index {
            return false;
        }
        let keep_suffix = self.era(base.index) == Some(base.era);
        let discarded = !keep_suffix && base.index < self.last_index();
        if keep_suffix {
            self.entries
                .drain(..(base.index - self.base.index) as usize);
        } else {
            self.entries.clear();
        }
        self.base = base;
        discarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Payload;

    fn log(base: (u64, u64), eras: &[u64]) -> Log {
        let entries = eras
            .iter()
            .enumerate()
            .map(|(i, &era)| Entry {
                index: base.0 + 1 + i as u64,
                era,
                payload: Payload::Noop,
            })
            .collect();
        Log::from_parts(
            SnapshotMeta {
                index: base.0,
                era: base.1,
            },
            entries,
        )
        .unwrap()
    }

    #[test]
    fn eras_are_known_from_the_base_on() {
        let l = log((10, 2), &[2, 3, 3]);
        assert_eq!((l.last_index(), l.last_era()), (13, 3));
        assert_eq!(l.era(9), None, "compacted");
        assert_eq!(l.era(10), Some(2), "the base's era is kept");
        assert_eq!(l.era(12), Some(3));
        assert_eq!(l.era(14), None);
        assert_eq!(l.first_index_of_era_at(13), 12);
        assert_eq!(
            l.first_index_of_era_at(11),
            11,
            "the search stops at the base"
        );
        assert_eq!(l.last_index_of_era(2, 13), Some(11));
        assert_eq!(l.last_index_of_era(1, 13), None);
        assert_eq!(l.slice(12, 10, 1 << 20).len(), 2);
    }

    #[test]
    fn compaction_keeps_a_matching_suffix_and_drops_a_conflicting_one() {
        let mut matching = log((0, 0), &[1, 1, 2, 2, 3]);
        assert!(!matching.compact_to(SnapshotMeta { index: 3, era: 2 }));
        assert_eq!((matching.base().index, matching.last_index()), (3, 5));
        let mut conflicting = log((0, 0), &[1, 1, 2, 2, 3]);
        assert!(conflicting.compact_to(SnapshotMeta { index: 3, era: 4 }));
        assert_eq!((conflicting.last_index(), conflicting.last_era()), (3, 4));
        let mut short = log((0, 0), &[1]);
        assert!(!short.compact_to(SnapshotMeta { index: 9, era: 2 }));
        assert_eq!(short.last_index(), 9);
        assert!(Log::from_parts(
            SnapshotMeta { index: 5, era: 1 },
            log((0, 0), &[1]).entries().to_vec()
        )
        .is_err());
    }
}
