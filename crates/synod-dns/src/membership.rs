//! Membership changes, as a zone's name servers change: the change is one of the primary's
//! changes (an entry of its history, with a serial like any other), and each member runs
//! with the newest membership its copy holds. The primary is the lowest voter of that
//! membership; learners are secondaries that never become primary.
//!
//! - Adding or removing a secondary is immediate at the primary, which notifies the members
//!   in force; a member that joins knows no membership, and waits for the primary's NOTIFY
//!   to learn whom to ask.
//! - **Removing the primary hands the zone over.** The primary appends its own removal and
//!   from then on takes no write and no change (it answers with the new primary as the
//!   leader hint). The next lowest voter becomes primary when its copy holds that removal,
//!   so it holds every change the old primary ever made durable (nothing follows the
//!   removal there): acknowledged writes survive the hand-over. It starts an era above every
//!   change it holds and above any it had before, so an (era, serial) still names one change.
//!   The others pull the removal from the old primary while it runs (every member answers
//!   from its durable copy, a prefix of the one history), or from each other: a member asked
//!   by, or notified by, a member holding more than it does asks that member instead, unless
//!   the one it asks is answering. So the new primary's NOTIFY reaches those that missed
//!   the removal, and a successor that missed it gets it from any member that has it. Reads
//!   at the new primary wait until its era, and the changes before it, are on its disk.
//! - A change that moves the primary (its removal, or a promotion of a lower id) is refused
//!   unless the successor asked lately: the zone would wait for a member that may be down.
//! - DNS has no quorum, hence no pending change to wait for and no learner to judge: the
//!   changes apply in the primary's order, one serial each.

use synod_core::{
    Action, Entry, LogIndex, Membership, MembershipChange, MembershipRefusal, NodeId, Payload,
    Rejection, RequestId,
};

use crate::engine::Dns;
use crate::message::Message;

type Out = Vec<Action<Message>>;

impl Dns {
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

    /// Recomputes the membership in force, the primary and the secondaries; a member that
    /// has just become primary starts its era.
    pub(crate) fn refresh_membership(&mut self) {
        let was_primary = self.is_primary();
        let before = self.primary;
        self.membership = self.membership_as_of(self.log.last_index());
        self.primary = self
            .membership
            .voters()
            .into_iter()
            .min()
            .unwrap_or(NodeId(0));
        let me = self.id;
        self.secondaries = self.membership.ids();
        self.secondaries.retain(|&id| id != me);
        // A new primary is asked from now on, unless the member asked now holds more than
        // this copy (the newest membership there may name another primary still).
        if self.primary != before && self.pull.primary_serial <= self.log.last_index() {
            self.pull.source = None;
        }
        if self.is_primary() && !was_primary {
            self.take_primary();
        }
    }

    /// Starts this member's era as primary: above every change it holds and every era it
    /// was in before, durably before its first change.
    fn take_primary(&mut self) {
        self.era = self.era_floor.max(self.log.last_era()).saturating_add(1);
        self.era_floor = self.era;
        self.disk.draft.hard_state = true;
        self.era_durable = false;
        self.notified_serial = 0;
    }

    /// The membership after `change`, if the primary may make it now: one that moves the
    /// primary (its own removal, or a promotion of a lower id) needs the successor to have
    /// asked lately, or the zone would wait for a member that may be down.
    fn check_change(&self, change: &MembershipChange) -> Result<Membership, MembershipRefusal> {
        let next = self.membership.changed(change)?;
        let successor = next.voters().into_iter().min();
        if let Some(successor) = successor.filter(|&s| s != self.id) {
            let window = self.config.refresh_ticks + self.config.retry_ticks;
            let asked = self.asked_at.get(&successor);
            if asked.is_none_or(|&at| self.ticks.saturating_sub(at) > window) {
                return Err(MembershipRefusal::NotEnoughStarted);
            }
        }
        Ok(next)
    }

    /// An operator's change: the primary appends it, as one of its changes; any other member
    /// refuses it (the replica hands it to the primary first).
    pub(crate) fn on_change_membership(
        &mut self,
        id: RequestId,
        change: MembershipChange,
        out: &mut Out,
    ) {
        if !self.is_primary() || !self.era_durable {
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
        let entry = Entry {
            index: self.log.last_index() + 1,
            era: self.era,
            payload: Payload::Membership {
                id,
                membership: next,
            },
        };
        self.disk.draft.entries.push(entry.clone());
        self.log.push(entry);
        self.refresh_membership();
        self.handing_over = !self.is_primary();
    }
}
