//! `synod sim`: seed sweeps and single-seed replays.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use synod_raft::Raft;
use synod_sim::{replay_command, sweep, FaultSet, Protocol, RunConfig, Summary};

use crate::progress::Progress;

/// Options of `synod sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Protocol to simulate.
    #[arg(long, default_value = "raft", value_parser = PROTOCOLS)]
    protocol: String,
    /// Gossip only: the consistency level of writes and of reads (one, quorum or all).
    #[arg(long, default_value = "one")]
    level: synod_gossip::Level,
    /// Nodes in the cluster (3, 5 or 7 are typical; gossip runs up to 64).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=64))]
    nodes: u64,
    /// Seeds to run: an inclusive range like 1..1000, or a comma-separated list.
    #[arg(long, default_value = "1..100", conflicts_with = "seed")]
    seeds: String,
    /// Run one seed only (to replay a failure); combine with --trace to see every event.
    #[arg(long)]
    seed: Option<u64>,
    /// Faults to inject: all, none, or a list of delay, drop, duplicate, partition, crash, skew,
    /// disk, leader-race, pause, membership (an operator adds, promotes and removes members,
    /// under protocols whose membership can change).
    #[arg(long, default_value = "all")]
    faults: String,
    /// Print a readable trace of the run (with --seed only).
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Write the run, recorded for a viewer, to this file as JSON (with --seed only; the
    /// format is docs/trace-format.md, the one `synod viz` plays back).
    #[arg(long, requires = "seed", value_name = "FILE")]
    trace_json: Option<std::path::PathBuf>,
    /// Concurrent clients (at least one: liveness is judged by their writes).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    clients: u64,
    /// Keys the clients read and write.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Ticks of the safety phase, during which faults are injected.
    #[arg(long, default_value_t = 3_000)]
    safety_ticks: u64,
    /// Ticks after the heal within which a new write must commit.
    #[arg(long, default_value_t = 1_000)]
    liveness_ticks: u64,
    /// Each node snapshots its state machine and compacts its log every this many applied
    /// entries (0: never). Small, so that snapshots are installed during runs.
    #[arg(long, default_value_t = 200)]
    snapshot_every: u64,
    /// Run an experiment instead of a sweep. `dueling-proposers`: every node has clients of
    /// its own on a healthy network; prints decided slots per 1,000 ticks and preemptions for
    /// Basic Paxos with backoff off and on, and for Multi-Paxos, summed over --seeds, each run
    /// --safety-ticks long. `heartbeat-direction`: Raft (the leader pushes heartbeats) and
    /// ZAB (followers ping the leader) on the same seeds: idle traffic, messages per write,
    /// and failover after the leader crashes and after it is cut off. `cap`: every protocol
    /// under the same 2|3 partition of five nodes, with clients on both sides: what each side
    /// got done, stale reads, violations (a lost write is one), time to converge, linearizability.
    /// `gossip-spread`: one write on a healthy gossip cluster of 5, 10, 20 and 50 members
    /// with fan-outs 1 to 4, rounds until every member holds it, with anti-entropy and by the
    /// epidemic alone, next to what epidemic theory predicts.
    #[arg(long, value_parser = ["dueling-proposers", "heartbeat-direction", "cap", "gossip-spread"], conflicts_with_all = ["seed", "compare"])]
    scenario: Option<String>,
    /// Run the same seeds (same faults, same client load) on each of these protocols,
    /// comma-separated, and print one table.
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    compare: Option<Vec<String>>,
    /// Start client i at node i (mod the cluster size) rather than at a random one, so every
    /// node has clients of its own (Basic Paxos's proposers then duel).
    #[arg(long)]
    spread_clients: bool,
    /// Lease holders that stop renewing sometimes revoke their lease about when its TTL
    /// runs out and grant its id again at once (a race with the keeper's expiry).
    #[arg(long)]
    late_revokes: bool,
    /// Basic Paxos only: whether a preempted proposer backs off for a random while before it
    /// retries (off: the duelling proposers can livelock).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    backoff: String,
    /// Worker threads for a sweep (defaults to the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
}

