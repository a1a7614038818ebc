//! Membership changes, one server at a time (thesis 4.1 to 4.3).
//!
//! A change is a log entry holding the whole new membership. Every node uses the newest
//! membership in its log as soon as the entry is appended, committed or not, and falls back to
//! the one before if the entry is cut off (4.1). Because a change adds or removes at most one
//! voter, every majority of the old voters overlaps every majority of the new ones. The leader
//! starts a change only when the previous one is committed and when an entry of its own term
//! is: without the second rule, a leader elected by the old voters could overwrite a change
//! that a leader of the new voters committed (Ongaro's 2015 erratum to the single-server
//! algorithm, the fix etcd and every production Raft adopted).
//!
//! Learners (4.2.1) receive the log and snapshots but never vote, never campaign and never
//! count in a quorum; a caught-up learner can be promoted. A leader removed from the
//! membership keeps leading, without counting itself, until the change commits, then steps
//! down (4.2.2). Removed servers may still time out; pre-vote and check-quorum keep them from
//! disrupting the cluster (4.2.3).

use synod_core::{
    Action, LogIndex, Membership, MembershipChange, MembershipRefusal, NodeId, Payload, Rejection,
    RequestId, Role,
};

use crate::message::{CommitNotice, Message, TimeoutNow};
use crate::progress::Progress;
use crate::raft::{Out, Raft};

