//! The operator who changes the membership while the nemesis breaks things: spares join
//! (as learners or straight as voters), learners are promoted or dropped, voters are removed
//! (the leader, a crashed or a cut-off one included). Changes go through the replica as an
//! operator's call, to whichever node is up, as `etcdctl member ...` would: a follower hands
//! the change to the leader, the leader refuses what is unsafe now, and the answer comes when
//! the change applies.
//!
//! Voters stay between three and five, and a removal never leaves more voters down than a
//! minority of the rest, so that the liveness phase can still expect the cluster to recover.

use synod_core::{Membership, MembershipChange, NodeId, RequestId};
use synod_replica::{Answer, Call, ClientCall, Refusal};

use crate::node::SimWaiter;
use crate::protocol::Protocol;
use crate::world::World;

/// The client id of the operator's requests: untracked by sessions, unlike any client's.
pub(crate) const OPERATOR: u64 = synod_core::ClientId::UNTRACKED_FROM | 0x00ff_0000_0000;

/// Voters the operator keeps the cluster within.
const VOTERS: (usize, usize) = (3, 5);

impl<P: Protocol> World<P> {
    /// The membership in force at the node furthest along, under a protocol whose membership
    /// changes; `None` under one whose members are fixed.
    pub(crate) fn current_membership(&self) -> Option<Membership> {
        if !P::CHANGES_MEMBERSHIP {
            return None;
        }
        self.nodes
            .iter()
            .filter_map(|n| n.engine())
            .max_by_key(|e| e.membership_rank())
            .and_then(|e| e.membership().cloned())
    }

    /// Every member of the membership in force, under a protocol whose membership changes.
    pub(crate) fn final_members(&self) -> Option<Vec<NodeId>> {
        self.current_membership().map(|m| m.ids())
    }

    /// After settling, every member that joined and is up is named in the membership in
    /// force: it published its attributes, whatever the faults did to its first asks. Not
    /// under gossip (the one protocol that does not order writes), whose membership can
    /// freeze for good while members that joined with an empty disk are not yet trusted to
    /// vote (ARCHITECTURE.md, "amnesic voters can freeze the membership"): a name there may
    /// wait on an operator.
    pub(crate) fn check_published(&self) -> Result<(), String> {
        if !P::ORDERS_WRITES {
            return Ok(());
        }
        let Some(membership) = self.current_membership() else {
            return Ok(());
        };
        let unnamed = membership
            .members
            .iter()
            .find(|m| m.name.is_empty() && self.is_up(m.id) && self.joins(m.id));
        match unnamed {
            Some(m) => Err(format!(
                "{} joined and is up, but the membership still lists it without a name",
                m.id
            )),
            None => Ok(()),
        }
    }

    /// The voters now: of the membership in force, or the boot voters.
    pub(crate) fn voting(&self) -> Vec<NodeId> {
        match self.current_membership() {
            Some(m) if !m.voters().is_empty() => m.voters(),
            _ => self.voters.clone(),
        }
    }

    /// Asks for a membership change at a random node that is up; one time in three, for a
    /// second one at once, as a hasty operator's script would (the leader must refuse it
    /// while the first is pending).
    pub(crate) fn change_membership(&mut self) {
        let Some(membership) = self.current_membership() else {
            return;
        };
        let Some(first) = self.pick_change(&membership) else {
            return;
        };
        let mut changes = vec![first.clone()];
        if self.nemesis_rng.range(0, 3) == 0 {
            let second = membership
                .changed(&first)
                .ok()
                .and_then(|after| self.pick_change(&after));
            changes.extend(second);
        }
        let up: Vec<NodeId> = self
            .everyone
            .iter()
            .copied()
            .filter(|&n| self.is_up(n) && !self.paused.contains_key(&n))
            .collect();
        let Some(&at) = self.nemesis_rng.pick(&up) else {
            return;
        };
        self.ask_for_changes(at, changes);
    }

    /// Hands `changes` to node `at` in one batch, as the operator's calls.
    pub(crate) fn ask_for_changes(&mut self, at: NodeId, changes: Vec<MembershipChange>) {
        let membership = self
            .current_membership()
            .map_or_else(String::new, |m| m.to_string());
        let mut calls = Vec::new();
        for change in changes {
            self.operator_seq += 1;
            let id = RequestId::new(OPERATOR, self.operator_seq);
            self.stats.membership_asked += 1;
            self.fault_line(|| format!("operator asks {at} for {change:?} ({membership})"));
            calls.push(ClientCall {
                id,
                waiter: SimWaiter::operator(id),
                call: Call::ChangeMembership(change),
            });
        }
        self.step(at, |replica, out| replica.submit(calls, out));
    }

    /// A change the operator may ask of `membership`, if any.
    fn pick_change(&mut self, membership: &Membership) -> Option<MembershipChange> {
        let voters = membership.voters();
        let learner = membership.members.iter().find(|m| m.learner).map(|m| m.id);
        let next = NodeId(membership.next_id);
        let down = |w: &Self, v: NodeId| !w.is_up(v) || w.node(v).dead;
        // A new voter must leave a majority up, as a careful operator checks (Raft and
        // Multi-Paxos refuse one that does not; Basic Paxos, without a leader hearing
        // everyone, cannot tell).
        let voter_fits = |w: &Self, new: NodeId| {
            let down_after = voters.iter().chain([&new]).filter(|&&v| down(w, v)).count();
            down_after <= voters.len() / 2
        };
        let mut choices: Vec<MembershipChange> = Vec::new();
        if let Some(id) = learner {
            if voter_fits(self, id) {
                choices.extend([
                    MembershipChange::Promote { id },
                    MembershipChange::Promote { id },
                ]);
            }
            choices.push(MembershipChange::Remove { id });
        } else if voters.len() < VOTERS.1 && self.spares.contains(&next) {
            let peer_urls = vec![format!("sim://{next}")];
            choices.push(MembershipChange::Add {
                peer_urls: peer_urls.clone(),
                learner: true,
            });
            if voter_fits(self, next) {
                choices.push(MembershipChange::Add {
                    peer_urls,
                    learner: false,
                });
            }
        }
        if voters.len() > VOTERS.0 {
            let id = voters[self.nemesis_rng.index(voters.len())];
            let down_after = voters.iter().filter(|&&v| v != id && down(self, v)).count();
            if down_after <= (voters.len() - 2) / 2 {
                choices.push(MembershipChange::Remove { id });
            }
        }
        self.nemesis_rng.pick(&choices).cloned()
    }

    /// The answer to an operator's change.
    pub(crate) fn operator_answer(&mut self, at: NodeId, answer: Answer) {
        match answer {
            Answer::Membership(membership) => {
                self.stats.membership_changed += 1;
                self.note_line(|| format!("operator: {at} says the membership is {membership}"));
            }
            Answer::Refused(Refusal::Membership(refusal)) => {
                self.stats.membership_refused += 1;
                self.note_line(|| format!("operator: {at} refuses the change: {refusal}"));
            }
            other => self.note_line(|| format!("operator: {at} answers {other:?}")),
        }
    }
}
