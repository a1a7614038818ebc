//! `synod cluster up`: a local cluster on loopback, one `synod server` process per node.
//!
//! Node i (from 0) serves clients on base+10i, peers on base+10i+1 and metrics on base+10i+2,
//! keeps its data under `<data-dir>/n<i+1>` and logs to `<data-dir>/n<i+1>.log`. The nodes are
//! real processes, so one can be killed (`kill -9`) to watch the others carry on. Ctrl-C stops
//! them all gracefully; so does the end of this process (each node exits when its standard
//! input, a pipe from here, closes).
//!
//! Under Raft the cluster can grow and shrink: `cluster up --nodes 5` on the data of a
//! three-node cluster adds two members (`member add`, then each started to join), and
//! `--nodes 3` on a five-node one removes the newest two (`member remove`, their data
//! deleted). The data directory's `cluster` file remembers the members, so a restart starts
//! the same ones; ids are never reused, so a node's ports follow its id (node id i: base +
//! 10(i-1)).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::cluster_client::ClusterClient;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::Endpoint;

use super::client::Tls;

/// `synod cluster ...`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Start a local cluster and run it until Ctrl-C.
    Up(UpArgs),
}

#[derive(Args, Debug)]
struct UpArgs {
    /// How many nodes. On the data of an earlier Raft cluster of another size, members are
    /// added or removed to make it this many.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// The first node's client port; every node takes ten ports from here.
    #[arg(long, default_value_t = 2379)]
    base_port: u16,
    /// Every node's data and log go under here.
    #[arg(long, default_value = "synod-data")]
    data_dir: PathBuf,
    /// Delete what an earlier cluster left in the data directory first.
    #[arg(long)]
    fresh: bool,
    /// The replication protocol: raft, multi-paxos, basic-paxos, zab, sync or dns.
    #[arg(long, default_value = "raft")]
    protocol: String,
    /// Passed to every node.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    election_timeout_ms: u64,
    /// Passed to every node.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    heartbeat_ms: u64,
    /// TLS on the client port and between members, with client certificates required: a CA
    /// and certificates are made for the cluster (once) under DATA_DIR/tls, with a client
    /// certificate for the user `root`.
    #[arg(long)]
    tls: bool,
}

struct Node {
    id: u64,
    client: String,
    /// Where it serves metrics and the live view, `host:port`.
    metrics: String,
    /// How to reach `client` (with TLS under `--tls`).
    endpoint: Endpoint,
    child: Option<Child>,
    log: PathBuf,
}

/// Runs `cluster ...`.
pub fn run(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Up(args) = args.command;
    up(args)
}

fn port(base: u16, node: u64, offset: u64) -> anyhow::Result<u16> {
    u16::try_from(base as u64 + node * 10 + offset)
        .ok()
        .filter(|p| *p > 0)
        .context("--base-port leaves no room for that many nodes")
}

/// What the data directory's `cluster` file remembers: the flags that shape the cluster, the
/// members it booted with (their `--initial-cluster`) and the members it has now.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    base_port: u16,
    protocol: String,
    boot: Vec<u64>,
    members: Vec<u64>,
    /// The highest member id ever used here (ids are never reused).
    highest: u64,
    /// TLS everywhere (`--tls`), with the certificates under `tls/`.
    tls: bool,
}

impl Shape {
    fn encode(&self) -> String {
        let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        format!(
            "base-port={} protocol={} boot={} members={} highest={}{}\n",
            self.base_port,
            self.protocol,
            ids(&self.boot),
            ids(&self.members),
            self.highest,
            if self.tls { " tls=1" } else { "" }
        )
    }

