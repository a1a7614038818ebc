//! Membership changes: agreed by the voters, learned by everyone else from a ping.

use synod_core::{Engine, MembershipChange, MembershipRefusal};

use super::*;

impl Cluster {
    /// A node that joins with nothing: no voters, no disk.
    fn join(&mut self, id: u64) {
        let mut config = self.config.clone();
        config.id = NodeId(id);
        config.voters = Vec::new();
        let engine = Gossip::restart(config, id * 7919, None, &[], 0).expect("boots");
        let node = Node {
            engine,
            kv: KvStore::new(),
            hard_state: None,
            journal: Vec::new(),
            acked: Vec::new(),
            rejected: Vec::new(),
            ready: Vec::new(),
        };
        self.nodes.insert(NodeId(id), node);
    }

    fn change(&mut self, at: u64, change: MembershipChange) -> RequestId {
        self.next_seq += 1;
        let id = RequestId::new(ClientId::UNTRACKED_FROM + 2, self.next_seq);
        self.step(NodeId(at), Input::ChangeMembership { id, change });
        self.deliver();
        id
    }

    fn members(&self, at: u64) -> Vec<NodeId> {
        self.node(at)
            .engine
            .membership()
            .map(|m| m.ids())
            .unwrap_or_default()
    }

    fn refusal(&self, at: u64, id: RequestId) -> Option<&Rejection> {
        self.node(at)
            .rejected
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, reason)| reason)
    }

    /// Delivers what is in flight, dropping what `drop` says.
    fn deliver_unless(&mut self, drop: impl Fn(NodeId, NodeId, &Message) -> bool) {
        while let Some((from, to, message)) = self.queue.pop_front() {
            if !drop(from, to, &message) && !self.down.contains(&to) && self.nodes.contains_key(&to)
            {
                self.step(to, Input::Receive { from, message });
            }
        }
    }
}

fn add(peer: &str, learner: bool) -> MembershipChange {
    MembershipChange::Add {
        peer_urls: vec![peer.to_string()],
        learner,
    }
}

#[test]
fn an_added_member_learns_the_membership_from_a_ping_and_gets_every_version() {
    let mut c = Cluster::new(3, |_| {});
    c.put(1, "before", "v");
    let asked = c.change(2, add("http://four", true));
    assert!(c.refusal(2, asked).is_none());
    for n in 1..=3 {
        assert_eq!(
            c.members(n),
            vec![NodeId(1), NodeId(2), NodeId(3), NodeId(4)]
        );
    }
    c.join(4);
    assert!(c
        .node(4)
        .engine
        .membership()
        .is_some_and(|m| m.members.is_empty()));
    // It takes nothing before it knows it is a member.
    let early = c.put(4, "early", "x");
    assert!(matches!(
        c.refusal(4, early),
        Some(Rejection::NotLeader { .. })
    ));
    c.run(40);
    assert_eq!(
        c.value(4, "early"),
        None,
        "a refused write is never taken later"
    );
    assert_eq!(c.value(1, "early"), None);
    assert_eq!(c.members(4), c.members(1));
    assert!(c
        .node(4)
        .engine
        .membership()
        .is_some_and(|m| m.is_learner(NodeId(4))));
    assert_eq!(c.value(4, "before"), b("v"), "anti-entropy brought it");
    c.put(1, "after", "w");
    c.run(10);
    assert_eq!(c.value(4, "after"), b("w"));
    assert!(c.converged());
}

#[test]
fn a_learner_counts_toward_no_level_until_promoted() {
    let mut c = Cluster::new(3, |config| config.write_level = Level::All);
    c.change(1, add("http://four", true));
    c.join(4);
    c.run(40);
    // ALL of three voters: the learner's answer is not waited for, nor counted.
    c.down.insert(NodeId(4));
    let write = c.put(1, "k", "v");
    c.run(2);
    assert!(c.node(1).acked.contains(&write), "ALL is the three voters");
    c.down.remove(&NodeId(4));
    c.run(40);
    let promoted = c.change(2, MembershipChange::Promote { id: NodeId(4) });
    assert!(c.refusal(2, promoted).is_none());
    c.run(5);
    c.down.insert(NodeId(4));
    let write = c.put(1, "k", "w");
    c.run(3);
    assert!(
        !c.node(1).acked.contains(&write),
        "ALL now waits for four voters"
    );
}

