//! What both Paxos engines share: the acceptor's and the learner's roles, persistence, the
//! loopback through which a node's proposer hears its own acceptor, and catch-up.
//!
//! The loopback matters for safety: a proposer counts its own acceptor's promise or accept
//! only once it is durable, exactly as it counts another node's (which arrives only after that
//! node persisted it). Without it, a node could count its own promise, crash, forget it, and a
//! value could be chosen by a "majority" that never existed on disk.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{
    Action, Entry, LogIndex, Membership, NodeId, Payload, Persist, PersistId, Rng, Snapshot,
    SnapshotMeta,
};
use thiserror::Error;

use crate::acceptor::{Acceptor, AcceptorEvent};
use crate::ballot::Ballot;
use crate::config::{Config, ConfigError};
use crate::message::{
    AskDecided, Decided, Message, Slot, SlotOutcome, SnapshotChunk, SnapshotRequest,
};

/// Outcomes of compacted slots remembered (Basic Paxos), newest first: enough to cover every
/// slot a lagging proposer may still have in flight when its peers compact.
const OUTCOMES_KEPT: usize = 1 << 16;

/// The acceptor's journal may grow to twice its last checkpoint plus this before the whole
/// state is restated: a restart replays at most that much, and a persist's cost stays in
/// proportion to what changed.
const JOURNAL_BYTES_MIN: usize = 256 << 10;

/// ... and never beyond this: the log restates the checkpoint and journal in one record when
/// it starts a segment, and a record holds at most 256 MiB.
const JOURNAL_BYTES_MAX: usize = 64 << 20;

/// Actions pushed by a step.
pub(crate) type Out = Vec<Action<Message>>;

/// Why a node could not be rebuilt from its persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The hard state does not decode.
    #[error("hard state is corrupt: {0}")]
    HardState(#[from] DecodeError),
    /// The decided log does not follow the snapshot.
    #[error("persisted log is invalid: {0}")]
    Log(String),
}

/// A snapshot transfer in progress, pulled a chunk at a time from one peer.
#[derive(Debug)]
struct Incoming {
    meta: SnapshotMeta,
    from: NodeId,
    bytes: Vec<u8>,
    /// Times it was resumed without anything arriving from the sender since.
    stalls: u32,
}

/// A snapshot transfer whose sender sent nothing for this many gap timeouts is given up and
/// another peer asked (the sender may have crashed).
const TRANSFER_STALLS_MAX: u32 = 3;

/// How a change to the acceptor (or to `max_round`) is written.
enum StateWrite {
    /// The whole state, as the new hard state.
    Checkpoint(Vec<u8>),
    /// One journal record of the changes since the last write.
    Journal(Vec<u8>),
}

#[derive(Debug, Default)]
struct Draft {
    snapshot: Option<Snapshot>,
    hard_state: bool,
    entries: Vec<Entry>,
}

/// State and machinery common to Basic and Multi-Paxos.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) id: NodeId,
    /// Whom this node talks to: every member of the newest membership it knows decided, and
    /// every acceptor of a slot it may still have to decide (`refresh_peers`).
    pub(crate) peers: Vec<NodeId>,
    /// The membership in force after the snapshot base: the snapshot's, else the boot one.
    pub(crate) base_membership: Membership,
    /// Membership changes in the decided log after the base, by slot.
    pub(crate) memberships: BTreeMap<Slot, Membership>,
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    pub(crate) ticks: u64,
    pub(crate) acceptor: Acceptor,
    /// The highest round this node used or saw. Persisted when a ballot is used, so a
    /// restarted proposer never reuses one.
    pub(crate) max_round: u64,
    /// The decided log: a snapshot base, then consecutive decided entries.
    pub(crate) base: SnapshotMeta,
    pub(crate) log: Vec<Entry>,
    /// Decided entries beyond a gap in the log.
    pub(crate) ahead: BTreeMap<Slot, Entry>,
    pub(crate) applied: LogIndex,
    pub(crate) snapshot: Option<Snapshot>,
    /// A snapshot being received: what it covers, who sends it, the bytes so far.
    incoming: Option<Incoming>,
    /// Basic Paxos: what was decided in the newest compacted slots, so that a proposer that
    /// missed a decision can still learn whether its command was chosen.
    outcomes: BTreeMap<Slot, SlotOutcome>,
    pub(crate) keep_outcomes: bool,
    /// The highest slot known decided somewhere.
    pub(crate) decided_hint: Slot,
    /// The last node that told this one of a decision: whom a node that joined, knowing no
    /// peers yet, asks for what it missed.
    informant: Option<NodeId>,
    /// When the current gap in the log was noticed, and when it was last asked about.
    gap: Option<(u64, u64)>,
    draft: Draft,
    next_persist: u64,
    /// Persists not yet durable: (id, decided log end it makes durable).
    unpersisted: VecDeque<(u64, Slot)>,
    last_issued: u64,
    last_durable: u64,
    /// Messages from this node to itself, delivered once the persist before them is durable.
    loopback: VecDeque<(u64, Message)>,
    /// Persists holding acceptor state: (persist id, newest acceptor event it makes durable).
    event_marks: VecDeque<(u64, u64)>,
    /// Acceptor events through this number are durable (and so may have been answered).
    durable_events: u64,
    /// Acceptor events through this number, and `max_round` at this value, are in a persist
    /// already issued (a checkpoint or a journal record).
    journaled_events: u64,
    journaled_round: u64,
    /// Bytes of the last checkpoint (the hard state), and of the journal written since.
    checkpoint_bytes: usize,
    journal_bytes: usize,
}

