//! Measurements beyond pass/fail: the dueling-proposers livelock and the side-by-side
//! comparison of protocols on the same seeds.

use std::fmt::Write as _;

use crate::faults::FaultSet;
use crate::protocol::Protocol;
use crate::report::{percentile, Summary};
use crate::run::RunConfig;
use crate::world::World;
use crate::TICK_US;

/// What one dueling-proposers run measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Duel {
    /// Virtual ticks run.
    pub ticks: u64,
    /// Slots decided (commands, no-ops and read markers).
    pub decided_slots: u64,
    /// Client commands committed.
    pub commands: u64,
    /// Times proposers were preempted by a higher ballot.
    pub preemptions: u64,
    /// Leaders elected.
    pub elections: u64,
    /// Client-observed write latencies, in microseconds.
    pub write_latencies_us: Vec<u64>,
    /// A violation, if any property broke.
    pub violation: Option<String>,
}

impl Duel {
    /// Adds another run's figures.
    pub fn add(&mut self, other: Duel) {
        self.ticks += other.ticks;
        self.decided_slots += other.decided_slots;
        self.commands += other.commands;
        self.preemptions += other.preemptions;
        self.elections += other.elections;
        self.write_latencies_us.extend(other.write_latencies_us);
        self.violation = self.violation.take().or(other.violation);
    }
}

/// Every node has clients of its own, all proposing at once, on a healthy network, for
/// `ticks`: in Basic Paxos the proposers keep competing for the same slots.
pub fn dueling_proposers<P: Protocol>(
    nodes: usize,
    clients: usize,
    seed: u64,
    ticks: u64,
    options: &P::Options,
) -> Duel {
    let mut config = RunConfig::new(seed, nodes);
    config.faults = FaultSet::NONE;
    config.clients = clients;
    config.spread_clients = true;
    let mut world = World::<P>::new(config, options.clone());
    world.add_clients(clients);
    world.run_until(ticks * TICK_US);
    let preemptions = world
        .nodes
        .iter()
        .filter_map(|n| n.engine())
        .map(|e| e.preemptions())
        .sum();
    Duel {
        ticks,
        decided_slots: world.safety.applied.len() as u64,
        commands: world.stats.committed_commands,
        preemptions,
        elections: world.stats.elections,
        write_latencies_us: world.stats.write_latencies_us.clone(),
        violation: world.violation.as_ref().map(|v| v.to_string()),
    }
}

fn ticks(us: Option<u64>) -> String {
    us.map_or("-".to_string(), |us| {
        format!("{:.1}", us as f64 / TICK_US as f64)
    })
}

/// One line of the dueling-proposers table.
pub fn duel_row(name: &str, backoff: &str, duel: &Duel) -> String {
    let mut latencies = duel.write_latencies_us.clone();
    latencies.sort_unstable();
    let per_thousand = |n: u64| n as f64 * 1_000.0 / duel.ticks.max(1) as f64;
    format!(
        "| {name} | {backoff} | {:.0} | {:.0} | {} | {} | {} / {} |",
        per_thousand(duel.decided_slots),
        per_thousand(duel.commands),
        duel.preemptions,
        duel.elections,
        ticks(percentile(&latencies, 0.5)),
        ticks(percentile(&latencies, 0.99)),
    )
}

/// The header of the dueling-proposers table (Markdown).
pub const DUEL_HEADER: &str = "| protocol | backoff | decided slots per 1,000 ticks | commands per 1,000 ticks | preemptions | leaders elected | write latency p50 / p99 (ticks) |\n|---|---|---|---|---|---|---|";

/// The header of the comparison table (Markdown).
pub const COMPARE_HEADER: &str = "| protocol | runs | violations | writes committed | messages per write | write latency p50 / p99 (ticks) | stall after a leader crash p50 / max (ticks) | leaders elected | preemptions | stale reads of reads answered |\n|---|---|---|---|---|---|---|---|---|---|";

