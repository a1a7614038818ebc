//! The Lease service. Granting and revoking go through the log; keeping alive, time-to-live
//! and expiry run on the leader's lease clocks, which live in the replica
//! (`synod_replica`'s `lease` module says what a holder is promised and how it is kept), so
//! the simulator runs them too. A follower forwards these calls to the leader (under Basic
//! Paxos, to the keeper of the lease clocks).

use std::sync::Arc;
use std::time::Instant;

use synod_core::ReadConsistency;
use synod_kv as kv;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::lease_client::LeaseClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::leadership::stream_guard;
use super::{attempt, errors, Api, Attempt};

/// etcd's largest TTL.
const TTL_MAX: i64 = 9_000_000_000;

/// What a lease is counted as against the space quota, in bytes.
const LEASE_COST: usize = 64;

/// The Lease service.
#[derive(Debug)]
pub struct LeaseService(pub Arc<Api>);

impl Api {
    /// The shortest TTL granted: leases must outlive an election (etcd's rule, 1.5 election
    /// timeouts, rounded up to seconds).
    fn min_ttl(&self) -> i64 {
        (self.config.election_timeout.as_secs_f64() * 1.5)
            .ceil()
            .max(1.0) as i64
    }

    /// Renews lease `id` where its clocks are kept. The holder counts the TTL from when the
    /// answer reaches it, while the keeper renewed when it answered, so an answer that took
    /// long to come back here (a slow relay from the keeper, a process stalled in between) is
    /// not passed on: the keep-alive is asked again (renewing twice is harmless), and the
    /// holder hears a TTL at most half an election timeout after this member asked.
    /// `caller` is who asked (while auth is on), so that a keep-alive forwarded to the
    /// leader keeps its user.
    pub(crate) async fn keep_alive(
        &self,
        id: i64,
        caller: Option<&super::auth::Caller>,
    ) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let asked = Instant::now();
            let response = self.keep_alive_once(id, caller).await?;
            if asked.elapsed() <= self.config.election_timeout / 2 {
                return Ok(response);
            }
            if Instant::now() >= deadline {
                return Err(errors::timed_out());
            }
        }
    }

    async fn keep_alive_once(
        &self,
        id: i64,
        caller: Option<&super::auth::Caller>,
    ) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let mut request = Request::new(pb::LeaseKeepAliveRequest { id });
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller.clone());
        }
        let response = self
            .on_leader(
                request,
                true,
                |r| async move {
                    let ttl = match attempt(self.node.keep_alive(r.id).await)? {
                        Attempt::Done(ttl) => ttl,
                        Attempt::NotLeader => return Ok(Attempt::NotLeader),
                    };
                    let revision = self.node.shared.kv().revision();
                    Ok(Attempt::Done(pb::LeaseKeepAliveResponse {
                        header: Some(self.header(revision)),
                        id: r.id,
                        ttl,
                    }))
                },
                |channel, r| async move {
                    let (metadata, extensions, body) = r.into_parts();
                    let stream = tokio_stream::once(body);
                    let request = Request::from_parts(metadata, extensions, stream);
                    let mut responses = LeaseClient::new(channel)
                        .lease_keep_alive(request)
                        .await?
                        .into_inner();
                    match responses.message().await? {
                        Some(response) => Ok(Response::new(response)),
                        None => Err(errors::leader_changed()),
                    }
                },
            )
            .await?;
        Ok(response.into_inner())
    }
}

