//! The key-value state machine: etcd's data model over an ordered map.
//!
//! One global revision counts write transactions (it starts at 1, as etcd's does, and a
//! request that changes nothing does not move it). Every key carries the revision that created
//! it, the revision that last wrote it, its version (writes since creation) and its lease.
//! Every change is kept in a history until compacted, so reads at a past revision and watches
//! from a past revision work as in etcd. Everything is deterministic: the same entries applied
//! in the same order give the same bytes in a snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::iter::Peekable;

use bytes::Bytes;
use synod_core::{Entry, LogIndex, Payload, RequestId};
use thiserror::Error;

use crate::history::{Event, EventKind, History};
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

/// Why a request had no effect. Deterministic: every replica returns the same error. The
/// messages are etcd's, so the server can pass them on unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KvError {
    /// The command bytes did not decode.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// One transaction branch writes a key twice (etcd: "duplicate key given in txn request").
    #[error("duplicate key given in txn request")]
    DuplicateKey(Bytes),
    /// A request of a session older than one already applied; the client gave up on it.
    #[error("request {seq} of the session is older than its latest, {latest}")]
    StaleRequest {
        /// The refused request's sequence number.
        seq: u64,
        /// The newest sequence number applied for the session.
        latest: u64,
    },
    /// The revision asked for was compacted away.
    #[error("mvcc: required revision has been compacted")]
    Compacted {
        /// The compaction revision: the oldest still readable.
        compacted: i64,
    },
    /// A CORRUPT alarm is raised: members were found to hold different data, and requests
    /// are refused until an operator has looked and cleared it.
    #[error("corrupt cluster")]
    Corrupt,
    /// A NOSPACE alarm is raised: writes that add data are refused until it is cleared.
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// The revision asked for has not happened yet.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// No lease has this id.
    #[error("requested lease not found")]
    LeaseNotFound(i64),
    /// A lease with this id exists already.
    #[error("lease already exists")]
    LeaseExists(i64),
    /// A put that keeps the key's value or lease names a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// The request contradicts itself or is not allowed where it is.
    #[error("{0}")]
    Invalid(String),
    /// Refused by auth: a change to users or roles that cannot be made, or a request its
    /// user may not make.
    #[error("{0}")]
    Auth(crate::auth::AuthError),
}

/// Stored metadata of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) value: Bytes,
    pub(crate) create_revision: i64,
    pub(crate) mod_revision: i64,
    pub(crate) version: i64,
    pub(crate) lease: i64,
}

/// A lease as the state machine knows it: when it expires is the leader's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Time to live granted, in seconds.
    pub ttl: i64,
    /// The log index of the grant that made it: which lease of its id this is, since a
    /// client may revoke a lease and grant its id again (0 for a lease restored from a
    /// snapshot written before this was kept).
    pub granted_at: LogIndex,
    /// Keys attached to it (a persistent set, as the store's maps: a lease holding a million
    /// keys is not copied when a snapshot's copy of the store shares it).
    pub keys: imbl::OrdSet<Bytes>,
}

/// Every lease, by id: a persistent map, so copying it for a snapshot is free.
pub type Leases = imbl::OrdMap<i64, Lease>;

/// One log entry's command applied: the request it answered, its result, and whether it
/// ran (a retry answered from its client's session, or refused as stale, changed nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryOutcome {
    /// The request.
    pub id: RequestId,
    /// Its result.
    pub result: Result<Applied, KvError>,
    /// Whether it ran here.
    pub ran: bool,
}

/// The replicated key-value state machine.
///
/// The keys and the leases are persistent B-trees whose nodes are shared between copies and
/// copied only when written, so [`Clone`] costs the same for ten keys as for ten million:
/// the replica snapshots a copy taken between two applies and encodes it on another thread,
/// while applying goes on (`Output::SaveSnapshot`). A write after the copy duplicates the
/// nodes on its path once; the copy keeps the old ones until it is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStore {
    pub(crate) keys: imbl::OrdMap<Bytes, Record>,
    pub(crate) revision: i64,
    pub(crate) applied_index: LogIndex,
    pub(crate) sessions: Sessions,
    pub(crate) history: History,
    pub(crate) leases: Leases,
    /// The era of the newest leader whose lease clocks took over (`LeaseEpoch`).
    pub(crate) lease_epoch: u64,
    /// Revisions of history kept: older ones are compacted as writes go on (0 keeps all).
    pub(crate) history_revisions: i64,
    /// Alarms raised, by member (etcd's `Alarm`).
    pub(crate) alarms: BTreeSet<(u64, AlarmKind)>,
    /// Bytes of keys and values of the current keys (see [`KvStore::size_bytes`]).
    pub(crate) key_bytes: u64,
    /// Users, roles, and whether auth is on.
    pub(crate) auth: crate::auth::AuthState,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new()
    }
}

/// Which branch every transaction of a request takes, decided before anything is written, so
/// that every compare of a request (nested ones too) sees the store as it was (etcd's rule).
enum Plan {
    Op,
    Txn { succeeded: bool, steps: Vec<Plan> },
}

impl KvStore {
    /// Revisions of history kept by default.
    pub const DEFAULT_HISTORY_REVISIONS: i64 = 10_000;

    /// An empty store at revision 1, keeping up to [`Sessions::DEFAULT_LIMIT`] client sessions
    /// and [`KvStore::DEFAULT_HISTORY_REVISIONS`] revisions of history.
    pub fn new() -> Self {
        KvStore::with_limits(Sessions::DEFAULT_LIMIT, Self::DEFAULT_HISTORY_REVISIONS)
    }

    /// An empty store that keeps at most `limit` client sessions.
    pub fn with_session_limit(limit: usize) -> Self {
        KvStore::with_limits(limit, Self::DEFAULT_HISTORY_REVISIONS)
    }

