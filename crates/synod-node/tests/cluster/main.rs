//! Three servers in one process, on loopback with real sockets and real disks, driven through
//! the same generated gRPC clients etcd's users have.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use synod_core::NodeId;
use synod_node::config::ServerConfig;
use synod_node::server::{self, RunningServer};
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::lease_client::LeaseClient;
use synod_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_proto::etcdserverpb::watch_client::WatchClient;
use tonic::transport::Channel;

mod etcd_api;
mod security;

/// A port nobody listens on right now, below the kernel's ephemeral range (a port from
/// `bind(0)` can be handed to a peer's outgoing connection before the server binds it, which
/// then fails with "address in use"), and one no other test of this binary was given.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 3_000; // below the ports `synod`'s own process tests use (10,000 on)
    const SPAN: u32 = 6_500;
    let offset = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir =
        std::env::temp_dir().join(format!("synod-test-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

struct Cluster {
    root: PathBuf,
    configs: BTreeMap<NodeId, ServerConfig>,
    servers: BTreeMap<NodeId, RunningServer>,
}

impl Cluster {
    async fn start(name: &str, nodes: u64) -> Cluster {
        Cluster::start_with(name, nodes, |_| {}).await
    }

    /// A cluster whose settings `tweak` changes from the tests' defaults.
    async fn start_with(name: &str, nodes: u64, tweak: impl Fn(&mut ServerConfig)) -> Cluster {
        let root = temp_dir(name);
        let members: BTreeMap<NodeId, String> = (1..=nodes)
            .map(|id| (NodeId(id), format!("127.0.0.1:{}", free_port())))
            .collect();
        let mut configs = BTreeMap::new();
        for &id in members.keys() {
            let mut config = ServerConfig::new(
                id,
                members.clone(),
                format!("127.0.0.1:{}", free_port()),
                root.join(format!("n{}", id.0)),
            );
            config.heartbeat_interval = Duration::from_millis(50);
            config.election_timeout = Duration::from_millis(500);
            config.snapshot_every = 50;
            tweak(&mut config);
            configs.insert(id, config);
        }
        let mut cluster = Cluster {
            root,
            configs,
            servers: BTreeMap::new(),
        };
        for id in 1..=nodes {
            cluster.restart(NodeId(id)).await;
        }
        cluster
    }

    async fn restart(&mut self, id: NodeId) {
        let server = server::start(self.configs[&id].clone())
            .await
            .expect("the server starts");
        self.servers.insert(id, server);
    }

    async fn stop(&mut self, id: NodeId) {
        if let Some(server) = self.servers.remove(&id) {
            server.shutdown().await.expect("a clean shutdown");
        }
    }

    async fn channel(&self, id: NodeId) -> Channel {
        let url = format!("http://{}", self.servers[&id].client_addr);
        Channel::from_shared(url)
            .expect("a valid url")
            .connect()
            .await
            .expect("connect")
    }

    async fn kv(&self, id: NodeId) -> KvClient<Channel> {
        KvClient::new(self.channel(id).await)
    }

    /// Waits until every running node agrees on one leader, and returns it.
    async fn leader(&self) -> NodeId {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut leaders = Vec::new();
            for &id in self.servers.keys() {
                let mut client = MaintenanceClient::new(self.channel(id).await);
                if let Ok(status) = client.status(pb::StatusRequest {}).await {
                    leaders.push(status.into_inner().leader);
                }
            }
            if leaders.len() == self.servers.len()
                && leaders[0] != 0
                && leaders.iter().all(|&l| l == leaders[0])
            {
                return NodeId(leaders[0]);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader after 20 s: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.servers.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

fn get(key: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

fn prefix(key: &str) -> pb::RangeRequest {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().expect("a non-empty prefix") += 1;
    pb::RangeRequest {
        key: key.as_bytes().to_vec().into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn values(response: &pb::RangeResponse) -> Vec<String> {
    response
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_takes_writes_and_serves_linearizable_reads() {
    let cluster = Cluster::start("rw", 3).await;
    let leader = cluster.leader().await;

    let mut last_revision = 0;
    for id in 1..=3 {
        let mut kv = cluster.kv(NodeId(id)).await;
        let response = kv
            .put(put(&format!("k/{id}"), &format!("from {id}")))
            .await
            .expect("a put through any node succeeds")
            .into_inner();
        let header = response.header.expect("a header");
        assert!(header.revision > last_revision, "revisions increase");
        assert_ne!(header.cluster_id, 0);
        assert_eq!(header.member_id, id, "the header names the member asked");
        assert!(header.raft_term >= 1);
        last_revision = header.revision;
        // A linearizable read anywhere, right after, sees every write so far.
        for reader in 1..=3 {
            let mut kv = cluster.kv(NodeId(reader)).await;
            let got = kv.range(prefix("k/")).await.expect("a read").into_inner();
            assert_eq!(got.kvs.len() as u64, id, "node {reader} after write {id}");
            assert!(got.header.expect("a header").revision >= last_revision);
        }
    }
    let mut kv = cluster.kv(leader).await;
    let got = kv.range(prefix("k/")).await.expect("read").into_inner();
    assert_eq!(values(&got), ["from 1", "from 2", "from 3"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_compares_and_deletes_follow_etcd() {
    let cluster = Cluster::start("txn", 3).await;
    cluster.leader().await;
    let mut kv = cluster.kv(NodeId(2)).await;
    let first = kv.put(put("lock", "a")).await.expect("put").into_inner();
    let created = first.header.expect("header").revision;

    let txn = |expected: i64| pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Create as i32,
            key: b"lock".to_vec().into(),
            target_union: Some(pb::compare::TargetUnion::CreateRevision(expected)),
            ..Default::default()
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put("lock", "b"))),
        }],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(get("lock"))),
        }],
    };
    let won = kv.txn(txn(created)).await.expect("txn").into_inner();
    assert!(won.succeeded);
    let lost = kv.txn(txn(created + 100)).await.expect("txn").into_inner();
    assert!(!lost.succeeded);
    match &lost.responses[0].response {
        Some(pb::response_op::Response::ResponseRange(r)) => assert_eq!(values(r), ["b"]),
        other => panic!("expected the else branch's range, got {other:?}"),
    }

    let deleted = kv
        .delete_range(pb::DeleteRangeRequest {
            key: b"lock".to_vec().into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.prev_kvs[0].value.as_ref(), b"b");

    // Reading the past, then compacting it away.
    let past = kv
        .range(pb::RangeRequest {
            revision: created,
            ..get("lock")
        })
        .await
        .expect("read at a revision")
        .into_inner();
    assert_eq!(values(&past), ["a"]);
    kv.compact(pb::CompactionRequest {
        revision: created + 1,
        physical: false,
    })
    .await
    .expect("compact");
    let gone = kv
        .range(pb::RangeRequest {
            revision: created,
            ..get("lock")
        })
        .await
        .expect_err("the revision is compacted");
    assert_eq!(gone.code(), tonic::Code::OutOfRange);
    assert_eq!(
        gone.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_empty_requests_get_etcd_errors() {
    let cluster = Cluster::start("limits", 3).await;
    cluster.leader().await;
    let mut kv = cluster.kv(NodeId(1)).await;
    // Over the 1.5 MiB request limit: etcd's own error.
    let big = "x".repeat(1600 << 10);
    let error = kv.put(put("big", &big)).await.expect_err("too large");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(error.message(), "etcdserver: request is too large");
    // Far over it, gRPC itself refuses the message before it is decoded (so does etcd's).
    let huge = "x".repeat(8 << 20);
    let error = kv.put(put("huge", &huge)).await.expect_err("too large");
    assert_eq!(error.code(), tonic::Code::OutOfRange, "{error:?}");
    assert!(error.message().contains("too large"), "{error:?}");
    let error = kv.put(put("", "v")).await.expect_err("no key");
    assert_eq!(error.message(), "etcdserver: key is not provided");
    // The cluster keeps serving.
    kv.put(put("after", "ok"))
        .await
        .expect("put after refusals");
    let got = kv.range(get("after")).await.expect("read").into_inner();
    assert_eq!(values(&got), ["ok"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_events_in_revision_order_from_a_past_revision() {
    let cluster = Cluster::start("watch", 3).await;
    cluster.leader().await;
    let mut kv = cluster.kv(NodeId(1)).await;
    let start = kv
        .put(put("w/a", "1"))
        .await
        .expect("put")
        .into_inner()
        .header
        .expect("header")
        .revision;
    kv.put(put("w/b", "2")).await.expect("put");
    kv.put(put("other", "x")).await.expect("put");

    let (requests, rx) = tokio::sync::mpsc::channel(4);
    let mut watch = WatchClient::new(cluster.channel(NodeId(3)).await);
    requests
        .send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: b"w/".to_vec().into(),
                    range_end: b"w0".to_vec().into(),
                    start_revision: start,
                    ..Default::default()
                },
            )),
        })
        .await
        .expect("send");
    let mut events = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = events.message().await.expect("stream").expect("a response");
    assert!(created.created);
    let watch_id = created.watch_id;

    kv.delete_range(pb::DeleteRangeRequest {
        key: b"w/a".to_vec().into(),
        ..Default::default()
    })
    .await
    .expect("delete");

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let response = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("events arrive")
            .expect("stream")
            .expect("a response");
        for event in response.events {
            let kv = event.kv.expect("a key");
            seen.push((
                event.r#type,
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
            ));
        }
    }
    assert_eq!(seen[0].1, "w/a");
    assert_eq!(seen[1].1, "w/b");
    assert_eq!(
        (seen[2].0, seen[2].1.as_str()),
        (1, "w/a"),
        "then the delete"
    );
    assert!(
        seen.windows(2).all(|w| w[0].2 < w[1].2),
        "in revision order: {seen:?}"
    );

    requests
        .send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
                pb::WatchCancelRequest { watch_id },
            )),
        })
        .await
        .expect("send");
    let canceled = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an answer")
        .expect("stream")
        .expect("a response");
    assert!(canceled.canceled);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_keys_go_when_the_lease_is_revoked_or_runs_out() {
    let cluster = Cluster::start("lease", 3).await;
    cluster.leader().await;
    let mut leases = LeaseClient::new(cluster.channel(NodeId(2)).await);
    let mut kv = cluster.kv(NodeId(3)).await;

    let granted = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    assert!(granted.id > 0);
    kv.put(pb::PutRequest {
        lease: granted.id,
        ..put("leased", "v")
    })
    .await
    .expect("put with a lease");
    let ttl = leases
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: granted.id,
            keys: true,
        })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!(ttl.granted_ttl, 60);
    assert!(ttl.ttl > 0 && ttl.ttl <= 60);
    assert_eq!(ttl.keys, vec![bytes::Bytes::from_static(b"leased")]);
    leases
        .lease_revoke(pb::LeaseRevokeRequest { id: granted.id })
        .await
        .expect("revoke");
    let got = kv.range(get("leased")).await.expect("read").into_inner();
    assert!(got.kvs.is_empty(), "revoking deletes the lease's keys");
    let error = leases
        .lease_revoke(pb::LeaseRevokeRequest { id: granted.id })
        .await
        .expect_err("already gone");
    assert_eq!(error.message(), "etcdserver: requested lease not found");

    // A short lease, never kept alive, runs out on the leader's clock.
    let short = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 1, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    kv.put(pb::PutRequest {
        lease: short.id,
        ..put("short", "v")
    })
    .await
    .expect("put");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = kv.range(get("short")).await.expect("read").into_inner();
        if got.kvs.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_follower_restarts_from_its_disk_and_catches_up() {
    let mut cluster = Cluster::start("restart", 3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3)
        .map(NodeId)
        .find(|&id| id != leader)
        .expect("a follower");
    cluster.stop(follower).await;

    // Enough writes for the others to snapshot (every 50 entries) past what it has.
    let mut kv = cluster.kv(leader).await;
    for i in 0..200 {
        kv.put(put(&format!("c/{i:03}"), &i.to_string()))
            .await
            .expect("writes go on with two of three");
    }
    cluster.restart(follower).await;
    let mut kv = cluster.kv(follower).await;
    let got = kv.range(prefix("c/")).await.expect("read").into_inner();
    assert_eq!(
        got.kvs.len(),
        200,
        "a linearizable read on the restarted node"
    );
    // What it installed is on its disk (written by a thread of its own): it restarts from it.
    cluster.stop(follower).await;
    cluster.restart(follower).await;
    let mut kv = cluster.kv(follower).await;
    let got = kv.range(prefix("c/")).await.expect("read").into_inner();
    assert_eq!(got.kvs.len(), 200, "a read after the second restart");
    cluster.leader().await;
    cluster.shutdown().await;
}
