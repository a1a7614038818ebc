//! The contract between a protocol engine and whatever drives it.
//!
//! An engine is a pure state machine. The runtime (the tokio node, or the simulator) feeds it
//! [`Input`]s one at a time and carries out the [`Action`]s it pushes, in order. The engine never
//! touches a socket, a file, a thread, the clock or ambient randomness: time is a count of
//! [`Input::Tick`]s and randomness comes from a PRNG seeded when the engine is built. So the
//! same inputs always give the same actions, which is what lets the simulator replay a run.
//!
//! The runtime keeps two promises that engines rely on:
//!
//! 1. **Persist before send.** A [`Action::Send`] pushed after an [`Action::Persist`] leaves
//!    the node only once that persist is durable. A vote, a promise or an acknowledgement is
//!    therefore never seen by a peer before it would survive a crash.
//! 2. **Completion in order.** Persists become durable in the order they were pushed, and the
//!    runtime reports each with [`Input::Persisted`] (a later id implies every earlier one).
//!
//! Everything that is not on the wire (ticks, client requests, persistence completions) is an
//! input variant of its own, never a message variant, so handlers never ask "is this local?".

use std::fmt::Debug;

use crate::entry::{Entry, Proposal};
use crate::ids::{LogIndex, NodeId, RequestId};
use crate::membership::{Membership, MembershipChange, MembershipRefusal};
use crate::snapshot::Snapshot;

/// A protocol engine: Raft, Basic or Multi-Paxos, ZAB, primary-backup, DNS-style, gossip.
pub trait Engine {
    /// Exactly what this engine puts on the wire between peers.
    type Message: Clone + Debug + Eq;

    /// Whether the engine orders every write in one history that every replica applies alike
    /// (consensus, primary-backup, DNS-style). A leaderless engine that merges concurrent
    /// writes by version instead (gossip) says `false`: each replica then applies changes in
    /// the order it learns of them, under indices of its own; its runtime keeps no sessions
    /// and no lease clocks, and answers a write only at [`Action::Acknowledge`].
    const ORDERS_WRITES: bool = true;

    /// Handles one input, pushing the resulting actions onto `out` in the order the runtime
    /// must carry them out. `out` may already hold actions; the engine only appends.
    fn step(&mut self, input: Input<Self::Message>, out: &mut Vec<Action<Self::Message>>);

    /// A snapshot of what this node currently believes, for clients, metrics and checkers.
    fn status(&self) -> Status;

    /// The membership in force here, for an engine whose membership changes through its log
    /// (the newest membership entry it holds, committed or not); `None` for one whose members
    /// are fixed at boot. The runtime connects to whoever is in it. It changes only in a step
    /// of [`Input::Receive`], [`Input::ChangeMembership`] or [`Input::Persisted`] (a Paxos
    /// leader's own acceptance can decide a slot), after each of which the runtime looks.
    fn membership(&self) -> Option<&Membership> {
        None
    }

    /// The membership as of `index`, an index this node applied and has not compacted: what
    /// a snapshot through `index` must record. `None` as for [`Engine::membership`].
    fn membership_at(&self, _index: LogIndex) -> Option<Membership> {
        None
    }

    /// Whether a snapshot through `index` may be taken now. An engine whose membership
    /// changes take effect some entries after they are decided refuses one that would fall
    /// between the two: a snapshot records one membership, the one in force after it.
    fn may_snapshot_at(&self, _index: LogIndex) -> bool {
        true
    }

    /// Whether this node, removed from the membership, still holds what the members may
    /// lack and must hand it over before it stops. A leaderless engine's removed member may
    /// hold writes only it took (gossip); a member of one ordered history never does.
    fn owes_handover(&self) -> bool {
        false
    }

    /// The timer after which this node acts on its own if it hears nothing (stands for
    /// election, suspects its leader), for viewers and metrics: `None` while none runs (a
    /// leader, or an engine without one).
    fn election_timer(&self) -> Option<ElectionTimer> {
        None
    }
}