impl Raft {
    /// Recomputes the membership in force from the log, the snapshot and the boot
    /// configuration, and brings the leader's follower list in line with it.
    pub(crate) fn refresh_membership(&mut self) {
        let from_log = self.log.membership_through(self.log.last_index());
        let (membership, index) = match from_log {
            Some((index, membership)) => (membership, index),
            None => (self.base_membership(), 0),
        };
        self.membership = membership;
        self.membership_index = index;
        // Replicate to the members in force and, until their removal commits, to those being
        // removed: they learn of it from the entry itself (else a removed follower would
        // never hear that it was, and keep asking for votes).
        let committed = self.membership_as_of(self.commit_index);
        let mut peers: Vec<NodeId> = self.membership.ids();
        peers.extend(committed.ids());
        if let Some(lead) = &self.lead {
            peers.extend(lead.lingering.keys());
        }
        peers.sort_unstable();
        peers.dedup();
        peers.retain(|&id| id != self.id);
        self.peers = peers;
        let next = self.log.last_index() + 1;
        let peers = self.peers.clone();
        if let Some(lead) = self.lead.as_mut() {
            lead.progress.retain(|id, _| peers.contains(id));
            for id in peers {
                lead.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next));
            }
            if lead
                .transfer
                .is_some_and(|(to, _)| !self.membership.is_voter(to))
            {
                lead.transfer = None;
            }
        }
    }

    /// The membership the snapshot holds, else the boot configuration.
    fn base_membership(&self) -> Membership {
        Membership::under_log(
            self.snapshot.as_ref(),
            self.config.boot_membership.as_ref(),
            &self.config.voters,
        )
    }

    /// The membership in force as of `index` (an index this node holds or has compacted).
    pub(crate) fn membership_as_of(&self, index: LogIndex) -> Membership {
        self.log.membership_or(index, || self.base_membership()).1
    }

    /// An operator's change: the leader checks it and appends it; anyone else refuses it.
    pub(crate) fn on_change_membership(
        &mut self,
        id: RequestId,
        change: MembershipChange,
        out: &mut Out,
    ) {
        let transferring = self.lead.as_ref().is_some_and(|l| l.transfer.is_some());
        if self.role != Role::Leader || transferring {
            return self.reject(id, out);
        }
        let next = match self.check_change(&change) {
            Ok(next) => next,
            Err(refusal) => {
                return out.push(Action::Reject {
                    id,
                    reason: Rejection::Membership(refusal),
                })
            }
        };
        self.append(Payload::Membership {
            id,
            membership: next,
        });
        self.refresh_membership();
        self.broadcast_append(out);
        self.maybe_commit(out);
    }

    /// The membership after `change`, if this leader may make it now.
    fn check_change(&self, change: &MembershipChange) -> Result<Membership, MembershipRefusal> {
        let term_committed = self
            .lead
            .as_ref()
            .is_some_and(|l| self.commit_index >= l.term_start_index);
        let pending = self.membership_index > self.commit_index || !term_committed;
        #[cfg(any(test, feature = "inject-bugs"))]
        let pending = pending && !self.config.bugs.change_membership_while_pending;
        if pending {
            return Err(MembershipRefusal::ChangePending);
        }
        let next = self.membership.changed(change)?;
        if let MembershipChange::Promote { id } = change {
            // As etcd: a learner is ready once it holds 90% of the leader's log.
            let matched = self.progress(*id).map_or(0, |p| p.match_index);
            if matched.saturating_mul(10) < self.log.last_index().saturating_mul(9) {
                return Err(MembershipRefusal::LearnerNotReady);
            }
        }
        // The new voters must be able to form a quorum with the members that answer now,
        // or the change would leave the cluster unable to commit anything, itself included.
        let voters = next.voters();
        if voters != self.membership.voters() {
            let active = voters
                .iter()
                .filter(|&&v| v == self.id || self.recently_heard(v))
                .count();
            if active < synod_core::quorum::majority(voters.len()) {
                return Err(MembershipRefusal::NotEnoughStarted);
            }
        }
        Ok(next)
    }

    /// Whether the leader heard from `id` within the last election timeout.
    fn recently_heard(&self, id: NodeId) -> bool {
        let window = self.config.election_timeout_ticks_min;
        self.progress(id)
            .is_some_and(|p| p.heard_at.is_some_and(|at| at + window >= self.ticks))
    }

    /// The commit point moved: once it passes the newest membership entry, members that entry
    /// removed hear that it committed (so they apply their own removal, and their runtime can
    /// stop them), and are no longer replicated to.
    pub(crate) fn on_commit_past_membership(&mut self, before: LogIndex, out: &mut Out) {
        if before >= self.membership_index || self.membership_index > self.commit_index {
            return;
        }
        let ticks = self.ticks;
        let membership = &self.membership;
        let notices: Vec<(NodeId, LogIndex)> = match self.lead.as_mut() {
            Some(lead) => {
                let removed: Vec<(NodeId, LogIndex)> = lead
                    .progress
                    .iter()
                    .filter(|(&id, _)| !membership.contains(id))
                    .map(|(&id, p)| (id, p.match_index))
                    .collect();
                lead.lingering
                    .extend(removed.iter().map(|&(id, _)| (id, ticks)));
                removed
            }
            None => Vec::new(),
        };
        for (to, matched) in notices {
            let notice = CommitNotice {
                term: self.term,
                commit: self.commit_index.min(matched),
            };
            self.send_ahead_of_log(to, Message::Commit(notice), out);
        }
        self.refresh_membership();
    }

    /// Lets go of removed members once they were sent a commit point covering their removal,
    /// or after ten election timeouts (one that is down may never hear it).
    pub(crate) fn tick_lingering(&mut self) {
        let (index, now) = (self.membership_index, self.ticks);
        let patience = 10 * self.config.election_timeout_ticks_min;
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let progress = &lead.progress;
        let before = lead.lingering.len();
        lead.lingering.retain(|id, &mut since| {
            let told = progress.get(id).is_some_and(|p| p.commit_sent >= index);
            !told && now < since + patience
        });
        if lead.lingering.len() != before {
            self.refresh_membership();
        }
    }

    /// A leader whose own removal has committed steps down (thesis 4.2.2), first telling the
    /// voter with the most of its log to campaign at once, so the cluster does not wait an
    /// election timeout for a new leader.
    pub(crate) fn step_down_if_removed(&mut self, out: &mut Out) {
        let removed = !self.membership.contains(self.id);
        if self.role != Role::Leader || !removed || self.membership_index > self.commit_index {
            return;
        }
        let successor = self.lead.as_ref().and_then(|lead| {
            lead.progress
                .iter()
                .filter(|(&id, _)| self.membership.is_voter(id))
                .max_by_key(|(_, p)| p.match_index)
                .filter(|(_, p)| p.match_index == self.log.last_index())
                .map(|(&id, _)| id)
        });
        if let Some(to) = successor {
            let message = Message::TimeoutNow(TimeoutNow { term: self.term });
            self.send(to, message, out);
        }
        self.become_follower(self.term, None, out);
    }
}
