//! The node loop: the server's IO shell around the replica (`synod_replica::Replica`),
//! which decides everything a client can observe. This task owns the replica, feeds it what
//! arrives — ticks, peer messages, client calls, finished disk work — and carries out its
//! outputs: a persist goes to the disk thread, a send to the transport (the replica has
//! already held it until the persists before it are durable), an answer down the client's
//! channel, a snapshot to the disk thread's snapshot writer. Whatever arrived together is
//! handed over together, so a burst of client writes becomes one proposal, one append
//! message and one fsync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use synod_core::codec::DecodeError;
use synod_core::wire::Wire;
use synod_core::{Engine, Membership, MembershipChange, NodeId, ReadConsistency, Snapshot, Status};
use synod_kv::{Applied, KvStore, Request};
use synod_replica::{
    Answer, Attributes, Call, ClientCall, LeaseBugs, Output, PeerMessage, Replica, ReplicaOptions,
    Store, Waiter,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

pub use synod_replica::Refusal;

use crate::disk::{Disk, DiskEvent};
use crate::metrics::{role_code, Metrics};
use crate::transport::{Inbound, Transport};

/// What waits for an answer from the replica: a request handler.
#[derive(Debug)]
struct Reply {
    sender: oneshot::Sender<Answer>,
    /// A write, for the proposal counters.
    write: bool,
}

impl Waiter for Reply {
    fn abandoned(&self) -> bool {
        self.sender.is_closed()
    }
}

enum Command {
    Call(Call, oneshot::Sender<Answer>),
    TransferLeadership(NodeId),
}

/// Settings of the node loop.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// This node.
    pub id: NodeId,
    /// Its name (`--name`), published in the membership once it joined a running cluster.
    pub name: String,
    /// Where clients reach it, published with its name.
    pub client_url: String,
    /// The other members.
    pub peers: Vec<NodeId>,
    /// For a member that joined a running cluster and has not yet seen the membership confirm
    /// the identity it was given: that identity, kept in the data directory once confirmed.
    pub joining: Option<JoinCheck>,
    /// Whether this member joined a running cluster (rather than booting it).
    pub joined: bool,
    /// Length of one engine tick.
    pub tick: Duration,
    /// How fast the ticks come against true time (1.0 but in fault tests, which skew it).
    pub clock_rate: f64,
    /// An election timeout: a new leader extends every lease by this much.
    pub election_timeout: Duration,
    /// Snapshot the state machine after this many applied entries (0: never).
    pub snapshot_every: u64,
}

/// A joining member's identity, to confirm against the membership it applies.
#[derive(Clone, Debug)]
pub struct JoinCheck {
    /// What the first member that dialled said.
    pub identity: crate::identity::Identity,
    /// Where to keep it once confirmed.
    pub data_dir: std::path::PathBuf,
    /// This member's peer address (`host:port`), as the membership must list it.
    pub peer_address: String,
}

/// How long a member whose removal applied goes on (passing on what it must, its successor's
/// TimeoutNow above all) before it stops, as etcd's removed members do.
const REMOVED_GRACE: Duration = Duration::from_secs(2);

/// How long a removed member stays connected after its removal applied here.
const LINGER: Duration = Duration::from_secs(10);

/// What the server's request handlers share with the node loop.
#[derive(Debug)]
pub struct Shared {
    /// This node.
    pub id: NodeId,
    store: Arc<Store>,
    /// Who keeps the lease clocks (the leader; without one, the keeper the log chose), as
    /// of the last step; 0 if nobody is known to.
    lease_keeper: AtomicU64,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// The membership in force, under a protocol whose membership changes through its log.
    pub membership: std::sync::RwLock<Option<synod_core::Membership>>,
}

