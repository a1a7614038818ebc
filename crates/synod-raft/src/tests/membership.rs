//! Membership changes (thesis chapter 4): one server at a time, learners, a removed leader.

use synod_core::{Membership, MembershipChange, MembershipRefusal, NodeId, Rejection, Role};

use super::*;

fn add(url: &str, learner: bool) -> MembershipChange {
    MembershipChange::Add {
        peer_urls: vec![url.to_string()],
        learner,
    }
}

fn membership(c: &Cluster, id: u64) -> Membership {
    c.node(id).membership.clone()
}

fn refusals(c: &Cluster, id: u64) -> Vec<Rejection> {
    c.rejected
        .get(&NodeId(id))
        .map_or(vec![], |r| r.iter().map(|(_, why)| *why).collect())
}

/// Thesis 4.2.1: a new server joins as a learner, catches up from the leader's log (or its
/// snapshot), never votes and never counts; promoted, it counts like any voter.
#[test]
fn t4_2_1_a_learner_catches_up_without_voting_then_is_promoted() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.propose(1, (1..=5).map(|i| proposal(1, i)).collect());
    c.snapshot(1);
    c.propose(1, vec![proposal(1, 6)]);
    c.join(4);
    c.change(1, 1, add("http://n4:2380", true));
    let m = membership(&c, 1);
    assert_eq!(m.get(NodeId(4)).map(|m| m.learner), Some(true));
    c.tick(1, 5);
    assert_eq!(
        c.node(4).log.last_index(),
        c.node(1).log.last_index(),
        "the learner caught up, past the snapshot"
    );
    assert_eq!(membership(&c, 4), membership(&c, 1));
    // A learner never campaigns, however long it hears nothing.
    let term = c.node(1).term;
    c.drop_if = Some(Box::new(|_, to, _| to == NodeId(4)));
    c.tick(4, 200);
    c.drop_if = None;
    assert_eq!(c.node(4).role, Role::Follower);
    assert_eq!((c.node(4).term, c.node(1).term), (term, term));
    c.change(1, 2, MembershipChange::Promote { id: NodeId(4) });
    assert!(membership(&c, 1).is_voter(NodeId(4)));
    // Four voters now: n1 and n4 are two of them, not a majority; with n3 back they are.
    c.crash(2);
    c.crash(3);
    let before = c.node(1).commit_index;
    c.propose(1, vec![proposal(1, 7)]);
    c.tick(1, 3);
    assert_eq!(
        c.node(1).commit_index,
        before,
        "2 of 4 voters do not commit"
    );
    c.restart(3);
    c.tick(1, 3);
    assert!(c.node(1).commit_index > before, "3 of 4 voters commit");
    assert_eq!(c.safety_violation, None);
}

/// Thesis 4.1: one change at a time. A second one while the first is uncommitted, or before
/// the leader committed an entry of its own term (the 2015 erratum), is refused.
#[test]
fn t4_1_a_second_change_waits_for_the_first_to_commit() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.join(4);
    c.join(5);
    // Nothing reaches the others: the first change stays uncommitted.
    c.drop_if = Some(Box::new(|from, _, _| from == NodeId(1)));
    c.change(1, 1, add("http://n4:2380", false));
    c.change(1, 2, add("http://n5:2380", false));
    assert_eq!(
        refusals(&c, 1),
        vec![Rejection::Membership(MembershipRefusal::ChangePending)]
    );
    assert!(
        membership(&c, 1).contains(NodeId(4)),
        "in force once appended"
    );
    assert!(!membership(&c, 1).contains(NodeId(5)));
}

