//! Seed sweeps: a clean Raft passes them, and a Raft with a broken rule is caught by them.
//!
//! The sizes here are bounded so CI stays fast; `synod sim --seeds 1..2000` runs the full size.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use std::ops::RangeInclusive;

use synod_dns::Dns;
use synod_gossip::{Gossip, Level};
use synod_paxos::{BasicPaxos, MultiPaxos};
use synod_primary_backup::PrimaryBackup;
use synod_raft::Raft;
use synod_replica::{DnsOptions, GossipOptions, LeaseBugs, PrimaryBackupOptions, ZabOptions};
use synod_sim::{
    run, sweep, FaultSet, PaxosOptions, Protocol, RaftOptions, RunConfig, Summary, Violation,
    ViolationKind,
};
use synod_storage::InjectedBugs;
use synod_zab::Zab;

fn sweep_protocol<P: Protocol>(
    nodes: usize,
    seeds: RangeInclusive<u64>,
    options: P::Options,
) -> Summary {
    sweep_template::<P>(RunConfig::new(0, nodes), seeds, options)
}

fn sweep_template<P: Protocol>(
    template: RunConfig,
    seeds: RangeInclusive<u64>,
    options: P::Options,
) -> Summary {
    let seeds: Vec<u64> = seeds.collect();
    Summary::of(&sweep::<P>(&seeds, &template, &options, 2, &|_, _, _| {}))
}

/// Sweeps `seeds` in order, a batch at a time, until a run fails in a way `caught` accepts.
/// A test that a broken rule is caught needs one catch; stopping there spares CI the rest of
/// the seeds. The seeds and their order are a whole sweep's, so the first catch is too.
fn sweep_until<P: Protocol>(
    template: RunConfig,
    seeds: RangeInclusive<u64>,
    options: P::Options,
    caught: impl Fn(&Violation) -> bool,
) -> Summary {
    let seeds: Vec<u64> = seeds.collect();
    let mut reports = Vec::new();
    for batch in seeds.chunks(8) {
        reports.extend(sweep::<P>(batch, &template, &options, 2, &|_, _, _| {}));
        if reports
            .iter()
            .any(|r| r.violation.as_ref().is_some_and(&caught))
        {
            break;
        }
    }
    Summary::of(&reports)
}

/// The seeds a sweep for a rarely caught bug runs (in CI and in every plain `cargo test`):
/// from `ci_start` to the end of `seeds`. Such a sweep goes on until a seed catches the bug, and from the first seed that
/// can take minutes when one seed in a hundred or two catches it. `ci_start` sits a few
/// batches before the first seed that catches it at this commit, so CI still sweeps seeds in
/// order and still goes on past that one if a change to what the simulator draws moved it.
/// `SYNOD_SWEEP_FROM_START=1` sweeps the whole range: run it after such a change, and move
/// `ci_start` to a few batches before the new first catch.
fn ci_seeds(ci_start: u64, seeds: RangeInclusive<u64>) -> RangeInclusive<u64> {
    if std::env::var_os("SYNOD_SWEEP_FROM_START").is_some_and(|v| v == "1") {
        seeds
    } else {
        ci_start.max(*seeds.start())..=*seeds.end()
    }
}

/// [`sweep_until`] any violation.
fn sweep_until_caught<P: Protocol>(
    template: RunConfig,
    seeds: RangeInclusive<u64>,
    options: P::Options,
) -> Summary {
    sweep_until::<P>(template, seeds, options, |_| true)
}

/// The first seed a sweep failed on, and the violation; says how many seeds it took.
fn first_caught(name: &str, summary: &Summary) -> (u64, Violation) {
    let (seed, first) = summary
        .failures
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("{name}: not caught in {} seeds", summary.runs));
    eprintln!(
        "{name}: {} of {} runs caught it, the first at seed {seed}: {first}",
        summary.failures.len(),
        summary.runs
    );
    (seed, first)
}

fn sweep_raft(nodes: usize, seeds: RangeInclusive<u64>, options: RaftOptions) -> Summary {
    sweep_protocol::<Raft>(nodes, seeds, options)
}

