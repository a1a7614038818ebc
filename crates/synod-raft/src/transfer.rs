//! Leadership transfer (thesis 3.10).
//!
//! The leader stops taking new commands, brings the target's log up to date, then tells it
//! to campaign at once with TimeoutNow. The target's higher term then deposes the leader. If
//! that does not happen within the transfer timeout, the leader resumes normal service.

use synod_core::{NodeId, Role};

use crate::message::{Message, TimeoutNow};
use crate::raft::{Out, Raft};

impl Raft {
    pub(crate) fn on_transfer_leadership(&mut self, to: NodeId, out: &mut Out) {
        if self.role != Role::Leader || to == self.id || !self.is_voter(to) {
            return;
        }
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if lead.transfer.is_some_and(|(target, _)| target == to) {
            return;
        }
        lead.transfer = Some((to, 0));
        self.maybe_send_timeout_now(to, out);
        self.send_appends(to, out);
    }

    /// Sends TimeoutNow once the transfer target holds the whole log.
    pub(crate) fn maybe_send_timeout_now(&mut self, from: NodeId, out: &mut Out) {
        let last_index = self.log.last_index();
        let Some(lead) = &self.lead else { return };
        let target_ready = lead.transfer.is_some_and(|(to, _)| to == from)
            && lead
                .progress
                .get(&from)
                .is_some_and(|p| p.match_index == last_index);
        if target_ready {
            let message = Message::TimeoutNow(TimeoutNow { term: self.term });
            self.send(from, message, out);
        }
    }

    /// Abandons a transfer that did not complete in time; proposals are taken again.
    pub(crate) fn tick_transfer(&mut self) {
        let timeout = self.config.transfer_timeout_ticks;
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if let Some((_, elapsed)) = lead.transfer.as_mut() {
            *elapsed += 1;
            if *elapsed >= timeout {
                lead.transfer = None;
            }
        }
    }
}
