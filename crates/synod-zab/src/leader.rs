//! The leader through the three phases, its reads, and its side of the liveness check.
//!
//! - Discovery: once a quorum (itself included) sent FollowerInfo, it proposes an epoch
//!   above every accepted epoch it heard (NewEpoch). A follower's AckEpoch counts only if
//!   that follower's history is no more up to date than its own (current epoch, then last
//!   zxid): with a quorum of those, its own history is the most up-to-date of the quorum,
//!   and it becomes the epoch's initial history. It then takes the epoch as current itself.
//! - Synchronization: each follower gets the initial history after its last zxid (DIFF),
//!   after its commit point when its last zxid is not in the leader's history (TRUNC: what
//!   differs was never committed), or the snapshot and what follows it (SNAP), then
//!   NewLeader. When a quorum, itself included, acknowledged NewLeader, the epoch is
//!   established and the whole initial history committed.
//! - Broadcast: proposals in zxid order, pipelined (sent before the leader's own write is
//!   durable) and batched; a transaction commits once a quorum holds it durably.
//!
//! The leader sends no heartbeats. Followers ping it; it answers each ping, and keeps when
//! it last heard each follower. When fewer than a quorum (itself included) were heard within
//! the minimum session timeout, it abdicates and goes back to election.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use synod_core::{
    Action, Entry, LogIndex, Membership, NodeId, Payload, PersistId, Proposal, ReadConsistency,
    ReadRequest, RequestId, SnapshotMeta,
};

use crate::message::{Message, Zxid};
use crate::zab::{Out, Phase, Zab};

/// How far a follower's synchronization has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Sent NewEpoch; waiting for its AckEpoch.
    Discovery,
    /// Receiving the initial history (and then NewLeader).
    Synchronization,
    /// Acknowledged NewLeader: receives proposals and counts in commit quorums.
    Broadcast,
}

/// The leader's view of one follower.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) stage: Stage,
    /// The next position to send it.
    next: LogIndex,
    /// It holds durably the leader's history through here.
    pub(crate) acked: LogIndex,
    /// The snapshot chunk it is receiving: the snapshot and the next offset.
    snap: Option<(SnapshotMeta, u64)>,
    /// Ticks since it last made progress (or since something was last sent to it).
    idle: u64,
    /// Where the leader last resent from after a refusal, and when: until an
    /// acknowledgement or a retry interval has passed, a copy of that refusal (a duplicate,
    /// or an answer to a Proposal sent before the resend) must not start one more resend, or
    /// duplication would multiply the copies in flight with every round trip.
    resent_from: Option<(LogIndex, u64)>,
    /// The newest read round it confirmed.
    confirmed: u64,
}

impl Peer {
    fn discovering() -> Peer {
        Peer {
            stage: Stage::Discovery,
            next: 0,
            acked: 0,
            snap: None,
            idle: 0,
            resent_from: None,
            confirmed: 0,
        }
    }
}

/// A read round waiting for a quorum's confirmation.
#[derive(Debug)]
struct ReadRound {
    round: u64,
    read_index: LogIndex,
    ids: Vec<RequestId>,
}

/// A node leading.
#[derive(Debug)]
pub(crate) struct Leading {
    /// Accepted epochs from FollowerInfo, its own included.
    infos: BTreeMap<NodeId, u64>,
    /// The epoch it proposed, once a quorum sent FollowerInfo.
    epoch: Option<u64>,
    /// Its own (current epoch, last zxid) when it proposed the epoch.
    own_history: (u64, Zxid),
    /// Nodes whose AckEpoch counts (their histories are no better than its own), itself
    /// included.
    acked_epoch: BTreeSet<NodeId>,
    /// Its own history is the epoch's initial history, and it took the epoch as current;
    /// the persist that made that durable.
    history_chosen: Option<PersistId>,
    /// Where the initial history ends.
    initial_last: LogIndex,
    /// A quorum acknowledged NewLeader.
    pub(crate) established: bool,
    pub(crate) followers: BTreeMap<NodeId, Peer>,
    /// When each follower was last heard, in ticks.
    pub(crate) last_heard: BTreeMap<NodeId, u64>,
    /// When it began leading, in ticks.
    started: u64,
    /// Commit point last sent to followers.
    commit_sent: LogIndex,
    round: u64,
    reads: VecDeque<ReadRound>,
}

