//! A deterministic simulator for Synod clusters.
//!
//! One seed decides a whole run: network latency and loss, partitions, crashes, clock skew
//! and the client workload. The protocol engines, the key-value state machine and the
//! persistence rules are the same code the real server runs; only time, the network and the
//! disk are simulated, in one thread. While the run goes, the simulator checks the
//! protocol's safety properties; at the end it checks that replicas converged and that what
//! clients saw is linearizable.

mod client;
mod disk;
mod dns;
pub mod experiments;
mod faults;
mod freshness;
mod gossip;
mod intervention;
mod lease;
mod membership;
mod nemesis;
mod network;
mod node;
mod paxos;
mod primary_backup;
mod protocol;
mod raft;
mod report;
mod run;
pub mod scenario;
mod sweep;
mod timeline;
mod trace;
mod world;
mod zab;

pub use disk::{SimDir, Unsynced};
pub use dns::DnsInvariants;
pub use faults::{FaultSet, NAMES as FAULT_NAMES};
pub use gossip::{GossipInvariants, Versions};
pub use intervention::{Action, Intervention};
pub use paxos::{PaxosInvariants, PaxosNode};
pub use primary_backup::PrimaryBackupInvariants;
pub use protocol::{Invariants, Protocol};
pub use raft::{LogEngine, LogInvariants, RaftInvariants};
pub use report::{percentile, RunReport, Stats, Summary, Violation, ViolationKind};
pub use run::{replay_command, report_panics_quietly, run, RunConfig, RunOutcome};
pub use sweep::sweep;
pub use synod_replica::{
    DnsOptions, GossipOptions, PaxosOptions, PrimaryBackupOptions, RaftOptions, Recovered,
    ZabOptions,
};
pub use world::{World, SPARE_NODES};
pub use zab::ZabInvariants;

/// Virtual time, in microseconds.
pub type SimTime = u64;

/// One tick of a node's clock, nominally: 10 ms, as in `synod server`.
pub const TICK_US: SimTime = 10_000;
