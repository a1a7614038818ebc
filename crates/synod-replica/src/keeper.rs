//! Who keeps the lease clocks under a protocol without a leader.
//!
//! Under Raft and Multi-Paxos the leader keeps them, in the era it leads. Under Basic Paxos
//! every node proposes and none leads, so the keeper is chosen through the log: a node claims
//! the clocks by proposing a lease epoch whose era names it, and keeps them while that epoch
//! is the newest one applied (the store keeps the highest era it has applied). Everything
//! else is as under a leader: a keep-alive is answered after a linearizable read round that
//! finds the keeper's epoch still the newest, expiries are bound to the epoch, and a new
//! keeper starts every clock at TTL plus an election timeout.
//!
//! Claiming is only about liveness. The keeper tells the other members it is alive; a member
//! that has not heard from it for a while claims the clocks itself. Two claims that race are
//! both decided, and the higher era wins. Members answer the keeper's pings; a keeper that
//! stops hearing those answers from a quorum stops pinging, so a keeper whose messages still
//! go out but whose answers do not come back (a one-way cut) is replaced. Its read rounds
//! cannot reach a quorum meanwhile, and once the newer epoch applies its expiries are void.

use std::collections::BTreeMap;

use synod_core::NodeId;

/// The low bits of a keeper's era name the keeper; the high bits count claims.
const KEEPER_BITS: u32 = 32;

/// Whether `id` can keep lease clocks (it must fit in an era's keeper bits). A member that
/// cannot is refused at configuration.
pub fn can_keep(id: NodeId) -> bool {
    id.0 != 0 && id.0 < 1 << KEEPER_BITS
}

/// The node a lease epoch names as keeper (none before the first claim).
pub(crate) fn keeper_of(era: u64) -> Option<NodeId> {
    (era != 0).then_some(NodeId(era & ((1 << KEEPER_BITS) - 1)))
}

/// The era `me` claims the clocks with, over the newest epoch it has applied: above every
/// claim so far, and unlike any other node's.
pub(crate) fn claim(newest: u64, me: NodeId) -> u64 {
    (((newest >> KEEPER_BITS) + 1) << KEEPER_BITS) | me.0
}

/// A member's watch on the keeper, in ticks of its own clock (a paused process counts none,
/// so it does not claim the moment it resumes, before reading what arrived meanwhile).
#[derive(Debug)]
pub(crate) struct KeeperWatch {
    /// The tick at which the keeper was last heard from (or this node claimed).
    heard: u64,
    /// The keeper says it is alive every this many ticks.
    alive_every: u64,
    /// A member claims after this many ticks without a word from the keeper. Staggered by
    /// node id, so that members do not all claim at once.
    claim_after: u64,
    /// The same, while no keeper was ever chosen (a new cluster): sooner, as there is no
    /// keeper whose pings could be late.
    first_claim_after: u64,
    /// While this node keeps the clocks: the era, the tick it first pinged in it, and per
    /// member the tick that member last said it heard the pings.
    keeping: Option<(u64, u64)>,
    heard_by: BTreeMap<NodeId, u64>,
    /// A keeper pings on while some quorum said it heard it within this many ticks.
    heard_within: u64,
}

impl KeeperWatch {
    pub(crate) fn new(me: NodeId, election_ticks: u64) -> KeeperWatch {
        let election_ticks = election_ticks.max(1);
        KeeperWatch {
            heard: 0,
            alive_every: (election_ticks / 4).max(1),
            claim_after: 2 * election_ticks + (me.0 % 4) * election_ticks / 2,
            first_claim_after: election_ticks / 2 + (me.0 % 4) * election_ticks / 4,
            keeping: None,
            heard_by: BTreeMap::new(),
            heard_within: 2 * election_ticks,
        }
    }

    /// `member` said at `tick` that it heard this node keep the clocks in `era`.
    pub(crate) fn heard_by(&mut self, member: NodeId, era: u64, tick: u64) {
        if self.keeping.is_some_and(|(kept, _)| kept == era) {
            self.heard_by.insert(member, tick);
        }
    }

