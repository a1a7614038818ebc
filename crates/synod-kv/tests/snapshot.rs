//! The snapshot format: what it writes, what it shares when read back, and the older versions
//! it still reads.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

mod common;

use bytes::Bytes;
use common::{entry, put, put_leased};

fn value_of(store: &KvStore, key: &str) -> Option<Bytes> {
    store.get(key.as_bytes()).map(|kv| kv.value)
}
use synod_core::RequestId;
use synod_kv::*;

fn delete_prefix(prefix: &str) -> Request {
    Request::DeleteRange(DeleteRangeRequest {
        range: KeyRange::prefix(prefix),
        prev_kv: true,
    })
}

/// A store with a bit of everything a snapshot holds: keys written once and many times, keys
/// deleted and written again, a transaction's changes at one revision, leases with keys,
/// a compaction (so that some keys were last written before the history kept), and sessions.
fn varied_store() -> KvStore {
    store_of(Request::LeaseGrant)
}

/// [`varied_store`], its lease granted by the kind of request `grant` makes.
fn store_of(grant: fn(LeaseGrantRequest) -> Request) -> KvStore {
    let mut s = KvStore::new();
    let mut index = 0;
    let mut apply = |s: &mut KvStore, client: u64, request: &Request| {
        index += 1;
        let (_, result) = s
            .apply(&entry(index, RequestId::new(client, index), request))
            .unwrap();
        result.unwrap();
    };
    apply(&mut s, 1, &grant(LeaseGrantRequest { id: 7, ttl: 60 }));
    apply(&mut s, 1, &put("old", "before the compaction"));
    apply(&mut s, 2, &put_leased("leased/a", "1", 7));
    apply(&mut s, 2, &put("dir/x", "x1"));
    apply(&mut s, 1, &put("dir/y", "y1"));
    apply(&mut s, 1, &Request::Compact(CompactRequest { revision: 4 }));
    for round in 0..3 {
        apply(&mut s, 3, &put("dir/x", &format!("x{}", round + 2)));
        apply(&mut s, 2, &put_leased("leased/b", &format!("b{round}"), 7));
    }
    apply(&mut s, 3, &delete_prefix("dir/"));
    apply(&mut s, 1, &put("dir/x", "again"));
    apply(
        &mut s,
        2,
        &Request::Txn(TxnRequest {
            compare: vec![],
            success: vec![put("t/1", "one"), put("t/2", "two"), put("dir/x", "txn")],
            failure: vec![],
        }),
    );
    apply(&mut s, 4, &put("t/1", "one more"));
    s
}

/// Snapshots written before values were written once (format version 5) are still read: a
/// member upgraded in place restarts from the snapshot it saved. Its lease reads as numbered
/// 0, as the same grant replayed from a log of that time is (`LeaseGrantUnnumbered`), so a
/// member restored from the snapshot and one that replays the log agree, on the lease and on
/// what an expiry naming it does.
#[test]
fn a_version_5_snapshot_still_restores() {
    let mut restored = KvStore::restore(include_bytes!("fixtures/snapshot-v5.bin")).unwrap();
    let mut replayed = store_of(Request::LeaseGrantUnnumbered);
    assert_eq!(restored, replayed);
    assert_eq!(restored.leases().get(&7).map(|l| l.granted_at), Some(0));
    let expire = |granted_at| {
        Request::LeaseExpire(LeaseExpireRequest {
            id: 7,
            era: 0,
            granted_at: Some(granted_at),
        })
    };
    for store in [&mut restored, &mut replayed] {
        assert_eq!(store.execute(&expire(1)), Err(KvError::LeaseNotFound(7)));
        store.execute(&expire(0)).unwrap();
    }
    assert_eq!(restored, replayed);
    assert!(value_of(&restored, "leased/a").is_none());
}

#[test]
fn a_varied_store_restores_exactly_and_writes_the_same_bytes_again() {
    let store = varied_store();
    let bytes = store.snapshot();
    let restored = KvStore::restore(&bytes).unwrap();
    assert_eq!(restored, store);
    assert_eq!(restored.snapshot(), bytes);
}

