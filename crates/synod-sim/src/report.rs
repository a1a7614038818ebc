//! What a run found, and the summary of a sweep.

use std::fmt;

use crate::TICK_US;

/// The kind of property a run broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ViolationKind {
    /// A protocol invariant (election safety, log matching, leader completeness, state
    /// machine safety) or a node refusing to restart from its own disk.
    Safety,
    /// The clients' history has no linearization.
    Linearizability,
    /// After the network healed, no new write committed in time.
    Liveness,
    /// After settling, replicas disagree.
    Convergence,
    /// Code panicked: a broken internal assertion.
    Panic,
    /// A read was staler than the protocol promises (in a run without faults).
    Staleness,
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ViolationKind::Safety => "safety",
            ViolationKind::Linearizability => "linearizability",
            ViolationKind::Liveness => "liveness",
            ViolationKind::Convergence => "convergence",
            ViolationKind::Panic => "panic",
            ViolationKind::Staleness => "staleness",
        })
    }
}

/// A broken property, described for a human.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which property.
    pub kind: ViolationKind,
    /// What happened.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violation: {}", self.kind, self.detail)
    }
}

/// Counters kept during a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages nodes sent each other.
    pub messages_sent: u64,
    /// Of those, delivered to a live node.
    pub messages_delivered: u64,
    /// Lost: dropped, cut off by a partition, or sent to a crashed node.
    pub messages_dropped: u64,
    /// Delivered twice.
    pub messages_duplicated: u64,
    /// Persists submitted to simulated disks.
    pub persists: u64,
    /// Bytes of engine state (hard state and journal records) in those persists: what the
    /// engine writes beyond the log, which must grow with what changed, not with what the
    /// engine holds.
    pub state_bytes_persisted: u64,
    /// Leaders elected (distinct eras with a leader).
    pub elections: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Snapshots nodes took of their state machines.
    pub snapshots_taken: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Torn writes found and cut off when a node opened its log.
    pub torn_writes_repaired: u64,
    /// Bits the nemesis flipped in stored data.
    pub disks_damaged: u64,
    /// Disks the nemesis replaced with empty ones (gossip only).
    pub disks_replaced: u64,
    /// Nodes that refused to start because their disk failed its checks.
    pub disks_refused: u64,
    /// Client commands committed (distinct log entries holding one).
    pub committed_commands: u64,
    /// Client operations invoked.
    pub operations: u64,
    /// Of those, answered.
    pub completed: u64,
    /// Abandoned, definitely without effect.
    pub failed: u64,
    /// Abandoned, possibly with effect.
    pub indeterminate: u64,
    /// From the heal to the first write invoked after it that completed, in microseconds.
    pub recovery_us: Option<u64>,
    /// Times proposers were preempted by a higher ballot (Basic Paxos).
    pub preemptions: u64,
    /// Processes paused.
    pub pauses: u64,
    /// Membership changes the operator asked for.
    pub membership_asked: u64,
    /// Of those, applied (the operator heard the new membership).
    pub membership_changed: u64,
    /// Of those, refused as unsafe now (a change pending, a learner behind, too few up).
    pub membership_refused: u64,
    /// Removed members that handed over what they held and stopped (gossip).
    pub members_left: u64,
    /// Leases granted to clients that heard so.
    pub leases_granted: u64,
    /// Keep-alives answered with a TTL.
    pub lease_renewals: u64,
    /// Leases revoked by expiry.
    pub leases_expired: u64,
    /// Times the lease clocks passed to a new leader (or, without one, a new keeper).
    pub lease_epochs: u64,
    /// Writes a follower handed to the leader.
    pub writes_forwarded: u64,
    /// Linearizable reads and keep-alives a follower asked the leader to confirm.
    pub reads_forwarded: u64,
    /// Every completed write's latency as its client saw it (invoke to answer, retries
    /// included), in microseconds.
    pub write_latencies_us: Vec<u64>,
    /// After each crash of the leader: how long until the next command committed, in
    /// microseconds.
    pub leader_crash_stalls_us: Vec<u64>,
    /// Requests each node refused (not leading), indexed by node id.
    pub refusals_by_node: Vec<u64>,
    /// Reads answered (by a node, or from a client's cache).
    pub reads: u64,
    /// Of those, answered from a client's cache.
    pub reads_from_cache: u64,
    /// Of those, stale: the key had changed before the read was asked (`freshness.rs`).
    pub stale_reads: u64,
    /// How stale each stale read was, in microseconds.
    pub read_staleness_us: Vec<u64>,
    /// How many newer versions of its key each stale read missed.
    pub read_versions_behind: Vec<u64>,
    /// Runs of a protocol that does not promise linearizability whose history had none.
    pub not_linearizable: u64,
}