    /// Reads the file; the form older versions wrote (`nodes=N`) means members 1..=N.
    fn decode(text: &str) -> Option<Shape> {
        let field = |name: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        };
        let ids = |v: &str| -> Option<Vec<u64>> {
            v.split(',')
                .map(|i| i.parse().ok().filter(|&id| id > 0))
                .collect()
        };
        let (boot, members) = match (field("boot"), field("members"), field("nodes")) {
            (Some(boot), Some(members), _) => (ids(boot)?, ids(members)?),
            (_, _, Some(n)) => {
                let all: Vec<u64> = (1..=n.parse().ok()?).collect();
                (all.clone(), all)
            }
            _ => return None,
        };
        let highest = match field("highest") {
            Some(h) => h.parse().ok()?,
            None => boot.iter().chain(&members).copied().max()?,
        };
        if boot.is_empty() || members.is_empty() || members.iter().any(|&m| m > highest) {
            return None;
        }
        Some(Shape {
            base_port: field("base-port")?.parse().ok()?,
            protocol: field("protocol")?.to_string(),
            boot,
            members,
            highest,
            tls: field("tls") == Some("1"),
        })
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("cluster");
        std::fs::write(&path, self.encode())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Reads what an earlier cluster left in `dir` (or starts a new one of `nodes` members), and
/// refuses other flags there: a node's log only makes sense with the members it was written
/// with.
fn claim_data_dir(dir: &Path, args: &UpArgs) -> anyhow::Result<Shape> {
    if args.fresh && dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let marker = dir.join("cluster");
    let Ok(text) = std::fs::read_to_string(&marker) else {
        let all: Vec<u64> = (1..=args.nodes).collect();
        let shape = Shape {
            base_port: args.base_port,
            protocol: args.protocol.clone(),
            boot: all.clone(),
            members: all,
            highest: args.nodes,
            tls: args.tls,
        };
        shape.save(dir)?;
        return Ok(shape);
    };
    let shape = Shape::decode(&text)
        .with_context(|| format!("{} is damaged: {}", marker.display(), text.trim()))?;
    if shape.base_port != args.base_port || shape.protocol != args.protocol || shape.tls != args.tls
    {
        bail!(
            "{} holds a cluster of another shape ({}); use the same flags, another --data-dir, or --fresh (--nodes may change: the cluster grows or shrinks)",
            dir.display(),
            text.trim()
        );
    }
    Ok(shape)
}

/// Where `--tls` keeps the cluster's CA and certificates.
fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// Makes the CA and certificates of a `--tls` cluster, unless an earlier run made them.
fn make_certificates(data_dir: &Path) -> anyhow::Result<()> {
    let dir = tls_dir(data_dir);
    if dir.join("ca.crt").exists() {
        return Ok(());
    }
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    synod_node::tls::authority::generate(&dir, "Synod local CA", &[("server", &hosts)], &["root"])
        .map_err(|e| anyhow::anyhow!("cannot make the cluster's certificates: {e}"))?;
    println!("synod: made a CA and certificates under {}", dir.display());
    Ok(())
}

/// A node's TLS flags under `--tls`: the same certificate for clients and peers, and
/// certificates required of both.
fn tls_flags(data_dir: &Path, tls: bool) -> Vec<String> {
    if !tls {
        return Vec::new();
    }
    synod_node::tls::authority::server_flags(&tls_dir(data_dir))
}

/// How this command reaches the nodes: as `root`, by certificate, under `--tls`.
fn client_tls(data_dir: &Path, tls: bool) -> Tls {
    if !tls {
        return Tls::default();
    }
    let dir = tls_dir(data_dir);
    Tls {
        cacert: Some(dir.join("ca.crt")),
        cert: Some(dir.join("root.crt")),
        key: Some(dir.join("root.key")),
    }
}

/// Starts node `id`: a member the cluster booted with, or (`joining`, the cluster list to
/// join with) one added later.
fn spawn(args: &UpArgs, shape: &Shape, id: u64, joining: Option<&str>) -> anyhow::Result<Node> {
    let exe = std::env::current_exe().context("cannot find the synod executable")?;
    // The nodes share this machine: each gets its share of the cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / args.nodes.max(1) as usize).max(1);
    let boot_list = shape
        .boot
        .iter()
        .map(|&i| Ok(format!("{i}=127.0.0.1:{}", port(args.base_port, i - 1, 1)?)))
        .collect::<anyhow::Result<Vec<_>>>()?
        .join(",");
    let client = format!("127.0.0.1:{}", port(args.base_port, id - 1, 0)?);
    let metrics = format!("127.0.0.1:{}", port(args.base_port, id - 1, 2)?);
    let log = args.data_dir.join(format!("n{id}.log"));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let mut command = Command::new(&exe);
    command
        .arg("server")
        .args(["--id", &id.to_string()])
        .args(["--listen-client", &client])
        .args(["--listen-metrics", &metrics])
        .arg("--data-dir")
        .arg(args.data_dir.join(format!("n{id}")))
        .args(["--protocol", &args.protocol])
        .args([
            "--election-timeout-ms",
            &args.election_timeout_ms.to_string(),
        ])
        .args(["--heartbeat-ms", &args.heartbeat_ms.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(tls_flags(&args.data_dir, shape.tls))
        .arg("--exit-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(log_file.try_clone().context("cannot share the log file")?)
        .stderr(log_file);
    match joining {
        // A member added later: its data directory says who it is once it has joined.
        Some(list) => command
            .args(["--initial-cluster", list])
            .args(["--initial-cluster-state", "existing"]),
        None => command.args(["--initial-cluster", &boot_list]),
    };
    let child = command
        .spawn()
        .with_context(|| format!("cannot start node {id}"))?;
    Ok(Node {
        id,
        endpoint: client_tls(&args.data_dir, shape.tls).endpoint(&client)?,
        client,
        metrics,
        child: Some(child),
        log,
    })
}

fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if !synod_replica::PROTOCOL_NAMES.contains(&args.protocol.as_str()) {
        bail!(
            "--protocol {}: not a protocol Synod serves (it serves {})",
            args.protocol,
            synod_replica::PROTOCOL_NAMES.join(", ")
        );
    }
    let mut shape = claim_data_dir(&args.data_dir, &args)?;
    if shape.tls {
        make_certificates(&args.data_dir)?;
    }
    let mut nodes = Vec::new();
    for &id in &shape.members {
        let joined = !shape.boot.contains(&id);
        // A member that joined restarts on its data; the list only names its own entry.
        let own = format!("{id}=127.0.0.1:{}", port(args.base_port, id - 1, 1)?);
        nodes.push(spawn(&args, &shape, id, joined.then_some(own.as_str()))?);
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(async {
        wait_until_serving(&mut nodes, &args.protocol).await?;
        resize(&args, &mut shape, &mut nodes).await?;
        supervise(
            &mut nodes,
            &args.protocol,
            &client_tls(&args.data_dir, shape.tls),
        )
        .await
    });
    stop_all(&mut nodes);
    outcome
}

/// Adds members (each started to join) or removes the newest ones until the cluster has
/// `--nodes`, saving the members after each change.
async fn resize(args: &UpArgs, shape: &mut Shape, nodes: &mut Vec<Node>) -> anyhow::Result<()> {
    let target = args.nodes as usize;
    if shape.members.len() == target {
        return Ok(());
    }
    let admin = |node: &Node| ClusterClient::new(node.endpoint.connect_lazy());
    let scheme = if shape.tls { "https" } else { "http" };
    while shape.members.len() < target {
        let cluster = admin(&nodes[0]);
        // The id the cluster hands out next (ids are never reused) decides the ports.
        let next = shape.highest + 1;
        let peer = format!(
            "{scheme}://127.0.0.1:{}",
            port(args.base_port, next - 1, 1)?
        );
        // A run that stopped midway (or an add that committed but timed out) left the member
        // in the cluster: take it as added.
        let (id, members) = add_member(&cluster, &peer).await?;
        if id != next {
            bail!("the cluster gave the new member id {id}, not {next}: its ports would clash; remove it (synod member remove {id:x}) and use another --data-dir");
        }
        let list = members
            .iter()
            .filter_map(|m| Some(format!("{}={}", m.id, m.peer_ur_ls.first()?)))
            .collect::<Vec<_>>()
            .join(",");
        shape.members.push(id);
        shape.highest = id;
        shape.save(&args.data_dir)?;
        nodes.push(spawn(args, shape, id, Some(&list))?);
        println!("synod: added node {id}");
        wait_until_serving(nodes, &args.protocol).await?;
    }
    while shape.members.len() > target {
        let Some(&id) = shape.members.iter().max() else {
            break;
        };
        // Ask a member that stays.
        let keep = nodes
            .iter()
            .position(|n| n.id != id)
            .context("no member stays")?;
        let cluster = admin(&nodes[keep]);
        remove_member(&cluster, id).await?;
        shape.members.retain(|&m| m != id);
        shape.save(&args.data_dir)?;
        if let Some(at) = nodes.iter().position(|n| n.id == id) {
            let mut node = nodes.remove(at);
            // Without consensus (gossip) a removed member may hold writes only it took: it
            // stops on its own once it has handed them over, and is stopped only if that
            // takes too long. Any other's data is on the members already.
            if !synod_replica::has_consensus(&args.protocol) {
                wait_for_exit(&mut node, Duration::from_secs(60)).await;
            }
            stop_all(std::slice::from_mut(&mut node));
        }
        let data = args.data_dir.join(format!("n{id}"));
        std::fs::remove_dir_all(&data)
            .with_context(|| format!("cannot delete {}", data.display()))?;
        println!("synod: removed node {id}");
        wait_until_serving(nodes, &args.protocol).await?;
    }
    Ok(())
}

type Admin = ClusterClient<tonic::transport::Channel>;

/// The members now, asked of `cluster` (retried for up to 20 s while a leader is elected).
async fn list_members(cluster: &Admin) -> anyhow::Result<Vec<pb::Member>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let request = pb::MemberListRequest { linearizable: true };
        match cluster.clone().member_list(request).await {
            Ok(listed) => return Ok(listed.into_inner().members),
            Err(e) if Instant::now() > deadline => bail!("member list: {}", e.message()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Adds a voter at `peer`, or finds it added already; returns its id and the members.
async fn add_member(cluster: &Admin, peer: &str) -> anyhow::Result<(u64, Vec<pb::Member>)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let members = list_members(cluster).await?;
        if let Some(m) = members
            .iter()
            .find(|m| m.peer_ur_ls.iter().any(|u| u == peer))
        {
            return Ok((m.id, members));
        }
        let request = pb::MemberAddRequest {
            peer_ur_ls: vec![peer.to_string()],
            is_learner: false,
        };
        match cluster.clone().member_add(request).await {
            Ok(added) => {
                let added = added.into_inner();
                let id = added.member.as_ref().map_or(0, |m| m.id);
                return Ok((id, added.members));
            }
            Err(e) if Instant::now() > deadline => bail!("member add {peer}: {}", e.message()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Removes member `id`, or finds it removed already.
async fn remove_member(cluster: &Admin, id: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if !list_members(cluster).await?.iter().any(|m| m.id == id) {
            return Ok(());
        }
        match cluster
            .clone()
            .member_remove(pb::MemberRemoveRequest { id })
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("member remove {id:x}: {}", e.message()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until the nodes agree on a leader (or, without one, all answer).
async fn wait_until_serving(nodes: &mut [Node], protocol: &str) -> anyhow::Result<Option<u64>> {
    let endpoints: Vec<Endpoint> = nodes.iter().map(|n| n.endpoint.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let leaderless = !synod_replica::has_leader(protocol);
    loop {
        for node in nodes.iter_mut() {
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "node {} exited ({status}) while starting; its log, {}, says:\n{}",
                    node.id,
                    node.log.display(),
                    tail(&node.log)
                );
            }
        }
        if let Some(leader) = agreed_leader(&endpoints, leaderless).await {
            // Up means serving: every member answers a linearizable read (what etcdctl's
            // endpoint health asks), not only names a leader. A member that just joined may
            // still be catching up the log.
            if !synod_replica::is_linearizable(protocol) || all_read_linearizably(&endpoints).await
            {
                return Ok(leader);
            }
        }
        if Instant::now() > deadline {
            bail!("the nodes did not all serve within 30 s; see the logs next to the data");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a leader (or, on a protocol without one, for every node to answer), prints how
/// to reach the cluster, then watches the nodes until Ctrl-C.
async fn supervise(nodes: &mut [Node], protocol: &str, tls: &Tls) -> anyhow::Result<ExitCode> {
    let scheme = if tls.cacert.is_some() {
        "https"
    } else {
        "http"
    };
    let endpoints: Vec<String> = nodes
        .iter()
        .map(|n| format!("{scheme}://{}", n.client))
        .collect();
    // Listening before the banner says Ctrl-C stops the cluster, and all along: a signal
    // stream keeps a signal that arrives while the loop below is busy (a `ctrl_c()` future
    // made anew each turn would miss it).
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let leader = wait_until_serving(nodes, protocol).await?;
    let list = endpoints.join(",");
    match leader {
        Some(leader) => println!("synod: {} nodes up, node {leader} leads", nodes.len()),
        None => println!(
            "synod: {} nodes up, running {protocol}: no leader, every node proposes",
            nodes.len()
        ),
    }
    for node in nodes.iter() {
        println!(
            "  node {}  client {}  log {}",
            node.id,
            node.client,
            node.log.display()
        );
    }
    let flags = match (&tls.cacert, &tls.cert, &tls.key) {
        (Some(ca), Some(cert), Some(key)) => format!(
            " --cacert={} --cert={} --key={}",
            ca.display(),
            cert.display(),
            key.display()
        ),
        _ => String::new(),
    };
    let metrics: Vec<&str> = nodes.iter().map(|n| n.metrics.as_str()).collect();
    println!();
    println!(
        "live view: http://{}/live?members={}",
        metrics[0],
        metrics.join(",")
    );
    println!();
    println!("try:");
    println!("  etcdctl --endpoints={list}{flags} put greeting hello");
    println!("  etcdctl --endpoints={list}{flags} get greeting");
    println!("  synod get greeting --endpoints {list}{flags}");
    println!("  synod status --endpoints {list}{flags}");
    println!();
    println!("Ctrl-C stops the cluster; its data stays in place for the next start.");

    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = interval.tick() => {}
        }
        let mut running = 0;
        for node in nodes.iter_mut() {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    println!(
                        "synod: node {} exited ({status}); the others carry on",
                        node.id
                    );
                    node.child = None;
                }
                _ => running += 1,
            }
        }
        if running == 0 {
            println!("synod: every node has exited");
            return Ok(ExitCode::from(1));
        }
    }
    println!("synod: stopping");
    Ok(ExitCode::SUCCESS)
}

/// The leader every endpoint names, once they agree.
async fn agreed_leader(endpoints: &[Endpoint], leaderless: bool) -> Option<Option<u64>> {
    let mut leader = None;
    for endpoint in endpoints {
        let channel = endpoint
            .clone()
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
            .ok()?;
        let status = MaintenanceClient::new(channel)
            .status(pb::StatusRequest {})
            .await
            .ok()?
            .into_inner();
        if leaderless {
            continue;
        }
        if status.leader == 0 || leader.is_some_and(|l| l != status.leader) {
            return None;
        }
        leader = Some(status.leader);
    }
    if leaderless {
        Some(None)
    } else {
        leader.map(Some)
    }
}

/// Whether every endpoint answers a linearizable read of `health` within a second.
async fn all_read_linearizably(endpoints: &[Endpoint]) -> bool {
    for endpoint in endpoints {
        let mut kv = KvClient::new(endpoint.connect_lazy());
        let read = kv.range(pb::RangeRequest {
            key: b"health".to_vec().into(),
            count_only: true,
            ..Default::default()
        });
        if !matches!(
            tokio::time::timeout(Duration::from_secs(1), read).await,
            Ok(Ok(_))
        ) {
            return false;
        }
    }
    true
}

/// Closes every node's standard input (each then stops gracefully) and waits for them.
/// Waits up to `within` for `node` to stop on its own.
async fn wait_for_exit(node: &mut Node, within: Duration) {
    let deadline = Instant::now() + within;
    while let Some(child) = node.child.as_mut() {
        match child.try_wait() {
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(Some(_)) => {
                node.child = None;
                return;
            }
            _ => {
                eprintln!(
                    "synod: removed node {} did not stop on its own within {within:?}; stopping it",
                    node.id
                );
                return;
            }
        }
    }
}

fn stop_all(nodes: &mut [Node]) {
    for node in nodes.iter_mut() {
        if let Some(child) = node.child.as_mut() {
            drop(child.stdin.take());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for node in nodes.iter_mut() {
        let Some(mut child) = node.child.take() else {
            continue;
        };
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    eprintln!("synod: node {} did not stop in time; killing it", node.id);
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
}

/// The last lines of a log.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_file_round_trips_and_reads_the_older_form() {
        let shape = Shape {
            base_port: 2379,
            protocol: "raft".into(),
            boot: vec![1, 2, 3],
            members: vec![1, 3, 5],
            highest: 5,
            tls: true,
        };
        assert_eq!(Shape::decode(&shape.encode()), Some(shape));
        let older = Shape::decode("nodes=3 base-port=2379 protocol=zab\n").expect("older form");
        assert_eq!(older.members, vec![1, 2, 3]);
        assert_eq!((older.boot.len(), older.highest), (3, 3));
        assert_eq!(Shape::decode("base-port=x protocol=raft nodes=3"), None);
    }
}
