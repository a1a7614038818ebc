//! Leader election, after ZooKeeper's Fast Leader Election.
//!
//! A looking node votes for itself and tells every peer; in each election round (the
//! logical clock) it switches to any better vote it hears (higher current epoch, then higher
//! last zxid, then higher id) and tells every peer again. Once a quorum's votes, its own
//! included, name the node it votes for, it decides: it leads if that is itself, and follows
//! otherwise. A looking node that hears from a leader joins it, if the leader's history is
//! at least as up to date as its own.
//!
//! Election only picks a node likely to have the most up-to-date history; it promises
//! nothing. Safety comes from discovery and synchronization (`leader`): a prospective
//! leader establishes an epoch only with a quorum whose histories are no better than its own.

use std::collections::BTreeMap;

use synod_core::{Membership, NodeId};

use crate::follower::Following;
use crate::leader::Leading;
use crate::message::{Message, PeerState, Vote};
use crate::zab::{Out, Phase, Zab};

/// A node electing.
#[derive(Debug)]
pub(crate) struct Looking {
    /// Its current vote.
    vote: Vote,
    /// The votes heard in the current round, from looking nodes.
    votes: BTreeMap<NodeId, Vote>,
    /// Ticks since it last told its peers its vote.
    since_broadcast: u64,
    /// What it last answered from each node it answers rather than counts (its round and
    /// vote), and when.
    answered: BTreeMap<NodeId, ((u64, Vote), u64)>,
    /// A quorum agrees with its vote: it decides at this tick unless a better vote comes.
    settle_at: Option<u64>,
}

/// How many voters' votes, its own included, name the node `l` votes for.
fn agreeing(l: &Looking, membership: &Membership) -> usize {
    l.votes
        .iter()
        .filter(|(&n, v)| v.leader == l.vote.leader && membership.is_voter(n))
        .count()
}

impl Looking {
    pub(crate) fn new(vote: Vote) -> Looking {
        Looking {
            vote,
            votes: BTreeMap::new(),
            since_broadcast: 0,
            answered: BTreeMap::new(),
            settle_at: None,
        }
    }
}

impl Zab {
    /// What this node tells others about itself: its vote while looking, the leader it
    /// follows or is otherwise.
    fn notification(&self) -> Message {
        let (vote, state) = match &self.phase {
            Phase::Looking(l) => (l.vote, PeerState::Looking),
            Phase::Following(f) => (f.vote, PeerState::Following),
            // A leader's history grows: it tells its own as it stands.
            Phase::Leading(_) => (self.own_vote(), PeerState::Leading),
        };
        Message::Notification {
            round: self.election_round,
            vote,
            state,
        }
    }

    /// Tells a member that joined (or has not asked to follow) whom this node leads: it
    /// knows no one to ask.
    pub(crate) fn invite(&mut self, to: NodeId, out: &mut Out) {
        let message = self.notification();
        self.send(to, message, out);
    }

    /// Tells `to` this node's vote in answer to `heard` (its round and vote), when that is
    /// news or a broadcast interval has passed since the last answer: a node answers votes it
    /// does not count, and two that each count the other out (their histories hold different
    /// uncommitted changes) must not answer each other without end.
    fn answer(&mut self, to: NodeId, heard: (u64, Vote), out: &mut Out) {
        let (ticks, every) = (self.ticks, self.config.ping_interval_ticks * 2);
        if let Phase::Looking(l) = &mut self.phase {
            let last = l.answered.insert(to, (heard, ticks));
            if last.is_some_and(|(seen, at)| seen == heard && ticks < at + every) {
                return;
            }
        }
        let message = self.notification();
        self.send(to, message, out);
    }

    /// Tells every peer this node's vote.
    pub(crate) fn broadcast_vote(&mut self, out: &mut Out) {
        let message = self.notification();
        for peer in self.peers.clone() {
            self.send(peer, message.clone(), out);
        }
        if let Phase::Looking(l) = &mut self.phase {
            l.since_broadcast = 0;
        }
    }

    /// A looking node repeats its vote now and then: notifications may be lost.
    pub(crate) fn looking_tick(&mut self, out: &mut Out) {
        let every = self.config.ping_interval_ticks * 2;
        let Phase::Looking(l) = &mut self.phase else {
            return;
        };
        l.since_broadcast += 1;
        if l.settle_at.is_some_and(|at| at <= self.ticks) {
            return self.settle(out);
        }
        if l.since_broadcast >= every {
            self.broadcast_vote(out);
        }
    }