impl Stats {
    /// Requests `node` refused so far.
    pub fn refusals_by(&self, node: synod_core::NodeId) -> u64 {
        self.refusals_by_node
            .get(node.0 as usize)
            .copied()
            .unwrap_or(0)
    }
}

/// The outcome of one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Counters.
    pub stats: Stats,
    /// Virtual time simulated, in ticks.
    pub ticks: u64,
    /// The first property broken, if any.
    pub violation: Option<Violation>,
}

impl RunReport {
    /// Ticks from the heal until a new write committed.
    pub fn recovery_ticks(&self) -> Option<u64> {
        self.stats.recovery_us.map(|us| us.div_ceil(TICK_US))
    }
}

/// The `p` quantile (0 to 1) of sorted values, nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((n - 1) as f64 * p).round() as usize])
}

/// Totals over many runs.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Runs.
    pub runs: u64,
    /// Runs that broke a property, with their seeds, in seed order.
    pub failures: Vec<(u64, Violation)>,
    /// Sum of every run's counters.
    pub totals: Stats,
    /// Recovery time of every run that recovered, in ticks, sorted.
    pub recovery_ticks: Vec<u64>,
    /// Virtual ticks simulated.
    pub ticks: u64,
}

impl Summary {
    /// Folds reports (in any order) into a summary; failures end up sorted by seed.
    pub fn of(reports: &[RunReport]) -> Summary {
        let mut summary = Summary::default();
        for r in reports {
            summary.runs += 1;
            summary.ticks += r.ticks;
            if let Some(v) = &r.violation {
                summary.failures.push((r.seed, v.clone()));
            }
            if let Some(t) = r.recovery_ticks() {
                summary.recovery_ticks.push(t);
            }
            let (t, s) = (&mut summary.totals, &r.stats);
            t.messages_sent += s.messages_sent;
            t.messages_delivered += s.messages_delivered;
            t.messages_dropped += s.messages_dropped;
            t.messages_duplicated += s.messages_duplicated;
            t.persists += s.persists;
            t.state_bytes_persisted += s.state_bytes_persisted;
            t.elections += s.elections;
            t.crashes += s.crashes;
            t.snapshots_taken += s.snapshots_taken;
            t.snapshots_installed += s.snapshots_installed;
            t.torn_writes_repaired += s.torn_writes_repaired;
            t.disks_damaged += s.disks_damaged;
            t.disks_replaced += s.disks_replaced;
            t.disks_refused += s.disks_refused;
            t.preemptions += s.preemptions;
            t.pauses += s.pauses;
            t.membership_asked += s.membership_asked;
            t.membership_changed += s.membership_changed;
            t.membership_refused += s.membership_refused;
            t.members_left += s.members_left;
            t.leases_granted += s.leases_granted;
            t.lease_renewals += s.lease_renewals;
            t.leases_expired += s.leases_expired;
            t.lease_epochs += s.lease_epochs;
            t.writes_forwarded += s.writes_forwarded;
            t.reads_forwarded += s.reads_forwarded;
            t.write_latencies_us.extend(&s.write_latencies_us);
            t.leader_crash_stalls_us.extend(&s.leader_crash_stalls_us);
            t.committed_commands += s.committed_commands;
            t.operations += s.operations;
            t.completed += s.completed;
            t.failed += s.failed;
            t.indeterminate += s.indeterminate;
            t.reads += s.reads;
            t.reads_from_cache += s.reads_from_cache;
            t.stale_reads += s.stale_reads;
            t.read_staleness_us.extend(&s.read_staleness_us);
            t.read_versions_behind.extend(&s.read_versions_behind);
            t.not_linearizable += s.not_linearizable;
        }
        summary.failures.sort_by_key(|(seed, _)| *seed);
        summary.recovery_ticks.sort_unstable();
        summary
    }

