//! The engine in a small cluster of its own: instant disks, a network that can cut links
//! and drop pushes, a key-value store per node fed by the engine's applies.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use synod_core::wire::conformance;
use synod_core::{
    Action, ClientId, Engine, Input, KeySpan, NodeId, Persist, Proposal, ReadConsistency,
    ReadRequest, Rejection, RequestId,
};
use synod_kv::{DeleteRangeRequest, KeyRange, KvStore, PutRequest, Request, TxnRequest};

use crate::config::{Config, InjectedBugs, Level};
use crate::engine::Gossip;
use crate::message::{MemberState, Message, Update};
use crate::store::Record;
use crate::version::Version;

mod membership;

struct Node {
    engine: Gossip,
    kv: KvStore,
    hard_state: Option<Vec<u8>>,
    journal: Vec<Vec<u8>>,
    acked: Vec<RequestId>,
    rejected: Vec<(RequestId, Rejection)>,
    ready: Vec<RequestId>,
}

struct Cluster {
    config: Config,
    nodes: BTreeMap<NodeId, Node>,
    down: BTreeSet<NodeId>,
    /// Links cut in both directions.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Pushes (epidemic and anti-entropy transfers) are lost.
    drop_pushes: bool,
    queue: VecDeque<(NodeId, NodeId, Message)>,
    next_seq: u64,
}

fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

impl Cluster {
    fn new(n: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let mut config = Config::new(NodeId(1), ids(n), 5);
        tweak(&mut config);
        let mut cluster = Cluster {
            config,
            nodes: BTreeMap::new(),
            down: BTreeSet::new(),
            cut: BTreeSet::new(),
            drop_pushes: false,
            queue: VecDeque::new(),
            next_seq: 0,
        };
        for id in ids(n) {
            let engine = cluster.boot(id, None, &[], 0);
            let node = Node {
                engine,
                kv: KvStore::new(),
                hard_state: None,
                journal: Vec::new(),
                acked: Vec::new(),
                rejected: Vec::new(),
                ready: Vec::new(),
            };
            cluster.nodes.insert(id, node);
        }
        // A new member takes writes once it has seen a peer's clock: the first probes.
        cluster.run(cluster.config.swim.probe_ticks);
        cluster
    }

    fn boot(&self, id: NodeId, hard: Option<&[u8]>, journal: &[Vec<u8>], index: u64) -> Gossip {
        let mut config = self.config.clone();
        config.id = id;
        Gossip::restart(config, id.0 * 7919, hard, journal, index).expect("boots")
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[&NodeId(id)]
    }

    fn step(&mut self, id: NodeId, input: Input<Message>) {
        let mut actions = Vec::new();
        let node = self.nodes.get_mut(&id).expect("node");
        node.engine.step(input, &mut actions);
        let mut persisted = None;
        for action in actions {
            match action {
                Action::Persist(Persist {
                    id: pid,
                    hard_state,
                    journal,
                    ..
                }) => {
                    if let Some(hard) = hard_state {
                        node.hard_state = Some(hard);
                        node.journal.clear();
                    }
                    node.journal.extend(journal);
                    persisted = Some(pid);
                }
                Action::Send { to, message } => self.queue.push_back((id, to, message)),
                Action::Apply(entry) => {
                    node.kv.apply(&entry);
                }
                Action::Restore(_) => panic!("gossip never restores a snapshot"),
                Action::ReadReady(rid) => node.ready.push(rid),
                Action::Acknowledge(rid) => node.acked.push(rid),
                Action::Reject { id: rid, reason } => node.rejected.push((rid, reason)),
            }
        }
        if let Some(pid) = persisted {
            self.step(id, Input::Persisted(pid));
        }
    }

