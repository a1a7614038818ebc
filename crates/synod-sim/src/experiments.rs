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
pub const COMPARE_HEADER: &str = "| protocol | runs | violations | writes committed | messages per write | write latency p50 / p99 (ticks) | stall after a leader crash p50 / max (ticks) | leaders elected | preemptions |\n|---|---|---|---|---|---|---|---|---|";

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
        "| {name} | {} | {} | {} | {per_write} | {} / {} | {} / {} | {} | {} |",
        summary.runs,
        summary.failures.len(),
        t.committed_commands,
        ticks(percentile(&latencies, 0.5)),
        ticks(percentile(&latencies, 0.99)),
        ticks(percentile(&stalls, 0.5)),
        ticks(stalls.last().copied()),
        t.elections,
        t.preemptions,
    );
    row
}