fn assert_clean(summary: &Summary) {
    assert!(summary.is_clean(), "violations:\n{:#?}", summary.failures);
    let t = &summary.totals;
    assert!(
        t.snapshots_taken > 0 && t.snapshots_installed > 0,
        "snapshots were taken and installed:\n{summary}"
    );
    assert!(
        t.disks_damaged > 0 && t.disks_refused > 0,
        "flipped bits were caught at restart:\n{summary}"
    );
    assert!(
        t.torn_writes_repaired > 0,
        "torn writes were cut off at restart:\n{summary}"
    );
    assert!(
        summary.totals.committed_commands > 1_000 * summary.runs,
        "the runs did real work:\n{summary}"
    );
    assert_eq!(
        summary.recovery_ticks.len() as u64,
        summary.runs,
        "every run recovered after the heal"
    );
}

#[test]
fn raft_on_3_nodes_is_clean_under_all_faults() {
    assert_clean(&sweep_raft(3, 1..=40, RaftOptions::default()));
}

#[test]
fn raft_on_5_nodes_is_clean_under_all_faults() {
    assert_clean(&sweep_raft(5, 1..=40, RaftOptions::default()));
}

#[test]
fn raft_on_7_nodes_is_clean_under_all_faults() {
    assert_clean(&sweep_raft(7, 1..=30, RaftOptions::default()));
}

#[test]
fn the_sweep_catches_reads_served_without_confirming_leadership() {
    let options = RaftOptions {
        tweak: Some(|c| c.bugs.read_without_confirmation = true),
    };
    // Check-quorum deposes a cut-off leader about as fast as the majority elects a new one,
    // so the stale window is short and only some seeds hit it.
    let summary = sweep_until::<Raft>(RunConfig::new(0, 5), 1..=300, options, |v| {
        v.kind == ViolationKind::Linearizability
    });
    let caught: Vec<_> = summary
        .failures
        .iter()
        .filter(|(_, v)| v.kind == ViolationKind::Linearizability)
        .collect();
    assert!(
        !caught.is_empty(),
        "stale reads went unnoticed over 300 seeds: {:?}",
        summary.failures
    );
    eprintln!("caught after {} runs: {}", summary.runs, caught[0].1);
}

#[test]
fn the_sweep_catches_granting_two_votes_in_a_term() {
    // Double votes matter only when candidates run at once; near-equal election timeouts
    // make that common, so the bug shows in more than a handful of seeds.
    let options = RaftOptions {
        tweak: Some(|c| {
            c.bugs.vote_twice_in_a_term = true;
            c.election_timeout_ticks_max = c.election_timeout_ticks_min + 2;
        }),
    };
    let summary = sweep_raft(5, 1..=100, options);
    assert!(
        !summary.is_clean(),
        "double voting went unnoticed over 100 seeds"
    );
    let (_, first) = &summary.failures[0];
    assert_eq!(first.kind, ViolationKind::Safety, "{first}");
    eprintln!(
        "{} of 100 runs caught it; first: {:?}",
        summary.failures.len(),
        summary.failures[0]
    );
}

/// A slot is chosen by a majority of its own voters: a Multi-Paxos leader that counts a
/// learner's acceptance (or a removed member's) decides values a majority never accepted,
/// and another leader chooses otherwise there.
#[test]
fn the_sweep_catches_a_multi_paxos_leader_counting_learners_in_a_majority() {
    let options = PaxosOptions {
        tweak: Some(|c| c.bugs.count_every_acceptance = true),
        ..PaxosOptions::default()
    };
    let mut template = RunConfig::new(0, 3);
    template.faults = FaultSet::parse("partition,crash,membership,delay").expect("fault names");
    template.nemesis_interval_ticks = (5, 60);
    let summary = sweep_until_caught::<MultiPaxos>(template, 1..=2_000, options);
    let (_, first) = first_caught("counting learners", &summary);
    assert_eq!(first.kind, ViolationKind::Safety, "{first}");
}

/// Only the voters in force make a ZAB quorum: a leader that counts learners (and members
/// being removed) commits what no majority of voters holds, and a later epoch's leader,
/// elected by voters that never saw it, drops it.
#[test]
fn the_sweep_catches_a_zab_leader_counting_learners_in_a_quorum() {
    let options = ZabOptions {
        tweak: Some(|c| c.bugs.count_every_follower = true),
    };
    let mut template = RunConfig::new(0, 3);
    template.faults = FaultSet::parse("partition,crash,membership,delay").expect("fault names");
    template.nemesis_interval_ticks = (5, 60);
    let summary = sweep_until_caught::<Zab>(template, 1..=2_000, options);
    let (_, first) = first_caught("counting learners", &summary);
    assert_eq!(first.kind, ViolationKind::Safety, "{first}");
}

