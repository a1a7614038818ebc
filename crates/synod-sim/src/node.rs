//! One simulated server: the replica (the server's own, from `synod-replica`: engine, store,
//! forwarding, read barriers, lease clocks, snapshot scheduling) and its disk, and how the
//! simulator carries out the replica's outputs: persists go to the simulated disk, sends to
//! the simulated network, answers to the simulated clients. This is the simulator's stand-in
//! for the tokio shell of the real server.

use bytes::Bytes;
use synod_core::codec::DecodeError;
use synod_core::{Entry, NodeId, Payload, Persist, PersistId, RequestId, Snapshot, Status};
use synod_kv::{KvStore, RangeRequest, Request};
use synod_replica::{
    Answer, Attributes, Call, ClientCall, Output, PeerMessage, Refusal, Replica, ReplicaOptions,
    Waiter,
};

use crate::disk::{NodeDisk, Unsynced};
use crate::protocol::{Invariants, Protocol};
use crate::report::ViolationKind;
use crate::world::{ClientRequest, Event, Reply, World};
use crate::{SimTime, TICK_US};

/// A state machine as every simulated node starts it. The history window is kept short: the
/// simulator checks replication, not reads in the past, and snapshots (which carry the
/// history) must stay small enough to cross a lossy network in 256-byte chunks.
fn new_store() -> KvStore {
    KvStore::with_limits(synod_kv::Sessions::DEFAULT_LIMIT, 32)
}

/// Bytes of snapshot per engine message: small, so that transfers take many messages and can
/// be interrupted.
const SNAPSHOT_CHUNK_BYTES: usize = 256;

/// Who waits for a replica's answer: a simulated client, and for a read the key it reads.
#[derive(Clone, Debug)]
pub(crate) struct SimWaiter {
    client: u64,
    request: RequestId,
    read_key: Option<Bytes>,
}

impl Waiter for SimWaiter {}

impl SimWaiter {
    /// The operator, waiting for a membership change.
    pub(crate) fn operator(request: RequestId) -> SimWaiter {
        SimWaiter {
            client: crate::membership::OPERATOR,
            request,
            read_key: None,
        }
    }
}

pub(crate) type SimReplica<P> = Replica<P, SimWaiter>;
pub(crate) type SimOutput<P> = Output<<P as synod_core::Engine>::Message, SimWaiter>;

/// One simulated server: a replica while up, and what survives it when down.
pub(crate) struct SimNode<P: Protocol> {
    pub(crate) id: NodeId,
    pub(crate) replica: Option<SimReplica<P>>,
    /// Bumped at every crash; events of an earlier life are ignored.
    pub(crate) incarnation: u64,
    /// The disk refused to open after the nemesis damaged it: the node stays down.
    pub(crate) dead: bool,
    /// The nemesis damaged this disk since it was last opened.
    pub(crate) damaged: bool,
    /// The nemesis replaced this node's disk with an empty one at least once (a protocol
    /// that rejoins with nothing: gossip).
    pub(crate) replaced: bool,
    /// Removed from the membership, it handed over what it held and stopped for good, as a
    /// removed server does (under a protocol whose removed members may hold writes only
    /// they took: gossip). Unlike a dead node, whatever it acknowledged must be kept.
    pub(crate) left: bool,
    /// The nemesis cuts the power while this node's next write (in this life or, once killed,
    /// the next) is on its way to the disk.
    pub(crate) power_loss_armed: bool,
    pub(crate) disk: NodeDisk,
    /// The disk's last sync scheduled: when it starts and when it ends.
    disk_sync: (SimTime, SimTime),
    pub(crate) tick_us: SimTime,
    pub(crate) status: Option<Status>,
    /// A snapshot from the leader being decoded, as the server does on another thread: the
    /// store is handed over when its `SnapshotLoaded` event comes.
    loading: Option<Result<KvStore, DecodeError>>,
}

impl<P: Protocol> SimNode<P> {
    pub(crate) fn new(
        id: NodeId,
        tick_us: SimTime,
        storage_bugs: synod_storage::InjectedBugs,
    ) -> SimNode<P> {
        SimNode {
            id,
            replica: None,
            incarnation: 0,
            dead: false,
            damaged: false,
            replaced: false,
            left: false,
            power_loss_armed: false,
            disk: NodeDisk::new(id.0, storage_bugs),
            disk_sync: (0, 0),
            tick_us,
            status: None,
            loading: None,
        }
    }

    /// The engine, while the node is up.
    pub(crate) fn engine(&self) -> Option<&P> {
        self.replica.as_ref().map(Replica::engine)
    }

