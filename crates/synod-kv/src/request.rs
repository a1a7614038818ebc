//! Requests and responses of the key-value service, after etcd's v3 KV and Lease APIs, with
//! their binary encoding (what goes into a log entry's command bytes).

use bytes::Bytes;
use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::LogIndex;

use crate::auth::AuthRequest;

/// Transactions may nest (a branch may hold a transaction); deeper nesting is refused so a
/// hostile command cannot exhaust the stack.
pub const TXN_DEPTH_MAX: usize = 8;

/// One operation on the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read one key or a range.
    Range(RangeRequest),
    /// Write one key.
    Put(PutRequest),
    /// Delete one key or a range.
    DeleteRange(DeleteRangeRequest),
    /// Compare, then run one of two branches, atomically.
    Txn(TxnRequest),
    /// Forget the history before a revision.
    Compact(CompactRequest),
    /// Create a lease; the log index of its entry numbers the lease (`Lease::granted_at`).
    LeaseGrant(LeaseGrantRequest),
    /// Create a lease, as a log written before grants numbered their leases says (request tag
    /// 5): its lease is numbered 0, as one read from a snapshot of that time is, so that a
    /// member that replays this entry and one that restored a snapshot past it agree.
    LeaseGrantUnnumbered(LeaseGrantRequest),
    /// End a lease, deleting the keys attached to it.
    LeaseRevoke(LeaseRevokeRequest),
    /// A leader's lease clocks take over: expiries decided in earlier eras no longer count.
    LeaseEpoch(LeaseEpochRequest),
    /// End a lease whose time ran out on the clock of the leader of `era`: only while that
    /// leader's lease epoch is the current one.
    LeaseExpire(LeaseExpireRequest),
    /// Raise or clear an alarm (etcd's `Alarm` ACTIVATE and DEACTIVATE), which every replica
    /// then holds alike.
    Alarm(AlarmRequest),
    /// A change to users, roles, or whether auth is on.
    Auth(AuthRequest),
    /// `request`, made by a client as `user`: while auth is on, it runs only if the user's
    /// permissions (as they are when it is applied) allow it, and, for a user that showed a
    /// token, only if its password has not changed since the token was issued. A request
    /// taken while auth was off has no user: if auth is on by the time it is applied, it is
    /// refused.
    As {
        /// Who asked (`None`: auth was off where the request was taken).
        user: Option<String>,
        /// The auth revision the user's password was set at, as the token says (`None`: the
        /// user came by client certificate).
        since: Option<u64>,
        /// What.
        request: Box<Request>,
    },
}

/// etcd's kinds of alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmKind {
    /// The store outgrew the space quota: writes that add data are refused until an
    /// operator compacts and disarms it.
    NoSpace,
    /// Members hold different data at the same revision.
    Corrupt,
}

impl AlarmKind {
    /// etcd's number for it (`AlarmType` in its API).
    pub fn code(self) -> i32 {
        match self {
            AlarmKind::NoSpace => 1,
            AlarmKind::Corrupt => 2,
        }
    }

    /// Appends its encoding (etcd's number, as a byte).
    pub(crate) fn encode(self, enc: &mut Encoder) {
        enc.u8(self.code() as u8);
    }

    /// Reads what [`AlarmKind::encode`] wrote.
    pub(crate) fn decode(dec: &mut Decoder<'_>) -> Result<AlarmKind, DecodeError> {
        let offset = dec.offset();
        let code = dec.u8("alarm kind")?;
        AlarmKind::from_code(i32::from(code)).ok_or(DecodeError::UnknownTag {
            what: "alarm kind",
            tag: u64::from(code),
            offset,
        })
    }

    /// The kind with etcd's number `code`, if any.
    pub fn from_code(code: i32) -> Option<AlarmKind> {
        match code {
            1 => Some(AlarmKind::NoSpace),
            2 => Some(AlarmKind::Corrupt),
            _ => None,
        }
    }
}

/// See [`Request::Alarm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmRequest {
    /// Raise (`true`) or clear (`false`).
    pub activate: bool,
    /// The member the alarm is about.
    pub member: u64,
    /// What it is about.
    pub alarm: AlarmKind,
}

