//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use synod_core::ReadConsistency;
use synod_kv as kv;
use synod_proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

use super::{attempt, convert, errors, Api, Attempt};

/// The KV service.
#[derive(Debug)]
pub struct KvService(pub Arc<Api>);

impl Api {
    /// Proposes a write on this node (which believes it leads) and waits for its result.
    pub(crate) async fn write(
        &self,
        request: &kv::Request,
    ) -> Result<Attempt<kv::Applied>, Status> {
        attempt(self.node.propose(request).await)
    }

    /// Runs a range on the local state machine as it is now. One key, now, is read in place.
    /// A range over more may read millions (its count covers every key in it, whatever its
    /// limit), and one key at a past revision walks the history since: either is read and
    /// converted on a blocking thread, from a copy of the store taken now (`read_copy`:
    /// cheap at any size), so that the node loop and every connection sharing the event
    /// loop's thread go on meanwhile. At most `super::WIDE_RANGES` run so at once.
    async fn local_range(&self, request: &pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        let range = convert::range(request);
        let read = move |store: &kv::KvStore| -> Result<(i64, pb::RangeResponse), Status> {
            let applied = store.range(&range).map_err(errors::kv)?;
            let kv::Response::Range(found) = applied.response else {
                return Err(Status::internal("a range answered with something else"));
            };
            let response = convert::range_response(found, pb::ResponseHeader::default());
            Ok((applied.revision, response))
        };
        let (revision, mut response) = if request.range_end.is_empty() && request.revision <= 0 {
            read(&self.node.shared.kv())?
        } else {
            let _turn = self
                .wide_ranges
                .acquire()
                .await
                .map_err(|_| Status::unavailable("the server is stopping"))?;
            let store = self.node.shared.kv().read_copy();
            tokio::task::spawn_blocking(move || read(&store))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "a range on a blocking thread failed");
                    Status::internal("a range failed on the server")
                })??
        };
        response.header = Some(self.header(revision));
        Ok(response)
    }
}

/// Bytes of keys and values a request may put (what the quota counts): for a transaction,
/// the costlier branch, since only one runs (etcd's `costTxn`).
fn put_bytes(request: &kv::Request) -> usize {
    let branch = |ops: &[kv::Request]| ops.iter().map(put_bytes).sum::<usize>();
    match request {
        kv::Request::Put(p) => p.key.len() + p.value.len(),
        kv::Request::Txn(t) => branch(&t.success).max(branch(&t.failure)),
        _ => 0,
    }
}

/// The response of a write that answered with the wrong kind of result: a bug, not a client
/// error, but not one to crash a server over.
fn mismatch() -> Status {
    Status::internal("the state machine answered with the wrong kind of response")
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let api = &*self.0;
        api.check_size(request.get_ref())?;
        convert::check_range(request.get_ref())?;
        let keys = kv::KeyRange {
            key: request.get_ref().key.clone(),
            range_end: request.get_ref().range_end.clone(),
        };
        api.check_access(&request, synod_kv::auth::Access::Read, &keys)?;
        if request.get_ref().serializable {
            return api.local_range(request.get_ref()).await.map(Response::new);
        }
        api.anywhere(request, |r| async move {
            let keys = synod_core::KeySpan {
                key: bytes::Bytes::copy_from_slice(&r.key),
                range_end: bytes::Bytes::copy_from_slice(&r.range_end),
            };
            let barrier = api
                .node
                .read_barrier(ReadConsistency::Linearizable, Some(keys));
            match attempt(barrier.await)? {
                // As etcd, a cluster found corrupt answers no linearizable read (serializable
                // ones, from the member's own copy, still go).
                Attempt::Done(()) if api.node.shared.kv().corrupt() => Err(errors::corrupt()),
                Attempt::Done(()) => api.local_range(&r).await.map(Attempt::Done),
                Attempt::NotLeader => Ok(Attempt::NotLeader),
            }
        })
        .await
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let api = &*self.0;
        api.check_size(request.get_ref())?;
        api.check_quota(request.get_ref().key.len() + request.get_ref().value.len())?;
        let write = api.as_caller(&request, kv::Request::Put(convert::put(request.get_ref())?))?;
        api.anywhere(request, |_| async {
            Ok(match api.write(&write).await? {
                Attempt::Done(applied) => {
                    let kv::Response::Put(put) = applied.response else {
                        return Err(mismatch());
                    };
                    let header = api.header(applied.revision);
                    Attempt::Done(convert::put_response(put, header))
                }
                Attempt::NotLeader => Attempt::NotLeader,
            })
        })
        .await
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let api = &*self.0;
        api.check_size(request.get_ref())?;
        let write = kv::Request::DeleteRange(convert::delete(request.get_ref())?);
        let write = api.as_caller(&request, write)?;
        api.anywhere(request, |_| async {
            Ok(match api.write(&write).await? {
                Attempt::Done(applied) => {
                    let kv::Response::DeleteRange(deleted) = applied.response else {
                        return Err(mismatch());
                    };
                    let header = api.header(applied.revision);
                    Attempt::Done(convert::delete_response(deleted, header))
                }
                Attempt::NotLeader => Attempt::NotLeader,
            })
        })
        .await
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let api = &*self.0;
        api.check_size(request.get_ref())?;
        let txn = kv::Request::Txn(convert::txn(request.get_ref())?);
        if txn.longest_operation_list() > api.config.max_txn_ops {
            return Err(errors::too_many_ops());
        }
        let cost = put_bytes(&txn);
        if cost > 0 {
            api.check_quota(cost)?;
        }
        let txn = api.as_caller(&request, txn)?;
        // Read-only transactions go through the log too: simple, and linearizable.
        api.anywhere(request, |_| async {
            Ok(match api.write(&txn).await? {
                Attempt::Done(applied) => {
                    let kv::Response::Txn(result) = applied.response else {
                        return Err(mismatch());
                    };
                    let header = api.header(applied.revision);
                    Attempt::Done(convert::txn_response(result, header))
                }
                Attempt::NotLeader => Attempt::NotLeader,
            })
        })
        .await
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let api = &*self.0;
        let compact = kv::Request::Compact(kv::CompactRequest {
            revision: request.get_ref().revision,
        });
        let compact = api.as_caller(&request, compact)?;
        api.anywhere(request, |_| async {
            Ok(match api.write(&compact).await? {
                Attempt::Done(applied) => Attempt::Done(pb::CompactionResponse {
                    header: Some(api.header(applied.revision)),
                }),
                Attempt::NotLeader => Attempt::NotLeader,
            })
        })
        .await
    }
}
