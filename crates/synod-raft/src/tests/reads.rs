//! Reads: ReadIndex (thesis 6.4) and serializable local reads.

use synod_core::{Input, NodeId, ReadConsistency, RequestId};

use super::*;
use crate::Message;

const LINEAR: ReadConsistency = ReadConsistency::Linearizable;

#[test]
fn t6_4_a_linearizable_read_waits_for_a_majority_to_confirm_leadership() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    let id = RequestId::new(9, 1);
    c.read(1, id, LINEAR);
    assert!(
        !c.reads_ready.contains_key(&NodeId(1)),
        "not before any follower confirms"
    );
    let heartbeats = c
        .queue
        .iter()
        .filter(|(_, _, m)| matches!(m, Message::Heartbeat(h) if h.read_round == 1))
        .count();
    assert_eq!(heartbeats, 2, "the read starts a heartbeat round");
    c.deliver_all();
    assert_eq!(c.reads_ready[&NodeId(1)], vec![id]);
    assert_eq!(
        c.node(1).log.last_index(),
        1,
        "the read wrote nothing to the log"
    );
}

#[test]
fn t6_4_a_leader_cut_off_from_the_majority_never_answers_a_read() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.drop_if = Some(Box::new(|from, to, _| from == NodeId(1) || to == NodeId(1)));
    c.read(1, RequestId::new(9, 1), LINEAR);
    c.tick(1, 100);
    assert!(!c.reads_ready.contains_key(&NodeId(1)));
    let rejected = &c.rejected[&NodeId(1)];
    assert_eq!(
        rejected.len(),
        1,
        "once it steps down the read is refused, so the client retries elsewhere"
    );
}

#[test]
fn t6_4_a_new_leader_answers_reads_only_after_its_first_entry_commits() {
    let mut c = Cluster::new(3, |_| {});
    c.drop_if = Some(Box::new(|_, _, m| matches!(m, Message::AppendEntries(_))));
    c.elect(1);
    c.read(1, RequestId::new(9, 1), LINEAR);
    c.deliver_all();
    assert!(
        !c.reads_ready.contains_key(&NodeId(1)),
        "its commit index may be stale until the no-op commits"
    );
    c.drop_if = None;
    c.tick(1, 10);
    assert_eq!(c.reads_ready[&NodeId(1)], vec![RequestId::new(9, 1)]);
}

#[test]
fn t6_4_a_read_reflects_every_write_committed_before_it() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.propose(1, vec![proposal(1, 1)]);
    let applied_before = c.applied_indexes(1).len();
    c.read(1, RequestId::new(9, 1), LINEAR);
    c.deliver_all();
    assert_eq!(applied_before, 2);
    assert_eq!(c.reads_ready[&NodeId(1)], vec![RequestId::new(9, 1)]);
}

#[test]
fn linearizable_reads_on_a_follower_are_refused_with_a_hint_and_serializable_ones_served() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.tick(1, 3);
    c.read(2, RequestId::new(9, 1), LINEAR);
    c.read(2, RequestId::new(9, 2), ReadConsistency::Serializable);
    assert_eq!(
        c.rejected[&NodeId(2)],
        vec![(
            RequestId::new(9, 1),
            synod_core::Rejection::NotLeader {
                leader_hint: Some(NodeId(1))
            }
        )]
    );
    assert_eq!(c.reads_ready[&NodeId(2)], vec![RequestId::new(9, 2)]);
}

#[test]
fn one_round_serves_a_whole_batch_of_reads() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    let batch = (1..=100)
        .map(|s| synod_core::ReadRequest {
            id: RequestId::new(9, s),
            consistency: LINEAR,
            keys: None,
        })
        .collect();
    c.step(NodeId(1), Input::Read(batch));
    assert_eq!(c.queue.len(), 2, "one heartbeat per follower for 100 reads");
    c.deliver_all();
    assert_eq!(c.reads_ready[&NodeId(1)].len(), 100);
}

/// A heartbeat of an earlier leadership of the same node, delayed in the network, reaches a
/// follower after that node leads again in a later term, where it counts rounds from 1 anew.
/// The follower's refusal carries the current term; if it echoed the old round, the leader
/// would take it for an answer to a round of its new leadership, and confirm a read with no
/// contact at all.
#[test]
fn an_answer_to_a_heartbeat_of_an_older_term_confirms_no_read_round() {
    // Leaders change here on demand: nobody waits out the leader's lease.
    let mut c = Cluster::new(3, |config| {
        config.check_quorum = false;
        config.pre_vote = false;
    });
    c.elect(1);
    let old_term = c.node(1).term;
    let stale = Message::Heartbeat(crate::Heartbeat {
        term: old_term,
        commit: 0,
        read_round: 3,
    });
    c.elect(2);
    c.elect(1);
    assert!(c.node(1).term > old_term);
    for seq in 1..=2 {
        c.read(1, RequestId::new(9, seq), LINEAR);
        c.deliver_all();
    }
    // Cut off: only the delayed heartbeat and the answer to it get through.
    c.drop_if = Some(Box::new(|_, _, m| {
        !matches!(m, Message::HeartbeatResponse(_))
    }));
    let read = RequestId::new(9, 3);
    c.read(1, read, LINEAR);
    c.deliver_all();
    c.step(
        NodeId(3),
        Input::Receive {
            from: NodeId(1),
            message: stale,
        },
    );
    c.deliver_all();
    assert!(
        !c.reads_ready[&NodeId(1)].contains(&read),
        "no follower answered round 3"
    );
}

#[test]
fn an_ack_of_a_round_the_leader_never_started_confirms_nothing() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    let term = c.node(1).term;
    let bogus = Message::HeartbeatResponse(crate::HeartbeatResponse {
        term,
        read_round: 1_000,
    });
    c.step(
        NodeId(1),
        Input::Receive {
            from: NodeId(3),
            message: bogus,
        },
    );
    c.drop_if = Some(Box::new(|_, _, _| true));
    let read = RequestId::new(9, 1);
    c.read(1, read, LINEAR);
    c.deliver_all();
    assert!(!c.reads_ready.contains_key(&NodeId(1)));
}
