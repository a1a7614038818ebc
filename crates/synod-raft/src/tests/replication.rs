//! Log replication and commitment: paper 5.3, 5.4.2 (Figure 8), 5.5; flow control.

use synod_core::{Input, NodeId, Payload, Role};

use super::*;
use crate::{AppendEntries, Message};

#[test]
fn s5_3_the_leader_commits_an_entry_once_a_majority_stores_it_and_every_node_applies_it() {
    let mut c = Cluster::new(5, |_| {});
    c.elect(1);
    c.crash(4);
    c.crash(5);
    c.propose(1, vec![proposal(1, 1)]);
    assert_eq!(c.node(1).commit_index, 2, "noop and command are on 3 of 5");
    assert_eq!(c.applied_indexes(1), vec![1, 2]);
    // Followers learn the commit point from the next heartbeat.
    c.tick(1, 3);
    assert_eq!(c.applied_indexes(2), vec![1, 2]);
    assert_eq!(c.applied_indexes(3), vec![1, 2]);
}

#[test]
fn s5_3_without_a_majority_nothing_commits() {
    let mut c = Cluster::new(5, |_| {});
    c.elect(1);
    c.tick(1, 3);
    for id in [3, 4, 5] {
        c.crash(id);
    }
    c.propose(1, vec![proposal(1, 1)]);
    c.tick(1, 5);
    assert_eq!(c.node(1).commit_index, 1);
    assert_eq!(c.node(1).log.last_index(), 2);
}

#[test]
fn s5_3_conflicting_entries_are_removed_and_replaced_by_the_leaders() {
    let mut c = Cluster::new(3, |c| c.check_quorum = false);
    // n3 holds entries of term 2 that no one else has; n1 leads with a term-3 history.
    c.stage(1, 3, None, &[1, 1, 3]);
    c.stage(2, 3, None, &[1, 1]);
    c.stage(3, 2, None, &[1, 1, 2, 2, 2]);
    c.elect(1);
    c.tick(1, 5);
    assert_eq!(c.terms(3), c.terms(1), "n3's log now equals the leader's");
    assert_eq!(c.terms(3), vec![1, 1, 3, 4]);
    assert_eq!(
        c.disks[&NodeId(3)]
            .entries
            .iter()
            .map(|e| e.era)
            .collect::<Vec<_>>(),
        vec![1, 1, 3, 4],
        "and so does its disk"
    );
}

#[test]
fn s5_3_the_leader_skips_a_whole_conflicting_term_per_round_trip() {
    let mut c = Cluster::new(3, |c| c.check_quorum = false);
    // n2 diverged for 100 entries of term 2; n1's history has term 3 there.
    let mut diverged = vec![1u64; 5];
    diverged.extend(std::iter::repeat_n(2, 100));
    let mut leading = vec![1u64; 5];
    leading.extend(std::iter::repeat_n(3, 50));
    c.stage(1, 3, None, &leading);
    c.stage(2, 2, None, &diverged);
    c.stage(3, 3, None, &leading);
    c.crash(3);
    c.elect(1);
    c.delivered = 0;
    c.tick(1, 3);
    assert_eq!(c.terms(2), c.terms(1));
    assert!(
        c.delivered < 20,
        "{} messages: backtracking went term by term, not entry by entry",
        c.delivered
    );
}

#[test]
fn s5_3_a_follower_commits_no_further_than_the_last_entry_the_leader_sent_it() {
    let mut n2 = Raft::new(config(2, 3)).unwrap();
    let entries: Vec<_> = (1..=3)
        .map(|i| synod_core::Entry {
            index: i,
            era: 1,
            payload: Payload::Noop,
        })
        .collect();
    let first = AppendEntries {
        term: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries,
        leader_commit: 0,
    };
    step(
        &mut n2,
        Input::Receive {
            from: NodeId(1),
            message: Message::AppendEntries(first),
        },
    );
    // The leader has committed 3, but this (delayed) append only vouches for index 1.
    let late = AppendEntries {
        term: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![synod_core::Entry {
            index: 1,
            era: 1,
            payload: Payload::Noop,
        }],
        leader_commit: 3,
    };
    step(
        &mut n2,
        Input::Receive {
            from: NodeId(1),
            message: Message::AppendEntries(late),
        },
    );
    assert_eq!(
        n2.commit_index, 1,
        "commit = min(leaderCommit, index of last new entry)"
    );
    assert_eq!(
        n2.log.last_index(),
        3,
        "a stale append does not cut entries that match"
    );
}

#[test]
fn s5_5_duplicated_and_reordered_appends_are_harmless() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.tick(1, 3);
    for s in 1..=20 {
        c.step(NodeId(1), Input::Propose(vec![proposal(1, s)]));
    }
    // Deliver every message twice, newest first.
    let mut queued: Vec<_> = c.queue.drain(..).collect();
    queued.reverse();
    let doubled: Vec<_> = queued
        .iter()
        .cloned()
        .chain(queued.iter().cloned())
        .collect();
    c.queue.extend(doubled);
    c.deliver_all();
    c.tick(1, 10);
    assert_eq!(c.terms(2), c.terms(1));
    assert_eq!(c.terms(3), c.terms(1));
    assert_eq!(c.node(1).commit_index, 21);
    assert_eq!(c.applied_indexes(3).len(), 21);
    assert!(c.safety_violation.is_none());
}