impl Leading {
    pub(crate) fn new(zab: &Zab) -> Leading {
        let mut infos = BTreeMap::new();
        infos.insert(zab.id, zab.accepted_epoch);
        Leading {
            infos,
            epoch: None,
            own_history: (zab.current_epoch, zab.last_zxid()),
            acked_epoch: BTreeSet::new(),
            history_chosen: None,
            initial_last: zab.log.last_index(),
            established: false,
            followers: BTreeMap::new(),
            last_heard: zab.peers.iter().map(|&p| (p, zab.ticks)).collect(),
            started: zab.ticks,
            commit_sent: zab.commit_index,
            round: 0,
            reads: VecDeque::new(),
        }
    }

    /// The followers at `stage`.
    fn in_stage(&self, stage: Stage) -> Vec<NodeId> {
        self.followers
            .iter()
            .filter(|(_, p)| p.stage == stage)
            .map(|(&n, _)| n)
            .collect()
    }

    /// Refuses every waiting read: this node no longer leads.
    pub(crate) fn reject_reads(self, out: &mut Out) {
        for id in self.reads.into_iter().flat_map(|r| r.ids) {
            out.push(Action::Reject {
                id,
                reason: synod_core::Rejection::NotLeader { leader_hint: None },
            });
        }
    }
}

impl Zab {
    fn leading(&mut self) -> Option<&mut Leading> {
        match &mut self.phase {
            Phase::Leading(lead) => Some(lead),
            _ => None,
        }
    }

    /// The epoch this node proposed, if it leads and proposed one.
    fn leading_epoch(&self) -> Option<u64> {
        match &self.phase {
            Phase::Leading(lead) => lead.epoch,
            _ => None,
        }
    }

    /// Just decided to lead: discovery starts with its own FollowerInfo.
    pub(crate) fn on_leading(&mut self, out: &mut Out) {
        self.maybe_propose_epoch(out);
    }

    pub(crate) fn on_follower_info(
        &mut self,
        from: NodeId,
        (accepted, accepted_from): (u64, Option<NodeId>),
        out: &mut Out,
    ) {
        let (id, ticks) = (self.id, self.ticks);
        if !self.membership.contains(from) {
            // Removed, or not yet added as this leader's history tells.
            return;
        }
        let Some(lead) = self.leading() else {
            return;
        };
        // Once the epoch is proposed, only a follower's part in it (AckEpoch, acks, pings)
        // counts as hearing it: a node that accepted another leader's epoch keeps sending
        // FollowerInfo, and follows nobody.
        if lead.epoch.is_none() {
            lead.last_heard.insert(from, ticks);
        }
        match lead.epoch {
            None => {
                lead.infos.insert(from, accepted);
                self.maybe_propose_epoch(out);
            }
            // A follower that has not seen the epoch yet (or lost NewEpoch, or restarted).
            Some(epoch) if accepted < epoch || (accepted == epoch && accepted_from == Some(id)) => {
                // It (re)starts discovery: whatever it had been sent before is forgotten.
                lead.infos.insert(from, accepted);
                lead.followers.insert(from, Peer::discovering());
                self.send(from, Message::NewEpoch { epoch }, out);
            }
            // One that accepted a later epoch, or this epoch from another prospective leader
            // (which failed), can never follow this leader, and the cluster could not
            // converge with it left out: this leader abdicates, and the next election's epoch
            // is above that one.
            Some(_) => self.start_election(out),
        }
    }

    /// With FollowerInfo from a quorum, proposes an epoch above every accepted one.
    fn maybe_propose_epoch(&mut self, out: &mut Out) {
        let quorum = self.quorum();
        let (id, ticks) = (self.id, self.ticks);
        let Phase::Leading(lead) = &mut self.phase else {
            return;
        };
        let voters = &self.membership;
        if lead.epoch.is_some() || count_voters(voters, lead.infos.keys()) < quorum {
            return;
        }
        let epoch = lead.infos.values().max().copied().unwrap_or(0) + 1;
        lead.epoch = Some(epoch);
        lead.acked_epoch.insert(id);
        let followers: Vec<NodeId> = lead.infos.keys().copied().filter(|&n| n != id).collect();
        for &f in &followers {
            lead.followers.insert(f, Peer::discovering());
            lead.last_heard.insert(f, ticks);
        }
        self.accepted_epoch = epoch;
        self.accepted_leader = Some(id);
        self.disk.draft.hard_state = true;
        for f in followers {
            self.send(f, Message::NewEpoch { epoch }, out);
        }
        self.maybe_choose_history(out);
    }

