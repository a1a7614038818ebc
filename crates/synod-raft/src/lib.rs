//! Raft (Ongaro and Ousterhout, "In Search of an Understandable Consensus Algorithm",
//! 2014, and Ongaro's thesis, "Consensus: Bridging Theory and Practice", 2014) as a pure
//! state machine behind Synod's [`Engine`](synod_core::Engine) contract.
//!
//! Beyond the paper's core it has what production Raft needs: pre-vote (thesis 9.6),
//! check-quorum and vote leases (thesis 6.2, 4.2.3), fast log backtracking (paper 5.3),
//! pipelined and batched appends, ReadIndex reads (thesis 6.4), leadership transfer
//! (thesis 3.10), and log compaction with snapshots sent in chunks (paper section 7). Code comments cite the section each rule comes from.

mod config;
mod election;
mod membership;
mod message;
mod progress;
mod raft;
mod read_index;
mod replication;
mod snapshot;
mod transfer;
mod wire;

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "inject-bugs"))]
pub use config::InjectedBugs;
pub use config::{Config, ConfigError};
pub use message::*;
pub use progress::{Mode, Progress};
pub use raft::{decode_hard_state, encode_hard_state, Raft, RestartError};
