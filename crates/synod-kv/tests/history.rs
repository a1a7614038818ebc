//! History (reads in the past, compaction, events for watches), leases, and range options,
//! against etcd's documented semantics.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{b, put_leased};
use synod_kv::*;

/// A put that does not ask for the previous value.
fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: b(key),
        value: b(value),
        ..Default::default()
    })
}

fn delete(key: &str) -> Request {
    Request::DeleteRange(DeleteRangeRequest {
        range: KeyRange::key(key),
        prev_kv: false,
    })
}

fn read(store: &KvStore, request: RangeRequest) -> Result<RangeResponse, KvError> {
    match store.range(&request)?.response {
        Response::Range(r) => Ok(r),
        other => panic!("a range answered {other:?}"),
    }
}

fn values_at(store: &KvStore, prefix: &str, revision: i64) -> Vec<(String, String)> {
    let r = read(
        store,
        RangeRequest {
            range: KeyRange::prefix(prefix),
            revision,
            ..Default::default()
        },
    )
    .unwrap();
    r.kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn reads_at_a_past_revision_see_the_store_as_it_was() {
    let mut s = KvStore::new();
    s.execute(&put("k/a", "1")).unwrap(); // rev 2
    s.execute(&put("k/b", "1")).unwrap(); // rev 3
    s.execute(&put("k/a", "2")).unwrap(); // rev 4
    s.execute(&delete("k/b")).unwrap(); // rev 5
    s.execute(&put("k/c", "1")).unwrap(); // rev 6
    assert_eq!(s.revision(), 6);
    assert_eq!(values_at(&s, "k/", 1), pairs(&[]));
    assert_eq!(values_at(&s, "k/", 2), pairs(&[("k/a", "1")]));
    assert_eq!(values_at(&s, "k/", 3), pairs(&[("k/a", "1"), ("k/b", "1")]));
    assert_eq!(values_at(&s, "k/", 4), pairs(&[("k/a", "2"), ("k/b", "1")]));
    assert_eq!(values_at(&s, "k/", 5), pairs(&[("k/a", "2")]));
    assert_eq!(values_at(&s, "k/", 6), pairs(&[("k/a", "2"), ("k/c", "1")]));
    assert_eq!(values_at(&s, "k/", 0), values_at(&s, "k/", 6));
    let past = read(
        &s,
        RangeRequest {
            range: KeyRange::key("k/a"),
            revision: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let a = &past.kvs[0];
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 2, 1));
    let future = RangeRequest {
        range: KeyRange::key("k/a"),
        revision: 7,
        ..Default::default()
    };
    assert_eq!(read(&s, future), Err(KvError::FutureRevision));
}

#[test]
fn compaction_forgets_the_past_but_keeps_its_revision_readable() {
    let mut s = KvStore::new();
    for i in 0..5 {
        s.execute(&put("k", &i.to_string())).unwrap(); // revs 2..=6
    }
    let compact = |rev| Request::Compact(CompactRequest { revision: rev });
    assert_eq!(s.execute(&compact(7)).unwrap_err(), KvError::FutureRevision);
    let applied = s.execute(&compact(4)).unwrap();
    assert_eq!(applied.revision, 6, "compaction does not move the revision");
    assert_eq!(s.compacted_revision(), 4);
    assert_eq!(values_at(&s, "k", 4), pairs(&[("k", "2")]));
    let before = RangeRequest {
        range: KeyRange::key("k"),
        revision: 3,
        ..Default::default()
    };
    assert_eq!(read(&s, before), Err(KvError::Compacted { compacted: 4 }));
    assert_eq!(
        s.execute(&compact(4)).unwrap_err(),
        KvError::Compacted { compacted: 4 },
        "compacting again at the same revision is refused, as etcd does"
    );
    assert!(s.events_from(3).is_err());
    let revisions: Vec<i64> = s.events_from(4).unwrap().map(Event::revision).collect();
    assert_eq!(revisions, vec![4, 5, 6]);
}

#[test]
fn events_carry_the_change_and_the_previous_value() {
    let mut s = KvStore::new();
    s.execute(&put("a", "1")).unwrap();
    s.execute(&put("a", "2")).unwrap();
    s.execute(&delete("a")).unwrap();
    let events: Vec<&Event> = s.events_from(0).unwrap().collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].prev_kv, None);
    assert_eq!(events[1].kv.value, b("2"));
    assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b("1"));
    assert_eq!(events[2].kind, EventKind::Delete);
    assert_eq!(events[2].kv.mod_revision, 4);
    assert!(events[2].kv.value.is_empty());
    assert_eq!(events[2].prev_kv.as_ref().unwrap().version, 2);
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let mut s = KvStore::new();
    let grant = Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 10 });
    let applied = s.execute(&grant).unwrap();
    assert_eq!(applied.revision, 1, "granting a lease writes no key");
    assert_eq!(s.execute(&grant).unwrap_err(), KvError::LeaseExists(7));
    s.execute(&put_leased("a", "1", 7)).unwrap();
    s.execute(&put_leased("b", "1", 7)).unwrap();
    s.execute(&put("c", "1")).unwrap();
    assert_eq!(s.get(b"a").unwrap().lease, 7);
    assert_eq!(s.leases()[&7].keys.len(), 2);
    // Re-putting without a lease detaches the key.
    s.execute(&put("b", "2")).unwrap();
    assert_eq!(s.leases()[&7].keys.len(), 1);
    let before = s.revision();
    s.execute(&Request::LeaseRevoke(LeaseRevokeRequest { id: 7 }))
        .unwrap();
    assert_eq!(s.revision(), before + 1);
    assert!(s.get(b"a").is_none());
    assert!(s.get(b"b").is_some() && s.get(b"c").is_some());
    assert!(s.leases().is_empty());
    assert_eq!(
        s.execute(&Request::LeaseRevoke(LeaseRevokeRequest { id: 7 }))
            .unwrap_err(),
        KvError::LeaseNotFound(7)
    );
}

