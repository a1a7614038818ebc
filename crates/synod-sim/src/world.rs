//! The simulated world: one event queue in virtual time, the nodes with their disks and state
//! machines, the network and the clients. Everything random comes from PRNGs forked from the
//! run's seed, and ties in time are broken by insertion order, so a seed replays exactly.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use bytes::Bytes;
use synod_check::{History, KvInput, KvOutput};
use synod_core::{
    Action, Entry, Input, NodeId, Payload, Persist, PersistId, Rejection, RequestId, Rng, Role,
    Status,
};
use synod_kv::{Applied, KvError, KvStore, RangeRequest, Request};

use crate::client::Client;
use crate::network::Network;
use crate::protocol::{Durable, Invariants, Protocol};
use crate::report::{Stats, Violation, ViolationKind};
use crate::run::RunConfig;
use crate::trace::Trace;
use crate::{SimTime, TICK_US};

/// What a client sends a node.
#[derive(Clone, Debug)]
pub(crate) enum ClientRequest {
    /// A command for the log.
    Write(RequestId, Request),
    /// A linearizable read of one key.
    Read(RequestId, Bytes),
}

/// What a node answers a client.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    /// The command or read ran, with this result.
    Done(Result<Applied, KvError>),
    /// Not the leader; try the hinted node.
    Redirect(Option<NodeId>),
}

/// Something that happens at a point in virtual time.
pub(crate) enum Event<M> {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Message {
        from: NodeId,
        to: NodeId,
        message: M,
    },
    DiskDone {
        node: NodeId,
        incarnation: u64,
        id: PersistId,
    },
    ToNode {
        node: NodeId,
        client: u64,
        request: ClientRequest,
    },
    ToClient {
        client: u64,
        from: NodeId,
        id: RequestId,
        reply: Reply,
    },
    ClientNext {
        client: u64,
    },
    ClientSend {
        client: u64,
        seq: u64,
    },
    ClientTimeout {
        client: u64,
        seq: u64,
        attempt: u32,
    },
    Nemesis,
    Restart {
        node: NodeId,
    },
    Audit,
}

struct Scheduled<M> {
    at: SimTime,
    order: u64,
    event: Event<M>,
}

