//! ZAB under the faults its papers single out, through the simulator's vocabulary. Every
//! step of every scenario also runs the sweep's checks: one established leader per epoch,
//! primary integrity, local primary order and agreement of what replicas deliver.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use synod_core::{NodeId, Role};
use synod_sim::scenario::Scenario;
use synod_zab::Zab;

fn cluster(nodes: usize, seed: u64) -> Scenario<Zab> {
    let mut s = Scenario::<Zab>::new(nodes, seed);
    s.clients(4);
    s
}

/// The leader crashes; the node that then proposes the next epoch crashes too, in the middle
/// of discovery or synchronization. A third leader establishes an epoch, and nothing the
/// first one committed is lost.
#[test]
fn a_leader_crash_during_synchronization_loses_nothing_committed() {
    // A seed whose message delays make discovery last more than a tick, so the test sees
    // the prospective leader before it is established.
    let mut s = cluster(5, 13);
    let first = s.run_until_leader();
    s.run_ticks(150);
    let era = s.status(first).unwrap().era;
    s.crash(first);
    let mut prospective = None;
    for _ in 0..500 {
        s.run_ticks(1);
        prospective = (1..=5).map(NodeId).find(|&n| {
            s.status(n)
                .is_some_and(|st| st.role == Role::Candidate && st.era > era)
        });
        if prospective.is_some() {
            break;
        }
    }
    let prospective = prospective.expect("a node proposed the next epoch");
    s.crash(prospective).run_ticks(300);
    let third = s.run_until_leader();
    assert!(third != first && third != prospective);
    let before = s.committed_writes();
    s.run_ticks(100);
    assert!(s.committed_writes() > before, "the third leader commits");
    s.restart(first).restart(prospective).run_ticks(200);
    assert_eq!(s.status(first).unwrap().leader, Some(third));
    assert_eq!(s.status(prospective).unwrap().leader, Some(third));
    s.assert_linearizable();
}

/// A leader cut off from every other member goes on taking its clients' writes into its
/// history, commits none of them, and abdicates once its followers' pings stop; the rest
/// elect another leader and go on committing.
#[test]
fn a_partitioned_leader_that_keeps_receiving_writes_commits_none_and_abdicates() {
    let mut s = cluster(5, 13);
    let old = s.run_until_leader();
    s.run_ticks(100);
    let committed = s.status(old).unwrap().commit_index;
    s.isolate(old).run_ticks(10);
    assert_eq!(s.status(old).unwrap().role, Role::Leader, "not yet noticed");
    s.run_ticks(200);
    let cut_off = s.status(old).unwrap();
    assert_ne!(cut_off.role, Role::Leader, "it abdicated");
    assert!(
        cut_off.last_index > committed,
        "it took writes into its history while it still led"
    );
    assert_eq!(
        cut_off.commit_index, committed,
        "and committed none of them"
    );
    let new = s.leader().expect("the majority elects a leader");
    assert_ne!(new, old);
    let before = s.committed_writes();
    s.run_ticks(100);
    assert!(s.committed_writes() > before);
    s.heal().run_ticks(200);
    assert_eq!(s.status(old).unwrap().leader, Some(new));
    s.assert_linearizable();
}

/// A follower holding transactions only it and a deposed leader have (proposed to it while
/// the two were cut off from the majority, so never committed) gives them up when it joins
/// the new leader: synchronization truncates them, and the new leader's history wins.
#[test]
fn a_follower_with_a_longer_uncommitted_history_gives_it_up() {
    let mut s = cluster(5, 13);
    let old = s.run_until_leader();
    s.run_ticks(100);
    let buddy = (1..=5).map(NodeId).find(|&n| n != old).unwrap();
    let rest: Vec<NodeId> = (1..=5)
        .map(NodeId)
        .filter(|&n| n != old && n != buddy)
        .collect();
    s.partition(&[old, buddy], &rest).run_ticks(10);
    let held = s.status(buddy).unwrap();
    assert!(
        held.last_index > held.commit_index,
        "the buddy holds proposals of the cut-off leader that cannot commit"
    );
    s.run_ticks(200);
    let new = s.leader().expect("the majority elects a leader");
    assert!(!(new == old || new == buddy));
    s.heal().run_ticks(200);
    let joined = s.status(buddy).unwrap();
    assert_eq!(joined.leader, Some(new));
    let leader = s.status(new).unwrap();
    assert!(
        joined.commit_index + 20 >= leader.commit_index,
        "it caught up"
    );
    s.assert_linearizable();
}