#[test]
fn a_transaction_that_fails_validation_changes_nothing() {
    let mut s = KvStore::new();
    s.execute(&put("a", "1")).unwrap();
    let txn = Request::Txn(TxnRequest {
        compare: vec![],
        success: vec![put("b", "1"), put_leased("c", "1", 99)],
        failure: vec![],
    });
    assert_eq!(s.execute(&txn).unwrap_err(), KvError::LeaseNotFound(99));
    assert!(
        s.get(b"b").is_none(),
        "the first put of the branch did not run"
    );
    assert_eq!(s.revision(), 2);
    let nested_compact = Request::Txn(TxnRequest {
        compare: vec![],
        success: vec![Request::Compact(CompactRequest { revision: 2 })],
        failure: vec![],
    });
    assert!(matches!(
        s.execute(&nested_compact),
        Err(KvError::Invalid(_))
    ));
}

#[test]
fn nested_compares_see_the_store_before_the_transaction() {
    let mut s = KvStore::new();
    s.execute(&put("a", "old")).unwrap();
    let txn = Request::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            put("a", "new"),
            Request::Txn(TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::key("a"),
                    target: CompareTarget::Value(b("old")),
                    op: CompareOp::Equal,
                }],
                success: vec![put("saw", "old")],
                failure: vec![put("saw", "new")],
            }),
        ],
        failure: vec![],
    });
    s.execute(&txn).unwrap();
    assert_eq!(s.get(b"saw").unwrap().value, b("old"));
}

#[test]
fn puts_may_keep_the_value_or_the_lease() {
    let mut s = KvStore::new();
    s.execute(&Request::LeaseGrant(LeaseGrantRequest { id: 3, ttl: 5 }))
        .unwrap();
    s.execute(&put_leased("k", "v", 3)).unwrap();
    let keep_value = Request::Put(PutRequest {
        key: b("k"),
        lease: 0,
        ignore_value: true,
        ..Default::default()
    });
    s.execute(&keep_value).unwrap();
    let kv = s.get(b"k").unwrap();
    assert_eq!((kv.value, kv.lease, kv.version), (b("v"), 0, 2));
    let keep_lease = Request::Put(PutRequest {
        key: b("missing"),
        ignore_lease: true,
        ..Default::default()
    });
    assert_eq!(s.execute(&keep_lease).unwrap_err(), KvError::KeyNotFound);
    let both = Request::Put(PutRequest {
        key: b("k"),
        value: b("x"),
        ignore_value: true,
        ..Default::default()
    });
    assert!(matches!(s.execute(&both), Err(KvError::Invalid(_))));
}

