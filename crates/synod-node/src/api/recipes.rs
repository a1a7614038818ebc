//! etcd's Lock and Election services (`v3lockpb`, `v3electionpb`): the mutex and leader
//! election recipes of etcd's `concurrency` package, run by the server for clients that speak
//! only gRPC (jetcd, the gRPC gateway). Both stand on leases and revisions alone:
//!
//! - A contender writes `<name>/<lease in hex>` under its lease, unless that key exists (then
//!   it already contends). Its create revision is its place in line.
//! - It holds the lock, or leads, once no key under `<name>/` was created before its own. It
//!   waits for that on this member's state machine, which has applied at least up to its own
//!   key, so every earlier contender is visible to it.
//! - A contender whose lease runs out loses its key, and with it its place.
//!
//! A client that goes away while it waits has its key deleted, as etcd's recipe does.

use std::sync::Arc;

use bytes::Bytes;
use synod_kv as kv;
use synod_proto::v3electionpb as epb;
use synod_proto::v3lockpb as lpb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::lease_server::Lease;

use super::{convert, Api, Attempt};

/// The Lock service.
#[derive(Debug)]
pub struct LockService(pub Arc<Api>);

/// The Election service.
#[derive(Debug)]
pub struct ElectionService(pub Arc<Api>);

/// etcd's answers (errors of its `concurrency` package, passed through as they are).
const SESSION_EXPIRED: &str = "mutex: session is expired";
/// Proclaiming and resigning write the key of the leadership `leader` names: the caller must
/// be allowed to write it.
fn check_leader_key<T>(
    api: &Api,
    request: &Request<T>,
    leader: Option<&epb::LeaderKey>,
) -> Result<Who, Status> {
    let key = leader
        .map(|l| kv::KeyRange::key(&l.key))
        .unwrap_or_default();
    api.check_access(request, synod_kv::auth::Access::Write, &key)
}

/// Who a recipe's transactions run for.
type Who = Option<super::auth::Principal>;

const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

impl Api {
    /// Runs `txn` through the log on whichever member leads; its revision and result.
    /// `who` is the client it runs for (its user, while auth is on).
    async fn txn_anywhere(
        &self,
        who: &Who,
        txn: kv::TxnRequest,
    ) -> Result<(i64, kv::TxnResponse), Status> {
        let request = kv::Request::As {
            user: who.as_ref().map(|p| p.name.clone()),
            since: who.as_ref().and_then(|p| p.since),
            request: Box::new(kv::Request::Txn(txn)),
        };
        self.anywhere(Request::new(()), |_| async {
            Ok(match self.write(&request).await? {
                Attempt::Done(applied) => match applied.response {
                    kv::Response::Txn(result) => Attempt::Done((applied.revision, result)),
                    _ => return Err(Status::internal("a transaction answered otherwise")),
                },
                Attempt::NotLeader => Attempt::NotLeader,
            })
        })
        .await
        .map(Response::into_inner)
    }
}

/// `<name>/`: where a recipe's contenders write.
fn prefix(name: &[u8]) -> Bytes {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix.into()
}

/// A contender's key: the prefix and its lease in hex (etcd's `%s%x`).
fn contender_key(prefix: &[u8], lease: i64) -> Bytes {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key.into()
}

fn created_at(key: &Bytes, revision: i64) -> kv::Compare {
    kv::Compare {
        range: kv::KeyRange::key(key),
        target: kv::CompareTarget::CreateRevision(revision),
        op: kv::CompareOp::Equal,
    }
}

fn put(key: &Bytes, value: Bytes, lease: i64) -> kv::Request {
    kv::Request::Put(kv::PutRequest {
        key: key.clone(),
        value,
        lease,
        ..Default::default()
    })
}

