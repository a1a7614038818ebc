//! Exact actions of single nodes: what each phase persists and sends, and in which order.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use bytes::Bytes;
use synod_core::{Action, Engine, Entry, Input, NodeId, Payload, Proposal, RequestId, Role};

use crate::message::{Message, PeerState, Vote, Zxid};
use crate::zab::{decode_hard_state, encode_hard_state, HardState, RestartError};
use crate::{Config, Zab};

type Out = Vec<Action<Message>>;

fn config(id: u64) -> Config {
    Config::new(NodeId(id), vec![NodeId(1), NodeId(2), NodeId(3)])
}

fn receive(zab: &mut Zab, from: u64, message: Message) -> Out {
    let mut out = Vec::new();
    zab.step(
        Input::Receive {
            from: NodeId(from),
            message,
        },
        &mut out,
    );
    out
}

fn sends(out: &Out) -> Vec<(NodeId, Message)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send { to, message } => Some((*to, message.clone())),
            _ => None,
        })
        .collect()
}

/// Position of the first action matching `f`.
fn position(out: &Out, f: impl Fn(&Action<Message>) -> bool) -> usize {
    out.iter().position(f).expect("the action is there")
}

/// Whether `a` persists a hard state whose current epoch is `epoch`.
fn saves_current_epoch(a: &Action<Message>, epoch: u64) -> bool {
    matches!(a, Action::Persist(p) if p.hard_state.as_deref().is_some_and(|h| {
        decode_hard_state(h).unwrap().current_epoch == epoch
    }))
}

/// Whether `a` sends AckNewLeader for `epoch`.
fn acks_new_leader(a: &Action<Message>, epoch: u64) -> bool {
    matches!(a, Action::Send { message: Message::AckNewLeader { epoch: e }, .. } if *e == epoch)
}

fn entry(index: u64, epoch: u64) -> Entry {
    Entry {
        index,
        era: epoch,
        payload: Payload::Command(Proposal {
            id: RequestId::new(7, index),
            command: Bytes::from_static(b"w"),
        }),
    }
}

fn leading(leader: u64) -> Message {
    Message::Notification {
        round: 1,
        vote: Vote::new(NodeId(leader), 0, Zxid::default()),
        state: PeerState::Leading,
    }
}

/// Node 1, following node 3, having accepted epoch 1 from it.
fn follower_in_epoch_1() -> Zab {
    let mut zab = Zab::new(config(1)).unwrap();
    receive(&mut zab, 3, leading(3));
    receive(&mut zab, 3, Message::NewEpoch { epoch: 1 });
    zab
}

#[test]
fn a_follower_persists_the_epoch_it_accepts_before_it_acknowledges_it() {
    let mut zab = Zab::new(config(1)).unwrap();
    let out = receive(&mut zab, 3, leading(3));
    assert_eq!(
        sends(&out),
        vec![(
            NodeId(3),
            Message::FollowerInfo {
                accepted_epoch: 0,
                accepted_from: None
            }
        )]
    );
    let out = receive(&mut zab, 3, Message::NewEpoch { epoch: 1 });
    let persisted = position(&out, |a| match a {
        Action::Persist(p) => p.hard_state.as_deref().is_some_and(|h| {
            decode_hard_state(h).unwrap()
                == HardState {
                    accepted_epoch: 1,
                    accepted_leader: Some(NodeId(3)),
                    current_epoch: 0,
                }
        }),
        _ => false,
    });
    let acked = position(&out, |a| {
        matches!(
            a,
            Action::Send {
                message: Message::AckEpoch { epoch: 1, .. },
                ..
            }
        )
    });
    assert!(persisted < acked, "{out:?}");
}

#[test]
fn a_follower_offered_an_epoch_below_the_one_it_accepted_goes_back_to_election() {
    let hard = encode_hard_state(&HardState {
        accepted_epoch: 5,
        accepted_leader: Some(NodeId(2)),
        current_epoch: 4,
    });
    let mut zab = Zab::restart(config(1), Some(&hard), None, Vec::new()).unwrap();
    receive(&mut zab, 3, leading(3));
    let out = receive(&mut zab, 3, Message::NewEpoch { epoch: 3 });
    assert_eq!(zab.status().role, Role::Candidate, "looking again");
    assert!(sends(&out)
        .iter()
        .all(|(_, m)| matches!(m, Message::Notification { .. })));
    assert_eq!(
        zab.accepted_epoch(),
        5,
        "the accepted epoch never goes back"
    );
}

