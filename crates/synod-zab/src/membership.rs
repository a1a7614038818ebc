//! Membership changes through the history, one server at a time.
//!
//! ZooKeeper 3.5 reconfigures through its atomic broadcast (Shraer, Reed, Junqueira and
//! Ferreira, "Dynamic Reconfiguration of Primary/Backup Clusters", USENIX ATC 2012): the new
//! configuration is a transaction of the history, proposed by the leader, one reconfiguration
//! at a time, and observers (non-voting members) receive the history without counting in
//! any quorum. ZooKeeper accepts any new set of voters, so it commits a reconfiguration on
//! quorums of both the old and the new set and activates the new one at commit. Synod
//! changes at most one voter at a time, as etcd's API asks, which makes the two sets'
//! quorums overlap by themselves (Raft thesis 4.1). So, as in Synod's Raft:
//!
//! - A membership is a transaction holding the whole new membership. Every node uses the
//!   newest one in its history as soon as it holds it, committed or not, and the one before
//!   if a new leader's synchronization cuts it off. Every quorum (election votes, discovery,
//!   NewLeader, commits, read confirmations, the leader's liveness check) counts the voters
//!   of that membership only.
//! - The established leader proposes a change only when no other is uncommitted. Being
//!   established means a quorum took its epoch and the initial history is committed: the
//!   counterpart of Raft's rule that a leader first commits an entry of its own term.
//! - Learners (ZooKeeper's observers) follow the leader through discovery, synchronization
//!   and broadcast like any follower, but never vote, never lead and never count.
//! - A node that joins knows no membership until the leader's history or snapshot gives it
//!   one; the leader invites it (its election notification, repeated until it follows), since
//!   it knows no one to ask.
//! - A leader removed from the membership keeps leading, without counting itself, until the
//!   change commits, then abdicates; the voters elect another once their pings go unanswered.

use synod_core::{
    Action, LogIndex, Membership, MembershipChange, MembershipRefusal, NodeId, Payload, Rejection,
    RequestId,
};

use crate::leader::Stage;
use crate::zab::{Out, Phase, Zab};

impl Zab {
    /// The membership the snapshot holds, else the boot configuration.
    fn base_membership(&self) -> Membership {
        Membership::under_log(
            self.snapshot.as_ref(),
            self.config.boot_membership.as_ref(),
            &self.config.voters,
        )
    }

    /// The membership in force as of `index` (a position this node holds or compacted).
    pub(crate) fn membership_as_of(&self, index: LogIndex) -> Membership {
        self.log.membership_or(index, || self.base_membership()).1
    }

    /// Recomputes the membership in force from the history, the snapshot and the boot
    /// configuration, and whom this node talks to: the members in force and, until their
    /// removal commits, the members being removed (they learn of it from the history).
    pub(crate) fn refresh_membership(&mut self) {
        let (index, membership) = self
            .log
            .membership_or(self.log.last_index(), || self.base_membership());
        self.membership = membership;
        self.membership_index = index;
        let mut peers = self.membership.ids();
        if index > self.commit_index {
            peers.extend(self.membership_as_of(self.commit_index).ids());
        }
        peers.sort_unstable();
        peers.dedup();
        peers.retain(|&id| id != self.id);
        let ticks = self.ticks;
        if let Phase::Leading(lead) = &mut self.phase {
            lead.followers.retain(|id, _| peers.contains(id));
            lead.last_heard.retain(|id, _| peers.contains(id));
            for &id in &peers {
                // A new member is given a session timeout to show up.
                lead.last_heard.entry(id).or_insert(ticks);
            }
        }
        self.peers = peers;
    }

    /// Whether `id` votes in the membership in force here.
    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.membership.is_voter(id)
    }

    /// An operator's change: the established leader checks it and proposes it; anyone else
    /// refuses it.
    pub(crate) fn on_change_membership(
        &mut self,
        id: RequestId,
        change: MembershipChange,
        out: &mut Out,
    ) {
        let Some(epoch) = self.established_epoch() else {
            return self.reject(id, out);
        };
        let next = match self.check_change(&change) {
            Ok(next) => next,
            Err(refusal) => {
                return out.push(Action::Reject {
                    id,
                    reason: Rejection::Membership(refusal),
                })
            }
        };
        let before = self.peers.clone();
        self.push_entry(synod_core::Entry {
            index: self.log.last_index() + 1,
            era: epoch,
            payload: Payload::Membership {
                id,
                membership: next,
            },
        });
        let joined: Vec<NodeId> = self
            .peers
            .iter()
            .copied()
            .filter(|p| !before.contains(p))
            .collect();
        for to in joined {
            self.invite(to, out);
        }
        self.broadcast_proposals(out);
    }

    /// The membership after `change`, if this leader may make it now.
    fn check_change(&self, change: &MembershipChange) -> Result<Membership, MembershipRefusal> {
        if self.membership_index > self.commit_index {
            return Err(MembershipRefusal::ChangePending);
        }
        let next = self.membership.changed(change)?;
        let Phase::Leading(lead) = &self.phase else {
            return Err(MembershipRefusal::ChangePending);
        };
        if let MembershipChange::Promote { id } = change {
            // As etcd: a learner is ready once it holds 90% of the leader's history.
            let acked = lead
                .followers
                .get(id)
                .filter(|p| p.stage == Stage::Broadcast)
                .map_or(0, |p| p.acked);
            if acked.saturating_mul(10) < self.log.last_index().saturating_mul(9) {
                return Err(MembershipRefusal::LearnerNotReady);
            }
        }
        // The new voters must make a quorum with the members heard from lately, or the
        // change would leave the cluster unable to commit anything, itself included.
        let voters = next.voters();
        if voters != self.membership.voters() {
            let window = self.config.session_timeout_ticks_min;
            let active = voters
                .iter()
                .filter(|&&v| {
                    v == self.id
                        || lead.last_heard.get(&v).is_some_and(|&at| {
                            lead.followers.contains_key(&v) && at + window >= self.ticks
                        })
                })
                .count();
            if active < synod_core::quorum::majority(voters.len()) {
                return Err(MembershipRefusal::NotEnoughStarted);
            }
        }
        Ok(next)
    }

    /// The commit point moved from `before`: once it passes the newest membership, members
    /// it removed are let go (they were sent the commit point covering their removal), and a
    /// leader it removed abdicates.
    pub(crate) fn after_commit(&mut self, before: LogIndex, out: &mut Out) {
        if before >= self.membership_index || self.membership_index > self.commit_index {
            return;
        }
        self.refresh_membership();
        if matches!(self.phase, Phase::Leading(_)) && !self.membership.contains(self.id) {
            self.start_election(out);
        }
    }
}