impl Core {
    pub(crate) fn new(config: Config) -> Result<Core, ConfigError> {
        config.validate()?;
        let base_membership = Membership::at_boot(config.boot_membership.as_ref(), &config.voters);
        let mut core = Core {
            id: config.id,
            peers: Vec::new(),
            base_membership,
            memberships: BTreeMap::new(),
            rng: Rng::new(config.seed),
            config,
            ticks: 0,
            acceptor: Acceptor::default(),
            max_round: 0,
            base: SnapshotMeta::default(),
            log: Vec::new(),
            ahead: BTreeMap::new(),
            applied: 0,
            snapshot: None,
            incoming: None,
            outcomes: BTreeMap::new(),
            keep_outcomes: false,
            decided_hint: 0,
            informant: None,
            gap: None,
            draft: Draft::default(),
            next_persist: 1,
            unpersisted: VecDeque::new(),
            last_issued: 0,
            last_durable: 0,
            loopback: VecDeque::new(),
            event_marks: VecDeque::new(),
            durable_events: 0,
            journaled_events: 0,
            journaled_round: 0,
            checkpoint_bytes: 0,
            journal_bytes: 0,
        };
        core.refresh_peers();
        Ok(core)
    }

    /// A node rebuilt from its hard state and the journal after it, its newest snapshot and
    /// the decided log after that.
    pub(crate) fn restart(
        config: Config,
        hard_state: Option<&[u8]>,
        journal: &[Vec<u8>],
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> Result<Core, RestartError> {
        let mut core = Core::new(config)?;
        if let Some(bytes) = hard_state {
            let mut dec = Decoder::new(bytes);
            core.max_round = dec.u64("max round")?;
            core.acceptor = Acceptor::decode(&mut dec)?;
            dec.finish()?;
            core.checkpoint_bytes = bytes.len();
        }
        for record in journal {
            let mut dec = Decoder::new(record);
            core.max_round = core.max_round.max(dec.u64("max round")?);
            for _ in 0..dec.count("acceptor events")? {
                core.acceptor.replay(AcceptorEvent::decode(&mut dec)?);
            }
            dec.finish()?;
            core.journal_bytes += record.len();
        }
        core.journaled_round = core.max_round;
        #[cfg(any(test, feature = "inject-bugs"))]
        if core.config.bugs.forget_promises_on_restart {
            core.acceptor.forget_promises();
        }
        core.base = snapshot.as_ref().map(|s| s.meta).unwrap_or_default();
        for (i, e) in entries.iter().enumerate() {
            if e.index != core.base.index + 1 + i as u64 {
                return Err(RestartError::Log(format!(
                    "entry {} where {} was expected",
                    e.index,
                    core.base.index + 1 + i as u64
                )));
            }
        }
        if let Some(membership) = snapshot.as_ref().and_then(|s| s.membership.clone()) {
            core.base_membership = membership;
        }
        core.memberships = entries
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::Membership { membership, .. } => Some((e.index, membership.clone())),
                _ => None,
            })
            .collect();
        core.log = entries;
        core.refresh_peers();
        core.applied = core.base.index;
        core.decided_hint = core.prefix();
        core.snapshot = snapshot;
        core.acceptor.forget_through(core.prefix());
        Ok(core)
    }

    /// Acceptor events through this number are durable: what a peer may have heard of.
    pub(crate) fn durable_events(&self) -> u64 {
        self.durable_events
    }

    /// The last slot of the decided log.
    pub(crate) fn prefix(&self) -> Slot {
        self.base.index + self.log.len() as Slot
    }

    /// A fresh ballot above every round this node used or saw; persisted before any message
    /// that carries it leaves.
    pub(crate) fn next_ballot(&mut self) -> Ballot {
        self.max_round += 1;
        self.draft.hard_state = true;
        Ballot {
            round: self.max_round,
            node: self.id,
        }
    }

    pub(crate) fn observe(&mut self, ballot: Ballot) {
        self.max_round = self.max_round.max(ballot.round);
    }

    /// The acceptor's state changed: persist it before answering.
    pub(crate) fn acceptor_changed(&mut self) {
        #[cfg(any(test, feature = "inject-bugs"))]
        if self.config.bugs.answer_before_persisting {
            return;
        }
        self.draft.hard_state = true;
    }

    /// The acceptor's changes since the last persist, as a journal record; or, when the
    /// journal has grown past its bound (or the events to journal were not all kept), the
    /// whole state as a new checkpoint. `None` when nothing changed.
    fn persistent_changes(&mut self) -> Option<StateWrite> {
        let after = self.journaled_events;
        if self.acceptor.last_event() == after && self.max_round == self.journaled_round {
            return None;
        }
        self.journaled_events = self.acceptor.last_event();
        self.journaled_round = self.max_round;
        let events: Vec<&(u64, AcceptorEvent)> = self.acceptor.events_after(after).collect();
        let complete = events.first().is_none_or(|(n, _)| *n == after + 1);
        let bound = (2 * self.checkpoint_bytes + JOURNAL_BYTES_MIN).min(JOURNAL_BYTES_MAX);
        if complete && self.journal_bytes <= bound {
            let mut enc = Encoder::with_capacity(64);
            enc.u64(self.max_round).u64(events.len() as u64);
            for (_, event) in events {
                event.encode(&mut enc);
            }
            let record = enc.finish();
            self.journal_bytes += record.len();
            return Some(StateWrite::Journal(record));
        }
        let mut enc = Encoder::with_capacity(64);
        enc.u64(self.max_round);
        self.acceptor.encode(&mut enc);
        let checkpoint = enc.finish();
        self.checkpoint_bytes = checkpoint.len();
        self.journal_bytes = 0;
        Some(StateWrite::Checkpoint(checkpoint))
    }

    /// Pushes the pending persist, if any.
    pub(crate) fn flush(&mut self, out: &mut Out) {
        let draft = std::mem::take(&mut self.draft);
        let changes = if draft.hard_state {
            self.persistent_changes()
        } else {
            None
        };
        if draft.snapshot.is_none() && changes.is_none() && draft.entries.is_empty() {
            return;
        }
        let id = self.next_persist;
        self.next_persist += 1;
        self.last_issued = id;
        self.unpersisted.push_back((id, self.prefix()));
        let (hard_state, journal) = match changes {
            Some(StateWrite::Checkpoint(state)) => (Some(state), Vec::new()),
            Some(StateWrite::Journal(record)) => (None, vec![record]),
            None => (None, Vec::new()),
        };
        self.event_marks.push_back((id, self.journaled_events));
        out.push(Action::Persist(Persist {
            id: PersistId(id),
            snapshot: draft.snapshot,
            hard_state,
            journal,
            truncate_from: None,
            entries: draft.entries,
        }));
    }

    /// Sends a message once everything decided so far is durable; to itself, through the
    /// loopback.
    pub(crate) fn send(&mut self, to: NodeId, message: Message, out: &mut Out) {
        self.flush(out);
        if to == self.id {
            self.loopback.push_back((self.last_issued, message));
        } else {
            out.push(Action::Send { to, message });
        }
    }

    /// Sends a message to every acceptor, this node's included.
    pub(crate) fn broadcast(&mut self, message: Message, out: &mut Out) {
        for to in self.peers.clone() {
            self.send(to, message.clone(), out);
        }
        self.send(self.id, message, out);
    }

    pub(crate) fn on_persisted(&mut self, id: PersistId) {
        self.last_durable = self.last_durable.max(id.0);
        while let Some(&(pending, covers)) = self.unpersisted.front() {
            if pending > id.0 {
                break;
            }
            self.unpersisted.pop_front();
            // These slots are in the durable decided log: the log answers for them now.
            self.acceptor.forget_through(covers);
        }
        while let Some(&(pending, events)) = self.event_marks.front() {
            if pending > id.0 {
                break;
            }
            self.event_marks.pop_front();
            self.durable_events = events;
        }
    }

    /// The next message from this node to itself whose persist is durable.
    pub(crate) fn ready_loopback(&mut self) -> Option<Message> {
        match self.loopback.front() {
            Some(&(needs, _)) if needs <= self.last_durable => {
                self.loopback.pop_front().map(|(_, m)| m)
            }
            _ => None,
        }
    }

    /// The decided entry at `slot`, if this node has it in its log.
    pub(crate) fn decided(&self, slot: Slot) -> Option<&Entry> {
        slot.checked_sub(self.base.index + 1)
            .and_then(|i| self.log.get(i as usize))
    }

    /// Learns that `entry` is decided (Paxos Made Simple, section 2.3). Returns whether the
    /// decided log grew.
    pub(crate) fn learn(&mut self, entry: Entry) -> bool {
        let slot = entry.index;
        self.decided_hint = self.decided_hint.max(slot);
        if slot <= self.prefix() {
            debug_assert!(
                self.decided(slot).is_none_or(|d| self.decided_as(
                    slot,
                    &entry.payload,
                    &d.payload
                )),
                "slot {slot} decided twice with different values: {:?} then {:?}",
                self.decided(slot).map(|d| &d.payload),
                entry.payload
            );
            return false;
        }
        self.ahead.insert(slot, entry);
        let before = self.prefix();
        self.append_ahead();
        if self.prefix() > before {
            self.gap = None;
            self.after_log_grew(before);
        }
        self.prefix() > before
    }

    /// Moves the decided entries that now follow the log from `ahead` into it.
    ///
    /// A membership change is made here, on the newest membership before its slot, as etcd
    /// checks a change when it applies: slots are decided each on its own, so a change can be
    /// decided after another one its proposer never saw (a leader recovered it in phase 1 from
    /// an older leader; two Basic Paxos proposers made one each). Made on the membership it
    /// was asked of, it could undo the other, which its operator was told succeeded. One no
    /// longer valid becomes a no-op. Every node decides so alike, from the log before it;
    /// a node that joined and knows no membership yet cannot make one, and waits to learn the
    /// slot from another's log (where changes are made) as it would fill a gap.
    fn append_ahead(&mut self) {
        let next_slot = |core: &Core| core.prefix() + 1;
        while let Some(next) = self.ahead.get(&next_slot(self)) {
            let unmakeable = matches!(next.payload, Payload::MembershipChange { .. })
                && self.newest_membership().members.is_empty();
            if unmakeable {
                break;
            }
            let mut next = self.ahead.remove(&next_slot(self)).expect("just seen");
            if let Payload::MembershipChange { id, change } = &next.payload {
                next.payload = match self.newest_membership().changed(change) {
                    Ok(membership) => Payload::Membership {
                        id: *id,
                        membership,
                    },
                    Err(_) => Payload::Noop,
                };
            }
            if let Payload::Membership { membership, .. } = &next.payload {
                self.memberships.insert(next.index, membership.clone());
            }
            self.draft.entries.push(next.clone());
            self.log.push(next);
        }
    }

    /// Whether `slot`, decided in this node's log as `decided`, was decided with the value
    /// `proposed`: the same value, or the membership change `proposed` made on the membership
    /// before the slot, exactly as `append_ahead` made it. `slot` must be in the log.
    pub(crate) fn decided_as(&self, slot: Slot, proposed: &Payload, decided: &Payload) -> bool {
        match proposed {
            Payload::MembershipChange { id, change } => {
                let before = self
                    .memberships
                    .range(..slot)
                    .next_back()
                    .map_or(&self.base_membership, |(_, m)| m);
                match before.changed(change) {
                    Ok(membership) => {
                        *decided
                            == Payload::Membership {
                                id: *id,
                                membership,
                            }
                    }
                    Err(_) => *decided == Payload::Noop,
                }
            }
            _ => proposed == decided,
        }
    }

    /// Pushes `Apply` for every decided entry not yet applied; returns them for the engine.
    pub(crate) fn apply_decided(&mut self, out: &mut Out) -> Vec<Entry> {
        let mut applied = Vec::new();
        while self.applied < self.prefix() {
            self.applied += 1;
            let entry = self
                .decided(self.applied)
                .expect("decided entries after the base are in the log")
                .clone();
            out.push(Action::Apply(entry.clone()));
            applied.push(entry);
        }
        applied
    }

    /// Learner catch-up: a gap in the decided log is asked about every `gap_timeout_ticks`.
    /// Returns the missing slot when the gap has lasted three timeouts, so a proposer can
    /// decide it itself.
    pub(crate) fn check_gap(&mut self, ask: Option<NodeId>, out: &mut Out) -> Option<Slot> {
        if self.decided_hint <= self.prefix() {
            self.gap = None;
            return None;
        }
        let now = self.ticks;
        let timeout = self.config.gap_timeout_ticks;
        let (since, asked) = *self.gap.get_or_insert((now, now));
        if now >= asked + timeout {
            let prefix = self.prefix();
            if self
                .incoming
                .as_ref()
                .is_some_and(|i| i.meta.index <= prefix || i.stalls >= TRANSFER_STALLS_MAX)
            {
                self.incoming = None;
            }
            if let Some(incoming) = self.incoming.as_mut() {
                // A snapshot transfer stalled (a chunk or a request was lost): resume it.
                incoming.stalls += 1;
                let (to, meta) = (incoming.from, incoming.meta);
                let offset = incoming.bytes.len() as u64;
                let request = SnapshotRequest { meta, offset };
                self.send(to, Message::SnapshotRequest(request), out);
            } else {
                let to = ask
                    .filter(|&n| n != self.id)
                    .or_else(|| self.rng.pick(&self.peers).copied())
                    .or(self.informant);
                if let Some(to) = to {
                    let from = self.prefix() + 1;
                    self.send(to, Message::AskDecided(AskDecided { from }), out);
                }
            }
            self.gap = Some((since, now));
        }
        (now >= since + 3 * timeout).then_some(self.prefix() + 1)
    }

    pub(crate) fn on_ask_decided(&mut self, from: NodeId, ask: AskDecided, out: &mut Out) {
        if ask.from <= self.base.index {
            if let Some(snapshot) = self.snapshot.clone() {
                self.send_chunk(from, &snapshot, 0, out);
            }
            return;
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut bytes = 0;
        for entry in (ask.from..=self.prefix()).filter_map(|s| self.decided(s)) {
            let size = entry.payload.size_bytes();
            if entries.len() >= self.config.batch_entries_max
                || (!entries.is_empty() && bytes + size > self.config.batch_bytes_max)
            {
                break;
            }
            bytes += size;
            entries.push(entry.clone());
        }
        if !entries.is_empty() {
            self.send(from, Message::Decided(Decided { entries }), out);
        }
    }

    /// Decisions a peer sent. While a gap remains and the answer filled some of it, the rest
    /// is asked for at once: a learner far behind catches up at a batch per round trip, not a
    /// batch per gap timeout.
    pub(crate) fn on_decided(&mut self, from: NodeId, decided: Decided, out: &mut Out) {
        self.informant = Some(from);
        let before = self.prefix();
        for entry in decided.entries {
            self.learn(entry);
        }
        if self.prefix() > before && self.decided_hint > self.prefix() && self.incoming.is_none() {
            let ask = AskDecided {
                from: self.prefix() + 1,
            };
            self.send(from, Message::AskDecided(ask), out);
            let now = self.ticks;
            self.gap = Some((now, now));
        }
    }

    /// The runtime saved a snapshot of what this node applied: drop the log it covers.
    pub(crate) fn on_snapshotted(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        assert!(
            meta.index <= self.applied,
            "snapshot through {} beyond applied {}",
            meta.index,
            self.applied
        );
        if meta.index <= self.base.index {
            return;
        }
        let compacted = self.log.drain(..(meta.index - self.base.index) as usize);
        if self.keep_outcomes {
            self.outcomes
                .extend(compacted.map(|e| (e.index, outcome_of(&e))));
            while self.outcomes.len() > OUTCOMES_KEPT {
                self.outcomes.pop_first();
            }
        }
        self.base = meta;
        if let Some(membership) = &snapshot.membership {
            self.base_membership = membership.clone();
        }
        self.memberships = self.memberships.split_off(&(meta.index + 1));
        self.snapshot = Some(snapshot);
    }

    /// What was decided in `slot`, as far as this node knows.
    pub(crate) fn outcome(&self, slot: Slot) -> SlotOutcome {
        match self.decided(slot) {
            Some(entry) => outcome_of(entry),
            None => self
                .outcomes
                .get(&slot)
                .copied()
                .unwrap_or(SlotOutcome::Unknown),
        }
    }

    fn send_chunk(&mut self, to: NodeId, snapshot: &Snapshot, offset: u64, out: &mut Out) {
        let start = (offset as usize).min(snapshot.data.len());
        let end = (start + self.config.snapshot_chunk_bytes).min(snapshot.data.len());
        let done = end == snapshot.data.len();
        let chunk = SnapshotChunk {
            meta: snapshot.meta,
            offset: start as u64,
            data: snapshot.data.slice(start..end),
            done,
            membership: snapshot.membership.clone().filter(|_| done),
        };
        self.send(to, Message::SnapshotChunk(chunk), out);
    }

    pub(crate) fn on_snapshot_request(
        &mut self,
        from: NodeId,
        request: SnapshotRequest,
        out: &mut Out,
    ) {
        if let Some(snapshot) = self.snapshot.clone() {
            let offset = if snapshot.meta == request.meta {
                request.offset
            } else {
                0
            };
            self.send_chunk(from, &snapshot, offset, out);
        }
    }

    /// A learner behind a peer's compacted log pulls the peer's snapshot chunk by chunk. A
    /// transfer in progress is resumed, never restarted, by a late or duplicated first chunk
    /// of the same snapshot or by an older one; a newer snapshot replaces it (the sender may
    /// no longer have the old one). A lost chunk or request is asked for again by the gap
    /// timer (`check_gap`), from where the transfer stands.
    pub(crate) fn on_snapshot_chunk(&mut self, from: NodeId, chunk: SnapshotChunk, out: &mut Out) {
        let meta = chunk.meta;
        if meta.index <= self.prefix() {
            return;
        }
        self.decided_hint = self.decided_hint.max(meta.index);
        let received = match self.incoming.as_mut() {
            Some(incoming) if incoming.meta == meta => {
                if incoming.from == from {
                    // The sender is alive, if slow: keep waiting for the chunk asked for.
                    incoming.stalls = 0;
                }
                incoming.bytes.len() as u64
            }
            Some(incoming) if incoming.meta.index >= meta.index => return,
            _ => 0,
        };
        if chunk.offset != received {
            return;
        }
        if received == 0 {
            self.incoming = Some(Incoming {
                meta,
                from,
                bytes: Vec::new(),
                stalls: 0,
            });
        }
        let Some(incoming) = self.incoming.as_mut() else {
            return;
        };
        incoming.from = from;
        incoming.stalls = 0;
        incoming.bytes.extend_from_slice(&chunk.data);
        let received = incoming.bytes.len() as u64;
        if !chunk.done {
            let request = SnapshotRequest {
                meta,
                offset: received,
            };
            self.send(from, Message::SnapshotRequest(request), out);
            return;
        }
        let incoming = self.incoming.take().expect("collected above");
        self.install(
            Snapshot {
                membership: chunk.membership,
                meta,
                data: Bytes::from(incoming.bytes),
            },
            out,
        );
    }

    /// Replaces the decided log and the state machine with a snapshot.
    fn install(&mut self, snapshot: Snapshot, out: &mut Out) {
        let meta = snapshot.meta;
        self.base = meta;
        self.log.clear();
        self.draft.entries.clear();
        if let Some(membership) = &snapshot.membership {
            self.base_membership = membership.clone();
        }
        self.memberships.clear();
        self.ahead = self.ahead.split_off(&(meta.index + 1));
        self.append_ahead();
        // The snapshot may bring a membership this node never saw decided.
        self.refresh_peers();
        self.applied = meta.index;
        self.decided_hint = self.decided_hint.max(self.prefix());
        self.draft.snapshot = Some(snapshot.clone());
        out.push(Action::Restore(snapshot.clone()));
        self.snapshot = Some(snapshot);
    }
}

