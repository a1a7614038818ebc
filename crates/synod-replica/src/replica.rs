//! One replica: an engine, the key-value store it drives, and everything between them and
//! the clients, with no IO of its own.
//!
//! The server (tokio, sockets, files, the wall clock) and the simulator (virtual time, its
//! network and disks) are two shells around this type. Each feeds it inputs (client calls,
//! peer messages, ticks, finished persists, saved snapshots) and carries out the outputs it
//! pushes, in order: persist, send, answer a waiting client, save a snapshot. What a client
//! can observe — which node answers, forwarding to the leader, refusals, read barriers,
//! lease clocks, snapshot scheduling — is decided here, so every seed of the simulator tests
//! the code the server runs.
//!
//! A follower takes writes and linearizable reads from its clients too: it hands writes to
//! the leader (`PeerMessage::Propose`, keeping the client's request id) and answers when it
//! applies the entry from its own log; it asks the leader for a read index and serves the
//! read once it has applied that far. A request that cannot reach the leader is refused
//! as "not the leader" at once, never left to time out. Membership changes travel the same
//! way (`PeerMessage::ChangeMembership`) and are answered as their entry applies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use synod_core::codec::DecodeError;
use synod_core::{
    Action, Engine, Entry, Input, KeySpan, Membership, MembershipChange, MembershipRefusal, NodeId,
    Payload, Persist, PersistId, Proposal, ReadConsistency, ReadRequest, Rejection, RequestId,
    Role, SendGate, Snapshot, SnapshotMeta, Status,
};
use synod_kv::{
    Applied, KvError, KvStore, LeaseEpochRequest, LeaseExpireRequest, LeaseRevokeRequest, Request,
    Response,
};
use thiserror::Error;

use crate::keeper::{self, KeeperWatch};
use crate::lease::{LeaseBugs, LeaseClocks};
use crate::peer::PeerMessage;

/// Why a protocol that orders no writes refuses every lease call.
pub const LEASES_NEED_CONSENSUS: &str =
    "no leases here: they need a clock the whole cluster agrees on, which only consensus gives";

/// Why a request got no answer from the state machine.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Refusal {
    /// This node does not lead and could not hand the request to a leader; the hint says
    /// who leads, if it knows. The request had no effect: try again (there).
    #[error("not the leader")]
    NotLeader(Option<NodeId>),
    /// The node is shutting down or its disk failed.
    #[error("server stopped")]
    Stopped,
    /// The request ran and failed, the same way on every replica.
    #[error("{0}")]
    Kv(KvError),
    /// The protocol cannot run this kind of request (a transaction or a lease under gossip);
    /// the reason says why. The request had no effect.
    #[error("not supported by this protocol: {0}")]
    Unsupported(&'static str),
    /// The request may or may not have taken effect, and this node cannot tell (its entry came
    /// inside a snapshot, which keeps no answers for it), as after a timeout.
    #[error("the outcome is unknown")]
    OutcomeUnknown,
    /// This node is a learner, which serves only serializable reads (as etcd's: "rpc not
    /// supported for learner"); the request had no effect: ask a voting member.
    #[error("rpc not supported for learner")]
    Learner,
    /// The membership change cannot be made (now); the request had no effect.
    #[error("{0}")]
    Membership(MembershipRefusal),
    /// Fewer replicas answered than the consistency level needs. With `written` the write
    /// was taken by some and may still spread to all: its outcome is unknown, as after a
    /// timeout; without, it had no effect.
    #[error("{reached} of the {needed} replicas the consistency level needs answered{}", if *written { "; the write was taken and may still spread" } else { "" })]
    Unavailable {
        /// Replicas that answered.
        reached: u32,
        /// Replicas needed.
        needed: u32,
        /// Whether a write was taken.
        written: bool,
    },
}

/// What a client asks of a replica.
#[derive(Clone, Debug)]
pub enum Call {
    /// A command for the log (an encoded [`Request`]); answered with [`Answer::Applied`].
    Write(Bytes),
    /// A read barrier: answered with [`Answer::Ready`] once the local store may serve a read
    /// of this consistency, of these keys (`None`: any).
    Read(ReadConsistency, Option<KeySpan>),
    /// Renew a lease (leader only); answered with [`Answer::Ttl`]: its TTL, or 0 if it is
    /// gone or its time is up.
    KeepAlive(i64),
    /// Seconds left on a lease by the leader's clock (leader only); [`Answer::Ttl`], -1 if
    /// the lease does not exist.
    TimeToLive(i64),
    /// Change the membership; answered with [`Answer::Membership`] once the change applies
    /// here.
    ChangeMembership(MembershipChange),
}

/// Whether a learner answers `call`: as etcd's learners, only serializable reads (they are
/// no faster to catch up than any follower, and clients should move to a voter for the
/// rest); and the one change a learner makes itself, publishing its own name.
fn learners_serve(call: &Call, me: NodeId) -> bool {
    match call {
        Call::Read(consistency, _) => *consistency == ReadConsistency::Serializable,
        Call::ChangeMembership(MembershipChange::Publish { id, .. }) => *id == me,
        _ => false,
    }
}

/// One client call, with the request id it goes by and what waits for the answer.
#[derive(Debug)]
pub struct ClientCall<W> {
    /// Unique per request; a retried write keeps its id, so the store applies it once.
    pub id: RequestId,
    /// Whatever the shell needs to answer: a channel, a simulated client.
    pub waiter: W,
    /// What is asked.
    pub call: Call,
}

/// The answer to a client call.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The write applied, with this result.
    Applied(Applied),
    /// The read may be served from the store now.
    Ready,
    /// A lease's TTL in seconds.
    Ttl(i64),
    /// The membership after the change asked for.
    Membership(Membership),
    /// No answer from the state machine.
    Refused(Refusal),
}

/// Something that waits for an answer.
pub trait Waiter {
    /// Whether nobody waits any more (the client went away), so the wait can be dropped.
    fn abandoned(&self) -> bool {
        false
    }
}

/// What the shell must do, in order.
#[derive(Debug)]
pub enum Output<M, W> {
    /// Write this durably, then call [`Replica::persisted`] with its id (in order).
    Persist(Persist),
    /// Send this to a peer. Sends leave only after the persists before them are durable:
    /// the replica holds them back until then.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        message: PeerMessage<M>,
    },
    /// Answer a client.
    Answer {
        /// Who waits.
        waiter: W,
        /// The answer.
        answer: Answer,
    },
    /// An entry was applied to the store (for checkers and traces).
    Applied {
        /// The entry.
        entry: Entry,
        /// Whether its command ran and succeeded; not for one refused (an expiry of a lease
        /// whose id was granted again meanwhile), a retry answered from its client's
        /// session, or an entry without a command.
        took_effect: bool,
    },
    /// The store was replaced by a snapshot from the leader.
    Restored(SnapshotMeta),
    /// The membership in force changed (a change was appended, cut off, or came with a
    /// snapshot): the shell connects to the members in it.
    Membership(Membership),
    /// A membership change applied here (it is committed): the shell may let go of members
    /// it removed, which until now still had to hear of their removal.
    MembershipApplied(Membership),
    /// Decode the store in this snapshot from the leader, off the applying path (it takes
    /// about a second per million keys), then call [`Replica::snapshot_loaded`]. Until then
    /// the replica applies nothing and answers nothing: what the engine decides meanwhile
    /// waits, in order, except its persists and sends, so this member goes on taking part in
    /// the protocol (acknowledging entries, voting, answering heartbeats) while it loads.
    LoadSnapshot(Snapshot),
    /// Save this copy of the store as a snapshot through `meta.index`, then call
    /// [`Replica::snapshot_saved`]. At most one is asked for at a time.
    SaveSnapshot {
        /// Its position.
        meta: SnapshotMeta,
        /// The membership as of `meta.index`, to save with it.
        membership: Option<Membership>,
        /// The store as applied through `meta.index` (keys and values shared, not copied).
        store: Box<KvStore>,
    },
}

/// A replica's settings.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// This node.
    pub id: NodeId,
    /// The other members.
    pub peers: Vec<NodeId>,
    /// The client id of requests the replica makes itself (lease expiry): one with the top
    /// bit set, so sessions do not track it, and different in every life of the node.
    pub own_client_id: u64,
    /// Snapshot the store after this many applied entries (0: never).
    pub snapshot_every: u64,
    /// One tick of this node's clock, in microseconds.
    pub tick_us: u64,
    /// An election timeout, in microseconds. A new leader gives every lease this long beyond
    /// its TTL; a keep-alive is answered only if the leadership round that confirmed it
    /// started at most half of it ago (a leader paused between the round and the answer may
    /// have been replaced meanwhile).
    pub election_timeout_us: u64,
    /// Lease rules broken on purpose (test builds only).
    pub lease_bugs: LeaseBugs,
    /// What this member says about itself, recorded in the membership through the log when
    /// the membership lacks it (see [`Replica::tick`]); `None`: nothing to say.
    pub attributes: Option<Attributes>,
}

/// A member's name and where clients reach it, as etcd members publish their attributes once
/// they run: a member that joined a running cluster is listed without them until it does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Its name (`--name`).
    pub name: String,
    /// Its client URLs.
    pub client_urls: Vec<String>,
}

/// The store, shared with whoever serves reads (the server's request handlers).
#[derive(Debug)]
pub struct Store(RwLock<KvStore>);