    fn deliver(&mut self) {
        let mut budget = 100_000;
        while let Some((from, to, message)) = self.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "message storm");
            let push = matches!(message, Message::Push { ack: None, .. });
            if self.down.contains(&from)
                || self.down.contains(&to)
                || !self.nodes.contains_key(&to)
                || self.cut.contains(&(from, to))
                || (push && self.drop_pushes)
            {
                continue;
            }
            self.step(to, Input::Receive { from, message });
        }
    }

    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            let up: Vec<NodeId> = self
                .nodes
                .keys()
                .copied()
                .filter(|id| !self.down.contains(id))
                .collect();
            for id in up {
                self.step(id, Input::Tick);
            }
            self.deliver();
        }
    }

    fn write(&mut self, at: u64, request: Request) -> RequestId {
        self.next_seq += 1;
        let id = RequestId::new(ClientId::UNTRACKED_FROM + 1, self.next_seq);
        let proposal = Proposal {
            id,
            command: request.encode(),
        };
        self.step(NodeId(at), Input::Propose(vec![proposal]));
        self.deliver();
        id
    }

    fn put(&mut self, at: u64, key: &str, value: &str) -> RequestId {
        self.write(at, put(key, value))
    }

    fn read(&mut self, at: u64, key: &str) -> RequestId {
        self.next_seq += 1;
        let id = RequestId::new(ClientId::UNTRACKED_FROM + 1, self.next_seq);
        let request = ReadRequest {
            id,
            consistency: ReadConsistency::Linearizable,
            keys: Some(KeySpan {
                key: Bytes::copy_from_slice(key.as_bytes()),
                range_end: Bytes::new(),
            }),
        };
        self.step(NodeId(at), Input::Read(vec![request]));
        self.deliver();
        id
    }

    fn partition(&mut self, side: &[u64]) {
        for &a in side {
            for b in self.nodes.keys().copied().collect::<Vec<_>>() {
                if !side.contains(&b.0) {
                    self.cut.insert((NodeId(a), b));
                    self.cut.insert((b, NodeId(a)));
                }
            }
        }
    }

    fn value(&self, at: u64, key: &str) -> Option<Bytes> {
        self.node(at).kv.get(key.as_bytes()).map(|kv| kv.value)
    }

    /// Every node holds the same versions, and its store the same data.
    fn converged(&self) -> bool {
        let mut prints = self.nodes.values().map(|n| {
            let data: Vec<(Bytes, Bytes)> =
                n.kv.values().map(|(k, v)| (k.clone(), v.clone())).collect();
            (n.engine.store().fingerprint(), data)
        });
        let first = prints.next();
        prints.all(|p| Some(&p) == first.as_ref())
    }

    fn crash_and_restart(&mut self, id: u64) {
        let node = &self.nodes[&NodeId(id)];
        let (hard, journal) = (node.hard_state.clone(), node.journal.clone());
        // The state machine restarts empty (no snapshot): everything is applied again.
        let engine = self.boot(NodeId(id), hard.as_deref(), &journal, 0);
        let node = self.nodes.get_mut(&NodeId(id)).expect("node");
        node.engine = engine;
        node.kv = KvStore::new();
    }

    /// Node `id` restarts with a new, empty disk (and forgets what its clients were told).
    fn lose_disk(&mut self, id: u64) {
        let engine = self.boot(NodeId(id), None, &[], 0);
        let node = self.nodes.get_mut(&NodeId(id)).expect("node");
        node.engine = engine;
        node.kv = KvStore::new();
        node.hard_state = None;
        node.journal.clear();
        node.acked.clear();
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..PutRequest::default()
    })
}

