//! Snapshots of the whole state machine as bytes, and back.
//!
//! The encoding is deterministic (keys and sessions in order), so two replicas that applied
//! the same entries produce identical snapshot bytes; the simulator compares them to check
//! that replicas converged. Integrity (checksums) is the snapshot store's job, not this one's.

use bytes::Bytes;
use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::ClientId;

use crate::history::{Event, EventKind};
use crate::request::*;
use crate::session::{Session, Sessions};
use crate::store::{key_value, Applied, KvError, KvStore, Lease, Record};

/// Format version written first; bump when the layout changes. Version 7 adds each lease's
/// grant index; versions 2 to 6 are still read (version 3 added the lease epoch, 4 the
/// alarms, 5 the auth state, 6 writes each value once: the history first, then keys and
/// earlier values as references into it).
const SNAPSHOT_VERSION: u64 = 7;

/// How a change is written (version 6 on): with no previous value, with it written out, or with
/// it taken from an earlier change (the one that wrote it), whose key is the change's too.
const CHANGE_WITHOUT_PREVIOUS: u64 = 0;
const CHANGE_WITH_PREVIOUS: u64 = 1;
const CHANGE_AFTER_EARLIER: u64 = 2;

/// How a key's record is written (version 6 on): in full, or as the change that wrote it (the
/// key was written after the oldest change kept).
const RECORD_IN_FULL: u64 = 0;
const RECORD_OF_CHANGE: u64 = 1;

impl KvStore {
    /// The whole state as bytes.
    ///
    /// Every value is written once: a key's record, and a change's previous value, name the
    /// change that wrote them when the history still holds it. A value lives in the history
    /// (as a change), then as the next change's previous value, then (the newest) as the key's
    /// record; written out at each place, a snapshot of a store keeping its history was about
    /// three times its values, and a store restored from it held each copy apart.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut enc = Encoder::with_capacity(self.snapshot_len_hint());
        enc.u64(SNAPSHOT_VERSION)
            .u64(self.applied_index)
            .i64(self.revision)
            .u64(self.sessions.limit as u64)
            .i64(self.history_revisions);
        let writers = Writers::of(&self.history.events);
        enc.i64(self.history.compacted)
            .u64(self.history.events.len() as u64);
        for (at, event) in self.history.events.iter().enumerate() {
            enc.bool(event.kind == EventKind::Delete);
            let earlier = event
                .prev_kv
                .as_ref()
                .filter(|prev| same_bytes(&prev.key, &event.kv.key))
                .and_then(|prev| writers.find(prev.mod_revision, at, |kv| same_kv(kv, prev)));
            match (&event.prev_kv, earlier) {
                (None, _) => {
                    enc.u64(CHANGE_WITHOUT_PREVIOUS);
                    encode_kv(&mut enc, &event.kv);
                }
                (Some(prev), None) => {
                    enc.u64(CHANGE_WITH_PREVIOUS);
                    encode_kv(&mut enc, prev);
                    encode_kv(&mut enc, &event.kv);
                }
                (Some(_), Some(writer)) => {
                    enc.u64(CHANGE_AFTER_EARLIER).u64((at - writer) as u64);
                    encode_kv_fields(&mut enc, &event.kv);
                }
            }
        }
        enc.u64(self.keys.len() as u64);
        for (key, r) in &self.keys {
            let is_record = |kv: &KeyValue| {
                same_bytes(&kv.key, key)
                    && same_bytes(&kv.value, &r.value)
                    && (kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                        == (r.create_revision, r.mod_revision, r.version, r.lease)
            };
            match writers.find(r.mod_revision, self.history.events.len(), is_record) {
                Some(writer) => {
                    enc.u64(RECORD_OF_CHANGE).u64(writer as u64);
                }
                None => {
                    enc.u64(RECORD_IN_FULL);
                    encode_kv(&mut enc, &key_value(key, r));
                }
            }
        }
        enc.u64(self.sessions.by_client.len() as u64);
        for (client, s) in &self.sessions.by_client {
            enc.u64(client.0).u64(s.seq).u64(s.last_used);
            encode_result(&mut enc, &s.result);
        }
        // A lease's keys are those whose records name it; they are not written twice.
        enc.u64(self.leases.len() as u64);
        for (id, lease) in &self.leases {
            enc.i64(*id).i64(lease.ttl).u64(lease.granted_at);
        }
        enc.u64(self.lease_epoch);
        encode_alarms(&mut enc, self.alarms.iter().copied());
        self.auth.encode(&mut enc);
        enc.finish()
    }

