//! Basic Paxos, one single-decree instance per log slot (Lamport, "Paxos Made Simple", 2001).
//!
//! Every node plays all three roles. As proposer it takes commands in arrival order and runs
//! an instance for each on the next free slot: phase 1 (Prepare, Promise) with a ballot of its
//! own, then phase 2 (Accept, Accepted) with the value P2c requires (the highest-ballot value
//! a promise reported, else its own). Once a majority accepted, the value is chosen and the
//! proposer tells the learners. A proposer that finds another value chosen in its slot
//! proposes its own again in the next free slot. One preempted by a higher ballot backs off
//! for a random, growing number of ticks (section 2.4): without that, two proposers can
//! preempt each other forever. Reads are ordered in the log behind a marker entry.
//!
//! A proposer that missed the decision of its slot, and finds the slot compacted away
//! everywhere it asks, cannot tell whether its command was chosen there. Proposing it again
//! could put it in the log twice, so it first asks peers what was decided in that slot
//! (they remember the outcomes of recently compacted slots); it proposes again only on
//! hearing of another value, and gives the command up when nobody knows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use synod_core::{
    Action, Engine, Entry, Input, LogIndex, Membership, MembershipChange, MembershipRefusal,
    NodeId, Payload, ReadConsistency, ReadRequest, Rejection, RequestId, Role, Status,
};

use crate::ballot::Ballot;
use crate::core::{Core, Out};
use crate::message::*;

/// Where one proposer's instance stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Phase 1: promises received so far, with what each reported accepted in the slot.
    Preparing(BTreeMap<NodeId, Option<(Ballot, Payload)>>),
    /// Phase 2 with this value: acceptors that accepted it.
    Accepting(Payload, BTreeSet<NodeId>),
    /// Preempted: waiting until this tick before trying again with a higher ballot.
    BackingOff(u64),
}

/// One proposer's attempt to decide one slot.
#[derive(Clone, Debug)]
struct Instance {
    ballot: Ballot,
    /// The value this proposer wants decided here (its command, a read marker, or a no-op
    /// filling a hole).
    own: Payload,
    phase: Phase,
    /// Preemptions so far; the backoff doubles with each.
    preempted: u32,
    /// When the current phase's messages were last sent.
    sent_at: u64,
}

/// A command whose slot was compacted before this proposer learned what was chosen there.
#[derive(Clone, Debug)]
struct Doubt {
    own: Payload,
    /// Peers asked so far.
    asked: usize,
    asked_at: u64,
}

/// A Basic Paxos node.
#[derive(Debug)]
pub struct BasicPaxos {
    core: Core,
    /// Values waiting for a slot, oldest first.
    waiting: VecDeque<Payload>,
    instances: BTreeMap<Slot, Instance>,
    /// Commands whose fate is being asked about, by the slot they were proposed in.
    in_doubt: BTreeMap<Slot, Doubt>,
    /// Commands given up because no peer remembered what their slot decided.
    abandoned: u64,
    /// Read batches waiting for their marker to be decided and applied.
    reads: BTreeMap<u64, Vec<RequestId>>,
    preemptions: u64,
    /// A membership change decided: this node fills the slots up to this one with no-ops,
    /// so the change takes effect without waiting for writes.
    padding_through: Slot,
    /// Since when a decided change has been waiting to take effect, as this node saw it.
    change_coming_since: Option<u64>,
}

crate::core::engine_common!(BasicPaxos, joins: true);

impl BasicPaxos {
    fn with_core(mut core: Core) -> BasicPaxos {
        core.keep_outcomes = true;
        BasicPaxos {
            core,
            waiting: VecDeque::new(),
            instances: BTreeMap::new(),
            in_doubt: BTreeMap::new(),
            abandoned: 0,
            reads: BTreeMap::new(),
            preemptions: 0,
            padding_through: 0,
            change_coming_since: None,
        }
    }

    /// Times a proposer of this node was preempted by a higher ballot.
    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    /// Commands given up because their slot was compacted everywhere before this node learned
    /// what was chosen there, and no peer remembered. Their clients see a timeout.
    pub fn abandoned(&self) -> u64 {
        self.abandoned
    }

    /// The first slot no one is known to use: past the decided log, decisions heard of, and
    /// this proposer's own instances.
    fn next_free_slot(&self) -> Slot {
        let known = self.core.prefix().max(self.core.decided_hint);
        let ahead = self.core.ahead.keys().next_back().copied().unwrap_or(0);
        let mine = self.instances.keys().next_back().copied().unwrap_or(0);
        known.max(ahead).max(mine) + 1
    }