impl Shared {
    /// The membership in force, under a protocol whose membership changes through its log.
    pub fn membership(&self) -> Option<synod_core::Membership> {
        self.membership
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether this member is a learner in the membership in force.
    pub fn is_learner(&self) -> bool {
        self.membership
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_some_and(|m| m.is_learner(self.id))
    }

    /// The state machine, for reading. Held briefly: the node loop applies under the write
    /// lock.
    pub fn kv(&self) -> std::sync::RwLockReadGuard<'_, KvStore> {
        self.store.read()
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
    async fn call(&self, call: Call) -> Result<Answer, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Call(call, reply))
            .await
            .map_err(|_| Refusal::Stopped)?;
        match answer.await {
            Ok(Answer::Refused(refusal)) => Err(refusal),
            Ok(answer) => Ok(answer),
            Err(_) => Err(Refusal::Stopped),
        }
    }

    /// Replicates a write and waits until it is applied here. Cancel-safe: dropping the
    /// future abandons the wait, not the write (which may still commit).
    pub async fn propose(&self, request: &Request) -> Result<Applied, Refusal> {
        let started = std::time::Instant::now();
        let answer = self.call(Call::Write(request.encode())).await;
        self.shared.metrics.requests.observe(started.elapsed());
        match answer? {
            Answer::Applied(applied) => Ok(applied),
            _ => Err(Refusal::Stopped),
        }
    }

    /// Waits until the local state machine may answer a read of `consistency`: at once for a
    /// serializable read; for a linearizable one, once the leader confirmed its leadership
    /// and this node applied everything committed when the read arrived (under gossip: once
    /// the read level's replicas answered for `keys`, `None` meaning every key).
    pub async fn read_barrier(
        &self,
        consistency: ReadConsistency,
        keys: Option<synod_core::KeySpan>,
    ) -> Result<(), Refusal> {
        if consistency == ReadConsistency::Serializable {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let answer = self.call(Call::Read(consistency, keys)).await;
        self.shared.metrics.requests.observe(started.elapsed());
        answer.map(|_| ())
    }

    /// Renews a lease on the leader's clock once its leadership is confirmed: its TTL in
    /// seconds, or 0 if the lease is gone or its time is up. "Not the leader" elsewhere.
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, Refusal> {
        match self.call(Call::KeepAlive(lease)).await? {
            Answer::Ttl(ttl) => Ok(ttl),
            _ => Err(Refusal::Stopped),
        }
    }

    /// Seconds left on a lease by the leader's clock (-1: no such lease). "Not the leader"
    /// elsewhere.
    pub async fn time_to_live(&self, lease: i64) -> Result<i64, Refusal> {
        match self.call(Call::TimeToLive(lease)).await? {
            Answer::Ttl(ttl) => Ok(ttl),
            _ => Err(Refusal::Stopped),
        }
    }

    /// Changes the membership; answered with the membership after the change once it applied
    /// here.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<Membership, Refusal> {
        match self.call(Call::ChangeMembership(change)).await? {
            Answer::Membership(membership) => Ok(membership),
            _ => Err(Refusal::Stopped),
        }
    }

    /// Asks the engine to hand leadership to `to` (ignored unless this node leads).
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), Refusal> {
        self.commands
            .send(Command::TransferLeadership(to))
            .await
            .map_err(|_| Refusal::Stopped)
    }

    /// The engine's status now.
    pub fn current_status(&self) -> Status {
        *self.status.borrow()
    }

    /// The node that keeps the lease clocks, where lease calls belong: the leader, or under
    /// a protocol without one, the keeper the log chose.
    pub fn lease_keeper(&self) -> Option<NodeId> {
        let keeper = self.shared.lease_keeper.load(Ordering::Relaxed);
        (keeper != 0).then_some(NodeId(keeper))
    }
}

/// A store decoded from a snapshot from the leader, or why it could not be.
type Loaded = Result<KvStore, DecodeError>;

