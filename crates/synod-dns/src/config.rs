//! How a DNS-style node is set up.

use synod_core::quorum::{check_members, MembersError};
use synod_core::{Membership, NodeId};
use thiserror::Error;

/// Settings of one node. Times are in ticks; the runtime decides how long a tick is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every member the cluster boots with, this node included; empty for a node that joins
    /// a running cluster (it learns the membership from the transfers). The lowest voter of
    /// the membership in force is the primary.
    pub voters: Vec<NodeId>,
    /// The boot members with their names and addresses (the voters' ids), if the runtime has
    /// them.
    pub boot_membership: Option<Membership>,
    /// A secondary asks the primary for changes this often (DNS's SOA refresh).
    pub refresh_ticks: u64,
    /// A question unanswered for this long is asked again (DNS's SOA retry).
    pub retry_ticks: u64,
    /// Whether the primary tells secondaries of a change at once (DNS NOTIFY).
    pub notify: bool,
    /// An incremental transfer covers a gap of this many serials at most; a secondary further
    /// behind gets a full transfer (when the primary has a snapshot to send).
    pub ixfr_gap_max: u64,
    /// Entries in one incremental transfer at most.
    pub batch_entries_max: usize,
    /// Bytes of entries in one incremental transfer at most (one entry is always allowed).
    pub batch_bytes_max: usize,
    /// Bytes of snapshot in one full-transfer chunk at most.
    pub snapshot_chunk_bytes: usize,
    /// Deliberately broken rules, for proving that tests and the simulator catch them.
    #[cfg(any(test, feature = "inject-bugs"))]
    pub bugs: InjectedBugs,
}

/// Rules a test may break on purpose (all kept outside test builds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// A secondary applies a transfer as it arrives, before it is durable: a crash then takes
    /// its copy back to an older serial than clients already read from it.
    pub apply_before_durable: bool,
    /// The primary stops sending transfers: secondaries stay at whatever they hold.
    pub no_transfers: bool,
    /// A primary that removed itself goes on leading and taking writes: the next primary,
    /// which took over at the removal, gives the same serials to other changes.
    pub lead_after_own_removal: bool,
}

impl Config {
    /// The default refresh interval: 20 ticks (200 ms with 10 ms ticks).
    pub const DEFAULT_REFRESH_TICKS: u64 = 20;
    /// The default retry interval: 6 ticks.
    pub const DEFAULT_RETRY_TICKS: u64 = 6;

    /// Defaults for node `id` of a cluster of `voters`: refresh every 20 ticks, retry after
    /// 6, NOTIFY on.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            boot_membership: None,
            refresh_ticks: Self::DEFAULT_REFRESH_TICKS,
            retry_ticks: Self::DEFAULT_RETRY_TICKS,
            notify: true,
            ixfr_gap_max: 4096,
            batch_entries_max: 256,
            batch_bytes_max: 1 << 20,
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
        if self.refresh_ticks == 0 || self.retry_ticks == 0 {
            return Err(ConfigError::Timing(
                "the refresh and retry intervals must be at least 1 tick",
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
    /// The members are not distinct ids from 1 including this node.
    #[error(transparent)]
    Members(#[from] MembersError),
    /// The boot membership is not the boot voters.
    #[error("the boot membership lists other members than the voters")]
    BootMembership,
    /// Inconsistent timeouts.
    #[error("bad timing: {0}")]
    Timing(&'static str),
    /// Limits of zero.
    #[error("the batch and snapshot chunk limits must be at least 1")]
    Limits,
}