/// Whether a value changes the membership (proposed, or made in a decided log): while one is
/// in progress, another change is refused as pending.
pub(crate) fn is_membership(value: &Payload) -> bool {
    matches!(
        value,
        Payload::Membership { .. } | Payload::MembershipChange { .. }
    )
}

/// Whether `decided`, as a decided log holds it, is the value `proposed` or the membership
/// change `proposed` asked for, made under the same request. (Made into a no-op, a change
/// is told apart from another value only by the membership before its slot: see
/// `Core::decided_as`.)
pub(crate) fn made_from(proposed: &Payload, decided: &Payload) -> bool {
    match (proposed, decided) {
        (Payload::MembershipChange { id, .. }, Payload::Membership { id: made, .. }) => id == made,
        _ => proposed == decided,
    }
}

/// Whether two values for one slot are one decision, as far as the values alone tell: equal,
/// or a membership change and what a decided log made of it (`made_from`, either way), or a
/// change and a no-op (what a log makes of a change no longer valid; only the membership
/// before the slot tells it from a no-op decided otherwise, and a checker comparing what
/// nodes applied catches that). A node reports a decided slot as its log holds it, so a
/// proposer may carry the made form on under a higher ballot.
pub fn same_decision(a: &Payload, b: &Payload) -> bool {
    let change_and_noop = |x: &Payload, y: &Payload| {
        matches!(x, Payload::MembershipChange { .. }) && *y == Payload::Noop
    };
    made_from(a, b) || made_from(b, a) || change_and_noop(a, b) || change_and_noop(b, a)
}

