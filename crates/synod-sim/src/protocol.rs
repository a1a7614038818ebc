//! What the simulator needs from a protocol beyond the `Engine` contract: how to boot a node
//! from what it persisted, how to describe its messages, and which safety properties of its
//! paper to check while it runs.

use std::fmt::Debug;

use synod_core::{Engine, Entry, NodeId, Persist};

/// The state one node has made durable: all a restarted node gets back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// The engine's hard state, as last written.
    pub hard_state: Option<Vec<u8>>,
    /// The persisted log.
    pub entries: Vec<Entry>,
}

impl Durable {
    /// Applies one completed persist, in the order the contract gives: hard state, then
    /// truncation, then append.
    pub fn apply(&mut self, persist: &Persist) {
        if let Some(hard_state) = &persist.hard_state {
            self.hard_state = Some(hard_state.clone());
        }
        if let Some(from) = persist.truncate_from {
            self.entries.truncate(from.saturating_sub(1) as usize);
        }
        if let Some(first) = persist.entries.first() {
            assert_eq!(
                first.index,
                self.entries.len() as u64 + 1,
                "persisted entries must extend the log without a gap"
            );
        }
        self.entries.extend(persist.entries.iter().cloned());
    }
}

/// A protocol the simulator can run.
pub trait Protocol: Engine + Sized + 'static {
    /// Its name on the command line.
    const NAME: &'static str;
    /// Settings a test may vary (for instance to inject a bug).
    type Options: Clone + Default + Send + Sync + Debug;
    /// The safety properties checked as the run goes.
    type Invariants: Invariants<Self>;

    /// A node built from its durable state (empty on first boot).
    fn boot(
        id: NodeId,
        voters: &[NodeId],
        seed: u64,
        durable: &Durable,
        options: &Self::Options,
    ) -> Result<Self, String>;

    /// One line describing a message, for traces.
    fn describe(message: &Self::Message) -> String;
}

/// Protocol-specific safety checks. An `Err` is a violation, described for a human.
pub trait Invariants<P>: Default {
    /// Called after every step of a live node.
    fn after_step(&mut self, id: NodeId, engine: &P) -> Result<(), String>;
    /// Called every so often with every live node, and at the end of a run.
    fn periodic(&mut self, live: &[(NodeId, u64, &P)]) -> Result<(), String>;
}