impl Store {
    /// The store, for reading; held briefly, as the replica applies under the write lock.
    pub fn read(&self) -> RwLockReadGuard<'_, KvStore> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, KvStore> {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A keep-alive waiting for its leadership round.
#[derive(Debug)]
struct KeepAlive<W> {
    waiter: W,
    lease: i64,
    era: u64,
    /// When the round started, by the lease clock.
    asked_at: u64,
}

/// A snapshot from the leader whose store the shell is decoding.
struct Loading<M> {
    meta: SnapshotMeta,
    /// Membership changes waiting when the snapshot came: their entries may be inside it.
    changes: Vec<RequestId>,
    /// The engine's actions since, other than persists and sends, in order.
    waiting: Vec<Action<M>>,
}

/// Bytes of commands in one `PeerMessage::Propose` a follower hands the leader, at most (one
/// command more when the message would be empty): far below the peer link's frame limit, so
/// a burst of large writes is never one message the link must drop.
const FORWARD_BYTES_MAX: usize = 4 << 20;

/// A snapshot waits until the commands applied since the last one add up to at least this
/// fraction of the store's size (`KvStore::size_bytes`, history included): writing the whole
/// store then costs at most this many times the bytes the log took meanwhile, and a restart
/// replays at most this fraction of the store on top of the snapshot.
const SNAPSHOT_LOG_SHARE: u64 = 4;

/// Stores smaller than this snapshot every `snapshot_every` entries whatever the share: their
/// snapshots are cheap, and an operator who asked for frequent ones gets them.
const SNAPSHOT_SHARE_FROM_BYTES: u64 = 64 << 20;

/// How often the leader looks for expired leases, in microseconds.
const LEASE_CHECK_EVERY_US: u64 = 250_000;

/// A member waits this long for its attributes to be recorded before it asks again: a leader
/// that fell before it logged the change, or whose entry the next leader cut, never answers.
const PUBLISH_PATIENCE_US: u64 = 10_000_000;

/// ... and this long after its ask was refused (no leader then, or another change under way).
const PUBLISH_RETRY_US: u64 = 1_000_000;

/// One replica. `E` is the engine, `W` what waits for an answer.
pub struct Replica<E: Engine, W> {
    engine: E,
    store: Arc<Store>,
    options: ReplicaOptions,
    /// Ticks since this life began.
    ticks: u64,
    /// The lease clocks' time: the shell's monotonic clock, in microseconds. It runs on
    /// while the process is paused, as a monotonic clock does.
    now: u64,
    next_seq: u64,
    /// Sends waiting for the persists before them (persist before send).
    sends: SendGate<E::Message>,
    writes: HashMap<RequestId, W>,
    reads: HashMap<RequestId, W>,
    keep_alives: HashMap<RequestId, KeepAlive<W>>,
    /// Follower: reads of ours a leader was asked to confirm, and which leader.
    reads_asked: HashMap<RequestId, NodeId>,
    /// Follower: confirmed reads waiting for this node to apply up to their index.
    reads_after_apply: BTreeMap<u64, Vec<RequestId>>,
    /// Leader: reads followers asked it to confirm, and who asked.
    reads_for_peers: HashMap<RequestId, NodeId>,
    /// Membership changes waiting for their entry to apply here.
    changes: HashMap<RequestId, W>,
    /// The membership in force as last told to the shell.
    membership: Option<Membership>,
    /// Leader: writes followers handed it, not yet applied or refused, and who handed each
    /// (a refusal can come steps later: Multi-Paxos queues writes beyond its in-flight bound
    /// and refuses them when it steps down). Emptied when this node stops leading.
    proposed_for: HashMap<RequestId, NodeId>,
    /// Without ordered writes (gossip): results of writes applied here, until the engine
    /// says enough replicas hold them (`Action::Acknowledge`).
    unacknowledged: HashMap<RequestId, Answer>,
    /// Leader: answers to followers gathered during a step, sent at its end.
    peer_ready: BTreeMap<NodeId, Vec<RequestId>>,
    peer_refused: BTreeMap<NodeId, Vec<RequestId>>,
    leases: LeaseClocks,
    /// The leader sweeps its lease clocks every this many ticks.
    lease_check_ticks: u64,
    /// Expiry revokes proposed and not yet applied or refused: the lease, and the era of
    /// the clocks that expired it.
    revokes: HashMap<RequestId, (i64, u64)>,
    /// Injected bug only: expiry revokes to submit as ordinary writes.
    revokes_to_retry: Vec<i64>,
    /// The era whose lease epoch this node last proposed.
    epoch_proposed: Option<u64>,
    /// Whether the engine has no leader (every node proposes): the lease clocks then have
    /// a keeper chosen through the log (`keeper.rs`).
    leaderless: bool,
    /// Leaderless: when the keeper was last heard from, and when to claim.
    keeper_watch: KeeperWatch,
    /// Leaderless: the eras this node claimed the lease clocks with, in this life (those
    /// not yet overtaken by the newest epoch applied).
    claims: BTreeSet<u64>,
    /// Era of the last entry applied, for snapshot metadata.
    applied_era: u64,
    snapshot_index: u64,
    snapshot_in_flight: bool,
    /// Bytes of commands applied since the last snapshot (taken or restored).
    applied_bytes: u64,
    /// A snapshot from the leader being decoded by the shell, and the engine's actions that
    /// wait for it (see [`Output::LoadSnapshot`]).
    loading: Option<Loading<E::Message>>,
    status: Status,
    actions: Vec<Action<E::Message>>,
    /// Set when the replica cannot go on without diverging (a snapshot that does not decode).
    fatal: Option<String>,
    /// This member's attributes on their way into the membership: the request, and when to
    /// ask again if they are not there by then.
    publishing: Option<(RequestId, u64)>,
}

impl<E: Engine, W: Waiter> Replica<E, W> {
    /// A replica around `engine`, with the store restored from the snapshot it booted from.
    pub fn new(engine: E, store: KvStore, snapshot_era: u64, options: ReplicaOptions) -> Self {
        let snapshot_index = store.applied_index();
        let election_ticks = options.election_timeout_us / options.tick_us.max(1);
        let mut store = store;
        if !E::ORDERS_WRITES {
            store.disable_sessions();
        }
        let membership = engine.membership().cloned();
        Replica {
            leaderless: engine.status().role == Role::Peer && E::ORDERS_WRITES,
            keeper_watch: KeeperWatch::new(options.id, election_ticks),
            claims: BTreeSet::new(),
            status: engine.status(),
            engine,
            store: Arc::new(Store(RwLock::new(store))),
            ticks: 0,
            now: 0,
            next_seq: 0,
            sends: SendGate::default(),
            writes: HashMap::new(),
            reads: HashMap::new(),
            keep_alives: HashMap::new(),
            reads_asked: HashMap::new(),
            reads_after_apply: BTreeMap::new(),
            reads_for_peers: HashMap::new(),
            changes: HashMap::new(),
            membership,
            proposed_for: HashMap::new(),
            unacknowledged: HashMap::new(),
            peer_ready: BTreeMap::new(),
            peer_refused: BTreeMap::new(),
            leases: LeaseClocks::new(options.election_timeout_us, options.lease_bugs),
            lease_check_ticks: (LEASE_CHECK_EVERY_US / options.tick_us.max(1)).max(1),
            revokes: HashMap::new(),
            revokes_to_retry: Vec::new(),
            epoch_proposed: None,
            applied_era: snapshot_era,
            snapshot_index,
            snapshot_in_flight: false,
            applied_bytes: 0,
            loading: None,
            actions: Vec::new(),
            fatal: None,
            publishing: None,
            options,
        }
    }

    /// The engine, for checkers.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The engine's status after the last input.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The membership in force, for an engine whose membership changes through its log.
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// Whether this node is a learner in the membership in force: it follows the log and
    /// serves serializable reads, and refuses every other call, as etcd's learners do.
    pub fn is_learner(&self) -> bool {
        self.membership
            .as_ref()
            .is_some_and(|m| m.is_learner(self.options.id))
    }

    /// Why the replica cannot go on, once; the shell stops it.
    pub fn take_fatal(&mut self) -> Option<String> {
        self.fatal.take()
    }

    /// Sends held back for persists, for a warning when the disk falls behind.
    pub fn sends_held(&self) -> usize {
        self.sends.held()
    }

    /// The time by the shell's monotonic clock, in microseconds; the shell sets it before
    /// every input (it never goes back).
    pub fn set_clock(&mut self, now_us: u64) {
        self.now = self.now.max(now_us);
    }

    /// A request id for a call of the shell's own (the server's clients carry none).
    pub fn next_request_id(&mut self) -> RequestId {
        self.next_seq += 1;
        RequestId::new(self.options.own_client_id, self.next_seq)
    }

    /// Client calls that arrived together: writes become one proposal (or one message to
    /// the leader), reads one leadership round.
    pub fn submit(&mut self, calls: Vec<ClientCall<W>>, out: &mut Vec<Output<E::Message, W>>) {
        let status = self.engine.status();
        // The era in which this node would answer lease calls: the one it leads in (its
        // epoch may still be on its way), or, without a leader, the epoch it keeps.
        let lease_era = if self.leaderless {
            self.keeping()
        } else {
            (status.role == Role::Leader).then_some(status.era)
        };
        // Another node leads: hand it the writes and ask it to confirm the reads. Otherwise
        // the engine takes them (and refuses them if nobody leads).
        let forward_to = status.leader_elsewhere();
        let mut proposals = Vec::new();
        let mut reads = Vec::new();
        let mut changes = Vec::new();
        let learner = self.is_learner();
        for ClientCall { id, waiter, call } in calls {
            if learner && !learners_serve(&call, self.options.id) {
                out.push(Output::Answer {
                    waiter,
                    answer: Answer::Refused(Refusal::Learner),
                });
                continue;
            }
            match call {
                // Refused here, not handed to a leader that would refuse it the same way.
                Call::ChangeMembership(_) if self.engine.membership().is_none() => {
                    let why = synod_core::membership::FIXED_MEMBERSHIP;
                    out.push(Output::Answer {
                        waiter,
                        answer: Answer::Refused(Refusal::Unsupported(why)),
                    });
                }
                Call::ChangeMembership(change) => {
                    self.changes.insert(id, waiter);
                    changes.push((id, change));
                }
                Call::Write(command) => {
                    self.writes.insert(id, waiter);
                    proposals.push(Proposal { id, command });
                }
                Call::Read(ReadConsistency::Serializable, _) => out.push(Output::Answer {
                    waiter,
                    answer: Answer::Ready,
                }),
                Call::Read(consistency, keys) => {
                    self.reads.insert(id, waiter);
                    reads.push(ReadRequest {
                        id,
                        consistency,
                        keys,
                    });
                }
                Call::KeepAlive(_) | Call::TimeToLive(_) if !E::ORDERS_WRITES => {
                    let why = LEASES_NEED_CONSENSUS;
                    out.push(Output::Answer {
                        waiter,
                        answer: Answer::Refused(Refusal::Unsupported(why)),
                    })
                }
                Call::KeepAlive(_) | Call::TimeToLive(_) if lease_era.is_none() => {
                    out.push(Output::Answer {
                        waiter,
                        answer: Answer::Refused(Refusal::NotLeader(self.lease_keeper())),
                    })
                }
                // The leases are in the snapshot still loading: no answer from the old ones.
                Call::KeepAlive(_) | Call::TimeToLive(_) if self.loading.is_some() => {
                    out.push(Output::Answer {
                        waiter,
                        answer: Answer::Refused(Refusal::NotLeader(None)),
                    })
                }
                Call::KeepAlive(lease) if self.options.lease_bugs.renew_without_confirming() => {
                    let answer = self.renew(lease);
                    out.push(Output::Answer { waiter, answer });
                }
                Call::KeepAlive(lease) => {
                    // A client that asks again under the same id (its first try timed out)
                    // may be answered by the round its first try started: the answer must be
                    // judged by when that one was asked, and in its era.
                    let (asked_at, era) = match self.keep_alives.get(&id) {
                        Some(earlier) => (earlier.asked_at, earlier.era),
                        None => (self.now, lease_era.unwrap_or_default()),
                    };
                    let keep_alive = KeepAlive {
                        waiter,
                        lease,
                        era,
                        asked_at,
                    };
                    self.keep_alives.insert(id, keep_alive);
                    reads.push(ReadRequest {
                        id,
                        consistency: ReadConsistency::Linearizable,
                        keys: None,
                    });
                }
                Call::TimeToLive(lease) => {
                    let answer = self.time_to_live(lease);
                    out.push(Output::Answer { waiter, answer });
                }
            }
        }
        for (id, change) in changes {
            self.order_change(forward_to, id, change, out);
        }
        match forward_to {
            // A secondary answers reads from its own copy, however stale: the model.
            Some(leader) if status.role == Role::Secondary => {
                self.forward_writes(leader, proposals, out);
                if !reads.is_empty() {
                    self.step(Input::Read(reads), out);
                }
            }
            Some(leader) => {
                self.forward_writes(leader, proposals, out);
                let ids: Vec<RequestId> = reads.iter().map(|r| r.id).collect();
                if !ids.is_empty() {
                    self.reads_asked.extend(ids.iter().map(|&id| (id, leader)));
                    out.push(Output::Send {
                        to: leader,
                        message: PeerMessage::ReadIndex(ids),
                    });
                }
            }
            None => {
                if !proposals.is_empty() {
                    self.step(Input::Propose(proposals), out);
                }
                if !reads.is_empty() {
                    self.step(Input::Read(reads), out);
                }
            }
        }
    }

    /// Hands a membership change to the leader, or to the engine when no other node leads
    /// (it refuses the change if nobody does).
    fn order_change(
        &mut self,
        forward_to: Option<NodeId>,
        id: RequestId,
        change: MembershipChange,
        out: &mut Vec<Output<E::Message, W>>,
    ) {
        match forward_to {
            Some(leader) => out.push(Output::Send {
                to: leader,
                message: PeerMessage::ChangeMembership { id, change },
            }),
            None => self.step(Input::ChangeMembership { id, change }, out),
        }
    }

