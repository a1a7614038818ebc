//! etcd's own command-line client, `etcdctl` (Debian's `etcd-client`), against a Synod
//! cluster of real processes: the same commands, the same output. Skipped, saying so, when
//! etcdctl is not installed; `.ci/run` installs it, so CI always runs this.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Cluster;

fn etcdctl_installed() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// etcdctl's TLS flags for members that run TLS (none for the others).
fn tls_flags(endpoints: &str) -> Vec<String> {
    common::tls_of(endpoints).map_or_else(Vec::new, |certs| certs.etcdctl_flags())
}

/// Runs etcdctl with `args` (and `stdin`) to the end.
fn run_etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(tls_flags(endpoints))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("etcdctl output")
}

/// Runs etcdctl with `args` (and `stdin`), asserting success; returns its standard output.
fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = run_etcdctl(endpoints, args, stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_synod_on_raft() {
    etcdctl_works_against_synod_on("raft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_synod_on_multi_paxos() {
    etcdctl_works_against_synod_on("multi-paxos").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_synod_on_zab() {
    etcdctl_works_against_synod_on("zab").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_synod_on_sync() {
    etcdctl_works_against_synod_on("sync").await;
}

/// DNS-style propagation: writes anywhere go to the primary, the primary answers reads with
/// everything acknowledged, a secondary answers from its copy (which catches up within the
/// refresh interval, or at once on NOTIFY), leases and transactions run at the primary, and
/// the primary cannot be moved.
/// etcdctl run to fail: its error output.
fn etcdctl_fails(endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = run_etcdctl(endpoints, args, stdin);
    assert!(!out.status.success(), "etcdctl {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `etcdctl watch <prefix> --prefix` on `endpoint`, its output lines sent down the channel.
fn watch_prefix(endpoint: &str, prefix: &str) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut watcher = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(tls_flags(endpoint))
        .args(["watch", prefix, "--prefix"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = watcher.stdout.take().expect("watch stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    (watcher, lines)
}

/// The first `count` non-empty lines a watcher printed (fewer if it falls silent for 10 s);
/// the watcher is stopped.
fn watched(
    mut watcher: std::process::Child,
    lines: mpsc::Receiver<String>,
    count: usize,
) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.is_empty() => {}
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    seen
}

/// Gossip takes puts, ranges and deletes on any member; what needs consensus (a
/// transaction, a lease) is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_synod_on_gossip() {
    if !etcdctl_installed() {
        eprintln!("SKIPPED: etcdctl is not installed (apt-get install etcd-client)");
        return;
    }
    let cluster = Cluster::start("gossip", 3, &["--protocol", "gossip"]);
    cluster.ready().await;
    let first = cluster.members.first().expect("members").client.clone();
    let last = cluster.members.last().expect("members").client.clone();
    // A watcher on the first member sees the changes as they reach it, its own and those
    // gossiped from the others.
    let (watcher, lines) = watch_prefix(&first, "g/");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(etcdctl(&last, &["put", "g/a", "1"], None), "OK\n");
    // The write spreads to every member within a few gossip rounds.
    let mut seen = String::new();
    for _ in 0..50 {
        seen = etcdctl(&first, &["get", "g/a", "--print-value-only"], None);
        if seen == "1\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seen, "1\n", "the write never reached the first member");
    let serializable = ["get", "g/a", "--print-value-only", "--consistency=s"];
    assert_eq!(etcdctl(&first, &serializable, None), "1\n");
    assert_eq!(etcdctl(&first, &["put", "g/b", "2"], None), "OK\n");
    assert_eq!(etcdctl(&first, &["del", "g/a"], None), "1\n");
    assert_eq!(
        etcdctl(&first, &["get", "g/", "--prefix", "--keys-only"], None),
        "g/b\n\n"
    );
    let txn = "value(\"g/b\") = \"2\"\n\nput g/b 3\n\n\n";
    let refused = etcdctl_fails(&first, &["txn"], Some(txn));
    assert!(
        refused.contains("Unimplemented") && refused.contains("needs consensus"),
        "{refused}"
    );
    let refused = etcdctl_fails(&last, &["lease", "grant", "10"], None);
    assert!(refused.contains("gossip has no leases"), "{refused}");
    let expected = ["PUT", "g/a", "1", "PUT", "g/b", "2", "DELETE", "g/a"];
    let seen = watched(watcher, lines, expected.len());
    assert_eq!(seen, expected, "the watch on the first member");
    assert_eq!(
        etcdctl(&last, &["get", "g/b", "--print-value-only"], None).trim_end(),
        "2",
        "the refused transaction changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_synod_on_dns() {
    if !etcdctl_installed() {
        eprintln!("SKIPPED: etcdctl is not installed (apt-get install etcd-client)");
        return;
    }
    let cluster = Cluster::start("dns", 3, &["--protocol", "dns"]);
    let leader = cluster.ready().await;
    let primary = cluster.members.first().expect("members");
    assert_eq!(leader, Some(primary.id), "the lowest member is primary");
    let secondary = cluster.members.last().expect("members").client.clone();
    let primary_client = primary.client.clone();
    let all = cluster.endpoints();

    assert_eq!(etcdctl(&secondary, &["put", "zone/a", "1"], None), "OK\n");
    assert_eq!(
        etcdctl(
            &primary_client,
            &["get", "zone/a", "--print-value-only"],
            None
        ),
        "1\n",
        "the primary holds every acknowledged write"
    );
    // The secondary's copy catches up; until then it answers from what it has.
    let mut seen = String::new();
    for _ in 0..50 {
        seen = etcdctl(&secondary, &["get", "zone/a", "--print-value-only"], None);
        if seen == "1\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seen, "1\n", "the secondary never caught up");

    let txn = "value(\"zone/a\") = \"1\"\n\nput zone/a 2\n\nget zone/a\n\n";
    assert_eq!(etcdctl(&secondary, &["txn"], Some(txn)), "SUCCESS\n\nOK\n");
    assert_eq!(etcdctl(&all, &["del", "zone/a"], None), "1\n");
    check_leases(&primary_client, &secondary);
    // etcd's lock recipe reads who holds the lock: only the primary's reads are fresh enough
    // for it (a stale copy could miss the holder).
    check_lock(&primary_client, &primary_client);
    check_members_and_status(&cluster, &all, true);
    check_move_leader_refused(&cluster, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_synod_on_basic_paxos() {
    etcdctl_works_against_synod_on("basic-paxos").await;
}

/// The same, with TLS on the client port and between members, client certificates required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_synod_on_raft_over_tls() {
    etcdctl_works_against(Cluster::start_tls, "raft").await;
}

/// The same over TLS, on a protocol that forwards lease calls to a keeper of the lease clocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_synod_on_multi_paxos_over_tls() {
    etcdctl_works_against(Cluster::start_tls, "multi-paxos").await;
}

async fn etcdctl_works_against_synod_on(protocol: &str) {
    etcdctl_works_against(Cluster::start, protocol).await;
}

async fn etcdctl_works_against(start: fn(&str, u64, &[&str]) -> Cluster, protocol: &str) {
    if !etcdctl_installed() {
        eprintln!("SKIPPED: etcdctl is not installed (apt-get install etcd-client)");
        return;
    }
    let cluster = start(protocol, 3, &["--protocol", protocol]);
    let leader = cluster.ready().await;
    let all = cluster.endpoints();
    // A follower alone, so its answers come through forwarding to the leader (under Basic
    // Paxos, where nobody leads, any member proposes itself, and lease calls go to the
    // keeper of the lease clocks: the last member is seldom it).
    let follower = cluster
        .members
        .iter()
        .rev()
        .find(|m| Some(m.id) != leader)
        .expect("a follower")
        .client
        .clone();

    // A watcher first, to see what follows.
    let (watcher, lines) = watch_prefix(&follower, "app/");
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(etcdctl(&all, &["put", "app/a", "1"], None), "OK\n");
    assert_eq!(etcdctl(&follower, &["put", "app/b", "2"], None), "OK\n");
    assert_eq!(
        etcdctl(&follower, &["get", "app/", "--prefix"], None),
        "app/a\n1\napp/b\n2\n"
    );
    assert_eq!(
        etcdctl(&all, &["get", "app/", "--prefix", "--keys-only"], None),
        "app/a\n\napp/b\n\n"
    );
    assert_eq!(etcdctl(&all, &["del", "app/a"], None), "1\n");

    // A transaction on stdin: compares, a blank line, then-ops, a blank line, else-ops.
    let txn = "value(\"app/b\") = \"2\"\n\nput app/b 3\n\nget app/b\n\n";
    assert_eq!(etcdctl(&follower, &["txn"], Some(txn)), "SUCCESS\n\nOK\n");
    let txn = "value(\"app/b\") = \"2\"\n\nput app/b 4\n\nget app/b\n\n";
    assert_eq!(
        etcdctl(&follower, &["txn"], Some(txn)),
        "FAILURE\n\napp/b\n3\n"
    );

    // The watcher saw every change under app/, in order.
    let expected = [
        "PUT", "app/a", "1", "PUT", "app/b", "2", "DELETE", "app/a", "PUT", "app/b", "3",
    ];
    let seen = watched(watcher, lines, expected.len());
    assert_eq!(seen, expected);

    // Leases: grant, attach, keep alive, inspect, revoke (which deletes the key). They run on
    // the leader's clocks, or under Basic Paxos on those of the keeper the log chose.
    check_leases(&all, &follower);
    check_lock(&all, &follower);
    check_members_and_status(&cluster, &all, leader.is_some());
    check_hash_kv(&cluster, &all);
    if protocol == "zab" {
        check_move_leader_refused(&cluster, &all);
    } else {
        check_move_leader(&cluster, &all, leader);
    }
    // After a leader move, so the backup's cluster had more eras than the new one has.
    check_snapshot_save_and_restore(&cluster, protocol).await;
}

/// Under ZAB, as in ZooKeeper, leadership is not moved on request: etcdctl move-leader is
/// refused with an error that says so, and the leader stays.
fn check_move_leader_refused(cluster: &Cluster, all: &str) {
    let target = cluster.members.last().expect("members").id;
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={all}"))
        .args(tls_flags(all))
        .args(["move-leader", &format!("{target:x}")])
        .output()
        .expect("etcdctl move-leader");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("moves no leadership"), "{stderr}");
    assert_eq!(etcdctl(all, &["put", "app/stayed", "1"], None), "OK\n");
}

/// etcdctl move-leader hands the leadership to a member it names, and the cluster goes on
/// serving; under Basic Paxos, with nobody leading, it is refused with a clear error.
fn check_move_leader(cluster: &Cluster, all: &str, leader: Option<u64>) {
    let target = cluster
        .members
        .iter()
        .find(|m| Some(m.id) != leader)
        .expect("a member that does not lead")
        .id;
    let target_hex = format!("{target:x}");
    let Some(leader) = leader else {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={all}"))
            .args(tls_flags(all))
            .args(["move-leader", &target_hex])
            .output()
            .expect("etcdctl move-leader");
        assert!(!out.status.success());
        // etcdctl finds no endpoint that says it leads, and stops there; a client that calls
        // MoveLeader anyway hears that Basic Paxos has no leader to move.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no leader"), "{stderr}");
        return;
    };
    let out = etcdctl(all, &["move-leader", &target_hex], None);
    assert!(
        out.contains(&format!(
            "Leadership transferred from {leader:x} to {target_hex}"
        )),
        "{out}"
    );
    let status = etcdctl(all, &["endpoint", "status"], None);
    let leading: Vec<&str> = status
        .lines()
        .filter(|l| l.contains(", true, false,"))
        .collect();
    assert_eq!(leading.len(), 1, "{status}");
    let id = leading[0].split(", ").nth(1);
    assert_eq!(id, Some(target_hex.as_str()), "{status}");
    assert_eq!(etcdctl(all, &["put", "app/moved", "1"], None), "OK\n");
}

fn check_leases(all: &str, follower: &str) {
    let all = all.to_string();
    let follower = follower.to_string();
    let granted = etcdctl(&all, &["lease", "grant", "60"], None);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease <id> granted")
        .to_string();
    assert_eq!(granted, format!("lease {id} granted with TTL(60s)\n"));
    assert_eq!(
        etcdctl(
            &all,
            &["put", "app/leased", "v", &format!("--lease={id}")],
            None
        ),
        "OK\n"
    );
    assert_eq!(
        etcdctl(&follower, &["lease", "keep-alive", "--once", &id], None),
        format!("lease {id} keepalived with TTL(60)\n")
    );
    let ttl = etcdctl(&all, &["lease", "timetolive", &id, "--keys"], None);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")),
        "{ttl}"
    );
    assert!(ttl.contains("attached keys([app/leased])"), "{ttl}");
    assert_eq!(
        etcdctl(&all, &["lease", "list"], None),
        format!("found 1 leases\n{id}\n")
    );
    assert_eq!(
        etcdctl(&all, &["lease", "revoke", &id], None),
        format!("lease {id} revoked\n")
    );
    assert_eq!(etcdctl(&all, &["get", "app/leased"], None), "");
}

/// `etcdctl lock` (etcd's concurrency recipe: a lease, a key under it, a transaction on create
/// revisions, a watch on the holder before): one holder at a time, the next one in once the
/// first lets go, and nothing left behind.
fn check_lock(all: &str, follower: &str) {
    let mut first = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={all}"))
        .args(tls_flags(all))
        .args(["lock", "app-lock"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("etcdctl lock");
    let mut first_out = BufReader::new(first.stdout.take().expect("lock stdout"));
    let mut line = String::new();
    first_out
        .read_line(&mut line)
        .expect("the first holder's key");
    assert!(line.starts_with("app-lock/"), "{line}");
    // A second holder waits while the first holds the lock...
    let mut second = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={follower}"))
        .args(tls_flags(follower))
        .args(["lock", "app-lock", "echo", "second holder in"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("etcdctl lock");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        second.try_wait().expect("second holder").is_none(),
        "the second holder got the lock while the first held it"
    );
    // ...and gets it once the first lets go (etcdctl unlocks on SIGINT).
    let pid = first.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let _ = first.wait();
    let output = second.wait_with_output().expect("second holder");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "second holder in\n"
    );
    assert_eq!(
        etcdctl(all, &["get", "app-lock", "--prefix", "--keys-only"], None),
        "",
        "both holders let go"
    );
}

fn check_members_and_status(cluster: &Cluster, all: &str, has_leader: bool) {
    let members = etcdctl(all, &["member", "list"], None);
    for member in &cluster.members {
        let scheme = if cluster.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let line = format!(
            "{:x}, started, n{}, {scheme}://{}, {scheme}://{}, false",
            member.id, member.id, member.peer, member.client
        );
        assert!(members.contains(&line), "{line} in:\n{members}");
    }
    let status = etcdctl(all, &["endpoint", "status"], None);
    assert_eq!(status.lines().count(), 3, "{status}");
    let leaders = status
        .lines()
        .filter(|l| l.contains(", true, false,"))
        .count();
    let expected = usize::from(has_leader);
    assert_eq!(leaders, expected, "endpoints that say they lead:\n{status}");
    assert!(status.contains("3.5.0-synod"), "{status}");
    // etcdctl 3.4 prints health on standard error.
    let health = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={all}"))
        .args(tls_flags(all))
        .args(["endpoint", "health"])
        .output()
        .expect("etcdctl endpoint health");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&health.stdout),
        String::from_utf8_lossy(&health.stderr)
    );
    assert!(health.status.success(), "{text}");
    assert_eq!(text.matches("is healthy").count(), 3, "{text}");
}

/// `endpoint hashkv` gives every member's hash of the keys at one revision; members that
/// applied the same history agree.
fn check_hash_kv(cluster: &Cluster, all: &str) {
    let put = etcdctl(all, &["put", "hash/k", "v", "-w", "json"], None);
    let revision = json_number(&put, "revision").expect("the put's revision");
    let at = format!("--rev={revision}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let hashes = loop {
        // A member that has not applied the revision yet says so ("future revision").
        let out = run_etcdctl(all, &["endpoint", "hashkv", &at], None);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.lines().count() == cluster.members.len() {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "endpoint hashkv: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let values: std::collections::BTreeSet<&str> = hashes
        .lines()
        .map(|l| l.rsplit(", ").next().unwrap_or(""))
        .collect();
    assert_eq!(values.len(), 1, "members disagree:\n{hashes}");
}

/// The first number after `"name":` in etcdctl's JSON output.
fn json_number(json: &str, name: &str) -> Option<i64> {
    let at = json.find(&format!("\"{name}\":"))? + name.len() + 3;
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// `etcdctl snapshot save` stores one member's state; `synod snapshot restore` makes a new
/// cluster of it, which serves the keys and takes writes.
async fn check_snapshot_save_and_restore(cluster: &Cluster, protocol: &str) {
    if protocol == "gossip" {
        return;
    }
    let put = etcdctl(
        &cluster.endpoints(),
        &["put", "saved/k", "before", "-w", "json"],
        None,
    );
    let revision = json_number(&put, "revision").expect("the put's revision");
    let file = cluster.root.join("backup.db");
    let file_arg = file.display().to_string();
    // The member the put was answered by may be ahead of the one asked: ask the first
    // member once it has the key.
    let first = cluster.member(1).client.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while etcdctl(
        &first,
        &["get", "saved/k", "--consistency=s", "--print-value-only"],
        None,
    ) != "before\n"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "member 1 never applied the put"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let saved = etcdctl(&first, &["snapshot", "save", &file_arg], None);
    assert!(saved.contains("Snapshot saved at"), "{saved}");

    let restored_root = cluster.root.join("restored");
    for id in 1..=3 {
        let out = Command::new(env!("CARGO_BIN_EXE_synod"))
            .args([
                "snapshot",
                "restore",
                &file_arg,
                "--protocol",
                protocol,
                "--data-dir",
            ])
            .arg(restored_root.join(format!("n{id}")))
            .output()
            .expect("synod snapshot restore");
        assert!(
            out.status.success(),
            "restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let restored = Cluster::start_with_data_dir(
        &format!("{protocol}-restored"),
        3,
        &["--protocol", protocol],
        |id| Some(restored_root.join(format!("n{id}"))),
    );
    restored.ready().await;
    let endpoints = restored.endpoints();
    assert_eq!(
        etcdctl(&endpoints, &["get", "saved/k", "--print-value-only"], None),
        "before\n"
    );
    let after = etcdctl(&endpoints, &["put", "saved/k", "after", "-w", "json"], None);
    let next = json_number(&after, "revision").expect("a revision");
    assert!(
        next > revision,
        "revisions go on from the snapshot's: {next} after {revision}"
    );
    // Leases work on the new cluster's clocks (the old cluster's lease epoch, an era of its
    // own leaders, must not carry over: Multi-Paxos's eras are in the tens of thousands).
    let granted = etcdctl(&endpoints, &["lease", "grant", "30"], None);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease <id> granted")
        .to_string();
    let kept = etcdctl(&endpoints, &["lease", "keep-alive", "--once", &id], None);
    assert!(kept.contains("keepalived with TTL(30)"), "{kept}");
    etcdctl(
        &endpoints,
        &["put", "saved/leased", "x", "--lease", &id],
        None,
    );
    assert_eq!(
        etcdctl(&endpoints, &["get", "saved/k", "--print-value-only"], None),
        "after\n"
    );
}

/// etcd serves `/metrics`, `/health` and `/version` on the client port beside gRPC, and
/// `etcdctl check datascale` reads the servers' memory from `/metrics` there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_check_datascale_reads_metrics_from_the_client_port() {
    let cluster = Cluster::start("datascale", 3, &[]);
    cluster.ready().await;
    let client = cluster.member(1).client.clone();
    let metrics = common::http_get(&client, "/metrics");
    assert!(
        metrics.contains("process_resident_memory_bytes "),
        "{metrics}"
    );
    assert!(metrics.contains("synod_server_has_leader 1"), "{metrics}");
    let health = common::http_get(&client, "/health");
    assert!(health.contains("{\"health\":\"true\""), "{health}");
    let version = common::http_get(&client, "/version");
    assert!(version.contains("\"etcdserver\":\"3.5.0\""), "{version}");
    if !etcdctl_installed() {
        eprintln!("SKIPPED: etcdctl is not installed (apt-get install etcd-client)");
        return;
    }
    let out = run_etcdctl(
        &cluster.endpoints(),
        &["check", "datascale", "--load=s"],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("PASS: Approximate system memory used"),
        "check datascale: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // gRPC still works on the same port.
    assert_eq!(etcdctl(&client, &["put", "after", "1"], None), "OK\n");
}

/// etcd's space quota: a store that outgrows `--quota-backend-bytes` raises NOSPACE, refuses
/// writes that add data on every member, and takes them again once an operator has deleted,
/// compacted and disarmed the alarm, as etcd's runbook has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_sees_the_space_quota_raise_and_clear_nospace() {
    if !etcdctl_installed() {
        eprintln!("SKIPPED: etcdctl is not installed (apt-get install etcd-client)");
        return;
    }
    let cluster = Cluster::start("quota", 3, &["--quota-backend-bytes", "65536"]);
    cluster.ready().await;
    let all = cluster.endpoints();
    let value = "v".repeat(1024);
    let mut refused = None;
    for i in 0..200 {
        let out = run_etcdctl(&all, &["put", &format!("big/{i:03}"), &value], None);
        if !out.status.success() {
            refused = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let refused = refused.expect("200 KiB of puts went past a 64 KiB quota");
    assert!(refused.contains("database space exceeded"), "{refused}");
    // The alarm is replicated: every member lists it and refuses writes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alarms = etcdctl(&all, &["alarm", "list"], None);
        if alarms.contains("alarm:NOSPACE") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no alarm listed: {alarms}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for member in &cluster.members {
        let out = run_etcdctl(&member.client, &["put", "small", "x"], None);
        assert!(!out.status.success(), "member {} took a write", member.id);
    }
    let status = etcdctl(&all, &["endpoint", "status"], None);
    assert!(status.contains("alarm:NOSPACE"), "{status}");
    let health = common::http_get(&cluster.member(1).client, "/health");
    assert!(health.contains("ALARM NOSPACE"), "{health}");
    // kubeadm's probe leaves NOSPACE out: the member is alive, only full.
    let probe = common::http_get(
        &cluster.member(1).client,
        "/health?exclude=NOSPACE&serializable=true",
    );
    assert!(probe.contains("{\"health\":\"true\""), "{probe}");

    // Deleting and compacting frees the space; disarming lets writes in again.
    etcdctl(&all, &["del", "big/", "--prefix"], None);
    let get = etcdctl(&all, &["get", "big/", "--prefix", "-w", "json"], None);
    let revision = json_number(&get, "revision").expect("a revision");
    etcdctl(&all, &["compact", &revision.to_string()], None);
    etcdctl(&all, &["defrag"], None);
    let disarmed = etcdctl(&all, &["alarm", "disarm"], None);
    assert!(disarmed.contains("alarm:NOSPACE"), "{disarmed}");
    assert_eq!(etcdctl(&all, &["alarm", "list"], None), "");
    assert_eq!(etcdctl(&all, &["put", "small", "x"], None), "OK\n");
}

/// etcd keeps history until it is compacted; `--auto-compaction-*` has the leader compact it,
/// by age (periodic) or by count (revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_compaction_forgets_old_history_by_age_or_by_count() {
    if !etcdctl_installed() {
        eprintln!("SKIPPED: etcdctl is not installed (apt-get install etcd-client)");
        return;
    }
    let compacted = |endpoints: &str, revision: i64| {
        let out = run_etcdctl(endpoints, &["get", "k", &format!("--rev={revision}")], None);
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        !out.status.success() && text.contains("required revision has been compacted")
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // By default nothing is compacted on its own.
    let kept = Cluster::start("compaction-none", 3, &[]);
    kept.ready().await;
    let all = kept.endpoints();
    let first = json_number(
        &etcdctl(&all, &["put", "k", "0", "-w", "json"], None),
        "revision",
    )
    .expect("a revision");
    for i in 1..30 {
        etcdctl(&all, &["put", "k", &i.to_string()], None);
    }
    assert_eq!(
        etcdctl(
            &all,
            &["get", "k", &format!("--rev={first}"), "--print-value-only"],
            None
        ),
        "0\n"
    );
    drop(kept);

    let by_age = Cluster::start(
        "compaction-periodic",
        3,
        &[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1s",
        ],
    );
    by_age.ready().await;
    let all = by_age.endpoints();
    let first = json_number(
        &etcdctl(&all, &["put", "k", "0", "-w", "json"], None),
        "revision",
    )
    .expect("a revision");
    wait_for("a second old revision compacted away", &|| {
        etcdctl(&all, &["put", "k", "more"], None);
        compacted(&all, first)
    });
    drop(by_age);

    let by_count = Cluster::start(
        "compaction-revision",
        3,
        &[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "5",
        ],
    );
    by_count.ready().await;
    let all = by_count.endpoints();
    let mut last = 0;
    for i in 0..20 {
        let put = etcdctl(&all, &["put", "k", &i.to_string(), "-w", "json"], None);
        last = json_number(&put, "revision").expect("a revision");
    }
    wait_for("all but the last five revisions compacted", &|| {
        compacted(&all, last - 10)
    });
    assert_eq!(
        etcdctl(
            &all,
            &[
                "get",
                "k",
                &format!("--rev={}", last - 4),
                "--print-value-only"
            ],
            None
        ),
        "15\n"
    );
}

/// etcd's corruption check: a member whose data differs from the leader's at the same
/// revision (here: restored from a backup whose value was changed, with every checksum made
/// to match, as a disk that lies would) is found by the leader's periodic HashKV round; a
/// CORRUPT alarm goes up, and the cluster refuses writes and linearizable reads until an
/// operator clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corruption_check_raises_an_alarm_for_a_member_holding_other_data() {
    if !etcdctl_installed() {
        eprintln!("SKIPPED: etcdctl is not installed (apt-get install etcd-client)");
        return;
    }
    let source = Cluster::start("corrupt-source", 3, &[]);
    source.ready().await;
    let first = source.member(1).client.clone();
    etcdctl(&source.endpoints(), &["put", "k", "value-A"], None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while etcdctl(
        &first,
        &["get", "k", "--consistency=s", "--print-value-only"],
        None,
    ) != "value-A\n"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "member 1 never applied the put"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let good = source.root.join("good.db");
    etcdctl(
        &first,
        &["snapshot", "save", &good.display().to_string()],
        None,
    );

    // The same backup with one value changed, and its checksums made to match.
    let bytes = std::fs::read(&good).expect("read the backup");
    let backup = synod_node::backup::decode(&bytes).expect("a backup");
    let mut state = backup.state.to_vec();
    let at = state
        .windows(7)
        .position(|w| w == b"value-A")
        .expect("the value in the state");
    state[at + 6] = b'B';
    let store = synod_kv::KvStore::restore(&state).expect("still a store");
    assert_eq!(store.revision(), backup.revision);
    let bad = source.root.join("bad.db");
    std::fs::write(&bad, synod_node::backup::encode(&store)).expect("write");

    let root = source.root.join("restored");
    for (id, file) in [(1, &good), (2, &good), (3, &bad)] {
        let out = Command::new(env!("CARGO_BIN_EXE_synod"))
            .arg("snapshot")
            .arg("restore")
            .arg(file)
            .arg("--data-dir")
            .arg(root.join(format!("n{id}")))
            .output()
            .expect("synod snapshot restore");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let restored = Cluster::start_with_data_dir(
        "corrupt-restored",
        3,
        &["--corrupt-check-time", "200ms"],
        |id| Some(root.join(format!("n{id}"))),
    );
    restored.ready().await;
    let all = restored.endpoints();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let alarms = etcdctl(&all, &["alarm", "list"], None);
        if alarms.contains("alarm:CORRUPT") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no CORRUPT alarm: {alarms}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = run_etcdctl(&all, &["put", "k", "new"], None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("corrupt cluster"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // A member's own copy can still be read, as in etcd.
    let third = restored.member(3).client.clone();
    assert_eq!(
        etcdctl(
            &third,
            &["get", "k", "--consistency=s", "--print-value-only"],
            None
        ),
        "value-B\n"
    );
}

/// Reads `key` through `endpoints` until it shows `expected` (a member that reads from a
/// copy that may still be catching up: a learner's serializable read, any read under DNS),
/// for up to 10 s; returns the last value read.
fn etcdctl_read_until(endpoints: &str, key: &str, flags: &[&str], expected: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut args = vec!["get", key, "--print-value-only"];
    args.extend_from_slice(flags);
    loop {
        let out = run_etcdctl(endpoints, &args, None);
        let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if (out.status.success() && value == expected) || std::time::Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Retries an etcdctl command for up to `within` (a learner catching up, a leader being
/// elected); returns its output once it succeeds.
fn etcdctl_until_ok(endpoints: &str, args: &[&str], within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let out = run_etcdctl(endpoints, args, None);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "etcdctl {args:?} kept failing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// etcd's membership runbook with etcdctl, as its documentation writes it: `member add
/// --learner` prints the settings for the new member, which starts with them and an empty
/// data directory; `member promote` makes it a voter once it caught up; `member remove` takes
/// a member out. Unsafe or wrong changes get etcd's errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_adds_promotes_and_removes_members() {
    membership_runbook("raft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_adds_promotes_and_removes_multi_paxos_members() {
    membership_runbook("multi-paxos").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_adds_promotes_and_removes_zab_members() {
    membership_runbook("zab").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_adds_promotes_and_removes_sync_members() {
    membership_runbook("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_adds_promotes_and_removes_dns_members() {
    membership_runbook("dns").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_adds_promotes_and_removes_gossip_members() {
    membership_runbook("gossip").await;
}

async fn membership_runbook(protocol: &str) {
    if !etcdctl_installed() {
        eprintln!("etcdctl is not installed (apt install etcd-client); skipped");
        return;
    }
    let name = format!("etcdctl-members-{protocol}");
    let mut cluster = Cluster::start(&name, 3, &["--protocol", protocol]);
    cluster.keep_on_failure();
    cluster.ready().await;
    let all = cluster.endpoints();
    etcdctl(&all, &["put", "before", "1"], None);
    let peer = cluster.prepare_member(4).peer.clone();
    let added = etcdctl(
        &all,
        &[
            "member",
            "add",
            "n4",
            &format!("--peer-urls=http://{peer}"),
            "--learner",
        ],
        None,
    );
    assert!(
        added.contains("Member") && added.contains("added to cluster"),
        "{added}"
    );
    let setting = |name: &str| {
        added
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{name} in:\n{added}"))
            .to_string()
    };
    assert_eq!(setting("ETCD_NAME"), "n4");
    assert_eq!(setting("ETCD_INITIAL_CLUSTER_STATE"), "existing");
    let list = setting("ETCD_INITIAL_CLUSTER");
    assert!(list.contains(&format!("n4=http://{peer}")), "{list}");
    // A second learner while one is not promoted: etcd's limit of one.
    let error = etcdctl_fails(
        &all,
        &[
            "member",
            "add",
            "n5",
            "--peer-urls=http://127.0.0.1:1",
            "--learner",
        ],
        None,
    );
    assert!(error.contains("too many learner members"), "{error}");

    cluster.join(4, &list);
    // Once started, the new member says its name and client URL.
    let started = format!("4, started, n4, http://{peer}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut members = etcdctl(&all, &["member", "list"], None);
    while !members.contains(&started) {
        assert!(
            std::time::Instant::now() < deadline,
            "{started} in:\n{members}"
        );
        std::thread::sleep(Duration::from_millis(200));
        members = etcdctl(&all, &["member", "list"], None);
    }
    assert!(
        members
            .lines()
            .any(|l| l.starts_with("4,") && l.ends_with("true")),
        "a learner: {members}"
    );
    // A learner serves serializable reads and its status, and sends clients elsewhere for
    // the rest, with etcd's error.
    let learner = cluster.member(4).client.clone();
    let error = etcdctl_fails(&learner, &["put", "k", "v"], None);
    assert!(error.contains("rpc not supported for learner"), "{error}");
    let error = etcdctl_fails(&learner, &["get", "before"], None);
    assert!(error.contains("rpc not supported for learner"), "{error}");
    let stale = etcdctl_read_until(&learner, "before", &["--consistency=s"], "1");
    assert_eq!(stale, "1");
    let status = etcdctl(&learner, &["endpoint", "status"], None);
    assert!(status.contains(", false, true,"), "a learner: {status}");
    // A voter cannot be promoted; the learner can, once it holds the log.
    let error = etcdctl_fails(&all, &["member", "promote", "1"], None);
    assert!(
        error.contains("can only promote a learner member"),
        "{error}"
    );
    let promoted = etcdctl_until_ok(&all, &["member", "promote", "4"], Duration::from_secs(20));
    assert!(promoted.contains("promoted"), "{promoted}");
    let new = cluster.member(4).client.clone();
    assert_eq!(etcdctl_read_until(&new, "before", &[], "1"), "1");

    // Remove one of the first members; the rest, the new one among them, serve on.
    let error = etcdctl_fails(&all, &["member", "remove", "9"], None);
    assert!(error.contains("member not found"), "{error}");
    // (Under Multi-Paxos the promotion takes effect a window of slots after it is decided:
    // a change asked for before then is refused as pending, and asked again.)
    let removed = etcdctl_until_ok(&new, &["member", "remove", "2"], Duration::from_secs(10));
    assert!(removed.contains("removed from cluster"), "{removed}");
    cluster.kill(2);
    let rest = format!(
        "{},{},{}",
        cluster.member(1).client,
        cluster.member(3).client,
        new
    );
    etcdctl_until_ok(&rest, &["put", "after", "2"], Duration::from_secs(10));
    let members = etcdctl(&rest, &["member", "list"], None);
    assert_eq!(members.lines().count(), 3, "{members}");
    assert!(!members.lines().any(|l| l.starts_with("2,")), "{members}");
    let status = etcdctl(&rest, &["endpoint", "status"], None);
    let leaders = status
        .lines()
        .filter(|l| l.contains(", true, false,"))
        .count();
    if synod_replica::has_leader(protocol) {
        assert_eq!(leaders, 1, "one leader among the three: {status}");
    } else {
        assert_eq!(leaders, 0, "no leader under {protocol}: {status}");
    }
    // What every member took is on every member, the new one included.
    for client in [&cluster.member(1).client, &cluster.member(3).client, &new] {
        let seen = etcdctl_read_until(client, "after", &["--consistency=s"], "2");
        assert_eq!(seen, "2", "{client}");
    }
}

/// DNS-style propagation hands its zone over when the primary is removed: the next lowest
/// member becomes primary once it holds the removal, with every write the old one took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_removes_the_dns_primary_and_the_next_member_takes_its_writes() {
    if !etcdctl_installed() {
        eprintln!("etcdctl is not installed (apt install etcd-client); skipped");
        return;
    }
    let mut cluster = Cluster::start("etcdctl-dns-primary", 3, &["--protocol", "dns"]);
    cluster.keep_on_failure();
    assert_eq!(
        cluster.ready().await,
        Some(1),
        "the lowest member is primary"
    );
    let all = cluster.endpoints();
    etcdctl(&all, &["put", "before", "1"], None);
    let removed = etcdctl(&all, &["member", "remove", "1"], None);
    assert!(removed.contains("removed from cluster"), "{removed}");
    let rest = format!("{},{}", cluster.member(2).client, cluster.member(3).client);
    etcdctl_until_ok(&rest, &["put", "after", "2"], Duration::from_secs(10));
    cluster.kill(1);
    let third = cluster.member(3).client.clone();
    for (key, value) in [("before", "1"), ("after", "2")] {
        let got = etcdctl_read_until(&third, key, &[], value);
        assert_eq!(got, value, "{key} at member 3");
    }
    let status = etcdctl(&rest, &["endpoint", "status"], None);
    let leader = status
        .lines()
        .find(|l| l.contains(", true, false,"))
        .unwrap_or_else(|| panic!("a primary among the two: {status}"));
    assert!(leader.starts_with(&cluster.member(2).client), "{status}");
}

/// etcd's auth runbook with etcdctl: users and roles, `auth enable`, `--user`, and what a
/// user may not do answered with etcd's errors. Over TLS with client certificates, the
/// certificate's common name is who a request without a token comes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_manages_users_and_roles_and_auth_enforces_them() {
    check_auth(Cluster::start("auth", 3, &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_manages_users_and_roles_and_auth_enforces_them_over_tls() {
    check_auth(Cluster::start_tls("auth-tls", 3, &[])).await;
}

/// etcdctl's arguments as `user`.
fn with<'a>(user: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    [user, args].concat()
}

async fn check_auth(cluster: Cluster) {
    if !etcdctl_installed() {
        eprintln!("SKIPPED: etcdctl is not installed (apt-get install etcd-client)");
        return;
    }
    cluster.ready().await;
    let all = cluster.endpoints();
    let ctl = |args: &[&str]| etcdctl(&all, args, None);
    let refused = |args: &[&str]| {
        let out = run_etcdctl(&all, args, None);
        assert!(!out.status.success(), "etcdctl {args:?} was not refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(refused(&["auth", "enable"]).contains("root user does not exist"));
    assert_eq!(ctl(&["user", "add", "root:rootpw"]), "User root created\n");
    ctl(&["user", "grant-role", "root", "root"]);
    assert_eq!(ctl(&["role", "add", "reader"]), "Role reader created\n");
    ctl(&[
        "role",
        "grant-permission",
        "reader",
        "read",
        "app/",
        "--prefix=true",
    ]);
    ctl(&["user", "add", "alice:alicepw"]);
    ctl(&["user", "grant-role", "alice", "reader"]);
    ctl(&["put", "app/x", "1"]);
    assert_eq!(ctl(&["auth", "enable"]), "Authentication Enabled\n");

    let root = ["--user", "root:rootpw"];
    let alice = ["--user", "alice:alicepw"];
    if cluster.tls.is_some() {
        // No token: the client certificate's common name, root, is the user.
        assert_eq!(ctl(&["put", "app/by-cert", "1"]), "OK\n");
    } else {
        assert!(refused(&["put", "app/x", "2"]).contains("user name is empty"));
    }
    assert_eq!(ctl(&with(&root, &["put", "app/x", "2"])), "OK\n");
    assert_eq!(ctl(&with(&alice, &["get", "app/x"])), "app/x\n2\n");
    // Read-only on app/: a put there, a read elsewhere, a watch elsewhere are all refused.
    let denied = refused(&with(&alice, &["put", "app/y", "1"]));
    assert!(denied.contains("etcdserver: permission denied"), "{denied}");
    assert!(refused(&with(&alice, &["get", "other"])).contains("permission denied"));
    let watch = run_etcdctl(&all, &with(&alice, &["watch", "other/", "--prefix"]), None);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&watch.stdout),
        String::from_utf8_lossy(&watch.stderr)
    );
    assert!(said.contains("permission denied"), "{said}");
    // Users and roles as etcdctl shows them.
    assert_eq!(ctl(&with(&root, &["user", "list"])), "alice\nroot\n");
    assert_eq!(
        ctl(&with(&root, &["role", "get", "reader"])),
        "Role reader\nKV Read:\n\t[app/, app0) (prefix app/)\nKV Write:\n"
    );
    assert!(refused(&with(&alice, &["user", "list"])).contains("permission denied"));
    // Wrong passwords, then too many of them: etcd's errors, and alice is refused a while
    // even with the right one; root is not affected.
    // (Counted by each member: this asks one.)
    let one = &cluster.members[0].client;
    let wrong = ["--user", "alice:wrong"];
    let failed = run_etcdctl(one, &with(&wrong, &["get", "app/x"]), None);
    assert!(String::from_utf8_lossy(&failed.stderr).contains("authentication failed"));
    for _ in 0..5 {
        let _ = run_etcdctl(one, &with(&wrong, &["get", "app/x"]), None);
    }
    let locked = run_etcdctl(one, &with(&alice, &["get", "app/x"]), None);
    let said = String::from_utf8_lossy(&locked.stderr);
    assert!(said.contains("too many requests"), "{said}");
    let log = cluster.log_of(1);
    assert_eq!(
        log.matches("too many failed logins").count(),
        1,
        "logged once"
    );
    assert_eq!(ctl(&with(&root, &["get", "app/x"])), "app/x\n2\n");
    // The rules hold on every member: the same refusal from each.
    for member in &cluster.members {
        let out = run_etcdctl(&member.client, &with(&alice, &["put", "app/z", "1"]), None);
        assert!(!out.status.success());
    }
    // A lease and a lock under auth: forwarded lease calls keep their user.
    let lease = ctl(&with(&root, &["lease", "grant", "60"]));
    assert!(lease.contains("granted with TTL(60s)"), "{lease}");
    assert_eq!(
        ctl(&with(&root, &["lock", "app-lock", "echo", "held"])),
        "held\n"
    );
    assert_eq!(
        ctl(&with(&root, &["auth", "disable"])),
        "Authentication Disabled\n"
    );
    assert_eq!(ctl(&["put", "app/open", "1"]), "OK\n");
}

/// `synod cluster up --tls` makes a CA and certificates, runs TLS on clients and peers with
/// client certificates required, and prints the etcdctl flags that reach it; without a
/// certificate, or without TLS, etcdctl is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_tls_serves_etcdctl_with_certificates_only() {
    if !etcdctl_installed() {
        eprintln!("SKIPPED: etcdctl is not installed (apt-get install etcd-client)");
        return;
    }
    let root = common::temp_dir("cluster-up-tls");
    let base = common::free_port_block(30);
    let (mut child, banner) = common::cluster_up(&root.join("data"), base, 3, "raft", &["--tls"]);
    let tls = root.join("data/tls");
    let ca = format!("--cacert={}", tls.join("ca.crt").display());
    let cert = format!("--cert={}", tls.join("root.crt").display());
    let key = format!("--key={}", tls.join("root.key").display());
    assert!(
        banner
            .iter()
            .any(|l| l.contains(&ca) && l.contains("https://")),
        "{banner:?}"
    );
    let all = (0..3)
        .map(|i| format!("https://127.0.0.1:{}", base + 10 * i))
        .collect::<Vec<_>>()
        .join(",");
    let with_certs = [ca.as_str(), &cert, &key];
    assert_eq!(
        etcdctl(&all, &[&with_certs[..], &["put", "k", "v"]].concat(), None),
        "OK\n"
    );
    assert_eq!(
        etcdctl(&all, &[&with_certs[..], &["get", "k"]].concat(), None),
        "k\nv\n"
    );
    let members = etcdctl(&all, &[&with_certs[..], &["member", "list"]].concat(), None);
    assert_eq!(members.matches("https://").count(), 6, "{members}");
    // Without a client certificate, and without TLS at all: refused.
    let short = "--command-timeout=3s";
    for flags in [vec![ca.as_str(), short], vec![short]] {
        let out = run_etcdctl(&all, &[&flags[..], &["get", "k"]].concat(), None);
        assert!(!out.status.success(), "served with {flags:?}");
    }
    let plain = format!("127.0.0.1:{base}");
    assert!(!run_etcdctl(&plain, &[short, "get", "k"], None)
        .status
        .success());
    common::signal(child.id(), "INT");
    let status = common::wait_exit(&mut child, Duration::from_secs(20)).expect("stops");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&root);
}
