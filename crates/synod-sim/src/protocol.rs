//! What the simulator needs from a protocol beyond the `Engine` contract: how to boot a node
//! from what it persisted, how to describe its messages, and which safety properties of its
//! paper to check while it runs.

use std::fmt::Debug;

use synod_core::{Engine, NodeId};

pub use synod_storage::Recovered;

/// A protocol the simulator can run.
pub trait Protocol: Engine + Sized + 'static {
    /// Its name on the command line.
    const NAME: &'static str;
    /// Settings a test may vary (for instance to inject a bug).
    type Options: Clone + Default + Send + Sync + Debug;
    /// The safety properties checked as the run goes.
    type Invariants: Invariants<Self>;

    /// A node built from what its disk holds (nothing on first boot).
    fn boot(
        id: NodeId,
        voters: &[NodeId],
        seed: u64,
        recovered: &Recovered,
        options: &Self::Options,
    ) -> Result<Self, String>;

    /// One line describing a message, for traces.
    fn describe(message: &Self::Message) -> String;

    /// Times this node's proposers were preempted by a higher ballot (Basic Paxos); engines
    /// with a stable leader report elections through their status instead.
    fn preemptions(&self) -> u64 {
        0
    }
}

/// Protocol-specific safety checks. An `Err` is a violation, described for a human.
pub trait Invariants<P: Engine>: Default {
    /// Called after every step of a live node, in its `incarnation` (bumped at each crash).
    fn after_step(&mut self, id: NodeId, incarnation: u64, engine: &P) -> Result<(), String>;
    /// Called every so often with every live node, and at the end of a run.
    fn periodic(&mut self, live: &[(NodeId, u64, &P)]) -> Result<(), String>;

    /// Called as a message leaves node `from` (after the persists before it completed).
    fn before_send(
        &mut self,
        _from: NodeId,
        _message: &P::Message,
        _engine: &P,
    ) -> Result<(), String> {
        Ok(())
    }
}