    /// Whether every run was clean.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
    }

    fn percentile(&self, p: f64) -> Option<u64> {
        percentile(&self.recovery_ticks, p)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "  {name:<42} {value:>14}")
        };
        row(f, "runs", self.runs.to_string())?;
        row(f, "runs with a violation", self.failures.len().to_string())?;
        row(f, "virtual ticks simulated", self.ticks.to_string())?;
        row(f, "client operations", t.operations.to_string())?;
        row(f, "  answered", t.completed.to_string())?;
        row(f, "  abandoned, without effect", t.failed.to_string())?;
        row(
            f,
            "  abandoned, outcome unknown",
            t.indeterminate.to_string(),
        )?;
        row(f, "writes committed", t.committed_commands.to_string())?;
        row(
            f,
            "  forwarded by a follower",
            t.writes_forwarded.to_string(),
        )?;
        row(
            f,
            "reads confirmed for a follower",
            t.reads_forwarded.to_string(),
        )?;
        row(f, "leases granted", t.leases_granted.to_string())?;
        row(f, "  renewed by keep-alives", t.lease_renewals.to_string())?;
        row(f, "  revoked by expiry", t.leases_expired.to_string())?;
        row(f, "  clocks taken over", t.lease_epochs.to_string())?;
        row(f, "leaders elected", t.elections.to_string())?;
        row(f, "node crashes", t.crashes.to_string())?;
        row(f, "process pauses", t.pauses.to_string())?;
        if t.membership_asked > 0 {
            row(
                f,
                "membership changes asked / applied / refused",
                format!(
                    "{} / {} / {}",
                    t.membership_asked, t.membership_changed, t.membership_refused
                ),
            )?;
        }
        if t.members_left > 0 {
            row(
                f,
                "  removed members that handed over and left",
                t.members_left.to_string(),
            )?;
        }
        row(f, "snapshots taken", t.snapshots_taken.to_string())?;
        row(
            f,
            "snapshots installed from a leader",
            t.snapshots_installed.to_string(),
        )?;
        row(
            f,
            "torn writes cut off at restart",
            t.torn_writes_repaired.to_string(),
        )?;
        row(
            f,
            "disks damaged (a bit flipped, garbage left)",
            t.disks_damaged.to_string(),
        )?;
        if t.disks_replaced > 0 {
            row(
                f,
                "disks replaced by empty ones",
                t.disks_replaced.to_string(),
            )?;
        }
        row(
            f,
            "  nodes that then refused to start",
            t.disks_refused.to_string(),
        )?;
        row(f, "messages sent", t.messages_sent.to_string())?;
        row(
            f,
            "  lost (dropped, cut off, or to a crashed node)",
            t.messages_dropped.to_string(),
        )?;
        row(f, "  duplicated", t.messages_duplicated.to_string())?;
        let per_write = if t.committed_commands > 0 {
            format!(
                "{:.1}",
                t.messages_sent as f64 / t.committed_commands as f64
            )
        } else {
            "-".to_string()
        };
        row(f, "messages per committed write", per_write)?;
        if t.reads_from_cache > 0 || t.stale_reads > 0 {
            row(f, "reads answered", t.reads.to_string())?;
            row(f, "  from a client's cache", t.reads_from_cache.to_string())?;
            row(f, "  stale", t.stale_reads.to_string())?;
            let mut staleness = t.read_staleness_us.clone();
            staleness.sort_unstable();
            let ticks = |p: f64| percentile(&staleness, p).map(|us| us.div_ceil(TICK_US));
            if let (Some(p50), Some(p99), Some(max)) = (ticks(0.5), ticks(0.99), ticks(1.0)) {
                row(
                    f,
                    "  staleness in ticks p50/p99/max",
                    format!("{p50} / {p99} / {max}"),
                )?;
            }
            let mut behind = t.read_versions_behind.clone();
            behind.sort_unstable();
            let at = |p: f64| percentile(&behind, p);
            if let (Some(p50), Some(p99), Some(max)) = (at(0.5), at(0.99), at(1.0)) {
                row(
                    f,
                    "  newer versions missed p50/p99/max",
                    format!("{p50} / {p99} / {max}"),
                )?;
            }
            row(
                f,
                "runs whose history was not linearizable",
                t.not_linearizable.to_string(),
            )?;
        }
        let recovery = match (
            self.percentile(0.5),
            self.percentile(0.99),
            self.recovery_ticks.last(),
        ) {
            (Some(p50), Some(p99), Some(max)) => format!("{p50} / {p99} / {max}"),
            _ => "-".to_string(),
        };
        row(f, "ticks to recover after heal p50/p99/max", recovery)
    }
}
