//! The gossip engine: writes taken anywhere, versions merged by last writer wins, spread by
//! epidemic pushes and repaired by anti-entropy.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use synod_core::codec::{Decoder, Encoder};
use synod_core::quorum::majority;
use synod_core::{
    Action, ClientId, Engine, Entry, Input, KeySpan, LogIndex, Membership, NodeId, Payload,
    Persist, PersistId, Proposal, ReadConsistency, ReadRequest, Rejection, RequestId, Rng, Role,
    Status,
};
use synod_kv::{DeleteRangeRequest, KeyRange, PutRequest, Request};
use thiserror::Error;

use crate::config::{Config, ConfigError, Level};
use crate::membership::{Agreement, Proposing};
use crate::message::Message;
use crate::store::{Record, Store, BUCKETS};
use crate::swim::Swim;
use crate::version::{Hlc, Version, CLOCK_MAX};

pub(crate) type Out = Vec<Action<Message>>;

/// The journal is restated as one hard state once it outgrows the last restatement (and
/// this).
const RESTATE_BYTES_MIN: usize = 1 << 20;
/// New versions waiting to be pushed, at most; past it the oldest are dropped (anti-entropy
/// repairs what they would have carried).
const RUMORS_MAX: usize = 1 << 16;
/// Writes held at most while the clock is not synced.
const HELD_MAX: usize = 10_000;
/// Hard state format: the agreed membership, then the versions. (Format 1, the versions
/// alone, was followed by journal records of versions without a tag; it is still read.)
const HARD_STATE_FORMAT: u8 = 2;
/// A journal record of a version taken, under format 2.
const JOURNAL_VERSION: u8 = 0;
/// A journal record of the membership agreement, under format 2.
const JOURNAL_AGREEMENT: u8 = 1;

/// Why a node could not start from what its disk holds.
#[derive(Debug, Error)]
pub enum RestartError {
    /// The settings are wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The hard state or a journal record does not decode.
    #[error("gossip state on disk does not decode: {0}")]
    Corrupt(String),
}

/// Something to do once a persist is durable.
#[derive(Debug)]
pub(crate) enum Deferred {
    Apply(Entry),
    Acknowledge(RequestId),
    ReadReady(RequestId),
}

/// A write at QUORUM or ALL waiting for acknowledgements.
#[derive(Debug)]
struct WriteRound {
    id: RequestId,
    records: Vec<Record>,
    /// Replicas holding it durably (this node once its own persist is durable).
    acked: BTreeSet<NodeId>,
    needed: usize,
    deadline: u64,
    last_sent: u64,
    /// The persist that makes this node's own copy durable.
    persist: PersistId,
    /// Messages the records take (each acknowledged on its own).
    batches: usize,
    /// Batches each peer acknowledged.
    batches_acked: BTreeMap<NodeId, BTreeSet<usize>>,
}

/// A read at QUORUM or ALL waiting for replies.
#[derive(Debug)]
struct ReadRound {
    id: RequestId,
    replies: BTreeMap<NodeId, Vec<Record>>,
    needed: usize,
    deadline: u64,
    too_large: bool,
}

/// One gossip node (see the crate documentation).
#[derive(Debug)]
pub struct Gossip {
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    pub(crate) ticks: u64,
    clock: Hlc,
    pub(crate) store: Store,
    pub(crate) swim: Swim,
    /// The membership agreed, and this node's promises and acceptances for the next.
    pub(crate) agreement: Agreement,
    /// The change this node is proposing, if any.
    pub(crate) proposing: Option<Proposing>,
    /// The highest ballot round heard of (a new proposal goes above it).
    pub(crate) round_seen: u64,
    /// The request id of this life's barrier proposal (see membership.rs).
    pub(crate) barrier: RequestId,
    /// Removed: the buckets not yet handed over, with the members that said they hold
    /// everything of each (see membership.rs).
    pub(crate) owed: BTreeMap<u16, BTreeSet<NodeId>>,
    /// When this voter last accepted a value (or started, holding one): one undecided for a
    /// request timeout is proposed again.
    pub(crate) accepted_at: u64,
    /// Whether the next persist restates everything (the disk holds an older format).
    restate_next: bool,
    /// The next local index to apply under.
    pub(crate) next_at: LogIndex,
    /// The highest index applied (durable) so far.
    applied: LogIndex,
    next_persist: u64,
    last_persist: PersistId,
    durable: PersistId,
    deferred: VecDeque<(PersistId, Deferred)>,
    journal_bytes: usize,
    restated_bytes: usize,
    /// Applies owed after a restart: what the disk holds past the state machine's snapshot.
    reapply: Vec<Entry>,
    /// The state machine's newest snapshot covers this index.
    snapshot_index: LogIndex,
    /// Whether this node's clock is known to be above every version it issued before:
    /// false after a start with nothing on disk (a lost disk, or a new node) in a cluster
    /// of several, until a peer's clock or version is seen. Writes wait until then, so a
    /// node that lost its disk never issues a version its earlier life gave another value.
    synced: bool,
    /// Writes that arrived before the clock was synced, with the tick they give up at.
    held: Vec<(Proposal, u64)>,
    /// Peers that said they hold nothing and are not synced either: once they and this
    /// node make a majority, the cluster is new, nobody ever issued a version, and any
    /// clock will do.
    unsynced_peers: BTreeSet<NodeId>,
    rumors: VecDeque<(Bytes, u32)>,
    hints: BTreeMap<NodeId, BTreeSet<Bytes>>,
    hints_dropped: u64,
    next_round: u64,
    writes: BTreeMap<u64, WriteRound>,
    reads: BTreeMap<u64, ReadRound>,
}

