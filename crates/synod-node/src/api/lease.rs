//! Leases: granted and revoked through the log, kept alive and expired by the leader.
//!
//! The state machine knows which leases exist, their TTLs and their keys; when a lease runs
//! out is not replicated state but the leader's clock, as in etcd. The leader keeps a deadline
//! per lease, pushes it back on every keep-alive, and proposes a revoke (deleting the lease's
//! keys through the log) when it passes. The promise to a holder: its keys are not deleted by
//! expiry before the TTL of the last keep-alive answer it got has run out. So:
//!
//! - a keep-alive is answered only after the leader confirmed its leadership for that moment
//!   (a linearizable read barrier: a majority still follows it), and never for a lease whose
//!   deadline has passed or whose revoke is in flight (those get TTL 0, as in etcd);
//! - a new leader starts every lease's clock at its TTL plus an election timeout (etcd's
//!   extension on promotion), since a keep-alive may have been answered by its predecessor
//!   just before it lost touch;
//! - an expiry revoke enters the log only on the node that decided it, while it still leads in
//!   the era whose clock expired the lease; it is never forwarded to a successor, whose clocks
//!   may have been renewed since.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synod_core::{ReadConsistency, Role};
use synod_kv as kv;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::lease_client::LeaseClient;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use super::{attempt, errors, Api, Attempt};
use crate::node::Refusal;

/// etcd's largest TTL.
const TTL_MAX: i64 = 9_000_000_000;
/// Revokes proposed per sweep at most, so a mass expiry does not flood the log at once.
const REVOKES_PER_SWEEP: usize = 256;

/// The leader's lease clocks.
#[derive(Debug, Default)]
pub struct LeaseKeeper {
    state: Mutex<Clocks>,
}

#[derive(Debug, Default)]
struct Clocks {
    /// The era this node leads, while it leads.
    era: Option<u64>,
    deadlines: HashMap<i64, Instant>,
    /// Leases whose revoke this leader decided: doomed, never renewed again.
    revoking: HashSet<i64>,
}

impl LeaseKeeper {
    fn clocks(&self) -> std::sync::MutexGuard<'_, Clocks> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pushes lease `id`'s deadline to `ttl` seconds from now, unless its time is up (its
    /// deadline passed, or its revoke is decided): then `false`, and the holder must be told
    /// the lease is gone.
    fn renew(&self, id: i64, ttl: i64) -> bool {
        let now = Instant::now();
        let mut clocks = self.clocks();
        if clocks.revoking.contains(&id) || clocks.deadlines.get(&id).is_some_and(|d| *d <= now) {
            return false;
        }
        let deadline = now + Duration::from_secs(ttl.max(0) as u64);
        clocks.deadlines.insert(id, deadline);
        true
    }

    /// Starts lease `id`'s clock at `ttl`, for a lease this leader just granted.
    fn start(&self, id: i64, ttl: i64) {
        let deadline = Instant::now() + Duration::from_secs(ttl.max(0) as u64);
        let mut clocks = self.clocks();
        clocks.revoking.remove(&id);
        clocks.deadlines.insert(id, deadline);
    }

    /// Seconds left on lease `id` (its full TTL if its clock has not started here).
    fn remaining(&self, id: i64, ttl: i64) -> i64 {
        match self.clocks().deadlines.get(&id) {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                left.as_secs_f64().ceil() as i64
            }
            None => ttl,
        }
    }

    fn forget(&self, id: i64) {
        let mut clocks = self.clocks();
        clocks.deadlines.remove(&id);
        clocks.revoking.remove(&id);
    }

    /// Brings the clocks in line with the leases that exist and who leads (`leading`: the era
    /// this node leads in); returns the leases whose time is up. A lease whose clock starts
    /// here without a grant by this leader (every lease, after a promotion) gets its TTL plus
    /// `extension`. An expired lease stays marked as revoking, and is returned again a second
    /// later if its revoke has not applied by then.
    fn sweep(
        &self,
        leading: Option<u64>,
        leases: &std::collections::BTreeMap<i64, kv::Lease>,
        extension: Duration,
    ) -> Vec<i64> {
        let mut clocks = self.clocks();
        if clocks.era != leading {
            clocks.era = leading;
            clocks.deadlines.clear();
            clocks.revoking.clear();
        }
        if leading.is_none() {
            return Vec::new();
        }
        let now = Instant::now();
        clocks.deadlines.retain(|id, _| leases.contains_key(id));
        clocks.revoking.retain(|id| leases.contains_key(id));
        let mut expired = Vec::new();
        let Clocks {
            deadlines,
            revoking,
            ..
        } = &mut *clocks;
        for (&id, lease) in leases {
            let deadline = deadlines
                .entry(id)
                .or_insert_with(|| now + Duration::from_secs(lease.ttl.max(0) as u64) + extension);
            if *deadline <= now && expired.len() < REVOKES_PER_SWEEP {
                expired.push(id);
                revoking.insert(id);
                *deadline = now + Duration::from_secs(1);
            }
        }
        expired
    }
}