/// The node loop's state.
pub struct Node<E: Engine> {
    replica: Replica<E, Reply>,
    shared: Arc<Shared>,
    transport: Transport<PeerMessage<E::Message>>,
    inbound: mpsc::Receiver<Inbound<PeerMessage<E::Message>>>,
    commands: mpsc::Receiver<Command>,
    disk: Disk,
    disk_events: mpsc::UnboundedReceiver<DiskEvent>,
    /// Stores decoded from snapshots from the leader, on a thread of their own each
    /// (`Output::LoadSnapshot`).
    loaded: (
        mpsc::UnboundedSender<Loaded>,
        mpsc::UnboundedReceiver<Loaded>,
    ),
    status: watch::Sender<Status>,
    revision: watch::Sender<i64>,
    options: NodeOptions,
    /// The replica's monotonic clock starts here.
    booted: Instant,
    /// When the last input was handed to the replica.
    stepped_at: Instant,
    out: Vec<Output<E::Message, Reply>>,
    /// Set when the node must stop: it cannot go on without diverging or losing data.
    fatal: Option<String>,
    /// The membership last applied here (committed).
    applied_membership: Option<Membership>,
    /// Whether a membership applied here listed this member (so one without it removed it).
    was_member: bool,
    /// When this member's removal applied here.
    removed_at: Option<Instant>,
    /// When a removed member last said it still owes a handover.
    owing_said: Option<Instant>,
    /// The peers to connect to changed during this batch of outputs.
    members_changed: bool,
    /// Members removed lately, still connected until their removal has reached them.
    lingering: std::collections::BTreeMap<NodeId, (String, Instant)>,
}

/// Commands taken from the queue per step at most.
const COMMAND_BATCH_MAX: usize = 4096;