/// How far a node's election timer has run, in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionTimer {
    /// Ticks since it last heard from a leader (or since its last election began).
    pub elapsed: u64,
    /// Ticks after which it acts.
    pub timeout: u64,
}

/// Something that happened to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<M> {
    /// One unit of logical time passed. Timeouts are counted in ticks.
    Tick,
    /// A peer's message arrived.
    Receive {
        /// The peer that sent it.
        from: NodeId,
        /// The message.
        message: M,
    },
    /// Client commands to order, in arrival order. A runtime hands over everything that
    /// arrived since its last step as one batch, so the engine can ship it in one append.
    Propose(Vec<Proposal>),
    /// Reads waiting for a point at which the local state machine may answer them. One
    /// confirmation round with the peers covers the whole batch.
    Read(Vec<ReadRequest>),
    /// Every persist up to and including this one is durable.
    Persisted(PersistId),
    /// The runtime saved a snapshot of the state machine, durably, covering the log through
    /// `meta.index` (an entry this node applied). The engine may drop that log prefix from
    /// memory and send the snapshot to peers that need entries it no longer has.
    Snapshotted(Snapshot),
    /// An operator asks the leader to hand leadership to `to` (Raft thesis 3.10). Engines
    /// without leaders, or not leading, ignore it.
    TransferLeadership {
        /// The node that should lead next.
        to: NodeId,
    },
    /// An operator asks to change the membership. The leader orders it as a log entry
    /// ([`crate::Payload::Membership`]) answered as it applies, or refuses it with
    /// [`Rejection::Membership`]; an engine that cannot change its membership refuses it with
    /// [`Rejection::Unsupported`].
    ChangeMembership {
        /// Routes the answer back.
        id: RequestId,
        /// What to change.
        change: MembershipChange,
    },
}

/// Something the runtime must do for the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<M> {
    /// Make this durable. Sends pushed after it wait until it is.
    Persist(Persist),
    /// Deliver a message to a peer. Delivery is best effort: engines tolerate loss,
    /// duplication and reordering.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        message: M,
    },
    /// This entry is committed: apply it to the state machine. Entries come in log order,
    /// each exactly once per engine lifetime, starting after the last one applied.
    Apply(Entry),
    /// Replace the state machine with this snapshot (received from a peer). The next `Apply`
    /// continues from `meta.index + 1`.
    Restore(Snapshot),
    /// The state machine, as of the entries applied so far, may answer this read.
    ReadReady(RequestId),
    /// The write with this id, applied here already, is now on as many replicas as its
    /// consistency level asks: answer its client. Only engines that do not order writes
    /// ([`Engine::ORDERS_WRITES`] false) push it; the others' writes are answered as they
    /// apply.
    Acknowledge(RequestId),
    /// This request was not accepted. For a proposal this is definite (the command was not
    /// put into the log by this node, so a retry cannot apply it twice), except for
    /// [`Rejection::Unavailable`] with `written` set.
    Reject {
        /// The refused request.
        id: RequestId,
        /// Why, with what the client needs to retry elsewhere.
        reason: Rejection,
    },
}

/// Identifies one [`Action::Persist`]; increases by one with every persist of an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistId(pub u64);

/// State to make durable, applied in field order: snapshot, hard state, journal, truncation,
/// append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persist {
    /// Reported back in [`Input::Persisted`] once durable.
    pub id: PersistId,
    /// A snapshot received from a peer, to store; the log is compacted through its index
    /// (entries after it stay unless `truncate_from` removes them).
    pub snapshot: Option<Snapshot>,
    /// The engine's small persistent state (Raft's term and vote, a Paxos acceptor's promise,
    /// ZAB's epochs), encoded by the engine. Replaces the previous value as a whole, and
    /// discards every journal record written before it.
    pub hard_state: Option<Vec<u8>>,
    /// Changes to the engine's persistent state, encoded by the engine, appended after the
    /// hard state. A restart hands back the hard state and the journal records written since
    /// it, in order. An engine whose persistent state is large (a Paxos acceptor holding the
    /// values it accepted) journals each change and restates the whole as a hard state only
    /// now and then, so a persist costs what changed, not what is held.
    pub journal: Vec<Vec<u8>>,
    /// Remove every log entry at this index or later before appending.
    pub truncate_from: Option<LogIndex>,
    /// Entries to append, contiguous, starting right after the last entry kept.
    pub entries: Vec<Entry>,
}