/// Expires leases while this node leads; runs until the server stops.
pub async fn expire_leases(api: Arc<Api>) {
    let mut stop = api.stop.clone();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let status = api.node.current_status();
        let leading = (status.role == Role::Leader).then_some(status.era);
        let expired = {
            let kv = api.node.shared.kv();
            api.leases
                .sweep(leading, kv.leases(), api.config.election_timeout)
        };
        let Some(era) = leading else { continue };
        for id in expired {
            let api = api.clone();
            tokio::spawn(async move {
                let revoke = kv::Request::LeaseRevoke(kv::LeaseRevokeRequest { id });
                match api.node.propose_as_leader(&revoke, era).await {
                    Ok(_) => debug!(lease = id, "lease expired and revoked"),
                    Err(crate::node::Refusal::Kv(kv::KvError::LeaseNotFound(_))) => {}
                    Err(e) => warn!(lease = id, error = %e, "could not revoke an expired lease"),
                }
            });
        }
    }
}

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

    async fn keep_alive(&self, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let request = Request::new(pb::LeaseKeepAliveRequest { id });
        let response = self
            .on_leader(
                request,
                true,
                |r| async move {
                    // Leadership confirmed for this moment, and everything committed before
                    // it applied here: a deposed leader must not renew what its successor
                    // may already have revoked.
                    let era = self.node.current_status().era;
                    match self.node.read_barrier(ReadConsistency::Linearizable).await {
                        Ok(()) => {}
                        Err(Refusal::NotLeader(_)) => return Ok(Attempt::NotLeader),
                        Err(refusal) => return Err(errors::refusal(refusal)),
                    }
                    let status = self.node.current_status();
                    if status.role != Role::Leader || status.era != era {
                        return Ok(Attempt::NotLeader);
                    }
                    let (ttl, revision) = {
                        let kv = self.node.shared.kv();
                        (kv.leases().get(&r.id).map(|l| l.ttl), kv.revision())
                    };
                    // etcd answers a keep-alive of an unknown or expired lease with TTL 0.
                    let ttl = match ttl {
                        Some(ttl) if self.leases.renew(r.id, ttl) => ttl,
                        _ => 0,
                    };
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
        let api = &*self.0;
        if request.get_ref().ttl > TTL_MAX {
            return Err(errors::lease_ttl_too_large());
        }
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
                                Attempt::Done(applied) => {
                                    api.leases.start(id, ttl);
                                    Attempt::Done(pb::LeaseGrantResponse {
                                        header: Some(api.header(applied.revision)),
                                        id,
                                        ttl,
                                        error: String::new(),
                                    })
                                }
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
        let api = &*self.0;
        let id = request.get_ref().id;
        let revoke = kv::Request::LeaseRevoke(kv::LeaseRevokeRequest { id });
        api.on_leader(
            request,
            false,
            |_| async {
                Ok(match attempt(api.node.propose(&revoke).await)? {
                    Attempt::Done(applied) => {
                        api.leases.forget(id);
                        Attempt::Done(pb::LeaseRevokeResponse {
                            header: Some(api.header(applied.revision)),
                        })
                    }
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
        let api = self.0.clone();
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
                    _ = stop.changed() => return,
                };
                let answer = api.keep_alive(request.id).await;
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
        let api = &*self.0;
        api.on_leader(
            request,
            true,
            |r| async move {
                let (lease, revision) = {
                    let kv = api.node.shared.kv();
                    (kv.leases().get(&r.id).cloned(), kv.revision())
                };
                let header = Some(api.header(revision));
                // etcd answers for an unknown lease with TTL -1.
                let Some(lease) = lease else {
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
                    ttl: api.leases.remaining(r.id, lease.ttl),
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
        let api = &*self.0;
        api.anywhere(request, |_| async move {
            match attempt(api.node.read_barrier(ReadConsistency::Linearizable).await)? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn leases(ttls: &[(i64, i64)]) -> BTreeMap<i64, kv::Lease> {
        ttls.iter()
            .map(|&(id, ttl)| {
                let lease = kv::Lease {
                    ttl,
                    keys: BTreeSet::new(),
                };
                (id, lease)
            })
            .collect()
    }

    const EXTENSION: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn only_a_leader_expires_and_a_new_term_extends_the_clocks() {
        let keeper = LeaseKeeper::default();
        let all = leases(&[(1, 5), (2, 60)]);
        assert!(
            keeper.sweep(None, &all, EXTENSION).is_empty(),
            "followers expire nothing"
        );
        assert!(
            keeper.sweep(Some(3), &all, EXTENSION).is_empty(),
            "clocks start at TTL plus the extension"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            keeper.sweep(Some(3), &all, EXTENSION).is_empty(),
            "not before TTL + extension"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(keeper.sweep(Some(3), &all, EXTENSION), vec![1]);
        assert!(
            keeper.sweep(Some(3), &all, EXTENSION).is_empty(),
            "a revoke in flight is not proposed again at once"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            keeper.sweep(Some(3), &all, EXTENSION),
            vec![1],
            "but again if it has not applied a second later"
        );
        // A new term: every lease gets its TTL and the extension again.
        assert!(keeper.sweep(Some(4), &all, EXTENSION).is_empty());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(keeper.renew(1, 5));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(
            keeper.sweep(Some(4), &all, EXTENSION).is_empty(),
            "kept alive"
        );
        assert_eq!(keeper.remaining(1, 5), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_whose_time_is_up_is_not_renewed() {
        let keeper = LeaseKeeper::default();
        let all = leases(&[(1, 5), (2, 5)]);
        keeper.sweep(Some(1), &all, Duration::ZERO);
        tokio::time::advance(Duration::from_secs(5)).await;
        // Lease 1's deadline has passed, though no sweep has seen it yet.
        assert!(!keeper.renew(1, 5), "expired: not renewed");
        // Lease 2's revoke is decided: it stays doomed even when its deadline moves.
        assert_eq!(keeper.sweep(Some(1), &all, Duration::ZERO), vec![1, 2]);
        assert!(!keeper.renew(2, 5), "revoke in flight: not renewed");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!keeper.renew(2, 5), "still revoking");
        // Granted again under the same id (after the revoke applied): a fresh clock.
        keeper.start(2, 5);
        assert!(keeper.renew(2, 5));
    }
}
