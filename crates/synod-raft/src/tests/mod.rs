//! Tests of the Raft engine. Each test states one claim of the Raft paper (sections 5.x, 8)
//! or of Ongaro's thesis (sections written t3.10, t6.4, ...) and checks it, either on exact
//! action lists or on a small cluster whose message delivery the test controls.

mod election;
mod exact;
mod membership;
mod reads;
mod replication;
mod restart;
mod snapshot;
mod transfer;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use synod_core::{
    Action, Engine, Entry, Input, LogIndex, NodeId, Proposal, ReadConsistency, ReadRequest,
    Rejection, RequestId, Role,
};

use crate::{Config, Message, Raft};

/// Node ids 1..=n.
pub(crate) fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

/// Default settings for node `id` of an `n`-node cluster.
pub(crate) fn config(id: u64, n: u64) -> Config {
    Config::new(NodeId(id), ids(n))
}

pub(crate) fn proposal(client: u64, seq: u64) -> Proposal {
    Proposal {
        id: RequestId::new(client, seq),
        command: Bytes::from(format!("cmd-{client}-{seq}")),
    }
}

pub(crate) fn step(raft: &mut Raft, input: Input<Message>) -> Vec<Action<Message>> {
    let mut out = Vec::new();
    raft.step(input, &mut out);
    out
}

/// Delivers `message` from node `from` to `raft`.
pub(crate) fn receive(raft: &mut Raft, from: u64, message: Message) -> Vec<Action<Message>> {
    step(
        raft,
        Input::Receive {
            from: NodeId(from),
            message,
        },
    )
}

/// An AppendEntries of `term` with no entries, at the start of the log.
pub(crate) fn empty_append(term: u64) -> Message {
    Message::AppendEntries(crate::AppendEntries {
        term,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![],
        leader_commit: 0,
    })
}

/// A vote answer.
pub(crate) fn vote(term: u64, granted: bool) -> Message {
    Message::RequestVoteResponse(crate::VoteResponse { term, granted })
}

pub(crate) fn ticks(raft: &mut Raft, n: u64) -> Vec<Action<Message>> {
    (0..n).flat_map(|_| step(raft, Input::Tick)).collect()
}

/// Decides, per (from, to, message), whether a message is lost.
pub(crate) type DropRule = Box<dyn Fn(NodeId, NodeId, &Message) -> bool>;

/// What one node persisted: survives a crash.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub(crate) hard_state: Option<Vec<u8>>,
    pub(crate) snapshot: Option<synod_core::Snapshot>,
    /// The log after the snapshot.
    pub(crate) entries: Vec<Entry>,
}

impl Disk {
    fn apply(&mut self, p: synod_core::Persist) {
        if let Some(snapshot) = p.snapshot {
            self.entries.retain(|e| e.index > snapshot.meta.index);
            self.snapshot = Some(snapshot);
        }
        if let Some(hs) = p.hard_state {
            self.hard_state = Some(hs);
        }
        if let Some(from) = p.truncate_from {
            self.entries.retain(|e| e.index < from);
        }
        self.entries.extend(p.entries);
    }
}

/// A cluster of Raft nodes with instant disks and a message queue the test drives.
pub(crate) struct Cluster {
    pub(crate) nodes: BTreeMap<NodeId, Raft>,
    configs: BTreeMap<NodeId, Config>,
    pub(crate) disks: BTreeMap<NodeId, Disk>,
    pub(crate) queue: VecDeque<(NodeId, NodeId, Message)>,
    pub(crate) down: BTreeSet<NodeId>,
    /// Messages for which this returns true are dropped at delivery.
    pub(crate) drop_if: Option<DropRule>,
    /// Per node since it last (re)started: the index its state machine was restored to from
    /// a snapshot (0 if none), and the entries it applied after that.
    pub(crate) applied: BTreeMap<NodeId, (LogIndex, Vec<Entry>)>,
    /// The first entry anyone applied at each index, for state machine safety.
    first_applied: BTreeMap<LogIndex, (NodeId, Entry)>,
    /// The first time two nodes applied different entries at one index.
    pub(crate) safety_violation: Option<String>,
    pub(crate) reads_ready: BTreeMap<NodeId, Vec<RequestId>>,
    pub(crate) rejected: BTreeMap<NodeId, Vec<(RequestId, Rejection)>>,
    pub(crate) delivered: usize,
    /// Every message sent, in order, lost or not.
    pub(crate) sent: Vec<(NodeId, NodeId, Message)>,
}