    /// An empty store that keeps at most `sessions` client sessions and the history of the
    /// last `history_revisions` revisions (all of it with 0): every write compacts what falls
    /// out of that window, the way etcd's revision-based auto-compaction does. Every replica
    /// must use the same limits; a snapshot carries them to the replicas restored from it.
    pub fn with_limits(sessions: usize, history_revisions: i64) -> Self {
        KvStore {
            keys: imbl::OrdMap::new(),
            revision: 1,
            applied_index: 0,
            sessions: Sessions::new(sessions),
            history: History::default(),
            leases: Leases::new(),
            lease_epoch: 0,
            history_revisions: history_revisions.max(0),
            alarms: BTreeSet::new(),
            key_bytes: 0,
            auth: Default::default(),
        }
    }

    /// What the store holds, in bytes: every current key once and every change kept in the
    /// history once, each by its key and value and a fixed share for its bookkeeping (what
    /// etcd's database size counts, give or take the current keys, which etcd keeps only as
    /// their latest change). The space quota is checked against it.
    pub fn size_bytes(&self) -> u64 {
        self.key_bytes + self.history.bytes
    }

    /// Makes a store restored from another cluster's backup fit a new cluster: its lease epoch
    /// (the era of the old cluster's last leader, meaningless to the new one's eras) starts
    /// over, and its alarms (about the old cluster's members) are dropped. Leases stay, to be
    /// kept alive or to run out on the new cluster's clocks.
    pub fn start_new_cluster(&mut self) {
        self.lease_epoch = 0;
        self.alarms.clear();
    }

    /// Keeps the history of the last `revisions` revisions from now on (0: all of it), as
    /// [`KvStore::with_limits`] does for a new store: a restored store takes its member's
    /// setting, so that every member compacts alike whether it booted from a snapshot or not.
    pub fn set_history_revisions(&mut self, revisions: i64) {
        self.history_revisions = revisions.max(0);
    }

    /// Whether any key of `range` now was created before `revision`, found without copying
    /// any (what a lock's waiter asks after every change).
    pub fn any_created_before(&self, range: &KeyRange, revision: i64) -> bool {
        self.scan(range).any(|(_, r)| r.create_revision < revision)
    }

    /// The window of history kept (0: until compacted); see [`KvStore::set_history_revisions`].
    pub fn history_revisions(&self) -> i64 {
        self.history_revisions
    }

