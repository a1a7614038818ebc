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
            membership: None,
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

#[test]
fn check_tells_a_torn_tail_from_corruption() {
    let data: PathBuf = std::env::temp_dir().join(format!("synod-wal-torn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (mut log, _) = FileLog::open(
        RealDir::open(data.join("wal")).unwrap(),
        WalOptions::default(),
    )
    .unwrap();
    for i in 1..=10 {
        let mut e = entry(i, 2);
        e.payload = synod_core::Payload::Command(synod_core::Proposal {
            id: synod_core::RequestId::new(1, i),
            command: bytes::Bytes::from(vec![0x61; 900]),
        });
        log.append(&[e]).unwrap();
        log.sync().unwrap();
    }
    drop(log);
    let dir = data.to_str().unwrap();
    let segment = data.join("wal").join("00000000000000000001.wal");
    let whole = std::fs::read(&segment).unwrap();
    // Where the records end: the segment's space goes on, allocated ahead.
    let last = synod_storage::wal::scan(&RealDir::open(data.join("wal")).unwrap())
        .unwrap()
        .records
        .pop()
        .unwrap();
    let end = (last.offset + last.size) as usize;

    // The file's length covers the last record, but its last sector never reached the disk.
    let mut torn = whole.clone();
    let sector = (end - 100) / 512 * 512;
    torn[sector..(sector + 512).min(whole.len())].fill(0);
    std::fs::write(&segment, &torn).unwrap();
    let (ok, out) = synod(&["wal", "check", "--data-dir", dir]);
    assert!(ok, "a torn write is not damage: {out}");
    assert!(
        out.contains("9 entries: intact")
            && out.contains("torn write (a record with a zeroed sector)"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        torn,
        "check changes nothing"
    );

    // The same record with garbage where the zeros were: that cannot be a torn write.
    let mut damaged = whole.clone();
    damaged[sector..(sector + 512).min(whole.len())].fill(0x77);
    std::fs::write(&segment, &damaged).unwrap();
    let (ok, out) = synod(&["wal", "check", "--data-dir", dir]);
    assert!(
        !ok && out.contains("DAMAGED") && out.contains("checksum"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&data);
}
