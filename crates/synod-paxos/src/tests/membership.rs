//! Multi-Paxos membership changes: a change decided in slot `i` governs the slots from
//! `i + window` on (Lamport's reconfiguration through the log).

use synod_core::{
    Engine, Input, MembershipChange, MembershipRefusal, NodeId, Payload, RequestId, Role,
};

use super::*;
use crate::MultiPaxos;

type C = Cluster<MultiPaxos>;

/// A small window, so that tests see changes take effect after a few slots.
const WINDOW: u64 = 8;

fn small_window(c: &mut Config) {
    c.reconfig_window = WINDOW;
}

fn leader(c: &C) -> Option<u64> {
    c.nodes
        .iter()
        .find(|(id, n)| !c.down.contains(id) && n.leading().is_some())
        .map(|(id, _)| id.0)
}

fn elect(c: &mut C) -> u64 {
    for _ in 0..300 {
        c.tick_all(1);
        if let Some(n) = leader(c) {
            return n;
        }
    }
    panic!("no leader");
}

/// Asks the leader for `change` until it is decided; returns the refusals on the way.
fn change(c: &mut C, seq: u64, change: MembershipChange) -> Vec<MembershipRefusal> {
    let id = RequestId::new(99, seq);
    let mut refusals = Vec::new();
    for _ in 0..50 {
        let lead = elect(c);
        let input = Input::ChangeMembership {
            id,
            change: change.clone(),
        };
        let out = c.step_returning(NodeId(lead), input);
        let refused = out.iter().find_map(|a| match a {
            Action::Reject {
                reason: synod_core::Rejection::Membership(r),
                ..
            } => Some(*r),
            _ => None,
        });
        c.tick_all(10);
        match refused {
            Some(r) => refusals.push(r),
            None if applied_change(c, lead, id) => return refusals,
            None => {}
        }
    }
    panic!("{change:?} never decided; refused {refusals:?}");
}

fn applied_change(c: &C, node: u64, id: RequestId) -> bool {
    c.applied.get(&NodeId(node)).is_some_and(|log| {
        log.iter()
            .any(|e| matches!(&e.payload, Payload::Membership { id: m, .. } if *m == id))
    })
}

fn write(c: &mut C, seq: u64) {
    let lead = elect(c);
    c.propose(lead, vec![proposal(1, seq)]);
    c.tick_all(5);
}

fn voters(c: &C, node: u64) -> Vec<u64> {
    let n = c.node(node);
    let slot = n.decided_through() + 1;
    n.voters_at(slot).unwrap().iter().map(|v| v.0).collect()
}

#[test]
fn a_learner_joins_catches_up_is_promoted_and_then_votes() {
    let mut c = C::new(3, small_window);
    for seq in 1..=20 {
        write(&mut c, seq);
    }
    c.join(4, small_window);
    change(
        &mut c,
        1,
        MembershipChange::Add {
            peer_urls: vec!["sim://n4".into()],
            learner: true,
        },
    );
    c.tick_all(30);
    let lead = elect(&mut c);
    assert_eq!(
        c.commands(4),
        c.commands(lead),
        "the learner has the whole log"
    );
    assert_eq!(voters(&c, lead), vec![1, 2, 3], "a learner does not vote");
    assert!(
        c.node(4)
            .membership()
            .unwrap()
            .get(NodeId(4))
            .unwrap()
            .learner
    );

    change(&mut c, 2, MembershipChange::Promote { id: NodeId(4) });
    c.tick_all(30);
    assert_eq!(voters(&c, lead), vec![1, 2, 3, 4]);
    // Four voters: with two of the old ones down, nothing is decided; with one, it is.
    let others: Vec<u64> = (1..=3).filter(|&n| n != lead).collect();
    c.crash(others[0]);
    write(&mut c, 21);
    let lead = elect(&mut c);
    assert_eq!(c.commands(lead).last().unwrap().1, RequestId::new(1, 21));
    assert_eq!(c.commands(4), c.commands(lead));
    assert!(c.safety_violation.is_none(), "{:?}", c.safety_violation);
}

