//! `synod nemesis`: a cluster on real hosts, faults on the network between them and on their
//! processes, and a checked load.
//!
//! Each member runs in a Linux network namespace of its own, joined to the others by a bridge
//! ([`hosts`]); clients run here, in the harness's namespace, and reach every member over the
//! bridge, so a member cut off from the others is not cut off from its clients. The nemesis
//! ([`faults`]) partitions, cuts one way, loses and delays packets, pauses and kills members,
//! one fault at a time, while the load ([`load`]) records a history of reads, writes and
//! compare-and-swaps. At the end everything is healed, the cluster must take writes again,
//! every member must come to hold the same data with every acknowledged write, and the history
//! must be linearizable (for protocols that promise it; for the others, no read may return a
//! value nobody wrote). It needs root; it removes all it created when it ends, also on failure.

mod faults;
mod hosts;
mod load;
mod members;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use synod_check::{check_kv, Verdict};
use synod_core::Rng;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::kv_client::KvClient;
use tokio::sync::watch;
use tonic::transport::Channel;

use faults::Fault;
use hosts::Hosts;
use load::{ClientConfig, Leadership, Recorder};
use members::{Launch, Members, CLIENT_PORT};

/// Flags of `synod nemesis`.
#[derive(Args, Debug)]
pub struct NemesisArgs {
    /// The protocol the members run.
    #[arg(long, default_value = "raft")]
    protocol: String,
    /// Faults to inject: all, none, or a list of partition, partition-leader, bridge,
    /// one-way, netem, pause, kill, skew.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Seconds of faults under load, at least: the run goes on until every fault named has
    /// been injected once. The heal and the checks come after.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    time: u64,
    /// How long a fault is held, on average (from half of it to one and a half times it);
    /// the quiet between two faults is half of it, on average.
    #[arg(long, default_value_t = 4000, value_name = "MS")]
    hold_ms: u64,
    /// Members, each on a host of its own.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Clients, each going through every member in turn.
    #[arg(long, default_value_t = 8)]
    clients: u64,
    /// How long a client waits for an answer before it gives up on an operation (a write it
    /// gave up on may still take effect: the history records it as unknown) and goes on
    /// through the next member, as etcd's clients fail over.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    timeout_ms: u64,
    /// Operations per second, all clients together (default: as fast as the cluster answers).
    /// Long runs use it to keep the history small enough to check.
    #[arg(long, value_name = "OPS")]
    rate: Option<u64>,
    /// Passed to every member (heartbeats go every tenth of it).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    election_timeout_ms: u64,
    /// Passed to every member: snapshot after this many applied entries (default: the
    /// server's). Long runs set it low, so they cross many snapshots and restarts from them.
    #[arg(long, value_name = "N")]
    snapshot_every: Option<u64>,
    /// Seed of the nemesis's and the clients' choices (default: from the clock). The run
    /// itself is real, so a seed repeats the choices, not the outcome.
    #[arg(long)]
    seed: Option<u64>,
    /// Where the members keep their data and logs (default: a new directory under /tmp).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the data and logs after a passing run (a failing run always keeps them).
    #[arg(long)]
    keep: bool,
    /// Run the members with a protocol rule broken on purpose, to see the checks catch it
    /// (read-without-confirmation: a Raft leader answers reads without asking a quorum).
    #[arg(long, value_name = "NAME")]
    inject_bug: Option<String>,
}

/// How long the cluster has, after the heal, to acknowledge a write again.
const RECOVERY: Duration = Duration::from_secs(30);
/// How long the load goes on after the first write acknowledged after the heal.
const AFTER_RECOVERY: Duration = Duration::from_secs(3);
/// How long the members have, after the load stops, to hold the same data.
const CONVERGENCE: Duration = Duration::from_secs(60);

