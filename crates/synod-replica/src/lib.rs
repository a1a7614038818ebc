//! What the server and the simulator share above the engines: how each protocol boots from
//! what a data directory holds, and the replica that drives the engine and its key-value
//! store between the clients and the peers.
//!
//! The server is an IO shell around this crate (tokio, sockets, files, the wall clock) and the
//! simulator is another (virtual time, its network and disks); what lives here runs under
//! both, so every seed of the simulator tests it.

mod keeper;
mod lease;
mod peer;
mod protocol;
mod replica;

pub use keeper::can_keep;
pub use lease::LeaseBugs;
pub use peer::PeerMessage;
pub use protocol::{
    fails_over_by_operator, has_consensus, has_leader, is_linearizable, moves_leadership, Boot,
    DnsOptions, GossipOptions, PaxosOptions, PrimaryBackupOptions, Protocol, RaftOptions, Timing,
    ZabOptions, PROTOCOL_NAMES,
};
pub use replica::{
    boot_store, Answer, Attributes, Call, ClientCall, Output, Refusal, Replica, ReplicaOptions,
    Store, Waiter,
};
pub use synod_storage::Recovered;
