//! Membership changes across a few members wired together: a member that joins learns the
//! primary from its NOTIFY and catches up by a full transfer; removing the primary hands the
//! zone, with every write it took, to the next voter; a secondary whose old primary is gone
//! follows the new one.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use bytes::Bytes;
use synod_core::testing::{add, Net};
use synod_core::{
    Engine, Input, MembershipChange, NodeId, RequestId, Role, Snapshot, SnapshotMeta,
};

use crate::{Config, Dns};

fn boot(net: &mut Net<Dns>, id: u64, voters: &[u64]) {
    let config = Config::new(NodeId(id), voters.iter().copied().map(NodeId).collect());
    let node = Dns::restart(config, None, None, Vec::new()).unwrap();
    net.nodes.insert(NodeId(id), node);
}

fn cluster(voters: &[u64]) -> Net<Dns> {
    let mut net = Net::default();
    for &id in voters {
        boot(&mut net, id, voters);
    }
    net.run(2);
    net
}

#[test]
fn a_member_that_joins_learns_the_primary_from_its_notify_and_takes_a_full_transfer() {
    let mut net = cluster(&[1, 2, 3]);
    let p = NodeId(1);
    let before = net.write(p);
    net.run(3);
    // The primary's history before this point is gone: only a snapshot holds it.
    let primary = &net.nodes[&p];
    let index = primary.serial();
    let snapshot = Snapshot {
        membership: primary.membership_at(index),
        meta: SnapshotMeta {
            index,
            era: primary.log().era(index).unwrap(),
        },
        data: Bytes::from_static(b"zone"),
    };
    net.step(p, Input::Snapshotted(snapshot));
    assert_eq!(net.nodes[&p].log().base().index, index);

    boot(&mut net, 4, &[]);
    assert_eq!(
        net.nodes[&NodeId(4)].status().leader,
        None,
        "it knows no one"
    );
    let joined = net.change(p, add("dns://four", false));
    let after = net.write(p);
    net.run(30);
    assert!(!net.refused.contains_key(&joined), "{:?}", net.refused);
    let four = &net.nodes[&NodeId(4)];
    assert_eq!(four.status().leader, Some(p));
    assert!(four.membership().unwrap().contains(NodeId(4)));
    assert!(
        four.log().base().index >= index,
        "it took the full transfer"
    );
    assert!(net.applied(4).contains(&after));
    assert!(
        !net.applied(4).contains(&before),
        "that write came inside the snapshot"
    );
}

#[test]
fn removing_the_primary_hands_the_zone_to_the_next_voter_with_every_write() {
    let mut net = cluster(&[1, 2, 3]);
    let old = NodeId(1);
    let taken: Vec<u64> = (0..3).map(|_| net.write(old)).collect();
    let old_era = net.nodes[&old].era();
    net.change(old, MembershipChange::Remove { id: old });
    // From its removal on, it takes no write: it names the next primary.
    let late = net.write(old);
    assert!(net.refused.contains_key(&RequestId::new(1, late)));
    net.run(30);
    let new = NodeId(2);
    assert!(net.nodes[&new].is_primary());
    assert!(!net.nodes[&old].is_primary());
    assert!(
        net.nodes[&new].era() > old_era,
        "a new era above every change it holds"
    );
    for w in &taken {
        assert!(net.applied(2).contains(w) && net.applied(3).contains(w));
    }
    let next = net.write(new);
    net.run(10);
    assert!(net.applied(3).contains(&next));
    assert_eq!(net.nodes[&NodeId(3)].status().leader, Some(new));
    assert_eq!(net.nodes[&old].status().role, Role::Secondary);
}

#[test]
fn a_secondary_whose_old_primary_is_gone_follows_the_new_primarys_notify() {
    let mut net = cluster(&[1, 2, 3]);
    let (old, new, late) = (NodeId(1), NodeId(2), NodeId(3));
    net.cut.insert(late);
    let first = net.write(old);
    net.change(old, MembershipChange::Remove { id: old });
    net.run(30);
    assert!(net.nodes[&new].is_primary());
    // The old primary stops for good before the late member pulled its removal.
    net.cut.insert(old);
    net.cut.remove(&late);
    let second = net.write(new);
    net.run(60);
    assert!(net.applied(3).contains(&first) && net.applied(3).contains(&second));
    assert_eq!(net.nodes[&late].status().leader, Some(new));
}

#[test]
fn a_member_that_joined_and_missed_the_notify_hears_it_again() {
    let mut net = cluster(&[1, 2, 3]);
    let p = NodeId(1);
    boot(&mut net, 4, &[]);
    net.cut.insert(NodeId(4));
    net.change(p, add("dns://four", true));
    let write = net.write(p);
    net.run(5);
    // No change follows; the primary repeats its NOTIFY to a member that never asked.
    net.cut.clear();
    net.run(40);
    assert!(net.applied(4).contains(&write));
    assert_eq!(net.nodes[&NodeId(4)].status().leader, Some(p));
}

#[test]
fn a_successor_that_missed_the_removal_gets_it_from_a_member_that_has_it() {
    let mut net = cluster(&[1, 2, 3]);
    let (old, new) = (NodeId(1), NodeId(2));
    let write = net.write(old);
    net.run(30);
    let removal = net.change(old, MembershipChange::Remove { id: old });
    assert!(!net.refused.contains_key(&removal), "{:?}", net.refused);
    // The successor is cut off before it pulls the removal; member 3 pulls it, then the old
    // primary is gone for good.
    net.cut.insert(new);
    net.run(30);
    assert_eq!(net.nodes[&NodeId(3)].status().leader, Some(new));
    net.cut.insert(old);
    net.cut.remove(&new);
    net.run(60);
    assert!(
        net.nodes[&new].is_primary(),
        "it pulled the removal from member 3"
    );
    assert!(net.applied(2).contains(&write));
    let next = net.write(new);
    net.run(10);
    assert!(net.applied(3).contains(&next));
}

#[test]
fn a_change_that_moves_the_primary_waits_for_the_successor_to_be_heard() {
    let mut net = cluster(&[1, 2, 3]);
    net.run(30);
    net.cut.insert(NodeId(2));
    net.run(40);
    let removal = net.change(NodeId(1), MembershipChange::Remove { id: NodeId(1) });
    assert_eq!(
        net.refused.get(&removal),
        Some(&synod_core::Rejection::Membership(
            synod_core::MembershipRefusal::NotEnoughStarted
        ))
    );
    // Removing a silent secondary moves no primary: taken.
    let other = net.change(NodeId(1), MembershipChange::Remove { id: NodeId(2) });
    assert!(!net.refused.contains_key(&other));
}
