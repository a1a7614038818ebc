//! The ZAB state machine: persistent state, the three things a node can be doing (looking,
//! following, leading), persistence bookkeeping and the dispatch of inputs to the handlers
//! in `election`, `leader` and `follower`.

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{
    Action, Engine, Entry, Input, Log, LogIndex, Membership, NodeId, Payload, PersistId,
    PersistQueue, Rejection, RequestId, Rng, Role, Snapshot, SnapshotMeta, Status,
};
use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::election::Looking;
use crate::follower::Following;
use crate::leader::Leading;
use crate::message::{Message, Vote, Zxid};

/// Actions pushed by a step.
pub(crate) type Out = Vec<Action<Message>>;

/// Why a node could not be rebuilt from its persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The hard state bytes do not decode.
    #[error("hard state is corrupt: {0}")]
    HardState(#[from] DecodeError),
    /// The persisted state is not one ZAB can have written.
    #[error("persisted state is inconsistent: {0}")]
    Inconsistent(String),
}

/// What the node is doing.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Electing a leader (Fast Leader Election).
    Looking(Looking),
    /// Following a leader through discovery, synchronization and broadcast.
    Following(Following),
    /// Leading: prospective until a quorum acknowledged NewLeader, established after.
    Leading(Box<Leading>),
}

/// One ZAB node.
#[derive(Debug)]
pub struct Zab {
    pub(crate) id: NodeId,
    /// Whom this node talks to: the members in force and those whose removal has not
    /// committed yet (`membership`).
    pub(crate) peers: Vec<NodeId>,
    /// The membership in force: the newest in the history, committed or not, else the
    /// snapshot's, else the boot one.
    pub(crate) membership: Membership,
    /// Where the history holds `membership` (0 when the snapshot or boot gave it).
    pub(crate) membership_index: LogIndex,
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    // Persistent state (the paper's f.p, f.a and history).
    /// The last epoch this node accepted a NewEpoch of (f.p).
    pub(crate) accepted_epoch: u64,
    /// The leader whose NewEpoch it accepted, so a retransmission can be acknowledged again.
    pub(crate) accepted_leader: Option<NodeId>,
    /// The last epoch this node acknowledged a NewLeader of (f.a).
    pub(crate) current_epoch: u64,
    pub(crate) log: Log,
    // Volatile state.
    pub(crate) phase: Phase,
    pub(crate) commit_index: LogIndex,
    pub(crate) applied_index: LogIndex,
    pub(crate) ticks: u64,
    /// Fast Leader Election's logical clock: the newest election round this node took part
    /// in.
    pub(crate) election_round: u64,
    /// The newest snapshot, which a leader sends to followers that need compacted entries.
    pub(crate) snapshot: Option<Snapshot>,
    /// A snapshot being received from the leader: what it covers, and the bytes so far.
    pub(crate) incoming: Option<(SnapshotMeta, Vec<u8>)>,
    /// What this step must persist, and how far the log is durable (a leader counts itself
    /// in a quorum only that far).
    pub(crate) disk: PersistQueue,
}

impl Zab {
    /// A node that has never run: epoch 0, empty history, looking for a leader.
    pub fn new(config: Config) -> Result<Zab, ConfigError> {
        config.validate()?;
        let id = config.id;
        let mut zab = Zab {
            id,
            peers: Vec::new(),
            membership: Membership::default(),
            membership_index: 0,
            rng: Rng::new(config.seed),
            config,
            accepted_epoch: 0,
            accepted_leader: None,
            current_epoch: 0,
            log: Log::default(),
            phase: Phase::Looking(Looking::new(Vote::NONE)),
            commit_index: 0,
            applied_index: 0,
            ticks: 0,
            election_round: 0,
            snapshot: None,
            incoming: None,
            disk: PersistQueue::new(0),
        };
        zab.refresh_membership();
        zab.phase = Phase::Looking(Looking::new(zab.first_vote()));
        Ok(zab)
    }

