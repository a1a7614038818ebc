//! Membership changes: the data is not agreed, the membership is.
//!
//! Writes under gossip need no agreement, but who the members are does: every member must
//! count the same voters for QUORUM and ALL, and a member id is written into every version
//! its member issues, so two members given one id would issue equal versions of different
//! values and never converge. So a change is agreed, as Cassandra 5 agrees its cluster
//! metadata while its data stays eventually consistent: the membership after `epoch`
//! changes is decided by single-decree Paxos among the voters of the membership at
//! `epoch`, with majority quorums.
//!
//! - The member an operator asks proposes: phase 1 (`Prepare`, `Promise`) under a ballot
//!   above any it has seen, its own promise first and durable; phase 2 (`Accept`,
//!   `Accepted`) with the value accepted under the highest ballot among the promises, if
//!   any, else the operator's change applied to the agreed membership. A value a majority
//!   accepted is agreed; its proposer sends it (`Agreed`) to every member, old and new.
//! - A voter promises and accepts only for the change after the epoch it holds: one behind
//!   is sent the newer membership instead; one ahead is not answered (its pings will bring
//!   this voter up to date).
//! - Every ping and ack carries the sender's epoch; a member that hears a lower one sends
//!   the newer membership back, to members, removed members and joining nodes alike. So a
//!   member that missed a change, a node that joined knowing nobody, and a removed member
//!   all learn where they stand from the first member that hears from them.
//! - One change at a time per proposer; a proposer outbid by another's ballot, or that
//!   finds another change accepted, refuses its own change (etcd's "unhealthy cluster").
//!
//! A member that learns it was removed takes no more requests, but goes on handing what it
//! holds to the members by anti-entropy for as long as it runs, so a write only it held
//! (taken at ONE during a partition) is not lost with it; members take pushes and
//! anti-entropy from removed members for that. A removed member that lost its disk takes its
//! unspread writes with it, as a Cassandra node removed with `removenode` does.
//!
//! **A member whose disk came back empty does not vote** until it has seen a change agreed
//! without it that it proposed in this life. Paxos is safe only if a voter remembers what
//! it promised and accepted; one that lost its disk may have accepted a value a majority
//! then agreed, and promising afresh could let a second value be agreed for the same epoch.
//! A node that joins a running cluster with nothing on disk cannot tell a first start after
//! `member add` from a member whose disk was replaced (both join with `--initial-cluster-state
//! existing` and are given their id by the first member that dials them), so it starts
//! `amnesic` (durable until cleared): it answers no `Prepare` or `Accept`, and once it holds
//! a membership in which it votes it proposes a barrier: its own attributes published again,
//! a change that changes nothing. A majority of the *other* voters decides it, and any value
//! an earlier life of it helped agree shows up in their promises and is carried instead.
//! Once its barrier is agreed, every change an earlier life could have voted on is decided,
//! and it votes again. Having forgotten its ballots too, it first asks a majority of the
//! others what they promised (a `Prepare` under ballot 0, which no proposal uses) and
//! proposes above all of it: any ballot an earlier life took to phase 2 was promised by a
//! majority, so it is never used again with another value. A node that boots a cluster (`--initial-cluster-state new`, as etcd
//! means it) starts from nothing by definition and votes at once.
//!
//! A learner gets every version (pushes, anti-entropy) but counts toward no consistency
//! level and takes no requests but serializable reads (the runtime refuses the rest);
//! promotion makes it count at once, with whatever it holds by then (anti-entropy fills the
//! rest, as a repair after adding a Cassandra node does).

use std::collections::BTreeSet;

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::quorum::majority;
use synod_core::{
    Action, Entry, Membership, MembershipChange, MembershipRefusal, NodeId, Payload, Rejection,
    RequestId,
};

use crate::engine::{Deferred, Gossip, Out};
use crate::message::{Candidate, Message};
use crate::version::NODE_ID_MAX;

/// Bits of a ballot that hold the proposer's id (ids are at most 12 bits).
const BALLOT_ID_BITS: u32 = 12;