#[test]
fn a_removed_member_takes_no_more_requests_and_hands_over_what_only_it_held() {
    let mut c = Cluster::new(3, |_| {});
    c.partition(&[3]);
    let lonely = c.put(3, "only-on-3", "v");
    assert!(
        c.node(3).acked.contains(&lonely),
        "ONE: taken on the minority side"
    );
    c.run(30); // the majority side finds 3 dead
    let removed = c.change(1, MembershipChange::Remove { id: NodeId(3) });
    assert!(c.refusal(1, removed).is_none());
    assert_eq!(c.members(1), vec![NodeId(1), NodeId(2)]);
    c.cut.clear();
    c.run(60);
    assert_eq!(c.members(3), vec![NodeId(1), NodeId(2)], "a ping told it");
    let refused = c.put(3, "late", "x");
    assert!(matches!(
        c.refusal(3, refused),
        Some(Rejection::NotLeader { .. })
    ));
    for n in 1..=2 {
        assert_eq!(
            c.value(n, "only-on-3"),
            b("v"),
            "n{n} has what only n3 held"
        );
    }
}

#[test]
fn a_second_change_while_one_is_under_way_is_refused() {
    let mut c = Cluster::new(3, |_| {});
    c.partition(&[3]);
    c.partition(&[2]);
    // No majority answers: the first change stays under way until it times out.
    let first = c.change(1, add("http://four", true));
    let second = c.change(1, add("http://five", true));
    assert_eq!(
        c.refusal(1, second),
        Some(&Rejection::Membership(MembershipRefusal::ChangePending))
    );
    c.run(c.config.request_timeout_ticks + 1);
    assert!(matches!(
        c.refusal(1, first),
        Some(Rejection::Unavailable { written: false, .. })
    ));
    assert_eq!(c.members(1).len(), 3);
}

#[test]
fn a_value_a_minority_accepted_is_the_one_the_next_proposer_agrees() {
    let mut c = Cluster::new(3, |_| {});
    // n1's change is accepted by n2 only: n1 never hears back, and n3 hears nothing.
    c.step(
        NodeId(1),
        Input::ChangeMembership {
            id: RequestId::new(9, 1),
            change: add("http://four", true),
        },
    );
    c.deliver_unless(|from, to, m| {
        to == NodeId(3) || from == NodeId(3) || matches!(m, Message::Accepted { .. })
    });
    assert_eq!(c.members(2).len(), 3, "accepted, not agreed");
    c.down.insert(NodeId(1));
    c.step(
        NodeId(3),
        Input::ChangeMembership {
            id: RequestId::new(9, 2),
            change: add("http://five", true),
        },
    );
    c.deliver();
    // n3's promise from n2 reports n1's value: n3 must finish it, not its own.
    assert_eq!(
        c.refusal(3, RequestId::new(9, 2)),
        Some(&Rejection::Membership(MembershipRefusal::ChangePending))
    );
    let agreed = c.node(3).engine.membership().cloned().expect("membership");
    assert_eq!(
        agreed.get(NodeId(4)).map(|m| m.peer_urls.clone()),
        Some(vec!["http://four".to_string()])
    );
    assert_eq!(c.node(2).engine.membership(), Some(&agreed));
    c.down.remove(&NodeId(1));
    c.run(30);
    assert_eq!(
        c.node(1).engine.membership(),
        Some(&agreed),
        "n1 learned it"
    );
}

#[test]
fn dueling_proposers_never_agree_two_memberships_for_one_epoch() {
    for seed in 0..40u64 {
        let mut c = Cluster::new(5, |_| {});
        // Both ask at once, and the network reorders their messages by seed.
        c.step(
            NodeId(1),
            Input::ChangeMembership {
                id: RequestId::new(9, 1),
                change: add("http://six", true),
            },
        );
        c.step(
            NodeId(4),
            Input::ChangeMembership {
                id: RequestId::new(9, 2),
                change: add("http://seven", true),
            },
        );
        let mut rng = synod_core::Rng::new(seed);
        let mut in_flight: Vec<_> = c.queue.drain(..).collect();
        while !in_flight.is_empty() {
            let i = rng.range(0, in_flight.len() as u64) as usize;
            let (from, to, message) = in_flight.swap_remove(i);
            if c.nodes.contains_key(&to) {
                c.step(to, Input::Receive { from, message });
            }
            in_flight.extend(c.queue.drain(..));
        }
        c.run(30);
        let first = c.node(1).engine.membership().cloned();
        for n in 2..=5 {
            assert_eq!(
                c.node(n).engine.membership().cloned(),
                first,
                "seed {seed}, n{n}"
            );
        }
        let m = first.expect("membership");
        assert!(m.members.len() <= 6, "seed {seed}: one change at most: {m}");
    }
}

