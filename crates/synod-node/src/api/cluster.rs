//! The Cluster and Maintenance services: who is in the cluster, how each node is doing, and
//! moving leadership.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use synod_core::{Membership, MembershipChange, NodeId, Role};
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{errors, Api, Attempt};
use crate::backup;

/// Bytes of a snapshot in one streamed response (etcd sends 32 KiB).
const SNAPSHOT_CHUNK: usize = 32 << 10;

/// A snapshot stream whose client takes none of it for this long is ended.
const SNAPSHOT_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// The version reported by Status: the etcd API version Synod speaks, then Synod's own.
pub const VERSION: &str = concat!("3.5.0-synod.", env!("CARGO_PKG_VERSION"));

/// The Cluster service.
#[derive(Debug)]
pub struct ClusterService(pub Arc<Api>);

/// The Maintenance service.
#[derive(Debug)]
pub struct MaintenanceService(pub Arc<Api>);

impl Api {
    /// Every member as etcd describes it: of the membership in force, under a protocol whose
    /// membership changes; else of the cluster list.
    pub fn members(&self) -> Vec<pb::Member> {
        match self.node.shared.membership() {
            Some(membership) => self.describe(&membership),
            None => self.listed_members(),
        }
    }

    /// The members of `membership` as etcd describes them. A member that has not said its
    /// client URL yet is given the one its peers learned in their handshake, if any.
    pub fn describe(&self, membership: &Membership) -> Vec<pb::Member> {
        let me = self.node.shared.id;
        membership
            .members
            .iter()
            .map(|m| {
                let client_urls = if !m.client_urls.is_empty() {
                    m.client_urls.clone()
                } else if m.id == me {
                    vec![self.config.client_url()]
                } else {
                    self.directory.client_url(m.id).into_iter().collect()
                };
                pb::Member {
                    id: m.id.0,
                    name: m.name.clone(),
                    peer_ur_ls: m.peer_urls.clone(),
                    client_ur_ls: client_urls,
                    is_learner: m.learner,
                }
            })
            .collect()
    }

    /// The members of the cluster list, for a protocol whose membership is fixed.
    fn listed_members(&self) -> Vec<pb::Member> {
        let me = self.node.shared.id;
        self.config
            .initial_cluster
            .iter()
            .map(|(&id, peer)| {
                let (name, client_url) = if id == me {
                    (self.config.name.clone(), Some(self.config.client_url()))
                } else {
                    let name = self.config.member_names.get(&id).cloned();
                    (
                        name.unwrap_or_else(|| format!("n{}", id.0)),
                        self.directory.client_url(id),
                    )
                };
                pb::Member {
                    id: id.0,
                    name,
                    peer_ur_ls: vec![format!("{}://{peer}", self.config.peer_scheme())],
                    client_ur_ls: client_url.into_iter().collect(),
                    is_learner: false,
                }
            })
            .collect()
    }
}

/// Peer URLs as etcd takes them: `http://host:port` or `https://host:port`, each once.
/// (Whether members speak TLS is the `--peer-*` flags' to say, not the scheme's.)
fn check_peer_urls(urls: &[String]) -> Result<Vec<String>, Status> {
    // etcd's clients map errors by their exact text: the reason goes to the log.
    let invalid = |why: String| {
        tracing::info!(reason = %why, "refused member URLs");
        Status::invalid_argument("etcdserver: given member URLs are invalid")
    };
    if urls.is_empty() {
        return Err(invalid("none given".into()));
    }
    let mut checked: Vec<String> = Vec::new();
    for url in urls {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(scheme, _)| ["http", "https"].contains(scheme))
            .ok_or_else(|| invalid(format!("{url}: give http://HOST:PORT")))?;
        let rest = rest.trim_end_matches('/');
        let port = rest
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(_))) if !host.is_empty() && !rest.contains('/') => {}
            _ => return Err(invalid(format!("{url}: give http://HOST:PORT"))),
        }
        let url = format!("{scheme}://{rest}");
        if !checked.contains(&url) {
            checked.push(url);
        }
    }
    Ok(checked)
}

