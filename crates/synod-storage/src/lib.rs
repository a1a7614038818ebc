//! Durable storage for Synod: a log store and a snapshot store, kept apart, each with a
//! contract saying what a caller may rely on after a call returns and after a crash.
//!
//! The file implementations ([`FileLog`], [`FileSnapshots`]) run on a [`Dir`], so the
//! simulator runs the same code, byte for byte, on a disk that loses unsynced writes, tears
//! the last one and flips bits. The in-memory ones ([`MemLog`], [`MemSnapshots`]) have the
//! same crash semantics. [`conformance`] is the one suite they all pass.

mod bugs;
pub mod conformance;
mod dir;
mod error;
mod log;
mod mem;
mod node;
pub mod record;
mod snapshot;
pub mod wal;

pub use bugs::InjectedBugs;
pub use dir::{Dir, RealDir};
pub use error::{Result, StorageError};
pub use log::{
    recover, save_snapshot, write_persist, write_persist_to_log, LogState, LogStore, Restored,
};
pub use mem::{MemLog, MemSnapshots};
pub use node::{
    open_node_stores, NodeStores, Recovered, StorageOptions, PROTOCOL_FILE, SNAP_DIR, WAL_DIR,
};
pub use snapshot::{FileSnapshots, SnapshotStore, SNAPSHOT_CHUNK_BYTES};
pub use wal::{FileLog, TornTail, WalOptions};
