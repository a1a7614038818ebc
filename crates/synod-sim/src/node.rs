//! One simulated server: the engine, its state machine and its disk, and how the node carries
//! out the engine's actions under the contract's rules (persist before send; completions in
//! order). This is the simulator's stand-in for the tokio runtime of the real server.

use std::collections::HashMap;

use bytes::Bytes;
use synod_core::{
    Action, Entry, Input, NodeId, Payload, Persist, PersistId, Rejection, RequestId, SendGate,
    Snapshot, SnapshotMeta, Status,
};
use synod_kv::{KvStore, RangeRequest, Request};

use crate::disk::{NodeDisk, Unsynced};
use crate::protocol::Protocol;
use crate::report::ViolationKind;
use crate::world::{ClientRequest, Event, Reply, World};
use crate::SimTime;

/// A state machine as every simulated node starts it. The history window is kept short: the
/// simulator checks replication, not reads in the past, and snapshots (which carry the
/// history) must stay small enough to cross a lossy network in 256-byte chunks.
fn new_store() -> KvStore {
    KvStore::with_limits(synod_kv::Sessions::DEFAULT_LIMIT, 32)
}

/// Bytes of snapshot per engine message: small, so that transfers take many messages and can
/// be interrupted.
const SNAPSHOT_CHUNK_BYTES: usize = 256;

/// One simulated server: an engine while up, and what survives it when down.
pub(crate) struct SimNode<P: Protocol> {
    pub(crate) id: NodeId,
    pub(crate) engine: Option<P>,
    /// Bumped at every crash; events of an earlier life are ignored.
    pub(crate) incarnation: u64,
    /// The disk refused to open after the nemesis damaged it: the node stays down.
    pub(crate) dead: bool,
    /// The nemesis damaged this disk since it was last opened.
    pub(crate) damaged: bool,
    /// The nemesis cuts the power while this node's next write is on its way to the disk.
    pub(crate) power_loss_armed: bool,
    pub(crate) kv: KvStore,
    /// Era of the last entry the state machine applied (a snapshot's era).
    applied_era: u64,
    /// Index of the newest snapshot this node holds.
    snapshot_index: u64,
    pub(crate) disk: NodeDisk,
    /// The disk's last sync scheduled: when it starts and when it ends.
    disk_sync: (SimTime, SimTime),
    /// Sends waiting for the persists before them (persist before send).
    sends: SendGate<P::Message>,
    pub(crate) waiting_writes: HashMap<RequestId, u64>,
    pub(crate) waiting_reads: HashMap<RequestId, (u64, Bytes)>,
    pub(crate) tick_us: SimTime,
    pub(crate) status: Option<Status>,
}