    /// A node rebuilt from what it persisted before a crash: its hard state (as written by
    /// `Persist::hard_state`), its latest snapshot, and the history that follows it. It
    /// starts looking for a leader.
    pub fn restart(
        config: Config,
        hard_state: Option<&[u8]>,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> Result<Zab, RestartError> {
        let mut zab = Zab::new(config)?;
        if let Some(bytes) = hard_state {
            let hard = decode_hard_state(bytes)?;
            zab.accepted_epoch = hard.accepted_epoch;
            zab.accepted_leader = hard.accepted_leader;
            zab.current_epoch = hard.current_epoch;
        }
        if zab.current_epoch > zab.accepted_epoch {
            return Err(RestartError::Inconsistent(format!(
                "current epoch {} is above the accepted epoch {}",
                zab.current_epoch, zab.accepted_epoch
            )));
        }
        let base = snapshot.as_ref().map(|s| s.meta).unwrap_or_default();
        zab.log = Log::from_parts(base, entries).map_err(RestartError::Inconsistent)?;
        // A follower holds transactions of epochs up to the one it accepted: its current
        // epoch's, and older ones a new leader synchronized it with.
        if zab.log.last_era() > zab.accepted_epoch {
            return Err(RestartError::Inconsistent(format!(
                "the history ends in epoch {}, beyond the accepted epoch {}",
                zab.log.last_era(),
                zab.accepted_epoch
            )));
        }
        zab.commit_index = base.index;
        zab.applied_index = base.index;
        zab.snapshot = snapshot;
        zab.disk = PersistQueue::new(zab.log.last_index());
        zab.refresh_membership();
        zab.phase = Phase::Looking(Looking::new(zab.first_vote()));
        Ok(zab)
    }

    /// The last epoch this node accepted (f.p).
    pub fn accepted_epoch(&self) -> u64 {
        self.accepted_epoch
    }

    /// The last epoch this node synchronized with (f.a).
    pub fn current_epoch(&self) -> u64 {
        self.current_epoch
    }

    /// The node's history.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Highest position known committed.
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    /// The epoch this node leads as an established leader (a quorum acknowledged its
    /// NewLeader), if it does.
    pub fn established_epoch(&self) -> Option<u64> {
        match &self.phase {
            Phase::Leading(lead) if lead.established => Some(self.accepted_epoch),
            _ => None,
        }
    }

    /// The last zxid of the history.
    pub fn last_zxid(&self) -> Zxid {
        Zxid {
            epoch: self.log.last_era(),
            counter: self.log.last_index(),
        }
    }

    /// The zxid at `index`, if the history holds it (or its snapshot base).
    pub(crate) fn zxid_at(&self, index: LogIndex) -> Option<Zxid> {
        self.log.era(index).map(|epoch| Zxid {
            epoch,
            counter: index,
        })
    }

    /// A vote for this node, as it stands.
    pub(crate) fn own_vote(&self) -> Vote {
        Vote::new(self.id, self.current_epoch, self.last_zxid())
    }

    /// The vote an election starts with: for itself, if it is a voter in its own eyes; no
    /// vote otherwise (a learner, a member being removed, a node that joins must never be
    /// elected, and the others may count it as a voter).
    pub(crate) fn first_vote(&self) -> Vote {
        if self.membership.is_voter(self.id) {
            self.own_vote()
        } else {
            Vote::NONE
        }
    }

    /// A majority of the voters in force.
    pub(crate) fn quorum(&self) -> usize {
        synod_core::quorum::majority(self.membership.voter_count())
    }

    pub(crate) fn session_timeout(&mut self) -> u64 {
        self.rng.range(
            self.config.session_timeout_ticks_min,
            self.config.session_timeout_ticks_max,
        )
    }

    /// Removes history from `index` on, here and (via the pending persist) on disk. Only
    /// what was never committed may go.
    pub(crate) fn truncate(&mut self, index: LogIndex) {
        assert!(
            index > self.commit_index,
            "committed transaction {index} would be removed (commit {})",
            self.commit_index
        );
        if index > self.log.last_index() {
            return;
        }
        self.log.truncate_from(index);
        self.disk.truncate(index);
        if self.membership_index >= index {
            self.refresh_membership();
        }
    }

    /// Appends one transaction to the history and to the pending persist.
    pub(crate) fn push_entry(&mut self, entry: Entry) {
        let membership = matches!(entry.payload, Payload::Membership { .. });
        self.disk.draft.entries.push(entry.clone());
        self.log.push(entry);
        if membership {
            self.refresh_membership();
        }
    }

    /// Pushes the pending persist, if any. Called before any send that depends on it.
    pub(crate) fn flush(&mut self, out: &mut Out) {
        let hard = HardState {
            accepted_epoch: self.accepted_epoch,
            accepted_leader: self.accepted_leader,
            current_epoch: self.current_epoch,
        };
        self.disk
            .flush(self.log.last_index(), || encode_hard_state(&hard), out);
    }

    /// Sends a message that depends on everything decided so far being durable.
    pub(crate) fn send(&mut self, to: NodeId, message: Message, out: &mut Out) {
        self.flush(out);
        out.push(Action::Send { to, message });
    }

    /// Sends a leader's proposal ahead of its own disk write: the leader counts itself in a
    /// quorum only for what is durable, so a follower may log it first (as ZooKeeper's
    /// leader does, and Raft's thesis 10.2.1).
    pub(crate) fn send_ahead_of_log(&mut self, to: NodeId, message: Message, out: &mut Out) {
        if self.disk.holds_more_than_entries() {
            self.flush(out);
        }
        out.push(Action::Send { to, message });
    }

    fn on_persisted(&mut self, id: PersistId, out: &mut Out) {
        self.disk.persisted(id);
        if matches!(self.phase, Phase::Leading(_)) {
            self.leader_on_persisted(out);
        }
    }

    /// Raises the commit point to `index` (never lowers it) and delivers what it covers.
    pub(crate) fn commit_to(&mut self, index: LogIndex, out: &mut Out) {
        let index = index.min(self.log.last_index());
        if index <= self.commit_index {
            return;
        }
        self.commit_index = index;
        self.log
            .apply_through(&mut self.applied_index, self.commit_index, out);
    }

    /// The runtime saved a snapshot of what this node applied: drop the history it covers.
    fn on_snapshotted(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        if meta.index <= self.log.base().index || meta.index > self.applied_index {
            return;
        }
        if self.log.era(meta.index) != Some(meta.era) {
            return;
        }
        self.log.compact_to(meta);
        self.snapshot = Some(snapshot);
        self.refresh_membership();
    }

    pub(crate) fn reject(&self, id: RequestId, out: &mut Out) {
        out.push(Action::Reject {
            id,
            reason: Rejection::NotLeader {
                leader_hint: self.status().leader,
            },
        });
    }

    fn on_tick(&mut self, out: &mut Out) {
        self.ticks += 1;
        match self.phase {
            Phase::Looking(_) => self.looking_tick(out),
            Phase::Following(_) => self.follower_tick(out),
            Phase::Leading(_) => self.leader_tick(out),
        }
    }

    fn on_message(&mut self, from: NodeId, message: Message, out: &mut Out) {
        // Messages count whoever sends them, as in Raft (thesis 4.1): a node whose history is
        // behind may not know a member that the others elect, and must still hear it. What
        // counts is decided where it counts: only voters make quorums, only members follow.
        if from == self.id {
            return;
        }
        match message {
            Message::Notification { round, vote, state } => {
                self.on_notification(from, round, vote, state, out)
            }
            Message::FollowerInfo {
                accepted_epoch,
                accepted_from,
            } => self.on_follower_info(from, (accepted_epoch, accepted_from), out),
            Message::AckEpoch {
                epoch,
                current_epoch,
                last,
                committed,
            } => self.on_ack_epoch(from, epoch, (current_epoch, last), committed, out),
            Message::Ack { epoch, last, ok } => self.on_ack(from, epoch, last, ok, out),
            Message::SnapAck {
                epoch,
                meta,
                next_offset,
                done,
            } => self.on_snap_ack(from, epoch, meta, next_offset, done, out),
            Message::AckNewLeader { epoch } => self.on_ack_new_leader(from, epoch, out),
            Message::Ping { epoch, synced } => self.on_ping(from, epoch, synced, out),
            Message::Confirmed { epoch, round } => self.on_confirmed(from, epoch, round, out),
            // Leader to follower.
            message => self.on_leader_message(from, message, out),
        }
    }

    /// Goes back to election (a follower that lost its leader, a leader that lost its
    /// quorum, a prospective leader that could not establish its epoch).
    pub(crate) fn start_election(&mut self, out: &mut Out) {
        let vote = self.first_vote();
        if let Phase::Leading(lead) =
            std::mem::replace(&mut self.phase, Phase::Looking(Looking::new(vote)))
        {
            lead.reject_reads(out);
        }
        self.incoming = None;
        self.election_round += 1;
        self.broadcast_vote(out);
    }
}

impl Engine for Zab {
    type Message = Message;