#[test]
fn promises_and_the_agreed_membership_survive_a_restart() {
    let mut c = Cluster::new(3, |_| {});
    c.change(1, add("http://four", true));
    c.put(2, "k", "v");
    let before = c.node(2).engine.membership().cloned();
    c.crash_and_restart(2);
    assert_eq!(c.node(2).engine.membership().cloned(), before);
    assert_eq!(
        c.node(2).engine.store().get(b"k").map(|h| h.value.clone()),
        Some(b("v"))
    );
    // A promise made before the crash holds after it: a lower ballot is outbid.
    c.step(
        NodeId(2),
        Input::Receive {
            from: NodeId(1),
            message: Message::Prepare {
                epoch: 1,
                ballot: 50 << 12 | 1,
                nonce: 0,
            },
        },
    );
    c.queue.clear();
    c.crash_and_restart(2);
    c.step(
        NodeId(2),
        Input::Receive {
            from: NodeId(3),
            message: Message::Prepare {
                epoch: 1,
                ballot: 40 << 12 | 3,
                nonce: 0,
            },
        },
    );
    assert!(matches!(
        c.queue.pop_front(),
        Some((_, _, Message::Outbid { promised, .. })) if promised == 50 << 12 | 1
    ));
}

#[test]
fn a_format_1_disk_is_read_and_restated() {
    // Format 1: a hard state of the versions alone, journal records without a tag.
    let record = Record {
        key: Bytes::from("k"),
        version: Version::new(5, NodeId(1)),
        value: b("v"),
    };
    let mut store = crate::store::Store::default();
    store.merge(&record, 1);
    let mut enc = synod_core::codec::Encoder::with_capacity(64);
    enc.u8(1);
    store.encode(&mut enc);
    let hard = enc.finish();
    let mut enc = synod_core::codec::Encoder::with_capacity(64);
    let later = Record {
        key: Bytes::from("j"),
        version: Version::new(6, NodeId(2)),
        value: b("w"),
    };
    later.encode(&mut enc);
    enc.u64(2);
    let journal = vec![enc.finish()];
    let config = Config::new(NodeId(1), ids(3), 5);
    let engine = Gossip::restart(config, 1, Some(&hard), &journal, 0).expect("boots");
    assert!(engine.store().get(b"k").is_some() && engine.store().get(b"j").is_some());
    assert_eq!(engine.membership().map(|m| m.ids()), Some(ids(3)));
}

/// n1 proposes a change that it and n3 accept (a majority: the value is agreed) without
/// n1 hearing n3's acceptance; n3 comes back with an empty disk while n1 is down, and n2
/// proposes another change; then n1 is back. The memberships every node ends with.
fn disk_loss_during_a_change(bugs: InjectedBugs) -> (Cluster, RequestId) {
    let mut c = Cluster::new(3, |config| config.bugs = bugs);
    c.step(
        NodeId(1),
        Input::ChangeMembership {
            id: RequestId::new(9, 1),
            change: add("http://four", true),
        },
    );
    c.deliver_unless(|from, to, m| {
        to == NodeId(2)
            || from == NodeId(2)
            || (matches!(m, Message::Accepted { .. }) && to == NodeId(1))
    });
    assert!(
        matches!(&c.node(3).engine.agreement.accepted, Some(a) if a.id == RequestId::new(9, 1))
    );
    // n3 joins again, as a member whose disk was replaced does.
    c.join(3);
    c.down.insert(NodeId(1));
    c.run(5);
    let other = c.change(2, add("http://five", true));
    c.run(c.config.request_timeout_ticks + 1);
    c.down.remove(&NodeId(1));
    c.run(100);
    (c, other)
}