/// The membership as agreed here, and this node's part in agreeing the next one: all of it
/// durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Agreement {
    /// Changes agreed so far (0: the boot membership).
    pub(crate) epoch: u64,
    /// The operator's request that made the last change.
    pub(crate) made_by: RequestId,
    /// The membership after them.
    pub(crate) membership: Membership,
    /// As a voter for the change after `epoch`: the highest ballot promised.
    pub(crate) promised: u64,
    /// As a voter for the change after `epoch`: the value accepted under the highest ballot.
    pub(crate) accepted: Option<Candidate>,
    /// This node started with nothing on disk and has not voted since (see the module
    /// documentation): it answers no `Prepare` or `Accept`.
    pub(crate) amnesic: bool,
    /// As a proposer for the change after `epoch`: the highest ballot it used.
    pub(crate) proposed: u64,
}

impl Agreement {
    /// The boot membership, agreed by configuration.
    pub(crate) fn boot(membership: Membership) -> Agreement {
        Agreement {
            epoch: 0,
            made_by: RequestId::new(0, 0),
            membership,
            promised: 0,
            accepted: None,
            amnesic: false,
            proposed: 0,
        }
    }

    pub(crate) fn encode(&self, enc: &mut Encoder) {
        enc.u64(self.epoch)
            .u64(self.made_by.client.0)
            .u64(self.made_by.seq);
        self.membership.encode(enc);
        enc.bool(self.amnesic)
            .u64(self.proposed)
            .u64(self.promised)
            .bool(self.accepted.is_some());
        if let Some(c) = &self.accepted {
            enc.u64(c.ballot).u64(c.id.client.0).u64(c.id.seq);
            c.membership.encode(enc);
        }
    }

    pub(crate) fn decode(dec: &mut Decoder<'_>) -> Result<Agreement, DecodeError> {
        let epoch = dec.u64("membership epoch")?;
        let made_by = RequestId::new(dec.u64("client")?, dec.u64("seq")?);
        let membership = Membership::decode(dec)?;
        let amnesic = dec.bool("amnesic")?;
        let proposed = dec.u64("proposed ballot")?;
        let promised = dec.u64("promised ballot")?;
        let accepted = if dec.bool("accepted")? {
            Some(Candidate {
                ballot: dec.u64("accepted ballot")?,
                id: RequestId::new(dec.u64("client")?, dec.u64("seq")?),
                membership: Membership::decode(dec)?,
            })
        } else {
            None
        };
        Ok(Agreement {
            epoch,
            made_by,
            membership,
            promised,
            accepted,
            amnesic,
            proposed,
        })
    }
}

/// The client id of a node's barrier proposals (see the module documentation): untracked,
/// and apart from the simulator's and the runtime's own ids.
pub(crate) fn barrier_client(id: NodeId) -> u64 {
    synod_core::ClientId::UNTRACKED_FROM | 0x00fe_0000_0000_0000 | id.0
}

/// A change this node is proposing.
#[derive(Debug)]
pub(crate) struct Proposing {
    /// The operator's request, while it waits on this proposal (`None` once it was refused
    /// because this proposal carries another's value).
    client: Option<RequestId>,
    /// The epoch the change follows.
    epoch: u64,
    /// Its ballot; 0 while a proposer that lost its disk asks what the voters promised.
    ballot: u64,
    /// While it asks: the question's random nonce, which only answers to it echo (an answer
    /// to an earlier life's question, or to its earlier ballots, says too little).
    nonce: u64,
    /// The voters of that epoch: whose majority decides.
    voters: Vec<NodeId>,
    /// The membership the operator asked for.
    asked: Candidate,
    /// Phase 2's value, once phase 1 is done.
    value: Option<Candidate>,
    /// The highest-ballot value the promises reported accepted.
    best: Option<Candidate>,
    /// Voters that answered the current phase.
    heard: BTreeSet<NodeId>,
    deadline: u64,
    last_sent: u64,
}

/// Why a proposal was abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GiveUp {
    /// A voter promised a higher ballot.
    Outbid,
    /// No majority answered in time.
    TimedOut,
    /// Another value was agreed for the change it proposed.
    Overtaken,
}

fn ballot_round(ballot: u64) -> u64 {
    ballot >> BALLOT_ID_BITS
}

impl Gossip {
    /// The membership agreed here.
    pub(crate) fn agreed(&self) -> &Membership {
        &self.agreement.membership
    }

    /// Whether this node votes now: a voter of the membership it holds that remembers its
    /// votes.
    pub(crate) fn votes(&self) -> bool {
        self.agreed().is_voter(self.config.id) && !self.agreement.amnesic
    }