/// Under synchronous replication an entry needs every voter in force at it: a primary that
/// waits only for the voters of its commit point commits without a voter just added, and a
/// failover to that voter (or the next check) finds a committed entry missing.
#[test]
fn the_sweep_catches_a_primary_that_does_not_wait_for_a_new_voter() {
    let options = PrimaryBackupOptions {
        tweak: Some(|c| c.bugs.commit_without_new_voters = true),
    };
    let mut template = RunConfig::new(0, 3);
    template.faults =
        FaultSet::parse("partition,crash,membership,leader-race,delay").expect("fault names");
    template.nemesis_interval_ticks = (5, 60);
    let summary = sweep_until_caught::<PrimaryBackup>(template, 1..=500, options);
    let (_, first) = first_caught("commits without a new voter", &summary);
    assert_eq!(first.kind, ViolationKind::Safety, "{first}");
}

#[test]
fn a_run_without_faults_elects_once_and_loses_nothing() {
    let mut config = RunConfig::new(7, 5);
    config.faults = FaultSet::NONE;
    let report = run::<Raft>(&config, &RaftOptions::default()).report;
    assert_eq!(report.violation, None);
    assert_eq!(report.stats.elections, 1);
    assert_eq!((report.stats.failed, report.stats.indeterminate), (0, 0));
    assert_eq!(report.stats.messages_dropped, 0);
}

#[test]
fn multi_paxos_on_3_5_and_7_nodes_is_clean_under_all_faults() {
    for (nodes, seeds) in [(3, 1..=25), (5, 1..=25), (7, 1..=15)] {
        assert_clean(&sweep_protocol::<MultiPaxos>(
            nodes,
            seeds,
            PaxosOptions::default(),
        ));
    }
}

#[test]
fn zab_on_3_5_and_7_nodes_is_clean_under_all_faults() {
    for (nodes, seeds) in [(3, 1..=25), (5, 1..=25), (7, 1..=15)] {
        assert_clean(&sweep_protocol::<Zab>(nodes, seeds, ZabOptions::default()));
    }
}

/// Synchronous primary-backup, with the operator failing over (the nemesis's MoveLeader, at
/// any member while the primary is down) and changing the membership (members that join take
/// the primary's snapshot). No disk is damaged for good (see
/// `Protocol::WRITES_NEED_EVERY_MEMBER`).
#[test]
fn sync_on_3_5_and_7_nodes_is_clean_under_all_faults() {
    for (nodes, seeds) in [(3, 1..=25), (5, 1..=25), (7, 1..=15)] {
        let summary = sweep_protocol::<PrimaryBackup>(nodes, seeds, Default::default());
        assert!(summary.is_clean(), "violations:\n{:#?}", summary.failures);
        let t = &summary.totals;
        assert!(t.crashes > 0 && t.torn_writes_repaired > 0, "{summary}");
        assert!(t.membership_changed > 0, "{summary}");
        assert!(t.committed_commands > 1_000 * summary.runs, "{summary}");
        assert_eq!(
            summary.recovery_ticks.len() as u64,
            summary.runs,
            "{summary}"
        );
    }
}

/// Failing over on a timeout, without consensus: a backup that stops hearing the primary
/// promotes itself, and a primary stops waiting for a backup it stops hearing. Both sides of
/// a partition then acknowledge writes.
#[test]
fn the_sweep_catches_sync_failing_over_by_itself() {
    let options = PrimaryBackupOptions {
        tweak: Some(|c| c.bugs.automatic_failover_ticks = 30),
    };
    let summary = sweep_protocol::<PrimaryBackup>(5, 1..=20, options);
    first_caught("sync failing over by itself", &summary);
}

