//! What gossip nodes say to each other.

use std::fmt;

use bytes::Bytes;
use synod_core::{KeySpan, Membership, NodeId, RequestId};

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
        /// The membership changes the sender holds as agreed (filled in by the engine): a
        /// peer that holds more sends it the newer membership.
        epoch: u64,
        /// Whether the sender finds itself in the membership it holds (filled in by the
        /// engine): a member that does not (it joined knowing nobody) is sent the membership.
        listed: bool,
        /// Failure detector news.
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
        /// As in `Ping`.
        epoch: u64,
        /// As in `Ping`.
        listed: bool,
        /// Failure detector news.
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
    /// Membership agreement, phase 1: promise to take no lower ballot for the change after
    /// `epoch`, and say what you accepted for it.
    Prepare {
        /// The changes agreed so far, as the proposer holds them.
        epoch: u64,
        /// The proposer's ballot (0: a proposer back from an empty disk asks what was
        /// promised; see membership.rs).
        ballot: u64,
        /// Echoed in the answer, so that a proposer asking under ballot 0 counts only answers
        /// to this question (random then, 0 otherwise).
        nonce: u64,
    },
    /// The answer to a `Prepare`: promised.
    Promise {
        /// As in the `Prepare`.
        epoch: u64,
        /// As in the `Prepare`.
        ballot: u64,
        /// As in the `Prepare`.
        nonce: u64,
        /// What this voter accepted for the change after `epoch`, if anything.
        accepted: Option<Candidate>,
    },
    /// Membership agreement, phase 2: accept this membership as the one after `epoch`.
    Accept {
        /// As in the `Prepare`.
        epoch: u64,
        /// The value, under the proposer's ballot.
        candidate: Candidate,
    },
    /// The answer to an `Accept`: accepted (durably).
    Accepted {
        /// As in the `Accept`.
        epoch: u64,
        /// As in the `Accept`.
        ballot: u64,
        /// The request of the value accepted.
        id: RequestId,
    },
    /// A `Prepare` or `Accept` refused: this voter promised a higher ballot.
    Outbid {
        /// As in the refused message.
        epoch: u64,
        /// The ballot refused.
        refused: u64,
        /// The refused `Prepare`'s nonce (0 for an `Accept`).
        nonce: u64,
        /// The ballot promised.
        promised: u64,
    },
    /// The answer to a removed member's `Keys`: the buckets in which the receiver lacked
    /// nothing the removed member offered (it pulled what it lacked in the others, and holds
    /// everything it holds durably by the time this arrives).
    Held {
        /// The buckets.
        buckets: Vec<u16>,
    },
    /// The membership agreed after `epoch - 1` changes: sent to every member once agreed, and
    /// to any node heard holding fewer changes.
    Agreed {
        /// Changes agreed, this one included.
        epoch: u64,
        /// The operator's request that made the last change.
        id: RequestId,
        /// The membership.
        membership: Membership,
    },
}

/// A membership proposed as the one after some epoch, under a ballot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The ballot it was proposed (and accepted) under.
    pub ballot: u64,
    /// The operator's request it answers.
    pub id: RequestId,
    /// Every member after the change.
    pub membership: Membership,
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
            Message::Prepare { epoch, ballot, .. } => {
                write!(f, "Prepare epoch {epoch} ballot {ballot}")
            }
            Message::Promise {
                epoch,
                ballot,
                accepted,
                ..
            } => {
                write!(f, "Promise epoch {epoch} ballot {ballot}")?;
                if let Some(c) = accepted {
                    write!(f, " (accepted {} at {})", c.membership, c.ballot)?;
                }
                Ok(())
            }
            Message::Accept { epoch, candidate } => write!(
                f,
                "Accept epoch {epoch} ballot {}: {}",
                candidate.ballot, candidate.membership
            ),
            Message::Accepted { epoch, ballot, .. } => {
                write!(f, "Accepted epoch {epoch} ballot {ballot}")
            }
            Message::Outbid {
                epoch,
                refused,
                promised,
                ..
            } => write!(
                f,
                "Outbid epoch {epoch}: {refused} refused, promised {promised}"
            ),
            Message::Held { buckets } => write!(f, "Held {} buckets", buckets.len()),
            Message::Agreed {
                epoch, membership, ..
            } => write!(f, "Agreed epoch {epoch}: {membership}"),
        }
    }
}