    /// A member whose attributes the membership lacks asks for them to be recorded: one that
    /// joined a running cluster has no name there yet, and one restarted with another client
    /// URL is listed with the old one. (Members the cluster booted with are named by the
    /// cluster list, and their client URLs come with the peer handshakes, until they publish
    /// one that differs.) It asks through whoever leads, and again while they are missing:
    /// [`PUBLISH_RETRY_US`] after a refusal, [`PUBLISH_PATIENCE_US`] after an ask nobody
    /// answered.
    fn publish_attributes(&mut self, out: &mut Vec<Output<E::Message, W>>) {
        let Some(attributes) = &self.options.attributes else {
            return;
        };
        let me = self.options.id;
        let missing = self
            .membership
            .as_ref()
            .and_then(|m| m.get(me))
            .is_some_and(|m| {
                m.name.is_empty()
                    || (!m.client_urls.is_empty() && m.client_urls != attributes.client_urls)
            });
        if !missing {
            self.publishing = None;
            return;
        }
        let status = self.engine.status();
        let waiting = self
            .publishing
            .is_some_and(|(_, retry_at)| self.now < retry_at);
        if waiting || status.proposer().is_none() {
            return;
        }
        let change = MembershipChange::Publish {
            id: me,
            name: attributes.name.clone(),
            client_urls: attributes.client_urls.clone(),
        };
        let id = self.next_request_id();
        self.publishing = Some((id, self.now + PUBLISH_PATIENCE_US));
        self.order_change(status.leader_elsewhere(), id, change, out);
    }

    /// Hands writes to the leader in messages of at most [`FORWARD_BYTES_MAX`].
    fn forward_writes(
        &mut self,
        leader: NodeId,
        proposals: Vec<Proposal>,
        out: &mut Vec<Output<E::Message, W>>,
    ) {
        let mut batch: Vec<Proposal> = Vec::new();
        let mut bytes = 0;
        for proposal in proposals {
            if !batch.is_empty() && bytes + proposal.command.len() > FORWARD_BYTES_MAX {
                let message = PeerMessage::Propose(std::mem::take(&mut batch));
                out.push(Output::Send {
                    to: leader,
                    message,
                });
                bytes = 0;
            }
            bytes += proposal.command.len();
            batch.push(proposal);
        }
        if !batch.is_empty() {
            let message = PeerMessage::Propose(batch);
            out.push(Output::Send {
                to: leader,
                message,
            });
        }
    }

    /// A forwarded message the shell could not even queue (its link's queue full, the peer
    /// unknown): the requests in it never reached the leader, so their clients are told "not
    /// the leader" at once and try again, rather than left to time out.
    pub fn undeliverable(
        &mut self,
        to: NodeId,
        message: PeerMessage<E::Message>,
        out: &mut Vec<Output<E::Message, W>>,
    ) {
        let ids: Vec<RequestId> = match message {
            PeerMessage::Propose(proposals) => proposals.into_iter().map(|p| p.id).collect(),
            PeerMessage::ReadIndex(ids) => ids,
            PeerMessage::ChangeMembership { id, .. } => vec![id],
            _ => return,
        };
        for id in ids {
            self.reads_asked.remove(&id);
            self.refuse(id, Refusal::NotLeader(Some(to)), out);
        }
    }

    /// One tick of this node's clock.
    ///
    /// While a snapshot from the leader loads, time stands still for the engine: the member
    /// answers what its peers ask (appends, votes) but starts nothing, above all no election,
    /// since a leader whose store is not there could serve no one until it is.
    pub fn tick(&mut self, out: &mut Vec<Output<E::Message, W>>) {
        if self.loading.is_some() {
            return;
        }
        self.ticks += 1;
        self.step(Input::Tick, out);
        if self.leaderless {
            self.watch_keeper(out);
        }
        // A new keeper starts its clocks at the first tick after its epoch applied, not at
        // the next sweep.
        let starting = self.keeping().is_some_and(|era| !self.leases.started(era));
        if starting || self.ticks.is_multiple_of(self.lease_check_ticks) {
            self.expire_leases(out);
        }
        self.publish_attributes(out);
    }

    /// A message from a peer.
    pub fn receive(
        &mut self,
        from: NodeId,
        message: PeerMessage<E::Message>,
        out: &mut Vec<Output<E::Message, W>>,
    ) {
        let leads = self.engine.status().role == Role::Leader;
        match message {
            PeerMessage::Engine(message) => self.step(Input::Receive { from, message }, out),
            PeerMessage::Propose(proposals) if leads => {
                self.proposed_for
                    .extend(proposals.iter().map(|p| (p.id, from)));
                self.step(Input::Propose(proposals), out);
            }
            PeerMessage::ReadIndex(ids) if leads => {
                self.reads_for_peers
                    .extend(ids.iter().map(|&id| (id, from)));
                let reads = ids
                    .into_iter()
                    .map(|id| ReadRequest {
                        id,
                        consistency: ReadConsistency::Linearizable,
                        keys: None,
                    })
                    .collect();
                self.step(Input::Read(reads), out);
            }
            PeerMessage::ChangeMembership { id, change } if leads => {
                self.proposed_for.insert(id, from);
                self.step(Input::ChangeMembership { id, change }, out);
            }
            PeerMessage::ChangeMembership { id, .. } => {
                let leader = self.engine.status().leader;
                let message = PeerMessage::Refused {
                    ids: vec![id],
                    leader,
                };
                out.push(Output::Send { to: from, message });
            }
            PeerMessage::MembershipRefused { id, refusal } => {
                self.refuse(id, Refusal::Membership(refusal), out);
            }
            // Sent to a node that no longer leads: no effect, say so (and who leads).
            PeerMessage::Propose(proposals) => {
                let ids = proposals.iter().map(|p| p.id).collect();
                let leader = self.engine.status().leader;
                let message = PeerMessage::Refused { ids, leader };
                out.push(Output::Send { to: from, message });
            }
            PeerMessage::ReadIndex(ids) => {
                let leader = self.engine.status().leader;
                let message = PeerMessage::Refused { ids, leader };
                out.push(Output::Send { to: from, message });
            }
            PeerMessage::ReadReady { ids, index } => {
                let applied = self.store.read().applied_index();
                for id in ids {
                    if self.reads_asked.remove(&id).is_none() {
                        continue; // refused or abandoned meanwhile
                    }
                    if index <= applied {
                        if let Some(waiter) = self.reads.remove(&id) {
                            out.push(Output::Answer {
                                waiter,
                                answer: Answer::Ready,
                            });
                        }
                    } else {
                        self.reads_after_apply.entry(index).or_default().push(id);
                    }
                }
            }
            PeerMessage::Refused { ids, leader } => {
                for id in ids {
                    self.reads_asked.remove(&id);
                    self.refuse(id, Refusal::NotLeader(leader), out);
                }
            }
            PeerMessage::KeeperAlive { era } => {
                // A keeper older than the epoch applied here is no keeper any more, nor is
                // one no longer a member (removed, it may not know it yet, and must not keep
                // the members in force from claiming the clocks).
                let member = self.membership.as_ref().is_none_or(|m| m.contains(from));
                if member && era >= self.store.read().lease_epoch() {
                    self.keeper_watch.heard(self.ticks);
                    let message = PeerMessage::KeeperHeard { era };
                    out.push(Output::Send { to: from, message });
                }
            }
            PeerMessage::KeeperHeard { era } => {
                // Only voters make the quorum that must hear the keeper.
                let voter = self.membership.as_ref().is_none_or(|m| m.is_voter(from));
                if voter && self.claims.contains(&era) {
                    self.keeper_watch.heard_by(from, era, self.ticks);
                }
            }
        }
    }

    /// Every persist up to `id` is durable: the sends held for them leave.
    pub fn persisted(&mut self, id: PersistId, out: &mut Vec<Output<E::Message, W>>) {
        // Sends held for these persists leave first, in the order the engine pushed them,
        // ahead of anything the engine sends on hearing of the persist.
        let released = self.sends.durable(id);
        out.extend(released.into_iter().map(|(to, message)| Output::Send {
            to,
            message: PeerMessage::Engine(message),
        }));
        self.step(Input::Persisted(id), out);
    }

    /// The store of the snapshot asked for by [`Output::LoadSnapshot`] is decoded (or
    /// failed to decode): it takes the place of this replica's, and what waited for it is
    /// carried out, in the order the engine decided it.
    pub fn snapshot_loaded(
        &mut self,
        decoded: Result<KvStore, DecodeError>,
        out: &mut Vec<Output<E::Message, W>>,
    ) {
        let Some(loading) = self.loading.take() else {
            return;
        };
        self.restore(loading.meta, decoded, loading.changes, out);
        if self.fatal.is_some() {
            // The store could not be put in place: applying or answering anything now would
            // start from a state no other member holds. The node stops.
            return;
        }
        self.carry_out_all(loading.waiting, out);
        self.after_step(false, out);
    }

    /// The snapshot asked for by [`Output::SaveSnapshot`] is durable and the log compacted
    /// through it (or the shell skipped it: the log had moved further).
    pub fn snapshot_saved(&mut self, snapshot: Snapshot, out: &mut Vec<Output<E::Message, W>>) {
        self.snapshot_in_flight = false;
        self.snapshot_index = self.snapshot_index.max(snapshot.meta.index);
        self.step(Input::Snapshotted(snapshot), out);
    }

    /// Asks the engine to hand leadership to `to` (ignored unless this node leads).
    pub fn transfer_leadership(&mut self, to: NodeId, out: &mut Vec<Output<E::Message, W>>) {
        self.step(Input::TransferLeadership { to }, out);
    }

    /// Drops waits whose clients went away, so that proposals that never commit (lost with a
    /// deposed leader) do not pile up.
    pub fn forget_abandoned(&mut self) {
        self.writes.retain(|_, waiter| !waiter.abandoned());
        self.reads.retain(|_, waiter| !waiter.abandoned());
        self.keep_alives.retain(|_, k| !k.waiter.abandoned());
        self.changes.retain(|_, waiter| !waiter.abandoned());
        let reads = &self.reads;
        self.reads_asked.retain(|id, _| reads.contains_key(id));
        for ids in self.reads_after_apply.values_mut() {
            ids.retain(|id| reads.contains_key(id));
        }
        self.reads_after_apply.retain(|_, ids| !ids.is_empty());
    }

    /// Everything still waiting, for the shell to refuse as it stops.
    pub fn drain_waiters(&mut self) -> Vec<W> {
        let mut waiters: Vec<W> = self.writes.drain().map(|(_, w)| w).collect();
        waiters.extend(self.reads.drain().map(|(_, w)| w));
        waiters.extend(self.keep_alives.drain().map(|(_, k)| k.waiter));
        waiters.extend(self.changes.drain().map(|(_, w)| w));
        waiters
    }

    fn step(&mut self, input: Input<E::Message>, out: &mut Vec<Output<E::Message, W>>) {
        // Only a peer's message, an operator's change or a persist done moves the membership
        // in force (the engine contract says so): other steps, ticks above all, skip
        // comparing it.
        let membership_may_move = matches!(
            input,
            Input::Receive { .. } | Input::ChangeMembership { .. } | Input::Persisted(_)
        );
        let mut actions = std::mem::take(&mut self.actions);
        self.engine.step(input, &mut actions);
        self.carry_out_all(actions.drain(..), out);
        self.actions = actions;
        self.after_step(membership_may_move, out);
    }