    /// Rebuilds a store from [`KvStore::snapshot`] bytes (of this version or an earlier one).
    pub fn restore(bytes: &[u8]) -> Result<KvStore, DecodeError> {
        let mut dec = Decoder::new(bytes);
        let version_offset = dec.offset();
        let version = dec.u64("snapshot version")?;
        if !(2..=SNAPSHOT_VERSION).contains(&version) {
            return Err(DecodeError::UnknownTag {
                what: "snapshot version",
                tag: version,
                offset: version_offset,
            });
        }
        let applied_index = dec.u64("applied index")?;
        let revision = dec.i64("revision")?;
        let limit = dec.u64("session limit")? as usize;
        let history_revisions = dec.i64("history revisions")?;
        let mut store = KvStore::with_limits(limit, history_revisions);
        store.applied_index = applied_index;
        store.revision = revision;
        if version >= 6 {
            decode_history(&mut dec, &mut store)?;
        }
        for _ in 0..dec.count("key count")? {
            let (key, record) = if version >= 6 {
                decode_record(&mut dec, &store.history.events)?
            } else {
                into_record(decode_kv(&mut dec)?)
            };
            if store.keys.insert(key, record).is_some() {
                return Err(DecodeError::Invalid("a key written twice"));
            }
        }
        let mut sessions = Sessions::new(limit);
        for _ in 0..dec.count("session count")? {
            let client = ClientId(dec.u64("client")?);
            let session = Session {
                seq: dec.u64("seq")?,
                last_used: dec.u64("last used")?,
                result: decode_result(&mut dec)?,
            };
            sessions.insert(client, session);
        }
        store.sessions = sessions;
        for _ in 0..dec.count("lease count")? {
            let id = dec.i64("lease id")?;
            let ttl = dec.i64("lease ttl")?;
            let granted_at = if version >= 7 {
                dec.u64("lease grant index")?
            } else {
                0
            };
            let keys = imbl::OrdSet::new();
            let lease = Lease {
                ttl,
                granted_at,
                keys,
            };
            store.leases.insert(id, lease);
        }
        if version >= 3 {
            store.lease_epoch = dec.u64("lease epoch")?;
        }
        for (key, record) in &store.keys {
            if let Some(lease) = store.leases.get_mut(&record.lease) {
                lease.keys.insert(key.clone());
            }
        }
        if version < 6 {
            decode_history_v5(&mut dec, &mut store)?;
        }
        store.history.recount();
        store.key_bytes = store
            .keys
            .iter()
            .map(|(key, record)| crate::store::key_cost(key, record))
            .sum();
        if version >= 4 {
            store.alarms = decode_alarms(&mut dec)?.into_iter().collect();
        }
        if version >= 5 {
            store.auth = crate::auth::AuthState::decode(&mut dec)?;
        }
        dec.finish()?;
        Ok(store)
    }
}

/// The puts of a history by revision, to find the one that wrote a value.
struct Writers<'a> {
    /// Each put and its position among the changes, in order: a plain array, indexed without
    /// walking the history's tree (and without the deletes, which write no value: a
    /// transaction that deletes a million keys is not searched through a million times).
    puts: Vec<(usize, &'a Event)>,
    /// Each put's revision, searched without reading the changes.
    revisions: Vec<i64>,
}

impl<'a> Writers<'a> {
    fn of(events: &'a imbl::Vector<Event>) -> Writers<'a> {
        let puts: Vec<(usize, &Event)> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind == EventKind::Put)
            .collect();
        let revisions = puts.iter().map(|(_, e)| e.revision()).collect();
        Writers { puts, revisions }
    }

    /// The position of the put at `revision`, before position `before`, that wrote what
    /// `wrote` accepts; `None` when the history no longer holds it.
    fn find(
        &self,
        revision: i64,
        before: usize,
        wrote: impl Fn(&KeyValue) -> bool,
    ) -> Option<usize> {
        let first = self.revisions.partition_point(|&r| r < revision);
        // One revision holds one put, or a transaction's few.
        self.puts[first..]
            .iter()
            .take_while(|(at, e)| e.revision() == revision && *at < before)
            .find(|(_, e)| wrote(&e.kv))
            .map(|(at, _)| *at)
    }
}