    /// The alarms raised, by member.
    pub fn alarms(&self) -> impl Iterator<Item = (u64, AlarmKind)> + '_ {
        self.alarms.iter().copied()
    }

    /// Whether a CORRUPT alarm is raised (requests are refused, as etcd's corrupt applier).
    pub fn corrupt(&self) -> bool {
        self.alarms
            .iter()
            .any(|&(_, kind)| kind == AlarmKind::Corrupt)
    }

    /// Whether writes that add data are refused (a NOSPACE alarm is raised).
    pub fn out_of_space(&self) -> bool {
        self.alarms
            .iter()
            .any(|&(_, kind)| kind == AlarmKind::NoSpace)
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Reads and watches before this revision fail; 0 before the first compaction.
    pub fn compacted_revision(&self) -> i64 {
        self.history.compacted
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

    /// Changes in the history (what compaction frees).
    pub fn history_len(&self) -> usize {
        self.history.events.len()
    }

    /// Applies one committed log entry. Returns the request it answered, if any, with its
    /// result. A retried request (same session and sequence number as the last one applied)
    /// is answered from the session without running again (Raft thesis 6.3).
    pub fn apply(&mut self, entry: &Entry) -> Option<(RequestId, Result<Applied, KvError>)> {
        self.apply_entry(entry).map(|o| (o.id, o.result))
    }

    /// [`KvStore::apply`], saying too whether the request ran.
    pub fn apply_entry(&mut self, entry: &Entry) -> Option<EntryOutcome> {
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
        if let Some(result) = self.sessions.replay(id) {
            return Some(EntryOutcome {
                id,
                result,
                ran: false,
            });
        }
        let result = Request::decode_command(&proposal.command)
            .map_err(|e| KvError::Malformed(e.to_string()))
            .and_then(|request| self.execute(&request));
        self.sessions.record(id, result.clone(), entry.index);
        Some(EntryOutcome {
            id,
            result,
            ran: true,
        })
    }

    /// Runs a request now, outside any session. Reads never change the store. A request
    /// that fails changes nothing.
    pub fn execute(&mut self, request: &Request) -> Result<Applied, KvError> {
        match request {
            Request::As {
                user,
                since,
                request,
            } => {
                if self.auth.enabled {
                    use crate::auth::AuthError;
                    let Some(user) = user else {
                        return Err(KvError::Auth(AuthError::UserEmpty));
                    };
                    let current = self.auth.users.get(user).map(|u| u.since);
                    if since.is_some() && *since != current {
                        return Err(KvError::Auth(AuthError::InvalidAuthToken));
                    }
                    self.check_user(user, request).map_err(KvError::Auth)?;
                }
                return self.execute(request);
            }
            Request::Auth(change) => {
                if self.corrupt() {
                    return Err(KvError::Corrupt);
                }
                self.auth.apply(change).map_err(KvError::Auth)?;
                return Ok(Applied {
                    revision: self.revision,
                    response: Response::Auth,
                });
            }
            _ => {}
        }
        check_duplicates(request)?;
        let plan = self.plan(request, false)?;
        let next_revision = self.revision + 1;
        let mut wrote = false;
        let response = self.run(request, &plan, next_revision, &mut wrote);
        if wrote {
            self.revision = next_revision;
            // The window slides in steps of a 64th of its length, not one revision per
            // write: the same history kept, give or take that slack, for a fraction of the
            // work. Deterministic, so every replica compacts at the same revisions.
            let window_start = self.revision - self.history_revisions;
            let step = (self.history_revisions / 64).max(1);
            if self.history_revisions > 0 && window_start >= self.history.compacted + step {
                self.history.compact(window_start);
            }
        }
        Ok(Applied {
            revision: self.revision,
            response,
        })
    }

    /// Users, roles, and whether auth is on.
    pub fn auth(&self) -> &crate::auth::AuthState {
        &self.auth
    }

    /// Whether `user` may run `request` under the auth rules now in force: its permissions,
    /// and for a lease revocation, write access to every key attached to the lease (etcd's
    /// rule).
    pub fn check_user(&self, user: &str, request: &Request) -> Result<(), crate::auth::AuthError> {
        self.auth.check(user, request)?;
        if let Request::LeaseRevoke(revoke) = request {
            let keys = self.leases.get(&revoke.id).map(|l| &l.keys);
            for key in keys.into_iter().flatten() {
                if !self
                    .auth
                    .allows(user, crate::auth::Access::Write, &KeyRange::key(key))
                {
                    return Err(crate::auth::AuthError::PermissionDenied);
                }
            }
        }
        Ok(())
    }

    /// Answers a read against the current state (or the revision it names).
    pub fn range(&self, request: &RangeRequest) -> Result<Applied, KvError> {
        self.check_read_revision(request.revision)?;
        Ok(Applied {
            revision: self.revision,
            response: Response::Range(self.read(request)),
        })
    }

    /// Every key and its current value, in key order: what replicas that apply changes in
    /// orders of their own (gossip) compare, since their revisions differ.
    pub fn values(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.keys.iter().map(|(key, record)| (key, &record.value))
    }

    /// Stops deduplicating retried writes. A replica that applies changes in an order of its
    /// own (gossip) must apply every change its engine took: a session that refused one as
    /// stale would leave the store behind the engine.
    pub fn disable_sessions(&mut self) {
        self.sessions.disable();
    }

    /// A copy to read from elsewhere (a range on another thread): the keys, leases and
    /// history, whose persistent trees make the copy cost the same at any size, without the
    /// client sessions, which reads never look at and which would be copied one by one.
    pub fn read_copy(&self) -> KvStore {
        KvStore {
            keys: self.keys.clone(),
            revision: self.revision,
            applied_index: self.applied_index,
            sessions: Sessions::new(self.sessions.limit),
            history: self.history.clone(),
            leases: self.leases.clone(),
            lease_epoch: self.lease_epoch,
            history_revisions: self.history_revisions,
            alarms: self.alarms.clone(),
            key_bytes: self.key_bytes,
            auth: self.auth.clone(),
        }
    }

    /// The current value of one key, with its metadata.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.keys.get_key_value(key).map(|(k, r)| key_value(k, r))
    }

    /// Every change at `revision` or later, oldest first; an error if some of them were
    /// compacted away.
    pub fn events_from(
        &self,
        revision: i64,
    ) -> Result<impl DoubleEndedIterator<Item = &Event>, KvError> {
        if revision < self.history.compacted {
            return Err(KvError::Compacted {
                compacted: self.history.compacted,
            });
        }
        Ok(self.history.from(revision))
    }

    /// etcd's `HashKV`: a CRC-32C of every key as it was at `revision` (0 or less: now), with
    /// its value, revisions, version and lease, in key order.
    /// Members that applied the same history give the same hash at the same revision, so a
    /// difference means one of them holds different data. (etcd hashes the history kept as
    /// well; Synod hashes the state, which members agree on whatever history they keep.)
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash, KvError> {
        let revision = if revision <= 0 {
            self.revision
        } else {
            revision
        };
        self.check_read_revision(revision)?;
        let compacted = self.history.compacted;
        // The state alone: members agree on it whatever history they have compacted.
        let mut crc = 0;
        for viewed in self.view_at(&KeyRange::prefix(""), revision, false) {
            let kv = viewed.key_value();
            for number in [
                kv.key.len() as i64,
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease,
                kv.value.len() as i64,
            ] {
                crc = crc32c::crc32c_append(crc, &number.to_be_bytes());
            }
            crc = crc32c::crc32c_append(crc, &kv.key);
            crc = crc32c::crc32c_append(crc, &kv.value);
        }
        Ok(KvHash {
            hash: crc,
            revision,
            compacted,
        })
    }

    /// Every lease, by id.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// The result a tracked client's request got, if it is that client's newest applied
    /// request: how a member that received the request's entry inside a snapshot, rather
    /// than applying it, can still answer it.
    pub fn remembered(&self, id: RequestId) -> Option<Result<Applied, KvError>> {
        match self.sessions.replay(id)? {
            Err(KvError::StaleRequest { .. }) => None,
            result => Some(result),
        }
    }

    /// The era of the newest leader whose lease clocks took over: only its expiries count.
    pub fn lease_epoch(&self) -> u64 {
        self.lease_epoch
    }

    fn check_read_revision(&self, revision: i64) -> Result<(), KvError> {
        if revision > self.revision {
            return Err(KvError::FutureRevision);
        }
        if revision > 0 && revision < self.history.compacted {
            return Err(KvError::Compacted {
                compacted: self.history.compacted,
            });
        }
        Ok(())
    }

    /// Validates a request against the current state and decides its transactions' branches.
    fn plan(&self, request: &Request, in_txn: bool) -> Result<Plan, KvError> {
        // As etcd's corrupt applier: every request is refused, lease expiries too (the data
        // stays as it is until an operator has looked); alarms (to clear it) and the lease
        // clocks' hand-over go on.
        if self.corrupt() && !matches!(request, Request::Alarm(_) | Request::LeaseEpoch(_)) {
            return Err(KvError::Corrupt);
        }
        let only_alone = |what: &str| {
            if in_txn {
                Err(KvError::Invalid(format!(
                    "{what} is not allowed in a transaction"
                )))
            } else {
                Ok(Plan::Op)
            }
        };
        match request {
            Request::Range(r) => {
                self.check_read_revision(r.revision)?;
                Ok(Plan::Op)
            }
            Request::Put(p) => {
                if self.out_of_space() {
                    return Err(KvError::NoSpace);
                }
                if p.ignore_value && !p.value.is_empty() {
                    return Err(KvError::Invalid("value is provided".into()));
                }
                if p.ignore_lease && p.lease != 0 {
                    return Err(KvError::Invalid("lease is provided".into()));
                }
                if (p.ignore_value || p.ignore_lease) && !self.keys.contains_key(&p.key) {
                    return Err(KvError::KeyNotFound);
                }
                if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                    return Err(KvError::LeaseNotFound(p.lease));
                }
                Ok(Plan::Op)
            }
            Request::DeleteRange(_) => Ok(Plan::Op),
            Request::Txn(t) => {
                // As etcd: a transaction that could write anything is refused whole, whichever
                // branch it would take.
                if !in_txn && self.out_of_space() && writes_data(request) {
                    return Err(KvError::NoSpace);
                }
                let succeeded = t.compare.iter().all(|c| self.compare_holds(c));
                let branch = if succeeded { &t.success } else { &t.failure };
                let steps = branch
                    .iter()
                    .map(|r| self.plan(r, true))
                    .collect::<Result<_, _>>()?;
                Ok(Plan::Txn { succeeded, steps })
            }
            Request::Compact(c) => {
                only_alone("compaction")?;
                // etcd counts a store never compacted as compacted through -1, so it takes a
                // compaction at 0 then (`etcdctl compaction 0` on a new cluster).
                let first_at_zero = c.revision == 0 && self.history.compacted == 0;
                if c.revision <= self.history.compacted && !first_at_zero {
                    return Err(KvError::Compacted {
                        compacted: self.history.compacted,
                    });
                }
                if c.revision > self.revision {
                    return Err(KvError::FutureRevision);
                }
                Ok(Plan::Op)
            }
            Request::LeaseGrant(g) | Request::LeaseGrantUnnumbered(g) => {
                only_alone("granting a lease")?;
                if self.out_of_space() {
                    return Err(KvError::NoSpace);
                }
                if g.id <= 0 {
                    return Err(KvError::Invalid(format!(
                        "lease id {} is not positive",
                        g.id
                    )));
                }
                if self.leases.contains_key(&g.id) {
                    return Err(KvError::LeaseExists(g.id));
                }
                Ok(Plan::Op)
            }
            Request::LeaseRevoke(r) => {
                only_alone("revoking a lease")?;
                if !self.leases.contains_key(&r.id) {
                    return Err(KvError::LeaseNotFound(r.id));
                }
                Ok(Plan::Op)
            }
            Request::LeaseEpoch(_) => {
                only_alone("a lease epoch")?;
                Ok(Plan::Op)
            }
            Request::Alarm(_) => {
                only_alone("an alarm")?;
                Ok(Plan::Op)
            }
            Request::LeaseExpire(e) => {
                only_alone("expiring a lease")?;
                if e.era != self.lease_epoch {
                    return Err(KvError::Invalid(format!(
                        "an expiry decided in era {} after era {} took over the lease clocks",
                        e.era, self.lease_epoch
                    )));
                }
                // The lease the expiry names: not one granted under its id since (the expiry
                // was decided on a store that had not applied that revoke and grant yet).
                let named = |lease: &Lease| e.granted_at.is_none_or(|at| at == lease.granted_at);
                match self.leases.get(&e.id) {
                    Some(lease) if named(lease) => Ok(Plan::Op),
                    _ => Err(KvError::LeaseNotFound(e.id)),
                }
            }
            Request::Auth(_) => {
                only_alone("changing users or roles")?;
                Ok(Plan::Op)
            }
            Request::As { .. } => Err(KvError::Invalid(
                "a user's request inside a transaction".into(),
            )),
        }
    }

    fn run(&mut self, request: &Request, plan: &Plan, revision: i64, wrote: &mut bool) -> Response {
        match (request, plan) {
            (Request::Txn(t), Plan::Txn { succeeded, steps }) => {
                let branch = if *succeeded { &t.success } else { &t.failure };
                let responses = branch
                    .iter()
                    .zip(steps)
                    .map(|(r, step)| self.run(r, step, revision, wrote))
                    .collect();
                Response::Txn(TxnResponse {
                    succeeded: *succeeded,
                    responses,
                })
            }
            (Request::Range(r), _) => Response::Range(self.read(r)),
            (Request::Put(p), _) => {
                *wrote = true;
                Response::Put(self.put(p, revision))
            }
            (Request::DeleteRange(d), _) => {
                let response = self.delete(d, revision);
                *wrote |= response.deleted > 0;
                Response::DeleteRange(response)
            }
            (Request::Compact(c), _) => {
                self.history.compact(c.revision);
                Response::Compact
            }
            (Request::LeaseGrant(g) | Request::LeaseGrantUnnumbered(g), _) => {
                let numbered = matches!(request, Request::LeaseGrant(_));
                let lease = Lease {
                    ttl: g.ttl,
                    granted_at: if numbered { self.applied_index } else { 0 },
                    keys: imbl::OrdSet::new(),
                };
                self.leases.insert(g.id, lease);
                Response::LeaseGrant(*g)
            }
            (Request::LeaseEpoch(e), _) => {
                self.lease_epoch = self.lease_epoch.max(e.era);
                Response::LeaseEpoch
            }
            (Request::Alarm(a), _) => {
                if a.activate {
                    self.alarms.insert((a.member, a.alarm));
                } else {
                    self.alarms.remove(&(a.member, a.alarm));
                }
                Response::Alarm(self.alarms().collect())
            }
            (Request::LeaseRevoke(LeaseRevokeRequest { id }), _)
            | (Request::LeaseExpire(LeaseExpireRequest { id, .. }), _) => {
                let keys = self.leases.remove(id).map(|l| l.keys).unwrap_or_default();
                for key in keys {
                    *wrote = true;
                    self.remove_key(&key, revision);
                }
                Response::LeaseRevoke
            }
            (Request::Txn(_), Plan::Op) => unreachable!("a transaction is always planned"),
            (Request::Auth(_) | Request::As { .. }, _) => {
                unreachable!("run by execute, refused in a transaction by plan")
            }
        }
    }

    /// Answers a range. In key order without revision filters (what paging clients such as
    /// Kubernetes ask for) only the page is copied: the keys after it are counted, not
    /// collected, so a page costs its `limit` plus a walk of the keys for `count` (which
    /// etcd's index walks too). Other orders and filters look at every key of the range.
    fn read(&self, request: &RangeRequest) -> RangeResponse {
        let filtered = request.min_mod_revision != 0
            || request.max_mod_revision != 0
            || request.min_create_revision != 0
            || request.max_create_revision != 0;
        let descending = match (request.sort_order, request.sort_target) {
            (SortOrder::None | SortOrder::Ascend, SortTarget::Key) => false,
            (SortOrder::Descend, SortTarget::Key) => true,
            _ => return self.read_whole(request),
        };
        if filtered {
            return self.read_whole(request);
        }
        let mut keys = self.view_at(&request.range, request.revision, descending);
        let page = match (request.count_only, request.limit) {
            (true, _) => 0,
            (false, 0) => usize::MAX,
            (false, limit) => usize::try_from(limit).unwrap_or(usize::MAX),
        };
        let mut kvs = Vec::new();
        for viewed in keys.by_ref().take(page) {
            let mut kv = viewed.key_value();
            if request.keys_only {
                kv.value = Bytes::new();
            }
            kvs.push(kv);
        }
        let count = (kvs.len() + keys.count()) as u64;
        let more = !request.count_only && request.limit > 0 && count > request.limit;
        RangeResponse { kvs, count, more }
    }

    /// [`KvStore::read`] the simple way: every key of the range collected, filtered, sorted,
    /// then cut to the limit. Serves the orders and filters that need the whole range.
    fn read_whole(&self, request: &RangeRequest) -> RangeResponse {
        let view: Vec<KeyValue> = self
            .view_at(&request.range, request.revision, false)
            .map(|viewed| viewed.key_value())
            .collect();
        let count = view.len() as u64;
        // As etcd: a bound of 0 is none, any other (a negative maximum too) applies.
        let in_bounds = |bound: i64, value: i64, min: bool| {
            bound == 0 || if min { value >= bound } else { value <= bound }
        };
        let mut kvs: Vec<KeyValue> = view
            .into_iter()
            .filter(|kv| {
                in_bounds(request.min_mod_revision, kv.mod_revision, true)
                    && in_bounds(request.max_mod_revision, kv.mod_revision, false)
                    && in_bounds(request.min_create_revision, kv.create_revision, true)
                    && in_bounds(request.max_create_revision, kv.create_revision, false)
            })
            .collect();
        sort(&mut kvs, request.sort_order, request.sort_target);
        let more = request.limit > 0 && kvs.len() as u64 > request.limit;
        if more {
            kvs.truncate(request.limit as usize);
        }
        if request.count_only {
            return RangeResponse {
                kvs: Vec::new(),
                count,
                more: false,
            };
        }
        if request.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value = Bytes::new());
        }
        RangeResponse { kvs, count, more }
    }

    /// The keys of `range` as of `revision` (the current state when it is 0 or later than
    /// every change), in key order (or its reverse), without copying any: the current keys,
    /// with the keys changed since `revision` taken as they were before their first change
    /// after it.
    fn view_at<'a>(&'a self, range: &'a KeyRange, revision: i64, descending: bool) -> View<'a> {
        let mut past = BTreeMap::new();
        if revision > 0 && revision < self.history.newest() {
            // Newest first, so the oldest change after `revision` is the one that stays.
            for event in self.history.from(revision + 1).rev() {
                if range.contains(&event.kv.key) {
                    past.insert(&event.kv.key, event.prev_kv.as_ref());
                }
            }
        }
        let current = self.scan(range);
        let past = past.into_iter();
        View {
            current: if descending {
                Box::new(current.rev()) as Box<dyn Iterator<Item = _>>
            } else {
                Box::new(current)
            }
            .peekable(),
            past: if descending {
                Box::new(past.rev()) as Box<dyn Iterator<Item = _>>
            } else {
                Box::new(past)
            }
            .peekable(),
            descending,
        }
    }

    fn put(&mut self, request: &PutRequest, revision: i64) -> PutResponse {
        // One walk down the tree for a key that exists (the common case under load): its
        // record is replaced where it lies. Only a new key walks it a second time, to insert.
        let next = |previous: Option<&Record>| Record {
            value: match previous {
                Some(p) if request.ignore_value => p.value.clone(),
                _ => request.value.clone(),
            },
            create_revision: previous.map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.map_or(1, |p| p.version + 1),
            lease: match previous {
                Some(p) if request.ignore_lease => p.lease,
                _ => request.lease,
            },
        };
        let (previous, record) = match self.keys.get_mut(&request.key) {
            Some(slot) => {
                let record = next(Some(slot));
                (Some(std::mem::replace(slot, record.clone())), record)
            }
            None => {
                let record = next(None);
                self.keys.insert(own_key(&request.key), record.clone());
                (None, record)
            }
        };
        if let Some(p) = previous.as_ref().filter(|p| p.lease != record.lease) {
            self.detach(p.lease, &request.key);
        }
        if let Some(l) = self.leases.get_mut(&record.lease) {
            if !l.keys.contains(&request.key) {
                l.keys.insert(own_key(&request.key));
            }
        }
        self.key_bytes += key_cost(&request.key, &record);
        let prev_kv = previous.map(|p| {
            self.key_bytes -= key_cost(&request.key, &p);
            key_value(&request.key, &p)
        });
        self.history.push(Event {
            kind: EventKind::Put,
            kv: key_value(&request.key, &record),
            prev_kv: prev_kv.clone(),
        });
        PutResponse {
            prev_kv: prev_kv.filter(|_| request.prev_kv),
        }
    }

    fn delete(&mut self, request: &DeleteRangeRequest, revision: i64) -> DeleteRangeResponse {
        let doomed: Vec<Bytes> = self.scan(&request.range).map(|(k, _)| k.clone()).collect();
        let mut prev_kvs = Vec::new();
        for key in &doomed {
            if let Some(prev) = self.remove_key(key, revision) {
                if request.prev_kv {
                    prev_kvs.push(prev);
                }
            }
        }
        DeleteRangeResponse {
            deleted: doomed.len() as u64,
            prev_kvs,
        }
    }

    /// Deletes one key at `revision`, recording the change; returns what it held.
    fn remove_key(&mut self, key: &Bytes, revision: i64) -> Option<KeyValue> {
        let record = self.keys.remove(key)?;
        self.key_bytes -= key_cost(key, &record);
        self.detach(record.lease, key);
        let prev = key_value(key, &record);
        self.history.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.clone(),
                mod_revision: revision,
                ..KeyValue::default()
            },
            prev_kv: Some(prev.clone()),
        });
        Some(prev)
    }

    fn detach(&mut self, lease: i64, key: &Bytes) {
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.remove(key);
        }
    }

    /// etcd's rule: every key in the range must satisfy the compare; a missing key compares
    /// as zero revisions, version and lease, and fails any value compare.
    fn compare_holds(&self, compare: &Compare) -> bool {
        let mut matched = self.scan(&compare.range).peekable();
        if matched.peek().is_none() {
            return match &compare.target {
                CompareTarget::Value(_) => false,
                CompareTarget::Version(v)
                | CompareTarget::CreateRevision(v)
                | CompareTarget::ModRevision(v)
                | CompareTarget::Lease(v) => compare.op.holds(0.cmp(v)),
            };
        }
        matched.all(|(_, record)| {
            let ordering = match &compare.target {
                CompareTarget::Value(v) => record.value.as_ref().cmp(v.as_ref()),
                CompareTarget::Version(v) => record.version.cmp(v),
                CompareTarget::CreateRevision(v) => record.create_revision.cmp(v),
                CompareTarget::ModRevision(v) => record.mod_revision.cmp(v),
                CompareTarget::Lease(v) => record.lease.cmp(v),
            };
            compare.op.holds(ordering)
        })
    }

    fn scan<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> Box<dyn DoubleEndedIterator<Item = (&'a Bytes, &'a Record)> + 'a> {
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
        Box::new(self.keys.range::<_, Bytes>((Included(&range.key), end)))
    }
}

