//! What Paxos nodes say to each other, in the words of "Paxos Made Simple" (Lamport, 2001).

use bytes::Bytes;
use synod_core::{Entry, Membership, Payload, RequestId, SnapshotMeta};

use crate::ballot::Ballot;

/// A position in the replicated log: each slot is decided by its own instance of consensus.
pub type Slot = u64;

/// A value an acceptor accepted: the slot, the ballot, the value.
pub type AcceptedValue = (Slot, Ballot, Payload);

/// Every message between Paxos nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Phase 1a: promise not to accept ballots below this one (for one slot, or for every
    /// slot from `slot` on).
    Prepare(Prepare),
    /// Phase 1b: the promise, with the highest-ballot values accepted in the slots asked about.
    Promise(Promise),
    /// Phase 2a: accept these values under this ballot.
    Accept(Accept),
    /// Phase 2b: accepted.
    Accepted(Accepted),
    /// A Prepare or Accept refused: a higher ballot was promised.
    Nack(Nack),
    /// Learning: these slots are decided.
    Decided(Decided),
    /// A learner asks for decided slots it is missing.
    AskDecided(AskDecided),
    /// Multi-Paxos: the leader is alive, and how far decisions go.
    Heartbeat(Heartbeat),
    /// Multi-Paxos: answer to a heartbeat; confirms the leader's ballot for reads.
    HeartbeatAck(HeartbeatAck),
    /// A learner asks for the next chunk of a snapshot.
    SnapshotRequest(SnapshotRequest),
    /// A chunk of a snapshot, for a learner behind the sender's compacted log.
    SnapshotChunk(SnapshotChunk),
    /// Basic Paxos: a proposer asks what was decided in a slot it can no longer learn
    /// (compacted away), before it proposes its own value again.
    AskOutcome(AskOutcome),
    /// Basic Paxos: the answer.
    Outcome(Outcome),
    /// Multi-Paxos: the commit point moved; sent at once, so followers apply (and answer the
    /// clients whose writes they handed to the leader) without waiting for a heartbeat.
    /// Not answered.
    Commit(CommitNotice),
    /// Multi-Paxos: the leader hands its leadership to the receiver (etcd's MoveLeader): it
    /// should run phase 1 at once, as soon as it has learned every slot through `commit`.
    TimeoutNow(TimeoutNow),
}

impl Message {
    /// The message's name, for traces.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Prepare(_) => "Prepare",
            Message::Promise(_) => "Promise",
            Message::Accept(_) => "Accept",
            Message::Accepted(_) => "Accepted",
            Message::Nack(_) => "Nack",
            Message::Decided(_) => "Decided",
            Message::AskDecided(_) => "AskDecided",
            Message::Heartbeat(_) => "Heartbeat",
            Message::HeartbeatAck(_) => "HeartbeatAck",
            Message::SnapshotRequest(_) => "SnapshotRequest",
            Message::SnapshotChunk(_) => "SnapshotChunk",
            Message::AskOutcome(_) => "AskOutcome",
            Message::Outcome(_) => "Outcome",
            Message::Commit(_) => "Commit",
            Message::TimeoutNow(_) => "TimeoutNow",
        }
    }
}

/// Which slots a Prepare covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only `slot` (Basic Paxos: one instance per slot).
    One,
    /// `slot` and every slot after it (Multi-Paxos: one phase 1 for the whole future).
    Onward,
}

/// Phase 1a.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepare {
    /// The proposer's ballot.
    pub ballot: Ballot,
    /// The slot (or first slot) it concerns.
    pub slot: Slot,
    /// One slot, or all from it on.
    pub scope: Scope,
    /// Multi-Paxos: the candidate runs because the leader handed it the leadership, so
    /// members still following that leader promise it all the same.
    pub handover: bool,
}

/// Phase 1b.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promise {
    /// The ballot promised.
    pub ballot: Ballot,
    /// The slot (or first slot) the promise covers.
    pub slot: Slot,
    /// The scope of the Prepare answered.
    pub scope: Scope,
    /// For every slot covered that holds one: the value accepted with the highest ballot
    /// (decided values count, with the ballot that decided them).
    pub accepted: Vec<AcceptedValue>,
    /// Slots through here are decided at the acceptor and their values not listed: compacted
    /// into a snapshot, or (Multi-Paxos) more than one message should carry. The proposer
    /// catches up on them before it may lead.
    pub compacted_through: Slot,
}

/// Phase 2a, for one slot or a run of consecutive slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accept {
    /// The proposer's ballot.
    pub ballot: Ballot,
    /// The first slot.
    pub first: Slot,
    /// One value per slot from `first` on.
    pub values: Vec<Payload>,
    /// Multi-Paxos: every slot through here is decided (decisions piggybacked).
    pub commit: Slot,
}

/// Phase 2b.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The ballot accepted.
    pub ballot: Ballot,
    /// The first slot accepted.
    pub first: Slot,
    /// How many consecutive slots.
    pub count: u64,
}

