//! etcd's v3 gRPC API over a node: KV, Watch, Lease, Cluster, Maintenance, Lock and Election.
//!
//! Any node accepts any request. Serializable reads and watches are served from the local
//! state machine. Writes and linearizable reads need the leader: on the leader they go to the
//! engine (writes through the log, reads by ReadIndex); on a follower they are forwarded to
//! the leader's client port, marked so the leader does not forward them again. When there is
//! no leader, requests wait for one until the request timeout.

mod auth;
mod cluster;
pub mod convert;
pub mod errors;
pub mod gateway;
mod kv;
mod leadership;
mod learner;
mod lease;
mod recipes;
mod watch;

pub(crate) use auth::TOKEN;
pub(crate) use cluster::alarm_name;
pub(crate) use leadership::watch_leadership;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synod_core::NodeId;
use synod_proto::etcdserverpb as pb;
use tokio::sync::watch as signal;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::config::ServerConfig;
use crate::node::{NodeHandle, Refusal};
use crate::transport::PeerDirectory;

/// Ranges over many keys that read on blocking threads at once: each keeps its copy of the
/// store (and the tree nodes writes have since replaced) until it is done.
pub(crate) const WIDE_RANGES: usize = 4;

/// Metadata key marking a request forwarded by another node.
const FORWARDED: &str = "synod-forwarded";

/// What every service shares.
#[derive(Debug)]
pub struct Api {
    /// The node loop.
    pub node: NodeHandle,
    /// The server's settings.
    pub config: Arc<ServerConfig>,
    /// The cluster id in every response header.
    pub cluster_id: u64,
    /// Client URLs of the other members, learnt from their handshakes.
    pub directory: Arc<PeerDirectory>,
    /// Fires when the server shuts down (ends watch and keep-alive streams).
    pub stop: signal::Receiver<bool>,
    /// `true` while this member has had no leader for a while: streams that asked for one
    /// end (see `leadership`).
    leaderless: signal::Sender<bool>,
    /// Alarms being proposed (see `Api::raise_alarm_for`).
    raising: Arc<Mutex<std::collections::HashSet<(u64, synod_kv::AlarmKind)>>>,
    /// One snapshot streamed at a time: each holds a copy of the store's encoding.
    pub(crate) snapshots: Arc<tokio::sync::Semaphore>,
    /// One hash of the whole store at a time (`Hash`, `HashKV`): each copies the store.
    pub(crate) hashes: Arc<tokio::sync::Semaphore>,
    /// Ranges over many keys read on blocking threads at once (see `local_range`); others
    /// wait their turn.
    pub(crate) wide_ranges: Arc<tokio::sync::Semaphore>,
    channels: Mutex<HashMap<NodeId, Channel>>,
    /// How this member reaches other members' client ports to forward requests: with TLS
    /// (its own certificate as the client's) when the client port has it.
    forward_tls: Option<tonic::transport::ClientTlsConfig>,
    /// Failed logins and password checks under way.
    pub(crate) logins: auth::Logins,
}

/// How one attempt to serve a request locally went.
pub(crate) enum Attempt<T> {
    Done(T),
    /// This node turned out not to lead (the request had no effect): look again.
    NotLeader,
}

impl Api {
    /// The API of `node`.
    pub fn new(
        node: NodeHandle,
        cluster_id: u64,
        config: Arc<ServerConfig>,
        directory: Arc<PeerDirectory>,
        stop: signal::Receiver<bool>,
    ) -> Api {
        Api {
            cluster_id,
            node,
            config,
            directory,
            stop,
            leaderless: signal::Sender::new(false),
            raising: Arc::default(),
            snapshots: Arc::new(tokio::sync::Semaphore::new(1)),
            hashes: Arc::new(tokio::sync::Semaphore::new(1)),
            wide_ranges: Arc::new(tokio::sync::Semaphore::new(WIDE_RANGES)),
            channels: Mutex::new(HashMap::new()),
            forward_tls: None,
            logins: auth::Logins::default(),
        }
    }