fn b(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn a_write_taken_anywhere_reaches_every_member() {
    let mut c = Cluster::new(5, |_| {});
    let id = c.put(3, "k", "v");
    assert_eq!(c.node(3).acked, vec![id], "ONE: answered once durable here");
    c.run(10);
    for n in 1..=5 {
        assert_eq!(c.value(n, "k"), b("v"), "n{n}");
    }
    assert!(c.converged());
}

#[test]
fn concurrent_writes_on_both_sides_of_a_partition_converge_to_the_newest() {
    let mut c = Cluster::new(5, |_| {});
    c.run(3);
    c.partition(&[1, 2]);
    c.put(1, "k", "minority");
    c.run(2);
    c.put(4, "k", "majority");
    c.put(2, "only-minority", "x");
    c.run(20);
    // Both sides took their writes and answer with their own.
    assert_eq!(c.value(2, "k"), b("minority"));
    assert_eq!(c.value(5, "k"), b("majority"));
    assert!(!c.converged());
    c.cut.clear();
    c.run(200);
    assert!(c.converged());
    // The later write wins everywhere; nothing else is lost.
    assert_eq!(c.value(1, "k"), b("majority"));
    assert_eq!(c.value(5, "only-minority"), b("x"));
}

#[test]
fn anti_entropy_repairs_what_every_push_missed() {
    let mut c = Cluster::new(3, |_| {});
    c.drop_pushes = true;
    c.put(1, "a", "1");
    c.put(2, "b", "2");
    c.run(5);
    assert_eq!(c.value(3, "a"), None, "no push arrived");
    // Anti-entropy's own transfers are pushes too: let them through.
    c.drop_pushes = false;
    c.run(60);
    assert!(c.converged());
    assert_eq!(c.value(3, "a"), b("1"));
}

#[test]
fn without_anti_entropy_lost_pushes_are_never_repaired() {
    let mut c = Cluster::new(3, |config| {
        config.bugs = InjectedBugs {
            no_anti_entropy: true,
            ..InjectedBugs::default()
        }
    });
    c.drop_pushes = true;
    c.put(1, "a", "1");
    c.run(5);
    c.drop_pushes = false;
    c.run(200);
    assert!(!c.converged());
}

#[test]
fn a_merge_that_keeps_the_first_version_never_converges() {
    let mut c = Cluster::new(3, |config| {
        config.bugs = InjectedBugs {
            keep_first: true,
            ..InjectedBugs::default()
        }
    });
    c.partition(&[1]);
    c.put(1, "k", "a");
    c.put(2, "k", "b");
    c.run(5);
    c.cut.clear();
    c.run(200);
    assert!(!c.converged());
}

#[test]
fn a_delete_leaves_a_tombstone_an_older_value_cannot_get_past() {
    let mut c = Cluster::new(3, |_| {});
    c.put(1, "k", "v");
    c.run(5);
    let old = c
        .node(2)
        .engine
        .store()
        .record(&Bytes::from("k"))
        .expect("held");
    let delete = Request::DeleteRange(DeleteRangeRequest {
        range: KeyRange::key("k"),
        prev_kv: false,
    });
    c.write(1, delete);
    c.run(10);
    assert_eq!(c.value(3, "k"), None);
    // The old version arrives late: it loses to the tombstone.
    c.step(
        NodeId(3),
        Input::Receive {
            from: NodeId(2),
            message: Message::Push {
                records: vec![old],
                ack: None,
            },
        },
    );
    assert_eq!(c.value(3, "k"), None);
    assert!(c.converged());
}

#[test]
fn quorum_writes_wait_for_a_majority_and_fail_without_one() {
    let mut c = Cluster::new(3, |config| {
        config.write_level = Level::Quorum;
        config.read_level = Level::Quorum;
    });
    let id = c.put(1, "k", "v");
    assert_eq!(c.node(1).acked, vec![id], "two of three acknowledged");
    // Cut off, the writer cannot reach a quorum: the write is taken here, and fails.
    c.partition(&[1]);
    let id = c.put(1, "k", "w");
    c.run(c.config.request_timeout_ticks + 1);
    assert!(!c.node(1).acked.contains(&id));
    let (rid, reason) = c.node(1).rejected.last().copied().expect("rejected");
    assert_eq!(rid, id);
    assert!(matches!(
        reason,
        Rejection::Unavailable {
            written: true,
            needed: 2,
            ..
        }
    ));
    // By now SWIM has declared the others dead: a new write fails at once, untaken.
    let id = c.put(1, "k", "x");
    let (rid, reason) = c.node(1).rejected.last().copied().expect("rejected");
    assert_eq!(rid, id);
    assert!(matches!(
        reason,
        Rejection::Unavailable { written: false, .. }
    ));
    assert_eq!(c.value(1, "k"), b("w"), "the refused write was not taken");
}

#[test]
fn a_read_at_all_returns_the_newest_version_and_repairs_the_stale() {
    // At QUORUM the read would finish with the first reply; at ALL every replier is
    // consulted, so the stale one is among them.
    let mut c = Cluster::new(3, |config| config.read_level = Level::All);
    c.run(3);
    c.drop_pushes = true;
    c.put(2, "k", "new");
    c.run(1);
    assert_eq!(c.value(1, "k"), None, "the push to n1 was lost");
    c.drop_pushes = false;
    let id = c.read(1, "k");
    assert_eq!(c.node(1).ready, vec![id]);
    assert_eq!(c.value(1, "k"), b("new"), "read through to the newest");
    c.deliver();
    assert_eq!(
        c.value(3, "k"),
        b("new"),
        "read repair reached the stale replier"
    );
}

#[test]
fn swim_suspects_then_declares_a_silent_member_dead_and_it_refutes_on_return() {
    let mut c = Cluster::new(5, |_| {});
    c.run(5);
    c.down.insert(NodeId(4));
    let timing = c.config.swim;
    c.run(timing.probe_ticks * 8 + timing.suspect_ticks);
    for n in [1, 2, 3, 5] {
        assert_eq!(
            c.node(n).engine.swim().state(NodeId(4)),
            MemberState::Dead,
            "n{n}"
        );
    }
    c.down.clear();
    c.run(timing.probe_ticks * 10);
    for n in [1, 2, 3, 5] {
        assert_eq!(
            c.node(n).engine.swim().state(NodeId(4)),
            MemberState::Alive,
            "n{n}"
        );
    }
    assert!(c.node(4).engine.swim().incarnation() > 0, "it refuted");
}

#[test]
fn swim_ignores_news_older_than_what_it_holds() {
    let mut c = Cluster::new(3, |_| {});
    let news = |state, incarnation| Message::Ping {
        seq: 1,
        clock: 0,
        synced: true,
        epoch: 0,
        listed: true,
        updates: vec![Update {
            member: NodeId(3),
            state,
            incarnation,
        }],
    };
    c.step(
        NodeId(1),
        Input::Receive {
            from: NodeId(2),
            message: news(MemberState::Alive, 4),
        },
    );
    c.step(
        NodeId(1),
        Input::Receive {
            from: NodeId(2),
            message: news(MemberState::Suspect, 3),
        },
    );
    assert_eq!(c.node(1).engine.swim().state(NodeId(3)), MemberState::Alive);
    c.step(
        NodeId(1),
        Input::Receive {
            from: NodeId(2),
            message: news(MemberState::Suspect, 4),
        },
    );
    assert_eq!(
        c.node(1).engine.swim().state(NodeId(3)),
        MemberState::Suspect
    );
    c.step(
        NodeId(1),
        Input::Receive {
            from: NodeId(2),
            message: news(MemberState::Alive, 4),
        },
    );
    assert_eq!(
        c.node(1).engine.swim().state(NodeId(3)),
        MemberState::Suspect
    );
    c.step(
        NodeId(1),
        Input::Receive {
            from: NodeId(2),
            message: news(MemberState::Alive, 5),
        },
    );
    assert_eq!(c.node(1).engine.swim().state(NodeId(3)), MemberState::Alive);
}

#[test]
fn a_member_that_was_down_gets_its_hints_when_it_answers_again() {
    let mut c = Cluster::new(3, |config| config.bugs.no_anti_entropy = true);
    c.run(5);
    c.down.insert(NodeId(3));
    let timing = c.config.swim;
    c.run(timing.probe_ticks * 6 + timing.suspect_ticks);
    assert_eq!(c.node(1).engine.swim().state(NodeId(3)), MemberState::Dead);
    c.put(1, "k", "v");
    assert_eq!(c.node(1).engine.hints_for(NodeId(3)), 1);
    c.run(30); // rumors die out meanwhile
    c.down.clear();
    c.run(timing.probe_ticks * 6);
    assert_eq!(c.value(3, "k"), b("v"), "handed off without anti-entropy");
    assert_eq!(c.node(1).engine.hints_for(NodeId(3)), 0);
}

#[test]
fn a_restart_keeps_every_version_and_applies_it_again() {
    let mut c = Cluster::new(3, |_| {});
    // Enough data that the journal gets restated as a hard state on the way.
    let big = "x".repeat(4096);
    for i in 0..400 {
        c.put(1 + i % 3, &format!("k{i}"), &big);
    }
    c.put(2, "last", "v");
    c.run(40);
    assert!(c.converged());
    assert!(c.node(1).hard_state.is_some(), "restated");
    let before = c.node(1).engine.store().newest();
    c.crash_and_restart(1);
    c.run(1);
    assert!(
        c.converged(),
        "the state machine was rebuilt from the engine's disk"
    );
    // A new write on the restarted node is newer than anything it had seen.
    c.put(1, "last", "after");
    let now = c.node(1).engine.store().get(b"last").expect("held").version;
    assert!(now > before);
}

#[test]
fn what_needs_consensus_is_refused_with_the_reason() {
    let mut c = Cluster::new(3, |_| {});
    let txn = c.write(1, Request::Txn(TxnRequest::default()));
    let mut leased = PutRequest {
        key: Bytes::from("k"),
        value: Bytes::from("v"),
        lease: 7,
        ..PutRequest::default()
    };
    let lease = c.write(1, Request::Put(leased.clone()));
    leased.lease = 0;
    leased.ignore_value = true;
    let keep = c.write(1, Request::Put(leased));
    let rejected = &c.node(1).rejected;
    assert_eq!(rejected.len(), 3);
    for (id, (rid, reason)) in [txn, lease, keep].iter().zip(rejected) {
        assert_eq!(id, rid);
        assert!(
            matches!(reason, Rejection::Unsupported(why) if why.contains("consensus") || why.contains("clock"))
        );
    }
    assert_eq!(c.value(1, "k"), None);
}

#[test]
fn messages_round_trip_and_garbage_never_panics() {
    let record = Record {
        key: Bytes::from("k"),
        version: Version::new(9 << 16, NodeId(3)),
        value: Some(Bytes::from("v")),
    };
    let tombstone = Record {
        value: None,
        ..record.clone()
    };
    let update = Update {
        member: NodeId(2),
        state: MemberState::Suspect,
        incarnation: 4,
    };
    let mut membership = synod_core::Membership::of_voters(&[NodeId(1), NodeId(2)]);
    membership.members[1].learner = true;
    membership.members[0].peer_urls = vec!["http://a:1".to_string()];
    let candidate = crate::message::Candidate {
        ballot: 4 << 12 | 1,
        id: RequestId::new(9, 2),
        membership,
    };
    let messages = vec![
        Message::Ping {
            seq: 1,
            clock: 9,
            synced: true,
            epoch: 3,
            listed: true,
            updates: vec![update],
        },
        Message::Ack {
            seq: 2,
            clock: 10,
            synced: false,
            epoch: 0,
            listed: true,
            updates: vec![],
        },
        Message::PingReq {
            seq: 3,
            target: NodeId(5),
            updates: vec![update, update],
        },
        Message::Push {
            records: vec![record.clone(), tombstone.clone()],
            ack: Some(7),
        },
        Message::Push {
            records: vec![],
            ack: None,
        },
        Message::PushAck { round: 7 },
        Message::Digest {
            digests: (0..crate::store::BUCKETS as u64).collect(),
        },
        Message::Keys {
            buckets: vec![(3, vec![(Bytes::from("k"), record.version)])],
        },
        Message::Pull {
            keys: vec![Bytes::from("k")],
        },
        Message::ReadQuery {
            round: 4,
            span: KeySpan::all(),
        },
        Message::ReadReply {
            round: 4,
            records: vec![tombstone],
            truncated: true,
        },
        Message::Prepare {
            epoch: 2,
            ballot: 5 << 12 | 3,
            nonce: 0,
        },
        Message::Promise {
            epoch: 2,
            ballot: 0,
            nonce: 77,
            accepted: None,
        },
        Message::Promise {
            epoch: 2,
            ballot: 5 << 12 | 3,
            nonce: 0,
            accepted: Some(candidate.clone()),
        },
        Message::Accept {
            epoch: 2,
            candidate: candidate.clone(),
        },
        Message::Accepted {
            epoch: 2,
            ballot: 4 << 12 | 1,
            id: candidate.id,
        },
        Message::Outbid {
            epoch: 2,
            refused: 0,
            nonce: 77,
            promised: 6 << 12 | 2,
        },
        Message::Held {
            buckets: vec![0, 7, 255],
        },
        Message::Agreed {
            epoch: 3,
            id: candidate.id,
            membership: candidate.membership.clone(),
        },
    ];
    let mut samples = Vec::new();
    for message in &messages {
        conformance::round_trip(message);
        samples.push(synod_core::Wire::to_bytes(message));
    }
    conformance::garbage_never_panics::<Message>(&samples, 20_000);
}

#[test]
fn a_member_that_starts_with_nothing_holds_writes_until_it_has_seen_a_peers_clock() {
    let mut c = Cluster::new(3, |_| {});
    c.put(1, "k", "old");
    c.run(5);
    // n1 loses its disk: its clock starts again from nothing, below its own old version.
    c.lose_disk(1);
    let id = c.put(1, "k", "new");
    assert!(
        c.node(1).acked.is_empty() && c.node(1).rejected.is_empty(),
        "held"
    );
    c.run(c.config.swim.probe_ticks * 2);
    assert!(
        c.node(1).acked.contains(&id),
        "taken once a peer's clock was seen"
    );
    c.run(20);
    assert!(c.converged());
    assert_eq!(
        c.value(2, "k"),
        b("new"),
        "above the version of its earlier life"
    );
}

#[test]
fn old_versions_and_unsynced_peers_do_not_sync_a_member_that_lost_its_disk() {
    // Five members: one other that holds nothing is not yet a majority of empty ones.
    let mut c = Cluster::new(5, |_| {});
    c.put(2, "k", "old");
    c.run(5);
    let old = c
        .node(2)
        .engine
        .store()
        .record(&Bytes::from("k"))
        .expect("held");
    c.lose_disk(1);
    // An old version arriving (anti-entropy, a read reply) says nothing of the newest
    // version this member issued before; nor does a peer that holds nothing either.
    let push = Message::Push {
        records: vec![old],
        ack: None,
    };
    c.step(
        NodeId(1),
        Input::Receive {
            from: NodeId(2),
            message: push,
        },
    );
    let unsynced = Message::Ping {
        seq: 1,
        clock: 0,
        synced: false,
        epoch: 0,
        listed: true,
        updates: vec![],
    };
    c.queue.clear();
    c.step(
        NodeId(1),
        Input::Receive {
            from: NodeId(3),
            message: unsynced,
        },
    );
    let id = c.put(1, "j", "v");
    assert!(c.node(1).acked.is_empty(), "held");
    // A synced peer's probe releases it.
    c.run(c.config.swim.probe_ticks * 2);
    assert!(c.node(1).acked.contains(&id));
}

#[test]
fn a_new_cluster_syncs_on_a_majority_that_holds_nothing() {
    // Every member starts empty; none has a synced peer, and still they take writes once a
    // majority has met.
    let mut c = Cluster::new(5, |_| {});
    let id = c.put(4, "k", "v");
    assert_eq!(c.node(4).acked, vec![id]);
}

#[test]
fn a_corrupt_journal_is_refused_at_boot() {
    let c = Cluster::new(3, |_| {});
    let mut config = c.config.clone();
    config.id = NodeId(1);
    let err =
        Gossip::restart(config, 1, None, &[vec![0xff, 0x01]], 0).expect_err("garbage on disk");
    assert!(err.to_string().contains("does not decode"), "{err}");
}