/// Equal bytes; at once when they are the same bytes (as a value shared by the changes and
/// the record that hold it is).
fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// Equal key-values, as [`same_bytes`] compares their key and value.
fn same_kv(a: &KeyValue, b: &KeyValue) -> bool {
    same_bytes(&a.key, &b.key)
        && same_bytes(&a.value, &b.value)
        && (a.create_revision, a.mod_revision, a.version, a.lease)
            == (b.create_revision, b.mod_revision, b.version, b.lease)
}

/// The put a version 6 snapshot names by its position: it must be one of the changes read.
fn writer(events: &imbl::Vector<Event>, at: u64) -> Result<&KeyValue, DecodeError> {
    match usize::try_from(at).ok().and_then(|at| events.get(at)) {
        Some(event) if event.kind == EventKind::Put => Ok(&event.kv),
        Some(_) => Err(DecodeError::Invalid("a value taken from a delete")),
        None => Err(DecodeError::Invalid(
            "a value taken from a change not read yet",
        )),
    }
}

/// Version 6's history: each change, its previous value written out or taken from the change
/// that wrote it (sharing its bytes, as the store that wrote the snapshot did).
fn decode_history(dec: &mut Decoder<'_>, store: &mut KvStore) -> Result<(), DecodeError> {
    store.history.compacted = dec.i64("compacted revision")?;
    for at in 0..dec.count("history length")? {
        let kind = decode_event_kind(dec)?;
        let (prev_kv, kv) = match dec.tag("change", 3)? {
            CHANGE_WITHOUT_PREVIOUS => (None, decode_kv(dec)?),
            CHANGE_WITH_PREVIOUS => (Some(decode_kv(dec)?), decode_kv(dec)?),
            _ => {
                let back = dec.u64("changes back")?;
                let earlier = (at as u64).checked_sub(back).filter(|_| back > 0);
                let prev = writer(&store.history.events, earlier.unwrap_or(u64::MAX))?.clone();
                let kv = decode_kv_fields(dec, prev.key.clone())?;
                (Some(prev), kv)
            }
        };
        store.history.events.push_back(Event { kind, kv, prev_kv });
    }
    Ok(())
}

/// Versions 2 to 5: every change with its previous value written out.
fn decode_history_v5(dec: &mut Decoder<'_>, store: &mut KvStore) -> Result<(), DecodeError> {
    store.history.compacted = dec.i64("compacted revision")?;
    for _ in 0..dec.count("history length")? {
        let kind = decode_event_kind(dec)?;
        let kv = decode_kv(dec)?;
        let prev_kv = if dec.bool("has prev_kv")? {
            Some(decode_kv(dec)?)
        } else {
            None
        };
        store.history.events.push_back(Event { kind, kv, prev_kv });
    }
    Ok(())
}

fn decode_event_kind(dec: &mut Decoder<'_>) -> Result<EventKind, DecodeError> {
    Ok(if dec.bool("event kind")? {
        EventKind::Delete
    } else {
        EventKind::Put
    })
}

/// Version 6's record of a key: written out, or the put that wrote it (its key and value
/// shared with that change).
fn decode_record(
    dec: &mut Decoder<'_>,
    events: &imbl::Vector<Event>,
) -> Result<(Bytes, Record), DecodeError> {
    Ok(match dec.tag("record", 2)? {
        RECORD_IN_FULL => into_record(decode_kv(dec)?),
        _ => into_record(writer(events, dec.u64("change")?)?.clone()),
    })
}

/// A key's record as the store keeps it: the key, and the rest (the reverse of the store's
/// `key_value`).
fn into_record(kv: KeyValue) -> (Bytes, Record) {
    let record = Record {
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    };
    (kv.key, record)
}

impl KvStore {
    /// About how long the snapshot is (a little more, never much less), so that it is built in
    /// one allocation: growing a buffer of hundreds of megabytes by doubling would hold up to
    /// twice the store at once, and copy it several times.
    fn snapshot_len_hint(&self) -> usize {
        /// Bytes of varints and flags per record, at most.
        const PER_RECORD: usize = 2 * 10 + 4 * 10 + 2;
        /// Bytes of a value written as the change that wrote it: a tag and a position.
        const REFERENCE: usize = 12;
        // A value written since the oldest change kept is written as that change.
        let oldest_kept = self
            .history
            .events
            .front()
            .map_or(i64::MAX, Event::revision);
        let kv_len = |kv: &KeyValue| kv.key.len() + kv.value.len() + PER_RECORD;
        let keys: usize = self
            .keys
            .iter()
            .map(|(key, r)| match r.mod_revision >= oldest_kept {
                true => REFERENCE,
                false => key.len() + r.value.len() + PER_RECORD,
            })
            .sum();
        let history: usize =
            self.history
                .events
                .iter()
                .map(|e| {
                    let prev = e.prev_kv.as_ref().map_or(0, |prev| {
                        match prev.mod_revision >= oldest_kept {
                            true => REFERENCE,
                            false => kv_len(prev),
                        }
                    });
                    2 + kv_len(&e.kv) + prev
                })
                .sum();
        let small = 128 * (self.sessions.by_client.len() + self.leases.len() + 1);
        keys + history + small
    }
}

