//! A follower through the three phases, and its side of the liveness check: it pings its
//! leader and goes back to election when the leader stops answering.
//!
//! - Discovery: FollowerInfo (its accepted epoch) until the leader answers NewEpoch; it
//!   accepts an epoch above its own (persisting it before AckEpoch leaves), never one below.
//! - Synchronization: Proposals carry the leader's initial history; then NewLeader, on which
//!   its history must equal the leader's and it takes the new epoch as current (persisted
//!   before AckNewLeader leaves, and after the truncation NewLeader asked for, so no crash
//!   leaves the new epoch beside an old tail).
//! - Broadcast: it logs each Proposal durably before it acknowledges, and delivers what
//!   Commit (or a PingAck) says is committed, but only as far as its history is known to match
//!   the leader's in this session: a commit point never reaches an entry the leader has not
//!   vouched for.

use bytes::Bytes;
use synod_core::{Action, Entry, LogIndex, Membership, NodeId, Snapshot, SnapshotMeta};

use crate::message::{Message, Vote, Zxid};
use crate::zab::{Out, Phase, Zab};

/// A node following a leader.
#[derive(Debug)]
pub(crate) struct Following {
    /// The leader.
    pub(crate) leader: NodeId,
    /// The vote that elected it, repeated to looking peers.
    pub(crate) vote: Vote,
    /// The epoch of the leader's NewEpoch this node accepted, once it has.
    pub(crate) epoch: Option<u64>,
    /// Whether this node took the leader's NewLeader, in this session: it is in broadcast.
    /// Only what a session saw counts; a current epoch found on disk says nothing of how far
    /// the history beside it was synchronized.
    pub(crate) synced: bool,
    /// The history is the leader's through here: what its Proposals, Snap and NewLeader
    /// vouched for in this session. Commit points are capped here.
    matched: LogIndex,
    /// Ticks since the leader was last heard.
    pub(crate) heard_elapsed: u64,
    /// How long the leader may stay silent.
    pub(crate) timeout: u64,
    /// Ticks since the last ping (or FollowerInfo, before NewEpoch).
    since_ping: u64,
}

impl Following {
    pub(crate) fn new(vote: Vote, timeout: u64) -> Following {
        Following {
            leader: vote.leader,
            vote,
            epoch: None,
            synced: false,
            matched: 0,
            heard_elapsed: 0,
            timeout,
            since_ping: 0,
        }
    }
}

impl Zab {
    fn following(&mut self) -> Option<&mut Following> {
        match &mut self.phase {
            Phase::Following(f) => Some(f),
            _ => None,
        }
    }

    pub(crate) fn send_follower_info(&mut self, out: &mut Out) {
        let Some(f) = self.following() else {
            return;
        };
        f.since_ping = 0;
        let leader = f.leader;
        let message = Message::FollowerInfo {
            accepted_epoch: self.accepted_epoch,
            accepted_from: self.accepted_leader,
        };
        self.send(leader, message, out);
    }

    /// Pings the leader every ping interval (FollowerInfo again, until it answered); goes
    /// back to election after a session timeout without a word from it.
    pub(crate) fn follower_tick(&mut self, out: &mut Out) {
        let (ping_every, retry_every) = (self.config.ping_interval_ticks, self.config.retry_ticks);
        let Some(f) = self.following() else {
            return;
        };
        f.heard_elapsed += 1;
        f.since_ping += 1;
        if f.heard_elapsed >= f.timeout {
            return self.start_election(out);
        }
        match f.epoch {
            None if f.since_ping >= retry_every => self.send_follower_info(out),
            Some(epoch) if f.since_ping >= ping_every => {
                f.since_ping = 0;
                let (leader, synced) = (f.leader, f.synced);
                self.send(leader, Message::Ping { epoch, synced }, out);
            }
            _ => {}
        }
    }

    /// Whether `from` is the leader this node follows and it accepted `epoch` from it; if
    /// so, hearing from it resets the session timer.
    fn heard_leader(&mut self, from: NodeId, epoch: u64) -> bool {
        let timeout = self.session_timeout();
        let Some(f) = self.following() else {
            return false;
        };
        if f.leader != from || f.epoch != Some(epoch) {
            return false;
        }
        f.heard_elapsed = 0;
        f.timeout = timeout;
        true
    }

    /// Whether this node took its leader's NewLeader in this session (broadcast phase).
    fn broadcasting(&self) -> bool {
        matches!(&self.phase, Phase::Following(f) if f.synced)
    }

