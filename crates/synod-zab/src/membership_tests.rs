//! Membership changes across a few nodes wired together: learners follow and never count,
//! a caught-up learner is promoted, a removed leader abdicates once its removal commits,
//! and unsafe changes are refused with etcd's reasons.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use synod_core::testing::{add, Net as Wired};
use synod_core::{Engine, MembershipChange, MembershipRefusal, NodeId, Rejection, Role};

use crate::{Config, Zab};

/// Nodes wired together (see `synod_core::testing`), with what ZAB adds.
struct Net(Wired<Zab>);

impl std::ops::Deref for Net {
    type Target = Wired<Zab>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Net {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

fn config(id: u64, voters: &[u64]) -> Config {
    Config::new(NodeId(id), voters.iter().copied().map(NodeId).collect())
}

impl Net {
    fn new(voters: &[u64]) -> Net {
        let mut net = Net(Wired::default());
        for &id in voters {
            net.nodes
                .insert(NodeId(id), Zab::new(config(id, voters)).unwrap());
        }
        net
    }

    /// A node that joins: it knows no members.
    fn join(&mut self, id: u64) {
        self.nodes
            .insert(NodeId(id), Zab::new(config(id, &[])).unwrap());
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(id, z)| !self.cut.contains(id) && z.established_epoch().is_some())
            .map(|(&id, _)| id)
    }

    fn elect(&mut self) -> NodeId {
        for _ in 0..200 {
            self.run(1);
            if let Some(id) = self.leader() {
                return id;
            }
        }
        panic!("no leader elected");
    }

    fn propose(&mut self, at: NodeId) -> u64 {
        self.write(at)
    }
}

#[test]
fn a_learner_follows_counts_in_no_quorum_and_votes_once_promoted() {
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.elect();
    let first = net.propose(leader);
    net.run(5);
    net.join(4);
    net.change(leader, add("http://four", true));
    net.run(20);
    assert!(net.applied(4).contains(&first), "the learner caught up");
    assert_eq!(
        net.nodes[&NodeId(4)].status().role,
        Role::Follower,
        "it follows the leader it was invited by"
    );

    // With the other two voters cut off, the learner does not make a quorum.
    let others: Vec<NodeId> = [1, 2, 3]
        .into_iter()
        .map(NodeId)
        .filter(|&n| n != leader)
        .collect();
    net.cut.extend(others.iter().copied());
    let lonely = net.propose(leader);
    net.run(3);
    assert!(
        !net.applied(leader.0).contains(&lonely),
        "committed with a learner in the quorum"
    );
    net.cut.clear();
    let leader = net.elect();
    net.run(20);

    // Promoted, it counts: one voter of four down still leaves a quorum.
    let promoted = net.change(leader, MembershipChange::Promote { id: NodeId(4) });
    net.run(10);
    assert!(!net.refused.contains_key(&promoted), "{:?}", net.refused);
    assert!(net.nodes[&leader].membership.is_voter(NodeId(4)));
    let down = others[0];
    net.cut.insert(down);
    let with_four = net.propose(leader);
    net.run(5);
    assert!(net.applied(4).contains(&with_four));
    assert!(net.applied(leader.0).contains(&with_four));
}

#[test]
fn a_removed_leader_abdicates_once_its_removal_commits_and_the_rest_elect_another() {
    let mut net = Net::new(&[1, 2, 3, 4]);
    let leader = net.elect();
    net.run(10);
    let removal = net.change(leader, MembershipChange::Remove { id: leader });
    net.run(3);
    assert!(!net.refused.contains_key(&removal));
    assert_ne!(
        net.nodes[&leader].status().role,
        Role::Leader,
        "it stepped down once the change committed"
    );
    net.cut.insert(leader);
    let next = net.elect();
    assert_ne!(next, leader);
    let write = net.propose(next);
    net.run(5);
    for id in [1, 2, 3, 4].into_iter().filter(|&n| n != leader.0) {
        assert!(net.applied(id).contains(&write), "node {id}");
    }
    assert!(!net.nodes[&next].membership.contains(leader));
}

#[test]
fn unsafe_changes_are_refused_with_etcds_reasons() {
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.elect();
    net.run(5);
    let follower = [1, 2, 3].map(NodeId).into_iter().find(|&n| n != leader);
    let refusal = |net: &Net, id| match net.refused.get(&id) {
        Some(Rejection::Membership(r)) => Some(*r),
        _ => None,
    };

    // A follower refuses: only the leader changes the membership.
    let at_follower = net.change(follower.unwrap(), add("http://x", true));
    assert!(matches!(
        net.refused.get(&at_follower),
        Some(Rejection::NotLeader { .. })
    ));

    // A second change while the first is uncommitted.
    net.join(4);
    net.change(leader, add("http://four", true));
    let second = net.change(leader, add("http://five", false));
    assert_eq!(
        refusal(&net, second),
        Some(MembershipRefusal::ChangePending)
    );
    net.run(5);

    // A learner far behind is not promoted (node 4 cut off from the start of a long log).
    net.cut.insert(NodeId(4));
    for _ in 0..20 {
        net.propose(leader);
    }
    net.run(5);
    let early = net.change(leader, MembershipChange::Promote { id: NodeId(4) });
    assert_eq!(
        refusal(&net, early),
        Some(MembershipRefusal::LearnerNotReady)
    );

    // Two voters down of four: a new voter that is not even started would lose the quorum.
    net.cut.clear();
    net.run(20);
    let others: Vec<NodeId> = [1, 2, 3]
        .map(NodeId)
        .into_iter()
        .filter(|&n| n != leader)
        .collect();
    net.cut.insert(others[0]);
    let session = net.nodes[&leader].config.session_timeout_ticks_min;
    net.run(session + 1);
    let unstarted = net.change(leader, add("http://six", false));
    assert_eq!(
        refusal(&net, unstarted),
        Some(MembershipRefusal::NotEnoughStarted)
    );
}

/// Runs until a leader other than `not` is established, or panics.
fn elect_other_than(net: &mut Net, not: NodeId, within: u64) -> NodeId {
    for _ in 0..within {
        net.run(1);
        assert_eq!(
            net.nodes[&not].established_epoch(),
            None,
            "a node that is no voter in its own eyes leads"
        );
        if let Some(id) = net.leader().filter(|&id| id != not) {
            return id;
        }
    }
    panic!("no leader elected in {within} ticks");
}

#[test]
fn a_leader_whose_removal_is_uncommitted_and_that_stays_up_is_never_elected_again() {
    // Equal histories elect the highest id: node 3.
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.elect();
    assert_eq!(leader, NodeId(3));
    net.run(5);
    // Its removal reaches node 1 only; with node 2 cut off it cannot commit, and node 3,
    // no voter in its own eyes, hears too few voters and abdicates.
    net.cut.insert(NodeId(2));
    net.change(leader, MembershipChange::Remove { id: leader });
    net.run(60);
    assert_eq!(net.nodes[&leader].established_epoch(), None);
    // Node 3 and node 1 hold the removal and the best history; node 2 does not, and still
    // counts node 3. Node 3 must not be named: it would never lead.
    net.cut.clear();
    let next = elect_other_than(&mut net, leader, 300);
    let write = net.propose(next);
    net.run(5);
    assert!(net.applied(1).contains(&write) && net.applied(2).contains(&write));
}

#[test]
fn a_removed_leader_left_running_beside_a_voter_that_missed_its_removal_is_never_elected() {
    let mut net = Net::new(&[1, 2, 3, 4]);
    let leader = net.elect();
    assert_eq!(leader, NodeId(4));
    net.run(5);
    // Nodes 1 and 2 commit the removal; node 3 misses it and still counts node 4.
    net.cut.insert(NodeId(3));
    net.change(leader, MembershipChange::Remove { id: leader });
    net.run(3);
    assert_eq!(net.nodes[&leader].established_epoch(), None, "it abdicated");
    net.cut.clear();
    let next = elect_other_than(&mut net, leader, 300);
    let write = net.propose(next);
    net.run(5);
    for id in [1, 2, 3] {
        assert!(net.applied(id).contains(&write), "node {id}");
    }
}