/// What [`KvStore::hash_kv`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    /// The CRC-32C of the keys.
    pub hash: u32,
    /// The revision hashed.
    pub revision: i64,
    /// The store's compaction revision.
    pub compacted: i64,
}

/// The keys of a range as of a revision, in key order or its reverse (see
/// [`KvStore::view_at`]): the current keys merged with what the keys changed since then were.
struct View<'a> {
    current: Peekable<Keys<'a, &'a Record>>,
    /// Keys changed since the revision, with what they held at it (`None`: absent).
    past: Peekable<Keys<'a, Option<&'a KeyValue>>>,
    descending: bool,
}

/// Keys in order, each with what the view knows of it.
type Keys<'a, T> = Box<dyn Iterator<Item = (&'a Bytes, T)> + 'a>;

/// One key of a [`View`], borrowed from the store.
enum Viewed<'a> {
    Current(&'a Bytes, &'a Record),
    Past(&'a KeyValue),
}

impl Viewed<'_> {
    fn key_value(&self) -> KeyValue {
        match self {
            Viewed::Current(key, record) => key_value(key, record),
            Viewed::Past(kv) => (*kv).clone(),
        }
    }
}

impl<'a> Iterator for View<'a> {
    type Item = Viewed<'a>;

    fn next(&mut self) -> Option<Viewed<'a>> {
        loop {
            let from_past = match (self.current.peek(), self.past.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((now, _)), Some((then, _))) => {
                    let order = now.cmp(then);
                    match if self.descending {
                        order.reverse()
                    } else {
                        order
                    } {
                        std::cmp::Ordering::Less => false,
                        std::cmp::Ordering::Greater => true,
                        std::cmp::Ordering::Equal => {
                            // Changed since: what it was then replaces what it is now.
                            self.current.next();
                            true
                        }
                    }
                }
            };
            if !from_past {
                let (key, record) = self.current.next()?;
                return Some(Viewed::Current(key, record));
            }
            if let (_, Some(was)) = self.past.next()? {
                return Some(Viewed::Past(was));
            }
            // The key did not exist at the revision.
        }
    }
}

