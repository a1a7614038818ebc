//! Log compaction and InstallSnapshot (paper section 7).

use synod_core::NodeId;

use super::*;
use crate::Message;

/// A three-node cluster whose n3 missed 40 commands that n1 has compacted away.
fn lagging_follower(chunk_bytes: usize) -> Cluster {
    let mut c = Cluster::new(3, |c| c.snapshot_chunk_bytes = chunk_bytes);
    c.elect(1);
    c.tick(1, 3);
    c.crash(3);
    for s in 1..=40 {
        c.propose(1, vec![proposal(1, s)]);
    }
    c.snapshot(1);
    assert_eq!(c.node(1).log.base().index, 41);
    assert!(
        c.node(1).log.entries().is_empty(),
        "the leader's log is compacted"
    );
    c.restart(3);
    c
}

/// Loses n3's answers to snapshot chunks that say it expects `offset` or more.
fn answers_of_n3_lost_from(offset: u64) -> DropRule {
    Box::new(move |from, _, m| {
        from == NodeId(3)
            && matches!(m, Message::InstallSnapshotResponse(r) if r.next_offset >= offset)
    })
}

#[test]
fn s7_a_follower_behind_the_leaders_snapshot_catches_up_by_installing_it() {
    let mut c = lagging_follower(1 << 20);
    c.tick(1, 10);
    assert_eq!(
        c.applied_indexes(3),
        (1..=41).collect::<Vec<_>>(),
        "restored from the snapshot"
    );
    let disk = &c.disks[&NodeId(3)];
    assert_eq!(
        disk.snapshot.as_ref().map(|s| s.meta.index),
        Some(41),
        "the snapshot is on n3's disk"
    );
    c.propose(1, vec![proposal(2, 1)]);
    c.tick(1, 3);
    assert_eq!(
        c.applied_indexes(3).last(),
        Some(&42),
        "and replication continues after it"
    );
    assert!(c.safety_violation.is_none());
}

#[test]
fn s7_snapshots_travel_in_bounded_chunks_while_heartbeats_go_on() {
    let mut c = lagging_follower(7);
    // n3's answers to chunks are held up for 30 ticks: a slow transfer.
    c.drop_if = Some(answers_of_n3_lost_from(0));
    c.sent.clear();
    c.tick(1, 30);
    let to_n3 = |c: &Cluster, pick: fn(&Message) -> bool| {
        c.sent
            .iter()
            .filter(|(_, to, m)| *to == NodeId(3) && pick(m))
            .count()
    };
    let heartbeats = to_n3(&c, |m| matches!(m, Message::Heartbeat(_)));
    let chunks = to_n3(&c, |m| matches!(m, Message::InstallSnapshot(_)));
    assert!(
        heartbeats >= 9,
        "a heartbeat every 3 ticks while a chunk is outstanding: {heartbeats}"
    );
    assert!(chunks >= 2, "the unanswered chunk is sent again: {chunks}");
    assert_eq!(
        c.node(3).leader,
        Some(NodeId(1)),
        "n3 keeps following: the transfer did not starve it"
    );
    c.drop_if = None;
    c.tick(1, 30);
    let mut chunks: Vec<(u64, usize)> = c
        .sent
        .iter()
        .filter_map(|(_, _, m)| match m {
            Message::InstallSnapshot(s) => Some((s.offset, s.data.len())),
            _ => None,
        })
        .collect();
    chunks.sort_unstable();
    chunks.dedup();
    assert!(chunks.iter().all(|&(_, len)| len <= 7), "{chunks:?}");
    let covered: usize = chunks.iter().map(|&(_, len)| len).sum();
    assert_eq!(covered, "state of n1 through 41".len(), "{chunks:?}");
    assert_eq!(c.applied_indexes(3).len(), 41);
}

#[test]
fn s7_a_stalled_transfer_resumes_where_it_was_not_from_the_start() {
    let mut c = lagging_follower(7);
    // n3 answers the first chunk, then its answers are lost for longer than the append
    // retry: a follower busy taking a chunk of a large snapshot.
    c.drop_if = Some(answers_of_n3_lost_from(14));
    c.sent.clear();
    c.tick(1, 30);
    let offsets: Vec<u64> = c
        .sent
        .iter()
        .filter_map(|(_, _, m)| match m {
            Message::InstallSnapshot(s) => Some(s.offset),
            _ => None,
        })
        .collect();
    assert!(
        offsets.iter().filter(|&&offset| offset == 7).count() >= 2,
        "the unanswered chunk is sent again: {offsets:?}"
    );
    assert!(
        offsets.is_sorted(),
        "resent from where the transfer was, never from the start: {offsets:?}"
    );
    c.drop_if = None;
    c.tick(1, 30);
    assert_eq!(c.applied_indexes(3).len(), 41);
}