/// A fresh lease id: positive, from the clock and a counter, mixed.
fn new_lease_id() -> i64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = (nanos ^ n.rotate_left(40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((mixed >> 2) as i64).max(1)
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        self.0.caller(&request)?;
        let api = &*self.0;
        if request.get_ref().ttl > TTL_MAX {
            return Err(errors::lease_ttl_too_large());
        }
        // A lease costs little space, but etcd refuses it too while a NOSPACE alarm is up.
        api.check_quota(LEASE_COST)?;
        let chosen = request.get_ref().id;
        let ttl = request.get_ref().ttl.max(api.min_ttl());
        api.on_leader(
            request,
            false,
            |_| async move {
                // An id the server picks may collide; pick again. One the client picked may not.
                for _ in 0..8 {
                    let id = if chosen != 0 { chosen } else { new_lease_id() };
                    let grant = kv::Request::LeaseGrant(kv::LeaseGrantRequest { id, ttl });
                    match api.node.propose(&grant).await {
                        Err(crate::node::Refusal::Kv(kv::KvError::LeaseExists(_)))
                            if chosen == 0 =>
                        {
                            continue
                        }
                        result => {
                            return Ok(match attempt(result)? {
                                Attempt::Done(applied) => Attempt::Done(pb::LeaseGrantResponse {
                                    header: Some(api.header(applied.revision)),
                                    id,
                                    ttl,
                                    error: String::new(),
                                }),
                                Attempt::NotLeader => Attempt::NotLeader,
                            })
                        }
                    }
                }
                Err(Status::internal(
                    "etcdserver: could not pick a free lease id",
                ))
            },
            |channel, r| async move { LeaseClient::new(channel).lease_grant(r).await },
        )
        .await
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let revoke = synod_kv::LeaseRevokeRequest {
            id: request.get_ref().id,
        };
        // Checked now, and again when applied (write access to every key of the lease).
        let revoke = self
            .0
            .as_caller(&request, synod_kv::Request::LeaseRevoke(revoke))?;
        let api = &*self.0;
        api.on_leader(
            request,
            false,
            |_| async {
                Ok(match attempt(api.node.propose(&revoke).await)? {
                    Attempt::Done(applied) => Attempt::Done(pb::LeaseRevokeResponse {
                        header: Some(api.header(applied.revision)),
                    }),
                    Attempt::NotLeader => Attempt::NotLeader,
                })
            },
            |channel, r| async move { LeaseClient::new(channel).lease_revoke(r).await },
        )
        .await
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.0.caller(&request)?;
        let caller = request.extensions().get::<super::auth::Caller>().cloned();
        let api = self.0.clone();
        let mut leader = stream_guard(&api, &request);
        let mut inbound = request.into_inner();
        let (out, responses) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut stop = api.stop.clone();
            loop {
                let request = tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(request)) => request,
                        Ok(None) | Err(_) => return,
                    },
                    lost = leader.lost() => {
                        let _ = out.send(Err(lost)).await;
                        return;
                    }
                    _ = stop.changed() => return,
                };
                let answer = api.keep_alive(request.id, caller.as_ref()).await;
                let failed = answer.is_err();
                if out.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(responses)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let user = self.0.caller(&request)?;
        let api = &*self.0;
        // With `keys`, the answer names keys: the caller must be allowed to read each
        // (etcd's fix for CVE-2023-32082).
        if let (Some(user), true) = (&user, request.get_ref().keys) {
            let kv = api.node.shared.kv();
            let keys = kv.leases().get(&request.get_ref().id).map(|l| &l.keys);
            let readable = keys.into_iter().flatten().all(|key| {
                kv.auth()
                    .allows(user, synod_kv::auth::Access::Read, &kv::KeyRange::key(key))
            });
            if !readable {
                return Err(super::auth::status(
                    synod_kv::auth::AuthError::PermissionDenied,
                ));
            }
        }
        api.on_leader(
            request,
            true,
            |r| async move {
                let remaining = match attempt(api.node.time_to_live(r.id).await)? {
                    Attempt::Done(ttl) => ttl,
                    Attempt::NotLeader => return Ok(Attempt::NotLeader),
                };
                let (lease, revision) = {
                    let kv = api.node.shared.kv();
                    (kv.leases().get(&r.id).cloned(), kv.revision())
                };
                let header = Some(api.header(revision));
                // etcd answers for an unknown lease with TTL -1.
                let Some(lease) = lease.filter(|_| remaining >= 0) else {
                    return Ok(Attempt::Done(pb::LeaseTimeToLiveResponse {
                        header,
                        id: r.id,
                        ttl: -1,
                        ..Default::default()
                    }));
                };
                Ok(Attempt::Done(pb::LeaseTimeToLiveResponse {
                    header,
                    id: r.id,
                    ttl: remaining,
                    granted_ttl: lease.ttl,
                    keys: if r.keys {
                        lease.keys.into_iter().collect()
                    } else {
                        Vec::new()
                    },
                }))
            },
            |channel, r| async move { LeaseClient::new(channel).lease_time_to_live(r).await },
        )
        .await
    }

    /// Every lease, as of a linearizable read (etcd's Leases waits for one too).
    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.0.caller(&request)?;
        let api = &*self.0;
        // No replica call of its own (a read of the store's lease table, always empty
        // here): refused as the other lease calls are, without a read round for nothing.
        if !synod_replica::has_consensus(&api.config.protocol) {
            return Err(errors::no_leases(&api.config.protocol));
        }
        api.anywhere(request, |_| async move {
            match attempt(
                api.node
                    .read_barrier(ReadConsistency::Linearizable, None)
                    .await,
            )? {
                Attempt::Done(()) => {}
                Attempt::NotLeader => return Ok(Attempt::NotLeader),
            }
            let kv = api.node.shared.kv();
            Ok(Attempt::Done(pb::LeaseLeasesResponse {
                header: Some(api.header(kv.revision())),
                leases: kv
                    .leases()
                    .keys()
                    .map(|&id| pb::LeaseStatus { id })
                    .collect(),
            }))
        })
        .await
    }
}
