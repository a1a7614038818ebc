//! What gossip nodes say to each other.

use std::fmt;

use bytes::Bytes;
use synod_core::{KeySpan, NodeId};

use crate::store::Record;
use crate::version::Version;

/// A member's state in one node's view (SWIM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared dead unless it refutes in time.
    Suspect,
    /// Confirmed failed (in this incarnation).
    Dead,
}

/// News of a member, piggybacked on SWIM messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    /// Whom it is about.
    pub member: NodeId,
    /// What it is held to be.
    pub state: MemberState,
    /// In which of its lives.
    pub incarnation: u64,
}

/// A gossip message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// SWIM: are you there? Answered with `Ack { seq }`.
    Ping {
        /// Matches the ack to the probe.
        seq: u64,
        /// The sender's hybrid logical clock (filled in by the engine).
        clock: u64,
        /// Whether that clock is above everything the sender ever issued (false while a
        /// member that started with nothing has not seen a synced peer's clock).
        synced: bool,
        /// Membership news.
        updates: Vec<Update>,
    },
    /// SWIM: here I am (or, relayed, `target` is there).
    Ack {
        /// The ping's sequence number.
        seq: u64,
        /// The sender's hybrid logical clock (filled in by the engine).
        clock: u64,
        /// As in `Ping`.
        synced: bool,
        /// Membership news.
        updates: Vec<Update>,
    },
    /// SWIM: please ping `target` for me and relay its ack.
    PingReq {
        /// The original ping's sequence number, for the relayed ack.
        seq: u64,
        /// The member to ping.
        target: NodeId,
        /// Membership news.
        updates: Vec<Update>,
    },
    /// Versions of keys: a new write spreading (epidemic push, hinted handoff, read repair,
    /// anti-entropy's transfers). With `ack`, the receiver acknowledges once they are durable.
    Push {
        /// The versions.
        records: Vec<Record>,
        /// A write round of the sender's, to acknowledge.
        ack: Option<u64>,
    },
    /// The records of a `Push` that asked for it are durable here.
    PushAck {
        /// The sender's write round.
        round: u64,
    },
    /// Anti-entropy, first step: the digest of every bucket of keys.
    Digest {
        /// One digest per bucket.
        digests: Vec<u64>,
    },
    /// Anti-entropy, second step: the keys and versions of buckets whose digests differ.
    Keys {
        /// (bucket, its keys and their versions).
        buckets: Vec<(u16, Vec<(Bytes, Version)>)>,
    },
    /// Anti-entropy, third step: send me your versions of these keys.
    Pull {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// A read at a consistency above ONE: your versions of these keys, please.
    ReadQuery {
        /// The reader's round.
        round: u64,
        /// The keys.
        span: KeySpan,
    },
    /// The versions asked for (tombstones included), as this node holds them.
    ReadReply {
        /// The reader's round.
        round: u64,
        /// The versions.
        records: Vec<Record>,
        /// Whether more keys were in the span than fit in one message.
        truncated: bool,
    },
}

/// Membership news as a trace shows it: ` [n3 suspect@2, n4 alive@1]`.
struct News<'a>(&'a [Update]);

impl fmt::Display for News<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str(" [")?;
        for (i, u) in self.0.iter().enumerate() {
            let state = match u.state {
                MemberState::Alive => "alive",
                MemberState::Suspect => "suspect",
                MemberState::Dead => "dead",
            };
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{} {state}@{}", u.member, u.incarnation)?;
        }
        f.write_str("]")
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Ping { seq, updates, .. } => write!(f, "Ping {seq}{}", News(updates)),
            Message::Ack { seq, updates, .. } => write!(f, "Ack {seq}{}", News(updates)),
            Message::PingReq { seq, target, .. } => write!(f, "PingReq {seq} for {target}"),
            Message::Push { records, ack } => {
                write!(f, "Push {} records", records.len())?;
                if let Some(round) = ack {
                    write!(f, " (ack round {round})")?;
                }
                Ok(())
            }
            Message::PushAck { round } => write!(f, "PushAck {round}"),
            Message::Digest { .. } => write!(f, "Digest"),
            Message::Keys { buckets } => write!(f, "Keys of {} buckets", buckets.len()),
            Message::Pull { keys } => write!(f, "Pull {} keys", keys.len()),
            Message::ReadQuery { round, .. } => write!(f, "ReadQuery {round}"),
            Message::ReadReply { round, records, .. } => {
                write!(f, "ReadReply {round}: {} records", records.len())
            }
        }
    }
}