#[test]
fn the_same_epoch_from_another_leader_is_refused() {
    // Node 1 accepted epoch 1 from node 3, then restarted and found node 2 leading.
    let hard = encode_hard_state(&HardState {
        accepted_epoch: 1,
        accepted_leader: Some(NodeId(3)),
        current_epoch: 0,
    });
    let mut zab = Zab::restart(config(1), Some(&hard), None, Vec::new()).unwrap();
    receive(&mut zab, 2, leading(2));
    assert_eq!(zab.status().role, Role::Follower);
    receive(&mut zab, 2, Message::NewEpoch { epoch: 1 });
    assert_eq!(zab.status().role, Role::Candidate);
    assert_eq!(zab.accepted_epoch(), 1);
}

#[test]
fn a_later_epoch_from_the_same_leader_is_a_new_session_synchronized_afresh() {
    // Node 1 is in broadcast under node 3's epoch 1. Node 3 restarts and leads again in
    // epoch 2 before node 1's session timed out, and a late copy of node 1's FollowerInfo
    // brings node 1 its NewEpoch 2. Its AckNewLeader 2 must come with current epoch 2 saved
    // (the rule the next election's choice of history rests on), not at once as a copy of
    // the earlier session's.
    let mut zab = follower_in_epoch_1();
    let new_leader = |epoch| Message::NewLeader {
        epoch,
        last: Zxid::default(),
    };
    receive(&mut zab, 3, new_leader(1));
    assert_eq!(zab.current_epoch(), 1);
    receive(&mut zab, 3, Message::NewEpoch { epoch: 2 });
    assert_eq!(zab.accepted_epoch(), 2);
    let out = receive(&mut zab, 3, new_leader(2));
    assert_eq!(zab.current_epoch(), 2);
    let saved = position(&out, |a| saves_current_epoch(a, 2));
    let acked = position(&out, |a| acks_new_leader(a, 2));
    assert!(saved < acked, "{out:?}");
}

#[test]
fn a_follower_logs_a_proposal_durably_before_it_acknowledges_it() {
    let mut zab = follower_in_epoch_1();
    receive(
        &mut zab,
        3,
        Message::NewLeader {
            epoch: 1,
            last: Zxid::default(),
        },
    );
    assert_eq!(zab.current_epoch(), 1);
    let out = receive(
        &mut zab,
        3,
        Message::Proposal {
            epoch: 1,
            prev: Zxid::default(),
            entries: vec![entry(1, 1), entry(2, 1)],
            commit: 1,
        },
    );
    let logged = position(
        &out,
        |a| matches!(a, Action::Persist(p) if p.entries.len() == 2),
    );
    let acked = position(&out, |a| {
        matches!(
            a,
            Action::Send {
                message: Message::Ack {
                    epoch: 1,
                    last: 2,
                    ok: true
                },
                ..
            }
        )
    });
    assert!(logged < acked, "{out:?}");
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Apply(e) if e.index == 1)),
        "the commit point it carried is delivered"
    );
}

#[test]
fn new_leader_truncates_what_lies_beyond_the_initial_history() {
    let hard = encode_hard_state(&HardState {
        accepted_epoch: 1,
        accepted_leader: Some(NodeId(2)),
        current_epoch: 1,
    });
    let history = vec![entry(1, 1), entry(2, 1), entry(3, 1)];
    let mut zab = Zab::restart(config(1), Some(&hard), None, history).unwrap();
    // Node 3 leads with a history no less up to date (one more of epoch 1 than node 1's
    // committed point, a different one at 2).
    let vote = Vote::new(
        NodeId(3),
        1,
        Zxid {
            epoch: 1,
            counter: 3,
        },
    );
    let state = PeerState::Leading;
    receive(
        &mut zab,
        3,
        Message::Notification {
            round: 1,
            vote,
            state,
        },
    );
    receive(&mut zab, 3, Message::NewEpoch { epoch: 2 });
    let out = receive(
        &mut zab,
        3,
        Message::NewLeader {
            epoch: 2,
            last: Zxid {
                epoch: 1,
                counter: 1,
            },
        },
    );
    assert_eq!(zab.log().last_index(), 1, "TRUNC: entries 2 and 3 gone");
    assert_eq!(zab.current_epoch(), 2);
    // The truncation is durable before the new epoch is: a crash between the two writes
    // keeps the old epoch beside the old tail, or the new epoch beside the cut history,
    // never the new epoch beside the old tail.
    let truncated = position(
        &out,
        |a| matches!(a, Action::Persist(p) if p.truncate_from == Some(2) && p.hard_state.is_none()),
    );
    let epoch_taken = position(&out, |a| saves_current_epoch(a, 2));
    let acked = position(&out, |a| acks_new_leader(a, 2));
    assert!(truncated < epoch_taken && epoch_taken < acked, "{out:?}");
}