    /// Starts instances for waiting values (then no-ops that bring this node's membership
    /// change into force), up to the instance limit, in slots whose voters this node knows:
    /// no further than the reconfiguration window beyond its decided log.
    fn start_instances(&mut self, out: &mut Out) {
        // A member removed proposes no more: it stops hearing of decisions, and what it
        // proposed (a claim on the lease clocks, say) would unsettle the members in force.
        if !self.core.newest_membership().contains(self.core.id) {
            return;
        }
        loop {
            let slot = self.next_free_slot();
            let known = slot <= self.core.prefix() + self.core.window()
                && self.core.config_at(slot).voter_count() > 0;
            // No-ops that bring a change into force go out all at once (the window is short):
            // until they are decided, the members before the change must stay a quorum.
            let padding = self.waiting.is_empty() && slot <= self.padding_through;
            let room = self.instances.len() < self.core.config.instances_max || padding;
            if !known || !room {
                break;
            }
            let value = match self.waiting.pop_front() {
                Some(value) => value,
                None if padding => Payload::Noop,
                None => break,
            };
            self.start(slot, value, 0, out);
        }
    }

    /// Phase 1a (section 2.2): choose a new ballot and ask a majority to promise it.
    fn start(&mut self, slot: Slot, own: Payload, preempted: u32, out: &mut Out) {
        let ballot = self.core.next_ballot();
        let instance = Instance {
            ballot,
            own,
            phase: Phase::Preparing(BTreeMap::new()),
            preempted,
            sent_at: self.core.ticks,
        };
        self.instances.insert(slot, instance);
        let prepare = Prepare {
            ballot,
            slot,
            scope: Scope::One,
            handover: false,
        };
        self.core.broadcast(Message::Prepare(prepare), out);
    }

    /// Phase 1b (P1a): promise unless a higher ballot was promised; report the accepted value.
    fn on_prepare(&mut self, from: NodeId, prepare: Prepare, out: &mut Out) {
        let slot = prepare.slot;
        if let Some(decided) = self.core.decided(slot).cloned() {
            // A learner that knows the slot is decided says so (under a ballot above every
            // real one); the proposer adopts it.
            let accepted = vec![(slot, Ballot::DECIDED, decided.payload)];
            let promise = Promise {
                ballot: prepare.ballot,
                slot,
                scope: Scope::One,
                accepted,
                compacted_through: 0,
            };
            return self.core.send(from, Message::Promise(promise), out);
        }
        if slot <= self.core.base.index {
            let promise = Promise {
                ballot: prepare.ballot,
                slot,
                scope: Scope::One,
                accepted: vec![],
                compacted_through: self.core.base.index,
            };
            return self.core.send(from, Message::Promise(promise), out);
        }
        let reply = match self.core.acceptor.prepare(slot, prepare.ballot) {
            Ok(accepted) => {
                self.core.acceptor_changed();
                let accepted = accepted.map(|(b, v)| (slot, b, v)).into_iter().collect();
                Message::Promise(Promise {
                    ballot: prepare.ballot,
                    slot,
                    scope: Scope::One,
                    accepted,
                    compacted_through: 0,
                })
            }
            Err(promised) => Message::Nack(Nack {
                ballot: prepare.ballot,
                slot,
                promised,
            }),
        };
        // `send` flushes first: the promise is durable before the proposer can count it.
        self.core.send(from, reply, out);
    }

