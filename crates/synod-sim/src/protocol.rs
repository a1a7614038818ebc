//! What the simulator needs from a protocol beyond how a replica boots it
//! ([`synod_replica::Protocol`]): which safety properties of its paper to check while it runs.

use synod_core::{Engine, NodeId};

/// A protocol the simulator can run: one that boots as a replica does, with the safety
/// properties of its paper to check while it runs.
pub trait Protocol: synod_replica::Protocol {
    /// The safety properties checked as the run goes.
    type Invariants: Invariants<Self>;

    /// Whether a write needs every member (synchronous replication). A member whose disk is
    /// damaged stays down for good, and would stop such a cluster's writes for good, by
    /// design (an operator would rebuild it, which Synod does not automate): the nemesis damages
    /// no disk under such a protocol. Torn writes and crashes still happen.
    const WRITES_NEED_EVERY_MEMBER: bool = false;
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