fn applied(out: &Out) -> Vec<(u64, u64)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Apply(e) => Some((e.index, e.era)),
            _ => None,
        })
        .collect()
}

/// The state a torn write could leave before the truncation had a persist of its own: the
/// current epoch taken from the leader of epoch 2, beside a tail of epoch 1 that leader's
/// history does not have. Rejoining that leader, the node delivers nothing until NewLeader
/// has cut the tail, and then only what the leader vouched for.
#[test]
fn a_current_epoch_found_on_disk_does_not_vouch_for_the_history_beside_it() {
    let hard = encode_hard_state(&HardState {
        accepted_epoch: 2,
        accepted_leader: Some(NodeId(3)),
        current_epoch: 2,
    });
    let history = vec![entry(1, 1), entry(2, 1), entry(3, 1)];
    let mut zab = Zab::restart(config(1), Some(&hard), None, history).unwrap();
    let vote = Vote::new(
        NodeId(3),
        2,
        Zxid {
            epoch: 2,
            counter: 3,
        },
    );
    let state = PeerState::Leading;
    receive(
        &mut zab,
        3,
        Message::Notification {
            round: 1,
            vote,
            state,
        },
    );
    let out = receive(&mut zab, 3, Message::NewEpoch { epoch: 2 });
    assert!(sends(&out)
        .iter()
        .any(|(_, m)| matches!(m, Message::AckEpoch { epoch: 2, .. })));
    // The leader's history is 1 (epoch 1), then 2 and 3 of epoch 2, committed through 3.
    let out = receive(
        &mut zab,
        3,
        Message::PingAck {
            epoch: 2,
            commit: 3,
        },
    );
    assert_eq!(applied(&out), vec![], "not synchronized in this session");
    let out = receive(
        &mut zab,
        3,
        Message::Proposal {
            epoch: 2,
            prev: Zxid {
                epoch: 1,
                counter: 1,
            },
            entries: vec![entry(2, 2)],
            commit: 0,
        },
    );
    assert_eq!(applied(&out), vec![]);
    assert_eq!(
        zab.log().era(2),
        Some(1),
        "before NewLeader only the initial history (older epochs) is taken"
    );
    receive(
        &mut zab,
        3,
        Message::NewLeader {
            epoch: 2,
            last: Zxid {
                epoch: 1,
                counter: 1,
            },
        },
    );
    assert_eq!(zab.log().last_index(), 1, "the epoch-1 tail is cut");
    let out = receive(
        &mut zab,
        3,
        Message::Commit {
            epoch: 2,
            commit: 3,
        },
    );
    assert_eq!(
        applied(&out),
        vec![(1, 1)],
        "delivered only as far as vouched for"
    );
    let out = receive(
        &mut zab,
        3,
        Message::Proposal {
            epoch: 2,
            prev: Zxid {
                epoch: 1,
                counter: 1,
            },
            entries: vec![entry(2, 2), entry(3, 2)],
            commit: 3,
        },
    );
    assert_eq!(applied(&out), vec![(2, 2), (3, 2)]);
}

/// A NewLeader from an earlier round of this follower's synchronization, arriving after a
/// snapshot took it past the point that NewLeader names: the snapshot is of what the leader
/// committed, so nothing is cut (and nothing committed could be).
#[test]
fn a_stale_new_leader_behind_an_installed_snapshot_cuts_nothing() {
    let mut zab = follower_in_epoch_1();
    let meta = synod_core::SnapshotMeta { index: 5, era: 1 };
    let out = receive(
        &mut zab,
        3,
        Message::Snap {
            epoch: 1,
            meta,
            offset: 0,
            data: Bytes::from_static(b"state"),
            done: true,
            membership: None,
        },
    );
    assert!(out.iter().any(|a| matches!(a, Action::Restore(_))));
    assert_eq!(zab.commit_index(), 5);
    let out = receive(
        &mut zab,
        3,
        Message::NewLeader {
            epoch: 1,
            last: Zxid {
                epoch: 1,
                counter: 2,
            },
        },
    );
    assert_eq!(zab.commit_index(), 5);
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::Persist(p) if p.truncate_from.is_some())));
    assert!(sends(&out)
        .iter()
        .any(|(_, m)| matches!(m, Message::AckNewLeader { epoch: 1 })));
    assert_eq!(zab.current_epoch(), 1);
}