    /// Forwards to other members' client ports with this TLS configuration.
    pub fn with_forward_tls(mut self, tls: Option<tonic::transport::ClientTlsConfig>) -> Api {
        self.forward_tls = tls;
        self
    }

    /// The response header etcd puts on every answer.
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.node.shared.id.0,
            revision,
            raft_term: self.node.current_status().era,
        }
    }

    /// A header at the state machine's current revision.
    pub fn current_header(&self) -> pb::ResponseHeader {
        let revision = self.node.shared.kv().revision();
        self.header(revision)
    }

    /// Refuses requests over the size limit with etcd's error.
    pub fn check_size(&self, message: &impl prost::Message) -> Result<(), Status> {
        if message.encoded_len() > self.config.max_request_bytes {
            return Err(errors::too_large());
        }
        Ok(())
    }

    /// etcd's space quota, checked before a write that adds `cost` bytes: refused while a
    /// NOSPACE alarm is raised, and refused, raising the alarm, when the write would take
    /// the store past `--quota-backend-bytes`. (The store refuses such writes too once the
    /// alarm is applied, on every member alike.)
    pub fn check_quota(&self, cost: usize) -> Result<(), Status> {
        let Ok(quota) = u64::try_from(self.config.quota_backend_bytes) else {
            return Ok(());
        };
        let (raised, size) = {
            let kv = self.node.shared.kv();
            (kv.out_of_space(), kv.size_bytes())
        };
        if raised {
            return Err(errors::no_space());
        }
        if size.saturating_add(cost as u64) > quota {
            self.raise_alarm(synod_kv::AlarmKind::NoSpace);
            return Err(errors::no_space());
        }
        Ok(())
    }

    /// Proposes raising `alarm` for this member, in the background, until it is applied or a
    /// request timeout passes.
    pub fn raise_alarm(&self, alarm: synod_kv::AlarmKind) {
        self.raise_alarm_for(self.node.shared.id.0, alarm);
    }

    /// As [`Api::raise_alarm`], for `member`. One raise of each alarm at a time: refusals
    /// that come while it is under way do not each propose it again.
    pub fn raise_alarm_for(&self, member: u64, alarm: synod_kv::AlarmKind) {
        let mut raising = self.raising.lock().unwrap_or_else(|p| p.into_inner());
        if !raising.insert((member, alarm)) {
            return;
        }
        drop(raising);
        let raise = synod_kv::Request::Alarm(synod_kv::AlarmRequest {
            activate: true,
            member,
            alarm,
        });
        let node = self.node.clone();
        let raising = self.raising.clone();
        let deadline = Instant::now() + self.config.request_timeout;
        tokio::spawn(async move {
            while Instant::now() < deadline {
                if node.propose(&raise).await.is_ok() {
                    tracing::warn!(?alarm, member, "raised an alarm");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            raising
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(member, alarm));
        });
    }

    /// Waits (up to the request timeout) for a turn at work that copies the whole store:
    /// `snapshots` or `hashes`, each one at a time. `busy` says what the caller was waiting
    /// behind if the turn does not come.
    pub(crate) async fn copy_turn(
        &self,
        turns: &Arc<tokio::sync::Semaphore>,
        busy: &'static str,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        match tokio::time::timeout(self.config.request_timeout, turns.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(errors::stopped()),
            Err(_) => Err(Status::unavailable(busy)),
        }
    }

    /// A gRPC channel to `node`'s client port, made once and reused.
    pub(crate) fn channel(&self, node: NodeId) -> Option<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(&node) {
            return Some(channel.clone());
        }
        let url = self.directory.client_url(node)?;
        let mut endpoint = Endpoint::from_shared(url)
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        if let Some(tls) = &self.forward_tls {
            endpoint = endpoint.tls_config(tls.clone()).ok()?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(node, channel.clone());
        Some(channel)
    }

    /// Serves a write or a linearizable read through this node, whichever leads: the node
    /// loop hands them to the leader over the peer connection and answers from this node's
    /// state machine. Waits for a leader when there is none, and retries when the request
    /// surely had no effect ("not leader"), until the request timeout.
    pub(crate) async fn anywhere<Req, Resp, L, LF>(
        &self,
        request: Request<Req>,
        local: L,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        L: Fn(Req) -> LF,
        LF: Future<Output = Result<Attempt<Resp>, Status>>,
    {
        let body = request.into_inner();
        let deadline = Instant::now() + self.config.request_timeout;
        let mut status_changes = self.node.status.clone();
        loop {
            let leader = self.node.current_status().proposer();
            if leader.is_some() {
                if let Some(response) = before(deadline, local(body.clone())).await? {
                    return Ok(Response::new(response));
                }
            }
            wait_for_news(deadline, leader.is_some(), &mut status_changes).await?;
        }
    }

    /// Serves a request that needs the leader's own state (its lease clocks, its engine):
    /// with `local` when this node leads, else by forwarding it with `remote`. Under a
    /// protocol without a leader, the node that keeps the lease clocks stands in for it.
    /// `idempotent` requests (reads) are retried after any failure to reach the leader;
    /// writes only when they surely had no effect.
    pub(crate) async fn on_leader<Req, Resp, L, LF, R, RF>(
        &self,
        request: Request<Req>,
        idempotent: bool,
        local: L,
        remote: R,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        Resp: Stamped,
        L: Fn(Req) -> LF,
        LF: Future<Output = Result<Attempt<Resp>, Status>>,
        R: Fn(Channel, Request<Req>) -> RF,
        RF: Future<Output = Result<Response<Resp>, Status>>,
    {
        let forwarded = request.metadata().contains_key(FORWARDED);
        // The leader checks the caller again: it goes along as a token of its own.
        let token = self
            .forward_token(&request)
            .and_then(|t| tonic::metadata::MetadataValue::try_from(t).ok());
        let body = request.into_inner();
        let deadline = Instant::now() + self.config.request_timeout;
        let me = self.node.shared.id;
        let mut status_changes = self.node.status.clone();
        loop {
            let leader = self.node.lease_keeper();
            match leader {
                Some(l) if l == me => {
                    if let Some(response) = before(deadline, local(body.clone())).await? {
                        return Ok(Response::new(response));
                    }
                }
                Some(l) if !forwarded => {
                    if let Some(channel) = self.channel(l) {
                        let mut request = Request::new(body.clone());
                        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
                        request
                            .metadata_mut()
                            .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
                        if let Some(token) = &token {
                            request.metadata_mut().insert(auth::TOKEN, token.clone());
                        }
                        match remote(channel, request).await {
                            Ok(mut response) => {
                                // The answer comes from this member, as etcd's would.
                                response.get_mut().restamp(me);
                                return Ok(response);
                            }
                            Err(s) if retry_forward(&s, idempotent) => {}
                            Err(s) => return Err(s),
                        }
                    }
                }
                // Forwarded here by a node that thought this one leads: let it look again.
                Some(_) if forwarded => return Err(errors::leader_changed()),
                _ => {}
            }
            wait_for_news(deadline, leader.is_some(), &mut status_changes).await?;
        }
    }
}

/// Runs one local attempt, giving up at `deadline`; `None` when this node turned out not to
/// lead (the attempt had no effect).
async fn before<T>(
    deadline: Instant,
    attempt: impl Future<Output = Result<Attempt<T>, Status>>,
) -> Result<Option<T>, Status> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, attempt).await {
        Err(_) => Err(errors::timed_out()),
        Ok(attempt) => Ok(match attempt? {
            Attempt::Done(value) => Some(value),
            Attempt::NotLeader => None,
        }),
    }
}