/// One line of the comparison table.
pub fn compare_row(name: &str, summary: &Summary) -> String {
    let t = &summary.totals;
    let mut latencies = t.write_latencies_us.clone();
    latencies.sort_unstable();
    let mut stalls = t.leader_crash_stalls_us.clone();
    stalls.sort_unstable();
    let per_write = if t.committed_commands > 0 {
        format!(
            "{:.1}",
            t.messages_sent as f64 / t.committed_commands as f64
        )
    } else {
        "-".to_string()
    };
    let mut row = String::new();
    let _ = write!(
        row,
        "| {name} | {} | {} | {} | {per_write} | {} / {} | {} / {} | {} | {} | {} of {} |",
        summary.runs,
        summary.failures.len(),
        t.committed_commands,
        ticks(percentile(&latencies, 0.5)),
        ticks(percentile(&latencies, 0.99)),
        ticks(percentile(&stalls, 0.5)),
        ticks(stalls.last().copied()),
        t.elections,
        t.preemptions,
        t.stale_reads,
        t.reads,
    );
    row
}

/// What one heartbeat-direction run measured (see [`heartbeat_direction`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Direction {
    /// Messages sent per node per second with no client load.
    pub idle_messages_per_node_s: Vec<f64>,
    /// Messages per committed write under a steady load.
    pub messages_per_write: Vec<f64>,
    /// From the leader's crash to a command committed by a new leader, in microseconds.
    pub crash_failover_us: Vec<u64>,
    /// From the leader's isolation to a command committed by a new leader, in microseconds.
    pub isolation_failover_us: Vec<u64>,
    /// How long the isolated leader went on believing it led, in microseconds.
    pub isolated_leader_led_us: Vec<u64>,
    /// Writes the isolated leader took into its log meanwhile (never committed: each was
    /// refused to its client in the end, or timed out).
    pub stale_leader_writes: u64,
    /// Writes the isolated node refused once it stopped leading, while still cut off.
    pub stale_leader_refusals: u64,
    /// A violation, if any property broke.
    pub violation: Option<String>,
}

impl Direction {
    /// Adds another run's figures.
    pub fn add(&mut self, other: Direction) {
        self.idle_messages_per_node_s
            .extend(other.idle_messages_per_node_s);
        self.messages_per_write.extend(other.messages_per_write);
        self.crash_failover_us.extend(other.crash_failover_us);
        self.isolation_failover_us
            .extend(other.isolation_failover_us);
        self.isolated_leader_led_us
            .extend(other.isolated_leader_led_us);
        self.stale_leader_writes += other.stale_leader_writes;
        self.stale_leader_refusals += other.stale_leader_refusals;
        self.violation = self.violation.take().or(other.violation);
    }
}

/// The leader and its era, if one live node leads the highest era.
fn leader_of<P: Protocol>(world: &World<P>) -> Option<(synod_core::NodeId, u64)> {
    world
        .nodes
        .iter()
        .filter_map(|n| n.engine().map(|e| e.status()))
        .filter(|s| s.role == synod_core::Role::Leader)
        .max_by_key(|s| s.era)
        .map(|s| (s.id, s.era))
}

/// Runs tick by tick, at most `limit` ticks, until `done` holds; returns the time it took.
fn run_until_true<P: Protocol>(
    world: &mut World<P>,
    limit: u64,
    mut done: impl FnMut(&World<P>) -> bool,
) -> Option<u64> {
    let start = world.now;
    for _ in 0..limit {
        if done(world) {
            return Some(world.now - start);
        }
        let next = world.now + TICK_US;
        world.run_until(next);
        if world.violation.is_some() {
            return None;
        }
    }
    None
}