    /// Phase 2a (P2c): with promises from a majority, propose the value of the highest
    /// ballot any of them accepted, or this proposer's own value if none did.
    fn on_promise(&mut self, from: NodeId, promise: Promise, out: &mut Out) {
        let slot = promise.slot;
        if promise.compacted_through >= slot {
            // Decided long ago and compacted away at that acceptor: learn it, try elsewhere.
            self.core.decided_hint = self.core.decided_hint.max(promise.compacted_through);
            return self.give_up_slot(slot, out);
        }
        let Some(instance) = self.instances.get_mut(&slot) else {
            return;
        };
        let Phase::Preparing(promises) = &mut instance.phase else {
            return;
        };
        if promise.ballot != instance.ballot {
            return;
        }
        promises.insert(
            from,
            promise.accepted.into_iter().next().map(|(_, b, v)| (b, v)),
        );
        if !Core::majority_of(self.core.config_at(slot), |n| promises.contains_key(&n)) {
            return;
        }
        let value = promises
            .values()
            .flatten()
            .max_by_key(|(b, _)| *b)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| instance.own.clone());
        instance.phase = Phase::Accepting(value.clone(), BTreeSet::new());
        instance.sent_at = self.core.ticks;
        let accept = Accept {
            ballot: instance.ballot,
            first: slot,
            values: vec![value],
            commit: 0,
        };
        self.core.broadcast(Message::Accept(accept), out);
    }

    /// Phase 2b (P1a): accept unless a higher ballot was promised.
    fn on_accept(&mut self, from: NodeId, accept: Accept, out: &mut Out) {
        let slot = accept.first;
        let Some(value) = accept.values.into_iter().next() else {
            return;
        };
        if let Some(decided) = self.core.decided(slot) {
            if self.core.decided_as(slot, &value, &decided.payload) {
                let accepted = Accepted {
                    ballot: accept.ballot,
                    first: slot,
                    count: 1,
                };
                self.core.send(from, Message::Accepted(accepted), out);
            }
            return;
        }
        if slot <= self.core.base.index {
            return;
        }
        let reply = match self.core.acceptor.accept(slot, accept.ballot, value) {
            Ok(()) => {
                self.core.acceptor_changed();
                Message::Accepted(Accepted {
                    ballot: accept.ballot,
                    first: slot,
                    count: 1,
                })
            }
            Err(promised) => Message::Nack(Nack {
                ballot: accept.ballot,
                slot,
                promised,
            }),
        };
        self.core.send(from, reply, out);
    }

    /// A majority accepted: the value is chosen (section 2.3); tell every learner.
    fn on_accepted(&mut self, from: NodeId, accepted: Accepted, out: &mut Out) {
        let slot = accepted.first;
        let Some(instance) = self.instances.get_mut(&slot) else {
            return;
        };
        let Phase::Accepting(value, acceptors) = &mut instance.phase else {
            return;
        };
        if accepted.ballot != instance.ballot {
            return;
        }
        acceptors.insert(from);
        if !Core::majority_of(self.core.config_at(slot), |n| acceptors.contains(&n)) {
            return;
        }
        let entry = Entry {
            index: slot,
            era: instance.ballot.era(),
            payload: value.clone(),
        };
        self.core.learn(entry.clone());
        for to in self.core.peers.clone() {
            self.core.send(
                to,
                Message::Decided(Decided {
                    entries: vec![entry.clone()],
                }),
                out,
            );
        }
        self.settle_decided(out);
    }

    /// A higher ballot preempted an instance: back off for a random, growing number of ticks,
    /// then try again above it (section 2.4). Without backoff the proposer tries again at once,
    /// and two proposers can keep preempting each other: the livelock of section 2.4.
    fn on_nack(&mut self, nack: Nack, out: &mut Out) {
        self.core.observe(nack.promised);
        let ticks = self.core.ticks;
        let Some(instance) = self.instances.get_mut(&nack.slot) else {
            return;
        };
        if nack.ballot != instance.ballot || matches!(instance.phase, Phase::BackingOff(_)) {
            return;
        }
        self.preemptions += 1;
        instance.preempted += 1;
        if !self.core.config.backoff {
            let (own, preempted) = (instance.own.clone(), instance.preempted);
            return self.start(nack.slot, own, preempted, out);
        }
        let cap = (self.core.config.backoff_ticks_base << instance.preempted.min(16))
            .min(self.core.config.backoff_ticks_max);
        instance.phase = Phase::BackingOff(ticks + self.core.rng.range_inclusive(1, cap));
    }

    /// Ends the instances whose slots are now decided. A proposer whose own value lost its
    /// slot proposes it again in the next free slot.
    fn settle_decided(&mut self, out: &mut Out) {
        let prefix = self.core.prefix();
        let decided: Vec<Slot> = self
            .instances
            .keys()
            .copied()
            .filter(|&s| {
                // A change still in `ahead` is not made yet: it settles once in the log.
                s <= prefix
                    || self
                        .core
                        .ahead
                        .get(&s)
                        .is_some_and(|e| !matches!(e.payload, Payload::MembershipChange { .. }))
            })
            .collect();
        for slot in decided {
            let instance = self.instances.remove(&slot).expect("listed above");
            let chosen = self
                .core
                .decided(slot)
                .or_else(|| self.core.ahead.get(&slot))
                .map(|e| e.payload.clone());
            match chosen {
                Some(chosen) if chosen == instance.own => {}
                // This node's change, made: it brings it into force with no-ops.
                Some(Payload::Membership { id: made, .. }) if matches!(&instance.own, Payload::MembershipChange { id, .. } if *id == made) =>
                {
                    self.padding_through = slot + self.core.window() - 1;
                }
                Some(_) if instance.own == Payload::Noop => {}
                // The change lost its slot, or was no longer valid when it was decided:
                // another change was made meanwhile. It is not asked again on a membership
                // its operator did not see.
                Some(_) if matches!(instance.own, Payload::MembershipChange { .. }) => {
                    if let Payload::MembershipChange { id, .. } = instance.own {
                        let reason = Rejection::Membership(MembershipRefusal::ChangePending);
                        out.push(Action::Reject { id, reason });
                    }
                }
                Some(_) => self.waiting.push_front(instance.own),
                // Inside a snapshot this node installed: what was chosen is not known here.
                None => self.lost_slot(slot, instance.own, out),
            }
        }
        self.start_instances(out);
    }

    /// Abandons an instance on a slot that turned out to be decided and compacted elsewhere.
    fn give_up_slot(&mut self, slot: Slot, out: &mut Out) {
        if let Some(instance) = self.instances.remove(&slot) {
            self.lost_slot(slot, instance.own, out);
        }
        self.start_instances(out);
    }

    /// This proposer's value was in `slot`, which was decided, but what was chosen there is
    /// gone from every log it can see. A no-op is dropped and a read marker proposed again
    /// (a read behind a later marker is just as linearizable); a command may have been chosen,
    /// so its fate is asked before anything else is done with it.
    fn lost_slot(&mut self, slot: Slot, own: Payload, out: &mut Out) {
        #[cfg(any(test, feature = "inject-bugs"))]
        if self.core.config.bugs.repropose_without_asking && own != Payload::Noop {
            return self.waiting.push_front(own);
        }
        match own {
            Payload::Noop => {}
            Payload::Marker(_) => self.waiting.push_front(own),
            // A change is not made again from a membership that may no longer be the newest;
            // its operator sees a timeout and looks.
            Payload::Membership { .. } | Payload::MembershipChange { .. } => {}
            Payload::Command(_) => {
                let doubt = Doubt {
                    own,
                    asked: 0,
                    asked_at: self.core.ticks,
                };
                self.in_doubt.insert(slot, doubt);
                self.ask_outcome(slot, out);
            }
        }
    }

    /// Asks the next peer what was decided in a slot in doubt; gives the command up once
    /// every peer was asked three times without one that knew.
    fn ask_outcome(&mut self, slot: Slot, out: &mut Out) {
        let (now, peers) = (self.core.ticks, self.core.peers.len());
        let Some(doubt) = self.in_doubt.get_mut(&slot) else {
            return;
        };
        if doubt.asked >= 3 * peers {
            self.in_doubt.remove(&slot);
            self.abandoned += 1;
            return;
        }
        let to = self.core.peers[doubt.asked % peers];
        doubt.asked += 1;
        doubt.asked_at = now;
        self.core
            .send(to, Message::AskOutcome(AskOutcome { slot }), out);
    }

    fn on_ask_outcome(&mut self, from: NodeId, ask: AskOutcome, out: &mut Out) {
        let decided = self.core.outcome(ask.slot);
        let outcome = Outcome {
            slot: ask.slot,
            decided,
        };
        self.core.send(from, Message::Outcome(outcome), out);
    }

    /// A peer says what was decided in a slot in doubt: the command was chosen there (done),
    /// or something else was (propose it again).
    fn on_outcome(&mut self, outcome: Outcome, out: &mut Out) {
        let Some(doubt) = self.in_doubt.get(&outcome.slot) else {
            return;
        };
        let own_id = match &doubt.own {
            Payload::Command(proposal) => proposal.id,
            _ => return,
        };
        match outcome.decided {
            SlotOutcome::Unknown => return,
            SlotOutcome::Command(id) if id == own_id => {}
            SlotOutcome::Command(_) | SlotOutcome::NoCommand => {
                self.waiting.push_front(doubt.own.clone());
            }
        }
        self.in_doubt.remove(&outcome.slot);
        self.start_instances(out);
    }

    fn on_tick(&mut self, out: &mut Out) {
        self.core.ticks += 1;
        let now = self.core.ticks;
        let retry = self.core.config.retry_ticks;
        self.pad_a_waiting_change(out);
        let slots: Vec<Slot> = self.instances.keys().copied().collect();
        for slot in slots {
            let Some(instance) = self.instances.get(&slot).cloned() else {
                continue;
            };
            match instance.phase {
                Phase::BackingOff(until) if now >= until => {
                    self.start(slot, instance.own, instance.preempted, out)
                }
                Phase::Preparing(_) | Phase::Accepting(..) if now >= instance.sent_at + retry => {
                    self.resend(slot, instance, out)
                }
                _ => {}
            }
        }
        let asking: Vec<Slot> = self
            .in_doubt
            .iter()
            .filter(|(_, d)| now >= d.asked_at + retry)
            .map(|(&s, _)| s)
            .collect();
        for slot in asking {
            self.ask_outcome(slot, out);
        }
        if let Some(hole) = self.core.check_gap(None, out) {
            if !self.instances.contains_key(&hole) {
                // Nobody could tell us the slot's value: decide it ourselves (phase 1 will
                // reveal any value already accepted there).
                self.start(hole, Payload::Noop, 0, out);
            }
        }
    }

    /// Messages may be lost: send the current phase's request again, same ballot.
    fn resend(&mut self, slot: Slot, instance: Instance, out: &mut Out) {
        let message = match instance.phase {
            Phase::Preparing(_) => Message::Prepare(Prepare {
                ballot: instance.ballot,
                slot,
                scope: Scope::One,
                handover: false,
            }),
            Phase::Accepting(value, _) => Message::Accept(Accept {
                ballot: instance.ballot,
                first: slot,
                values: vec![value],
                commit: 0,
            }),
            Phase::BackingOff(_) => return,
        };
        if let Some(i) = self.instances.get_mut(&slot) {
            i.sent_at = self.core.ticks;
        }
        self.core.broadcast(message, out);
    }

    fn on_read(&mut self, reads: Vec<ReadRequest>, out: &mut Out) {
        let mut linearizable = Vec::new();
        for read in reads {
            match read.consistency {
                ReadConsistency::Serializable => out.push(Action::ReadReady(read.id)),
                ReadConsistency::Linearizable => linearizable.push(read.id),
            }
        }
        if linearizable.is_empty() {
            return;
        }
        // A marker no other read of any node, in any life of this node, carries: the era of a
        // fresh ballot (its round is persisted before the marker can leave this node). The
        // read is answered once the marker is decided and applied, so it sees every write
        // decided before the marker's slot. A counter would restart after a crash and match
        // a marker decided long ago.
        let token = self.core.next_ballot().era();
        self.reads.insert(token, linearizable);
        self.waiting.push_back(Payload::Marker(token));
        self.start_instances(out);
    }

    fn on_message(&mut self, from: NodeId, message: Message, out: &mut Out) {
        match message {
            Message::Prepare(m) => self.on_prepare(from, m, out),
            Message::Promise(m) => self.on_promise(from, m, out),
            Message::Accept(m) => self.on_accept(from, m, out),
            Message::Accepted(m) => self.on_accepted(from, m, out),
            Message::Nack(m) => self.on_nack(m, out),
            Message::Decided(m) => {
                self.core.on_decided(from, m, out);
                self.settle_decided(out);
            }
            Message::AskDecided(m) => self.core.on_ask_decided(from, m, out),
            Message::SnapshotRequest(m) => self.core.on_snapshot_request(from, m, out),
            Message::SnapshotChunk(m) => {
                self.core.on_snapshot_chunk(from, m, out);
                self.settle_decided(out);
            }
            Message::AskOutcome(m) => self.on_ask_outcome(from, m, out),
            Message::Outcome(m) => self.on_outcome(m, out),
            Message::Heartbeat(_)
            | Message::HeartbeatAck(_)
            | Message::Commit(_)
            | Message::TimeoutNow(_) => {}
        }
    }
}