/// Which keys a request covers, with etcd's conventions: an empty `range_end` means the
/// single key `key`; `range_end == [0]` means every key `>= key`; otherwise `[key, range_end)`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KeyRange {
    /// First key.
    pub key: Bytes,
    /// End of the range, exclusive, with the conventions above.
    pub range_end: Bytes,
}

impl KeyRange {
    /// Exactly one key.
    pub fn key(key: impl AsRef<[u8]>) -> Self {
        KeyRange {
            key: Bytes::copy_from_slice(key.as_ref()),
            range_end: Bytes::new(),
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl AsRef<[u8]>) -> Self {
        let key = Bytes::copy_from_slice(prefix.as_ref());
        let range_end = prefix_end(&key);
        KeyRange { key, range_end }
    }

    /// Whether `candidate` falls in this range.
    pub fn contains(&self, candidate: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return candidate == self.key.as_ref();
        }
        candidate >= self.key.as_ref() && (self.is_unbounded() || candidate < &self.range_end[..])
    }

    /// Whether the range runs to the end of the key space.
    pub fn is_unbounded(&self) -> bool {
        self.range_end.as_ref() == [0]
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented and the rest dropped; `[0]` (everything)
/// when no such byte exists.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}

/// The order of a range's results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// Key order (ascending), unless the target is not the key: then ascending (etcd's rule).
    #[default]
    None,
    /// Smallest first.
    Ascend,
    /// Largest first.
    Descend,
}

/// What a range's results are sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// Read keys.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RangeRequest {
    /// Keys to read.
    pub range: KeyRange,
    /// Return at most this many keys; 0 means no limit.
    pub limit: u64,
    /// Read the store as of this revision; 0 (or less) means the current one.
    pub revision: i64,
    /// Order of the results.
    pub sort_order: SortOrder,
    /// What the results are sorted by.
    pub sort_target: SortTarget,
    /// Return only the count, no keys.
    pub count_only: bool,
    /// Return keys without values.
    pub keys_only: bool,
    /// Keep only keys last written at or after this revision (0: no bound).
    pub min_mod_revision: i64,
    /// Keep only keys last written at or before this revision (0: no bound).
    pub max_mod_revision: i64,
    /// Keep only keys created at or after this revision (0: no bound).
    pub min_create_revision: i64,
    /// Keep only keys created at or before this revision (0: no bound).
    pub max_create_revision: i64,
}

/// Write a key.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PutRequest {
    /// The key.
    pub key: Bytes,
    /// Its new value.
    pub value: Bytes,
    /// Attach the key to this lease (0: none), so it goes when the lease does.
    pub lease: i64,
    /// Return the key's previous value.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

/// Delete keys.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeleteRangeRequest {
    /// Keys to delete.
    pub range: KeyRange,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// If every compare holds run `success`, else run `failure`; all at one revision.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TxnRequest {
    /// Conditions, all of which must hold.
    pub compare: Vec<Compare>,
    /// Run when they all hold.
    pub success: Vec<Request>,
    /// Run otherwise.
    pub failure: Vec<Request>,
}

/// Forget history: reads and watches before `revision` fail from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CompactRequest {
    /// The oldest revision still readable afterwards.
    pub revision: i64,
}

/// Create lease `id` (chosen by the proposer, never 0) for `ttl` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LeaseGrantRequest {
    /// The lease's id.
    pub id: i64,
    /// Its time to live, in seconds. Expiry is decided by the leader, not the state machine.
    pub ttl: i64,
}

/// End lease `id` and delete every key attached to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LeaseRevokeRequest {
    /// The lease's id.
    pub id: i64,
}

/// The leader of `era` keeps the lease clocks from here on. A new leader writes one before
/// it renews or expires any lease, so that an expiry a predecessor decided, if it commits
/// after this (Paxos may choose a deposed leader's proposal later), has no effect: the new
/// leader may have renewed that lease meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LeaseEpochRequest {
    /// The leader's era (term, ballot).
    pub era: u64,
}