/// Which way the liveness check runs, measured: on a healthy network, the idle traffic and
/// the messages per write; then the leader crashes (time to a commit by a new leader); then,
/// once the cluster recovered, the new leader is cut off from every other node while its
/// clients keep writing to it (time to a commit by a new leader, how long the isolated one
/// went on leading, and what it took and refused meanwhile). Raft's leader pushes
/// heartbeats and steps down when a quorum stops answering them (check-quorum); ZAB's
/// followers ping the leader, which abdicates when a quorum's pings stop.
pub fn heartbeat_direction<P: Protocol>(
    nodes: usize,
    clients: usize,
    seed: u64,
    options: &P::Options,
) -> Direction {
    let mut config = RunConfig::new(seed, nodes);
    config.faults = FaultSet::NONE;
    config.clients = clients;
    config.spread_clients = true;
    let mut world = World::<P>::new(config, options.clone());
    let mut out = Direction::default();
    // Idle: a leader, no clients, 10 seconds.
    world.run_until(300 * TICK_US);
    let (sent, at) = (world.stats.messages_sent, world.now);
    world.run_until(at + 1_000 * TICK_US);
    let seconds = (world.now - at) as f64 / 1e6;
    out.idle_messages_per_node_s
        .push((world.stats.messages_sent - sent) as f64 / nodes as f64 / seconds);
    // Load: messages per committed write.
    world.add_clients(clients);
    world.run_until(world.now + 200 * TICK_US);
    let (sent, committed) = (world.stats.messages_sent, world.stats.committed_commands);
    world.run_until(world.now + 1_000 * TICK_US);
    let writes = world.stats.committed_commands - committed;
    if writes > 0 {
        out.messages_per_write
            .push((world.stats.messages_sent - sent) as f64 / writes as f64);
    }
    // The leader crashes.
    if let Some((leader, era)) = leader_of(&world) {
        world.crash(leader);
        let committed = world.stats.committed_commands;
        let failover = run_until_true(&mut world, 3_000, |w| {
            w.stats.committed_commands > committed
                && leader_of(w).is_some_and(|(l, e)| l != leader && e > era)
        });
        out.crash_failover_us.extend(failover);
        world.restart(leader);
        world.run_until(world.now + 500 * TICK_US);
    }
    // The leader is cut off; its clients keep writing to it.
    if let Some((leader, era)) = leader_of(&world) {
        let others: Vec<_> = world
            .voters
            .iter()
            .copied()
            .filter(|&n| n != leader)
            .collect();
        world.network.cut(&[leader], &others);
        let committed = world.stats.committed_commands;
        let last_at_cut = world
            .node(leader)
            .engine()
            .map_or(0, |e| e.status().last_index);
        let refused_before = world.stats.refusals_by(leader);
        let start = world.now;
        let mut stepped_down: Option<(u64, u64)> = None;
        let mut failover = None;
        for _ in 0..3_000 {
            let status = world.node(leader).engine().map(|e| e.status());
            if stepped_down.is_none() && status.is_some_and(|s| s.role != synod_core::Role::Leader)
            {
                let last = status.map_or(last_at_cut, |s| s.last_index);
                stepped_down = Some((world.now - start, last));
            }
            if failover.is_none()
                && world.stats.committed_commands > committed
                && leader_of(&world).is_some_and(|(l, e)| l != leader && e > era)
            {
                failover = Some(world.now - start);
            }
            if stepped_down.is_some() && failover.is_some() {
                break;
            }
            let next = world.now + TICK_US;
            world.run_until(next);
            if world.violation.is_some() {
                break;
            }
        }
        out.isolation_failover_us.extend(failover);
        if let Some((led, last)) = stepped_down {
            out.isolated_leader_led_us.push(led);
            out.stale_leader_writes += last.saturating_sub(last_at_cut);
        }
        // What it refused, still cut off, after it stopped leading: 2 more seconds.
        world.run_until(world.now + 200 * TICK_US);
        out.stale_leader_refusals += world.stats.refusals_by(leader) - refused_before;
        world.network.blocked.clear();
        world.run_until(world.now + 300 * TICK_US);
    }
    out.violation = world.violation.as_ref().map(|v| v.to_string());
    out
}

/// The header of the heartbeat-direction table (Markdown).
pub const DIRECTION_HEADER: &str = "| protocol | idle messages per node per second | messages per committed write | leader crash to a new leader's commit p50 / max (ticks) | leader isolated to a new leader's commit p50 / max (ticks) | isolated leader went on leading p50 / max (ticks) | writes the isolated leader took (lost) | writes it refused after stepping down |\n|---|---|---|---|---|---|---|---|";