    fn step(&mut self, input: Input<Message>, out: &mut Out) {
        match input {
            Input::Tick => self.on_tick(out),
            Input::Receive { from, message } => self.on_message(from, message, out),
            Input::Propose(proposals) => self.on_propose(proposals, out),
            Input::Read(reads) => self.on_read(reads, out),
            Input::Persisted(id) => self.on_persisted(id, out),
            Input::Snapshotted(snapshot) => self.on_snapshotted(snapshot),
            // ZooKeeper moves no leadership on request: the leader stays until it fails.
            Input::TransferLeadership { .. } => {}
            Input::ChangeMembership { id, change } => self.on_change_membership(id, change, out),
        }
        self.flush(out);
        debug_assert!(self.commit_index <= self.log.last_index());
        debug_assert!(self.applied_index == self.commit_index);
    }

    fn status(&self) -> Status {
        let (role, leader, era) = match &self.phase {
            Phase::Looking(_) => (Role::Candidate, None, self.accepted_epoch),
            Phase::Following(f) => (
                Role::Follower,
                f.synced.then_some(f.leader),
                self.accepted_epoch,
            ),
            Phase::Leading(lead) if lead.established => {
                (Role::Leader, Some(self.id), self.accepted_epoch)
            }
            Phase::Leading(_) => (Role::Candidate, None, self.accepted_epoch),
        };
        Status {
            id: self.id,
            role,
            leader,
            era,
            commit_index: self.commit_index,
            last_index: self.log.last_index(),
        }
    }