/// Lease `id` expired by the clock of the leader of `era`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LeaseExpireRequest {
    /// The lease's id.
    pub id: i64,
    /// The era whose leader decided it.
    pub era: u64,
    /// Which lease of that id: the log index of the grant that made it (its incarnation).
    /// The keeper decides an expiry on its own store, which may not have applied yet a
    /// client's revoke of the lease and a grant of its id again; the expiry must not delete
    /// that new lease. `None` in an expiry written before incarnations were named: any lease
    /// of the id.
    pub granted_at: Option<LogIndex>,
}

/// A condition on the keys of a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The keys compared; every one must satisfy the condition.
    pub range: KeyRange,
    /// What is compared and against which value.
    pub target: CompareTarget,
    /// How.
    pub op: CompareOp,
}

/// The field a compare looks at, with the value to compare it to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's value. A missing key fails any value compare, as in etcd.
    Value(Bytes),
    /// The number of writes since the key was created (0 when missing).
    Version(i64),
    /// The revision that created the key (0 when missing).
    CreateRevision(i64),
    /// The revision that last wrote the key (0 when missing).
    ModRevision(i64),
    /// The lease the key is attached to (0 when none or missing).
    Lease(i64),
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// Strictly less.
    Less,
    /// Strictly greater.
    Greater,
}

impl CompareOp {
    /// Whether `ordering` (of the stored field against the compare's value) satisfies this op.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CompareOp::Equal => ordering == Equal,
            CompareOp::NotEqual => ordering != Equal,
            CompareOp::Less => ordering == Less,
            CompareOp::Greater => ordering == Greater,
        }
    }
}

/// A stored key with its metadata, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// The value (empty in keys-only reads).
    pub value: Bytes,
    /// Revision of the write that created the key.
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
    /// Writes since creation: 1 after the first put.
    pub version: i64,
    /// The lease the key is attached to, or 0.
    pub lease: i64,
}

/// The result of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Keys read.
    Range(RangeResponse),
    /// A write done.
    Put(PutResponse),
    /// Keys deleted.
    DeleteRange(DeleteRangeResponse),
    /// A transaction run.
    Txn(TxnResponse),
    /// History compacted.
    Compact,
    /// A lease created.
    LeaseGrant(LeaseGrantRequest),
    /// A lease ended, its keys deleted.
    LeaseRevoke,
    /// A lease epoch began.
    LeaseEpoch,
    /// The alarms raised after the change, by member.
    Alarm(Vec<(u64, AlarmKind)>),
    /// Users, roles or auth changed.
    Auth,
}

/// Keys read.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RangeResponse {
    /// The keys, in the order asked for, at most `limit`.
    pub kvs: Vec<KeyValue>,
    /// How many keys the range holds, ignoring the limit.
    pub count: u64,
    /// Whether the limit cut keys off.
    pub more: bool,
}

/// A write done.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PutResponse {
    /// The previous value, when asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// Keys deleted.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeleteRangeResponse {
    /// How many.
    pub deleted: u64,
    /// What they held, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// A transaction run.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TxnResponse {
    /// Whether the compares held (and so `success` ran).
    pub succeeded: bool,
    /// One response per request of the branch that ran.
    pub responses: Vec<Response>,
}

// ---------------------------------------------------------------------------------------------
// Encoding. Tags are part of the log format: append new ones, never renumber. (The layouts of
// Range and Put grew before any release; from the first release on, they are fixed too.)

const TAG_RANGE: u64 = 0;
const TAG_PUT: u64 = 1;
const TAG_DELETE_RANGE: u64 = 2;
const TAG_TXN: u64 = 3;
const TAG_COMPACT: u64 = 4;
const TAG_LEASE_GRANT: u64 = 5;
const TAG_LEASE_REVOKE: u64 = 6;
const TAG_LEASE_EPOCH: u64 = 7;
const TAG_LEASE_EXPIRE: u64 = 8;
const TAG_ALARM: u64 = 9;
const TAG_AUTH: u64 = 10;
const TAG_AS: u64 = 11;
/// An expiry naming the grant it expires (`TAG_LEASE_EXPIRE` is one from before, naming none).
const TAG_LEASE_EXPIRE_GRANT: u64 = 12;
/// A grant whose entry's index numbers its lease (`TAG_LEASE_GRANT` is one from before).
const TAG_LEASE_GRANT_NUMBERED: u64 = 13;
const REQUEST_TAGS: u64 = 14;