    /// Whether this node was a member and is no more (a node that joined and has not heard
    /// yet holds a membership that has not handed out its id).
    pub(crate) fn is_removed(&self) -> bool {
        !self.is_member() && self.config.id.0 < self.agreed().next_id
    }

    /// Removed, and no member has yet said it holds everything of every bucket: what this
    /// node holds may be needed.
    pub fn owes_handover(&self) -> bool {
        #[cfg(any(test, feature = "inject-bugs"))]
        if self.config.bugs.leave_without_handover {
            return false;
        }
        self.is_removed() && !self.owed.is_empty()
    }

    /// A member said it holds everything of these buckets: a bucket is handed over once two
    /// members (or every voter, if fewer) have, so one lost disk does not lose what only
    /// this node held.
    pub(crate) fn on_held(&mut self, from: NodeId, buckets: Vec<u16>) {
        let enough = self.agreed().voter_count().clamp(1, 2);
        for b in buckets {
            if let Some(holders) = self.owed.get_mut(&b) {
                holders.insert(from);
                if holders.len() >= enough {
                    self.owed.remove(&b);
                }
            }
        }
    }

    /// A removed member's round of handing over: the keys and versions of the buckets it
    /// still owes, to a member, which pulls what it lacks and says which buckets lacked
    /// nothing.
    pub(crate) fn hand_over(&mut self, out: &mut Out) {
        // Holders count while they are members, and as many as the voters now allow (the
        // membership may have shrunk since they answered).
        let enough = self.agreed().voter_count().clamp(1, 2);
        let agreed = self.agreed().clone();
        self.owed.retain(|_, holders| {
            holders.retain(|id| agreed.contains(*id));
            holders.len() < enough
        });
        let mut members = self.swim.reachable();
        if members.is_empty() {
            members = self.swim.peers().collect();
        }
        let Some(&to) = self.rng.pick(&members) else {
            return;
        };
        // The buckets this member has not said it holds.
        let offered: Vec<u16> = self
            .owed
            .iter()
            .filter(|(_, holders)| !holders.contains(&to))
            .map(|(&b, _)| b)
            .take(self.config.anti_entropy_buckets_max)
            .collect();
        let message = self.keys_of(offered);
        out.push(Action::Send { to, message });
    }

    /// Whether this node is a member of the membership it holds.
    pub(crate) fn is_member(&self) -> bool {
        self.agreed().contains(self.config.id)
    }

    /// Whether `id` may hand this node versions: a member, or a former member (removed
    /// members hand what they hold to the members that remain).
    pub(crate) fn may_hand_versions(&self, id: NodeId) -> bool {
        self.agreed().contains(id) || id.0 < self.agreed().next_id
    }

    pub(crate) fn on_change_membership(
        &mut self,
        id: RequestId,
        change: MembershipChange,
        out: &mut Out,
    ) {
        match self.start_change(id, &change) {
            Ok(()) => {}
            Err(reason) => out.push(Action::Reject { id, reason }),
        }
        self.send_phase(out);
    }

