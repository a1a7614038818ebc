//! Basic Paxos, claim by claim.

use synod_core::{Action, Input, NodeId, Payload, ReadConsistency, ReadRequest, RequestId};

use super::*;
use crate::{Accept, Ballot, BasicPaxos, Message, Prepare, Scope};

type C = Cluster<BasicPaxos>;

fn b(round: u64, node: u64) -> Ballot {
    Ballot {
        round,
        node: NodeId(node),
    }
}

fn fresh(id: u64) -> BasicPaxos {
    BasicPaxos::new(Config::new(NodeId(id), ids(3))).unwrap()
}

fn receive(node: &mut BasicPaxos, from: u64, message: Message) -> Vec<Action<Message>> {
    step(
        node,
        Input::Receive {
            from: NodeId(from),
            message,
        },
    )
}

fn accept(ballot: Ballot, slot: u64, value: Payload) -> Message {
    Message::Accept(Accept {
        ballot,
        first: slot,
        values: vec![value],
        commit: 0,
    })
}

fn prepare(ballot: Ballot, slot: u64) -> Message {
    Message::Prepare(Prepare {
        ballot,
        slot,
        scope: Scope::One,
        handover: false,
    })
}

/// The kinds of actions, in order: persist before send is what these tests are about.
fn kinds(actions: &[Action<Message>]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Persist(p) => format!(
                "persist(state={})",
                p.hard_state.is_some() || !p.journal.is_empty()
            ),
            Action::Send { to, message } => format!("send {} to {to}", message.name()),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn s2_2_p1_an_acceptor_accepts_the_first_proposal_it_receives() {
    let mut n2 = fresh(2);
    let actions = receive(&mut n2, 1, accept(b(1, 1), 1, Payload::Marker(9)));
    assert_eq!(
        kinds(&actions),
        vec!["persist(state=true)", "send Accepted to n1"]
    );
}

#[test]
fn s2_5_an_acceptor_records_its_promise_in_stable_storage_before_answering() {
    let mut n2 = fresh(2);
    let actions = receive(&mut n2, 1, prepare(b(1, 1), 7));
    assert_eq!(
        kinds(&actions),
        vec!["persist(state=true)", "send Promise to n1"]
    );
}

#[test]
fn s2_2_p1a_a_prepare_or_accept_below_a_promise_is_refused_with_the_higher_ballot() {
    let mut n2 = fresh(2);
    receive(&mut n2, 1, prepare(b(5, 1), 1));
    let refusals = [
        receive(&mut n2, 3, prepare(b(4, 3), 1)),
        receive(&mut n2, 3, accept(b(4, 3), 1, Payload::Noop)),
    ];
    for actions in refusals {
        let sends = kinds(&actions);
        assert_eq!(
            sends,
            vec!["send Nack to n3"],
            "no persist: nothing changed"
        );
        let Action::Send {
            message: Message::Nack(nack),
            ..
        } = &actions[0]
        else {
            panic!()
        };
        assert_eq!(
            nack.promised,
            b(5, 1),
            "the refusal says which ballot to beat"
        );
    }
}

/// n1's value A is accepted by every acceptor, but n1 never hears it and crashes. n2,
/// knowing nothing, proposes B for the same slot.
fn chosen_value_unknown_to_its_proposer() -> C {
    let mut c = C::new(3, |_| {});
    c.drop_if = Some(Box::new(|from, to, m| {
        to == NodeId(1) && from != NodeId(1) && matches!(m, Message::Accepted(_))
    }));
    c.propose(1, vec![proposal(1, 1)]);
    c.crash(1);
    c.drop_if = None;
    c.propose(2, vec![proposal(2, 1)]);
    c.tick_all(5);
    c
}

#[test]
fn s2_2_p2c_a_proposer_adopts_the_value_of_the_highest_ballot_a_promise_reports() {
    let c = chosen_value_unknown_to_its_proposer();
    assert_eq!(
        c.commands(2),
        vec![(1, RequestId::new(1, 1)), (2, RequestId::new(2, 1))],
        "slot 1 keeps A, which was chosen; B moves to the next free slot"
    );
    assert_eq!(c.commands(3), c.commands(2));
    assert!(c.safety_violation.is_none());
}

#[test]
fn s2_2_p2_once_a_value_is_chosen_every_higher_ballot_chosen_has_that_value() {
    let mut c = chosen_value_unknown_to_its_proposer();
    // Three more proposers try their luck, all starting from the same stale view of slot 1.
    c.restart(1);
    for (node, client) in [(1, 3), (3, 4), (2, 5)] {
        c.propose(node, vec![proposal(client, 1)]);
        c.tick_all(5);
    }
    let slot1: Vec<_> = (1..=3).map(|n| c.commands(n).first().copied()).collect();
    assert!(
        slot1.iter().all(|s| *s == Some((1, RequestId::new(1, 1)))),
        "{slot1:?}"
    );
    assert!(c.safety_violation.is_none());
}

#[test]
fn s2_3_a_learner_that_missed_a_decision_asks_a_peer_for_it() {
    let mut c = C::new(3, |_| {});
    c.drop_if = Some(Box::new(|_, to, m| {
        to == NodeId(3) && matches!(m, Message::Decided(d) if d.entries[0].index == 1)
    }));
    c.propose(1, vec![proposal(1, 1)]);
    c.drop_if = None;
    c.propose(1, vec![proposal(1, 2)]);
    assert!(
        c.commands(3).is_empty(),
        "slot 2 is known, slot 1 is missing: nothing applies past the gap"
    );
    c.tick_all(12);
    assert_eq!(
        c.commands(3).len(),
        2,
        "n3 asked for slot 1 and applied both"
    );
}

#[test]
fn s2_3_a_hole_nobody_can_fill_is_decided_with_a_noop() {
    let mut c = C::new(3, |_| {});
    // n1 works on slots 1 and 2 at once; slot 1's Accept reaches no one else, and n1 dies.
    c.drop_if = Some(Box::new(|from, to, m| {
        from == NodeId(1) && to != NodeId(1) && matches!(m, Message::Accept(a) if a.first == 1)
    }));
    c.propose(1, vec![proposal(1, 1), proposal(1, 2)]);
    c.crash(1);
    c.drop_if = None;
    c.tick_all(60);
    let applied: Vec<(u64, Payload)> = c.applied[&NodeId(2)]
        .iter()
        .map(|e| (e.index, e.payload.clone()))
        .collect();
    assert_eq!(
        applied[0],
        (1, Payload::Noop),
        "the hole is filled with a no-op"
    );
    assert_eq!(applied[1].0, 2);
    assert_eq!(c.commands(3), c.commands(2));
}

#[test]
fn s2_4_competing_proposers_all_get_their_commands_decided_with_backoff() {
    let mut c = C::new(3, |_| {});
    for n in 1..=3 {
        c.step(
            NodeId(n),
            Input::Propose((1..=5).map(|s| proposal(n, s)).collect()),
        );
    }
    c.deliver_all();
    c.tick_all(300);
    let preemptions: u64 = (1..=3).map(|n| c.node(n).preemptions()).sum();
    assert!(preemptions > 0, "they did collide");
    assert_eq!(c.commands(1).len(), 15, "every command was decided once");
    assert_eq!(c.commands(2), c.commands(1));
    assert!((1..=3).all(|n| c.node(n).waiting() == 0));
}

#[test]
fn s3_a_linearizable_read_is_answered_once_its_marker_is_decided_and_applied() {
    let mut c = C::new(3, |_| {});
    c.propose(1, vec![proposal(1, 1)]);
    c.step(
        NodeId(2),
        Input::Read(vec![ReadRequest {
            id: RequestId::new(9, 1),
            consistency: ReadConsistency::Linearizable,
            keys: None,
        }]),
    );
    c.deliver_all();
    assert_eq!(c.reads_ready[&NodeId(2)], vec![RequestId::new(9, 1)]);
    let last = c.applied[&NodeId(2)].last().unwrap();
    assert!(
        matches!(last.payload, Payload::Marker(_)) && last.index == 2,
        "the read sits behind slot 1"
    );
}

#[test]
fn s2_5_a_restarted_proposer_never_reuses_a_ballot_and_an_acceptor_keeps_its_promise() {
    let mut c = C::new(3, |_| {});
    c.propose(1, vec![proposal(1, 1)]);
    let before = c.node(1).status().era;
    c.crash(1);
    c.restart(1);
    c.propose(1, vec![proposal(1, 2)]);
    assert!(
        c.node(1).status().era > before,
        "rounds continue above those used before the crash"
    );

    let mut n2 = fresh(2);
    let mut disk = Disk::default();
    let mut out = Vec::new();
    synod_core::Engine::step(
        &mut n2,
        Input::Receive {
            from: NodeId(1),
            message: prepare(b(7, 1), 4),
        },
        &mut out,
    );
    for a in out {
        if let Action::Persist(p) = a {
            disk.apply(p);
        }
    }
    let mut n2 = <BasicPaxos as TestEngine>::boot(Config::new(NodeId(2), ids(3)), &disk).unwrap();
    let actions = receive(&mut n2, 3, accept(b(6, 3), 4, Payload::Noop));
    assert_eq!(
        kinds(&actions),
        vec!["send Nack to n3"],
        "the promise survived the restart"
    );
}

#[test]
fn bug_switch_an_acceptor_that_forgets_promises_on_restart_accepts_below_them() {
    let mut disk = Disk::default();
    let mut n2 = fresh(2);
    let mut out = Vec::new();
    synod_core::Engine::step(
        &mut n2,
        Input::Receive {
            from: NodeId(1),
            message: prepare(b(7, 1), 4),
        },
        &mut out,
    );
    for a in out {
        if let Action::Persist(p) = a {
            disk.apply(p);
        }
    }
    let mut config = Config::new(NodeId(2), ids(3));
    config.bugs.forget_promises_on_restart = true;
    let mut n2 = <BasicPaxos as TestEngine>::boot(config, &disk).unwrap();
    let actions = receive(&mut n2, 3, accept(b(6, 3), 4, Payload::Noop));
    assert_eq!(
        kinds(&actions),
        vec!["persist(state=true)", "send Accepted to n3"],
        "the broken promise"
    );
}

#[test]
fn s3_a_read_after_a_restart_is_not_answered_by_a_marker_from_before_it() {
    let mut c = C::new(3, |_| {});
    let read = |c: &mut C, seq| {
        c.step(
            NodeId(2),
            Input::Read(vec![ReadRequest {
                id: RequestId::new(9, seq),
                consistency: ReadConsistency::Linearizable,
                keys: None,
            }]),
        );
    };
    read(&mut c, 1);
    c.deliver_all();
    c.propose(1, vec![proposal(1, 1)]);
    c.crash(2);
    c.restart(2);
    // The restarted node re-applies its log, old marker included, in the step that takes
    // the new read; the new read must wait for its own marker, after slot 2.
    c.drop_if = Some(Box::new(|from, _, _| from == NodeId(2)));
    read(&mut c, 2);
    assert_eq!(
        c.reads_ready.get(&NodeId(2)).map(Vec::len),
        Some(1),
        "only the first read is answered"
    );
    c.drop_if = None;
    c.tick_all(20);
    assert_eq!(
        c.reads_ready[&NodeId(2)],
        vec![RequestId::new(9, 1), RequestId::new(9, 2)]
    );
}

#[test]
fn s2_2_a_proposer_that_crashes_between_phase_1_and_phase_2_leaves_the_slot_to_others() {
    let mut c = C::new(3, |_| {});
    // n1 gathers promises for slot 1 but dies before any Accept leaves it.
    c.drop_if = Some(Box::new(|from, to, m| {
        from == NodeId(1) && to != NodeId(1) && matches!(m, Message::Accept(_))
    }));
    c.propose(1, vec![proposal(1, 1)]);
    c.crash(1);
    c.drop_if = None;
    c.propose(2, vec![proposal(2, 1)]);
    c.tick_all(5);
    assert_eq!(
        c.commands(2),
        vec![(1, RequestId::new(2, 1))],
        "slot 1 goes to the next proposer"
    );
    assert_eq!(c.commands(3), c.commands(2));
}

/// A command chosen in slot 1 whose proposer, n1, missed every Accepted and the decision;
/// n2 decides the slot again (phase 1 hands it the accepted command), n2 and n3 compact past
/// it, then n1 comes back. Returns how many times each node applied the command.
fn proposer_that_missed_its_decision_comes_back(repropose_without_asking: bool) -> Vec<usize> {
    let mut c = C::new(3, |cfg| {
        cfg.bugs.repropose_without_asking = repropose_without_asking;
    });
    let n = NodeId;
    let command = proposal(0x8000_0000_0000_0001, 1);
    // n1's command is accepted everywhere, but no answer and no decision reaches n1.
    c.drop_if = Some(Box::new(move |from, to, m| {
        to == n(1) && from != n(1) && matches!(m, Message::Accepted(_) | Message::Decided(_))
    }));
    c.propose(1, vec![command.clone()]);
    // n2 proposes in the same slot; phase 1 makes it decide n1's command there, then its own.
    c.propose(2, vec![proposal(2, 1)]);
    c.tick_all(20);
    assert_eq!(c.node(2).decided_through(), 2, "n2 decided slots 1 and 2");
    assert_eq!(c.node(1).decided_through(), 0, "n1 learned nothing");
    // n2 and n3 compact both slots into a snapshot.
    for id in [2, 3] {
        let applied = &c.applied[&n(id)];
        let era = applied.iter().find(|e| e.index == 2).unwrap().era;
        let snapshot = Snapshot {
            membership: None,
            meta: synod_core::SnapshotMeta { index: 2, era },
            data: Bytes::from_static(b"state through slot 2"),
        };
        c.step(n(id), Input::Snapshotted(snapshot));
    }
    // n1 hears everything again and has more to propose.
    c.drop_if = None;
    c.propose(1, vec![proposal(1, 7)]);
    c.tick_all(100);
    assert!(c.safety_violation.is_none(), "{:?}", c.safety_violation);
    assert_eq!(c.node(1).waiting(), 0, "n1 placed or settled everything");
    (1..=3)
        .map(|id| {
            c.commands(id)
                .iter()
                .filter(|(_, r)| *r == command.id)
                .count()
        })
        .collect()
}

#[test]
fn s3_a_proposer_that_cannot_learn_its_compacted_slot_asks_whether_its_command_was_chosen() {
    // n2 and n3 applied the command once, in slot 1; n1 got slot 1 inside a snapshot.
    assert_eq!(
        proposer_that_missed_its_decision_comes_back(false),
        vec![0, 1, 1]
    );
}

#[test]
fn s3_a_proposer_that_reproposes_without_asking_puts_a_chosen_command_in_the_log_twice() {
    let applied = proposer_that_missed_its_decision_comes_back(true);
    assert_eq!(
        applied[1], 2,
        "n2 applied it in slot 1 and again later: {applied:?}"
    );
}

#[test]
fn s3_a_snapshot_transfer_resumes_where_it_stands_after_a_duplicate_or_a_loss() {
    let mut n1 = fresh(1);
    let meta = synod_core::SnapshotMeta { index: 50, era: 3 };
    let data = Bytes::from_static(b"0123456789ab");
    let chunk = |offset: usize, done: bool| {
        Message::SnapshotChunk(crate::SnapshotChunk {
            meta,
            offset: offset as u64,
            data: data.slice(offset..offset + 4),
            done,
            membership: None,
        })
    };
    let asked = |actions: &[Action<Message>]| -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    message: Message::SnapshotRequest(r),
                    ..
                } => Some(r.offset),
                _ => None,
            })
            .collect()
    };
    assert_eq!(asked(&receive(&mut n1, 2, chunk(0, false))), vec![4]);
    assert_eq!(asked(&receive(&mut n1, 2, chunk(4, false))), vec![8]);
    // The first chunk again, late or duplicated: it must not throw the progress away.
    assert_eq!(
        asked(&receive(&mut n1, 2, chunk(0, false))),
        Vec::<u64>::new()
    );
    // The next chunk is lost; the gap timer asks for it again, from where the transfer stands.
    let mut resumed = Vec::new();
    for _ in 0..30 {
        resumed.extend(asked(&step(&mut n1, Input::Tick)));
    }
    assert!(resumed.contains(&8), "asked again for byte 8: {resumed:?}");
    let last = receive(&mut n1, 2, chunk(8, true));
    let restored: Vec<_> = last
        .iter()
        .filter_map(|a| match a {
            Action::Restore(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(restored.len(), 1, "{last:?}");
    assert_eq!(restored[0].data, data);
    assert_eq!(n1.decided_through(), 50);
}
