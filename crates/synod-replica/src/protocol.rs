//! One boot path for every engine: a node is built from its settings and what its data
//! directory recovered, the same way in the server and in the simulator.

use std::fmt::Debug;

use synod_core::wire::Wire;
use synod_core::{Engine, NodeId};
use synod_dns::Dns;
use synod_gossip::{Gossip, Level};
use synod_paxos::{BasicPaxos, MultiPaxos};
use synod_primary_backup::PrimaryBackup;
use synod_raft::Raft;
use synod_storage::Recovered;
use synod_zab::Zab;

/// The names `--protocol` takes, of every protocol that boots here.
pub const PROTOCOL_NAMES: [&str; 7] = [
    Raft::NAME,
    MultiPaxos::NAME,
    BasicPaxos::NAME,
    Zab::NAME,
    PrimaryBackup::NAME,
    Dns::NAME,
    Gossip::NAME,
];

/// Whether the protocol named `protocol` elects a leader. Basic Paxos does not: every node
/// proposes, so nothing can hold a clock for the cluster (lease expiry) or be moved.
pub fn has_leader(protocol: &str) -> bool {
    protocol != BasicPaxos::NAME && protocol != Gossip::NAME
}

/// Whether the protocol named `protocol` agrees on one order of writes, which transactions
/// with compares and leases need. Gossip does not: it refuses them.
pub fn has_consensus(protocol: &str) -> bool {
    protocol != Gossip::NAME
}

/// Whether the protocol named `protocol` hands its leadership over on request (etcd's
/// MoveLeader). ZAB, as ZooKeeper, does not: its leader leads until it fails. Nor does
/// DNS-style propagation, whose primary is the lowest voter and moves only with the membership.
pub fn moves_leadership(protocol: &str) -> bool {
    has_leader(protocol) && protocol != Zab::NAME && protocol != Dns::NAME
}

/// Whether the protocol named `protocol` promises linearizable reads and writes. DNS-style
/// propagation does not: a secondary answers from a copy that may be stale; nor does gossip,
/// at any consistency level.
pub fn is_linearizable(protocol: &str) -> bool {
    protocol != Dns::NAME && protocol != Gossip::NAME
}

/// Whether an operator's MoveLeader is how the protocol named `protocol` fails over, so any
/// member that can reach the target must carry it out, not only the leader (which may be the
/// member that failed). Synchronous primary-backup elects no one.
pub fn fails_over_by_operator(protocol: &str) -> bool {
    protocol == PrimaryBackup::NAME
}

/// The timeouts of a node, in ticks of its clock. Every engine derives its own timers from
/// these two, so one pair of flags means the same thing under every protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Without a word from a leader for this long (at least; up to twice), a node stands for
    /// election.
    pub election_ticks: u64,
    /// How often a leader reassures its followers.
    pub heartbeat_ticks: u64,
}

impl Default for Timing {
    /// 150-300 ms and 30 ms at the server's 10 ms tick.
    fn default() -> Self {
        Timing {
            election_ticks: 15,
            heartbeat_ticks: 3,
        }
    }
}

/// Everything a node is built from, besides what its disk holds.
#[derive(Clone, Debug)]
pub struct Boot<'a> {
    /// This node.
    pub id: NodeId,
    /// Every voting member, this node included.
    pub voters: &'a [NodeId],
    /// The same members with their names and addresses, for a protocol whose membership
    /// changes through its log (it starts from this one); `None`: ids only.
    pub members: Option<&'a synod_core::Membership>,
    /// Seeds the engine's PRNG; a new one each life.
    pub seed: u64,
    /// Its timeouts.
    pub timing: Timing,
    /// Bytes of snapshot per message at most.
    pub snapshot_chunk_bytes: usize,
}