/// One line of the heartbeat-direction table.
pub fn direction_row(name: &str, d: &Direction) -> String {
    let mean = |v: &[f64]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    let spread = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        format!(
            "{} / {}",
            ticks(percentile(&v, 0.5)),
            ticks(v.last().copied())
        )
    };
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} |",
        mean(&d.idle_messages_per_node_s),
        mean(&d.messages_per_write),
        spread(&d.crash_failover_us),
        spread(&d.isolation_failover_us),
        spread(&d.isolated_leader_led_us),
        d.stale_leader_writes,
        d.stale_leader_refusals,
    )
}

/// What the CAP runs of one protocol measured (see [`cap`]), summed over seeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cap {
    /// Runs.
    pub runs: u64,
    /// Writes clients on the minority and on the majority side asked for during the
    /// partition, and of those, the ones acknowledged before it healed.
    pub writes: [(u64, u64); 2],
    /// Reads asked and answered the same way, per side.
    pub reads: [(u64, u64); 2],
    /// Of those reads, stale ones, and how stale each was, in microseconds.
    pub staleness_us: Vec<u64>,
    /// From the heal to every node holding the same applied history, per run that got there.
    pub converge_us: Vec<u64>,
    /// Runs in which the nodes had not converged 2,000 ticks after the heal.
    pub unconverged: u64,
    /// Runs whose clients' history was linearizable.
    pub linearizable: u64,
    /// Broken invariants, with the seed.
    pub violations: Vec<String>,
}

impl Cap {
    /// Adds another run's figures.
    pub fn add(&mut self, other: Cap) {
        self.runs += other.runs;
        for side in 0..2 {
            self.writes[side].0 += other.writes[side].0;
            self.writes[side].1 += other.writes[side].1;
            self.reads[side].0 += other.reads[side].0;
            self.reads[side].1 += other.reads[side].1;
        }
        self.staleness_us.extend(other.staleness_us);
        self.converge_us.extend(other.converge_us);
        self.unconverged += other.unconverged;
        self.linearizable += other.linearizable;
        self.violations.extend(other.violations);
    }
}

/// Nodes and clients of a CAP run, and the minority side: the two lowest ids (so the fixed
/// primary of sync and dns is on it), with two fifths of the clients.
const CAP_NODES: usize = 5;
const CAP_CLIENTS: u64 = 10;
const CAP_MINORITY_CLIENTS: u64 = 4;
const CAP_PARTITION_TICKS: u64 = 1_000;

/// CAP under one partition: five nodes and ten clients on a healthy network for 300 ticks;
/// then the network splits {n1, n2} | {n3, n4, n5} for 1,000 ticks, four clients on the
/// minority side and six on the majority side, each reaching only the nodes on its side;
/// then the network heals, the clients stop, and the run waits for every node to hold the
/// same applied history. Counted: what each side's clients got done during the partition,
/// how stale their reads were, whether any invariant broke (a lost acknowledged write breaks
/// state machine safety), how long the nodes
/// took to agree, and whether the whole history was linearizable.
pub fn cap<P: Protocol>(seed: u64, options: &P::Options) -> Cap {
    use synod_check::{check_kv, KvInput, Outcome, Verdict};
    use synod_core::NodeId;

    let mut config = RunConfig::new(seed, CAP_NODES);
    config.faults = FaultSet::NONE;
    config.clients = CAP_CLIENTS as usize;
    config.spread_clients = true;
    let mut world = World::<P>::new(config, options.clone());
    world.add_clients(CAP_CLIENTS as usize);
    world.run_until(300 * TICK_US);
    let minority: Vec<NodeId> = world.voters[..2].to_vec();
    let majority: Vec<NodeId> = world.voters[2..].to_vec();
    world.fault_free = false;
    world.network.cut(&minority, &majority);
    for client in 1..=CAP_CLIENTS {
        let side = if client <= CAP_MINORITY_CLIENTS {
            &minority
        } else {
            &majority
        };
        world.client_reach.insert(client, side.clone());
    }
    let (cut_at, stale_before) = (world.now, world.stats.read_staleness_us.len());
    world.run_until(cut_at + CAP_PARTITION_TICKS * TICK_US);
    let healed_at = world.now;
    world.network.blocked.clear();
    world.client_reach.clear();
    world.stop_clients();
    let mut out = Cap {
        runs: 1,
        staleness_us: world.stats.read_staleness_us[stale_before..].to_vec(),
        ..Cap::default()
    };
    for op in world.history.operations() {
        if op.call < cut_at || op.call >= healed_at {
            continue;
        }
        let answered =
            matches!(op.outcome, Outcome::Ok(_)) && op.end.is_some_and(|end| end <= healed_at);
        let side = usize::from(op.client > CAP_MINORITY_CLIENTS);
        let count = match op.input {
            KvInput::Read { .. } => &mut out.reads[side],
            _ => &mut out.writes[side],
        };
        count.0 += 1;
        count.1 += u64::from(answered);
    }
    let converged = run_until_true(&mut world, 2_000, |w| {
        if !P::ORDERS_WRITES {
            // Same versions and data everywhere (their indices differ by design).
            return w.check_convergence().is_ok();
        }
        let decided = w.safety.applied.len() as u64;
        w.nodes.iter().filter(|n| !n.dead).all(|n| {
            n.replica
                .as_ref()
                .is_some_and(|r| r.store().read().applied_index() == decided)
        })
    });
    match converged {
        Some(us) => out.converge_us.push(us),
        None => out.unconverged += 1,
    }
    // Lease holders that stopped renewing lapse, and the last writes settle.
    world.run_until(world.now + 500 * TICK_US + crate::lease::LAPSE_BOUND_US);
    if matches!(check_kv(world.history.operations()), Verdict::Linearizable) {
        out.linearizable = 1;
    }
    if let Some(v) = &world.violation {
        out.violations.push(format!("seed {seed}: {v}"));
    } else if let Err(e) = world.check_kept().map_err(|e| (converged.is_some(), e)) {
        // Only once the replicas agreed: a lagging one is not a lost write.
        if e.0 {
            out.violations.push(format!("seed {seed}: {}", e.1));
        }
    }
    out
}

