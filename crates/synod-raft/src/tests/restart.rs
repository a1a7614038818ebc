//! Restarting from persisted state.

use synod_core::{Input, NodeId, Role};

use super::*;
use crate::{encode_hard_state, RestartError};

#[test]
fn a_restarted_node_keeps_its_term_vote_and_log_and_catches_up() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.propose(1, vec![proposal(1, 1), proposal(1, 2)]);
    c.tick(1, 3);
    let (term, vote, log) = (c.node(2).term, c.node(2).voted_for, c.node(2).log.clone());
    c.crash(2);
    c.restart(2);
    assert_eq!(
        (c.node(2).term, c.node(2).voted_for, &c.node(2).log),
        (term, vote, &log)
    );
    assert_eq!(c.node(2).commit_index, 0, "the commit index is volatile");
    c.tick(1, 3);
    assert_eq!(
        c.applied_indexes(2),
        vec![1, 2, 3],
        "it re-applies from the start as it learns the commit point"
    );
}

#[test]
fn a_restarted_node_does_not_vote_twice_in_a_term() {
    let mut c = Cluster::new(3, |c| c.pre_vote = false);
    c.campaign(1);
    assert_eq!(c.node(2).voted_for, Some(NodeId(1)));
    c.crash(2);
    c.restart(2);
    let mut n2 = c.nodes.remove(&NodeId(2)).unwrap();
    n2.config.check_quorum = false;
    let request = crate::Message::RequestVote(crate::VoteRequest {
        term: 1,
        last_log_index: 9,
        last_log_term: 9,
        leader_transfer: false,
    });
    let replies = sends(&step(
        &mut n2,
        Input::Receive {
            from: NodeId(3),
            message: request,
        },
    ));
    assert!(matches!(&replies[..], [(_, crate::Message::RequestVoteResponse(r))] if !r.granted));
    assert_eq!(n2.role, Role::Follower);
}

#[test]
fn corrupt_or_inconsistent_persisted_state_is_refused() {
    assert!(matches!(
        Raft::restart(config(1, 3), Some(&[0xff]), None, vec![]),
        Err(RestartError::HardState(_))
    ));
    let gap = vec![synod_core::Entry {
        index: 2,
        era: 1,
        payload: synod_core::Payload::Noop,
    }];
    assert!(matches!(
        Raft::restart(config(1, 3), None, None, gap),
        Err(RestartError::Log(_))
    ));
    let ahead = vec![synod_core::Entry {
        index: 1,
        era: 5,
        payload: synod_core::Payload::Noop,
    }];
    let hs = encode_hard_state(2, None);
    assert!(matches!(
        Raft::restart(config(1, 3), Some(&hs), None, ahead),
        Err(RestartError::Log(_))
    ));
}

#[test]
fn a_single_node_cluster_elects_itself_and_commits_alone() {
    let mut c = Cluster::new(1, |_| {});
    c.tick(1, 40);
    assert_eq!(c.leader(), Some(NodeId(1)));
    c.propose(1, vec![proposal(1, 1)]);
    assert_eq!(c.applied_indexes(1), vec![1, 2]);
    c.read(
        1,
        synod_core::RequestId::new(2, 1),
        synod_core::ReadConsistency::Linearizable,
    );
    assert_eq!(c.reads_ready[&NodeId(1)].len(), 1);
}
