//! Multi-Paxos (Paxos Made Simple, section 3): a distinguished proposer, the leader, runs
//! phase 1 once for every slot from the first undecided one, then only phase 2, one round
//! trip per batch of commands.
//!
//! A follower that hears no heartbeat for a randomized timeout runs phase 1 with a higher
//! ballot. With promises from a majority it leads: it proposes again, under its own ballot,
//! the highest-ballot value any promise reported for each undecided slot, and a no-op in
//! every hole, so the log has no gaps. Decisions reach followers as the commit slot: on the
//! next Accept or heartbeat, or in a commit notice sent as soon as the slot moves. A leader that hears from no majority for an
//! election timeout steps down. Linearizable reads confirm the leader's ballot with a majority
//! before they are answered, without writing the log.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use synod_core::{
    Action, Engine, Entry, Input, LogIndex, Membership, NodeId, Payload, Proposal, ReadConsistency,
    ReadRequest, Rejection, RequestId, Role, Status,
};

use crate::ballot::Ballot;
use crate::core::{Core, Out};
use crate::message::*;

/// A slot the leader proposed and waits on.
#[derive(Clone, Debug)]
struct InFlight {
    value: Payload,
    accepted: BTreeSet<NodeId>,
    sent_at: u64,
    /// Times sent again; each retry waits twice as long as the one before (up to 8 times
    /// `retry_ticks`), so that a slow follower is not buried under copies of what it is
    /// still writing. The lowest undecided slot, which holds back everything after it, is
    /// retried every `retry_ticks`.
    retries: u32,
}

/// A read round waiting for a majority to confirm the ballot.
#[derive(Debug)]
struct ReadRound {
    round: u64,
    read_index: Slot,
    ids: Vec<RequestId>,
}

#[derive(Debug)]
struct Leading {
    ballot: Ballot,
    next_slot: Slot,
    in_flight: BTreeMap<Slot, InFlight>,
    /// Bytes of the values in flight.
    in_flight_bytes: usize,
    /// Commands and membership changes waiting for room in flight (`in_flight_bytes_max`,
    /// the reconfiguration window), oldest first.
    queued: VecDeque<Payload>,
    /// Phase 1 recovered slots through here; reads wait until they are decided.
    recovered_through: Slot,
    /// Values phase 1 recovered in slots beyond the reconfiguration window, proposed as the
    /// window reaches them.
    held: BTreeMap<Slot, Payload>,
    /// The acceptors that promised this ballot: the leader proposes in a slot only if they
    /// hold a majority of that slot's voters.
    promised: BTreeSet<NodeId>,
    /// When each peer was last heard from with this ballot, and the end of its decided log
    /// as its last heartbeat answer gave it.
    heard_at: BTreeMap<NodeId, u64>,
    prefixes: BTreeMap<NodeId, Slot>,
    heartbeat_elapsed: u64,
    /// The highest commit slot sent to every follower.
    commit_sent: Slot,
    quorum_check_elapsed: u64,
    /// Peers heard from (with this ballot) since the last quorum check.
    active: BTreeSet<NodeId>,
    read_round: u64,
    acked_rounds: BTreeMap<NodeId, u64>,
    reads_before_recovery: Vec<RequestId>,
    reads: VecDeque<ReadRound>,
    /// A hand-over under way: to whom, and ticks left before this leader gives up on it and
    /// proposes again.
    transfer: Option<(NodeId, u64)>,
}

impl Leading {
    /// Whether a decision learned from a peer agrees with what this leader proposed: it sent
    /// no Accept for that slot, or it proposed the decided value there.
    fn agrees_with(&self, entry: &Entry) -> bool {
        if entry.index >= self.next_slot {
            return false;
        }
        // A change this leader proposed agrees only with itself made, under its request id: a
        // no-op there may be a higher ballot's hole filler.
        self.in_flight
            .get(&entry.index)
            .is_none_or(|f| crate::core::made_from(&f.value, &entry.payload))
    }
}

#[derive(Debug)]
enum State {
    Follower,
    /// Phase 1 for every slot from `from` on, with the promises so far, and what it will
    /// propose once it leads.
    Candidate {
        ballot: Ballot,
        from: Slot,
        promises: BTreeMap<NodeId, Promise>,
        waiting: VecDeque<Payload>,
    },
    Leader(Box<Leading>),
}

/// A Multi-Paxos node.
#[derive(Debug)]
pub struct MultiPaxos {
    core: Core,
    state: State,
    /// The ballot of the leader this node follows (the highest seen leading).
    leader_ballot: Ballot,
    election_elapsed: u64,
    election_timeout: u64,
    /// A hand-over this node was offered and has not acted on yet: the ballot of the leader
    /// that offered it, the slot it must learn through first, and the tick it lapses at.
    takeover: Option<(Ballot, Slot, u64)>,
    /// The leader this node last heard lead (a heartbeat, an Accept or a commit notice of
    /// the ballot it follows), and the tick it did. A follower reports a leader only once it
    /// heard it lead, not when it merely promised its candidacy.
    heard: Option<(Ballot, u64)>,
}

crate::core::engine_common!(MultiPaxos, joins: true);

impl MultiPaxos {
    fn with_core(core: Core) -> MultiPaxos {
        let mut node = MultiPaxos {
            core,
            state: State::Follower,
            leader_ballot: Ballot::ZERO,
            election_elapsed: 0,
            election_timeout: 0,
            takeover: None,
            heard: None,
        };
        node.reset_election_timer();
        node
    }