#[test]
fn a_second_change_waits_until_the_first_is_in_force() {
    let mut c = C::new(3, |c| c.reconfig_window = 1000);
    elect(&mut c);
    c.join(4, |c| c.reconfig_window = 1000);
    let add = MembershipChange::Add {
        peer_urls: vec!["sim://n4".into()],
        learner: true,
    };
    assert!(change(&mut c, 1, add).is_empty());
    // The leader fills the window with no-ops at once, so the change comes into force, and
    // the next one may be made, without waiting for clients to write.
    let refusals = change(&mut c, 2, MembershipChange::Promote { id: NodeId(4) });
    let lead = elect(&mut c);
    assert!(c.node(lead).decided_through() >= 1000);
    assert!(
        refusals.iter().all(|r| matches!(
            r,
            MembershipRefusal::ChangePending | MembershipRefusal::LearnerNotReady
        )),
        "{refusals:?}"
    );
    assert_eq!(voters(&c, lead), vec![1, 2, 3, 4]);
}

#[test]
fn a_removed_leader_steps_down_once_its_removal_is_in_force_and_the_rest_go_on() {
    let mut c = C::new(3, small_window);
    let lead = elect(&mut c);
    write(&mut c, 1);
    change(&mut c, 1, MembershipChange::Remove { id: NodeId(lead) });
    // It hands over at once (with nothing written since, the commit point that put the
    // removal in force reaches the successor all the same): no election timeout passes.
    let mut ticks = 0;
    while leader(&c).is_none_or(|l| l == lead) {
        assert!(ticks < 10, "no hand-over within {ticks} ticks");
        c.tick_all(1);
        ticks += 1;
    }
    let next = elect(&mut c);
    assert_ne!(next, lead);
    assert_ne!(c.node(lead).status().role, Role::Leader);
    let rest: Vec<u64> = (1..=3).filter(|&n| n != lead).collect();
    assert_eq!(voters(&c, next), rest);
    // Two voters left: both are needed, and the removed node is not.
    c.crash(lead);
    write(&mut c, 2);
    assert_eq!(c.commands(next).last().unwrap().1, RequestId::new(1, 2));
    assert!(c.safety_violation.is_none(), "{:?}", c.safety_violation);
}

#[test]
fn a_snapshot_is_not_taken_inside_a_window_and_records_the_membership_in_force() {
    let mut c = C::new(3, small_window);
    let lead = elect(&mut c);
    write(&mut c, 1);
    c.join(4, small_window);
    change(
        &mut c,
        1,
        MembershipChange::Add {
            peer_urls: vec!["sim://n4".into()],
            learner: true,
        },
    );
    let node = c.node(lead);
    let decided = node.decided_through();
    let change_slot = c.applied[&NodeId(lead)]
        .iter()
        .find(|e| matches!(e.payload, Payload::Membership { .. }))
        .unwrap()
        .index;
    for index in change_slot..decided {
        let inside = index + 1 < change_slot + WINDOW;
        assert_eq!(
            node.may_snapshot_at(index),
            !inside,
            "snapshot through {index}"
        );
    }
    assert!(node.membership_at(decided).unwrap().contains(NodeId(4)));
    assert!(!node
        .membership_at(change_slot - 1)
        .unwrap()
        .contains(NodeId(4)));
}

/// Each slot is decided on its own, so a change can be decided after another its proposer
/// never saw. It is made on the membership before its slot, as etcd checks a change when it
/// applies: it does not undo the other, and one no longer valid is a no-op, on every node.
#[test]
fn a_change_is_made_on_the_membership_before_its_slot() {
    let mut node = MultiPaxos::new(Config::new(NodeId(1), ids(3))).unwrap();
    let entry = |index, change| synod_core::Entry {
        index,
        era: 0,
        payload: Payload::MembershipChange {
            id: RequestId::new(99, index),
            change,
        },
    };
    let decided = crate::Decided {
        entries: vec![
            entry(1, MembershipChange::Remove { id: NodeId(3) }),
            // Asked of a leader that had not seen the removal.
            entry(
                2,
                MembershipChange::Add {
                    peer_urls: vec!["sim://n4".into()],
                    learner: false,
                },
            ),
            entry(3, MembershipChange::Promote { id: NodeId(3) }),
        ],
    };
    let out = step(
        &mut node,
        Input::Receive {
            from: NodeId(2),
            message: Message::Decided(decided),
        },
    );
    let applied: Vec<&Payload> = out
        .iter()
        .filter_map(|a| match a {
            Action::Apply(e) => Some(&e.payload),
            _ => None,
        })
        .collect();
    assert_eq!(applied.len(), 3);
    assert!(matches!(applied[0], Payload::Membership { .. }));
    assert!(matches!(applied[1], Payload::Membership { .. }));
    assert_eq!(
        applied[2],
        &Payload::Noop,
        "node 3 is no longer there to promote"
    );
    let members = node.membership().unwrap();
    assert_eq!(members.voters(), vec![NodeId(1), NodeId(2), NodeId(4)]);
}