fn encode_result(enc: &mut Encoder, result: &Result<Applied, KvError>) {
    match result {
        Ok(applied) => {
            enc.u64(0).i64(applied.revision);
            encode_response(enc, &applied.response);
        }
        Err(KvError::Malformed(reason)) => {
            enc.u64(1).bytes(reason.as_bytes());
        }
        Err(KvError::DuplicateKey(key)) => {
            enc.u64(2).bytes(key);
        }
        Err(KvError::StaleRequest { seq, latest }) => {
            enc.u64(3).u64(*seq).u64(*latest);
        }
        Err(KvError::Compacted { compacted }) => {
            enc.u64(4).i64(*compacted);
        }
        Err(KvError::FutureRevision) => {
            enc.u64(5);
        }
        Err(KvError::LeaseNotFound(id)) => {
            enc.u64(6).i64(*id);
        }
        Err(KvError::LeaseExists(id)) => {
            enc.u64(7).i64(*id);
        }
        Err(KvError::KeyNotFound) => {
            enc.u64(8);
        }
        Err(KvError::Invalid(reason)) => {
            enc.u64(9).bytes(reason.as_bytes());
        }
        Err(KvError::NoSpace) => {
            enc.u64(10);
        }
        Err(KvError::Corrupt) => {
            enc.u64(11);
        }
        Err(KvError::Auth(error)) => {
            enc.u64(12).u8(error.code());
        }
    }
}

fn decode_result(dec: &mut Decoder<'_>) -> Result<Result<Applied, KvError>, DecodeError> {
    let offset = dec.offset();
    Ok(match dec.tag("result", 13)? {
        0 => Ok(Applied {
            revision: dec.i64("revision")?,
            response: decode_response(dec)?,
        }),
        1 => Err(KvError::Malformed(
            String::from_utf8_lossy(dec.bytes("reason")?).into_owned(),
        )),
        2 => Err(KvError::DuplicateKey(dec.owned_bytes("key")?)),
        3 => Err(KvError::StaleRequest {
            seq: dec.u64("seq")?,
            latest: dec.u64("latest")?,
        }),
        4 => Err(KvError::Compacted {
            compacted: dec.i64("compacted")?,
        }),
        5 => Err(KvError::FutureRevision),
        6 => Err(KvError::LeaseNotFound(dec.i64("lease")?)),
        7 => Err(KvError::LeaseExists(dec.i64("lease")?)),
        8 => Err(KvError::KeyNotFound),
        10 => Err(KvError::NoSpace),
        11 => Err(KvError::Corrupt),
        12 => {
            let code = dec.u8("auth error")?;
            let error = crate::auth::AuthError::from_code(code).ok_or(DecodeError::UnknownTag {
                what: "auth error",
                tag: u64::from(code),
                offset,
            })?;
            Err(KvError::Auth(error))
        }
        _ => Err(KvError::Invalid(
            String::from_utf8_lossy(dec.bytes("reason")?).into_owned(),
        )),
    })
}

fn encode_alarms(enc: &mut Encoder, alarms: impl ExactSizeIterator<Item = (u64, AlarmKind)>) {
    enc.u64(alarms.len() as u64);
    for (member, kind) in alarms {
        enc.u64(member);
        kind.encode(enc);
    }
}

fn decode_alarms(dec: &mut Decoder<'_>) -> Result<Vec<(u64, AlarmKind)>, DecodeError> {
    (0..dec.count("alarm count")?)
        .map(|_| Ok((dec.u64("alarm member")?, AlarmKind::decode(dec)?)))
        .collect()
}

fn encode_kv(enc: &mut Encoder, kv: &KeyValue) {
    enc.bytes(&kv.key);
    encode_kv_fields(enc, kv);
}