impl ClusterService {
    /// Asks for a membership change and answers with the membership after it.
    async fn change(
        &self,
        change: MembershipChange,
    ) -> Result<(pb::ResponseHeader, Membership), Status> {
        let api = &self.0;
        if api.node.shared.membership().is_none() {
            return Err(errors::refusal(synod_replica::Refusal::Unsupported(
                synod_core::membership::FIXED_MEMBERSHIP,
            )));
        }
        let membership = tokio::time::timeout(
            api.config.request_timeout,
            api.node.change_membership(change),
        )
        .await
        .map_err(|_| errors::timed_out())?
        .map_err(errors::refusal)?;
        Ok((api.current_header(), membership))
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.0.check_admin(&request)?;
        let request = request.into_inner();
        let peer_urls = check_peer_urls(&request.peer_ur_ls)?;
        let change = MembershipChange::Add {
            peer_urls: peer_urls.clone(),
            learner: request.is_learner,
        };
        let (header, membership) = self.change(change).await?;
        let members = self.0.describe(&membership);
        let member = members.iter().find(|m| m.peer_ur_ls == peer_urls).cloned();
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(header),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.0.check_admin(&request)?;
        let id = NodeId(request.get_ref().id);
        let (header, membership) = self.change(MembershipChange::Remove { id }).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(header),
            members: self.0.describe(&membership),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.0.check_admin(&request)?;
        let request = request.into_inner();
        let change = MembershipChange::Update {
            id: NodeId(request.id),
            peer_urls: check_peer_urls(&request.peer_ur_ls)?,
        };
        let (header, membership) = self.change(change).await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: Some(header),
            members: self.0.describe(&membership),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.0.check_admin(&request)?;
        let id = NodeId(request.get_ref().id);
        let (header, membership) = self.change(MembershipChange::Promote { id }).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(header),
            members: self.0.describe(&membership),
        }))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let api = &self.0;
        Ok(Response::new(pb::MemberListResponse {
            header: Some(api.current_header()),
            members: api.members(),
        }))
    }
}

/// etcd's name for an alarm kind.
pub(crate) fn alarm_name(kind: synod_kv::AlarmKind) -> &'static str {
    match kind {
        synod_kv::AlarmKind::NoSpace => "NOSPACE",
        synod_kv::AlarmKind::Corrupt => "CORRUPT",
    }
}

/// Waits for this member's turn to hash the whole store.
async fn api_hash_turn(api: &Api) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
    api.copy_turn(
        &api.hashes,
        "synod: another hash of the store is under way; try again",
    )
    .await
}

