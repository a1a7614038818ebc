//! The simulated world: one event queue in virtual time, the nodes, the network and the
//! clients. Everything random comes from PRNGs forked from the run's seed, and ties in time are
//! broken by insertion order, so a seed replays exactly.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use synod_check::{History, KvInput, KvOutput};
use synod_core::{Entry, NodeId, PersistId, RequestId, Rng, Role, Status};
use synod_kv::{Applied, KvError, Request};
use synod_replica::PeerMessage;

use crate::client::Client;
use crate::faults::FaultSet;
use crate::network::Network;
use crate::node::{describe, SimNode, SimOutput, SimReplica};
use crate::protocol::{Invariants, Protocol};
use crate::report::{Stats, Violation, ViolationKind};
use crate::run::RunConfig;
use crate::timeline::Timeline;
use crate::trace::Trace;
use crate::{SimTime, TICK_US};

/// Events a run may have pending before it is ended as one that stopped advancing. Healthy
/// runs peak at a few thousand (7 nodes with 10 clients, or 5 with 200); a message storm
/// passes this bound within a second of simulated time, where memory would otherwise grow
/// until the process dies.
const MAX_PENDING_EVENTS: usize = 100_000;

/// What a client sends a node.
#[derive(Clone, Debug)]
pub(crate) enum ClientRequest {
    /// A command for the log.
    Write(RequestId, Request),
    /// A linearizable read of one key.
    Read(RequestId, Bytes),
    /// Renew a lease.
    KeepAlive(RequestId, i64),
}

impl std::fmt::Display for ClientRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientRequest::Write(id, _) => write!(f, "write {id}"),
            ClientRequest::Read(id, _) => write!(f, "read {id}"),
            ClientRequest::KeepAlive(id, lease) => write!(f, "keep-alive {id} of lease {lease}"),
        }
    }
}

