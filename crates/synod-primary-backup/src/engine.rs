//! The primary-backup state machine: what a member persists (its view and its history), what
//! it does as primary or as backup, and failover.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{
    Action, Engine, Entry, Input, Log, LogIndex, Membership, NodeId, Payload, PersistQueue,
    Proposal, ReadConsistency, ReadRequest, Rejection, RequestId, Role, Snapshot, SnapshotMeta,
    Status,
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
    /// It said it lacks the history up to the primary's snapshot (a member that joined, or
    /// one restored from an older backup): it is sent the snapshot.
    lacks_base: bool,
    /// The snapshot being sent to it, and the offset of the next chunk.
    snap: Option<(SnapshotMeta, u64)>,
}

impl Backup {
    fn new(next: LogIndex) -> Backup {
        Backup {
            next,
            acked: 0,
            answered: false,
            confirmed: 0,
            idle: 0,
            silent: 0,
            resent_from: None,
            lacks_base: false,
            snap: None,
        }
    }
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
    pub(crate) id: NodeId,
    /// Whom it talks to: the members in force and, until their removal commits, the members
    /// being removed; itself excluded.
    pub(crate) peers: Vec<NodeId>,
    pub(crate) config: Config,
    // Persistent state.
    pub(crate) view: u64,
    pub(crate) log: Log,
    /// The newest snapshot, saved or installed: sent to backups that lack what it covers.
    pub(crate) snapshot: Option<Snapshot>,
    // Volatile state.
    duty: Duty,
    /// The membership in force: the newest in the history (committed or not), else the
    /// snapshot's, else the boot one.
    pub(crate) membership: Membership,
    /// Where that membership is in the history (0: from the snapshot or the boot).
    pub(crate) membership_index: LogIndex,
    /// The newest membership entry known committed (persistent: the commit point is not,
    /// and a member restarted must still know the membership that makes it a voter).
    pub(crate) membership_committed: LogIndex,
    /// A primary that its own removal took out hands its place to this voter, until it hears
    /// of a later view.
    pub(crate) successor: Option<NodeId>,
    /// A snapshot being received: its position and the bytes so far.
    incoming: Option<(SnapshotMeta, Vec<u8>)>,
    pub(crate) commit_index: LogIndex,
    applied_index: LogIndex,
    pub(crate) disk: PersistQueue,
    pub(crate) ticks: u64,
}

impl PrimaryBackup {
    /// A member that has never run: the first view, an empty history.
    pub fn new(config: Config) -> Result<PrimaryBackup, ConfigError> {
        config.validate()?;
        let membership = Membership::at_boot(config.boot_membership.as_ref(), &config.voters);
        let mut node = PrimaryBackup {
            id: config.id,
            peers: Vec::new(),
            view: first_view(&config.voters),
            config,
            log: Log::default(),
            snapshot: None,
            duty: Duty::Backup {
                heard: false,
                silent: 0,
            },
            membership,
            membership_index: 0,
            membership_committed: 0,
            successor: None,
            incoming: None,
            commit_index: 0,
            applied_index: 0,
            disk: PersistQueue::new(0),
            ticks: 0,
        };
        node.refresh_membership();
        Ok(node)
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
            (node.view, node.membership_committed) = decode_hard_state(bytes)?;
        }
        let base = snapshot.as_ref().map(|s| s.meta).unwrap_or_default();
        node.log = Log::from_parts(base, entries).map_err(RestartError::Inconsistent)?;
        node.snapshot = snapshot;
        if node.membership_committed > node.log.last_index() {
            return Err(RestartError::Inconsistent(format!(
                "the committed membership at {} is beyond the history, which ends at {}",
                node.membership_committed,
                node.log.last_index()
            )));
        }
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
        node.refresh_membership();
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

    pub(crate) fn is_primary(&self) -> bool {
        matches!(self.duty, Duty::Primary(_))
    }

    /// The backups the primary tracks, to keep in step with the peers.
    pub(crate) fn track_backups(&mut self) {
        let next = self.log.last_index() + 1;
        let peers = self.peers.clone();
        if let Some(primary) = self.primary() {
            primary.backups.retain(|id, _| peers.contains(id));
            for id in peers {
                primary
                    .backups
                    .entry(id)
                    .or_insert_with(|| Backup::new(next));
            }
        }
    }