impl Gossip {
    /// A node starting from its disk: the hard state and journal (`None` and empty on a
    /// first boot) and the index the state machine's snapshot covers.
    pub fn restart(
        config: Config,
        seed: u64,
        hard_state: Option<&[u8]>,
        journal: &[Vec<u8>],
        snapshot_index: LogIndex,
    ) -> Result<Gossip, RestartError> {
        config.validate()?;
        let corrupt = |e: synod_core::codec::DecodeError| RestartError::Corrupt(e.to_string());
        let mut store = Store::default();
        let boot = Membership::at_boot(config.boot_membership.as_ref(), &config.voters);
        let mut agreement = Agreement::boot(boot);
        // Joining with nothing on disk: this node may have voted in an earlier life and
        // forgotten it (see membership.rs).
        agreement.amnesic = hard_state.is_none() && journal.is_empty() && config.voters.is_empty();
        #[cfg(any(test, feature = "inject-bugs"))]
        if config.bugs.vote_after_disk_loss {
            agreement.amnesic = false;
        }
        let mut restated_bytes = 0;
        let mut format = None;
        if let Some(bytes) = hard_state {
            restated_bytes = bytes.len();
            let mut dec = Decoder::new(bytes);
            let found = dec.u8("hard state format").map_err(corrupt)?;
            if found == HARD_STATE_FORMAT {
                agreement = Agreement::decode(&mut dec).map_err(corrupt)?;
            } else if found != 1 {
                return Err(RestartError::Corrupt(format!(
                    "unknown gossip hard state format {found}"
                )));
            }
            store = Store::decode(&mut dec).map_err(corrupt)?;
            dec.finish().map_err(corrupt)?;
            format = Some(found);
        }
        // Journal records follow the hard state's format; with no hard state they are
        // format 1's (this version restates everything on its first persist).
        let tagged = format == Some(HARD_STATE_FORMAT);
        let mut journal_bytes = 0;
        for bytes in journal {
            journal_bytes += bytes.len();
            let mut dec = Decoder::new(bytes);
            let tag = if tagged {
                dec.tag("gossip journal record", 2).map_err(corrupt)? as u8
            } else {
                JOURNAL_VERSION
            };
            if tag == JOURNAL_AGREEMENT {
                agreement = Agreement::decode(&mut dec).map_err(corrupt)?;
            } else {
                let record = Record::decode(&mut dec).map_err(corrupt)?;
                let at = dec.u64("applied at").map_err(corrupt)?;
                store.merge(&record, at);
            }
            dec.finish().map_err(corrupt)?;
        }
        // What the state machine's snapshot does not cover is applied again, under the
        // same indices, in their order: the state machine ends up where it was.
        let mut owed: Vec<(LogIndex, Record)> = store
            .iter()
            .filter(|(_, held)| held.at > snapshot_index)
            .map(|(key, held)| {
                let record = Record {
                    key: key.clone(),
                    version: held.version,
                    value: held.value.clone(),
                };
                (held.at, record)
            })
            .collect();
        owed.sort_by_key(|(at, _)| *at);
        let reapply = owed
            .into_iter()
            .map(|(at, record)| replicated_entry(at, &record))
            .collect();
        let newest_at = store.iter().map(|(_, h)| h.at).max().unwrap_or(0);
        let store_was_empty = store.is_empty();
        let applied = newest_at.max(snapshot_index);
        // A cluster booting with nothing anywhere may start its clocks anywhere, once a
        // majority of its boot voters agree that none of them holds anything.
        let synced =
            !store_was_empty || (agreement.epoch == 0 && agreement.membership.members.len() == 1);
        let mut rng = Rng::new(seed);
        let barrier = RequestId::new(crate::membership::barrier_client(config.id), rng.next_u64());
        let removed =
            !agreement.membership.contains(config.id) && config.id.0 < agreement.membership.next_id;
        let owed = if removed {
            (0..BUCKETS as u16).map(|b| (b, BTreeSet::new())).collect()
        } else {
            BTreeMap::new()
        };
        Ok(Gossip {
            barrier,
            owed,
            accepted_at: 0,
            rng,
            ticks: 0,
            clock: Hlc::new(store.newest()),
            swim: Swim::new(config.id, &agreement.membership.ids(), config.swim),
            agreement,
            proposing: None,
            round_seen: 0,
            restate_next: format != Some(HARD_STATE_FORMAT),
            store,
            next_at: applied + 1,
            applied,
            next_persist: 1,
            last_persist: PersistId(0),
            durable: PersistId(0),
            deferred: VecDeque::new(),
            journal_bytes,
            restated_bytes,
            reapply,
            snapshot_index,
            synced,
            held: Vec::new(),
            unsynced_peers: BTreeSet::new(),
            rumors: VecDeque::new(),
            hints: BTreeMap::new(),
            hints_dropped: 0,
            next_round: 0,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            config,
        })
    }

    /// The versions held, for checkers.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The failure detector's view, for checkers and metrics.
    pub fn swim(&self) -> &Swim {
        &self.swim
    }

    /// Membership changes agreed so far.
    pub fn membership_epoch(&self) -> u64 {
        self.agreement.epoch
    }

    /// Hints dropped because a peer's list was full.
    pub fn hints_dropped(&self) -> u64 {
        self.hints_dropped
    }

    /// Hints held for `peer`.
    pub fn hints_for(&self, peer: NodeId) -> usize {
        self.hints.get(&peer).map_or(0, BTreeSet::len)
    }

    /// Voters: the members every consistency level counts (learners count toward none).
    fn voters(&self) -> Vec<NodeId> {
        self.agreed().voters()
    }

    /// The voters answering probes, this node included if it votes.
    fn reachable_voters(&self) -> usize {
        let voters = self.voters();
        let reachable = self.swim.reachable();
        voters
            .iter()
            .filter(|&&v| v == self.config.id || reachable.contains(&v))
            .count()
    }

    // ---- persistence ----

    /// Makes `records` durable (already merged, each to be applied at the index beside it),
    /// restating the whole store now and then instead of journaling.
    fn persist(&mut self, records: &[(LogIndex, Record)], out: &mut Out) -> PersistId {
        let journal = records
            .iter()
            .map(|(at, record)| {
                let mut enc = Encoder::with_capacity(record.size_bytes() + 16);
                enc.u8(JOURNAL_VERSION);
                record.encode(&mut enc);
                enc.u64(*at);
                enc.finish()
            })
            .collect();
        self.persist_journal(journal, out)
    }