    fn start_change(&mut self, id: RequestId, change: &MembershipChange) -> Result<(), Rejection> {
        let me = self.config.id;
        if !self.is_member() {
            // Removed, or joined and not yet told the membership.
            return Err(Rejection::NotLeader { leader_hint: None });
        }
        if self.proposing.is_some() {
            return Err(Rejection::Membership(MembershipRefusal::ChangePending));
        }
        let next = self
            .agreed()
            .changed(change)
            .map_err(Rejection::Membership)?;
        if next.next_id > NODE_ID_MAX + 1 {
            return Err(Rejection::Unsupported(
                "gossip member ids go up to 4095 (every version carries its writer's id in 12 bits), and this cluster has handed them all out",
            ));
        }
        // A change must leave a majority of its voters answering, or the next change could
        // never be agreed (etcd's check before a change that adds or removes a voter).
        let moves_voters = match change {
            MembershipChange::Add { learner, .. } => !learner,
            MembershipChange::Promote { .. } => true,
            MembershipChange::Remove { id } => self.agreed().is_voter(*id),
            MembershipChange::Update { .. } | MembershipChange::Publish { .. } => false,
        };
        let reachable = self.swim.reachable();
        let me_votes = !self.agreement.amnesic;
        let answering = |m: &Membership| {
            m.voters()
                .iter()
                .filter(|&&v| {
                    if v == me {
                        me_votes
                    } else {
                        reachable.contains(&v)
                    }
                })
                .count()
        };
        if moves_voters && answering(&next) < majority(next.voter_count()) {
            return Err(Rejection::Membership(MembershipRefusal::NotEnoughStarted));
        }
        let voters = self.agreed().voters();
        if answering(self.agreed()) < majority(voters.len()) {
            return Err(Rejection::Unavailable {
                reached: answering(self.agreed()) as u32,
                needed: majority(voters.len()) as u32,
                written: false,
            });
        }
        // A ballot above any this node used, promised or heard of (durably: never one it
        // used before, unless it lost its disk; see `on_accept` for that case).
        let a = &self.agreement;
        let round = [
            a.promised,
            a.proposed,
            a.accepted.as_ref().map_or(0, |c| c.ballot),
        ]
        .into_iter()
        .map(ballot_round)
        .max()
        .unwrap_or(0)
        .max(self.round_seen)
            + 1;
        // A proposer that lost its disk does not know which ballots it used: it asks first.
        let ballot = if self.agreement.amnesic {
            0
        } else {
            round << BALLOT_ID_BITS | me.0
        };
        self.agreement.proposed = self.agreement.proposed.max(ballot);
        let nonce = if ballot == 0 {
            self.rng.next_u64() | 1
        } else {
            0
        };
        self.proposing = Some(Proposing {
            client: Some(id),
            epoch: self.agreement.epoch,
            ballot,
            nonce,
            voters,
            asked: Candidate {
                ballot,
                id,
                membership: next,
            },
            value: None,
            best: None,
            heard: BTreeSet::new(),
            deadline: self.ticks + self.config.request_timeout_ticks,
            last_sent: self.ticks,
        });
        Ok(())
    }

    /// Sends the current phase's message to every voter that has not answered it (this
    /// node answers its own first, durably, through the same rules as anyone's answer).
    fn send_phase(&mut self, out: &mut Out) {
        let me = self.config.id;
        let Some(p) = &self.proposing else {
            return;
        };
        let (epoch, ballot, accepting) = (p.epoch, p.ballot, p.value.is_some());
        if !accepting && p.heard.is_empty() && ballot != 0 {
            // The ballot is used: durably, before anyone hears it.
            self.persist_agreement(out);
        }
        let Some(p) = &self.proposing else {
            return;
        };
        let message = match &p.value {
            None => Message::Prepare {
                epoch,
                ballot,
                nonce: p.nonce,
            },
            Some(candidate) => Message::Accept {
                epoch,
                candidate: candidate.clone(),
            },
        };
        if !p.heard.contains(&me) && !self.agreement.amnesic {
            self.receive_agreement(me, message.clone(), out);
        }
        // This node's own answer may have ended the phase (a cluster of one voter).
        let Some(p) = self
            .proposing
            .as_mut()
            .filter(|p| p.ballot == ballot && p.value.is_some() == accepting)
        else {
            return;
        };
        p.last_sent = self.ticks;
        let missing: Vec<NodeId> = p
            .voters
            .iter()
            .copied()
            .filter(|v| *v != me && !p.heard.contains(v))
            .collect();
        for to in missing {
            out.push(Action::Send {
                to,
                message: message.clone(),
            });
        }
    }

    /// A membership message, from a peer or (a proposer's own answer) from this node.
    pub(crate) fn receive_agreement(&mut self, from: NodeId, message: Message, out: &mut Out) {
        match message {
            Message::Prepare {
                epoch,
                ballot,
                nonce,
            } => self.on_prepare(from, epoch, ballot, nonce, out),
            Message::Accept { epoch, candidate } => self.on_accept(from, epoch, candidate, out),
            Message::Promise {
                epoch,
                ballot,
                nonce,
                accepted,
            } => self.on_promise(from, (epoch, ballot, nonce), accepted, out),
            Message::Accepted { epoch, ballot, id } => {
                self.on_accepted(from, epoch, ballot, id, out)
            }
            Message::Outbid {
                epoch,
                refused,
                nonce,
                promised,
            } => self.on_outbid(from, (epoch, refused, nonce), promised, out),
            Message::Agreed {
                epoch,
                id,
                membership,
            } => self.on_agreed(epoch, id, membership, out),
            _ => {}
        }
    }

