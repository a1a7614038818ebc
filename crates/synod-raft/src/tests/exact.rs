//! Exact action lists for the steps that matter most: what is persisted, in which order
//! relative to what is sent, and what is applied.

use synod_core::{Action, Entry, Input, NodeId, Payload, Persist, PersistId, Rejection};

use super::*;
use crate::{
    encode_hard_state, AppendEntries, AppendEntriesResponse, AppendOutcome, CommitNotice, Message,
    VoteRequest, VoteResponse,
};

fn no_pre_vote(id: u64) -> Raft {
    let mut c = config(id, 3);
    c.pre_vote = false;
    Raft::new(c).unwrap()
}

fn noop(index: u64, term: u64) -> Entry {
    Entry {
        index,
        era: term,
        payload: Payload::Noop,
    }
}

/// Drives n1 of a 3-node cluster to leader of term 1 and returns it with the vote step's actions.
fn leader_of_term_1() -> (Raft, Vec<Action<Message>>) {
    let mut n1 = no_pre_vote(1);
    let timeout = n1.election_timeout;
    let out = ticks(&mut n1, timeout);
    assert!(out.iter().any(|a| matches!(a, Action::Persist(_))));
    step(&mut n1, Input::Persisted(PersistId(1)));
    let vote = VoteResponse {
        term: 1,
        granted: true,
    };
    let actions = step(
        &mut n1,
        Input::Receive {
            from: NodeId(2),
            message: Message::RequestVoteResponse(vote),
        },
    );
    (n1, actions)
}

#[test]
fn s5_2_a_timed_out_follower_persists_its_term_and_self_vote_before_asking_for_votes() {
    let mut n1 = no_pre_vote(1);
    let timeout = n1.election_timeout;
    assert!(
        ticks(&mut n1, timeout - 1).is_empty(),
        "nothing happens before the timeout"
    );
    let request = VoteRequest {
        term: 1,
        last_log_index: 0,
        last_log_term: 0,
        leader_transfer: false,
    };
    assert_eq!(
        step(&mut n1, Input::Tick),
        vec![
            Action::Persist(Persist {
                id: PersistId(1),
                snapshot: None,
                hard_state: Some(encode_hard_state(1, Some(NodeId(1)))),
                journal: Vec::new(),
                truncate_from: None,
                entries: vec![],
            }),
            Action::Send {
                to: NodeId(2),
                message: Message::RequestVote(request.clone())
            },
            Action::Send {
                to: NodeId(3),
                message: Message::RequestVote(request)
            },
        ]
    );
    assert_eq!((n1.role, n1.term), (Role::Candidate, 1));
}

#[test]
fn s5_2_a_vote_is_durable_before_the_candidate_hears_of_it() {
    let mut n2 = no_pre_vote(2);
    let request = VoteRequest {
        term: 1,
        last_log_index: 0,
        last_log_term: 0,
        leader_transfer: false,
    };
    assert_eq!(
        step(
            &mut n2,
            Input::Receive {
                from: NodeId(1),
                message: Message::RequestVote(request)
            }
        ),
        vec![
            Action::Persist(Persist {
                id: PersistId(1),
                snapshot: None,
                hard_state: Some(encode_hard_state(1, Some(NodeId(1)))),
                journal: Vec::new(),
                truncate_from: None,
                entries: vec![],
            }),
            Action::Send {
                to: NodeId(1),
                message: vote(1, true),
            },
        ]
    );
}

#[test]
fn s8_a_new_leader_replicates_a_noop_while_writing_it_to_its_own_disk() {
    let (_, actions) = leader_of_term_1();
    let append = AppendEntries {
        term: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![noop(1, 1)],
        leader_commit: 0,
    };
    assert_eq!(
        actions,
        vec![
            // Thesis 10.2.1: the appends leave before the leader's own write completes.
            Action::Send {
                to: NodeId(2),
                message: Message::AppendEntries(append.clone())
            },
            Action::Send {
                to: NodeId(3),
                message: Message::AppendEntries(append)
            },
            Action::Persist(Persist {
                id: PersistId(2),
                snapshot: None,
                hard_state: None,
                journal: Vec::new(),
                truncate_from: None,
                entries: vec![noop(1, 1)]
            }),
        ]
    );
}