/// Sorts key-values (which arrive in key order) as a range asks, by etcd's rule: no order
/// with a target other than the key means ascending. Ties keep key order.
fn sort(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    if (order, target) == (SortOrder::Ascend, SortTarget::Key) {
        return;
    }
    let field = |kv: &KeyValue| match target {
        SortTarget::Key | SortTarget::Value => 0,
        SortTarget::Version => kv.version,
        SortTarget::Create => kv.create_revision,
        SortTarget::Mod => kv.mod_revision,
    };
    kvs.sort_by(|a, b| {
        let ordering = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Value => a.value.cmp(&b.value),
            _ => field(a).cmp(&field(b)),
        };
        match order {
            SortOrder::Descend => ordering.reverse(),
            _ => ordering,
        }
    });
}

pub(crate) fn key_value(key: &Bytes, record: &Record) -> KeyValue {
    KeyValue {
        key: key.clone(),
        value: record.value.clone(),
        create_revision: record.create_revision,
        mod_revision: record.mod_revision,
        version: record.version,
        lease: record.lease,
    }
}

/// A key as the store keeps it for as long as the key lives: its own copy. The request's key
/// may be a slice of the log entry's command (`Request::decode_command`), and a key kept
/// from it would keep that whole command, the first value put included, after every later
/// put replaced the value.
fn own_key(key: &Bytes) -> Bytes {
    Bytes::copy_from_slice(key)
}

