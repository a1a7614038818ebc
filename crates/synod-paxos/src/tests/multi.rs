//! Multi-Paxos (Paxos Made Simple, section 3), claim by claim.

use synod_core::{Engine, Input, NodeId, Payload, ReadConsistency, ReadRequest, RequestId, Role};

use super::*;
use crate::{Message, MultiPaxos, Scope};

type C = Cluster<MultiPaxos>;

/// Ticks until some node leads; returns it.
fn elect(c: &mut C) -> u64 {
    for _ in 0..200 {
        c.tick_all(1);
        if let Some(n) = (1..=c.nodes.len() as u64)
            .find(|&n| !c.down.contains(&NodeId(n)) && c.node(n).leading().is_some())
        {
            return n;
        }
    }
    panic!("no leader");
}

#[test]
fn s3_a_leader_is_chosen_by_one_phase_1_for_every_undecided_slot() {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    let prepares: Vec<_> = c
        .sent
        .iter()
        .filter_map(|(from, _, m)| match m {
            Message::Prepare(p) if *from == NodeId(leader) => Some((p.slot, p.scope)),
            _ => None,
        })
        .collect();
    assert!(
        prepares
            .iter()
            .all(|&(slot, scope)| slot == 1 && scope == Scope::Onward),
        "{prepares:?}"
    );
    assert_eq!(c.node(leader).status().role, Role::Leader);
}

#[test]
fn s3_in_steady_state_the_leader_runs_only_phase_2_one_round_trip_per_batch() {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.tick_all(5);
    c.sent.clear();
    c.propose(leader, (1..=20).map(|s| proposal(1, s)).collect());
    let prepares = c.count_sent(|m| matches!(m, Message::Prepare(_)));
    let accepts = c.count_sent(|m| matches!(m, Message::Accept(_)));
    assert_eq!(prepares, 0, "no phase 1 in steady state");
    assert_eq!(accepts, 2, "one Accept per follower for the whole batch");
    assert_eq!(c.commands(leader).len(), 20);
}

#[test]
fn s3_decisions_reach_followers_at_once_in_a_commit_notice_and_else_on_the_heartbeat() {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.tick_all(3);
    let follower = if leader == 1 { 2 } else { 1 };
    c.propose(leader, vec![proposal(1, 1)]);
    assert_eq!(
        c.commands(follower),
        c.commands(leader),
        "no tick passed: the commit notice told it"
    );
    assert_eq!(c.count_sent(|m| matches!(m, Message::Commit(_))), 2);
    // Without the notice, the next heartbeat's commit slot tells it.
    c.drop_if = Some(Box::new(|_, _, m| matches!(m, Message::Commit(_))));
    c.propose(leader, vec![proposal(1, 2)]);
    assert_eq!(c.commands(follower).len(), 1, "accepted, not known decided");
    c.tick_all(3);
    assert_eq!(c.commands(follower), c.commands(leader));
}

#[test]
fn s3_a_new_leader_reproposes_accepted_values_and_fills_holes_with_noops() {
    let mut c = C::new(3, |c| {
        c.election_timeout_ticks_min = 40;
        c.election_timeout_ticks_max = 60;
    });
    let leader = elect(&mut c);
    c.tick_all(3);
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    let (a, z) = (others[0], others[1]);
    // Slot k reaches no follower; slot k+1 reaches only `z`. Nothing gets decided.
    let first = c.node(leader).decided_through() + 1;
    c.drop_if = Some(Box::new(move |from, to, m| {
        from == NodeId(leader)
            && to != NodeId(leader)
            && matches!(m, Message::Accept(acc) if !(to == NodeId(z) && acc.first + acc.values.len() as u64 > first + 1))
    }));
    c.step(NodeId(leader), Input::Propose(vec![proposal(1, 1)]));
    c.deliver_all();
    c.step(NodeId(leader), Input::Propose(vec![proposal(1, 2)]));
    c.deliver_all();
    c.crash(leader);
    c.drop_if = None;
    let new = elect(&mut c);
    assert_ne!(new, leader);
    c.tick_all(5);
    let decided: Vec<(u64, Payload)> = c.applied[&NodeId(a)]
        .iter()
        .filter(|e| e.index >= first)
        .map(|e| (e.index, e.payload.clone()))
        .collect();
    assert_eq!(
        decided[0],
        (first, Payload::Noop),
        "slot {first} was a hole: a no-op"
    );
    assert_eq!(
        decided[1],
        (first + 1, Payload::Command(proposal(1, 2))),
        "slot {} keeps what z accepted",
        first + 1
    );
    assert!(c.safety_violation.is_none());
}