/// The header of the CAP table (Markdown).
pub const CAP_HEADER: &str = "| protocol | linearizable histories | writes acknowledged of asked during the partition, minority side | majority side | reads answered of asked, minority side | majority side | stale reads (staleness p50 / p99 / max, ticks) | runs with a violation (a lost write is one) | ticks to converge after the heal p50 / max |\n|---|---|---|---|---|---|---|---|---|";

/// One line of the CAP table.
pub fn cap_row(name: &str, cap: &Cap) -> String {
    let mut staleness = cap.staleness_us.clone();
    staleness.sort_unstable();
    let mut converge = cap.converge_us.clone();
    converge.sort_unstable();
    let stale = if staleness.is_empty() {
        "0".to_string()
    } else {
        format!(
            "{} ({} / {} / {})",
            staleness.len(),
            ticks(percentile(&staleness, 0.5)),
            ticks(percentile(&staleness, 0.99)),
            ticks(staleness.last().copied())
        )
    };
    let unconverged = if cap.unconverged > 0 {
        format!(", {} runs never", cap.unconverged)
    } else {
        String::new()
    };
    let of = |(asked, answered): (u64, u64)| format!("{answered} of {asked}");
    format!(
        "| {name} | {} of {} | {} | {} | {} | {} | {stale} | {} | {} / {}{unconverged} |",
        cap.linearizable,
        cap.runs,
        of(cap.writes[0]),
        of(cap.writes[1]),
        of(cap.reads[0]),
        of(cap.reads[1]),
        cap.violations.len(),
        ticks(percentile(&converge, 0.5)),
        ticks(converge.last().copied()),
    )
}

/// How one gossip write spread through a healthy cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    /// Rounds until every member held the write, anti-entropy on (as configured: every 10
    /// rounds at the default timing). A round is a tick: a member pushes once per tick, and
    /// every message of a round arrives before the next.
    pub rounds: u64,
    /// The same with anti-entropy off: the epidemic alone, which may die out before it
    /// reaches everyone (`None`).
    pub pushes_alone: Option<u64>,
}

/// Gossip's dissemination on its own: `nodes` members, fan-out `fanout`, no loss; one write
/// at the first member once the members have met; rounds until all hold it.
pub fn gossip_spread(nodes: u64, fanout: usize, seed: u64) -> Spread {
    Spread {
        rounds: spread_once(nodes, fanout, seed, true).unwrap_or(u64::MAX),
        pushes_alone: spread_once(nodes, fanout, seed, false),
    }
}

