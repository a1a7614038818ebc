//! Ballots (Lamport's proposal numbers): totally ordered, and unique per proposer because the
//! proposer's id breaks ties between equal rounds.

use std::fmt;

use synod_core::NodeId;

/// A ballot: a round chosen by a proposer, with the proposer's id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    /// Grows with every attempt.
    pub round: u64,
    /// Who proposes with it; makes ballots of different proposers distinct.
    pub node: NodeId,
}

/// Node ids stay below this so a ballot fits the `era` of an entry.
const NODE_BITS: u32 = 16;

impl Ballot {
    /// Below every real ballot.
    pub const ZERO: Ballot = Ballot {
        round: 0,
        node: NodeId(0),
    };

    /// Above every real ballot: what a promise reports a slot it knows decided under. A
    /// decided value is the one any proposer must choose there, whatever was accepted under
    /// any ballot; and the ballot a node stamped on a decision it learned (the leader's that
    /// told it) may be below the one that decided it, and below a value accepted meanwhile.
    pub const DECIDED: Ballot = Ballot {
        round: u64::MAX >> NODE_BITS,
        node: NodeId((1 << NODE_BITS) - 1),
    };

    /// The ballot as one number that orders the same way: an entry's `era`.
    pub fn era(self) -> u64 {
        (self.round << NODE_BITS) | self.node.0
    }

    /// The ballot an `era` encodes.
    pub fn from_era(era: u64) -> Ballot {
        Ballot {
            round: era >> NODE_BITS,
            node: NodeId(era & ((1 << NODE_BITS) - 1)),
        }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballots_order_by_round_then_node_and_survive_the_era_encoding() {
        let a = Ballot {
            round: 3,
            node: NodeId(2),
        };
        let b = Ballot {
            round: 3,
            node: NodeId(5),
        };
        let c = Ballot {
            round: 4,
            node: NodeId(1),
        };
        assert!(a < b && b < c && Ballot::ZERO < a);
        assert!(a.era() < b.era() && b.era() < c.era());
        let highest_real = Ballot::from_era(u64::MAX - 1);
        assert!(c < Ballot::DECIDED && highest_real < Ballot::DECIDED);
        assert_eq!(Ballot::DECIDED.era(), u64::MAX);
        for ballot in [a, b, c, Ballot::ZERO, Ballot::DECIDED] {
            assert_eq!(Ballot::from_era(ballot.era()), ballot);
        }
    }
}
