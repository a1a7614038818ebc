//! Corners of etcd's API that Kubernetes' apiserver and etcd's lock and election recipes lean
//! on: transaction limits, watch ids, progress notifications, watches from far back and the
//! `hasleader` guard.

use std::collections::BTreeSet;
use std::time::Duration;

use synod_core::NodeId;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::watch_client::WatchClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Streaming};

use super::{put, Cluster};

fn put_op(key: String) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.into_bytes().into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        })),
    }
}

fn absent(key: &str) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Version as i32,
        key: key.as_bytes().to_vec().into(),
        target_union: Some(pb::compare::TargetUnion::Version(0)),
        ..Default::default()
    }
}

fn puts(prefix: &str, n: usize) -> Vec<pb::RequestOp> {
    (0..n).map(|i| put_op(format!("{prefix}{i}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_limits_count_compares_and_each_branch_alone_as_etcd_does() {
    let cluster = Cluster::start("txn-limits", 3).await;
    cluster.leader().await;
    let mut kv = cluster.kv(NodeId(1)).await;

    // 100 operations on each branch: etcd's limit of 128 is per list, not for their sum.
    let wide = pb::TxnRequest {
        compare: vec![absent("t/flag")],
        success: puts("t/s", 100),
        failure: puts("t/f", 100),
    };
    let answer = kv
        .txn(wide)
        .await
        .expect("100 + 100 operations are allowed");
    assert!(answer.into_inner().succeeded);

    let too_many = |txn: pb::TxnRequest| {
        let mut kv = kv.clone();
        async move {
            let status = kv.txn(txn).await.expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert_eq!(
                status.message(),
                "etcdserver: too many operations in txn request"
            );
        }
    };
    too_many(pb::TxnRequest {
        compare: (0..129).map(|i| absent(&format!("c{i}"))).collect(),
        ..Default::default()
    })
    .await;
    too_many(pb::TxnRequest {
        failure: puts("t/x", 129),
        ..Default::default()
    })
    .await;
    // A nested transaction is held to the limit on its own.
    let nested = pb::RequestOp {
        request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
            success: puts("t/n", 129),
            ..Default::default()
        })),
    };
    too_many(pb::TxnRequest {
        success: vec![nested],
        ..Default::default()
    })
    .await;
    cluster.shutdown().await;
}

/// A watch stream and the sender that feeds it requests.
async fn open_watch(
    cluster: &Cluster,
    node: NodeId,
    has_leader: bool,
) -> Result<(mpsc::Sender<pb::WatchRequest>, Streaming<pb::WatchResponse>), tonic::Status> {
    let (requests, rx) = mpsc::channel(16);
    let mut request = Request::new(ReceiverStream::new(rx));
    if has_leader {
        request.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    let mut client = WatchClient::new(cluster.channel(node).await);
    let responses = client.watch(request).await?.into_inner();
    Ok((requests, responses))
}

fn create(key: &str, range_end: &str, watch_id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.as_bytes().to_vec().into(),
                range_end: range_end.as_bytes().to_vec().into(),
                watch_id,
                ..Default::default()
            },
        )),
    }
}

fn cancel(watch_id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id },
        )),
    }
}

fn progress() -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        )),
    }
}