    pub(crate) fn on_ack_epoch(
        &mut self,
        from: NodeId,
        epoch: u64,
        history: (u64, Zxid),
        committed: LogIndex,
        out: &mut Out,
    ) {
        if self.leading_epoch() != Some(epoch) {
            return;
        }
        let ticks = self.ticks;
        let voter = self.is_voter(from);
        let Some(lead) = self.leading() else {
            return;
        };
        lead.last_heard.insert(from, ticks);
        let Some(peer) = lead.followers.get_mut(&from) else {
            return;
        };
        if peer.stage != Stage::Discovery {
            return;
        }
        // Before the epoch is established, a voter with a better history than this leader's
        // cannot be part of its quorum: what it holds may be committed. (A learner's counts
        // in no quorum: whatever it holds beyond the leader's history was never committed.)
        if !lead.established && voter && history > lead.own_history {
            // That node should lead instead: back to election, where its vote wins.
            return self.start_election(out);
        }
        lead.acked_epoch.insert(from);
        self.start_sync(from, history.1, committed, out);
        self.maybe_choose_history(out);
    }

    /// With a quorum of AckEpochs, its own history is the initial history of the epoch: it
    /// takes the epoch as current (durably, before it counts itself for NewLeader).
    fn maybe_choose_history(&mut self, out: &mut Out) {
        let quorum = self.quorum();
        let Phase::Leading(lead) = &mut self.phase else {
            return;
        };
        let Some(epoch) = lead.epoch else {
            return;
        };
        let acked = count_voters(&self.membership, lead.acked_epoch.iter());
        if lead.history_chosen.is_some() || acked < quorum {
            return;
        }
        self.current_epoch = epoch;
        self.disk.draft.hard_state = true;
        self.flush(out);
        let persist = self.disk.last_pushed();
        if let Some(lead) = self.leading() {
            lead.history_chosen = Some(persist);
        }
        let ready = self
            .leading()
            .map_or_else(Vec::new, |l| l.in_stage(Stage::Synchronization));
        for f in ready {
            self.send_to_follower(f, out);
        }
    }

    /// Plans a follower's synchronization from its last zxid and commit point.
    fn start_sync(&mut self, to: NodeId, last: Zxid, committed: LogIndex, out: &mut Out) {
        let base = self.log.base().index;
        let (next, acked) = if self.zxid_at(last.counter) == Some(last) {
            // DIFF: its history is a prefix of this one.
            (last.counter + 1, last.counter)
        } else if committed >= base && committed <= self.log.last_index() {
            // TRUNC: everything after its commit point is resent, and what differs gives way.
            (committed + 1, committed)
        } else {
            // SNAP: it needs what this node compacted.
            (base + 1, 0)
        };
        #[cfg(any(test, feature = "inject-bugs"))]
        let (next, acked) = if self.config.bugs.skip_synchronization {
            let initial_last = self.leading().map_or(0, |l| l.initial_last);
            (next.max(initial_last + 1), acked.max(initial_last))
        } else {
            (next, acked)
        };
        let needs_snap = next <= base || (acked < base && self.snapshot.is_some());
        let snapshot_meta = self.snapshot.as_ref().map(|s| s.meta);
        let Some(lead) = self.leading() else {
            return;
        };
        let Some(peer) = lead.followers.get_mut(&to) else {
            return;
        };
        peer.stage = Stage::Synchronization;
        peer.next = next;
        peer.acked = acked;
        peer.idle = 0;
        peer.snap = match snapshot_meta {
            Some(meta) if needs_snap => Some((meta, 0)),
            _ => None,
        };
        self.send_to_follower(to, out);
    }