#[test]
fn t10_2_1_a_leader_counts_itself_in_a_commit_quorum_only_once_its_write_is_durable() {
    let (mut n1, _) = leader_of_term_1();
    let ack = AppendEntriesResponse {
        term: 1,
        outcome: AppendOutcome::Accepted { match_index: 1 },
    };
    let actions = step(
        &mut n1,
        Input::Receive {
            from: NodeId(2),
            message: Message::AppendEntriesResponse(ack),
        },
    );
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Apply(_))),
        "one durable copy of three is no majority"
    );
    assert_eq!(n1.commit_index, 0);
    assert_eq!(
        step(&mut n1, Input::Persisted(PersistId(2))),
        vec![
            Action::Apply(noop(1, 1)),
            // The new commit point goes at once to the follower with nothing in flight; the
            // other learns it from the append it is still to answer.
            Action::Send {
                to: NodeId(2),
                message: Message::Commit(CommitNotice { term: 1, commit: 1 })
            },
        ]
    );
    assert_eq!(n1.commit_index, 1);
}

#[test]
fn s5_3_a_follower_acknowledges_entries_only_after_persisting_them() {
    let mut n2 = no_pre_vote(2);
    let append = AppendEntries {
        term: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![noop(1, 1)],
        leader_commit: 0,
    };
    assert_eq!(
        step(
            &mut n2,
            Input::Receive {
                from: NodeId(1),
                message: Message::AppendEntries(append)
            }
        ),
        vec![
            Action::Persist(Persist {
                id: PersistId(1),
                snapshot: None,
                hard_state: Some(encode_hard_state(1, None)),
                journal: Vec::new(),
                truncate_from: None,
                entries: vec![noop(1, 1)],
            }),
            Action::Send {
                to: NodeId(1),
                message: Message::AppendEntriesResponse(AppendEntriesResponse {
                    term: 1,
                    outcome: AppendOutcome::Accepted { match_index: 1 },
                }),
            },
        ]
    );
    assert_eq!(n2.leader, Some(NodeId(1)));
}

#[test]
fn s5_3_a_follower_missing_the_previous_entry_rejects_with_a_backtracking_hint() {
    let mut n2 = no_pre_vote(2);
    let append = AppendEntries {
        term: 1,
        prev_log_index: 5,
        prev_log_term: 1,
        entries: vec![],
        leader_commit: 0,
    };
    let actions = step(
        &mut n2,
        Input::Receive {
            from: NodeId(1),
            message: Message::AppendEntries(append),
        },
    );
    assert_eq!(
        sends(&actions),
        vec![(
            NodeId(1),
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term: 1,
                outcome: AppendOutcome::Rejected {
                    prev_log_index: 5,
                    conflict_term: None,
                    conflict_index: 1
                },
            })
        )]
    );
}

#[test]
fn proposals_to_a_follower_are_refused_with_the_leader_as_hint() {
    let mut n2 = no_pre_vote(2);
    receive(&mut n2, 1, empty_append(1));
    let p = proposal(1, 1);
    assert_eq!(
        step(&mut n2, Input::Propose(vec![p.clone()])),
        vec![Action::Reject {
            id: p.id,
            reason: Rejection::NotLeader {
                leader_hint: Some(NodeId(1))
            }
        }]
    );
}

#[test]
fn a_batch_of_proposals_leaves_in_one_append_per_follower_and_one_persist() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    let batch: Vec<_> = (1..=50).map(|s| proposal(7, s)).collect();
    let mut out = Vec::new();
    c.nodes
        .get_mut(&NodeId(1))
        .unwrap()
        .step(Input::Propose(batch), &mut out);
    let appends: Vec<_> = sends(&out)
        .into_iter()
        .filter_map(|(to, m)| match m {
            Message::AppendEntries(a) => Some((to, a.entries.len())),
            _ => None,
        })
        .collect();
    assert_eq!(appends, vec![(NodeId(2), 50), (NodeId(3), 50)]);
    let persists: Vec<usize> = out
        .iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some(p.entries.len()),
            _ => None,
        })
        .collect();
    assert_eq!(persists, vec![50]);
}
