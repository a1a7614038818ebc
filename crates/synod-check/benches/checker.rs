//! How long the checker takes on a large history (a benchmark, not a test: it prints figures).
//!
//! Run with `cargo bench -p synod-check`.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use std::time::Instant;

use synod_check::generate::{linearizable_history, Spec};
use synod_check::{check_kv, Verdict};
use synod_core::Rng;

fn main() {
    println!("linearizability checker: generated linearizable histories, release build");
    println!(
        "{:>10} {:>6} {:>8} {:>14} {:>12}",
        "operations", "keys", "clients", "indeterminate", "check time"
    );
    let cases = [
        Spec {
            operations: 10_000,
            keys: 100,
            clients: 10,
            duration_max: 100,
            indeterminate_share: 0.0,
        },
        Spec {
            operations: 10_000,
            keys: 100,
            clients: 10,
            duration_max: 100,
            indeterminate_share: 0.02,
        },
        Spec {
            operations: 10_000,
            keys: 10,
            clients: 10,
            duration_max: 100,
            indeterminate_share: 0.02,
        },
        Spec {
            operations: 100_000,
            keys: 100,
            clients: 10,
            duration_max: 100,
            indeterminate_share: 0.02,
        },
    ];
    for (i, spec) in cases.iter().enumerate() {
        let ops = linearizable_history(&mut Rng::new(i as u64 + 1), spec);
        let start = Instant::now();
        let verdict = check_kv(&ops);
        let elapsed = start.elapsed();
        assert_eq!(
            verdict,
            Verdict::Linearizable,
            "generated histories are linearizable"
        );
        println!(
            "{:>10} {:>6} {:>8} {:>13.0}% {:>10.1}ms",
            spec.operations,
            spec.keys,
            spec.clients,
            spec.indeterminate_share * 100.0,
            elapsed.as_secs_f64() * 1e3
        );
    }
}
