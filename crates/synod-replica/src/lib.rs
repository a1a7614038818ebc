//! What the server and the simulator share above the engines: how each protocol boots from
//! what a data directory holds, with the same settings in both.
//!
//! The server is an IO shell around this crate (tokio, sockets, files, the wall clock) and the
//! simulator is another (virtual time, its network and disks); what lives here runs under
//! both, so every seed of the simulator tests it.

mod protocol;

pub use protocol::{has_leader, Boot, PaxosOptions, Protocol, RaftOptions, Timing, PROTOCOL_NAMES};
pub use synod_storage::Recovered;
