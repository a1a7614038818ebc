//! The primary-backup state machine: what a member persists (its view and its history), what
//! it does as primary or as backup, and failover.

use std::collections::{BTreeMap, VecDeque};

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{
    Action, Engine, Entry, Input, Log, LogIndex, NodeId, Payload, PersistQueue, Proposal,
    ReadConsistency, ReadRequest, Rejection, RequestId, Role, Snapshot, Status,
};
use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::message::{first_view, next_view, primary_of, Message};

type Out = Vec<Action<Message>>;

/// Why a member could not be rebuilt from its persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The hard state bytes do not decode.
    #[error("hard state is corrupt: {0}")]
    HardState(#[from] DecodeError),
    /// The persisted state is not one this engine can have written.
    #[error("persisted state is inconsistent: {0}")]
    Inconsistent(String),
}

/// The primary's view of one backup.
#[derive(Debug)]
struct Backup {
    /// The next position to send it.
    next: LogIndex,
    /// It holds this primary's history durably through here, as it said in this view.
    acked: LogIndex,
    /// It answered in this view at least once with its history matching.
    answered: bool,
    /// The newest read round it confirmed.
    confirmed: u64,
    /// Ticks since it last answered, or since entries were last sent to it.
    idle: u64,
    /// Ticks since it last answered at all.
    silent: u64,
    /// Where the primary last resent from after a refusal, and when: for a retry interval,
    /// a copy of that refusal (a duplicate, or the answer to an earlier send) starts no
    /// other resend, or duplication would multiply the copies in flight.
    resent_from: Option<(LogIndex, u64)>,
}

/// Linearizable reads waiting for every backup to confirm the view.
#[derive(Debug)]
struct ReadRound {
    round: u64,
    index: LogIndex,
    ids: Vec<RequestId>,
}

#[derive(Debug)]
struct Primary {
    /// Every backup holds this primary's history through `view_start`: writes may begin.
    ready: bool,
    /// Where the history ended when this view began.
    view_start: LogIndex,
    backups: BTreeMap<NodeId, Backup>,
    round: u64,
    reads: VecDeque<ReadRound>,
    since_heartbeat: u64,
}

/// What the member is doing.
#[derive(Debug)]
enum Duty {
    Primary(Box<Primary>),
    Backup {
        /// It heard the primary of its view in this life.
        heard: bool,
        /// Ticks since it last did.
        silent: u64,
    },
}

/// One member of a synchronous primary-backup group.
#[derive(Debug)]
pub struct PrimaryBackup {
    id: NodeId,
    peers: Vec<NodeId>,
    config: Config,
    // Persistent state.
    view: u64,
    log: Log,
    // Volatile state.
    duty: Duty,
    commit_index: LogIndex,
    applied_index: LogIndex,
    disk: PersistQueue,
    ticks: u64,
}

impl PrimaryBackup {
    /// A member that has never run: the first view, an empty history.
    pub fn new(config: Config) -> Result<PrimaryBackup, ConfigError> {
        config.validate()?;
        let peers = config
            .voters
            .iter()
            .copied()
            .filter(|&n| n != config.id)
            .collect();
        Ok(PrimaryBackup {
            id: config.id,
            peers,
            view: first_view(&config.voters),
            config,
            log: Log::default(),
            duty: Duty::Backup {
                heard: false,
                silent: 0,
            },
            commit_index: 0,
            applied_index: 0,
            disk: PersistQueue::new(0),
            ticks: 0,
        })
    }