    /// Sends a follower what it needs next: a snapshot chunk, a Proposal, or NewLeader.
    fn send_to_follower(&mut self, to: NodeId, out: &mut Out) {
        let commit = self.commit_index;
        let voter = self.is_voter(to);
        let last_index = self.log.last_index();
        let (entries_max, bytes_max) = (
            self.config.proposal_entries_max,
            self.config.proposal_bytes_max,
        );
        let Some(lead) = self.leading() else {
            return;
        };
        let (Some(epoch), chosen, initial_last) =
            (lead.epoch, lead.history_chosen, lead.initial_last)
        else {
            return;
        };
        let Some(peer) = lead.followers.get_mut(&to) else {
            return;
        };
        if peer.stage == Stage::Synchronization && chosen.is_none() && !voter {
            // A learner's history may be better than this prospective leader's (its
            // AckEpoch does not make it step down): until a quorum of voters with no better
            // history made this one the epoch's, it may lack what the learner delivered.
            return;
        }
        peer.idle = 0;
        if let Some((meta, offset)) = peer.snap {
            return self.send_snap_chunk(to, epoch, meta, offset, out);
        }
        let stage = peer.stage;
        let (next, acked) = (peer.next, peer.acked);
        let until = match stage {
            Stage::Discovery => return,
            Stage::Synchronization => initial_last,
            Stage::Broadcast => last_index,
        };
        if next <= until {
            let Some(prev) = self.zxid_at(next - 1) else {
                // Compacted meanwhile: start over from the snapshot.
                return self.resend_snapshot(to, epoch, out);
            };
            let mut entries = self.log.slice(next, entries_max, bytes_max);
            entries.retain(|e| e.index <= until);
            let sent_through = entries.last().map_or(next - 1, |e| e.index);
            if let Some(peer) = self.leading().and_then(|l| l.followers.get_mut(&to)) {
                peer.next = sent_through + 1;
            }
            let message = Message::Proposal {
                epoch,
                prev,
                entries,
                commit: if stage == Stage::Broadcast { commit } else { 0 },
            };
            self.send_ahead_of_log(to, message, out);
        } else if stage == Stage::Synchronization && acked >= initial_last && chosen.is_some() {
            // Its history ends where the initial history does, or (a late joiner sent a
            // snapshot) where the snapshot does.
            match self.zxid_at(acked) {
                Some(last) => self.send(to, Message::NewLeader { epoch, last }, out),
                None => self.resend_snapshot(to, epoch, out),
            }
        }
    }

    /// Sends a follower the newest snapshot from its start: what it needs was compacted.
    fn resend_snapshot(&mut self, to: NodeId, epoch: u64, out: &mut Out) {
        let meta = self.snapshot.as_ref().map(|s| s.meta);
        if let (Some(meta), Some(peer)) =
            (meta, self.leading().and_then(|l| l.followers.get_mut(&to)))
        {
            peer.snap = Some((meta, 0));
            self.send_snap_chunk(to, epoch, meta, 0, out);
        }
    }

    fn send_snap_chunk(
        &mut self,
        to: NodeId,
        epoch: u64,
        meta: SnapshotMeta,
        offset: u64,
        out: &mut Out,
    ) {
        let chunk_max = self.config.snapshot_chunk_bytes;
        let Some(snapshot) = self.snapshot.as_ref() else {
            return;
        };
        if snapshot.meta != meta {
            // A newer snapshot replaced the one being sent: start over with it.
            let newest = snapshot.meta;
            if let Some(peer) = self.leading().and_then(|l| l.followers.get_mut(&to)) {
                peer.snap = Some((newest, 0));
            }
            return self.send_snap_chunk(to, epoch, newest, 0, out);
        }
        let start = (offset as usize).min(snapshot.data.len());
        let end = (start + chunk_max).min(snapshot.data.len());
        let data: Bytes = snapshot.data.slice(start..end);
        let done = end == snapshot.data.len();
        let message = Message::Snap {
            epoch,
            meta,
            offset: start as u64,
            data,
            done,
            membership: snapshot.membership.clone().filter(|_| done),
        };
        self.send_ahead_of_log(to, message, out);
    }

    pub(crate) fn on_snap_ack(
        &mut self,
        from: NodeId,
        epoch: u64,
        meta: SnapshotMeta,
        next_offset: u64,
        done: bool,
        out: &mut Out,
    ) {
        if self.leading_epoch() != Some(epoch) {
            return;
        }
        let ticks = self.ticks;
        let Some(lead) = self.leading() else {
            return;
        };
        lead.last_heard.insert(from, ticks);
        let Some(peer) = lead.followers.get_mut(&from) else {
            return;
        };
        match peer.snap {
            Some((m, _)) if m == meta => {}
            _ => return,
        }
        if done {
            peer.snap = None;
            peer.acked = peer.acked.max(meta.index);
            peer.next = meta.index + 1;
        } else {
            peer.snap = Some((meta, next_offset));
        }
        self.send_to_follower(from, out);
    }