/// Runs the command; the exit code is 0 only when every run was clean.
pub fn run(args: SimArgs) -> Result<ExitCode> {
    let faults = FaultSet::parse(&args.faults).map_err(anyhow::Error::msg)?;
    let mut template = RunConfig::new(0, args.nodes as usize);
    template.faults = faults;
    template.clients = args.clients as usize;
    template.keys = args.keys;
    template.safety_ticks = args.safety_ticks;
    template.liveness_ticks = args.liveness_ticks;
    template.snapshot_every = args.snapshot_every;
    template.spread_clients = args.spread_clients;
    template.late_revokes = args.late_revokes;
    match args.scenario.as_deref() {
        Some("heartbeat-direction") => return heartbeat_direction(&args, &template),
        Some("cap") => return cap(&args),
        Some("gossip-spread") => return gossip_spread(&args),
        Some(_) => return dueling(&args, &template),
        None => {}
    }
    if let Some(protocols) = &args.compare {
        return compare(&args, &template, protocols);
    }
    match args.protocol.as_str() {
        "raft" => simulate::<Raft>(&args, template),
        "multi-paxos" => simulate::<synod_paxos::MultiPaxos>(&args, template),
        "basic-paxos" => {
            let options = synod_sim::PaxosOptions {
                no_backoff: args.backoff == "off",
                ..Default::default()
            };
            simulate_with::<synod_paxos::BasicPaxos>(&args, template, &options)
        }
        "zab" => simulate::<synod_zab::Zab>(&args, template),
        "sync" => simulate::<synod_primary_backup::PrimaryBackup>(&args, template),
        "dns" => simulate::<synod_dns::Dns>(&args, template),
        "gossip" => {
            simulate_with::<synod_gossip::Gossip>(&args, template, &gossip_options(args.level))
        }
        other => bail!("unknown protocol {other}"),
    }
}

/// The protocols the simulator runs, by the names `--protocol` takes.
pub const PROTOCOLS: [&str; 7] = [
    "raft",
    "multi-paxos",
    "basic-paxos",
    "zab",
    "sync",
    "dns",
    "gossip",
];

/// Settings of one protocol a viewer may change.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// Gossip: the consistency level of writes and reads.
    pub level: synod_gossip::Level,
    /// Basic Paxos: whether a preempted proposer backs off (off shows the livelock).
    pub backoff: bool,
}

/// Runs one seed of `protocol` and returns it recorded for a viewer (`docs/trace-format.md`).
pub fn record(protocol: &str, variant: Variant, config: &RunConfig) -> Result<String> {
    fn go<P: Protocol>(config: &RunConfig, options: &P::Options) -> Option<String> {
        let config = RunConfig {
            record: true,
            ..config.clone()
        };
        synod_sim::run::<P>(&config, options).recording
    }
    let recording = match protocol {
        "raft" => go::<Raft>(config, &Default::default()),
        "multi-paxos" => go::<synod_paxos::MultiPaxos>(config, &Default::default()),
        "basic-paxos" => {
            let options = synod_sim::PaxosOptions {
                no_backoff: !variant.backoff,
                ..Default::default()
            };
            go::<synod_paxos::BasicPaxos>(config, &options)
        }
        "zab" => go::<synod_zab::Zab>(config, &Default::default()),
        "sync" => go::<synod_primary_backup::PrimaryBackup>(config, &Default::default()),
        "dns" => go::<synod_dns::Dns>(config, &Default::default()),
        "gossip" => go::<synod_gossip::Gossip>(config, &gossip_options(variant.level)),
        other => bail!("unknown protocol {other}; one of {}", PROTOCOLS.join(", ")),
    };
    recording.context("the run was not recorded")
}

fn simulate<P: Protocol>(args: &SimArgs, template: RunConfig) -> Result<ExitCode> {
    simulate_with::<P>(args, template, &P::Options::default())
}

/// Gossip at one consistency level for reads and writes.
fn gossip_options(level: synod_gossip::Level) -> synod_sim::GossipOptions {
    synod_sim::GossipOptions {
        write_level: level,
        read_level: level,
        tweak: None,
    }
}

