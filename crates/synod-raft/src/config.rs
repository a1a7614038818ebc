//! How a Raft node is set up.

use synod_core::quorum::{check_members, MembersError};
use synod_core::{Membership, NodeId};
use thiserror::Error;

/// Settings of one Raft node. Times are in ticks; the runtime decides how long a tick is
/// (10 ms in `synod server` by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every voting member at boot, this node included; empty for a node that joins a running
    /// cluster and learns the membership from the leader's log or snapshot. Once the log or
    /// a snapshot holds a membership, that one rules.
    pub voters: Vec<NodeId>,
    /// The boot voters with their names and addresses, as the runtime knows them; `None`:
    /// ids only. Its voters must be `voters`.
    pub boot_membership: Option<Membership>,
    /// Seeds the node's PRNG (randomized election timeouts).
    pub seed: u64,
    /// Shortest election timeout. A follower that heard from a leader more recently than
    /// this ignores vote requests (thesis 4.2.3), and a leader checks its quorum this often.
    pub election_timeout_ticks_min: u64,
    /// Election timeouts are drawn uniformly from `[min, max)` (paper 5.2).
    pub election_timeout_ticks_max: u64,
    /// How often a leader sends heartbeats.
    pub heartbeat_interval_ticks: u64,
    /// A leader resends to a follower whose oldest unacknowledged append is this old.
    pub append_retry_ticks: u64,
    /// Appends in flight to one follower before the leader waits for acknowledgements.
    pub inflight_appends_max: usize,
    /// Entries in one AppendEntries at most.
    pub append_entries_max: usize,
    /// Bytes of entries in one AppendEntries at most (one entry is always allowed).
    pub append_bytes_max: usize,
    /// Bytes of snapshot in one InstallSnapshot chunk at most.
    pub snapshot_chunk_bytes: usize,
    /// A leadership transfer that has not completed after this long is abandoned.
    pub transfer_timeout_ticks: u64,
    /// Ask before campaigning (thesis 9.6), so a node that cannot win does not disrupt.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum for an election timeout
    /// (thesis 6.2), and followers ignore vote requests while they hear from a leader.
    pub check_quorum: bool,
    /// Deliberately broken rules, for proving that tests and the simulator catch them.
    #[cfg(any(test, feature = "inject-bugs"))]
    pub bugs: InjectedBugs,
}

/// Rules a test may break on purpose. Each one makes Raft unsafe.
#[cfg(any(test, feature = "inject-bugs"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// Commit by counting replicas of any entry, not only current-term ones (breaks 5.4.2).
    pub commit_entries_of_earlier_terms: bool,
    /// A follower grants its vote to every candidate with an up-to-date log, even after
    /// voting in the term (breaks 5.2).
    pub vote_twice_in_a_term: bool,
    /// A leader answers linearizable reads at once, without confirming with a quorum that it
    /// still leads (breaks thesis 6.4: a deposed leader serves stale reads).
    pub read_without_confirmation: bool,
    /// A leader starts a membership change while another is uncommitted, or before an
    /// entry of its own term committed (breaks thesis 4.1 and its 2015 erratum).
    pub change_membership_while_pending: bool,
}

impl Config {
    /// Defaults for node `id` of a cluster of `voters`: election timeouts of 15 to 30 ticks
    /// and heartbeats every 3 (150-300 ms and 30 ms with 10 ms ticks, as the paper suggests).
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            boot_membership: None,
            seed: id.0,
            election_timeout_ticks_min: 15,
            election_timeout_ticks_max: 30,
            heartbeat_interval_ticks: 3,
            append_retry_ticks: 6,
            inflight_appends_max: 32,
            append_entries_max: 256,
            append_bytes_max: 1 << 20,
            snapshot_chunk_bytes: 1 << 20,
            transfer_timeout_ticks: 15,
            pre_vote: true,
            check_quorum: true,
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
        if self.heartbeat_interval_ticks == 0
            || self.heartbeat_interval_ticks >= self.election_timeout_ticks_min
        {
            return Err(ConfigError::Timing(
                "heartbeat interval must be at least 1 tick and below the election timeout",
            ));
        }
        if self.election_timeout_ticks_min >= self.election_timeout_ticks_max {
            return Err(ConfigError::Timing(
                "election timeout min must be below max",
            ));
        }
        if self.append_retry_ticks == 0 || self.transfer_timeout_ticks == 0 {
            return Err(ConfigError::Timing(
                "retry and transfer timeouts must be at least 1 tick",
            ));
        }
        if self.inflight_appends_max == 0
            || self.append_entries_max == 0
            || self.snapshot_chunk_bytes == 0
        {
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
    /// Inconsistent timeouts.
    #[error("bad timing: {0}")]
    Timing(&'static str),
    /// The boot membership is not the boot voters.
    #[error("the boot membership lists other members than the voters")]
    BootMembership,
    /// Batching limits of zero.
    #[error("inflight, batch and snapshot chunk limits must be at least 1")]
    Limits,
}