impl Request {
    /// The command bytes for a log entry.
    pub fn encode(&self) -> Bytes {
        // Sized up front: a log entry keeps its buffer, spare room included, until the log is
        // compacted (and, through the values that share it, for as long as they are kept).
        let mut enc = Encoder::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut enc);
        Bytes::from(enc.finish())
    }

    /// About the encoded length of a put (its key and value, and room for the rest); other
    /// requests start small and grow as the encoder grows them.
    fn encoded_len_hint(&self) -> usize {
        match self {
            Request::Put(p) => 32 + p.key.len() + p.value.len(),
            Request::As { user, request, .. } => {
                32 + user.as_ref().map_or(0, String::len) + request.encoded_len_hint()
            }
            _ => 64,
        }
    }

    /// Decodes command bytes; refuses trailing bytes and nesting deeper than [`TXN_DEPTH_MAX`].
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut dec = Decoder::new(bytes);
        let request = Request::decode_from(&mut dec, 0)?;
        dec.finish()?;
        Ok(request)
    }

    /// As [`Request::decode`], for a log entry's command about to be applied. A put's key and
    /// value share the command's buffer rather than copy it, so the value is held once by
    /// the log and the store together, and a large one is not copied on every member. Any
    /// other request is copied: a value of a transaction would keep the whole transaction's
    /// command alive as long as the key (compare values and the branch not taken included),
    /// memory the space quota does not see.
    pub fn decode_command(command: &Bytes) -> Result<Request, DecodeError> {
        let mut dec = Decoder::shared(command);
        let request = Request::decode_from(&mut dec, 0)?;
        dec.finish()?;
        Ok(request)
    }

    /// The request itself, without the user a client's request carries ([`Request::As`]).
    pub fn inner(&self) -> &Request {
        match self {
            Request::As { request, .. } => request,
            other => other,
        }
    }

    /// Whether the request only reads (and so need not enter the log on Raft).
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Range(_) => true,
            Request::Put(_)
            | Request::DeleteRange(_)
            | Request::Compact(_)
            | Request::LeaseGrant(_)
            | Request::LeaseGrantUnnumbered(_)
            | Request::LeaseRevoke(_)
            | Request::LeaseEpoch(_)
            | Request::LeaseExpire(_)
            | Request::Alarm(_)
            | Request::Auth(_) => false,
            Request::As { request, .. } => request.is_read_only(),
            Request::Txn(txn) => txn
                .success
                .iter()
                .chain(&txn.failure)
                .all(Request::is_read_only),
        }
    }

    /// The longest list of operations in the request: for a transaction, the longest of its
    /// compares, its success branch and its failure branch, and of every transaction nested
    /// in either branch. That is what etcd's `--max-txn-ops` limits (each list alone, not
    /// their sum); any other request counts as one.
    pub fn longest_operation_list(&self) -> usize {
        match self {
            Request::Txn(t) => t
                .success
                .iter()
                .chain(&t.failure)
                .map(Request::longest_operation_list)
                .chain([t.compare.len(), t.success.len(), t.failure.len()])
                .max()
                .unwrap_or(0),
            Request::As { request, .. } => request.longest_operation_list(),
            _ => 1,
        }
    }

    fn encode_into(&self, enc: &mut Encoder) {
        match self {
            Request::Range(r) => {
                enc.u64(TAG_RANGE);
                encode_range(enc, &r.range);
                enc.u64(r.limit)
                    .i64(r.revision)
                    .u8(sort_order_code(r.sort_order))
                    .u8(sort_target_code(r.sort_target))
                    .bool(r.count_only)
                    .bool(r.keys_only)
                    .i64(r.min_mod_revision)
                    .i64(r.max_mod_revision)
                    .i64(r.min_create_revision)
                    .i64(r.max_create_revision);
            }
            Request::Put(p) => {
                enc.u64(TAG_PUT)
                    .bytes(&p.key)
                    .bytes(&p.value)
                    .i64(p.lease)
                    .bool(p.prev_kv)
                    .bool(p.ignore_value)
                    .bool(p.ignore_lease);
            }
            Request::DeleteRange(d) => {
                enc.u64(TAG_DELETE_RANGE);
                encode_range(enc, &d.range);
                enc.bool(d.prev_kv);
            }
            Request::Txn(t) => {
                enc.u64(TAG_TXN).u64(t.compare.len() as u64);
                for c in &t.compare {
                    encode_compare(enc, c);
                }
                for branch in [&t.success, &t.failure] {
                    enc.u64(branch.len() as u64);
                    for r in branch {
                        r.encode_into(enc);
                    }
                }
            }
            Request::Compact(c) => {
                enc.u64(TAG_COMPACT).i64(c.revision);
            }
            Request::LeaseGrant(g) => {
                enc.u64(TAG_LEASE_GRANT_NUMBERED).i64(g.id).i64(g.ttl);
            }
            Request::LeaseGrantUnnumbered(g) => {
                enc.u64(TAG_LEASE_GRANT).i64(g.id).i64(g.ttl);
            }
            Request::LeaseRevoke(r) => {
                enc.u64(TAG_LEASE_REVOKE).i64(r.id);
            }
            Request::LeaseEpoch(e) => {
                enc.u64(TAG_LEASE_EPOCH).u64(e.era);
            }
            Request::LeaseExpire(e) => match e.granted_at {
                Some(granted_at) => {
                    enc.u64(TAG_LEASE_EXPIRE_GRANT)
                        .i64(e.id)
                        .u64(e.era)
                        .u64(granted_at);
                }
                None => {
                    enc.u64(TAG_LEASE_EXPIRE).i64(e.id).u64(e.era);
                }
            },
            Request::Alarm(a) => {
                enc.u64(TAG_ALARM).bool(a.activate).u64(a.member);
                a.alarm.encode(enc);
            }
            Request::Auth(a) => {
                enc.u64(TAG_AUTH);
                a.encode(enc);
            }
            Request::As {
                user,
                since,
                request,
            } => {
                enc.u64(TAG_AS)
                    .bool(user.is_some())
                    .bytes(user.as_deref().unwrap_or("").as_bytes())
                    .bool(since.is_some())
                    .u64(since.unwrap_or(0));
                request.encode_into(enc);
            }
        }
    }

    fn decode_from(dec: &mut Decoder<'_>, depth: usize) -> Result<Request, DecodeError> {
        let offset = dec.offset();
        let tag = dec.tag("request", REQUEST_TAGS)?;
        if tag != TAG_PUT && tag != TAG_AS {
            // Only a single put shares its command (`decode_command` says why); a user's
            // request is decided by the request inside.
            dec.stop_sharing();
        }
        Ok(match tag {
            TAG_RANGE => Request::Range(RangeRequest {
                range: decode_range(dec)?,
                limit: dec.u64("limit")?,
                revision: dec.i64("revision")?,
                sort_order: decode_sort_order(dec)?,
                sort_target: decode_sort_target(dec)?,
                count_only: dec.bool("count_only")?,
                keys_only: dec.bool("keys_only")?,
                min_mod_revision: dec.i64("min_mod_revision")?,
                max_mod_revision: dec.i64("max_mod_revision")?,
                min_create_revision: dec.i64("min_create_revision")?,
                max_create_revision: dec.i64("max_create_revision")?,
            }),
            TAG_PUT => Request::Put(PutRequest {
                key: dec.owned_bytes("key")?,
                value: dec.owned_bytes("value")?,
                lease: dec.i64("lease")?,
                prev_kv: dec.bool("prev_kv")?,
                ignore_value: dec.bool("ignore_value")?,
                ignore_lease: dec.bool("ignore_lease")?,
            }),
            TAG_DELETE_RANGE => Request::DeleteRange(DeleteRangeRequest {
                range: decode_range(dec)?,
                prev_kv: dec.bool("prev_kv")?,
            }),
            TAG_TXN => {
                if depth >= TXN_DEPTH_MAX {
                    return Err(DecodeError::UnknownTag {
                        what: "transaction nested too deep",
                        tag: TAG_TXN,
                        offset,
                    });
                }
                let compare = (0..dec.count("compares")?)
                    .map(|_| decode_compare(dec))
                    .collect::<Result<_, _>>()?;
                let mut branch = || -> Result<Vec<Request>, DecodeError> {
                    (0..dec.count("branch")?)
                        .map(|_| Request::decode_from(dec, depth + 1))
                        .collect()
                };
                let success = branch()?;
                let failure = branch()?;
                Request::Txn(TxnRequest {
                    compare,
                    success,
                    failure,
                })
            }
            TAG_COMPACT => Request::Compact(CompactRequest {
                revision: dec.i64("compact revision")?,
            }),
            TAG_LEASE_GRANT_NUMBERED => Request::LeaseGrant(LeaseGrantRequest {
                id: dec.i64("lease id")?,
                ttl: dec.i64("lease ttl")?,
            }),
            TAG_LEASE_GRANT => Request::LeaseGrantUnnumbered(LeaseGrantRequest {
                id: dec.i64("lease id")?,
                ttl: dec.i64("lease ttl")?,
            }),
            TAG_LEASE_REVOKE => Request::LeaseRevoke(LeaseRevokeRequest {
                id: dec.i64("lease id")?,
            }),
            TAG_LEASE_EPOCH => Request::LeaseEpoch(LeaseEpochRequest {
                era: dec.u64("lease epoch")?,
            }),
            TAG_LEASE_EXPIRE => Request::LeaseExpire(LeaseExpireRequest {
                id: dec.i64("lease id")?,
                era: dec.u64("lease era")?,
                granted_at: None,
            }),
            TAG_LEASE_EXPIRE_GRANT => Request::LeaseExpire(LeaseExpireRequest {
                id: dec.i64("lease id")?,
                era: dec.u64("lease era")?,
                granted_at: Some(dec.u64("lease grant index")?),
            }),
            TAG_AUTH => Request::Auth(AuthRequest::decode(dec)?),
            TAG_AS => {
                let has_user = dec.bool("has user")?;
                let user = dec.bytes("user")?;
                let user =
                    String::from_utf8(user.to_vec()).map_err(|_| DecodeError::UnknownTag {
                        what: "user name that is not UTF-8",
                        tag: TAG_AS,
                        offset,
                    })?;
                let has_since = dec.bool("has since")?;
                let since = dec.u64("since")?;
                // At the top only (checked below), so the request inside is decoded at the
                // same depth: a user's request nests as deep as anyone's.
                let request = Request::decode_from(dec, depth)?;
                if matches!(request, Request::As { .. }) || depth > 0 {
                    return Err(DecodeError::UnknownTag {
                        what: "a user's request inside another",
                        tag: TAG_AS,
                        offset,
                    });
                }
                Request::As {
                    user: has_user.then_some(user),
                    since: has_since.then_some(since),
                    request: Box::new(request),
                }
            }
            TAG_ALARM => {
                let activate = dec.bool("alarm action")?;
                let member = dec.u64("alarm member")?;
                let alarm = AlarmKind::decode(dec)?;
                Request::Alarm(AlarmRequest {
                    activate,
                    member,
                    alarm,
                })
            }
            // `dec.tag` refused any other already.
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "request",
                    tag,
                    offset,
                })
            }
        })
    }
}

