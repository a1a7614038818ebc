//! Synchronous primary-backup under the faults that define it, through the simulator's
//! vocabulary. Every step of every scenario also runs the sweep's checks, among them that a
//! committed entry is on every member.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use synod_core::{NodeId, Role};
use synod_primary_backup::PrimaryBackup;
use synod_replica::PrimaryBackupOptions;
use synod_sim::scenario::Scenario;
use synod_sim::ViolationKind;

fn cluster(nodes: usize, seed: u64) -> Scenario<PrimaryBackup> {
    let mut s = Scenario::<PrimaryBackup>::new(nodes, seed);
    s.clients(4);
    s
}

fn others(nodes: u64, but: NodeId) -> Vec<NodeId> {
    (1..=nodes).map(NodeId).filter(|&n| n != but).collect()
}

/// The choice this model makes: while one backup is cut off, no write is acknowledged (by
/// fewer than all), and no one takes over; when it is back, writes go on.
#[test]
fn writes_wait_while_a_backup_is_cut_off_and_go_on_when_it_is_back() {
    let mut s = cluster(3, 21);
    let primary = s.run_until_leader();
    s.run_ticks(100);
    let backup = others(3, primary)[0];
    s.isolate(backup).run_ticks(20);
    let stalled = s.committed_writes();
    s.run_ticks(300);
    assert_eq!(s.committed_writes(), stalled, "nothing commits without it");
    assert_eq!(s.leader(), Some(primary), "and no one takes over");
    s.heal().run_ticks(200);
    assert!(s.committed_writes() > stalled, "writes go on");
    s.assert_linearizable();
}

/// An operator moves the primary, while clients write: the named member takes the next
/// view, brings every backup to its history, and commits; the old primary, fenced by the
/// backups that moved on, follows it.
#[test]
fn an_operator_failover_moves_the_primary_and_loses_nothing() {
    let mut s = cluster(3, 22);
    let old = s.run_until_leader();
    s.run_ticks(100);
    let [next, relay] = others(3, old)[..] else {
        unreachable!()
    };
    s.move_leader(relay, next).run_ticks(50);
    assert_eq!(s.leader(), Some(next));
    assert_eq!(s.status(old).unwrap().leader, Some(next));
    let before = s.committed_writes();
    s.run_ticks(100);
    assert!(s.committed_writes() > before, "the new primary commits");
    s.assert_linearizable();
}

/// A primary cut off from every backup, with failover on a timeout and without consensus:
/// the old primary stops waiting for the backups and commits alone, the backups promote one
/// of themselves, which leads without what the old one committed. The checker stops the run
/// there: two primaries at once, and a committed write lost to the new one.
#[test]
fn failing_over_on_a_timeout_splits_the_brain() {
    let options = PrimaryBackupOptions {
        tweak: Some(|c| c.bugs.automatic_failover_ticks = 30),
    };
    let mut s = Scenario::<PrimaryBackup>::with_options(3, 23, options);
    s.clients(4);
    let old = s.run_until_leader();
    s.run_ticks(100);
    assert!(s.violation().is_none());
    s.isolate(old).run_ticks_to_violation(300);
    let violation = s.violation().expect("the checker reports it").clone();
    assert_eq!(violation.kind, ViolationKind::Safety, "{violation}");
    assert!(
        violation.detail.contains("leader completeness")
            || violation.detail.contains("on every member"),
        "{violation}"
    );
    let cut_off = s.status(old).unwrap();
    assert_eq!(
        cut_off.role,
        Role::Leader,
        "the old primary still acknowledges writes, alone"
    );
    let new = s.leader().expect("a backup promoted itself");
    assert_ne!(new, old);
    assert!(s.status(new).unwrap().era > cut_off.era);
}
