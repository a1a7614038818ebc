//! Leader election: paper 5.1, 5.2, 5.4.1; thesis 4.2.3 (leases against disruption),
//! 6.2 (check-quorum) and 9.6 (pre-vote).

use synod_core::{Input, NodeId, Role};

use super::*;
use crate::{Message, VoteRequest, VoteResponse};

fn without_pre_vote(c: &mut Config) {
    c.pre_vote = false;
}

fn vote_request(term: u64, last_log_index: u64, last_log_term: u64) -> Message {
    Message::RequestVote(VoteRequest {
        term,
        last_log_index,
        last_log_term,
        leader_transfer: false,
    })
}

fn answer(raft: &mut Raft, from: u64, message: Message) -> Vec<Message> {
    sends(&step(
        raft,
        Input::Receive {
            from: NodeId(from),
            message,
        },
    ))
    .into_iter()
    .map(|(_, m)| m)
    .collect()
}

#[test]
fn s5_2_election_timeouts_are_randomized_within_their_bounds() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let mut c = config(1, 3);
        c.seed = seed;
        let mut raft = Raft::new(c.clone()).unwrap();
        let mut elapsed = 0;
        while raft.role == Role::Follower {
            step(&mut raft, Input::Tick);
            elapsed += 1;
        }
        assert!((c.election_timeout_ticks_min..c.election_timeout_ticks_max).contains(&elapsed));
        seen.insert(elapsed);
    }
    assert!(
        seen.len() > 10,
        "timeouts spread over the range, not one value: {seen:?}"
    );
}

#[test]
fn s5_2_a_candidate_with_votes_from_a_majority_becomes_leader() {
    let mut c = Cluster::new(5, without_pre_vote);
    c.campaign(3);
    assert_eq!(c.leader(), Some(NodeId(3)));
    assert_eq!(c.node(3).term, 1);
    // Its first heartbeat round makes every node follow it.
    c.tick(3, 3);
    for id in 1..=5 {
        assert_eq!(c.node(id).leader, Some(NodeId(3)), "n{id}");
    }
}

#[test]
fn s5_2_each_server_votes_for_at_most_one_candidate_per_term_first_come_first_served() {
    let mut n3 = Raft::new(config(3, 3)).unwrap();
    assert_eq!(
        answer(&mut n3, 1, vote_request(1, 0, 0)),
        vec![vote(1, true)]
    );
    assert_eq!(
        answer(&mut n3, 2, vote_request(1, 0, 0)),
        vec![vote(1, false)],
        "a second candidate in the same term is refused"
    );
    assert_eq!(
        answer(&mut n3, 1, vote_request(1, 0, 0)),
        vec![vote(1, true)],
        "a retried request from the same candidate gets the same answer"
    );
}

#[test]
fn s5_2_a_candidate_that_hears_from_a_leader_of_its_term_returns_to_follower() {
    let mut c = config(2, 3);
    c.pre_vote = false;
    let mut n2 = Raft::new(c).unwrap();
    let timeout = n2.election_timeout;
    ticks(&mut n2, timeout);
    assert_eq!((n2.role, n2.term), (Role::Candidate, 1));
    receive(&mut n2, 1, empty_append(1));
    assert_eq!((n2.role, n2.leader), (Role::Follower, Some(NodeId(1))));
}

#[test]
fn s5_2_a_split_vote_is_followed_by_a_new_election_in_a_higher_term() {
    let mut c = Cluster::new(4, without_pre_vote);
    // n1 and n2 campaign at once; n3 votes for n1, n4 for n2: no majority of 4.
    c.drop_if = Some(Box::new(|from, to, m| {
        matches!(m, Message::RequestVote(_))
            && ((from == NodeId(1) && to == NodeId(4)) || (from == NodeId(2) && to == NodeId(3)))
    }));
    for id in [1, 2] {
        let node = NodeId(id);
        while c.nodes[&node].role == Role::Follower {
            c.step(node, Input::Tick);
        }
    }
    c.deliver_all();
    assert_eq!(c.leader(), None);
    assert_eq!(
        (c.node(1).role, c.node(2).role),
        (Role::Candidate, Role::Candidate)
    );
    c.drop_if = None;
    c.campaign(1);
    assert_eq!(c.leader(), Some(NodeId(1)));
    assert_eq!(c.node(1).term, 2);
}

#[test]
fn s5_1_a_leader_that_sees_a_higher_term_steps_down() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.step(
        NodeId(1),
        Input::Receive {
            from: NodeId(2),
            message: empty_append(7),
        },
    );
    let n1 = c.node(1);
    assert_eq!(
        (n1.role, n1.term, n1.leader),
        (Role::Follower, 7, Some(NodeId(2)))
    );
}

#[test]
fn s5_1_a_request_with_a_stale_term_is_rejected_with_the_current_term() {
    // Without leases, so that n2 can depose a live n1 and make term 1 stale.
    let mut c = Cluster::new(3, |c| c.check_quorum = false);
    c.elect(1);
    c.elect(2);
    assert_eq!(c.node(2).term, 2);
    let mut n3 = Raft::restart(
        config(3, 3),
        c.disks[&NodeId(3)].hard_state.as_deref(),
        None,
        c.disks[&NodeId(3)].entries.clone(),
    )
    .unwrap();
    let replies = answer(&mut n3, 1, empty_append(1));
    assert!(
        matches!(&replies[..], [Message::AppendEntriesResponse(r)] if r.term == 2 && matches!(r.outcome, crate::AppendOutcome::Rejected { .. }))
    );
    assert_eq!(n3.leader, None, "a stale leader is not followed");
    assert_eq!(
        answer(&mut n3, 1, vote_request(1, 9, 9)),
        vec![vote(2, false)]
    );
}

