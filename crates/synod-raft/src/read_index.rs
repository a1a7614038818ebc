//! Linearizable reads without writing the log: ReadIndex (thesis 6.4).
//!
//! The leader notes its commit index as the read's index, then confirms it is still leader
//! by a round of heartbeats acknowledged by a majority. Once confirmed, and once the state
//! machine has applied up to the read index, the read may be served locally. A new leader
//! first waits for its no-op to commit, because until then it may not know the latest
//! commit point. Every read that arrives in one step shares one round.

use std::collections::VecDeque;

use synod_core::{
    Action, LogIndex, NodeId, ReadConsistency, ReadRequest, Rejection, RequestId, Role,
};

use crate::raft::{Out, Raft};

/// Reads waiting for a leadership confirmation.
#[derive(Debug, Default)]
pub(crate) struct ReadQueue {
    /// The newest round started.
    round: u64,
    /// Reads that arrived before this term's first entry committed.
    before_term_commit: Vec<RequestId>,
    /// Rounds awaiting a majority, oldest first.
    pending: VecDeque<PendingRound>,
}

#[derive(Debug)]
struct PendingRound {
    round: u64,
    read_index: LogIndex,
    ids: Vec<RequestId>,
}

impl ReadQueue {
    /// The newest round; heartbeats carry it.
    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    /// Refuses every waiting read: this node is no longer leader.
    pub(crate) fn reject_all(self, leader_hint: Option<NodeId>, out: &mut Out) {
        let waiting = self.pending.into_iter().flat_map(|p| p.ids);
        for id in self.before_term_commit.into_iter().chain(waiting) {
            out.push(Action::Reject {
                id,
                reason: Rejection::NotLeader { leader_hint },
            });
        }
    }
}

impl Raft {
    pub(crate) fn on_read(&mut self, reads: Vec<ReadRequest>, out: &mut Out) {
        let mut linearizable = Vec::new();
        for read in reads {
            match read.consistency {
                // Whatever this node has applied, now: no network, possibly stale.
                ReadConsistency::Serializable => out.push(Action::ReadReady(read.id)),
                ReadConsistency::Linearizable if self.role == Role::Leader => {
                    linearizable.push(read.id)
                }
                ReadConsistency::Linearizable => self.reject(read.id, out),
            }
        }
        #[cfg(any(test, feature = "inject-bugs"))]
        if self.config.bugs.read_without_confirmation {
            out.extend(linearizable.drain(..).map(Action::ReadReady));
        }
        if linearizable.is_empty() {
            return;
        }
        let term_committed = self.term_committed();
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if term_committed {
            self.start_read_round(linearizable, out);
        } else {
            lead.reads.before_term_commit.extend(linearizable);
        }
    }

    fn term_committed(&self) -> bool {
        self.lead
            .as_ref()
            .is_some_and(|l| self.commit_index >= l.term_start_index)
    }

    fn start_read_round(&mut self, ids: Vec<RequestId>, out: &mut Out) {
        let read_index = self.commit_index;
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        lead.reads.round += 1;
        let round = lead.reads.round;
        lead.reads.pending.push_back(PendingRound {
            round,
            read_index,
            ids,
        });
        self.broadcast_heartbeat(out);
        self.confirm_reads(out);
    }

    /// After a commit: reads held back for this term's first commit may start now.
    pub(crate) fn on_commit_advanced(&mut self, out: &mut Out) {
        if !self.term_committed() {
            return;
        }
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let held = std::mem::take(&mut lead.reads.before_term_commit);
        if !held.is_empty() {
            self.start_read_round(held, out);
        }
        self.confirm_reads(out);
    }

    /// Answers every round a majority has confirmed and whose index is applied.
    pub(crate) fn confirm_reads(&mut self, out: &mut Out) {
        let quorum = self.quorum();
        let applied = self.applied_index;
        let own = usize::from(self.membership.is_voter(self.id));
        let membership = &self.membership;
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        while let Some(front) = lead.reads.pending.front() {
            let acks = own
                + lead
                    .progress
                    .iter()
                    .filter(|(&id, p)| p.read_round_acked >= front.round && membership.is_voter(id))
                    .count();
            if acks < quorum || applied < front.read_index {
                break;
            }
            let done = lead.reads.pending.pop_front().expect("front exists");
            out.extend(done.ids.into_iter().map(Action::ReadReady));
        }
    }
}
