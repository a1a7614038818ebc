//! Exact actions of single members: what the primary sends and when, and how a secondary's
//! copy moves.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use bytes::Bytes;
use synod_core::{
    Action, Engine, Entry, Input, NodeId, Payload, PersistId, Proposal, ReadConsistency,
    ReadRequest, RequestId, Role, Snapshot, SnapshotMeta,
};

use crate::{encode_era, Config, Dns, Message};

/// The era of a primary's first life.
const ERA: u64 = 1;

type Out = Vec<Action<Message>>;

fn config(id: u64) -> Config {
    Config::new(NodeId(id), vec![NodeId(1), NodeId(2), NodeId(3)])
}

/// A node booted on an empty disk; the primary has made its era durable.
fn node(id: u64) -> Dns {
    ready(Dns::restart(config(id), None, None, Vec::new()).unwrap())
}

/// The primary's era made durable (a first tick whose persists complete).
fn ready(mut node: Dns) -> Dns {
    if node.is_primary() {
        step(&mut node, Input::Tick);
    }
    node
}

/// One input, without completing its persists.
fn step_slow(node: &mut Dns, input: Input<Message>) -> Out {
    let mut out = Vec::new();
    node.step(input, &mut out);
    out
}

/// One input, every persist completing at once (and those that completing pushes), as on a
/// fast disk.
fn step(node: &mut Dns, input: Input<Message>) -> Out {
    let mut out = step_slow(node, input);
    let mut done = 0;
    loop {
        let pending: Vec<PersistId> = persists(&out).into_iter().skip(done).collect();
        if pending.is_empty() {
            return out;
        }
        done += pending.len();
        for id in pending {
            node.step(Input::Persisted(id), &mut out);
        }
    }
}

fn persists(out: &Out) -> Vec<PersistId> {
    out.iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some(p.id),
            _ => None,
        })
        .collect()
}

fn receive(node: &mut Dns, from: u64, message: Message) -> Out {
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

fn entry(index: u64) -> Entry {
    Entry {
        index,
        era: ERA,
        payload: Payload::Command(write(index)),
    }
}

fn query(serial: u64) -> Message {
    Message::Query {
        serial,
        receiving: None,
    }
}

/// A primary that took writes 1..=n.
fn primary_with(n: u64) -> Dns {
    let mut p = node(1);
    step(&mut p, Input::Propose((1..=n).map(write).collect()));
    assert_eq!(p.serial(), n);
    p
}

#[test]
fn the_lowest_member_is_primary_and_the_others_are_secondaries_that_name_it() {
    let p = node(1);
    assert_eq!(p.status().role, Role::Leader);
    assert_eq!(p.status().leader, Some(NodeId(1)));
    let s = node(3);
    assert_eq!(s.status().role, Role::Secondary);
    assert_eq!(s.status().leader, Some(NodeId(1)));
}

#[test]
fn the_primary_applies_a_write_once_durable_then_notifies_every_secondary() {
    let mut p = node(1);
    let out = step_slow(&mut p, Input::Propose(vec![write(1), write(2)]));
    assert!(applied(&out).is_empty(), "nothing before it is durable");
    assert!(
        sends(&out).is_empty(),
        "nobody hears of it before it is durable"
    );
    let id = persists(&out)[0];
    let out = step_slow(&mut p, Input::Persisted(id));
    assert_eq!(applied(&out), [1, 2]);
    assert_eq!(
        sends(&out),
        [
            (NodeId(2), Message::Notify { serial: 2 }),
            (NodeId(3), Message::Notify { serial: 2 })
        ]
    );
    // A second change in the same tick waits for the next tick's NOTIFY.
    let out = step(&mut p, Input::Propose(vec![write(3)]));
    assert_eq!(applied(&out), [3]);
    assert!(sends(&out).is_empty());
    let out = step(&mut p, Input::Tick);
    assert_eq!(sends(&out).len(), 2);
}

#[test]
fn a_secondary_refuses_writes_naming_the_primary_and_answers_reads_from_its_copy() {
    let mut s = node(2);
    let out = step(&mut s, Input::Propose(vec![write(1)]));
    assert!(matches!(
        out.as_slice(),
        [Action::Reject {
            reason: synod_core::Rejection::NotLeader {
                leader_hint: Some(NodeId(1))
            },
            ..
        }]
    ));
    let read = ReadRequest {
        id: RequestId::new(4, 1),
        consistency: ReadConsistency::Linearizable,
        keys: None,
    };
    let out = step(&mut s, Input::Read(vec![read.clone()]));
    assert_eq!(out, [Action::ReadReady(read.id)], "at once, stale or not");
}

#[test]
fn the_primary_answers_a_small_gap_incrementally_and_only_with_durable_changes() {
    let mut p = primary_with(3);
    let out = receive(&mut p, 2, query(1));
    assert_eq!(
        sends(&out),
        [(
            NodeId(2),
            Message::Ixfr {
                after: 1,
                serial: 3,
                entries: vec![entry(2), entry(3)]
            }
        )]
    );
    // Up to date: an empty answer.
    let out = receive(&mut p, 3, query(3));
    assert!(matches!(&sends(&out)[..], [(_, Message::Ixfr { entries, .. })] if entries.is_empty()));
    // A write not yet durable is not sent.
    step_slow(&mut p, Input::Propose(vec![write(4)]));
    let out = receive(&mut p, 2, query(3));
    assert!(
        matches!(&sends(&out)[..], [(_, Message::Ixfr { entries, serial: 3, .. })] if entries.is_empty())
    );
    // A serial beyond the primary's own: no correct secondary asks that.
    assert!(sends(&receive(&mut p, 2, query(9))).is_empty());
}

#[test]
fn a_large_gap_or_compacted_changes_get_the_snapshot_in_chunks() {
    let mut cfg = config(1);
    cfg.ixfr_gap_max = 2;
    cfg.snapshot_chunk_bytes = 4;
    let mut p = ready(Dns::restart(cfg, None, None, Vec::new()).unwrap());
    step(&mut p, Input::Propose((1..=5).map(write).collect()));
    let meta = SnapshotMeta { index: 5, era: ERA };
    let snapshot = Snapshot {
        membership: None,
        meta,
        data: Bytes::from_static(b"zone-data"),
    };
    step(&mut p, Input::Snapshotted(snapshot));
    let out = receive(&mut p, 2, query(1));
    let chunk = |offset: u64, data: &'static [u8], done: bool| Message::Axfr {
        meta,
        offset,
        data: Bytes::from_static(data),
        done,
        serial: 5,
        membership: None,
    };
    assert_eq!(sends(&out), [(NodeId(2), chunk(0, b"zone", false))]);
    let asking = Message::Query {
        serial: 1,
        receiving: Some((meta, 8)),
    };
    let out = receive(&mut p, 2, asking);
    assert_eq!(sends(&out), [(NodeId(2), chunk(8, b"a", true))]);
}