#[test]
fn s3_linearizable_reads_confirm_the_ballot_with_a_majority_without_writing_the_log() {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.propose(leader, vec![proposal(1, 1)]);
    let decided = c.node(leader).decided_through();
    c.step(
        NodeId(leader),
        Input::Read(vec![ReadRequest {
            id: RequestId::new(9, 1),
            consistency: ReadConsistency::Linearizable,
            keys: None,
        }]),
    );
    assert!(
        !c.reads_ready.contains_key(&NodeId(leader)),
        "not before a majority confirms"
    );
    c.deliver_all();
    assert_eq!(c.reads_ready[&NodeId(leader)], vec![RequestId::new(9, 1)]);
    assert_eq!(
        c.node(leader).decided_through(),
        decided,
        "the read wrote nothing"
    );
}

#[test]
fn a_leader_cut_off_from_a_majority_steps_down_and_refuses_requests() {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.drop_if = Some(Box::new(move |from, to, _| {
        from == NodeId(leader) || to == NodeId(leader)
    }));
    for _ in 0..40 {
        c.step(NodeId(leader), Input::Tick);
        c.deliver_all();
    }
    assert_ne!(c.node(leader).status().role, Role::Leader);
}

#[test]
fn a_higher_ballot_deposes_the_leader_and_no_slot_gets_two_values() {
    let mut c = C::new(5, |_| {});
    let first = elect(&mut c);
    c.propose(first, (1..=5).map(|s| proposal(1, s)).collect());
    // Split the would-be leaders: the first leader with one follower, three nodes apart.
    let minority = [first, if first == 1 { 2 } else { 1 }];
    c.drop_if = Some(Box::new(move |from, to, _| {
        minority.contains(&from.0) != minority.contains(&to.0)
    }));
    c.tick_all(80);
    let second = (1..=5)
        .find(|&n| !minority.contains(&n) && c.node(n).leading().is_some())
        .expect("the majority elects");
    c.propose(second, (1..=5).map(|s| proposal(2, s)).collect());
    c.propose(first, (1..=5).map(|s| proposal(3, s)).collect());
    c.drop_if = None;
    c.tick_all(20);
    assert_eq!(
        c.node(first).status().role,
        Role::Follower,
        "the old leader learned of the higher ballot"
    );
    for n in 1..=5 {
        assert_eq!(c.commands(n), c.commands(second), "n{n}");
    }
    assert!(
        c.commands(second).iter().all(|(_, id)| id.client.0 != 3),
        "the minority leader decided nothing"
    );
    assert!(c.safety_violation.is_none());
}

#[test]
fn a_restarted_leader_rejoins_as_follower_and_catches_up() {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.propose(leader, (1..=3).map(|s| proposal(1, s)).collect());
    c.crash(leader);
    let new = elect(&mut c);
    c.propose(new, (4..=6).map(|s| proposal(1, s)).collect());
    c.restart(leader);
    c.tick_all(30);
    assert_eq!(c.commands(leader), c.commands(new));
    assert_eq!(c.commands(new).len(), 6);
}

