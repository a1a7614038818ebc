//! Many seeds, on every core.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::protocol::Protocol;
use crate::report::RunReport;
use crate::run::{run, RunConfig};

/// Runs `template` once per seed on `jobs` threads and returns the reports in seed order.
/// `progress` is called after each run with (runs done, runs in all, runs that failed).
pub fn sweep<P: Protocol>(
    seeds: &[u64],
    template: &RunConfig,
    options: &P::Options,
    jobs: usize,
    progress: &(dyn Fn(usize, usize, usize) + Sync),
) -> Vec<RunReport> {
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let reports = Mutex::new(Vec::with_capacity(seeds.len()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                let config = RunConfig {
                    seed,
                    trace: false,
                    ..template.clone()
                };
                let report = run::<P>(&config, options).report;
                if report.violation.is_some() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                reports
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(report);
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(finished, seeds.len(), failed.load(Ordering::Relaxed));
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by_key(|r| r.seed);
    reports
}
