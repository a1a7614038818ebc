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

use std::collections::HashMap;

use synod_check::Key;
use synod_core::{Entry, LogIndex, Payload};
use synod_kv::Request;

/// Where and when each key changed.
#[derive(Debug, Default)]
pub(crate) struct Freshness {
    /// When each index was first applied anywhere (index 1 at position 0).
    applied_at: Vec<u64>,
    /// The indexes that changed each register key, in order.
    changes: HashMap<Key, Vec<LogIndex>>,
}

impl Freshness {
    /// `entry` was applied for the first time anywhere, at `now`.
    pub(crate) fn applied(&mut self, entry: &Entry, now: u64) {
        debug_assert_eq!(entry.index as usize, self.applied_at.len() + 1);
        self.applied_at.push(now);
        let Payload::Command(proposal) = &entry.payload else {
            return;
        };
        let Ok(request) = Request::decode(&proposal.command) else {
            return;
        };
        for key in keys_written(&request) {
            self.changes.entry(key).or_default().push(entry.index);
        }
    }

    /// How long before `asked_at` the first change to `key` after `index` was applied, if one
    /// was: the answer's staleness. `None`: the answer was fresh.
    pub(crate) fn staleness(&self, key: Key, index: LogIndex, asked_at: u64) -> Option<u64> {
        let changes = self.changes.get(&key)?;
        let next = changes[changes.partition_point(|&i| i <= index)..].first()?;
        let applied_at = *self.applied_at.get(*next as usize - 1)?;
        (applied_at < asked_at).then(|| asked_at - applied_at)
    }
}

/// The register keys (`k<n>`) a request may change.
fn keys_written(request: &Request) -> Vec<Key> {
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
        _ => {}
    }
    keys
}

/// The register number of a key the workload reads and writes (`k17` is 17).
fn register(key: &[u8]) -> Option<Key> {
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

    fn put(index: LogIndex, key: &str) -> Entry {
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
        f.applied(&put(1, "k1"), 100);
        f.applied(&put(2, "k2"), 200);
        f.applied(&put(3, "k1"), 300);
        // As of index 1, k1 missed index 3 (applied at 300).
        assert_eq!(f.staleness(1, 1, 350), Some(50));
        assert_eq!(f.staleness(1, 1, 300), None, "not yet applied when asked");
        assert_eq!(f.staleness(1, 3, 900), None);
        // k2 did not change after index 2.
        assert_eq!(f.staleness(2, 2, 900), None);
        assert_eq!(f.staleness(2, 0, 900), Some(700));
        assert_eq!(f.staleness(9, 0, 900), None, "never written");
    }
}