impl<E> Node<E>
where
    E: Engine + Send + 'static,
    E::Message: Wire + Send + 'static,
{
    /// Builds the node around `engine` and the store it booted with.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        options: NodeOptions,
        engine: E,
        store: KvStore,
        snapshot_era: u64,
        transport: Transport<PeerMessage<E::Message>>,
        inbound: mpsc::Receiver<Inbound<PeerMessage<E::Message>>>,
        disk: Disk,
        disk_events: mpsc::UnboundedReceiver<DiskEvent>,
        metrics: Arc<Metrics>,
    ) -> (Node<E>, NodeHandle) {
        let replica_options = ReplicaOptions {
            id: options.id,
            peers: options.peers.clone(),
            own_client_id: boot_client_id(options.id),
            snapshot_every: options.snapshot_every,
            tick_us: options.tick.as_micros() as u64,
            election_timeout_us: options.election_timeout.as_micros() as u64,
            lease_bugs: LeaseBugs::NONE,
            attributes: Some(Attributes {
                name: options.name.clone(),
                client_urls: vec![options.client_url.clone()],
            }),
        };
        let replica = Replica::new(engine, store, snapshot_era, replica_options);
        // What this member applied before it stopped: a removal pending then still needs the
        // member being removed connected, and a member listed there is one (not yet removed).
        let applied_membership = replica
            .engine()
            .membership_at(replica.store().read().applied_index());
        let was_member = applied_membership
            .as_ref()
            .is_some_and(|m| m.contains(options.id))
            && options.joining.is_none();
        // A member removed (and told so) before it stopped still owes what it owed then: a
        // gossip member hands over again, then stops; any other stops after the grace period.
        // (The membership applied, not the newest in the log: a removal not yet committed may
        // still be cut.)
        let removed_at = applied_membership
            .as_ref()
            .is_some_and(|m| {
                !m.members.is_empty() && !m.contains(options.id) && options.id.0 < m.next_id
            })
            .then(Instant::now);
        // Under a leaderless protocol the members take removed members back (see
        // `connect_members`), from the start.
        if !E::ORDERS_WRITES {
            if let Some(m) = replica.membership() {
                transport.admit_former_members(m.next_id);
            }
        }
        let (commands_tx, commands) = mpsc::channel(COMMAND_BATCH_MAX * 4);
        let (status, status_rx) = watch::channel(replica.status());
        let (revision, revision_rx) = watch::channel(replica.store().read().revision());
        let shared = Arc::new(Shared {
            id: options.id,
            store: replica.store().clone(),
            lease_keeper: AtomicU64::new(0),
            metrics,
            membership: std::sync::RwLock::new(replica.membership().cloned()),
        });
        let node = Node {
            replica,
            shared: shared.clone(),
            transport,
            inbound,
            commands,
            disk,
            disk_events,
            loaded: mpsc::unbounded_channel(),
            status,
            revision,
            options,
            booted: Instant::now(),
            stepped_at: Instant::now(),
            out: Vec::new(),
            fatal: None,
            applied_membership,
            was_member,
            removed_at,
            owing_said: None,
            members_changed: false,
            lingering: std::collections::BTreeMap::new(),
        };
        let handle = NodeHandle {
            commands: commands_tx,
            shared,
            status: status_rx,
            revision: revision_rx,
        };
        (node, handle)
    }

    /// The transport, for metrics.
    pub fn transport(&self) -> &Transport<PeerMessage<E::Message>> {
        &self.transport
    }

    /// Runs until `stop` fires or the node cannot go on (its disk failed). Either way, what
    /// is queued for the disk is written and synced before this returns.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        let mut ticker = tokio::time::interval(self.options.tick.div_f64(self.options.clock_rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut outcome = Ok(());
        loop {
            let mut out = std::mem::take(&mut self.out);
            tokio::select! {
                _ = ticker.tick() => {
                    self.clock();
                    self.replica.tick(&mut out);
                }
                Some(Inbound { from, message }) = self.inbound.recv() => {
                    self.clock();
                    self.replica.receive(from, message, &mut out);
                }
                Some(first) = self.commands.recv() => {
                    self.clock();
                    self.on_commands(first, &mut out);
                }
                Some(decoded) = self.loaded.1.recv() => {
                    self.clock();
                    self.replica.snapshot_loaded(decoded, &mut out);
                }
                event = self.disk_events.recv() => match event {
                    Some(event) => {
                        self.clock();
                        self.on_disk(event, &mut out);
                    }
                    None => self.fatal = Some("the disk thread stopped".to_string()),
                },
                _ = housekeeping.tick() => {
                    self.forget_abandoned();
                    self.clock();
                    let lingered = self.lingering.len();
                    self.lingering.retain(|_, (_, since)| since.elapsed() < LINGER);
                    if self.lingering.len() != lingered {
                        self.connect_members();
                    }
                    self.stop_if_removed();
                }
                _ = stop.changed() => break,
            }
            self.carry_out(&mut out);
            self.out = out;
            if let Some(reason) = self.fatal.take().or_else(|| self.replica.take_fatal()) {
                error!(node = %self.options.id, reason = %reason, "the node stops");
                outcome = Err(reason);
                break;
            }
        }
        self.disk.close();
        for reply in self.replica.drain_waiters() {
            let _ = reply.sender.send(Answer::Refused(Refusal::Stopped));
        }
        info!(node = %self.options.id, "node loop stopped");
        outcome
    }

    /// Reads the monotonic clock for the replica (its lease clocks), now that an input came.
    fn clock(&mut self) {
        self.stepped_at = Instant::now();
        let now = self.stepped_at.duration_since(self.booted);
        // A skewed node (fault tests) reads its lease clocks as fast or slow as it ticks.
        self.replica
            .set_clock((now.as_micros() as f64 * self.options.clock_rate) as u64);
    }

    fn on_commands(&mut self, first: Command, out: &mut Vec<Output<E::Message, Reply>>) {
        let mut calls = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(command) = next.take() {
            taken += 1;
            match command {
                Command::Call(call, sender) => {
                    let write = matches!(call, Call::Write(_));
                    let id = self.replica.next_request_id();
                    let waiter = Reply { sender, write };
                    calls.push(ClientCall { id, waiter, call });
                }
                Command::TransferLeadership(to) => self.replica.transfer_leadership(to, out),
            }
            if taken < COMMAND_BATCH_MAX {
                next = self.commands.try_recv().ok();
            }
        }
        self.replica.submit(calls, out);
    }

    fn on_disk(&mut self, event: DiskEvent, out: &mut Vec<Output<E::Message, Reply>>) {
        match event {
            DiskEvent::Durable(id) => self.replica.persisted(id, out),
            DiskEvent::SnapshotWritten(snapshot) => self.disk.compact(snapshot),
            DiskEvent::SnapshotSaved(snapshot) => {
                info!(
                    index = snapshot.meta.index,
                    bytes = snapshot.data.len(),
                    "saved a snapshot"
                );
                self.replica.snapshot_saved(snapshot, out);
            }
            DiskEvent::Failed(reason) => self.fatal = Some(format!("the disk failed: {reason}")),
        }
    }

    /// Decodes the store in a snapshot from the leader on a thread of its own: the node loop
    /// goes on (the engine answers its peers) while it takes seconds for millions of keys.
    fn load_snapshot(&mut self, snapshot: Snapshot) {
        info!(
            index = snapshot.meta.index,
            bytes = snapshot.data.len(),
            "loading a snapshot from the leader"
        );
        let loaded = self.loaded.0.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot-load".to_string())
            .spawn(move || {
                crate::disk::yield_to_the_node_loop();
                // The node loop may have stopped meanwhile: then nobody waits for the store.
                let _ = loaded.send(KvStore::restore(&snapshot.data));
            });
        if let Err(e) = spawned {
            self.fatal = Some(format!("cannot start a thread to load a snapshot: {e}"));
        }
    }

    /// Carries out the replica's outputs in order, then publishes what changed.
    fn carry_out(&mut self, out: &mut Vec<Output<E::Message, Reply>>) {
        let mut applied = false;
        // A send the transport could not queue may refuse requests: more outputs.
        while !out.is_empty() {
            for output in std::mem::take(out) {
                match output {
                    Output::Persist(persist) => self.disk.persist(persist),
                    Output::Send { to, message } => {
                        if let Err(message) = self.transport.send(to, message) {
                            self.replica.undeliverable(to, message, out);
                        }
                    }
                    Output::Answer { waiter, answer } => {
                        if waiter.write {
                            let counter = match &answer {
                                Answer::Applied(_) => &self.shared.metrics.proposals_committed,
                                _ => &self.shared.metrics.proposals_failed,
                            };
                            counter.inc();
                        }
                        let _ = waiter.sender.send(answer);
                    }
                    Output::Applied { .. } => applied = true,
                    Output::Membership(membership) => self.on_membership(membership),
                    Output::MembershipApplied(membership) => self.on_membership_applied(membership),
                    Output::LoadSnapshot(snapshot) => self.load_snapshot(snapshot),
                    Output::Restored(meta) => {
                        applied = true;
                        info!(index = meta.index, "installed a snapshot from the leader");
                    }
                    Output::SaveSnapshot {
                        meta,
                        membership,
                        store,
                    } => self.disk.save_snapshot(meta, membership, store),
                }
            }
        }
        if applied {
            let kv = self.shared.kv();
            let revision = kv.revision();
            self.shared
                .metrics
                .apply_index
                .set(kv.applied_index() as i64);
            drop(kv);
            self.shared.metrics.apply.observe(self.stepped_at.elapsed());
            self.revision.send_if_modified(|current| {
                let changed = *current != revision;
                *current = revision;
                changed
            });
        }
        if std::mem::take(&mut self.members_changed) {
            self.connect_members();
        }
        self.publish_status();
    }

    /// A removed member stops after the grace period, and under gossip only once it has
    /// handed over what only it may hold (the members keep admitting it for that), saying
    /// every `LINGER` that it still owes.
    fn stop_if_removed(&mut self) {
        let Some(at) = self.removed_at else {
            return;
        };
        if at.elapsed() < REMOVED_GRACE {
            return;
        }
        if self.replica.engine().owes_handover() {
            if self.owing_said.is_none_or(|said| said.elapsed() >= LINGER) {
                warn!("this member was removed and still hands over what it holds to the members; it stops once they hold it");
                self.owing_said = Some(Instant::now());
            }
            return;
        }
        self.fatal = Some("this member was removed from the cluster".into());
    }

    /// A membership change applied (committed): a joining member's identity may be confirmed
    /// (or shown wrong); a member removed stops after a grace period; members removed are let go.
    fn on_membership_applied(&mut self, membership: Membership) {
        let me = self.options.id;
        if let Some(check) = &self.options.joining {
            match crate::identity::confirm(&membership, me, &check.peer_address) {
                Ok(true) => {
                    match crate::identity::keep(&check.data_dir, &check.identity) {
                        Ok(()) => {
                            info!(id = %me, "joined: the membership confirms this member's id")
                        }
                        Err(e) => self.fatal = Some(e),
                    }
                    self.options.joining = None;
                }
                Ok(false) => {}
                Err(e) => self.fatal = Some(e),
            }
        }
        if membership.contains(me) {
            self.was_member = true;
        } else if self.was_member && self.removed_at.is_none() {
            error!(
                "this member was removed from the cluster; it stops in {:?} (under gossip, once it has handed over what it holds)",
                REMOVED_GRACE
            );
            self.removed_at = Some(Instant::now());
        }
        // Members this change removed stay connected a while: the leader still tells them
        // that their removal committed.
        if let Some(before) = &self.applied_membership {
            for (id, address) in crate::identity::peers_of(before, me) {
                if !membership.contains(id) {
                    self.lingering.insert(id, (address, Instant::now()));
                }
            }
        }
        self.applied_membership = Some(membership);
        // After this batch of outputs: a removed member's last messages go out first.
        self.members_changed = true;
    }

    /// Connects to every member of the membership in force and of the one last applied: a
    /// member being removed must still hear the entry that removes it, and the leader's word
    /// once it commits (the removed leader hands over with it).
    fn connect_members(&mut self) {
        let me = self.options.id;
        let mut peers = std::collections::BTreeMap::new();
        for membership in [&self.applied_membership, &self.shared.membership()]
            .into_iter()
            .flatten()
        {
            peers.extend(crate::identity::peers_of(membership, me));
        }
        for (&id, (address, _)) in &self.lingering {
            peers.entry(id).or_insert_with(|| address.clone());
        }
        // A joining member catching up through memberships from before it was added keeps
        // talking to whoever dialled it (the leader among them) until it is a member.
        let open = self.options.joined && !self.shared.membership().is_some_and(|m| m.contains(me));
        // Under a leaderless protocol a removed member may hold writes only it took: it may
        // still connect, to hear of its removal and hand them over, however long it was away.
        if !E::ORDERS_WRITES {
            if let Some(membership) = self.shared.membership() {
                self.transport.admit_former_members(membership.next_id);
            }
        }
        self.transport.set_peers(&peers, open);
    }

    /// The membership in force changed: connect to whoever is in it now.
    fn on_membership(&mut self, membership: synod_core::Membership) {
        info!(%membership, "the membership in force changed");
        if !membership.contains(self.options.id) && !membership.members.is_empty() {
            warn!("this member is not in the membership in force: it was removed, or has not been added yet");
        }
        *self
            .shared
            .membership
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(membership);
        self.connect_members();
    }

    fn publish_status(&mut self) {
        let keeper = self.replica.lease_keeper().map_or(0, |k| k.0);
        if self.shared.lease_keeper.swap(keeper, Ordering::Relaxed) != keeper {
            self.shared.metrics.lease_keeper.set(keeper as i64);
        }
        let status = self.replica.status();
        let previous = *self.status.borrow();
        if status == previous {
            return;
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
        if status.role != previous.role && status.role == synod_core::Role::Leader {
            info!(node = %status.id, era = status.era, "leading");
        }
        let _ = self.status.send(status);
    }

    fn forget_abandoned(&mut self) {
        self.replica.forget_abandoned();
        let queued = self.replica.sends_held();
        if queued > 100_000 {
            warn!(queued, "many sends wait for the disk");
        }
    }
}

/// A server request id for this boot: the top bit set (so sessions ignore it), then bits from
/// the clock and the node id, so two lives of one node do not reuse ids.
fn boot_client_id(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = (nanos ^ id.0.rotate_left(48)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    synod_core::ClientId::UNTRACKED_FROM | (mixed >> 1)
}