#[test]
fn s2_2_p1a_a_deposed_leader_cannot_count_an_acceptor_that_decided_the_slot_otherwise() {
    // n2 decided slot 1 under a newer leader; the old leader's Accept for slot 1 must be
    // refused, not acknowledged as if the slot had been accepted.
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.propose(leader, vec![proposal(1, 1)]);
    c.tick_all(3);
    let follower = if leader == 2 { 3 } else { 2 };
    let decided = c.node(follower).decided_through();
    assert!(decided >= 1);
    let stale = crate::Ballot {
        round: 0,
        node: NodeId(leader),
    };
    let accept = Message::Accept(crate::Accept {
        ballot: stale,
        first: decided,
        values: vec![Payload::Marker(1)],
        commit: 0,
    });
    let actions = step(
        c.nodes.get_mut(&NodeId(follower)).unwrap(),
        Input::Receive {
            from: NodeId(leader),
            message: accept,
        },
    );
    let replies: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            synod_core::Action::Send { message, .. } => Some(message.name()),
            _ => None,
        })
        .collect();
    assert_eq!(replies, vec!["Nack"]);
}

#[test]
fn a_leader_that_crashes_between_phase_1_and_phase_2_loses_nothing_chosen() {
    let mut c = C::new(3, |c| {
        c.election_timeout_ticks_min = 40;
        c.election_timeout_ticks_max = 60;
    });
    let first = elect(&mut c);
    c.propose(first, (1..=3).map(|s| proposal(1, s)).collect());
    c.tick_all(3);
    // The next leader wins phase 1, but its phase 2 never leaves it before it dies.
    c.crash(first);
    c.drop_if = Some(Box::new(|_, _, m| matches!(m, Message::Accept(_))));
    let second = elect(&mut c);
    c.step(NodeId(second), Input::Propose(vec![proposal(2, 1)]));
    c.deliver_all();
    c.crash(second);
    c.drop_if = None;
    c.restart(first);
    let third = elect(&mut c);
    c.propose(third, vec![proposal(3, 1)]);
    c.tick_all(10);
    let decided = c.commands(third);
    assert_eq!(
        &decided[..3],
        &c.commands(first)[..3],
        "what the first leader decided survives"
    );
    assert_eq!(
        decided
            .iter()
            .map(|(_, id)| id.client.0)
            .collect::<Vec<_>>(),
        vec![1, 1, 1, 3],
        "{decided:?}"
    );
    assert!(c.safety_violation.is_none());
}

/// Ticks node `id` alone `n` times, delivering after each tick.
fn tick_node(c: &mut C, id: u64, n: u64) {
    for _ in 0..n {
        c.step(NodeId(id), Input::Tick);
        c.deliver_all();
    }
}

/// The race of a leader filling a gap with a decision of a higher ballot, on five nodes:
/// n1 leads with ballot B; its Accept of w for slot 1 reaches only n2; slot 2 is chosen
/// under B, so n1 has a gap at 1. n3, cut off from n1 and n2, wins phase 1 with a higher
/// ballot over n3-n5 and decides a no-op in slot 1. n1's gap timer asks the majority side and
/// learns slot 1 = no-op. Returns the safety violation the harness saw, if any.
fn leader_learns_a_higher_ballots_decision(lead_on: bool) -> (Option<String>, bool) {
    let mut c = C::new(5, |cfg| {
        cfg.election_timeout_ticks_min = 40;
        cfg.election_timeout_ticks_max = 41;
        cfg.gap_timeout_ticks = 2;
        cfg.bugs.lead_on_after_a_higher_decision = lead_on;
    });
    let n = NodeId;
    tick_node(&mut c, 1, 40);
    assert!(c.node(1).leading().is_some(), "n1 leads with B");
    // w for slot 1 reaches n2 alone.
    c.drop_if = Some(Box::new(move |from, to, m| {
        from == n(1) && to.0 >= 3 && matches!(m, Message::Accept(_))
    }));
    c.propose(1, vec![proposal(7, 1)]);
    // Slot 2 is chosen under B by everyone; any resend of slot 1 still misses n3-n5.
    c.drop_if = Some(Box::new(move |from, to, m| {
        from == n(1) && to.0 >= 3 && matches!(m, Message::Accept(a) if a.first <= 1)
    }));
    c.propose(1, vec![proposal(7, 2)]);
    assert_eq!(c.node(1).decided_through(), 0, "n1 has a gap at slot 1");
    // n3 wins phase 1 over n3-n5 and decides slot 1 (a no-op: no promise reported w).
    let crosses = move |from: NodeId, to: NodeId| (from.0 <= 2) != (to.0 <= 2);
    // n4 and n5 stop hearing n1 for an election timeout (what they say meanwhile is lost),
    // so they no longer hold to it.
    c.drop_if = Some(Box::new(move |from, to, _| {
        crosses(from, to) || from.0 >= 4
    }));
    tick_node(&mut c, 4, 40);
    tick_node(&mut c, 5, 40);
    c.drop_if = Some(Box::new(move |from, to, _| crosses(from, to)));
    for _ in 0..120 {
        tick_node(&mut c, 3, 1);
        if c.node(3).leading().is_some() {
            break;
        }
    }
    assert!(
        c.node(3).leading().is_some(),
        "n3 leads with a higher ballot"
    );
    assert!(c.node(3).decided_through() >= 2);
    // n1 may ask the other side about its gap and hear the answer; nothing else crosses.
    c.drop_if = Some(Box::new(move |from, to, m| {
        crosses(from, to) && !matches!(m, Message::AskDecided(_) | Message::Decided(_))
    }));
    for _ in 0..60 {
        tick_node(&mut c, 1, 1);
        tick_node(&mut c, 2, 1);
    }
    assert!(c.node(1).decided_through() >= 1, "n1 filled its gap");
    (c.safety_violation.clone(), c.node(1).leading().is_some())
}