fn outcome_of(entry: &Entry) -> SlotOutcome {
    match entry.proposal() {
        Some(proposal) => SlotOutcome::Command(proposal.id),
        None => SlotOutcome::NoCommand,
    }
}

/// The constructors and read-only views every Paxos engine offers, written once: each engine
/// is a `Core` plus its proposer, built by its own `with_core`.
macro_rules! engine_common {
    ($engine:ident, joins: $joins:literal) => {
        impl $engine {
            /// A node that has never run; with no voters, one that joins a running cluster
            /// (if this engine's membership changes).
            pub fn new(
                config: $crate::config::Config,
            ) -> Result<$engine, $crate::config::ConfigError> {
                if !$joins && config.voters.is_empty() {
                    let error = synod_core::quorum::MembersError::NotAMember(config.id);
                    return Err($crate::config::ConfigError::Members(error));
                }
                Ok($engine::with_core($crate::core::Core::new(config)?))
            }

            /// A node rebuilt from its hard state and the journal after it (as its persists
            /// wrote them), its newest snapshot and the decided log after that.
            pub fn restart(
                config: $crate::config::Config,
                hard_state: Option<&[u8]>,
                journal: &[Vec<u8>],
                snapshot: Option<synod_core::Snapshot>,
                entries: Vec<synod_core::Entry>,
            ) -> Result<$engine, $crate::core::RestartError> {
                if !$joins && config.voters.is_empty() {
                    let error = synod_core::quorum::MembersError::NotAMember(config.id);
                    return Err($crate::config::ConfigError::Members(error).into());
                }
                Ok($engine::with_core($crate::core::Core::restart(
                    config, hard_state, journal, snapshot, entries,
                )?))
            }

            /// The node's acceptor (for checkers).
            pub fn acceptor(&self) -> &$crate::acceptor::Acceptor {
                &self.core.acceptor
            }

            /// Slots decided and held in the log.
            pub fn decided_through(&self) -> synod_core::LogIndex {
                self.core.prefix()
            }

            /// The newest `max` entries of the decided log (for viewers).
            pub fn decided_tail(&self, max: usize) -> &[synod_core::Entry] {
                let log = &self.core.log;
                &log[log.len().saturating_sub(max)..]
            }

            /// Acceptor events through this number are durable, so may have been answered;
            /// later ones could still vanish in a crash (for checkers).
            pub fn durable_events(&self) -> u64 {
                self.core.durable_events()
            }

            /// The voters deciding `slot`, if this node knows them: `slot` lies after its
            /// snapshot and no further than the reconfiguration window beyond its decided log.
            pub fn voters_at(&self, slot: synod_core::LogIndex) -> Option<Vec<synod_core::NodeId>> {
                let known =
                    slot > self.core.base.index && slot <= self.core.prefix() + self.core.window();
                // A node that joined knows no membership before the first one it learned.
                let voters = self.core.config_at(slot).voters();
                (known && !voters.is_empty()).then_some(voters)
            }

            /// Number of acceptors deciding the first undecided slot.
            pub fn voters(&self) -> usize {
                self.core.config_at(self.core.prefix() + 1).voter_count()
            }
        }
    };
}

pub(crate) use engine_common;
