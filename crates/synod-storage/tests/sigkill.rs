//! Real crashes: a child process writes the file log and is killed with SIGKILL at random
//! moments, while appending, syncing, rolling segments over and compacting. After each kill
//! the log is reopened: every entry the child reported durable must be there, intact, and
//! nothing may follow that the child did not write.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use synod_core::{Rng, SnapshotMeta};
use synod_storage::conformance::entry;
use synod_storage::*;

const CHILD_DIR: &str = "SYNOD_SIGKILL_CHILD_DIR";
const OPTIONS: WalOptions = WalOptions::with_segment_bytes(16 << 10);

/// The writer. Runs only when the parent starts this test binary as a child.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let (mut log, state) = FileLog::open(RealDir::open(dir).unwrap(), OPTIONS).unwrap();
    let mut next = state.last_index() + 1;
    let mut rng = Rng::new(next);
    let mut out = std::io::stdout().lock();
    loop {
        let batch: Vec<_> = (next..next + rng.range(1, 40))
            .map(|i| entry(i, 1))
            .collect();
        next += batch.len() as u64;
        log.append(&batch).unwrap();
        if rng.chance(0.05) && next > 200 {
            log.compact_to(SnapshotMeta {
                index: next - 150,
                era: 1,
            })
            .unwrap();
        }
        log.sync().unwrap();
        writeln!(out, "durable {}", next - 1).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_never_loses_a_synced_entry_nor_invents_one() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("synod-sigkill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(7);
    let (mut kills, mut repairs, mut highest) = (0, 0, 0);
    for _ in 0..60 {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_millis(rng.range(5, 80));
        let mut reported = 0u64;
        for line in lines.lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("durable ") {
                reported = n.parse().unwrap();
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;

        let (_, state) = FileLog::open(RealDir::open(&dir).unwrap(), OPTIONS).unwrap();
        repairs += state.repairs.len();
        assert!(
            state.last_index() >= reported,
            "entry {reported} was reported durable, the log ends at {}",
            state.last_index()
        );
        let first = state.base.map_or(1, |b| b.index + 1);
        for (offset, e) in state.entries.iter().enumerate() {
            assert_eq!(
                e,
                &entry(first + offset as u64, 1),
                "entry {} is damaged or invented",
                e.index
            );
        }
        highest = highest.max(state.last_index());
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{kills} kills, {repairs} torn tails repaired, {highest} entries written");
    assert!(
        highest > 1_000,
        "the child got real work done between kills: {highest}"
    );
}
