//! Synchronous primary-backup replication: the simplest strong model.
//!
//! One node, the **primary**, orders every write and acknowledges it only once **every**
//! backup holds it durably; reads are answered at the primary. There is no election. Who is
//! primary is part of the **view**, a number that grows with each failover and names its
//! primary in its low bits (as a Paxos ballot names its proposer), so two views never share a
//! primary by accident and every entry's era says which primary wrote it. The first view's
//! primary is the lowest member id.
//!
//! **Failover is by an operator** (etcd's MoveLeader, sent to any member that can reach the
//! new primary): the named node starts the next view with itself as primary, brings every
//! backup to its own history (it holds everything ever acknowledged, since an acknowledged
//! write is on every member) and only then takes writes. A backup that joined a view refuses
//! the older ones, so a deposed primary that is still running can never again collect an
//! acknowledgement from everyone: it cannot commit, and cannot confirm a read.
//!
//! The price is availability: while any member is down or cut off, writes and linearizable
//! reads wait. That is the choice this engine shows. Failing over automatically (a backup
//! that stops hearing the primary promotes itself, a primary that stops hearing a backup
//! carries on without it) would restore availability and split the brain; the switch
//! `InjectedBugs::automatic_failover` does exactly that, so the simulator can show the result.

mod config;
mod engine;
mod membership;
mod message;
mod wire;

#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "inject-bugs"))]
pub use config::InjectedBugs;
pub use config::{Config, ConfigError};
pub use engine::{
    decode_hard_state, decode_view, encode_hard_state, encode_view, PrimaryBackup, RestartError,
};
pub use message::{primary_of, Message};
