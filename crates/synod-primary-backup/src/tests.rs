//! Exact actions of single members: what a primary waits for, and how views fence it.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use bytes::Bytes;
use synod_core::{
    Action, Engine, Entry, Input, NodeId, Payload, PersistId, Proposal, ReadConsistency,
    ReadRequest, RequestId, Role,
};

use crate::message::{next_view, Message};
use crate::{decode_view, encode_view, Config, PrimaryBackup};

type Out = Vec<Action<Message>>;

fn config(id: u64) -> Config {
    Config::new(NodeId(id), vec![NodeId(1), NodeId(2), NodeId(3)])
}

fn step(node: &mut PrimaryBackup, input: Input<Message>) -> Out {
    let mut out = Vec::new();
    node.step(input, &mut out);
    // Every persist completes at once, as a fast disk would.
    let persisted: Vec<PersistId> = out
        .iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some(p.id),
            _ => None,
        })
        .collect();
    for id in persisted {
        node.step(Input::Persisted(id), &mut out);
    }
    out
}

fn receive(node: &mut PrimaryBackup, from: u64, message: Message) -> Out {
    let from = NodeId(from);
    step(node, Input::Receive { from, message })
}

fn sends(out: &Out) -> Vec<(NodeId, Message)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send { to, message } => Some((*to, message.clone())),
            _ => None,
        })
        .collect()
}

fn applied(out: &Out) -> Vec<u64> {
    out.iter()
        .filter_map(|a| match a {
            Action::Apply(e) => Some(e.index),
            _ => None,
        })
        .collect()
}

fn write(n: u64) -> Proposal {
    Proposal {
        id: RequestId::new(9, n),
        command: Bytes::from_static(b"put"),
    }
}

fn entry(index: u64, era: u64) -> Entry {
    Entry {
        index,
        era,
        payload: Payload::Command(write(index)),
    }
}

fn ack(view: u64, last: u64, round: u64) -> Message {
    Message::Ack {
        view,
        last,
        ok: true,
        round,
    }
}

/// View 1 of node 1 (round 1, primary 1).
const V1: u64 = (1 << 16) | 1;

/// Node 1, primary of view 1 with both backups caught up (at nothing).
fn ready_primary() -> PrimaryBackup {
    let mut node = PrimaryBackup::new(config(1)).unwrap();
    step(&mut node, Input::Tick);
    receive(&mut node, 2, ack(V1, 0, 0));
    receive(&mut node, 3, ack(V1, 0, 0));
    assert_eq!(node.status().role, Role::Leader);
    node
}

#[test]
fn the_lowest_member_takes_the_first_view_durably_before_it_says_so() {
    let mut node = PrimaryBackup::new(config(1)).unwrap();
    let mut out = Vec::new();
    node.step(Input::Tick, &mut out);
    let persisted = out
        .iter()
        .position(|a| {
            matches!(a, Action::Persist(p)
                if p.hard_state.as_deref().map(|h| decode_view(h).unwrap()) == Some(V1))
        })
        .unwrap();
    let sent = out
        .iter()
        .position(|a| matches!(a, Action::Send { .. }))
        .unwrap();
    assert!(persisted < sent, "{out:?}");
    assert_eq!(
        node.status().role,
        Role::Candidate,
        "writes wait for every backup"
    );
    receive(&mut node, 2, ack(V1, 0, 0));
    assert_eq!(node.status().role, Role::Candidate, "one backup is not all");
    receive(&mut node, 3, ack(V1, 0, 0));
    assert_eq!(node.status().role, Role::Leader);
    // A backup does not take over by itself.
    let mut backup = PrimaryBackup::new(config(2)).unwrap();
    for _ in 0..1000 {
        step(&mut backup, Input::Tick);
    }
    assert_eq!(backup.status().role, Role::Follower);
}

#[test]
fn a_write_commits_only_when_every_backup_holds_it() {
    let mut node = ready_primary();
    let out = step(&mut node, Input::Propose(vec![write(1)]));
    let replicated: Vec<NodeId> = sends(&out)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Replicate { entries, .. } if entries.len() == 1))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(replicated, vec![NodeId(2), NodeId(3)]);
    let out = receive(&mut node, 2, ack(V1, 1, 0));
    assert_eq!(
        applied(&out),
        Vec::<u64>::new(),
        "node 3 does not hold it yet"
    );
    for _ in 0..100 {
        let out = step(&mut node, Input::Tick);
        assert_eq!(
            applied(&out),
            Vec::<u64>::new(),
            "and waits for it, however long"
        );
    }
    let out = receive(&mut node, 3, ack(V1, 1, 0));
    assert_eq!(applied(&out), vec![1]);
}

#[test]
fn a_linearizable_read_waits_for_every_backup_to_confirm_the_view() {
    let mut node = ready_primary();
    let read = ReadRequest {
        id: RequestId::new(5, 1),
        consistency: ReadConsistency::Linearizable,
        keys: None,
    };
    let out = step(&mut node, Input::Read(vec![read]));
    assert!(!out.iter().any(|a| matches!(a, Action::ReadReady(_))));
    let out = receive(&mut node, 2, ack(V1, 0, 1));
    assert!(!out.iter().any(|a| matches!(a, Action::ReadReady(_))));
    let out = receive(&mut node, 3, ack(V1, 0, 1));
    assert!(out.iter().any(|a| matches!(a, Action::ReadReady(_))));
}