fn spread_once(nodes: u64, fanout: usize, seed: u64, anti_entropy: bool) -> Option<u64> {
    use std::collections::VecDeque;

    use synod_core::{Action, Engine, Input, NodeId, Proposal, RequestId};
    use synod_gossip::{Config, Gossip, Message};
    use synod_kv::{PutRequest, Request};

    const ROUNDS_MAX: u64 = 1_000;
    type Queue = VecDeque<(NodeId, NodeId, Message)>;
    let voters: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
    let mut members: Vec<Gossip> = voters
        .iter()
        .map(|&id| {
            let mut config = Config::new(id, voters.clone(), 5);
            config.fanout = fanout;
            if !anti_entropy {
                config.anti_entropy_ticks = u64::MAX;
            }
            Gossip::restart(
                config,
                seed.wrapping_mul(7919).wrapping_add(id.0),
                None,
                &[],
                0,
            )
            .expect("a valid gossip config")
        })
        .collect();
    fn step(members: &mut [Gossip], queue: &mut Queue, id: NodeId, input: Input<Message>) {
        let mut pending = vec![input];
        while let Some(input) = pending.pop() {
            let mut out = Vec::new();
            members[id.0 as usize - 1].step(input, &mut out);
            for action in out {
                match action {
                    // An instant disk.
                    Action::Persist(p) => pending.push(Input::Persisted(p.id)),
                    Action::Send { to, message } => queue.push_back((id, to, message)),
                    _ => {}
                }
            }
        }
    }
    let round = |members: &mut Vec<Gossip>, queue: &mut Queue| {
        for &id in &voters {
            step(members, queue, id, Input::Tick);
        }
        while let Some((from, to, message)) = queue.pop_front() {
            step(members, queue, to, Input::Receive { from, message });
        }
    };
    let mut queue = Queue::new();
    // The members meet (their first probes) before the write.
    for _ in 0..10 {
        round(&mut members, &mut queue);
    }
    let key = bytes::Bytes::from_static(b"spread");
    let put = Request::Put(PutRequest {
        key: key.clone(),
        value: bytes::Bytes::from_static(b"v"),
        ..PutRequest::default()
    });
    let proposal = Proposal {
        id: RequestId::new(1, 1),
        command: put.encode(),
    };
    step(
        &mut members,
        &mut queue,
        NodeId(1),
        Input::Propose(vec![proposal]),
    );
    let held = |members: &[Gossip]| members.iter().all(|m| m.store().get(&key).is_some());
    let mut rounds = 0;
    while !held(&members) {
        if rounds == ROUNDS_MAX {
            return None;
        }
        rounds += 1;
        round(&mut members, &mut queue);
    }
    Some(rounds)
}

/// The table of [`gossip_spread`] over cluster sizes and fan-outs.
pub const SPREAD_HEADER: &str = "| members | fan-out | rounds to reach all p50 / p99 / max | epidemic alone: runs that reached all | its rounds p50 / max | log2 n | log_(f+1) n + ln n / f |\n|---|---|---|---|---|---|---|";

/// One row of the spread table.
pub fn spread_row(nodes: u64, fanout: usize, spreads: &[Spread]) -> String {
    let mut all: Vec<u64> = spreads.iter().map(|s| s.rounds).collect();
    all.sort_unstable();
    let mut alone: Vec<u64> = spreads.iter().filter_map(|s| s.pushes_alone).collect();
    alone.sort_unstable();
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let n = nodes as f64;
    let f = fanout as f64;
    format!(
        "| {nodes} | {fanout} | {} / {} / {} | {} of {} | {} / {} | {:.1} | {:.1} |",
        show(percentile(&all, 0.5)),
        show(percentile(&all, 0.99)),
        show(all.last().copied()),
        alone.len(),
        spreads.len(),
        show(percentile(&alone, 0.5)),
        show(alone.last().copied()),
        n.log2(),
        n.ln() / (f + 1.0).ln() + n.ln() / f,
    )
}