/// Waits for news of a leader before the next attempt, but looks again soon regardless (a
/// forward may have failed for a reason no status change announces). Past the deadline, the
/// error etcd gives: "no leader" when none was known, else "request timed out".
async fn wait_for_news(
    deadline: Instant,
    had_leader: bool,
    status_changes: &mut signal::Receiver<synod_core::Status>,
) -> Result<(), Status> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(if had_leader {
            errors::timed_out()
        } else {
            errors::no_leader()
        });
    }
    let _ = tokio::time::timeout(
        left.min(Duration::from_millis(50)),
        status_changes.changed(),
    )
    .await;
    Ok(())
}

/// A response with etcd's header, which names the member that answered.
pub(crate) trait Stamped {
    fn restamp(&mut self, member: NodeId);
}

macro_rules! stamped {
    ($($response:ty),*) => {$(
        impl Stamped for $response {
            fn restamp(&mut self, member: NodeId) {
                if let Some(header) = &mut self.header {
                    header.member_id = member.0;
                }
            }
        }
    )*};
}

// The answers of requests forwarded as gRPC calls (`Api::on_leader`).
stamped!(
    pb::LeaseGrantResponse,
    pb::LeaseRevokeResponse,
    pb::LeaseKeepAliveResponse,
    pb::LeaseTimeToLiveResponse,
    pb::MoveLeaderResponse
);