#[test]
fn ranges_sort_filter_and_limit_like_etcd() {
    let mut s = KvStore::new();
    s.execute(&put("p/c", "1")).unwrap(); // rev 2
    s.execute(&put("p/a", "3")).unwrap(); // rev 3
    s.execute(&put("p/b", "2")).unwrap(); // rev 4
    s.execute(&put("p/c", "0")).unwrap(); // rev 5
    let keys = |r: RangeResponse| -> Vec<String> {
        r.kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    };
    let by = |order, target, limit| RangeRequest {
        range: KeyRange::prefix("p/"),
        sort_order: order,
        sort_target: target,
        limit,
        ..Default::default()
    };
    let first_created = read(&s, by(SortOrder::Ascend, SortTarget::Create, 1)).unwrap();
    assert_eq!(keys(first_created.clone()), vec!["p/c"]);
    assert_eq!((first_created.count, first_created.more), (3, true));
    let newest = read(&s, by(SortOrder::Descend, SortTarget::Mod, 0)).unwrap();
    assert_eq!(keys(newest), vec!["p/c", "p/b", "p/a"]);
    let by_value = read(&s, by(SortOrder::None, SortTarget::Value, 0)).unwrap();
    assert_eq!(
        keys(by_value),
        vec!["p/c", "p/b", "p/a"],
        "NONE means ascending"
    );
    let descending_keys = read(&s, by(SortOrder::Descend, SortTarget::Key, 2)).unwrap();
    assert_eq!(keys(descending_keys), vec!["p/c", "p/b"]);
    let filtered = read(
        &s,
        RangeRequest {
            range: KeyRange::prefix("p/"),
            max_create_revision: 3,
            min_mod_revision: 3,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(keys(filtered), vec!["p/a", "p/c"]);
    // As etcd: a negative maximum leaves nothing, a negative minimum everything.
    let bounded = |max_mod_revision, min_create_revision| RangeRequest {
        range: KeyRange::prefix("p/"),
        max_mod_revision,
        min_create_revision,
        ..Default::default()
    };
    assert_eq!(keys(read(&s, bounded(-1, 0)).unwrap()), Vec::<&str>::new());
    assert_eq!(keys(read(&s, bounded(0, -1)).unwrap()).len(), 3);
}

#[test]
fn snapshots_keep_history_and_leases() {
    let mut s = KvStore::new();
    s.execute(&Request::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 30 }))
        .unwrap();
    s.execute(&put_leased("a", "1", 1)).unwrap();
    s.execute(&put("b", "1")).unwrap();
    s.execute(&delete("b")).unwrap();
    s.execute(&Request::Compact(CompactRequest { revision: 3 }))
        .unwrap();
    let restored = KvStore::restore(&s.snapshot()).unwrap();
    assert_eq!(restored, s);
    assert_eq!(restored.snapshot(), s.snapshot());
    assert_eq!(
        values_at(&restored, "", 3),
        pairs(&[("a", "1"), ("b", "1")])
    );
    let mut restored = restored;
    restored
        .execute(&Request::LeaseRevoke(LeaseRevokeRequest { id: 1 }))
        .unwrap();
    assert!(
        restored.get(b"a").is_none(),
        "a lease's keys are rebuilt on restore"
    );
}

#[test]
fn the_history_window_compacts_as_writes_go_on() {
    let mut s = KvStore::with_limits(100, 3);
    for i in 0..10 {
        s.execute(&put("k", &i.to_string())).unwrap(); // revs 2..=11
    }
    assert_eq!(s.compacted_revision(), 8);
    assert_eq!(s.history_len(), 4, "revisions 8 to 11");
    assert_eq!(values_at(&s, "k", 8), pairs(&[("k", "6")]));
    let restored = KvStore::restore(&s.snapshot()).unwrap();
    assert_eq!(restored, s, "the window survives a snapshot");
}