    pub(crate) fn on_notification(
        &mut self,
        from: NodeId,
        round: u64,
        vote: Vote,
        state: PeerState,
        out: &mut Out,
    ) {
        let own = self.own_vote();
        let round_now = self.election_round;
        let quorum = self.quorum();
        let Phase::Looking(l) = &mut self.phase else {
            // Not electing: a looking peer learns whom this node follows or is.
            if state == PeerState::Looking {
                let message = self.notification();
                self.send(from, message, out);
            }
            return;
        };
        let voter = self.membership.is_voter(self.id);
        if state != PeerState::Looking {
            // Join a leader that says it leads, with a history at least as up to date as
            // this node's: a leader with a worse one could never take this voter in (its
            // AckEpoch would not count). A learner, or a node that joins, follows whoever
            // leads: only voters' histories decide what was committed.
            if state == PeerState::Leading && vote.leader == from && (vote >= own || !voter) {
                self.election_round = self.election_round.max(round);
                return self.decide(vote, out);
            }
            return;
        }
        if !voter {
            // Not a voter as its own history tells: a learner, a member whose removal it
            // holds, or a node that joined and lost its history in a crash before it was
            // synchronized, whom the others may still count as a voter. It decides nothing
            // and never names itself (it would never lead), but backs the best vote it hears
            // for a history at least as up to date as its own (a leader with a worse one
            // would step down at its AckEpoch), and answers with it, for whoever counts it.
            if round > round_now {
                self.election_round = round;
                l.vote = Vote::NONE;
            }
            let backs = vote.leader != self.id
                && vote != Vote::NONE
                && (vote.epoch, vote.zxid) >= (own.epoch, own.zxid);
            if round >= round_now && backs && vote > l.vote {
                l.vote = vote;
            }
            return self.answer(from, (round, vote), out);
        }
        if !self.membership.is_voter(from) {
            // A vote from a node this one does not know as a voter does not count, but is
            // answered: this node's history may be the one behind (the sender joined in a
            // change it has not seen yet), and the sender must hear its vote. The votes this
            // node takes may name such a node too: as in Raft, whoever has the most
            // up-to-date history may lead, and leads by the membership that history holds.
            return self.answer(from, (round, vote), out);
        }
        let changed = if round > round_now {
            // A newer round: start over in it, with the better of this node and the vote.
            self.election_round = round;
            l.votes.clear();
            l.vote = own.max(vote);
            true
        } else if round == round_now {
            let better = vote > l.vote;
            if better {
                l.vote = vote;
            }
            better
        } else {
            // The sender is behind: tell it the current round.
            let message = self.notification();
            self.send(from, message, out);
            return;
        };
        let Phase::Looking(l) = &mut self.phase else {
            return;
        };
        l.votes.insert(from, vote);
        let mine = l.vote;
        l.votes.insert(self.id, mine);
        if changed {
            l.settle_at = None;
        }
        if l.settle_at.is_none() && agreeing(l, &self.membership) >= quorum {
            // As ZooKeeper's finalize wait: a better vote may be on its way (a voter that
            // counted this one's in a quorum may be about to switch), so the decision waits
            // a ping interval for it. Without it, a node whose history is behind, and counts
            // a smaller quorum, can settle on a voter's first vote of every round, before
            // that voter switches to a better one, and never help elect anyone.
            l.settle_at = Some(self.ticks + self.config.ping_interval_ticks);
        }
        if changed {
            self.broadcast_vote(out);
        }
    }

    /// The finalize wait is over: decides if a quorum still agrees with this node's vote.
    fn settle(&mut self, out: &mut Out) {
        let quorum = self.quorum();
        let Phase::Looking(l) = &mut self.phase else {
            return;
        };
        l.settle_at = None;
        if agreeing(l, &self.membership) >= quorum {
            let vote = l.vote;
            self.decide(vote, out);
        }
    }

    /// The election is over for this node: it leads or follows `vote.leader`.
    fn decide(&mut self, vote: Vote, out: &mut Out) {
        if vote.leader == self.id {
            let lead = Leading::new(self);
            self.phase = Phase::Leading(Box::new(lead));
            self.on_leading(out);
        } else {
            let timeout = self.session_timeout();
            self.phase = Phase::Following(Following::new(vote, timeout));
            self.send_follower_info(out);
        }
    }
}