#[test]
fn s5_4_1_votes_go_only_to_candidates_whose_log_is_at_least_as_up_to_date() {
    let mut c = Cluster::new(3, |_| {});
    c.stage(1, 3, None, &[1, 2, 3]);
    // A later last term beats a longer log.
    let mut n1 = c.nodes.remove(&NodeId(1)).unwrap();
    n1.config.check_quorum = false;
    let refuse = |term| {
        vec![Message::RequestVoteResponse(VoteResponse {
            term,
            granted: false,
        })]
    };
    assert_eq!(
        answer(&mut n1, 2, vote_request(4, 10, 2)),
        refuse(4),
        "older last term loses despite length"
    );
    assert_eq!(
        answer(&mut n1, 2, vote_request(5, 2, 3)),
        refuse(5),
        "same last term, shorter log loses"
    );
    assert_eq!(
        answer(&mut n1, 3, vote_request(6, 1, 4)),
        vec![vote(6, true)],
        "a later last term wins even when shorter"
    );
}

#[test]
fn t9_6_a_partitioned_node_does_not_inflate_its_term_and_rejoins_without_disruption() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.drop_if = Some(Box::new(|from, to, _| from == NodeId(3) || to == NodeId(3)));
    for _ in 0..300 {
        c.tick_all(1);
    }
    assert_eq!(
        c.node(3).term,
        1,
        "pre-votes never succeed, so the term never rises"
    );
    assert_eq!(c.node(3).role, Role::PreCandidate);
    c.drop_if = None;
    c.tick_all(10);
    assert_eq!(c.leader(), Some(NodeId(1)), "the leader keeps its place");
    assert_eq!(c.node(1).term, 1);
    assert_eq!(c.node(3).leader, Some(NodeId(1)));
}

#[test]
fn t9_6_granting_a_pre_vote_changes_no_state() {
    let mut n2 = Raft::new(config(2, 3)).unwrap();
    let request = Message::PreVote(VoteRequest {
        term: 5,
        last_log_index: 0,
        last_log_term: 0,
        leader_transfer: false,
    });
    let actions = step(
        &mut n2,
        Input::Receive {
            from: NodeId(1),
            message: request,
        },
    );
    assert_eq!(
        actions,
        vec![synod_core::Action::Send {
            to: NodeId(1),
            message: Message::PreVoteResponse(VoteResponse {
                term: 5,
                granted: true
            })
        }],
        "no persist: neither the term nor a vote changed"
    );
    assert_eq!((n2.term, n2.voted_for), (0, None));
}

#[test]
fn t4_2_3_a_follower_that_hears_from_a_live_leader_ignores_vote_requests() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.tick(1, 3);
    let before = c.node(2).term;
    let mut n2 = c.nodes.remove(&NodeId(2)).unwrap();
    assert!(
        answer(&mut n2, 3, vote_request(before + 1, 100, 100)).is_empty(),
        "ignored, not even refused"
    );
    assert_eq!(n2.term, before, "and the term did not move");
    // Once the leader has been silent for the minimum election timeout, votes count again.
    let lease = n2.config.election_timeout_ticks_min;
    ticks(&mut n2, lease);
    assert!(!answer(&mut n2, 3, vote_request(before + 1, 100, 100)).is_empty());
}

#[test]
fn t6_2_a_leader_that_cannot_reach_a_quorum_steps_down() {
    let mut c = Cluster::new(5, |_| {});
    c.elect(1);
    c.drop_if = Some(Box::new(|from, to, _| from == NodeId(1) || to == NodeId(1)));
    let window = c.node(1).config.election_timeout_ticks_min;
    c.tick(1, 2 * window);
    assert_eq!(c.node(1).role, Role::Follower);
    assert_eq!(c.node(1).leader, None);
}

#[test]
fn t6_2_a_leader_in_touch_with_a_quorum_keeps_leading() {
    let mut c = Cluster::new(5, |_| {});
    c.elect(1);
    // Two followers are gone; two plus the leader are a majority of five.
    c.crash(4);
    c.crash(5);
    c.tick(1, 200);
    assert_eq!(c.leader(), Some(NodeId(1)));
}

/// n1 and n2 time out together in term 1; n3 hears both requests.
fn simultaneous_candidates(vote_twice: bool) -> Vec<(u64, u64)> {
    let mut c = Cluster::new(3, |c| {
        c.pre_vote = false;
        c.bugs.vote_twice_in_a_term = vote_twice;
    });
    for id in [1, 2] {
        while c.nodes[&NodeId(id)].role == Role::Follower {
            c.step(NodeId(id), Input::Tick);
        }
    }
    // The candidates' requests to each other are lost; n3 gets both.
    c.drop_if = Some(Box::new(|from, to, _| from != NodeId(3) && to != NodeId(3)));
    c.deliver_all();
    (1..=3)
        .filter(|&i| c.node(i).role == Role::Leader)
        .map(|i| (i, c.node(i).term))
        .collect()
}

#[test]
fn s5_2_two_candidates_in_one_term_cannot_both_win() {
    assert_eq!(simultaneous_candidates(false).len(), 1);
}

#[test]
fn bug_switch_granting_two_votes_in_a_term_elects_two_leaders() {
    assert_eq!(
        simultaneous_candidates(true),
        vec![(1, 1), (2, 1)],
        "two leaders in term 1"
    );
}