/// Whether a failed forward may be tried again: always for a read; for a write only when the
/// leader surely did not run it (it said it no longer leads, or it was never reached).
fn retry_forward(status: &Status, idempotent: bool) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    idempotent
        || status.message() == errors::LEADER_CHANGED
        || status.message().contains("error trying to connect")
        || status.message().contains("tcp connect error")
}

/// A refusal from the local engine as an attempt: "not leader" means look again.
pub(crate) fn attempt<T>(result: Result<T, Refusal>) -> Result<Attempt<T>, Status> {
    match result {
        Ok(value) => Ok(Attempt::Done(value)),
        Err(Refusal::NotLeader(_)) => Ok(Attempt::NotLeader),
        Err(other) => Err(errors::refusal(other)),
    }
}

/// Every service of the API, added to a tonic server.
pub fn router(
    api: Arc<Api>,
    server: &mut tonic::transport::Server,
) -> tonic::transport::server::Router {
    // gRPC's own limit sits above etcd's request limit, so requests between the two get
    // etcd's "request is too large" rather than a transport error (etcd does the same).
    let decode_max = api.config.max_request_bytes + (512 << 10);
    // Every service finds the caller (refusing a bad token), refuses marked requests
    // without a leader; some refuse learners too.
    let guard_with = |learners, lenient| {
        let (mut caller, mut leader, mut learner) = (
            auth::guard(api.clone(), lenient),
            leadership::guard(api.clone()),
            learner::guard(api.clone(), learners),
        );
        move |request| caller(request).and_then(&mut leader).and_then(&mut learner)
    };
    let guard = |learners| guard_with(learners, false);
    use learner::Learners::{Refused, Served};
    server
        .add_service(InterceptedService::new(
            pb::kv_server::KvServer::new(kv::KvService(api.clone()))
                .max_decoding_message_size(decode_max)
                .max_encoding_message_size(usize::MAX),
            guard(Served),
        ))
        .add_service(InterceptedService::new(
            pb::watch_server::WatchServer::new(watch::WatchService(api.clone()))
                .max_decoding_message_size(decode_max)
                .max_encoding_message_size(usize::MAX),
            guard(Refused),
        ))
        .add_service(InterceptedService::new(
            pb::lease_server::LeaseServer::new(lease::LeaseService(api.clone()))
                .max_decoding_message_size(decode_max),
            guard(Refused),
        ))
        .add_service(InterceptedService::new(
            pb::cluster_server::ClusterServer::new(cluster::ClusterService(api.clone())),
            guard(Refused),
        ))
        .add_service(InterceptedService::new(
            pb::maintenance_server::MaintenanceServer::new(cluster::MaintenanceService(
                api.clone(),
            )),
            guard(Served),
        ))
        .add_service(InterceptedService::new(
            pb::auth_server::AuthServer::new(auth::AuthService(api.clone())),
            guard_with(Refused, true),
        ))
        .add_service(InterceptedService::new(
            synod_proto::v3lockpb::lock_server::LockServer::new(recipes::LockService(api.clone()))
                .max_decoding_message_size(decode_max),
            guard(Refused),
        ))
        .add_service(InterceptedService::new(
            synod_proto::v3electionpb::election_server::ElectionServer::new(
                recipes::ElectionService(api.clone()),
            )
            .max_decoding_message_size(decode_max),
            guard(Refused),
        ))
}
