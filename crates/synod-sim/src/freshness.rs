//! How stale the answers to reads are, measured the same way for every protocol.
//!
//! A read is answered from some node's state machine as of its applied index (its serial,
//! in DNS terms). The answer is **stale** if the key it read was changed by an entry after
//! that index which some node had already applied (so committed) before the read was asked:
//! a linearizable read can never be, a read of a lagging copy can. Its **staleness** is how
//! long before the read that change was applied. A client's cached answer counts from when
//! the cached read is asked, with the index of the answer it cached. A compare-and-swap
//! counts as a change of its key whether or not its compare held (the check does not run the
//! store again), so staleness errs high, never low.

use std::collections::{BTreeMap, HashMap};

use synod_check::Key;
use synod_core::{Entry, Payload};
use synod_kv::Request;

/// Where and when each key changed.
#[derive(Debug, Default)]
pub(crate) struct Freshness {
    /// The positions that changed each register key, with when each was first applied
    /// anywhere. A position is a log index, or, under a protocol that does not order writes
    /// (gossip), the version the change carries.
    changes: HashMap<Key, BTreeMap<u64, u64>>,
}

impl Freshness {
    /// `entry` was applied at `now` (the first time anywhere counts): at its index, or at its
    /// version (`era`) when writes are not ordered.
    pub(crate) fn applied(&mut self, entry: &Entry, ordered: bool, now: u64) {
        let Payload::Command(proposal) = &entry.payload else {
            return;
        };
        let Ok(request) = Request::decode(&proposal.command) else {
            return;
        };
        let position = if ordered { entry.index } else { entry.era };
        for key in keys_written(&request) {
            self.changes
                .entry(key)
                .or_default()
                .entry(position)
                .or_insert(now);
        }
    }

    /// How long before `asked_at` the first change to `key` after `position` was applied, if
    /// one was: the answer's staleness, and how many such changes there were (versions
    /// behind). `None`: the answer was fresh.
    pub(crate) fn staleness(&self, key: Key, position: u64, asked_at: u64) -> Option<(u64, u64)> {
        let changes = self.changes.get(&key)?;
        let mut first = None;
        let mut behind = 0;
        for (_, &at) in changes.range(position.saturating_add(1)..) {
            if at < asked_at {
                behind += 1;
                first = Some(first.map_or(at, |f: u64| f.min(at)));
            }
        }
        first.map(|at| (asked_at - at, behind))
    }
}

/// The register keys (`k<n>`) a request may change.
pub(crate) fn keys_written(request: &Request) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut note = |key: &[u8]| {
        if let Some(n) = register(key) {
            keys.push(n);
        }
    };
    match request {
        Request::Put(put) => note(&put.key),
        Request::DeleteRange(delete) => note(&delete.range.key),
        Request::Txn(txn) => {
            for op in txn.success.iter().chain(&txn.failure) {
                match op {
                    Request::Put(put) => note(&put.key),
                    Request::DeleteRange(delete) => note(&delete.range.key),
                    _ => {}
                }
            }
        }
        Request::As { request, .. } => return keys_written(request),
        _ => {}
    }
    keys
}

/// The register number of a key the workload reads and writes (`k17` is 17).
pub(crate) fn register(key: &[u8]) -> Option<Key> {
    std::str::from_utf8(key.strip_prefix(b"k")?)
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use synod_core::{Proposal, RequestId};
    use synod_kv::PutRequest;

    fn put(index: u64, key: &str) -> Entry {
        let request = Request::Put(PutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        });
        Entry {
            index,
            era: 1,
            payload: Payload::Command(Proposal {
                id: RequestId::new(1, index),
                command: Request::encode(&request),
            }),
        }
    }

    #[test]
    fn an_answer_is_stale_by_how_long_ago_its_key_changed_after_it() {
        let mut f = Freshness::default();
        f.applied(&put(1, "k1"), true, 100);
        f.applied(&put(2, "k2"), true, 200);
        f.applied(&put(3, "k1"), true, 300);
        // As of index 1, k1 missed index 3 (applied at 300).
        assert_eq!(f.staleness(1, 1, 350), Some((50, 1)));
        assert_eq!(f.staleness(1, 1, 300), None, "not yet applied when asked");
        assert_eq!(f.staleness(1, 3, 900), None);
        // k2 did not change after index 2.
        assert_eq!(f.staleness(2, 2, 900), None);
        assert_eq!(f.staleness(2, 0, 900), Some((700, 1)));
        assert_eq!(f.staleness(9, 0, 900), None, "never written");
    }

    #[test]
    fn without_ordered_writes_versions_are_the_positions_and_arrive_in_any_order() {
        let mut f = Freshness::default();
        let versioned = |version: u64, index: u64| Entry {
            era: version,
            ..put(index, "k1")
        };
        f.applied(&versioned(50, 1), false, 100);
        f.applied(&versioned(70, 1), false, 300);
        // Version 60 is applied later, at another node, under its own index.
        f.applied(&versioned(60, 4), false, 200);
        f.applied(&versioned(70, 9), false, 400);
        // As of version 50: two newer versions, the first applied at 200.
        assert_eq!(f.staleness(1, 50, 350), Some((150, 2)));
        assert_eq!(f.staleness(1, 70, 900), None);
    }
}