    /// Carries out the engine's actions in order. Applies are gathered so one lock covers a
    /// run of them; anything else that depends on the store flushes them first. While a
    /// snapshot loads (from a `Restore` among them on), they wait with the rest.
    fn carry_out_all(
        &mut self,
        actions: impl IntoIterator<Item = Action<E::Message>>,
        out: &mut Vec<Output<E::Message, W>>,
    ) {
        let mut applying: Vec<Entry> = Vec::new();
        for action in actions {
            let action = match action {
                Action::Apply(entry) if self.loading.is_none() => {
                    applying.push(entry);
                    continue;
                }
                action => action,
            };
            if !applying.is_empty() {
                self.apply(&mut applying, out);
            }
            self.carry_out(action, out);
        }
        if !applying.is_empty() {
            self.apply(&mut applying, out);
        }
    }

    fn after_step(&mut self, membership_may_move: bool, out: &mut Vec<Output<E::Message, W>>) {
        let status = self.engine.status();
        // (While a snapshot loads, the engine's refusals of proposals it took as leader wait
        // in order: they still need to know whom to tell.)
        // A candidate may still hold forwarded writes (Multi-Paxos keeps a leader's queue
        // through its campaign) and refuse them when it loses: the askers must hear it.
        let may_refuse_later = matches!(status.role, Role::Leader | Role::Candidate);
        if !may_refuse_later && self.loading.is_none() {
            self.proposed_for.clear();
        }
        if status.leader != self.status.leader {
            // Reads asked of a leader that no longer leads may never be answered: refuse
            // them, and the client asks again.
            let mut stale: Vec<RequestId> = self
                .reads_asked
                .iter()
                .filter(|(_, &asked)| Some(asked) != status.leader)
                .map(|(&id, _)| id)
                .collect();
            stale.sort_unstable(); // answered in a deterministic order
            for id in stale {
                self.reads_asked.remove(&id);
                self.refuse(id, Refusal::NotLeader(status.leader), out);
            }
        }
        self.status = status;
        if membership_may_move && self.engine.membership() != self.membership.as_ref() {
            self.membership = self.engine.membership().cloned();
            if let Some(membership) = &self.membership {
                out.push(Output::Membership(membership.clone()));
            }
        }
        if status.role == Role::Leader && self.epoch_proposed != Some(status.era) {
            // Just promoted: the lease clocks become this leader's once its epoch applies.
            self.propose_lease_epoch(status.era, out);
        }
        self.answer_peers(out);
        self.maybe_snapshot(out);
    }

    fn carry_out(&mut self, action: Action<E::Message>, out: &mut Vec<Output<E::Message, W>>) {
        if let Some(loading) = &mut self.loading {
            if !matches!(action, Action::Persist(_) | Action::Send { .. }) {
                loading.waiting.push(action);
                return;
            }
        }
        match action {
            Action::Persist(persist) => {
                self.sends.issued(persist.id);
                out.push(Output::Persist(persist));
            }
            Action::Send { to, message } => {
                if let Some((to, message)) = self.sends.send(to, message) {
                    let message = PeerMessage::Engine(message);
                    out.push(Output::Send { to, message });
                }
            }
            Action::Apply(entry) => self.apply(&mut vec![entry], out),
            Action::Restore(snapshot) => {
                let mut changes: Vec<RequestId> = self.changes.keys().copied().collect();
                changes.sort_unstable();
                self.loading = Some(Loading {
                    meta: snapshot.meta,
                    changes,
                    waiting: Vec::new(),
                });
                out.push(Output::LoadSnapshot(snapshot));
            }
            Action::ReadReady(id) => {
                if let Some(waiter) = self.reads.remove(&id) {
                    out.push(Output::Answer {
                        waiter,
                        answer: Answer::Ready,
                    });
                } else if let Some(keep_alive) = self.keep_alives.remove(&id) {
                    self.finish_keep_alive(keep_alive, out);
                } else if let Some(asker) = self.reads_for_peers.remove(&id) {
                    self.peer_ready.entry(asker).or_default().push(id);
                }
            }
            Action::Acknowledge(id) => {
                if let Some(answer) = self.unacknowledged.remove(&id) {
                    if let Some(waiter) = self.writes.remove(&id) {
                        out.push(Output::Answer { waiter, answer });
                    }
                }
            }
            Action::Reject {
                id,
                reason: Rejection::Unsupported(why),
            } => self.refuse(id, Refusal::Unsupported(why), out),
            Action::Reject {
                id,
                reason: Rejection::Membership(refusal),
            } => {
                if let Some(asker) = self.proposed_for.remove(&id) {
                    let message = PeerMessage::MembershipRefused { id, refusal };
                    out.push(Output::Send { to: asker, message });
                } else {
                    self.refuse(id, Refusal::Membership(refusal), out);
                }
            }
            Action::Reject {
                id,
                reason:
                    Rejection::Unavailable {
                        reached,
                        needed,
                        written,
                    },
            } => {
                self.unacknowledged.remove(&id);
                let refusal = Refusal::Unavailable {
                    reached,
                    needed,
                    written,
                };
                self.refuse(id, refusal, out);
            }
            Action::Reject {
                id,
                reason: Rejection::NotLeader { leader_hint },
            } => {
                if let Some(asker) = self.reads_for_peers.remove(&id) {
                    self.peer_refused.entry(asker).or_default().push(id);
                } else if let Some(asker) = self.proposed_for.remove(&id) {
                    self.peer_refused.entry(asker).or_default().push(id);
                    if self.writes.contains_key(&id) {
                        // Its client also asked here, with the same id (a retry).
                        self.refuse(id, Refusal::NotLeader(leader_hint), out);
                    }
                } else {
                    self.refuse(id, Refusal::NotLeader(leader_hint), out);
                }
            }
        }
    }

    /// Answers a waiting call with a refusal.
    fn refuse(&mut self, id: RequestId, refusal: Refusal, out: &mut Vec<Output<E::Message, W>>) {
        if let Some((_, retry_at)) = self.publishing.as_mut().filter(|(asked, _)| *asked == id) {
            *retry_at = (*retry_at).min(self.now + PUBLISH_RETRY_US);
            return;
        }
        if let Some((lease, _)) = self.revokes.remove(&id) {
            if self.options.lease_bugs.revoke_in_any_era() {
                self.revokes_to_retry.push(lease);
            }
            return;
        }
        let waiter = self
            .writes
            .remove(&id)
            .or_else(|| self.reads.remove(&id))
            .or_else(|| self.keep_alives.remove(&id).map(|k| k.waiter))
            .or_else(|| self.changes.remove(&id));
        if let Some(waiter) = waiter {
            let answer = Answer::Refused(refusal);
            out.push(Output::Answer { waiter, answer });
        }
    }

    /// Sends followers the answers a step produced for them.
    fn answer_peers(&mut self, out: &mut Vec<Output<E::Message, W>>) {
        if !self.peer_ready.is_empty() {
            let index = self.store.read().applied_index();
            for (to, ids) in std::mem::take(&mut self.peer_ready) {
                let message = PeerMessage::ReadReady { ids, index };
                out.push(Output::Send { to, message });
            }
        }
        if self.peer_refused.is_empty() {
            return;
        }
        let leader = self.engine.status().leader;
        for (to, ids) in std::mem::take(&mut self.peer_refused) {
            let message = PeerMessage::Refused { ids, leader };
            out.push(Output::Send { to, message });
        }
    }

    fn apply(&mut self, entries: &mut Vec<Entry>, out: &mut Vec<Output<E::Message, W>>) {
        let mut answers = Vec::new();
        let mut changed = Vec::new();
        let mut granted = Vec::new();
        {
            let mut kv = self.store.write();
            for entry in entries.drain(..) {
                self.applied_era = entry.era;
                if entry.index <= kv.applied_index() {
                    continue; // already in the snapshot the store was restored from
                }
                if let Payload::Command(proposal) = &entry.payload {
                    self.applied_bytes += proposal.command.len() as u64;
                }
                let mut took_effect = false;
                if let Some(outcome) = kv.apply_entry(&entry) {
                    if let (true, Ok(applied)) = (outcome.ran, &outcome.result) {
                        took_effect = true;
                        if let Response::LeaseGrant(grant) = &applied.response {
                            granted.push(grant.id);
                        }
                    }
                    answers.push((outcome.id, outcome.result));
                }
                if let Payload::Membership { id, membership } = &entry.payload {
                    changed.push((*id, membership.clone()));
                    out.push(Output::MembershipApplied(membership.clone()));
                }
                out.push(Output::Applied { entry, took_effect });
            }
        }
        for lease in granted {
            self.leases.granted(lease);
        }
        for (id, membership) in changed {
            self.proposed_for.remove(&id);
            if let Some(waiter) = self.changes.remove(&id) {
                let answer = Answer::Membership(membership);
                out.push(Output::Answer { waiter, answer });
            }
        }
        for (id, result) in answers {
            self.proposed_for.remove(&id);
            self.revokes.remove(&id);
            let answer = match result {
                Ok(applied) => Answer::Applied(applied),
                Err(e) => Answer::Refused(Refusal::Kv(e)),
            };
            if !E::ORDERS_WRITES {
                // Answered when the engine says enough replicas hold it.
                if self.writes.contains_key(&id) {
                    self.unacknowledged.insert(id, answer);
                }
            } else if let Some(waiter) = self.writes.remove(&id) {
                out.push(Output::Answer { waiter, answer });
            }
        }
        self.release_reads(out);
    }

    /// Answers confirmed reads whose index this node has now applied.
    fn release_reads(&mut self, out: &mut Vec<Output<E::Message, W>>) {
        let applied = self.store.read().applied_index();
        while let Some(entry) = self.reads_after_apply.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for id in entry.remove() {
                if let Some(waiter) = self.reads.remove(&id) {
                    out.push(Output::Answer {
                        waiter,
                        answer: Answer::Ready,
                    });
                }
            }
        }
    }

    /// Puts the store decoded from a snapshot from the leader in place.
    fn restore(
        &mut self,
        meta: SnapshotMeta,
        decoded: Result<KvStore, DecodeError>,
        changes: Vec<RequestId>,
        out: &mut Vec<Output<E::Message, W>>,
    ) {
        match decoded {
            Ok(mut kv) if kv.applied_index() == meta.index => {
                // This member's own history window, whatever the sender's was.
                kv.set_history_revisions(self.store.read().history_revisions());
                // Writes waiting here whose entries came inside the snapshot: a tracked
                // client's session says how each went (the server's own ids are untracked:
                // those wait for the client's timeout, as in etcd).
                let mut answered: Vec<(RequestId, Answer)> = self
                    .writes
                    .keys()
                    .filter_map(|&id| {
                        let answer = match kv.remembered(id)? {
                            Ok(applied) => Answer::Applied(applied),
                            Err(e) => Answer::Refused(Refusal::Kv(e)),
                        };
                        Some((id, answer))
                    })
                    .collect();
                answered.sort_unstable_by_key(|(id, _)| *id);
                // A lease the snapshot holds under an id this store knew as another lease
                // (or not at all) was granted meanwhile: any clock kept for its id belonged
                // to the earlier one, as after a grant applied here.
                let granted: Vec<i64> = {
                    let before = self.store.read();
                    let earlier = |id: &i64| before.leases().get(id).map(|l| l.granted_at);
                    let leases = kv.leases().iter();
                    let new = leases.filter(|(id, lease)| earlier(id) != Some(lease.granted_at));
                    new.map(|(&id, _)| id).collect()
                };
                for lease in granted {
                    self.leases.granted(lease);
                }
                *self.store.write() = kv;
                self.applied_era = meta.era;
                self.snapshot_index = meta.index;
                self.applied_bytes = 0;
                out.push(Output::Restored(meta));
                for (id, answer) in answered {
                    self.proposed_for.remove(&id);
                    if let Some(waiter) = self.writes.remove(&id) {
                        out.push(Output::Answer { waiter, answer });
                    }
                }
                // A membership change whose entry came inside the snapshot (or was cut) is
                // never applied here: its outcome is unknown, as after a timeout. (Changes
                // asked for while the snapshot loaded are still to be decided.)
                // So is this member's publish: asked again soon, unless the snapshot's
                // membership holds it.
                let publish = self.publishing.map(|(id, _)| id);
                for id in changes.into_iter().chain(publish) {
                    self.refuse(id, Refusal::OutcomeUnknown, out);
                }
                self.release_reads(out);
            }
            // Applying on from a state we could not restore would diverge from the others.
            Ok(kv) => {
                self.fatal = Some(format!(
                    "a snapshot from the leader through {} holds state through {}",
                    meta.index,
                    kv.applied_index()
                ));
            }
            Err(e) => {
                self.fatal = Some(format!("a snapshot from the leader does not decode: {e}"));
            }
        }
    }

