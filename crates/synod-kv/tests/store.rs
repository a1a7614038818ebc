//! Behaviour of the state machine, against etcd's documented semantics.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

mod common;

use bytes::Bytes;
use common::{b, entry, put, put_leased};
use synod_core::{Entry, Payload, Proposal, RequestId};
use synod_kv::*;

fn get(key: &str) -> Request {
    Request::Range(RangeRequest {
        range: KeyRange::key(key),
        ..Default::default()
    })
}

fn value_of(store: &KvStore, key: &str) -> Option<Bytes> {
    store.get(key.as_bytes()).map(|kv| kv.value)
}

#[test]
fn revisions_and_versions_follow_etcd() {
    let mut s = KvStore::new();
    assert_eq!(s.revision(), 1, "an empty etcd store is at revision 1");
    s.execute(&put("a", "1")).unwrap();
    s.execute(&put("b", "1")).unwrap();
    let applied = s.execute(&put("a", "2")).unwrap();
    assert_eq!(applied.revision, 4);
    let a = s.get(b"a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 4, 2));
    let Response::Put(p) = applied.response else {
        panic!()
    };
    assert_eq!(
        p.prev_kv.unwrap().value,
        b("1"),
        "prev_kv returns the old value"
    );

    // A delete that finds nothing changes nothing, the revision included.
    let none = s
        .execute(&Request::DeleteRange(DeleteRangeRequest {
            range: KeyRange::key("zzz"),
            prev_kv: false,
        }))
        .unwrap();
    assert_eq!(none.revision, 4);

    s.execute(&Request::DeleteRange(DeleteRangeRequest {
        range: KeyRange::key("a"),
        prev_kv: false,
    }))
    .unwrap();
    assert_eq!(s.revision(), 5);
    s.execute(&put("a", "3")).unwrap();
    let a = s.get(b"a").unwrap();
    assert_eq!(
        (a.create_revision, a.version),
        (6, 1),
        "a key recreated after delete starts a new life"
    );
}

#[test]
fn ranges_by_prefix_and_interval_with_limits() {
    let mut s = KvStore::new();
    for k in ["a", "b/1", "b/2", "b/3", "c"] {
        s.execute(&put(k, k)).unwrap();
    }
    let read = |range: KeyRange, limit: u64| {
        let Response::Range(r) = s
            .range(&RangeRequest {
                range,
                limit,
                ..Default::default()
            })
            .unwrap()
            .response
        else {
            panic!()
        };
        r
    };
    let r = read(KeyRange::prefix("b/"), 0);
    assert_eq!(
        r.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![b("b/1"), b("b/2"), b("b/3")]
    );
    assert_eq!((r.count, r.more), (3, false));

    let r = read(KeyRange::prefix("b/"), 2);
    assert_eq!((r.kvs.len(), r.count, r.more), (2, 3, true));

    let r = read(
        KeyRange {
            key: b("b/2"),
            range_end: b("c"),
        },
        0,
    );
    assert_eq!(r.count, 2, "[b/2, c) holds b/2 and b/3");

    let r = read(
        KeyRange {
            key: b("b"),
            range_end: Bytes::from_static(&[0]),
        },
        0,
    );
    assert_eq!(r.count, 4, "range_end \\0 means every key >= key");

    let r = read(
        KeyRange {
            key: b("c"),
            range_end: b("a"),
        },
        0,
    );
    assert_eq!(r.count, 0, "an inverted range is empty");

    let Response::Range(r) = s
        .range(&RangeRequest {
            range: KeyRange::prefix(""),
            count_only: true,
            ..Default::default()
        })
        .unwrap()
        .response
    else {
        panic!()
    };
    assert_eq!((r.count, r.kvs.len()), (5, 0));
    let Response::Range(r) = s
        .range(&RangeRequest {
            range: KeyRange::key("a"),
            keys_only: true,
            ..Default::default()
        })
        .unwrap()
        .response
    else {
        panic!()
    };
    assert!(r.kvs[0].value.is_empty());
}

#[test]
fn delete_range_by_prefix_returns_previous_values() {
    let mut s = KvStore::new();
    for k in ["x/1", "x/2", "y"] {
        s.execute(&put(k, "v")).unwrap();
    }
    let applied = s
        .execute(&Request::DeleteRange(DeleteRangeRequest {
            range: KeyRange::prefix("x/"),
            prev_kv: true,
        }))
        .unwrap();
    let Response::DeleteRange(d) = applied.response else {
        panic!()
    };
    assert_eq!(d.deleted, 2);
    assert_eq!(d.prev_kvs.len(), 2);
    assert_eq!(s.len(), 1);
}

fn cas(key: &str, target: CompareTarget, op: CompareOp, new: &str) -> Request {
    Request::Txn(TxnRequest {
        compare: vec![Compare {
            range: KeyRange::key(key),
            target,
            op,
        }],
        success: vec![put(key, new)],
        failure: vec![get(key)],
    })
}

fn succeeded(applied: Applied) -> bool {
    let Response::Txn(t) = applied.response else {
        panic!()
    };
    t.succeeded
}

#[test]
fn transactions_compare_every_field_with_every_operator() {
    let mut s = KvStore::new();
    s.execute(&put("k", "5")).unwrap(); // revision 2, version 1
    let cases = [
        (CompareTarget::Value(b("5")), CompareOp::Equal, true),
        (CompareTarget::Value(b("5")), CompareOp::NotEqual, false),
        (CompareTarget::Value(b("4")), CompareOp::Greater, true),
        (CompareTarget::Value(b("6")), CompareOp::Less, true),
        (CompareTarget::Version(1), CompareOp::Equal, true),
        (CompareTarget::Version(2), CompareOp::Less, true),
        (CompareTarget::CreateRevision(2), CompareOp::Equal, true),
        (CompareTarget::ModRevision(1), CompareOp::Greater, true),
        (CompareTarget::ModRevision(2), CompareOp::NotEqual, false),
    ];
    for (target, op, expected) in cases {
        let mut probe = s.clone();
        let desc = format!("{target:?} {op:?}");
        assert_eq!(
            succeeded(probe.execute(&cas("k", target, op, "new")).unwrap()),
            expected,
            "{desc}"
        );
    }
}

#[test]
fn compares_on_missing_keys_follow_etcd() {
    let mut s = KvStore::new();
    // Create-if-absent: version == 0 holds for a missing key.
    assert!(succeeded(
        s.execute(&cas("k", CompareTarget::Version(0), CompareOp::Equal, "v"))
            .unwrap()
    ));
    assert_eq!(value_of(&s, "k"), Some(b("v")));
    // A value compare on a missing key fails, whatever the operator.
    for op in [
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::Greater,
    ] {
        assert!(!succeeded(
            s.clone()
                .execute(&cas("gone", CompareTarget::Value(b("")), op, "v"))
                .unwrap()
        ));
    }
}

#[test]
fn a_transaction_is_one_revision_and_its_failure_branch_runs_on_failure() {
    let mut s = KvStore::new();
    let txn = Request::Txn(TxnRequest {
        compare: vec![],
        success: vec![put("a", "1"), put("b", "1"), get("a")],
        failure: vec![],
    });
    let applied = s.execute(&txn).unwrap();
    assert_eq!(
        applied.revision, 2,
        "all writes of one txn share a revision"
    );
    let Response::Txn(t) = applied.response else {
        panic!()
    };
    let Response::Range(r) = &t.responses[2] else {
        panic!()
    };
    assert_eq!(
        r.kvs[0].value,
        b("1"),
        "a read in a txn sees the txn's earlier writes"
    );

    let applied = s
        .execute(&cas(
            "a",
            CompareTarget::Value(b("nope")),
            CompareOp::Equal,
            "2",
        ))
        .unwrap();
    assert_eq!(
        applied.revision, 2,
        "a failed compare whose else branch only reads writes nothing"
    );
    let Response::Txn(t) = applied.response else {
        panic!()
    };
    assert!(!t.succeeded);
    assert!(matches!(&t.responses[0], Response::Range(r) if r.kvs[0].value == b("1")));
}

#[test]
fn duplicate_writes_in_one_branch_are_refused_like_etcd() {
    let mut s = KvStore::new();
    let twice = Request::Txn(TxnRequest {
        compare: vec![],
        success: vec![put("a", "1"), put("a", "2")],
        failure: vec![],
    });
    assert_eq!(s.execute(&twice), Err(KvError::DuplicateKey(b("a"))));
    let put_and_delete = Request::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            put("p/1", "1"),
            Request::DeleteRange(DeleteRangeRequest {
                range: KeyRange::prefix("p/"),
                prev_kv: false,
            }),
        ],
        failure: vec![],
    });
    assert!(matches!(
        s.execute(&put_and_delete),
        Err(KvError::DuplicateKey(_))
    ));
    assert_eq!(s.revision(), 1, "refused transactions change nothing");

    // The two branches of a nested txn exclude each other: both may write the same key.
    let nested = Request::Txn(TxnRequest {
        compare: vec![],
        success: vec![Request::Txn(TxnRequest {
            compare: vec![],
            success: vec![put("a", "then")],
            failure: vec![put("a", "else")],
        })],
        failure: vec![],
    });
    assert!(s.execute(&nested).is_ok());
}