    /// The leader vouched for this history through `index`.
    fn matched_through(&mut self, index: LogIndex) {
        if let Some(f) = self.following() {
            f.matched = f.matched.max(index);
        }
    }

    /// Delivers what the leader says is committed, as far as this history is the leader's.
    fn leader_committed(&mut self, commit: LogIndex, out: &mut Out) {
        let matched = self.following().map_or(0, |f| f.matched);
        let before = self.commit_index;
        self.commit_to(commit.min(matched), out);
        self.after_commit(before, out);
    }

    pub(crate) fn on_leader_message(&mut self, from: NodeId, message: Message, out: &mut Out) {
        let epoch = match &message {
            Message::NewEpoch { epoch } => return self.on_new_epoch(from, *epoch, out),
            Message::Proposal { epoch, .. }
            | Message::Snap { epoch, .. }
            | Message::NewLeader { epoch, .. }
            | Message::Commit { epoch, .. }
            | Message::PingAck { epoch, .. }
            | Message::Confirm { epoch, .. } => *epoch,
            _ => return,
        };
        if !self.heard_leader(from, epoch) {
            return;
        }
        match message {
            Message::Proposal {
                prev,
                entries,
                commit,
                ..
            } => self.on_proposal(from, epoch, prev, entries, commit, out),
            Message::Snap {
                meta,
                offset,
                data,
                done,
                membership,
                ..
            } => self.on_snap(from, epoch, meta, offset, data, (done, membership), out),
            Message::NewLeader { last, .. } => self.on_new_leader(from, epoch, last, out),
            Message::Commit { commit, .. } | Message::PingAck { commit, .. }
                if self.broadcasting() =>
            {
                self.leader_committed(commit, out)
            }
            // Still following the leader of `epoch`, in broadcast: no later epoch was
            // accepted here.
            Message::Confirm { round, .. } if self.broadcasting() => {
                self.send(from, Message::Confirmed { epoch, round }, out)
            }
            _ => {}
        }
    }

