//! How a primary-backup node is set up.

use synod_core::quorum::{check_members, MembersError};
use synod_core::{Membership, NodeId};
use thiserror::Error;

/// Settings of one node. Times are in ticks; the runtime decides how long a tick is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every member the cluster boots with, this node included; empty for a node that joins
    /// a running cluster, which learns the membership from its primary's history or snapshot.
    /// Once the history or a snapshot holds a membership, that one rules.
    pub voters: Vec<NodeId>,
    /// The boot members with their names and addresses (the voters' ids), if the runtime has
    /// them.
    pub boot_membership: Option<Membership>,
    /// Bytes of snapshot in one Snap chunk at most.
    pub snapshot_chunk_bytes: usize,
    /// How often the primary sends each backup the commit point (and a read round), when it
    /// has nothing else to send.
    pub heartbeat_ticks: u64,
    /// Entries are sent again after this long without an acknowledgement.
    pub retry_ticks: u64,
    /// Entries in one Replicate at most.
    pub batch_entries_max: usize,
    /// Bytes of entries in one Replicate at most (one entry is always allowed).
    pub batch_bytes_max: usize,
    /// Deliberately broken rules, for proving that tests and the simulator catch them.
    #[cfg(any(test, feature = "inject-bugs"))]
    pub bugs: InjectedBugs,
}

/// Rules a test may break on purpose.
#[cfg(any(test, feature = "inject-bugs"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// Fail over without an operator, after this many ticks of silence (0: never): a backup
    /// that has not heard its primary for that long makes itself primary of a new view, and a
    /// primary stops waiting for a backup it has not heard for that long. Available under a
    /// partition, and split-brained: both sides acknowledge writes.
    pub automatic_failover_ticks: u64,
    /// Commit on the voters of the membership as of the commit point, not on those in force
    /// at each entry: a voter just added is not waited for, and a failover to it loses
    /// entries committed without it.
    pub commit_without_new_voters: bool,
}

impl Config {
    /// Defaults for node `id` of a cluster of `voters`: a heartbeat every 3 ticks (30 ms with
    /// 10 ms ticks, as Raft's), a retry after 6.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            heartbeat_ticks: 3,
            retry_ticks: 6,
            batch_entries_max: 256,
            batch_bytes_max: 1 << 20,
            boot_membership: None,
            snapshot_chunk_bytes: 1 << 20,
            #[cfg(any(test, feature = "inject-bugs"))]
            bugs: InjectedBugs::default(),
        }
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Ids fit a view's low bits.
        if !self.voters.is_empty() {
            check_members(self.id, &self.voters, crate::message::NODE_ID_MAX)?;
        }
        if let Some(m) = &self.boot_membership {
            if m.voters() != self.voters || m.members.iter().any(|m| m.learner) {
                return Err(ConfigError::BootMembership);
            }
        }
        if self.heartbeat_ticks == 0 || self.retry_ticks == 0 {
            return Err(ConfigError::Timing(
                "the heartbeat and retry intervals must be at least 1 tick",
            ));
        }
        if self.batch_entries_max == 0 || self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::Limits);
        }
        Ok(())
    }
}

/// Settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The members are not distinct ids that fit a view, including this node.
    #[error(transparent)]
    Members(#[from] MembersError),
    /// Inconsistent timeouts.
    #[error("bad timing: {0}")]
    Timing(&'static str),
    /// The boot membership is not the boot voters.
    #[error("the boot membership lists other members than the voters")]
    BootMembership,
    /// Batching limits of zero.
    #[error("the batch and snapshot chunk limits must be at least 1")]
    Limits,
}
