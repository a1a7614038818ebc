//! Synod's replicated state machine: a key-value store with etcd's data model.
//!
//! Engines order opaque command bytes; this crate gives them meaning. A [`Request`] is encoded
//! into a log entry's command, and every replica that applies the same entries with
//! [`KvStore::apply`] reaches the same state, revision for revision. Reads that bypass the log
//! (Raft's ReadIndex) use [`KvStore::range`] once the engine says the read is ready; watches
//! read the history with [`KvStore::events_from`].

pub mod auth;
mod history;
mod request;
mod session;
mod snapshot;
mod store;

pub use history::{Event, EventKind};
pub use request::*;
pub use session::Sessions;
pub use store::{Applied, EntryOutcome, KvError, KvHash, KvStore, Lease, Leases};