/// Node 3 elected by node 1's vote, with node 1's FollowerInfo: epoch 1 proposed.
fn prospective_leader() -> (Zab, Out) {
    let mut zab = Zab::new(config(3)).unwrap();
    receive(
        &mut zab,
        1,
        Message::Notification {
            round: 1,
            vote: Vote::new(NodeId(3), 0, Zxid::default()),
            state: PeerState::Looking,
        },
    );
    // It decides after the finalize wait, if no better vote came meanwhile.
    let mut ticked = Vec::new();
    for _ in 0..zab.config.ping_interval_ticks {
        zab.step(Input::Tick, &mut ticked);
    }
    assert_eq!(
        zab.status().role,
        Role::Candidate,
        "leading, not established"
    );
    assert!(matches!(zab.phase, crate::zab::Phase::Leading(_)));
    let out = receive(
        &mut zab,
        1,
        Message::FollowerInfo {
            accepted_epoch: 0,
            accepted_from: None,
        },
    );
    (zab, out)
}

#[test]
fn a_prospective_leader_proposes_an_epoch_above_every_accepted_one() {
    let (_, out) = prospective_leader();
    assert!(sends(&out).contains(&(NodeId(1), Message::NewEpoch { epoch: 1 })));
}

#[test]
fn a_prospective_leader_with_a_staler_history_than_a_follower_steps_aside() {
    let (mut zab, _) = prospective_leader();
    receive(
        &mut zab,
        1,
        Message::AckEpoch {
            epoch: 1,
            current_epoch: 0,
            last: Zxid {
                epoch: 0,
                counter: 4,
            },
            committed: 0,
        },
    );
    assert_eq!(zab.status().role, Role::Candidate);
    assert_eq!(
        zab.current_epoch(),
        0,
        "the epoch was never taken as current"
    );
    assert_eq!(zab.established_epoch(), None);
}

/// Drives the prospective leader to an established epoch with node 1.
fn established_leader() -> Zab {
    let (mut zab, _) = prospective_leader();
    receive(
        &mut zab,
        1,
        Message::AckEpoch {
            epoch: 1,
            current_epoch: 0,
            last: Zxid::default(),
            committed: 0,
        },
    );
    // Every persist so far (the epoch accepted, then taken as current) becomes durable.
    let mut out = Vec::new();
    zab.step(Input::Persisted(zab.disk.last_pushed()), &mut out);
    receive(&mut zab, 1, Message::AckNewLeader { epoch: 1 });
    zab
}

#[test]
fn an_epoch_is_established_once_a_quorum_acknowledged_new_leader() {
    let zab = established_leader();
    assert_eq!(zab.established_epoch(), Some(1));
    assert_eq!(zab.status().role, Role::Leader);
}

#[test]
fn the_leader_sends_no_heartbeats_and_abdicates_when_pings_stop() {
    let mut zab = established_leader();
    let mut out = Vec::new();
    for _ in 0..10 {
        zab.step(Input::Tick, &mut out);
        receive(
            &mut zab,
            1,
            Message::Ping {
                epoch: 1,
                synced: true,
            },
        );
    }
    assert!(
        sends(&out)
            .iter()
            .all(|(_, m)| !matches!(m, Message::Ping { .. })),
        "a leader does not push liveness messages"
    );
    assert_eq!(zab.status().role, Role::Leader, "node 1's pings keep it");
    for _ in 0..zab.config.session_timeout_ticks_min {
        zab.step(Input::Tick, &mut out);
    }
    assert_eq!(
        zab.status().role,
        Role::Candidate,
        "no quorum pings: abdicated"
    );
}

#[test]
fn a_follower_pings_its_leader_and_looks_again_when_it_stops_answering() {
    let mut zab = follower_in_epoch_1();
    receive(
        &mut zab,
        3,
        Message::NewLeader {
            epoch: 1,
            last: Zxid::default(),
        },
    );
    let mut out = Vec::new();
    for _ in 0..zab.config.ping_interval_ticks {
        zab.step(Input::Tick, &mut out);
    }
    assert!(sends(&out).contains(&(
        NodeId(3),
        Message::Ping {
            epoch: 1,
            synced: true,
        }
    )));
    for _ in 0..zab.config.session_timeout_ticks_max {
        zab.step(Input::Tick, &mut out);
    }
    assert_eq!(zab.status().role, Role::Candidate);
}

