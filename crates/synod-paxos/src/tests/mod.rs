//! Tests of the Paxos engines. Each test names the part of "Paxos Made Simple" it defends:
//! the requirements P1, P1a, P2, P2a, P2b, P2c (section 2.2), learning (2.3), progress (2.4),
//! the implementation (2.5) and the state machine (3).

mod basic;
mod membership;
mod multi;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use synod_core::{
    Action, Engine, Entry, Input, LogIndex, NodeId, Persist, Proposal, RequestId, Snapshot,
};

use crate::{Config, Message, RestartError};

pub(crate) fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

pub(crate) fn proposal(client: u64, seq: u64) -> Proposal {
    Proposal {
        id: RequestId::new(client, seq),
        command: Bytes::from(format!("cmd-{client}-{seq}")),
    }
}

/// What one node persisted.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub(crate) hard_state: Option<Vec<u8>>,
    pub(crate) journal: Vec<Vec<u8>>,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    /// Bytes of hard state and journal written, in all.
    pub(crate) state_bytes_written: usize,
}

impl Disk {
    fn apply(&mut self, p: Persist) {
        if let Some(s) = p.snapshot {
            self.entries.retain(|e| e.index > s.meta.index);
            self.snapshot = Some(s);
        }
        self.state_bytes_written += p.hard_state.as_ref().map_or(0, Vec::len)
            + p.journal.iter().map(Vec::len).sum::<usize>();
        if let Some(h) = p.hard_state {
            self.hard_state = Some(h);
            self.journal.clear();
        }
        self.journal.extend(p.journal);
        self.entries.extend(p.entries);
    }
}

/// The two engines, as the harness needs them.
pub(crate) trait TestEngine: Engine<Message = Message> + Sized {
    fn boot(config: Config, disk: &Disk) -> Result<Self, RestartError>;
}

impl TestEngine for crate::BasicPaxos {
    fn boot(config: Config, disk: &Disk) -> Result<Self, RestartError> {
        Self::restart(
            config,
            disk.hard_state.as_deref(),
            &disk.journal,
            disk.snapshot.clone(),
            disk.entries.clone(),
        )
    }
}

impl TestEngine for crate::MultiPaxos {
    fn boot(config: Config, disk: &Disk) -> Result<Self, RestartError> {
        Self::restart(
            config,
            disk.hard_state.as_deref(),
            &disk.journal,
            disk.snapshot.clone(),
            disk.entries.clone(),
        )
    }
}

pub(crate) type DropRule = Box<dyn Fn(NodeId, NodeId, &Message) -> bool>;

/// A cluster with instant disks and a message queue the test drives.
pub(crate) struct Cluster<E: TestEngine> {
    pub(crate) nodes: BTreeMap<NodeId, E>,
    configs: BTreeMap<NodeId, Config>,
    pub(crate) disks: BTreeMap<NodeId, Disk>,
    pub(crate) queue: VecDeque<(NodeId, NodeId, Message)>,
    pub(crate) down: BTreeSet<NodeId>,
    pub(crate) drop_if: Option<DropRule>,
    /// Per node since it last started: entries applied.
    pub(crate) applied: BTreeMap<NodeId, Vec<Entry>>,
    first_applied: BTreeMap<LogIndex, Entry>,
    pub(crate) safety_violation: Option<String>,
    pub(crate) reads_ready: BTreeMap<NodeId, Vec<RequestId>>,
    pub(crate) sent: Vec<(NodeId, NodeId, Message)>,
    /// Requests each node refused.
    pub(crate) rejected: Vec<(NodeId, RequestId)>,
}