#[test]
fn a_retried_write_is_answered_from_the_session_and_not_applied_twice() {
    let mut s = KvStore::new();
    let id = RequestId::new(7, 1);
    let incr = cas("n", CompareTarget::Version(0), CompareOp::Equal, "1");
    let (got_id, first) = s.apply(&entry(1, id, &incr)).unwrap();
    assert_eq!(got_id, id);
    let first = first.unwrap();
    // The retry lands in the log again (a second leader took it): same answer, no effect.
    let (_, retry) = s.apply(&entry(2, id, &incr)).unwrap();
    assert_eq!(retry.unwrap(), first);
    assert_eq!(s.revision(), 2);
    assert_eq!(s.get(b"n").unwrap().version, 1);

    // A newer request runs; the older one, if it shows up late, is refused.
    s.apply(&entry(3, RequestId::new(7, 2), &put("n", "2")))
        .unwrap()
        .1
        .unwrap();
    let (_, stale) = s.apply(&entry(4, id, &incr)).unwrap();
    assert_eq!(stale, Err(KvError::StaleRequest { seq: 1, latest: 2 }));
    assert_eq!(s.applied_index(), 4);

    // Anonymous requests (client 0) are never deduplicated.
    let anon = RequestId::new(0, 1);
    s.apply(&entry(5, anon, &put("m", "x"))).unwrap().1.unwrap();
    s.apply(&entry(6, anon, &put("m", "x"))).unwrap().1.unwrap();
    assert_eq!(s.get(b"m").unwrap().version, 2);
}