    /// A member rebuilt from what it persisted: its view (as written by `Persist::hard_state`),
    /// its latest snapshot and the history after it. A member that was primary of its view
    /// starts the next view at its first tick, so nothing said in its previous life (a read
    /// round, an entry it had not made durable) is taken for something of this one.
    pub fn restart(
        config: Config,
        hard_state: Option<&[u8]>,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> Result<PrimaryBackup, RestartError> {
        let mut node = PrimaryBackup::new(config)?;
        if let Some(bytes) = hard_state {
            node.view = decode_view(bytes)?;
        }
        if !node.config.voters.contains(&primary_of(node.view)) {
            return Err(RestartError::Inconsistent(format!(
                "view {} names a primary that is not a member",
                node.view
            )));
        }
        let base = snapshot.as_ref().map(|s| s.meta).unwrap_or_default();
        node.log = Log::from_parts(base, entries).map_err(RestartError::Inconsistent)?;
        if node.log.last_era() > node.view {
            return Err(RestartError::Inconsistent(format!(
                "the history holds entries of view {}, beyond the view {} it is in",
                node.log.last_era(),
                node.view
            )));
        }
        node.commit_index = base.index;
        node.applied_index = base.index;
        node.disk = PersistQueue::new(node.log.last_index());
        Ok(node)
    }

    /// The view this member is in.
    pub fn view(&self) -> u64 {
        self.view
    }

    /// Its history.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The view it leads with writes open, if it is a ready primary.
    pub fn ready_view(&self) -> Option<u64> {
        match &self.duty {
            Duty::Primary(p) if p.ready => Some(self.view),
            _ => None,
        }
    }

    /// Everything through here is on every member.
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    fn primary(&mut self) -> Option<&mut Primary> {
        match &mut self.duty {
            Duty::Primary(p) => Some(p),
            Duty::Backup { .. } => None,
        }
    }

    #[cfg(any(test, feature = "inject-bugs"))]
    fn automatic_failover_ticks(&self) -> u64 {
        self.config.bugs.automatic_failover_ticks
    }

    #[cfg(not(any(test, feature = "inject-bugs")))]
    fn automatic_failover_ticks(&self) -> u64 {
        0
    }

    fn flush(&mut self, out: &mut Out) {
        let view = self.view;
        self.disk
            .flush(self.log.last_index(), || encode_view(view), out);
    }

    /// Sends a message that depends on everything decided so far being durable.
    fn send(&mut self, to: NodeId, message: Message, out: &mut Out) {
        self.flush(out);
        out.push(Action::Send { to, message });
    }

    fn reject(&self, id: RequestId, out: &mut Out) {
        out.push(Action::Reject {
            id,
            reason: Rejection::NotLeader {
                leader_hint: self.status().leader.filter(|&n| n != self.id),
            },
        });
    }

    /// Moves to a later view as a backup of its primary, durably before it answers anyone.
    fn join_view(&mut self, view: u64, out: &mut Out) {
        if let Duty::Primary(primary) = std::mem::replace(
            &mut self.duty,
            Duty::Backup {
                heard: false,
                silent: 0,
            },
        ) {
            for read in primary.reads {
                for id in read.ids {
                    self.reject(id, out);
                }
            }
        }
        self.view = view;
        self.disk.draft.hard_state = true;
    }

    /// Makes this member primary of the next view (an operator's failover, or a primary's
    /// restart): durably, then it brings every backup to its history before writes begin.
    fn take_over(&mut self, after: u64, out: &mut Out) {
        let Some(view) = next_view(after.max(self.view), self.id) else {
            return;
        };
        self.join_view(view, out);
        let next = self.log.last_index() + 1;
        let backups = self
            .peers
            .iter()
            .map(|&n| {
                let backup = Backup {
                    next,
                    acked: 0,
                    answered: false,
                    confirmed: 0,
                    idle: 0,
                    silent: 0,
                    resent_from: None,
                };
                (n, backup)
            })
            .collect();
        self.duty = Duty::Primary(Box::new(Primary {
            ready: false,
            view_start: self.log.last_index(),
            backups,
            round: 0,
            reads: VecDeque::new(),
            since_heartbeat: 0,
        }));
        self.flush(out);
        for to in self.peers.clone() {
            self.send_to(to, out);
        }
        self.maybe_commit(out);
    }

    /// Sends backup `to` what it lacks from `next` on (or a heartbeat), with the commit point
    /// and the current read round.
    fn send_to(&mut self, to: NodeId, out: &mut Out) {
        let (view, commit) = (self.view, self.commit_index);
        let base = self.log.base();
        let last = self.log.last_index();
        let (max_entries, max_bytes) = (self.config.batch_entries_max, self.config.batch_bytes_max);
        let Duty::Primary(primary) = &mut self.duty else {
            return;
        };
        let round = primary.round;
        let Some(backup) = primary.backups.get_mut(&to) else {
            return;
        };
        // Everything through the base is committed, so on every member: a backup far behind
        // still holds the base's entry.
        let from = backup.next.max(base.index + 1);
        let prev_index = from - 1;
        let entries = if from <= last {
            self.log.slice(from, max_entries, max_bytes)
        } else {
            Vec::new()
        };
        if let Some(sent) = entries.last() {
            backup.next = sent.index + 1;
            backup.idle = 0;
        }
        let prev_era = self.log.era(prev_index).unwrap_or(base.era);
        let message = Message::Replicate {
            view,
            prev_index,
            prev_era,
            entries,
            commit,
            round,
        };
        self.send(to, message, out);
    }

    fn on_tick(&mut self, out: &mut Out) {
        self.ticks += 1;
        let failover = self.automatic_failover_ticks();
        let (heartbeat, retry) = (self.config.heartbeat_ticks, self.config.retry_ticks);
        let me = self.id;
        let view = self.view;
        match &mut self.duty {
            Duty::Backup { silent, .. } => {
                *silent += 1;
                let silent = *silent;
                if primary_of(view) == me || (failover > 0 && silent >= failover) {
                    // Primary of its view in a previous life, or (broken on purpose) tired
                    // of waiting for the primary.
                    self.take_over(view, out);
                }
            }
            Duty::Primary(primary) => {
                primary.since_heartbeat += 1;
                let beat = primary.since_heartbeat >= heartbeat;
                if beat {
                    primary.since_heartbeat = 0;
                }
                let mut due = Vec::new();
                for (&n, backup) in primary.backups.iter_mut() {
                    backup.idle += 1;
                    backup.silent += 1;
                    if backup.idle >= retry {
                        backup.idle = 0;
                        backup.next = backup.acked + 1;
                        backup.resent_from = None;
                        due.push(n);
                    } else if beat {
                        due.push(n);
                    }
                }
                for n in due {
                    self.send_to(n, out);
                }
                if failover > 0 {
                    // Broken on purpose: a silent backup stops counting.
                    self.maybe_commit(out);
                    self.serve_reads(out);
                }
            }
        }
    }

    fn on_propose(&mut self, proposals: Vec<Proposal>, out: &mut Out) {
        if self.ready_view().is_none() {
            for p in proposals {
                self.reject(p.id, out);
            }
            return;
        }
        for proposal in proposals {
            let entry = Entry {
                index: self.log.last_index() + 1,
                era: self.view,
                payload: Payload::Command(proposal),
            };
            self.disk.draft.entries.push(entry.clone());
            self.log.push(entry);
        }
        // The primary writes before it sends (the runtime holds the sends until the write is
        // durable): a backup never holds an entry its primary could lose in a crash.
        self.flush(out);
        for to in self.peers.clone() {
            self.send_to(to, out);
        }
        self.maybe_commit(out);
    }

    fn on_read(&mut self, reads: Vec<ReadRequest>, out: &mut Out) {
        let ready = self.ready_view().is_some();
        let mut linearizable = Vec::new();
        for read in reads {
            match read.consistency {
                ReadConsistency::Serializable => out.push(Action::ReadReady(read.id)),
                ReadConsistency::Linearizable if ready => linearizable.push(read.id),
                ReadConsistency::Linearizable => self.reject(read.id, out),
            }
        }
        if linearizable.is_empty() {
            return;
        }
        let index = self.commit_index;
        let Some(primary) = self.primary() else {
            return;
        };
        primary.round += 1;
        let round = primary.round;
        primary.reads.push_back(ReadRound {
            round,
            index,
            ids: linearizable,
        });
        for to in self.peers.clone() {
            self.send_to(to, out);
        }
        self.serve_reads(out);
    }

    /// Answers the reads every backup confirmed the view for (a backup in a later view would
    /// have refused), once the state machine reached their read point.
    fn serve_reads(&mut self, out: &mut Out) {
        let failover = self.automatic_failover_ticks();
        let applied = self.applied_index;
        let Some(primary) = self.primary() else {
            return;
        };
        let confirmed = primary
            .backups
            .values()
            .filter(|b| failover == 0 || b.silent < failover)
            .map(|b| b.confirmed)
            .min()
            .unwrap_or(primary.round);
        while let Some(read) = primary.reads.front() {
            if read.round > confirmed || read.index > applied {
                break;
            }
            let done = primary.reads.pop_front().expect("front exists");
            out.extend(done.ids.into_iter().map(Action::ReadReady));
        }
    }

    fn on_message(&mut self, from: NodeId, message: Message, out: &mut Out) {
        if !self.peers.contains(&from) {
            return;
        }
        let view = message.view();
        // A view no member leads, or one at the end of the numbers, comes from no correct
        // peer: adopting it would persist a state this member could not restart from.
        if !self.config.voters.contains(&primary_of(view)) || next_view(view, self.id).is_none() {
            return;
        }
        match message {
            // A copy from before a view this member already knows is stale (the network
            // duplicates): only a relay that knew the current view moves it on.
            Message::TakeOver { view } if view >= self.view => self.take_over(view, out),
            Message::TakeOver { .. } => {}
            Message::Stale { view } => {
                if view > self.view {
                    self.join_view(view, out);
                    self.flush(out);
                }
            }
            _ if view < self.view => self.send(from, Message::Stale { view: self.view }, out),
            Message::Replicate {
                prev_index,
                prev_era,
                entries,
                commit,
                round,
                ..
            } => {
                if primary_of(view) != from {
                    return;
                }
                if view > self.view {
                    self.join_view(view, out);
                }
                self.on_replicate(from, (prev_index, prev_era), entries, commit, round, out);
            }
            Message::Ack {
                last, ok, round, ..
            } => {
                if view == self.view {
                    self.on_ack(from, last, ok, round, out);
                }
            }
        }
    }

    fn on_replicate(
        &mut self,
        from: NodeId,
        (prev_index, prev_era): (LogIndex, u64),
        entries: Vec<Entry>,
        commit: LogIndex,
        round: u64,
        out: &mut Out,
    ) {
        if let Duty::Backup { heard, silent } = &mut self.duty {
            *heard = true;
            *silent = 0;
        }
        let view = self.view;
        let base = self.log.base();
        let holds_prev = if prev_index <= base.index {
            // Committed, so the same everywhere.
            true
        } else {
            self.log.era(prev_index) == Some(prev_era)
        };
        if !holds_prev {
            let last = if prev_index > self.log.last_index() {
                self.log.last_index()
            } else {
                self.commit_index
            };
            let refusal = Message::Ack {
                view,
                last,
                ok: false,
                round,
            };
            return self.send(from, refusal, out);
        }
        let mut last = prev_index;
        for entry in entries {
            // Entries out of order, of a later view than the message, of an earlier view than
            // what precedes them, or at a committed position: no correct primary sends them.
            let before = self.log.era(last).unwrap_or(base.era);
            let at_commit = entry.index <= self.commit_index && entry.index > base.index;
            let conflicts_committed = at_commit && self.log.era(entry.index) != Some(entry.era);
            if entry.index != last + 1
                || entry.era > view
                || entry.era < before
                || conflicts_committed
            {
                break;
            }
            last = entry.index;
            if entry.index <= base.index {
                continue;
            }
            match self.log.era(entry.index) {
                Some(era) if era == entry.era => {}
                Some(_) => {
                    self.truncate(entry.index);
                    self.disk.draft.entries.push(entry.clone());
                    self.log.push(entry);
                }
                None => {
                    self.disk.draft.entries.push(entry.clone());
                    self.log.push(entry);
                }
            }
        }
        let ack = Message::Ack {
            view,
            last,
            ok: true,
            round,
        };
        self.send(from, ack, out);
        self.commit_to(commit.min(last), out);
    }

    /// Removes the history from `index` on: entries a primary of a later view does not have,
    /// so never committed (a committed entry is on every member, that primary included).
    fn truncate(&mut self, index: LogIndex) {
        assert!(
            index > self.commit_index,
            "committed entry {index} would be removed (commit {})",
            self.commit_index
        );
        self.log.truncate_from(index);
        self.disk.truncate(index);
    }

    fn on_ack(&mut self, from: NodeId, last: LogIndex, ok: bool, round: u64, out: &mut Out) {
        let (ticks, retry) = (self.ticks, self.config.retry_ticks);
        let written = self.log.last_index();
        let Some(primary) = self.primary() else {
            return;
        };
        let Some(backup) = primary.backups.get_mut(&from) else {
            return;
        };
        backup.silent = 0;
        if last > written {
            // Claims more than this primary ever wrote: no correct backup says that.
            return;
        }
        if ok {
            backup.idle = 0;
            backup.answered = true;
            backup.acked = backup.acked.max(last);
            backup.next = backup.next.max(last + 1);
            backup.confirmed = backup.confirmed.max(round);
            backup.resent_from = None;
        } else {
            let from_here = (last + 1).min(backup.next).max(backup.acked + 1);
            if let Some((at, when)) = backup.resent_from {
                if at == from_here && ticks < when + retry {
                    return;
                }
            }
            backup.resent_from = Some((from_here, ticks));
            backup.next = from_here;
        }
        self.maybe_commit(out);
        self.serve_reads(out);
        let last = self.log.last_index();
        let behind = self
            .primary()
            .and_then(|p| p.backups.get(&from))
            .is_some_and(|b| b.next <= last);
        if !ok || behind {
            self.send_to(from, out);
        }
    }

    /// Commits what every backup (and the primary's own disk) holds. The first time every
    /// backup holds the history the view began with, writes open.
    fn maybe_commit(&mut self, out: &mut Out) {
        let failover = self.automatic_failover_ticks();
        let durable = self.disk.durable_index();
        let Some(primary) = self.primary() else {
            return;
        };
        let counted: Vec<&Backup> = primary
            .backups
            .values()
            .filter(|b| failover == 0 || b.silent < failover)
            .collect();
        if counted.iter().any(|b| !b.answered) {
            return;
        }
        let held = counted.iter().map(|b| b.acked).min().unwrap_or(durable);
        let held = held.min(durable);
        if held < primary.view_start {
            return;
        }
        primary.ready = true;
        self.commit_to(held, out);
        self.serve_reads(out);
    }

    /// Raises the commit point to `index` (never lowers it) and applies what it covers.
    fn commit_to(&mut self, index: LogIndex, out: &mut Out) {
        let index = index.min(self.log.last_index());
        if index <= self.commit_index {
            return;
        }
        self.commit_index = index;
        self.log
            .apply_through(&mut self.applied_index, self.commit_index, out);
    }

    fn on_snapshotted(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        if meta.index <= self.log.base().index || meta.index > self.applied_index {
            return;
        }
        if self.log.era(meta.index) == Some(meta.era) {
            self.log.compact_to(meta);
        }
    }
}

impl Engine for PrimaryBackup {
    type Message = Message;