/// A store of many versions of a few keys: the snapshot holds each value once, not as the
/// change that wrote it, the next change's previous value and the key's record.
fn rewritten_store(keys: usize, versions: usize, value_bytes: usize) -> KvStore {
    let mut s = KvStore::new();
    for version in 0..versions {
        for key in 0..keys {
            let value = format!("{key:04}-{version:04}-").repeat(value_bytes / 10);
            s.execute(&put(&format!("k/{key}"), &value)).unwrap();
        }
    }
    s
}

#[test]
fn each_value_is_written_once() {
    let (keys, versions, value_bytes) = (20, 10, 1000);
    let store = rewritten_store(keys, versions, value_bytes);
    let values = keys * versions * value_bytes;
    let bytes = store.snapshot();
    // Each change's key and fields, and a few bytes for each reference, beside its value.
    let overhead = keys * versions * 32;
    assert!(
        bytes.len() <= values + overhead,
        "{} bytes of snapshot for {values} bytes of values",
        bytes.len()
    );
    assert!(bytes.len() >= values);
}

#[test]
fn a_restored_store_holds_each_value_once() {
    let store = rewritten_store(5, 4, 100);
    let restored = KvStore::restore(&store.snapshot()).unwrap();
    assert_eq!(restored, store);
    let changes: Vec<&Event> = restored.events_from(0).unwrap().collect();
    let same = |a: &Bytes, b: &Bytes| a.as_ptr() == b.as_ptr() && a.len() == b.len();
    for (at, change) in changes.iter().enumerate() {
        let Some(prev) = &change.prev_kv else {
            continue;
        };
        let writer = changes[..at]
            .iter()
            .rfind(|c| c.kv.key == change.kv.key)
            .unwrap();
        assert!(
            same(&prev.value, &writer.kv.value),
            "change {at}'s previous value"
        );
        assert!(same(&prev.key, &writer.kv.key), "change {at}'s key");
    }
    for key in 0..5 {
        let key = format!("k/{key}");
        let record = restored.get(key.as_bytes()).unwrap();
        let newest = changes.iter().rfind(|c| c.kv.key == key).unwrap();
        assert!(same(&record.value, &newest.kv.value), "{key}'s record");
    }
}

/// A transaction's changes share one revision, deletes among them: the puts are found.
#[test]
fn the_puts_of_a_transaction_are_found_among_its_deletes() {
    let mut s = KvStore::new();
    for i in 0..100 {
        s.execute(&put(&format!("d/{i:03}"), "doomed")).unwrap();
    }
    let txn = TxnRequest {
        compare: vec![],
        success: vec![delete_prefix("d/"), put("t/a", "a1"), put("t/b", "b1")],
        failure: vec![],
    };
    s.execute(&Request::Txn(txn)).unwrap();
    s.execute(&put("t/a", "a2")).unwrap();
    let bytes = s.snapshot();
    let restored = KvStore::restore(&bytes).unwrap();
    assert_eq!(restored, s);
    assert_eq!(restored.snapshot(), bytes);
    let changes: Vec<&Event> = restored.events_from(0).unwrap().collect();
    let t_b = changes.iter().rfind(|c| c.kv.key == "t/b").unwrap();
    let t_a = changes.iter().find(|c| c.kv.key == "t/a").unwrap();
    let newest_a = changes.last().unwrap();
    let record = restored.get(b"t/b").unwrap();
    assert_eq!(record.value.as_ptr(), t_b.kv.value.as_ptr(), "t/b's record");
    let prev = newest_a.prev_kv.as_ref().unwrap();
    assert_eq!(
        prev.value.as_ptr(),
        t_a.kv.value.as_ptr(),
        "t/a's previous value"
    );
}

/// The store checks its snapshots' checksums, but whatever the bytes, reading them answers an
/// error or a store, never a panic (nor a reference to a change that is not there).
#[test]
fn damaged_snapshots_are_refused_without_a_panic() {
    let bytes = varied_store().snapshot();
    for at in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[at] ^= flip;
            let _ = KvStore::restore(&damaged);
        }
    }
    for cut in 0..bytes.len() {
        assert!(KvStore::restore(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}
