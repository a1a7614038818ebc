//! One seed, one run: the trace of a seed is the same bit for bit every time.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use synod_raft::Raft;
use synod_sim::{run, RaftOptions, RunConfig};

fn traced(seed: u64) -> (String, synod_sim::RunReport) {
    let mut config = RunConfig::new(seed, 5);
    config.trace = true;
    config.safety_ticks = 800;
    config.liveness_ticks = 300;
    let outcome = run::<Raft>(&config, &RaftOptions::default());
    (outcome.trace, outcome.report)
}

#[test]
fn the_same_seed_gives_the_same_trace_bit_for_bit() {
    let (first, first_report) = traced(42);
    let (second, second_report) = traced(42);
    assert!(
        first.lines().count() > 10_000,
        "the trace records the run: {} lines",
        first.lines().count()
    );
    assert!(
        first.contains("nemesis:") && first.contains("AppendEntries") && first.contains("commits")
    );
    assert_eq!(first_report, second_report);
    assert!(first == second, "traces of seed 42 differ");
}

#[test]
fn different_seeds_give_different_runs() {
    let (a, _) = traced(1);
    let (b, _) = traced(2);
    assert_ne!(a, b);
}

#[test]
fn tracing_does_not_change_the_run() {
    let mut config = RunConfig::new(7, 5);
    config.safety_ticks = 800;
    let quiet = run::<Raft>(&config, &RaftOptions::default()).report;
    config.trace = true;
    let loud = run::<Raft>(&config, &RaftOptions::default()).report;
    assert_eq!(quiet, loud);
}