    /// Whether a voter's message about the change after `epoch` is for the change this
    /// node votes on; a sender behind is sent the newer membership.
    fn votes_on(&mut self, from: NodeId, epoch: u64, out: &mut Out) -> bool {
        if epoch < self.agreement.epoch {
            self.send_agreed(from, out);
            return false;
        }
        epoch == self.agreement.epoch && self.votes()
    }

    fn answer(&mut self, to: NodeId, message: Message, out: &mut Out) {
        if to == self.config.id {
            self.receive_agreement(to, message, out);
        } else {
            out.push(Action::Send { to, message });
        }
    }

    fn on_prepare(&mut self, from: NodeId, epoch: u64, ballot: u64, nonce: u64, out: &mut Out) {
        self.round_seen = self.round_seen.max(ballot_round(ballot));
        if !self.votes_on(from, epoch, out) {
            return;
        }
        if ballot < self.agreement.promised {
            let outbid = Message::Outbid {
                epoch,
                refused: ballot,
                nonce,
                promised: self.agreement.promised,
            };
            return self.answer(from, outbid, out);
        }
        if ballot > self.agreement.promised {
            self.agreement.promised = ballot;
            self.persist_agreement(out);
        }
        let accepted = self.agreement.accepted.clone();
        let promise = Message::Promise {
            epoch,
            ballot,
            nonce,
            accepted,
        };
        self.answer(from, promise, out);
    }

    fn on_accept(&mut self, from: NodeId, epoch: u64, candidate: Candidate, out: &mut Out) {
        self.round_seen = self.round_seen.max(ballot_round(candidate.ballot));
        if !self.votes_on(from, epoch, out) {
            return;
        }
        let (ballot, candidate_id) = (candidate.ballot, candidate.id);
        if ballot < self.agreement.promised {
            let outbid = Message::Outbid {
                epoch,
                refused: ballot,
                nonce: 0,
                promised: self.agreement.promised,
            };
            return self.answer(from, outbid, out);
        }
        if self
            .agreement
            .accepted
            .as_ref()
            .is_some_and(|a| a.ballot == ballot && *a != candidate)
        {
            return; // one value per ballot (a proposer that lost its disk may reuse one)
        }
        if self.agreement.accepted.as_ref() != Some(&candidate) {
            self.accepted_at = self.ticks;
            self.agreement.promised = ballot;
            self.agreement.accepted = Some(candidate);
            self.persist_agreement(out);
        }
        let id = self
            .agreement
            .accepted
            .as_ref()
            .map_or(candidate_id, |a| a.id);
        self.answer(from, Message::Accepted { epoch, ballot, id }, out);
    }

    /// The proposal these answers are for, if it is still in its phase `value_sent`.
    fn proposal_for(&mut self, epoch: u64, ballot: u64, accepting: bool) -> Option<&mut Proposing> {
        self.proposing
            .as_mut()
            .filter(|p| p.epoch == epoch && p.ballot == ballot && p.value.is_some() == accepting)
    }

    fn on_promise(
        &mut self,
        from: NodeId,
        (epoch, ballot, nonce): (u64, u64, u64),
        accepted: Option<Candidate>,
        out: &mut Out,
    ) {
        let Some(p) = self
            .proposal_for(epoch, ballot, false)
            .filter(|p| p.nonce == nonce)
        else {
            return;
        };
        if !p.voters.contains(&from) || !p.heard.insert(from) {
            return;
        }
        if let Some(c) = accepted {
            if p.best.as_ref().is_none_or(|b| c.ballot > b.ballot) {
                p.best = Some(c);
            }
        }
        if p.heard.len() < majority(p.voters.len()) {
            return;
        }
        if p.ballot == 0 {
            return self.propose_above_promises(out);
        }
        // Phase 2, with the value a voter may already have accepted (it may have been
        // agreed), else the operator's.
        let value = match p.best.take() {
            Some(mut best) => {
                best.ballot = p.ballot;
                best
            }
            None => p.asked.clone(),
        };
        let refused = if value.id != p.asked.id {
            p.client.take()
        } else {
            None
        };
        p.value = Some(value);
        p.heard.clear();
        if let Some(id) = refused {
            let reason = Rejection::Membership(MembershipRefusal::ChangePending);
            out.push(Action::Reject { id, reason });
        }
        self.send_phase(out);
    }