    /// Whether this node leads, with which ballot.
    pub fn leading(&self) -> Option<Ballot> {
        match &self.state {
            State::Leader(l) => Some(l.ballot),
            _ => None,
        }
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let (min, max) = (
            self.core.config.election_timeout_ticks_min,
            self.core.config.election_timeout_ticks_max,
        );
        self.election_timeout = self.core.rng.range(min, max);
    }

    fn leader_hint(&self) -> Option<NodeId> {
        (self.leader_ballot != Ballot::ZERO).then_some(self.leader_ballot.node)
    }

    /// Follows the leader of `ballot` (a higher ballot than ours means we no longer lead).
    fn follow(&mut self, ballot: Ballot, out: &mut Out) {
        self.core.observe(ballot);
        if ballot > self.leader_ballot {
            self.leader_ballot = ballot;
        }
        let deposed = match &self.state {
            State::Leader(l) => l.ballot < ballot,
            State::Candidate { ballot: mine, .. } => *mine < ballot,
            State::Follower => false,
        };
        if deposed {
            self.step_down(out);
        }
        self.reset_election_timer();
    }

    fn step_down(&mut self, out: &mut Out) {
        let hint = self.leader_hint();
        let waiting: Vec<RequestId> = match std::mem::replace(&mut self.state, State::Follower) {
            State::Leader(leading) => leading
                .reads_before_recovery
                .into_iter()
                .chain(leading.reads.into_iter().flat_map(|r| r.ids))
                .chain(leading.queued.iter().filter_map(payload_id))
                .collect(),
            State::Candidate { waiting, .. } => waiting.iter().filter_map(payload_id).collect(),
            State::Follower => Vec::new(),
        };
        for id in waiting {
            out.push(Action::Reject {
                id,
                reason: Rejection::NotLeader { leader_hint: hint },
            });
        }
    }

    /// Phase 1a for the whole future: every slot from the first undecided one. `handover`:
    /// the leader asked this node to take over.
    fn campaign(&mut self, handover: bool, out: &mut Out) {
        let from = self.core.prefix() + 1;
        if !self.core.config_at(from).is_voter(self.core.id) {
            // A learner, a member being added or one removed: it never leads.
            self.reset_election_timer();
            return;
        }
        // Writes a leader queued, and those queued while campaigning, wait for the outcome:
        // a leader runs phase 1 again when new voters come into force, and keeps them.
        let waiting = match &mut self.state {
            State::Leader(leading) => std::mem::take(&mut leading.queued),
            State::Candidate { waiting, .. } => std::mem::take(waiting),
            State::Follower => VecDeque::new(),
        };
        self.step_down(out);
        let ballot = self.core.next_ballot();
        self.state = State::Candidate {
            ballot,
            from,
            promises: BTreeMap::new(),
            waiting,
        };
        self.reset_election_timer();
        let prepare = Prepare {
            ballot,
            slot: from,
            scope: Scope::Onward,
            handover,
        };
        self.core.broadcast(Message::Prepare(prepare), out);
    }

    /// Whether this node leads, or heard the leader it follows within the shortest election
    /// timeout. It then promises no other candidate (the Paxos form of Raft's pre-vote and
    /// check-quorum): a member that only lost touch with a leader the rest still follow
    /// cannot depose it. Refusing a promise is always safe; a leader cut off from a majority
    /// stops leading at its next quorum check, and then its followers stop hearing it.
    fn follows_a_live_leader(&self) -> bool {
        match self.state {
            State::Leader(_) => true,
            _ => self.heard.is_some_and(|(_, tick)| {
                self.core.ticks - tick < self.core.config.election_timeout_ticks_min
            }),
        }
    }

    /// The leader of `ballot` was heard from.
    fn heard_leader(&mut self, ballot: Ballot) {
        if ballot == self.leader_ballot {
            self.heard = Some((ballot, self.core.ticks));
        }
    }

    fn on_prepare(&mut self, from: NodeId, prepare: Prepare, out: &mut Out) {
        let sticky = from != self.core.id
            && from != self.leader_ballot.node
            && !prepare.handover
            && self.follows_a_live_leader();
        if sticky {
            // No answer: the candidate times out, and tries again once the leader is gone.
            return;
        }
        let reply = match self
            .core
            .acceptor
            .prepare_onward(prepare.slot, prepare.ballot)
        {
            Ok(mut accepted) => {
                self.core.acceptor_changed();
                // Decided slots count as accepted, under a ballot above every real one
                // (`Ballot::DECIDED`): the acceptor may already have handed them to the log.
                // More of them than a message should carry are not listed: the candidate,
                // that far behind, catches up on them before it may lead.
                let decided: Vec<&synod_core::Entry> = (prepare.slot..=self.core.prefix())
                    .filter_map(|s| self.core.decided(s))
                    .collect();
                let bytes: usize = decided.iter().map(|e| e.payload.size_bytes()).sum();
                let compacted_through = if decided.len() > self.core.config.batch_entries_max
                    || bytes > self.core.config.batch_bytes_max
                {
                    self.core.prefix()
                } else {
                    accepted.extend(
                        decided
                            .iter()
                            .map(|e| (e.index, Ballot::DECIDED, e.payload.clone())),
                    );
                    self.core.base.index
                };
                if from != self.core.id {
                    self.follow(prepare.ballot, out);
                }
                Message::Promise(Promise {
                    ballot: prepare.ballot,
                    slot: prepare.slot,
                    scope: Scope::Onward,
                    accepted,
                    compacted_through,
                })
            }
            Err(promised) => Message::Nack(Nack {
                ballot: prepare.ballot,
                slot: prepare.slot,
                promised,
            }),
        };
        self.core.send(from, reply, out);
    }

