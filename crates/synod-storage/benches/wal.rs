//! Write-ahead log throughput against this disk's raw fdatasync rate, measured in one run
//! (a benchmark that prints figures, not a test). Run with `cargo bench -p synod-storage`.
//!
//! Entries carry 256-byte commands. Each batch is appended and synced with one `fdatasync`,
//! as the server does with every proposal that arrived while the previous sync ran.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_core::{Entry, Payload, Proposal, RequestId};
use synod_storage::{FileLog, LogStore, RealDir, WalOptions};

/// How long each measurement runs.
const RUN_FOR: Duration = Duration::from_secs(2);
/// Rounds of every measurement; the median is printed (a shared disk is noisy).
const ROUNDS: usize = 3;
const ENTRY_BYTES: usize = 256;

fn bench_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    dir
}

/// Appends 256 bytes and fdatasyncs, over and over: the disk's own limit.
fn raw_fdatasync_per_second() -> f64 {
    let dir = bench_dir("raw");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw"))
        .expect("open");
    let block = [7u8; ENTRY_BYTES];
    let start = Instant::now();
    let mut syncs = 0u64;
    while start.elapsed() < RUN_FOR {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        syncs += 1;
    }
    syncs as f64 / start.elapsed().as_secs_f64()
}

/// Entries per second with batches of `batch` entries.
fn log_throughput(batch: usize) -> f64 {
    let dir = bench_dir(&format!("wal-{batch}"));
    let (mut log, _) =
        FileLog::open(RealDir::open(&dir).expect("dir"), WalOptions::default()).expect("open");
    let command = Bytes::from(vec![42u8; ENTRY_BYTES]);
    let mut next = 1u64;
    let start = Instant::now();
    while start.elapsed() < RUN_FOR {
        let entries: Vec<Entry> = (next..next + batch as u64)
            .map(|index| Entry {
                index,
                era: 1,
                payload: Payload::Command(Proposal {
                    id: RequestId::new(1, index),
                    command: command.clone(),
                }),
            })
            .collect();
        next += batch as u64;
        log.append(&entries).expect("append");
        log.sync().expect("sync");
    }
    (next - 1) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    println!(
        "write-ahead log on {} (ext4 here), {ENTRY_BYTES}-byte entries, median of {ROUNDS} rounds of {}s",
        env!("CARGO_TARGET_TMPDIR"),
        RUN_FOR.as_secs()
    );
    let raw = median((0..ROUNDS).map(|_| raw_fdatasync_per_second()).collect());
    println!("raw fdatasync of {ENTRY_BYTES} bytes: {raw:>10.0} per second");
    println!(
        "{:>6} {:>14} {:>10} {:>16}",
        "batch", "entries/s", "MB/s", "x one-per-sync"
    );
    let mut single = 0.0;
    for batch in [1usize, 10, 100, 1000] {
        let per_second = median((0..ROUNDS).map(|_| log_throughput(batch)).collect());
        let mb = per_second * ENTRY_BYTES as f64 / 1e6;
        if batch == 1 {
            single = per_second;
        }
        println!(
            "{batch:>6} {per_second:>14.0} {mb:>10.1} {:>15.1}x",
            per_second / single
        );
    }
}
