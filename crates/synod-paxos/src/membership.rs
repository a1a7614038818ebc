//! Which acceptors decide which slot: reconfiguration through the log, as Lamport describes it
//! for a replicated state machine (Paxos Made Simple, section 3, and "Reconfiguring a State
//! Machine", 2010).
//!
//! A membership change is a command like any other, decided in some slot `i`. It governs the
//! slots from `i + window` on, where `window` (alpha) is fixed in the configuration. Who
//! decides slot `s` is therefore a function of the decided log through `s - window`, which
//! every node computes alike; a proposer that knows the log through `s - window` knows whom
//! to ask, and one that does not may not propose in `s`. No value is ever accepted in `s` by
//! acceptors other than those of `s`'s configuration, so each slot is one ordinary Paxos
//! instance over one fixed set of acceptors, and consecutive memberships need not overlap.
//!
//! The price is that a leader runs phase 1 again when a new set of acceptors comes into force
//! (see `MultiPaxos::propose_queued`), and that a change takes effect only `window` slots
//! later: the leader fills them with no-ops at once. A snapshot must not fall inside a window
//! (`may_snapshot_at`): it records one membership, the one in force right after it.

use synod_core::quorum::majority;
use synod_core::{LogIndex, Membership, NodeId};

use crate::core::Core;
use crate::message::Slot;

impl Core {
    /// Slots between a membership's decision and its taking effect.
    pub(crate) fn window(&self) -> Slot {
        self.config.reconfig_window
    }

    /// The membership whose voters decide `slot`: the newest decided at or before
    /// `slot - window`. Known once the decided log reaches `slot - window`.
    pub(crate) fn config_at(&self, slot: Slot) -> &Membership {
        let through = slot.saturating_sub(self.window());
        self.memberships
            .range(..=through)
            .next_back()
            .map_or(&self.base_membership, |(_, m)| m)
    }

    /// The newest membership in the decided log (in force or coming into force): the
    /// members the runtime connects to.
    pub(crate) fn newest_membership(&self) -> &Membership {
        self.memberships
            .values()
            .next_back()
            .unwrap_or(&self.base_membership)
    }

    /// The membership as of `index` (what a snapshot through `index` records); `None` when
    /// this node does not know it (it joined, and learned no membership through `index`).
    pub(crate) fn membership_as_of(&self, index: LogIndex) -> Option<&Membership> {
        let membership = self
            .memberships
            .range(..=index)
            .next_back()
            .map_or(&self.base_membership, |(_, m)| m);
        (!membership.members.is_empty()).then_some(membership)
    }

    /// The distinct memberships deciding the slots a leader may propose in now (from the
    /// first undecided slot through `window` slots on), in slot order.
    pub(crate) fn window_configs(&self) -> Vec<&Membership> {
        let first = self.prefix() + 1;
        let mut configs = vec![self.config_at(first)];
        let governing = first.saturating_sub(self.window());
        for (_, m) in self.memberships.range(governing + 1..) {
            configs.push(m);
        }
        configs.dedup_by(|a, b| a.voters() == b.voters());
        configs
    }

    /// Whether the nodes in `set` (this one counting only if it is in it) hold a majority of
    /// the voters of `membership`.
    pub(crate) fn majority_of(membership: &Membership, set: impl Fn(NodeId) -> bool) -> bool {
        let (mut voters, mut votes) = (0, 0);
        for member in membership.members.iter().filter(|m| !m.learner) {
            voters += 1;
            votes += usize::from(set(member.id));
        }
        votes >= majority(voters)
    }

    /// A membership decided and not yet in force: the leader may start no other change.
    pub(crate) fn change_coming(&self) -> bool {
        self.memberships
            .keys()
            .next_back()
            .is_some_and(|&i| i + self.window() > self.prefix() + 1)
    }

    /// Whether a snapshot through `index` records the membership in force after it: no
    /// change decided at or before `index` takes effect after `index + 1`.
    pub(crate) fn may_snapshot_at(&self, index: LogIndex) -> bool {
        self.memberships
            .range(..=index)
            .next_back()
            .is_none_or(|(&i, _)| i + self.window() <= index + 1)
    }

    /// Brings `peers` in line with the memberships: every member of the newest, and every
    /// voter of a slot still to decide.
    pub(crate) fn refresh_peers(&mut self) {
        let mut peers: Vec<NodeId> = self.newest_membership().ids();
        for m in self.window_configs() {
            peers.extend(m.voters());
        }
        peers.sort_unstable();
        peers.dedup();
        peers.retain(|&p| p != self.id);
        self.peers = peers;
    }

    /// The decided log grew from `before`: a membership decided or coming into force there
    /// changes whom this node talks to.
    pub(crate) fn after_log_grew(&mut self, before: Slot) {
        let window = self.window();
        let moved = self
            .memberships
            .range(before.saturating_sub(window)..)
            .next()
            .is_some();
        if moved {
            self.refresh_peers();
        }
    }
}