/// Writes the contender's key unless it exists; the revision of the write and the key as it
/// now is (its create revision is the contender's place in line).
async fn contend(
    api: &Api,
    who: &Who,
    key: &Bytes,
    value: Bytes,
    lease: i64,
) -> Result<(i64, kv::KeyValue), Status> {
    let get = kv::Request::Range(kv::RangeRequest {
        range: kv::KeyRange::key(key),
        ..Default::default()
    });
    let (revision, result) = api
        .txn_anywhere(
            who,
            kv::TxnRequest {
                compare: vec![created_at(key, 0)],
                success: vec![put(key, value.clone(), lease), get.clone()],
                failure: vec![get],
            },
        )
        .await?;
    let found = result.responses.into_iter().find_map(|r| match r {
        kv::Response::Range(range) => range.kvs.into_iter().next(),
        _ => None,
    });
    let kv = found.ok_or_else(|| Status::unknown(SESSION_EXPIRED))?;
    Ok((revision, kv))
}

/// Waits until this member has applied `revision` and holds no key under `prefix` created
/// before `mine`; then checks that `key` is still the contender's (its lease may have run
/// out meanwhile). Returns the revision it saw that at.
async fn wait_for_turn(
    api: &Api,
    prefix: &Bytes,
    key: &Bytes,
    mine: i64,
    revision: i64,
) -> Result<i64, Status> {
    let mut revisions = api.node.revision.clone();
    let mut stop = api.stop.clone();
    let range = kv::KeyRange::prefix(prefix);
    loop {
        let seen = {
            let store = api.node.shared.kv();
            let current = store.revision();
            let ahead = store.any_created_before(&range, mine);
            (current >= revision && !ahead).then(|| {
                let still_mine = store.get(key).is_some_and(|kv| kv.create_revision == mine);
                (current, still_mine)
            })
        };
        match seen {
            Some((current, true)) => return Ok(current),
            Some((_, false)) => return Err(Status::unknown(SESSION_EXPIRED)),
            None => {}
        }
        tokio::select! {
            changed = revisions.changed() => if changed.is_err() {
                return Err(super::errors::stopped());
            },
            _ = stop.changed() => return Err(super::errors::stopped()),
        }
    }
}

/// Deletes a contender's key if the waiting client goes away (the handler's future is
/// dropped), unless disarmed: its place in line must not block the others forever.
struct Withdraw {
    api: Arc<Api>,
    who: Who,
    key: Bytes,
    created: i64,
    armed: bool,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (api, key, created) = (self.api.clone(), self.key.clone(), self.created);
        let who = self.who.clone();
        tokio::spawn(async move {
            let who = &who;
            let delete = kv::Request::DeleteRange(kv::DeleteRangeRequest {
                range: kv::KeyRange::key(&key),
                prev_kv: false,
            });
            let _ = api
                .txn_anywhere(
                    who,
                    kv::TxnRequest {
                        compare: vec![created_at(&key, created)],
                        success: vec![delete],
                        failure: vec![],
                    },
                )
                .await;
        });
    }
}

/// The TTL of the lease granted to a contender that names none (etcd's session default).
const DEFAULT_TTL: i64 = 60;