    fn on_promise(&mut self, from: NodeId, promise: Promise, out: &mut Out) {
        let State::Candidate {
            ballot,
            from: first,
            promises,
            ..
        } = &mut self.state
        else {
            return;
        };
        if promise.ballot != *ballot {
            return;
        }
        if promise.compacted_through >= *first {
            // Others compacted slots this node never learned: it cannot fill them, so it
            // catches up first and does not lead now.
            self.core.decided_hint = self.core.decided_hint.max(promise.compacted_through);
            return self.step_down(out);
        }
        promises.insert(from, promise);
        // A majority of the voters of every slot it could propose in now, its own acceptor's
        // promise among them: that one reports everything this node proposed as leader
        // before (its own Accepts reach it first), which is so recovered, not dropped.
        let me = self.core.id;
        let won = promises.contains_key(&me)
            && self
                .core
                .window_configs()
                .into_iter()
                .all(|m| Core::majority_of(m, |n| promises.contains_key(&n)));
        if won {
            self.become_leader(out);
        }
    }

    /// P2c for every undecided slot at once: propose the highest-ballot value any promise
    /// reported, and a no-op in every hole below the highest such slot (as far as the
    /// reconfiguration window reaches now; `propose_queued` goes on as it moves).
    ///
    /// Slots this node already knows decided (it may have learned some while campaigning, or
    /// beyond a gap in its log) get no Accept from this ballot, so that no follower holds a
    /// value of this ballot there (`learn_committed` would take it for the decision); new
    /// commands go after all of them.
    fn become_leader(&mut self, out: &mut Out) {
        let State::Candidate {
            ballot,
            from,
            promises,
            waiting,
        } = std::mem::replace(&mut self.state, State::Follower)
        else {
            return;
        };
        let promised: BTreeSet<NodeId> = promises.keys().copied().collect();
        let mut recovered: BTreeMap<Slot, (Ballot, Payload)> = BTreeMap::new();
        for (slot, b, value) in promises.into_values().flat_map(|p| p.accepted) {
            if slot >= from && recovered.get(&slot).is_none_or(|(held, _)| *held < b) {
                recovered.insert(slot, (b, value));
            }
        }
        let prefix = self.core.prefix();
        let last = [
            recovered.keys().next_back().copied(),
            self.core.ahead.keys().next_back().copied(),
            Some(prefix),
            Some(from - 1),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(prefix);
        let next_slot = from.max(prefix + 1);
        // What is decided already is not proposed again, nor held as pending.
        recovered.retain(|s, _| *s >= next_slot && !self.core.ahead.contains_key(s));
        self.leader_ballot = ballot;
        let now = self.core.ticks;
        self.state = State::Leader(Box::new(Leading {
            ballot,
            next_slot,
            in_flight: BTreeMap::new(),
            in_flight_bytes: 0,
            queued: waiting,
            recovered_through: last,
            held: recovered.into_iter().map(|(s, (_, v))| (s, v)).collect(),
            heard_at: promised.iter().map(|&n| (n, now)).collect(),
            promised,
            prefixes: BTreeMap::new(),
            heartbeat_elapsed: 0,
            commit_sent: 0,
            quorum_check_elapsed: 0,
            active: BTreeSet::new(),
            read_round: 0,
            acked_rounds: BTreeMap::new(),
            reads_before_recovery: Vec::new(),
            reads: VecDeque::new(),
            transfer: None,
        }));
        self.propose_queued(out);
        self.start_held_reads(out);
    }

    /// Sends Accept for in-flight slots in `range` to every acceptor, in batches of
    /// consecutive slots.
    fn send_accepts(&mut self, range: std::ops::RangeInclusive<Slot>, out: &mut Out) {
        let prefix = self.core.prefix();
        let State::Leader(leading) = &mut self.state else {
            return;
        };
        let slots: Vec<(Slot, Payload)> = leading
            .in_flight
            .range(range)
            .map(|(&s, f)| (s, f.value.clone()))
            .collect();
        if !slots.is_empty() {
            // Every follower hears the commit slot in these Accepts.
            leading.commit_sent = leading.commit_sent.max(prefix);
        }
        for accept in self.accept_batches(slots) {
            self.core.broadcast(Message::Accept(accept), out);
        }
    }

    /// Sends Accept again for in-flight slots unanswered for `retry` ticks (doubling with each
    /// retry), to each peer that has not accepted them (its copy or its answer was lost, or
    /// it was down). Acceptors that answered are not asked again, and this node's own
    /// acceptor never is: its answer comes through the loopback, which loses nothing.
    fn resend_accepts(&mut self, retry: u64, out: &mut Out) {
        let State::Leader(leading) = &mut self.state else {
            return;
        };
        let now = self.core.ticks;
        let mut missing: BTreeMap<NodeId, Vec<(Slot, Payload)>> = BTreeMap::new();
        let lowest = leading.in_flight.keys().next().copied();
        for (&slot, f) in leading.in_flight.iter_mut() {
            let backoff = if Some(slot) == lowest {
                0
            } else {
                f.retries.min(3)
            };
            if now < f.sent_at + (retry << backoff) {
                continue;
            }
            f.sent_at = now;
            f.retries += 1;
            for &peer in &self.core.peers {
                if !f.accepted.contains(&peer) {
                    missing
                        .entry(peer)
                        .or_default()
                        .push((slot, f.value.clone()));
                }
            }
        }
        for (peer, slots) in missing {
            for accept in self.accept_batches(slots) {
                self.core.send(peer, Message::Accept(accept), out);
            }
        }
    }

    /// Accepts for `slots` (ascending) under this leader's ballot, one per run of consecutive
    /// slots of at most `batch_entries_max` values and `batch_bytes_max` bytes.
    fn accept_batches(&self, slots: Vec<(Slot, Payload)>) -> Vec<Accept> {
        let commit = self.core.prefix();
        let batch_max = self.core.config.batch_entries_max;
        let bytes_max = self.core.config.batch_bytes_max;
        let mut bytes = 0;
        let State::Leader(leading) = &self.state else {
            return Vec::new();
        };
        let ballot = leading.ballot;
        let mut batches: Vec<Accept> = Vec::new();
        for (slot, value) in slots {
            let size = value.size_bytes();
            match batches.last_mut() {
                Some(b)
                    if b.first + b.values.len() as u64 == slot
                        && b.values.len() < batch_max
                        && bytes + size <= bytes_max =>
                {
                    bytes += size;
                    b.values.push(value)
                }
                _ => {
                    bytes = size;
                    batches.push(Accept {
                        ballot,
                        first: slot,
                        values: vec![value],
                        commit,
                    })
                }
            }
        }
        batches
    }

    /// Phase 2b (P1a) for a run of slots. A slot this node already decided is acknowledged
    /// only if the proposal carries the decided value; the promise is checked first, for
    /// every slot, decided or not, so a deposed leader can never count this node.
    fn on_accept(&mut self, from: NodeId, accept: Accept, out: &mut Out) {
        let count = accept.values.len() as u64;
        let floor = self.core.acceptor.floor();
        let mut refused = (accept.ballot < floor).then_some(floor);
        for (i, value) in accept.values.into_iter().enumerate() {
            if refused.is_some() {
                break;
            }
            let slot = accept.first + i as u64;
            match self.core.decided(slot) {
                Some(decided) if self.core.decided_as(slot, &value, &decided.payload) => {}
                Some(decided) => refused = Some(Ballot::from_era(decided.era).max(floor)),
                None if slot <= self.core.base.index => refused = Some(floor),
                None => refused = self.core.acceptor.accept(slot, accept.ballot, value).err(),
            }
        }
        let reply = match refused {
            Some(promised) => Message::Nack(Nack {
                ballot: accept.ballot,
                slot: accept.first,
                promised,
            }),
            None => {
                self.core.acceptor_changed();
                if from != self.core.id {
                    self.follow(accept.ballot, out);
                    self.heard_leader(accept.ballot);
                    self.learn_committed(accept.ballot, accept.commit);
                }
                Message::Accepted(Accepted {
                    ballot: accept.ballot,
                    first: accept.first,
                    count,
                })
            }
        };
        self.core.send(from, reply, out);
    }

    /// The leader of `ballot` says every slot through `commit` is decided: whatever this
    /// acceptor accepted there under that ballot is the decided value.
    fn learn_committed(&mut self, ballot: Ballot, commit: Slot) {
        self.core.decided_hint = self.core.decided_hint.max(commit);
        let mut slot = self.core.prefix() + 1;
        while slot <= commit {
            let Some(state) = self.core.acceptor.slot(slot) else {
                break;
            };
            let Some((b, value)) = state.accepted.clone() else {
                break;
            };
            if b != ballot {
                break;
            }
            self.core.learn(Entry {
                index: slot,
                era: ballot.era(),
                payload: value,
            });
            slot += 1;
        }
    }

    fn on_accepted(&mut self, from: NodeId, accepted: Accepted, out: &mut Out) {
        let State::Leader(leading) = &mut self.state else {
            return;
        };
        if accepted.ballot != leading.ballot {
            return;
        }
        leading.active.insert(from);
        leading.heard_at.insert(from, self.core.ticks);
        let ballot = leading.ballot;
        let mut chosen = Vec::new();
        for slot in accepted.first..accepted.first + accepted.count {
            if let Some(f) = leading.in_flight.get_mut(&slot) {
                f.accepted.insert(from);
                let voters = self.core.config_at(slot);
                let chosen_here = Core::majority_of(voters, |n| f.accepted.contains(&n));
                #[cfg(any(test, feature = "inject-bugs"))]
                let chosen_here = chosen_here
                    || (self.core.config.bugs.count_every_acceptance
                        && f.accepted.len() >= synod_core::quorum::majority(voters.voter_count()));
                if chosen_here {
                    let f = leading.in_flight.remove(&slot).expect("present");
                    leading.in_flight_bytes -= f.value.size_bytes();
                    chosen.push(Entry {
                        index: slot,
                        era: ballot.era(),
                        payload: f.value,
                    });
                }
            }
        }
        let room = !chosen.is_empty();
        for entry in chosen {
            self.core.learn(entry);
        }
        if room {
            self.propose_queued(out);
        }
    }

    fn on_nack(&mut self, nack: Nack, out: &mut Out) {
        let mine = match &self.state {
            State::Leader(l) => l.ballot,
            State::Candidate { ballot, .. } => *ballot,
            State::Follower => return,
        };
        if nack.ballot == mine && nack.promised > mine {
            self.follow(nack.promised, out);
        }
    }

    fn on_heartbeat(&mut self, from: NodeId, heartbeat: Heartbeat, out: &mut Out) {
        if heartbeat.ballot < self.core.acceptor.floor() {
            let nack = Nack {
                ballot: heartbeat.ballot,
                slot: 0,
                promised: self.core.acceptor.floor(),
            };
            return self.core.send(from, Message::Nack(nack), out);
        }
        self.follow(heartbeat.ballot, out);
        self.heard_leader(heartbeat.ballot);
        self.learn_committed(heartbeat.ballot, heartbeat.commit);
        let ack = HeartbeatAck {
            ballot: heartbeat.ballot,
            read_round: heartbeat.read_round,
            prefix: self.core.prefix(),
        };
        self.core.send(from, Message::HeartbeatAck(ack), out);
    }

    /// Tells followers at once that the commit slot moved, unless an Accept or heartbeat
    /// already carried it.
    fn announce_commit(&mut self, out: &mut Out) {
        let commit = self.core.prefix();
        let State::Leader(leading) = &mut self.state else {
            return;
        };
        if commit <= leading.commit_sent {
            return;
        }
        leading.commit_sent = commit;
        let notice = CommitNotice {
            ballot: leading.ballot,
            commit,
        };
        for to in self.core.peers.clone() {
            self.core.send(to, Message::Commit(notice.clone()), out);
        }
    }

    /// A commit notice: a heartbeat without the answer.
    fn on_commit_notice(&mut self, notice: CommitNotice, out: &mut Out) {
        if notice.ballot < self.core.acceptor.floor() {
            return;
        }
        self.follow(notice.ballot, out);
        self.heard_leader(notice.ballot);
        self.learn_committed(notice.ballot, notice.commit);
    }

    fn on_heartbeat_ack(&mut self, from: NodeId, ack: HeartbeatAck) {
        let State::Leader(leading) = &mut self.state else {
            return;
        };
        if ack.ballot == leading.ballot {
            leading.active.insert(from);
            leading.heard_at.insert(from, self.core.ticks);
            leading.prefixes.insert(from, ack.prefix);
            let acked = leading.acked_rounds.entry(from).or_insert(0);
            *acked = (*acked).max(ack.read_round);
        }
    }

    fn broadcast_heartbeat(&mut self, out: &mut Out) {
        let commit = self.core.prefix();
        let State::Leader(leading) = &mut self.state else {
            return;
        };
        leading.commit_sent = leading.commit_sent.max(commit);
        let heartbeat = Heartbeat {
            ballot: leading.ballot,
            commit,
            read_round: leading.read_round,
        };
        for to in self.core.peers.clone() {
            self.core
                .send(to, Message::Heartbeat(heartbeat.clone()), out);
        }
    }

    fn on_tick(&mut self, out: &mut Out) {
        self.core.ticks += 1;
        let hint = self.leader_hint();
        self.core.check_gap(hint, out);
        if !matches!(self.state, State::Leader(_)) {
            self.election_elapsed += 1;
            if self.election_elapsed >= self.election_timeout {
                self.campaign(false, out);
            }
            return;
        }
        self.tick_leader(out);
    }

    fn tick_leader(&mut self, out: &mut Out) {
        let window = self.core.config.election_timeout_ticks_min;
        let me = self.core.id;
        let (heartbeat_every, retry) = (
            self.core.config.heartbeat_interval_ticks,
            self.core.config.retry_ticks,
        );
        let State::Leader(leading) = &mut self.state else {
            return;
        };
        leading.quorum_check_elapsed += 1;
        if leading.quorum_check_elapsed >= window {
            leading.quorum_check_elapsed = 0;
            let active = std::mem::take(&mut leading.active);
            let voters = self.core.config_at(self.core.prefix() + 1);
            if !Core::majority_of(voters, |n| n == me || active.contains(&n)) {
                // Cut off from a majority: stop taking requests, so clients find the leader.
                return self.step_down(out);
            }
        }
        let lapsed = match &mut leading.transfer {
            Some((_, ticks_left)) => {
                *ticks_left = ticks_left.saturating_sub(1);
                *ticks_left == 0
            }
            None => false,
        };
        if lapsed {
            leading.transfer = None;
        }
        leading.heartbeat_elapsed += 1;
        let beat = leading.heartbeat_elapsed >= heartbeat_every;
        if beat {
            leading.heartbeat_elapsed = 0;
        }
        if beat {
            self.broadcast_heartbeat(out);
        }
        self.resend_accepts(retry, out);
        if lapsed {
            self.propose_queued(out);
        }
    }

    /// etcd's MoveLeader: stop proposing, and tell `to` to run phase 1 as soon as it has
    /// learned what is decided now. Its higher ballot deposes this leader, which then refuses
    /// what it held with `to` as the hint; if no hand-over happens within an election
    /// timeout, this leader proposes again.
    fn transfer_leadership(&mut self, to: NodeId, out: &mut Out) {
        let (commit, ticks) = (
            self.core.prefix(),
            self.core.config.election_timeout_ticks_max,
        );
        let voter = self.core.config_at(commit + 1).is_voter(to);
        if to == self.core.id || !voter {
            return;
        }
        let State::Leader(leading) = &mut self.state else {
            return;
        };
        // Asked again for the same target (a retrying client): the offer goes again, but the
        // countdown goes on, so writes are not held past one election timeout.
        let ticks_left = match leading.transfer {
            Some((target, left)) if target == to => left,
            _ => ticks,
        };
        leading.transfer = Some((to, ticks_left));
        let ballot = leading.ballot;
        self.core
            .send(to, Message::TimeoutNow(TimeoutNow { ballot, commit }), out);
    }

    /// The leader offers this node its leadership.
    fn on_timeout_now(&mut self, from: NodeId, offer: TimeoutNow, out: &mut Out) {
        if offer.ballot.node != from || offer.ballot < self.leader_ballot {
            return;
        }
        // The offer may overtake the new leader's first heartbeat: it names its leader too,
        // and the slot to learn through first.
        self.follow(offer.ballot, out);
        self.core.decided_hint = self.core.decided_hint.max(offer.commit);
        if matches!(self.state, State::Follower) {
            let lapses = self.core.ticks + self.core.config.election_timeout_ticks_max;
            self.takeover = Some((offer.ballot, offer.commit, lapses));
        }
    }

    /// Campaigns on an offered hand-over once this node has learned through the offered
    /// slot, unless a newer leader appeared or the offer lapsed meanwhile.
    fn take_over(&mut self, out: &mut Out) {
        let Some((ballot, commit, lapses)) = self.takeover else {
            return;
        };
        let current = ballot == self.leader_ballot && matches!(self.state, State::Follower);
        if !current || self.core.ticks >= lapses {
            self.takeover = None;
        } else if self.core.prefix() >= commit {
            self.takeover = None;
            self.campaign(true, out);
        }
    }

    fn on_propose(&mut self, proposals: Vec<Proposal>, out: &mut Out) {
        let State::Leader(leading) = &mut self.state else {
            let hint = self.leader_hint();
            for p in proposals {
                out.push(Action::Reject {
                    id: p.id,
                    reason: Rejection::NotLeader { leader_hint: hint },
                });
            }
            return;
        };
        leading
            .queued
            .extend(proposals.into_iter().map(Payload::Command));
        self.propose_queued(out);
    }

    /// Proposes, slot after slot while the reconfiguration window allows: what phase 1
    /// recovered (a no-op in a hole), then queued commands while they fit in flight, then
    /// no-ops up to where a decided membership takes effect, so that it does at once.
    ///
    /// A slot whose voters are not a majority of those that promised this ballot (a new
    /// membership came into the window) needs phase 1 with them first: the leader runs it
    /// again, for everything undecided, with a higher ballot.
    fn propose_queued(&mut self, out: &mut Out) {
        let (now, max) = (self.core.ticks, self.core.config.in_flight_bytes_max);
        let horizon = self.core.prefix() + self.core.window();
        let coming_into_force = self
            .core
            .memberships
            .keys()
            .next_back()
            .map_or(0, |&i| i + self.core.window());
        let State::Leader(leading) = &mut self.state else {
            return;
        };
        // Slots learned decided otherwise (from a peer, in a snapshot) need no more Accepts.
        while let Some(entry) = leading.in_flight.first_entry() {
            if *entry.key() > self.core.prefix() {
                break;
            }
            leading.in_flight_bytes -= entry.remove().value.size_bytes();
        }
        if leading.transfer.is_some() {
            // Held until the successor takes over (then refused with its name) or the
            // hand-over lapses.
            return;
        }
        let first = leading.next_slot;
        let mut prepared = true;
        while leading.next_slot <= horizon {
            let slot = leading.next_slot;
            let recovering = slot <= leading.recovered_through;
            if recovering && (slot <= self.core.prefix() || self.core.ahead.contains_key(&slot)) {
                leading.held.remove(&slot);
                leading.next_slot += 1;
                continue;
            }
            let bytes = match leading.queued.front() {
                _ if recovering => 0,
                Some(p) => p.size_bytes(),
                None if slot < coming_into_force => 0,
                None => break,
            };
            let full = leading.in_flight_bytes > 0 && leading.in_flight_bytes + bytes > max;
            if full && !recovering {
                break;
            }
            let voters = self.core.config_at(slot);
            if !Core::majority_of(voters, |n| leading.promised.contains(&n)) {
                prepared = false;
                break;
            }
            let value = if recovering {
                leading.held.remove(&slot).unwrap_or(Payload::Noop)
            } else {
                leading.queued.pop_front().unwrap_or(Payload::Noop)
            };
            leading.next_slot += 1;
            leading.in_flight_bytes += value.size_bytes();
            leading.in_flight.insert(
                slot,
                InFlight {
                    value,
                    accepted: BTreeSet::new(),
                    sent_at: now,
                    retries: 0,
                },
            );
        }
        let last = leading.next_slot - 1;
        if last >= first {
            self.send_accepts(first..=last, out);
        }
        if !prepared {
            self.campaign(false, out);
        }
    }

    fn on_read(&mut self, reads: Vec<ReadRequest>, out: &mut Out) {
        let hint = self.leader_hint();
        let mut linearizable = Vec::new();
        for read in reads {
            match (read.consistency, &self.state) {
                (ReadConsistency::Serializable, _) => out.push(Action::ReadReady(read.id)),
                (ReadConsistency::Linearizable, State::Leader(_)) => linearizable.push(read.id),
                (ReadConsistency::Linearizable, _) => out.push(Action::Reject {
                    id: read.id,
                    reason: Rejection::NotLeader { leader_hint: hint },
                }),
            }
        }
        if let State::Leader(leading) = &mut self.state {
            leading.reads_before_recovery.extend(linearizable);
        }
        self.start_held_reads(out);
    }

    /// Reads wait until every slot recovered in phase 1 is decided (only then does the
    /// leader know the whole decided log), then share one confirmation round.
    fn start_held_reads(&mut self, out: &mut Out) {
        let prefix = self.core.prefix();
        let State::Leader(leading) = &mut self.state else {
            return;
        };
        if prefix < leading.recovered_through || leading.reads_before_recovery.is_empty() {
            return;
        }
        leading.read_round += 1;
        let ids = std::mem::take(&mut leading.reads_before_recovery);
        leading.reads.push_back(ReadRound {
            round: leading.read_round,
            read_index: prefix,
            ids,
        });
        self.broadcast_heartbeat(out);
    }

    /// Answers every read round a majority confirmed, once its index is applied.
    fn confirm_reads(&mut self, out: &mut Out) {
        let (me, applied) = (self.core.id, self.core.applied);
        let State::Leader(leading) = &mut self.state else {
            return;
        };
        if leading.reads.is_empty() {
            return;
        }
        let configs = self.core.window_configs();
        while let Some(front) = leading.reads.front() {
            let acked = |n: NodeId| {
                n == me
                    || leading
                        .acked_rounds
                        .get(&n)
                        .is_some_and(|&r| r >= front.round)
            };
            let confirmed = configs.iter().all(|m| Core::majority_of(m, acked));
            if !confirmed || applied < front.read_index {
                break;
            }
            let done = leading.reads.pop_front().expect("front exists");
            out.extend(done.ids.into_iter().map(Action::ReadReady));
        }
    }

    /// Decisions a peer reports, to fill a gap. A follower learns a slot from the leader's
    /// commit point by taking what it accepted there under the leader's ballot
    /// (`learn_committed`), so a leader must never advertise a commit point covering a slot
    /// where it proposed a value that was not chosen. A decision that contradicts what this
    /// leader proposed, or that lies beyond every slot it proposed, means a higher ballot won
    /// phase 1 at a majority and is choosing values: this leader can choose nothing more, and
    /// steps down rather than advertise the slot.
    fn on_decided(&mut self, from: NodeId, decided: Decided, out: &mut Out) {
        let contradicted = match &self.state {
            State::Leader(leading) => decided.entries.iter().any(|e| !leading.agrees_with(e)),
            _ => false,
        };
        let highest = decided
            .entries
            .iter()
            .map(|e| Ballot::from_era(e.era))
            .max();
        self.core.on_decided(from, decided, out);
        if contradicted && !self.lead_on_after_higher() {
            match (highest, self.leading()) {
                (Some(higher), Some(mine)) if higher > mine => self.follow(higher, out),
                _ => self.step_down(out),
            }
        }
    }

    /// A snapshot installed while leading covers slots whose ballots this leader cannot see,
    /// so it stops advertising a commit point for them, by the rule of `on_decided`.
    fn on_snapshot_chunk(&mut self, from: NodeId, chunk: SnapshotChunk, out: &mut Out) {
        let before = self.core.prefix();
        self.core.on_snapshot_chunk(from, chunk, out);
        if self.core.prefix() > before && self.leading().is_some() && !self.lead_on_after_higher() {
            self.step_down(out);
        }
    }

    fn lead_on_after_higher(&self) -> bool {
        #[cfg(any(test, feature = "inject-bugs"))]
        if self.core.config.bugs.lead_on_after_a_higher_decision {
            return true;
        }
        false
    }

    fn on_message(&mut self, from: NodeId, message: Message, out: &mut Out) {
        match message {
            Message::Prepare(m) => self.on_prepare(from, m, out),
            Message::Promise(m) => self.on_promise(from, m, out),
            Message::Accept(m) => self.on_accept(from, m, out),
            Message::Accepted(m) => self.on_accepted(from, m, out),
            Message::Nack(m) => self.on_nack(m, out),
            Message::Heartbeat(m) => self.on_heartbeat(from, m, out),
            Message::HeartbeatAck(m) => self.on_heartbeat_ack(from, m),
            Message::Commit(m) => self.on_commit_notice(m, out),
            Message::Decided(m) => self.on_decided(from, m, out),
            Message::AskDecided(m) => self.core.on_ask_decided(from, m, out),
            Message::SnapshotRequest(m) => self.core.on_snapshot_request(from, m, out),
            Message::SnapshotChunk(m) => self.on_snapshot_chunk(from, m, out),
            Message::TimeoutNow(m) => self.on_timeout_now(from, m, out),
            // Basic Paxos proposers ask these; a Multi-Paxos leader re-proposes no command.
            Message::AskOutcome(_) | Message::Outcome(_) => {}
        }
    }
}

/// Membership changes (see `crate::membership` for how they take effect).
impl MultiPaxos {
    /// An operator's change: the leader checks it and proposes it; anyone else refuses it.
    fn on_change_membership(
        &mut self,
        id: RequestId,
        change: synod_core::MembershipChange,
        out: &mut Out,
    ) {
        let hint = self.leader_hint();
        let checked = match &self.state {
            State::Leader(leading) if leading.transfer.is_none() => {
                self.check_change(leading, &change)
            }
            _ => {
                let reason = Rejection::NotLeader { leader_hint: hint };
                return out.push(Action::Reject { id, reason });
            }
        };
        if let Err(refusal) = checked {
            let reason = Rejection::Membership(refusal);
            return out.push(Action::Reject { id, reason });
        }
        if let State::Leader(leading) = &mut self.state {
            leading
                .queued
                .push_back(Payload::MembershipChange { id, change });
        }
        self.propose_queued(out);
    }

