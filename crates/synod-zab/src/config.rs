//! How a ZAB node is set up.

use synod_core::quorum::{check_members, MembersError};
use synod_core::{Membership, NodeId};
use thiserror::Error;

/// Settings of one ZAB node. Times are in ticks; the runtime decides how long a tick is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every voting member at boot, this node included; empty for a node that joins a
    /// running cluster and learns the membership from the leader's history or snapshot.
    /// Once the history or a snapshot holds a membership, that one rules.
    pub voters: Vec<NodeId>,
    /// The boot members with their names and addresses, if the runtime knows them (else
    /// `voters`, ids only).
    pub boot_membership: Option<Membership>,
    /// Seeds the node's PRNG (randomized session timeouts).
    pub seed: u64,
    /// The session timeout: a follower that has heard nothing from its leader for this long
    /// (drawn from `[min, max)` at each reset) goes back to election; a leader that has not
    /// heard pings from a quorum within `min` abdicates.
    pub session_timeout_ticks_min: u64,
    /// See `session_timeout_ticks_min`.
    pub session_timeout_ticks_max: u64,
    /// How often a follower pings its leader (and a looking node repeats its vote).
    pub ping_interval_ticks: u64,
    /// A message that expects an answer (a proposal, a snapshot chunk, a step of discovery
    /// or synchronization) is sent again after this long without one.
    pub retry_ticks: u64,
    /// Entries in one Proposal at most.
    pub proposal_entries_max: usize,
    /// Bytes of entries in one Proposal at most (one entry is always allowed).
    pub proposal_bytes_max: usize,
    /// Bytes of snapshot in one Snap chunk at most.
    pub snapshot_chunk_bytes: usize,
    /// Deliberately broken rules, for proving that tests and the simulator catch them.
    #[cfg(any(test, feature = "inject-bugs"))]
    pub bugs: InjectedBugs,
}

/// Rules a test may break on purpose. Each one makes ZAB unsafe.
#[cfg(any(test, feature = "inject-bugs"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// The leader skips synchronization: it sends NewLeader at once, and a follower takes
    /// the epoch with whatever history it has (breaks phase 2: the epoch's initial history
    /// counts as committed on a quorum that does not hold it).
    pub skip_synchronization: bool,
    /// The leader counts every follower in broadcast toward a commit quorum, learners and
    /// members being removed included (breaks the rule that only the voters in force make a
    /// quorum: a transaction commits that no majority of voters holds).
    pub count_every_follower: bool,
}

impl Config {
    /// Defaults for node `id` of a cluster of `voters`: session timeouts of 15 to 30 ticks
    /// and pings every 3 (150-300 ms and 30 ms with 10 ms ticks, Raft's figures, so the two
    /// compare on equal terms).
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            boot_membership: None,
            seed: id.0,
            session_timeout_ticks_min: 15,
            session_timeout_ticks_max: 30,
            ping_interval_ticks: 3,
            retry_ticks: 6,
            proposal_entries_max: 256,
            proposal_bytes_max: 1 << 20,
            snapshot_chunk_bytes: 1 << 20,
            #[cfg(any(test, feature = "inject-bugs"))]
            bugs: InjectedBugs::default(),
        }
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.voters.is_empty() {
            check_members(self.id, &self.voters, u64::MAX)?;
        }
        if let Some(m) = &self.boot_membership {
            if m.voters() != self.voters || m.members.iter().any(|m| m.learner) {
                return Err(ConfigError::BootMembership);
            }
        }
        if self.ping_interval_ticks == 0
            || self.ping_interval_ticks >= self.session_timeout_ticks_min
        {
            return Err(ConfigError::Timing(
                "ping interval must be at least 1 tick and below the session timeout",
            ));
        }
        if self.session_timeout_ticks_min >= self.session_timeout_ticks_max {
            return Err(ConfigError::Timing("session timeout min must be below max"));
        }
        if self.retry_ticks == 0 {
            return Err(ConfigError::Timing(
                "the retry timeout must be at least 1 tick",
            ));
        }
        if self.proposal_entries_max == 0 || self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::Limits);
        }
        Ok(())
    }
}

/// Settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The voters are not distinct ids from 1 including this node.
    #[error(transparent)]
    Members(#[from] MembersError),
    /// The boot membership is not the boot voters.
    #[error("the boot membership lists other members than the voters")]
    BootMembership,
    /// Inconsistent timeouts.
    #[error("bad timing: {0}")]
    Timing(&'static str),
    /// Batching limits of zero.
    #[error("batch and snapshot chunk limits must be at least 1")]
    Limits,
}