#[test]
fn s3_a_leader_that_learns_a_decision_of_a_higher_ballot_steps_down_and_no_follower_decides_what_was_not_chosen(
) {
    let (violation, still_leading) = leader_learns_a_higher_ballots_decision(false);
    assert_eq!(violation, None);
    assert!(
        !still_leading,
        "a higher ballot decided: n1 can choose nothing more"
    );
}

#[test]
fn s3_a_leader_that_leads_on_after_a_higher_decision_makes_a_follower_decide_an_unchosen_value() {
    let (violation, _) = leader_learns_a_higher_ballots_decision(true);
    let violation = violation.expect("n2 decides w in slot 1, where the no-op was chosen");
    assert!(violation.contains("n2"), "{violation}");
}

#[test]
fn s3_a_candidate_that_learns_a_decision_while_campaigning_proposes_nothing_in_that_slot() {
    // n1 campaigns from slot 1; before the promises reach it (they were sent before a higher
    // ballot took over), it learns from a peer that slot 1 was decided. As leader it must not
    // put anything of its own ballot in slot 1: a follower that accepted it would decide it.
    let mut c = C::new(3, |cfg| {
        cfg.election_timeout_ticks_min = 40;
        cfg.election_timeout_ticks_max = 41;
    });
    let n = NodeId;
    c.drop_if = Some(Box::new(move |_, to, m| {
        to == n(1) && matches!(m, Message::Promise(_))
    }));
    tick_node(&mut c, 1, 40);
    let promises: Vec<(NodeId, Message)> = c
        .sent
        .iter()
        .filter(|(from, to, m)| *to == n(1) && *from != n(1) && matches!(m, Message::Promise(_)))
        .map(|(from, _, m)| (*from, m.clone()))
        .collect();
    assert_eq!(
        promises.len(),
        2,
        "n2 and n3 promised; n1 has not heard yet"
    );
    let chosen = Payload::Command(proposal(9, 1));
    let decided = crate::Decided {
        entries: vec![synod_core::Entry {
            index: 1,
            era: crate::Ballot {
                round: 50,
                node: n(3),
            }
            .era(),
            payload: chosen.clone(),
        }],
    };
    c.drop_if = None;
    c.step(
        n(1),
        Input::Receive {
            from: n(3),
            message: Message::Decided(decided),
        },
    );
    for (from, promise) in promises {
        c.step(
            n(1),
            Input::Receive {
                from,
                message: promise,
            },
        );
    }
    c.deliver_all();
    assert!(c.node(1).leading().is_some(), "n1 leads");
    c.sent.clear();
    c.propose(1, vec![proposal(1, 1)]);
    let slots: Vec<u64> = c
        .sent
        .iter()
        .filter_map(|(from, _, m)| match m {
            Message::Accept(a) if *from == n(1) => Some(a.first),
            _ => None,
        })
        .collect();
    assert!(
        !slots.contains(&1),
        "no Accept for the decided slot 1: {slots:?}"
    );
    assert!(slots.contains(&2), "the command goes to slot 2: {slots:?}");
    c.tick_all(5);
    assert!(c.safety_violation.is_none(), "{:?}", c.safety_violation);
    for id in 2..=3 {
        assert!(
            c.applied
                .get(&n(id))
                .is_none_or(|log| log.iter().all(|e| e.index != 1 || e.payload == chosen)),
            "n{id} decided slot 1 as chosen"
        );
    }
}

