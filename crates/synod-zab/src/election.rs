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

use synod_core::NodeId;

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
}

impl Looking {
    pub(crate) fn new(vote: Vote) -> Looking {
        Looking {
            vote,
            votes: BTreeMap::new(),
            since_broadcast: 0,
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
        if state != PeerState::Looking {
            // Join a leader that says it leads, with a history at least as up to date as
            // this node's: a leader with a worse one could never take this node in (its
            // AckEpoch would not count).
            if state == PeerState::Leading && vote.leader == from && vote >= own {
                self.election_round = self.election_round.max(round);
                return self.decide(vote, out);
            }
            return;
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
        let agreeing = l.votes.values().filter(|v| v.leader == mine.leader).count();
        if changed {
            self.broadcast_vote(out);
        }
        if agreeing >= quorum {
            self.decide(mine, out);
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