/// Contends under `name` and waits for its turn; the key, its create revision, the revision
/// the turn came at and the lease it holds under (granted for it if it named none, as etcd's
/// servers grant a session lease, so that two contenders never share a key).
async fn take_turn(
    api: &Arc<Api>,
    who: &Who,
    name: &[u8],
    lease: i64,
    value: Bytes,
    proclaim: bool,
) -> Result<(Bytes, i64, i64, i64), Status> {
    api.check_quota(name.len() + value.len() + 32)?;
    let lease = if lease == 0 {
        let grant = pb::LeaseGrantRequest {
            ttl: DEFAULT_TTL,
            id: 0,
        };
        super::lease::LeaseService(api.clone())
            .lease_grant(Request::new(grant))
            .await?
            .into_inner()
            .id
    } else {
        lease
    };
    let prefix = prefix(name);
    let key = contender_key(&prefix, lease);
    let (revision, kv) = contend(api, who, &key, value.clone(), lease).await?;
    let mine = kv.create_revision;
    let mut withdraw = Withdraw {
        api: api.clone(),
        who: who.clone(),
        key: key.clone(),
        created: mine,
        armed: true,
    };
    // Contending again with another value (a campaign resumed): say the new one.
    let mut revision = revision;
    if proclaim && kv.value != value {
        revision = proclaim_as(api, who, &key, mine, value, lease).await?;
    }
    let at = wait_for_turn(api, &prefix, &key, mine, revision).await?;
    // This member may lag: the key may be gone already (its lease ran out) where the leader
    // is. Confirm it is still ours as of a linearizable read, as etcd's recipe does.
    // (Waits for a leader, and tries again across a change of leader, until the request
    // timeout. Under dns a secondary's read barrier is its own copy: no confirmation there.)
    api.anywhere(Request::new(()), |_| async {
        let span = synod_core::KeySpan {
            key: key.clone(),
            range_end: Bytes::new(),
        };
        let barrier = api
            .node
            .read_barrier(synod_core::ReadConsistency::Linearizable, Some(span));
        super::attempt(barrier.await)
    })
    .await?;
    let still_mine = api
        .node
        .shared
        .kv()
        .get(&key)
        .is_some_and(|kv| kv.create_revision == mine);
    if !still_mine {
        return Err(Status::unknown(SESSION_EXPIRED));
    }
    withdraw.armed = false;
    Ok((key, mine, at, lease))
}

/// Puts `value` on the leader's key if it is still the one created at `created`.
async fn proclaim_as(
    api: &Api,
    who: &Who,
    key: &Bytes,
    created: i64,
    value: Bytes,
    lease: i64,
) -> Result<i64, Status> {
    let (revision, result) = api
        .txn_anywhere(
            who,
            kv::TxnRequest {
                compare: vec![created_at(key, created)],
                success: vec![put(key, value, lease)],
                failure: vec![],
            },
        )
        .await?;
    if !result.succeeded {
        return Err(Status::unknown(NOT_LEADER));
    }
    Ok(revision)
}

