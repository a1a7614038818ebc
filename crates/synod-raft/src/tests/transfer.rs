//! Leadership transfer (thesis 3.10).

use synod_core::{Input, NodeId, Rejection, Role};

use super::*;

#[test]
fn t3_10_leadership_moves_to_the_target_once_its_log_is_up_to_date() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.propose(1, vec![proposal(1, 1)]);
    c.step(NodeId(1), Input::TransferLeadership { to: NodeId(3) });
    c.deliver_all();
    assert_eq!(c.leader(), Some(NodeId(3)));
    assert_eq!(c.node(3).term, 2);
    assert_eq!(c.node(1).role, Role::Follower);
    c.tick(3, 3);
    assert_eq!(
        c.applied_indexes(3),
        vec![1, 2, 3],
        "nothing committed was lost"
    );
}

#[test]
fn t3_10_a_transfer_to_a_lagging_target_first_catches_it_up() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.tick(1, 3);
    c.crash(3);
    c.propose(1, (1..=5).map(|s| proposal(1, s)).collect());
    c.restart(3);
    c.step(NodeId(1), Input::TransferLeadership { to: NodeId(3) });
    c.deliver_all();
    // The appends lost while n3 was down are retried after `append_retry_ticks`.
    c.tick(1, c.node(1).config.append_retry_ticks + 1);
    assert_eq!(c.leader(), Some(NodeId(3)));
    assert!(c.node(3).log.last_index() >= 6);
}

#[test]
fn t3_10_proposals_are_refused_during_a_transfer_and_it_aborts_after_its_timeout() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.tick(1, 3);
    c.crash(3);
    c.step(NodeId(1), Input::TransferLeadership { to: NodeId(3) });
    c.propose(1, vec![proposal(1, 1)]);
    assert_eq!(
        c.rejected[&NodeId(1)],
        vec![(
            proposal(1, 1).id,
            Rejection::NotLeader {
                leader_hint: Some(NodeId(3))
            }
        )],
        "the client is sent to the future leader"
    );
    let timeout = c.node(1).config.transfer_timeout_ticks;
    c.tick(1, timeout);
    assert_eq!(
        c.leader(),
        Some(NodeId(1)),
        "the transfer gave up; n1 still leads"
    );
    c.propose(1, vec![proposal(1, 2)]);
    assert_eq!(c.node(1).commit_index, 2, "and takes proposals again");
}
