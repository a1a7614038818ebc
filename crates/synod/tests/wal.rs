//! `synod wal dump` and `synod wal check` on a real data directory.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use std::path::PathBuf;
use std::process::Command;

use synod_core::{Snapshot, SnapshotMeta};
use synod_storage::conformance::entry;
use synod_storage::*;

fn synod(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn dump_and_check_a_data_directory_and_name_the_damage() {
    let data: PathBuf = std::env::temp_dir().join(format!("synod-wal-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (mut log, _) = FileLog::open(
        RealDir::open(data.join("wal")).unwrap(),
        WalOptions::default(),
    )
    .unwrap();
    log.save_hard_state(&[3, 2]).unwrap();
    log.append(&(1..=30).map(|i| entry(i, 3)).collect::<Vec<_>>())
        .unwrap();
    log.sync().unwrap();
    let mut snaps = FileSnapshots::open(RealDir::open(data.join("snap")).unwrap(), 2).unwrap();
    snaps
        .save(&Snapshot {
            meta: SnapshotMeta { index: 20, era: 3 },
            data: bytes::Bytes::from_static(b"kv state"),
        })
        .unwrap();
    let dir = data.to_str().unwrap();

    let (ok, out) = synod(&["wal", "dump", "--data-dir", dir]);
    assert!(ok, "{out}");
    assert!(
        out.contains("hard state") && out.contains("entry 30 era 3"),
        "{out}"
    );

    let (ok, out) = synod(&["wal", "check", "--data-dir", dir]);
    assert!(ok, "{out}");
    assert!(
        out.contains("30 entries: intact") && out.contains("snapshot: through 20 era 3"),
        "{out}"
    );

    let segment = data.join("wal").join("00000000000000000001.wal");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[600] ^= 0x20;
    std::fs::write(&segment, bytes).unwrap();
    let (ok, out) = synod(&["wal", "check", "--data-dir", dir]);
    assert!(!ok, "a damaged log must fail the check: {out}");
    assert!(
        out.contains("DAMAGED")
            && out.contains("00000000000000000001.wal")
            && out.contains("at byte"),
        "{out}"
    );

    let (ok, out) = synod(&["wal", "check", "--data-dir", "/nonexistent/synod"]);
    assert!(!ok && out.contains("is not a directory"), "{out}");
    let _ = std::fs::remove_dir_all(&data);
}