    fn maybe_snapshot(&mut self, out: &mut Vec<Output<E::Message, W>>) {
        let every = self.options.snapshot_every;
        if every == 0 || self.snapshot_in_flight || self.loading.is_some() {
            return;
        }
        // A copy (its keys and values shared, not copied) is encoded and written by the
        // shell, off the replica's path: encoding hundreds of megabytes here would stall
        // every request for seconds.
        let (meta, store) = {
            let kv = self.store.read();
            let applied = kv.applied_index();
            // Every `every` entries, but no sooner than the log since the last snapshot
            // holds a share of what the store does: a store of gigabytes is not rewritten
            // for every hundred thousand small writes (see `SNAPSHOT_LOG_SHARE`).
            let large = kv.size_bytes() >= SNAPSHOT_SHARE_FROM_BYTES;
            if applied < self.snapshot_index + every
                || (large && self.applied_bytes < kv.size_bytes() / SNAPSHOT_LOG_SHARE)
                || !self.engine.may_snapshot_at(applied)
            {
                return;
            }
            let meta = SnapshotMeta {
                index: applied,
                era: self.applied_era,
            };
            (meta, Box::new(kv.clone()))
        };
        self.snapshot_in_flight = true;
        self.applied_bytes = 0;
        let membership = self.engine.membership_at(meta.index);
        out.push(Output::SaveSnapshot {
            meta,
            membership,
            store,
        });
    }

    /// Renews `lease` now, if it exists and its time is not up.
    fn renew(&mut self, lease: i64) -> Answer {
        let ttl = self.store.read().leases().get(&lease).map(|l| l.ttl);
        match ttl {
            Some(ttl) if self.leases.renew(lease, ttl_us(ttl), self.now) => Answer::Ttl(ttl),
            // etcd answers a keep-alive of an unknown or expired lease with TTL 0.
            _ => Answer::Ttl(0),
        }
    }

    fn finish_keep_alive(
        &mut self,
        keep_alive: KeepAlive<W>,
        out: &mut Vec<Output<E::Message, W>>,
    ) {
        let KeepAlive {
            waiter,
            lease,
            era,
            asked_at,
        } = keep_alive;
        // Leadership was confirmed after the keep-alive arrived, and everything committed
        // before it is applied here. But if this node was deposed since (it knows), or the
        // round started so long ago that it may have been deposed without knowing (it was
        // paused), its clock is not the cluster's: the holder asks again.
        let fresh = self.now.saturating_sub(asked_at) <= self.options.election_timeout_us / 2;
        let answer = if fresh && self.keeping() == Some(era) {
            self.leases.follow(Some(era));
            self.renew(lease)
        } else {
            Answer::Refused(Refusal::NotLeader(self.lease_keeper()))
        };
        out.push(Output::Answer { waiter, answer });
    }

    fn time_to_live(&mut self, lease: i64) -> Answer {
        let Some(ttl) = self.store.read().leases().get(&lease).map(|l| l.ttl) else {
            return Answer::Ttl(-1);
        };
        // Before its epoch applies, a new keeper's clocks have not started: the full TTL.
        // A new keeper's extension is the cluster's slack for the hand-over, not time the
        // holder was granted, so the answer never exceeds the granted TTL.
        let left = match self.keeping() {
            Some(era) => {
                self.leases.follow(Some(era));
                self.leases.remaining(lease, ttl_us(ttl), self.now)
            }
            None => ttl_us(ttl),
        }
        .min(ttl_us(ttl));
        Answer::Ttl(left.div_ceil(1_000_000) as i64)
    }

    /// The era whose lease clocks are this node's now: its lease epoch is the newest applied,
    /// and it leads in that era (or, without a leader, the epoch names it).
    fn keeping(&self) -> Option<u64> {
        let epoch = self.store.read().lease_epoch();
        let ours = if self.leaderless {
            // Claimed in this life: an epoch this node claimed before a restart names it
            // too, but expiries it proposed then may still be decided after the clocks
            // restarted, so it claims anew.
            self.claims.contains(&epoch)
        } else {
            let status = self.engine.status();
            status.role == Role::Leader && status.era == epoch
        };
        ours.then_some(epoch)
    }

    /// The era whose lease clocks this node keeps, once they have started, and the deadline
    /// (by this node's clock) of each lease: when it would expire if nobody renewed it. A
    /// checker compares them with what holders were promised.
    pub fn lease_deadlines(&self) -> Option<(u64, Vec<(i64, u64)>)> {
        let era = self.keeping().filter(|&era| self.leases.started(era))?;
        Some((era, self.leases.deadlines().collect()))
    }

    /// Who keeps the lease clocks, as far as this node knows: where lease calls belong.
    pub fn lease_keeper(&self) -> Option<NodeId> {
        if !E::ORDERS_WRITES {
            // No lease clocks anywhere: each member answers (refuses) its own lease calls.
            return Some(self.options.id);
        }
        if self.leaderless {
            keeper::keeper_of(self.store.read().lease_epoch())
        } else {
            self.engine.status().leader
        }
    }

    /// Leaderless: the keeper says it is alive now and then; a member that has not heard
    /// from it for a while claims the clocks through the log.
    fn watch_keeper(&mut self, out: &mut Vec<Output<E::Message, W>>) {
        let me = self.options.id;
        let epoch = self.store.read().lease_epoch();
        self.claims.retain(|&era| era >= epoch);
        if self.claims.contains(&epoch) {
            self.keeper_watch.heard(self.ticks);
            // The members in force, when the membership changes through the log.
            let (peers, voters) = match &self.membership {
                Some(m) => {
                    let peers: Vec<NodeId> = m.ids().into_iter().filter(|&n| n != me).collect();
                    (peers, m.voter_count())
                }
                None => (self.options.peers.clone(), self.options.peers.len() + 1),
            };
            let quorum = voters / 2 + 1;
            // A keeper that no quorum hears (a one-way cut, a link that only sends) falls
            // silent, so that members that can reach each other choose another.
            let heard = self.keeper_watch.heard_by_quorum(epoch, self.ticks, quorum);
            if heard && self.keeper_watch.alive_due(self.ticks) {
                for to in peers {
                    let message = PeerMessage::KeeperAlive { era: epoch };
                    out.push(Output::Send { to, message });
                }
            }
            return;
        }
        // A keeper is known, unless the newest epoch is this node's from an earlier life.
        let keeper_known = epoch != 0 && keeper::keeper_of(epoch) != Some(me);
        let member = self.membership.as_ref().is_none_or(|m| m.contains(me));
        if member && keeper::can_keep(me) && self.keeper_watch.claim_due(self.ticks, keeper_known) {
            let era = keeper::claim(epoch, me);
            self.claims.insert(era);
            self.propose_lease_epoch(era, out);
        }
    }

    /// The leader's sweep. A new leader first writes its lease epoch; once that applied, its
    /// clocks are the cluster's, and leases whose time is up are expired through the log,
    /// proposed in this very step while this node leads in the era whose clock expired them,
    /// and binding only while that era's epoch is the newest one applied.
    fn expire_leases(&mut self, out: &mut Vec<Output<E::Message, W>>) {
        let status = self.engine.status();
        let epoch = self.store.read().lease_epoch();
        if status.role == Role::Leader && epoch != status.era {
            // Until the epoch applies, nothing is renewed or expired here; ask again each
            // sweep (a proposal can be lost; extra ones do nothing).
            return self.propose_lease_epoch(status.era, out);
        }
        let keeping = self.keeping();
        self.leases.follow(keeping);
        let expired = {
            let kv = self.store.read();
            if kv.corrupt() {
                // A cluster found corrupt changes nothing, expiries included, until an
                // operator clears the alarm; proposing them would only fill the log.
                return;
            }
            // Each with the grant that made it: this store may not have applied yet a
            // client's revoke of the lease and its grant again, whose new lease the expiry
            // must leave alone.
            let leases = kv.leases();
            let expired = self.leases.sweep(leases, self.now, ttl_us, 1_000_000);
            let by_id_only = self.options.lease_bugs.expiry_by_id_only();
            let granted_at = |id| {
                let lease = leases.get(&id).filter(|_| !by_id_only);
                lease.map(|lease| lease.granted_at)
            };
            expired
                .into_iter()
                .map(|id| (id, granted_at(id)))
                .collect::<Vec<_>>()
        };
        let bugs = self.options.lease_bugs;
        if bugs.revoke_in_any_era() {
            // The broken way: decided now, submitted at the next sweep as any write would be
            // (forwarded to whoever leads by then), unconditionally, and again if refused.
            let expired = expired.into_iter().map(|(id, _)| id).collect();
            let due = std::mem::replace(&mut self.revokes_to_retry, expired);
            let proposals: Vec<Proposal> = due
                .into_iter()
                .map(|lease| {
                    let request = Request::LeaseRevoke(LeaseRevokeRequest { id: lease });
                    self.revoke_proposal(lease, status.era, request)
                })
                .collect();
            match status.leader_elsewhere() {
                _ if proposals.is_empty() => {}
                Some(leader) => {
                    let message = PeerMessage::Propose(proposals);
                    out.push(Output::Send {
                        to: leader,
                        message,
                    });
                }
                None => self.step(Input::Propose(proposals), out),
            }
            return;
        }
        let Some(era) = keeping.filter(|_| !expired.is_empty()) else {
            return;
        };
        // One expiry per lease in flight: a second one could be decided after the first
        // deleted the lease (Basic Paxos places a command that lost its slot in a later
        // one), only to be refused, or to meet a lease granted again under the id, whose
        // grant it does not name. One is asked again only once the first was refused.
        // Expiries of another era are void anyway.
        self.revokes.retain(|_, (_, decided_in)| *decided_in == era);
        let in_flight: HashSet<i64> = self.revokes.values().map(|&(lease, _)| lease).collect();
        let proposals: Vec<Proposal> = expired
            .into_iter()
            .filter(|(lease, _)| !in_flight.contains(lease))
            .map(|(lease, granted_at)| {
                let expire = LeaseExpireRequest {
                    id: lease,
                    era,
                    granted_at,
                };
                self.revoke_proposal(lease, era, Request::LeaseExpire(expire))
            })
            .collect();
        if !proposals.is_empty() {
            self.step(Input::Propose(proposals), out);
        }
    }

    fn propose_lease_epoch(&mut self, era: u64, out: &mut Vec<Output<E::Message, W>>) {
        self.epoch_proposed = Some(era);
        let id = self.next_request_id();
        let command = Request::LeaseEpoch(LeaseEpochRequest { era }).encode();
        self.step(Input::Propose(vec![Proposal { id, command }]), out);
    }

    fn revoke_proposal(&mut self, lease: i64, era: u64, request: Request) -> Proposal {
        let id = self.next_request_id();
        self.revokes.insert(id, (lease, era));
        Proposal {
            id,
            command: request.encode(),
        }
    }
}

/// A TTL in seconds, in microseconds.
fn ttl_us(ttl_seconds: i64) -> u64 {
    (ttl_seconds.max(0) as u64).saturating_mul(1_000_000)
}

