//! How a Paxos node is set up.

use synod_core::quorum::{check_members, MembersError};
use synod_core::{Membership, NodeId};
use thiserror::Error;

/// The highest node id: ids fit the low 16 bits of a ballot.
const ID_MAX: u64 = (1 << 16) - 1;

/// Settings of one Paxos node (either engine). Times are in ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every acceptor, this node included; empty for a node joining a running cluster (it
    /// learns the membership from the decided log).
    pub voters: Vec<NodeId>,
    /// The boot voters with their names and addresses, as the runtime knows them; `None`:
    /// ids only. Its voters must be `voters`.
    pub boot_membership: Option<Membership>,
    /// Multi-Paxos: a membership decided in slot `i` governs slots from `i + window` on
    /// (Lamport's alpha), so a leader that knows the decided log through `s - window` knows
    /// which acceptors decide slot `s`. It is also the most slots a leader has in flight.
    pub reconfig_window: u64,
    /// Seeds the node's PRNG (backoff, election timeouts).
    pub seed: u64,
    /// A proposer whose Prepare or Accept went unanswered this long sends it again.
    pub retry_ticks: u64,
    /// A learner missing a decided slot this long asks a peer for it (Basic Paxos then runs an
    /// instance with a no-op on a hole nobody could fill).
    pub gap_timeout_ticks: u64,
    /// Entries in one Decided or Accept message at most.
    pub batch_entries_max: usize,
    /// Bytes of commands in one Decided or Accept message at most (one command more when
    /// the message would be empty), so that large values never make a message the peer
    /// link refuses.
    pub batch_bytes_max: usize,
    /// Bytes of snapshot per chunk at most.
    pub snapshot_chunk_bytes: usize,
    /// Basic Paxos: a preempted proposer waits a random, growing number of ticks before it
    /// tries again (Paxos Made Simple, section 2.4). Off, dueling proposers can livelock.
    pub backoff: bool,
    /// Basic Paxos: the first backoff is drawn from `1..=backoff_ticks_base`, doubling after
    /// each preemption up to `backoff_ticks_max`.
    pub backoff_ticks_base: u64,
    /// Basic Paxos: the longest backoff.
    pub backoff_ticks_max: u64,
    /// Basic Paxos: slots one proposer works on at once.
    pub instances_max: usize,
    /// Multi-Paxos: shortest election timeout.
    pub election_timeout_ticks_min: u64,
    /// Multi-Paxos: election timeouts are drawn from `[min, max)`.
    pub election_timeout_ticks_max: u64,
    /// Multi-Paxos: how often the leader sends heartbeats.
    pub heartbeat_interval_ticks: u64,
    /// Multi-Paxos: bytes of commands the leader has proposed and not yet seen chosen, at
    /// most (one command more when none is in flight); later ones wait in its queue. This
    /// bounds what an acceptor holds undecided, and so its checkpoint, whatever the number
    /// of clients and the size of their values.
    pub in_flight_bytes_max: usize,
    /// Deliberately broken rules, for proving the simulator catches them.
    #[cfg(any(test, feature = "inject-bugs"))]
    pub bugs: InjectedBugs,
}

/// Rules a test may break on purpose. Each one makes Paxos unsafe.
#[cfg(any(test, feature = "inject-bugs"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// A restarted acceptor forgets the promises it made (it keeps what it accepted).
    pub forget_promises_on_restart: bool,
    /// An acceptor answers before persisting what it promised or accepted.
    pub answer_before_persisting: bool,
    /// Multi-Paxos: a leader that learns, by filling a gap, a decision that contradicts what
    /// it proposed (a higher ballot chose there) keeps leading, and its commit point tells
    /// followers that what they accepted under its ballot there is decided.
    pub lead_on_after_a_higher_decision: bool,
    /// Multi-Paxos: a leader counts every acceptance toward a slot's majority, a learner's
    /// or a member's of another membership too, not only those of the slot's voters.
    pub count_every_acceptance: bool,
    /// Basic Paxos: a proposer whose slot was compacted before it learned the slot's value
    /// proposes its command again at once, without asking whether it was chosen there.
    pub repropose_without_asking: bool,
}

impl Config {
    /// Defaults for node `id` among `voters`.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            boot_membership: None,
            reconfig_window: 512,
            seed: id.0,
            retry_ticks: 6,
            gap_timeout_ticks: 10,
            batch_entries_max: 256,
            batch_bytes_max: 1 << 20,
            snapshot_chunk_bytes: 1 << 20,
            backoff: true,
            backoff_ticks_base: 3,
            backoff_ticks_max: 60,
            instances_max: 4,
            election_timeout_ticks_min: 15,
            election_timeout_ticks_max: 30,
            heartbeat_interval_ticks: 3,
            in_flight_bytes_max: 16 << 20,
            #[cfg(any(test, feature = "inject-bugs"))]
            bugs: InjectedBugs::default(),
        }
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Ids fit the low 16 bits of a ballot; a node that joins (no voters) checks its own.
        if self.voters.is_empty() {
            check_members(self.id, &[self.id], ID_MAX)?;
        } else {
            check_members(self.id, &self.voters, ID_MAX)?;
        }
        if let Some(m) = &self.boot_membership {
            if m.voters() != self.voters || m.members.iter().any(|m| m.learner) {
                return Err(ConfigError::BootMembership);
            }
        }
        let timing_ok = self.retry_ticks > 0
            && self.gap_timeout_ticks > 0
            && self.backoff_ticks_base > 0
            && self.backoff_ticks_base <= self.backoff_ticks_max
            && self.heartbeat_interval_ticks > 0
            && self.heartbeat_interval_ticks < self.election_timeout_ticks_min
            && self.election_timeout_ticks_min < self.election_timeout_ticks_max;
        if !timing_ok {
            return Err(ConfigError::Timing);
        }
        if self.batch_entries_max == 0
            || self.batch_bytes_max == 0
            || self.snapshot_chunk_bytes == 0
            || self.instances_max == 0
            || self.reconfig_window == 0
        {
            return Err(ConfigError::Limits);
        }
        Ok(())
    }
}

/// Settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The voters are not distinct ids that fit a ballot, including this node.
    #[error(transparent)]
    Members(#[from] MembersError),
    /// Inconsistent timeouts.
    #[error("timeouts must be positive, backoff base at most its max, heartbeats below the election timeout")]
    Timing,
    /// Limits of zero.
    #[error("batch, chunk, instance and reconfiguration-window limits must be at least 1")]
    Limits,
    /// The boot membership is not the boot voters.
    #[error("the boot membership lists other members than the voters")]
    BootMembership,
}
