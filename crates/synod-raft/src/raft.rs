//! The Raft state machine: state, role changes, persistence bookkeeping and the dispatch of
//! inputs to the handlers in `election`, `replication`, `read_index` and `transfer`.

use std::collections::BTreeMap;

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{
    Action, Engine, Entry, Input, Log, LogIndex, Membership, NodeId, Payload, PersistId,
    PersistQueue, Rejection, RequestId, Rng, Role, Snapshot, SnapshotMeta, Status,
};
use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::message::{Message, Term};
use crate::progress::Progress;
use crate::read_index::ReadQueue;

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
    /// The persisted log is not a valid Raft log.
    #[error("persisted log is invalid: {0}")]
    Log(String),
}

/// What only a leader keeps.
#[derive(Debug)]
pub(crate) struct LeaderState {
    /// Per follower (paper Figure 2: nextIndex[], matchIndex[]).
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Index of this term's first entry (the no-op); reads wait until it commits.
    pub(crate) term_start_index: LogIndex,
    pub(crate) heartbeat_elapsed: u64,
    pub(crate) quorum_check_elapsed: u64,
    pub(crate) reads: ReadQueue,
    /// An ongoing leadership transfer: the target and the ticks spent so far.
    pub(crate) transfer: Option<(NodeId, u64)>,
    /// Members the last committed change removed that have not yet been sent a commit point
    /// covering it, with the tick they were removed at: they are replicated to a while
    /// longer, so they apply their own removal (and their runtime stops them).
    pub(crate) lingering: BTreeMap<NodeId, u64>,
}

/// One Raft node.
#[derive(Debug)]
pub struct Raft {
    pub(crate) id: NodeId,
    /// Every other member, voters and learners: whom a leader replicates to.
    pub(crate) peers: Vec<NodeId>,
    /// The membership in force: set by the newest membership entry in the log, committed or
    /// not (thesis 4.1), else by the snapshot, else by the boot configuration.
    pub(crate) membership: Membership,
    /// The index of the entry that set `membership` (0 when the snapshot or boot did).
    pub(crate) membership_index: LogIndex,
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    // Persistent state (paper Figure 2).
    pub(crate) term: Term,
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) log: Log,
    // Volatile state.
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) commit_index: LogIndex,
    pub(crate) applied_index: LogIndex,
    pub(crate) ticks: u64,
    pub(crate) election_elapsed: u64,
    pub(crate) election_timeout: u64,
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) lead: Option<LeaderState>,
    /// The newest snapshot, which a leader sends to followers that need compacted entries.
    pub(crate) snapshot: Option<Snapshot>,
    /// A snapshot being received from the leader: what it covers, and the bytes so far.
    pub(crate) incoming: Option<(SnapshotMeta, Vec<u8>)>,
    /// What this step must persist, and how far the log is durable (a leader counts itself
    /// in a commit quorum only that far).
    pub(crate) disk: PersistQueue,
}

impl Raft {
    /// A node that has never run: term 0, empty log.
    pub fn new(config: Config) -> Result<Raft, ConfigError> {
        config.validate()?;
        let mut raft = Raft {
            id: config.id,
            peers: Vec::new(),
            membership: Membership::default(),
            membership_index: 0,
            rng: Rng::new(config.seed),
            config,
            term: 0,
            voted_for: None,
            log: Log::default(),
            role: Role::Follower,
            leader: None,
            commit_index: 0,
            applied_index: 0,
            ticks: 0,
            election_elapsed: 0,
            election_timeout: 0,
            votes: BTreeMap::new(),
            lead: None,
            snapshot: None,
            incoming: None,
            disk: PersistQueue::new(0),
        };
        raft.refresh_membership();
        raft.reset_election_timer();
        Ok(raft)
    }