impl<P: Protocol> SimNode<P> {
    pub(crate) fn new(
        id: NodeId,
        tick_us: SimTime,
        storage_bugs: synod_storage::InjectedBugs,
    ) -> SimNode<P> {
        SimNode {
            id,
            engine: None,
            incarnation: 0,
            dead: false,
            damaged: false,
            power_loss_armed: false,
            kv: new_store(),
            applied_era: 0,
            snapshot_index: 0,
            disk: NodeDisk::new(id.0, storage_bugs),
            disk_sync: (0, 0),
            sends: SendGate::default(),
            waiting_writes: HashMap::new(),
            waiting_reads: HashMap::new(),
            tick_us,
            status: None,
        }
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
                return self.trace_line(|| format!("{id} refuses to start: {e}"));
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
        let seed = self
            .config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(id.0 * 7919 + self.node(id).incarnation);
        let boot = synod_replica::Boot {
            id,
            voters: &self.voters,
            seed,
            timing: synod_replica::Timing::default(),
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
        let kv = match &recovered.snapshot {
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
        let node = self.node_mut(id);
        node.damaged = false;
        node.applied_era = recovered.snapshot.as_ref().map_or(0, |s| s.meta.era);
        node.snapshot_index = kv.applied_index();
        node.kv = kv;
        node.status = Some(engine.status());
        node.engine = Some(engine);
        node.sends.reset();
        let (tick, incarnation) = (node.tick_us, node.incarnation);
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
        let node = &mut self.nodes[id.0 as usize - 1];
        let Some(engine) = node.engine.take() else {
            return false;
        };
        self.stats.preemptions += engine.preemptions();
        node.status = None;
        node.incarnation += 1;
        let garbage = node.disk.crash(&mut self.disk_rng, unsynced);
        node.sends.reset();
        node.waiting_writes.clear();
        node.waiting_reads.clear();
        node.disk_sync = (0, 0);
        node.power_loss_armed = false;
        self.stats.crashes += 1;
        self.trace_line(|| format!("{id} crashes"));
        garbage
    }

    pub(crate) fn restart(&mut self, id: NodeId) {
        if self.node(id).engine.is_some() || self.node(id).dead {
            return;
        }
        self.trace_line(|| format!("{id} restarts"));
        self.boot(id);
    }

    pub(crate) fn is_up(&self, id: NodeId) -> bool {
        self.node(id).engine.is_some()
    }

    pub(crate) fn carry_out(&mut self, id: NodeId, action: Action<P::Message>) {
        match action {
            Action::Persist(persist) => self.submit_persist(id, persist),
            Action::Send { to, message } => {
                if let Some((to, message)) = self.node_mut(id).sends.send(to, message) {
                    self.transmit(id, to, message);
                }
            }
            Action::Apply(entry) => self.apply(id, entry),
            Action::Restore(snapshot) => self.restore(id, snapshot),
            Action::ReadReady(request) => self.answer_read(id, request),
            Action::Reject {
                id: request,
                reason,
            } => self.answer_rejection(id, request, reason),
        }
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
        let node = self.node_mut(id);
        node.sends.issued(persist.id);
        let incarnation = node.incarnation;
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
        let node = self.node_mut(id);
        if let Err(e) = node.disk.sync() {
            return self.fail(
                ViolationKind::Safety,
                format!("{id} cannot sync its log: {e}"),
            );
        }
        let released = node.sends.durable(done);
        // The engine hears of the persist first, so a checker sees the state as durable when
        // the messages that depend on it leave (the network does not keep order anyway).
        self.step(id, Input::Persisted(done));
        for (to, message) in released {
            self.transmit(id, to, message);
        }
    }

    /// State Machine Safety (paper Figure 3): no two nodes apply different commands at one
    /// index. (The era may differ: Paxos learns a decided value under later ballots too; Raft's
    /// terms are checked by log matching.) Then the entry runs on this node's state machine
    /// and its client, if waiting here, gets the answer.
    fn apply(&mut self, id: NodeId, entry: Entry) {
        let position = entry.index as usize - 1;
        match self.safety.applied.get(position) {
            Some(first) if first.payload != entry.payload => {
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
                    if let Some(crashed) = self.leader_crashed_at.take() {
                        self.stats.leader_crash_stalls_us.push(self.now - crashed);
                    }
                }
                self.trace_line(|| format!("{id} commits {entry}"));
                self.safety.applied.push(entry.clone());
            }
        }
        let node = self.node_mut(id);
        node.applied_era = entry.era;
        let Some((request, result)) = node.kv.apply(&entry) else {
            return;
        };
        if let Some(client) = node.waiting_writes.remove(&request) {
            self.reply(id, client, request, Reply::Done(result));
        }
    }

    /// The state machine is replaced by a snapshot received from the leader.
    fn restore(&mut self, id: NodeId, snapshot: Snapshot) {
        let kv = match KvStore::restore(&snapshot.data) {
            Ok(kv) if kv.applied_index() == snapshot.meta.index => kv,
            Ok(kv) => {
                let detail = format!(
                    "{id} got a snapshot through {} holding state through {}",
                    snapshot.meta.index,
                    kv.applied_index()
                );
                return self.fail(ViolationKind::Safety, detail);
            }
            Err(e) => {
                return self.fail(
                    ViolationKind::Safety,
                    format!("{id} got a snapshot that does not decode: {e}"),
                )
            }
        };
        let node = self.node_mut(id);
        node.kv = kv;
        node.applied_era = snapshot.meta.era;
        node.snapshot_index = snapshot.meta.index;
        self.stats.snapshots_installed += 1;
        self.trace_line(|| format!("{id} installs a snapshot through {}", snapshot.meta.index));
    }

    /// Every `snapshot_every` applied entries a node snapshots its state machine, saves it,
    /// compacts its log and tells the engine, as the real server does.
    pub(crate) fn maybe_snapshot(&mut self, id: NodeId) {
        let every = self.config.snapshot_every;
        let node = self.node_mut(id);
        let applied = node.kv.applied_index();
        if every == 0 || node.engine.is_none() || applied < node.snapshot_index + every {
            return;
        }
        let meta = SnapshotMeta {
            index: applied,
            era: node.applied_era,
        };
        let snapshot = Snapshot {
            meta,
            data: Bytes::from(node.kv.snapshot()),
        };
        if let Err(e) = node.disk.save_snapshot(&snapshot) {
            return self.fail(
                ViolationKind::Safety,
                format!("{id} cannot save a snapshot: {e}"),
            );
        }
        node.snapshot_index = applied;
        self.stats.snapshots_taken += 1;
        self.trace_line(|| format!("{id} snapshots through {applied}"));
        self.step(id, Input::Snapshotted(snapshot));
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
        self.reply(id, client, request, Reply::Done(applied));
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

    pub(crate) fn on_client_request(&mut self, id: NodeId, client: u64, request: ClientRequest) {
        if !self.is_up(id) {
            return;
        }
        self.trace_line(|| match &request {
            ClientRequest::Write(rid, _) => format!("c{client} -> {id} write {rid}"),
            ClientRequest::Read(rid, _) => format!("c{client} -> {id} read {rid}"),
        });
        match request {
            ClientRequest::Write(request_id, command) => {
                self.node_mut(id).waiting_writes.insert(request_id, client);
                let proposal = synod_core::Proposal {
                    id: request_id,
                    command: Request::encode(&command),
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
}