fn sort_order_code(order: SortOrder) -> u8 {
    match order {
        SortOrder::None => 0,
        SortOrder::Ascend => 1,
        SortOrder::Descend => 2,
    }
}

fn decode_sort_order(dec: &mut Decoder<'_>) -> Result<SortOrder, DecodeError> {
    Ok(match dec.tag("sort order", 3)? {
        0 => SortOrder::None,
        1 => SortOrder::Ascend,
        _ => SortOrder::Descend,
    })
}

fn sort_target_code(target: SortTarget) -> u8 {
    match target {
        SortTarget::Key => 0,
        SortTarget::Version => 1,
        SortTarget::Create => 2,
        SortTarget::Mod => 3,
        SortTarget::Value => 4,
    }
}

fn decode_sort_target(dec: &mut Decoder<'_>) -> Result<SortTarget, DecodeError> {
    Ok(match dec.tag("sort target", 5)? {
        0 => SortTarget::Key,
        1 => SortTarget::Version,
        2 => SortTarget::Create,
        3 => SortTarget::Mod,
        _ => SortTarget::Value,
    })
}

fn encode_range(enc: &mut Encoder, range: &KeyRange) {
    enc.bytes(&range.key).bytes(&range.range_end);
}

fn decode_range(dec: &mut Decoder<'_>) -> Result<KeyRange, DecodeError> {
    Ok(KeyRange {
        key: dec.owned_bytes("key")?,
        range_end: dec.owned_bytes("range_end")?,
    })
}