#[test]
fn malformed_commands_are_refused_deterministically() {
    let mut s = KvStore::new();
    let bad = Entry {
        index: 1,
        era: 1,
        payload: Payload::Command(Proposal {
            id: RequestId::new(1, 1),
            command: Bytes::from_static(&[0xff, 0xff]),
        }),
    };
    let (_, result) = s.apply(&bad).unwrap();
    assert!(matches!(result, Err(KvError::Malformed(_))));
    assert_eq!(s.revision(), 1);
    assert_eq!(
        s.apply(&Entry {
            index: 2,
            era: 1,
            payload: Payload::Noop
        }),
        None
    );
}

#[test]
fn sessions_are_bounded_and_evict_the_idlest() {
    let mut s = KvStore::with_session_limit(2);
    s.apply(&entry(1, RequestId::new(1, 1), &put("a", "1")))
        .unwrap()
        .1
        .unwrap();
    s.apply(&entry(2, RequestId::new(2, 1), &put("a", "2")))
        .unwrap()
        .1
        .unwrap();
    s.apply(&entry(3, RequestId::new(1, 2), &put("a", "3")))
        .unwrap()
        .1
        .unwrap();
    s.apply(&entry(4, RequestId::new(3, 1), &put("a", "4")))
        .unwrap()
        .1
        .unwrap();
    // Client 2 was idle longest and is forgotten: its retry runs again.
    s.apply(&entry(5, RequestId::new(2, 1), &put("a", "2")))
        .unwrap()
        .1
        .unwrap();
    assert_eq!(s.get(b"a").unwrap().version, 5);
    // That evicted client 1, now the idlest; client 3 is still remembered.
    let (_, r) = s
        .apply(&entry(6, RequestId::new(3, 1), &put("a", "4")))
        .unwrap();
    assert!(r.is_ok());
    assert_eq!(
        s.get(b"a").unwrap().version,
        5,
        "client 3's retry is not applied again"
    );
}

#[test]
fn snapshots_restore_exactly_and_are_deterministic() {
    let mut a = KvStore::new();
    let mut index = 0;
    let mut next = || {
        index += 1;
        index
    };
    let script = [
        put("x", "1"),
        put("y/1", "2"),
        cas("x", CompareTarget::Value(b("1")), CompareOp::Equal, "3"),
        Request::DeleteRange(DeleteRangeRequest {
            range: KeyRange::prefix("y/"),
            prev_kv: true,
        }),
        put("z", "4"),
    ];
    for (i, request) in script.iter().enumerate() {
        let (_, result) = a
            .apply(&entry(
                next(),
                RequestId::new(1 + i as u64 % 2, 1 + i as u64),
                request,
            ))
            .unwrap();
        result.unwrap();
    }
    let bytes = a.snapshot();
    let mut b = KvStore::restore(&bytes).unwrap();
    assert_eq!(a, b);
    assert_eq!(b.snapshot(), bytes, "same state, same bytes");

    // The restored store answers a retry from its session, as the original would.
    let retry = entry(next(), RequestId::new(1, 5), &script[4]);
    assert_eq!(a.clone().apply(&retry), b.apply(&retry));

    for cut in 0..bytes.len() {
        assert!(
            KvStore::restore(&bytes[..cut]).is_err(),
            "truncated snapshot at {cut} must be refused"
        );
    }
}

