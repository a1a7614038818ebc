//! Hand-written fault scenarios, through the simulator's vocabulary.

#![allow(clippy::unwrap_used)] // tests and benchmarks fail loudly on purpose

use synod_core::{NodeId, Role};
use synod_raft::Raft;
use synod_sim::scenario::Scenario;

fn cluster(nodes: usize, seed: u64) -> Scenario<Raft> {
    let mut s = Scenario::<Raft>::new(nodes, seed);
    s.clients(4);
    s
}

fn others(all: usize, but: NodeId) -> Vec<NodeId> {
    (1..=all as u64).map(NodeId).filter(|&n| n != but).collect()
}

#[test]
fn an_isolated_leader_steps_down_and_the_majority_elects_another() {
    let mut s = cluster(5, 1);
    let old = s.run_until_leader();
    s.run_ticks(100);
    s.isolate(old).run_ticks(200);
    let new = s.leader().expect("the majority side elects a leader");
    assert_ne!(new, old);
    assert_ne!(
        s.status(old).unwrap().role,
        Role::Leader,
        "check-quorum deposed the old leader"
    );
    let before = s.committed_writes();
    s.run_ticks(100);
    assert!(
        s.committed_writes() > before,
        "the majority keeps committing"
    );
    s.heal().run_ticks(100);
    assert_eq!(
        s.status(old).unwrap().leader,
        Some(new),
        "the old leader rejoins as a follower"
    );
    s.assert_linearizable();
}

#[test]
fn a_crashed_leader_is_replaced_and_catches_up_after_restart() {
    let mut s = cluster(3, 2);
    let old = s.run_until_leader();
    s.run_ticks(150);
    s.crash(old).run_ticks(100);
    let new = s.run_until_leader();
    assert_ne!(new, old);
    s.run_ticks(100).restart(old).run_ticks(100);
    let (old_status, new_status) = (s.status(old).unwrap(), s.status(new).unwrap());
    assert_eq!(old_status.leader, Some(new));
    assert!(
        old_status.commit_index + 10 >= new_status.commit_index,
        "the restarted node caught up"
    );
    s.assert_linearizable();
}

#[test]
fn a_minority_partition_cannot_commit_but_the_majority_can() {
    let mut s = cluster(5, 3);
    let leader = s.run_until_leader();
    s.run_ticks(50);
    // The leader and one follower on one side, three nodes on the other.
    let rest = others(5, leader);
    let minority = [leader, rest[0]];
    s.partition(&minority, &rest[1..]).run_ticks(300);
    let majority_leader = s.leader().expect("a leader on the majority side");
    assert!(rest[1..].contains(&majority_leader));
    let minority_commit = s.status(rest[0]).unwrap().commit_index;
    s.run_ticks(200);
    assert_eq!(
        s.status(rest[0]).unwrap().commit_index,
        minority_commit,
        "nothing commits on the minority side"
    );
    s.heal();
    s.assert_linearizable();
}

#[test]
fn a_bridge_node_between_two_halves_does_not_break_safety() {
    let mut s = cluster(5, 4);
    s.run_until_leader();
    s.run_ticks(50);
    // n3 sees everyone; {n1, n2} and {n4, n5} cannot see each other.
    s.partition(&[NodeId(1), NodeId(2)], &[NodeId(4), NodeId(5)])
        .run_ticks(500);
    assert!(s.leader().is_some());
    s.heal();
    s.assert_linearizable();
}

#[test]
fn the_whole_cluster_restarts_from_disk_without_losing_an_acknowledged_write() {
    let mut s = cluster(3, 5);
    s.run_until_leader();
    s.run_ticks(200);
    let answered = s.completed_operations();
    assert!(answered > 100);
    for n in 1..=3 {
        s.crash(NodeId(n));
    }
    s.run_ticks(50);
    for n in 1..=3 {
        s.restart(NodeId(n));
    }
    s.run_until_leader();
    s.run_ticks(200);
    assert!(s.completed_operations() > answered, "service resumed");
    // Every write acknowledged before the crash must still be visible to the reads after it.
    s.assert_linearizable();
}