/// A replication protocol a replica can run: an engine that boots from a data directory.
pub trait Protocol: Engine<Message: Wire + Send> + Sized + Send + 'static {
    /// Its name on the command line and in a data directory's protocol file.
    const NAME: &'static str;
    /// Settings a test may vary (for instance to inject a bug).
    type Options: Clone + Default + Send + Sync + Debug;
    /// Whether its membership changes through its log ([`Engine::membership`]); a node
    /// booted with no voters then joins a running cluster.
    const CHANGES_MEMBERSHIP: bool = false;

    /// A node built from what its disk holds (nothing on first boot).
    fn boot(
        boot: &Boot<'_>,
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

/// Raft settings a test may vary.
#[derive(Clone, Copy, Default, Debug)]
pub struct RaftOptions {
    /// Adjusts the config after the defaults, e.g. to inject a bug.
    pub tweak: Option<fn(&mut synod_raft::Config)>,
}

impl Protocol for Raft {
    const NAME: &'static str = "raft";
    type Options = RaftOptions;
    const CHANGES_MEMBERSHIP: bool = true;

    fn boot(boot: &Boot<'_>, recovered: &Recovered, options: &RaftOptions) -> Result<Raft, String> {
        // Raft's term and vote are all in its hard state.
        refuse_journal(recovered, "Raft")?;
        Raft::restart(
            raft_config(boot, options),
            recovered.hard_state.as_deref(),
            recovered.snapshot.clone(),
            recovered.entries.clone(),
        )
        .map_err(|e| e.to_string())
    }

    fn describe(message: &synod_raft::Message) -> String {
        message.to_string()
    }
}

/// An engine whose whole state is its hard state writes no journal: records found are not
/// its own.
fn refuse_journal(recovered: &Recovered, engine: &str) -> Result<(), String> {
    if recovered.journal.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the log holds {} journal records, which {engine} never writes",
        recovered.journal.len()
    ))
}

fn raft_config(boot: &Boot<'_>, options: &RaftOptions) -> synod_raft::Config {
    let mut config = synod_raft::Config::new(boot.id, boot.voters.to_vec());
    config.boot_membership = boot.members.cloned();
    let Timing {
        election_ticks,
        heartbeat_ticks,
    } = boot.timing;
    config.seed = boot.seed;
    config.election_timeout_ticks_min = election_ticks;
    config.election_timeout_ticks_max = election_ticks * 2;
    config.heartbeat_interval_ticks = heartbeat_ticks;
    config.append_retry_ticks = heartbeat_ticks * 2;
    config.transfer_timeout_ticks = election_ticks;
    config.snapshot_chunk_bytes = boot.snapshot_chunk_bytes;
    if let Some(tweak) = options.tweak {
        tweak(&mut config);
    }
    config
}

/// Paxos settings a test or the command line may vary.
#[derive(Clone, Copy, Default, Debug)]
pub struct PaxosOptions {
    /// Basic Paxos: a preempted proposer retries at once, without the randomized backoff
    /// (to show the duelling proposers' livelock).
    pub no_backoff: bool,
    /// Adjusts the config after the defaults (to inject a bug).
    pub tweak: Option<fn(&mut synod_paxos::Config)>,
}

fn paxos_config(boot: &Boot<'_>, options: &PaxosOptions) -> synod_paxos::Config {
    let mut config = synod_paxos::Config::new(boot.id, boot.voters.to_vec());
    config.boot_membership = boot.members.cloned();
    let Timing {
        election_ticks,
        heartbeat_ticks,
    } = boot.timing;
    config.seed = boot.seed;
    config.election_timeout_ticks_min = election_ticks;
    config.election_timeout_ticks_max = election_ticks * 2;
    config.heartbeat_interval_ticks = heartbeat_ticks;
    config.retry_ticks = heartbeat_ticks * 2;
    // A learner asks for a missing slot well before anyone would stand for election.
    config.gap_timeout_ticks = (election_ticks * 2 / 3).max(1);
    config.backoff_ticks_base = heartbeat_ticks;
    config.backoff_ticks_max = heartbeat_ticks * 20;
    config.snapshot_chunk_bytes = boot.snapshot_chunk_bytes;
    if options.no_backoff {
        config.backoff = false;
    }
    if let Some(tweak) = options.tweak {
        tweak(&mut config);
    }
    config
}