impl<E: TestEngine> Cluster<E> {
    pub(crate) fn new(n: u64, tweak: impl Fn(&mut Config)) -> Cluster<E> {
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
            sent: Vec::new(),
            rejected: Vec::new(),
        };
        for id in ids(n) {
            let mut c = Config::new(id, ids(n));
            tweak(&mut c);
            cluster
                .nodes
                .insert(id, E::boot(c.clone(), &Disk::default()).unwrap());
            cluster.configs.insert(id, c);
            cluster.disks.insert(id, Disk::default());
        }
        cluster
    }

    /// Boots node `id` with no voters: it joins the running cluster once a membership change
    /// adds it.
    pub(crate) fn join(&mut self, id: u64, tweak: impl Fn(&mut Config)) {
        let node = NodeId(id);
        let mut c = Config::new(node, Vec::new());
        tweak(&mut c);
        self.nodes
            .insert(node, E::boot(c.clone(), &Disk::default()).unwrap());
        self.configs.insert(node, c);
        self.disks.insert(node, Disk::default());
    }

    pub(crate) fn node(&self, id: u64) -> &E {
        &self.nodes[&NodeId(id)]
    }

    pub(crate) fn step(&mut self, id: NodeId, input: Input<Message>) {
        self.step_returning(id, input);
    }

    /// Steps node `id` and carries out what it asked for, as [`Cluster::step`]; returns the
    /// actions, for a test that looks at them (a refusal's reason, say).
    pub(crate) fn step_returning(
        &mut self,
        id: NodeId,
        input: Input<Message>,
    ) -> Vec<Action<Message>> {
        if self.down.contains(&id) {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.nodes.get_mut(&id).unwrap().step(input, &mut out);
        let actions = out.clone();
        let mut persisted = None;
        for action in out {
            match action {
                Action::Persist(p) => {
                    persisted = Some(p.id);
                    self.disks.get_mut(&id).unwrap().apply(p);
                }
                Action::Send { to, message } => {
                    self.sent.push((id, to, message.clone()));
                    self.queue.push_back((id, to, message));
                }
                Action::Apply(entry) => self.record_apply(id, entry),
                Action::Restore(_) => {}
                Action::ReadReady(r) => self.reads_ready.entry(id).or_default().push(r),
                Action::Acknowledge(_) => panic!("only engines without ordered writes acknowledge"),
                Action::Reject { id: request, .. } => self.rejected.push((id, request)),
            }
        }
        if let Some(p) = persisted {
            self.step(id, Input::Persisted(p));
        }
        actions
    }

    fn record_apply(&mut self, id: NodeId, entry: Entry) {
        self.applied.entry(id).or_default().push(entry.clone());
        match self.first_applied.get(&entry.index) {
            None => {
                self.first_applied.insert(entry.index, entry);
            }
            Some(first) if first.payload != entry.payload && self.safety_violation.is_none() => {
                self.safety_violation =
                    Some(format!("{id} applied {entry} where {first} was applied"));
            }
            Some(_) => {}
        }
    }

    pub(crate) fn deliver_all(&mut self) {
        let mut budget = 200_000;
        while let Some((from, to, message)) = self.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "messages never settle");
            let dropped = self.down.contains(&to)
                || self.down.contains(&from)
                || self.drop_if.as_ref().is_some_and(|f| f(from, to, &message));
            if !dropped {
                self.step(to, Input::Receive { from, message });
            }
        }
    }

    /// Ticks every live node once, then delivers; `n` times.
    pub(crate) fn tick_all(&mut self, n: u64) {
        for _ in 0..n {
            for id in self.nodes.keys().copied().collect::<Vec<_>>() {
                self.step(id, Input::Tick);
            }
            self.deliver_all();
        }
    }

    pub(crate) fn propose(&mut self, id: u64, proposals: Vec<Proposal>) {
        self.step(NodeId(id), Input::Propose(proposals));
        self.deliver_all();
    }

    pub(crate) fn crash(&mut self, id: u64) {
        self.down.insert(NodeId(id));
    }

    pub(crate) fn restart(&mut self, id: u64) {
        let node = NodeId(id);
        let engine = E::boot(self.configs[&node].clone(), &self.disks[&node]).unwrap();
        self.nodes.insert(node, engine);
        self.applied.remove(&node);
        self.down.remove(&node);
    }

    /// The commands each node applied, in order, as (slot, client request).
    pub(crate) fn commands(&self, id: u64) -> Vec<(LogIndex, RequestId)> {
        self.applied.get(&NodeId(id)).map_or(vec![], |l| {
            l.iter()
                .filter_map(|e| e.proposal().map(|p| (e.index, p.id)))
                .collect()
        })
    }

    pub(crate) fn count_sent(&self, pick: impl Fn(&Message) -> bool) -> usize {
        self.sent.iter().filter(|(_, _, m)| pick(m)).count()
    }
}

pub(crate) fn step<E: Engine<Message = Message>>(
    engine: &mut E,
    input: Input<Message>,
) -> Vec<Action<Message>> {
    let mut out = Vec::new();
    engine.step(input, &mut out);
    out
}