/// Bytes under a directory, recursively; what Status reports as the database size.
fn bytes_under(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        self.0.check_admin(&request)?;
        super::learner::refuse(&self.0)?;
        use pb::alarm_request::AlarmAction;
        let api = &*self.0;
        let member = |(id, kind): (u64, synod_kv::AlarmKind)| pb::AlarmMember {
            member_id: id,
            alarm: kind.code(),
        };
        let asked = *request.get_ref();
        let action = AlarmAction::try_from(asked.action)
            .map_err(|_| Status::invalid_argument("etcdserver: unknown alarm action"))?;
        if action == AlarmAction::Get {
            // Alarms are replicated state: any member's copy answers, as etcd's does.
            let kv = api.node.shared.kv();
            let wanted = synod_kv::AlarmKind::from_code(asked.alarm);
            let alarms = kv
                .alarms()
                .filter(|&(_, kind)| wanted.is_none_or(|w| w == kind))
                .map(member)
                .collect();
            return Ok(Response::new(pb::AlarmResponse {
                header: Some(api.header(kv.revision())),
                alarms,
            }));
        }
        let kind = synod_kv::AlarmKind::from_code(asked.alarm)
            .ok_or_else(|| Status::invalid_argument("etcdserver: no such alarm"))?;
        let change = synod_kv::Request::Alarm(synod_kv::AlarmRequest {
            activate: action == AlarmAction::Activate,
            member: asked.member_id,
            alarm: kind,
        });
        api.anywhere(request, |_| async {
            Ok(match super::attempt(api.node.propose(&change).await)? {
                Attempt::Done(applied) => {
                    if action == AlarmAction::Deactivate {
                        tracing::info!(?kind, member = asked.member_id, "an alarm was cleared");
                    }
                    Attempt::Done(pb::AlarmResponse {
                        header: Some(api.header(applied.revision)),
                        // etcd answers with the alarm changed.
                        alarms: vec![member((asked.member_id, kind))],
                    })
                }
                Attempt::NotLeader => Attempt::NotLeader,
            })
        })
        .await
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let api = &self.0;
        let status = api.node.current_status();
        let (revision, applied) = {
            let kv = api.node.shared.kv();
            (kv.revision(), kv.applied_index())
        };
        let data_dir = api.config.data_dir.clone();
        let db_size = tokio::task::spawn_blocking(move || bytes_under(&data_dir))
            .await
            .unwrap_or(0) as i64;
        let (mut errors, in_use): (Vec<String>, i64) = {
            let kv = api.node.shared.kv();
            let alarms = kv
                .alarms()
                .map(|(member, kind)| format!("memberID:{member} alarm:{}", alarm_name(kind)))
                .collect();
            (alarms, kv.size_bytes() as i64)
        };
        if status.proposer().is_none() {
            errors.insert(0, "etcdserver: no leader".to_string());
        }
        Ok(Response::new(pb::StatusResponse {
            header: Some(api.header(revision)),
            version: VERSION.into(),
            db_size,
            leader: status.leader.map_or(0, |l| l.0),
            raft_index: status.last_index,
            raft_term: status.era,
            raft_applied_index: applied,
            errors,
            db_size_in_use: in_use,
            is_learner: api
                .node
                .shared
                .membership()
                .and_then(|m| m.get(api.node.shared.id).map(|me| me.learner))
                .unwrap_or(false),
        }))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.0.check_admin(&request)?;
        super::learner::refuse(&self.0)?;
        // Nothing to defragment: the log is compacted by snapshots.
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.0.current_header()),
        }))
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.0.check_admin(&request)?;
        // etcd hashes its whole database; Synod, its whole state machine as it would
        // snapshot it. Like etcd's, for tests: it differs between members that applied the
        // same entries but keep different client sessions.
        // A copy (keys and values shared, so only the maps' nodes), taken under the lock;
        // the long work on another thread, so applying goes on meanwhile. One at a time.
        let _turn = api_hash_turn(&self.0).await?;
        let copy = self.0.node.shared.kv().clone();
        let (revision, hash) = tokio::task::spawn_blocking(move || {
            (copy.revision(), crc32c::crc32c(&copy.snapshot()))
        })
        .await
        .map_err(|_| Status::internal("hashing the store failed"))?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.0.header(revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.0.check_admin(&request)?;
        let revision = request.get_ref().revision;
        // A revision this member is about to apply (a peer's corruption check asks for the
        // leader's): wait a little for it rather than answer "future revision" at once.
        let mut applied = self.0.node.revision.clone();
        let _ = tokio::time::timeout(
            self.0.config.election_timeout,
            applied.wait_for(|&r| r >= revision),
        )
        .await;
        let _turn = api_hash_turn(&self.0).await?;
        let copy = self.0.node.shared.kv().clone();
        let (current, hashed) =
            tokio::task::spawn_blocking(move || (copy.revision(), copy.hash_kv(revision)))
                .await
                .map_err(|_| Status::internal("hashing the store failed"))?;
        let hashed = hashed.map_err(errors::kv)?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.0.header(current)),
            hash: hashed.hash,
            compact_revision: hashed.compacted,
            hash_revision: hashed.revision,
        }))
    }

    type SnapshotStream = ReceiverStream<Result<pb::SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.0.check_admin(&request)?;
        // This member's state machine as it is now, in Synod's backup format (see
        // `backup`): what `etcdctl snapshot save` stores and `synod snapshot restore` reads.
        // One at a time: each holds a whole encoding of the store until it is sent.
        let api = &self.0;
        let turn = api
            .copy_turn(
                &api.snapshots,
                "synod: another snapshot is being sent; try again",
            )
            .await?;
        let copy = self.0.node.shared.kv().clone();
        let (revision, bytes) =
            tokio::task::spawn_blocking(move || (copy.revision(), backup::encode(&copy)))
                .await
                .map_err(|_| Status::internal("taking the snapshot failed"))?;
        let header = self.0.header(revision);
        let (out, responses) = mpsc::channel(4);
        // Chunks are slices of the one encoding, not copies of it.
        let bytes = bytes::Bytes::from(bytes);
        tokio::spawn(async move {
            let _turn = turn;
            let mut sent = 0;
            while sent < bytes.len() {
                let blob = bytes.slice(sent..(sent + SNAPSHOT_CHUNK).min(bytes.len()));
                sent += blob.len();
                let response = pb::SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: (bytes.len() - sent) as u64,
                    blob,
                    version: VERSION.into(),
                };
                // A client that stops reading gives the turn up after a while.
                let sent = tokio::time::timeout(SNAPSHOT_STALL, out.send(Ok(response))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(responses)))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.0.check_admin(&request)?;
        super::learner::refuse(&self.0)?;
        let api = &*self.0;
        let target = NodeId(request.get_ref().target_id);
        let known = match api.node.shared.membership() {
            Some(membership) => membership.is_voter(target),
            None => api.config.initial_cluster.contains_key(&target),
        };
        if !known {
            return Err(errors::member_not_found());
        }
        if api.node.current_status().role == Role::Peer {
            return Err(errors::leaderless(&api.config.protocol));
        }
        if !synod_replica::moves_leadership(&api.config.protocol) {
            return Err(errors::no_leader_transfer(&api.config.protocol));
        }
        if synod_replica::fails_over_by_operator(&api.config.protocol) {
            // A failover: the member asked carries it out (it tells the target to take
            // over), since the primary may be the member that failed.
            return move_leader_here(api, target).await.map(Response::new);
        }
        api.on_leader(
            request,
            false,
            |_| async move { move_leader_here(api, target).await.map(Attempt::Done) },
            |channel, r| async move { MaintenanceClient::new(channel).move_leader(r).await },
        )
        .await
    }
}

/// Asks this member's engine to hand the leadership to `target`, and waits until this member
/// sees `target` lead (the engine gives up after a timeout).
async fn move_leader_here(api: &Api, target: NodeId) -> Result<pb::MoveLeaderResponse, Status> {
    if api.node.transfer_leadership(target).await.is_err() {
        return Err(errors::stopped());
    }
    let mut status = api.node.status.clone();
    let wait = async {
        loop {
            if status.borrow().leader == Some(target) {
                return;
            }
            if status.changed().await.is_err() {
                return;
            }
        }
    };
    let limit = api.config.election_timeout * 3 + Duration::from_millis(500);
    if tokio::time::timeout(limit, wait).await.is_err() {
        return Err(errors::timed_out());
    }
    Ok(pb::MoveLeaderResponse {
        header: Some(api.current_header()),
    })
}