impl Engine for BasicPaxos {
    type Message = Message;

    fn step(&mut self, input: Input<Message>, out: &mut Vec<Action<Message>>) {
        match input {
            Input::Tick => self.on_tick(out),
            // From anyone: a node's view of the membership may lag behind the cluster's.
            Input::Receive { from, message } => self.on_message(from, message, out),
            Input::Propose(proposals) => {
                self.waiting
                    .extend(proposals.into_iter().map(Payload::Command));
                self.start_instances(out);
            }
            Input::Read(reads) => self.on_read(reads, out),
            Input::Persisted(id) => self.core.on_persisted(id),
            Input::Snapshotted(snapshot) => self.core.on_snapshotted(snapshot),
            // There is no leader to transfer.
            Input::TransferLeadership { .. } => {}
            Input::ChangeMembership { id, change } => self.on_change_membership(id, change, out),
        }
        self.core.flush(out);
        // This node's acceptor answers its own proposer once the answer is durable.
        while let Some(message) = self.core.ready_loopback() {
            let me = self.core.id;
            self.on_message(me, message, out);
            self.core.flush(out);
        }
        for entry in self.core.apply_decided(out) {
            if let Payload::Marker(token) = entry.payload {
                if let Some(ids) = self.reads.remove(&token) {
                    out.extend(ids.into_iter().map(Action::ReadReady));
                }
            }
        }
        self.core.flush(out);
    }