#[test]
fn restart_refuses_epochs_zab_cannot_have_written() {
    let hard = encode_hard_state(&HardState {
        accepted_epoch: 2,
        accepted_leader: None,
        current_epoch: 3,
    });
    let err = Zab::restart(config(1), Some(&hard), None, Vec::new()).unwrap_err();
    assert!(matches!(err, RestartError::Inconsistent(_)), "{err}");
    let hard = encode_hard_state(&HardState {
        accepted_epoch: 1,
        accepted_leader: None,
        current_epoch: 1,
    });
    let err = Zab::restart(config(1), Some(&hard), None, vec![entry(1, 2)]).unwrap_err();
    assert!(matches!(err, RestartError::Inconsistent(_)), "{err}");
    let err = Zab::restart(config(1), Some(&[1, 2]), None, Vec::new()).unwrap_err();
    assert!(matches!(err, RestartError::HardState(_)), "{err}");
}

/// A NewLeader from a follower's earlier session in the same epoch (held back by the network)
/// names a point its history has since moved past, with transactions of the epoch it
/// acknowledged, maybe committed: it cuts nothing.
#[test]
fn a_new_leader_from_an_earlier_session_cuts_nothing_of_the_epoch() {
    let hard = encode_hard_state(&HardState {
        accepted_epoch: 1,
        accepted_leader: Some(NodeId(3)),
        current_epoch: 1,
    });
    // Synchronized at nothing in epoch 1, then took 1 and 2 of epoch 1, then restarted.
    let history = vec![entry(1, 1), entry(2, 1)];
    let mut zab = Zab::restart(config(1), Some(&hard), None, history).unwrap();
    let vote = Vote::new(
        NodeId(3),
        1,
        Zxid {
            epoch: 1,
            counter: 2,
        },
    );
    let state = PeerState::Leading;
    receive(
        &mut zab,
        3,
        Message::Notification {
            round: 1,
            vote,
            state,
        },
    );
    receive(&mut zab, 3, Message::NewEpoch { epoch: 1 });
    let stale = Message::NewLeader {
        epoch: 1,
        last: Zxid::default(),
    };
    let out = receive(&mut zab, 3, stale);
    assert_eq!(zab.log().last_index(), 2);
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::Persist(p) if p.truncate_from.is_some())));
    let out = receive(
        &mut zab,
        3,
        Message::Commit {
            epoch: 1,
            commit: 2,
        },
    );
    assert_eq!(applied(&out), vec![(1, 1), (2, 1)]);
}

/// A leader that took a follower for one in broadcast (an AckNewLeader of its earlier
/// session) hears from its pings that it is not, and sends it NewLeader again.
#[test]
fn a_follower_that_pings_unsynchronized_is_sent_new_leader_again() {
    let mut zab = established_leader();
    let out = receive(
        &mut zab,
        1,
        Message::Ping {
            epoch: 1,
            synced: false,
        },
    );
    assert!(
        sends(&out)
            .iter()
            .any(|(to, m)| *to == NodeId(1) && matches!(m, Message::NewLeader { epoch: 1, .. })),
        "{out:?}"
    );
    receive(&mut zab, 1, Message::AckNewLeader { epoch: 1 });
    assert_eq!(zab.status().role, Role::Leader);
}

/// After a refusal the leader resends once; copies of that refusal within a retry interval
/// start nothing more, and one after it is answered again (the resend may have been lost
/// while proposals kept the follower busy).
#[test]
fn copies_of_a_refusal_start_one_resend_per_retry_interval() {
    let mut zab = established_leader();
    let mut out = Vec::new();
    zab.step(
        Input::Propose(vec![Proposal {
            id: RequestId::new(5, 1),
            command: Bytes::from_static(b"w"),
        }]),
        &mut out,
    );
    let refusal = Message::Ack {
        epoch: 1,
        last: 0,
        ok: false,
    };
    let resends = |out: &Out| {
        sends(out)
            .iter()
            .filter(|(to, m)| *to == NodeId(1) && matches!(m, Message::Proposal { .. }))
            .count()
    };
    assert_eq!(resends(&receive(&mut zab, 1, refusal.clone())), 1);
    assert_eq!(resends(&receive(&mut zab, 1, refusal.clone())), 0);
    for _ in 0..zab.config.retry_ticks {
        zab.step(Input::Tick, &mut out);
    }
    assert_eq!(resends(&receive(&mut zab, 1, refusal)), 1);
}
