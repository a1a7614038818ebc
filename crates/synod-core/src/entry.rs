//! What a replicated log holds.

use std::fmt;

use bytes::Bytes;

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::ids::{LogIndex, RequestId};
use crate::membership::{Membership, MembershipChange};

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
    /// The cluster's whole membership from this entry on, replacing the one before. `id`
    /// is the operator's request that changed it, answered when the entry applies.
    Membership {
        /// The request that asked for the change.
        id: RequestId,
        /// Every member after the change.
        membership: Membership,
    },
    /// A membership change as proposed, not yet made: an engine whose slots are decided each
    /// on its own (Paxos) proposes the change, and makes it on the membership in force when
    /// the value joins its decided log, turning it into [`Payload::Membership`] there (or into
    /// a no-op, when the change is no longer valid), as etcd checks a change when it applies.
    /// It never reaches a state machine.
    MembershipChange {
        /// The request that asked for the change.
        id: RequestId,
        /// What to change.
        change: MembershipChange,
    },
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
            Payload::Noop
            | Payload::Marker(_)
            | Payload::Membership { .. }
            | Payload::MembershipChange { .. } => None,
        }
    }

    /// Bytes this entry occupies in memory and on the wire, roughly; used for batch limits.
    pub fn size_bytes(&self) -> usize {
        const HEADER_BYTES: usize = 32;
        HEADER_BYTES + self.payload.size_bytes()
    }
}

impl Payload {
    /// Bytes of the command it carries (0 for a no-op or a marker); used for batch limits.
    pub fn size_bytes(&self) -> usize {
        match self {
            Payload::Command(p) => p.command.len(),
            Payload::Membership { membership, .. } => 64 * membership.members.len(),
            Payload::MembershipChange { .. } => 64,
            Payload::Noop | Payload::Marker(_) => 0,
        }
    }
}

// Encoding. The tags are part of the log and wire formats: append new ones, never renumber.

impl Payload {
    /// Appends the payload's encoding.
    pub fn encode(&self, enc: &mut Encoder) {
        match self {
            Payload::Noop => {
                enc.u8(0);
            }
            Payload::Command(p) => {
                enc.u8(1).u64(p.id.client.0).u64(p.id.seq).bytes(&p.command);
            }
            Payload::Marker(token) => {
                enc.u8(2).u64(*token);
            }
            Payload::Membership { id, membership } => {
                enc.u8(3).u64(id.client.0).u64(id.seq);
                membership.encode(enc);
            }
            Payload::MembershipChange { id, change } => {
                enc.u8(4).u64(id.client.0).u64(id.seq);
                change.encode(enc);
            }
        }
    }

    /// Reads what [`Payload::encode`] wrote.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<Payload, DecodeError> {
        Ok(match dec.tag("payload", 5)? {
            0 => Payload::Noop,
            1 => Payload::Command(Proposal {
                id: RequestId::new(dec.u64("client")?, dec.u64("seq")?),
                command: dec.owned_bytes("command")?,
            }),
            2 => Payload::Marker(dec.u64("marker")?),
            3 => Payload::Membership {
                id: RequestId::new(dec.u64("client")?, dec.u64("seq")?),
                membership: Membership::decode(dec)?,
            },
            _ => Payload::MembershipChange {
                id: RequestId::new(dec.u64("client")?, dec.u64("seq")?),
                change: MembershipChange::decode(dec)?,
            },
        })
    }
}

impl Entry {
    /// Appends the entry's encoding: index, era, payload.
    pub fn encode(&self, enc: &mut Encoder) {
        enc.u64(self.index).u64(self.era);
        self.payload.encode(enc);
    }

    /// Reads what [`Entry::encode`] wrote.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<Entry, DecodeError> {
        Ok(Entry {
            index: dec.u64("index")?,
            era: dec.u64("era")?,
            payload: Payload::decode(dec)?,
        })
    }

    /// Appends a list of entries: their count, then each entry.
    pub fn encode_all(entries: &[Entry], enc: &mut Encoder) {
        enc.u64(entries.len() as u64);
        entries.iter().for_each(|e| e.encode(enc));
    }

    /// Reads what [`Entry::encode_all`] wrote.
    pub fn decode_all(dec: &mut Decoder<'_>) -> Result<Vec<Entry>, DecodeError> {
        (0..dec.count("entries")?)
            .map(|_| Entry::decode(dec))
            .collect()
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.payload {
            Payload::Noop => write!(f, "{}@{}:noop", self.index, self.era),
            Payload::Marker(token) => write!(f, "{}@{}:marker-{token:x}", self.index, self.era),
            Payload::Command(p) => write!(f, "{}@{}:{}", self.index, self.era, p.id),
            Payload::Membership { membership, .. } => {
                write!(f, "{}@{}:members{membership}", self.index, self.era)
            }
            Payload::MembershipChange { change, .. } => {
                write!(f, "{}@{}:change {change:?}", self.index, self.era)
            }
        }
    }
}