    fn status(&self) -> Status {
        Status {
            id: self.core.id,
            role: Role::Peer,
            leader: None,
            era: self.core.max_round,
            commit_index: self.core.prefix(),
            last_index: self.core.prefix(),
        }
    }

    fn membership(&self) -> Option<&Membership> {
        Some(self.core.newest_membership())
    }

    fn membership_at(&self, index: LogIndex) -> Option<Membership> {
        self.core.membership_as_of(index).cloned()
    }

    fn may_snapshot_at(&self, index: LogIndex) -> bool {
        self.core.may_snapshot_at(index)
    }
}

impl BasicPaxos {
    /// The proposer of a change fills its window with no-ops as soon as it is decided; if it
    /// crashed or restarted first, nobody would, and without writes the change would never
    /// take effect (and every later change be refused as pending). So any member that sees a
    /// change waiting for a while, with nothing of its own in progress, fills it.
    fn pad_a_waiting_change(&mut self, out: &mut Out) {
        if !self.core.change_coming() {
            self.change_coming_since = None;
            return;
        }
        let now = self.core.ticks;
        let since = *self.change_coming_since.get_or_insert(now);
        let patience = 2 * self.core.config.gap_timeout_ticks;
        if now < since + patience || !self.instances.is_empty() || !self.waiting.is_empty() {
            return;
        }
        let Some(&decided) = self.core.memberships.keys().next_back() else {
            return;
        };
        self.padding_through = self.padding_through.max(decided + self.core.window() - 1);
        self.start_instances(out);
    }
}

