//! Gossip: eventual consistency as in Cassandra (the available side of CAP).
//!
//! Every member holds every key, and **any member takes a write**, on whichever side of a
//! partition it is. A write gets a **version**: a hybrid logical clock reading and the
//! writer's id, packed so versions order totally. Each member keeps the newest version of
//! each key it has heard of; concurrent writes resolve **last writer wins** by version, so
//! members that have heard of the same versions hold the same data, whatever the order they
//! heard them in. A delete is a version without a value (a **tombstone**), kept so an older
//! value cannot come back; tombstones are forgotten only after a grace period, if one is set
//! (a member away longer than that may bring a deleted value back, as in Cassandra).
//!
//! Versions travel three ways:
//!
//! - **Epidemic push** (rumor mongering): a member that learns a new version pushes it to
//!   `fanout` random reachable peers every round, for a few rounds (about log n); with no
//!   loss, every member has it after O(log n) rounds.
//! - **Anti-entropy**: every so often a member sends a random peer the digest of each of
//!   256 buckets of keys; for buckets that differ they exchange keys and versions, and each
//!   sends the other only the versions it is missing. This repairs whatever pushes missed
//!   (loss, crashes, partitions), so replicas **converge** once the network heals.
//! - **Hinted handoff and read repair**: a write's coordinator keeps a hint for each peer it
//!   knows is down (or that did not acknowledge in time) and hands the versions over when
//!   the peer answers a probe again; a read at QUORUM or ALL sends the newest version it
//!   found to every replier that answered with an older one.
//!
//! Membership and failure detection are **SWIM** (`swim.rs`): probes, indirect probes,
//! suspicion, incarnations, news piggybacked on probes.
//!
//! **Consistency levels**, as Cassandra's, per node: a write is answered once ONE (this
//! member, durably), a QUORUM or ALL of the members hold it durably; a read asked as
//! linearizable consults the read level's number of members and returns the newest version
//! among them (a serializable read always reads ONE). QUORUM writes with QUORUM reads see
//! every acknowledged write, while members stay up; nothing here is linearizable, and with
//! ONE a read on the minority side of a partition returns whatever that side holds.
//!
//! What needs agreement is refused, with the reason: transactions with compares, leases,
//! compaction, puts that keep the current value.
//!
//! The engine keeps its versions in its hard state and journal (one record per change,
//! restated as a whole once the journal outgrows the last restatement), and applies each
//! change to the runtime's state machine under an index of its own, once durable. Indices
//! differ between members; the data they hold converges.

mod config;
mod engine;
mod membership;
mod message;
mod store;
mod swim;
mod version;
mod wire;

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "inject-bugs"))]
pub use config::InjectedBugs;
pub use config::{Config, ConfigError, Level};
pub use engine::{Gossip, RestartError};
pub use message::{Candidate, MemberState, Message, Update};
pub use store::{bucket_of, Held, Record, Store, BUCKETS};
pub use swim::{Swim, SwimTiming};
pub use version::{Hlc, Version, NODE_ID_MAX};