/// A refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The ballot refused.
    pub ballot: Ballot,
    /// The slot concerned.
    pub slot: Slot,
    /// The higher ballot the acceptor promised; retry above it.
    pub promised: Ballot,
}

/// Decided slots, for learners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// The decided entries (slot in `index`, deciding ballot in `era`).
    pub entries: Vec<Entry>,
}

/// A learner's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AskDecided {
    /// The first slot wanted.
    pub from: Slot,
}

/// A proposer's question about a compacted slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AskOutcome {
    /// The slot.
    pub slot: Slot,
}

/// What was decided in a slot, as far as the answering node still knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotOutcome {
    /// This client command.
    Command(RequestId),
    /// A no-op or a read marker: no command.
    NoCommand,
    /// The node no longer knows (it restarted or installed a snapshot since).
    Unknown,
}

/// The answer to [`AskOutcome`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The slot asked about.
    pub slot: Slot,
    /// What was decided there.
    pub decided: SlotOutcome,
}

/// Multi-Paxos liveness and commit point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The leader's ballot.
    pub ballot: Ballot,
    /// Every slot through here is decided.
    pub commit: Slot,
    /// The newest read round; echoed back.
    pub read_round: u64,
}

/// The leader's commit point, between heartbeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitNotice {
    /// The leader's ballot.
    pub ballot: Ballot,
    /// Every slot through here is decided.
    pub commit: Slot,
}

/// A leader's hand-over to the member it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutNow {
    /// The ballot of the leader handing over.
    pub ballot: Ballot,
    /// The leader's commit point when it handed over: the receiver campaigns once it has
    /// learned this far, so its phase 1 need not catch up on what others compacted.
    pub commit: Slot,
}

/// Answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// The ballot acknowledged.
    pub ballot: Ballot,
    /// The read round answered.
    pub read_round: u64,
    /// The follower's decided log ends here (the leader promotes a learner only once it
    /// has nearly all of it).
    pub prefix: Slot,
}

/// A request for a snapshot chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// The snapshot wanted.
    pub meta: SnapshotMeta,
    /// The next byte wanted.
    pub offset: u64,
}

/// A chunk of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// Where this chunk starts.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// Whether this is the last chunk.
    pub done: bool,
    /// The last chunk: the membership the snapshot records.
    pub membership: Option<Membership>,
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Prepare(m) => {
                write!(f, "Prepare b{} slot {}{}", m.ballot, m.slot, scope(m.scope))
            }
            Message::Promise(m) => write!(
                f,
                "Promise b{} slot {}{} accepted={} compacted={}",
                m.ballot,
                m.slot,
                scope(m.scope),
                m.accepted.len(),
                m.compacted_through
            ),
            Message::Accept(m) => write!(
                f,
                "Accept b{} slots {}..{} commit {}",
                m.ballot,
                m.first,
                m.first + m.values.len() as u64,
                m.commit
            ),
            Message::Accepted(m) => write!(
                f,
                "Accepted b{} slots {}..{}",
                m.ballot,
                m.first,
                m.first + m.count
            ),
            Message::Nack(m) => write!(
                f,
                "Nack b{} slot {} promised b{}",
                m.ballot, m.slot, m.promised
            ),
            Message::Decided(m) => match (m.entries.first(), m.entries.last()) {
                (Some(a), Some(b)) => write!(f, "Decided {}..={}", a.index, b.index),
                _ => write!(f, "Decided none"),
            },
            Message::AskDecided(m) => write!(f, "AskDecided from {}", m.from),
            Message::Heartbeat(m) => write!(
                f,
                "Heartbeat b{} commit {} round {}",
                m.ballot, m.commit, m.read_round
            ),
            Message::Commit(m) => write!(f, "Commit b{} commit {}", m.ballot, m.commit),
            Message::TimeoutNow(m) => write!(f, "TimeoutNow b{} commit {}", m.ballot, m.commit),
            Message::HeartbeatAck(m) => {
                write!(f, "HeartbeatAck b{} round {}", m.ballot, m.read_round)
            }
            Message::SnapshotRequest(m) => write!(
                f,
                "SnapshotRequest through {} offset {}",
                m.meta.index, m.offset
            ),
            Message::SnapshotChunk(m) => write!(
                f,
                "SnapshotChunk through {} offset {} bytes {}{}",
                m.meta.index,
                m.offset,
                m.data.len(),
                if m.done { " done" } else { "" }
            ),
            Message::AskOutcome(m) => write!(f, "AskOutcome slot {}", m.slot),
            Message::Outcome(m) => match m.decided {
                SlotOutcome::Command(id) => write!(f, "Outcome slot {} command {id}", m.slot),
                SlotOutcome::NoCommand => write!(f, "Outcome slot {} no command", m.slot),
                SlotOutcome::Unknown => write!(f, "Outcome slot {} unknown", m.slot),
            },
        }
    }
}

fn scope(scope: Scope) -> &'static str {
    match scope {
        Scope::One => "",
        Scope::Onward => " onward",
    }
}