    /// The membership after `change`, if this leader may make it now: one change at a time
    /// (none proposed, recovered or decided and not yet in force), a learner promoted only
    /// once it holds 90% of the decided log (as etcd), and new voters able to form a
    /// majority with the members heard from lately.
    fn check_change(
        &self,
        leading: &Leading,
        change: &synod_core::MembershipChange,
    ) -> Result<Membership, synod_core::MembershipRefusal> {
        use synod_core::{MembershipChange, MembershipRefusal};
        let is_change = crate::core::is_membership;
        let pending = self.core.change_coming()
            || leading.in_flight.values().any(|f| is_change(&f.value))
            || leading.held.values().any(is_change)
            || leading.queued.iter().any(is_change);
        // A change that can never be made says why first (etcd's answers to a second
        // learner, to an unknown id), then one that must wait.
        let current = self.core.newest_membership();
        let next = current.changed(change)?;
        if pending {
            return Err(MembershipRefusal::ChangePending);
        }
        let prefix = self.core.prefix();
        if let MembershipChange::Promote { id } = change {
            let held = leading.prefixes.get(id).copied().unwrap_or(0);
            if held.saturating_mul(10) < prefix.saturating_mul(9) {
                return Err(MembershipRefusal::LearnerNotReady);
            }
        }
        if next.voters() != current.voters() {
            let (me, now) = (self.core.id, self.core.ticks);
            let window = self.core.config.election_timeout_ticks_min;
            let recently = |n: NodeId| {
                n == me
                    || leading
                        .heard_at
                        .get(&n)
                        .is_some_and(|&at| at + window >= now)
            };
            if !Core::majority_of(&next, recently) {
                return Err(MembershipRefusal::NotEnoughStarted);
            }
        }
        Ok(next)
    }

