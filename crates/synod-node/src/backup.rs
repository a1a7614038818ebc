//! Backups: a member's state machine as one file, the one `Maintenance.Snapshot` streams and
//! `etcdctl snapshot save` stores, and its restore into the data directory of a new member.
//!
//! The file is Synod's own format, not etcd's bbolt database: `etcdctl snapshot status` and
//! `etcdutl snapshot restore` cannot read it; `synod snapshot restore` can. It holds the
//! key-value store as the member had applied it (keys, history, leases, client sessions),
//! framed so that a truncated or damaged file is refused rather than restored:
//!
//! ```text
//! "synod-backup\n"  version  revision  applied index  state (length-prefixed)  crc32c
//! zeros to a multiple of 512 bytes  SHA-256 of all before
//! ```
//!
//! The padding and the SHA-256 are what etcd's client checks for at the end of a streamed
//! snapshot (a bbolt file is whole pages, followed by its SHA-256), so `etcdctl snapshot save`
//! accepts the stream and stores it as it came.
//!
//! Restoring writes the state as the data directory's only snapshot, with an empty log: every
//! member of the new cluster is restored from the same file, so all start from the same
//! point, as after `etcdutl snapshot restore`.
//! What belonged to the old cluster only is dropped: its lease epoch (the era of its last
//! leader; the new cluster's eras start over) and its alarms (about its members).

use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use synod_core::codec::{Decoder, Encoder};
use synod_core::{Snapshot, SnapshotMeta};
use synod_kv::KvStore;
use synod_storage::{open_node_stores, save_snapshot, LogStore, RealDir, StorageOptions};
use thiserror::Error;

const MAGIC: &[u8] = b"synod-backup\n";
const VERSION: u64 = 1;

/// Why a backup could not be read or restored.
#[derive(Debug, Error)]
pub enum BackupError {
    /// Not a Synod backup at all (an etcd bbolt file, say).
    #[error("not a Synod backup (it does not start with Synod's header); Synod cannot restore etcd's bbolt snapshots")]
    NotABackup,
    /// A backup written by a newer Synod.
    #[error("backup format version {0} is newer than this Synod reads ({VERSION})")]
    Version(u64),
    /// Cut short or changed since it was written.
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    /// The target directory has data in it.
    #[error("{0} is not empty: restore into a new data directory")]
    NotEmpty(String),
    /// Writing the data directory failed.
    #[error("cannot write the data directory: {0}")]
    Storage(#[from] synod_storage::StorageError),
    /// A file could not be read or a directory made.
    #[error("{0}")]
    Io(String),
}

/// What a backup holds, read back.
#[derive(Debug)]
pub struct Backup {
    /// The store's revision.
    pub revision: i64,
    /// The last log entry the store had applied.
    pub applied_index: u64,
    /// The store.
    pub store: KvStore,
    /// Its snapshot encoding, as it was in the file.
    pub state: Bytes,
}

/// The block the body is padded to, before the SHA-256 (etcd's client checks the size).
const BLOCK: usize = 512;
const SHA256_BYTES: usize = 32;

/// `store` as a backup file's bytes.
pub fn encode(store: &KvStore) -> Vec<u8> {
    let state = store.snapshot();
    let mut enc = Encoder::with_capacity(state.len() + 64);
    enc.u64(VERSION)
        .i64(store.revision())
        .u64(store.applied_index())
        .bytes(&state);
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&enc.finish());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes.resize(bytes.len().next_multiple_of(BLOCK), 0);
    let sha = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sha);
    bytes
}

/// Reads a backup file's bytes, checking its frame and checksums.
pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
    if !bytes.starts_with(MAGIC) {
        return Err(BackupError::NotABackup);
    }
    let cut_short = || BackupError::Damaged("it is cut short".into());
    if bytes.len() % BLOCK != SHA256_BYTES {
        return Err(cut_short());
    }
    let (padded, sha) = bytes.split_at(bytes.len() - SHA256_BYTES);
    if Sha256::digest(padded).as_slice() != sha {
        return Err(BackupError::Damaged(
            "its SHA-256 does not match (cut short or changed)".into(),
        ));
    }
    let mut dec = Decoder::new(&padded[MAGIC.len()..]);
    let damaged = |e: synod_core::codec::DecodeError| BackupError::Damaged(e.to_string());
    let version = dec.u64("version").map_err(damaged)?;
    if version > VERSION {
        return Err(BackupError::Version(version));
    }
    let revision = dec.i64("revision").map_err(damaged)?;
    let applied_index = dec.u64("applied index").map_err(damaged)?;
    let state = Bytes::copy_from_slice(dec.bytes("state").map_err(damaged)?);
    let framed = MAGIC.len() + dec.offset();
    let crc = padded.get(framed..framed + 4).ok_or_else(cut_short)?;
    if crc32c::crc32c(&padded[..framed]) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(BackupError::Damaged("its checksum does not match".into()));
    }
    if padded[framed + 4..].iter().any(|&b| b != 0) {
        return Err(BackupError::Damaged("its padding is not zeros".into()));
    }
    let store = KvStore::restore(&state).map_err(damaged)?;
    if store.revision() != revision || store.applied_index() != applied_index {
        return Err(BackupError::Damaged(
            "its header and its state disagree".into(),
        ));
    }
    Ok(Backup {
        revision,
        applied_index,
        store,
        state,
    })
}

