//! Between etcd's protobuf messages and the store's requests and responses. Every field a
//! client sends is checked here; nothing a client sends can make the server panic.

use synod_kv as kv;
use synod_proto::etcdserverpb as pb;
use synod_proto::mvccpb;
use tonic::Status;

use super::errors;

/// Refuses what etcd refuses in a range before reading (its `checkRangeRequest`): no key, or
/// a sort order or target it does not know. (An unknown order is not taken for "none".)
pub fn check_range(r: &pb::RangeRequest) -> Result<(), Status> {
    use pb::range_request::{SortOrder, SortTarget};
    if r.key.is_empty() {
        return Err(errors::empty_key());
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(errors::invalid_sort_option());
    }
    Ok(())
}

/// A protobuf range request as the store's (checked by [`check_range`] first).
pub fn range(r: &pb::RangeRequest) -> kv::RangeRequest {
    use pb::range_request::{SortOrder, SortTarget};
    kv::RangeRequest {
        range: kv::KeyRange {
            key: r.key.clone(),
            range_end: r.range_end.clone(),
        },
        limit: r.limit.max(0) as u64,
        revision: r.revision,
        sort_order: match SortOrder::try_from(r.sort_order) {
            Ok(SortOrder::Ascend) => kv::SortOrder::Ascend,
            Ok(SortOrder::Descend) => kv::SortOrder::Descend,
            _ => kv::SortOrder::None,
        },
        sort_target: match SortTarget::try_from(r.sort_target) {
            Ok(SortTarget::Version) => kv::SortTarget::Version,
            Ok(SortTarget::Create) => kv::SortTarget::Create,
            Ok(SortTarget::Mod) => kv::SortTarget::Mod,
            Ok(SortTarget::Value) => kv::SortTarget::Value,
            _ => kv::SortTarget::Key,
        },
        count_only: r.count_only,
        keys_only: r.keys_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

/// A protobuf put as the store's; refuses what etcd refuses before proposing.
pub fn put(p: &pb::PutRequest) -> Result<kv::PutRequest, Status> {
    if p.key.is_empty() {
        return Err(errors::empty_key());
    }
    Ok(kv::PutRequest {
        key: p.key.clone(),
        value: p.value.clone(),
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    })
}

/// A protobuf delete as the store's.
pub fn delete(d: &pb::DeleteRangeRequest) -> Result<kv::DeleteRangeRequest, Status> {
    if d.key.is_empty() {
        return Err(errors::empty_key());
    }
    Ok(kv::DeleteRangeRequest {
        range: kv::KeyRange {
            key: d.key.clone(),
            range_end: d.range_end.clone(),
        },
        prev_kv: d.prev_kv,
    })
}

/// A protobuf transaction as the store's, nested no deeper than the store accepts.
pub fn txn(t: &pb::TxnRequest) -> Result<kv::TxnRequest, Status> {
    txn_at(t, 0)
}

fn txn_at(t: &pb::TxnRequest, depth: usize) -> Result<kv::TxnRequest, Status> {
    if depth >= kv::TXN_DEPTH_MAX {
        return Err(Status::invalid_argument(
            "etcdserver: transactions nest too deep",
        ));
    }
    let branch = |ops: &[pb::RequestOp]| -> Result<Vec<kv::Request>, Status> {
        ops.iter().map(|op| request_op(op, depth)).collect()
    };
    Ok(kv::TxnRequest {
        compare: t.compare.iter().map(compare).collect::<Result<_, _>>()?,
        success: branch(&t.success)?,
        failure: branch(&t.failure)?,
    })
}

fn request_op(op: &pb::RequestOp, depth: usize) -> Result<kv::Request, Status> {
    use pb::request_op::Request as Op;
    match &op.request {
        Some(Op::RequestRange(r)) => {
            check_range(r)?;
            Ok(kv::Request::Range(range(r)))
        }
        Some(Op::RequestPut(p)) => Ok(kv::Request::Put(put(p)?)),
        Some(Op::RequestDeleteRange(d)) => Ok(kv::Request::DeleteRange(delete(d)?)),
        Some(Op::RequestTxn(t)) => Ok(kv::Request::Txn(txn_at(t, depth + 1)?)),
        None => Err(Status::invalid_argument(
            "etcdserver: a transaction operation is empty",
        )),
    }
}

fn compare(c: &pb::Compare) -> Result<kv::Compare, Status> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    if c.key.is_empty() {
        return Err(errors::empty_key());
    }
    let op = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => kv::CompareOp::Equal,
        Ok(CompareResult::Greater) => kv::CompareOp::Greater,
        Ok(CompareResult::Less) => kv::CompareOp::Less,
        Ok(CompareResult::NotEqual) => kv::CompareOp::NotEqual,
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare result",
            ))
        }
    };
    let number = |n: Option<i64>| n.unwrap_or(0);
    let union = c.target_union.as_ref();
    let target = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Version) => kv::CompareTarget::Version(number(match union {
            Some(TargetUnion::Version(v)) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Create) => kv::CompareTarget::CreateRevision(number(match union {
            Some(TargetUnion::CreateRevision(v)) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv::CompareTarget::ModRevision(number(match union {
            Some(TargetUnion::ModRevision(v)) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv::CompareTarget::Lease(number(match union {
            Some(TargetUnion::Lease(v)) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Value) => kv::CompareTarget::Value(match union {
            Some(TargetUnion::Value(v)) => v.clone(),
            _ => Default::default(),
        }),
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare target",
            ))
        }
    };
    Ok(kv::Compare {
        range: kv::KeyRange {
            key: c.key.clone(),
            range_end: c.range_end.clone(),
        },
        target,
        op,
    })
}

/// A stored key as etcd's `KeyValue`.
pub fn key_value(kv: &kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.clone(),
        lease: kv.lease,
    }
}

/// A change as etcd's `Event`, with the previous value only when asked for.
pub fn event(e: &kv::Event, with_prev: bool) -> mvccpb::Event {
    let kind = match e.kind {
        kv::EventKind::Put => mvccpb::event::EventType::Put,
        kv::EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(key_value(&e.kv)),
        prev_kv: e.prev_kv.as_ref().filter(|_| with_prev).map(key_value),
    }
}

/// A range's result.
pub fn range_response(r: kv::RangeResponse, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.iter().map(key_value).collect(),
        more: r.more,
        count: r.count as i64,
    }
}

/// A put's result.
pub fn put_response(r: kv::PutResponse, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header),
        prev_kv: r.prev_kv.as_ref().map(key_value),
    }
}

/// A delete's result.
pub fn delete_response(
    r: kv::DeleteRangeResponse,
    header: pb::ResponseHeader,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: r.deleted as i64,
        prev_kvs: r.prev_kvs.iter().map(key_value).collect(),
    }
}