    /// A leader that no longer votes in the first undecided slot (its removal took effect)
    /// hands over to the voter with the most of the decided log, and steps down.
    fn step_down_if_removed(&mut self, out: &mut Out) {
        let prefix = self.core.prefix();
        let voters = self.core.config_at(prefix + 1);
        if voters.is_voter(self.core.id) {
            return;
        }
        let State::Leader(leading) = &self.state else {
            return;
        };
        let successor = leading
            .prefixes
            .iter()
            .filter(|(&n, _)| voters.is_voter(n))
            .max_by_key(|(_, &held)| held)
            .map(|(&n, _)| n);
        let ballot = leading.ballot;
        // The followers hear the commit point that put the removal in force (with no more
        // writes, nothing else would carry it), and the successor learns through it.
        self.announce_commit(out);
        if let Some(to) = successor {
            let offer = TimeoutNow {
                ballot,
                commit: prefix,
            };
            self.core.send(to, Message::TimeoutNow(offer), out);
        }
        self.step_down(out);
    }
}

impl Engine for MultiPaxos {
    type Message = Message;

    fn step(&mut self, input: Input<Message>, out: &mut Vec<Action<Message>>) {
        let prefix_before = self.core.prefix();
        match input {
            Input::Tick => self.on_tick(out),
            // From anyone: a node's own view of the membership may lag behind (a member
            // added after the newest change it knows may lead it now). Who may decide what
            // is settled by the decided log, not by whom a node listens to.
            Input::Receive { from, message } => self.on_message(from, message, out),
            Input::Propose(proposals) => self.on_propose(proposals, out),
            Input::Read(reads) => self.on_read(reads, out),
            Input::Persisted(id) => self.core.on_persisted(id),
            Input::Snapshotted(snapshot) => self.core.on_snapshotted(snapshot),
            Input::TransferLeadership { to } => self.transfer_leadership(to, out),
            Input::ChangeMembership { id, change } => self.on_change_membership(id, change, out),
        }
        self.core.flush(out);
        // This node's acceptor answers its own proposer once the answer is durable.
        while let Some(message) = self.core.ready_loopback() {
            let me = self.core.id;
            self.on_message(me, message, out);
            self.core.flush(out);
        }
        self.core.apply_decided(out);
        if self.core.prefix() != prefix_before {
            // The window moved (and may have brought a membership into force): the leader
            // may propose further, or no longer vote.
            self.step_down_if_removed(out);
            self.propose_queued(out);
        }
        self.take_over(out);
        self.start_held_reads(out);
        self.confirm_reads(out);
        self.announce_commit(out);
        self.core.flush(out);
    }