/// Membership changes (see `crate::membership` for how they take effect). Any node proposes
/// one, as it proposes a command; two made at once from the same membership are both
/// decided, and the later one, no longer following from the membership before it, counts
/// for nothing (its proposer refuses it as pending).
impl BasicPaxos {
    fn on_change_membership(&mut self, id: RequestId, change: MembershipChange, out: &mut Out) {
        let reason = match self.check_change(&change) {
            Ok(_) => {
                self.waiting
                    .push_back(Payload::MembershipChange { id, change });
                return self.start_instances(out);
            }
            Err(refusal) => Rejection::Membership(refusal),
        };
        out.push(Action::Reject { id, reason });
    }

    /// The membership after `change`, if this node may propose it now: none of its own in
    /// progress, none decided and not yet in force. Without a leader's heartbeats a node does
    /// not know which members are up, nor how far a learner got: etcd's checks that new voters
    /// can form a quorum and that a learner caught up are left to the operator here.
    fn check_change(&self, change: &MembershipChange) -> Result<Membership, MembershipRefusal> {
        let is_change = crate::core::is_membership;
        let pending = self.core.change_coming()
            || self.waiting.iter().any(is_change)
            || self.instances.values().any(|i| is_change(&i.own))
            || self.core.ahead.values().any(|e| is_change(&e.payload));
        // A change that can never be made says why first, then one that must wait.
        let next = self.core.newest_membership().changed(change)?;
        if pending {
            return Err(MembershipRefusal::ChangePending);
        }
        Ok(next)
    }
}

impl BasicPaxos {
    /// Proposals this node still has to place, for tests.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len() + self.instances.len() + self.in_doubt.len()
    }
}