/// Basic Paxos changes its membership the same way, without a leader: any node proposes a
/// change as it proposes a command, and fills the window with no-ops once it is decided.
mod basic {
    use super::*;
    use crate::BasicPaxos;

    type B = Cluster<BasicPaxos>;

    fn ask(c: &mut B, node: u64, seq: u64, change: MembershipChange) -> Vec<Action<Message>> {
        let id = RequestId::new(99, seq);
        let out = c.step_returning(NodeId(node), Input::ChangeMembership { id, change });
        c.tick_all(40);
        out
    }

    fn voters(c: &B, node: u64) -> Vec<u64> {
        let n = c.node(node);
        let slot = n.decided_through() + 1;
        n.voters_at(slot).unwrap().iter().map(|v| v.0).collect()
    }

    #[test]
    fn a_learner_joins_is_promoted_and_votes_and_a_removed_voter_is_not_needed() {
        let mut c = B::new(3, small_window);
        for seq in 1..=5 {
            c.propose(1, vec![proposal(1, seq)]);
            c.tick_all(5);
        }
        c.join(4, small_window);
        let add = MembershipChange::Add {
            peer_urls: vec!["sim://n4".into()],
            learner: true,
        };
        assert!(ask(&mut c, 2, 1, add)
            .iter()
            .all(|a| !matches!(a, Action::Reject { .. })));
        assert_eq!(
            c.commands(4),
            c.commands(1),
            "the learner has the whole log"
        );
        assert_eq!(voters(&c, 1), vec![1, 2, 3], "a learner does not vote");

        ask(&mut c, 3, 2, MembershipChange::Promote { id: NodeId(4) });
        assert_eq!(voters(&c, 1), vec![1, 2, 3, 4]);
        ask(&mut c, 4, 3, MembershipChange::Remove { id: NodeId(1) });
        assert_eq!(voters(&c, 2), vec![2, 3, 4]);
        // Node 1 is not needed any more: with it down, 2, 3 and 4 decide.
        c.crash(1);
        c.propose(4, vec![proposal(4, 1)]);
        c.tick_all(20);
        assert_eq!(c.commands(2).last().unwrap().1, RequestId::new(4, 1));
        assert_eq!(c.commands(4), c.commands(2));
        assert!(c.safety_violation.is_none(), "{:?}", c.safety_violation);
    }

    #[test]
    fn two_changes_asked_of_two_nodes_at_once_are_each_made_or_refused_alike_everywhere() {
        let mut c = B::new(3, small_window);
        c.propose(1, vec![proposal(1, 1)]);
        c.tick_all(5);
        c.join(4, small_window);
        c.join(5, small_window);
        let add = |n: u64| MembershipChange::Add {
            peer_urls: vec![format!("sim://n{n}")],
            learner: false,
        };
        // Both asked before either is decided: each node makes its change from the same
        // membership.
        let first = Input::ChangeMembership {
            id: RequestId::new(99, 1),
            change: add(4),
        };
        let second = Input::ChangeMembership {
            id: RequestId::new(99, 2),
            change: add(5),
        };
        c.step_returning(NodeId(1), first);
        c.step_returning(NodeId(2), second);
        c.tick_all(60);
        // Each is made on the membership before its slot, the same on every node; one that
        // lost its slot to the other is refused as pending (its operator asks again).
        let members = c.node(3).membership().unwrap().clone();
        for n in members.ids() {
            assert_eq!(c.node(n.0).membership(), Some(&members), "node {n}");
        }
        for seq in [1, 2] {
            let id = RequestId::new(99, seq);
            let made = c.applied[&NodeId(3)]
                .iter()
                .any(|e| matches!(&e.payload, Payload::Membership { id: m, .. } if *m == id));
            let refused = c.rejected.iter().any(|(_, r)| *r == id);
            assert!(
                made != refused,
                "change {seq}: made {made}, refused {refused}"
            );
        }
        assert!(members.ids().len() >= 4, "{members}");
        assert!(c.safety_violation.is_none(), "{:?}", c.safety_violation);
    }
}

