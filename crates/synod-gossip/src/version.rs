//! Versions of values: a hybrid logical clock and the node that wrote, in one `u64`.

use std::fmt;

use synod_core::NodeId;

/// Clocks at or above this are not believed (2^35 ticks of physical time: ten years of 10 ms
/// ticks): a version from a peer that claims one is dropped, so a corrupt one cannot push
/// every clock to where `clock << 12` overflows.
pub const CLOCK_MAX: u64 = 1 << 51;

/// The largest node id a version can name (12 bits).
pub const NODE_ID_MAX: u64 = (1 << NODE_BITS) - 1;

const NODE_BITS: u32 = 12;
const LOGICAL_BITS: u32 = 16;

/// When a value was written and by whom: `(clock, node)` packed as `clock << 12 | node`,
/// where the clock is a hybrid logical clock, `physical << 16 | logical`. Versions order
/// totally, by clock and then by node, so two replicas that hold the same set of versions of
/// a key pick the same winner (last writer wins). No two writes share a version: a node's
/// clock only moves forward, and the node id tells nodes apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

impl Version {
    /// Older than every write.
    pub const ZERO: Version = Version(0);

    /// The version of a write made at `clock` by `node`.
    pub fn new(clock: u64, node: NodeId) -> Version {
        Version(clock << NODE_BITS | (node.0 & NODE_ID_MAX))
    }

    /// The hybrid logical clock reading.
    pub fn clock(self) -> u64 {
        self.0 >> NODE_BITS
    }

    /// The node that wrote.
    pub fn node(self) -> NodeId {
        NodeId(self.0 & NODE_ID_MAX)
    }

    /// The physical part of the clock, in ticks.
    pub fn physical(self) -> u64 {
        self.clock() >> LOGICAL_BITS
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let logical = self.clock() & ((1 << LOGICAL_BITS) - 1);
        write!(f, "{}.{}@{}", self.physical(), logical, self.node())
    }
}

/// A hybrid logical clock (Kulkarni et al., 2014) over the engine's ticks. Engines read no
/// wall clock, so the physical part is ticks since boot plus the physical time of the newest
/// version the node had seen when it booted: a node that restarts, or hears from its peers,
/// never issues a version below one it has seen, and clocks of nodes that talk stay within
/// about a message delay of each other.
#[derive(Clone, Debug)]
pub struct Hlc {
    /// `physical << 16 | logical` of the last reading or observation.
    last: u64,
    /// Physical ticks at boot.
    base: u64,
}

impl Hlc {
    /// A clock that starts above `seen`, the newest version found on disk.
    pub fn new(seen: Version) -> Hlc {
        Hlc {
            last: seen.clock(),
            base: seen.physical(),
        }
    }

    /// A reading for a new write at `ticks` since boot: above every earlier reading and
    /// observation.
    pub fn now(&mut self, ticks: u64) -> u64 {
        let physical = (self.base + ticks) << LOGICAL_BITS;
        // A logical part that overflows carries into the physical: still increasing.
        self.last = (self.last + 1).max(physical);
        self.last
    }

    /// Takes in a version another node made, so later readings are above it.
    pub fn observe(&mut self, version: Version) {
        self.observe_clock(version.clock());
    }

    /// Takes in another node's clock reading (members exchange them on every probe, so
    /// their clocks stay within about a probe period of the fastest).
    pub fn observe_clock(&mut self, clock: u64) {
        if clock < CLOCK_MAX {
            self.last = self.last.max(clock);
        }
    }

    /// The clock at `ticks` since boot, without issuing a reading.
    pub fn peek(&self, ticks: u64) -> u64 {
        self.last.max((self.base + ticks) << LOGICAL_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_clock_then_node_and_unpack() {
        let a = Version::new(5 << 16, NodeId(7));
        let b = Version::new(5 << 16, NodeId(9));
        let c = Version::new((5 << 16) + 1, NodeId(1));
        assert!(a < b && b < c);
        assert_eq!((a.physical(), a.node()), (5, NodeId(7)));
        assert_eq!(c.to_string(), "5.1@n1");
    }

    #[test]
    fn the_clock_never_goes_back_and_passes_what_it_observes() {
        let mut clock = Hlc::new(Version::ZERO);
        let first = clock.now(10);
        assert_eq!(first, 10 << 16);
        // The same tick: the logical part moves.
        assert_eq!(clock.now(10), first + 1);
        clock.observe(Version::new(50 << 16, NodeId(2)));
        assert!(clock.now(11) > 50 << 16);
        // After a restart, above what was on disk even at tick 0.
        let mut restarted = Hlc::new(Version::new(50 << 16, NodeId(2)));
        assert!(restarted.now(0) > 50 << 16);
    }
}
