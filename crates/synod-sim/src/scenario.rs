//! A small vocabulary for writing fault scenarios by hand, on the same world the seed sweeps
//! use: start a cluster and clients, then `isolate`, `partition`, `heal`, `crash`,
//! `restart`, `run_ticks`, `run_until_leader`, and finally `assert_linearizable`.
//!
//! A scenario has no nemesis and a perfect network unless the test breaks something itself;
//! every safety property is still checked at every step.

use synod_core::{Membership, MembershipChange, NodeId, Role, Status};

use crate::faults::FaultSet;
use crate::protocol::Protocol;
use crate::report::Violation;
use crate::run::RunConfig;
use crate::world::World;
use crate::TICK_US;

/// A cluster under a test's control.
pub struct Scenario<P: Protocol> {
    world: World<P>,
}

impl<P: Protocol> Scenario<P> {
    /// A healthy cluster of `nodes`, with the protocol's default options.
    pub fn new(nodes: usize, seed: u64) -> Scenario<P> {
        Scenario::with_options(nodes, seed, P::Options::default())
    }

    /// A healthy cluster of `nodes`, with `options`.
    pub fn with_options(nodes: usize, seed: u64, options: P::Options) -> Scenario<P> {
        let mut config = RunConfig::new(seed, nodes);
        config.faults = FaultSet::NONE;
        Scenario {
            world: World::new(config, options),
        }
    }

    /// A healthy cluster of `nodes` and two spare nodes that know no membership, for the
    /// test to add with [`Scenario::change_membership`] (numbered after the members).
    pub fn with_spares(nodes: usize, seed: u64, options: P::Options) -> Scenario<P> {
        let mut config = RunConfig::new(seed, nodes);
        config.faults = FaultSet {
            membership: true,
            ..FaultSet::NONE
        };
        let mut world = World::new(config, options);
        // Spares are no fault: only the test breaks things.
        world.fault_free = true;
        Scenario { world }
    }

    /// The spare nodes, which boot knowing no membership.
    pub fn spares(&self) -> Vec<NodeId> {
        self.world.spares.clone()
    }

    /// The operator asks node `at` for `changes` in one batch, as a hasty script would; the
    /// answers come when each change applies (or is refused).
    pub fn change_membership(&mut self, at: NodeId, changes: Vec<MembershipChange>) -> &mut Self {
        self.world.ask_for_changes(at, changes);
        self
    }

    /// The membership a live node runs with, if it is up and its protocol has one.
    pub fn membership(&self, node: NodeId) -> Option<Membership> {
        self.world.node(node).engine()?.membership().cloned()
    }

    /// Membership changes asked, applied and refused so far.
    pub fn membership_changes(&self) -> (u64, u64, u64) {
        let s = &self.world.stats;
        (
            s.membership_asked,
            s.membership_changed,
            s.membership_refused,
        )
    }

    /// Starts `count` more clients doing random reads, writes and compare-and-swaps.
    pub fn clients(&mut self, count: usize) -> &mut Self {
        self.world.add_clients(count);
        self
    }

    /// Advances virtual time by `ticks`.
    pub fn run_ticks(&mut self, ticks: u64) -> &mut Self {
        let until = self.world.now + ticks * TICK_US;
        self.world.run_until(until);
        self.assert_no_violation();
        self
    }

    /// Advances virtual time by `ticks`, or to the first violation, which the caller then
    /// inspects with [`Scenario::violation`]: for scenarios that show a broken rule caught.
    pub fn run_ticks_to_violation(&mut self, ticks: u64) -> &mut Self {
        let until = self.world.now + ticks * TICK_US;
        self.world.run_until(until);
        self
    }

    /// Runs until some live node leads, and returns it; panics after 1,000 ticks.
    pub fn run_until_leader(&mut self) -> NodeId {
        for _ in 0..1_000 {
            if let Some(leader) = self.leader() {
                return leader;
            }
            self.run_ticks(1);
        }
        panic!("no leader after 1,000 ticks");
    }

    /// The live node that leads the highest era, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.world
            .nodes
            .iter()
            .filter_map(|n| n.engine().map(|e| e.status()))
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.era)
            .map(|s| s.id)
    }

    /// What a live node believes, or `None` if it is down.
    pub fn status(&self, node: NodeId) -> Option<Status> {
        self.world.node(node).engine().map(|e| e.status())
    }

    /// Cuts `node` off from every other node, both ways. Clients still reach it.
    pub fn isolate(&mut self, node: NodeId) -> &mut Self {
        let others: Vec<NodeId> = self
            .world
            .voters
            .iter()
            .copied()
            .filter(|&n| n != node)
            .collect();
        self.world.fault_free = false;
        self.world.network.cut(&[node], &others);
        self
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) -> &mut Self {
        self.world.fault_free = false;
        self.world.network.cut(a, b);
        self
    }

    /// Restores every link.
    pub fn heal(&mut self) -> &mut Self {
        self.world.network.blocked.clear();
        self
    }

    /// Crashes a node: it loses everything it had not persisted.
    pub fn crash(&mut self, node: NodeId) -> &mut Self {
        self.world.fault_free = false;
        self.world.crash(node);
        self
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, node: NodeId) -> &mut Self {
        self.world.restart(node);
        self
    }

    /// An operator tells member `at` to move the leadership to `to` (etcd's MoveLeader; the
    /// failover command of synchronous primary-backup).
    pub fn move_leader(&mut self, at: NodeId, to: NodeId) -> &mut Self {
        self.world
            .step(at, |replica, out| replica.transfer_leadership(to, out));
        self
    }

    /// Client writes committed so far.
    pub fn committed_writes(&self) -> u64 {
        self.world.stats.committed_commands
    }

    /// Client operations answered so far.
    pub fn completed_operations(&self) -> u64 {
        self.world.stats.completed
    }

    /// Panics with the first violation, if any property broke.
    pub fn assert_no_violation(&self) {
        if let Some(v) = &self.world.violation {
            panic!("{v}");
        }
    }

    /// The first violation, if any property broke.
    pub fn violation(&self) -> Option<&Violation> {
        self.world.violation.as_ref()
    }

    /// Stops the clients, heals the network, restarts every node, lets the cluster settle,
    /// then checks every invariant, that all replicas hold the same state, and that the
    /// clients' history is linearizable.
    pub fn assert_linearizable(&mut self) {
        self.world.stop_clients();
        self.world.heal_everything();
        self.run_ticks(400);
        self.world.final_checks();
        self.assert_no_violation();
    }
}