    pub(crate) fn on_ack(
        &mut self,
        from: NodeId,
        epoch: u64,
        last: LogIndex,
        ok: bool,
        out: &mut Out,
    ) {
        if self.leading_epoch() != Some(epoch) {
            return;
        }
        let (ticks, retry) = (self.ticks, self.config.retry_ticks);
        let base = self.log.base().index;
        let snapshot_meta = self.snapshot.as_ref().map(|s| s.meta);
        let Some(lead) = self.leading() else {
            return;
        };
        lead.last_heard.insert(from, ticks);
        let Some(peer) = lead.followers.get_mut(&from) else {
            return;
        };
        if peer.stage == Stage::Discovery || peer.snap.is_some() {
            return;
        }
        if ok {
            if last > peer.acked {
                peer.acked = last;
                peer.idle = 0;
            }
            peer.next = peer.next.max(last + 1);
            peer.resent_from = None;
        } else {
            // Resend from where it surely agrees (its commit point, or its end after a gap).
            let from_here = (last + 1).min(peer.next).max(peer.acked + 1);
            if let Some((at, when)) = peer.resent_from {
                if at == from_here && ticks < when + retry {
                    return;
                }
            }
            peer.resent_from = Some((from_here, ticks));
            peer.next = from_here;
            if peer.next <= base {
                peer.snap = snapshot_meta.map(|m| (m, 0));
            }
        }
        let broadcasting = peer.stage == Stage::Broadcast;
        if broadcasting {
            self.maybe_commit(out);
        }
        if !ok || !broadcasting || self.leading().is_some_and(|l| l.established) {
            self.send_to_follower(from, out);
        }
    }

    pub(crate) fn on_ack_new_leader(&mut self, from: NodeId, epoch: u64, out: &mut Out) {
        if self.leading_epoch() != Some(epoch) {
            return;
        }
        let ticks = self.ticks;
        let Some(lead) = self.leading() else {
            return;
        };
        lead.last_heard.insert(from, ticks);
        let initial_last = lead.initial_last;
        let Some(peer) = lead.followers.get_mut(&from) else {
            return;
        };
        if peer.stage != Stage::Synchronization || peer.acked < initial_last {
            return;
        }
        peer.stage = Stage::Broadcast;
        peer.next = peer.next.max(initial_last + 1);
        peer.idle = 0;
        self.maybe_establish(out);
        if self.leading().is_some_and(|l| l.established) {
            self.send_to_follower(from, out);
            let commit = self.commit_index;
            self.send(from, Message::Commit { epoch, commit }, out);
        }
    }

    /// A quorum (itself included, once its epoch is durable) acknowledged NewLeader: the
    /// epoch is established and its initial history committed.
    fn maybe_establish(&mut self, out: &mut Out) {
        let quorum = self.quorum();
        let durable = self.disk.durable();
        let id = self.id;
        let Phase::Leading(lead) = &mut self.phase else {
            return;
        };
        if lead.established || lead.history_chosen.is_none_or(|p| p > durable) {
            return;
        }
        let synced = lead.in_stage(Stage::Broadcast);
        if count_voters(&self.membership, synced.iter().chain([&id])) < quorum {
            return;
        }
        lead.established = true;
        let initial_last = lead.initial_last;
        let before = self.commit_index;
        self.commit_to(initial_last, out);
        self.send_commit(out);
        self.after_commit(before, out);
    }

    pub(crate) fn leader_on_persisted(&mut self, out: &mut Out) {
        self.maybe_establish(out);
        self.maybe_commit(out);
    }