#[test]
fn appends_lost_on_the_way_are_retried() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.tick(1, 3);
    c.drop_if = Some(Box::new(|_, to, m| {
        to == NodeId(2) && matches!(m, Message::AppendEntries(_))
    }));
    c.propose(1, vec![proposal(1, 1), proposal(1, 2)]);
    assert_eq!(c.node(2).log.last_index(), 1);
    c.drop_if = None;
    c.tick(1, 10);
    assert_eq!(c.node(2).log.last_index(), 3);
}

#[test]
fn the_inflight_window_bounds_unacknowledged_appends() {
    let mut c = Cluster::new(3, |c| c.inflight_appends_max = 4);
    c.elect(1);
    c.tick(1, 3);
    for s in 1..=10 {
        c.step(NodeId(1), Input::Propose(vec![proposal(1, s)]));
    }
    let appends_to_2 = c
        .queue
        .iter()
        .filter(|(_, to, m)| *to == NodeId(2) && matches!(m, Message::AppendEntries(_)))
        .count();
    assert_eq!(appends_to_2, 4, "the window is 4 appends");
    c.deliver_all();
    assert_eq!(
        c.node(2).log.last_index(),
        11,
        "acknowledgements reopen the window until all is sent"
    );
}

/// Paper Figure 8, played with five nodes. Returns the cluster afterwards.
///
/// (a) n1 led term 2 and replicated index 2 to n2 only, then crashed. (b) n5 is elected in
/// term 3 by n3, n4 and itself, writes a different index 2, and crashes. (c) n1 restarts,
/// is elected in term 4, and copies its index 2 (term 2) to n3: now a majority stores it.
/// (d) n1 crashes; n5 restarts and wins term 5 with votes from n3 and n4, and overwrites
/// index 2. If n1 had committed index 2 in (c) by counting replicas, a committed entry
/// would now be lost.
fn figure_8(commit_entries_of_earlier_terms: bool) -> Cluster {
    let mut c = Cluster::new(5, |c| {
        // Only the rule of 5.4.2 is under test here.
        c.pre_vote = false;
        c.check_quorum = false;
        c.append_entries_max = 1;
        c.bugs.commit_entries_of_earlier_terms = commit_entries_of_earlier_terms;
    });
    // (a)
    c.stage(1, 2, Some(1), &[1, 2]);
    c.stage(2, 2, Some(1), &[1, 2]);
    for id in 3..=5 {
        c.stage(id, 2, Some(1), &[1]);
    }
    c.crash(1);
    // (b) n5 wins term 3 and writes its no-op at index 2, but nobody receives it.
    c.drop_if = Some(Box::new(|from, _, m| {
        from == NodeId(5) && matches!(m, Message::AppendEntries(_))
    }));
    c.elect(5);
    assert_eq!((c.node(5).term, c.terms(5)), (3, vec![1, 3]));
    c.crash(5);
    // (c) n1 restarts and wins term 4 (term 3 is taken: n3 and n4 voted for n5 there).
    c.restart(1);
    // n4 hears no appends. n3 gets n1's first probe (prev index 2, which it lacks, so it
    // rejects), then index 2 of term 2, but never the term-4 no-op at index 3.
    let probes_of_index_3 = std::cell::Cell::new(0);
    c.drop_if = Some(Box::new(move |_, to, m| match m {
        Message::AppendEntries(a) if to == NodeId(3) && a.entries.iter().any(|e| e.index >= 3) => {
            probes_of_index_3.set(probes_of_index_3.get() + 1);
            probes_of_index_3.get() > 1
        }
        Message::AppendEntries(_) => to == NodeId(4),
        _ => false,
    }));
    c.elect(1);
    assert_eq!(c.node(1).term, 4);
    assert_eq!(
        c.terms(3),
        vec![1, 2],
        "index 2 of term 2 is now on n1, n2 and n3"
    );
    // (d)
    c.crash(1);
    c.restart(5);
    c.drop_if = None;
    c.elect(5);
    assert_eq!(c.node(5).term, 5);
    c.tick(5, 5);
    c
}

#[test]
fn s5_4_2_figure_8_a_leader_never_commits_an_earlier_terms_entry_by_counting_replicas() {
    let c = figure_8(false);
    assert!(c.safety_violation.is_none(), "{:?}", c.safety_violation);
    assert_eq!(
        c.applied_indexes(1),
        Vec::<u64>::new(),
        "n1 did not commit index 2 in term 4"
    );
    assert_eq!(
        c.terms(3),
        vec![1, 3, 5],
        "index 2 was overwritten, legitimately"
    );
}

#[test]
fn bug_switch_figure_8_counting_earlier_term_replicas_loses_a_committed_entry() {
    let c = figure_8(true);
    let violation = c.safety_violation.expect("the broken rule must be caught");
    assert!(violation.contains("at index 2"), "{violation}");
}

#[test]
fn s5_4_2_an_earlier_terms_entry_commits_once_an_entry_of_the_current_term_does() {
    let mut c = Cluster::new(3, |c| c.check_quorum = false);
    c.stage(1, 2, None, &[1, 2]);
    c.stage(2, 2, None, &[1]);
    c.stage(3, 2, None, &[1]);
    c.elect(1);
    assert_eq!(
        c.node(1).commit_index,
        3,
        "the term-3 no-op commits, taking index 2 with it"
    );
    assert_eq!(c.applied_indexes(1), vec![1, 2, 3]);
    assert_eq!(c.node(1).role, Role::Leader);
}
