//! `synod wal dump|check`: look inside a node's write-ahead log, for operators.
//!
//! A data directory holds `wal/` (log segments) and `snap/` (snapshots). Both commands only
//! read: a torn tail is reported, not cut off (the node does that when it starts).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use synod_core::Payload;
use synod_storage::wal::{scan, Record};
use synod_storage::{FileSnapshots, RealDir, SnapshotStore};

/// Options of `synod wal`.
#[derive(Args, Debug)]
pub struct WalArgs {
    #[command(subcommand)]
    command: WalCommand,
}

#[derive(Subcommand, Debug)]
enum WalCommand {
    /// Print every record of the log, one per line.
    Dump {
        /// The node's data directory (holding wal/ and snap/).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Verify every segment and the newest snapshot; exit non-zero on damage.
    Check {
        /// The node's data directory (holding wal/ and snap/).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Runs the command.
pub fn run(args: WalArgs) -> Result<ExitCode> {
    match args.command {
        WalCommand::Dump { data_dir } => dump(&data_dir),
        WalCommand::Check { data_dir } => check(&data_dir),
    }
}

fn wal_dir(data_dir: &Path) -> Result<RealDir> {
    let path = data_dir.join("wal");
    anyhow::ensure!(
        path.is_dir(),
        "{} is not a directory: is {} a Synod data directory?",
        path.display(),
        data_dir.display()
    );
    RealDir::existing(&path).with_context(|| format!("opening {}", path.display()))
}

fn describe(record: &Record) -> String {
    match record {
        Record::Segment { seq } => format!("segment {seq}"),
        Record::Entry(e) => match &e.payload {
            Payload::Noop => format!("entry {} era {} no-op", e.index, e.era),
            Payload::Marker(token) => format!("entry {} era {} marker {token:x}", e.index, e.era),
            Payload::Command(p) => format!(
                "entry {} era {} command {} ({} bytes)",
                e.index,
                e.era,
                p.id,
                p.command.len()
            ),
            Payload::Membership { id, membership } => format!(
                "entry {} era {} membership {membership} (request {id})",
                e.index, e.era
            ),
            Payload::MembershipChange { id, change } => format!(
                "entry {} era {} membership change {change:?} (request {id})",
                e.index, e.era
            ),
        },
        Record::Truncate(index) => format!("truncate from {index}"),
        Record::HardState(bytes) => format!("hard state ({} bytes: {:02x?})", bytes.len(), bytes),
        Record::Journal(bytes) => format!("journal record ({} bytes)", bytes.len()),
        Record::Restate {
            hard_state,
            journal,
        } => format!(
            "restated: hard state ({} bytes), {} journal records",
            hard_state.as_ref().map_or(0, Vec::len),
            journal.len()
        ),
        Record::Base(meta) => format!("compacted through {} era {}", meta.index, meta.era),
        Record::Pad => "pad".to_string(),
    }
}

fn dump(data_dir: &Path) -> Result<ExitCode> {
    let dir = wal_dir(data_dir)?;
    let scan = scan(&dir).context("reading the log")?;
    for r in &scan.records {
        println!("{} @{:<10} {}", r.file, r.offset, describe(&r.record));
    }
    if let Some(torn) = &scan.torn_tail {
        println!(
            "{} @{:<10} torn write ({}, {} bytes): cut off when the node next starts",
            torn.file, torn.offset, torn.what, torn.bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn check(data_dir: &Path) -> Result<ExitCode> {
    let dir = wal_dir(data_dir)?;
    let scan = match scan(&dir) {
        Ok(scan) => scan,
        Err(e) => {
            println!("DAMAGED: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let entries = scan
        .records
        .iter()
        .filter(|r| matches!(r.record, Record::Entry(_)))
        .count();
    let segments = scan
        .records
        .iter()
        .filter(|r| matches!(r.record, Record::Segment { .. }))
        .count();
    println!(
        "log: {segments} segments, {} records, {entries} entries: intact; {} bytes allocated \
         ahead in the last segment",
        scan.records.len(),
        scan.unwritten_bytes
    );
    if let Some(torn) = &scan.torn_tail {
        println!("log: {torn}; a crash interrupted that write, and it will be cut off at start");
    }
    let snap_path = data_dir.join("snap");
    if snap_path.is_dir() {
        let snapshots = FileSnapshots::read_only(RealDir::existing(&snap_path)?, usize::MAX);
        match snapshots.latest() {
            Ok(Some(s)) => println!(
                "snapshot: through {} era {} ({} bytes): intact",
                s.meta.index,
                s.meta.era,
                s.data.len()
            ),
            Ok(None) => println!("snapshot: none"),
            Err(e) => {
                println!("DAMAGED: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