macro_rules! paxos_protocol {
    ($engine:ident, $name:literal, window: $window:literal, $preemptions:expr) => {
        impl Protocol for $engine {
            const NAME: &'static str = $name;
            type Options = PaxosOptions;
            const CHANGES_MEMBERSHIP: bool = true;

            fn boot(
                boot: &Boot<'_>,
                recovered: &Recovered,
                options: &PaxosOptions,
            ) -> Result<Self, String> {
                let mut config = paxos_config(boot, options);
                config.reconfig_window = config.reconfig_window.min($window);
                $engine::restart(
                    config,
                    recovered.hard_state.as_deref(),
                    &recovered.journal,
                    recovered.snapshot.clone(),
                    recovered.entries.clone(),
                )
                .map_err(|e| e.to_string())
            }

            fn describe(message: &synod_paxos::Message) -> String {
                message.to_string()
            }

            fn preemptions(&self) -> u64 {
                $preemptions(self)
            }
        }
    };
}

// The reconfiguration window also bounds the slots in progress at once. A Multi-Paxos
// leader pipelines hundreds under load; Basic Paxos runs a few instances per node, and the
// proposer of a change fills the window with no-ops after it, an instance per slot.
paxos_protocol!(BasicPaxos, "basic-paxos", window: 32, BasicPaxos::preemptions);
paxos_protocol!(MultiPaxos, "multi-paxos", window: 512, |_: &MultiPaxos| 0);

/// Gossip settings: the consistency levels (per node, as the server's flags set them) and
/// what a test may vary.
#[derive(Clone, Copy, Default, Debug)]
pub struct GossipOptions {
    /// Replicas that must hold a write before it is answered.
    pub write_level: Level,
    /// Replicas a linearizable-asked read consults.
    pub read_level: Level,
    /// Adjusts the config after the defaults, e.g. to inject a bug.
    pub tweak: Option<fn(&mut synod_gossip::Config)>,
}

impl Protocol for Gossip {
    const NAME: &'static str = "gossip";
    type Options = GossipOptions;
    const CHANGES_MEMBERSHIP: bool = true;

    fn boot(
        boot: &Boot<'_>,
        recovered: &Recovered,
        options: &GossipOptions,
    ) -> Result<Gossip, String> {
        if !recovered.entries.is_empty() {
            return Err(format!(
                "the log holds {} entries; gossip keeps its state in its hard state and journal, so this directory is not gossip's",
                recovered.entries.len()
            ));
        }
        let snapshot_index = recovered.snapshot.as_ref().map_or(0, |s| s.meta.index);
        Gossip::restart(
            gossip_config(boot, options),
            boot.seed,
            recovered.hard_state.as_deref(),
            &recovered.journal,
            snapshot_index,
        )
        .map_err(|e| e.to_string())
    }

    fn describe(message: &synod_gossip::Message) -> String {
        message.to_string()
    }
}

/// SWIM probes every third of an election timeout (50 ms by default); every other gossip
/// timer follows from that (`synod_gossip::Config::new`).
fn gossip_config(boot: &Boot<'_>, options: &GossipOptions) -> synod_gossip::Config {
    let probe_ticks = (boot.timing.election_ticks / 3).max(2);
    let mut config = synod_gossip::Config::new(boot.id, boot.voters.to_vec(), probe_ticks);
    config.boot_membership = boot.members.cloned();
    config.write_level = options.write_level;
    config.read_level = options.read_level;
    config.batch_bytes_max = boot.snapshot_chunk_bytes.max(1);
    if let Some(tweak) = options.tweak {
        tweak(&mut config);
    }
    config
}

/// ZAB settings a test may vary.
#[derive(Clone, Copy, Default, Debug)]
pub struct ZabOptions {
    /// Adjusts the config after the defaults, e.g. to inject a bug.
    pub tweak: Option<fn(&mut synod_zab::Config)>,
}

impl Protocol for Zab {
    const NAME: &'static str = "zab";
    type Options = ZabOptions;
    const CHANGES_MEMBERSHIP: bool = true;