/// Everything of a key-value but its key.
fn encode_kv_fields(enc: &mut Encoder, kv: &KeyValue) {
    enc.bytes(&kv.value)
        .i64(kv.create_revision)
        .i64(kv.mod_revision)
        .i64(kv.version)
        .i64(kv.lease);
}

fn decode_kv(dec: &mut Decoder<'_>) -> Result<KeyValue, DecodeError> {
    let key = dec.owned_bytes("key")?;
    decode_kv_fields(dec, key)
}

fn decode_kv_fields(dec: &mut Decoder<'_>, key: Bytes) -> Result<KeyValue, DecodeError> {
    Ok(KeyValue {
        key,
        value: dec.owned_bytes("value")?,
        create_revision: dec.i64("create_revision")?,
        mod_revision: dec.i64("mod_revision")?,
        version: dec.i64("version")?,
        lease: dec.i64("lease")?,
    })
}

fn encode_response(enc: &mut Encoder, response: &Response) {
    match response {
        Response::Range(r) => {
            enc.u64(0).u64(r.count).bool(r.more).u64(r.kvs.len() as u64);
            r.kvs.iter().for_each(|kv| encode_kv(enc, kv));
        }
        Response::Put(p) => {
            enc.u64(1).bool(p.prev_kv.is_some());
            if let Some(kv) = &p.prev_kv {
                encode_kv(enc, kv);
            }
        }
        Response::DeleteRange(d) => {
            enc.u64(2).u64(d.deleted).u64(d.prev_kvs.len() as u64);
            d.prev_kvs.iter().for_each(|kv| encode_kv(enc, kv));
        }
        Response::Txn(t) => {
            enc.u64(3).bool(t.succeeded).u64(t.responses.len() as u64);
            t.responses.iter().for_each(|r| encode_response(enc, r));
        }
        Response::Compact => {
            enc.u64(4);
        }
        Response::LeaseGrant(g) => {
            enc.u64(5).i64(g.id).i64(g.ttl);
        }
        Response::LeaseEpoch => {
            enc.u64(7);
        }
        Response::LeaseRevoke => {
            enc.u64(6);
        }
        Response::Alarm(alarms) => {
            enc.u64(8);
            encode_alarms(enc, alarms.iter().copied());
        }
        Response::Auth => {
            enc.u64(9);
        }
    }
}

fn decode_response(dec: &mut Decoder<'_>) -> Result<Response, DecodeError> {
    decode_response_at(dec, 0)
}

fn decode_response_at(dec: &mut Decoder<'_>, depth: usize) -> Result<Response, DecodeError> {
    let offset = dec.offset();
    Ok(match dec.tag("response", 10)? {
        0 => {
            let count = dec.u64("count")?;
            let more = dec.bool("more")?;
            let kvs = (0..dec.count("kvs")?)
                .map(|_| decode_kv(dec))
                .collect::<Result<_, _>>()?;
            Response::Range(RangeResponse { kvs, count, more })
        }
        1 => Response::Put(PutResponse {
            prev_kv: if dec.bool("has prev_kv")? {
                Some(decode_kv(dec)?)
            } else {
                None
            },
        }),
        2 => {
            let deleted = dec.u64("deleted")?;
            let prev_kvs = (0..dec.count("prev_kvs")?)
                .map(|_| decode_kv(dec))
                .collect::<Result<_, _>>()?;
            Response::DeleteRange(DeleteRangeResponse { deleted, prev_kvs })
        }
        4 => Response::Compact,
        5 => Response::LeaseGrant(LeaseGrantRequest {
            id: dec.i64("lease id")?,
            ttl: dec.i64("lease ttl")?,
        }),
        6 => Response::LeaseRevoke,
        7 => Response::LeaseEpoch,
        8 => Response::Alarm(decode_alarms(dec)?),
        9 => Response::Auth,
        _ => {
            if depth >= TXN_DEPTH_MAX {
                return Err(DecodeError::UnknownTag {
                    what: "transaction response nested too deep",
                    tag: 3,
                    offset,
                });
            }
            let succeeded = dec.bool("succeeded")?;
            let responses = (0..dec.count("responses")?)
                .map(|_| decode_response_at(dec, depth + 1))
                .collect::<Result<_, _>>()?;
            Response::Txn(TxnResponse {
                succeeded,
                responses,
            })
        }
    })
}
