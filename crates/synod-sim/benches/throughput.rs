//! How fast the simulator runs, on one core (a benchmark that prints figures, not a test).
//!
//! Run with `cargo bench -p synod-sim`. Each row runs a sweep of seeds on one thread, with
//! every check on (invariants as the run goes, convergence and linearizability at the end),
//! and divides the simulated messages delivered by the wall time.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use std::time::Instant;

use synod_raft::Raft;
use synod_sim::{sweep, FaultSet, RaftOptions, RunConfig, Summary};

fn main() {
    println!("simulator throughput on one core, release build, every check on");
    println!(
        "{:>6} {:>6} {:>6} {:>12} {:>12} {:>10} {:>14}",
        "nodes", "faults", "seeds", "messages", "operations", "seconds", "messages/s"
    );
    for (nodes, faults) in [
        (3, FaultSet::NONE),
        (5, FaultSet::NONE),
        (5, FaultSet::ALL),
        (7, FaultSet::ALL),
    ] {
        let mut template = RunConfig::new(0, nodes);
        template.faults = faults;
        let seeds: Vec<u64> = (1..=20).collect();
        let started = Instant::now();
        let reports = sweep::<Raft>(&seeds, &template, &RaftOptions::default(), 1, &|_, _, _| {});
        let seconds = started.elapsed().as_secs_f64();
        let summary = Summary::of(&reports);
        assert!(summary.is_clean(), "{:?}", summary.failures);
        let delivered = summary.totals.messages_delivered;
        println!(
            "{:>6} {:>6} {:>6} {:>12} {:>12} {:>10.2} {:>14.0}",
            nodes,
            faults.to_string(),
            seeds.len(),
            delivered,
            summary.totals.operations,
            seconds,
            delivered as f64 / seconds
        );
    }
}