    /// A node rebuilt from what it persisted before a crash: its hard state (as written by
    /// `Persist::hard_state`), its latest snapshot, and the log entries that follow the
    /// snapshot. The state machine is restored from the same snapshot by the runtime, so
    /// everything the snapshot covers counts as committed and applied. Everything else
    /// volatile starts afresh.
    pub fn restart(
        config: Config,
        hard_state: Option<&[u8]>,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> Result<Raft, RestartError> {
        let mut raft = Raft::new(config)?;
        if let Some(bytes) = hard_state {
            let (term, voted_for) = decode_hard_state(bytes)?;
            raft.term = term;
            raft.voted_for = voted_for;
        }
        let base = snapshot.as_ref().map(|s| s.meta).unwrap_or_default();
        raft.log = Log::from_parts(base, entries).map_err(RestartError::Log)?;
        if raft.log.last_era() > raft.term {
            return Err(RestartError::Log(format!(
                "last entry has term {} beyond the persisted term {}",
                raft.log.last_era(),
                raft.term
            )));
        }
        raft.commit_index = base.index;
        raft.applied_index = base.index;
        raft.snapshot = snapshot;
        raft.disk = PersistQueue::new(raft.log.last_index());
        raft.refresh_membership();
        Ok(raft)
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Who this node voted for in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }

    /// The node's log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Highest index known committed.
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    /// The leader's view of a follower, when leading.
    pub fn progress(&self, follower: NodeId) -> Option<&Progress> {
        self.lead.as_ref()?.progress.get(&follower)
    }

    /// Number of voters.
    pub(crate) fn cluster_size(&self) -> usize {
        self.membership.voter_count()
    }

    pub(crate) fn quorum(&self) -> usize {
        synod_core::quorum::majority(self.cluster_size())
    }

    /// Whether `id` votes in the membership in force.
    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.membership.is_voter(id)
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout = self.rng.range(
            self.config.election_timeout_ticks_min,
            self.config.election_timeout_ticks_max,
        );
    }

