//! How a gossip node is set up.

use std::fmt;
use std::str::FromStr;

use synod_core::quorum::{check_members, majority, MembersError};
use synod_core::{Membership, NodeId};
use thiserror::Error;

use crate::swim::SwimTiming;
use crate::version::NODE_ID_MAX;

/// How many replicas must answer, as Cassandra's consistency levels (every member holds
/// every key here, so N is the cluster size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// One replica: the one the client reached.
    #[default]
    One,
    /// A majority of the replicas.
    Quorum,
    /// Every replica.
    All,
}

impl Level {
    /// Replicas needed out of `n`.
    pub fn needed(self, n: usize) -> usize {
        match self {
            Level::One => 1,
            Level::Quorum => majority(n),
            Level::All => n,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::One => "one",
            Level::Quorum => "quorum",
            Level::All => "all",
        })
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Level::One),
            "quorum" => Ok(Level::Quorum),
            "all" => Ok(Level::All),
            other => Err(format!(
                "unknown consistency level {other:?}: expected one, quorum or all"
            )),
        }
    }
}

/// Settings of one node. Times are in ticks; the runtime decides how long a tick is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every member the cluster boots with, this node included; each holds every key. Empty
    /// for a node that joins a running cluster: it learns the membership from the first
    /// member that pings it.
    pub voters: Vec<NodeId>,
    /// The boot members with their names and addresses (the voters' ids), if the runtime has
    /// them.
    pub boot_membership: Option<Membership>,
    /// Replicas that must hold a write before its client is answered.
    pub write_level: Level,
    /// Replicas consulted by a linearizable-asked read (a serializable one reads ONE).
    pub read_level: Level,
    /// The failure detector's timeouts.
    pub swim: SwimTiming,
    /// New versions are pushed to `fanout` random peers every this many ticks.
    pub gossip_ticks: u64,
    /// Peers each round of pushes goes to.
    pub fanout: usize,
    /// Rounds a new version is pushed for (its rumor's life).
    pub rumor_rounds: u32,
    /// A pairwise anti-entropy exchange starts this often.
    pub anti_entropy_ticks: u64,
    /// Buckets compared key by key in one exchange at most.
    pub anti_entropy_buckets_max: usize,
    /// A write or read at QUORUM or ALL that has not heard from enough replicas by then fails.
    pub request_timeout_ticks: u64,
    /// Unacknowledged pushes of such a write are sent again this often.
    pub retry_ticks: u64,
    /// Bytes of records in one message at most (one record always fits).
    pub batch_bytes_max: usize,
    /// Bytes of records a read at QUORUM or ALL may cover.
    pub read_bytes_max: usize,
    /// Keys remembered for an unreachable peer at most (hinted handoff); past it,
    /// anti-entropy repairs that peer.
    pub hints_max: usize,
    /// Tombstones are forgotten this long after the delete (0: never). A replica that was
    /// away longer and still holds the deleted value brings it back (resurrection), as
    /// with Cassandra's gc_grace_seconds.
    pub tombstone_grace_ticks: u64,
    /// Deliberately broken rules, for proving that tests and the simulator catch them.
    #[cfg(any(test, feature = "inject-bugs"))]
    pub bugs: InjectedBugs,
}

/// Rules a test may break on purpose (all kept outside test builds).
#[cfg(any(test, feature = "inject-bugs"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// No anti-entropy: a version whose pushes were all lost never arrives.
    pub no_anti_entropy: bool,
    /// A wrong merge: the first version a replica hears of a key stays (first writer wins
    /// locally), so replicas that heard concurrent writes in different orders never agree.
    pub keep_first: bool,
    /// A write at ONE is acknowledged as soon as it is taken, before it is durable: a crash
    /// in between loses a write its client was told is done.
    pub ack_before_durable: bool,
    /// A member back with an empty disk votes on membership changes at once: it may promise
    /// afresh for a change it accepted in its earlier life, and a second membership can be
    /// agreed for one epoch.
    pub vote_after_disk_loss: bool,
    /// A removed member says it owes nothing at once: it stops with writes only it held.
    pub leave_without_handover: bool,
}

impl Config {
    /// Defaults for node `id` of a cluster of `voters`, with timers derived from a probe
    /// period of `probe_ticks`: ack timeout a fifth of it (at least a tick), suspicion for
    /// `4 ⌈log10(n + 1)⌉` periods (at least 3), pushes every tick to 3 peers for
    /// `⌈log2 n⌉ + 2` rounds, anti-entropy every 2 periods, requests time out after 20.
    pub fn new(id: NodeId, voters: Vec<NodeId>, probe_ticks: u64) -> Self {
        let probe_ticks = probe_ticks.max(2);
        let n = voters.len().max(1) as u64;
        let log10 = (n + 1).to_string().len() as u64;
        let log2 = u64::from(u64::BITS - (n - 1).leading_zeros());
        Config {
            id,
            voters,
            boot_membership: None,
            write_level: Level::One,
            read_level: Level::One,
            swim: SwimTiming {
                probe_ticks,
                ack_ticks: (probe_ticks / 5).max(1),
                suspect_ticks: probe_ticks * (4 * log10).max(3),
                indirect: 3,
            },
            gossip_ticks: 1,
            fanout: 3,
            rumor_rounds: log2 as u32 + 2,
            anti_entropy_ticks: probe_ticks * 2,
            anti_entropy_buckets_max: 16,
            request_timeout_ticks: probe_ticks * 20,
            retry_ticks: probe_ticks,
            batch_bytes_max: 1 << 20,
            read_bytes_max: 16 << 20,
            hints_max: 100_000,
            tombstone_grace_ticks: 0,
            #[cfg(any(test, feature = "inject-bugs"))]
            bugs: InjectedBugs::default(),
        }
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.voters.is_empty() {
            check_members(self.id, &self.voters, NODE_ID_MAX)?;
        } else if self.id.0 == 0 || self.id.0 > NODE_ID_MAX {
            return Err(ConfigError::Members(MembersError::IdOutOfRange(
                self.id,
                NODE_ID_MAX,
            )));
        }
        if let Some(m) = &self.boot_membership {
            if m.voters() != self.voters || m.members.iter().any(|m| m.learner) {
                return Err(ConfigError::BootMembership);
            }
        }
        let s = &self.swim;
        if s.probe_ticks < 2 || s.ack_ticks == 0 || s.ack_ticks >= s.probe_ticks {
            return Err(ConfigError::Timing(
                "the ack timeout must be at least a tick and shorter than the probe period",
            ));
        }
        if self.gossip_ticks == 0 || self.anti_entropy_ticks == 0 || self.retry_ticks == 0 {
            return Err(ConfigError::Timing(
                "the push, anti-entropy and retry intervals must be at least 1 tick",
            ));
        }
        if self.fanout == 0 || self.batch_bytes_max == 0 || self.anti_entropy_buckets_max == 0 {
            return Err(ConfigError::Limits);
        }
        Ok(())
    }
}

/// Settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The members are not distinct ids in 1..=4095 including this node.
    #[error(transparent)]
    Members(#[from] MembersError),
    /// The boot membership is not the boot voters.
    #[error("the boot membership lists other members than the voters")]
    BootMembership,
    /// Inconsistent timeouts.
    #[error("bad timing: {0}")]
    Timing(&'static str),
    /// Limits of zero.
    #[error("the fan-out, batch and anti-entropy limits must be at least 1")]
    Limits,
}
