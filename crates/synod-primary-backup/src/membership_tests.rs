//! Membership changes across a few members wired together: a learner catches up by snapshot
//! and counts for no write until promoted, a dead backup is removed so writes go on, a
//! removed primary hands over, and a removed member that missed its removal is not followed.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use bytes::Bytes;
use synod_core::testing::{add, Net as Wired};
use synod_core::{
    Engine, Input, MembershipChange, MembershipRefusal, NodeId, Rejection, Role, Snapshot,
    SnapshotMeta,
};

use crate::message::Message;
use crate::{Config, PrimaryBackup};

/// Members wired together (see `synod_core::testing`), with what primary-backup adds.
struct Net(Wired<PrimaryBackup>);

impl std::ops::Deref for Net {
    type Target = Wired<PrimaryBackup>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Net {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Net {
    /// `voters` booted, node 1 primary with writes open.
    fn new(voters: &[u64]) -> Net {
        let mut net = Net(Wired::default());
        for &id in voters {
            net.boot(id, voters);
        }
        net.run(10);
        assert_eq!(net.primary(), Some(NodeId(1)));
        net
    }

    /// A member booted with `voters`; none for one that joins a running cluster.
    fn boot(&mut self, id: u64, voters: &[u64]) {
        let config = Config::new(NodeId(id), voters.iter().copied().map(NodeId).collect());
        self.nodes
            .insert(NodeId(id), PrimaryBackup::new(config).unwrap());
    }

    /// The member with writes open, if one is.
    fn primary(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.ready_view().is_some())
            .map(|(&id, _)| id)
    }

    /// The primary saves a snapshot of all it applied: its history before it is gone.
    fn snapshot(&mut self, at: NodeId) {
        let node = &self.nodes[&at];
        let index = node.commit_index();
        let meta = SnapshotMeta {
            index,
            era: node.log().era(index).unwrap(),
        };
        let snapshot = Snapshot {
            membership: node.membership_at(index),
            meta,
            data: Bytes::from(vec![7u8; 10_000]),
        };
        self.step(at, Input::Snapshotted(snapshot));
        assert_eq!(self.nodes[&at].log().base(), meta);
    }
}

#[test]
fn a_learner_catches_up_by_snapshot_and_counts_for_writes_only_once_promoted() {
    let mut net = Net::new(&[1, 2, 3]);
    let p = NodeId(1);
    let before = net.write(p);
    net.run(3);
    net.snapshot(p);
    net.boot(4, &[]);
    let added = net.change(p, add("http://four", true));
    net.run(10);
    assert!(!net.refused.contains_key(&added), "{:?}", net.refused);
    let four = &net.nodes[&NodeId(4)];
    assert_eq!(
        four.log().base(),
        net.nodes[&p].log().base(),
        "it took the snapshot"
    );
    assert!(four.membership.contains(NodeId(4)));
    assert!(
        !net.applied(4).contains(&before),
        "that write came inside it"
    );

    // Cut off, the learner holds up no write.
    net.cut.insert(NodeId(4));
    let without = net.write(p);
    net.run(3);
    assert!(net.applied(1).contains(&without));
    net.cut.clear();
    net.run(5);
    assert!(net.applied(4).contains(&without), "it caught up");

    // Promoted, every write waits for it.
    let promoted = net.change(p, MembershipChange::Promote { id: NodeId(4) });
    net.run(5);
    assert!(!net.refused.contains_key(&promoted), "{:?}", net.refused);
    net.cut.insert(NodeId(4));
    let waits = net.write(p);
    net.run(5);
    assert!(
        !net.applied(1).contains(&waits),
        "committed without a voter"
    );
    net.cut.clear();
    net.run(5);
    assert!(net.applied(1).contains(&waits) && net.applied(4).contains(&waits));
}

#[test]
fn a_dead_backup_is_removed_and_the_writes_waiting_for_it_go_on() {
    let mut net = Net::new(&[1, 2, 3]);
    let p = NodeId(1);
    net.cut.insert(NodeId(3));
    let stuck = net.write(p);
    net.run(5);
    assert!(
        !net.applied(1).contains(&stuck),
        "a write waits for every member"
    );
    // Adding a voter now would make every write wait for two: refused.
    let grow = net.change(p, add("http://four", false));
    assert_eq!(
        net.refused.get(&grow),
        Some(&Rejection::Membership(MembershipRefusal::NotEnoughStarted))
    );
    let removal = net.change(p, MembershipChange::Remove { id: NodeId(3) });
    let second = net.change(p, MembershipChange::Remove { id: NodeId(2) });
    assert_eq!(
        net.refused.get(&second),
        Some(&Rejection::Membership(MembershipRefusal::ChangePending))
    );
    net.run(5);
    assert!(!net.refused.contains_key(&removal));
    assert!(net.applied(1).contains(&stuck), "committed once 3 was out");
    assert!(net.applied(2).contains(&stuck));
    let after = net.write(p);
    net.run(3);
    assert!(net.applied(2).contains(&after));
}

#[test]
fn a_removed_primary_steps_down_once_its_removal_commits_and_hands_over() {
    let mut net = Net::new(&[1, 2, 3]);
    let old = NodeId(1);
    net.write(old);
    net.run(3);
    net.change(old, MembershipChange::Remove { id: old });
    net.run(10);
    assert_ne!(net.nodes[&old].status().role, Role::Leader);
    let new = net.primary().expect("a voter took over");
    assert_ne!(new, old);
    let after = net.write(new);
    net.run(3);
    let others: Vec<u64> = [2, 3].into_iter().filter(|&n| n != new.0).collect();
    assert!(net.applied(new.0).contains(&after) && net.applied(others[0]).contains(&after));
    assert!(
        !net.applied(1).contains(&after),
        "the removed member is sent nothing"
    );
}

#[test]
fn a_removed_member_that_missed_its_removal_cannot_lead_the_others() {
    let mut net = Net::new(&[1, 2, 3, 4]);
    let p = NodeId(1);
    let early = net.write(p);
    net.run(3);
    net.cut.insert(NodeId(4));
    net.change(p, MembershipChange::Remove { id: NodeId(4) });
    let late = net.write(p);
    net.run(5);
    assert!(net.applied(2).contains(&late), "committed without 4");
    assert!(net.nodes[&NodeId(4)].membership.is_voter(NodeId(4)));
    // The operator wrongly fails over to it. It holds only the early write.
    net.cut.clear();
    net.step(NodeId(4), Input::TransferLeadership { to: NodeId(4) });
    net.run(10);
    assert!(
        net.nodes[&NodeId(4)].ready_view().is_none(),
        "no voter joined"
    );
    let its_view = net.nodes[&NodeId(4)].view();
    for n in [1, 2, 3] {
        assert!(net.applied(n).contains(&early) && net.applied(n).contains(&late));
        assert!(
            net.nodes[&NodeId(n)].view() < its_view,
            "{n} joined its view"
        );
    }
    assert_eq!(net.primary(), Some(p), "the primary was not deposed");
    // Nor by a voter's word that it joined the removed member's view.
    let stale = Message::Stale { view: its_view };
    net.step(
        p,
        Input::Receive {
            from: NodeId(2),
            message: stale,
        },
    );
    assert_eq!(
        net.primary(),
        Some(p),
        "a Stale led to a removed member's view"
    );
}

#[test]
fn a_member_that_joined_knows_after_a_restart_that_it_may_take_over() {
    let mut net = Net::new(&[1, 2, 3]);
    let p = NodeId(1);
    net.boot(4, &[]);
    net.change(p, add("http://four", true));
    net.run(10);
    net.change(p, MembershipChange::Promote { id: NodeId(4) });
    net.run(10);
    let four = &net.nodes[&NodeId(4)];
    assert!(four.may_take_over());
    // Restarted, its commit point is gone (it is not persisted); the committed membership
    // that makes it a voter is.
    let hard_state = crate::encode_hard_state(four.view(), four.membership_committed);
    let entries = four.log().slice(1, usize::MAX, usize::MAX);
    let config = Config::new(NodeId(4), Vec::new());
    let restarted = PrimaryBackup::restart(config, Some(&hard_state), None, entries).unwrap();
    assert_eq!(restarted.commit_index(), 0);
    assert!(restarted.may_take_over());
}