/// What a live key costs the store: its key and value bytes and its bookkeeping.
pub(crate) fn key_cost(key: &Bytes, record: &Record) -> u64 {
    (key.len() + record.value.len()) as u64 + crate::history::ENTRY_OVERHEAD
}

/// Whether a request puts anything, in any branch of any transaction: what a NOSPACE alarm
/// refuses (deletes, reads and compactions free space or take none).
fn writes_data(request: &Request) -> bool {
    match request {
        Request::Put(_) => true,
        Request::Txn(t) => t.success.iter().chain(&t.failure).any(writes_data),
        _ => false,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail loudly on purpose

    use synod_core::rng::Rng;

    use super::*;

    fn key(rng: &mut Rng) -> Bytes {
        Bytes::from(format!("k{:02}", rng.range(0, 40)))
    }

    /// A read copy answers every range as the store does, now and at past revisions, and
    /// carries none of the client sessions.
    #[test]
    fn a_read_copy_reads_as_the_store_without_its_sessions() {
        use synod_core::{ClientId, Entry, Payload, Proposal, RequestId};
        let mut store = KvStore::with_limits(64, 0);
        for i in 1..=200u64 {
            let request = Request::Put(PutRequest {
                key: Bytes::from(format!("k{:03}", i % 50)),
                value: Bytes::from(format!("v{i}")),
                ..Default::default()
            });
            let entry = Entry {
                index: i,
                era: 1,
                payload: Payload::Command(Proposal {
                    id: RequestId {
                        client: ClientId(1 + i % 20),
                        seq: i,
                    },
                    command: request.encode(),
                }),
            };
            let (_, result) = store.apply(&entry).unwrap();
            result.unwrap();
        }
        assert_eq!(store.sessions.len(), 20);
        let copy = store.read_copy();
        assert_eq!(copy.sessions.len(), 0, "no sessions copied");
        for revision in [0, 2, 60, 150, store.revision()] {
            let request = RangeRequest {
                range: KeyRange::prefix("k"),
                revision,
                ..Default::default()
            };
            assert_eq!(copy.range(&request), store.range(&request), "at {revision}");
        }
        assert_eq!(copy.size_bytes(), store.size_bytes());
    }

    /// Pages read lazily are what reading the whole range and cutting it gives, at the
    /// current revision and at past ones, in both key orders, with and without limits; and
    /// both are what the store held at that revision (a copy kept of every state).
    #[test]
    fn a_page_is_what_the_whole_range_cut_to_the_limit_gives() {
        let mut rng = Rng::new(7);
        let mut store = KvStore::with_limits(16, 0);
        let everything = RangeRequest {
            range: KeyRange::prefix("k"),
            ..Default::default()
        };
        let mut states: BTreeMap<i64, Vec<KeyValue>> = BTreeMap::new();
        let mut checked = 0;
        for step in 0..3_000 {
            let write = if rng.chance(0.8) {
                Request::Put(PutRequest {
                    key: key(&mut rng),
                    value: Bytes::from(format!("v{step}")),
                    ..Default::default()
                })
            } else {
                let from = key(&mut rng);
                Request::DeleteRange(DeleteRangeRequest {
                    range: KeyRange {
                        range_end: Bytes::from(format!("k{:02}", rng.range(0, 45))),
                        key: from,
                    },
                    prev_kv: false,
                })
            };
            store.execute(&write).unwrap();
            states.insert(store.revision(), store.read_whole(&everything).kvs);
            if step % 10 != 0 {
                continue;
            }
            for _ in 0..10 {
                let low = rng.range(0, 40);
                let range = match rng.range(0, 3) {
                    0 => KeyRange::key(format!("k{low:02}")),
                    1 => KeyRange {
                        key: Bytes::from(format!("k{low:02}")),
                        range_end: Bytes::from(format!("k{:02}", rng.range(0, 45))),
                    },
                    _ => KeyRange::prefix("k"),
                };
                let request = RangeRequest {
                    range,
                    limit: rng.range(0, 6),
                    revision: if rng.chance(0.5) {
                        0
                    } else {
                        rng.range_inclusive(1, store.revision() as u64) as i64
                    },
                    sort_order: *rng
                        .pick(&[SortOrder::None, SortOrder::Ascend, SortOrder::Descend])
                        .unwrap(),
                    count_only: rng.chance(0.1),
                    keys_only: rng.chance(0.2),
                    ..Default::default()
                };
                let page = store.read(&request);
                assert_eq!(
                    page,
                    store.read_whole(&request),
                    "{request:?} at revision {}",
                    store.revision()
                );
                let at = if request.revision == 0 {
                    store.revision()
                } else {
                    request.revision
                };
                let then: Vec<&KeyValue> = states
                    .range(..=at)
                    .next_back()
                    .map(|(_, state)| {
                        state
                            .iter()
                            .filter(|kv| request.range.contains(&kv.key))
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(page.count, then.len() as u64, "{request:?}");
                if !request.count_only {
                    let mut keys: Vec<&Bytes> = then.iter().map(|kv| &kv.key).collect();
                    if request.sort_order == SortOrder::Descend {
                        keys.reverse();
                    }
                    if request.limit > 0 {
                        keys.truncate(request.limit as usize);
                    }
                    let got: Vec<&Bytes> = page.kvs.iter().map(|kv| &kv.key).collect();
                    assert_eq!(got, keys, "{request:?}");
                    for kv in &page.kvs {
                        let was = then.iter().find(|t| t.key == kv.key).unwrap();
                        assert_eq!(kv.mod_revision, was.mod_revision, "{request:?}");
                        let value = if request.keys_only {
                            &Bytes::new()
                        } else {
                            &was.value
                        };
                        assert_eq!(&kv.value, value, "{request:?}");
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 2_000);
    }

    #[test]
    fn hash_kv_is_the_same_for_the_same_state_at_a_revision() {
        let mut long = KvStore::with_limits(16, 0);
        let mut short = KvStore::with_limits(16, 0);
        for store in [&mut long, &mut short] {
            store.execute(&put("a", "1")).unwrap();
            store.execute(&put("b", "2")).unwrap();
        }
        let then = short.revision();
        let at_then = short.hash_kv(0).unwrap();
        assert_eq!(at_then, long.hash_kv(then).unwrap());
        long.execute(&put("a", "3")).unwrap();
        assert_eq!(
            long.hash_kv(then).unwrap(),
            at_then,
            "the past is hashed as it was"
        );
        assert_ne!(long.hash_kv(0).unwrap().hash, at_then.hash);
        short.execute(&put("a", "4")).unwrap();
        assert_eq!(short.hash_kv(0).unwrap().revision, then + 1);
        assert_ne!(
            short.hash_kv(then + 1).unwrap().hash,
            long.hash_kv(then + 1).unwrap().hash,
            "a different value at the same revision"
        );
        assert_eq!(long.hash_kv(then + 5), Err(KvError::FutureRevision));
    }

    fn put(key: &str, value: &str) -> Request {
        Request::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        })
    }

    #[test]
    fn size_counts_live_keys_and_kept_history_and_compaction_frees_it() {
        let mut store = KvStore::with_limits(16, 0);
        let o = crate::history::ENTRY_OVERHEAD;
        store.execute(&put("ab", "1234")).unwrap();
        assert_eq!(store.size_bytes(), 2 * (6 + o), "the key, and its change");
        store.execute(&put("ab", "12")).unwrap();
        assert_eq!(store.size_bytes(), (4 + o) + (6 + o) + (4 + o));
        let deleted = store
            .execute(&Request::DeleteRange(DeleteRangeRequest {
                range: KeyRange::key("ab"),
                prev_kv: false,
            }))
            .unwrap();
        assert_eq!(
            store.size_bytes(),
            (6 + o) + (4 + o) + (2 + o),
            "a delete keeps only its key"
        );
        store
            .execute(&Request::Compact(CompactRequest {
                revision: deleted.revision,
            }))
            .unwrap();
        assert_eq!(store.size_bytes(), 2 + o);
        let restored = KvStore::restore(&store.snapshot()).unwrap();
        assert_eq!(restored.size_bytes(), store.size_bytes());
    }

    #[test]
    fn nospace_refuses_what_adds_data_and_nothing_else() {
        let mut store = KvStore::with_limits(16, 0);
        store.execute(&put("a", "1")).unwrap();
        let alarm = |activate| {
            Request::Alarm(AlarmRequest {
                activate,
                member: 3,
                alarm: AlarmKind::NoSpace,
            })
        };
        let raised = store.execute(&alarm(true)).unwrap();
        assert_eq!(
            raised.response,
            Response::Alarm(vec![(3, AlarmKind::NoSpace)])
        );
        assert!(store.out_of_space());
        assert_eq!(store.execute(&put("b", "2")), Err(KvError::NoSpace));
        let grant = Request::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 10 });
        assert_eq!(store.execute(&grant), Err(KvError::NoSpace));
        // A transaction that could put is refused whatever branch it would take.
        let txn = Request::Txn(TxnRequest {
            compare: vec![],
            success: vec![Request::Range(RangeRequest::default())],
            failure: vec![put("c", "3")],
        });
        assert_eq!(store.execute(&txn), Err(KvError::NoSpace));
        // Reads, deletes and compactions go on.
        let delete = Request::DeleteRange(DeleteRangeRequest {
            range: KeyRange::key("a"),
            prev_kv: false,
        });
        store.execute(&delete).unwrap();
        // The alarm survives a snapshot, and clearing it lets writes in.
        let mut restored = KvStore::restore(&store.snapshot()).unwrap();
        assert!(restored.out_of_space());
        restored.execute(&alarm(false)).unwrap();
        assert!(!restored.out_of_space());
        restored.execute(&put("b", "2")).unwrap();
    }

    #[test]
    fn corrupt_refuses_every_client_request_until_cleared() {
        let mut store = KvStore::with_limits(16, 0);
        let corrupt = |activate| {
            Request::Alarm(AlarmRequest {
                activate,
                member: 2,
                alarm: AlarmKind::Corrupt,
            })
        };
        store.execute(&corrupt(true)).unwrap();
        assert!(store.corrupt());
        assert_eq!(store.execute(&put("a", "1")), Err(KvError::Corrupt));
        let read = Request::Range(RangeRequest::default());
        assert_eq!(store.execute(&read), Err(KvError::Corrupt));
        let compact = Request::Compact(CompactRequest { revision: 1 });
        assert_eq!(store.execute(&compact), Err(KvError::Corrupt));
        store.execute(&corrupt(false)).unwrap();
        store.execute(&put("a", "1")).unwrap();
    }
}
