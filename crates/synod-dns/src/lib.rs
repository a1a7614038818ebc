//! DNS-style propagation: the simplest weak model, one writer and copies that lag.
//!
//! One node, the **primary** (the lowest voter of the membership in force, as a zone has one
//! master), takes every write, makes it durable, and stamps it with the next **serial**
//! (its log index). The other members are **secondaries**: each holds a copy of the primary's
//! data as of some serial and answers reads from that copy, however old, without asking
//! anyone. Secondaries never take writes of their own (a write sent to one is handed to the
//! primary by the runtime).
//!
//! Copies move as DNS zone transfers do (RFC 1995, RFC 1996, RFC 5936):
//!
//! - Every **refresh** interval a secondary asks the primary for what follows its serial (the
//!   SOA check and the transfer in one message); unanswered after the **retry** interval, it
//!   asks again.
//! - When its data changes, the primary sends every secondary a **NOTIFY** with the new
//!   serial, and a secondary behind it asks at once instead of waiting for the refresh.
//! - The primary answers with an **incremental transfer** (IXFR: the changes after the
//!   secondary's serial) when it still holds them and the gap is small, and with a **full
//!   transfer** (AXFR: its latest snapshot, in chunks the secondary pulls one by one)
//!   otherwise.
//!
//! Each life of the primary is an **era** (its count of boots, kept on its disk), and every
//! change carries the era it was made in: a change the primary had not made durable when it
//! crashed was never sent to anyone, and the next life may reuse its serial under a new era,
//! so an (era, serial) pair names one change everywhere.
//!
//! A secondary applies what it received only once it is durable, so its serial never goes
//! back, not even across a crash. What the model gives up is freshness: a read at a secondary
//! may miss every write since its last transfer, and a client that caches answers for their
//! TTL adds that much more. With the primary reachable and no message lost, an answer is stale
//! by at most the refresh interval plus the TTL (NOTIFY usually makes it far less); a
//! secondary cut off from the primary keeps answering from its copy, ever more stale. While
//! the primary is down, nobody takes writes.
//!
//! The membership changes as a zone's name servers do, through the primary's own changes;
//! removing the primary hands the zone to the next lowest voter once that one holds the
//! removal (see `membership.rs`).

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
pub use engine::{decode_era, encode_era, Dns, RestartError};
pub use message::Message;