/// What a node answers a client.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    /// The command ran, with this result.
    Done(Result<Applied, KvError>),
    /// The read ran on the state machine as of this applied index, with this result.
    Read(u64, Result<Applied, KvError>),
    /// Not the leader; try the hinted node.
    Redirect(Option<NodeId>),
    /// A lease's TTL (0: it is gone).
    Ttl(i64),
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
        /// Its id in a recording (0 when not recording).
        recorded: u64,
    },
    DiskDone {
        node: NodeId,
        incarnation: u64,
        id: PersistId,
    },
    /// A snapshot from the leader is decoded (`SimNode::loading`).
    SnapshotLoaded {
        node: NodeId,
        incarnation: u64,
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
        /// When the node answered: what happens to the answer after that is the network's.
        sent_at: SimTime,
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
    /// The next stage of a leader-change race.
    Race {
        leader: NodeId,
        buddy: NodeId,
        stage: crate::nemesis::RaceStage,
    },
    /// Power fails at a node while its disk writes (the nemesis armed it).
    PowerLoss {
        node: NodeId,
        incarnation: u64,
    },
    Restart {
        node: NodeId,
    },
    /// A paused node carries on.
    Resume {
        node: NodeId,
        incarnation: u64,
    },
    Audit,
    /// A viewer's crash, restart, cut or mend.
    Intervene(crate::intervention::Action),
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

/// Checks that hold for every protocol: one leader per era, one entry per applied index.
pub(crate) struct Safety<P: Protocol> {
    pub(crate) leaders: BTreeMap<u64, NodeId>,
    /// The first entry applied anywhere at each index (index 1 at position 0).
    pub(crate) applied: Vec<Entry>,
    pub(crate) protocol: P::Invariants,
    /// Versions applied and acknowledged, under a protocol that does not order writes.
    pub(crate) versions: crate::gossip::Versions,
}

/// Where a viewer's interventions start in the order of events at one moment: after every
/// event the run schedules (their orders count up from 1).
const LATE_ORDER: u64 = 1 << 62;

/// Spare nodes a run with membership faults starts, for the operator to add.
pub const SPARE_NODES: usize = 2;

/// The whole simulation.
pub struct World<P: Protocol> {
    pub(crate) config: RunConfig,
    pub(crate) options: P::Options,
    pub(crate) now: SimTime,
    next_order: u64,
    queue: BinaryHeap<Scheduled<PeerMessage<P::Message>>>,
    pub(crate) net_rng: Rng,
    pub(crate) disk_rng: Rng,
    pub(crate) nemesis_rng: Rng,
    /// Whether an armed power loss first kills the process (forked last, so that the other
    /// streams, and the runs of every seed where it is never asked, stay as they were).
    pub(crate) kill_rng: Rng,
    /// The members the cluster boots with, all voters.
    pub(crate) voters: Vec<NodeId>,
    /// Nodes that boot knowing no membership and wait to be added (membership faults).
    pub(crate) spares: Vec<NodeId>,
    /// Every node, members first: what the nemesis and the clients may reach.
    pub(crate) everyone: Vec<NodeId>,
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
    /// When the nemesis last crashed the leader, until the next command commits.
    pub(crate) leader_crashed_at: Option<SimTime>,
    /// What lease holders were promised.
    pub(crate) leases: crate::lease::LeaseCheck,
    /// When keys changed, for how stale reads are.
    pub(crate) freshness: crate::freshness::Freshness,
    /// Clients that can reach only some nodes (their side of a partition), by client id.
    pub(crate) client_reach: BTreeMap<u64, Vec<NodeId>>,
    /// Nothing has failed in this run so far (no faults configured, none staged): reads are
    /// then held to the protocol's staleness bound.
    pub(crate) fault_free: bool,
    /// Paused nodes, with the events that reached each meanwhile.
    pub(crate) paused: BTreeMap<NodeId, Vec<Event<PeerMessage<P::Message>>>>,
    /// The operator's last request number (membership changes).
    pub(crate) operator_seq: u64,
    /// When the violation was found.
    pub(crate) violated_at: Option<SimTime>,
    /// The run recorded for a viewer, if asked for.
    pub(crate) timeline: Option<Timeline>,
    /// A viewer's interventions still in the queue.
    interventions_pending: usize,
    /// When a viewer last intervened.
    pub(crate) intervened_at: Option<SimTime>,
    /// What the final check said of linearizability (for the recording's verdict).
    pub(crate) linearizable: &'static str,
    scratch: Vec<SimOutput<P>>,
}

impl<P: Protocol> World<P> {
    /// A world with every node booted from an empty disk and no clients yet.
    pub fn new(config: RunConfig, options: P::Options) -> World<P> {
        let mut root = Rng::new(config.seed);
        let mut net_rng = root.fork();
        let disk_rng = root.fork();
        let nemesis_rng = root.fork();
        let mut node_rng = root.fork();
        let kill_rng = root.fork();
        let network = Network::new(&mut net_rng, config.faults);
        let voters: Vec<NodeId> = (1..=config.nodes as u64).map(NodeId).collect();
        let spare_count = if config.faults.membership && P::CHANGES_MEMBERSHIP {
            SPARE_NODES
        } else {
            0
        };
        let spares: Vec<NodeId> = (1..=spare_count as u64)
            .map(|i| NodeId(config.nodes as u64 + i))
            .collect();
        let everyone: Vec<NodeId> = voters.iter().chain(&spares).copied().collect();
        let nodes = everyone
            .iter()
            .map(|&id| {
                let skew = if config.faults.skew {
                    node_rng.unit() * 0.2 - 0.1
                } else {
                    0.0
                };
                let tick_us = (TICK_US as f64 * (1.0 + skew)) as SimTime;
                SimNode::new(id, tick_us, config.storage_bugs)
            })
            .collect();
        let trace = if config.trace {
            Trace::memory()
        } else {
            Trace::Off
        };
        let fault_free = config.faults == FaultSet::NONE;
        let timeline = config.record.then(|| Timeline::new(&everyone));
        let interventions = config.interventions.clone();
        let mut world = World {
            config,
            options,
            now: 0,
            next_order: 0,
            queue: BinaryHeap::new(),
            net_rng,
            disk_rng,
            nemesis_rng,
            kill_rng,
            voters,
            spares,
            everyone,
            nodes,
            clients: Vec::new(),
            history: History::new(),
            network,
            safety: Safety {
                leaders: BTreeMap::new(),
                applied: Vec::new(),
                protocol: P::Invariants::default(),
                versions: crate::gossip::Versions::default(),
            },
            stats: Stats::default(),
            trace,
            violation: None,
            healed_at: None,
            nemesis_on: false,
            leader_crashed_at: None,
            leases: crate::lease::LeaseCheck::default(),
            freshness: crate::freshness::Freshness::default(),
            client_reach: BTreeMap::new(),
            fault_free,
            paused: BTreeMap::new(),
            operator_seq: 0,
            violated_at: None,
            timeline,
            interventions_pending: 0,
            intervened_at: None,
            linearizable: "not checked",
            scratch: Vec::new(),
        };
        for id in world.everyone.clone() {
            world.boot(id);
        }
        world.schedule(100 * TICK_US, Event::Audit);
        // A viewer's intervention at T comes after every event of T, which the viewer saw
        // when it clicked: its order sorts after any the run gives out.
        for (i, intervention) in interventions.iter().enumerate() {
            world.queue.push(Scheduled {
                at: intervention.at,
                order: LATE_ORDER + i as u64,
                event: Event::Intervene(intervention.action),
            });
        }
        world.interventions_pending = interventions.len();
        world
    }

    pub(crate) fn schedule(&mut self, delay: SimTime, event: Event<PeerMessage<P::Message>>) {
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
            // A viewer's interventions wait in the queue from the start; they are no storm.
            let pending = self.queue.len() - self.interventions_pending;
            if pending > MAX_PENDING_EVENTS {
                let detail = format!(
                    "the run stopped advancing: {pending} events pending at tick {} (a message \
                     storm: each round trip sends more than it answers)",
                    self.now / TICK_US
                );
                self.fail(ViolationKind::Liveness, detail);
                break;
            }
            self.handle(next.event);
        }
        if self.violation.is_none() {
            self.now = self.now.max(until);
        }
    }

    fn handle(&mut self, event: Event<PeerMessage<P::Message>>) {
        let Some(event) = self.unless_paused(event) else {
            return;
        };
        match event {
            Event::Tick { node, incarnation } => self.on_tick(node, incarnation),
            Event::Message {
                from,
                to,
                message,
                recorded,
            } => self.on_message(from, to, message, recorded),
            Event::DiskDone {
                node,
                incarnation,
                id,
            } => self.on_disk_done(node, incarnation, id),
            Event::SnapshotLoaded { node, incarnation } => {
                self.on_snapshot_loaded(node, incarnation)
            }
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
                sent_at,
            } => self.on_reply(client, from, id, reply, sent_at),
            Event::ClientNext { client } => self.start_next_op(client),
            Event::ClientSend { client, seq } => self.send_attempt(client, seq),
            Event::ClientTimeout {
                client,
                seq,
                attempt,
            } => self.on_client_timeout(client, seq, attempt),
            Event::Nemesis => self.on_nemesis(),
            Event::PowerLoss { node, incarnation } => self.on_power_loss(node, incarnation),
            Event::Race {
                leader,
                buddy,
                stage,
            } => self.on_race(leader, buddy, stage),
            Event::Restart { node } => self.restart(node),
            Event::Resume { node, incarnation } => {
                if self.node(node).incarnation == incarnation {
                    self.resume(node);
                }
            }
            Event::Audit => self.on_audit(),
            Event::Intervene(action) => self.intervene(action),
        }
        self.record_world();
    }

    /// Records, when recording, what any event may have changed: which nodes are up or
    /// paused, and the network's cuts.
    pub(crate) fn record_world(&mut self) {
        if let Some(timeline) = &mut self.timeline {
            let nodes = self
                .nodes
                .iter()
                .map(|n| (n.id, n.replica.is_some(), self.paused.contains_key(&n.id)));
            timeline.observe(self.now, nodes, &self.network.blocked);
        }
    }

    /// Carries out a viewer's intervention.
    fn intervene(&mut self, action: crate::intervention::Action) {
        use crate::intervention::Action;
        self.interventions_pending -= 1;
        let known = |n: &NodeId| self.everyone.contains(n);
        let nodes_known = match action {
            Action::Crash(n) | Action::Restart(n) => known(&n),
            Action::Cut(a, b) | Action::Mend(a, b) => known(&a) && known(&b),
        };
        if !nodes_known {
            return;
        }
        self.note_line(|| format!("viewer: {action}"));
        // Something failed now: reads are no longer held to the fault-free staleness bound.
        self.fault_free = false;
        self.intervened_at = Some(self.now);
        match action {
            Action::Crash(node) => {
                if self.is_up(node) {
                    self.crash(node);
                }
            }
            Action::Restart(node) => self.restart(node),
            Action::Cut(a, b) => self.network.cut(&[a], &[b]),
            Action::Mend(a, b) => {
                self.network.blocked.remove(&(a, b));
                self.network.blocked.remove(&(b, a));
            }
        }
    }

    /// Holds an event for a paused node until it resumes (its ticks are dropped: a paused
    /// process's timer does not catch up). Everything else passes.
    fn unless_paused(
        &mut self,
        event: Event<PeerMessage<P::Message>>,
    ) -> Option<Event<PeerMessage<P::Message>>> {
        let node = match &event {
            Event::Tick { node, .. }
            | Event::DiskDone { node, .. }
            | Event::SnapshotLoaded { node, .. }
            | Event::ToNode { node, .. } => *node,
            Event::Message { to, .. } => *to,
            _ => return Some(event),
        };
        let Some(waiting) = self.paused.get_mut(&node) else {
            return Some(event);
        };
        if !matches!(event, Event::Tick { .. }) {
            waiting.push(event);
        }
        None
    }

    fn on_tick(&mut self, id: NodeId, incarnation: u64) {
        if self.node(id).incarnation != incarnation || !self.is_up(id) {
            return;
        }
        self.step(id, |replica, out| replica.tick(out));
        let tick = self.node(id).tick_us;
        self.schedule(
            tick,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
    }

    fn on_message(
        &mut self,
        from: NodeId,
        to: NodeId,
        message: PeerMessage<P::Message>,
        recorded: u64,
    ) {
        let handled = self.network.connected(from, to) && self.is_up(to);
        if let Some(timeline) = &mut self.timeline {
            timeline.arrived(self.now, recorded, handled);
        }
        if !handled {
            self.stats.messages_dropped += 1;
            self.trace_line(|| format!("{from} -> {to} lost: {}", describe::<P>(&message)));
            return;
        }
        self.stats.messages_delivered += 1;
        self.trace_line(|| format!("{from} -> {to} {}", describe::<P>(&message)));
        self.step(to, |replica, out| replica.receive(from, message, out));
    }

    /// Feeds one input to a live node's replica, checks the safety properties, then carries
    /// out its outputs.
    pub(crate) fn step(
        &mut self,
        id: NodeId,
        input: impl FnOnce(&mut SimReplica<P>, &mut Vec<SimOutput<P>>),
    ) {
        let mut out = std::mem::take(&mut self.scratch);
        let node = &mut self.nodes[id.0 as usize - 1];
        let incarnation = node.incarnation;
        let clock = node.clock_us(self.now);
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        replica.set_clock(clock);
        input(replica, &mut out);
        let status = replica.status();
        let checked = self
            .safety
            .protocol
            .after_step(id, incarnation, replica.engine());
        let fatal = replica.take_fatal().map(|reason| format!("{id}: {reason}"));
        if let Some(e) = checked.err().or(fatal) {
            self.fail(ViolationKind::Safety, e);
        }
        self.observe_status(id, status);
        self.record_step(id);
        self.carry_out(id, &mut out);
        self.scratch = out;
        self.check_lease_deadlines(id);
        self.leave_if_handed_over(id);
    }

    /// A removed member of a leaderless protocol stops for good once it has handed over
    /// what it held, as the server does; the final checks then hold the members to every
    /// write it acknowledged. (Removed members of an ordered history keep running here, to
    /// show they do not disturb the cluster.)
    fn leave_if_handed_over(&mut self, id: NodeId) {
        if P::ORDERS_WRITES {
            return;
        }
        let Some(engine) = self.node(id).engine() else {
            return;
        };
        let removed = engine
            .membership()
            .is_some_and(|m| !m.contains(id) && id.0 < m.next_id);
        if !removed || engine.owes_handover() {
            return;
        }
        self.crash_leaving(id, crate::disk::Unsynced::Lost);
        self.node_mut(id).left = true;
        self.stats.members_left += 1;
        self.note_line(|| format!("{id} handed over what it held and leaves the cluster"));
    }

    /// Records what a step changed at a node, when recording.
    fn record_step(&mut self, id: NodeId) {
        let Some(timeline) = &mut self.timeline else {
            return;
        };
        let node = &self.nodes[id.0 as usize - 1];
        let Some(replica) = node.replica.as_ref() else {
            return;
        };
        let engine = replica.engine();
        let applied = replica.store().read().applied_index();
        timeline.node_stepped(
            self.now,
            &replica.status(),
            applied,
            engine.log_tail(crate::timeline::LOG_TAIL),
            P::era_label,
            engine.election_timer(),
            node.tick_us,
        );
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

    /// Puts a message on the network: it may be cut off, lost, delayed or duplicated.
    pub(crate) fn transmit(&mut self, from: NodeId, to: NodeId, message: PeerMessage<P::Message>) {
        self.stats.messages_sent += 1;
        match &message {
            PeerMessage::Propose(proposals) => {
                self.stats.writes_forwarded += proposals.len() as u64
            }
            PeerMessage::ReadIndex(ids) => self.stats.reads_forwarded += ids.len() as u64,
            _ => {}
        }
        if let (PeerMessage::Engine(engine_message), Some(engine)) =
            (&message, self.nodes[from.0 as usize - 1].engine())
        {
            if let Err(e) = self
                .safety
                .protocol
                .before_send(from, engine_message, engine)
            {
                self.fail(ViolationKind::Safety, e);
            }
        }
        let deliveries = self.network.deliveries_on(from, to, &mut self.net_rng);
        let mut delays = deliveries.iter();
        // The replica's own messages (forwarded writes, read indexes and their answers) ride
        // the server's TCP link, which never delivers twice: a refusal of a duplicate would
        // tell a client "no effect" of a write its twin put in the log. Engine messages get
        // every fault, to test the engines' own defences.
        let duplicable = matches!(message, PeerMessage::Engine(_));
        match (delays.next(), delays.next().filter(|_| duplicable)) {
            (Some(first), second) if self.network.connected(from, to) => {
                if let Some(second) = second {
                    self.stats.messages_duplicated += 1;
                    let recorded = self.record_send(from, to, &message, Some(second));
                    self.schedule(
                        second,
                        Event::Message {
                            from,
                            to,
                            message: message.clone(),
                            recorded,
                        },
                    );
                }
                let recorded = self.record_send(from, to, &message, Some(first));
                self.schedule(
                    first,
                    Event::Message {
                        from,
                        to,
                        message,
                        recorded,
                    },
                );
            }
            _ => {
                self.stats.messages_dropped += 1;
                self.record_send(from, to, &message, None);
                self.trace_line(|| format!("{from} -> {to} dropped: {}", describe::<P>(&message)));
            }
        }
    }

    /// Records a message leaving, arriving after `delay` (`None`: dropped at once); returns
    /// its id in the recording (0 when not recording).
    fn record_send(
        &mut self,
        from: NodeId,
        to: NodeId,
        message: &PeerMessage<P::Message>,
        delay: Option<SimTime>,
    ) -> u64 {
        let Some(timeline) = &mut self.timeline else {
            return 0;
        };
        let arrive = delay.map(|d| self.now + d);
        timeline.send(self.now, from, to, &describe::<P>(message), arrive)
    }

    /// Sends a node's answer to a client. Client links suffer loss and delay but are never
    /// partitioned: clients stand outside the cluster.
    pub(crate) fn reply(&mut self, from: NodeId, client: u64, id: RequestId, reply: Reply) {
        if let Reply::Redirect(_) = reply {
            let counts = &mut self.stats.refusals_by_node;
            let at = from.0 as usize;
            if counts.len() <= at {
                counts.resize(at + 1, 0);
            }
            counts[at] += 1;
        }
        self.trace_line(|| match &reply {
            Reply::Done(_) => format!("{from} -> c{client} answers {id}"),
            Reply::Read(index, _) => format!("{from} -> c{client} answers {id} as of {index}"),
            Reply::Redirect(hint) => format!("{from} -> c{client} refuses {id}, leader {hint:?}"),
            Reply::Ttl(ttl) => format!("{from} -> c{client} answers {id}: TTL {ttl}"),
        });
        let deliveries = self.network.deliveries(&mut self.net_rng);
        let sent_at = self.now;
        for delay in deliveries.iter() {
            let reply = reply.clone();
            self.schedule(
                delay,
                Event::ToClient {
                    client,
                    from,
                    id,
                    reply,
                    sent_at,
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
            .filter_map(|n| n.engine().map(|e| (n.id, n.incarnation, e)))
            .collect();
        self.safety.protocol.periodic(&live)
    }

    /// Records the first violation; the run stops at it.
    pub(crate) fn fail(&mut self, kind: ViolationKind, detail: String) {
        if self.violation.is_none() {
            self.trace_line(|| format!("VIOLATION ({kind}): {detail}"));
            if let Some(timeline) = &mut self.timeline {
                timeline.violation(self.now, &kind.to_string(), &detail);
            }
            self.violated_at = Some(self.now);
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

    /// A fault the nemesis injects: a trace line (`nemesis: ...`) and, when recording, a
    /// `fault` event.
    pub(crate) fn fault_line(&mut self, line: impl FnOnce() -> String) {
        self.marked_line("fault", "nemesis: ", line);
    }

    /// A moment worth a line for a viewer too (a snapshot, the heal, a membership change, a
    /// lease's expiry, a viewer's intervention): a trace line and, when recording, a `note`
    /// event.
    pub(crate) fn note_line(&mut self, line: impl FnOnce() -> String) {
        self.marked_line("note", "", line);
    }

    fn marked_line(&mut self, kind: &str, prefix: &str, line: impl FnOnce() -> String) {
        if !self.trace.is_on() && self.timeline.is_none() {
            return;
        }
        let text = line();
        if self.trace.is_on() {
            self.trace.line(self.now, &format!("{prefix}{text}"));
        }
        if let Some(timeline) = &mut self.timeline {
            timeline.text(self.now, kind, &text);
        }
    }
}