/// DNS-style propagation under every fault: serials never go back, every acknowledged write
/// is applied, the copies converge after the heal. Its histories are not linearizable (reads
/// at secondaries and from the clients' caches are stale), which the sweep counts.
#[test]
fn dns_on_3_5_and_7_nodes_keeps_its_promises_under_all_faults() {
    for (nodes, seeds) in [(3, 1..=25), (5, 1..=25), (7, 1..=15)] {
        let summary = sweep_protocol::<Dns>(nodes, seeds, Default::default());
        assert!(summary.is_clean(), "violations:\n{:#?}", summary.failures);
        let t = &summary.totals;
        assert!(
            t.snapshots_installed > 0,
            "full transfers were sent: {summary}"
        );
        assert!(t.crashes > 0 && t.torn_writes_repaired > 0, "{summary}");
        assert!(t.stale_reads > 0 && t.reads_from_cache > 0, "{summary}");
        assert!(
            t.not_linearizable > 0,
            "stale reads break linearizability: {summary}"
        );
    }
}

/// Without faults, no read is staler than the refresh interval plus the clients' TTL (plus
/// the retry interval for the transfer): the run fails with a staleness violation if one is.
#[test]
fn dns_reads_without_faults_are_stale_by_at_most_refresh_plus_ttl() {
    let mut template = RunConfig::new(0, 5);
    template.faults = FaultSet::NONE;
    let summary = sweep_template::<Dns>(template, 1..=20, Default::default());
    assert!(summary.is_clean(), "violations:\n{:#?}", summary.failures);
    let t = &summary.totals;
    assert!(t.stale_reads > 0, "{summary}");
    let bound = <Dns as Protocol>::STALENESS_BOUND_US.unwrap();
    assert!(
        t.read_staleness_us.iter().all(|&us| us <= bound),
        "{summary}"
    );
}

/// A secondary that applies a transfer before it is durable goes back to an older serial
/// when a crash takes the transfer with it.
#[test]
fn the_sweep_catches_a_dns_secondary_applying_before_durable() {
    let options = DnsOptions {
        tweak: Some(|c| c.bugs.apply_before_durable = true),
    };
    let summary = sweep_protocol::<Dns>(3, 1..=30, options);
    let (_, first) = first_caught("dns applying before durable", &summary);
    assert!(first.detail.contains("serials never go back"), "{first}");
}

/// A primary that stops sending transfers leaves the secondaries behind for good: the
/// copies never converge, and without faults the reads there grow staler than the bound.
#[test]
fn the_sweep_catches_a_dns_primary_that_sends_no_transfers() {
    let options = DnsOptions {
        tweak: Some(|c| c.bugs.no_transfers = true),
    };
    let summary = sweep_protocol::<Dns>(3, 1..=3, options);
    let (_, first) = first_caught("dns without transfers", &summary);
    assert_eq!(first.kind, ViolationKind::Convergence, "{first}");
    let mut template = RunConfig::new(0, 3);
    template.faults = FaultSet::NONE;
    let summary = sweep_template::<Dns>(template, 1..=3, options);
    let (_, first) = first_caught("dns without transfers, no faults", &summary);
    assert_eq!(first.kind, ViolationKind::Staleness, "{first}");
}

/// Removing the DNS primary hands the zone to the next voter at the removal's serial: an old
/// primary that kept taking writes would give serials after it to other changes than the new
/// primary's, which the sweep sees as two changes applied at one serial.
#[test]
fn the_sweep_catches_a_removed_dns_primary_that_keeps_writing() {
    let options = DnsOptions {
        tweak: Some(|c| c.bugs.lead_after_own_removal = true),
    };
    let mut template = RunConfig::new(0, 3);
    template.faults = FaultSet::parse("partition,crash,membership,delay").expect("fault names");
    template.nemesis_interval_ticks = (5, 60);
    let summary = sweep_until_caught::<Dns>(template, 1..=500, options);
    let (_, first) = first_caught("a removed dns primary writing", &summary);
    assert_eq!(first.kind, ViolationKind::Safety, "{first}");
}