/// What `id`'s acceptor holds: its floor, then each of `slots`, one line each.
fn acceptor_state(c: &C, id: u64, slots: std::ops::RangeInclusive<u64>) -> Vec<String> {
    let a = c.node(id).acceptor();
    std::iter::once(format!("floor {:?}", a.floor()))
        .chain(slots.map(|s| format!("{s}: {:?}", a.slot(s))))
        .collect()
}

/// Three nodes with a leader, where nothing more is decided: every answer to the leader is
/// lost, so both followers hold every value accepted from now on, as they do for a moment
/// under heavy load. Returns the cluster, the leader and one follower.
fn nothing_decided() -> (C, u64, u64) {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.tick_all(3);
    c.drop_if = Some(Box::new(move |_, to, m| {
        to == NodeId(leader) && matches!(m, Message::Accepted(_))
    }));
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    (c, leader, follower)
}

/// Restarts `follower` and checks its acceptor holds what it held for the `count` slots after
/// the decided ones; returns that.
fn restart_keeps_the_acceptor(c: &mut C, leader: u64, follower: u64, count: u64) -> Vec<String> {
    let first = c.node(leader).decided_through() + 1;
    let range = first..=first + count;
    let before = acceptor_state(c, follower, range.clone());
    c.crash(follower);
    c.restart(follower);
    assert_eq!(acceptor_state(c, follower, range), before);
    before
}

fn big_proposal(seq: u64, bytes: usize) -> synod_core::Proposal {
    synod_core::Proposal {
        id: RequestId::new(7, seq),
        command: bytes::Bytes::from(vec![seq as u8; bytes]),
    }
}

#[test]
fn an_acceptor_persists_what_changed_not_everything_it_holds_and_restarts_to_the_same_state() {
    let (mut c, leader, follower) = nothing_decided();
    let written_before = c.disks[&NodeId(follower)].state_bytes_written;
    for seq in 1..=300 {
        c.propose(leader, vec![big_proposal(seq, 100)]);
    }
    let disk = &c.disks[&NodeId(follower)];
    let written = disk.state_bytes_written - written_before;
    // Restating the whole acceptor at every accept would write 300 * 301 / 2 values.
    assert!(
        written < 300 * 200,
        "{written} bytes of state written for 300 accepts of 100 bytes"
    );
    assert!(disk.journal.len() >= 300, "journalled, not checkpointed");
    let before = restart_keeps_the_acceptor(&mut c, leader, follower, 300);
    assert!(before[1..].iter().filter(|s| s.contains("Some")).count() >= 300);
}

#[test]
fn a_long_journal_is_folded_into_a_checkpoint_that_restarts_to_the_same_state() {
    let (mut c, leader, follower) = nothing_decided();
    for seq in 1..=200 {
        c.propose(leader, vec![big_proposal(seq, 4096)]);
    }
    let disk = &c.disks[&NodeId(follower)];
    assert!(disk.hard_state.is_some());
    assert!(
        disk.journal.iter().map(Vec::len).sum::<usize>()
            < 2 * disk.hard_state.as_ref().unwrap().len() + (256 << 10) + 8192,
        "the journal stays within its bound"
    );
    assert!(
        disk.journal.len() < 200,
        "a checkpoint replaced older journal records"
    );
    restart_keeps_the_acceptor(&mut c, leader, follower, 200);
}