    /// Moves to `term` (when higher) as a follower of `leader` (paper 5.1: a node that sees
    /// a higher term adopts it and reverts to follower).
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>, out: &mut Out) {
        assert!(
            term >= self.term,
            "term never decreases: {} -> {term}",
            self.term
        );
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.disk.draft.hard_state = true;
            // A snapshot half received from an earlier term's leader is never finished: a
            // leader starts every transfer at the first chunk. Its bytes go now, not at the
            // next transfer, which may never come.
            self.incoming = None;
        }
        if let Some(lead) = self.lead.take() {
            let hint = leader;
            lead.reads.reject_all(hint, out);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer();
    }

    /// Appends an entry of the current term to the log and to the pending persist.
    pub(crate) fn append(&mut self, payload: Payload) -> LogIndex {
        let entry = Entry {
            index: self.log.last_index() + 1,
            era: self.term,
            payload,
        };
        let index = entry.index;
        self.disk.draft.entries.push(entry.clone());
        self.log.push(entry);
        index
    }

    /// Removes log entries from `index` on, here and (via the pending persist) on disk.
    pub(crate) fn truncate(&mut self, index: LogIndex) {
        assert!(
            index > self.commit_index,
            "committed entry {index} would be removed (commit {})",
            self.commit_index
        );
        self.log.truncate_from(index);
        self.disk.truncate(index);
    }

    /// Pushes the pending persist, if any. Called before any send that depends on it.
    pub(crate) fn flush(&mut self, out: &mut Out) {
        let (term, voted_for) = (self.term, self.voted_for);
        self.disk.flush(
            self.log.last_index(),
            || encode_hard_state(term, voted_for),
            out,
        );
    }

    /// Sends a message that depends on everything decided so far being durable.
    pub(crate) fn send(&mut self, to: NodeId, message: Message, out: &mut Out) {
        self.flush(out);
        out.push(Action::Send { to, message });
    }

    /// Sends a leader's message that depends on nothing unpersisted but new log entries.
    /// Thesis 10.2.1: a leader may replicate entries in parallel with writing them to its
    /// own disk, because it counts itself in a commit quorum only once they are durable.
    pub(crate) fn send_ahead_of_log(&mut self, to: NodeId, message: Message, out: &mut Out) {
        if self.disk.holds_more_than_entries() {
            self.flush(out);
        }
        out.push(Action::Send { to, message });
    }

    fn on_persisted(&mut self, id: PersistId, out: &mut Out) {
        self.disk.persisted(id);
        if self.role == Role::Leader {
            self.maybe_commit(out);
        }
    }

    /// Emits `Apply` for every committed entry not yet applied (paper Figure 2, "Rules for
    /// Servers": if commitIndex > lastApplied, apply).
    pub(crate) fn apply_committed(&mut self, out: &mut Out) {
        self.log
            .apply_through(&mut self.applied_index, self.commit_index, out);
    }

    /// Raises the commit index to `index` (never lowers it) and applies.
    pub(crate) fn commit_to(&mut self, index: LogIndex, out: &mut Out) {
        if index <= self.commit_index {
            return;
        }
        assert!(
            index <= self.log.last_index(),
            "commit {index} beyond the last index {}",
            self.log.last_index()
        );
        self.commit_index = index;
        self.apply_committed(out);
    }

    pub(crate) fn reject(&self, id: RequestId, out: &mut Out) {
        let leader_hint = match (&self.lead, self.leader) {
            (Some(lead), _) => lead.transfer.map(|(to, _)| to),
            (None, hint) => hint,
        };
        out.push(Action::Reject {
            id,
            reason: Rejection::NotLeader { leader_hint },
        });
    }

    fn on_tick(&mut self, out: &mut Out) {
        self.ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader(out);
        } else {
            self.election_elapsed += 1;
            // Learners, removed members and nodes that have not yet learned the membership
            // never campaign (thesis 4.2.1, 4.2.2).
            if self.election_elapsed >= self.election_timeout && self.is_voter(self.id) {
                self.start_election(out);
            }
        }
    }

    /// Whether this node heard from a live leader recently enough to ignore a vote request
    /// (thesis 4.2.3). A leader holding the lease is one that still hears from a quorum.
    pub(crate) fn in_lease(&self) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        match self.role {
            Role::Leader => true,
            _ => {
                self.leader.is_some()
                    && self.election_elapsed < self.config.election_timeout_ticks_min
            }
        }
    }

    fn on_message(&mut self, from: NodeId, message: Message, out: &mut Out) {
        // Messages from outside the membership are taken: a node that joins hears from the
        // leader before it knows the membership, and votes count only from voters.
        if from == self.id {
            return;
        }
        if !self.settle_term(from, &message, out) {
            return;
        }
        let ticks = self.ticks;
        if let Some(progress) = self.follower(from) {
            progress.heard_at = Some(ticks);
        }
        match message {
            Message::PreVote(m) => self.on_pre_vote(from, m, out),
            Message::PreVoteResponse(m) => self.on_pre_vote_response(from, m, out),
            Message::RequestVote(m) => self.on_request_vote(from, m, out),
            Message::RequestVoteResponse(m) => self.on_vote_response(from, m, out),
            Message::AppendEntries(m) => self.on_append_entries(from, m, out),
            Message::AppendEntriesResponse(m) => self.on_append_response(from, m, out),
            Message::Heartbeat(m) => self.on_heartbeat(from, m, out),
            Message::HeartbeatResponse(m) => self.on_heartbeat_response(from, m, out),
            Message::Commit(m) => self.on_commit_notice(from, m, out),
            Message::TimeoutNow(_) => self.on_timeout_now(out),
            Message::InstallSnapshot(m) => self.on_install_snapshot(from, m, out),
            Message::InstallSnapshotResponse(m) => self.on_install_snapshot_response(from, m, out),
        }
    }

    /// Term rules common to every message (paper 5.1). Returns whether the message should
    /// still be handled.
    fn settle_term(&mut self, from: NodeId, message: &Message, out: &mut Out) -> bool {
        let term = message.term();
        if term > self.term {
            match message {
                // Pre-votes are asked and granted for a future term; they change no state.
                Message::PreVote(_) => return !self.in_lease(),
                Message::PreVoteResponse(r) if r.granted => return true,
                Message::RequestVote(r) if !r.leader_transfer && self.in_lease() => return false,
                Message::AppendEntries(_)
                | Message::Heartbeat(_)
                | Message::Commit(_)
                | Message::TimeoutNow(_)
                | Message::InstallSnapshot(_) => self.become_follower(term, Some(from), out),
                _ => self.become_follower(term, None, out),
            }
            return true;
        }
        if term < self.term {
            self.answer_stale(from, message, out);
            return false;
        }
        true
    }

    /// A message from an older term is refused with the current term, so its sender learns
    /// it is out of date (paper 5.1). This also lets a node whose term rose while it was cut
    /// off make the leader step down, when check-quorum makes others ignore its votes.
    fn answer_stale(&mut self, from: NodeId, message: &Message, out: &mut Out) {
        let reply = match message {
            Message::AppendEntries(m) => {
                Message::AppendEntriesResponse(crate::message::AppendEntriesResponse {
                    term: self.term,
                    // No hint to probe from the log's start: a leader of this term that
                    // happens to probe at the same index takes this for its own answer.
                    outcome: crate::message::AppendOutcome::Rejected {
                        prev_log_index: m.prev_log_index,
                        conflict_term: None,
                        conflict_index: self.log.last_index() + 1,
                    },
                })
            }
            // It confirms no read round: the round it names was one of an older term, and
            // the sender may lead again in this term, counting rounds from 1 anew.
            Message::Heartbeat(_) => {
                Message::HeartbeatResponse(crate::message::HeartbeatResponse {
                    term: self.term,
                    read_round: 0,
                })
            }
            Message::InstallSnapshot(m) => {
                Message::InstallSnapshotResponse(crate::message::InstallSnapshotResponse {
                    term: self.term,
                    meta: m.meta,
                    next_offset: 0,
                    done: false,
                })
            }
            Message::PreVote(_) => Message::PreVoteResponse(self.refusal()),
            Message::RequestVote(_) => Message::RequestVoteResponse(self.refusal()),
            _ => return,
        };
        self.send(from, reply, out);
    }

    pub(crate) fn refusal(&self) -> crate::message::VoteResponse {
        crate::message::VoteResponse {
            term: self.term,
            granted: false,
        }
    }
}