/// Gossip under every fault, at ONE and at QUORUM: replicas converge after the heal, every
/// acknowledged write is held at its version or a newer one everywhere, versions applied
/// only move forward. Its histories are not linearizable, which the sweep counts.
#[test]
fn gossip_on_3_5_and_7_nodes_keeps_its_promises_under_all_faults() {
    // Written in place, a small unsynced write mostly tears whole (a sector), so one size's
    // short sweep may repair none: counted over every size together.
    let mut torn_writes_repaired = 0;
    for (nodes, seeds, level) in [
        (3, 1..=25, Level::One),
        (5, 1..=25, Level::One),
        (7, 1..=15, Level::One),
        (5, 1..=20, Level::Quorum),
    ] {
        let options = GossipOptions {
            write_level: level,
            read_level: level,
            tweak: None,
        };
        let summary = sweep_protocol::<Gossip>(nodes, seeds, options);
        assert!(summary.is_clean(), "violations:\n{:#?}", summary.failures);
        let t = &summary.totals;
        assert!(t.crashes > 0, "{summary}");
        assert!(t.disks_replaced > 0, "members rejoined empty: {summary}");
        assert!(
            t.membership_changed > 0,
            "the operator changed memberships: {summary}"
        );
        assert!(t.stale_reads > 0, "{summary}");
        assert!(t.not_linearizable > 0, "{summary}");
        torn_writes_repaired += t.torn_writes_repaired;
    }
    assert!(torn_writes_repaired > 0, "no torn write was ever repaired");
}

/// A removed member that stops without handing over takes the writes only it held (at ONE,
/// during a partition) with it: caught as an acknowledged write the members lack.
#[test]
fn the_sweep_catches_a_removed_gossip_member_leaving_without_handing_over() {
    let options = GossipOptions {
        tweak: Some(|c| c.bugs.leave_without_handover = true),
        ..GossipOptions::default()
    };
    let mut template = RunConfig::new(0, 5);
    template.faults = FaultSet::parse("partition,membership,delay").expect("fault names");
    template.keys = 200;
    let summary = sweep_until_caught::<Gossip>(template, 1..=300, options);
    let (_, first) = first_caught("a removed gossip member leaving early", &summary);
    assert!(first.detail.contains("acknowledged write lost"), "{first}");
}

/// Without faults, a read at ONE is stale by at most the bound the simulator holds gossip to.
#[test]
fn gossip_reads_without_faults_stay_within_the_staleness_bound() {
    let mut template = RunConfig::new(0, 5);
    template.faults = FaultSet::NONE;
    let summary = sweep_template::<Gossip>(template, 1..=20, Default::default());
    assert!(summary.is_clean(), "violations:\n{:#?}", summary.failures);
    assert!(summary.totals.stale_reads > 0, "{summary}");
}

/// Without anti-entropy, versions whose pushes were lost (or sent while a member was down,
/// past its hints) never arrive: replicas do not converge.
#[test]
fn the_sweep_catches_gossip_without_anti_entropy() {
    let options = GossipOptions {
        tweak: Some(|c| c.bugs.no_anti_entropy = true),
        ..GossipOptions::default()
    };
    // Many keys: some are last written while a member is cut off, and nothing pushes them
    // again after the heal (on five keys, every key is written again after it).
    let mut template = RunConfig::new(0, 3);
    template.keys = 200;
    let summary = sweep_template::<Gossip>(template, 1..=10, options);
    let (_, first) = first_caught("gossip without anti-entropy", &summary);
    assert_eq!(first.kind, ViolationKind::Convergence, "{first}");
}

/// A merge that keeps the first version a replica heard of a key leaves replicas that
/// heard concurrent writes in different orders apart for good.
#[test]
fn the_sweep_catches_a_gossip_merge_that_keeps_the_first_version() {
    let options = GossipOptions {
        tweak: Some(|c| c.bugs.keep_first = true),
        ..GossipOptions::default()
    };
    let summary = sweep_protocol::<Gossip>(3, 1..=10, options);
    let (_, first) = first_caught("gossip keeping the first version", &summary);
    assert_eq!(first.kind, ViolationKind::Convergence, "{first}");
}

/// A member that applies and acknowledges a write before it is durable loses it in a crash
/// while its state machine (restored from a snapshot taken meanwhile) may keep it: caught
/// as replicas holding the same versions but different data, or as a lost write.
#[test]
fn the_sweep_catches_gossip_acknowledging_before_durable() {
    let options = GossipOptions {
        tweak: Some(|c| c.bugs.ack_before_durable = true),
        ..GossipOptions::default()
    };
    let mut template = RunConfig::new(0, 3);
    template.keys = 200;
    let summary = sweep_template::<Gossip>(template, 1..=30, options);
    let (_, first) = first_caught("gossip acknowledging before durable", &summary);
    assert!(
        first.detail.contains("acknowledged write lost") || first.detail.contains("different data"),
        "{first}"
    );
}