    fn on_new_epoch(&mut self, from: NodeId, epoch: u64, out: &mut Out) {
        let accepted = (self.accepted_epoch, self.accepted_leader);
        let Some(f) = self.following() else {
            return;
        };
        if f.leader != from {
            return;
        }
        if epoch > accepted.0 || (epoch, Some(from)) == accepted {
            if f.epoch.is_some_and(|e| e != epoch) {
                // The same leader in a later epoch (it restarted, or took over again, before
                // this node's session ran out): a new session. What the earlier one
                // synchronized says nothing of it, and its NewLeader must be taken afresh,
                // saving the new current epoch before it is acknowledged.
                f.synced = false;
                f.matched = 0;
            }
            f.epoch = Some(epoch);
            f.heard_elapsed = 0;
            if epoch > accepted.0 {
                self.accepted_epoch = epoch;
                self.accepted_leader = Some(from);
                self.disk.draft.hard_state = true;
            }
            let message = Message::AckEpoch {
                epoch,
                current_epoch: self.current_epoch,
                last: self.last_zxid(),
                committed: self.commit_index,
            };
            self.send(from, message, out);
        } else {
            // An epoch below one this node accepted: that leader is behind (paper, phase 1).
            self.start_election(out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_proposal(
        &mut self,
        from: NodeId,
        epoch: u64,
        prev: Zxid,
        entries: Vec<Entry>,
        commit: u64,
        out: &mut Out,
    ) {
        let synchronizing = !self.broadcasting();
        let base = self.log.base().index;
        let holds_prev = prev.counter < base || self.zxid_at(prev.counter) == Some(prev);
        if !holds_prev {
            // A gap (a lost Proposal) or a different history: the leader resends from what
            // this node surely shares with it.
            let last = if prev.counter > self.log.last_index() {
                self.log.last_index()
            } else {
                self.commit_index
            };
            let refusal = Message::Ack {
                epoch,
                last,
                ok: false,
            };
            return self.send(from, refusal, out);
        }
        let mut last = prev.counter;
        for entry in entries {
            // Until NewLeader, only the leader's initial history (older epochs) is taken.
            if synchronizing && entry.era >= epoch {
                break;
            }
            if entry.index <= base {
                last = entry.index;
                continue;
            }
            if entry.index != last + 1 {
                break;
            }
            match self.log.era(entry.index) {
                Some(era) if era == entry.era => {}
                // A different transaction where this node delivered one: no correct leader
                // sends it (every later history holds what was committed). Taken no further.
                Some(_) if entry.index <= self.commit_index => break,
                Some(_) => {
                    self.truncate(entry.index);
                    self.push_entry(entry.clone());
                }
                None => self.push_entry(entry.clone()),
            }
            last = entry.index;
        }
        self.matched_through(last);
        let ack = Message::Ack {
            epoch,
            last,
            ok: true,
        };
        self.send(from, ack, out);
        if !synchronizing {
            self.leader_committed(commit, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_snap(
        &mut self,
        from: NodeId,
        epoch: u64,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        (done, membership): (bool, Option<Membership>),
        out: &mut Out,
    ) {
        if meta.index <= self.commit_index {
            // Already has all of it: say so, so the leader goes on from there.
            let ack = Message::SnapAck {
                epoch,
                meta,
                next_offset: offset,
                done: true,
            };
            return self.send(from, ack, out);
        }
        let received = match &mut self.incoming {
            Some((m, bytes)) if *m == meta && bytes.len() as u64 == offset => {
                bytes.extend_from_slice(&data);
                bytes.len() as u64
            }
            _ if offset == 0 => {
                self.incoming = Some((meta, data.to_vec()));
                data.len() as u64
            }
            Some((m, bytes)) if *m == meta => bytes.len() as u64,
            _ => 0,
        };
        let installed = done && received == offset + data.len() as u64;
        if installed {
            let Some((_, bytes)) = self.incoming.take() else {
                return;
            };
            let snapshot = Snapshot {
                membership,
                meta,
                data: Bytes::from(bytes),
            };
            // Keep what follows the snapshot if it agrees with it; drop the rest.
            if self.log.compact_to(meta) {
                self.disk.truncate(meta.index + 1);
            }
            self.disk.draft.snapshot = Some(snapshot.clone());
            self.commit_index = meta.index;
            self.applied_index = meta.index;
            self.matched_through(meta.index);
            self.snapshot = Some(snapshot.clone());
            self.refresh_membership();
            self.flush(out);
            out.push(Action::Restore(snapshot));
        }
        let ack = Message::SnapAck {
            epoch,
            meta,
            next_offset: received,
            done: installed,
        };
        self.send(from, ack, out);
    }

    fn on_new_leader(&mut self, from: NodeId, epoch: u64, last: Zxid, out: &mut Out) {
        if self.broadcasting() {
            // A copy of one already taken in this session: the history has moved on since.
            return self.send(from, Message::AckNewLeader { epoch }, out);
        }
        #[cfg(any(test, feature = "inject-bugs"))]
        let unchecked = self.config.bugs.skip_synchronization;
        #[cfg(not(any(test, feature = "inject-bugs")))]
        let unchecked = false;
        if self.log.last_era() == epoch {
            // It holds transactions of this epoch: only this leader proposed them, and only
            // after a NewLeader of an earlier session (or in a Snap) had made the history the
            // leader's. The whole history is the leader's, and this NewLeader may be a copy
            // from that earlier session, naming a point the history has since moved past:
            // cutting there would drop what this node acknowledged, maybe committed.
            self.matched_through(self.log.last_index());
        } else if last.counter < self.commit_index {
            // This node already delivered history beyond the leader's initial one: it got it
            // from this leader (a Snap of what it committed in this epoch, or before a
            // restart), and everything delivered is in every later history. Nothing to cut.
            self.matched_through(self.commit_index);
        } else if !unchecked && self.zxid_at(last.counter) != Some(last) {
            // Not synchronized yet (a Proposal was lost): say where this history ends.
            let refusal = Message::Ack {
                epoch,
                last: self.log.last_index().min(last.counter),
                ok: false,
            };
            return self.send(from, refusal, out);
        } else {
            // TRUNC: what lies beyond the leader's initial history was never committed. It
            // goes in a persist of its own, ahead of the new current epoch: a crash between
            // the two must not leave the epoch beside the old tail.
            if last.counter < self.log.last_index() && !unchecked {
                self.truncate(last.counter + 1);
                self.flush(out);
            }
            self.matched_through(last.counter);
        }
        if let Some(f) = self.following() {
            f.synced = true;
        }
        if self.current_epoch < epoch {
            self.current_epoch = epoch;
            self.disk.draft.hard_state = true;
        }
        self.send(from, Message::AckNewLeader { epoch }, out);
    }
}
