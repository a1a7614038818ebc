//! The node loop: one task that owns the engine and carries out its actions under the
//! engine contract's rules, and the handle the rest of the server uses to talk to it.
//!
//! Inputs come from four places: the tick timer, peers (through the transport), clients
//! (through [`NodeHandle`]) and the disk thread. Whatever arrived together is stepped
//! together, so a burst of client writes becomes one `Propose` and, downstream, one append
//! message and one fsync. Actions are carried out in order: a persist goes to the disk
//! thread; a send waits until every persist issued before it is durable (persist before
//! send); committed entries are applied to the key-value store and answer the client that
//! wrote them, if it is waiting here.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_core::wire::Wire;
use synod_core::{
    Action, Engine, Entry, Input, NodeId, Proposal, ReadConsistency, ReadRequest, Rejection,
    RequestId, Role, SendGate, Snapshot, SnapshotMeta, Status,
};
use synod_kv::{Applied, KvError, KvStore, Request};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::disk::{Disk, DiskEvent};
use crate::metrics::{role_code, Metrics};
use crate::peer::PeerMessage;
use crate::transport::{Inbound, Transport};

/// Why a request got no answer from the state machine.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Refusal {
    /// This node does not lead; the hint says who does, if it knows.
    #[error("not the leader")]
    NotLeader(Option<NodeId>),
    /// The node is shutting down or its disk failed.
    #[error("server stopped")]
    Stopped,
    /// The request ran and failed, the same way on every replica.
    #[error("{0}")]
    Kv(KvError),
}

enum Command {
    Propose {
        command: Bytes,
        /// Only into this node's log, and only while it leads in this era: never forwarded.
        as_leader_of: Option<u64>,
        reply: oneshot::Sender<Result<Applied, Refusal>>,
    },
    Read {
        consistency: ReadConsistency,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    TransferLeadership {
        to: NodeId,
    },
}

/// Settings of the node loop.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// This node.
    pub id: NodeId,
    /// Where the log and snapshots live.
    pub data_dir: PathBuf,
    /// Length of one engine tick.
    pub tick: Duration,
    /// Snapshot the state machine after this many applied entries (0: never).
    pub snapshot_every: u64,
    /// Client sessions the state machine keeps.
    pub session_limit: usize,
    /// Revisions of history the state machine keeps for reads in the past and watches.
    pub history_revisions: i64,
}

/// What the server's request handlers share with the node loop.
#[derive(Debug)]
pub struct Shared {
    /// This node.
    pub id: NodeId,
    kv: RwLock<KvStore>,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// The state machine, for reading. Held briefly: the node loop applies under the write
    /// lock.
    pub fn kv(&self) -> RwLockReadGuard<'_, KvStore> {
        self.kv
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn kv_mut(&self) -> RwLockWriteGuard<'_, KvStore> {
        self.kv
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How request handlers reach the node loop. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    /// State shared with the node loop.
    pub shared: Arc<Shared>,
    /// The engine's status, updated after every step that changes it.
    pub status: watch::Receiver<Status>,
    /// The state machine's revision, updated after every batch of applied entries.
    pub revision: watch::Receiver<i64>,
}

impl NodeHandle {
    /// Replicates a write and waits until it is applied here. Cancel-safe: dropping the
    /// future abandons the wait, not the write (which may still commit).
    pub async fn propose(&self, request: &Request) -> Result<Applied, Refusal> {
        self.propose_with(request, None).await
    }

    /// Replicates a write decided by this node as leader of `era` (a lease expiry by its
    /// clock): it enters the log here only if this node still leads in that era, and is
    /// refused ("not the leader") otherwise, never forwarded to another leader, whose view
    /// may differ.
    pub async fn propose_as_leader(&self, request: &Request, era: u64) -> Result<Applied, Refusal> {
        self.propose_with(request, Some(era)).await
    }