/// A leader that skips synchronization counts its initial history as committed on a quorum
/// that does not hold it.
#[test]
fn the_sweep_catches_zab_skipping_synchronization() {
    let options = ZabOptions {
        tweak: Some(|c| c.bugs.skip_synchronization = true),
    };
    let summary = sweep_protocol::<Zab>(5, 1..=12, options);
    first_caught("zab skipping synchronization", &summary);
    assert!(
        summary
            .failures
            .iter()
            .any(|(_, v)| v.kind == ViolationKind::Safety),
        "a history the new leader does not have is delivered: {:#?}",
        summary.failures
    );
}

#[test]
fn basic_paxos_on_3_and_5_nodes_is_clean_under_all_faults() {
    for (nodes, seeds) in [(3, 1..=15), (5, 1..=10)] {
        assert_clean(&sweep_protocol::<BasicPaxos>(
            nodes,
            seeds,
            PaxosOptions::default(),
        ));
    }
}

/// Engine state written per command, per node, over a few runs with twenty clients and no
/// snapshot to keep the acceptors small.
fn state_bytes_per_command<P: Protocol>(options: P::Options) -> u64 {
    let mut template = RunConfig::new(0, 3);
    template.faults = FaultSet::parse("delay,drop").unwrap();
    template.clients = 20;
    template.keys = 100;
    template.snapshot_every = 1_000_000;
    let summary = sweep_template::<P>(template, 1..=4, options);
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let t = &summary.totals;
    let per_command = t.state_bytes_persisted / t.committed_commands.max(1) / 3;
    eprintln!(
        "{}: {} commands, {} bytes of engine state persisted: {per_command} per command per node",
        P::NAME,
        t.committed_commands,
        t.state_bytes_persisted
    );
    per_command
}

/// What an engine writes beyond its log grows with what changed, not with what it holds:
/// here 135 (Multi) and 189 (Basic) bytes per command per node. Restating the whole acceptor
/// at every persist writes 559 and 1,111 here, and far more under real load: a follower of a
/// real cluster grew to 23.6 GB that way, while the simulator's frequent snapshots kept its
/// acceptors small and it checked only safety.
#[test]
fn paxos_state_written_per_command_stays_small_under_load() {
    assert!(state_bytes_per_command::<MultiPaxos>(PaxosOptions::default()) < 320);
    assert!(state_bytes_per_command::<BasicPaxos>(PaxosOptions::default()) < 320);
}

#[test]
fn the_sweep_catches_an_acceptor_that_forgets_its_promises_on_restart() {
    let options = PaxosOptions {
        tweak: Some(|c| c.bugs.forget_promises_on_restart = true),
        ..PaxosOptions::default()
    };
    for (name, summary) in [
        (
            "multi-paxos",
            sweep_until_caught::<MultiPaxos>(RunConfig::new(0, 3), 1..=250, options),
        ),
        (
            "basic-paxos",
            sweep_until_caught::<BasicPaxos>(RunConfig::new(0, 3), 1..=300, options),
        ),
    ] {
        // A forgotten promise only matters when a message under an older ballot reaches the
        // acceptor after its restart, so only some seeds hit it.
        let (_, first) = first_caught(name, &summary);
        assert!(
            first.detail.contains("broken promise") || first.kind == ViolationKind::Linearizability,
            "{first}"
        );
    }
}

#[test]
fn the_sweep_catches_an_acceptor_that_answers_before_persisting() {
    let options = PaxosOptions {
        tweak: Some(|c| c.bugs.answer_before_persisting = true),
        ..PaxosOptions::default()
    };
    let summary = sweep_protocol::<MultiPaxos>(3, 1..=5, options);
    let (_, first) = summary.failures.first().expect("caught");
    assert!(first.detail.contains("before persisting"), "{first}");
}