    fn on_accepted(&mut self, from: NodeId, epoch: u64, ballot: u64, id: RequestId, out: &mut Out) {
        // Counted only for this value: a ballot reused by a proposer that lost its disk
        // must not count an acceptance of its earlier life's value.
        let Some(p) = self
            .proposal_for(epoch, ballot, true)
            .filter(|p| p.value.as_ref().is_some_and(|v| v.id == id))
        else {
            return;
        };
        if !p.voters.contains(&from) || !p.heard.insert(from) {
            return;
        }
        if p.heard.len() < majority(p.voters.len()) {
            return;
        }
        let Some(p) = self.proposing.take() else {
            return;
        };
        let Some(value) = p.value else {
            return;
        };
        let old = self.agreed().ids();
        self.adopt(p.epoch + 1, value.id, value.membership, out);
        let mut tell: BTreeSet<NodeId> = old.into_iter().collect();
        tell.extend(self.agreed().ids());
        tell.remove(&self.config.id);
        for to in tell {
            self.send_agreed(to, out);
        }
    }

    fn on_outbid(
        &mut self,
        from: NodeId,
        (epoch, refused, nonce): (u64, u64, u64),
        promised: u64,
        out: &mut Out,
    ) {
        self.round_seen = self.round_seen.max(ballot_round(promised));
        let Some(p) = &mut self.proposing else {
            return;
        };
        // An answer to this proposal's current question only.
        if p.epoch != epoch || refused != p.ballot || nonce != p.nonce || promised <= p.ballot {
            return;
        }
        if p.ballot == 0 {
            // The answer asked for: what this voter promised.
            if p.voters.contains(&from)
                && p.heard.insert(from)
                && p.heard.len() >= majority(p.voters.len())
            {
                self.propose_above_promises(out);
            }
            return;
        }
        // Another proposer is at work on this change: give way.
        self.give_up(GiveUp::Outbid, out);
    }

    /// A majority of the voters said what they promised: the proposal goes on under a ballot
    /// above all of it.
    fn propose_above_promises(&mut self, out: &mut Out) {
        let me = self.config.id;
        let round = self.round_seen.max(ballot_round(self.agreement.proposed)) + 1;
        let ballot = round << BALLOT_ID_BITS | me.0;
        let Some(p) = &mut self.proposing else {
            return;
        };
        p.ballot = ballot;
        p.nonce = 0;
        p.asked.ballot = ballot;
        p.heard.clear();
        self.agreement.proposed = ballot;
        self.send_phase(out);
    }

    /// Abandons the proposal, refusing its client: definitely if no voter can have
    /// accepted its value, with an unknown outcome if one may have.
    fn give_up(&mut self, why: GiveUp, out: &mut Out) {
        let Some(p) = self.proposing.take() else {
            return;
        };
        let Some(id) = p.client else {
            return;
        };
        let (reached, needed) = (p.heard.len() as u32, majority(p.voters.len()) as u32);
        let reason = match why {
            GiveUp::Outbid if p.value.is_none() => {
                Rejection::Membership(MembershipRefusal::ChangePending)
            }
            GiveUp::TimedOut if p.value.is_none() => Rejection::Unavailable {
                reached,
                needed,
                written: false,
            },
            GiveUp::Overtaken => Rejection::Membership(MembershipRefusal::ChangePending),
            _ => Rejection::Unavailable {
                reached,
                needed,
                written: true,
            },
        };
        out.push(Action::Reject { id, reason });
    }

    fn on_agreed(&mut self, epoch: u64, id: RequestId, membership: Membership, out: &mut Out) {
        // Newer, or the one this node holds but without itself in it (a node that joined
        // before any change holds an empty boot membership at epoch 0).
        let joining = !self.is_member() && membership.contains(self.config.id);
        if epoch < self.agreement.epoch || (epoch == self.agreement.epoch && !joining) {
            return;
        }
        if let Some(p) = &self.proposing {
            // A newer membership than the one this proposal follows: it is over. Its client
            // is answered when the membership applies if it is the change asked for;
            // otherwise the change was not made after that epoch (if it is the next one) or
            // may have been (if changes were missed here).
            if p.client == Some(id) {
                self.proposing = None;
            } else if epoch == p.epoch + 1 || p.value.is_none() {
                self.give_up(GiveUp::Overtaken, out);
            } else {
                self.give_up(GiveUp::TimedOut, out);
            }
        }
        self.adopt(epoch, id, membership, out);
    }