async fn next(responses: &mut Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("a watch response within 10 s")
        .expect("the stream stays up")
        .expect("the stream is not over")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ids_are_never_reused_on_a_stream() {
    let cluster = Cluster::start("watch-ids", 3).await;
    cluster.leader().await;
    let (requests, mut responses) = open_watch(&cluster, NodeId(2), false).await.expect("watch");

    requests.send(create("a", "", 0)).await.expect("send");
    let first = next(&mut responses).await;
    assert!(first.created && !first.canceled);
    requests.send(cancel(first.watch_id)).await.expect("send");
    let cancelled = next(&mut responses).await;
    assert!(cancelled.canceled && cancelled.watch_id == first.watch_id);
    // The id of a cancelled watcher is not handed out again: a client still draining
    // events of the old watcher could take them for the new one's.
    requests.send(create("a", "", 0)).await.expect("send");
    let second = next(&mut responses).await;
    assert!(second.created && !second.canceled);
    assert_ne!(second.watch_id, first.watch_id, "a watch id was reused");

    // An id chosen by the client that is in use is refused with etcd's answer.
    requests.send(create("b", "", 7)).await.expect("send");
    assert_eq!(next(&mut responses).await.watch_id, 7);
    requests.send(create("c", "", 7)).await.expect("send");
    let duplicate = next(&mut responses).await;
    assert!(duplicate.created && duplicate.canceled);
    assert_eq!(duplicate.watch_id, -1);
    assert_eq!(
        duplicate.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    // A negative start revision is refused as etcd refuses it.
    let mut before_zero = create("d", "", 0);
    if let Some(pb::watch_request::RequestUnion::CreateRequest(c)) = &mut before_zero.request_union
    {
        c.start_revision = -1;
    }
    requests.send(before_zero).await.expect("send");
    let refused = next(&mut responses).await;
    assert!(refused.created && refused.canceled && refused.watch_id == -1);
    assert_eq!(
        refused.cancel_reason,
        "etcdserver: mvcc: required revision has been compacted"
    );
    // So is a range that ends before it starts.
    requests.send(create("z", "a", 0)).await.expect("send");
    let empty = next(&mut responses).await;
    assert!(empty.created && empty.canceled && empty.watch_id == -1);
    assert_eq!(empty.cancel_reason, "mvcc: watcher range is empty");
    cluster.shutdown().await;
}

/// Kubernetes' apiserver serves consistent reads from its watch cache once a progress
/// notification says the cache has seen a revision; a notification that runs ahead of the
/// events it covers makes the cache answer without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_never_run_ahead_of_the_events_they_cover() {
    let cluster = Cluster::start_with("watch-progress", 3, |config| {
        config.watch_progress_interval = Duration::from_millis(20);
    })
    .await;
    cluster.leader().await;
    let (requests, mut responses) = open_watch(&cluster, NodeId(1), false).await.expect("watch");
    let mut watch = create("p/", "p0", 0);
    if let Some(pb::watch_request::RequestUnion::CreateRequest(c)) = &mut watch.request_union {
        c.progress_notify = true;
    }
    requests.send(watch).await.expect("send");
    assert!(next(&mut responses).await.created);

    // Writers on the watched prefix, and a client asking for progress all the while.
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut kv: KvClient<_> = cluster.kv(NodeId(1 + w % 3)).await;
        writers.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..150 {
                let answer = kv.put(put(&format!("p/{w}/{i}"), "x")).await.expect("put");
                revisions.push(answer.into_inner().header.expect("header").revision);
            }
            revisions
        }));
    }
    let asker = {
        let requests = requests.clone();
        tokio::spawn(async move {
            while requests.send(progress()).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut written = BTreeSet::new();
    for writer in writers {
        written.extend(writer.await.expect("a writer"));
    }
    let last = *written.last().expect("writes");

    let mut seen = BTreeSet::new();
    let mut notifications = 0;
    while seen.len() < written.len() {
        let response = next(&mut responses).await;
        for event in &response.events {
            seen.insert(event.kv.as_ref().expect("a key").mod_revision);
        }
        if response.events.is_empty() && !response.created && !response.canceled {
            notifications += 1;
            let at = response.header.expect("header").revision;
            let missing: Vec<i64> = written
                .range(..=at.min(last))
                .filter(|r| !seen.contains(r))
                .copied()
                .collect();
            assert!(
                missing.is_empty(),
                "a progress notification at revision {at} came before the events of {missing:?}"
            );
        }
    }
    asker.abort();
    assert!(notifications > 0, "progress was notified");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_far_back_gets_every_change_once_and_in_order() {
    let cluster = Cluster::start("watch-far-back", 3).await;
    cluster.leader().await;
    let mut kv = cluster.kv(NodeId(1)).await;
    // 450 transactions of 70 puts: 31,500 changes, more than three catch-up passes read, in
    // revisions that straddle the points where a pass stops.
    let (transactions, puts_each) = (450, 70);
    let key = |t: i64, i: i64| format!("far/{t:03}/{i:02}").into_bytes();
    let mut first = None;
    for t in 0..transactions {
        let success = (0..puts_each)
            .map(|i| put_op(String::from_utf8(key(t, i)).expect("text")))
            .collect();
        let answer = kv
            .txn(pb::TxnRequest {
                success,
                ..Default::default()
            })
            .await
            .expect("a transaction of puts")
            .into_inner();
        first.get_or_insert(answer.header.expect("header").revision);
    }
    let first = first.expect("transactions ran");

    // Two watchers on one stream, one from the first transaction and one from the hundredth,
    // and a progress request behind them, which must be answered only once both have been
    // sent everything up to the revision it names.
    let (requests, mut responses) = open_watch(&cluster, NodeId(2), false).await.expect("watch");
    let starts = [first, first + 100];
    for start in starts {
        let mut watch = create("far/", "far0", 0);
        if let Some(pb::watch_request::RequestUnion::CreateRequest(c)) = &mut watch.request_union {
            c.start_revision = start;
        }
        requests.send(watch).await.expect("send");
    }
    requests.send(progress()).await.expect("send");
    let expected: Vec<Vec<(i64, Vec<u8>)>> = starts
        .iter()
        .map(|&start| {
            (start - first..transactions)
                .flat_map(|t| (0..puts_each).map(move |i| (first + t, key(t, i))))
                .collect()
        })
        .collect();
    let mut seen: Vec<Vec<(i64, Vec<u8>)>> = vec![Vec::new(), Vec::new()];
    let (mut created, mut progress_at) = (0, None);
    while created < 2 || progress_at.is_none() || (0..2).any(|w| seen[w].len() < expected[w].len())
    {
        let response = next(&mut responses).await;
        if response.created {
            assert_eq!(response.watch_id, created, "ids handed out in order");
            created += 1;
            continue;
        }
        if response.watch_id == -1 {
            let at = response.header.expect("header").revision;
            for w in 0..2 {
                let due = expected[w].iter().filter(|(r, _)| *r <= at).count();
                assert_eq!(
                    seen[w].len(),
                    due,
                    "progress at {at} came before watcher {w}'s events"
                );
            }
            progress_at = Some(at);
            continue;
        }
        let w = usize::try_from(response.watch_id).expect("a watcher's id");
        let revisions: BTreeSet<i64> = response
            .events
            .iter()
            .map(|e| e.kv.as_ref().expect("a key").mod_revision)
            .collect();
        for event in response.events {
            let kv = event.kv.expect("a key");
            seen[w].push((kv.mod_revision, kv.key.to_vec()));
        }
        // A response holds whole revisions: no revision's changes are split across two.
        let split = revisions
            .iter()
            .find(|&&r| seen[w].iter().filter(|(at, _)| *at == r).count() != puts_each as usize);
        assert!(split.is_none(), "revision {split:?} came split");
    }
    assert!(
        seen == expected,
        "every change once, in revision and then key order"
    );
    let more = tokio::time::timeout(Duration::from_millis(300), responses.message()).await;
    assert!(more.is_err(), "nothing after the last change: {more:?}");
    cluster.shutdown().await;
}

async fn wait_leaderless(cluster: &Cluster, node: NodeId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut client = synod_proto::etcdserverpb::maintenance_client::MaintenanceClient::new(
            cluster.channel(node).await,
        );
        if let Ok(status) = client.status(pb::StatusRequest {}).await {
            if status.into_inner().leader == 0 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still a leader after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// etcd's clients mark requests and streams that must not be served by a member cut off from
/// its leader (`clientv3.WithRequireLeader`); the member refuses them at once, and ends such
/// streams once it has had no leader for three election timeouts, so the client moves to a
/// member that has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_require_a_leader_are_refused_without_one() {
    let mut cluster = Cluster::start_with("hasleader", 3, |config| {
        config.election_timeout = Duration::from_millis(300);
        config.request_timeout = Duration::from_secs(30);
    })
    .await;
    cluster.leader().await;
    let (requests, mut responses) = open_watch(&cluster, NodeId(1), true).await.expect("watch");
    requests.send(create("h", "", 0)).await.expect("send");
    assert!(next(&mut responses).await.created);

    cluster.stop(NodeId(2)).await;
    cluster.stop(NodeId(3)).await;
    wait_leaderless(&cluster, NodeId(1)).await;

    let started = tokio::time::Instant::now();
    let mut request = Request::new(put("h", "1"));
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let status = cluster
        .kv(NodeId(1))
        .await
        .put(request)
        .await
        .expect_err("no leader");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "etcdserver: no leader");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "refused at once, not after the 30 s request timeout"
    );
    let refused = open_watch(&cluster, NodeId(1), true)
        .await
        .map(|_| ())
        .expect_err("a new stream is refused");
    assert_eq!(refused.message(), "etcdserver: no leader");

    // The stream opened while there was a leader ends within a few election timeouts.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match responses.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stream ends within 10 s");
    let status = ended.expect("with an error, not a clean end");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "etcdserver: no leader");
    cluster.shutdown().await;
}

async fn grant(cluster: &Cluster, node: NodeId, ttl: i64) -> i64 {
    let mut leases =
        synod_proto::etcdserverpb::lease_client::LeaseClient::new(cluster.channel(node).await);
    leases
        .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id
}

/// etcd's Lock service (what jetcd and the gRPC gateway use): one holder at a time, the next
/// in line gets it when the holder unlocks or its lease goes, and a waiter that gives up
/// leaves no key behind to block the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_service_lets_one_holder_in_at_a_time() {
    use synod_proto::v3lockpb::{lock_client::LockClient, LockRequest, UnlockRequest};
    let cluster = Cluster::start("v3lock", 3).await;
    cluster.leader().await;
    let first = grant(&cluster, NodeId(1), 30).await;
    let second = grant(&cluster, NodeId(2), 30).await;
    let mut a = LockClient::new(cluster.channel(NodeId(1)).await);
    let mut b = LockClient::new(cluster.channel(NodeId(3)).await);
    let lock = |lease| LockRequest {
        name: b"job".to_vec().into(),
        lease,
    };
    let held = a
        .lock(lock(first))
        .await
        .expect("the first lock")
        .into_inner();
    assert_eq!(held.key, format!("job/{first:x}").into_bytes());

    // A waiter that gives up (its call times out) leaves nothing behind.
    let mut impatient = Request::new(lock(grant(&cluster, NodeId(3), 30).await));
    impatient.set_timeout(Duration::from_millis(300));
    assert!(b.clone().lock(impatient).await.is_err(), "the lock is held");

    let waiting = tokio::spawn(async move { b.lock(lock(second)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a second holder got in");
    a.unlock(UnlockRequest { key: held.key })
        .await
        .expect("unlock");
    let next = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter gets the lock")
        .expect("the task")
        .expect("the lock")
        .into_inner();
    assert_eq!(next.key, format!("job/{second:x}").into_bytes());

    // The holder's lease going hands the lock on as well.
    let third = grant(&cluster, NodeId(1), 30).await;
    let mut c = LockClient::new(cluster.channel(NodeId(2)).await);
    let waiting = tokio::spawn(async move { c.lock(lock(third)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    let mut leases =
        synod_proto::etcdserverpb::lease_client::LeaseClient::new(cluster.channel(NodeId(1)).await);
    leases
        .lease_revoke(pb::LeaseRevokeRequest { id: second })
        .await
        .expect("revoke");
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the lock passes on when the holder's lease goes")
        .expect("the task")
        .expect("the lock");

    // Callers that name no lease get one each (etcd's session lease), not one shared key.
    let mut d = LockClient::new(cluster.channel(NodeId(3)).await);
    let mut e = LockClient::new(cluster.channel(NodeId(1)).await);
    let free = || LockRequest {
        name: b"leaseless".to_vec().into(),
        lease: 0,
    };
    let held = d.lock(free()).await.expect("a lock").into_inner();
    let waiting = tokio::spawn(async move { e.lock(free()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "two leaseless callers both hold the lock"
    );
    d.unlock(UnlockRequest { key: held.key })
        .await
        .expect("unlock");
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the next caller gets it")
        .expect("the task")
        .expect("the lock");
    cluster.shutdown().await;
}

/// etcd's Election service: the first campaigner leads, proclaims values, and on resigning
/// hands over to the next; observers see every leader and value in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_election_service_elects_in_order_and_observers_follow() {
    use synod_proto::v3electionpb::{
        election_client::ElectionClient, CampaignRequest, LeaderRequest, ProclaimRequest,
        ResignRequest,
    };
    let cluster = Cluster::start("v3election", 3).await;
    cluster.leader().await;
    let (first, second) = (
        grant(&cluster, NodeId(1), 30).await,
        grant(&cluster, NodeId(2), 30).await,
    );
    let mut a = ElectionClient::new(cluster.channel(NodeId(1)).await);
    let mut b = ElectionClient::new(cluster.channel(NodeId(2)).await);
    let mut watcher = ElectionClient::new(cluster.channel(NodeId(3)).await);
    let name = || b"primary".to_vec();
    let no_leader = watcher
        .leader(LeaderRequest {
            name: name().into(),
        })
        .await
        .expect_err("nobody campaigns yet");
    assert_eq!(no_leader.message(), "election: no leader");

    let campaign = |lease: i64, value: &str| CampaignRequest {
        name: b"primary".to_vec().into(),
        lease,
        value: value.as_bytes().to_vec().into(),
    };
    let leading = a
        .campaign(campaign(first, "a"))
        .await
        .expect("the first campaign")
        .into_inner()
        .leader
        .expect("a leader key");
    let mut observed = watcher
        .observe(LeaderRequest {
            name: name().into(),
        })
        .await
        .expect("observe")
        .into_inner();
    assert_eq!(observed_value(&mut observed).await, "a");

    let waiting = tokio::spawn(async move { b.campaign(campaign(second, "b")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "two leaders");
    a.proclaim(ProclaimRequest {
        leader: Some(leading.clone()),
        value: b"a2".to_vec().into(),
    })
    .await
    .expect("proclaim");
    assert_eq!(observed_value(&mut observed).await, "a2");
    a.resign(ResignRequest {
        leader: Some(leading.clone()),
    })
    .await
    .expect("resign");
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the next campaigner leads")
        .expect("the task")
        .expect("the campaign");
    assert_eq!(observed_value(&mut observed).await, "b");
    let current = watcher
        .leader(LeaderRequest {
            name: name().into(),
        })
        .await
        .expect("a leader")
        .into_inner();
    assert_eq!(current.kv.expect("a key").value, b"b".to_vec());
    // The old leader's key no longer leads.
    let refused = a
        .proclaim(ProclaimRequest {
            leader: Some(leading),
            value: b"late".to_vec().into(),
        })
        .await
        .expect_err("not the leader any more");
    assert_eq!(refused.message(), "election: not leader");
    cluster.shutdown().await;
}

async fn observed_value(
    stream: &mut tonic::Streaming<synod_proto::v3electionpb::LeaderResponse>,
) -> String {
    let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an observation within 10 s")
        .expect("the stream")
        .expect("not over");
    String::from_utf8_lossy(&response.kv.expect("a leader").value).into_owned()
}
