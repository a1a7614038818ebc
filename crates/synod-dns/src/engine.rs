//! The DNS-style state machine: what the primary does with writes and questions, and how a
//! secondary keeps its copy.

use std::collections::BTreeMap;

use bytes::Bytes;
use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{
    Action, Engine, Entry, Input, Log, LogIndex, Membership, NodeId, Payload, PersistId,
    PersistQueue, Proposal, ReadRequest, Rejection, RequestId, Role, Snapshot, SnapshotMeta,
    Status,
};
use thiserror::Error;

use crate::config::{Config, ConfigError, InjectedBugs};
use crate::message::Message;

type Out = Vec<Action<Message>>;

/// Why a node could not be rebuilt from its persisted state.
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

/// A secondary's side of the transfers.
#[derive(Debug, Default)]
pub(crate) struct Pull {
    /// The highest serial the primary has told of.
    pub(crate) primary_serial: LogIndex,
    /// Ticks since it last asked the primary.
    pub(crate) since_asked: u64,
    /// A question is out and unanswered.
    pub(crate) waiting: bool,
    /// The full transfer it is receiving: the snapshot and the bytes so far.
    pub(crate) incoming: Option<(SnapshotMeta, Vec<u8>)>,
    /// A full transfer written to disk, applied once that persist is durable.
    pub(crate) installing: Option<(PersistId, Snapshot)>,
    /// Questions asked again without an answer since the last one answered.
    pub(crate) unanswered: u32,
    /// Whom it asks: the primary, or a member that told of a newer serial (a new primary
    /// this copy does not know of yet, or, for a member that joined, the primary itself).
    pub(crate) source: Option<NodeId>,
}

/// One member: the primary, or a secondary holding a copy of its data.
#[derive(Debug)]
pub struct Dns {
    pub(crate) id: NodeId,
    /// The lowest voter of the membership in force (`NodeId(0)`, no one, for a member that
    /// joined and knows no membership yet).
    pub(crate) primary: NodeId,
    /// The other members, which the primary notifies.
    pub(crate) secondaries: Vec<NodeId>,
    /// The newest membership in its history (committed, in DNS terms, once durable), else
    /// the snapshot's, else the boot one.
    pub(crate) membership: Membership,
    /// A primary that removed itself: it notifies the members of its last changes (its own
    /// removal among them) as a primary would, for the rest of this life.
    pub(crate) handing_over: bool,
    /// The highest era this member ever persisted as primary: a member that becomes primary
    /// takes an era above it and above every change it holds.
    pub(crate) era_floor: u64,
    pub(crate) config: Config,
    /// The primary's life (persistent, at the primary): every change it makes carries it. At
    /// a secondary, the newest era it holds a change of.
    pub(crate) era: u64,
    pub(crate) log: Log,
    /// The newest snapshot, sent in full transfers (primary).
    pub(crate) snapshot: Option<Snapshot>,
    /// Primary: the snapshot each secondary is receiving in a full transfer.
    pub(crate) transfers: BTreeMap<NodeId, Snapshot>,
    /// Primary: whether its era is durable. Until it is, writes wait in `before_era`: a
    /// change of an era a crash could take back would share its (era, serial) with a change
    /// of the next life.
    pub(crate) era_durable: bool,
    pub(crate) before_era: Vec<Proposal>,
    /// Primary: reads that wait for its era to be durable (see `on_read`).
    pub(crate) reads_before_era: Vec<RequestId>,
    /// Primary: the persist that makes its era durable, once pushed.
    pub(crate) era_persist: Option<PersistId>,
    /// Everything through here is durable here, so applied (a secondary's serial).
    pub(crate) commit_index: LogIndex,
    pub(crate) applied_index: LogIndex,
    pub(crate) disk: PersistQueue,
    pub(crate) ticks: u64,
    /// When each member last asked this member (or, for one never heard, when this member
    /// first looked): the primary repeats its NOTIFY every retry interval to a member silent
    /// for longer than a refresh and a retry, as RFC 1996 retransmits it until answered (a
    /// member that joined knows whom to ask only from it), and moves the primary only to a
    /// member that asked lately.
    pub(crate) asked_at: BTreeMap<NodeId, u64>,
    /// Primary: the tick it last sent NOTIFY, and whether a change since waits for one.
    pub(crate) notified_at: Option<u64>,
    pub(crate) notify_due: bool,
    /// Primary: the serial of the last change it told of (or will at the next tick).
    pub(crate) notified_serial: LogIndex,
    pub(crate) pull: Pull,
}