#[test]
fn the_sweep_catches_log_directories_not_made_durable() {
    // A node that crashes before its data directory was synced may come back with no log at
    // all: at term 0, having voted, holding none of what it acknowledged.
    let mut template = RunConfig::new(0, 5);
    template.storage_bugs = InjectedBugs {
        skip_directory_sync: true,
        ..InjectedBugs::NONE
    };
    // The storage faults alone: an operator's membership changes only dilute the crashes.
    template.faults.membership = false;
    // Raft's runs catch it rarely (5 of 400 seeds, the first at 141; 1 of 90 with the
    // snapshot format before): the sweep goes on until one does, over enough seeds that the
    // rate, not the luck of a few seeds, decides.
    let raft_seeds = ci_seeds(121, 1..=400);
    for (name, summary) in [
        (
            "raft",
            sweep_until_caught::<Raft>(template.clone(), raft_seeds, RaftOptions::default()),
        ),
        (
            "multi-paxos",
            sweep_template::<MultiPaxos>(template.clone(), 1..=30, PaxosOptions::default()),
        ),
    ] {
        first_caught(name, &summary);
    }
}

#[test]
fn the_sweep_catches_a_torn_write_taken_for_corruption() {
    // A node that refuses to start after a power loss tore its last write is a node that
    // cannot survive the most common crash there is.
    let mut template = RunConfig::new(0, 5);
    template.storage_bugs = InjectedBugs {
        torn_write_only_as_a_clean_cut: true,
        ..InjectedBugs::NONE
    };
    // The storage faults alone: an operator's membership changes only dilute the crashes.
    template.faults.membership = false;
    let summary = sweep_template::<Raft>(template, 1..=60, RaftOptions::default());
    let (_, first) = first_caught("raft", &summary);
    assert!(first.detail.contains("cannot open its disk"), "{first}");
}

#[test]
fn the_sweep_catches_a_leader_that_leads_on_after_learning_a_higher_decision() {
    let options = PaxosOptions {
        tweak: Some(|c| {
            c.bugs.lead_on_after_a_higher_decision = true;
        }),
        ..PaxosOptions::default()
    };
    let mut template = RunConfig::new(0, 5);
    template.faults = FaultSet::parse("leader-race,delay,drop").unwrap();
    // A race takes about fifty ticks: let each one play out before the next.
    template.nemesis_interval_ticks = (60, 120);
    template.clients = 10;
    // Members hold to a leader they still hear, so the race needs more seeds to land (8 of 600
    // caught it at an earlier commit; now the first is seed 181), the race being one of four
    // moves of this set.
    let summary = sweep_until_caught::<MultiPaxos>(template, ci_seeds(161, 1..=600), options);
    first_caught("multi-paxos", &summary);
}

/// Sweeps every protocol with one lease rule broken, until the lease checker objects. Basic
/// Paxos hands the keeper's clocks over far more often, so fewer of its seeds catch a bug: it
/// has seeds of its own.
fn lease_bug_caught(
    name: &str,
    bugs: LeaseBugs,
    seeds: RangeInclusive<u64>,
    basic_paxos_seeds: RangeInclusive<u64>,
) {
    // Pauses, partitions and moves of the leader (or lease keeper) while many clients hold
    // leases.
    let mut template = RunConfig::new(0, 3);
    template.faults = FaultSet::parse("pause,partition,skew,delay,leader-race").unwrap();
    template.clients = 10;
    template.nemesis_interval_ticks = (20, 150);
    template.lease_bugs = bugs;
    for (protocol, summary) in [
        (
            "raft",
            sweep_until_caught::<Raft>(template.clone(), seeds.clone(), RaftOptions::default()),
        ),
        (
            "multi-paxos",
            sweep_until_caught::<MultiPaxos>(
                template.clone(),
                seeds.clone(),
                PaxosOptions::default(),
            ),
        ),
        (
            "basic-paxos",
            sweep_until_caught::<BasicPaxos>(
                template.clone(),
                basic_paxos_seeds,
                PaxosOptions::default(),
            ),
        ),
    ] {
        let (_, first) = first_caught(&format!("{name} under {protocol}"), &summary);
        assert!(
            first.detail.contains("lease"),
            "{name} under {protocol}: caught by the lease checker, not {first}"
        );
    }
}