    /// Its monotonic clock: virtual time at this node's clock rate (skewed like its ticks).
    pub(crate) fn clock_us(&self, now: SimTime) -> u64 {
        (u128::from(now) * u128::from(TICK_US) / u128::from(self.tick_us.max(1))) as u64
    }

    /// A copy of the store's state, while the node is up.
    pub(crate) fn store_snapshot(&self) -> Option<(u64, Vec<u8>)> {
        let replica = self.replica.as_ref()?;
        let kv = replica.store().read();
        Some((kv.applied_index(), kv.snapshot()))
    }
}

impl<P: Protocol> World<P> {
    /// Starts a node from its disk: the newest snapshot restores the state machine and the
    /// engine gets its hard state and the log after the snapshot. A disk that fails its checks
    /// after the nemesis damaged it keeps the node down for good; any other failure to start
    /// is a violation.
    pub(crate) fn boot(&mut self, id: NodeId) {
        let recovered = match self.node_mut(id).disk.open(P::NAME) {
            Ok(recovered) => recovered,
            Err(e) if self.node(id).damaged => {
                self.node_mut(id).dead = true;
                self.stats.disks_refused += 1;
                return self.note_line(|| format!("{id} refuses to start: {e}"));
            }
            Err(e) => {
                return self.fail(
                    ViolationKind::Safety,
                    format!("{id} cannot open its disk: {e}"),
                )
            }
        };
        self.stats.torn_writes_repaired += recovered.repairs.len() as u64;
        for repair in &recovered.repairs {
            self.trace_line(|| format!("{id} {repair}"));
        }
        let incarnation = self.node(id).incarnation;
        let seed = self
            .config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(id.0 * 7919 + incarnation);
        let timing = synod_replica::Timing::default();
        // A node that joins knows no membership: it learns it once the operator adds it.
        let joins = self.joins(id);
        let voters: &[NodeId] = if joins { &[] } else { &self.voters };
        let boot = synod_replica::Boot {
            id,
            voters,
            members: None,
            seed,
            timing,
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES,
        };
        let engine = match P::boot(&boot, &recovered, &self.options) {
            Ok(engine) => engine,
            Err(e) => {
                return self.fail(
                    ViolationKind::Safety,
                    format!("{id} cannot restart from its disk: {e}"),
                )
            }
        };
        let store = match &recovered.snapshot {
            Some(s) => match KvStore::restore(&s.data) {
                Ok(kv) => kv,
                Err(e) => {
                    return self.fail(
                        ViolationKind::Safety,
                        format!("{id} snapshot does not decode: {e}"),
                    )
                }
            },
            None => new_store(),
        };
        let options = ReplicaOptions {
            id,
            peers: voters.iter().copied().filter(|&v| v != id).collect(),
            own_client_id: synod_core::ClientId::UNTRACKED_FROM | (id.0 << 32) | incarnation,
            snapshot_every: self.config.snapshot_every,
            tick_us: TICK_US,
            election_timeout_us: timing.election_ticks * TICK_US,
            lease_bugs: self.config.lease_bugs,
            // The members the cluster boots with are listed by id alone (a server's are named
            // by its cluster list); one that joined publishes a name and a client URL, as a
            // server does.
            attributes: joins.then(|| Attributes {
                name: format!("n{}", id.0),
                client_urls: vec![format!("http://n{}:2379", id.0)],
            }),
        };
        let era = recovered.snapshot.as_ref().map_or(0, |s| s.meta.era);
        let replica = Replica::new(engine, store, era, options);
        let checked = self
            .safety
            .protocol
            .after_boot(id, incarnation, replica.engine());
        if let Err(e) = checked {
            return self.fail(ViolationKind::Safety, e);
        }
        let node = self.node_mut(id);
        node.damaged = false;
        node.status = Some(replica.status());
        node.replica = Some(replica);
        let tick = node.tick_us;
        self.schedule(
            tick,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
    }

    /// Stops a node: everything not persisted is lost, its disk keeps what was synced (and,
    /// with disk faults, part of what was not: a torn write).
    pub(crate) fn crash(&mut self, id: NodeId) {
        let unsynced = if self.config.faults.disk {
            Unsynced::Torn
        } else {
            Unsynced::Lost
        };
        self.crash_leaving(id, unsynced);
    }

    /// Stops a node, its unsynced writes treated as `unsynced` says. Returns whether its disk
    /// was left with garbage.
    pub(crate) fn crash_leaving(&mut self, id: NodeId, unsynced: Unsynced) -> bool {
        // A paused process can be killed too: what waited for it is lost with it.
        self.paused.remove(&id);
        let node = &mut self.nodes[id.0 as usize - 1];
        let Some(replica) = node.replica.take() else {
            return false;
        };
        self.stats.preemptions += replica.engine().preemptions();
        node.status = None;
        node.incarnation += 1;
        let garbage = node.disk.crash(&mut self.disk_rng, unsynced);
        node.disk_sync = (0, 0);
        node.power_loss_armed = false;
        node.loading = None;
        self.stats.crashes += 1;
        self.trace_line(|| format!("{id} crashes"));
        garbage
    }

    /// Whether `id` boots knowing no membership, to join the cluster: a spare, or a member
    /// whose disk was replaced by an empty one (it joins again, as a server does with
    /// `--initial-cluster-state existing`).
    pub(crate) fn joins(&self, id: NodeId) -> bool {
        self.spares.contains(&id) || (self.node(id).replaced && P::CHANGES_MEMBERSHIP)
    }

    pub(crate) fn restart(&mut self, id: NodeId) {
        if self.node(id).replica.is_some() || self.node(id).dead || self.node(id).left {
            return;
        }
        self.trace_line(|| format!("{id} restarts"));
        self.boot(id);
    }

    pub(crate) fn is_up(&self, id: NodeId) -> bool {
        self.node(id).replica.is_some()
    }

    /// Carries out a replica's outputs in order. A snapshot is saved at once, and the replica
    /// hears so in a step of its own, after these outputs (checked like any other step).
    pub(crate) fn carry_out(&mut self, id: NodeId, out: &mut Vec<SimOutput<P>>) {
        let mut saved = None;
        for output in out.drain(..) {
            if self.violation.is_some() || !self.is_up(id) {
                return;
            }
            match output {
                Output::Persist(persist) => self.submit_persist(id, persist),
                Output::Send { to, message } => self.transmit(id, to, message),
                Output::Answer { waiter, answer } => self.answer(id, waiter, answer),
                Output::Applied { entry, took_effect } => {
                    self.check_applied(id, entry, took_effect)
                }
                Output::Membership(membership) => {
                    self.note_line(|| format!("{id} runs with membership {membership}"));
                }
                Output::MembershipApplied(_) => {}
                Output::LoadSnapshot(snapshot) => self.load_snapshot(id, &snapshot),
                Output::Restored(meta) => {
                    self.stats.snapshots_installed += 1;
                    self.note_line(|| format!("{id} installs a snapshot through {}", meta.index));
                }
                Output::SaveSnapshot {
                    meta,
                    membership,
                    store,
                } => {
                    let snapshot = Snapshot {
                        membership,
                        meta,
                        data: Bytes::from(store.snapshot()),
                    };
                    if let Err(e) = self.node_mut(id).disk.save_snapshot(&snapshot) {
                        return self.fail(
                            ViolationKind::Safety,
                            format!("{id} cannot save a snapshot: {e}"),
                        );
                    }
                    self.stats.snapshots_taken += 1;
                    self.note_line(|| format!("{id} snapshots through {}", meta.index));
                    saved = Some(snapshot);
                }
            }
        }
        if let Some(snapshot) = saved {
            self.step(id, |replica, out| replica.snapshot_saved(snapshot, out));
        }
    }

    /// Decodes a snapshot from the leader now, and hands the store over a while later: the
    /// server decodes on another thread, so a member's engine goes on (and its clients
    /// wait) while a snapshot loads.
    fn load_snapshot(&mut self, id: NodeId, snapshot: &Snapshot) {
        self.node_mut(id).loading = Some(KvStore::restore(&snapshot.data));
        let incarnation = self.node(id).incarnation;
        // About a second per million keys on the server; here up to a few ticks, so engine
        // messages, ticks and client requests arrive while the store is not there.
        let delay = self.disk_rng.range_inclusive(1_000, 5 * TICK_US);
        self.schedule(
            delay,
            Event::SnapshotLoaded {
                node: id,
                incarnation,
            },
        );
    }

    /// The store of the snapshot a node was loading is decoded.
    pub(crate) fn on_snapshot_loaded(&mut self, id: NodeId, incarnation: u64) {
        if self.node(id).incarnation != incarnation || !self.is_up(id) {
            return;
        }
        let Some(decoded) = self.node_mut(id).loading.take() else {
            return;
        };
        self.step(id, |replica, out| replica.snapshot_loaded(decoded, out));
    }

    /// Hands a persist to the disk at once (unsynced, so a crash may lose or tear it) and
    /// schedules its sync. Syncs are group commits, as the server's disk thread does them: a
    /// write joins the next sync that has not started yet, and one sync follows another.
    fn submit_persist(&mut self, id: NodeId, persist: Persist) {
        if let Err(e) = self.node_mut(id).disk.write(&persist) {
            return self.fail(
                ViolationKind::Safety,
                format!("{id} cannot write its log: {e}"),
            );
        }
        let now = self.now;
        let (start, end) = self.node(id).disk_sync;
        let done_at = if start > now {
            end
        } else {
            // An fdatasync on a real disk takes from a tenth of a millisecond to a few.
            let begin = end.max(now);
            let end = begin + self.disk_rng.range_inclusive(100, 3_000);
            self.node_mut(id).disk_sync = (begin, end);
            end
        };
        let incarnation = self.node(id).incarnation;
        self.stats.persists += 1;
        self.stats.state_bytes_persisted += persist.hard_state.as_ref().map_or(0, Vec::len) as u64
            + persist.journal.iter().map(|r| r.len() as u64).sum::<u64>();
        self.schedule(
            done_at - now,
            Event::DiskDone {
                node: id,
                incarnation,
                id: persist.id,
            },
        );
        if std::mem::take(&mut self.node_mut(id).power_loss_armed) {
            let before_sync = self.disk_rng.range(0, done_at - now);
            let power_loss = Event::PowerLoss {
                node: id,
                incarnation,
            };
            self.schedule(before_sync, power_loss);
        }
    }

    /// The disk finished: everything handed to it so far is durable (group commit).
    pub(crate) fn on_disk_done(&mut self, id: NodeId, incarnation: u64, done: PersistId) {
        if self.node(id).incarnation != incarnation || !self.is_up(id) {
            return;
        }
        if let Err(e) = self.node_mut(id).disk.sync() {
            return self.fail(
                ViolationKind::Safety,
                format!("{id} cannot sync its log: {e}"),
            );
        }
        if let Some(timeline) = &mut self.timeline {
            timeline.node_event(self.now, "sync", id);
        }
        self.step(id, |replica, out| replica.persisted(done, out));
    }

    /// State Machine Safety (paper Figure 3): no two nodes apply different commands at one
    /// index. (The era may differ: Paxos learns a decided value under later ballots too; Raft's
    /// terms are checked by log matching.)
    fn check_applied(&mut self, id: NodeId, entry: Entry, took_effect: bool) {
        if !P::ORDERS_WRITES {
            return self.check_applied_unordered(id, entry);
        }
        let position = entry.index as usize - 1;
        match self.safety.applied.get(position) {
            Some(first) if first.payload != entry.payload => {
                let detail =
                    format!("state machine safety: {id} applies {entry} where {first} was applied");
                self.fail(ViolationKind::Safety, detail);
            }
            Some(_) => {}
            None => {
                assert_eq!(
                    position,
                    self.safety.applied.len(),
                    "entries are applied in order"
                );
                if let Payload::Command(command) = &entry.payload {
                    self.stats.committed_commands += 1;
                    if let Some(crashed) = self.leader_crashed_at.take() {
                        self.stats.leader_crash_stalls_us.push(self.now - crashed);
                    }
                    self.on_committed_command(entry.index, command, took_effect);
                }
                self.trace_line(|| format!("{id} commits {entry}"));
                self.freshness.applied(&entry, true, self.now);
                self.safety.applied.push(entry);
            }
        }
    }

    /// Without one order of writes (gossip) each node applies under indices of its own:
    /// versions only move forward per key, and freshness is counted by version.
    fn check_applied_unordered(&mut self, id: NodeId, entry: Entry) {
        let incarnation = self.node(id).incarnation;
        if let Err(e) = self.safety.versions.applied(id, incarnation, &entry) {
            return self.fail(ViolationKind::Safety, e);
        }
        if entry.proposal().is_some_and(|p| p.id.client.is_tracked()) {
            self.stats.committed_commands += 1;
        }
        self.trace_line(|| format!("{id} applies {entry}"));
        self.freshness.applied(&entry, false, self.now);
    }

    /// Sends a replica's answer to the client that waits for it.
    fn answer(&mut self, id: NodeId, waiter: SimWaiter, answer: Answer) {
        let SimWaiter {
            client,
            request,
            read_key,
        } = waiter;
        if client == crate::membership::OPERATOR {
            return self.operator_answer(id, answer);
        }
        let reply = match answer {
            Answer::Applied(applied) => {
                if !P::ORDERS_WRITES {
                    self.safety.versions.acknowledged(request, id);
                }
                Reply::Done(Ok(applied))
            }
            Answer::Refused(Refusal::Kv(e)) => Reply::Done(Err(e)),
            Answer::Refused(Refusal::NotLeader(hint)) => Reply::Redirect(hint),
            // As an etcd client that hears "rpc not supported for learner": another member.
            Answer::Refused(Refusal::Learner) => Reply::Redirect(None),
            Answer::Refused(Refusal::Stopped) => return,
            // Not enough replicas: a write that was taken may still spread, so its client
            // waits for its timeout (the outcome is unknown); otherwise it tries again.
            Answer::Refused(Refusal::Unavailable { written: true, .. })
            | Answer::Refused(Refusal::OutcomeUnknown) => return,
            Answer::Refused(Refusal::Unavailable { .. }) => Reply::Redirect(None),
            Answer::Refused(Refusal::Unsupported(why)) => {
                let detail = format!("{id} refused {request} as unsupported: {why}");
                return self.fail(ViolationKind::Safety, detail);
            }
            Answer::Ttl(ttl) => Reply::Ttl(ttl),
            Answer::Membership(_) | Answer::Refused(Refusal::Membership(_)) => {
                let detail =
                    format!("{id} answered client request {request} as a membership change");
                return self.fail(ViolationKind::Safety, detail);
            }
            Answer::Ready => {
                let Some(key) = read_key else { return };
                let Some(replica) = self.node(id).replica.as_ref() else {
                    return;
                };
                let read = RangeRequest {
                    range: synod_kv::KeyRange::key(&key),
                    ..Default::default()
                };
                let store = replica.store().read();
                // The position a read is as of: the applied index, or, without one order of
                // writes, the version of the key the store shows: the engine's, once applied;
                // before, the last one this life applied (or 0, erring stale).
                let position = if P::ORDERS_WRITES {
                    store.applied_index()
                } else {
                    match replica.engine().version_of(&key) {
                        Some((version, at)) if at <= store.applied_index() => version,
                        _ => {
                            let incarnation = self.node(id).incarnation;
                            let versions = &self.safety.versions;
                            versions.applied_version(id, incarnation, &key).unwrap_or(0)
                        }
                    }
                };
                Reply::Read(position, store.range(&read))
            }
        };
        self.reply(id, client, request, reply);
    }

    pub(crate) fn on_client_request(&mut self, id: NodeId, client: u64, request: ClientRequest) {
        if !self.is_up(id) {
            return;
        }
        self.trace_line(|| format!("c{client} -> {id} {request}"));
        let (request_id, call, read_key) = match request {
            ClientRequest::Write(request_id, command) => {
                (request_id, Call::Write(Request::encode(&command)), None)
            }
            ClientRequest::Read(request_id, key) => (
                request_id,
                Call::Read(
                    synod_core::ReadConsistency::Linearizable,
                    Some(synod_core::KeySpan {
                        key: key.clone(),
                        range_end: Bytes::new(),
                    }),
                ),
                Some(key),
            ),
            ClientRequest::KeepAlive(request_id, lease) => {
                (request_id, Call::KeepAlive(lease), None)
            }
        };
        let call = ClientCall {
            id: request_id,
            waiter: SimWaiter {
                client,
                request: request_id,
                read_key,
            },
            call,
        };
        self.step(id, |replica, out| replica.submit(vec![call], out));
    }
}

/// One line describing a peer message, for traces.
pub(crate) fn describe<P: Protocol>(message: &PeerMessage<P::Message>) -> String {
    match message {
        PeerMessage::Engine(m) => P::describe(m),
        PeerMessage::Propose(proposals) => format!("forwarded writes x{}", proposals.len()),
        PeerMessage::ReadIndex(ids) => format!("read index for x{}", ids.len()),
        PeerMessage::ReadReady { ids, index } => format!("reads x{} ready at {index}", ids.len()),
        PeerMessage::Refused { ids, leader } => {
            format!("refused x{}, leader {leader:?}", ids.len())
        }
        PeerMessage::KeeperAlive { era } => format!("lease keeper of era {era:#x} alive"),
        PeerMessage::KeeperHeard { era } => format!("heard the lease keeper of era {era:#x}"),
        PeerMessage::ChangeMembership { change, .. } => format!("membership change {change:?}"),
        PeerMessage::MembershipRefused { refusal, .. } => {
            format!("membership change refused: {refusal}")
        }
    }
}
