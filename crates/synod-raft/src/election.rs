//! Leader election (paper 5.2 and 5.4.1) with pre-vote (thesis 9.6).

use std::collections::BTreeMap;

use synod_core::{NodeId, Payload, Role};

use crate::message::{Message, VoteRequest, VoteResponse};
use crate::progress::Progress;
use crate::raft::{LeaderState, Out, Raft};
use crate::read_index::ReadQueue;

/// Which round of an election a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Campaign {
    /// Ask whether a vote could succeed, without raising any term.
    PreVote,
    /// A real election.
    Vote,
    /// A real election asked for by the leader (thesis 3.10): voters skip the lease check.
    Transfer,
}

/// How a tally of votes stands.
enum Tally {
    Won,
    Lost,
    Open,
}

impl Raft {
    /// The election timeout elapsed without word from a leader: start an election, through
    /// a pre-vote when enabled.
    pub(crate) fn start_election(&mut self, out: &mut Out) {
        let campaign = if self.config.pre_vote {
            Campaign::PreVote
        } else {
            Campaign::Vote
        };
        self.campaign(campaign, out);
    }

    /// The leader asked us to take over (thesis 3.10): campaign at once.
    pub(crate) fn on_timeout_now(&mut self, out: &mut Out) {
        // Only a voter may campaign (a late TimeoutNow can reach a member since removed).
        if self.role != Role::Leader && self.is_voter(self.id) {
            self.campaign(Campaign::Transfer, out);
        }
    }

    fn campaign(&mut self, campaign: Campaign, out: &mut Out) {
        let term = if campaign == Campaign::PreVote {
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            // Paper 5.2: increment the term, vote for yourself, ask everyone else.
            self.role = Role::Candidate;
            self.term += 1;
            self.voted_for = Some(self.id);
            self.disk.draft.hard_state = true;
            self.incoming = None; // see `become_follower`
            self.term
        };
        self.leader = None;
        self.reset_election_timer();
        self.votes = BTreeMap::from([(self.id, true)]);
        let request = VoteRequest {
            term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_era(),
            leader_transfer: campaign == Campaign::Transfer,
        };
        for to in self.membership.voters() {
            if to == self.id {
                continue;
            }
            let message = match campaign {
                Campaign::PreVote => Message::PreVote(request.clone()),
                Campaign::Vote | Campaign::Transfer => Message::RequestVote(request.clone()),
            };
            self.send(to, message, out);
        }
        // A cluster of one wins at once.
        self.count_votes(out);
    }

    /// Paper 5.2 and 5.4.1: grant at most one vote per term, first come first served, and
    /// only to a candidate whose log is at least as up-to-date as ours.
    pub(crate) fn on_request_vote(&mut self, from: NodeId, request: VoteRequest, out: &mut Out) {
        let free_to_vote = self.voted_for.is_none() || self.voted_for == Some(from);
        #[cfg(any(test, feature = "inject-bugs"))]
        let free_to_vote =
            free_to_vote || (self.config.bugs.vote_twice_in_a_term && self.role == Role::Follower);
        let granted = free_to_vote
            && self
                .log
                .is_up_to_date(request.last_log_index, request.last_log_term);
        if granted {
            self.voted_for = Some(from);
            self.disk.draft.hard_state = true;
            self.reset_election_timer();
        }
        let response = VoteResponse {
            term: self.term,
            granted,
        };
        // `send` flushes first: the vote is durable before the candidate can count it.
        self.send(from, Message::RequestVoteResponse(response), out);
    }

    /// Thesis 9.6: grant a pre-vote when the candidate's log is up to date and its proposed
    /// term is ahead of ours. Nothing here is persisted or changed.
    pub(crate) fn on_pre_vote(&mut self, from: NodeId, request: VoteRequest, out: &mut Out) {
        let granted = request.term > self.term
            && self
                .log
                .is_up_to_date(request.last_log_index, request.last_log_term);
        let response = VoteResponse {
            term: if granted { request.term } else { self.term },
            granted,
        };
        self.send(from, Message::PreVoteResponse(response), out);
    }

    pub(crate) fn on_pre_vote_response(
        &mut self,
        from: NodeId,
        response: VoteResponse,
        out: &mut Out,
    ) {
        // A granted pre-vote carries the term it was granted for; anything else is stale.
        let current = if response.granted {
            response.term == self.term + 1
        } else {
            true
        };
        if self.role == Role::PreCandidate && current {
            self.votes.insert(from, response.granted);
            self.count_votes(out);
        }
    }

    pub(crate) fn on_vote_response(&mut self, from: NodeId, response: VoteResponse, out: &mut Out) {
        if self.role == Role::Candidate && response.term == self.term {
            self.votes.insert(from, response.granted);
            self.count_votes(out);
        }
    }

    fn tally(&self) -> Tally {
        // Only voters' answers count (a learner or a stranger may answer too).
        let counted = || self.votes.iter().filter(|(&id, _)| self.is_voter(id));
        let granted = counted().filter(|(_, &g)| g).count();
        let refused = counted().count() - granted;
        if granted >= self.quorum() {
            Tally::Won
        } else if refused > self.cluster_size().saturating_sub(self.quorum()) {
            Tally::Lost
        } else {
            Tally::Open
        }
    }

    fn count_votes(&mut self, out: &mut Out) {
        match (self.tally(), self.role) {
            (Tally::Won, Role::PreCandidate) => self.campaign(Campaign::Vote, out),
            (Tally::Won, Role::Candidate) => self.become_leader(out),
            (Tally::Lost, Role::PreCandidate | Role::Candidate) => {
                self.become_follower(self.term, None, out)
            }
            _ => {}
        }
    }

    /// Paper 5.2 and section 8: a new leader appends a no-op of its term, which lets it
    /// commit (and so learn the commit point of) everything before it.
    fn become_leader(&mut self, out: &mut Out) {
        assert_eq!(self.voted_for, Some(self.id), "a leader voted for itself");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        let next = self.log.last_index() + 1;
        let progress = self
            .peers
            .iter()
            .map(|&p| (p, Progress::new(next)))
            .collect();
        self.lead = Some(LeaderState {
            progress,
            term_start_index: next,
            heartbeat_elapsed: 0,
            quorum_check_elapsed: 0,
            reads: ReadQueue::default(),
            transfer: None,
            lingering: BTreeMap::new(),
        });
        self.append(Payload::Noop);
        self.broadcast_append(out);
        self.maybe_commit(out);
    }
}