impl Engine for Raft {
    type Message = Message;

    fn step(&mut self, input: Input<Message>, out: &mut Out) {
        match input {
            Input::Tick => self.on_tick(out),
            Input::Receive { from, message } => self.on_message(from, message, out),
            Input::Propose(proposals) => self.on_propose(proposals, out),
            Input::Read(reads) => self.on_read(reads, out),
            Input::Persisted(id) => self.on_persisted(id, out),
            Input::Snapshotted(snapshot) => self.on_snapshotted(snapshot),
            Input::TransferLeadership { to } => self.on_transfer_leadership(to, out),
            Input::ChangeMembership { id, change } => self.on_change_membership(id, change, out),
        }
        self.flush(out);
        debug_assert!(self.commit_index <= self.log.last_index());
        debug_assert!(self.applied_index == self.commit_index);
    }

    fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            leader: self.leader,
            era: self.term,
            commit_index: self.commit_index,
            last_index: self.log.last_index(),
        }
    }

    fn membership(&self) -> Option<&Membership> {
        Some(&self.membership)
    }

    fn election_timer(&self) -> Option<synod_core::ElectionTimer> {
        (self.role != Role::Leader && self.is_voter(self.id)).then_some(synod_core::ElectionTimer {
            elapsed: self.election_elapsed,
            timeout: self.election_timeout,
        })
    }

    fn membership_at(&self, index: LogIndex) -> Option<Membership> {
        Some(self.membership_as_of(index))
    }
}

/// Hard state bytes: the current term and the vote (0 for none).
pub fn encode_hard_state(term: Term, voted_for: Option<NodeId>) -> Vec<u8> {
    let mut enc = Encoder::with_capacity(12);
    enc.u64(term).u64(voted_for.map_or(0, |n| n.0));
    enc.finish()
}

/// Reads hard state written by [`encode_hard_state`].
pub fn decode_hard_state(bytes: &[u8]) -> Result<(Term, Option<NodeId>), DecodeError> {
    let mut dec = Decoder::new(bytes);
    let term = dec.u64("term")?;
    let vote = dec.u64("voted_for")?;
    dec.finish()?;
    Ok((term, (vote != 0).then_some(NodeId(vote))))
}
