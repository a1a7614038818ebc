//! Membership changes through the history, one member at a time.
//!
//! A membership is an entry of the history, as under Raft and ZAB, and each member runs with
//! the newest one it holds, committed or not. What synchronous replication adds:
//!
//! - **An entry needs the voters of the membership in force at its position.** While a
//!   change is pending, the entries before it commit on the old voters, and the change and
//!   what follows on the new ones (which then commits what precedes it too: they hold it).
//!   So adding a voter makes every later write wait for it (add a learner first, let it
//!   catch up by snapshot and history, then promote it), and a dead backup can be removed:
//!   its removal commits on the others. A dead primary cannot: the failover to another
//!   member needs every voter, the dead one included, to join the new view (the price of
//!   the model; bring it back, then remove it).
//! - **Only a voter takes over, and only a voter's view is joined.** Failover is safe because
//!   the new primary holds every committed entry. With changes, that holds for a member that
//!   is a voter both in the newest membership it holds and in the one as of its commit
//!   point: an entry committed without it was committed by voters that had removed it first,
//!   and they, holding that removal, refuse its view (ids are never reused, so a removed
//!   member never becomes a voter again). Learners follow a view whose primary they know as a
//!   member, and their word (a Stale) deposes no primary.
//! - **A primary removed steps down once its removal commits** and hands its place to a
//!   voter of the new membership (a TakeOver with its commit point, so the successor knows
//!   the change committed), again every retry interval and to the next voter in turn, until
//!   it hears of a later view.
//! - The primary proposes a change only with writes open and no other change uncommitted,
//!   promotes only a learner holding 90% of the history (etcd's rule), and adds no voter
//!   while another voter has been silent for a retry interval, since every write would then
//!   wait for both.

use synod_core::{
    Action, LogIndex, Membership, MembershipChange, MembershipRefusal, NodeId, Payload, Rejection,
    RequestId,
};

use crate::engine::PrimaryBackup;
use crate::message::Message;

type Out = Vec<Action<Message>>;

impl PrimaryBackup {
    /// The membership the snapshot holds, else the boot configuration.
    fn base_membership(&self) -> Membership {
        Membership::under_log(
            self.snapshot.as_ref(),
            self.config.boot_membership.as_ref(),
            &self.config.voters,
        )
    }

    /// The membership in force as of `index` (a position this member holds or compacted).
    pub(crate) fn membership_as_of(&self, index: LogIndex) -> Membership {
        self.log.membership_or(index, || self.base_membership()).1
    }