/// Makes `data_dir` (which must be empty or absent) the data directory of a member running
/// `protocol` that starts from `backup`.
pub fn restore(backup: Backup, data_dir: &Path, protocol: &str) -> Result<(), BackupError> {
    let shown = data_dir.display().to_string();
    if std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(BackupError::NotEmpty(shown));
    }
    let mut data = RealDir::open(data_dir)?;
    let (mut stores, recovered) =
        open_node_stores(&mut data, protocol, &StorageOptions::default())?;
    if recovered.snapshot.is_some() || !recovered.entries.is_empty() {
        return Err(BackupError::NotEmpty(shown));
    }
    // The old cluster's lease epoch and alarms mean nothing to the new one.
    let mut store = backup.store;
    store.start_new_cluster();
    // Era 0: the restored cluster's first leader starts the first era after it.
    // The new cluster's membership is the one it boots with (`--initial-cluster`), as in
    // etcd's restore: the old cluster's members are not in a backup.
    let snapshot = Snapshot {
        membership: None,
        meta: SnapshotMeta {
            index: backup.applied_index,
            era: 0,
        },
        data: store.snapshot().into(),
    };
    save_snapshot(&mut stores.log, &mut stores.snapshots, &snapshot)?;
    stores.log.sync()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail loudly on purpose

    use super::*;
    use synod_kv::{PutRequest, Request};

    fn store() -> KvStore {
        let mut store = KvStore::new();
        for i in 0..20 {
            let put = Request::Put(PutRequest {
                key: Bytes::from(format!("k{i}")),
                value: Bytes::from(vec![b'v'; i * 10]),
                ..Default::default()
            });
            store.execute(&put).unwrap();
        }
        store
    }

    #[test]
    fn a_backup_reads_back_as_the_store_it_was() {
        let store = store();
        let backup = decode(&encode(&store)).unwrap();
        assert_eq!(backup.revision, store.revision());
        assert_eq!(backup.store.snapshot(), store.snapshot());
    }

    #[test]
    fn damaged_truncated_and_foreign_files_are_refused() {
        let bytes = encode(&store());
        assert_eq!(bytes.len() % 512, 32, "etcd's client checks this");
        for cut in [
            0,
            5,
            MAGIC.len(),
            MAGIC.len() + 3,
            bytes.len() / 2,
            bytes.len() - 1,
        ] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for flip in [MAGIC.len() + 1, bytes.len() / 2, bytes.len() - 2] {
            let mut damaged = bytes.clone();
            damaged[flip] ^= 0x10;
            assert!(
                matches!(decode(&damaged), Err(BackupError::Damaged(_))),
                "flip at {flip}"
            );
            // A flip that comes with a fixed-up SHA-256 is still caught by the CRC.
            let sha_at = damaged.len() - 32;
            let sha = Sha256::digest(&damaged[..sha_at]);
            damaged[sha_at..].copy_from_slice(&sha);
            if flip < sha_at {
                assert!(
                    decode(&damaged).is_err(),
                    "flip at {flip} with a new SHA-256"
                );
            }
        }
        let bolt = [0u8; 4096];
        assert!(matches!(decode(&bolt), Err(BackupError::NotABackup)));
    }

    #[test]
    fn restore_writes_a_data_directory_only_once() {
        let dir = std::env::temp_dir().join(format!("synod-restore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let backup = decode(&encode(&store())).unwrap();
        let (index, revision) = (backup.applied_index, backup.revision);
        restore(backup, &dir, "raft").unwrap();
        let mut data = RealDir::open(&dir).unwrap();
        let (_, recovered) =
            open_node_stores(&mut data, "raft", &StorageOptions::default()).unwrap();
        let snapshot = recovered.snapshot.unwrap();
        assert_eq!(snapshot.meta.index, index);
        let restored = KvStore::restore(&snapshot.data).unwrap();
        assert_eq!(restored.revision(), revision);
        assert_eq!(restored.lease_epoch(), 0);
        assert!(matches!(
            restore(decode(&encode(&store())).unwrap(), &dir, "raft"),
            Err(BackupError::NotEmpty(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