#[test]
fn repeated_leader_isolation_keeps_the_history_linearizable() {
    let mut s = cluster(5, 6);
    for _ in 0..5 {
        let leader = s.run_until_leader();
        s.run_ticks(60);
        s.isolate(leader).run_ticks(80);
        s.heal().run_ticks(40);
    }
    s.assert_linearizable();
}

mod paxos {
    use synod_core::NodeId;
    use synod_paxos::{BasicPaxos, MultiPaxos};
    use synod_sim::scenario::Scenario;

    #[test]
    fn multi_paxos_survives_an_isolated_leader_and_its_return() {
        let mut s = Scenario::<MultiPaxos>::new(5, 11);
        s.clients(4);
        let old = s.run_until_leader();
        s.run_ticks(100);
        s.isolate(old).run_ticks(200);
        let new = s.leader().expect("the majority elects a leader");
        assert_ne!(new, old);
        let before = s.committed_writes();
        s.run_ticks(100);
        assert!(s.committed_writes() > before, "the majority keeps deciding");
        s.heal().run_ticks(100);
        s.assert_linearizable();
    }

    #[test]
    fn basic_paxos_dueling_proposers_with_crashes_stay_linearizable() {
        let mut s = Scenario::<BasicPaxos>::new(3, 12);
        s.clients(9);
        s.run_ticks(200);
        s.crash(NodeId(2))
            .run_ticks(150)
            .restart(NodeId(2))
            .run_ticks(150);
        assert!(s.committed_writes() > 100);
        s.assert_linearizable();
    }
}

/// Raft's single-server changes, forced into the one shape where they matter.
mod membership {
    use synod_core::{MembershipChange, NodeId};
    use synod_raft::Raft;
    use synod_sim::scenario::Scenario;
    use synod_sim::{RaftOptions, ViolationKind};

    /// The leader of three is asked to add both spares as voters at once, just after a
    /// partition put it and the spares on one side and the two old voters on the other. If
    /// both additions went into its log, its side would be a majority of the five and the
    /// old voters a majority of the three they know, and each side would commit on its own.
    fn add_two_voters_across_a_split(options: RaftOptions) -> (Scenario<Raft>, NodeId) {
        let mut s = Scenario::<Raft>::with_spares(3, 21, options);
        s.clients(4);
        let leader = s.run_until_leader();
        s.run_ticks(100);
        let spares = s.spares();
        let old: Vec<NodeId> = (1..=3).map(NodeId).filter(|&n| n != leader).collect();
        let side: Vec<NodeId> = [leader].iter().chain(&spares).copied().collect();
        s.partition(&side, &old);
        let adds = spares
            .iter()
            .map(|n| MembershipChange::Add {
                peer_urls: vec![format!("sim://{n}")],
                learner: false,
            })
            .collect();
        s.change_membership(leader, adds);
        (s, leader)
    }

    #[test]
    fn a_second_change_waits_for_the_first_so_a_split_cannot_elect_two_majorities() {
        let (mut s, old_leader) = add_two_voters_across_a_split(RaftOptions::default());
        s.run_ticks(400);
        let (asked, _, refused) = s.membership_changes();
        assert_eq!((asked, refused), (2, 1), "the second change is refused");
        let leader = s.leader().expect("the old voters elect a leader");
        assert_ne!(leader, old_leader, "the leader lost its majority of four");
        let voters = s.membership(leader).unwrap().voters();
        assert_eq!(
            voters.len(),
            3,
            "the first change never committed: {voters:?}"
        );
        s.heal();
        s.assert_linearizable();
    }

    #[test]
    fn the_checker_catches_a_change_started_while_another_is_pending() {
        let options = RaftOptions {
            tweak: Some(|c| c.bugs.change_membership_while_pending = true),
        };
        let (mut s, _) = add_two_voters_across_a_split(options);
        s.run_ticks_to_violation(600);
        let violation = s.violation().expect("two majorities commit apart");
        assert_eq!(violation.kind, ViolationKind::Safety, "{violation}");
    }
}
