//! Paxos behind Synod's [`Engine`](synod_core::Engine) contract: Basic Paxos, one
//! single-decree instance per log slot, and Multi-Paxos, a stable leader that skips phase 1 in
//! steady state. Both follow Lamport's "Paxos Made Simple" (2001); code comments cite its
//! sections and its numbered requirements (P1, P1a, P2, P2a, P2b, P2c).
//!
//! Every node is proposer, acceptor and learner. What an acceptor promised or accepted is
//! persisted before it answers, and a node's proposer hears its own acceptor only once the
//! answer is durable (see `core`).

mod acceptor;
mod ballot;
mod basic;
mod config;
mod core;
mod membership;
mod message;
mod multi;
mod wire;

#[cfg(test)]
mod tests;

pub use acceptor::{Acceptor, AcceptorEvent, SlotState};
pub use ballot::Ballot;
pub use basic::BasicPaxos;
#[cfg(any(test, feature = "inject-bugs"))]
pub use config::InjectedBugs;
pub use config::{Config, ConfigError};
pub use core::{same_decision, RestartError};
pub use message::*;
pub use multi::MultiPaxos;