#[test]
fn a_member_back_with_an_empty_disk_votes_only_after_its_barrier_and_forgets_nothing_agreed() {
    let (mut c, other) = disk_loss_during_a_change(InjectedBugs::default());
    // n2's change needed a second voter while n1 was down: n3 did not vote.
    assert!(matches!(
        c.refusal(2, other),
        Some(Rejection::Unavailable { written: false, .. })
    ));
    // The value agreed before n3 lost its disk is the one every member holds.
    for n in 1..=3 {
        let m = c.node(n).engine.membership().cloned().expect("membership");
        assert!(
            m.get(NodeId(4))
                .is_some_and(|m| m.peer_urls == ["http://four"]),
            "n{n}: {m}"
        );
    }
    // n3 votes again once its barrier is agreed.
    assert!(!c.node(3).engine.agreement.amnesic);
    let later = c.change(3, MembershipChange::Remove { id: NodeId(4) });
    c.run(5);
    assert!(c.refusal(3, later).is_none());
    assert_eq!(c.members(1), ids(3));
}

#[test]
fn a_member_that_votes_right_after_losing_its_disk_lets_two_memberships_be_agreed() {
    let bugs = InjectedBugs {
        vote_after_disk_loss: true,
        ..InjectedBugs::default()
    };
    let (c, _) = disk_loss_during_a_change(bugs);
    let five = |n: u64| {
        c.node(n)
            .engine
            .membership()
            .is_some_and(|m| m.members.iter().any(|m| m.peer_urls == ["http://five"]))
    };
    assert!(
        five(2),
        "n2 and the forgetful n3 agreed another value for epoch 1"
    );
}

#[test]
fn a_proposer_back_from_an_empty_disk_never_reuses_a_ballot_of_its_earlier_life() {
    let mut c = Cluster::new(5, |_| {});
    // n5's earlier life: promises from n1, n2 and itself, then v1 accepted by n1 and n5 only.
    c.step(
        NodeId(5),
        Input::ChangeMembership {
            id: RequestId::new(9, 1),
            change: add("http://six", true),
        },
    );
    c.deliver_unless(|from, to, m| {
        let far = |n: NodeId| n == NodeId(3) || n == NodeId(4);
        far(from)
            || far(to)
            || (matches!(m, Message::Accept { .. }) && to == NodeId(2))
            || (matches!(m, Message::Accepted { .. }) && to == NodeId(5))
    });
    let old = c.node(5).engine.agreement.proposed;
    assert!(
        c.node(2).engine.agreement.promised == old && c.node(1).engine.agreement.accepted.is_some()
    );
    // Its disk is replaced; it cannot reach n1, which holds v1.
    c.join(5);
    c.partition(&[1]);
    c.cut.remove(&(NodeId(1), NodeId(2)));
    c.cut.remove(&(NodeId(2), NodeId(1)));
    // Every ballot it proposes under is the asking one (0) or above what n2 promised.
    let mut ballots = Vec::new();
    for _ in 0..60 {
        for id in c.nodes.keys().copied().collect::<Vec<_>>() {
            c.step(id, Input::Tick);
        }
        while let Some((from, to, message)) = c.queue.pop_front() {
            match &message {
                Message::Prepare { ballot, .. } if from == NodeId(5) => ballots.push(*ballot),
                Message::Accept { candidate, .. } if from == NodeId(5) => {
                    ballots.push(candidate.ballot)
                }
                _ => {}
            }
            if !c.cut.contains(&(from, to)) && c.nodes.contains_key(&to) {
                c.step(to, Input::Receive { from, message });
            }
        }
    }
    assert!(
        !c.node(5).engine.agreement.amnesic,
        "its barrier was agreed"
    );
    assert!(ballots.contains(&0), "it asked first: {ballots:?}");
    assert!(
        ballots
            .iter()
            .all(|&b| b == 0 || ballot_round(b) > ballot_round(old)),
        "{ballots:?} against {old}"
    );
    // n1 proposes next, with v1 accepted under the old ballot: one membership per epoch.
    c.cut.clear();
    c.change(1, MembershipChange::Remove { id: NodeId(4) });
    c.run(60);
    let epoch = c.node(1).engine.membership_epoch();
    for n in 2..=5 {
        assert_eq!(c.node(n).engine.membership_epoch(), epoch, "n{n}");
        assert_eq!(
            c.node(n).engine.membership(),
            c.node(1).engine.membership(),
            "n{n}"
        );
    }
}

fn ballot_round(ballot: u64) -> u64 {
    ballot >> 12
}