/// A read a client wants answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Routes the answer back.
    pub id: RequestId,
    /// What the read may return.
    pub consistency: ReadConsistency,
    /// The keys it reads, when the client said (`None`: any key). Engines that confirm a
    /// read as a whole ignore it; a leaderless engine asks its peers for these keys only.
    pub keys: Option<KeySpan>,
}

/// Keys a read covers, with etcd's conventions: an empty `range_end` means the single key
/// `key`; `range_end == [0]` means every key from `key` on; otherwise `[key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySpan {
    /// The first key.
    pub key: bytes::Bytes,
    /// The end, exclusive, with the conventions above.
    pub range_end: bytes::Bytes,
}

impl KeySpan {
    /// Every key.
    pub fn all() -> KeySpan {
        KeySpan {
            key: bytes::Bytes::from_static(&[0]),
            range_end: bytes::Bytes::from_static(&[0]),
        }
    }

    /// Whether `key` falls in the span.
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return key == &self.key[..];
        }
        key >= &self.key[..] && (self.range_end[..] == [0] || key < &self.range_end[..])
    }
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Reflects every write that completed before the read started (etcd's default).
    Linearizable,
    /// Whatever this node has applied; may be stale, never goes to the network.
    Serializable,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// This node does not lead. `leader_hint` is where the client should try next.
    NotLeader {
        /// The leader this node believes in, if any.
        leader_hint: Option<NodeId>,
    },
    /// The engine cannot run this kind of request at all (a transaction with compares, a
    /// lease, under a model without consensus); the reason says why, for the client.
    Unsupported(&'static str),
    /// A membership change that cannot be made now, or at all.
    Membership(MembershipRefusal),
    /// Fewer replicas answered than the request's consistency level needs. With `written`
    /// clear the request had no effect; with it set, a write was taken by some replicas and
    /// may still spread to all (as etcd's "request timed out": its outcome is unknown).
    Unavailable {
        /// Replicas that answered, this one included.
        reached: u32,
        /// Replicas the consistency level needs.
        needed: u32,
        /// Whether the write was taken (and may still spread).
        written: bool,
    },
}

/// What a node currently believes about itself and the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// The leader it follows, or itself when leading.
    pub leader: Option<NodeId>,
    /// The current leadership period in the engine's own terms (Raft term, ballot, epoch).
    pub era: u64,
    /// Highest log index known committed here.
    pub commit_index: LogIndex,
    /// Highest log index present here.
    pub last_index: LogIndex,
}

impl Status {
    /// The node that orders this node's writes: the leader, or, under a protocol without one
    /// (`Role::Peer`, every node proposes), this node itself. `None` while no leader is known.
    pub fn proposer(&self) -> Option<NodeId> {
        match self.role {
            Role::Peer => Some(self.id),
            _ => self.leader,
        }
    }

    /// The leader, when it is another node: the one to hand writes and changes to.
    pub fn leader_elsewhere(&self) -> Option<NodeId> {
        self.leader.filter(|&leader| leader != self.id)
    }
}

/// The part a node plays at the moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Follows a leader, or waits for one.
    Follower,
    /// Asks peers whether an election could succeed, without disturbing them (Raft pre-vote).
    PreCandidate,
    /// Runs for leader.
    Candidate,
    /// Orders commands for the cluster.
    Leader,
    /// No stable leader by design (Basic Paxos, gossip): every node proposes.
    Peer,
    /// Keeps a copy of a primary's data and answers reads from it, however stale, without
    /// asking anyone (a DNS secondary); writes go to the primary, its `leader`.
    Secondary,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
            Role::Peer => "peer",
            Role::Secondary => "secondary",
        };
        f.write_str(name)
    }
}