impl Dns {
    /// A member with an empty copy at serial 0, before `restart` sets its era.
    fn new(config: Config) -> Result<Dns, ConfigError> {
        config.validate()?;
        let membership = Membership::at_boot(config.boot_membership.as_ref(), &config.voters);
        Ok(Dns {
            id: config.id,
            primary: NodeId(0),
            secondaries: Vec::new(),
            membership,
            era_floor: 0,
            handing_over: false,
            asked_at: BTreeMap::new(),
            config,
            era: 0,
            log: Log::default(),
            snapshot: None,
            transfers: BTreeMap::new(),
            era_durable: true,
            before_era: Vec::new(),
            reads_before_era: Vec::new(),
            era_persist: None,
            commit_index: 0,
            applied_index: 0,
            disk: PersistQueue::new(0),
            ticks: 0,
            notified_at: None,
            notify_due: false,
            notified_serial: 0,
            pull: Pull::default(),
        })
    }

    /// A member rebuilt from what it persisted: the primary's era (as written by
    /// `Persist::hard_state`; secondaries write none), its latest snapshot and the entries
    /// after it. Who is primary is configuration, and the serial is where the log ends. A
    /// primary starts a new era, persisted with (and so before) its first change.
    pub fn restart(
        config: Config,
        hard_state: Option<&[u8]>,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> Result<Dns, RestartError> {
        let mut node = Dns::new(config)?;
        let base = snapshot.as_ref().map(|s| s.meta).unwrap_or_default();
        node.log = Log::from_parts(base, entries).map_err(RestartError::Inconsistent)?;
        // A member that was primary (or is one now, and never persisted an era: it became
        // primary by the change it pulled last, and crashed before its era was durable)
        // starts a new era, above its last and above every change it holds.
        node.era_floor = hard_state.map(decode_era).transpose()?.unwrap_or(0);
        node.era = node.log.last_era();
        node.snapshot = snapshot;
        // Everything on its disk came from the primary's durable history (or is the
        // primary's own): its serial is where the log ends, and the entries after the
        // snapshot are applied again at the first step, before anything else.
        node.commit_index = node.log.last_index();
        node.applied_index = base.index;
        node.disk = PersistQueue::new(node.log.last_index());
        node.refresh_membership();
        // A secondary asks at its first tick.
        node.pull.since_asked = node.config.refresh_ticks;
        Ok(node)
    }

    /// Whether this member is the primary.
    pub fn is_primary(&self) -> bool {
        self.id == self.primary
    }

    /// Whether this member is a primary that removed itself (it still notifies, and its
    /// writes and its removal are the history its successor continues).
    pub fn is_handing_over(&self) -> bool {
        self.handing_over
    }

    /// The primary's era (at a secondary, the newest it holds a change of).
    pub fn era(&self) -> u64 {
        self.era
    }

    /// Its history (the primary's, up to its serial, on a secondary).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Its serial: everything through here is durable here, and applied (or, right after a
    /// restart, applied at the next step before anything else).
    pub fn serial(&self) -> LogIndex {
        self.commit_index
    }

    #[cfg(any(test, feature = "inject-bugs"))]
    fn bugs(&self) -> InjectedBugs {
        self.config.bugs
    }

    #[cfg(not(any(test, feature = "inject-bugs")))]
    fn bugs(&self) -> InjectedBugs {
        InjectedBugs::default()
    }

    /// Broken on purpose: a primary that removed itself still leads.
    fn leads_after_own_removal(&self) -> bool {
        self.bugs().lead_after_own_removal && self.handing_over
    }

    fn flush(&mut self, out: &mut Out) {
        let era = self.era;
        let carries_era = self.disk.draft.hard_state;
        self.disk
            .flush(self.log.last_index(), || encode_era(era), out);
        if carries_era {
            self.era_persist = Some(self.disk.last_pushed());
        }
    }

    fn send(&mut self, to: NodeId, message: Message, out: &mut Out) {
        self.flush(out);
        out.push(Action::Send { to, message });
    }

    pub(crate) fn reject(&self, id: RequestId, out: &mut Out) {
        out.push(Action::Reject {
            id,
            reason: Rejection::NotLeader {
                leader_hint: self.known_primary(),
            },
        });
    }

    /// The primary, if this member knows one.
    fn known_primary(&self) -> Option<NodeId> {
        (self.primary != NodeId(0)).then_some(self.primary)
    }

    fn on_tick(&mut self, out: &mut Out) {
        self.ticks += 1;
        if self.is_primary() || self.handing_over {
            if self.notify_due {
                self.notify(out);
            }
            if self.is_primary() {
                self.notify_the_silent(out);
            }
            return;
        }
        self.pull.since_asked += 1;
        let due = if self.pull.waiting {
            self.config.retry_ticks
        } else {
            self.config.refresh_ticks
        };
        if self.pull.since_asked >= due {
            self.ask(out);
        }
    }

    fn on_propose(&mut self, proposals: Vec<Proposal>, out: &mut Out) {
        if !self.is_primary() && !self.leads_after_own_removal() {
            for p in proposals {
                self.reject(p.id, out);
            }
            return;
        }
        if !self.era_durable {
            self.before_era.extend(proposals);
            return;
        }
        for proposal in proposals {
            let entry = Entry {
                index: self.log.last_index() + 1,
                era: self.era,
                payload: Payload::Command(proposal),
            };
            self.disk.draft.entries.push(entry.clone());
            self.log.push(entry);
        }
    }

    /// Every read is answered from the copy here, at once: a secondary's may be stale, which
    /// is the model. (At the primary it is linearizable: it holds every acknowledged write.)
    /// A member that has just become primary holds its predecessor's last writes on its disk
    /// only once its era is (the era's persist comes after them): its reads wait until then.
    fn on_read(&mut self, reads: Vec<ReadRequest>, out: &mut Out) {
        if self.is_primary() && !self.era_durable {
            self.reads_before_era
                .extend(reads.into_iter().map(|r| r.id));
            return;
        }
        out.extend(reads.into_iter().map(|r| Action::ReadReady(r.id)));
    }

    fn on_message(&mut self, from: NodeId, message: Message, out: &mut Out) {
        match message {
            // Every member answers from its durable copy, a prefix of the one history: the
            // primary, and a primary that removed itself while the others pull that change
            // from it (as DNS secondaries may serve as masters to others).
            Message::Query { serial, receiving } => {
                self.asked_at.insert(from, self.ticks);
                self.answer(from, serial, receiving, out)
            }
            _ if self.is_primary() => {}
            Message::Notify { serial } => {
                // From the primary; or from a member holding more than this copy: a new
                // primary this member does not know of yet, or, for a member that joined,
                // the primary itself. It asks there.
                let member = self.membership.contains(from) || self.membership.members.is_empty();
                if from != self.primary && (serial <= self.log.last_index() || !member) {
                    return;
                }
                if from != self.source() && !self.switch_source(from) {
                    return;
                }
                self.heard_serial(serial);
                let idle = !self.pull.waiting && self.pull.installing.is_none();
                if serial > self.log.last_index() && idle {
                    self.ask(out);
                }
            }
            _ if from != self.source() => {}
            Message::Ixfr {
                after,
                serial,
                entries,
            } => self.on_ixfr(after, serial, entries, out),
            Message::Axfr {
                meta,
                offset,
                data,
                done,
                serial,
                membership,
            } => self.on_axfr(meta, offset, data, (done, membership), serial, out),
        }
    }

    /// Whom a secondary asks.
    fn source(&self) -> NodeId {
        self.pull.source.unwrap_or(self.primary)
    }

    /// Asks `to` from now on, unless the member it asks now is answering (a transfer under
    /// way, or a question out that was not yet asked again): members holding more than this
    /// copy would otherwise take turns and restart its transfers without end.
    fn switch_source(&mut self, to: NodeId) -> bool {
        let current = self.source();
        let known = current != NodeId(0) && current != self.id;
        let busy =
            self.pull.waiting || self.pull.incoming.is_some() || self.pull.installing.is_some();
        if known && busy && self.pull.unanswered == 0 {
            return false;
        }
        self.pull.source = Some(to);
        self.pull.waiting = false;
        self.pull.incoming = None;
        self.pull.unanswered = 0;
        self.pull.primary_serial = 0;
        true
    }

    /// Primary: tells every secondary its serial, at most once a tick (the rest of a tick's
    /// changes wait for the next).
    fn notify(&mut self, out: &mut Out) {
        if !self.config.notify {
            return;
        }
        if self.notified_at == Some(self.ticks) {
            self.notify_due = true;
            return;
        }
        self.notified_at = Some(self.ticks);
        self.notify_due = false;
        let serial = self.commit_index;
        for to in self.secondaries.clone() {
            self.send(to, Message::Notify { serial }, out);
        }
    }

    /// Primary: repeats its NOTIFY, once a retry interval, to every member that has not asked
    /// for longer than a refresh and a retry (its NOTIFY was lost, or it joined and knows no
    /// one else to ask).
    fn notify_the_silent(&mut self, out: &mut Out) {
        let (refresh, retry) = (self.config.refresh_ticks, self.config.retry_ticks);
        if !self.config.notify || !self.ticks.is_multiple_of(retry) {
            return;
        }
        let serial = self.commit_index;
        for to in self.secondaries.clone() {
            let asked = *self.asked_at.entry(to).or_insert(self.ticks);
            if self.ticks - asked >= refresh + retry {
                self.send(to, Message::Notify { serial }, out);
            }
        }
    }

    /// Primary: answers a secondary at `serial` with what follows it (or the next chunk of
    /// the full transfer it is receiving). Only durable changes leave the primary, so no
    /// secondary ever holds one a crash of the primary could lose.
    fn answer(
        &mut self,
        to: NodeId,
        serial: LogIndex,
        receiving: Option<(SnapshotMeta, u64)>,
        out: &mut Out,
    ) {
        let commit = self.commit_index;
        if serial > commit && !self.is_primary() && self.membership.contains(to) {
            // A member holding more than this copy (the one history's longer prefix): ask
            // it. After a primary's removal, with the old primary gone, this is how a
            // successor that missed the removal gets it from a member that has it.
            if to != self.source() && !self.switch_source(to) {
                return;
            }
            self.heard_serial(serial);
            return self.ask_if_behind(out);
        }
        if serial > commit || self.bugs().no_transfers || self.pull.installing.is_some() {
            // Claims more than the primary ever made durable: no correct secondary says that.
            return;
        }
        // A full transfer under way goes on with the snapshot it started with, even if the
        // primary has taken a newer one since: restarting it at every snapshot could keep a
        // slow secondary from ever finishing.
        let continuing = self
            .transfers
            .get(&to)
            .filter(|s| receiving.is_some_and(|(meta, _)| meta == s.meta) && serial < s.meta.index)
            .cloned();
        if let (Some(snapshot), Some((_, held))) = (continuing, receiving) {
            return self.send_chunk(to, snapshot, held, out);
        }
        self.transfers.remove(&to);
        let gap = commit - serial;
        // Incremental while the changes after `serial` are held and the gap is small, or when
        // no snapshot would take the secondary past `serial` anyway.
        let newer_snapshot = self.snapshot.clone().filter(|s| s.meta.index > serial);
        let retained = serial >= self.log.base().index;
        match newer_snapshot {
            Some(snapshot) if !retained || gap > self.config.ixfr_gap_max => {
                self.transfers.insert(to, snapshot.clone());
                self.send_chunk(to, snapshot, 0, out);
            }
            _ if retained => {
                let mut entries = if gap == 0 {
                    Vec::new()
                } else {
                    let (count, bytes) =
                        (self.config.batch_entries_max, self.config.batch_bytes_max);
                    self.log.slice(serial + 1, count, bytes)
                };
                entries.retain(|e| e.index <= commit);
                let ixfr = Message::Ixfr {
                    after: serial,
                    serial: commit,
                    entries,
                };
                self.send(to, ixfr, out);
            }
            // Compacted and no snapshot past it: cannot happen (a base comes from a snapshot).
            _ => {}
        }
    }

    /// Primary: the chunk of `snapshot` that starts at `offset`. The transfer stays recorded
    /// until the secondary asks for something else, so a lost last chunk is sent again.
    fn send_chunk(&mut self, to: NodeId, snapshot: Snapshot, offset: u64, out: &mut Out) {
        let serial = self.commit_index;
        let len = snapshot.data.len();
        let start = usize::try_from(offset).unwrap_or(len).min(len);
        let end = start
            .saturating_add(self.config.snapshot_chunk_bytes)
            .min(len);
        let done = end == len;
        let axfr = Message::Axfr {
            meta: snapshot.meta,
            offset: start as u64,
            data: snapshot.data.slice(start..end),
            done,
            serial,
            membership: snapshot.membership.clone().filter(|_| done),
        };
        self.send(to, axfr, out);
    }

    fn heard_serial(&mut self, serial: LogIndex) {
        self.pull.primary_serial = self.pull.primary_serial.max(serial);
    }

    /// Secondary: asks the primary for what follows its serial.
    fn ask(&mut self, out: &mut Out) {
        if self.pull.installing.is_some() {
            return;
        }
        if self.pull.waiting {
            self.pull.unanswered = self.pull.unanswered.saturating_add(1);
        }
        self.pull.waiting = true;
        self.pull.since_asked = 0;
        let query = Message::Query {
            serial: self.log.last_index(),
            receiving: self
                .pull
                .incoming
                .as_ref()
                .map(|(meta, bytes)| (*meta, bytes.len() as u64)),
        };
        let source = self.source();
        if source == NodeId(0) || source == self.id {
            return; // joining: it waits for the primary's NOTIFY
        }
        self.send(source, query, out);
    }

    /// Asks again at once if the primary holds more than this copy.
    fn ask_if_behind(&mut self, out: &mut Out) {
        if self.pull.primary_serial > self.log.last_index() {
            self.ask(out);
        }
    }

    /// Secondary: an incremental transfer. Only the answer to the question it has out (the
    /// changes after its serial) counts: a duplicate, or an answer to a question asked before
    /// a crash, is dropped, and the retry interval asks again if one was lost.
    fn on_ixfr(&mut self, after: LogIndex, serial: LogIndex, entries: Vec<Entry>, out: &mut Out) {
        self.heard_serial(serial);
        if self.pull.installing.is_some() || after != self.log.last_index() {
            return;
        }
        self.pull.waiting = false;
        self.pull.unanswered = 0;
        self.pull.incoming = None;
        // The answer to its own question says where the primary is now: a NOTIFY that
        // claimed more (a bogus one) stops driving questions here.
        self.pull.primary_serial = serial;
        let mut membership_moved = false;
        for entry in entries {
            // Out of order, of an era before what precedes it, or past the serial sent with
            // it: no primary sends that.
            if Some(entry.index) != self.log.last_index().checked_add(1)
                || entry.era < self.log.last_era()
                || entry.index > serial
            {
                break;
            }
            membership_moved |= matches!(entry.payload, Payload::Membership { .. });
            self.era = self.era.max(entry.era);
            self.disk.draft.entries.push(entry.clone());
            self.log.push(entry);
        }
        if membership_moved {
            self.refresh_membership();
            if self.is_primary() {
                return;
            }
        }
        self.ask_if_behind(out);
    }

    /// Secondary: a chunk of a full transfer. A chunk that does not follow what it holds (a
    /// duplicate, a late copy) is dropped, as in `on_ixfr`.
    fn on_axfr(
        &mut self,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        (done, membership): (bool, Option<Membership>),
        serial: LogIndex,
        out: &mut Out,
    ) {
        self.heard_serial(serial);
        if self.pull.installing.is_some() {
            return;
        }
        if meta.index <= self.log.last_index() || meta.index > serial || meta.index == u64::MAX {
            // It holds all of that already (a late copy), or the snapshot claims more than
            // the primary's own serial (no primary sends that).
            return;
        }
        let held = match &mut self.pull.incoming {
            Some((m, bytes)) if *m == meta => {
                if bytes.len() as u64 != offset {
                    return;
                }
                bytes.extend_from_slice(&data);
                bytes.len() as u64
            }
            _ if offset == 0 => {
                self.pull.incoming = Some((meta, data.to_vec()));
                data.len() as u64
            }
            _ => return,
        };
        self.pull.waiting = false;
        self.pull.unanswered = 0;
        if !done {
            return self.ask(out);
        }
        let Some((_, bytes)) = self.pull.incoming.take() else {
            return;
        };
        debug_assert_eq!(bytes.len() as u64, held);
        let snapshot = Snapshot {
            membership,
            meta,
            data: Bytes::from(bytes),
        };
        // Everything it held is older than the snapshot: the log starts after it, and the
        // snapshot is applied once it is durable (`on_persisted`).
        self.log.compact_to(meta);
        self.era = self.era.max(meta.era);
        self.disk.draft.snapshot = Some(snapshot.clone());
        self.flush(out);
        self.pull.installing = Some((self.disk.last_pushed(), snapshot));
    }

    fn on_persisted(&mut self, id: PersistId, out: &mut Out) {
        self.disk.persisted(id);
        if !self.era_durable && self.era_persist.is_some_and(|at| at <= id) {
            self.era_durable = true;
            let waiting = std::mem::take(&mut self.before_era);
            if !waiting.is_empty() {
                self.on_propose(waiting, out);
            }
        }
        let installed = matches!(&self.pull.installing, Some((at, _)) if *at <= id);
        if installed {
            if let Some((_, snapshot)) = self.pull.installing.take() {
                self.commit_index = snapshot.meta.index;
                self.applied_index = snapshot.meta.index;
                self.snapshot = Some(snapshot.clone());
                out.push(Action::Restore(snapshot));
                self.refresh_membership();
            }
            if !self.is_primary() {
                self.ask_if_behind(out);
            }
        }
    }

    /// Applies what is durable here (everything here came from the primary's durable history,
    /// or is the primary's own), and, at the primary, tells the secondaries.
    fn advance(&mut self, out: &mut Out) {
        if self.pull.installing.is_some() {
            return;
        }
        let through = if self.bugs().apply_before_durable && !self.is_primary() {
            self.log.last_index()
        } else {
            self.disk.durable_index()
        };
        let through = through.min(self.log.last_index());
        self.commit_index = self.commit_index.max(through);
        self.log
            .apply_through(&mut self.applied_index, self.commit_index, out);
        if (self.is_primary() || self.handing_over) && self.commit_index > self.notified_serial {
            self.notified_serial = self.commit_index;
            self.notify(out);
        }
        if self.era_durable && !self.reads_before_era.is_empty() {
            let ready = std::mem::take(&mut self.reads_before_era);
            out.extend(ready.into_iter().map(Action::ReadReady));
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

impl Engine for Dns {
    type Message = Message;

    fn step(&mut self, input: Input<Message>, out: &mut Out) {
        // What a restart left to apply goes first: no read is answered from an older copy
        // than the one this node answered from before it crashed.
        self.advance(out);
        match input {
            Input::Tick => self.on_tick(out),
            Input::Receive { from, message } => self.on_message(from, message, out),
            Input::Propose(proposals) => self.on_propose(proposals, out),
            Input::Read(reads) => self.on_read(reads, out),
            Input::Persisted(id) => self.on_persisted(id, out),
            Input::Snapshotted(snapshot) => self.on_snapshotted(snapshot),
            // The primary is the lowest voter: it moves only with the membership.
            Input::TransferLeadership { .. } => {}
            Input::ChangeMembership { id, change } => self.on_change_membership(id, change, out),
        }
        self.flush(out);
        self.advance(out);
    }

    fn membership(&self) -> Option<&Membership> {
        Some(&self.membership)
    }

    fn membership_at(&self, index: LogIndex) -> Option<Membership> {
        Some(self.membership_as_of(index))
    }

    fn status(&self) -> Status {
        let (role, leader) = if self.is_primary() || self.leads_after_own_removal() {
            (Role::Leader, Some(self.id))
        } else {
            (Role::Secondary, self.known_primary())
        };
        Status {
            id: self.id,
            role,
            leader,
            era: self.era,
            commit_index: self.commit_index,
            last_index: self.log.last_index(),
        }
    }
}

/// The hard state: the primary's era.
pub fn encode_era(era: u64) -> Vec<u8> {
    let mut enc = Encoder::with_capacity(8);
    enc.u64(era);
    enc.finish()
}

/// Reads a hard state written by [`encode_era`].
pub fn decode_era(bytes: &[u8]) -> Result<u64, DecodeError> {
    let mut dec = Decoder::new(bytes);
    let era = dec.u64("era")?;
    dec.finish()?;
    Ok(era)
}