/// Runs `synod nemesis`.
pub fn run(args: NemesisArgs) -> anyhow::Result<ExitCode> {
    if !synod_replica::PROTOCOL_NAMES.contains(&args.protocol.as_str()) {
        bail!(
            "--protocol {}: not a protocol Synod serves (it serves {})",
            args.protocol,
            synod_replica::PROTOCOL_NAMES.join(", ")
        );
    }
    if !(1..=9).contains(&args.nodes) {
        bail!("--nodes must be 1 to 9");
    }
    if args.clients == 0 || args.time == 0 || args.rate == Some(0) {
        bail!("--clients, --time and --rate must be at least 1");
    }
    if args.hold_ms < 100 || args.timeout_ms < 10 {
        bail!("--hold-ms must be at least 100, and --timeout-ms at least 10");
    }
    if let Some(bug) = &args.inject_bug {
        let bug: synod_node::config::InjectedBug = bug.parse()?;
        if bug.protocol() != args.protocol {
            bail!(
                "--inject-bug: that bug breaks {}, not {}",
                bug.protocol(),
                args.protocol
            );
        }
    }
    let faults = faults::parse(&args.faults)?;
    if args.nodes < 3 && faults.iter().any(|f| f.cuts_the_network()) {
        bail!("--faults: partitions, cuts and packet loss need 3 members or more (--nodes)");
    }
    hosts::preflight()?;
    hosts::sweep_stale();

    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("synod-nemesis-{}", std::process::id()))
    });
    // A run starts on empty disks: data left by an earlier run would already hold keys this
    // run writes, and could hide a write it loses.
    if args.dir.is_none() && dir.exists() {
        // Named after this process, so left by an earlier harness with the same pid.
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "--dir {}: not empty; a run needs a directory of its own (it may hold an earlier run's data)",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let launch = Launch {
        exe: std::env::current_exe().context("cannot find the synod executable")?,
        protocol: args.protocol.clone(),
        election_timeout_ms: args.election_timeout_ms,
        snapshot_every: args.snapshot_every,
        inject_bug: args.inject_bug.clone(),
        dir: dir.clone(),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = {
        let hosts = Hosts::create(args.nodes)?;
        let mut rng = Rng::new(seed);
        let skew = faults.contains(&Fault::Skew);
        let rates: Vec<f64> = (0..args.nodes)
            .map(|_| {
                if skew {
                    faults::clock_rate(&mut rng)
                } else {
                    1.0
                }
            })
            .collect();
        let mut members = Members::start(&hosts, launch, &rates)?;
        println!(
            "synod nemesis: {} on {} hosts ({} .. {}), faults {}, {} s, seed {seed}",
            args.protocol,
            args.nodes,
            hosts.host(1).address,
            hosts.host(args.nodes).address,
            if faults.is_empty() {
                "none".to_string()
            } else {
                args.faults.clone()
            },
            args.time
        );
        if faults.contains(&Fault::Netem) && !hosts.netem {
            println!(
                "  this kernel has no netem: packet loss by iptables, delay by a tbf rate limit"
            );
        }
        let run = Run {
            args: &args,
            faults: &faults,
            seed,
            hosts: &hosts,
        };
        let result = runtime.block_on(async {
            tokio::select! {
                result = run.drive(&mut members, &mut rng) => result,
                signal = stop_signal() => Err(anyhow::anyhow!("interrupted by {signal}")),
            }
        });
        let _ = members.stop_all();
        result
        // The members stop, then the hosts go, also when the run failed.
    };
    match outcome {
        Ok(true) => {
            if !args.keep && args.dir.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                println!("  data and logs in {}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(false) => {
            println!("  data, logs and the history kept in {}", dir.display());
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("  data and logs kept in {}", dir.display());
            Err(e)
        }
    }
}

/// One run's settings.
struct Run<'a> {
    args: &'a NemesisArgs,
    faults: &'a [Fault],
    seed: u64,
    hosts: &'a Hosts,
}

/// Prints a line of the run's timeline, timed by the recorder's clock.
fn event(clock: &Recorder, what: &str) {
    println!("  {:>7.1} s  {what}", clock.now() as f64 / 1e9);
}

impl Run<'_> {
    /// Starts the load, runs the nemesis, heals, checks. Ok(true): every check passed.
    async fn drive(&self, members: &mut Members, rng: &mut Rng) -> anyhow::Result<bool> {
        let n = self.args.nodes;
        let timeout = Duration::from_millis(self.args.timeout_ms);
        let channels: Vec<Channel> = (1..=n)
            .map(|id| {
                load::channel(
                    &format!("{}:{CLIENT_PORT}", self.hosts.host(id).address),
                    timeout,
                )
            })
            .collect::<anyhow::Result<_>>()?;
        let channels = Arc::new(channels);
        let recorder = Arc::new(Recorder::new());
        let started: &Recorder = &recorder;
        self.ready(&channels, members).await?;
        event(started, "cluster ready: a write went through");

        let leadership = Arc::new(Leadership::default());
        let (stop, stopped) = watch::channel(false);
        let watcher = tokio::spawn(leadership.clone().watch(channels.clone(), stopped.clone()));
        let pace = self
            .args
            .rate
            .map(|rate| Duration::from_secs_f64(self.args.clients as f64 / rate as f64));
        let clients: Vec<_> = (1..=self.args.clients)
            .map(|id| {
                let config = ClientConfig {
                    cas: synod_replica::has_consensus(&self.args.protocol),
                    pace,
                    seed: self.seed,
                };
                tokio::spawn(load::client(
                    id,
                    channels.clone(),
                    recorder.clone(),
                    config,
                    stopped.clone(),
                ))
            })
            .collect();

        // The faults.
        let load_started = recorder.now();
        let mut injected: BTreeMap<Fault, usize> = BTreeMap::new();
        let mut crashed = Vec::new();
        let injectable: Vec<Fault> = self
            .faults
            .iter()
            .copied()
            .filter(|f| *f != Fault::Skew)
            .collect();
        let skew = self.faults.contains(&Fault::Skew);
        if skew {
            let rates: Vec<String> = (1..=n)
                .map(|id| format!("{id}: {}", members.clock_rate(id)))
                .collect();
            event(started, &format!("clock rates {}", rates.join(", ")));
        }
        // Faults come as from a shuffled deck, so every kind is dealt once before any twice,
        // and the run goes on past --time until every kind has been (a short run covers all).
        let hold = Duration::from_millis(self.args.hold_ms);
        let end = Instant::now() + Duration::from_secs(self.args.time);
        let mut deck: Vec<Fault> = Vec::new();
        let mut dealt_all = injectable.is_empty();
        while (Instant::now() < end || !dealt_all) && crashed.is_empty() {
            let quiet = faults::span(rng, hold / 4, hold * 3 / 4);
            let remaining = end.saturating_duration_since(Instant::now());
            crashed = watch_members(
                members,
                if dealt_all {
                    quiet.min(remaining)
                } else {
                    quiet
                },
            )
            .await;
            if (Instant::now() >= end && dealt_all) || !crashed.is_empty() || injectable.is_empty()
            {
                continue;
            }
            if deck.is_empty() {
                deck = injectable.clone();
                faults::shuffle(rng, &mut deck);
            }
            let kind = deck.pop().expect("a full deck");
            dealt_all |= deck.is_empty();
            let (what, active) =
                faults::inject(kind, rng, self.hosts, members, leadership.current())?;
            *injected.entry(kind).or_default() += 1;
            event(started, &format!("{kind}: {what}"));
            crashed = watch_members(members, faults::span(rng, hold / 2, hold * 3 / 2)).await;
            let healed = faults::heal(active, rng, skew, self.hosts, members)?;
            event(started, &healed);
        }

        // The heal: every network fault undone, every member running; the cluster must take
        // writes again.
        self.hosts.heal()?;
        members.revive_all(self.hosts)?;
        let healed = Instant::now();
        let healed_at = recorder.now();
        event(
            started,
            "everything healed; waiting for the cluster to take writes",
        );
        let recovered = loop {
            if recorder.acknowledged_since(healed_at) > 0 {
                break Some(healed.elapsed());
            }
            if healed.elapsed() > RECOVERY {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if recovered.is_some() {
            tokio::time::sleep(AFTER_RECOVERY).await;
        }
        let load_ended = recorder.now();
        stop.send(true).ok();
        for client in clients {
            client.await.context("a client failed")?;
        }
        watcher.await.context("the status watcher failed")?;
        event(started, "load stopped; checking");

        // The checks.
        let linearizable = synod_replica::is_linearizable(&self.args.protocol);
        let deadline = Instant::now() + CONVERGENCE;
        let final_reads = if linearizable && recovered.is_some() {
            load::final_reads(&channels, &recorder, deadline).await
        } else {
            Ok(())
        };
        let acknowledged = recorder.acknowledged_set();
        let converged = load::converge(&channels, &acknowledged, healed, deadline).await;
        let history = recorder.history();
        let checked_at = Instant::now();
        let verdict = if linearizable {
            match check_kv(history.operations()) {
                Verdict::Linearizable => Ok("linearizable".to_string()),
                Verdict::Violation(v) => Err(format!("NOT LINEARIZABLE: {v}")),
                Verdict::Inconclusive { keys } => Err(format!(
                    "inconclusive: the search ran out of budget on {} and found no violation \
                     elsewhere",
                    synod_check::key_list(&keys)
                )),
            }
        } else {
            let invented = load::invented_reads(&history);
            match invented.first() {
                None => Ok("every read returned a value some client wrote".to_string()),
                Some(first) => Err(format!(
                    "{} reads returned a value no client wrote, first: {first}",
                    invented.len()
                )),
            }
        };
        let check_time = checked_at.elapsed();
        // A member that died during the checks, or does not stop cleanly, fails the run too.
        crashed.extend(members.exited());
        let unclean = members.stop_all();

        // The summary.
        let (ok, failed, unknown) = history.tally();
        let (set_ok, set_failed, set_unknown) = recorder.set_tally();
        let count = |f: fn(&synod_check::KvInput) -> bool| {
            history
                .operations()
                .iter()
                .filter(|op| f(&op.input))
                .count()
        };
        let reads = count(|i| matches!(i, synod_check::KvInput::Read { .. }));
        let writes = count(|i| matches!(i, synod_check::KvInput::Write { .. }));
        let cas = count(|i| matches!(i, synod_check::KvInput::Cas { .. }));
        println!("summary");
        println!(
            "  operations   {} ok, {} failed, {} unknown ({reads} reads, {writes} writes, {cas} compare-and-swaps, {} set adds)",
            ok + set_ok,
            failed + set_failed,
            unknown + set_unknown,
            set_ok + set_failed + set_unknown
        );
        let injected: Vec<String> = injected
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        println!(
            "  faults       {}{}",
            if injected.is_empty() {
                "none".to_string()
            } else {
                injected.join(", ")
            },
            if skew { ", clocks skewed" } else { "" }
        );
        if synod_replica::has_leader(&self.args.protocol) {
            println!("  leaders      {} changes seen", leadership.changes());
        } else {
            println!("  leaders      none: {} has no leader", self.args.protocol);
        }
        let (gap, from) = recorder.longest_gap(load_started, load_ended);
        println!(
            "  unavailable  longest {:.1} s without an acknowledged write (from {:.1} s)",
            gap as f64 / 1e9,
            from as f64 / 1e9
        );
        let mut pass = true;
        match recovered {
            Some(after) => println!(
                "  recovery     writes acknowledged {:.1} s after the heal",
                after.as_secs_f64()
            ),
            None => {
                pass = false;
                println!(
                    "  recovery     FAILED: no write acknowledged within {} s of the heal",
                    RECOVERY.as_secs()
                );
            }
        }
        for (id, status) in &crashed {
            pass = false;
            println!("  crash        member {id} exited on its own ({status}); its log ends:");
            for line in members.log_tail(*id, 8).lines() {
                println!("                 {line}");
            }
        }
        for (id, how) in &unclean {
            pass = false;
            println!("  stop         member {id} did not stop cleanly ({how}); its log ends:");
            for line in members.log_tail(*id, 8).lines() {
                println!("                 {line}");
            }
        }
        if let Err(problem) = &final_reads {
            pass = false;
            println!("  final reads  FAILED: {problem}");
        }
        match &converged {
            Ok(c) => println!(
                "  convergence  every member holds the same {} keys, all {} acknowledged set adds among them ({:.1} s after the heal)",
                c.keys,
                acknowledged.len(),
                c.after.as_secs_f64()
            ),
            Err(problem) => {
                pass = false;
                println!("  convergence  FAILED: {problem}");
            }
        }
        match &verdict {
            Ok(what) => println!(
                "  history      {what} ({} operations checked in {:.1} s)",
                history.len(),
                check_time.as_secs_f64()
            ),
            Err(problem) => {
                pass = false;
                println!("  history      {problem}");
            }
        }
        println!("verdict: {}", if pass { "PASS" } else { "FAIL" });
        if !pass {
            let lines: Vec<String> = history
                .operations()
                .iter()
                .map(synod_check::describe)
                .collect();
            std::fs::write(members.dir().join("history.txt"), lines.join("\n"))
                .context("cannot write the history")?;
        }
        Ok(pass)
    }

    /// Waits until the cluster takes a write (through any member), or says why not.
    async fn ready(&self, channels: &[Channel], members: &mut Members) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut turn = 0;
        loop {
            if let Some((id, status)) = members.exited().into_iter().next() {
                bail!(
                    "member {id} exited while starting ({status}); its log ends:\n{}",
                    members.log_tail(id, 10)
                );
            }
            turn += 1;
            let mut kv = KvClient::new(channels[turn % channels.len()].clone());
            let put = pb::PutRequest {
                key: format!("{}ready", load::PREFIX).into_bytes().into(),
                value: b"1".to_vec().into(),
                ..Default::default()
            };
            if kv.put(put).await.is_ok() {
                return self.starts_empty(&mut kv).await;
            }
            if Instant::now() > deadline {
                bail!(
                    "the cluster took no write in 60 s; see the logs in {}",
                    members.dir().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Run<'_> {
    /// Checks the cluster holds nothing of the load's but the key `ready` just written: what
    /// an earlier run left would hide writes this one loses.
    async fn starts_empty(&self, kv: &mut KvClient<Channel>) -> anyhow::Result<()> {
        let prefix = load::PREFIX.as_bytes().to_vec();
        let request = pb::RangeRequest {
            range_end: super::client::prefix_end(&prefix).into(),
            key: prefix.into(),
            count_only: true,
            ..Default::default()
        };
        let count = kv
            .range(request)
            .await
            .context("cannot count the keys the cluster starts with")?
            .into_inner()
            .count;
        if count > 1 {
            bail!(
                "the cluster starts with {count} keys under {} (an earlier run's data?); a run needs empty members",
                load::PREFIX
            );
        }
        Ok(())
    }
}

/// Waits for Ctrl-C, SIGTERM or SIGHUP; names it.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return "Ctrl-C";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
        _ = hangup.recv() => "SIGHUP",
    }
}

/// Sleeps for `duration`, watching for members that exit on their own; returns them.
async fn watch_members(members: &mut Members, duration: Duration) -> Vec<(u64, String)> {
    let end = Instant::now() + duration;
    loop {
        let exited = members.exited();
        if !exited.is_empty() || Instant::now() >= end {
            return exited;
        }
        tokio::time::sleep(
            Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}
