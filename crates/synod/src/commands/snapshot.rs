//! `synod snapshot`: save a member's state to a file (as `etcdctl snapshot save` does, over
//! the same call), look into such a file, and restore it as a new member's data directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use synod_node::backup;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::maintenance_client::MaintenanceClient;

use super::client::{grpc, runtime, Connection};

/// `snapshot`.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Stream one member's state to FILE (Synod's format; `etcdctl snapshot save` writes the
    /// same file).
    Save {
        /// Where to write it.
        file: PathBuf,
        #[command(flatten)]
        connection: Connection,
    },
    /// Check a saved snapshot and print its revision, keys and size.
    Status {
        /// The file.
        file: PathBuf,
    },
    /// Make a new member's data directory from a saved snapshot. Restore the same file for
    /// every member of the new cluster, then start them with an --initial-cluster that names
    /// them all.
    Restore {
        /// The file.
        file: PathBuf,
        /// The new data directory (must not exist, or be empty).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The protocol the new cluster will run (any but gossip: gossip keeps its own copy
        /// of every key beside the store, which a snapshot does not hold).
        #[arg(long, default_value = "raft")]
        protocol: String,
    },
}

/// Runs `synod snapshot ...`.
pub fn run(args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SnapshotCommand::Save { file, connection } => save(&file, &connection),
        SnapshotCommand::Status { file } => {
            let backup = read(&file)?;
            println!(
                "revision {}, {} keys, applied index {}, {} bytes of state",
                backup.revision,
                backup.store.len(),
                backup.applied_index,
                backup.state.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Restore {
            file,
            data_dir,
            protocol,
        } => {
            if !synod_replica::PROTOCOL_NAMES.contains(&protocol.as_str()) {
                bail!(
                    "--protocol {protocol}: not a protocol; one of {}",
                    synod_replica::PROTOCOL_NAMES.join(", ")
                );
            }
            if !synod_replica::has_consensus(&protocol) {
                bail!("--protocol {protocol}: a gossip member keeps its own copy of every key beside the store, which a snapshot does not hold; restore into a protocol that orders writes, or let a new gossip member fill up from its peers");
            }
            let backup = read(&file)?;
            let (revision, keys) = (backup.revision, backup.store.len());
            backup::restore(backup, &data_dir, &protocol)
                .with_context(|| format!("cannot restore into {}", data_dir.display()))?;
            println!(
                "restored revision {revision} ({keys} keys) into {} for {protocol}",
                data_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read(file: &Path) -> anyhow::Result<backup::Backup> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    backup::decode(&bytes).with_context(|| format!("{} cannot be restored", file.display()))
}

fn save(file: &Path, connection: &Connection) -> anyhow::Result<ExitCode> {
    let [endpoint] = connection.endpoints.as_slice() else {
        bail!("snapshot save takes one endpoint: a snapshot is one member's state");
    };
    let bytes = runtime()?.block_on(async {
        let mut client = MaintenanceClient::new(connection.channel_to(endpoint).await?)
            .max_decoding_message_size(usize::MAX);
        let mut stream = client
            .snapshot(pb::SnapshotRequest {})
            .await
            .map_err(grpc)?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(grpc)? {
            bytes.extend_from_slice(&chunk.blob);
        }
        anyhow::Ok(bytes)
    })?;
    let backup = backup::decode(&bytes).context("the member sent a damaged snapshot")?;
    // Written beside the target and renamed once durable, so a crash leaves no half file.
    let partial = file.with_extension("part");
    let mut out = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    out.write_all(&bytes)
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), file.display()))?;
    println!(
        "saved revision {} ({} keys, {} bytes) to {}",
        backup.revision,
        backup.store.len(),
        bytes.len(),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}