/// A change that would leave fewer live voters than a quorum, or promote a learner that is
/// far behind, is refused with etcd's reason; so are the ones the membership itself rules
/// out.
#[test]
fn unsafe_changes_are_refused_with_etcds_reasons() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.join(4);
    c.join(5);
    c.crash(4);
    c.tick_all(2);
    // n4 never started: adding it as a voter makes 4 voters of which 3 answer, fine; but
    // with n3 down too, 2 of 4 would not be a quorum.
    c.crash(3);
    c.tick(1, 20);
    c.change(1, 1, add("http://n4:2380", false));
    assert_eq!(
        refusals(&c, 1),
        vec![Rejection::Membership(MembershipRefusal::NotEnoughStarted)]
    );
    c.restart(3);
    c.tick_all(3);
    // A learner that never started is not in sync.
    c.change(1, 2, add("http://n4:2380", true));
    c.propose(1, (1..=20).map(|i| proposal(1, i)).collect());
    c.change(1, 3, MembershipChange::Promote { id: NodeId(4) });
    c.change(1, 4, MembershipChange::Promote { id: NodeId(2) });
    c.change(1, 5, MembershipChange::Remove { id: NodeId(9) });
    c.change(1, 6, add("http://n5:2380", true));
    let want = [
        MembershipRefusal::NotEnoughStarted,
        MembershipRefusal::LearnerNotReady,
        MembershipRefusal::NotLearner,
        MembershipRefusal::NotFound,
        MembershipRefusal::TooManyLearners,
    ];
    assert_eq!(refusals(&c, 1), want.map(Rejection::Membership).to_vec());
    // A follower refuses, pointing at the leader.
    c.change(2, 7, MembershipChange::Remove { id: NodeId(3) });
    assert_eq!(
        refusals(&c, 2),
        vec![Rejection::NotLeader {
            leader_hint: Some(NodeId(1))
        }]
    );
}

/// Thesis 4.2.2: a leader removed from the membership manages the cluster until the change
/// commits, without counting itself, then steps down; another voter takes over at once (it is
/// told to campaign) and the removed node never campaigns again.
#[test]
fn t4_2_2_a_removed_leader_steps_down_once_its_removal_commits() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.propose(1, vec![proposal(1, 1)]);
    c.change(1, 1, MembershipChange::Remove { id: NodeId(1) });
    assert_ne!(c.node(1).role, Role::Leader, "stepped down");
    let leader = c.leader().expect("a successor took over at once");
    assert_ne!(leader, NodeId(1));
    assert_eq!(
        membership(&c, leader.0).voters(),
        vec![NodeId(2), NodeId(3)]
    );
    let term = c.node(leader.0).term;
    c.tick(1, 300);
    assert_eq!(
        c.node(1).role,
        Role::Follower,
        "a removed node never campaigns"
    );
    c.tick_all(5);
    assert_eq!(
        c.node(leader.0).term,
        term,
        "and does not disturb the others"
    );
    assert_eq!(c.safety_violation, None);
}

/// Thesis 4.1: a node uses the newest membership in its log, committed or not, and the one
/// before when that entry is cut off by a new leader.
#[test]
fn t4_1_a_change_cut_from_the_log_is_undone() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.tick_all(2);
    c.join(4);
    // The change reaches nobody, and n1 crashes with it in its log.
    c.drop_if = Some(Box::new(|from, _, _| from == NodeId(1)));
    c.change(1, 1, add("http://n4:2380", true));
    assert!(
        membership(&c, 1).contains(NodeId(4)),
        "in force once appended"
    );
    c.crash(1);
    c.drop_if = None;
    c.tick_all(40);
    let leader = c.leader().expect("n2 or n3 leads");
    c.propose(leader.0, vec![proposal(2, 1)]);
    c.restart(1);
    c.tick(leader.0, 5);
    assert!(
        !membership(&c, 1).contains(NodeId(4)),
        "the change was cut from n1's log, and with it the learner"
    );
    assert_eq!(
        c.node(1).log.last_index(),
        c.node(leader.0).log.last_index()
    );
    assert_eq!(c.safety_violation, None);
}

/// A node restarted after the change entries were compacted into a snapshot runs with the
/// membership the snapshot saved, not the one it booted with.
#[test]
fn a_restarted_node_keeps_the_membership_its_snapshot_saved() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.join(4);
    c.change(1, 1, add("http://n4:2380", true));
    c.tick(1, 5);
    c.change(1, 2, MembershipChange::Promote { id: NodeId(4) });
    c.change(1, 3, MembershipChange::Remove { id: NodeId(3) });
    c.tick(1, 3);
    for id in [2, 4] {
        c.snapshot(id);
        c.crash(id);
        c.restart(id);
        assert_eq!(
            membership(&c, id).voters(),
            vec![NodeId(1), NodeId(2), NodeId(4)],
            "n{id} after a restart"
        );
    }
}
