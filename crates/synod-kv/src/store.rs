//! The key-value state machine: etcd's data model over an ordered map.
//!
//! One global revision counts write transactions (it starts at 1, as etcd's does, and a
//! request that changes nothing does not move it). Every key carries the revision that created
//! it, the revision that last wrote it, and its version (writes since creation). Everything is
//! deterministic: the same entries applied in the same order give the same bytes in a snapshot.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use synod_core::{Entry, LogIndex, Payload, RequestId};
use thiserror::Error;

use crate::request::*;
use crate::session::Sessions;

/// The result of a request, with the store revision after it (etcd's response header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Store revision once the request took effect.
    pub revision: i64,
    /// What the request returned.
    pub response: Response,
}

/// Why a request had no effect. Deterministic: every replica returns the same error.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KvError {
    /// The command bytes did not decode.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// One transaction branch writes a key twice (etcd: "duplicate key given in txn request").
    #[error("duplicate key given in txn request: {0:?}")]
    DuplicateKey(Bytes),
    /// A request of a session older than one already applied; the client gave up on it.
    #[error("request {seq} of the session is older than its latest, {latest}")]
    StaleRequest {
        /// The refused request's sequence number.
        seq: u64,
        /// The newest sequence number applied for the session.
        latest: u64,
    },
}

/// Stored metadata of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) value: Bytes,
    pub(crate) create_revision: i64,
    pub(crate) mod_revision: i64,
    pub(crate) version: i64,
}

/// The replicated key-value state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStore {
    pub(crate) keys: BTreeMap<Bytes, Record>,
    pub(crate) revision: i64,
    pub(crate) applied_index: LogIndex,
    pub(crate) sessions: Sessions,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new()
    }
}

impl KvStore {
    /// An empty store at revision 1, keeping up to [`Sessions::DEFAULT_LIMIT`] client sessions.
    pub fn new() -> Self {
        KvStore::with_session_limit(Sessions::DEFAULT_LIMIT)
    }

    /// An empty store that keeps at most `limit` client sessions.
    pub fn with_session_limit(limit: usize) -> Self {
        KvStore {
            keys: BTreeMap::new(),
            revision: 1,
            applied_index: 0,
            sessions: Sessions::new(limit),
        }
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The index of the last log entry applied.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Applies one committed log entry. Returns the request it answered, if any, with its
    /// result. A retried request (same session and sequence number as the last one applied)
    /// is answered from the session without running again (Raft thesis 6.3).
    pub fn apply(&mut self, entry: &Entry) -> Option<(RequestId, Result<Applied, KvError>)> {
        assert!(
            entry.index > self.applied_index,
            "entry {} applied after {}: the log must be applied in order, once",
            entry.index,
            self.applied_index
        );
        self.applied_index = entry.index;
        let Payload::Command(proposal) = &entry.payload else {
            return None;
        };
        let id = proposal.id;
        if let Some(answer) = self.sessions.replay(id) {
            return Some((id, answer));
        }
        let result = Request::decode(&proposal.command)
            .map_err(|e| KvError::Malformed(e.to_string()))
            .and_then(|request| self.execute(&request));
        self.sessions.record(id, result.clone(), entry.index);
        Some((id, result))
    }

    /// Runs a request now, outside any session. Reads never change the store.
    pub fn execute(&mut self, request: &Request) -> Result<Applied, KvError> {
        check_duplicates(request)?;
        let next_revision = self.revision + 1;
        let mut wrote = false;
        let response = self.run(request, next_revision, &mut wrote);
        if wrote {
            self.revision = next_revision;
        }
        Ok(Applied {
            revision: self.revision,
            response,
        })
    }

    /// Answers a read against the current state.
    pub fn range(&self, request: &RangeRequest) -> Applied {
        Applied {
            revision: self.revision,
            response: Response::Range(self.read(request)),
        }
    }

    /// The current value of one key, with its metadata.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.keys.get(key).map(|r| key_value(key, r))
    }

    fn run(&mut self, request: &Request, revision: i64, wrote: &mut bool) -> Response {
        match request {
            Request::Range(r) => Response::Range(self.read(r)),
            Request::Put(p) => {
                *wrote = true;
                Response::Put(self.put(p, revision))
            }
            Request::DeleteRange(d) => {
                let response = self.delete(d);
                *wrote |= response.deleted > 0;
                Response::DeleteRange(response)
            }
            Request::Txn(t) => {
                let succeeded = t.compare.iter().all(|c| self.compare_holds(c));
                let branch = if succeeded { &t.success } else { &t.failure };
                let responses = branch
                    .iter()
                    .map(|r| self.run(r, revision, wrote))
                    .collect();
                Response::Txn(TxnResponse {
                    succeeded,
                    responses,
                })
            }
        }
    }

    fn read(&self, request: &RangeRequest) -> RangeResponse {
        let mut kvs = Vec::new();
        let mut count = 0u64;
        for (key, record) in self.scan(&request.range) {
            count += 1;
            if request.count_only || (request.limit > 0 && kvs.len() as u64 >= request.limit) {
                continue;
            }
            let mut kv = key_value(key, record);
            if request.keys_only {
                kv.value = Bytes::new();
            }
            kvs.push(kv);
        }
        let more = !request.count_only && (kvs.len() as u64) < count;
        RangeResponse { kvs, count, more }
    }