    /// Ticks since `id` last answered this primary, if it is one of its backups.
    pub(crate) fn backup_silence(&self, id: NodeId) -> Option<u64> {
        match &self.duty {
            Duty::Primary(p) => p.backups.get(&id).filter(|b| b.answered).map(|b| b.silent),
            Duty::Backup { .. } => None,
        }
    }

    /// How far backup `id` holds this primary's history, as it said.
    pub(crate) fn backup_acked(&self, id: NodeId) -> LogIndex {
        match &self.duty {
            Duty::Primary(p) => p.backups.get(&id).map_or(0, |b| b.acked),
            Duty::Backup { .. } => 0,
        }
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

    pub(crate) fn flush(&mut self, out: &mut Out) {
        let (view, committed) = (self.view, self.membership_committed);
        self.disk.flush(
            self.log.last_index(),
            || encode_hard_state(view, committed),
            out,
        );
    }

    /// Sends a message that depends on everything decided so far being durable.
    pub(crate) fn send(&mut self, to: NodeId, message: Message, out: &mut Out) {
        self.flush(out);
        out.push(Action::Send { to, message });
    }

    pub(crate) fn reject(&self, id: RequestId, out: &mut Out) {
        out.push(Action::Reject {
            id,
            reason: Rejection::NotLeader {
                leader_hint: self.status().leader.filter(|&n| n != self.id),
            },
        });
    }

    /// Moves to a later view as a backup of its primary, durably before it answers anyone.
    fn join_view(&mut self, view: u64, out: &mut Out) {
        self.step_down(out);
        self.view = view;
        self.successor = None;
        self.disk.draft.hard_state = true;
    }

    /// Steps down from primary without a later view to join (its own removal committed):
    /// the reads it was confirming go back to their clients.
    pub(crate) fn step_down(&mut self, out: &mut Out) {
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
    }

    /// Makes this member primary of the next view (an operator's failover, or a primary's
    /// restart): durably, then it brings every backup to its history before writes begin.
    pub(crate) fn take_over(&mut self, after: u64, out: &mut Out) {
        if !self.may_take_over() {
            return;
        }
        let Some(view) = next_view(after.max(self.view), self.id) else {
            return;
        };
        self.join_view(view, out);
        let next = self.log.last_index() + 1;
        let backups = self.peers.iter().map(|&n| (n, Backup::new(next))).collect();
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
        if backup.lacks_base && backup.next <= base.index {
            let offset = match backup.snap {
                Some((meta, offset)) if meta == base => offset,
                _ => 0,
            };
            return self.send_snap_chunk(to, offset, out);
        }
        // Everything through the base is committed, so on every member that was a voter
        // then: such a backup, however far behind, still holds the base's entry. One that
        // does not says so and is sent the snapshot.
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

    /// Sends every backup what it lacks (or a heartbeat).
    pub(crate) fn replicate_to_all(&mut self, out: &mut Out) {
        for to in self.peers.clone() {
            self.send_to(to, out);
        }
    }

    /// Sends backup `to` the chunk of the newest snapshot at `offset`.
    fn send_snap_chunk(&mut self, to: NodeId, offset: u64, out: &mut Out) {
        let (view, chunk_max) = (self.view, self.config.snapshot_chunk_bytes);
        let Some(snapshot) = self.snapshot.as_ref() else {
            return;
        };
        let meta = snapshot.meta;
        let start = (offset as usize).min(snapshot.data.len());
        let end = (start + chunk_max).min(snapshot.data.len());
        let data: Bytes = snapshot.data.slice(start..end);
        let done = end == snapshot.data.len();
        let message = Message::Snap {
            view,
            meta,
            offset: start as u64,
            data,
            done,
            membership: snapshot.membership.clone().filter(|_| done),
        };
        if let Some(backup) = self.primary().and_then(|p| p.backups.get_mut(&to)) {
            backup.snap = Some((meta, start as u64));
            backup.idle = 0;
        }
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
                if self.successor.is_some() {
                    // Removed while primary: hand over, to each voter in turn, until someone
                    // takes the place.
                    if self.ticks.is_multiple_of(retry) {
                        self.abdicate(out);
                    }
                } else if primary_of(view) == me || (failover > 0 && silent >= failover) {
                    // Primary of its view in a previous life, or (broken on purpose) tired
                    // of waiting for the primary. One that is no voter any more (its removal
                    // committed) hands its place over instead.
                    if self.may_take_over() {
                        self.take_over(view, out);
                    } else if primary_of(view) == me {
                        self.abdicate(out);
                    }
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
                        // Unanswered: send again from what it acknowledged (or, for a
                        // snapshot, from the chunk it last acknowledged).
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

    /// Answers the reads every voter confirmed the view for (a backup in a later view would
    /// have refused), once the state machine reached their read point.
    fn serve_reads(&mut self, out: &mut Out) {
        let failover = self.automatic_failover_ticks();
        let applied = self.applied_index;
        // Most acknowledgements come with no read waiting: nothing to gather the voters for.
        if self.primary().is_none_or(|p| p.reads.is_empty()) {
            return;
        }
        let voters = self.counted_voters();
        let Some(primary) = self.primary() else {
            return;
        };
        let confirmed = voters
            .iter()
            .map(|v| primary.backups.get(v))
            .map(|b| match b {
                Some(b) if failover > 0 && b.silent >= failover => primary.round,
                Some(b) => b.confirmed,
                None => 0,
            })
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
        let view = message.view();
        // A view at the end of the numbers comes from no correct peer: adopting it would
        // persist a state this member could not restart from.
        if next_view(view, self.id).is_none() {
            return;
        }
        match message {
            // From whoever relays the operator's word, or from a removed primary handing
            // over (no peer of this member any more); taking over is safe for any voter
            // that knows its membership committed, which `take_over` checks. A copy from
            // before a view this member already knows is stale (the network duplicates):
            // the sender hears of the newer view.
            Message::TakeOver {
                view,
                commit,
                commit_era,
            } => {
                self.learn_commit(commit, commit_era, out);
                if view >= self.view {
                    self.take_over(view, out);
                } else {
                    self.send(from, Message::Stale { view: self.view }, out);
                }
            }
            Message::Stale { view } => {
                // Only a voter's word moves this member on (a learner or a stranger that took
                // some later view cannot stop this view's commits), and only to a view it
                // would join from its primary: one whose primary is a voter here.
                if view > self.view && self.counts(from) && self.accepts_primary(primary_of(view)) {
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
                if !self.follows(from, view, out) {
                    return;
                }
                self.on_replicate(from, (prev_index, prev_era), entries, commit, round, out);
            }
            Message::Snap {
                meta,
                offset,
                data,
                done,
                membership,
                ..
            } => {
                if !self.follows(from, view, out) {
                    return;
                }
                self.on_snap(from, meta, offset, data, (done, membership), out);
            }
            Message::Ack {
                last, ok, round, ..
            } => {
                if view == self.view {
                    self.on_ack(from, last, ok, round, out);
                }
            }
            Message::SnapAck {
                meta,
                next_offset,
                done,
                ..
            } => {
                if view == self.view {
                    self.on_snap_ack(from, meta, next_offset, done, out);
                }
            }
        }
    }

    /// Whether this member takes `from`'s message of `view` as its primary's: `from` is the
    /// view's primary, and a later view is joined only if its primary belongs to the
    /// membership here (see [`PrimaryBackup::accepts_primary`]).
    fn follows(&mut self, from: NodeId, view: u64, out: &mut Out) -> bool {
        if primary_of(view) != from {
            return false;
        }
        if view > self.view {
            if !self.accepts_primary(from) {
                return false;
            }
            self.join_view(view, out);
        }
        if let Duty::Backup { heard, silent } = &mut self.duty {
            *heard = true;
            *silent = 0;
        }
        true
    }

    /// A chunk of the primary's snapshot: gathered, and installed with the last one.
    fn on_snap(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        (done, membership): (bool, Option<Membership>),
        out: &mut Out,
    ) {
        let view = self.view;
        if meta.index <= self.commit_index {
            // Already holds all of it: say so, so the primary goes on from there.
            let ack = Message::SnapAck {
                view,
                meta,
                next_offset: offset,
                done: true,
            };
            return self.send(from, ack, out);
        }
        let received = match &mut self.incoming {
            Some((m, bytes)) if *m == meta && bytes.len() as u64 == offset => {
                bytes.extend_from_slice(&data);
                bytes.len() as u64
            }
            _ if offset == 0 => {
                self.incoming = Some((meta, data.to_vec()));
                data.len() as u64
            }
            Some((m, bytes)) if *m == meta => bytes.len() as u64,
            _ => 0,
        };
        let installed = done && Some(received) == offset.checked_add(data.len() as u64);
        if installed {
            let Some((_, bytes)) = self.incoming.take() else {
                return;
            };
            let snapshot = Snapshot {
                membership,
                meta,
                data: Bytes::from(bytes),
            };
            // Keep what follows the snapshot if it agrees with it; drop the rest.
            if self.log.compact_to(meta) {
                self.disk.truncate(meta.index + 1);
            }
            self.disk.draft.snapshot = Some(snapshot.clone());
            self.commit_index = meta.index;
            self.applied_index = meta.index;
            self.snapshot = Some(snapshot.clone());
            self.refresh_membership();
            self.flush(out);
            out.push(Action::Restore(snapshot));
        }
        let ack = Message::SnapAck {
            view,
            meta,
            next_offset: received,
            done: installed,
        };
        self.send(from, ack, out);
    }

    /// A backup's answer to a snapshot chunk: the next chunk, or, once it installed the
    /// snapshot, the history after it.
    fn on_snap_ack(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        next_offset: u64,
        done: bool,
        out: &mut Out,
    ) {
        let Some(backup) = self.primary().and_then(|p| p.backups.get_mut(&from)) else {
            return;
        };
        backup.silent = 0;
        if backup.snap.is_none_or(|(m, _)| m != meta) {
            return;
        }
        if done {
            backup.snap = None;
            backup.lacks_base = false;
            backup.answered = true;
            backup.acked = backup.acked.max(meta.index);
            backup.next = backup.next.max(meta.index + 1);
            self.maybe_commit(out);
            self.send_to(from, out);
        } else if backup.snap.is_some_and(|(_, at)| next_offset > at) {
            self.send_snap_chunk(from, next_offset, out);
        } else {
            // It holds less than the chunk sent (it restarted, or this answer is an old
            // one): the next retry sends from what it says it holds.
            backup.snap = Some((meta, next_offset));
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
        let mut membership_moved = false;
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
            let keep = match self.log.era(entry.index) {
                Some(era) if era == entry.era => continue,
                Some(_) => {
                    membership_moved |= self.membership_index >= entry.index;
                    self.truncate(entry.index);
                    entry
                }
                None => entry,
            };
            membership_moved |= matches!(keep.payload, Payload::Membership { .. });
            self.disk.draft.entries.push(keep.clone());
            self.log.push(keep);
        }
        if membership_moved {
            self.refresh_membership();
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
        let base_index = self.log.base().index;
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
            backup.lacks_base = false;
            backup.acked = backup.acked.max(last);
            backup.next = backup.next.max(last + 1);
            backup.confirmed = backup.confirmed.max(round);
            backup.resent_from = None;
        } else {
            backup.lacks_base = last < base_index;
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

    /// Commits what every voter (and the primary's own disk) holds: an entry needs every
    /// voter of the membership in force at its position. So while a change is pending, the
    /// entries before it need the old voters, and the change and what follows the new ones
    /// (a member being removed, dead perhaps, is not waited for once every remaining voter
    /// holds its removal). The first time every voter holds the history the view began with,
    /// writes open.
    fn maybe_commit(&mut self, out: &mut Out) {
        let failover = self.automatic_failover_ticks();
        let durable = self.disk.durable_index();
        let (me, last) = (self.id, self.log.last_index());
        let spans = self.uncommitted_memberships();
        let Some(primary) = self.primary() else {
            return;
        };
        // What every voter of `voters` holds durably, this primary included; nothing while
        // one has not answered in this view.
        let held_by = |voters: &[NodeId]| -> Option<LogIndex> {
            let mut held = durable;
            for v in voters.iter().filter(|&&v| v != me) {
                let b = primary.backups.get(v)?;
                if failover > 0 && b.silent >= failover {
                    continue; // broken on purpose: a silent backup stops counting
                }
                if !b.answered {
                    return None;
                }
                held = held.min(b.acked);
            }
            Some(held)
        };
        // The newest membership whose voters all hold its own first entry commits what they
        // hold up to the next membership (entries before it included: its voters hold them,
        // and a member that does not, removed, is refused by every one of them).
        let mut held = None;
        for (k, (from, voters)) in spans.iter().enumerate().rev() {
            let until = spans.get(k + 1).map_or(last, |(next, _)| next - 1);
            if let Some(h) = held_by(voters).filter(|h| h >= from) {
                held = Some(h.min(until));
                break;
            }
        }
        let Some(held) = held else {
            return;
        };
        if held < primary.view_start {
            return;
        }
        primary.ready = true;
        self.commit_to(held, out);
        self.serve_reads(out);
    }

    /// The voters of each membership over the history after the commit point, oldest first,
    /// each with the first position it rules (0 for the one in force at the commit point).
    pub(crate) fn uncommitted_memberships(&self) -> Vec<(LogIndex, Vec<NodeId>)> {
        // Without a change pending, the one in force is the one at the commit point (no
        // scan of the history on every acknowledgement).
        let at_commit = if self.membership_index <= self.commit_index {
            self.membership.voters()
        } else {
            self.membership_as_of(self.commit_index).voters()
        };
        let mut spans = vec![(0, at_commit)];
        #[cfg(any(test, feature = "inject-bugs"))]
        if self.config.bugs.commit_without_new_voters {
            return spans;
        }
        if self.membership_index > self.commit_index {
            for index in self.commit_index + 1..=self.log.last_index() {
                if let Some(Payload::Membership { membership, .. }) =
                    self.log.entry(index).map(|e| &e.payload)
                {
                    spans.push((index, membership.voters()));
                }
            }
        }
        spans
    }

    /// Raises the commit point to `index` (never lowers it) and applies what it covers.
    fn commit_to(&mut self, index: LogIndex, out: &mut Out) {
        let index = index.min(self.log.last_index());
        if index <= self.commit_index {
            return;
        }
        let before = self.commit_index;
        self.commit_index = index;
        self.log
            .apply_through(&mut self.applied_index, self.commit_index, out);
        self.after_commit(before, out);
    }

    /// Takes `from`'s commit point if this member holds that very entry (so the history
    /// through it is the same).
    pub(crate) fn learn_commit(&mut self, commit: LogIndex, era: u64, out: &mut Out) {
        if commit > self.commit_index && self.log.era(commit) == Some(era) {
            self.commit_to(commit, out);
        }
    }

    fn on_snapshotted(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        if meta.index <= self.log.base().index || meta.index > self.applied_index {
            return;
        }
        if self.log.era(meta.index) == Some(meta.era) {
            self.log.compact_to(meta);
            self.snapshot = Some(snapshot);
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
                } else if self.membership.is_voter(to) {
                    self.hand_over(to, out);
                }
            }
            Input::ChangeMembership { id, change } => self.on_change_membership(id, change, out),
        }
        self.flush(out);
    }

    fn membership(&self) -> Option<&Membership> {
        Some(&self.membership)
    }

    fn membership_at(&self, index: LogIndex) -> Option<Membership> {
        Some(self.membership_as_of(index))
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

/// The hard state: the view, and the newest membership entry known committed (which a
/// member needs after a restart to know it may take over).
pub fn encode_hard_state(view: u64, membership_committed: LogIndex) -> Vec<u8> {
    let mut enc = Encoder::with_capacity(16);
    enc.u64(view).u64(membership_committed);
    enc.finish()
}

/// Reads a hard state written by [`encode_hard_state`] (or, from before membership changes,
/// the view alone).
pub fn decode_hard_state(bytes: &[u8]) -> Result<(u64, LogIndex), DecodeError> {
    let mut dec = Decoder::new(bytes);
    let view = dec.u64("view")?;
    let membership_committed = if dec.remaining() > 0 {
        dec.u64("committed membership")?
    } else {
        0
    };
    dec.finish()?;
    Ok((view, membership_committed))
}

/// A hard state holding `view` and no committed membership entry.
pub fn encode_view(view: u64) -> Vec<u8> {
    encode_hard_state(view, 0)
}

/// The view of a hard state.
pub fn decode_view(bytes: &[u8]) -> Result<u64, DecodeError> {
    decode_hard_state(bytes).map(|(view, _)| view)
}