    /// Recomputes the membership in force and whom this member talks to: the members in
    /// force and, until their removal commits, the members being removed.
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
        self.peers = peers;
        self.track_backups();
    }

    /// The voters whose word counts now: those of the membership in force at the commit
    /// point and of every membership after it.
    pub(crate) fn counted_voters(&self) -> Vec<NodeId> {
        let mut voters: Vec<NodeId> = self
            .uncommitted_memberships()
            .into_iter()
            .flat_map(|(_, voters)| voters)
            .collect();
        voters.sort_unstable();
        voters.dedup();
        voters.retain(|&id| id != self.id);
        voters
    }

    /// Whether `from`'s word moves this member to a later view: a voter's, or anyone's for a
    /// member that knows no membership yet (it is joining).
    pub(crate) fn counts(&self, from: NodeId) -> bool {
        self.membership.is_voter(from) || self.membership.voter_count() == 0
    }

    /// Whether this member joins a later view led by `primary`: a voter only if `primary` is
    /// a voter here, a learner if it is a member here, a joining member always.
    pub(crate) fn accepts_primary(&self, primary: NodeId) -> bool {
        if self.membership.voter_count() == 0 {
            true
        } else if self.membership.is_voter(self.id) {
            self.membership.is_voter(primary)
        } else {
            self.membership.contains(primary)
        }
    }

    /// Whether this member may make itself primary: it is a voter in the newest membership
    /// it holds and in the one as of its commit point (see the module documentation).
    pub(crate) fn may_take_over(&self) -> bool {
        let committed = self.commit_index.max(self.membership_committed);
        self.membership.is_voter(self.id) && self.membership_as_of(committed).is_voter(self.id)
    }

    /// Asks `to` to take over after this member's view, with its commit point.
    pub(crate) fn hand_over(&mut self, to: NodeId, out: &mut Out) {
        let commit = self.commit_index;
        let commit_era = self.log.era(commit).unwrap_or(self.log.base().era);
        let message = Message::TakeOver {
            view: self.view,
            commit,
            commit_era,
        };
        self.send(to, message, out);
    }

    /// Leaves the primary's place to a voter of the membership, in turn, once per call.
    pub(crate) fn abdicate(&mut self, out: &mut Out) {
        self.step_down(out);
        let voters: Vec<NodeId> = self
            .membership
            .voters()
            .into_iter()
            .filter(|&v| v != self.id)
            .collect();
        if voters.is_empty() {
            return;
        }
        let turn = self.ticks / self.config.retry_ticks;
        let to = voters[(turn % voters.len() as u64) as usize];
        self.successor = Some(to);
        self.hand_over(to, out);
    }

    /// An operator's change: the primary with writes open checks it and appends it; anyone
    /// else refuses it as not the leader.
    pub(crate) fn on_change_membership(
        &mut self,
        id: RequestId,
        change: MembershipChange,
        out: &mut Out,
    ) {
        if self.ready_view().is_none() {
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
        let entry = synod_core::Entry {
            index: self.log.last_index() + 1,
            era: self.view,
            payload: Payload::Membership {
                id,
                membership: next,
            },
        };
        self.disk.draft.entries.push(entry.clone());
        self.log.push(entry);
        self.refresh_membership();
        self.flush(out);
        self.replicate_to_all(out);
    }

    /// The membership after `change`, if this primary may make it now.
    fn check_change(&self, change: &MembershipChange) -> Result<Membership, MembershipRefusal> {
        if self.membership_index > self.commit_index {
            return Err(MembershipRefusal::ChangePending);
        }
        let next = self.membership.changed(change)?;
        if let MembershipChange::Promote { id } = change {
            // As etcd: a learner is ready once it holds 90% of the primary's history, as it
            // said in this view within a retry interval (one that follows another view
            // answers no more).
            let acked = self.backup_acked(*id);
            let answering = self
                .backup_silence(*id)
                .is_some_and(|t| t < self.config.retry_ticks);
            if !answering || acked.saturating_mul(10) < self.log.last_index().saturating_mul(9) {
                return Err(MembershipRefusal::LearnerNotReady);
            }
        }
        // Every write waits for every voter: a new voter (a promotion, or one added straight
        // as a voter) is refused while another voter is silent, which would stall writes
        // for as long as both take.
        let voters = next.voters();
        let grows = voters.len() > self.membership.voter_count();
        if grows || matches!(change, MembershipChange::Promote { .. }) {
            let window = self.config.retry_ticks;
            let silent = self
                .membership
                .voters()
                .into_iter()
                .filter(|&v| v != self.id)
                .any(|v| self.backup_silence(v).is_none_or(|t| t >= window));
            if silent {
                return Err(MembershipRefusal::NotEnoughStarted);
            }
        }
        Ok(next)
    }

    /// The commit point moved from `before`: once it passes the newest membership, members
    /// it removed are let go (they were sent the commit point covering their removal), and a
    /// primary it removed steps down and hands over.
    pub(crate) fn after_commit(&mut self, before: LogIndex, out: &mut Out) {
        if before >= self.membership_index || self.membership_index > self.commit_index {
            return;
        }
        if self.membership_index > self.membership_committed {
            self.membership_committed = self.membership_index;
            self.disk.draft.hard_state = true;
        }
        self.refresh_membership();
        if self.is_primary() && !self.membership.is_voter(self.id) {
            self.replicate_to_all(out);
            self.abdicate(out);
        }
    }
}
