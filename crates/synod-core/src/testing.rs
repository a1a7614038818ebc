//! A few engines wired together, for engine tests: every message is delivered at once (in
//! order, unless a node is cut off), every persist is durable at once, and what each node
//! applies and refuses is recorded. Time moves only when a test says so.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::{
    Action, Engine, Input, MembershipChange, NodeId, Payload, Proposal, Rejection, RequestId,
};

/// Nodes that hear each other at once and persist at once, unless cut off.
pub struct Net<E: Engine> {
    /// The nodes, by id.
    pub nodes: BTreeMap<NodeId, E>,
    /// Messages in flight: sender, receiver, message.
    pub queue: VecDeque<(NodeId, NodeId, E::Message)>,
    /// Nodes that neither send nor receive nor tick.
    pub cut: BTreeSet<NodeId>,
    /// Per node, the sequence numbers of the commands it applied, in order.
    pub applied: BTreeMap<NodeId, Vec<u64>>,
    /// Refusals, by request.
    pub refused: BTreeMap<RequestId, Rejection>,
    seq: u64,
}

impl<E: Engine> Default for Net<E> {
    fn default() -> Self {
        Net {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            refused: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<E: Engine> Net<E> {
    /// Steps node `id` with `input`, then tells it every persist it asked for is durable.
    pub fn step(&mut self, id: NodeId, input: Input<E::Message>) {
        let mut out = Vec::new();
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        node.step(input, &mut out);
        let mut persisted = None;
        for action in out {
            match action {
                Action::Send { to, message } => self.queue.push_back((id, to, message)),
                Action::Persist(p) => persisted = Some(p.id),
                Action::Apply(entry) => {
                    if let Payload::Command(p) = entry.payload {
                        self.applied.entry(id).or_default().push(p.id.seq);
                    }
                }
                Action::Reject { id, reason } => {
                    self.refused.insert(id, reason);
                }
                _ => {}
            }
        }
        if let Some(p) = persisted {
            self.step(id, Input::Persisted(p));
        }
    }

    /// Delivers what is in flight (and what that sends), then ticks every node that is not
    /// cut off; `ticks` times.
    pub fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            while let Some((from, to, message)) = self.queue.pop_front() {
                if !self.cut.contains(&from) && !self.cut.contains(&to) {
                    self.step(to, Input::Receive { from, message });
                }
            }
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                if !self.cut.contains(&id) {
                    self.step(id, Input::Tick);
                }
            }
        }
    }

    /// Proposes a command at `at`; returns its sequence number, as `applied` records it.
    pub fn write(&mut self, at: NodeId) -> u64 {
        self.seq += 1;
        let proposal = Proposal {
            id: RequestId::new(1, self.seq),
            command: Bytes::from_static(b"w"),
        };
        self.step(at, Input::Propose(vec![proposal]));
        self.seq
    }

    /// Asks `at` for a membership change; returns the request's id, as `refused` records it.
    pub fn change(&mut self, at: NodeId, change: MembershipChange) -> RequestId {
        self.seq += 1;
        let id = RequestId::new(2, self.seq);
        self.step(at, Input::ChangeMembership { id, change });
        id
    }

    /// The commands node `id` applied.
    pub fn applied(&self, id: u64) -> &[u64] {
        self.applied.get(&NodeId(id)).map_or(&[], Vec::as_slice)
    }
}

/// An operator's change that adds a member at `peer`.
pub fn add(peer: &str, learner: bool) -> MembershipChange {
    MembershipChange::Add {
        peer_urls: vec![peer.to_string()],
        learner,
    }
}