    async fn propose_with(
        &self,
        request: &Request,
        as_leader_of: Option<u64>,
    ) -> Result<Applied, Refusal> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Propose {
            command: request.encode(),
            as_leader_of,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| Refusal::Stopped)?;
        answer.await.map_err(|_| Refusal::Stopped)?
    }

    /// Waits until the local state machine may answer a read of `consistency`: at once for a
    /// serializable read; for a linearizable one, once the leader confirmed its leadership
    /// and this node applied everything committed when the read arrived.
    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<(), Refusal> {
        if consistency == ReadConsistency::Serializable {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Read { consistency, reply })
            .await
            .map_err(|_| Refusal::Stopped)?;
        answer.await.map_err(|_| Refusal::Stopped)?
    }

    /// Asks the engine to hand leadership to `to` (ignored unless this node leads).
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), Refusal> {
        self.commands
            .send(Command::TransferLeadership { to })
            .await
            .map_err(|_| Refusal::Stopped)
    }

    /// The engine's status now.
    pub fn current_status(&self) -> Status {
        *self.status.borrow()
    }
}

/// The node loop's state.
pub struct Node<E: Engine> {
    engine: E,
    shared: Arc<Shared>,
    transport: Transport<PeerMessage<E::Message>>,
    inbound: mpsc::Receiver<Inbound<PeerMessage<E::Message>>>,
    commands: mpsc::Receiver<Command>,
    disk: Disk,
    disk_events: mpsc::UnboundedReceiver<DiskEvent>,
    status: watch::Sender<Status>,
    revision: watch::Sender<i64>,
    options: NodeOptions,
    /// Ids for this life's requests: a server id (untracked by sessions) unique to this boot.
    client_id: u64,
    next_seq: u64,
    /// Sends waiting for the persists before them (persist before send).
    sends: SendGate<E::Message>,
    writes: HashMap<RequestId, oneshot::Sender<Result<Applied, Refusal>>>,
    reads: HashMap<RequestId, oneshot::Sender<Result<(), Refusal>>>,
    /// Follower: reads of ours a leader was asked to confirm, and which leader.
    reads_asked: HashMap<RequestId, NodeId>,
    /// Follower: confirmed reads waiting for this node to apply up to their index.
    reads_after_apply: BTreeMap<u64, Vec<RequestId>>,
    /// Leader: reads followers asked it to confirm, and who asked.
    reads_for_peers: HashMap<RequestId, NodeId>,
    /// Leader: writes followers handed it, not yet applied or refused, and who handed each
    /// (a refusal can come steps later: Multi-Paxos queues writes beyond its in-flight bound
    /// and refuses them when it steps down). Emptied when this node stops leading: it refuses
    /// nothing after that.
    proposed_for: HashMap<RequestId, NodeId>,
    /// Leader: answers to followers gathered during a step, sent at its end.
    peer_ready: BTreeMap<NodeId, Vec<RequestId>>,
    peer_refused: BTreeMap<NodeId, Vec<RequestId>>,
    /// Era of the last entry applied, for snapshot metadata.
    applied_era: u64,
    snapshot_index: u64,
    snapshot_in_flight: bool,
    actions: Vec<Action<E::Message>>,
    /// Set when the node must stop: it cannot go on without diverging or losing data.
    fatal: Option<String>,
}

/// Commands taken from the queue per step at most.
const COMMAND_BATCH_MAX: usize = 4096;

/// Bytes of commands in one `PeerMessage::Propose` a follower hands the leader, at most (one
/// command more when the message would be empty): far below the peer link's frame limit, so
/// a burst of large writes is never one message the link must drop.
const FORWARD_BYTES_MAX: usize = 4 << 20;