#[test]
fn a_backup_in_a_later_view_fences_the_old_primary() {
    let mut node = ready_primary();
    step(&mut node, Input::Propose(vec![write(1)]));
    let v2 = next_view(V1, NodeId(2)).unwrap();
    // Node 3 joined node 2's view: it refuses node 1, which steps down.
    let out = receive(&mut node, 3, Message::Stale { view: v2 });
    assert_eq!(node.status().role, Role::Follower);
    assert_eq!(node.view(), v2);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Persist(p) if p.hard_state.is_some())));
    // And as a backup, it refuses its own old view.
    let out = receive(&mut node, 2, ack(V1, 1, 0));
    assert_eq!(sends(&out), vec![(NodeId(2), Message::Stale { view: v2 })]);
}

#[test]
fn an_operator_failover_makes_the_named_member_primary_and_its_history_wins() {
    // Node 3 is told to fail over to node 2: it relays.
    let mut relay = PrimaryBackup::new(config(3)).unwrap();
    let out = step(&mut relay, Input::TransferLeadership { to: NodeId(2) });
    assert_eq!(
        sends(&out),
        vec![(
            NodeId(2),
            Message::TakeOver {
                view: 1,
                commit: 0,
                commit_era: 0
            }
        )]
    );
    // Node 2 holds entry 1 of view 1; node 3 also holds an entry 2 that never committed.
    let mut new =
        PrimaryBackup::restart(config(2), Some(&encode_view(V1)), None, vec![entry(1, V1)])
            .unwrap();
    let take_over = Message::TakeOver {
        view: V1,
        commit: 0,
        commit_era: 0,
    };
    let out = receive(&mut new, 3, take_over);
    let v2 = next_view(V1, NodeId(2)).unwrap();
    assert_eq!(new.view(), v2);
    assert!(sends(&out).iter().any(|(to, m)| *to == NodeId(3)
        && matches!(m, Message::Replicate { view, prev_index: 1, .. } if *view == v2)));
    let mut backup = PrimaryBackup::restart(
        config(3),
        Some(&encode_view(V1)),
        None,
        vec![entry(1, V1), entry(2, V1)],
    )
    .unwrap();
    let out = receive(
        &mut backup,
        2,
        Message::Replicate {
            view: v2,
            prev_index: 1,
            prev_era: V1,
            entries: vec![entry(2, v2)],
            commit: 0,
            round: 0,
        },
    );
    assert_eq!(backup.view(), v2);
    assert_eq!(
        backup.log().era(2),
        Some(v2),
        "the new primary's entry replaced it"
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Persist(p) if p.truncate_from == Some(2))));
    assert!(sends(&out).iter().any(|(_, m)| *m == ack(v2, 2, 0)));
}

#[test]
fn a_restarted_primary_starts_a_new_view() {
    let mut node =
        PrimaryBackup::restart(config(1), Some(&encode_view(V1)), None, vec![entry(1, V1)])
            .unwrap();
    step(&mut node, Input::Tick);
    assert_eq!(node.view(), next_view(V1, NodeId(1)).unwrap());
    // An answer to a read round of its previous life confirms nothing now.
    let out = receive(&mut node, 2, ack(V1, 1, 1));
    assert_eq!(sends(&out).len(), 1);
    assert!(matches!(sends(&out)[0].1, Message::Stale { .. }));
}

#[test]
fn restart_refuses_state_this_engine_cannot_have_written() {
    let err = PrimaryBackup::restart(
        config(1),
        Some(&encode_view(V1)),
        None,
        vec![entry(1, next_view(V1, NodeId(2)).unwrap())],
    )
    .unwrap_err();
    assert!(err.to_string().contains("beyond the view"), "{err}");
    let err = PrimaryBackup::restart(config(1), Some(&[1, 2, 3]), None, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    // A committed membership entry beyond the history it holds.
    let hard_state = crate::encode_hard_state(V1, 2);
    let err =
        PrimaryBackup::restart(config(1), Some(&hard_state), None, vec![entry(1, V1)]).unwrap_err();
    assert!(err.to_string().contains("committed membership"), "{err}");
    // A view whose primary is no member now is one a member since removed took over.
    let stranger = (1 << 16) | 9;
    PrimaryBackup::restart(config(1), Some(&encode_view(stranger)), None, Vec::new()).unwrap();
}

#[test]
fn automatic_failover_is_the_broken_switch_that_splits_the_brain() {
    let mut c = config(2);
    c.bugs.automatic_failover_ticks = 20;
    let mut backup = PrimaryBackup::new(c).unwrap();
    for _ in 0..20 {
        step(&mut backup, Input::Tick);
    }
    assert_eq!(
        backup.view(),
        next_view(1, NodeId(2)).unwrap(),
        "it promoted itself"
    );
}

/// Values no correct peer sends are dropped, not adopted or asserted on: an Ack claiming
/// more than the primary wrote, a view no member leads or past the last round, entries of a
/// later view than their message.
#[test]
fn impossible_values_from_a_peer_are_dropped() {
    let mut node = ready_primary();
    let out = receive(&mut node, 2, ack(V1, u64::MAX, 0));
    assert!(out.is_empty(), "{out:?}");
    // A later view from no voter moves no primary; nor a view past the last round.
    let stranger = (3 << 16) | 9;
    receive(&mut node, 9, Message::Stale { view: stranger });
    let end = Message::TakeOver {
        view: u64::MAX,
        commit: 0,
        commit_era: 0,
    };
    receive(&mut node, 2, end);
    assert_eq!(node.view(), V1);
    assert_eq!(node.status().role, Role::Leader);
    let mut backup = PrimaryBackup::new(config(2)).unwrap();
    let out = receive(
        &mut backup,
        1,
        Message::Replicate {
            view: V1,
            prev_index: 0,
            prev_era: 0,
            entries: vec![entry(1, next_view(V1, NodeId(3)).unwrap())],
            commit: 0,
            round: 0,
        },
    );
    assert_eq!(backup.log().last_index(), 0);
    assert!(sends(&out).contains(&(NodeId(1), ack(V1, 0, 0))));
}