#[test]
fn a_secondary_asks_on_refresh_and_on_notify_and_again_after_the_retry_interval() {
    let mut s = node(2);
    // Restarted: it asks at its first tick.
    let out = step(&mut s, Input::Tick);
    assert_eq!(sends(&out), [(NodeId(1), query(0))]);
    // Unanswered: asked again after the retry interval, not before.
    for _ in 1..config(2).retry_ticks {
        assert!(sends(&step(&mut s, Input::Tick)).is_empty());
    }
    assert_eq!(sends(&step(&mut s, Input::Tick)), [(NodeId(1), query(0))]);
    // Answered and up to date: the next question waits for the refresh.
    let current = Message::Ixfr {
        after: 0,
        serial: 0,
        entries: vec![],
    };
    assert!(sends(&receive(&mut s, 1, current)).is_empty());
    for _ in 1..config(2).refresh_ticks {
        assert!(sends(&step(&mut s, Input::Tick)).is_empty());
    }
    assert_eq!(sends(&step(&mut s, Input::Tick)), [(NodeId(1), query(0))]);
    // A NOTIFY of a newer serial while a question is out adds none; after the answer, one.
    assert!(sends(&receive(&mut s, 1, Message::Notify { serial: 2 })).is_empty());
    let partial = Message::Ixfr {
        after: 0,
        serial: 2,
        entries: vec![entry(1)],
    };
    let out = receive(&mut s, 1, partial);
    assert_eq!(applied(&out), [1]);
    assert_eq!(sends(&out), [(NodeId(1), query(1))], "behind: it asks on");
    // A NOTIFY from a stranger means nothing; from another member that holds more (a new
    // primary it does not know of yet), it asks there once the member it asks now stops
    // answering (it asked again without an answer), not while it answers.
    let s_before = s.serial();
    assert!(sends(&receive(&mut s, 9, Message::Notify { serial: 9 })).is_empty());
    assert_eq!(s.serial(), s_before);
    assert!(sends(&receive(&mut s, 3, Message::Notify { serial: 9 })).is_empty());
    let asked_again: Vec<_> = (0..6)
        .flat_map(|_| sends(&step(&mut s, Input::Tick)))
        .collect();
    assert_eq!(asked_again, [(NodeId(1), query(1))]);
    let out = receive(&mut s, 3, Message::Notify { serial: 9 });
    assert_eq!(sends(&out), [(NodeId(3), query(1))]);
}