    /// Holds `membership` as agreed after `epoch` changes: durably, then applied (which
    /// answers the operator's request, where it waits) and probed.
    fn adopt(&mut self, epoch: u64, id: RequestId, membership: Membership, out: &mut Out) {
        // This node's barrier, proposed in this life, agreed: it votes again.
        let amnesic = self.agreement.amnesic && id != self.barrier;
        let was_member = self.is_member();
        self.agreement = Agreement {
            epoch,
            made_by: id,
            membership: membership.clone(),
            promised: 0,
            accepted: None,
            amnesic,
            proposed: 0,
        };
        self.persist_agreement(out);
        self.swim.set_peers(&membership.ids());
        if was_member && !self.is_member() {
            self.owed = (0..crate::store::BUCKETS as u16)
                .map(|b| (b, BTreeSet::new()))
                .collect();
        }
        // Writes waiting at QUORUM or ALL count the voters agreed now.
        self.recount_writes(out);
        let at = self.next_at;
        self.next_at += 1;
        let entry = Entry {
            index: at,
            era: 0,
            payload: Payload::Membership { id, membership },
        };
        self.after_persists(Deferred::Apply(entry), out);
        if !self.is_member() {
            self.refuse_held(out);
        }
    }

    /// Sends `to` the membership agreed here.
    pub(crate) fn send_agreed(&mut self, to: NodeId, out: &mut Out) {
        out.push(Action::Send {
            to,
            message: Message::Agreed {
                epoch: self.agreement.epoch,
                id: self.agreement.made_by,
                membership: self.agreed().clone(),
            },
        });
    }

    /// A peer's epoch, from a ping or an ack: one behind is sent what it missed, and so is a
    /// member that does not find itself in what it holds (it joined knowing nobody).
    pub(crate) fn on_peer_epoch(&mut self, from: NodeId, epoch: u64, listed: bool, out: &mut Out) {
        if epoch < self.agreement.epoch || (!listed && self.agreed().contains(from)) {
            self.send_agreed(from, out);
        }
    }

    /// Proposals nobody asked for, now and then: a voter that lost its disk proposes its
    /// barrier until it is agreed; a voter that accepted a value and has heard no decision
    /// for a request timeout proposes too, so the value is agreed (or not) even if its
    /// proposer is gone (a proposer that removed itself stops once it has handed over).
    fn propose_unasked(&mut self, out: &mut Out) {
        let me = self.config.id;
        if !self.agreed().is_voter(me) || self.proposing.is_some() {
            return;
        }
        let id = if self.agreement.amnesic {
            self.barrier
        } else if self.agreement.accepted.is_some()
            && self.ticks >= self.accepted_at + self.config.request_timeout_ticks
        {
            self.accepted_at = self.ticks;
            RequestId::new(barrier_client(me), self.rng.next_u64())
        } else {
            return;
        };
        let Some(member) = self.agreed().get(me) else {
            return;
        };
        // A change that changes nothing: this member's attributes published again. Phase 1
        // carries instead any value a voter accepted.
        let change = MembershipChange::Publish {
            id: me,
            name: member.name.clone(),
            client_urls: member.client_urls.clone(),
        };
        // Refused now (a majority is not answering): the next period. Its refusals and
        // timeouts answer nobody.
        if self.start_change(id, &change).is_ok() {
            if let Some(p) = &mut self.proposing {
                p.client = None;
            }
            self.send_phase(out);
        }
    }

    /// Sends unanswered phase messages again, and gives up on a proposal past its deadline.
    pub(crate) fn tick_proposal(&mut self, out: &mut Out) {
        if self.ticks.is_multiple_of(self.config.retry_ticks) {
            self.propose_unasked(out);
        }
        let Some(p) = &self.proposing else {
            return;
        };
        if self.ticks >= p.deadline {
            return self.give_up(GiveUp::TimedOut, out);
        }
        if self.ticks >= p.last_sent + self.config.retry_ticks {
            self.send_phase(out);
        }
    }
}