#[test]
fn a_leader_retries_an_accept_only_to_acceptors_that_have_not_answered() {
    let mut c = C::new(5, |_| {});
    let leader = elect(&mut c);
    c.tick_all(3);
    let others: Vec<u64> = (1..=5).filter(|&n| n != leader).collect();
    let (answers, lost_answer, down) = (others[0], others[1], [others[2], others[3]]);
    for n in down {
        c.crash(n);
    }
    c.drop_if = Some(Box::new(move |from, _, m| {
        from == NodeId(lost_answer) && matches!(m, Message::Accepted(_))
    }));
    c.propose(leader, vec![proposal(1, 1)]);
    c.sent.clear();
    let retry = crate::Config::new(NodeId(leader), ids(5)).retry_ticks;
    tick_node(&mut c, leader, retry);
    let accepts_to = |c: &C, n: u64| {
        c.sent
            .iter()
            .filter(|(from, to, m)| {
                *from == NodeId(leader) && *to == NodeId(n) && matches!(m, Message::Accept(_))
            })
            .count()
    };
    assert_eq!(accepts_to(&c, answers), 0, "it accepted: not asked again");
    assert_eq!(
        accepts_to(&c, leader),
        0,
        "its own acceptor answers through the loopback"
    );
    assert_eq!(accepts_to(&c, lost_answer), 1);
    assert_eq!(accepts_to(&c, down[0]), 1);
    assert_eq!(accepts_to(&c, down[1]), 1);
}

#[test]
fn a_leader_keeps_at_most_in_flight_bytes_max_undecided_and_queues_the_rest_in_order() {
    let mut c = C::new(3, |c| c.in_flight_bytes_max = 250);
    let leader = elect(&mut c);
    c.tick_all(3);
    c.drop_if = Some(Box::new(|_, _, m| matches!(m, Message::Accepted(_))));
    c.sent.clear();
    c.propose(leader, (1..=10).map(|seq| big_proposal(seq, 100)).collect());
    let proposed: usize = c
        .sent
        .iter()
        .filter_map(|(_, to, m)| match m {
            Message::Accept(a) if *to != NodeId(leader) => Some(a.values.len()),
            _ => None,
        })
        .sum();
    assert_eq!(
        proposed,
        2 * 2,
        "two values of 100 bytes fit in 250, to each follower"
    );
    c.drop_if = None;
    c.tick_all(40);
    let applied: Vec<u64> = c.commands(leader).iter().map(|(_, id)| id.seq).collect();
    assert_eq!(
        applied,
        (1..=10).collect::<Vec<_>>(),
        "all of them, in order"
    );
    let follower = if leader == 1 { 2 } else { 1 };
    assert_eq!(c.commands(follower), c.commands(leader));
}