    /// Whether this node, keeping the clocks in `era`, should go on pinging at `tick`: a
    /// quorum of `quorum` (itself included) heard it lately, or it began keeping them only a
    /// moment ago.
    pub(crate) fn heard_by_quorum(&mut self, era: u64, tick: u64, quorum: usize) -> bool {
        if self.keeping.is_none_or(|(kept, _)| kept != era) {
            self.keeping = Some((era, tick));
            self.heard_by.clear();
        }
        let since = self.keeping.map_or(tick, |(_, since)| since);
        if tick.saturating_sub(since) < self.heard_within {
            return true;
        }
        let recent = self
            .heard_by
            .values()
            .filter(|&&at| tick.saturating_sub(at) < self.heard_within)
            .count();
        recent + 1 >= quorum
    }

    /// The keeper was heard from (or this node is the keeper) at `tick`.
    pub(crate) fn heard(&mut self, tick: u64) {
        self.heard = self.heard.max(tick);
    }

    /// Whether the keeper says it is alive at `tick`.
    pub(crate) fn alive_due(&self, tick: u64) -> bool {
        tick.is_multiple_of(self.alive_every)
    }

    /// Whether a member should claim at `tick`, having heard nothing from the keeper (or
    /// of one, if `keeper_known` is false) since the last time; if so, it waits as long again
    /// before claiming anew (its claim may lose, or take a while to be decided).
    pub(crate) fn claim_due(&mut self, tick: u64, keeper_known: bool) -> bool {
        let wait = if keeper_known {
            self.claim_after
        } else {
            self.first_claim_after
        };
        if tick.saturating_sub(self.heard) < wait {
            return false;
        }
        self.heard = tick;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_outranks_every_epoch_before_it_and_names_its_node() {
        let first = claim(0, NodeId(3));
        assert_eq!(keeper_of(first), Some(NodeId(3)));
        let second = claim(first, NodeId(1));
        assert!(second > first);
        assert_eq!(keeper_of(second), Some(NodeId(1)));
        // Two claims over the same epoch differ, and the higher id wins the race.
        assert!(claim(first, NodeId(2)) > claim(first, NodeId(1)));
        assert_eq!(keeper_of(0), None);
        assert!(!can_keep(NodeId(1 << 32)));
        assert!(can_keep(NodeId(u32::MAX as u64)));
    }

    #[test]
    fn a_member_claims_only_after_a_silence_and_then_waits_again() {
        let mut watch = KeeperWatch::new(NodeId(1), 10);
        assert_eq!(watch.claim_after, 25);
        watch.heard(100);
        assert!(!watch.claim_due(124, true));
        assert!(watch.claim_due(125, true));
        assert!(!watch.claim_due(126, true), "a claim resets the wait");
        assert!(watch.claim_due(150, true));
        // No keeper yet: a new cluster chooses one sooner.
        let mut fresh = KeeperWatch::new(NodeId(1), 10);
        assert!(!fresh.claim_due(6, false));
        assert!(fresh.claim_due(7, false));
        assert!(watch.alive_due(20) && !watch.alive_due(21));
    }

    #[test]
    fn a_keeper_that_no_quorum_hears_falls_silent_after_a_grace() {
        // Five members: a quorum is three, the keeper and two more.
        let mut watch = KeeperWatch::new(NodeId(1), 10);
        assert!(
            watch.heard_by_quorum(7, 100, 3),
            "a new keeper pings at once"
        );
        assert!(watch.heard_by_quorum(7, 119, 3));
        watch.heard_by(NodeId(2), 7, 110);
        assert!(
            !watch.heard_by_quorum(7, 120, 3),
            "one member alone is no quorum"
        );
        watch.heard_by(NodeId(3), 7, 115);
        assert!(watch.heard_by_quorum(7, 120, 3));
        assert!(
            !watch.heard_by_quorum(7, 130, 3),
            "member 2 said nothing for 20 ticks"
        );
        watch.heard_by(NodeId(4), 6, 129);
        assert!(
            !watch.heard_by_quorum(7, 130, 3),
            "answers about another era do not count"
        );
        // A new era starts a new grace.
        assert!(watch.heard_by_quorum(8, 131, 3));
    }
}
