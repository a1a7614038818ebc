//! Real processes, real sockets, real disks: a three-node cluster of `synod server`s killed,
//! paused and fed garbage, with every client history checked for linearizability.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{get, get_until_ok, put_until_ok, signal, Cluster};
use synod_check::{check_kv, History, KvInput, KvOutput, Verdict};
use synod_proto::etcdserverpb::kv_client::KvClient;
use tokio::sync::watch;

/// Keys the load touches; few, so operations on each key overlap a lot.
const KEYS: u64 = 8;

type Shared = Arc<Mutex<History<KvInput, KvOutput>>>;

/// Whether a failed call surely had no effect: it never reached a server.
fn surely_not_sent(status: &tonic::Status) -> bool {
    let text = format!("{status:?}");
    text.contains("error trying to connect") || text.contains("tcp connect error")
}

/// One client: puts of unique values and linearizable reads on random keys, each through the
/// next member in turn, recorded in the shared history until `stop` fires.
async fn client(
    client: u64,
    endpoints: Vec<String>,
    history: Shared,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) -> (usize, usize) {
    let channels: Vec<_> = endpoints.iter().map(|e| common::channel(e)).collect();
    let mut rng = synod_core::Rng::new(client);
    let mut seq = 0;
    let (mut ok, mut failed) = (0, 0);
    let now = || started.elapsed().as_nanos() as u64;
    while !*stop.borrow_and_update() {
        seq += 1;
        let key = rng.range(0, KEYS);
        let mut kv =
            KvClient::new(channels[(seq as usize + client as usize) % channels.len()].clone());
        let name = format!("lin/{key}");
        if rng.chance(0.5) {
            let value = client * 1_000_000 + seq;
            let id = history.lock().expect("history").invoke(
                client,
                KvInput::Write { key, value },
                now(),
            );
            let outcome = kv.put(common::put_request(&name, &value.to_string())).await;
            let mut h = history.lock().expect("history");
            match outcome {
                Ok(_) => {
                    h.ok(id, KvOutput::Written, now());
                    ok += 1;
                }
                Err(e) if surely_not_sent(&e) => {
                    h.fail(id, now());
                    failed += 1;
                }
                // A write that timed out or lost its connection may still take effect.
                Err(_) => {
                    h.indeterminate(id, now());
                    failed += 1;
                }
            }
        } else {
            let id = history
                .lock()
                .expect("history")
                .invoke(client, KvInput::Read { key }, now());
            let outcome = kv.range(common::get_request(&name, false)).await;
            let mut h = history.lock().expect("history");
            match outcome {
                Ok(response) => {
                    let value = response.into_inner().kvs.first().map(|kv| {
                        String::from_utf8_lossy(&kv.value)
                            .parse::<u64>()
                            .expect("the load writes numbers")
                    });
                    h.ok(id, KvOutput::Read(value), now());
                    ok += 1;
                }
                // A read changes nothing, whatever became of it.
                Err(_) => {
                    h.fail(id, now());
                    failed += 1;
                }
            }
        }
        if failed > 0 && failed % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (ok, failed)
}

fn assert_linearizable(history: &Shared) {
    let history = history.lock().expect("history");
    let (ok, failed, indeterminate) = history.tally();
    match check_kv(history.operations()) {
        Verdict::Linearizable => {
            eprintln!("linearizable: {ok} ok, {failed} failed, {indeterminate} indeterminate")
        }
        other => panic!("not linearizable: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    killing_a_member_under_load_loses_no_acknowledged_write("raft").await;
}

/// The same with TLS on clients and peers (client certificates required): the leader's
/// successor is elected over TLS links, and the clients reconnect with their certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_over_tls_loses_no_acknowledged_write() {
    killing_a_member_of_under_load_loses_no_acknowledged_write(Cluster::start_tls, "raft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_multi_paxos_leader_under_load_loses_no_acknowledged_write() {
    killing_a_member_under_load_loses_no_acknowledged_write("multi-paxos").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_zab_leader_under_load_loses_no_acknowledged_write() {
    killing_a_member_under_load_loses_no_acknowledged_write("zab").await;
}

/// Synchronous primary-backup elects no one: a killed backup stops writes until it is back,
/// then catches up, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_sync_backup_under_load_loses_no_acknowledged_write() {
    killing_a_member_under_load_loses_no_acknowledged_write("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_basic_paxos_proposer_under_load_loses_no_acknowledged_write() {
    killing_a_member_under_load_loses_no_acknowledged_write("basic-paxos").await;
}

/// Six clients write and read through every member while the leader (under Basic Paxos, which
/// has none, member 1) is killed and restarted; their history must be linearizable.
async fn killing_a_member_under_load_loses_no_acknowledged_write(protocol: &str) {
    killing_a_member_of_under_load_loses_no_acknowledged_write(Cluster::start, protocol).await;
}

async fn killing_a_member_of_under_load_loses_no_acknowledged_write(
    start: fn(&str, u64, &[&str]) -> Cluster,
    protocol: &str,
) {
    let mut cluster = start(protocol, 3, &["--protocol", protocol]);
    let first_leader = cluster.ready().await;
    let leader = first_leader.unwrap_or(1);
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client.clone()).collect();
    let history: Shared = Arc::new(Mutex::new(History::new()));
    let started = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let clients: Vec<_> = (1..=6)
        .map(|c| {
            tokio::spawn(client(
                c,
                endpoints.clone(),
                history.clone(),
                started,
                stopped.clone(),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Without elections, the member killed is a backup, and the primary stays.
    let primary = leader;
    let (leader, first_leader) = if synod_replica::fails_over_by_operator(protocol) {
        ((1..=3).find(|&id| id != leader).expect("a backup"), None)
    } else {
        (leader, first_leader)
    };
    cluster.kill(leader);
    let killed_at = Instant::now();
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let new_leader = match first_leader {
        Some(_) => {
            cluster
                .leader_among(&survivors, Duration::from_secs(10))
                .await
        }
        None if primary != leader => primary,
        None => survivors[0],
    };
    eprintln!(
        "{protocol}: killed {leader}; {new_leader} serves after {:?}",
        killed_at.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.spawn(leader);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.send(true).expect("stop the load");
    let mut totals = (0, 0);
    for c in clients {
        let (ok, failed) = c.await.expect("a client");
        totals = (totals.0 + ok, totals.1 + failed);
    }
    assert!(totals.0 > 200, "the load made progress: {totals:?}");

    // The restarted node caught up: its own serializable reads match the leader's.
    let deadline = Instant::now() + Duration::from_secs(10);
    for key in 0..KEYS {
        let name = format!("lin/{key}");
        let expected = get(&cluster.member(new_leader).client, &name, false)
            .await
            .expect("a linearizable read");
        loop {
            let here = get(&cluster.member(leader).client, &name, true).await.ok();
            if here.as_ref() == Some(&expected) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {leader} never caught up on {name}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_linearizable(&history);
}

/// Retries an operator's call while the cluster elects a leader or settles, up to 15 s.
async fn with_retries<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match call().await {
            Ok(response) => return response.into_inner(),
            Err(e) => assert!(Instant::now() < deadline, "{what}: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// etcd's runbook for a machine that died, under checked load: the leader is SIGKILLed, an
/// operator removes it and adds a fresh member on new ports with an empty data directory,
/// started with `--initial-cluster-state existing` and the list `member add` gave. The new
/// member catches up and votes: with it, the cluster survives losing one more of the original
/// members. Every client history stays linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_member_is_replaced_by_a_fresh_one_under_load() {
    a_sigkilled_member_is_replaced_under_load("raft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_multi_paxos_member_is_replaced_by_a_fresh_one_under_load() {
    a_sigkilled_member_is_replaced_under_load("multi-paxos").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_zab_member_is_replaced_by_a_fresh_one_under_load() {
    a_sigkilled_member_is_replaced_under_load("zab").await;
}

async fn a_sigkilled_member_is_replaced_under_load(protocol: &str) {
    use synod_proto::etcdserverpb::cluster_client::ClusterClient;
    use synod_proto::etcdserverpb::{MemberAddRequest, MemberRemoveRequest};

    let name = format!("replace-{protocol}");
    let flags = ["--snapshot-every", "300", "--protocol", protocol];
    let mut cluster = Cluster::start(&name, 3, &flags);
    let leader = cluster.ready().await.expect("elects a leader");
    let fresh = cluster.prepare_member(4).client.clone();
    // The clients know the new member's address from the start: until it runs, calls to it
    // fail without effect.
    let mut endpoints: Vec<String> = (1..=3)
        .map(|id| cluster.member(id).client.clone())
        .collect();
    endpoints.push(fresh.clone());
    let history: Shared = Arc::new(Mutex::new(History::new()));
    let started = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let clients: Vec<_> = (1..=6)
        .map(|c| {
            tokio::spawn(client(
                c,
                endpoints.clone(),
                history.clone(),
                started,
                stopped.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    cluster.kill(leader);
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let via = cluster.member(survivors[0]).client.clone();
    let admin = ClusterClient::new(common::channel(&via));
    with_retries("remove the dead member", || {
        let mut admin = admin.clone();
        async move {
            admin
                .member_remove(MemberRemoveRequest { id: leader })
                .await
        }
    })
    .await;
    let peer_url = format!("http://{}", cluster.member(4).peer);
    let added = with_retries("add a fresh member", || {
        let (mut admin, peer_ur_ls) = (admin.clone(), vec![peer_url.clone()]);
        async move {
            let request = MemberAddRequest {
                peer_ur_ls,
                is_learner: false,
            };
            admin.member_add(request).await
        }
    })
    .await;
    assert_eq!(added.member.as_ref().map(|m| m.id), Some(4), "{added:?}");
    let list = added
        .members
        .iter()
        .map(|m| format!("{}={}", m.id, m.peer_ur_ls[0]))
        .collect::<Vec<_>>()
        .join(",");
    cluster.join(4, &list);

    // It catches up: a write made through an old member is read back from the new one.
    put_until_ok(&via, "replace/joined", "yes", Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&fresh, "replace/joined", true)
        .await
        .ok()
        .flatten()
        .as_deref()
        != Some("yes")
    {
        assert!(
            Instant::now() < deadline,
            "the new member never caught up:\n{}",
            cluster.log_tail(4)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // It votes: with one more original member gone, the new one makes the majority.
    cluster.kill(survivors[1]);
    put_until_ok(&fresh, "replace/voter", "yes", Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.send(true).expect("stop the load");
    let mut totals = (0, 0);
    for c in clients {
        let (ok, failed) = c.await.expect("a client");
        totals = (totals.0 + ok, totals.1 + failed);
    }
    assert!(totals.0 > 200, "the load made progress: {totals:?}");
    let members: Vec<u64> = with_retries("list the members", || {
        let mut admin = ClusterClient::new(common::channel(&fresh));
        let request = synod_proto::etcdserverpb::MemberListRequest {
            linearizable: false,
        };
        async move { admin.member_list(request).await }
    })
    .await
    .members
    .iter()
    .map(|m| m.id)
    .collect();
    let mut expected = vec![survivors[0], survivors[1], 4];
    expected.sort_unstable();
    assert_eq!(members, expected);
    assert_linearizable(&history);
}

/// DNS-style propagation, with its primary killed under load: while it is down no write is
/// acknowledged and the secondaries go on answering reads from their copies; once it is back,
/// every acknowledged write is on every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_secondaries_answer_reads_while_the_primary_is_down_and_lose_no_write() {
    let mut cluster = Cluster::start("dns", 3, &["--protocol", "dns"]);
    assert_eq!(
        cluster.ready().await,
        Some(1),
        "the lowest member is primary"
    );
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client.clone()).collect();
    let (stop, stopped) = watch::channel(false);
    // Writers put keys of their own (never overwritten) through every member in turn;
    // readers read through the secondaries. Each counts by phase what was acknowledged or
    // answered (the phase as the call started).
    let phase = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let now_phase =
        |phase: &std::sync::atomic::AtomicUsize| phase.load(std::sync::atomic::Ordering::SeqCst);
    let writers: Vec<_> = (1..=4u64)
        .map(|w| {
            let (endpoints, mut stopped, phase) =
                (endpoints.clone(), stopped.clone(), phase.clone());
            tokio::spawn(async move {
                let channels: Vec<_> = endpoints.iter().map(|e| common::channel(e)).collect();
                let mut acked = Vec::new();
                let mut seq = 0usize;
                while !*stopped.borrow_and_update() {
                    seq += 1;
                    let at = now_phase(&phase);
                    let key = format!("dns/{w}/{seq}");
                    let channel = channels[(seq + w as usize) % channels.len()].clone();
                    if KvClient::new(channel)
                        .put(common::put_request(&key, "v"))
                        .await
                        .is_ok()
                    {
                        acked.push((key, at));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                acked
            })
        })
        .collect();
    let readers: Vec<_> = endpoints[1..]
        .iter()
        .map(|endpoint| {
            let (channel, mut stopped, phase) =
                (common::channel(endpoint), stopped.clone(), phase.clone());
            tokio::spawn(async move {
                let mut answered = [0u64; 3];
                while !*stopped.borrow_and_update() {
                    let at = now_phase(&phase);
                    let mut kv = KvClient::new(channel.clone());
                    if kv
                        .range(common::get_request("dns/1/1", false))
                        .await
                        .is_ok()
                    {
                        answered[at] += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    phase.store(1, std::sync::atomic::Ordering::SeqCst);
    cluster.kill(1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    phase.store(2, std::sync::atomic::Ordering::SeqCst);
    cluster.spawn(1);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.send(true).expect("stop the load");
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("a writer"));
    }
    let mut answered = [0u64; 3];
    for r in readers {
        for (total, n) in answered.iter_mut().zip(r.await.expect("a reader")) {
            *total += n;
        }
    }
    let by_phase = |p: usize| acked.iter().filter(|(_, at)| *at == p).count();
    eprintln!(
        "dns: writes acknowledged before / while / after the primary was down: {} / {} / {}; reads answered: {answered:?}",
        by_phase(0),
        by_phase(1),
        by_phase(2)
    );
    assert!(
        by_phase(0) > 20 && by_phase(2) > 20,
        "writes went on around the outage"
    );
    // A write asked while the primary was down can only have been acknowledged by a primary
    // back up (the phase is read when the write starts).
    assert!(
        answered[1] > 20,
        "the secondaries answered reads while the primary was down"
    );
    // Every acknowledged write reaches every member.
    let keys: Vec<&str> = acked.iter().map(|(key, _)| key.as_str()).collect();
    wait_everywhere(&cluster, &keys, "v", Duration::from_secs(10)).await;
}

/// Waits until every member's own copy (a serializable read) holds `value` for every key
/// in `keys`, failing the test after `within`.
async fn wait_everywhere(cluster: &Cluster, keys: &[&str], value: &str, within: Duration) {
    let deadline = Instant::now() + within;
    for member in &cluster.members {
        for &key in keys {
            loop {
                let here = get(&member.client, key, true).await.ok().flatten();
                if here.as_deref() == Some(value) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "member {} holds {here:?} for {key}, acknowledged as {value:?}",
                    member.id
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_steps_down_and_serves_no_stale_read() {
    a_paused_leader_serves_no_stale_read("raft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_multi_paxos_leader_steps_down_and_serves_no_stale_read() {
    a_paused_leader_serves_no_stale_read("multi-paxos").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_zab_leader_abdicates_and_serves_no_stale_read() {
    a_paused_leader_serves_no_stale_read("zab").await;
}

/// The leader is stopped (SIGSTOP) while the others elect another and write; woken, it must
/// not answer a linearizable read with what it knew before.
/// The same over TLS: a paused leader's peers cut it off over TLS links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_over_tls_serves_no_stale_read() {
    a_paused_leader_of_serves_no_stale_read(Cluster::start_tls, "raft").await;
}

async fn a_paused_leader_serves_no_stale_read(protocol: &str) {
    a_paused_leader_of_serves_no_stale_read(Cluster::start, protocol).await;
}

async fn a_paused_leader_of_serves_no_stale_read(
    start: fn(&str, u64, &[&str]) -> Cluster,
    protocol: &str,
) {
    let cluster = start(protocol, 3, &["--protocol", protocol]);
    let leader = cluster.leader().await;
    let old = cluster.member(leader).client.clone();
    put_until_ok(&old, "k", "before", Duration::from_secs(5)).await;

    signal(cluster.pid(leader), "STOP");
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let new_leader = cluster.leader_among(&others, Duration::from_secs(10)).await;
    put_until_ok(
        &cluster.member(new_leader).client,
        "k",
        "after",
        Duration::from_secs(5),
    )
    .await;
    signal(cluster.pid(leader), "CONT");

    // Straight after waking, the old leader either refuses or answers with the new value;
    // never the old one.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answered = false;
    while Instant::now() < deadline && !answered {
        match get(&old, "k", false).await {
            Ok(value) => {
                assert_eq!(
                    value.as_deref(),
                    Some("after"),
                    "a stale read from the old leader"
                );
                answered = true;
            }
            Err(e) => eprintln!("old leader refused a read: {}", e.message()),
        }
    }
    assert!(answered, "the old leader never served again");
    let status = common::status(&old).await.expect("status");
    assert_ne!(status.leader, leader, "the paused leader stepped down");
}

/// The lease promise across a pause: a leader stopped (SIGSTOP) past a lease's TTL is deposed,
/// and its successor revokes the lease and deletes its key. A keep-alive queued at the old
/// leader meanwhile must not be answered with a fresh TTL when it wakes: the holder would
/// believe it still holds what another client may now hold. etcd confirms leadership first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_does_not_renew_a_lease_its_successor_revoked() {
    a_paused_lease_keeper_does_not_renew_a_lease_its_successor_revoked("raft").await;
}

/// The same under Basic Paxos, where the keeper of the lease clocks is chosen through the log
/// and replaced by another member's claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_basic_paxos_lease_keeper_does_not_renew_a_lease_its_successor_revoked() {
    a_paused_lease_keeper_does_not_renew_a_lease_its_successor_revoked("basic-paxos").await;
}

async fn a_paused_lease_keeper_does_not_renew_a_lease_its_successor_revoked(protocol: &str) {
    use synod_proto::etcdserverpb as pb;
    use synod_proto::etcdserverpb::lease_client::LeaseClient;
    let cluster = Cluster::start("lease-pause", 3, &["--protocol", protocol]);
    cluster.ready().await;
    let leader = cluster
        .lease_keeper_among(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let old = cluster.member(leader).client.clone();
    let granted = LeaseClient::new(common::channel(&old))
        .lease_grant(pb::LeaseGrantRequest { ttl: 2, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    let id = granted.id;
    let mut put = common::put_request("locked", "by-me");
    put.lease = id;
    KvClient::new(common::channel(&old))
        .put(put)
        .await
        .expect("put with the lease");
    // A keep-alive stream straight to the leader, on a channel without a request timeout.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{old}"))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let (keep_alive, requests) = tokio::sync::mpsc::channel(4);
    let mut answers = LeaseClient::new(endpoint)
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .expect("keep-alive stream")
        .into_inner();
    keep_alive
        .send(pb::LeaseKeepAliveRequest { id })
        .await
        .expect("send");
    let first = answers.message().await.expect("answer").expect("one");
    assert_eq!(first.ttl, 2);

    signal(cluster.pid(leader), "STOP");
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    let new_leader = cluster
        .lease_keeper_among(&others, Duration::from_secs(10))
        .await;
    let here = cluster.member(new_leader).client.clone();
    // The successor's clock runs out (TTL plus an election timeout) and the key goes.
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&here, "locked", false).await.ok() != Some(None) {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A keep-alive waits at the stopped leader; then it wakes.
    keep_alive
        .send(pb::LeaseKeepAliveRequest { id })
        .await
        .expect("send");
    signal(cluster.pid(leader), "CONT");
    match tokio::time::timeout(Duration::from_secs(10), answers.message()).await {
        Ok(Ok(Some(answer))) => assert_eq!(
            answer.ttl, 0,
            "the old leader renewed a lease its successor revoked"
        ),
        Ok(Ok(None)) | Ok(Err(_)) => {} // refused: the holder knows it holds nothing
        Err(_) => panic!("the keep-alive was never answered"),
    }
    let ttl = LeaseClient::new(common::channel(&here))
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: false })
        .await
        .expect("time to live")
        .into_inner();
    assert_eq!(ttl.ttl, -1, "the lease is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_behind_a_snapshot_catches_up() {
    let mut cluster = Cluster::start("snapshot", 3, &["--snapshot-every", "100"]);
    let leader = cluster.leader().await;
    let behind = if leader == 3 { 2 } else { 3 };
    let status = cluster.terminate(behind);
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    let via = cluster.member(leader).client.clone();
    for i in 0..400 {
        put_until_ok(
            &via,
            &format!("s/{i:03}"),
            &i.to_string(),
            Duration::from_secs(5),
        )
        .await;
    }
    cluster.spawn(behind);
    let here = cluster.member(behind).client.clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if get(&here, "s/399", true).await.ok().flatten().as_deref() == Some("399") {
            break;
        }
        assert!(Instant::now() < deadline, "node {behind} never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get(&here, "s/000", true).await.expect("read").as_deref(),
        Some("0")
    );
    let log = cluster.log_of(behind);
    assert!(
        log.contains("installed a snapshot from the leader"),
        "it caught up by a snapshot, not the log:\n{log}"
    );
}

/// Bytes that are no gRPC, a frame cut short, and a handshake from another cluster and from
/// a member that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_port_is_refused_and_the_cluster_keeps_serving() {
    let cluster = Cluster::start("garbage", 3, &[]);
    let leader = cluster.leader().await;
    let via = cluster.member(leader).client.clone();
    put_until_ok(&via, "kept", "yes", Duration::from_secs(5)).await;

    let members: std::collections::BTreeMap<_, _> =
        synod_node::config::parse_cluster(&cluster.initial_cluster).expect("parse");
    let config = synod_node::config::ServerConfig::new(
        synod_core::NodeId(leader),
        members,
        via.clone(),
        std::path::PathBuf::new(),
    );
    let real_id = config.cluster_id();
    let settings = config.replicated_settings();
    let hello = |cluster_id: u64, from: u64, to: u64| {
        let mut hello = b"SYNP".to_vec();
        hello.extend_from_slice(&synod_node::transport::PROTOCOL_VERSION.to_le_bytes());
        hello.extend_from_slice(&cluster_id.to_le_bytes());
        hello.extend_from_slice(&from.to_le_bytes());
        hello.extend_from_slice(&to.to_le_bytes());
        hello.extend_from_slice(&0u16.to_le_bytes());
        hello.extend_from_slice(&(settings.len() as u16).to_le_bytes());
        hello.extend_from_slice(settings.as_bytes());
        hello.extend_from_slice(&0u16.to_le_bytes()); // no peer address
        hello
    };
    let mut half_frame = hello(real_id, 1, leader);
    half_frame.extend_from_slice(&[0, 0, 1, 0, 7, 7]); // a length of 65536, then 2 bytes
    let inputs: Vec<(String, Vec<u8>)> = vec![
        (
            "random bytes".into(),
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("another cluster".into(), hello(real_id ^ 1, 1, leader)),
        ("an unknown member".into(), hello(real_id, 42, leader)),
        ("a half frame".into(), half_frame),
    ];
    for member in &cluster.members {
        for port in [&member.peer, &member.client] {
            for (what, bytes) in &inputs {
                let mut stream = std::net::TcpStream::connect(port).expect("connect");
                // The server may hang up at any point; that is the point.
                let _ = stream.write_all(bytes);
                let _ = stream.flush();
                drop(stream);
                eprintln!("sent {what} to {port}");
            }
        }
    }
    // An oversized value gets etcd's error.
    let mut kv = KvClient::new(common::channel(&via));
    let big = "x".repeat(1600 << 10);
    let error = kv
        .put(common::put_request("big", &big))
        .await
        .expect_err("too large");
    assert_eq!(error.message(), "etcdserver: request is too large");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cluster.leader().await, leader, "no election was caused");
    for member in &cluster.members {
        put_until_ok(&member.client, "after", "ok", Duration::from_secs(5)).await;
        assert_eq!(
            get(&member.client, "kept", false)
                .await
                .expect("read")
                .as_deref(),
            Some("yes")
        );
    }
    let log = cluster.log_of(leader);
    assert!(log.contains("refused"), "refusals are logged:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_data_directory_stops_that_node_with_a_clear_error() {
    let mut cluster = Cluster::start("corrupt", 3, &[]);
    let leader = cluster.leader().await;
    let via = cluster.member(leader).client.clone();
    for i in 0..50 {
        put_until_ok(&via, &format!("c/{i}"), "v", Duration::from_secs(5)).await;
    }
    let victim = if leader == 1 { 2 } else { 1 };
    assert!(cluster.terminate(victim).success());
    // Flip bytes in the middle of every log segment: no torn tail, real damage.
    let segments: Vec<_> = common::files_under(&cluster.member(victim).data_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("wal"))
        .collect();
    assert!(!segments.is_empty(), "the node wrote a log");
    for path in &segments {
        let mut bytes = std::fs::read(path).expect("read segment");
        // The middle of what was written: the segment's space goes on, allocated ahead.
        let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        if written > 64 {
            let middle = written / 2;
            for b in &mut bytes[middle..middle + 16] {
                *b ^= 0x5a;
            }
            std::fs::write(path, bytes).expect("write segment");
        }
    }
    cluster.spawn(victim);
    let mut child = cluster.members[(victim - 1) as usize]
        .child
        .take()
        .expect("spawned");
    let status = common::wait_exit(&mut child, Duration::from_secs(10))
        .expect("a node with a corrupt log refuses to start");
    assert!(!status.success());
    let log = cluster.log_of(victim);
    assert!(
        log.contains("corrupt") || log.contains("checksum") || log.contains("crc"),
        "the error names the damage:\n{log}"
    );
    // The other two keep serving everything acknowledged.
    let others: Vec<u64> = (1..=3).filter(|&id| id != victim).collect();
    cluster.leader_among(&others, Duration::from_secs(10)).await;
    for &id in &others {
        for i in [0, 49] {
            let got = get(&cluster.member(id).client, &format!("c/{i}"), false).await;
            assert_eq!(got.expect("read").as_deref(), Some("v"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served_over_http() {
    let cluster = Cluster::start("metrics", 3, &[]);
    let leader = cluster.leader().await;
    put_until_ok(
        &cluster.member(leader).client,
        "m",
        "1",
        Duration::from_secs(5),
    )
    .await;
    let metrics = common::http_get(&cluster.member(leader).metrics, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for name in [
        "synod_server_proposals_committed_total",
        "synod_server_proposals_failed_total",
        "synod_server_leader_changes_seen_total",
        "synod_server_is_leader 1",
        "synod_server_role",
        "synod_server_term",
        "synod_server_commit_index",
        "synod_server_apply_index",
        "synod_disk_wal_fsync_duration_seconds_bucket",
        "synod_server_apply_duration_seconds_bucket",
        "synod_network_peer_send_queue_depth{peer=",
        "synod_network_peer_sent_bytes_total",
        "synod_network_peer_received_bytes_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    let health = common::http_get(&cluster.member(leader).metrics, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("true"), "{health}");
    let missing = common::http_get(&cluster.member(leader).metrics, "/nothing");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_serves_and_stops_cleanly_on_ctrl_c() {
    let root = common::temp_dir("cluster-up");
    let base = common::free_port_block(30);
    let (mut child, banner) = common::cluster_up(&root.join("data"), base, 3, "raft", &[]);
    assert!(banner[0].contains("3 nodes up"), "{banner:?}");
    assert!(
        banner.iter().any(|l| l.contains("etcdctl --endpoints=")),
        "{banner:?}"
    );
    let second = format!("127.0.0.1:{}", base + 10);
    put_until_ok(
        &format!("127.0.0.1:{base}"),
        "up",
        "yes",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        get(&second, "up", false).await.expect("read").as_deref(),
        Some("yes")
    );

    signal(child.id(), "INT");
    let status = common::wait_exit(&mut child, Duration::from_secs(20)).expect("stops");
    assert!(status.success(), "{status}");
    for id in 1..=3 {
        assert!(
            root.join(format!("data/n{id}")).is_dir(),
            "node {id}'s data stays"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// `cluster up` grows a Raft cluster by adding members and shrinks it by removing the newest,
/// keeping the data: what was written before is read from a member added after, and a
/// restart starts the members it has now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_grows_and_shrinks_a_raft_cluster() {
    cluster_up_grows_and_shrinks("raft").await;
}

/// The same, for Multi-Paxos, Basic Paxos and ZAB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_grows_and_shrinks_a_multi_paxos_cluster() {
    cluster_up_grows_and_shrinks("multi-paxos").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_grows_and_shrinks_a_basic_paxos_cluster() {
    cluster_up_grows_and_shrinks("basic-paxos").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_grows_and_shrinks_a_zab_cluster() {
    cluster_up_grows_and_shrinks("zab").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_grows_and_shrinks_a_sync_cluster() {
    cluster_up_grows_and_shrinks("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_grows_and_shrinks_a_dns_cluster() {
    cluster_up_grows_and_shrinks("dns").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_grows_and_shrinks_a_gossip_cluster() {
    cluster_up_grows_and_shrinks("gossip").await;
}

/// A linearizable read of `key` at a member that just joined. Under DNS and gossip (at ONE),
/// whose reads are answered from the member's copy however old, the member may still be
/// pulling: read until it shows `expected` (or 15 s pass).
async fn read_at_joined(
    protocol: &str,
    address: &str,
    key: &str,
    expected: &str,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let value = get_until_ok(address, key, false, Duration::from_secs(15)).await;
        let copy = protocol == "dns" || protocol == "gossip";
        if !copy || value.as_deref() == Some(expected) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cluster_up_grows_and_shrinks(protocol: &str) {
    let root = common::temp_dir(&format!("cluster-resize-{protocol}"));
    let data = root.join("data");
    let base = common::free_port_block(60);
    let client = |id: u64| format!("127.0.0.1:{}", base + 10 * (id as u16 - 1));
    let stop = |mut child: std::process::Child| {
        signal(child.id(), "INT");
        let status = common::wait_exit(&mut child, Duration::from_secs(30)).expect("stops");
        assert!(status.success(), "{status}");
    };

    let (child, banner) = common::cluster_up(&data, base, 3, protocol, &[]);
    assert!(banner[0].contains("3 nodes up"), "{banner:?}");
    put_until_ok(&client(1), "resize", "before", Duration::from_secs(15)).await;
    stop(child);

    let (child, banner) = common::cluster_up(&data, base, 4, protocol, &[]);
    assert!(
        banner.iter().any(|l| l == "synod: added node 4"),
        "{banner:?}"
    );
    assert!(
        banner.iter().any(|l| l.contains("4 nodes up")),
        "{banner:?}"
    );
    assert_eq!(
        read_at_joined(protocol, &client(4), "resize", "before")
            .await
            .as_deref(),
        Some("before")
    );
    stop(child);

    // Restarted as it is now, then shrunk: the newest member goes, with its data.
    let (child, banner) = common::cluster_up(&data, base, 4, protocol, &[]);
    assert!(
        banner.iter().any(|l| l.contains("4 nodes up")),
        "{banner:?}"
    );
    stop(child);
    let (child, banner) = common::cluster_up(&data, base, 3, protocol, &[]);
    assert!(
        banner.iter().any(|l| l == "synod: removed node 4"),
        "{banner:?}"
    );
    assert!(
        banner.iter().any(|l| l.contains("3 nodes up")),
        "{banner:?}"
    );
    assert!(
        !data.join("n4").exists(),
        "the removed member's data is gone"
    );
    put_until_ok(&client(2), "resize", "after", Duration::from_secs(15)).await;
    stop(child);

    // Grown again, the new member gets a new id (never 4 again) and the ports that go with it.
    let (child, banner) = common::cluster_up(&data, base, 4, protocol, &[]);
    assert!(
        banner.iter().any(|l| l == "synod: added node 5"),
        "{banner:?}"
    );
    assert_eq!(
        read_at_joined(protocol, &client(5), "resize", "after")
            .await
            .as_deref(),
        Some("after")
    );
    stop(child);
    let _ = std::fs::remove_dir_all(&root);
}

/// A data directory keeps the protocol it was written with: a member started on it with
/// another `--protocol` stops with an error that names both, and the directory is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_started_with_another_protocol_is_refused() {
    let mut cluster = Cluster::start("protocol", 3, &["--protocol", "multi-paxos"]);
    let leader = cluster.leader().await;
    put_until_ok(
        &cluster.member(leader).client,
        "p",
        "1",
        Duration::from_secs(5),
    )
    .await;
    let victim = if leader == 1 { 2 } else { 1 };
    assert!(cluster.terminate(victim).success());
    let before = common::files_under(&cluster.member(victim).data_dir);
    let member = cluster.member(victim);
    let output = std::process::Command::new(common::SYNOD)
        .args(["server", "--id", &victim.to_string()])
        .args(["--initial-cluster", &cluster.initial_cluster])
        .args(["--listen-client", &member.client])
        .arg("--data-dir")
        .arg(&member.data_dir)
        .args(["--protocol", "raft"])
        .output()
        .expect("run synod server");
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert_eq!(said.matches("written by").count(), 1, "said once: {said}");
    assert!(
        said.contains("written by multi-paxos, not raft")
            && said.contains("--protocol multi-paxos"),
        "{said}"
    );
    assert_eq!(
        common::files_under(&cluster.member(victim).data_dir),
        before
    );
    cluster.spawn(victim);
    let here = cluster.member(victim).client.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&here, "p", true).await.ok().flatten().as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "node {victim} serves again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Settings that shape the replicated state are the cluster's, not one member's: a member
/// started with another history window is refused by its peers at the handshake (and refuses
/// them), says why in its log, and never takes part; the others go on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_started_with_other_replicated_settings_is_refused_by_its_peers() {
    let mut cluster = Cluster::start("settings", 3, &[]);
    let leader = cluster.leader().await;
    let victim = if leader == 1 { 2 } else { 1 };
    cluster.kill(victim);
    cluster.extra = vec!["--history-revisions".into(), "500".into()];
    cluster.spawn(victim);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = cluster.log_of(victim);
        if log.contains("runs with other replicated settings") {
            assert!(log.contains("history-revisions=500"), "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no refusal logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let via = cluster.member(leader).client.clone();
    put_until_ok(&via, "after", "yes", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let here = cluster.member(victim).client.clone();
    let seen = get(&here, "after", true).await.ok().flatten();
    assert_eq!(seen, None, "the refused member learnt nothing new");
}

#[test]
fn wrong_flags_get_a_clear_error_and_exit_code_2() {
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "server",
                "--id",
                "1",
                "--initial-cluster",
                "1=127.0.0.1:1",
                "--inject-bug",
                "read-without-confirmation",
            ],
            "needs SYNOD_ALLOW_INJECTED_BUGS=1",
        ),
        (
            &[
                "server",
                "--id",
                "1",
                "--initial-cluster",
                "1=127.0.0.1:1",
                "--clock-rate",
                "1.1",
            ],
            "needs SYNOD_ALLOW_INJECTED_BUGS=1",
        ),
        (
            &["server", "--id", "4", "--initial-cluster", "1=127.0.0.1:1"],
            "not in --initial-cluster",
        ),
        (&["server", "--id", "1"], "--initial-cluster"),
        (
            &[
                "server",
                "--id",
                "1",
                "--initial-cluster",
                "1=127.0.0.1:1",
                "--protocol",
                "viewstamped-replication",
            ],
            "not a protocol this server runs",
        ),
        (
            &["server", "--id", "1", "--initial-cluster", "one=x"],
            "has no port",
        ),
        (
            &[
                "server",
                "--id",
                "1",
                "--initial-cluster",
                "1=h:1,two=http://h:2",
            ],
            "not some of each",
        ),
    ];
    for (args, expected) in cases {
        let out = std::process::Command::new(common::SYNOD)
            .args(args)
            .output()
            .expect("run synod");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?} should say {expected:?}: {stderr}"
        );
    }
}

/// `synod health` does what `etcdctl endpoint health` does: exit 0 while every endpoint
/// serves a linearizable read, 1 (naming the endpoint) once one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_which_endpoint_cannot_serve_a_linearizable_read() {
    let mut cluster = Cluster::start("health", 3, &[]);
    cluster.leader().await;
    let health = |endpoints: &str| {
        std::process::Command::new(common::SYNOD)
            .args([
                "health",
                "--endpoints",
                endpoints,
                "--dial-timeout-ms",
                "500",
            ])
            .output()
            .expect("run synod health")
    };
    let out = health(&cluster.endpoints());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.matches("is healthy").count(), 3, "{stdout}");
    let gone = cluster.member(3).client.clone();
    cluster.kill(3);
    let out = health(&cluster.endpoints());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("{gone} is unhealthy")), "{stdout}");
    assert_eq!(stdout.matches("is healthy").count(), 2, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_last_write_was_torn_cuts_it_logs_it_and_serves() {
    let mut cluster = Cluster::start("torn", 3, &[]);
    let leader = cluster.leader().await;
    let via = cluster.member(leader).client.clone();
    for i in 0..30 {
        let value = format!("{i}-{}", "x".repeat(700));
        put_until_ok(&via, &format!("t/{i}"), &value, Duration::from_secs(5)).await;
    }
    let victim = if leader == 1 { 2 } else { 1 };
    assert!(cluster.terminate(victim).success());
    // Power failed while the next record was being written (so it was never synced, nor
    // acknowledged): its length reached the disk, its last sectors did not and read as zeros.
    let wal = cluster.member(victim).data_dir.join("wal");
    let dir = synod_storage::RealDir::existing(&wal).expect("wal directory");
    let scan = synod_storage::wal::scan(&dir).expect("an intact log");
    let last = scan.records.last().expect("records");
    let segment = wal.join(&*last.file);
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let in_flight = bytes[last.offset as usize..].to_vec();
    let start = bytes.len();
    bytes.extend_from_slice(&in_flight);
    let zeros_from = (bytes.len() - 64) / 512 * 512;
    assert!(
        zeros_from > start + 13,
        "the in-flight record's header reached the disk"
    );
    bytes[zeros_from..].fill(0);
    std::fs::write(&segment, bytes).expect("write segment");

    cluster.spawn(victim);
    let here = cluster.member(victim).client.clone();
    cluster.leader().await;
    put_until_ok(&via, "t/after", "ok", Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&here, "t/after", true).await.ok().flatten().as_deref() != Some("ok") {
        assert!(
            Instant::now() < deadline,
            "node {victim} never served again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = cluster.log_of(victim);
    assert!(
        log.contains("repaired the log's tail") && log.contains("zeroed sector"),
        "the cut is logged:\n{log}"
    );
}

/// More than 256 MiB of values: the size at which one snapshot record used to be too large
/// for the disk thread of every member at once. Snapshots are taken every 40 entries; one
/// member is away while the store grows and catches up by a snapshot sent in chunks, then
/// another is killed and restarts from its own snapshot on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_past_256_mib_is_snapshotted_sent_and_restarted_from() {
    // A snapshot holds each value once, and waits for a quarter of the store's bytes in the
    // log (the store counts a value twice, as its key's record and as a change): snapshots
    // come after about 40, 80, 160 and 320 values, and only the last is past 256 MiB. A
    // member whose snapshot is still being written when the next is due takes it later (one
    // CI run: 41, 83, 182), and then the fourth waits for about twice that: the test adds
    // values until the member it kills has one past 256 MiB.
    const VALUES: usize = 360;
    let mut cluster = Cluster::start("big", 3, &["--snapshot-every", "40"]);
    let leader = cluster.leader().await;
    let away = if leader == 3 { 2 } else { 3 };
    assert!(cluster.terminate(away).success());
    let via = cluster.member(leader).client.clone();
    let value = |i: usize| format!("{i:04}{}", "v".repeat((1 << 20) - 4));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let via = via.clone();
            tokio::spawn(async move {
                for i in (w..VALUES).step_by(4) {
                    put_until_ok(
                        &via,
                        &format!("big/{i:04}"),
                        &value(i),
                        Duration::from_secs(60),
                    )
                    .await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let clients: Vec<String> = cluster.members.iter().map(|m| m.client.clone()).collect();
    let first_key = |id: u64| {
        let client = clients[(id - 1) as usize].clone();
        async move { get(&client, "big/0000", true).await.ok().flatten() }
    };
    assert_eq!(first_key(leader).await.as_deref(), Some(&value(0)[..]));

    // The member that was away is far behind a compacted log: it gets the snapshot.
    cluster.spawn(away);
    let here = cluster.member(away).client.clone();
    let last = format!("big/{:04}", VALUES - 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    while get(&here, &last, true)
        .await
        .ok()
        .flatten()
        .map(|v| v.len())
        != Some(1 << 20)
    {
        assert!(Instant::now() < deadline, "node {away} never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(first_key(away).await.as_deref(), Some(&value(0)[..]));
    let log = cluster.log_of(away);
    assert!(
        log.contains("installed a snapshot from the leader"),
        "{log}"
    );

    // Another member is killed and comes back from its own snapshot on disk.
    let victim = if leader == 1 { 2 } else { 1 };
    let victim = if victim == away {
        6 - leader - away
    } else {
        victim
    };
    // Its snapshots are written by a thread of low priority, behind the catch-up above: the
    // kill waits for one past 256 MiB, and a value more is written each time it looks and
    // finds none, in case the snapshots so far came late and the next waits for more log.
    let snapshot_sizes = |id: u64| -> Vec<u64> {
        common::files_under(&cluster.member(id).data_dir)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "snap"))
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut more = VALUES;
    while !snapshot_sizes(victim).iter().any(|&len| len > 256 << 20) {
        assert!(
            Instant::now() < deadline,
            "node {victim} never wrote a snapshot past 256 MiB: {:?}",
            snapshot_sizes(victim)
        );
        put_until_ok(
            &via,
            &format!("big/{more:04}"),
            &value(more),
            Duration::from_secs(60),
        )
        .await;
        more += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.kill(victim);
    cluster.spawn(victim);
    // The snapshot holds the first key; the last may lie in the log after it, applied once the
    // leader says it is committed.
    let here = cluster.member(victim).client.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    while first_key(victim).await.as_deref() != Some(&value(0)[..])
        || get(&here, &last, true)
            .await
            .ok()
            .flatten()
            .map(|v| v.len())
            != Some(1 << 20)
    {
        assert!(
            Instant::now() < deadline,
            "node {victim} never served again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in 1..=3 {
        let answer = get(&cluster.member(id).client, &last, true).await;
        assert_eq!(
            answer.expect("read").map(|v| v.len()),
            Some(1 << 20),
            "n{id}"
        );
    }
}

/// A disk that fails under a running member (here: full) stops that member with a clear
/// error and a non-zero exit, never a member that looks alive and persists nothing; the
/// others carry on. Needs root, to mount a small tmpfs; skipped, saying so, without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_disk_fails_stops_with_a_clear_error() {
    let mount_point = common::temp_dir("full-disk");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mount_point)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _unmount = Unmount(mount_point.clone());
    let mut cluster = Cluster::start_with_data_dir("full", 3, &[], |id| {
        (id == 3).then(|| mount_point.join("n3"))
    });
    cluster.leader().await;
    // Through a member whose disk stays good: a follower forwards to whoever leads, and n3 may
    // lead when its disk fills.
    let via = cluster.member(1).client.clone();
    let value = "f".repeat(100_000);
    let mut child = cluster.members[2].child.take().expect("n3 runs");
    let mut exited = None;
    for i in 0..200 {
        put_until_ok(&via, &format!("f/{i}"), &value, Duration::from_secs(10)).await;
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            break;
        }
    }
    let status = exited
        .or_else(|| common::wait_exit(&mut child, Duration::from_secs(10)))
        .expect("n3 stops once its disk is full");
    assert!(!status.success(), "{status}");
    let log = cluster.log_of(3);
    assert!(
        log.contains("storage failed") && log.contains("No space left"),
        "the reason is logged:\n{log}"
    );
    // The two others still have a majority and serve.
    put_until_ok(&via, "f/after", "ok", Duration::from_secs(10)).await;
}

/// Gossip under load through every member: one member is paused (SIGSTOP: cut off, as by a
/// partition) while the others take writes, then another is killed and restarted. Once all
/// are back, every acknowledged write is on every member, and the members converge: each
/// holds the same keys with the same values.
/// A gossip member removed while it was down learns of its removal when it comes back, long
/// after the others let removed members go under the other protocols, hands over what it
/// holds, and stops on its own; what it took before is on the others. One removed while up
/// does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossip_member_removed_while_down_learns_it_on_return_and_stops() {
    use synod_proto::etcdserverpb::cluster_client::ClusterClient;
    use synod_proto::etcdserverpb::MemberRemoveRequest;
    let mut cluster = Cluster::start("gossip-removed-away", 3, &["--protocol", "gossip"]);
    cluster.keep_on_failure();
    cluster.ready().await;
    let away = cluster.member(3).client.clone();
    put_until_ok(&away, "taken-by-3", "v", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(3);
    let admin = ClusterClient::new(common::channel(&cluster.member(1).client));
    with_retries("remove the member that is down", || {
        let mut admin = admin.clone();
        async move { admin.member_remove(MemberRemoveRequest { id: 3 }).await }
    })
    .await;
    // Longer than the others keep a removed member connected under the ordered protocols.
    tokio::time::sleep(Duration::from_secs(12)).await;
    cluster.spawn(3);
    let mut child = cluster.members[2].child.take().expect("spawned");
    let status = common::wait_exit(&mut child, Duration::from_secs(30));
    let Some(status) = status else {
        let _ = child.kill();
        panic!("a removed member stops on its own:\n{}", cluster.log_of(3));
    };
    assert!(!status.success(), "it stops with the reason: {status}");
    let log = cluster.log_of(3);
    assert!(log.contains("removed from the cluster"), "{log}");
    for id in [1, 2] {
        let here = cluster.member(id).client.clone();
        let value = get_until_ok(&here, "taken-by-3", true, Duration::from_secs(10)).await;
        assert_eq!(value.as_deref(), Some("v"), "n{id}");
    }
    // A member removed while it is up and connected hands over too (past the time the
    // others keep a removed member's links under the ordered protocols), then stops.
    put_until_ok(
        &cluster.member(2).client,
        "taken-by-2",
        "w",
        Duration::from_secs(10),
    )
    .await;
    with_retries("remove a member that is up", || {
        let mut admin = admin.clone();
        async move { admin.member_remove(MemberRemoveRequest { id: 2 }).await }
    })
    .await;
    let mut child = cluster.members[1].child.take().expect("running");
    let status = common::wait_exit(&mut child, Duration::from_secs(60));
    let Some(status) = status else {
        let _ = child.kill();
        panic!(
            "a removed member stops once it has handed over:\n{}",
            cluster.log_of(2)
        );
    };
    assert!(!status.success(), "it stops with the reason: {status}");
    let here = cluster.member(1).client.clone();
    let value = get_until_ok(&here, "taken-by-2", true, Duration::from_secs(10)).await;
    assert_eq!(value.as_deref(), Some("w"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_members_converge_after_a_pause_and_a_crash_under_load() {
    let mut cluster = Cluster::start("gossip", 3, &["--protocol", "gossip"]);
    cluster.ready().await;
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client.clone()).collect();
    let (stop, stopped) = watch::channel(false);
    // Writers put keys of their own, each twice through one member (the second value is
    // newer by that member's clock, so it must win everywhere), taking the members in turn;
    // a call to a stopped member times out and is not counted. (Two writes through two
    // members a few milliseconds apart are concurrent to gossip: either may win, the same
    // one everywhere.)
    let writers: Vec<_> = (1..=4u64)
        .map(|w| {
            let (endpoints, mut stopped) = (endpoints.clone(), stopped.clone());
            tokio::spawn(async move {
                let channels: Vec<_> = endpoints.iter().map(|e| common::channel(e)).collect();
                let mut acked = Vec::new();
                let mut seq = 0usize;
                while !*stopped.borrow_and_update() {
                    seq += 1;
                    let key = format!("g/{w}/{seq}");
                    let mut done = true;
                    for value in ["first", "second"] {
                        let channel = channels[(seq + w as usize) % channels.len()].clone();
                        let mut kv = KvClient::new(channel);
                        let put = kv.put(common::put_request(&key, value));
                        done &= matches!(
                            tokio::time::timeout(Duration::from_millis(500), put).await,
                            Ok(Ok(_))
                        );
                    }
                    if done {
                        acked.push(key);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let paused = cluster.pid(3);
    signal(paused, "STOP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(paused, "CONT");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.kill(2);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.spawn(2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.send(true).expect("stop the load");
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("a writer"));
    }
    eprintln!(
        "gossip: {} keys written twice and acknowledged",
        acked.len()
    );
    assert!(acked.len() > 50, "writes went on: {}", acked.len());
    let keys: Vec<&str> = acked.iter().map(String::as_str).collect();
    wait_everywhere(&cluster, &keys, "second", Duration::from_secs(15)).await;
    // Converged: every member holds the same keys and values (serializable reads: each
    // member's own copy).
    let mut copies = Vec::new();
    for member in &cluster.members {
        let mut kv = KvClient::new(common::channel(&member.client));
        let mut all = common::get_request("g/", true);
        all.range_end = b"g0".to_vec().into();
        let response = kv.range(all).await.expect("a range").into_inner();
        let pairs: Vec<(bytes::Bytes, bytes::Bytes)> = response
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        copies.push(pairs);
    }
    assert!(
        copies.windows(2).all(|pair| pair[0] == pair[1]),
        "the members hold different data: {} / {} / {} keys",
        copies[0].len(),
        copies[1].len(),
        copies[2].len()
    );
}

/// `synod user`, `synod role` and `synod auth` run etcd's auth runbook with etcdctl's words,
/// and `--user` logs the other commands in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synods_user_role_and_auth_commands_manage_access() {
    let cluster = Cluster::start("synod-auth", 3, &[]);
    cluster.ready().await;
    let endpoints = cluster.endpoints();
    let synod = |args: &[&str]| {
        let out = std::process::Command::new(common::SYNOD)
            .args(args)
            .args(["--endpoints", &endpoints])
            .output()
            .expect("run synod");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    for (args, said) in [
        (&["user", "add", "root:rootpw"][..], "User root created\n"),
        (
            &["user", "grant-role", "root", "root"],
            "Role root is granted to user root\n",
        ),
        (&["role", "add", "reader"], "Role reader created\n"),
        (
            &[
                "role",
                "grant-permission",
                "reader",
                "read",
                "app/",
                "--prefix",
            ],
            "Role reader updated\n",
        ),
        (
            &["user", "add", "alice", "--new-user-password", "alicepw"],
            "User alice created\n",
        ),
        (
            &["user", "grant-role", "alice", "reader"],
            "Role reader is granted to user alice\n",
        ),
        (&["put", "app/x", "1"], "OK\n"),
        (&["auth", "enable"], "Authentication Enabled\n"),
        (&["get", "app/x", "--user", "alice:alicepw"], "app/x\n1\n"),
        (
            &["role", "get", "reader", "--user", "root:rootpw"],
            "Role reader\nKV Read:\n\t[app/, app0) (prefix app/)\nKV Write:\n",
        ),
        (&["user", "list", "--user", "root:rootpw"], "alice\nroot\n"),
        (
            &["user", "passwd", "alice:newpw", "--user", "root:rootpw"],
            "Password updated\n",
        ),
        (
            &["get", "app/x", "--user", "alice", "--password", "newpw"],
            "app/x\n1\n",
        ),
        (
            &["auth", "disable", "--user", "root:rootpw"],
            "Authentication Disabled\n",
        ),
    ] {
        assert_eq!(synod(args), (true, said.to_string()), "synod {args:?}");
    }
    let (ok, said) = synod(&["auth", "status"]);
    assert!(
        ok && said.starts_with("Authentication Status: false"),
        "{said}"
    );
    // While on: no user, a wrong password, a write the role does not allow.
    synod(&["auth", "enable", "--user", "root:rootpw"]);
    for (args, error) in [
        (&["put", "app/y", "1"][..], "user name is empty"),
        (
            &["get", "app/x", "--user", "alice:alicepw"],
            "authentication failed",
        ),
        (
            &["put", "app/y", "1", "--user", "alice:newpw"],
            "permission denied",
        ),
    ] {
        let (ok, said) = synod(args);
        assert!(!ok && said.contains(error), "synod {args:?}: {said}");
    }
}