    fn boot(boot: &Boot<'_>, recovered: &Recovered, options: &ZabOptions) -> Result<Zab, String> {
        // ZAB's epochs are all in its hard state.
        refuse_journal(recovered, "ZAB")?;
        Zab::restart(
            zab_config(boot, options),
            recovered.hard_state.as_deref(),
            recovered.snapshot.clone(),
            recovered.entries.clone(),
        )
        .map_err(|e| e.to_string())
    }

    fn describe(message: &synod_zab::Message) -> String {
        message.to_string()
    }
}

/// Synchronous primary-backup settings a test may vary.
#[derive(Clone, Copy, Default, Debug)]
pub struct PrimaryBackupOptions {
    /// Adjusts the config after the defaults, e.g. to inject a bug.
    pub tweak: Option<fn(&mut synod_primary_backup::Config)>,
}

impl Protocol for PrimaryBackup {
    const NAME: &'static str = "sync";
    type Options = PrimaryBackupOptions;
    const CHANGES_MEMBERSHIP: bool = true;

    fn boot(
        boot: &Boot<'_>,
        recovered: &Recovered,
        options: &PrimaryBackupOptions,
    ) -> Result<PrimaryBackup, String> {
        // The view is all of its hard state.
        refuse_journal(recovered, "synchronous primary-backup")?;
        PrimaryBackup::restart(
            primary_backup_config(boot, options),
            recovered.hard_state.as_deref(),
            recovered.snapshot.clone(),
            recovered.entries.clone(),
        )
        .map_err(|e| e.to_string())
    }

    fn describe(message: &synod_primary_backup::Message) -> String {
        message.to_string()
    }
}

/// DNS-style settings a test may vary.
#[derive(Clone, Copy, Default, Debug)]
pub struct DnsOptions {
    /// Adjusts the config after the defaults, e.g. to inject a bug.
    pub tweak: Option<fn(&mut synod_dns::Config)>,
}

impl Protocol for Dns {
    const NAME: &'static str = "dns";
    type Options = DnsOptions;
    const CHANGES_MEMBERSHIP: bool = true;

    fn boot(boot: &Boot<'_>, recovered: &Recovered, options: &DnsOptions) -> Result<Dns, String> {
        // The primary's era is all of its hard state.
        refuse_journal(recovered, "DNS-style propagation")?;
        Dns::restart(
            dns_config(boot, options),
            recovered.hard_state.as_deref(),
            recovered.snapshot.clone(),
            recovered.entries.clone(),
        )
        .map_err(|e| e.to_string())
    }

    fn describe(message: &synod_dns::Message) -> String {
        message.to_string()
    }
}

/// The refresh and retry intervals are the engine's own: DNS's are properties of the zone,
/// not of failure detection, so the election and heartbeat timing leaves them alone (and the
/// simulator's staleness bound is derived from the same defaults).
fn dns_config(boot: &Boot<'_>, options: &DnsOptions) -> synod_dns::Config {
    let mut config = synod_dns::Config::new(boot.id, boot.voters.to_vec());
    config.boot_membership = boot.members.cloned();
    config.snapshot_chunk_bytes = boot.snapshot_chunk_bytes;
    if let Some(tweak) = options.tweak {
        tweak(&mut config);
    }
    config
}

/// The primary sends its heartbeat (the commit point, a read round) at the heartbeat
/// interval; nothing here times out into a failover.
fn primary_backup_config(
    boot: &Boot<'_>,
    options: &PrimaryBackupOptions,
) -> synod_primary_backup::Config {
    let mut config = synod_primary_backup::Config::new(boot.id, boot.voters.to_vec());
    config.boot_membership = boot.members.cloned();
    config.snapshot_chunk_bytes = boot.snapshot_chunk_bytes.max(1);
    config.heartbeat_ticks = boot.timing.heartbeat_ticks;
    config.retry_ticks = boot.timing.heartbeat_ticks * 2;
    if let Some(tweak) = options.tweak {
        tweak(&mut config);
    }
    config
}