/// A transaction's result; nested results carry the same header, as etcd's do.
pub fn txn_response(r: kv::TxnResponse, header: pb::ResponseHeader) -> pb::TxnResponse {
    use pb::response_op::Response as Op;
    let responses = r
        .responses
        .into_iter()
        .filter_map(|response| {
            let op = match response {
                kv::Response::Range(r) => Op::ResponseRange(range_response(r, header)),
                kv::Response::Put(p) => Op::ResponsePut(put_response(p, header)),
                kv::Response::DeleteRange(d) => Op::ResponseDeleteRange(delete_response(d, header)),
                kv::Response::Txn(t) => Op::ResponseTxn(txn_response(t, header)),
                // Not allowed inside a transaction; the store refuses them there.
                kv::Response::Compact
                | kv::Response::LeaseGrant(_)
                | kv::Response::LeaseRevoke
                | kv::Response::LeaseEpoch
                | kv::Response::Alarm(_)
                | kv::Response::Auth => return None,
            };
            Some(pb::ResponseOp { response: Some(op) })
        })
        .collect();
    pb::TxnResponse {
        header: Some(header),
        succeeded: r.succeeded,
        responses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_compare_without_a_value_compares_with_zero_or_empty() {
        let c = pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Version as i32,
            key: Bytes::from_static(b"k"),
            ..Default::default()
        };
        let converted = compare(&c).unwrap();
        assert_eq!(converted.target, kv::CompareTarget::Version(0));
        let bad = pb::Compare { result: 17, ..c };
        assert!(compare(&bad).is_err());
    }

    #[test]
    fn ranges_and_compares_without_a_key_or_with_an_unknown_sort_are_refused_as_etcd_does() {
        let message = |r: Result<(), Status>| r.map_err(|s| (s.code(), s.message().to_string()));
        let ok = pb::RangeRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        };
        assert_eq!(message(check_range(&ok)), Ok(()));
        let empty_key = (
            tonic::Code::InvalidArgument,
            "etcdserver: key is not provided".to_string(),
        );
        let bad_sort = (
            tonic::Code::InvalidArgument,
            "etcdserver: invalid sort option".to_string(),
        );
        let no_key = pb::RangeRequest {
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        };
        assert_eq!(message(check_range(&no_key)), Err(empty_key.clone()));
        let order = pb::RangeRequest {
            sort_order: 99,
            ..ok.clone()
        };
        assert_eq!(message(check_range(&order)), Err(bad_sort.clone()));
        let target = pb::RangeRequest {
            sort_target: 99,
            ..ok.clone()
        };
        assert_eq!(message(check_range(&target)), Err(bad_sort.clone()));
        // The same inside a transaction, and a compare without a key.
        let in_txn = pb::TxnRequest {
            failure: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(target)),
            }],
            ..Default::default()
        };
        assert_eq!(message(txn(&in_txn).map(drop)), Err(bad_sort));
        let keyless = pb::TxnRequest {
            compare: vec![pb::Compare::default()],
            ..Default::default()
        };
        assert_eq!(message(txn(&keyless).map(drop)), Err(empty_key));
    }

    #[test]
    fn deeply_nested_transactions_are_refused() {
        let mut t = pb::TxnRequest::default();
        for _ in 0..20 {
            t = pb::TxnRequest {
                success: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestTxn(t)),
                }],
                ..Default::default()
            };
        }
        assert!(txn(&t).is_err());
    }
}
