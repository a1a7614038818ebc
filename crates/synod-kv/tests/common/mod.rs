//! Helpers the store's test files share.

#![allow(dead_code)] // each test file uses some of them

use bytes::Bytes;
use synod_core::{Entry, Payload, Proposal, RequestId};
use synod_kv::*;

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A put that asks for the previous value back.
pub fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: b(key),
        value: b(value),
        prev_kv: true,
        ..Default::default()
    })
}

pub fn put_leased(key: &str, value: &str, lease: i64) -> Request {
    Request::Put(PutRequest {
        key: b(key),
        value: b(value),
        lease,
        ..Default::default()
    })
}

/// A request as the log carries it, for [`KvStore::apply`].
pub fn entry(index: u64, id: RequestId, request: &Request) -> Entry {
    Entry {
        index,
        era: 1,
        payload: Payload::Command(Proposal {
            id,
            command: request.encode(),
        }),
    }
}