impl Cluster {
    /// `n` fresh nodes; `tweak` adjusts every node's config.
    pub(crate) fn new(n: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            disks: BTreeMap::new(),
            queue: VecDeque::new(),
            down: BTreeSet::new(),
            drop_if: None,
            applied: BTreeMap::new(),
            first_applied: BTreeMap::new(),
            safety_violation: None,
            reads_ready: BTreeMap::new(),
            rejected: BTreeMap::new(),
            delivered: 0,
            sent: Vec::new(),
        };
        for id in ids(n) {
            let mut c = config(id.0, n);
            tweak(&mut c);
            cluster.nodes.insert(id, Raft::new(c.clone()).unwrap());
            cluster.configs.insert(id, c);
            cluster.disks.insert(id, Disk::default());
        }
        cluster
    }

    /// Starts node `id` knowing no membership, as a server started to join a running
    /// cluster does.
    pub(crate) fn join(&mut self, id: u64) {
        let mut c = Config::new(NodeId(id), vec![]);
        c.seed = id;
        self.nodes.insert(NodeId(id), Raft::new(c.clone()).unwrap());
        self.configs.insert(NodeId(id), c);
        self.disks.insert(NodeId(id), Disk::default());
    }

    /// Asks node `at` for a membership change and delivers what follows.
    pub(crate) fn change(&mut self, at: u64, seq: u64, change: synod_core::MembershipChange) {
        let id = RequestId::new(7_000, seq);
        self.step(NodeId(at), Input::ChangeMembership { id, change });
        self.deliver_all();
    }

    pub(crate) fn node(&self, id: u64) -> &Raft {
        &self.nodes[&NodeId(id)]
    }

    /// Feeds one input to a live node and carries out its actions.
    pub(crate) fn step(&mut self, id: NodeId, input: Input<Message>) {
        if self.down.contains(&id) {
            return;
        }
        let mut out = Vec::new();
        self.nodes.get_mut(&id).unwrap().step(input, &mut out);
        let mut persisted = None;
        for action in out {
            match action {
                Action::Persist(p) => {
                    persisted = Some(p.id);
                    self.disks.get_mut(&id).unwrap().apply(p);
                }
                Action::Restore(snapshot) => {
                    self.applied.insert(id, (snapshot.meta.index, Vec::new()));
                }
                Action::Send { to, message } => {
                    self.sent.push((id, to, message.clone()));
                    self.queue.push_back((id, to, message));
                }
                Action::Apply(entry) => self.record_apply(id, entry),
                Action::ReadReady(r) => self.reads_ready.entry(id).or_default().push(r),
                Action::Acknowledge(_) => panic!("only engines without ordered writes acknowledge"),
                Action::Reject { id: r, reason } => {
                    self.rejected.entry(id).or_default().push((r, reason))
                }
            }
        }
        // This disk is instant: everything is durable as soon as it is asked for.
        if let Some(p) = persisted {
            self.step(id, Input::Persisted(p));
        }
    }

    fn record_apply(&mut self, id: NodeId, entry: Entry) {
        let (base, list) = self.applied.entry(id).or_default();
        assert_eq!(
            entry.index,
            *base + list.len() as u64 + 1,
            "{id} applies in order"
        );
        list.push(entry.clone());
        match self.first_applied.get(&entry.index) {
            None => {
                self.first_applied.insert(entry.index, (id, entry));
            }
            Some((first, e)) if *e != entry && self.safety_violation.is_none() => {
                self.safety_violation = Some(format!(
                    "{first} applied {e} but {id} applied {entry} at index {}",
                    entry.index
                ));
            }
            Some(_) => {}
        }
    }

    /// Delivers queued messages (and those they cause) until none are left.
    pub(crate) fn deliver_all(&mut self) {
        while let Some((from, to, message)) = self.queue.pop_front() {
            let dropped = self.down.contains(&to)
                || self.down.contains(&from)
                || self.drop_if.as_ref().is_some_and(|f| f(from, to, &message));
            if !dropped {
                self.delivered += 1;
                self.step(to, Input::Receive { from, message });
            }
        }
    }

    /// Ticks one node `n` times, delivering what follows each tick.
    pub(crate) fn tick(&mut self, id: u64, n: u64) {
        for _ in 0..n {
            self.step(NodeId(id), Input::Tick);
            self.deliver_all();
        }
    }

    /// Ticks every live node once, in id order, then delivers.
    pub(crate) fn tick_all(&mut self, n: u64) {
        for _ in 0..n {
            for id in self.nodes.keys().copied().collect::<Vec<_>>() {
                self.step(id, Input::Tick);
            }
            self.deliver_all();
        }
    }

    /// Ticks `id` alone until it starts an election (a new one, if it is already a
    /// candidate), then lets the election play out.
    pub(crate) fn campaign(&mut self, id: u64) {
        let node = NodeId(id);
        let asks_for_votes = |(from, _, m): &(NodeId, NodeId, Message)| {
            *from == node && matches!(m, Message::PreVote(_) | Message::RequestVote(_))
        };
        for _ in 0..1000 {
            // Only this node's clock runs; what others would say meanwhile is not sent.
            self.queue.clear();
            self.step(node, Input::Tick);
            if self.queue.iter().any(asks_for_votes) || self.nodes[&node].role == Role::Leader {
                break;
            }
        }
        self.deliver_all();
    }

    /// Makes `id` leader: it campaigns until it wins.
    pub(crate) fn elect(&mut self, id: u64) {
        for _ in 0..10 {
            self.campaign(id);
            if self.node(id).role == Role::Leader {
                return;
            }
        }
        panic!("n{id} could not get elected");
    }

    /// The node every live node follows, if they agree on one.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        let leaders: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, r)| !self.down.contains(id) && r.role == Role::Leader)
            .map(|(&id, _)| id)
            .collect();
        (leaders.len() == 1).then(|| *leaders.iter().next().unwrap())
    }

    pub(crate) fn propose(&mut self, id: u64, proposals: Vec<Proposal>) {
        self.step(NodeId(id), Input::Propose(proposals));
        self.deliver_all();
    }

    pub(crate) fn read(&mut self, id: u64, request: RequestId, consistency: ReadConsistency) {
        self.step(
            NodeId(id),
            Input::Read(vec![ReadRequest {
                id: request,
                consistency,
                keys: None,
            }]),
        );
    }

    /// Stops a node: its volatile state is gone, its disk stays.
    pub(crate) fn crash(&mut self, id: u64) {
        self.down.insert(NodeId(id));
    }

    /// Starts a crashed node again from its disk. Its state machine restarts empty.
    pub(crate) fn restart(&mut self, id: u64) {
        let node = NodeId(id);
        let disk = self.disks[&node].clone();
        let restored = disk.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let raft = Raft::restart(
            self.configs[&node].clone(),
            disk.hard_state.as_deref(),
            disk.snapshot,
            disk.entries,
        )
        .unwrap();
        self.nodes.insert(node, raft);
        self.applied.insert(node, (restored, Vec::new()));
        self.down.remove(&node);
    }

    /// The node snapshots everything it applied, as a runtime would: the snapshot goes to
    /// its disk, the disk's log is compacted, and the engine is told.
    pub(crate) fn snapshot(&mut self, id: u64) {
        let node = NodeId(id);
        let raft = &self.nodes[&node];
        let index = raft.applied_index;
        let meta = synod_core::SnapshotMeta {
            index,
            era: raft.log.era(index).unwrap(),
        };
        // As the runtime does: the membership as of the snapshot is saved with it.
        let snapshot = synod_core::Snapshot {
            membership: Engine::membership_at(raft, index),
            meta,
            data: Bytes::from(format!("state of n{id} through {index}")),
        };
        let disk = self.disks.get_mut(&node).unwrap();
        disk.entries.retain(|e| e.index > index);
        disk.snapshot = Some(snapshot.clone());
        self.step(node, Input::Snapshotted(snapshot));
    }

    /// Sets a node's persisted state as if it had run before (used to stage paper figures).
    pub(crate) fn stage(
        &mut self,
        id: u64,
        term: u64,
        voted_for: Option<u64>,
        entry_terms: &[u64],
    ) {
        let node = NodeId(id);
        let entries: Vec<Entry> = entry_terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry {
                index: i as u64 + 1,
                era: t,
                payload: synod_core::Payload::Command(proposal(100 + t, i as u64 + 1)),
            })
            .collect();
        let hard_state = crate::encode_hard_state(term, voted_for.map(NodeId));
        self.disks.insert(
            node,
            Disk {
                snapshot: None,
                hard_state: Some(hard_state),
                entries,
            },
        );
        self.restart(id);
    }

    /// Every index the node's state machine reflects: restored from a snapshot, then applied.
    pub(crate) fn applied_indexes(&self, id: u64) -> Vec<LogIndex> {
        self.applied
            .get(&NodeId(id))
            .map_or(vec![], |(base, list)| {
                (1..=*base).chain(list.iter().map(|e| e.index)).collect()
            })
    }

    pub(crate) fn terms(&self, id: u64) -> Vec<u64> {
        self.node(id).log.entries().iter().map(|e| e.era).collect()
    }
}

/// The messages in an action list, as (to, message).
pub(crate) fn sends(actions: &[Action<Message>]) -> Vec<(NodeId, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, message } => Some((*to, message.clone())),
            _ => None,
        })
        .collect()
}