    fn put(&mut self, request: &PutRequest, revision: i64) -> PutResponse {
        let previous = self.keys.get(&request.key).cloned();
        let (create_revision, version) = match &previous {
            Some(p) => (p.create_revision, p.version + 1),
            None => (revision, 1),
        };
        self.keys.insert(
            request.key.clone(),
            Record {
                value: request.value.clone(),
                create_revision,
                mod_revision: revision,
                version,
            },
        );
        PutResponse {
            prev_kv: previous
                .filter(|_| request.prev_kv)
                .map(|p| key_value(&request.key, &p)),
        }
    }

    fn delete(&mut self, request: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed: Vec<Bytes> = self.scan(&request.range).map(|(k, _)| k.clone()).collect();
        let mut prev_kvs = Vec::new();
        for key in &doomed {
            if let Some(record) = self.keys.remove(key) {
                if request.prev_kv {
                    prev_kvs.push(key_value(key, &record));
                }
            }
        }
        DeleteRangeResponse {
            deleted: doomed.len() as u64,
            prev_kvs,
        }
    }

    /// etcd's rule: every key in the range must satisfy the compare; a missing key compares
    /// as zero revisions and version, and fails any value compare.
    fn compare_holds(&self, compare: &Compare) -> bool {
        let mut matched = self.scan(&compare.range).peekable();
        if matched.peek().is_none() {
            return match &compare.target {
                CompareTarget::Value(_) => false,
                CompareTarget::Version(v)
                | CompareTarget::CreateRevision(v)
                | CompareTarget::ModRevision(v) => compare.op.holds(0.cmp(v)),
            };
        }
        matched.all(|(_, record)| {
            let ordering = match &compare.target {
                CompareTarget::Value(v) => record.value.as_ref().cmp(v.as_ref()),
                CompareTarget::Version(v) => record.version.cmp(v),
                CompareTarget::CreateRevision(v) => record.create_revision.cmp(v),
                CompareTarget::ModRevision(v) => record.mod_revision.cmp(v),
            };
            compare.op.holds(ordering)
        })
    }

    fn scan<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> Box<dyn Iterator<Item = (&'a Bytes, &'a Record)> + 'a> {
        use std::ops::Bound::*;
        if range.range_end.is_empty() {
            return Box::new(self.keys.get_key_value(&range.key).into_iter());
        }
        let end = if range.is_unbounded() {
            Unbounded
        } else if range.range_end <= range.key {
            return Box::new(std::iter::empty());
        } else {
            Excluded(&range.range_end)
        };
        Box::new(self.keys.range::<Bytes, _>((Included(&range.key), end)))
    }
}

fn key_value(key: &[u8], record: &Record) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(key),
        value: record.value.clone(),
        create_revision: record.create_revision,
        mod_revision: record.mod_revision,
        version: record.version,
    }
}

/// etcd refuses a transaction whose branch puts one key twice, or puts a key the same branch
/// deletes. The two branches of a nested transaction exclude each other, so they may both
/// write a key (etcd's `checkIntervals`).
fn check_duplicates(request: &Request) -> Result<(), KvError> {
    if let Request::Txn(txn) = request {
        branch_writes(&txn.success)?;
        branch_writes(&txn.failure)?;
    }
    Ok(())
}

/// The keys a branch may put and the ranges it may delete, or the key written twice.
fn branch_writes(branch: &[Request]) -> Result<(BTreeSet<Bytes>, Vec<KeyRange>), KvError> {
    let mut deletes: Vec<KeyRange> = branch
        .iter()
        .filter_map(|r| match r {
            Request::DeleteRange(d) => Some(d.range.clone()),
            _ => None,
        })
        .collect();
    let mut puts = BTreeSet::new();
    let conflict = |key: &Bytes, puts: &BTreeSet<Bytes>, deletes: &[KeyRange]| {
        puts.contains(key) || deletes.iter().any(|d| d.contains(key))
    };
    for request in branch {
        if let Request::Txn(t) = request {
            let (then_puts, then_deletes) = branch_writes(&t.success)?;
            let (else_puts, else_deletes) = branch_writes(&t.failure)?;
            let nested: BTreeSet<Bytes> = then_puts.union(&else_puts).cloned().collect();
            if let Some(key) = nested.iter().find(|k| conflict(k, &puts, &deletes)) {
                return Err(KvError::DuplicateKey(key.clone()));
            }
            puts.extend(nested);
            deletes.extend(then_deletes.into_iter().chain(else_deletes));
        }
    }
    for request in branch {
        if let Request::Put(p) = request {
            if conflict(&p.key, &puts, &deletes) {
                return Err(KvError::DuplicateKey(p.key.clone()));
            }
            puts.insert(p.key.clone());
        }
    }
    Ok((puts, deletes))
}