    /// Commits what a quorum (itself for what is durable) holds.
    fn maybe_commit(&mut self, out: &mut Out) {
        let quorum = self.quorum();
        let durable = self.disk.durable_index();
        let id = self.id;
        let Phase::Leading(lead) = &mut self.phase else {
            return;
        };
        if !lead.established {
            return;
        }
        // Voters only; the leader too, unless a change being made removes it.
        let voters = &self.membership;
        #[cfg(any(test, feature = "inject-bugs"))]
        let everyone = self.config.bugs.count_every_follower;
        #[cfg(not(any(test, feature = "inject-bugs")))]
        let everyone = false;
        let mut held: Vec<LogIndex> = lead
            .followers
            .iter()
            .filter(|(&n, p)| p.stage == Stage::Broadcast && (everyone || voters.is_voter(n)))
            .map(|(_, p)| p.acked)
            .chain(voters.is_voter(id).then_some(durable))
            .collect();
        if held.len() < quorum {
            return;
        }
        held.sort_unstable_by(|a, b| b.cmp(a));
        let point = held[quorum - 1];
        if point > self.commit_index {
            let before = self.commit_index;
            self.commit_to(point, out);
            self.send_commit(out);
            self.after_commit(before, out);
        }
        self.confirm_reads(out);
    }

    fn send_commit(&mut self, out: &mut Out) {
        let commit = self.commit_index;
        let Some(lead) = self.leading() else {
            return;
        };
        let Some(epoch) = lead.epoch else {
            return;
        };
        if lead.commit_sent >= commit {
            return;
        }
        lead.commit_sent = commit;
        for f in lead.in_stage(Stage::Broadcast) {
            self.send_ahead_of_log(f, Message::Commit { epoch, commit }, out);
        }
    }

    pub(crate) fn on_ping(&mut self, from: NodeId, epoch: u64, synced: bool, out: &mut Out) {
        if self.leading_epoch() != Some(epoch) {
            return;
        }
        let (ticks, commit) = (self.ticks, self.commit_index);
        let Some(lead) = self.leading() else {
            return;
        };
        lead.last_heard.insert(from, ticks);
        if let Some(peer) = lead.followers.get_mut(&from) {
            if peer.stage == Stage::Broadcast && !synced {
                // It counted in broadcast on an AckNewLeader of an earlier session (or its
                // FollowerInfo was lost): synchronize it again, NewLeader included.
                peer.stage = Stage::Synchronization;
                peer.next = peer.next.min(peer.acked + 1);
                self.send_to_follower(from, out);
                return;
            }
        }
        let broadcasting = lead
            .followers
            .get(&from)
            .is_some_and(|p| p.stage == Stage::Broadcast);
        let commit = if broadcasting && lead.established {
            commit
        } else {
            0
        };
        self.send_ahead_of_log(from, Message::PingAck { epoch, commit }, out);
    }

    /// The leader's clock: abdication when the followers' pings stop, retries.
    pub(crate) fn leader_tick(&mut self, out: &mut Out) {
        let quorum = self.quorum();
        let session = self.config.session_timeout_ticks_min;
        let give_up = self.config.session_timeout_ticks_max * 2;
        let retry = self.config.retry_ticks;
        let (id, ticks) = (self.id, self.ticks);
        let invite_now = ticks % retry == 0;
        let Phase::Leading(lead) = &mut self.phase else {
            return;
        };
        let heard = lead
            .last_heard
            .iter()
            .filter(|(_, &at)| ticks.saturating_sub(at) < session)
            .map(|(n, _)| n);
        let heard = count_voters(&self.membership, heard.chain([&id]));
        let stuck = !lead.established && ticks.saturating_sub(lead.started) >= give_up;
        if heard < quorum || stuck {
            return self.start_election(out);
        }
        // Members that have not asked to follow, or that went silent (a follower says
        // something every ping interval; one that stopped may be looking again, after a
        // restart or a session timeout): a node that joined knows no one to ask.
        let uninvited: Vec<NodeId> = if invite_now {
            (self.peers.iter().copied())
                .filter(|&n| self.membership.contains(n))
                .filter(|n| {
                    let silent = lead
                        .last_heard
                        .get(n)
                        .is_none_or(|&at| ticks.saturating_sub(at) >= retry);
                    silent
                        || lead
                            .followers
                            .get(n)
                            .is_none_or(|p| p.stage == Stage::Discovery)
                })
                .collect()
        } else {
            Vec::new()
        };
        let epoch = lead.epoch;
        let mut resend = Vec::new();
        let mut again_new_epoch = Vec::new();
        for (&n, peer) in lead.followers.iter_mut() {
            peer.idle += 1;
            if peer.idle < retry {
                continue;
            }
            peer.idle = 0;
            match peer.stage {
                Stage::Discovery => again_new_epoch.push(n),
                _ => {
                    // Resend from what it acknowledged.
                    if peer.snap.is_none() {
                        peer.next = peer.acked + 1;
                    }
                    peer.resent_from = None;
                    resend.push(n);
                }
            }
        }
        if let Some(epoch) = epoch {
            for n in again_new_epoch {
                self.send(n, Message::NewEpoch { epoch }, out);
            }
        }
        for n in resend {
            self.send_to_follower(n, out);
        }
        for n in uninvited {
            self.invite(n, out);
        }
    }