/// A slot decided with a change is the change made: an acceptor that holds the made form
/// acknowledges the change proposed again under the same request (a new leader recovered it
/// from another acceptor), and refuses another change there.
#[test]
fn an_acceptor_acknowledges_a_change_it_decided_made_and_refuses_another() {
    let mut node = MultiPaxos::new(Config::new(NodeId(1), ids(3))).unwrap();
    let remove = |seq, id| Payload::MembershipChange {
        id: RequestId::new(99, seq),
        change: MembershipChange::Remove { id: NodeId(id) },
    };
    let decided = crate::Decided {
        entries: vec![synod_core::Entry {
            index: 1,
            era: 0,
            payload: remove(1, 3),
        }],
    };
    let from2 = |message| Input::Receive {
        from: NodeId(2),
        message,
    };
    step(&mut node, from2(Message::Decided(decided)));
    let accept = |value| {
        Message::Accept(crate::Accept {
            ballot: crate::Ballot {
                round: 5,
                node: NodeId(2),
            },
            first: 1,
            values: vec![value],
            commit: 0,
        })
    };
    let answers = |out: Vec<Action<Message>>| -> Vec<&'static str> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send {
                    message: Message::Accepted(_),
                    ..
                } => Some("accepted"),
                Action::Send {
                    message: Message::Nack(_),
                    ..
                } => Some("nack"),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        answers(step(&mut node, from2(accept(remove(1, 3))))),
        ["accepted"]
    );
    assert_eq!(
        answers(step(&mut node, from2(accept(remove(2, 2))))),
        ["nack"]
    );
}

/// A leader that proposed a change in a slot and learns that slot was decided a no-op by
/// another ballot has been overtaken there: it steps down rather than advertise a commit
/// point over a slot where its followers hold the change.
#[test]
fn a_leader_whose_change_lost_its_slot_to_a_noop_steps_down() {
    let mut c = C::new(3, small_window);
    let lead = elect(&mut c);
    c.tick_all(5);
    let slot = c.node(lead).decided_through() + 1;
    // The change goes out, but nothing comes back.
    c.drop_if = Some(Box::new(move |from, _, _| from != NodeId(lead)));
    let input = Input::ChangeMembership {
        id: RequestId::new(99, 1),
        change: MembershipChange::Remove { id: NodeId(lead) },
    };
    c.step(NodeId(lead), input);
    c.deliver_all();
    c.drop_if = None;
    assert!(c.node(lead).leading().is_some());
    let other = if lead == 1 { 2 } else { 1 };
    let noop = crate::Decided {
        entries: vec![synod_core::Entry {
            index: slot,
            era: crate::Ballot {
                round: 1_000,
                node: NodeId(other),
            }
            .era(),
            payload: Payload::Noop,
        }],
    };
    c.step(
        NodeId(lead),
        Input::Receive {
            from: NodeId(other),
            message: Message::Decided(noop),
        },
    );
    assert!(c.node(lead).leading().is_none());
}

/// A change whose proposer went down before filling the window still takes effect: the
/// members that see it waiting fill it, and the next change can be made, with no writes.
#[test]
fn a_basic_paxos_change_takes_effect_when_its_proposer_crashed_before_filling_the_window() {
    use crate::BasicPaxos;
    let mut c: Cluster<BasicPaxos> = Cluster::new(3, |c| c.reconfig_window = 1000);
    c.propose(1, vec![proposal(1, 1)]);
    c.tick_all(5);
    c.join(4, |c| c.reconfig_window = 1000);
    let input = Input::ChangeMembership {
        id: RequestId::new(99, 1),
        change: MembershipChange::Add {
            peer_urls: vec!["sim://n4".into()],
            learner: true,
        },
    };
    // Node 1's no-ops after the change (slot 2) never get out; then it goes down.
    c.drop_if = Some(Box::new(|from, _, m| {
        from == NodeId(1) && matches!(m, Message::Prepare(p) if p.slot > 2)
    }));
    c.step(NodeId(1), input);
    c.deliver_all();
    assert!(c.node(1).membership().unwrap().contains(NodeId(4)));
    assert!(c.node(2).decided_through() < 10);
    c.crash(1);
    c.drop_if = None;
    c.tick_all(400);
    let node = c.node(2);
    assert!(node.membership().unwrap().contains(NodeId(4)));
    assert!(
        node.decided_through() >= 1000,
        "the window was filled: through {}",
        node.decided_through()
    );
}