/// A value applied from a log entry shares the entry's command (one copy of it in memory, not
/// two, and none made on every member), but a key does not: a key outlives its first value,
/// and through a shared key the store would keep that value's whole command too.
#[test]
fn an_applied_value_shares_its_entry_and_a_key_is_its_own() {
    let mut s = KvStore::new();
    s.execute(&Request::LeaseGrant(LeaseGrantRequest { id: 9, ttl: 60 }))
        .unwrap();
    let request = Request::Put(PutRequest {
        key: b("shared/key"),
        value: Bytes::from(vec![b'v'; 1024]),
        lease: 9,
        ..Default::default()
    });
    let entry = entry(1, RequestId::new(1, 1), &request);
    let Payload::Command(proposal) = &entry.payload else {
        unreachable!()
    };
    let within = |b: &Bytes| proposal.command.as_ptr_range().contains(&b.as_ptr());
    let (_, applied) = s.apply(&entry).unwrap();
    applied.unwrap();
    let kv = s.get(b"shared/key").unwrap();
    assert_eq!(kv.value.len(), 1024);
    assert!(within(&kv.value), "the value was copied");
    assert!(!within(&kv.key), "the key keeps the command alive");
    let leased = s.leases().get(&9).unwrap();
    assert!(
        leased.keys.iter().all(|k| !within(k)),
        "so does the lease's"
    );
}

/// An expiry names the grant of the lease its keeper saw: a lease its client revoked and
/// granted again under the same id (entries the keeper's store had not applied when it
/// decided) is not the one it expires.
#[test]
fn an_expiry_deletes_only_the_lease_granted_where_it_says() {
    let mut s = KvStore::new();
    let mut index = 0;
    let mut apply = |s: &mut KvStore, request: Request| {
        index += 1;
        let id = RequestId::new(1, index);
        s.apply(&entry(index, id, &request)).unwrap().1
    };
    let grant = || Request::LeaseGrant(LeaseGrantRequest { id: 9, ttl: 5 });
    let expire = |granted_at| {
        Request::LeaseExpire(LeaseExpireRequest {
            id: 9,
            era: 0,
            granted_at,
        })
    };
    apply(&mut s, grant()).unwrap(); // entry 1
    apply(&mut s, put_leased("held", "old", 9)).unwrap();
    apply(&mut s, Request::LeaseRevoke(LeaseRevokeRequest { id: 9 })).unwrap();
    apply(&mut s, grant()).unwrap(); // entry 4
    apply(&mut s, put_leased("held", "new", 9)).unwrap();
    assert_eq!(s.leases().get(&9).map(|l| l.granted_at), Some(4));

    // Decided on a store that still held the lease of entry 1.
    let stale = apply(&mut s, expire(Some(1)));
    assert_eq!(stale, Err(KvError::LeaseNotFound(9)));
    assert_eq!(
        value_of(&s, "held"),
        Some(b("new")),
        "the new lease's key stays"
    );
    assert!(s.leases().contains_key(&9));

    apply(&mut s, expire(Some(4))).unwrap();
    assert_eq!(value_of(&s, "held"), None);
    assert!(s.leases().is_empty());

    // An expiry from before grants were named (read from an older log) takes any lease of
    // its id, as it did then.
    apply(&mut s, grant()).unwrap();
    apply(&mut s, expire(None)).unwrap();
    assert!(s.leases().is_empty());
}

/// As etcd: a store never compacted takes a compaction at revision 0; one compacted refuses
/// any revision up to where it was compacted.
#[test]
fn compaction_at_zero_is_taken_until_the_store_was_compacted() {
    let compact = |revision| Request::Compact(CompactRequest { revision });
    let mut s = KvStore::new();
    s.execute(&compact(0)).unwrap();
    for i in 0..3 {
        s.execute(&put("k", &format!("v{i}"))).unwrap();
    }
    s.execute(&compact(0)).unwrap();
    s.execute(&compact(2)).unwrap();
    assert_eq!(s.compacted_revision(), 2);
    for revision in [0, 1, 2] {
        assert_eq!(
            s.execute(&compact(revision)),
            Err(KvError::Compacted { compacted: 2 })
        );
    }
    assert_eq!(s.revision(), 4, "a new store is at revision 1, as etcd's");
    assert_eq!(s.execute(&compact(5)), Err(KvError::FutureRevision));
}