#[test]
fn a_secondary_applies_a_transfer_only_once_durable_and_drops_copies_and_strays() {
    let mut s = node(2);
    let ixfr = Message::Ixfr {
        after: 0,
        serial: 2,
        entries: vec![entry(1), entry(2)],
    };
    let out = step_slow(
        &mut s,
        Input::Receive {
            from: NodeId(1),
            message: ixfr.clone(),
        },
    );
    assert!(applied(&out).is_empty(), "not before it is durable");
    assert_eq!(s.serial(), 0);
    let id = persists(&out)[0];
    assert_eq!(applied(&step(&mut s, Input::Persisted(id))), [1, 2]);
    // The same answer again (the network duplicates) changes nothing and asks nothing.
    let out = receive(&mut s, 1, ixfr);
    assert!(out.is_empty(), "{out:?}");
    // Entries out of order or past the serial sent with them are dropped.
    let stray = Message::Ixfr {
        after: 2,
        serial: 3,
        entries: vec![entry(3), entry(4)],
    };
    receive(&mut s, 1, stray);
    assert_eq!(s.serial(), 3);
}

#[test]
fn a_full_transfer_replaces_the_copy_once_durable_and_its_restore_comes_first() {
    let mut s = node(2);
    receive(
        &mut s,
        1,
        Message::Ixfr {
            after: 0,
            serial: 1,
            entries: vec![entry(1)],
        },
    );
    let meta = SnapshotMeta { index: 9, era: ERA };
    let chunk = |offset: u64, data: &'static [u8], done: bool| Message::Axfr {
        meta,
        offset,
        data: Bytes::from_static(data),
        done,
        serial: 10,
        membership: None,
    };
    let out = receive(&mut s, 1, chunk(0, b"zone", false));
    assert_eq!(
        sends(&out),
        [(
            NodeId(1),
            Message::Query {
                serial: 1,
                receiving: Some((meta, 4))
            }
        )]
    );
    // A duplicate of the first chunk neither restarts the transfer nor asks again.
    assert!(sends(&receive(&mut s, 1, chunk(0, b"zone", false))).is_empty());
    let out = step_slow(
        &mut s,
        Input::Receive {
            from: NodeId(1),
            message: chunk(4, b"-data", true),
        },
    );
    assert!(
        !out.iter().any(|a| matches!(a, Action::Restore(_))),
        "not before it is durable"
    );
    let id = persists(&out)[0];
    let out = step_slow(&mut s, Input::Persisted(id));
    match out.first() {
        Some(Action::Restore(snapshot)) => assert_eq!(&snapshot.data[..], b"zone-data"),
        other => panic!("restore first: {other:?}"),
    }
    assert_eq!(s.serial(), 9);
    assert_eq!(sends(&out), [(NodeId(1), query(9))], "10 is still to come");
}

#[test]
fn a_restarted_node_applies_what_its_disk_holds_at_its_first_step() {
    let entries = vec![entry(1), entry(2)];
    let mut s = Dns::restart(config(3), None, None, entries).unwrap();
    let out = step(&mut s, Input::Tick);
    assert_eq!(applied(&out), [1, 2]);
    assert_eq!(sends(&out), [(NodeId(1), query(2))]);
}

#[test]
fn each_life_of_the_primary_is_a_new_era_persisted_with_its_first_change() {
    let era = encode_era(2);
    let mut p = Dns::restart(config(1), Some(&era), None, vec![entry(1)]).unwrap();
    assert_eq!(p.era(), 3);
    assert_eq!(p.status().era, 3);
    // The change waits for the era to be durable, then goes to disk after it.
    let out = step_slow(&mut p, Input::Propose(vec![write(2)]));
    assert!(out.iter().all(|a| match a {
        Action::Persist(p) => p.entries.is_empty(),
        _ => true,
    }));
    let era_persist = persists(&out)[0];
    let mut out = out;
    out.extend(step_slow(&mut p, Input::Persisted(era_persist)));
    let persists: Vec<&synod_core::Persist> = out
        .iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some(p),
            _ => None,
        })
        .collect();
    // The era reaches the disk in the first persist of this life, before any change of it.
    assert_eq!(persists[0].hard_state.as_deref(), Some(&encode_era(3)[..]));
    let eras: Vec<u64> = persists
        .iter()
        .flat_map(|p| &p.entries)
        .map(|e| e.era)
        .collect();
    assert_eq!(eras, [3]);
    // A primary whose history holds a later era than its disk's (it became primary by the
    // change it pulled last, and crashed before its own era was durable) starts above both.
    let ahead = Entry { era: 5, ..entry(1) };
    let restarted = Dns::restart(config(1), Some(&era), None, vec![ahead]).unwrap();
    assert_eq!(restarted.era(), 6);
    assert!(Dns::restart(config(1), Some(b"xx"), None, Vec::new()).is_err());
}