    fn election_timer(&self) -> Option<synod_core::ElectionTimer> {
        (!matches!(self.state, State::Leader(_))).then_some(synod_core::ElectionTimer {
            elapsed: self.election_elapsed,
            timeout: self.election_timeout,
        })
    }

    fn status(&self) -> Status {
        let (role, leader) = match &self.state {
            State::Leader(_) => (Role::Leader, Some(self.core.id)),
            State::Candidate { .. } => (Role::Candidate, None),
            State::Follower => {
                let leader = self
                    .heard
                    .filter(|&(ballot, _)| ballot == self.leader_ballot)
                    .map(|(ballot, _)| ballot.node);
                (Role::Follower, leader)
            }
        };
        let era = match &self.state {
            State::Leader(l) => l.ballot.era(),
            State::Candidate { ballot, .. } => ballot.era(),
            State::Follower => self.leader_ballot.era(),
        };
        Status {
            id: self.core.id,
            role,
            leader,
            era,
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

/// The request a queued value answers, if any.
fn payload_id(payload: &Payload) -> Option<RequestId> {
    match payload {
        Payload::Command(p) => Some(p.id),
        Payload::Membership { id, .. } | Payload::MembershipChange { id, .. } => Some(*id),
        Payload::Noop | Payload::Marker(_) => None,
    }
}