/// The session timeout is the election timeout (a follower that hears nothing from its
/// leader for that long looks for another), and followers ping at the heartbeat interval.
fn zab_config(boot: &Boot<'_>, options: &ZabOptions) -> synod_zab::Config {
    let mut config = synod_zab::Config::new(boot.id, boot.voters.to_vec());
    config.boot_membership = boot.members.cloned();
    let Timing {
        election_ticks,
        heartbeat_ticks,
    } = boot.timing;
    config.seed = boot.seed;
    config.session_timeout_ticks_min = election_ticks;
    config.session_timeout_ticks_max = election_ticks * 2;
    config.ping_interval_ticks = heartbeat_ticks;
    config.retry_ticks = heartbeat_ticks * 2;
    config.snapshot_chunk_bytes = boot.snapshot_chunk_bytes;
    if let Some(tweak) = options.tweak {
        tweak(&mut config);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default timing gives every engine the defaults its own crate chose, so the
    /// simulator's runs are the ones its figures were measured with.
    #[test]
    fn default_timing_keeps_each_engines_defaults() {
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let boot = Boot {
            id: NodeId(1),
            voters: &voters,
            members: None,
            seed: 1,
            timing: Timing::default(),
            snapshot_chunk_bytes: 1 << 20,
        };
        let mut paxos = synod_paxos::Config::new(NodeId(1), voters.to_vec());
        paxos.seed = 1;
        assert_eq!(paxos_config(&boot, &PaxosOptions::default()), paxos);
        let mut raft = synod_raft::Config::new(NodeId(1), voters.to_vec());
        raft.seed = 1;
        assert_eq!(raft_config(&boot, &RaftOptions::default()), raft);
        let mut zab = synod_zab::Config::new(NodeId(1), voters.to_vec());
        zab.seed = 1;
        assert_eq!(zab_config(&boot, &ZabOptions::default()), zab);
        let sync = synod_primary_backup::Config::new(NodeId(1), voters.to_vec());
        assert_eq!(
            primary_backup_config(&boot, &PrimaryBackupOptions::default()),
            sync
        );
        let dns = synod_dns::Config::new(NodeId(1), voters.to_vec());
        assert_eq!(dns_config(&boot, &DnsOptions::default()), dns);
    }

    #[test]
    fn every_protocol_boots_from_an_empty_directory() {
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let boot = Boot {
            id: NodeId(2),
            voters: &voters,
            members: None,
            seed: 7,
            timing: Timing::default(),
            snapshot_chunk_bytes: 1 << 20,
        };
        let empty = Recovered::default();
        let raft = Raft::boot(&boot, &empty, &RaftOptions::default()).expect("raft");
        assert_eq!(raft.status().id, NodeId(2));
        let multi = MultiPaxos::boot(&boot, &empty, &PaxosOptions::default()).expect("multi");
        assert_eq!(multi.status().id, NodeId(2));
        let basic = BasicPaxos::boot(&boot, &empty, &PaxosOptions::default()).expect("basic");
        assert_eq!(basic.status().id, NodeId(2));
        let zab = Zab::boot(&boot, &empty, &ZabOptions::default()).expect("zab");
        assert_eq!(zab.status().id, NodeId(2));
        let sync =
            PrimaryBackup::boot(&boot, &empty, &PrimaryBackupOptions::default()).expect("sync");
        assert_eq!(sync.status().id, NodeId(2));
        let dns = Dns::boot(&boot, &empty, &DnsOptions::default()).expect("dns");
        assert_eq!(dns.status().id, NodeId(2));
        let gossip = Gossip::boot(&boot, &empty, &GossipOptions::default()).expect("gossip");
        assert_eq!(gossip.status().id, NodeId(2));
        // A log with entries is another protocol's: gossip keeps none.
        let entry = synod_core::Entry {
            index: 1,
            era: 1,
            payload: synod_core::Payload::Noop,
        };
        let foreign = Recovered {
            entries: vec![entry],
            ..Recovered::default()
        };
        let refused = Gossip::boot(&boot, &foreign, &GossipOptions::default());
        assert!(refused.is_err_and(|e| e.contains("not gossip's")));
    }
}