fn encode_compare(enc: &mut Encoder, c: &Compare) {
    encode_range(enc, &c.range);
    match &c.target {
        CompareTarget::Value(v) => enc.u64(0).bytes(v),
        CompareTarget::Version(v) => enc.u64(1).i64(*v),
        CompareTarget::CreateRevision(v) => enc.u64(2).i64(*v),
        CompareTarget::ModRevision(v) => enc.u64(3).i64(*v),
        CompareTarget::Lease(v) => enc.u64(4).i64(*v),
    };
    enc.u64(match c.op {
        CompareOp::Equal => 0,
        CompareOp::NotEqual => 1,
        CompareOp::Less => 2,
        CompareOp::Greater => 3,
    });
}

fn decode_compare(dec: &mut Decoder<'_>) -> Result<Compare, DecodeError> {
    let range = decode_range(dec)?;
    let target = match dec.tag("compare target", 5)? {
        0 => CompareTarget::Value(dec.owned_bytes("value")?),
        1 => CompareTarget::Version(dec.i64("version")?),
        2 => CompareTarget::CreateRevision(dec.i64("create_revision")?),
        3 => CompareTarget::ModRevision(dec.i64("mod_revision")?),
        _ => CompareTarget::Lease(dec.i64("lease")?),
    };
    let op = match dec.tag("compare op", 4)? {
        0 => CompareOp::Equal,
        1 => CompareOp::NotEqual,
        2 => CompareOp::Less,
        _ => CompareOp::Greater,
    };
    Ok(Compare { range, target, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_txn() -> Request {
        Request::Txn(TxnRequest {
            compare: vec![
                Compare {
                    range: KeyRange::key("a"),
                    target: CompareTarget::Value(Bytes::from_static(b"1")),
                    op: CompareOp::Equal,
                },
                Compare {
                    range: KeyRange::prefix("p/"),
                    target: CompareTarget::ModRevision(-3),
                    op: CompareOp::Less,
                },
            ],
            success: vec![Request::Put(PutRequest {
                key: Bytes::from_static(b"a"),
                value: Bytes::from_static(b"2"),
                lease: 12,
                prev_kv: true,
                ignore_value: false,
                ignore_lease: true,
            })],
            failure: vec![
                Request::Range(RangeRequest {
                    range: KeyRange::key("a"),
                    limit: 10,
                    revision: 7,
                    sort_order: SortOrder::Descend,
                    sort_target: SortTarget::Mod,
                    keys_only: true,
                    max_create_revision: 9,
                    ..Default::default()
                }),
                Request::LeaseGrant(LeaseGrantRequest { id: 5, ttl: 60 }),
                Request::LeaseGrantUnnumbered(LeaseGrantRequest { id: 6, ttl: 60 }),
                Request::LeaseRevoke(LeaseRevokeRequest { id: -5 }),
                Request::LeaseEpoch(LeaseEpochRequest { era: 1 << 40 }),
                Request::LeaseExpire(LeaseExpireRequest {
                    id: 5,
                    era: 3,
                    granted_at: None,
                }),
                Request::LeaseExpire(LeaseExpireRequest {
                    id: 5,
                    era: 3,
                    granted_at: Some(41),
                }),
                Request::Compact(CompactRequest { revision: 3 }),
                Request::DeleteRange(DeleteRangeRequest {
                    range: KeyRange::prefix("x"),
                    prev_kv: false,
                }),
            ],
        })
    }

    #[test]
    fn requests_round_trip() {
        let txn = sample_txn();
        assert_eq!(Request::decode(&txn.encode()).unwrap(), txn);
    }

    #[test]
    fn a_command_decoded_for_applying_shares_its_buffer() {
        let put = Request::Put(PutRequest {
            key: Bytes::from_static(b"key"),
            value: Bytes::from(vec![7u8; 4096]),
            ..Default::default()
        });
        let command = put.encode();
        // Sized up front: the entry keeps no spare room worth a reallocation.
        assert!(command.len() <= put.encoded_len_hint());
        assert!(put.encoded_len_hint() - command.len() < 32);
        let txn = sample_txn();
        for request in [put.clone(), txn.clone()] {
            let decoded = Request::decode_command(&request.encode()).unwrap();
            assert_eq!(decoded, request);
        }
        // A transaction's values are copies: one kept would keep the whole command.
        let command = txn.encode();
        let Ok(Request::Txn(decoded)) = Request::decode_command(&command) else {
            panic!("not a transaction");
        };
        let Request::Put(put_in_txn) = &decoded.success[0] else {
            panic!("not a put");
        };
        assert!(!command.as_ptr_range().contains(&put_in_txn.value.as_ptr()));
        let command = put.encode();
        let Ok(Request::Put(put)) = Request::decode_command(&command) else {
            panic!("not a put");
        };
        let within = |b: &Bytes| command.as_ptr_range().contains(&b.as_ptr());
        assert!(
            within(&put.key) && within(&put.value),
            "a copy, not a slice"
        );
        // An entry decoded for anything else is copied, not kept alive by what it yields.
        let Ok(Request::Put(copied)) = Request::decode(&command) else {
            panic!("not a put");
        };
        assert!(!within(&copied.value));
        // Every truncation is refused the same way.
        for cut in 0..command.len() {
            assert!(
                Request::decode_command(&command.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_truncation_of_a_request_is_refused() {
        let bytes = sample_txn().encode();
        for cut in 0..bytes.len() {
            assert!(Request::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut request = Request::Range(RangeRequest::default());
        for _ in 0..=TXN_DEPTH_MAX {
            request = Request::Txn(TxnRequest {
                compare: vec![],
                success: vec![request],
                failure: vec![],
            });
        }
        assert!(Request::decode(&request.encode()).is_err());
    }

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"abc"), Bytes::from_static(b"abd"));
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), Bytes::from_static(&[0]));
        assert_eq!(prefix_end(b""), Bytes::from_static(&[0]));
    }

    #[test]
    fn key_ranges_contain_what_etcd_says() {
        assert!(KeyRange::key("a").contains(b"a"));
        assert!(!KeyRange::key("a").contains(b"ab"));
        let p = KeyRange::prefix("ab");
        assert!(p.contains(b"ab") && p.contains(b"abz") && !p.contains(b"ac"));
        let all = KeyRange {
            key: Bytes::from_static(b"m"),
            range_end: Bytes::from_static(&[0]),
        };
        assert!(all.contains(b"m") && all.contains(b"\xff\xff") && !all.contains(b"l"));
    }

    #[test]
    fn read_only_is_recursive() {
        assert!(Request::Range(RangeRequest::default()).is_read_only());
        assert!(!sample_txn().is_read_only());
    }

    #[test]
    fn txn_operations_count_each_list_alone_as_etcd_does() {
        let puts = |n: usize| vec![Request::Put(PutRequest::default()); n];
        let txn = |compares: usize, success: Vec<Request>, failure: Vec<Request>| {
            Request::Txn(TxnRequest {
                compare: vec![
                    Compare {
                        range: KeyRange::key("a"),
                        target: CompareTarget::Version(0),
                        op: CompareOp::Equal,
                    };
                    compares
                ],
                success,
                failure,
            })
        };
        assert_eq!(
            Request::Put(PutRequest::default()).longest_operation_list(),
            1
        );
        // 100 operations on each branch are 100, not 200.
        assert_eq!(txn(3, puts(100), puts(100)).longest_operation_list(), 100);
        assert_eq!(txn(129, puts(1), puts(0)).longest_operation_list(), 129);
        // A nested transaction is one operation of its branch, and is limited on its own.
        let nested = txn(0, vec![txn(0, puts(130), vec![])], puts(2));
        assert_eq!(nested.longest_operation_list(), 130);
        assert_eq!(txn(0, vec![], vec![]).longest_operation_list(), 0);
    }
}
