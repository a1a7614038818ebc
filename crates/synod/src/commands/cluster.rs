//! `synod cluster up`: a local cluster on loopback, one `synod server` process per node.
//!
//! Node i (from 0) serves clients on base+10i, peers on base+10i+1 and metrics on base+10i+2,
//! keeps its data under `<data-dir>/n<i+1>` and logs to `<data-dir>/n<i+1>.log`. The nodes are
//! real processes, so one can be killed (`kill -9`) to watch the others carry on. Ctrl-C stops
//! them all gracefully; so does the end of this process (each node exits when its standard
//! input, a pipe from here, closes).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::maintenance_client::MaintenanceClient;

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
    /// How many nodes.
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
}

struct Node {
    id: u64,
    client: String,
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

/// Remembers the shape of the cluster in its data directory, and refuses another shape there:
/// a node's log only makes sense with the members it was written with.
fn claim_data_dir(dir: &Path, shape: &str, fresh: bool) -> anyhow::Result<()> {
    if fresh && dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let marker = dir.join("cluster");
    match std::fs::read_to_string(&marker) {
        Ok(existing) if existing.trim() == shape => Ok(()),
        Ok(existing) => bail!(
            "{} holds a cluster of another shape ({}); use the same flags, another --data-dir, or --fresh",
            dir.display(),
            existing.trim()
        ),
        Err(_) => std::fs::write(&marker, format!("{shape}\n"))
            .with_context(|| format!("cannot write {}", marker.display())),
    }
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
    let shape = format!(
        "nodes={} base-port={} protocol={}",
        args.nodes, args.base_port, args.protocol
    );
    claim_data_dir(&args.data_dir, &shape, args.fresh)?;
    let mut initial = Vec::new();
    for i in 0..args.nodes {
        initial.push(format!(
            "{}=127.0.0.1:{}",
            i + 1,
            port(args.base_port, i, 1)?
        ));
    }
    let initial = initial.join(",");
    let exe = std::env::current_exe().context("cannot find the synod executable")?;
    // The nodes share this machine: each gets its share of the cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / args.nodes as usize).max(1);
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let id = i + 1;
        let client = format!("127.0.0.1:{}", port(args.base_port, i, 0)?);
        let log = args.data_dir.join(format!("n{id}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let child = Command::new(&exe)
            .arg("server")
            .args(["--id", &id.to_string()])
            .args(["--initial-cluster", &initial])
            .args(["--listen-client", &client])
            .args([
                "--listen-metrics",
                &format!("127.0.0.1:{}", port(args.base_port, i, 2)?),
            ])
            .arg("--data-dir")
            .arg(args.data_dir.join(format!("n{id}")))
            .args(["--protocol", &args.protocol])
            .args([
                "--election-timeout-ms",
                &args.election_timeout_ms.to_string(),
            ])
            .args(["--heartbeat-ms", &args.heartbeat_ms.to_string()])
            .args(["--threads", &threads.to_string()])
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().context("cannot share the log file")?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        nodes.push(Node {
            id,
            client,
            child: Some(child),
            log,
        });
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(supervise(&mut nodes, &args.protocol));
    stop_all(&mut nodes);
    outcome
}

/// Waits for a leader (or, on a protocol without one, for every node to answer), prints how
/// to reach the cluster, then watches the nodes until Ctrl-C.
async fn supervise(nodes: &mut [Node], protocol: &str) -> anyhow::Result<ExitCode> {
    let endpoints: Vec<String> = nodes.iter().map(|n| n.client.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let leaderless = !synod_replica::has_leader(protocol);
    let leader = loop {
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
            break leader;
        }
        if Instant::now() > deadline {
            bail!("no leader after 30 s; see the logs next to the data");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
    println!();
    println!("try:");
    println!("  etcdctl --endpoints={list} put greeting hello");
    println!("  etcdctl --endpoints={list} get greeting");
    println!("  synod get greeting --endpoints {list}");
    println!("  synod status --endpoints {list}");
    println!();
    println!("Ctrl-C stops the cluster; its data stays in place for the next start.");

    let mut interval = tokio::time::interval(Duration::from_millis(200));
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::pin!(terminate);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut terminate => break,
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
async fn agreed_leader(endpoints: &[String], leaderless: bool) -> Option<Option<u64>> {
    let mut leader = None;
    for endpoint in endpoints {
        let url = super::client::url(endpoint);
        let channel = tonic::transport::Endpoint::from_shared(url)
            .ok()?
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

/// Closes every node's standard input (each then stops gracefully) and waits for them.
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
