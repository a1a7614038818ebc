//! What a replicated log holds.

use std::fmt;

use bytes::Bytes;

use crate::ids::{LogIndex, RequestId};

/// A client command: opaque bytes to the engines, decoded only by the state machine.
pub type Command = Bytes;

/// A command a client asked to replicate, tagged with its request id so the runtime can
/// route the result back and the state machine can deduplicate retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Who asked, and which of their requests this is.
    pub id: RequestId,
    /// The command itself.
    pub command: Command,
}

/// The content of a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// An entry with no effect on the state machine: Raft's first entry of a term (paper
    /// section 8), a Multi-Paxos leader's hole filler.
    Noop,
    /// A client command.
    Command(Proposal),
    /// An entry with no effect on the state machine, carrying a token unique to the node that
    /// proposed it, so that node can tell its own entry from anyone else's. Basic Paxos orders
    /// a read behind one: two no-ops are indistinguishable, two markers are not.
    Marker(u64),
}

/// One position of a replicated log.
///
/// `era` identifies the leadership period that created the entry: Raft's term, ZAB's epoch,
/// a Paxos ballot. Each engine gives it meaning; storage and runtimes only carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 1.
    pub index: LogIndex,
    /// The engine-specific leadership period that wrote the entry.
    pub era: u64,
    /// What the entry holds.
    pub payload: Payload,
}

impl Entry {
    /// The proposal carried by this entry, if it carries one.
    pub fn proposal(&self) -> Option<&Proposal> {
        match &self.payload {
            Payload::Command(p) => Some(p),
            Payload::Noop | Payload::Marker(_) => None,
        }
    }

    /// Bytes this entry occupies in memory and on the wire, roughly; used for batch limits.
    pub fn size_bytes(&self) -> usize {
        const HEADER_BYTES: usize = 32;
        HEADER_BYTES + self.proposal().map_or(0, |p| p.command.len())
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.payload {
            Payload::Noop => write!(f, "{}@{}:noop", self.index, self.era),
            Payload::Marker(token) => write!(f, "{}@{}:marker-{token:x}", self.index, self.era),
            Payload::Command(p) => write!(f, "{}@{}:{}", self.index, self.era, p.id),
        }
    }
}
