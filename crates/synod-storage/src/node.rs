//! What every runtime does first: open a node's data directory and read back what it holds.
//! The server and the simulator both start here, so the simulator's crashes test the same
//! directory handling the server runs.

use synod_core::{Entry, Snapshot};

use crate::dir::Dir;
use crate::error::{Result, StorageError};
use crate::log::recover;
use crate::snapshot::{FileSnapshots, SnapshotStore, SNAPSHOT_CHUNK_BYTES};
use crate::wal::{FileLog, WalOptions};

/// The log's directory, inside a node's data directory.
pub const WAL_DIR: &str = "wal";
/// The snapshots' directory, inside a node's data directory.
pub const SNAP_DIR: &str = "snap";

/// The file, inside a node's data directory, naming the protocol that wrote it.
pub const PROTOCOL_FILE: &str = "protocol";
/// The protocol of a data directory that holds data but no [`PROTOCOL_FILE`]: Raft was the
/// only protocol the server ran before the file was introduced.
const PROTOCOL_BEFORE_THE_FILE: &str = "raft";

/// How a node's stores are set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// The log's settings.
    pub wal: WalOptions,
    /// Snapshots kept on disk.
    pub snapshots_kept: usize,
    /// Bytes of snapshot data per record in a snapshot file.
    pub snapshot_chunk_bytes: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            wal: WalOptions::default(),
            snapshots_kept: 2,
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES,
        }
    }
}

/// What a node finds in its data directory when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The engine's hard state.
    pub hard_state: Option<Vec<u8>>,
    /// The engine's journal records written after that hard state, oldest first.
    pub journal: Vec<Vec<u8>>,
    /// The newest snapshot.
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot.
    pub entries: Vec<Entry>,
    /// Torn writes cut off while opening the log, one line each, for the operator's log.
    pub repairs: Vec<String>,
}

/// A node's log and snapshot store, open.
#[derive(Debug)]
pub struct NodeStores<D: Dir> {
    /// The write-ahead log.
    pub log: FileLog<D>,
    /// The snapshots.
    pub snapshots: FileSnapshots<D>,
}

/// Opens a node's stores in its data directory `data`, and reads back what they hold.
///
/// `wal/` and `snap/` are created on the first start and made durable in the data directory
/// before anything is written into them (at every start, in case the first one stopped
/// before): otherwise a power loss soon after could take a whole log with it, and the node
/// would come back at term 0 having voted. Then the newest snapshot,
/// and the log after it, made to agree with it (see [`recover`]). Any damage is an error
/// naming the file: a node must not start on a disk it cannot trust. So is a directory written
/// by another `protocol` than this one (its name is recorded on the first start).
pub fn open_node_stores<D: Dir>(
    data: &mut D,
    protocol: &str,
    options: &StorageOptions,
) -> Result<(NodeStores<D>, Recovered)> {
    let wal_dir = data.subdir(WAL_DIR)?;
    let snap_dir = data.subdir(SNAP_DIR)?;
    if !skip_directory_sync(options) {
        data.sync_dir()?;
    }
    let snapshots = FileSnapshots::open(snap_dir, options.snapshots_kept)?
        .with_chunk_bytes(options.snapshot_chunk_bytes);
    let snapshot = snapshots.latest()?;
    let (mut log, state) = FileLog::open(wal_dir, options.wal)?;
    let repairs = state.repairs.clone();
    let restored = recover(&mut log, state, snapshot.as_ref().map(|s| s.meta))?;
    let recovered = Recovered {
        hard_state: restored.hard_state,
        journal: restored.journal,
        snapshot,
        entries: restored.entries,
        repairs,
    };
    check_protocol(data, protocol, &recovered, options)?;
    Ok((NodeStores { log, snapshots }, recovered))
}

/// Refuses a data directory that another protocol wrote; records `protocol` in one that
/// names none yet (durably, before the engine writes anything under it).
fn check_protocol<D: Dir>(
    data: &mut D,
    protocol: &str,
    recovered: &Recovered,
    options: &StorageOptions,
) -> Result<()> {
    let has_file = data.list()?.iter().any(|name| name == PROTOCOL_FILE);
    let recorded = if has_file {
        let bytes = data.read(PROTOCOL_FILE)?;
        let name = std::str::from_utf8(&bytes)
            .ok()
            .map(str::trim)
            .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| StorageError::Corrupt {
                file: data.describe(PROTOCOL_FILE),
                offset: 0,
                reason: "not a protocol name".to_string(),
            })?;
        Some(name.to_string())
    } else {
        let holds_data = recovered.hard_state.is_some()
            || !recovered.journal.is_empty()
            || recovered.snapshot.is_some()
            || !recovered.entries.is_empty();
        holds_data.then(|| PROTOCOL_BEFORE_THE_FILE.to_string())
    };
    match recorded {
        Some(found) if found == protocol => {}
        Some(found) => {
            return Err(StorageError::WrongProtocol {
                dir: data.describe(""),
                found,
                wanted: protocol.to_string(),
            })
        }
        None => {}
    }
    if !has_file {
        let temp = format!("{PROTOCOL_FILE}.tmp");
        data.create(&temp)?;
        data.append(&temp, format!("{protocol}\n").as_bytes())?;
        data.sync(&temp)?;
        data.rename(&temp, PROTOCOL_FILE)?;
        if !skip_directory_sync(options) {
            data.sync_dir()?;
        }
    }
    Ok(())
}

fn skip_directory_sync(options: &StorageOptions) -> bool {
    #[cfg(feature = "inject-bugs")]
    if options.wal.bugs.skip_directory_sync {
        return true;
    }
    let _ = options;
    false
}