    /// Makes the membership agreement as it now stands durable.
    pub(crate) fn persist_agreement(&mut self, out: &mut Out) -> PersistId {
        let mut enc = Encoder::with_capacity(256);
        enc.u8(JOURNAL_AGREEMENT);
        self.agreement.encode(&mut enc);
        let journal = vec![enc.finish()];
        self.persist_journal(journal, out)
    }

    fn persist_journal(&mut self, mut journal: Vec<Vec<u8>>, out: &mut Out) -> PersistId {
        let id = PersistId(self.next_persist);
        self.next_persist += 1;
        self.last_persist = id;
        self.journal_bytes += journal.iter().map(Vec::len).sum::<usize>();
        let mut hard_state = None;
        if self.restate_next || self.journal_bytes > self.restated_bytes.max(RESTATE_BYTES_MIN) {
            self.restate_next = false;
            let mut enc = Encoder::with_capacity(self.store.bytes() + 256);
            enc.u8(HARD_STATE_FORMAT);
            self.agreement.encode(&mut enc);
            self.store.encode(&mut enc);
            let bytes = enc.finish();
            self.restated_bytes = bytes.len();
            self.journal_bytes = 0;
            hard_state = Some(bytes);
            journal.clear();
        }
        out.push(Action::Persist(Persist {
            id,
            snapshot: None,
            hard_state,
            journal,
            truncate_from: None,
            entries: Vec::new(),
        }));
        id
    }

    /// Does `deferred` once everything persisted so far is durable (now, if it is).
    pub(crate) fn after_persists(&mut self, deferred: Deferred, out: &mut Out) {
        if self.durable >= self.last_persist && self.deferred.is_empty() {
            self.carry_out(deferred, out);
        } else {
            self.deferred.push_back((self.last_persist, deferred));
        }
    }

    fn on_persisted(&mut self, id: PersistId, out: &mut Out) {
        self.durable = self.durable.max(id);
        while let Some((at, _)) = self.deferred.front() {
            if *at > self.durable {
                break;
            }
            if let Some((_, deferred)) = self.deferred.pop_front() {
                self.carry_out(deferred, out);
            }
        }
        // This node's own copy of a waiting write is durable once its persist is.
        let me = self.config.id;
        let durable = self.durable;
        let mut now_durable = Vec::new();
        for (&round, w) in self.writes.iter_mut() {
            if durable >= w.persist && w.acked.insert(me) {
                now_durable.push(round);
            }
        }
        for round in now_durable {
            self.maybe_acknowledge(round, out);
        }
    }

    fn carry_out(&mut self, deferred: Deferred, out: &mut Out) {
        match deferred {
            Deferred::Apply(entry) => {
                self.applied = self.applied.max(entry.index);
                out.push(Action::Apply(entry));
            }
            Deferred::Acknowledge(id) => out.push(Action::Acknowledge(id)),
            Deferred::ReadReady(id) => out.push(Action::ReadReady(id)),
        }
    }

    // ---- taking versions in ----

    /// Merges records from a peer; what is new here is persisted, applied once durable, and
    /// spread further. Returns the records taken.
    fn take_in(&mut self, records: Vec<Record>, out: &mut Out) -> Vec<(LogIndex, Record)> {
        let mut taken = Vec::new();
        for record in records {
            if record.version.clock() >= CLOCK_MAX {
                continue; // not believed (see CLOCK_MAX)
            }
            self.clock.observe(record.version);
            #[cfg(any(test, feature = "inject-bugs"))]
            if self.config.bugs.keep_first && self.store.get(&record.key).is_some() {
                continue;
            }
            let at = self.next_at;
            if self.store.merge(&record, at) {
                self.next_at += 1;
                taken.push((at, record));
            }
        }
        if taken.is_empty() {
            return taken;
        }
        self.persist(&taken, out);
        if self.is_removed() {
            // Owed to the members again.
            for (_, r) in &taken {
                let b = crate::store::bucket_of(&r.key) as u16;
                self.owed.insert(b, BTreeSet::new());
            }
        }
        for (at, record) in &taken {
            // Two versions of one key in one batch: both are applied, in order.
            self.after_persists(Deferred::Apply(replicated_entry(*at, record)), out);
            self.rumor(record.key.clone());
        }
        taken
    }

    fn rumor(&mut self, key: Bytes) {
        if self.rumors.len() >= RUMORS_MAX {
            self.rumors.pop_front();
        }
        self.rumors.push_back((key, self.config.rumor_rounds));
    }

    fn hint(&mut self, peer: NodeId, key: &Bytes) {
        let hints = self.hints.entry(peer).or_default();
        if hints.len() >= self.config.hints_max {
            self.hints_dropped += 1;
        } else {
            hints.insert(key.clone());
        }
    }

    // ---- writes ----

    fn propose(&mut self, proposals: Vec<Proposal>, out: &mut Out) {
        for proposal in proposals {
            if !self.is_member() {
                // Removed, or joined and not yet told the membership: not this node's to take.
                let reason = Rejection::NotLeader { leader_hint: None };
                out.push(Action::Reject {
                    id: proposal.id,
                    reason,
                });
                continue;
            }
            if self.synced {
                self.propose_one(proposal, out);
                continue;
            }
            // What could never run is refused now; the rest waits for the clock, for a
            // request timeout at most, and only so many at a time.
            if let Err(reason) = self.writes_of(&proposal) {
                out.push(Action::Reject {
                    id: proposal.id,
                    reason,
                });
            } else if self.held.len() >= HELD_MAX {
                refuse_unsynced(proposal.id, out);
            } else {
                let deadline = self.ticks + self.config.request_timeout_ticks;
                self.held.push((proposal, deadline));
            }
        }
    }

    /// The clock is known to be above anything this node issued before: writes held until
    /// then go ahead.
    fn sync_clock(&mut self, out: &mut Out) {
        if !self.synced {
            self.synced = true;
            let held: Vec<Proposal> = std::mem::take(&mut self.held)
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            self.propose(held, out);
        }
    }