    pub(crate) fn on_propose(&mut self, proposals: Vec<Proposal>, out: &mut Out) {
        let epoch = self.established_epoch();
        let Some(epoch) = epoch else {
            for p in proposals {
                self.reject(p.id, out);
            }
            return;
        };
        for proposal in proposals {
            let entry = Entry {
                index: self.log.last_index() + 1,
                era: epoch,
                payload: Payload::Command(proposal),
            };
            self.push_entry(entry);
        }
        self.broadcast_proposals(out);
    }

    /// Sends what is new in the history to every follower in broadcast.
    pub(crate) fn broadcast_proposals(&mut self, out: &mut Out) {
        let followers = self
            .leading()
            .map_or_else(Vec::new, |l| l.in_stage(Stage::Broadcast));
        for f in followers {
            self.send_to_follower(f, out);
        }
    }

    pub(crate) fn on_read(&mut self, reads: Vec<ReadRequest>, out: &mut Out) {
        let established = self.established_epoch();
        let mut linearizable = Vec::new();
        for read in reads {
            match read.consistency {
                // Whatever this node has delivered, now: possibly stale.
                ReadConsistency::Serializable => out.push(Action::ReadReady(read.id)),
                ReadConsistency::Linearizable if established.is_some() => {
                    linearizable.push(read.id)
                }
                ReadConsistency::Linearizable => self.reject(read.id, out),
            }
        }
        let Some(epoch) = established else {
            return;
        };
        if linearizable.is_empty() {
            return;
        }
        let read_index = self.commit_index;
        let Some(lead) = self.leading() else {
            return;
        };
        lead.round += 1;
        let round = lead.round;
        lead.reads.push_back(ReadRound {
            round,
            read_index,
            ids: linearizable,
        });
        for f in lead.in_stage(Stage::Broadcast) {
            self.send_ahead_of_log(f, Message::Confirm { epoch, round }, out);
        }
        self.confirm_reads(out);
    }

    pub(crate) fn on_confirmed(&mut self, from: NodeId, epoch: u64, round: u64, out: &mut Out) {
        if self.established_epoch() != Some(epoch) {
            return;
        }
        let ticks = self.ticks;
        let Some(lead) = self.leading() else {
            return;
        };
        lead.last_heard.insert(from, ticks);
        if round > lead.round {
            return;
        }
        if let Some(peer) = lead.followers.get_mut(&from) {
            peer.confirmed = peer.confirmed.max(round);
        }
        self.confirm_reads(out);
    }

    /// Answers every read round a quorum confirmed, once its read point is delivered.
    fn confirm_reads(&mut self, out: &mut Out) {
        let quorum = self.quorum();
        let applied = self.applied_index;
        let id = self.id;
        let Phase::Leading(lead) = &mut self.phase else {
            return;
        };
        while let Some(front) = lead.reads.front() {
            let confirmed = lead
                .followers
                .iter()
                .filter(|(_, p)| p.stage == Stage::Broadcast && p.confirmed >= front.round)
                .map(|(n, _)| n);
            let confirmed = count_voters(&self.membership, confirmed.chain([&id]));
            if confirmed < quorum || applied < front.read_index {
                break;
            }
            let done = lead.reads.pop_front().expect("front exists");
            out.extend(done.ids.into_iter().map(Action::ReadReady));
        }
    }
}

/// How many of `ids` vote in `membership`.
fn count_voters<'a>(membership: &Membership, ids: impl Iterator<Item = &'a NodeId>) -> usize {
    ids.filter(|&&n| membership.is_voter(n)).count()
}