    fn step(&mut self, input: Input<Message>, out: &mut Out) {
        match input {
            Input::Tick => self.on_tick(out),
            Input::Receive { from, message } => self.on_message(from, message, out),
            Input::Propose(proposals) => self.on_propose(proposals, out),
            Input::Read(reads) => self.on_read(reads, out),
            Input::Persisted(id) => {
                self.disk.persisted(id);
                self.maybe_commit(out);
            }
            Input::Snapshotted(snapshot) => self.on_snapshotted(snapshot),
            Input::TransferLeadership { to } => {
                if to == self.id {
                    let view = self.view;
                    self.take_over(view, out);
                } else if self.peers.contains(&to) {
                    let view = self.view;
                    self.send(to, Message::TakeOver { view }, out);
                }
            }
            Input::ChangeMembership { id, .. } => out.push(Action::membership_unsupported(id)),
        }
        self.flush(out);
    }

    fn status(&self) -> Status {
        let (role, leader) = match &self.duty {
            Duty::Primary(p) if p.ready => (Role::Leader, Some(self.id)),
            Duty::Primary(_) => (Role::Candidate, None),
            Duty::Backup { heard, .. } => (Role::Follower, heard.then_some(primary_of(self.view))),
        };
        Status {
            id: self.id,
            role,
            leader,
            era: self.view,
            commit_index: self.commit_index,
            last_index: self.log.last_index(),
        }
    }
}

/// The hard state: the view.
pub fn encode_view(view: u64) -> Vec<u8> {
    let mut enc = Encoder::with_capacity(8);
    enc.u64(view);
    enc.finish()
}

/// Reads a hard state written by [`encode_view`].
pub fn decode_view(bytes: &[u8]) -> Result<u64, DecodeError> {
    let mut dec = Decoder::new(bytes);
    let view = dec.u64("view")?;
    dec.finish()?;
    Ok(view)
}