    /// A peer's clock, from a ping or an ack: believed as a bound on what this node issued
    /// before only if the peer is synced itself (a peer that also started with nothing
    /// knows no more than this node).
    fn on_peer_clock(&mut self, from: NodeId, clock: u64, synced: bool, out: &mut Out) {
        self.clock.observe_clock(clock);
        if self.synced {
            return;
        }
        if synced {
            return self.sync_clock(out);
        }
        // Voters that start from their own disks (not a joined or replaced one, which may
        // have issued versions in a life it forgot) can tell that nobody ever issued one.
        let voters = self.voters();
        if self.agreement.amnesic || !voters.contains(&from) || !voters.contains(&self.config.id) {
            return;
        }
        self.unsynced_peers.insert(from);
        if self.unsynced_peers.len() + 1 >= majority(voters.len()) {
            self.sync_clock(out);
        }
    }

    /// Writes held for the clock fail, untaken: this node is no longer a member.
    pub(crate) fn refuse_held(&mut self, out: &mut Out) {
        for (proposal, _) in std::mem::take(&mut self.held) {
            let reason = Rejection::NotLeader { leader_hint: None };
            out.push(Action::Reject {
                id: proposal.id,
                reason,
            });
        }
    }

    /// Writes held past their deadline fail, untaken.
    fn expire_held(&mut self, out: &mut Out) {
        let now = self.ticks;
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(_, d)| now >= *d);
        self.held = kept;
        for (proposal, _) in expired {
            refuse_unsynced(proposal.id, out);
        }
    }

    /// The keys a write sets (`None`: deletes), or why gossip cannot run it.
    fn writes_of(&self, proposal: &Proposal) -> Result<Vec<(Bytes, Option<Bytes>)>, Rejection> {
        let Ok(request) = Request::decode(&proposal.command) else {
            return Err(Rejection::Unsupported("the command does not decode"));
        };
        // A client's write names its user; gossip has no log to agree on users and roles,
        // so auth is never on under it (enabling it is refused below) and the write is taken
        // as it is.
        let request = match request {
            Request::As { request, .. } => *request,
            other => other,
        };
        Ok(match &request {
            Request::Put(put) if put.lease != 0 || put.ignore_lease => {
                return Err(Rejection::Unsupported(
                    "leases need a clock the whole cluster agrees on, which gossip has not",
                ));
            }
            Request::Put(put) if put.ignore_value => {
                return Err(Rejection::Unsupported(
                    "a put that keeps the current value reads before it writes, which needs consensus",
                ));
            }
            Request::Put(put) => vec![(put.key.clone(), Some(put.value.clone()))],
            // A delete of one key always writes its tombstone: other replicas may hold a
            // value this one has not heard of yet, and the tombstone must win over it. A
            // range delete covers the keys this replica knows in the range (a value written
            // elsewhere that has not arrived here survives it: no range tombstones).
            Request::DeleteRange(delete) if delete.range.range_end.is_empty() => {
                vec![(delete.range.key.clone(), None)]
            }
            Request::DeleteRange(delete) => {
                let span = key_span(&delete.range);
                let keys = self.store.live_keys(&span);
                keys.into_iter().map(|k| (k, None)).collect()
            }
            Request::LeaseGrant(_) | Request::LeaseGrantUnnumbered(_) | Request::LeaseRevoke(_) => {
                return Err(Rejection::Unsupported(
                    "gossip has no leases: they need a clock the whole cluster agrees on, which only consensus gives",
                ));
            }
            Request::Txn(_) => {
                return Err(Rejection::Unsupported(
                    "a transaction compares and writes atomically, which needs consensus; gossip takes put, range and delete",
                ));
            }
            Request::Auth(_) => {
                return Err(Rejection::Unsupported(
                    "users, roles and auth need a log every member applies alike, which only consensus gives",
                ));
            }
            _ => {
                return Err(Rejection::Unsupported(
                    "gossip takes put, range and delete; leases and compaction need consensus",
                ));
            }
        })
    }

    fn propose_one(&mut self, proposal: Proposal, out: &mut Out) {
        let id = proposal.id;
        let targets = match self.writes_of(&proposal) {
            Ok(targets) => targets,
            Err(reason) => return out.push(Action::Reject { id, reason }),
        };
        let n = self.voters().len();
        let needed = self.config.write_level.needed(n);
        let reachable = self.swim.reachable();
        let answering = self.reachable_voters();
        if answering < needed {
            let reason = Rejection::Unavailable {
                reached: answering as u32,
                needed: needed as u32,
                written: false,
            };
            return out.push(Action::Reject { id, reason });
        }
        let clock = self.clock.now(self.ticks);
        if clock >= CLOCK_MAX {
            // Its peers would not believe the version (see CLOCK_MAX).
            let reason = Rejection::Unsupported("this member's clock has run out of range");
            return out.push(Action::Reject { id, reason });
        }
        let version = Version::new(clock, self.config.id);
        let first_at = self.next_at;
        let mut records = Vec::with_capacity(targets.len());
        for (key, value) in targets {
            let record = Record {
                key,
                version,
                value,
            };
            let at = self.next_at;
            if self.store.merge(&record, at) {
                self.next_at += 1;
                records.push((at, record));
            }
        }
        // The client's own command is applied (for its response: prev_kv, deleted count),
        // under the last index its keys took.
        let index = if records.is_empty() {
            self.next_at += 1;
            first_at
        } else {
            self.next_at - 1
        };
        // Durable here before any peer hears of it: a version that reached a peer but not
        // this disk could be issued again, with another value, after a crash.
        let persist = self.persist(&records, out);
        // A write at QUORUM or ALL goes to every peer (once durable here, as the runtime
        // holds sends behind persists); they acknowledge once it is durable with them.
        let round = if needed > 1 {
            self.next_round += 1;
            let round = self.next_round;
            let versions = versions_of(&records);
            for peer in self.swim.peers().collect::<Vec<_>>() {
                self.push_acked(peer, &versions, round, out);
            }
            Some(round)
        } else {
            None
        };
        let entry = Entry {
            index,
            era: version.0,
            payload: Payload::Command(Proposal {
                id,
                command: proposal.command,
            }),
        };
        #[cfg(any(test, feature = "inject-bugs"))]
        if self.config.bugs.ack_before_durable && round.is_none() {
            // The bug: the client hears "done" before the write is on any disk.
            self.carry_out(Deferred::Apply(entry), out);
            self.carry_out(Deferred::Acknowledge(id), out);
            for (_, record) in &records {
                self.rumor(record.key.clone());
            }
            return;
        }
        self.after_persists(Deferred::Apply(entry), out);
        for (_, record) in &records {
            self.rumor(record.key.clone());
            // Peers known to be down get a hint, handed over when they answer again.
            let down: Vec<NodeId> = self
                .swim
                .peers()
                .filter(|&p| !reachable.contains(&p))
                .collect();
            for peer in down {
                self.hint(peer, &record.key);
            }
        }
        match round {
            None => self.after_persists(Deferred::Acknowledge(id), out),
            Some(round) => {
                self.writes.insert(
                    round,
                    WriteRound {
                        id,
                        batches: batches(&versions_of(&records), self.config.batch_bytes_max).len(),
                        batches_acked: BTreeMap::new(),
                        records: records.into_iter().map(|(_, r)| r).collect(),
                        acked: BTreeSet::new(),
                        needed,
                        deadline: self.ticks + self.config.request_timeout_ticks,
                        last_sent: self.ticks,
                        persist,
                    },
                );
            }
        }
    }

    /// Every waiting write counted again (the voters changed).
    pub(crate) fn recount_writes(&mut self, out: &mut Out) {
        let rounds: Vec<u64> = self.writes.keys().copied().collect();
        for round in rounds {
            self.maybe_acknowledge(round, out);
        }
    }

    fn maybe_acknowledge(&mut self, round: u64, out: &mut Out) {
        let Some(w) = self.writes.get(&round) else {
            return;
        };
        // Counted against the voters now: a voter added while the write waits is waited for.
        let voters = self.agreed().voters();
        let needed = self.config.write_level.needed(voters.len()).max(1);
        let held = w.acked.iter().filter(|n| voters.contains(n)).count();
        if held >= needed && w.acked.contains(&self.config.id) {
            let id = w.id;
            self.writes.remove(&round);
            // Its apply went out with the persist that made it durable, before this.
            self.after_persists(Deferred::Acknowledge(id), out);
        }
    }

    fn on_push_ack(&mut self, from: NodeId, ack: u64, out: &mut Out) {
        let (round, batch) = (ack >> 16, (ack & 0xffff) as usize);
        if let Some(w) = self.writes.get_mut(&round) {
            let acked = w.batches_acked.entry(from).or_default();
            acked.insert(batch);
            // A peer holds the write once every batch of it is durable there.
            if acked.len() >= w.batches {
                w.acked.insert(from);
            }
            self.maybe_acknowledge(round, out);
        }
    }

    /// Sends unacknowledged pushes again, and fails writes past their deadline.
    fn tick_writes(&mut self, out: &mut Out) {
        let now = self.ticks;
        let mut failed = Vec::new();
        let mut resend = Vec::new();
        let peers: Vec<NodeId> = self.swim.peers().collect();
        for (&round, w) in self.writes.iter_mut() {
            if now >= w.deadline {
                failed.push(round);
            } else if now >= w.last_sent + self.config.retry_ticks {
                w.last_sent = now;
                let unacked: Vec<NodeId> = peers
                    .iter()
                    .copied()
                    .filter(|p| !w.acked.contains(p))
                    .collect();
                resend.push((round, unacked, w.records.clone()));
            }
        }
        for (round, unacked, records) in resend {
            for peer in unacked {
                self.push_acked(peer, &records, round, out);
            }
        }
        for round in failed {
            let Some(w) = self.writes.remove(&round) else {
                continue;
            };
            for &peer in &peers {
                if !w.acked.contains(&peer) {
                    for record in &w.records {
                        self.hint(peer, &record.key);
                    }
                }
            }
            let reason = Rejection::Unavailable {
                reached: w.acked.len() as u32,
                needed: w.needed as u32,
                written: true,
            };
            out.push(Action::Reject { id: w.id, reason });
        }
    }

    // ---- reads ----

    fn read(&mut self, requests: Vec<ReadRequest>, out: &mut Out) {
        let n = self.voters().len();
        for request in requests {
            if !self.is_member() {
                let reason = Rejection::NotLeader { leader_hint: None };
                out.push(Action::Reject {
                    id: request.id,
                    reason,
                });
                continue;
            }
            let level = match request.consistency {
                ReadConsistency::Linearizable => self.config.read_level,
                ReadConsistency::Serializable => Level::One,
            };
            let needed = level.needed(n);
            if needed <= 1 {
                self.after_persists(Deferred::ReadReady(request.id), out);
                continue;
            }
            let answering = self.reachable_voters();
            if answering < needed {
                let reason = Rejection::Unavailable {
                    reached: answering as u32,
                    needed: needed as u32,
                    written: false,
                };
                out.push(Action::Reject {
                    id: request.id,
                    reason,
                });
                continue;
            }
            let voters = self.voters();
            let asked: Vec<NodeId> = self
                .swim
                .reachable()
                .into_iter()
                .filter(|p| voters.contains(p))
                .collect();
            self.next_round += 1;
            let round = self.next_round;
            let span = request.keys.unwrap_or_else(KeySpan::all);
            for peer in asked {
                out.push(Action::Send {
                    to: peer,
                    message: Message::ReadQuery {
                        round,
                        span: span.clone(),
                    },
                });
            }
            self.reads.insert(
                round,
                ReadRound {
                    id: request.id,
                    replies: BTreeMap::new(),
                    needed,
                    deadline: self.ticks + self.config.request_timeout_ticks,
                    too_large: false,
                },
            );
        }
    }

    fn on_read_query(&mut self, from: NodeId, round: u64, span: KeySpan, out: &mut Out) {
        let (records, truncated) = self.store.span_limited(&span, self.config.read_bytes_max);
        out.push(Action::Send {
            to: from,
            message: Message::ReadReply {
                round,
                records,
                truncated,
            },
        });
    }

    fn on_read_reply(
        &mut self,
        from: NodeId,
        round: u64,
        records: Vec<Record>,
        truncated: bool,
        out: &mut Out,
    ) {
        let Some(r) = self.reads.get_mut(&round) else {
            return;
        };
        r.too_large |= truncated;
        r.replies.insert(from, records);
        // This node's own copy counts as one reply.
        if r.replies.len() + 1 < r.needed {
            return;
        }
        let Some(r) = self.reads.remove(&round) else {
            return;
        };
        if r.too_large {
            let reason = Rejection::Unsupported(
                "a read at QUORUM or ALL covers at most --gossip-read-bytes of keys and values; narrow the range or read serializable (ONE)",
            );
            return out.push(Action::Reject { id: r.id, reason });
        }
        // The newest version of each key among the replies is taken here, then every
        // replier that answered with an older one (or none) is sent the newest (read repair).
        let all: Vec<Record> = r.replies.values().flatten().cloned().collect();
        self.take_in(all, out);
        for (peer, theirs) in &r.replies {
            let held: BTreeMap<&Bytes, Version> =
                theirs.iter().map(|t| (&t.key, t.version)).collect();
            let mut keys: BTreeSet<&Bytes> = held.keys().copied().collect();
            for records in r.replies.values() {
                keys.extend(records.iter().map(|t| &t.key));
            }
            let repair: Vec<Record> = keys
                .into_iter()
                .filter_map(|key| self.store.record(key))
                .filter(|mine| held.get(&mine.key).is_none_or(|&v| v < mine.version))
                .collect();
            self.push_to(*peer, repair, out);
        }
        self.after_persists(Deferred::ReadReady(r.id), out);
    }

    fn tick_reads(&mut self, out: &mut Out) {
        let now = self.ticks;
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(&round, _)| round)
            .collect();
        for round in expired {
            if let Some(r) = self.reads.remove(&round) {
                let reason = Rejection::Unavailable {
                    reached: r.replies.len() as u32 + 1,
                    needed: r.needed as u32,
                    written: false,
                };
                out.push(Action::Reject { id: r.id, reason });
            }
        }
    }

    // ---- dissemination ----

    /// Sends a write round's `records` to `peer`, each batch (at most the batch size)
    /// asking for its own acknowledgement: `round << 16 | batch`.
    fn push_acked(&mut self, peer: NodeId, records: &[Record], round: u64, out: &mut Out) {
        for (batch, records) in batches(records, self.config.batch_bytes_max)
            .into_iter()
            .enumerate()
        {
            out.push(Action::Send {
                to: peer,
                message: Message::Push {
                    records,
                    ack: Some(round << 16 | batch as u64),
                },
            });
        }
    }

    /// Sends `records` to `peer` in messages of at most the batch size.
    fn push_to(&mut self, peer: NodeId, records: Vec<Record>, out: &mut Out) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for record in records {
            if !batch.is_empty() && bytes + record.size_bytes() > self.config.batch_bytes_max {
                let records = std::mem::take(&mut batch);
                out.push(Action::Send {
                    to: peer,
                    message: Message::Push { records, ack: None },
                });
                bytes = 0;
            }
            bytes += record.size_bytes();
            batch.push(record);
        }
        if !batch.is_empty() {
            out.push(Action::Send {
                to: peer,
                message: Message::Push {
                    records: batch,
                    ack: None,
                },
            });
        }
    }

    /// One round of the epidemic: the newest rumors, up to a batch, to `fanout` peers.
    fn spread_rumors(&mut self, out: &mut Out) {
        if self.rumors.is_empty() {
            return;
        }
        let mut peers = self.swim.reachable();
        if peers.is_empty() {
            return;
        }
        self.rng.shuffle(&mut peers);
        peers.truncate(self.config.fanout);
        let mut records = Vec::new();
        let mut bytes = 0;
        let mut kept = VecDeque::with_capacity(self.rumors.len());
        while let Some((key, rounds)) = self.rumors.pop_front() {
            if bytes >= self.config.batch_bytes_max {
                kept.push_back((key, rounds));
                continue;
            }
            if let Some(record) = self.store.record(&key) {
                bytes += record.size_bytes();
                records.push(record);
            }
            if rounds > 1 {
                kept.push_back((key, rounds - 1));
            }
        }
        self.rumors = kept;
        for peer in peers {
            out.push(Action::Send {
                to: peer,
                message: Message::Push {
                    records: records.clone(),
                    ack: None,
                },
            });
        }
    }

    /// Hands a peer that answered again the versions it missed while away.
    fn hand_off(&mut self, peer: NodeId, out: &mut Out) {
        let Some(keys) = self.hints.get_mut(&peer) else {
            return;
        };
        let mut records = Vec::new();
        let mut bytes = 0;
        while bytes < self.config.batch_bytes_max * 4 {
            let Some(key) = keys.pop_first() else {
                break;
            };
            if let Some(record) = self.store.record(&key) {
                bytes += record.size_bytes();
                records.push(record);
            }
        }
        if keys.is_empty() {
            self.hints.remove(&peer);
        }
        self.push_to(peer, records, out);
    }

    fn start_anti_entropy(&mut self, out: &mut Out) {
        let mut peers = self.swim.reachable();
        if peers.is_empty() {
            peers = self.swim.peers().collect();
        }
        let Some(&peer) = self.rng.pick(&peers) else {
            return;
        };
        out.push(Action::Send {
            to: peer,
            message: Message::Digest {
                digests: self.store.digests().to_vec(),
            },
        });
    }

    fn on_digest(&mut self, from: NodeId, digests: Vec<u64>, out: &mut Out) {
        let mine = self.store.digests();
        let mut differing: Vec<u16> = (0..BUCKETS)
            .filter(|&b| digests.get(b) != mine.get(b))
            .map(|b| b as u16)
            .collect();
        if differing.is_empty() {
            return;
        }
        self.rng.shuffle(&mut differing);
        differing.truncate(self.config.anti_entropy_buckets_max);
        differing.sort_unstable();
        out.push(Action::Send {
            to: from,
            message: self.keys_of(differing),
        });
    }

    /// A `Keys` message with the keys and versions of `buckets`, as many as fit one message
    /// (at least one).
    pub(crate) fn keys_of(&self, buckets: impl IntoIterator<Item = u16>) -> Message {
        let mut listed = Vec::new();
        let mut bytes = 0;
        for b in buckets {
            let keys = self.store.bucket(b);
            let size: usize = keys.iter().map(|(k, _)| k.len() + 16).sum();
            if !listed.is_empty() && bytes + size > self.config.batch_bytes_max {
                break;
            }
            bytes += size;
            listed.push((b, keys));
        }
        Message::Keys { buckets: listed }
    }

    fn on_keys(&mut self, from: NodeId, buckets: Vec<(u16, Vec<(Bytes, Version)>)>, out: &mut Out) {
        // A removed member handing over: take what it offers, send it nothing, and say which
        // buckets lacked nothing.
        let handing_over = !self.agreed().contains(from);
        let mut held = Vec::new();
        let mut send = Vec::new();
        let mut pull = Vec::new();
        let mut seen = BTreeSet::new();
        let mut sent_bytes = 0;
        for (bucket, theirs) in buckets {
            if !seen.insert(bucket) {
                continue; // a bucket named twice is compared once
            }
            let theirs: BTreeMap<Bytes, Version> = theirs.into_iter().collect();
            let mine = if handing_over {
                Vec::new()
            } else {
                self.store.bucket(bucket)
            };
            for (key, version) in mine {
                if sent_bytes > self.config.batch_bytes_max * 4 {
                    break; // the next exchange sends more
                }
                if theirs.get(&key).is_none_or(|&v| v < version) {
                    if let Some(record) = self.store.record(&key) {
                        sent_bytes += record.size_bytes();
                        send.push(record);
                    }
                }
            }
            let lacked = pull.len();
            for (key, version) in theirs {
                if self.store.get(&key).is_none_or(|h| h.version < version) {
                    pull.push(key);
                }
            }
            if pull.len() == lacked {
                held.push(bucket);
            }
        }
        if handing_over {
            // Sent after every persist of what this node holds: durable when it arrives.
            out.push(Action::Send {
                to: from,
                message: Message::Held { buckets: held },
            });
        } else {
            self.push_to(from, send, out);
        }
        let mut keys = Vec::new();
        let mut bytes = 0;
        for key in pull {
            if !keys.is_empty() && bytes + key.len() > self.config.batch_bytes_max {
                let keys = std::mem::take(&mut keys);
                out.push(Action::Send {
                    to: from,
                    message: Message::Pull { keys },
                });
                bytes = 0;
            }
            bytes += key.len();
            keys.push(key);
        }
        if !keys.is_empty() {
            out.push(Action::Send {
                to: from,
                message: Message::Pull { keys },
            });
        }
    }

    fn on_pull(&mut self, from: NodeId, keys: Vec<Bytes>, out: &mut Out) {
        // Each key once, and no more than a few batches' worth per request.
        let keys: BTreeSet<Bytes> = keys.into_iter().collect();
        let mut records = Vec::new();
        let mut bytes = 0;
        for key in &keys {
            if let Some(record) = self.store.record(key) {
                bytes += record.size_bytes();
                records.push(record);
                if bytes > self.config.batch_bytes_max * 4 {
                    break;
                }
            }
        }
        self.push_to(from, records, out);
    }

    // ---- time ----

    fn tick(&mut self, out: &mut Out) {
        self.ticks += 1;
        let mut messages = Vec::new();
        self.swim.tick(self.ticks, &mut self.rng, &mut messages);
        self.send_swim(messages, out);
        for peer in self.swim.take_heard() {
            self.hand_off(peer, out);
        }
        if self.ticks.is_multiple_of(self.config.gossip_ticks) {
            self.spread_rumors(out);
        }
        #[cfg(any(test, feature = "inject-bugs"))]
        let anti_entropy = !self.config.bugs.no_anti_entropy;
        #[cfg(not(any(test, feature = "inject-bugs")))]
        let anti_entropy = true;
        if anti_entropy && self.ticks.is_multiple_of(self.config.anti_entropy_ticks) {
            if self.is_removed() {
                self.hand_over(out);
            } else {
                self.start_anti_entropy(out);
            }
        }
        self.tick_writes(out);
        self.tick_reads(out);
        self.tick_proposal(out);
        self.expire_held(out);
        let grace = self.config.tombstone_grace_ticks;
        // A removed member keeps its tombstones until it has handed them over.
        if grace > 0
            && self.owed.is_empty()
            && self
                .ticks
                .is_multiple_of(self.config.anti_entropy_ticks * 8)
        {
            let now = Version(self.clock.peek(self.ticks) << 12).physical();
            self.store
                .collect_tombstones(now.saturating_sub(grace), self.snapshot_index);
        }
    }

    /// Sends what SWIM asked for, each ping and ack carrying this node's clock and epoch.
    fn send_swim(&mut self, messages: Vec<(NodeId, Message)>, out: &mut Out) {
        let now = self.clock.peek(self.ticks);
        for (to, mut message) in messages {
            if let Message::Ping {
                clock,
                synced,
                epoch,
                listed,
                ..
            }
            | Message::Ack {
                clock,
                synced,
                epoch,
                listed,
                ..
            } = &mut message
            {
                *clock = now;
                *synced = self.synced;
                *epoch = self.agreement.epoch;
                *listed = self.is_member();
            }
            out.push(Action::Send { to, message });
        }
    }

    fn receive(&mut self, from: NodeId, message: Message, out: &mut Out) {
        let member = self.agreed().contains(from);
        match message {
            // The failure detector answers anyone (see swim.rs); clocks count from members.
            Message::Ping { .. } | Message::Ack { .. } | Message::PingReq { .. } => {
                if let Message::Ping {
                    clock,
                    synced,
                    epoch,
                    listed,
                    ..
                }
                | Message::Ack {
                    clock,
                    synced,
                    epoch,
                    listed,
                    ..
                } = &message
                {
                    self.on_peer_epoch(from, *epoch, *listed, out);
                    if member || !self.is_member() {
                        self.on_peer_clock(from, *clock, *synced, out);
                    }
                }
                let mut messages = Vec::new();
                self.swim.receive(from, message, self.ticks, &mut messages);
                self.send_swim(messages, out);
                for peer in self.swim.take_heard() {
                    self.hand_off(peer, out);
                }
            }
            // The membership agreement: news of it from anyone, the votes from members.
            Message::Agreed { .. } => self.receive_agreement(from, message, out),
            Message::Prepare { .. }
            | Message::Promise { .. }
            | Message::Accept { .. }
            | Message::Accepted { .. }
            | Message::Outbid { .. } => {
                if member {
                    self.receive_agreement(from, message, out);
                }
            }
            // Versions from a node that is not (or no longer) a member are not taken, except
            // from a removed member handing over what it holds.
            Message::Push { .. }
            | Message::Digest { .. }
            | Message::Keys { .. }
            | Message::Pull { .. }
                if !self.may_hand_versions(from) => {}
            Message::PushAck { .. } | Message::ReadQuery { .. } | Message::ReadReply { .. }
                if !member => {}
            // A batch with a version no member would believe is dropped whole, unanswered:
            // acknowledging it would count a replica that does not hold it.
            Message::Push { records, .. }
                if records.iter().any(|r| r.version.clock() >= CLOCK_MAX) => {}
            Message::Push { records, ack } => {
                self.take_in(records, out);
                if let Some(round) = ack {
                    // Sent after the persist above (if any): the runtime holds it until the
                    // records are durable here.
                    out.push(Action::Send {
                        to: from,
                        message: Message::PushAck { round },
                    });
                }
            }
            Message::PushAck { round } => self.on_push_ack(from, round, out),
            Message::Held { buckets } => {
                if member {
                    self.on_held(from, buckets);
                }
            }
            Message::Digest { digests } => self.on_digest(from, digests, out),
            Message::Keys { buckets } => self.on_keys(from, buckets, out),
            Message::Pull { keys } => self.on_pull(from, keys, out),
            Message::ReadQuery { round, span } => self.on_read_query(from, round, span, out),
            Message::ReadReply {
                round,
                records,
                truncated,
            } => self.on_read_reply(from, round, records, truncated, out),
        }
    }
}