#[test]
fn s7_a_follower_that_restarts_during_a_transfer_gets_it_again_from_where_it_now_is() {
    let mut c = lagging_follower(7);
    // n3 takes the chunks at 0 and 7, but its answer to the second is lost; then it restarts,
    // and what it had taken is gone with its memory. The leader, at offset 14 or resending 7,
    // hears that n3 now expects the start, and goes back there.
    c.drop_if = Some(answers_of_n3_lost_from(14));
    c.tick(1, 12);
    c.crash(3);
    c.restart(3);
    c.drop_if = None;
    c.tick(1, 40);
    assert_eq!(c.applied_indexes(3).len(), 41, "n3 installed the snapshot");
}

#[test]
fn s7_a_transfer_a_new_term_cuts_short_lets_go_of_what_it_received() {
    let mut c = lagging_follower(7);
    c.drop_if = Some(answers_of_n3_lost_from(14));
    c.tick(1, 6);
    assert!(
        c.node(3).incoming.is_some(),
        "n3 holds part of the snapshot"
    );
    c.drop_if = Some(Box::new(|_, to, m| {
        to == NodeId(3) && matches!(m, Message::InstallSnapshot(_))
    }));
    c.crash(1);
    c.tick_all(60);
    assert!(c.node(3).term > 1, "a new term began");
    assert!(
        c.node(3).incoming.is_none(),
        "the new leader starts over: the old bytes are let go"
    );
}

#[test]
fn s7_an_answer_past_the_snapshots_end_is_ignored() {
    let mut c = lagging_follower(7);
    c.drop_if = Some(answers_of_n3_lost_from(0));
    c.tick(1, 6);
    assert!(
        c.sent
            .iter()
            .any(|(_, _, m)| matches!(m, Message::InstallSnapshot(_))),
        "the transfer is under way"
    );
    // A follower that claims to have taken more than the snapshot holds (a bug, or not a
    // member at all) must not make the leader slice past its end.
    let (term, meta) = (c.node(1).term, c.node(1).log.base());
    let response = crate::message::InstallSnapshotResponse {
        term,
        meta,
        next_offset: 1 << 40,
        done: false,
    };
    c.step(
        NodeId(1),
        Input::Receive {
            from: NodeId(3),
            message: Message::InstallSnapshotResponse(response),
        },
    );
    c.drop_if = None;
    c.tick(1, 40);
    assert_eq!(c.applied_indexes(3).len(), 41);
}

#[test]
fn s7_lost_chunks_are_sent_again() {
    let mut c = lagging_follower(5);
    let lost = std::cell::Cell::new(0);
    c.drop_if = Some(Box::new(move |_, _, m| {
        if matches!(m, Message::InstallSnapshot(s) if s.offset == 10) && lost.get() < 2 {
            lost.set(lost.get() + 1);
            return true;
        }
        false
    }));
    c.tick(1, 40);
    assert_eq!(c.applied_indexes(3).len(), 41);
}

#[test]
fn s7_a_node_restarts_from_its_snapshot_and_the_log_after_it() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    for s in 1..=10 {
        c.propose(1, vec![proposal(1, s)]);
    }
    c.tick(1, 3);
    c.snapshot(2);
    c.propose(1, vec![proposal(1, 11)]);
    c.tick(1, 3);
    c.crash(2);
    c.restart(2);
    let n2 = c.node(2);
    assert_eq!(
        (n2.log.base().index, n2.commit_index),
        (11, 11),
        "what the snapshot covers is committed"
    );
    assert_eq!(n2.log.last_index(), 12);
    c.tick(1, 3);
    assert_eq!(c.applied_indexes(2), (1..=12).collect::<Vec<_>>());
}

#[test]
fn s7_a_leader_keeps_serving_after_compacting_its_own_log() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    for s in 1..=5 {
        c.propose(1, vec![proposal(1, s)]);
    }
    c.snapshot(1);
    for s in 6..=10 {
        c.propose(1, vec![proposal(1, s)]);
    }
    c.tick(1, 3);
    assert_eq!(c.node(1).commit_index, 11);
    assert_eq!(
        c.applied_indexes(2).len(),
        11,
        "followers in step with the leader need no snapshot"
    );
    assert!(c.disks[&NodeId(2)].snapshot.is_none());
}