#[test]
fn no_accept_carries_more_than_batch_bytes_max_of_values() {
    let mut c = C::new(3, |c| c.batch_bytes_max = 1000);
    let leader = elect(&mut c);
    c.tick_all(3);
    c.sent.clear();
    c.propose(leader, (1..=5).map(|seq| big_proposal(seq, 600)).collect());
    let to_one: Vec<usize> = c
        .sent
        .iter()
        .filter_map(|(_, to, m)| match m {
            Message::Accept(a) if *to == NodeId(if leader == 1 { 2 } else { 1 }) => {
                Some(a.values.len())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        to_one,
        vec![1; 5],
        "600 + 600 bytes would pass 1000: one value each"
    );
    assert_eq!(c.commands(leader).len(), 5);
}

#[test]
fn a_candidate_too_far_behind_for_one_promise_catches_up_before_it_leads() {
    let mut c = C::new(3, |c| c.batch_entries_max = 8);
    let leader = elect(&mut c);
    c.tick_all(3);
    let behind = (1..=3).find(|&n| n != leader).unwrap();
    c.crash(behind);
    for seq in 1..=20 {
        c.propose(leader, vec![proposal(1, seq)]);
    }
    c.tick_all(3);
    // The leader goes; the member that missed twenty decisions comes back and campaigns.
    c.crash(leader);
    c.restart(behind);
    // Only it ticks at first, so it is the one that stands.
    tick_node(&mut c, behind, 60);
    c.tick_all(200);
    assert_eq!(c.safety_violation, None);
    let other = (1..=3).find(|&n| n != leader && n != behind).unwrap();
    let applied: Vec<u64> = c
        .commands(behind)
        .iter()
        .filter(|(_, id)| id.client.0 == 1)
        .map(|(_, id)| id.seq)
        .collect();
    assert_eq!(applied, (1..=20).collect::<Vec<_>>());
    assert!(
        c.node(behind).leading().is_some() || c.node(other).leading().is_some(),
        "one of the two leads"
    );
    let promises_listing_all = c
        .sent
        .iter()
        .any(|(_, _, m)| matches!(m, Message::Promise(p) if p.accepted.len() > 8));
    assert!(
        !promises_listing_all,
        "no Promise carried more than a batch"
    );
    let sent_to_catch_up = c.sent.iter().any(|(_, to, m)| {
        *to == NodeId(behind) && matches!(m, Message::Promise(p) if p.compacted_through >= 20)
    });
    assert!(sent_to_catch_up, "the candidate was told to catch up first");
}

#[test]
fn a_leader_that_steps_down_refuses_the_writes_it_queued() {
    let mut c = C::new(3, |c| c.in_flight_bytes_max = 250);
    let leader = elect(&mut c);
    c.tick_all(3);
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    for &n in &others {
        c.crash(n);
    }
    c.propose(leader, (1..=5).map(|seq| big_proposal(seq, 100)).collect());
    assert!(c.rejected.is_empty());
    // Cut off from every acceptor, it steps down at the next quorum check.
    tick_node(&mut c, leader, 40);
    assert!(c.node(leader).leading().is_none());
    let refused: Vec<u64> = c
        .rejected
        .iter()
        .filter(|(n, _)| *n == NodeId(leader))
        .map(|(_, id)| id.seq)
        .collect();
    assert_eq!(
        refused,
        vec![3, 4, 5],
        "the queued ones, which never got a slot"
    );
}

/// An operator asks `leader` to hand its leadership to `target`.
fn hand_over(c: &mut C, leader: u64, target: u64) {
    let to = NodeId(target);
    c.step(NodeId(leader), Input::TransferLeadership { to });
}

/// The follower other than `not`, lowest id first.
fn other_than(c: &C, not: &[u64]) -> u64 {
    (1..=c.nodes.len() as u64)
        .find(|n| !not.contains(n))
        .expect("enough nodes")
}

#[test]
fn a_leader_hands_over_to_the_member_it_names_and_refuses_what_it_held_with_its_name() {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.tick_all(3);
    c.propose(leader, vec![proposal(1, 1)]);
    let target = other_than(&c, &[leader]);
    hand_over(&mut c, leader, target);
    // Held, not proposed: the hand-over is under way.
    c.step(NodeId(leader), Input::Propose(vec![proposal(1, 2)]));
    assert_eq!(c.count_sent(|m| matches!(m, Message::TimeoutNow(_))), 1);
    c.deliver_all();
    assert_eq!(c.node(target).status().role, Role::Leader);
    let old = c.node(leader).status();
    assert_eq!(
        (old.role, old.leader),
        (Role::Follower, Some(NodeId(target)))
    );
    assert!(
        c.rejected.contains(&(NodeId(leader), RequestId::new(1, 2))),
        "the held write is refused, so its client asks the new leader"
    );
    assert_eq!(
        c.commands(target),
        c.commands(leader),
        "nothing decided is lost"
    );
    assert!(c.safety_violation.is_none());
}

#[test]
fn a_lagging_target_campaigns_only_once_it_has_learned_what_was_decided_at_the_hand_over() {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.tick_all(3);
    let target = other_than(&c, &[leader]);
    // The target hears nothing for a while: the others decide without it.
    c.drop_if = Some(Box::new(move |from, to, _| {
        from == NodeId(target) || to == NodeId(target)
    }));
    c.propose(leader, (1..=5).map(|s| proposal(1, s)).collect());
    c.drop_if = None;
    // The offer arrives before anything else reaches it.
    hand_over(&mut c, leader, target);
    let offer = c
        .queue
        .iter()
        .position(|(_, to, m)| *to == NodeId(target) && matches!(m, Message::TimeoutNow(_)))
        .expect("an offer to the target");
    let (from, to, message) = c.queue.remove(offer).unwrap();
    c.step(to, Input::Receive { from, message });
    assert!(
        c.count_sent(|m| matches!(m, Message::Prepare(p) if p.ballot.node == NodeId(target))) == 0,
        "it has not learned slots 1-5 yet"
    );
    // It learns them from the leader's heartbeats (about a dozen ticks), within the
    // offer's election timeout.
    for _ in 0..30 {
        c.tick_all(1);
        if c.node(target).leading().is_some() {
            break;
        }
    }
    assert_eq!(c.node(target).status().role, Role::Leader);
    assert_eq!(c.commands(target).len(), 5);
    assert!(c.safety_violation.is_none());
}

#[test]
fn a_hand_over_that_does_not_happen_lapses_and_the_leader_proposes_again() {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.tick_all(3);
    let target = other_than(&c, &[leader]);
    c.drop_if = Some(Box::new(|_, _, m| matches!(m, Message::TimeoutNow(_))));
    hand_over(&mut c, leader, target);
    c.step(NodeId(leader), Input::Propose(vec![proposal(1, 1)]));
    c.deliver_all();
    assert!(c.commands(leader).is_empty(), "held during the hand-over");
    let timeout = crate::Config::new(NodeId(1), ids(3)).election_timeout_ticks_max;
    c.tick_all(timeout / 2);
    // Asked again halfway: the hold still ends one election timeout after the first ask.
    hand_over(&mut c, leader, target);
    c.tick_all(timeout - timeout / 2 + 1);
    assert_eq!(c.node(leader).status().role, Role::Leader);
    assert_eq!(
        c.commands(leader).len(),
        1,
        "proposed once the hand-over lapsed"
    );
}

#[test]
fn a_member_that_lost_touch_with_a_leader_the_rest_still_follow_cannot_depose_it() {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.tick_all(3);
    let ballot = c.node(leader).leading();
    let lost = other_than(&c, &[leader]);
    // The leader's messages no longer reach `lost`; everything else flows.
    c.drop_if = Some(Box::new(move |from, to, _| {
        from == NodeId(leader) && to == NodeId(lost)
    }));
    c.sent.clear();
    c.tick_all(200);
    assert!(
        c.count_sent(|m| matches!(m, Message::Prepare(p) if p.ballot.node == NodeId(lost))) > 0,
        "it campaigned"
    );
    assert_eq!(c.node(leader).leading(), ballot, "and the leader leads on");
    c.propose(leader, vec![proposal(1, 1)]);
    assert_eq!(c.commands(leader).len(), 1);
    // Once the leader is gone, the others stop holding to it and elect another.
    c.drop_if = None;
    c.crash(leader);
    let next = elect(&mut c);
    assert_ne!(next, leader);
    assert!(c.safety_violation.is_none());
}

#[test]
fn an_offer_from_a_leader_not_heard_of_yet_is_taken_up() {
    let mut c = C::new(3, |_| {});
    let leader = elect(&mut c);
    c.tick_all(3);
    let newer = other_than(&c, &[leader]);
    let target = other_than(&c, &[leader, newer]);
    // A leader elected since, whose offer overtakes its first heartbeat to the target.
    let ballot = crate::Ballot {
        round: c.node(leader).leading().unwrap().round + 1,
        node: NodeId(newer),
    };
    c.sent.clear();
    c.step(
        NodeId(target),
        Input::Receive {
            from: NodeId(newer),
            message: Message::TimeoutNow(crate::TimeoutNow { ballot, commit: 0 }),
        },
    );
    assert_eq!(
        c.count_sent(|m| matches!(m, Message::Prepare(p) if p.handover && p.ballot > ballot)),
        2,
        "it campaigns at once, as a hand-over"
    );
}