impl Engine for Gossip {
    type Message = Message;
    const ORDERS_WRITES: bool = false;

    fn step(&mut self, input: Input<Message>, out: &mut Out) {
        if !self.reapply.is_empty() {
            for entry in std::mem::take(&mut self.reapply) {
                out.push(Action::Apply(entry));
            }
        }
        match input {
            Input::Tick => self.tick(out),
            Input::Receive { from, message } => {
                if from != self.config.id {
                    self.receive(from, message, out);
                }
            }
            Input::Propose(proposals) => self.propose(proposals, out),
            Input::Read(requests) => self.read(requests, out),
            Input::Persisted(id) => self.on_persisted(id, out),
            // The state machine's snapshots are the runtime's; this engine keeps its own
            // state in its hard state and journal, and only notes how far they reach.
            Input::Snapshotted(snapshot) => {
                self.snapshot_index = self.snapshot_index.max(snapshot.meta.index);
            }
            Input::TransferLeadership { .. } => {}
            Input::ChangeMembership { id, change } => self.on_change_membership(id, change, out),
        }
    }

    fn membership(&self) -> Option<&Membership> {
        Some(self.agreed())
    }

    fn owes_handover(&self) -> bool {
        Gossip::owes_handover(self)
    }

    /// Gossip's indices are each member's own and its membership is not in them: a
    /// snapshot records the membership agreed when it is taken.
    fn membership_at(&self, _index: LogIndex) -> Option<Membership> {
        Some(self.agreed().clone())
    }

    fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: Role::Peer,
            leader: None,
            era: self.swim.incarnation(),
            commit_index: self.applied,
            last_index: self.next_at - 1,
        }
    }
}

/// The entry that applies a version learned from a peer (or found on disk): a plain put or
/// a single-key delete, outside any client session.
fn replicated_entry(at: LogIndex, record: &Record) -> Entry {
    let request = match &record.value {
        Some(value) => Request::Put(PutRequest {
            key: record.key.clone(),
            value: value.clone(),
            ..PutRequest::default()
        }),
        None => Request::DeleteRange(DeleteRangeRequest {
            range: KeyRange::key(&record.key),
            prev_kv: false,
        }),
    };
    Entry {
        index: at,
        era: record.version.0,
        payload: Payload::Command(Proposal {
            id: RequestId::new(ClientId(0).0, at),
            command: request.encode(),
        }),
    }
}

/// A write refused, untaken, while this member's clock is not synced: only this member
/// could have answered it.
fn refuse_unsynced(id: RequestId, out: &mut Out) {
    let reason = Rejection::Unavailable {
        reached: 1,
        needed: 1,
        written: false,
    };
    out.push(Action::Reject { id, reason });
}

/// The records of pairs.
fn versions_of(records: &[(LogIndex, Record)]) -> Vec<Record> {
    records.iter().map(|(_, r)| r.clone()).collect()
}

/// `records` in messages of at most `bytes_max` (one record always fits; no records: one
/// empty batch, so a write that changed nothing is still acknowledged).
fn batches(records: &[Record], bytes_max: usize) -> Vec<Vec<Record>> {
    let mut all = vec![Vec::new()];
    let mut bytes = 0;
    for record in records {
        let last = all.last_mut().expect("never empty");
        if !last.is_empty() && bytes + record.size_bytes() > bytes_max {
            all.push(Vec::new());
            bytes = 0;
        }
        bytes += record.size_bytes();
        all.last_mut().expect("never empty").push(record.clone());
    }
    all
}

/// An etcd key range as the engine's span.
fn key_span(range: &KeyRange) -> KeySpan {
    KeySpan {
        key: range.key.clone(),
        range_end: range.range_end.clone(),
    }
}