/// The store a replica starts with: restored from the snapshot it booted from, or empty with
/// the cluster's limits.
pub fn boot_store(
    snapshot: Option<&Snapshot>,
    session_limit: usize,
    history_revisions: i64,
) -> Result<KvStore, String> {
    match snapshot {
        Some(s) => {
            let mut store = KvStore::restore(&s.data)
                .map_err(|e| format!("the snapshot's state machine does not decode: {e}"))?;
            // The member's own setting, as for a new store, whatever the snapshot's taker had.
            store.set_history_revisions(history_revisions);
            Ok(store)
        }
        None => Ok(KvStore::with_limits(session_limit, history_revisions)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::{Entry, Payload};
    use synod_kv::{LeaseGrantRequest, PutRequest};

    /// An engine that records what it is asked and answers with the actions a test queued.
    struct Scripted<const ORDERED: bool = true> {
        status: Status,
        membership: Option<Membership>,
        proposed: Vec<Proposal>,
        reads: Vec<ReadRequest>,
        next: Vec<Action<u8>>,
    }

    impl<const ORDERED: bool> Engine for Scripted<ORDERED> {
        type Message = u8;
        const ORDERS_WRITES: bool = ORDERED;

        fn step(&mut self, input: Input<u8>, out: &mut Vec<Action<u8>>) {
            match input {
                Input::Propose(proposals) => self.proposed.extend(proposals),
                Input::Read(reads) => self.reads.extend(reads),
                _ => {}
            }
            out.append(&mut self.next);
        }

        fn status(&self) -> Status {
            self.status
        }

        fn membership(&self) -> Option<&Membership> {
            self.membership.as_ref()
        }
    }

    impl Waiter for u32 {}

    type Out = Vec<Output<u8, u32>>;

    const WINDOW_US: u64 = 75_000;

    fn replica(role: Role, leader: Option<NodeId>, era: u64) -> Replica<Scripted, u32> {
        scripted(role, leader, era)
    }

    fn scripted<const ORDERED: bool>(
        role: Role,
        leader: Option<NodeId>,
        era: u64,
    ) -> Replica<Scripted<ORDERED>, u32> {
        let status = Status {
            id: NodeId(1),
            role,
            leader,
            era,
            commit_index: 0,
            last_index: 0,
        };
        let engine = Scripted {
            status,
            membership: None,
            proposed: Vec::new(),
            reads: Vec::new(),
            next: Vec::new(),
        };
        let options = ReplicaOptions {
            id: NodeId(1),
            peers: vec![NodeId(2), NodeId(3)],
            own_client_id: synod_core::ClientId::UNTRACKED_FROM | 1,
            snapshot_every: 0,
            tick_us: 10_000,
            election_timeout_us: 2 * WINDOW_US,
            lease_bugs: LeaseBugs::NONE,
            attributes: None,
        };
        Replica::new(engine, KvStore::new(), 0, options)
    }

    fn entry(index: u64, era: u64, id: RequestId, request: &Request) -> Entry {
        let command = request.encode();
        Entry {
            index,
            era,
            payload: Payload::Command(Proposal { id, command }),
        }
    }

    fn answers(out: &mut Out) -> Vec<(u32, Answer)> {
        out.drain(..)
            .filter_map(|o| match o {
                Output::Answer { waiter, answer } => Some((waiter, answer)),
                _ => None,
            })
            .collect()
    }

    fn put(key: &'static str) -> Request {
        Request::Put(PutRequest {
            key: Bytes::from_static(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        })
    }

    /// A Paxos leader decides a slot when its own acceptance is durable: a membership it
    /// decides then is in force at once, not at the next peer message.
    #[test]
    fn a_membership_that_moves_when_a_persist_is_done_is_seen_then() {
        let mut r = replica(Role::Leader, Some(NodeId(1)), 3);
        let mut out = Out::new();
        r.engine.membership = Some(Membership::of_voters(&[NodeId(1), NodeId(2)]));
        r.persisted(PersistId(1), &mut out);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Membership(m) if m.voters().len() == 2)),
            "{out:?}"
        );
    }

    /// The membership changes `r` asks for at a tick at `now`: each must be member 1's
    /// attributes, sent to the leader (n2).
    fn publishes(r: &mut Replica<Scripted, u32>, now: u64) -> Vec<RequestId> {
        let mut out = Out::new();
        r.set_clock(now);
        r.tick(&mut out);
        out.into_iter()
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    message: PeerMessage::ChangeMembership { id, change },
                } => {
                    let expected = MembershipChange::Publish {
                        id: NodeId(1),
                        name: "one".into(),
                        client_urls: vec!["http://one:2379".into()],
                    };
                    assert_eq!((to, change), (NodeId(2), expected));
                    Some(id)
                }
                _ => None,
            })
            .collect()
    }

    /// A member the membership lists without a name (it joined a running cluster) asks the
    /// leader to record its attributes, as etcd members publish theirs: again a second after
    /// a refusal and ten seconds after an ask nobody answered, and no more once they are in.
    #[test]
    fn a_joined_member_publishes_its_attributes_until_they_are_recorded() {
        let mut r = replica(Role::Follower, Some(NodeId(2)), 3);
        r.options.attributes = Some(Attributes {
            name: "one".into(),
            client_urls: vec!["http://one:2379".into()],
        });
        let mut out = Out::new();
        let mut membership = Membership::of_voters(&[NodeId(1), NodeId(2), NodeId(3)]);
        r.engine.membership = Some(membership.clone());
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);

        let first = publishes(&mut r, 1_000_000);
        assert_eq!(first.len(), 1, "asked at the first tick");
        assert!(
            publishes(&mut r, 1_500_000).is_empty(),
            "waits for the answer"
        );

        // Refused (another change under way at the leader): asked again a second later.
        let refusal = MembershipRefusal::ChangePending;
        let refused = PeerMessage::MembershipRefused {
            id: first[0],
            refusal,
        };
        r.receive(NodeId(2), refused, &mut out);
        assert!(answers(&mut out).is_empty(), "nobody waits for it");
        assert!(publishes(&mut r, 2_400_000).is_empty());
        let second = publishes(&mut r, 2_600_000);
        assert_eq!(second.len(), 1, "asked again");
        assert_ne!(second, first, "under a new request id");

        // Unanswered (a leader that fell before it logged it): asked again ten seconds on.
        assert!(publishes(&mut r, 12_500_000).is_empty());
        assert_eq!(publishes(&mut r, 12_700_000).len(), 1);

        // Recorded: nothing more to say, until a restart with another client URL.
        membership.members[0].name = "one".into();
        membership.members[0].client_urls = vec!["http://one:2379".into()];
        r.engine.membership = Some(membership.clone());
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);
        assert!(publishes(&mut r, 30_000_000).is_empty());
        assert!(r.publishing.is_none(), "nothing waits to be asked again");
        membership.members[0].client_urls = vec!["http://old:2379".into()];
        r.engine.membership = Some(membership);
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);
        assert_eq!(
            publishes(&mut r, 31_000_000).len(),
            1,
            "the URL is corrected"
        );
    }

    /// A learner answers serializable reads and publishes its own name; every other call is
    /// refused at once, without reaching the leader, so that its client asks a voter.
    #[test]
    fn a_learner_serves_only_serializable_reads_and_its_own_name() {
        let mut r = replica(Role::Follower, Some(NodeId(2)), 3);
        let mut out = Out::new();
        let mut membership = Membership::of_voters(&[NodeId(1), NodeId(2), NodeId(3)]);
        for m in &mut membership.members {
            m.learner = m.id == NodeId(1);
        }
        r.engine.membership = Some(membership);
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);
        assert!(r.is_learner());
        out.clear();

        let call = |waiter: u32, call: Call| ClientCall {
            id: RequestId::new(7, u64::from(waiter)),
            waiter,
            call,
        };
        let publish = |id: NodeId| MembershipChange::Publish {
            id,
            name: "n".into(),
            client_urls: vec!["http://127.0.0.1:1".into()],
        };
        r.submit(
            vec![
                call(1, Call::Read(ReadConsistency::Serializable, None)),
                call(2, Call::Read(ReadConsistency::Linearizable, None)),
                call(3, Call::Write(put("k").encode())),
                call(4, Call::KeepAlive(5)),
                call(5, Call::TimeToLive(5)),
                call(
                    6,
                    Call::ChangeMembership(MembershipChange::Remove { id: NodeId(3) }),
                ),
                call(7, Call::ChangeMembership(publish(NodeId(2)))),
                call(8, Call::ChangeMembership(publish(NodeId(1)))),
            ],
            &mut out,
        );
        let learner = Answer::Refused(Refusal::Learner);
        let sends = out
            .iter()
            .filter(|o| matches!(o, Output::Send { .. }))
            .count();
        assert_eq!(
            answers(&mut out),
            [
                (1, Answer::Ready),
                (2, learner.clone()),
                (3, learner.clone()),
                (4, learner.clone()),
                (5, learner.clone()),
                (6, learner.clone()),
                (7, learner),
            ]
        );
        assert_eq!(sends, 1, "only its own name goes to the leader");
    }

    /// Without ordered writes (gossip): a write is answered at the engine's acknowledgement,
    /// not at its apply; one the engine gives up on gets the refusal instead; the store
    /// keeps no sessions; lease calls are refused as unsupported.
    #[test]
    fn without_ordered_writes_a_write_waits_for_its_acknowledgement() {
        let mut r = scripted::<false>(Role::Peer, None, 0);
        let mut out = Out::new();
        let (first, second) = (RequestId::new(7, 1), RequestId::new(7, 2));
        let calls = [(first, 1), (second, 2)].map(|(id, waiter)| ClientCall {
            id,
            waiter,
            call: Call::Write(put("k").encode()),
        });
        r.submit(calls.into(), &mut out);
        assert_eq!(r.engine.proposed.len(), 2, "proposed here, not forwarded");
        // Both apply (the second under an older sequence number than the first: no session
        // refuses it), neither is answered yet.
        r.engine
            .next
            .push(Action::Apply(entry(1, 9, second, &put("k"))));
        r.engine
            .next
            .push(Action::Apply(entry(2, 9, first, &put("k"))));
        r.tick(&mut out);
        assert!(
            answers(&mut out).is_empty(),
            "applied, not yet acknowledged"
        );
        assert_eq!(r.store().read().revision(), 3, "both ran");
        r.engine.next.push(Action::Acknowledge(first));
        let written = Rejection::Unavailable {
            reached: 1,
            needed: 2,
            written: true,
        };
        r.engine.next.push(Action::Reject {
            id: second,
            reason: written,
        });
        r.tick(&mut out);
        let got = answers(&mut out);
        assert!(matches!(got[0], (1, Answer::Applied(_))), "{got:?}");
        assert!(
            matches!(
                got[1],
                (
                    2,
                    Answer::Refused(Refusal::Unavailable { written: true, .. })
                )
            ),
            "{got:?}"
        );
        let calls = vec![ClientCall {
            id: RequestId::new(7, 3),
            waiter: 3,
            call: Call::KeepAlive(5),
        }];
        r.submit(calls, &mut out);
        let got = answers(&mut out);
        assert!(
            matches!(got[0], (3, Answer::Refused(Refusal::Unsupported(_)))),
            "{got:?}"
        );
    }

    #[test]
    fn a_leader_that_campaigns_again_and_loses_tells_the_followers_whose_writes_it_held() {
        let mut r = replica(Role::Leader, Some(NodeId(1)), 3);
        let mut out = Out::new();
        let id = RequestId::new(7, 1);
        let command = put("k").encode();
        let forwarded = PeerMessage::Propose(vec![Proposal { id, command }]);
        r.receive(NodeId(2), forwarded, &mut out);
        assert!(r.engine.proposed.iter().any(|p| p.id == id));
        // It runs phase 1 again, holding the write; a step goes by meanwhile.
        r.engine.status.role = Role::Candidate;
        r.engine.status.leader = None;
        r.receive(NodeId(3), PeerMessage::Engine(0), &mut out);
        // It loses to n3 and refuses what it held.
        loses_to_n3_refusing(&mut r, id, &mut out);
        let told = out.iter().any(|o| {
            matches!(o, Output::Send { to: NodeId(2), message: PeerMessage::Refused { ids, leader } }
                if ids == &[id] && *leader == Some(NodeId(3)))
        });
        assert!(told, "n2 hears its write was refused: {out:?}");
    }

    /// The leader `r` loses its leadership to n3 and its engine refuses `id`; `out` holds what
    /// that step put out.
    fn loses_to_n3_refusing(r: &mut Replica<Scripted, u32>, id: RequestId, out: &mut Out) {
        r.engine.status.role = Role::Follower;
        r.engine.status.leader = Some(NodeId(3));
        let reason = Rejection::NotLeader {
            leader_hint: Some(NodeId(3)),
        };
        r.engine.next.push(Action::Reject { id, reason });
        out.clear();
        r.receive(NodeId(3), PeerMessage::Engine(0), out);
    }

    #[test]
    fn a_write_forwarded_and_asked_again_here_is_refused_to_both() {
        let mut r = replica(Role::Leader, Some(NodeId(1)), 3);
        let mut out = Out::new();
        let id = RequestId::new(7, 1);
        let command = put("k").encode();
        let forwarded = PeerMessage::Propose(vec![Proposal {
            id,
            command: command.clone(),
        }]);
        r.receive(NodeId(2), forwarded, &mut out);
        // Its client gave up on n2 and asks here, with the same id.
        let call = ClientCall {
            id,
            waiter: 5,
            call: Call::Write(command),
        };
        r.submit(vec![call], &mut out);
        loses_to_n3_refusing(&mut r, id, &mut out);
        let told_n2 = out.iter().any(|o| {
            matches!(o, Output::Send { to: NodeId(2), message: PeerMessage::Refused { ids, .. } }
                if ids == &[id])
        });
        assert!(told_n2, "{out:?}");
        assert_eq!(
            answers(&mut out),
            [(5, Answer::Refused(Refusal::NotLeader(Some(NodeId(3)))))]
        );
    }

    #[test]
    fn a_follower_forwards_writes_and_answers_refusals_and_snapshots() {
        let mut r = replica(Role::Follower, Some(NodeId(2)), 3);
        let mut out = Out::new();
        let first = RequestId::new(7, 1);
        let second = RequestId::new(8, 1);
        let calls = [(first, 1), (second, 2)].map(|(id, waiter)| ClientCall {
            id,
            waiter,
            call: Call::Write(put("k").encode()),
        });
        r.submit(calls.into(), &mut out);
        match out.as_slice() {
            [Output::Send {
                to: NodeId(2),
                message: PeerMessage::Propose(proposals),
            }] => assert_eq!(
                proposals.iter().map(|p| p.id).collect::<Vec<_>>(),
                [first, second]
            ),
            other => panic!("the writes go to the leader, with their ids: {other:?}"),
        }
        assert!(
            r.engine.proposed.is_empty(),
            "a follower proposes nothing itself"
        );
        out.clear();

        // The leader refuses the second: its client hears "not the leader", with the hint.
        let refused = PeerMessage::Refused {
            ids: vec![second],
            leader: Some(NodeId(3)),
        };
        r.receive(NodeId(2), refused, &mut out);
        assert_eq!(
            answers(&mut out),
            [(2, Answer::Refused(Refusal::NotLeader(Some(NodeId(3)))))]
        );

        // The first comes back inside a snapshot, not as an entry to apply: the session in
        // the snapshot answers it.
        let mut leader_store = KvStore::new();
        leader_store.apply(&entry(1, 3, first, &put("k")));
        let snapshot = Snapshot {
            membership: None,
            meta: SnapshotMeta { index: 1, era: 3 },
            data: Bytes::from(leader_store.snapshot()),
        };
        let data = snapshot.data.clone();
        r.engine.next.push(Action::Restore(snapshot));
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);
        match out.as_slice() {
            [Output::LoadSnapshot(s)] => assert_eq!(s.meta.index, 1),
            other => panic!("the shell is asked to decode the snapshot: {other:?}"),
        }
        out.clear();

        // While it decodes, the engine goes on: its sends leave at once, the entry it
        // commits after the snapshot waits for the store.
        let later = RequestId::new(9, 1);
        r.engine.next.push(Action::Send {
            to: NodeId(2),
            message: 1,
        });
        r.engine
            .next
            .push(Action::Apply(entry(2, 3, later, &put("j"))));
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);
        assert!(
            matches!(
                out.as_slice(),
                [Output::Send {
                    to: NodeId(2),
                    message: PeerMessage::Engine(1)
                }]
            ),
            "only the send goes out while the snapshot loads: {out:?}"
        );
        out.clear();
        assert_eq!(r.store().read().applied_index(), 0, "nothing applied yet");

        r.snapshot_loaded(KvStore::restore(&data), &mut out);
        match answers(&mut out).as_slice() {
            [(1, Answer::Applied(applied))] => assert_eq!(applied.revision, 2),
            other => panic!("the forwarded write is answered from the snapshot: {other:?}"),
        }
        let kv = r.store().read();
        assert_eq!(
            kv.applied_index(),
            2,
            "the waiting entry applied after the snapshot"
        );
        assert_eq!(kv.revision(), 3);
    }

    /// A leader of era 5 holding lease 9 (TTL 10 s), its lease epoch applied if `epoch`.
    fn leader_with_lease(epoch: bool) -> Replica<Scripted, u32> {
        let mut r = replica(Role::Leader, Some(NodeId(1)), 5);
        let mut out = Out::new();
        let grant = Request::LeaseGrant(LeaseGrantRequest { id: 9, ttl: 10 });
        r.engine
            .next
            .push(Action::Apply(entry(1, 5, RequestId::new(3, 1), &grant)));
        if epoch {
            let epoch = Request::LeaseEpoch(LeaseEpochRequest { era: 5 });
            r.engine
                .next
                .push(Action::Apply(entry(2, 5, RequestId::new(3, 2), &epoch)));
        }
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);
        let epochs = r.engine.proposed.iter().filter(
            |p| matches!(Request::decode(&p.command), Ok(Request::LeaseEpoch(e)) if e.era == 5),
        );
        assert_eq!(
            epochs.count(),
            1,
            "a new leader proposes its lease epoch at once"
        );
        r
    }

    fn keep_alive(r: &mut Replica<Scripted, u32>, asked_at: u64, answered_at: u64) -> Answer {
        keep_alive_of(r, 9, asked_at, answered_at)
    }

    fn keep_alive_of(
        r: &mut Replica<Scripted, u32>,
        lease: i64,
        asked_at: u64,
        answered_at: u64,
    ) -> Answer {
        let mut out = Out::new();
        r.set_clock(asked_at);
        let id = RequestId::new(4, asked_at);
        let call = ClientCall {
            id,
            waiter: 1,
            call: Call::KeepAlive(lease),
        };
        r.submit(vec![call], &mut out);
        assert!(
            answers(&mut out).is_empty(),
            "nothing is answered before the leadership round"
        );
        assert_eq!(r.engine.reads.last().map(|read| read.id), Some(id));
        r.set_clock(answered_at);
        r.engine.next.push(Action::ReadReady(id));
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);
        let mut answered = answers(&mut out);
        assert_eq!(answered.len(), 1, "{answered:?}");
        answered.remove(0).1
    }

    #[test]
    fn a_keep_alive_is_answered_only_after_a_fresh_round_in_the_leaders_own_epoch() {
        let mut r = leader_with_lease(true);
        assert_eq!(keep_alive(&mut r, 1_000_000, 1_010_000), Answer::Ttl(10));
        // A round that started longer ago than the window: the leader may have been paused
        // and replaced meanwhile, so the holder asks again.
        let late = 2_000_000 + WINDOW_US + 1;
        assert!(matches!(
            keep_alive(&mut r, 2_000_000, late),
            Answer::Refused(Refusal::NotLeader(_))
        ));
        // Deposed between the round and its end: refused too.
        r.engine.next.clear();
        let asked = keep_alive_deposed(&mut r);
        assert!(matches!(asked, Answer::Refused(Refusal::NotLeader(_))));

        // Before its lease epoch applied, a leader renews nothing.
        let mut early = leader_with_lease(false);
        assert!(matches!(
            keep_alive(&mut early, 1_000_000, 1_010_000),
            Answer::Refused(Refusal::NotLeader(_))
        ));
    }

    /// A client whose keep-alive timed out asks again under the same id. If the round its
    /// first try started confirms it, the answer is judged by when that try was asked: the
    /// leader may have been paused and replaced in between (the simulator found this).
    #[test]
    fn a_keep_alive_asked_again_is_judged_by_its_first_try() {
        let mut r = leader_with_lease(true);
        let mut out = Out::new();
        let id = RequestId::new(4, 77);
        let call = |waiter| ClientCall {
            id,
            waiter,
            call: Call::KeepAlive(9),
        };
        r.set_clock(1_000_000);
        r.submit(vec![call(1)], &mut out);
        // Paused past the window; the retry arrives as it resumes, then the first round ends.
        let resumed = 1_000_000 + WINDOW_US + 1;
        r.set_clock(resumed);
        r.submit(vec![call(2)], &mut out);
        r.engine.next.push(Action::ReadReady(id));
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);
        let answered = answers(&mut out);
        assert!(
            matches!(
                answered.as_slice(),
                [(2, Answer::Refused(Refusal::NotLeader(_)))]
            ),
            "{answered:?}"
        );
    }

    /// Lease epochs the replica proposed.
    fn epochs_proposed(r: &Replica<Scripted, u32>) -> Vec<u64> {
        r.engine
            .proposed
            .iter()
            .filter_map(|p| match Request::decode(&p.command) {
                Ok(Request::LeaseEpoch(e)) => Some(e.era),
                _ => None,
            })
            .collect()
    }

    /// The engine applies `request` at `index` on the next message.
    fn apply(r: &mut Replica<Scripted, u32>, index: u64, request: &Request) {
        let id = RequestId::new(3, index);
        r.engine
            .next
            .push(Action::Apply(entry(index, 0, id, request)));
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut Out::new());
    }

    fn apply_epoch(r: &mut Replica<Scripted, u32>, index: u64, era: u64) {
        apply(r, index, &Request::LeaseEpoch(LeaseEpochRequest { era }));
    }

    /// A member of a leaderless cluster holding lease 9 (TTL 10 s).
    fn peer_with_lease() -> Replica<Scripted, u32> {
        let mut r = replica(Role::Peer, None, 0);
        apply(
            &mut r,
            1,
            &Request::LeaseGrant(LeaseGrantRequest { id: 9, ttl: 10 }),
        );
        r
    }

    /// A keep-alive of lease 9 answered in the step that takes it (refused: no round).
    fn keep_alive_answered_at_once(r: &mut Replica<Scripted, u32>, seq: u64) -> Answer {
        let mut out = Out::new();
        let call = ClientCall {
            id: RequestId::new(4, seq),
            waiter: 1,
            call: Call::KeepAlive(9),
        };
        r.submit(vec![call], &mut out);
        let mut answered = answers(&mut out);
        assert_eq!(answered.len(), 1, "{answered:?}");
        answered.remove(0).1
    }

    #[test]
    fn without_a_leader_a_member_claims_the_lease_clocks_and_keeps_them_while_its_epoch_is_newest()
    {
        let mut r = peer_with_lease();
        let mut out = Out::new();
        // No keeper yet: refused, with nobody to name.
        assert_eq!(
            keep_alive_answered_at_once(&mut r, 1),
            Answer::Refused(Refusal::NotLeader(None))
        );
        // A new cluster: node 1 claims after 10 ticks (half an election timeout of 15, plus a
        // quarter of one for its id).
        for _ in 0..9 {
            r.tick(&mut out);
        }
        assert!(epochs_proposed(&r).is_empty());
        r.tick(&mut out);
        let claimed = 1 << 32 | 1;
        assert_eq!(epochs_proposed(&r), [claimed]);
        apply_epoch(&mut r, 2, claimed);
        assert_eq!(r.lease_keeper(), Some(NodeId(1)));
        assert_eq!(keep_alive(&mut r, 1_000_000, 1_010_000), Answer::Ttl(10));
        // The keeper tells the others it is alive.
        out.clear();
        for _ in 0..4 {
            r.tick(&mut out);
        }
        let pinged: Vec<NodeId> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    message: PeerMessage::KeeperAlive { era },
                } if *era == claimed => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(pinged, [NodeId(2), NodeId(3)]);
        // Node 2's claim overtakes it in the log: its keep-alives are refused, naming node 2.
        let overtaken = 2 << 32 | 2;
        apply_epoch(&mut r, 3, overtaken);
        r.set_clock(2_000_000);
        assert_eq!(
            keep_alive_answered_at_once(&mut r, 3),
            Answer::Refused(Refusal::NotLeader(Some(NodeId(2))))
        );
    }

    #[test]
    fn a_keeper_restarted_claims_its_clocks_anew_before_renewing() {
        // Node 1's epoch from before its restart is still the newest: expiries it proposed
        // then may yet be decided, so it renews nothing under that epoch.
        let mut r = peer_with_lease();
        let earlier = 3 << 32 | 1;
        apply_epoch(&mut r, 2, earlier);
        assert_eq!(
            keep_alive_answered_at_once(&mut r, 1),
            Answer::Refused(Refusal::NotLeader(Some(NodeId(1))))
        );
        let mut out = Out::new();
        for _ in 0..10 {
            r.tick(&mut out);
        }
        let anew = 4 << 32 | 1;
        assert_eq!(
            epochs_proposed(&r),
            [anew],
            "it claims at once, as on a new cluster"
        );
        apply_epoch(&mut r, 3, anew);
        assert_eq!(keep_alive(&mut r, 1_000_000, 1_010_000), Answer::Ttl(10));
    }

    #[test]
    fn a_member_that_hears_the_keeper_does_not_claim_and_claims_once_it_falls_silent() {
        let mut r = replica(Role::Peer, None, 0);
        let keeper = 1 << 32 | 2;
        apply_epoch(&mut r, 1, keeper);
        let mut out = Out::new();
        for tick in 0..200 {
            if tick % 4 == 0 {
                let alive = PeerMessage::KeeperAlive { era: keeper };
                r.receive(NodeId(2), alive, &mut out);
            }
            r.tick(&mut out);
        }
        assert!(epochs_proposed(&r).is_empty(), "the keeper is alive");
        // Last heard at tick 196; silent for two election timeouts plus half of one (37
        // ticks, node 1), it claims over the keeper's epoch.
        for _ in 0..32 {
            r.tick(&mut out);
        }
        assert!(epochs_proposed(&r).is_empty());
        r.tick(&mut out);
        assert_eq!(epochs_proposed(&r), [2 << 32 | 1]);
    }

    fn keep_alive_deposed(r: &mut Replica<Scripted, u32>) -> Answer {
        let mut out = Out::new();
        r.set_clock(3_000_000);
        let id = RequestId::new(4, 99);
        let call = ClientCall {
            id,
            waiter: 1,
            call: Call::KeepAlive(9),
        };
        r.submit(vec![call], &mut out);
        r.engine.status.era = 6;
        r.engine.next.push(Action::ReadReady(id));
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);
        answers(&mut out).remove(0).1
    }

    #[test]
    fn an_expiry_is_proposed_in_the_step_that_decides_it_bound_to_its_era() {
        let mut r = leader_with_lease(true);
        r.lease_check_ticks = 1;
        let mut out = Out::new();
        r.set_clock(1_000_000);
        r.tick(&mut out); // the epoch's first sweep: 10 s plus the 150 ms extension
        r.set_clock(11_140_000);
        r.tick(&mut out);
        let expiries = |r: &Replica<Scripted, u32>| {
            r.engine
                .proposed
                .iter()
                .filter_map(|p| match Request::decode(&p.command) {
                    Ok(Request::LeaseExpire(e)) => Some((e.id, e.era, e.granted_at)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert!(expiries(&r).is_empty(), "not before TTL plus the extension");
        r.set_clock(11_150_000);
        r.tick(&mut out);
        assert_eq!(
            expiries(&r),
            [(9, 5, Some(1))],
            "lease 9's grant was entry 1"
        );
        // Its revoke decided, the lease is not renewed any more.
        assert_eq!(keep_alive(&mut r, 11_200_000, 11_210_000), Answer::Ttl(0));
    }

    /// [`leader_with_lease`] keeping the clocks, swept at 1 s and again at 11.15 s: lease 9
    /// (granted at entry 1, TTL 10 s, plus the 150 ms extension) is past its deadline, and
    /// its expiry proposed.
    fn keeper_past_lease_9s_deadline() -> (Replica<Scripted, u32>, Out) {
        let mut r = leader_with_lease(true);
        r.lease_check_ticks = 1;
        let mut out = Out::new();
        r.set_clock(1_000_000);
        r.tick(&mut out);
        r.set_clock(11_150_000);
        r.tick(&mut out);
        (r, out)
    }

    fn revoke_9() -> Request {
        Request::LeaseRevoke(LeaseRevokeRequest { id: 9 })
    }

    /// Lease 9 granted again, for 60 s.
    fn grant_9_again() -> Request {
        Request::LeaseGrant(LeaseGrantRequest { id: 9, ttl: 60 })
    }

    #[test]
    fn an_expiry_decided_on_a_lagging_store_leaves_the_lease_granted_again_alone() {
        let (mut r, mut out) = keeper_past_lease_9s_deadline();
        let is_expiry =
            |p: &&Proposal| matches!(Request::decode(&p.command), Ok(Request::LeaseExpire(_)));
        let expiry = r.engine.proposed.iter().find(is_expiry).cloned().unwrap();
        // Meanwhile its client revoked it and granted id 9 again, and the log orders the
        // expiry after both.
        apply(&mut r, 3, &revoke_9());
        apply(&mut r, 4, &grant_9_again());
        let entry = Entry {
            index: 5,
            era: 5,
            payload: Payload::Command(expiry),
        };
        r.engine.next.push(Action::Apply(entry));
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);
        let granted_at = r.store.read().leases().get(&9).map(|l| l.granted_at);
        assert_eq!(granted_at, Some(4), "the new lease stays");
        assert_eq!(keep_alive(&mut r, 11_200_000, 11_210_000), Answer::Ttl(60));
    }

    #[test]
    fn a_lease_granted_again_inside_a_snapshot_gets_a_clock_of_its_own() {
        let (mut r, mut out) = keeper_past_lease_9s_deadline();
        // A snapshot brings its client's revoke and a grant of id 9 again.
        let mut theirs = KvStore::new();
        let log = [
            Request::LeaseGrant(LeaseGrantRequest { id: 9, ttl: 10 }),
            Request::LeaseEpoch(LeaseEpochRequest { era: 5 }),
            revoke_9(),
            grant_9_again(),
        ];
        for (index, request) in (1..).zip(&log) {
            theirs.apply(&entry(index, 5, RequestId::new(3, index), request));
        }
        let snapshot = Snapshot {
            membership: None,
            meta: SnapshotMeta { index: 4, era: 5 },
            data: Bytes::from(theirs.snapshot()),
        };
        r.engine.next.push(Action::Restore(snapshot));
        r.receive(NodeId(2), PeerMessage::Engine(0), &mut out);
        r.snapshot_loaded(Ok(theirs), &mut out);
        assert_eq!(
            r.store.read().leases().get(&9).map(|l| l.granted_at),
            Some(4)
        );
        // The new lease is not doomed with the old one.
        assert_eq!(keep_alive(&mut r, 11_200_000, 11_210_000), Answer::Ttl(60));
    }

    #[test]
    fn a_lease_granted_again_under_an_expired_ones_id_gets_a_clock_of_its_own() {
        let (mut r, mut out) = keeper_past_lease_9s_deadline();
        // The expiry applies, and a client grants id 9 again before the next sweep: the new
        // lease is renewed, and not expired a second later by the old lease's retry.
        apply(
            &mut r,
            3,
            &Request::LeaseExpire(LeaseExpireRequest {
                id: 9,
                era: 5,
                granted_at: Some(1),
            }),
        );
        apply(&mut r, 4, &grant_9_again());
        assert_eq!(keep_alive(&mut r, 11_200_000, 11_210_000), Answer::Ttl(60));
        let mut clock = 11_210_000;
        while clock < 60_000_000 {
            clock += 50_000;
            r.set_clock(clock);
            r.tick(&mut out);
        }
        let expiries = r.engine.proposed.iter().filter(
            |p| matches!(Request::decode(&p.command), Ok(Request::LeaseExpire(e)) if e.id == 9),
        );
        assert_eq!(expiries.count(), 1, "only the first lease's");
    }

    #[test]
    fn a_retried_grant_answered_from_its_session_does_not_restart_a_doomed_lease() {
        // Lease 11 granted by client 8, found expired; then the same grant applied again (a
        // retry placed in the log twice): answered from the session, it changes nothing, and
        // the lease stays doomed.
        let mut r = leader_with_lease(true);
        r.lease_check_ticks = 1;
        let grant = |r: &mut Replica<Scripted, u32>, index| {
            let grant = Request::LeaseGrant(LeaseGrantRequest { id: 11, ttl: 10 });
            r.engine
                .next
                .push(Action::Apply(entry(index, 5, RequestId::new(8, 1), &grant)));
            r.receive(NodeId(2), PeerMessage::Engine(0), &mut Out::new());
        };
        grant(&mut r, 3);
        let mut out = Out::new();
        r.set_clock(1_000_000);
        r.tick(&mut out);
        r.set_clock(11_150_000);
        r.tick(&mut out);
        grant(&mut r, 4);
        assert_eq!(
            keep_alive_of(&mut r, 11, 11_200_000, 11_210_000),
            Answer::Ttl(0)
        );
    }

    fn time_to_live(r: &mut Replica<Scripted, u32>, at: u64) -> Answer {
        let mut out = Out::new();
        r.set_clock(at);
        let call = ClientCall {
            id: RequestId::new(4, at),
            waiter: 1,
            call: Call::TimeToLive(9),
        };
        r.submit(vec![call], &mut out);
        let mut answered = answers(&mut out);
        assert_eq!(answered.len(), 1, "{answered:?}");
        answered.remove(0).1
    }

    #[test]
    fn time_to_live_never_exceeds_the_granted_ttl_even_with_a_new_keepers_extension() {
        let mut r = leader_with_lease(true);
        r.lease_check_ticks = 1;
        let mut out = Out::new();
        r.set_clock(1_000_000);
        r.tick(&mut out); // the clock runs to 11.15 s: the TTL plus the extension
        assert_eq!(time_to_live(&mut r, 1_000_000), Answer::Ttl(10));
        assert_eq!(time_to_live(&mut r, 3_000_000), Answer::Ttl(9));
        assert_eq!(time_to_live(&mut r, 6_000_000), Answer::Ttl(6));
        assert_eq!(time_to_live(&mut r, 11_140_000), Answer::Ttl(1));
    }
}