#[test]
fn the_sweep_catches_a_keep_alive_renewed_without_confirming_leadership() {
    let bugs = LeaseBugs {
        renew_without_confirming: true,
        ..LeaseBugs::NONE
    };
    lease_bug_caught(
        "renewing without confirming leadership",
        bugs,
        1..=300,
        1..=100,
    );
}

#[test]
fn the_sweep_catches_a_keep_alive_renewed_while_its_revoke_is_pending() {
    let bugs = LeaseBugs {
        renew_while_revoking: true,
        ..LeaseBugs::NONE
    };
    lease_bug_caught(
        "renewing a lease whose revoke is pending",
        bugs,
        1..=100,
        1..=100,
    );
}

#[test]
fn the_sweep_catches_an_expiry_revoke_committed_in_a_later_era() {
    let bugs = LeaseBugs {
        revoke_in_any_era: true,
        ..LeaseBugs::NONE
    };
    lease_bug_caught(
        "an expiry revoke not bound to its era",
        bugs,
        1..=100,
        1..=100,
    );
}

#[test]
fn the_sweep_catches_a_lease_granted_again_that_keeps_the_old_ones_clock() {
    let bugs = LeaseBugs {
        regrant_keeps_old_clock: true,
        ..LeaseBugs::NONE
    };
    // Clients grant the id of the lease they revoked last again. With `LeaseClocks::granted`
    // made to do nothing, `synod sim --protocol P --seeds 1..100 --faults all` found 72, 68,
    // 58 and 60 violating runs under raft, multi-paxos, basic-paxos and zab.
    lease_bug_caught(
        "a re-granted lease keeping the old clock",
        bugs,
        1..=100,
        1..=100,
    );
}

/// Basic Paxos, five members, every fault, ten clients that sometimes revoke a lease about
/// when its TTL runs out and grant its id again at once: the keeper, which learns decisions
/// late, may decide an expiry on a store that holds the old lease after the revoke and the
/// new grant were decided.
fn late_revokes(bugs: LeaseBugs) -> RunConfig {
    let mut template = RunConfig::new(0, 5);
    template.clients = 10;
    template.late_revokes = true;
    template.lease_bugs = bugs;
    template
}

#[test]
fn late_revokes_and_grants_of_the_same_id_keep_every_promise() {
    // `synod sim --protocol basic-paxos --nodes 5 --clients 10 --late-revokes --seeds 1..150`
    // was clean too.
    let summary = sweep_template::<BasicPaxos>(
        late_revokes(LeaseBugs::NONE),
        1..=16,
        PaxosOptions::default(),
    );
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
}

/// Seed 505 restarts n3 (killed, its next life to lose power) and hands it a Prepare before
/// its first tick: the checker must read what it restored at boot, not after that step, or it
/// counts the promise the step made, lost unsynced, as one the node's next life must keep.
#[test]
fn a_promise_made_in_the_first_step_of_a_life_and_lost_binds_no_later_life() {
    let summary = sweep_template::<BasicPaxos>(
        late_revokes(LeaseBugs::NONE),
        505..=505,
        PaxosOptions::default(),
    );
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
}

#[test]
fn the_sweep_catches_an_expiry_that_names_its_lease_by_id_only() {
    let bugs = LeaseBugs {
        expiry_by_id_only: true,
        ..LeaseBugs::NONE
    };
    // Caught at seeds 16, 85 and 141 of 1 to 150.
    let summary = sweep_until_caught::<BasicPaxos>(
        late_revokes(bugs),
        ci_seeds(9, 1..=300),
        PaxosOptions::default(),
    );
    let (_, first) = first_caught("an expiry by id only under basic-paxos", &summary);
    assert!(
        first.detail.contains("lease promise"),
        "caught by the lease checker, not {first}"
    );
}

#[test]
fn the_sweep_catches_a_new_leader_without_the_extension_on_promotion() {
    let bugs = LeaseBugs {
        no_extension_on_promotion: true,
        ..LeaseBugs::NONE
    };
    // Basic Paxos catches it first at seed 175 (none of seeds 1 to 100; seeds 175 and 200 of
    // 101 to 244, since grants and expiries name their lease's grant).
    let basic_paxos_seeds = ci_seeds(161, 1..=300);
    lease_bug_caught(
        "no extension on promotion",
        bugs,
        1..=300,
        basic_paxos_seeds,
    );
}
