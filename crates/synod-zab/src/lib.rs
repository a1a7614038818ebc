//! ZAB, ZooKeeper's atomic broadcast (Junqueira, Reed and Serafini, "Zab: High-performance
//! broadcast for primary-backup systems", DSN 2011; Medeiros, "ZooKeeper's atomic broadcast
//! protocol: Theory and practice", 2012), as a pure state machine behind Synod's
//! [`Engine`](synod_core::Engine) contract.
//!
//! A node is looking (Fast Leader Election, `election`), following or leading; a leader
//! goes through discovery and synchronization before it broadcasts (`leader`, `follower`).
//! Epochs and zxids are the papers'. The liveness check runs the other way from Raft's:
//! followers ping the leader, and the leader abdicates when a quorum's pings stop.

mod config;
mod election;
mod follower;
mod leader;
mod membership;
mod message;
mod wire;
mod zab;

#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "inject-bugs"))]
pub use config::InjectedBugs;
pub use config::{Config, ConfigError};
pub use message::{Message, PeerState, Vote, Zxid};
pub use zab::{decode_hard_state, encode_hard_state, HardState, RestartError, Zab};