impl<M> PartialEq for Scheduled<M> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl<M> Eq for Scheduled<M> {}
impl<M> PartialOrd for Scheduled<M> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<M> Ord for Scheduled<M> {
    /// Reversed, so the standard max-heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// One simulated server: an engine while up, and what survives it when down.
pub(crate) struct SimNode<P: Protocol> {
    pub(crate) id: NodeId,
    pub(crate) engine: Option<P>,
    /// Bumped at every crash; events of an earlier life are ignored.
    pub(crate) incarnation: u64,
    pub(crate) kv: KvStore,
    pub(crate) durable: Durable,
    /// Persists submitted to the disk and not yet complete, oldest first.
    disk_queue: VecDeque<Persist>,
    disk_busy_until: SimTime,
    last_issued: u64,
    last_durable: u64,
    /// Sends waiting for a persist: (persist that must complete first, to, message).
    held: VecDeque<(u64, NodeId, P::Message)>,
    pub(crate) waiting_writes: HashMap<RequestId, u64>,
    pub(crate) waiting_reads: HashMap<RequestId, (u64, Bytes)>,
    pub(crate) tick_us: SimTime,
    pub(crate) status: Option<Status>,
}

/// Checks that hold for every protocol: one leader per era, one entry per applied index.
pub(crate) struct Safety<P: Protocol> {
    pub(crate) leaders: BTreeMap<u64, NodeId>,
    /// The first entry applied anywhere at each index (index 1 at position 0).
    pub(crate) applied: Vec<Entry>,
    pub(crate) protocol: P::Invariants,
}

/// The whole simulation.
pub struct World<P: Protocol> {
    pub(crate) config: RunConfig,
    pub(crate) options: P::Options,
    pub(crate) now: SimTime,
    next_order: u64,
    queue: BinaryHeap<Scheduled<P::Message>>,
    pub(crate) net_rng: Rng,
    pub(crate) disk_rng: Rng,
    pub(crate) nemesis_rng: Rng,
    pub(crate) voters: Vec<NodeId>,
    pub(crate) nodes: Vec<SimNode<P>>,
    pub(crate) clients: Vec<Client>,
    pub(crate) history: History<KvInput, KvOutput>,
    pub(crate) network: Network,
    pub(crate) safety: Safety<P>,
    pub(crate) stats: Stats,
    pub(crate) trace: Trace,
    pub(crate) violation: Option<Violation>,
    /// When the network healed and every node was restarted, if it has.
    pub(crate) healed_at: Option<SimTime>,
    /// Whether faults are being injected (the safety phase).
    pub(crate) nemesis_on: bool,
    scratch: Vec<Action<P::Message>>,
}

impl<P: Protocol> World<P> {
    /// A world with every node booted from an empty disk and no clients yet.
    pub fn new(config: RunConfig, options: P::Options) -> World<P> {
        let mut root = Rng::new(config.seed);
        let mut net_rng = root.fork();
        let disk_rng = root.fork();
        let nemesis_rng = root.fork();
        let mut node_rng = root.fork();
        let network = Network::new(&mut net_rng, config.faults);
        let voters: Vec<NodeId> = (1..=config.nodes as u64).map(NodeId).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let skew = if config.faults.skew {
                    node_rng.unit() * 0.2 - 0.1
                } else {
                    0.0
                };
                SimNode {
                    id,
                    engine: None,
                    incarnation: 0,
                    kv: KvStore::new(),
                    durable: Durable::default(),
                    disk_queue: VecDeque::new(),
                    disk_busy_until: 0,
                    last_issued: 0,
                    last_durable: 0,
                    held: VecDeque::new(),
                    waiting_writes: HashMap::new(),
                    waiting_reads: HashMap::new(),
                    tick_us: (TICK_US as f64 * (1.0 + skew)) as SimTime,
                    status: None,
                }
            })
            .collect();
        let trace = if config.trace {
            Trace::memory()
        } else {
            Trace::Off
        };
        let mut world = World {
            config,
            options,
            now: 0,
            next_order: 0,
            queue: BinaryHeap::new(),
            net_rng,
            disk_rng,
            nemesis_rng,
            voters,
            nodes,
            clients: Vec::new(),
            history: History::new(),
            network,
            safety: Safety {
                leaders: BTreeMap::new(),
                applied: Vec::new(),
                protocol: P::Invariants::default(),
            },
            stats: Stats::default(),
            trace,
            violation: None,
            healed_at: None,
            nemesis_on: false,
            scratch: Vec::new(),
        };
        for id in world.voters.clone() {
            world.boot(id);
        }
        world.schedule(100 * TICK_US, Event::Audit);
        world
    }

    pub(crate) fn schedule(&mut self, delay: SimTime, event: Event<P::Message>) {
        self.next_order += 1;
        self.queue.push(Scheduled {
            at: self.now + delay,
            order: self.next_order,
            event,
        });
    }

    pub(crate) fn node(&self, id: NodeId) -> &SimNode<P> {
        &self.nodes[id.0 as usize - 1]
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut SimNode<P> {
        &mut self.nodes[id.0 as usize - 1]
    }

    /// Runs events until virtual time `until` or the first violation.
    pub fn run_until(&mut self, until: SimTime) {
        while self.violation.is_none() {
            match self.queue.peek() {
                Some(next) if next.at <= until => {}
                _ => break,
            }
            let Some(next) = self.queue.pop() else { break };
            self.now = next.at;
            self.handle(next.event);
        }
        if self.violation.is_none() {
            self.now = self.now.max(until);
        }
    }

    fn handle(&mut self, event: Event<P::Message>) {
        match event {
            Event::Tick { node, incarnation } => self.on_tick(node, incarnation),
            Event::Message { from, to, message } => self.on_message(from, to, message),
            Event::DiskDone {
                node,
                incarnation,
                id,
            } => self.on_disk_done(node, incarnation, id),
            Event::ToNode {
                node,
                client,
                request,
            } => self.on_client_request(node, client, request),
            Event::ToClient {
                client,
                from,
                id,
                reply,
            } => self.on_reply(client, from, id, reply),
            Event::ClientNext { client } => self.start_next_op(client),
            Event::ClientSend { client, seq } => self.send_attempt(client, seq),
            Event::ClientTimeout {
                client,
                seq,
                attempt,
            } => self.on_client_timeout(client, seq, attempt),
            Event::Nemesis => self.on_nemesis(),
            Event::Restart { node } => self.restart(node),
            Event::Audit => self.on_audit(),
        }
    }

    // -----------------------------------------------------------------------------------
    // Node lifecycle

    /// Starts a node from its durable state, with an empty state machine that it refills by
    /// applying the log again as it learns the commit point.
    pub(crate) fn boot(&mut self, id: NodeId) {
        let seed = self
            .config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(id.0 * 7919 + self.node(id).incarnation);
        let engine = P::boot(
            id,
            &self.voters,
            seed,
            &self.node(id).durable,
            &self.options,
        );
        let engine = match engine {
            Ok(engine) => engine,
            Err(e) => {
                return self.fail(
                    ViolationKind::Safety,
                    format!("{id} cannot restart from its disk: {e}"),
                )
            }
        };
        let node = self.node_mut(id);
        node.status = Some(engine.status());
        node.engine = Some(engine);
        node.kv = KvStore::new();
        node.last_issued = 0;
        node.last_durable = 0;
        let (tick, incarnation) = (node.tick_us, node.incarnation);
        self.schedule(
            tick,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
    }

    /// Stops a node: everything not persisted is lost, its disk keeps what completed.
    pub(crate) fn crash(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        if node.engine.is_none() {
            return;
        }
        node.engine = None;
        node.status = None;
        node.incarnation += 1;
        node.disk_queue.clear();
        node.held.clear();
        node.waiting_writes.clear();
        node.waiting_reads.clear();
        node.disk_busy_until = 0;
        self.stats.crashes += 1;
        self.trace_line(|| format!("{id} crashes"));
    }

    pub(crate) fn restart(&mut self, id: NodeId) {
        if self.node(id).engine.is_some() {
            return;
        }
        self.trace_line(|| format!("{id} restarts"));
        self.boot(id);
    }

    pub(crate) fn is_up(&self, id: NodeId) -> bool {
        self.node(id).engine.is_some()
    }

    fn on_tick(&mut self, id: NodeId, incarnation: u64) {
        if self.node(id).incarnation != incarnation || !self.is_up(id) {
            return;
        }
        self.step(id, Input::Tick);
        let tick = self.node(id).tick_us;
        self.schedule(
            tick,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
    }

    fn on_message(&mut self, from: NodeId, to: NodeId, message: P::Message) {
        if !self.network.connected(from, to) || !self.is_up(to) {
            self.stats.messages_dropped += 1;
            self.trace_line(|| format!("{from} -> {to} lost: {}", P::describe(&message)));
            return;
        }
        self.stats.messages_delivered += 1;
        self.trace_line(|| format!("{from} -> {to} {}", P::describe(&message)));
        self.step(to, Input::Receive { from, message });
    }

    // -----------------------------------------------------------------------------------
    // Stepping an engine and carrying out its actions

    /// Feeds one input to a live node, checks the safety properties, carries out the actions.
    pub(crate) fn step(&mut self, id: NodeId, input: Input<P::Message>) {
        let mut out = std::mem::take(&mut self.scratch);
        let Some(engine) = self.nodes[id.0 as usize - 1].engine.as_mut() else {
            return;
        };
        engine.step(input, &mut out);
        let status = engine.status();
        if let Err(e) = self.safety.protocol.after_step(id, engine) {
            self.fail(ViolationKind::Safety, e);
        }
        self.observe_status(id, status);
        for action in out.drain(..) {
            self.carry_out(id, action);
        }
        self.scratch = out;
    }

    /// Election Safety (paper Figure 3): at most one leader per era.
    fn observe_status(&mut self, id: NodeId, status: Status) {
        let previous = self.node_mut(id).status.replace(status);
        let changed = previous.is_none_or(|p| (p.role, p.era) != (status.role, status.era));
        if !changed {
            return;
        }
        self.trace_line(|| format!("{id} is {} of era {}", status.role, status.era));
        if status.role != Role::Leader {
            return;
        }
        match self.safety.leaders.insert(status.era, id) {
            Some(other) if other != id => self.fail(
                ViolationKind::Safety,
                format!(
                    "election safety: {other} and {id} both lead era {}",
                    status.era
                ),
            ),
            _ => self.stats.elections += 1,
        }
    }

    fn carry_out(&mut self, id: NodeId, action: Action<P::Message>) {
        match action {
            Action::Persist(persist) => self.submit_persist(id, persist),
            Action::Send { to, message } => {
                let node = self.node_mut(id);
                if node.last_issued > node.last_durable {
                    let needs = node.last_issued;
                    node.held.push_back((needs, to, message));
                } else {
                    self.transmit(id, to, message);
                }
            }
            Action::Apply(entry) => self.apply(id, entry),
            Action::ReadReady(request) => self.answer_read(id, request),
            Action::Reject {
                id: request,
                reason,
            } => self.answer_rejection(id, request, reason),
        }
    }

    fn submit_persist(&mut self, id: NodeId, persist: Persist) {
        let latency = self.disk_rng.range_inclusive(50, 800);
        let now = self.now;
        let node = self.node_mut(id);
        node.last_issued = persist.id.0;
        node.disk_busy_until = node.disk_busy_until.max(now) + latency;
        let done_at = node.disk_busy_until;
        let (incarnation, persist_id) = (node.incarnation, persist.id);
        node.disk_queue.push_back(persist);
        self.stats.persists += 1;
        self.schedule(
            done_at - now,
            Event::DiskDone {
                node: id,
                incarnation,
                id: persist_id,
            },
        );
    }

    fn on_disk_done(&mut self, id: NodeId, incarnation: u64, done: PersistId) {
        if self.node(id).incarnation != incarnation {
            return;
        }
        let node = self.node_mut(id);
        while node.disk_queue.front().is_some_and(|p| p.id <= done) {
            let persist = node.disk_queue.pop_front().expect("front exists");
            node.durable.apply(&persist);
        }
        node.last_durable = done.0;
        let mut released = Vec::new();
        while node
            .held
            .front()
            .is_some_and(|(needs, _, _)| *needs <= done.0)
        {
            released.push(node.held.pop_front().expect("front exists"));
        }
        for (_, to, message) in released {
            self.transmit(id, to, message);
        }
        self.step(id, Input::Persisted(done));
    }

    /// Puts a message on the network: it may be cut off, lost, delayed or duplicated.
    pub(crate) fn transmit(&mut self, from: NodeId, to: NodeId, message: P::Message) {
        self.stats.messages_sent += 1;
        let deliveries = self.network.deliveries(&mut self.net_rng);
        let mut delays = deliveries.iter();
        match (delays.next(), delays.next()) {
            (Some(first), second) if self.network.connected(from, to) => {
                if let Some(second) = second {
                    self.stats.messages_duplicated += 1;
                    self.schedule(
                        second,
                        Event::Message {
                            from,
                            to,
                            message: message.clone(),
                        },
                    );
                }
                self.schedule(first, Event::Message { from, to, message });
            }
            _ => {
                self.stats.messages_dropped += 1;
                self.trace_line(|| format!("{from} -> {to} dropped: {}", P::describe(&message)));
            }
        }
    }

    /// State Machine Safety (paper Figure 3): no two nodes apply different entries at one
    /// index. Then the entry runs on this node's state machine and its client, if waiting
    /// here, gets the answer.
    fn apply(&mut self, id: NodeId, entry: Entry) {
        let position = entry.index as usize - 1;
        match self.safety.applied.get(position) {
            Some(first) if *first != entry => {
                let detail =
                    format!("state machine safety: {id} applies {entry} where {first} was applied");
                return self.fail(ViolationKind::Safety, detail);
            }
            Some(_) => {}
            None => {
                assert_eq!(
                    position,
                    self.safety.applied.len(),
                    "entries are applied in order"
                );
                if matches!(entry.payload, Payload::Command(_)) {
                    self.stats.committed_commands += 1;
                }
                self.trace_line(|| format!("{id} commits {entry}"));
                self.safety.applied.push(entry.clone());
            }
        }
        let node = self.node_mut(id);
        let Some((request, result)) = node.kv.apply(&entry) else {
            return;
        };
        if let Some(client) = node.waiting_writes.remove(&request) {
            self.reply(id, client, request, Reply::Done(result));
        }
    }

    fn answer_read(&mut self, id: NodeId, request: RequestId) {
        let node = self.node_mut(id);
        let Some((client, key)) = node.waiting_reads.remove(&request) else {
            return;
        };
        let read = RangeRequest {
            range: synod_kv::KeyRange::key(&key),
            ..Default::default()
        };
        let applied = node.kv.range(&read);
        self.reply(id, client, request, Reply::Done(Ok(applied)));
    }

    fn answer_rejection(&mut self, id: NodeId, request: RequestId, reason: Rejection) {
        let node = self.node_mut(id);
        let client = node
            .waiting_writes
            .remove(&request)
            .or_else(|| node.waiting_reads.remove(&request).map(|(c, _)| c));
        let Rejection::NotLeader { leader_hint } = reason;
        if let Some(client) = client {
            self.reply(id, client, request, Reply::Redirect(leader_hint));
        }
    }

    fn on_client_request(&mut self, id: NodeId, client: u64, request: ClientRequest) {
        if !self.is_up(id) {
            return;
        }
        match request {
            ClientRequest::Write(request_id, command) => {
                self.node_mut(id).waiting_writes.insert(request_id, client);
                let proposal = synod_core::Proposal {
                    id: request_id,
                    command: command.encode(),
                };
                self.step(id, Input::Propose(vec![proposal]));
            }
            ClientRequest::Read(request_id, key) => {
                self.node_mut(id)
                    .waiting_reads
                    .insert(request_id, (client, key));
                let read = synod_core::ReadRequest {
                    id: request_id,
                    consistency: synod_core::ReadConsistency::Linearizable,
                };
                self.step(id, Input::Read(vec![read]));
            }
        }
    }

    /// Sends a node's answer to a client. Client links suffer loss and delay but are never
    /// partitioned: clients stand outside the cluster.
    fn reply(&mut self, from: NodeId, client: u64, id: RequestId, reply: Reply) {
        let deliveries = self.network.deliveries(&mut self.net_rng);
        for delay in deliveries.iter() {
            let reply = reply.clone();
            self.schedule(
                delay,
                Event::ToClient {
                    client,
                    from,
                    id,
                    reply,
                },
            );
        }
    }

    fn on_audit(&mut self) {
        if let Err(e) = self.audit() {
            self.fail(ViolationKind::Safety, e);
        }
        self.schedule(100 * TICK_US, Event::Audit);
    }

    /// Runs the protocol's periodic checks over every live node.
    pub(crate) fn audit(&mut self) -> Result<(), String> {
        let live: Vec<(NodeId, u64, &P)> = self
            .nodes
            .iter()
            .filter_map(|n| n.engine.as_ref().map(|e| (n.id, n.incarnation, e)))
            .collect();
        self.safety.protocol.periodic(&live)
    }

    /// Records the first violation; the run stops at it.
    pub(crate) fn fail(&mut self, kind: ViolationKind, detail: String) {
        if self.violation.is_none() {
            self.trace_line(|| format!("VIOLATION ({kind}): {detail}"));
            self.violation = Some(Violation { kind, detail });
        }
    }

    /// Adds a line to the trace, built only when tracing.
    pub(crate) fn trace_line(&mut self, line: impl FnOnce() -> String) {
        if self.trace.is_on() {
            let text = line();
            self.trace.line(self.now, &text);
        }
    }
}