    fn membership(&self) -> Option<&Membership> {
        Some(&self.membership)
    }

    /// A follower's session timer: it goes back to election after this long without a word
    /// from its leader.
    fn election_timer(&self) -> Option<synod_core::ElectionTimer> {
        match &self.phase {
            Phase::Following(f) => Some(synod_core::ElectionTimer {
                elapsed: f.heard_elapsed,
                timeout: f.timeout,
            }),
            _ => None,
        }
    }

    fn membership_at(&self, index: LogIndex) -> Option<Membership> {
        Some(self.membership_as_of(index))
    }
}

/// What a ZAB node persists besides its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HardState {
    /// f.p: the last epoch accepted.
    pub accepted_epoch: u64,
    /// The leader that proposed it.
    pub accepted_leader: Option<NodeId>,
    /// f.a: the last epoch synchronized with.
    pub current_epoch: u64,
}

/// Hard state bytes.
pub fn encode_hard_state(hard: &HardState) -> Vec<u8> {
    let mut enc = Encoder::with_capacity(24);
    enc.u64(hard.accepted_epoch)
        .u64(hard.accepted_leader.map_or(0, |n| n.0))
        .u64(hard.current_epoch);
    enc.finish()
}

/// Reads hard state written by [`encode_hard_state`].
pub fn decode_hard_state(bytes: &[u8]) -> Result<HardState, DecodeError> {
    let mut dec = Decoder::new(bytes);
    let accepted_epoch = dec.u64("accepted epoch")?;
    let leader = dec.u64("accepted leader")?;
    let current_epoch = dec.u64("current epoch")?;
    dec.finish()?;
    Ok(HardState {
        accepted_epoch,
        accepted_leader: (leader != 0).then_some(NodeId(leader)),
        current_epoch,
    })
}
