//! The simulated network: latency, loss, duplication, reordering and partitions.

use std::collections::{BTreeMap, BTreeSet};

use synod_core::{NodeId, Rng};

use crate::faults::FaultSet;
use crate::SimTime;

/// Link behaviour for one run, drawn from its seed.
#[derive(Clone, Debug)]
pub struct Network {
    /// Directed links that deliver nothing (partitions).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Slow directed links (a congested path, a retransmitting TCP connection): what they
    /// carry takes this much longer, every message alike, on top of the usual latency.
    pub slow: BTreeMap<(NodeId, NodeId), SimTime>,
    /// Chance that a message is lost.
    pub drop_rate: f64,
    /// Chance that a message arrives twice.
    pub duplicate_rate: f64,
    /// Chance that a message is delayed far beyond the usual latency.
    pub spike_rate: f64,
    /// Usual one-way latency bounds, in microseconds.
    pub latency_us: (SimTime, SimTime),
    /// Longest latency spike, in microseconds.
    pub spike_us_max: SimTime,
}

impl Network {
    /// A network with the faults of `faults` at rates drawn from `rng`.
    pub fn new(rng: &mut Rng, faults: FaultSet) -> Network {
        Network {
            blocked: BTreeSet::new(),
            slow: BTreeMap::new(),
            drop_rate: if faults.drop { rng.unit() * 0.10 } else { 0.0 },
            duplicate_rate: if faults.duplicate {
                rng.unit() * 0.05
            } else {
                0.0
            },
            spike_rate: if faults.delay { rng.unit() * 0.10 } else { 0.0 },
            latency_us: (100, 2_000),
            spike_us_max: 60_000,
        }
    }

    /// A healthy network: usual latency, nothing lost, duplicated or cut.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.slow.clear();
        self.drop_rate = 0.0;
        self.duplicate_rate = 0.0;
        self.spike_rate = 0.0;
    }

    /// Whether `from` can currently reach `to`.
    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        !self.blocked.contains(&(from, to))
    }

    /// The delays after which copies of one message arrive: none if it is lost, two if it
    /// is duplicated.
    pub fn deliveries(&self, rng: &mut Rng) -> Deliveries {
        self.deliveries_slowed(0, rng)
    }

    /// As [`Network::deliveries`], on the link from `from` to `to`, which may be slow.
    pub fn deliveries_on(&self, from: NodeId, to: NodeId, rng: &mut Rng) -> Deliveries {
        let slow = self.slow.get(&(from, to)).copied().unwrap_or(0);
        self.deliveries_slowed(slow, rng)
    }

    fn deliveries_slowed(&self, slow: SimTime, rng: &mut Rng) -> Deliveries {
        if rng.chance(self.drop_rate) {
            return Deliveries::default();
        }
        let mut out = Deliveries::default();
        out.push(slow + self.latency(rng));
        if rng.chance(self.duplicate_rate) {
            out.push(slow + self.latency(rng));
        }
        out
    }

    fn latency(&self, rng: &mut Rng) -> SimTime {
        let (low, high) = self.latency_us;
        let base = rng.range_inclusive(low, high);
        if rng.chance(self.spike_rate) {
            base + rng.range_inclusive(0, self.spike_us_max)
        } else {
            base
        }
    }

    /// Cuts every link between `a` and `b`, both ways.
    pub fn cut(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }
}

/// Up to two delivery delays, without allocating.
#[derive(Clone, Copy, Debug, Default)]
pub struct Deliveries {
    delays: [SimTime; 2],
    count: usize,
}

impl Deliveries {
    fn push(&mut self, delay: SimTime) {
        self.delays[self.count] = delay;
        self.count += 1;
    }

    /// The delays.
    pub fn iter(&self) -> impl Iterator<Item = SimTime> + '_ {
        self.delays[..self.count].iter().copied()
    }
}