#[tonic::async_trait]
impl lpb::lock_server::Lock for LockService {
    async fn lock(
        &self,
        request: Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        let who = &self.0.check_access(
            &request,
            synod_kv::auth::Access::Write,
            &kv::KeyRange::prefix(&request.get_ref().name),
        )?;
        let api = &self.0;
        let asked = request.into_inner();
        api.check_size(&asked)?;
        let (key, _, at, _) =
            take_turn(api, who, &asked.name, asked.lease, Bytes::new(), false).await?;
        Ok(Response::new(lpb::LockResponse {
            header: Some(api.header(at)),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<lpb::UnlockRequest>,
    ) -> Result<Response<lpb::UnlockResponse>, Status> {
        let who = &self.0.check_access(
            &request,
            synod_kv::auth::Access::Write,
            &kv::KeyRange::key(&request.get_ref().key),
        )?;
        let api = &self.0;
        let delete = kv::Request::DeleteRange(kv::DeleteRangeRequest {
            range: kv::KeyRange::key(&request.get_ref().key),
            prev_kv: false,
        });
        let (revision, _) = api
            .txn_anywhere(
                who,
                kv::TxnRequest {
                    compare: vec![],
                    success: vec![delete],
                    failure: vec![],
                },
            )
            .await?;
        Ok(Response::new(lpb::UnlockResponse {
            header: Some(api.header(revision)),
        }))
    }
}

/// The first contender under `name` (the leader), as of a linearizable read.
async fn leader_of(
    api: &Api,
    who: &Who,
    name: &[u8],
) -> Result<(i64, Option<kv::KeyValue>), Status> {
    let first = kv::Request::Range(kv::RangeRequest {
        range: kv::KeyRange::prefix(prefix(name)),
        sort_order: kv::SortOrder::Ascend,
        sort_target: kv::SortTarget::Create,
        limit: 1,
        ..Default::default()
    });
    let (revision, result) = api
        .txn_anywhere(
            who,
            kv::TxnRequest {
                compare: vec![],
                success: vec![first],
                failure: vec![],
            },
        )
        .await?;
    let leader = result.responses.into_iter().find_map(|r| match r {
        kv::Response::Range(range) => range.kvs.into_iter().next(),
        _ => None,
    });
    Ok((revision, leader))
}

#[tonic::async_trait]
impl epb::election_server::Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let who = &self.0.check_access(
            &request,
            synod_kv::auth::Access::Write,
            &kv::KeyRange::prefix(&request.get_ref().name),
        )?;
        let api = &self.0;
        let asked = request.into_inner();
        api.check_size(&asked)?;
        let (key, rev, at, lease) =
            take_turn(api, who, &asked.name, asked.lease, asked.value, true).await?;
        Ok(Response::new(epb::CampaignResponse {
            header: Some(api.header(at)),
            leader: Some(epb::LeaderKey {
                name: asked.name,
                key,
                rev,
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let who = &check_leader_key(&self.0, &request, request.get_ref().leader.as_ref())?;
        let api = &self.0;
        let asked = request.into_inner();
        api.check_size(&asked)?;
        let leader = asked
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let revision =
            proclaim_as(api, who, &leader.key, leader.rev, asked.value, leader.lease).await?;
        Ok(Response::new(epb::ProclaimResponse {
            header: Some(api.header(revision)),
        }))
    }

    async fn leader(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let who = &self.0.check_access(
            &request,
            synod_kv::auth::Access::Read,
            &kv::KeyRange::prefix(&request.get_ref().name),
        )?;
        let api = &self.0;
        let (revision, leader) = leader_of(api, who, &request.get_ref().name).await?;
        let kv = leader.ok_or_else(|| Status::unknown(NO_LEADER))?;
        Ok(Response::new(epb::LeaderResponse {
            header: Some(api.header(revision)),
            kv: Some(convert::key_value(&kv)),
        }))
    }

    type ObserveStream = ReceiverStream<Result<epb::LeaderResponse, Status>>;

    async fn observe(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        self.0.check_access(
            &request,
            synod_kv::auth::Access::Read,
            &kv::KeyRange::prefix(&request.get_ref().name),
        )?;
        let api = self.0.clone();
        let range = kv::RangeRequest {
            range: kv::KeyRange::prefix(prefix(&request.get_ref().name)),
            sort_order: kv::SortOrder::Ascend,
            sort_target: kv::SortTarget::Create,
            limit: 1,
            ..Default::default()
        };
        let (out, responses) = mpsc::channel(16);
        tokio::spawn(async move {
            // Each leader, and each value it proclaims, once, as this member applies them.
            let mut revisions = api.node.revision.clone();
            let mut stop = api.stop.clone();
            let mut last: Option<(Bytes, i64)> = None;
            loop {
                let now = {
                    let store = api.node.shared.kv();
                    match store.range(&range).map(|a| (a.revision, a.response)) {
                        Ok((revision, kv::Response::Range(r))) => {
                            r.kvs.into_iter().next().map(|kv| (revision, kv))
                        }
                        _ => None,
                    }
                };
                if let Some((revision, kv)) = now {
                    let seen = (kv.key.clone(), kv.mod_revision);
                    if last.as_ref() != Some(&seen) {
                        last = Some(seen);
                        let response = epb::LeaderResponse {
                            header: Some(api.header(revision)),
                            kv: Some(convert::key_value(&kv)),
                        };
                        if out.send(Ok(response)).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    changed = revisions.changed() => if changed.is_err() { return },
                    _ = stop.changed() => return,
                    _ = out.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(responses)))
    }

    async fn resign(
        &self,
        request: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let who = &check_leader_key(&self.0, &request, request.get_ref().leader.as_ref())?;
        let api = &self.0;
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let delete = kv::Request::DeleteRange(kv::DeleteRangeRequest {
            range: kv::KeyRange::key(&leader.key),
            prev_kv: false,
        });
        let (revision, _) = api
            .txn_anywhere(
                who,
                kv::TxnRequest {
                    compare: vec![created_at(&leader.key, leader.rev)],
                    success: vec![delete],
                    failure: vec![],
                },
            )
            .await?;
        Ok(Response::new(epb::ResignResponse {
            header: Some(api.header(revision)),
        }))
    }
}