#[test]
fn a_secondary_takes_changes_of_a_later_era_and_drops_those_of_an_earlier_one() {
    let mut s = node(2);
    let later = Entry { era: 4, ..entry(1) };
    receive(
        &mut s,
        1,
        Message::Ixfr {
            after: 0,
            serial: 2,
            entries: vec![later, entry(2)],
        },
    );
    assert_eq!(s.serial(), 1, "era 1 after era 4 comes from no primary");
    assert_eq!(s.era(), 4);
}

#[test]
fn with_the_bug_a_secondary_applies_before_its_disk_has_the_changes() {
    let mut cfg = config(2);
    cfg.bugs.apply_before_durable = true;
    let mut s = Dns::restart(cfg, None, None, Vec::new()).unwrap();
    let ixfr = Message::Ixfr {
        after: 0,
        serial: 1,
        entries: vec![entry(1)],
    };
    let out = step_slow(
        &mut s,
        Input::Receive {
            from: NodeId(1),
            message: ixfr,
        },
    );
    assert_eq!(applied(&out), [1]);
}

#[test]
fn a_snapshot_behind_the_secondary_is_never_sent_however_large_the_gap() {
    let mut cfg = config(1);
    cfg.ixfr_gap_max = 2;
    let mut p = ready(Dns::restart(cfg, None, None, Vec::new()).unwrap());
    step(&mut p, Input::Propose((1..=3).map(write).collect()));
    let meta = SnapshotMeta { index: 3, era: ERA };
    let snapshot = Snapshot {
        membership: None,
        meta,
        data: Bytes::from_static(b"zone"),
    };
    step(&mut p, Input::Snapshotted(snapshot));
    step(&mut p, Input::Propose((4..=9).map(write).collect()));
    // At serial 4 the gap is 5, but the snapshot (3) would not move it on: incremental.
    let out = receive(&mut p, 2, query(4));
    assert!(
        matches!(&sends(&out)[..], [(_, Message::Ixfr { after: 4, entries, .. })] if entries.len() == 5),
        "{out:?}"
    );
}

#[test]
fn a_full_transfer_goes_on_with_its_snapshot_when_the_primary_takes_a_newer_one() {
    let mut cfg = config(1);
    cfg.snapshot_chunk_bytes = 4;
    let mut p = ready(Dns::restart(cfg, None, None, Vec::new()).unwrap());
    step(&mut p, Input::Propose((1..=3).map(write).collect()));
    let old = SnapshotMeta { index: 3, era: ERA };
    step(
        &mut p,
        Input::Snapshotted(Snapshot {
            membership: None,
            meta: old,
            data: Bytes::from_static(b"old-zone"),
        }),
    );
    assert!(matches!(
        &sends(&receive(&mut p, 2, query(0)))[..],
        [(_, Message::Axfr { offset: 0, .. })]
    ));
    step(&mut p, Input::Propose((4..=6).map(write).collect()));
    step(
        &mut p,
        Input::Snapshotted(Snapshot {
            membership: None,
            meta: SnapshotMeta { index: 6, era: ERA },
            data: Bytes::from_static(b"new-zone"),
        }),
    );
    let asking = Message::Query {
        serial: 0,
        receiving: Some((old, 4)),
    };
    let out = receive(&mut p, 2, asking);
    assert_eq!(
        sends(&out),
        [(
            NodeId(2),
            Message::Axfr {
                meta: old,
                offset: 4,
                data: Bytes::from_static(b"zone"),
                done: true,
                serial: 6,
                membership: None,
            }
        )]
    );
}

#[test]
fn a_restarted_primary_holds_writes_until_its_era_is_durable() {
    let mut p = Dns::restart(config(1), Some(&encode_era(1)), None, Vec::new()).unwrap();
    let out = step_slow(&mut p, Input::Propose(vec![write(1)]));
    assert_eq!(p.log().last_index(), 0, "not before the era is on disk");
    let era_persist = persists(&out)[0];
    let out = step_slow(&mut p, Input::Persisted(era_persist));
    assert_eq!(p.log().last_index(), 1);
    assert_eq!(p.log().last_era(), 2);
    assert_eq!(persists(&out).len(), 1, "the write goes to disk");
}
