//! The shared vocabulary of Synod.
//!
//! Every protocol engine (`synod-raft`, and later Paxos, ZAB and gossip), the state machine,
//! the simulator and the networked node speak in these types. Nothing here does IO.

pub mod codec;
pub mod engine;
pub mod entry;
pub mod ids;
pub mod log;
pub mod membership;
pub mod persist;
pub mod quorum;
pub mod rng;
pub mod send_gate;
pub mod snapshot;
pub mod testing;
pub mod wire;

pub use engine::{
    Action, ElectionTimer, Engine, Input, KeySpan, Persist, PersistId, ReadConsistency,
    ReadRequest, Rejection, Role, Status,
};
pub use entry::{Command, Entry, Payload, Proposal};
pub use ids::{ClientId, LogIndex, NodeId, RequestId};
pub use log::Log;
pub use membership::{Member, Membership, MembershipChange, MembershipRefusal};
pub use persist::{Draft, PersistQueue};
pub use rng::Rng;
pub use send_gate::SendGate;
pub use snapshot::{Snapshot, SnapshotMeta};
pub use wire::Wire;