impl<E> Node<E>
where
    E: Engine + Send + 'static,
    E::Message: Wire + Send + 'static,
{
    /// Builds the node from what `disk` recovered; `boot` makes the engine from it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        options: NodeOptions,
        engine: E,
        recovered_snapshot: Option<&Snapshot>,
        transport: Transport<PeerMessage<E::Message>>,
        inbound: mpsc::Receiver<Inbound<PeerMessage<E::Message>>>,
        disk: Disk,
        disk_events: mpsc::UnboundedReceiver<DiskEvent>,
        metrics: Arc<Metrics>,
    ) -> Result<(Node<E>, NodeHandle), KvRestoreError> {
        let kv = match recovered_snapshot {
            Some(s) => KvStore::restore(&s.data).map_err(|e| KvRestoreError(e.to_string()))?,
            None => KvStore::with_limits(options.session_limit, options.history_revisions),
        };
        let (commands_tx, commands) = mpsc::channel(COMMAND_BATCH_MAX * 4);
        let (status, status_rx) = watch::channel(engine.status());
        let (revision, revision_rx) = watch::channel(kv.revision());
        let shared = Arc::new(Shared {
            id: options.id,
            kv: RwLock::new(kv),
            metrics,
        });
        let snapshot_index = shared.kv().applied_index();
        let node = Node {
            engine,
            shared: shared.clone(),
            transport,
            inbound,
            commands,
            disk,
            disk_events,
            status,
            revision,
            client_id: boot_client_id(options.id),
            options,
            next_seq: 0,
            sends: SendGate::default(),
            writes: HashMap::new(),
            reads: HashMap::new(),
            reads_asked: HashMap::new(),
            reads_after_apply: BTreeMap::new(),
            reads_for_peers: HashMap::new(),
            proposed_for: HashMap::new(),
            peer_ready: BTreeMap::new(),
            peer_refused: BTreeMap::new(),
            applied_era: recovered_snapshot.map_or(0, |s| s.meta.era),
            snapshot_index,
            snapshot_in_flight: false,
            actions: Vec::new(),
            fatal: None,
        };
        let handle = NodeHandle {
            commands: commands_tx,
            shared,
            status: status_rx,
            revision: revision_rx,
        };
        Ok((node, handle))
    }

    /// The transport, for metrics.
    pub fn transport(&self) -> &Transport<PeerMessage<E::Message>> {
        &self.transport
    }

    /// Runs until `stop` fires or the node cannot go on (its disk failed). Either way, what
    /// is queued for the disk is written and synced before this returns.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        let mut ticker = tokio::time::interval(self.options.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut outcome = Ok(());
        loop {
            tokio::select! {
                _ = ticker.tick() => self.step(Input::Tick),
                Some(Inbound { from, message }) = self.inbound.recv() => {
                    self.on_peer(from, message);
                }
                Some(first) = self.commands.recv() => self.on_commands(first),
                event = self.disk_events.recv() => match event {
                    Some(event) => self.on_disk(event),
                    None => self.fatal = Some("the disk thread stopped".to_string()),
                },
                _ = housekeeping.tick() => self.forget_abandoned(),
                _ = stop.changed() => break,
            }
            if let Some(reason) = self.fatal.take() {
                error!(node = %self.options.id, reason = %reason, "the node stops");
                outcome = Err(reason);
                break;
            }
        }
        self.disk.close();
        for (_, reply) in self.writes.drain() {
            let _ = reply.send(Err(Refusal::Stopped));
        }
        for (_, reply) in self.reads.drain() {
            let _ = reply.send(Err(Refusal::Stopped));
        }
        info!(node = %self.options.id, "node loop stopped");
        outcome
    }

    fn on_commands(&mut self, first: Command) {
        let status = self.engine.status();
        // Another node leads: hand it the writes and ask it to confirm the reads. Otherwise
        // the engine takes them (and refuses them if nobody leads).
        let forward_to = status.leader.filter(|&leader| leader != status.id);
        let mut proposals = Vec::new();
        let mut reads = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(command) = next.take() {
            taken += 1;
            match command {
                Command::Propose {
                    as_leader_of: Some(era),
                    reply,
                    ..
                } if status.role != Role::Leader || status.era != era => {
                    let _ = reply.send(Err(Refusal::NotLeader(status.leader)));
                }
                Command::Propose { command, reply, .. } => {
                    let id = self.next_request_id();
                    self.writes.insert(id, reply);
                    proposals.push(Proposal { id, command });
                }
                Command::Read { consistency, reply } => {
                    let id = self.next_request_id();
                    self.reads.insert(id, reply);
                    reads.push(ReadRequest { id, consistency });
                }
                Command::TransferLeadership { to } => {
                    self.step(Input::TransferLeadership { to });
                }
            }
            if taken < COMMAND_BATCH_MAX {
                next = self.commands.try_recv().ok();
            }
        }
        match forward_to {
            Some(leader) => {
                let (linearizable, serializable): (Vec<_>, Vec<_>) = reads
                    .into_iter()
                    .partition(|r| r.consistency == ReadConsistency::Linearizable);
                let mut batch: Vec<Proposal> = Vec::new();
                let mut bytes = 0;
                for proposal in proposals {
                    let size = proposal.command.len();
                    if !batch.is_empty() && bytes + size > FORWARD_BYTES_MAX {
                        self.forward_writes(leader, std::mem::take(&mut batch));
                        bytes = 0;
                    }
                    bytes += size;
                    batch.push(proposal);
                }
                if !batch.is_empty() {
                    self.forward_writes(leader, batch);
                }
                if !linearizable.is_empty() {
                    let ids: Vec<RequestId> = linearizable.iter().map(|r| r.id).collect();
                    self.reads_asked.extend(ids.iter().map(|&id| (id, leader)));
                    if !self
                        .transport
                        .send(leader, PeerMessage::ReadIndex(ids.clone()))
                    {
                        for id in ids {
                            self.reads_asked.remove(&id);
                            self.refuse(id, Refusal::NotLeader(Some(leader)));
                        }
                    }
                }
                if !serializable.is_empty() {
                    self.step(Input::Read(serializable));
                }
            }
            None => {
                if !proposals.is_empty() {
                    self.step(Input::Propose(proposals));
                }
                if !reads.is_empty() {
                    self.step(Input::Read(reads));
                }
            }
        }
    }

    /// Hands writes to the leader. Writes the link would not even queue (its queue is full,
    /// the leader unknown to it) never reached the leader, so they are refused at once as
    /// "not the leader" and tried again by the API, rather than left to time out.
    fn forward_writes(&mut self, leader: NodeId, proposals: Vec<Proposal>) {
        let ids: Vec<RequestId> = proposals.iter().map(|p| p.id).collect();
        if !self.transport.send(leader, PeerMessage::Propose(proposals)) {
            for id in ids {
                self.refuse(id, Refusal::NotLeader(Some(leader)));
            }
        }
    }

    fn on_peer(&mut self, from: NodeId, message: PeerMessage<E::Message>) {
        match message {
            PeerMessage::Engine(message) => self.step(Input::Receive { from, message }),
            PeerMessage::Propose(proposals) if self.leads() => {
                self.proposed_for
                    .extend(proposals.iter().map(|p| (p.id, from)));
                self.step(Input::Propose(proposals));
            }
            PeerMessage::ReadIndex(ids) if self.leads() => {
                self.reads_for_peers
                    .extend(ids.iter().map(|&id| (id, from)));
                let reads = ids
                    .into_iter()
                    .map(|id| ReadRequest {
                        id,
                        consistency: ReadConsistency::Linearizable,
                    })
                    .collect();
                self.step(Input::Read(reads));
            }
            // Sent to a node that no longer leads: no effect, say so (and who leads).
            PeerMessage::Propose(proposals) => {
                let ids = proposals.iter().map(|p| p.id).collect();
                let leader = self.engine.status().leader;
                self.transport
                    .send(from, PeerMessage::Refused { ids, leader });
            }
            PeerMessage::ReadIndex(ids) => {
                let leader = self.engine.status().leader;
                self.transport
                    .send(from, PeerMessage::Refused { ids, leader });
            }
            PeerMessage::ReadReady { ids, index } => {
                let applied = self.shared.kv().applied_index();
                for id in ids {
                    self.reads_asked.remove(&id);
                    if index <= applied {
                        if let Some(reply) = self.reads.remove(&id) {
                            let _ = reply.send(Ok(()));
                        }
                    } else {
                        self.reads_after_apply.entry(index).or_default().push(id);
                    }
                }
            }
            PeerMessage::Refused { ids, leader } => {
                for id in ids {
                    self.reads_asked.remove(&id);
                    self.refuse(id, Refusal::NotLeader(leader));
                }
            }
        }
    }

    fn leads(&self) -> bool {
        self.engine.status().role == Role::Leader
    }

    /// Answers a waiting write or read with a refusal.
    fn refuse(&mut self, id: RequestId, refusal: Refusal) {
        if let Some(reply) = self.writes.remove(&id) {
            self.shared.metrics.proposals_failed.inc();
            let _ = reply.send(Err(refusal));
        } else if let Some(reply) = self.reads.remove(&id) {
            let _ = reply.send(Err(refusal));
        }
    }

    /// Sends followers the answers a step produced for them.
    fn answer_peers(&mut self) {
        if !self.peer_ready.is_empty() {
            let index = self.shared.kv().applied_index();
            for (to, ids) in std::mem::take(&mut self.peer_ready) {
                self.transport
                    .send(to, PeerMessage::ReadReady { ids, index });
            }
        }
        if self.peer_refused.is_empty() {
            return;
        }
        let leader = self.engine.status().leader;
        for (to, ids) in std::mem::take(&mut self.peer_refused) {
            self.transport
                .send(to, PeerMessage::Refused { ids, leader });
        }
    }

    fn next_request_id(&mut self) -> RequestId {
        self.next_seq += 1;
        RequestId::new(self.client_id, self.next_seq)
    }

    fn on_disk(&mut self, event: DiskEvent) {
        match event {
            DiskEvent::Durable(id) => {
                let released = self.sends.durable(id);
                self.step(Input::Persisted(id));
                for (to, message) in released {
                    self.transport.send(to, PeerMessage::Engine(message));
                }
            }
            DiskEvent::SnapshotWritten(snapshot) => self.disk.compact(snapshot),
            DiskEvent::SnapshotSaved(snapshot) => {
                self.snapshot_in_flight = false;
                self.snapshot_index = snapshot.meta.index;
                info!(
                    index = snapshot.meta.index,
                    bytes = snapshot.data.len(),
                    "saved a snapshot"
                );
                self.step(Input::Snapshotted(snapshot));
            }
            DiskEvent::Failed(reason) => self.fatal = Some(format!("the disk failed: {reason}")),
        }
    }

    fn step(&mut self, input: Input<E::Message>) {
        let mut actions = std::mem::take(&mut self.actions);
        self.engine.step(input, &mut actions);
        let mut applying: Vec<Entry> = Vec::new();
        for action in actions.drain(..) {
            // Applies are gathered so one lock covers a run of them; anything else that
            // depends on the state machine flushes them first.
            if let Action::Apply(entry) = action {
                applying.push(entry);
                continue;
            }
            if !applying.is_empty() {
                self.apply(&mut applying);
            }
            self.carry_out(action);
        }
        if !applying.is_empty() {
            self.apply(&mut applying);
        }
        self.actions = actions;
        if !self.proposed_for.is_empty() && !self.leads() {
            self.proposed_for.clear();
        }
        self.answer_peers();
        self.publish_status();
        self.maybe_snapshot();
    }

    fn carry_out(&mut self, action: Action<E::Message>) {
        match action {
            Action::Persist(persist) => {
                self.sends.issued(persist.id);
                self.disk.persist(persist);
            }
            Action::Send { to, message } => {
                if let Some((to, message)) = self.sends.send(to, message) {
                    self.transport.send(to, PeerMessage::Engine(message));
                }
            }
            Action::Apply(entry) => self.apply(&mut vec![entry]),
            Action::Restore(snapshot) => self.restore(snapshot),
            Action::ReadReady(id) => {
                if let Some(reply) = self.reads.remove(&id) {
                    let _ = reply.send(Ok(()));
                } else if let Some(asker) = self.reads_for_peers.remove(&id) {
                    self.peer_ready.entry(asker).or_default().push(id);
                }
            }
            Action::Reject { id, reason } => {
                let Rejection::NotLeader { leader_hint } = reason;
                if self.writes.contains_key(&id) || self.reads.contains_key(&id) {
                    self.refuse(id, Refusal::NotLeader(leader_hint));
                } else if let Some(asker) = self.reads_for_peers.remove(&id) {
                    self.peer_refused.entry(asker).or_default().push(id);
                } else if let Some(asker) = self.proposed_for.remove(&id) {
                    self.peer_refused.entry(asker).or_default().push(id);
                }
            }
        }
    }

    fn apply(&mut self, entries: &mut Vec<Entry>) {
        let started = Instant::now();
        let mut answers = Vec::new();
        let revision = {
            let mut kv = self.shared.kv_mut();
            for entry in entries.drain(..) {
                self.applied_era = entry.era;
                if entry.index <= kv.applied_index() {
                    continue; // already in the snapshot the store was restored from
                }
                if let Some(answer) = kv.apply(&entry) {
                    answers.push(answer);
                }
            }
            self.shared
                .metrics
                .apply_index
                .set(kv.applied_index() as i64);
            kv.revision()
        };
        self.shared.metrics.apply.observe(started.elapsed());
        for (id, result) in answers {
            self.proposed_for.remove(&id);
            if let Some(reply) = self.writes.remove(&id) {
                let counter = match &result {
                    Ok(_) => &self.shared.metrics.proposals_committed,
                    Err(_) => &self.shared.metrics.proposals_failed,
                };
                counter.inc();
                let _ = reply.send(result.map_err(Refusal::Kv));
            }
        }
        self.revision.send_if_modified(|current| {
            let changed = *current != revision;
            *current = revision;
            changed
        });
        self.release_reads();
    }

    /// Answers confirmed reads whose index this node has now applied.
    fn release_reads(&mut self) {
        let applied = self.shared.kv().applied_index();
        while let Some(entry) = self.reads_after_apply.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for id in entry.remove() {
                if let Some(reply) = self.reads.remove(&id) {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }

    fn restore(&mut self, snapshot: Snapshot) {
        match KvStore::restore(&snapshot.data) {
            Ok(kv) => {
                let revision = kv.revision();
                *self.shared.kv_mut() = kv;
                self.applied_era = snapshot.meta.era;
                self.snapshot_index = snapshot.meta.index;
                let _ = self.revision.send(revision);
                self.release_reads();
                info!(
                    index = snapshot.meta.index,
                    "installed a snapshot from the leader"
                );
            }
            // Applying on from a state we could not restore would diverge from the others.
            Err(e) => {
                self.fatal = Some(format!("a snapshot from the leader does not decode: {e}"));
            }
        }
    }

    fn publish_status(&mut self) {
        let status = self.engine.status();
        let previous = *self.status.borrow();
        if status == previous {
            return;
        }
        if status.leader != previous.leader {
            // Reads asked of a leader that no longer leads may never be answered: ask again.
            let stale: Vec<RequestId> = self
                .reads_asked
                .iter()
                .filter(|(_, &asked)| Some(asked) != status.leader)
                .map(|(&id, _)| id)
                .collect();
            for id in stale {
                self.reads_asked.remove(&id);
                self.refuse(id, Refusal::NotLeader(status.leader));
            }
        }
        let metrics = &self.shared.metrics;
        if status.leader.is_some() && status.leader != previous.leader {
            metrics.leader_changes.inc();
            info!(node = %status.id, leader = ?status.leader, era = status.era, "new leader");
        }
        metrics.has_leader.set(i64::from(status.leader.is_some()));
        metrics.role.set(role_code(status.role));
        metrics.term.set(status.era as i64);
        metrics.commit_index.set(status.commit_index as i64);
        if status.role != previous.role && status.role == Role::Leader {
            info!(node = %status.id, era = status.era, "leading");
        }
        let _ = self.status.send(status);
    }

    fn maybe_snapshot(&mut self) {
        let every = self.options.snapshot_every;
        if every == 0 || self.snapshot_in_flight {
            return;
        }
        // A copy (its keys and values shared, not copied) is encoded and written off this
        // loop: encoding hundreds of megabytes here would stall every request for seconds.
        let (meta, copy) = {
            let kv = self.shared.kv();
            let applied = kv.applied_index();
            if applied < self.snapshot_index + every {
                return;
            }
            let meta = SnapshotMeta {
                index: applied,
                era: self.applied_era,
            };
            (meta, kv.clone())
        };
        self.snapshot_in_flight = true;
        self.disk.save_snapshot(meta, copy);
    }

    /// Drops waits whose clients went away (timed out, disconnected), so that proposals
    /// that never commit (lost with a deposed leader) do not pile up.
    fn forget_abandoned(&mut self) {
        self.writes.retain(|_, reply| !reply.is_closed());
        self.reads.retain(|_, reply| !reply.is_closed());
        let reads = &self.reads;
        self.reads_asked.retain(|id, _| reads.contains_key(id));
        for ids in self.reads_after_apply.values_mut() {
            ids.retain(|id| reads.contains_key(id));
        }
        self.reads_after_apply.retain(|_, ids| !ids.is_empty());
        let queued = self.sends.held();
        if queued > 100_000 {
            warn!(queued, "many sends wait for the disk");
        }
    }
}

/// The snapshot on disk holds a state machine that does not decode.
#[derive(Debug, Error)]
#[error("the snapshot's state machine does not decode: {0}")]
pub struct KvRestoreError(String);

/// A server request id for this boot: the top bit set (so sessions ignore it), then bits from
/// the clock and the node id, so two lives of one node do not reuse ids.
fn boot_client_id(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = (nanos ^ id.0.rotate_left(48)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    synod_core::ClientId::UNTRACKED_FROM | (mixed >> 1)
}