fn simulate_with<P: Protocol>(
    args: &SimArgs,
    template: RunConfig,
    options: &P::Options,
) -> Result<ExitCode> {
    // A panic is a finding like any other: reported once, with its seed, in the summary.
    synod_sim::report_panics_quietly();
    if let Some(seed) = args.seed {
        return replay::<P>(
            args,
            RunConfig {
                seed,
                trace: args.trace,
                record: args.trace_json.is_some(),
                ..template
            },
            options,
        );
    }
    let seeds = parse_seeds(&args.seeds)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!(
        "simulating {} on {} nodes, {} seeds, faults: {}, {} clients on {} keys, {} jobs",
        P::NAME,
        template.nodes,
        seeds.len(),
        template.faults,
        template.clients,
        template.keys,
        jobs
    );
    let progress = Progress::new("sim");
    let started = Instant::now();
    let reports = sweep::<P>(&seeds, &template, options, jobs, &|done, total, failed| {
        progress.update(done, total, &format!("{failed} failed"));
    });
    let summary = Summary::of(&reports);
    println!("{summary}");
    println!("  wall time {:.1}s", started.elapsed().as_secs_f64());
    for (seed, violation) in &summary.failures {
        println!("\nseed {seed}: {violation}");
        let config = RunConfig {
            seed: *seed,
            ..template.clone()
        };
        println!(
            "  replay with a trace: {} --trace",
            replay_command::<P>(&config, options)
        );
        println!(
            "  or watch it: synod viz, then open http://127.0.0.1:7070/?{}",
            viz_query::<P>(args, *seed)
        );
    }
    Ok(if summary.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn replay<P: Protocol>(
    args: &SimArgs,
    config: RunConfig,
    options: &P::Options,
) -> Result<ExitCode> {
    let outcome = synod_sim::run::<P>(&config, options);
    print!("{}", outcome.trace);
    if let (Some(path), Some(recording)) = (&args.trace_json, &outcome.recording) {
        std::fs::write(path, recording)
            .with_context(|| format!("cannot write the recording to {}", path.display()))?;
        println!("recording written to {}", path.display());
    }
    let report = &outcome.report;
    let summary = Summary::of(std::slice::from_ref(report));
    println!(
        "seed {} ({} on {} nodes, faults: {})",
        config.seed,
        P::NAME,
        config.nodes,
        config.faults
    );
    println!("{summary}");
    match &report.violation {
        None => Ok(ExitCode::SUCCESS),
        Some(v) => {
            println!("{v}");
            if !args.trace {
                println!("  trace: {} --trace", replay_command::<P>(&config, options));
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn jobs(args: &SimArgs) -> usize {
    args.jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Basic Paxos with backoff off and on, and Multi-Paxos, under the same dueling load.
fn dueling(args: &SimArgs, template: &RunConfig) -> Result<ExitCode> {
    use synod_sim::experiments::{duel_row, dueling_proposers, Duel, DUEL_HEADER};
    use synod_sim::PaxosOptions;
    let seeds = parse_seeds(&args.seeds)?;
    let (nodes, clients, ticks) = (template.nodes, template.clients, template.safety_ticks);
    println!(
        "dueling proposers: {nodes} nodes, {clients} clients spread over them, healthy network, {ticks} ticks per run, {} seeds ({})\n",
        seeds.len(),
        args.seeds
    );
    println!("{DUEL_HEADER}");
    let no_backoff = PaxosOptions {
        no_backoff: true,
        ..PaxosOptions::default()
    };
    type Run = Box<dyn Fn(u64) -> Duel>;
    let configs: [(&str, &str, Run); 3] = [
        (
            "basic-paxos",
            "off",
            Box::new(move |seed| {
                dueling_proposers::<synod_paxos::BasicPaxos>(
                    nodes,
                    clients,
                    seed,
                    ticks,
                    &no_backoff,
                )
            }),
        ),
        (
            "basic-paxos",
            "on",
            Box::new(move |seed| {
                dueling_proposers::<synod_paxos::BasicPaxos>(
                    nodes,
                    clients,
                    seed,
                    ticks,
                    &PaxosOptions::default(),
                )
            }),
        ),
        (
            "multi-paxos",
            "-",
            Box::new(move |seed| {
                dueling_proposers::<synod_paxos::MultiPaxos>(
                    nodes,
                    clients,
                    seed,
                    ticks,
                    &PaxosOptions::default(),
                )
            }),
        ),
    ];
    let mut clean = true;
    for (name, backoff, run) in configs {
        let mut total = Duel::default();
        for &seed in &seeds {
            total.add(run(seed));
        }
        println!("{}", duel_row(name, backoff, &total));
        if let Some(v) = &total.violation {
            println!("  VIOLATION: {v}");
            clean = false;
        }
    }
    println!("\ncommand: synod sim --scenario dueling-proposers --nodes {nodes} --clients {clients} --safety-ticks {ticks} --seeds {}", args.seeds);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Raft and ZAB on the same seeds: which way the liveness check runs, measured.
fn heartbeat_direction(args: &SimArgs, template: &RunConfig) -> Result<ExitCode> {
    use synod_sim::experiments::{direction_row, heartbeat_direction, Direction, DIRECTION_HEADER};
    let seeds = parse_seeds(&args.seeds)?;
    let (nodes, clients) = (template.nodes, template.clients);
    println!(
        "heartbeat direction: {nodes} nodes, {clients} clients spread over them, healthy network but for one leader crash and one leader isolation per run, {} seeds ({})\n",
        seeds.len(),
        args.seeds
    );
    println!("{DIRECTION_HEADER}");
    let mut clean = true;
    for name in ["raft", "zab"] {
        let mut total = Direction::default();
        for &seed in &seeds {
            total.add(match name {
                "raft" => heartbeat_direction::<Raft>(nodes, clients, seed, &Default::default()),
                _ => {
                    heartbeat_direction::<synod_zab::Zab>(nodes, clients, seed, &Default::default())
                }
            });
        }
        println!("{}", direction_row(name, &total));
        if let Some(v) = &total.violation {
            println!("  VIOLATION: {v}");
            clean = false;
        }
    }
    println!(
        "\ncommand: synod sim --scenario heartbeat-direction --nodes {nodes} --clients {clients} --seeds {}",
        args.seeds
    );
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every protocol under the same partition, on the same seeds: CAP, measured.
fn cap(args: &SimArgs) -> Result<ExitCode> {
    use synod_sim::experiments::{cap, cap_row, Cap, CAP_HEADER};
    let seeds = parse_seeds(&args.seeds)?;
    println!(
        "CAP: 5 nodes split {{n1, n2}} | {{n3, n4, n5}} for 1,000 ticks, 4 clients on the minority side and 6 on the majority side, then healed; {} seeds ({})\n",
        seeds.len(),
        args.seeds
    );
    println!("{CAP_HEADER}");
    let mut clean = true;
    // Gossip twice: at ONE (the available side) and at QUORUM.
    let rows = synod_replica::PROTOCOL_NAMES
        .iter()
        .map(|&name| (name, name.to_string(), synod_gossip::Level::One))
        .chain([(
            "gossip",
            "gossip (quorum)".to_string(),
            synod_gossip::Level::Quorum,
        )]);
    for (name, label, level) in rows {
        let label = if name == "gossip" && level == synod_gossip::Level::One {
            "gossip (one)".to_string()
        } else {
            label
        };
        let progress = Progress::new(&label);
        let mut total = Cap::default();
        for (done, &seed) in seeds.iter().enumerate() {
            total.add(match name {
                "raft" => cap::<Raft>(seed, &Default::default()),
                "multi-paxos" => cap::<synod_paxos::MultiPaxos>(seed, &Default::default()),
                "basic-paxos" => cap::<synod_paxos::BasicPaxos>(seed, &Default::default()),
                "zab" => cap::<synod_zab::Zab>(seed, &Default::default()),
                "sync" => cap::<synod_primary_backup::PrimaryBackup>(seed, &Default::default()),
                "dns" => cap::<synod_dns::Dns>(seed, &Default::default()),
                "gossip" => cap::<synod_gossip::Gossip>(seed, &gossip_options(level)),
                other => bail!("no CAP run for {other}"),
            });
            progress.update(done + 1, seeds.len(), "");
        }
        println!("{}", cap_row(&label, &total));
        for v in &total.violations {
            println!("  VIOLATION: {v}");
            clean = false;
        }
    }
    println!("\ncommand: synod sim --scenario cap --seeds {}", args.seeds);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Gossip's dissemination against cluster size and fan-out.
fn gossip_spread(args: &SimArgs) -> Result<ExitCode> {
    use synod_sim::experiments::{gossip_spread, spread_row, SPREAD_HEADER};
    let seeds = parse_seeds(&args.seeds)?;
    println!(
        "gossip: one write on a healthy cluster, one push round per tick, anti-entropy every 10 rounds; {} seeds ({}) per row\n",
        seeds.len(),
        args.seeds
    );
    println!("{SPREAD_HEADER}");
    for nodes in [5u64, 10, 20, 50] {
        for fanout in 1..=4usize {
            let spreads: Vec<_> = seeds
                .iter()
                .map(|&seed| gossip_spread(nodes, fanout, seed))
                .collect();
            println!("{}", spread_row(nodes, fanout, &spreads));
        }
    }
    println!(
        "\ncommand: synod sim --scenario gossip-spread --seeds {}",
        args.seeds
    );
    Ok(ExitCode::SUCCESS)
}

/// The same seeds on several protocols, one table.
fn compare(args: &SimArgs, template: &RunConfig, protocols: &[String]) -> Result<ExitCode> {
    use synod_sim::experiments::{compare_row, COMPARE_HEADER};
    let seeds = parse_seeds(&args.seeds)?;
    let jobs = jobs(args);
    println!(
        "same {} seeds ({}) on each protocol: {} nodes, faults: {}, {} clients on {} keys\n",
        seeds.len(),
        args.seeds,
        template.nodes,
        template.faults,
        template.clients,
        template.keys
    );
    let mut rows = Vec::new();
    let mut clean = true;
    for name in protocols {
        let progress = Progress::new(name);
        let report = |done: usize, total: usize, failed: usize| {
            progress.update(done, total, &format!("{failed} failed"))
        };
        let summary = match name.as_str() {
            "raft" => Summary::of(&sweep::<Raft>(&seeds, template, &Default::default(), jobs, &report)),
            "multi-paxos" => Summary::of(&sweep::<synod_paxos::MultiPaxos>(&seeds, template, &Default::default(), jobs, &report)),
            "basic-paxos" => Summary::of(&sweep::<synod_paxos::BasicPaxos>(&seeds, template, &Default::default(), jobs, &report)),
            "zab" => Summary::of(&sweep::<synod_zab::Zab>(&seeds, template, &Default::default(), jobs, &report)),
            "sync" => Summary::of(&sweep::<synod_primary_backup::PrimaryBackup>(&seeds, template, &Default::default(), jobs, &report)),
            "dns" => Summary::of(&sweep::<synod_dns::Dns>(&seeds, template, &Default::default(), jobs, &report)),
            "gossip" => Summary::of(&sweep::<synod_gossip::Gossip>(&seeds, template, &gossip_options(args.level), jobs, &report)),
            other => bail!("unknown protocol '{other}' in --compare; expected raft, multi-paxos, basic-paxos, zab, sync, dns or gossip"),
        };
        clean &= summary.is_clean();
        rows.push(compare_row(name, &summary));
        for (seed, v) in &summary.failures {
            rows.push(format!("  {name} seed {seed}: {v}"));
        }
    }
    println!("{COMPARE_HEADER}");
    for row in rows {
        println!("{row}");
    }
    println!(
        "\ncommand: synod sim --compare {} --nodes {} --faults {} --seeds {}",
        protocols.join(","),
        template.nodes,
        template.faults,
        args.seeds
    );
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The query string of `synod viz`'s page that shows this seed.
fn viz_query<P: Protocol>(args: &SimArgs, seed: u64) -> String {
    format!(
        "protocol={}&nodes={}&seed={seed}&faults={}&clients={}&keys={}&safety-ticks={}&liveness-ticks={}&snapshot-every={}&level={}&backoff={}&spread-clients={}",
        P::NAME,
        args.nodes,
        args.faults,
        args.clients,
        args.keys,
        args.safety_ticks,
        args.liveness_ticks,
        args.snapshot_every,
        args.level,
        args.backoff,
        if args.spread_clients { "on" } else { "off" },
    )
}

/// Parses `A..B` or `A..=B` (both inclusive), a single seed, or a comma-separated list.
fn parse_seeds(text: &str) -> Result<Vec<u64>> {
    let number = |s: &str| -> Result<u64> {
        s.trim()
            .parse()
            .with_context(|| format!("'{s}' is not a seed number"))
    };
    if let Some((low, high)) = text.split_once("..") {
        let (low, high) = (number(low)?, number(high.trim_start_matches('='))?);
        if low > high {
            bail!("empty seed range {text}");
        }
        return Ok((low..=high).collect());
    }
    text.split(',').map(number).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_and_lists() {
        assert_eq!(parse_seeds("1..3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_seeds("5..=6").unwrap(), vec![5, 6]);
        assert_eq!(parse_seeds("9").unwrap(), vec![9]);
        assert_eq!(parse_seeds("4, 2").unwrap(), vec![4, 2]);
        assert!(parse_seeds("3..1").is_err());
        assert!(parse_seeds("x..2").is_err());
    }
}
