//! Log compaction and InstallSnapshot (paper section 7).
//!
//! The runtime snapshots the state machine and reports it with `Snapshotted`; the log before
//! it is dropped. A follower that needs entries the leader no longer has receives the snapshot
//! in chunks of at most `snapshot_chunk_bytes`, one in flight at a time and retried like
//! appends. Heartbeats are separate messages, so a long transfer never stalls them.

use bytes::Bytes;
use synod_core::{Action, NodeId, Role, Snapshot};

use crate::message::{InstallSnapshot, InstallSnapshotResponse, Message};
use crate::progress::Mode;
use crate::raft::{Out, Raft};

impl Raft {
    /// The runtime saved a snapshot of what this node applied: drop the log it covers.
    pub(crate) fn on_snapshotted(&mut self, mut snapshot: Snapshot) {
        let meta = snapshot.meta;
        assert!(
            meta.index <= self.applied_index,
            "snapshot through {} beyond the applied index {}",
            meta.index,
            self.applied_index
        );
        if meta.index <= self.log.base().index {
            return;
        }
        assert_eq!(
            self.log.era(meta.index),
            Some(meta.era),
            "a snapshot of applied entries matches the log"
        );
        // The runtime records the membership it applied; it is the one the log holds there.
        let membership = self.membership_as_of(meta.index);
        debug_assert!(
            snapshot.membership.is_none() || snapshot.membership.as_ref() == Some(&membership),
            "the runtime's snapshot holds the membership the log holds at its index"
        );
        snapshot.membership = Some(membership);
        self.log.compact_to(meta);
        self.snapshot = Some(snapshot);
    }

    /// Sends the next chunk of the snapshot to a follower that needs it.
    pub(crate) fn send_snapshot_chunk(&mut self, to: NodeId, out: &mut Out) -> bool {
        let Some(snapshot) = self.snapshot.clone() else {
            panic!("the log is compacted only by a snapshot this node holds");
        };
        let (chunk_max, tick, term) = (self.config.snapshot_chunk_bytes, self.ticks, self.term);
        let Some(progress) = self.follower(to) else {
            return false;
        };
        if !progress.can_send(1) {
            return false;
        }
        let offset = match progress.mode {
            Mode::Snapshot { index, offset } if index == snapshot.meta.index => offset,
            // Start over with the newest snapshot.
            _ => {
                progress.send_snapshot_from(snapshot.meta.index, 0);
                0
            }
        };
        let end = (offset as usize + chunk_max).min(snapshot.data.len());
        let data: Bytes = snapshot.data.slice(offset as usize..end);
        progress.sent(snapshot.meta.index, tick);
        let message = Message::InstallSnapshot(InstallSnapshot {
            term,
            meta: snapshot.meta,
            offset,
            data,
            done: end == snapshot.data.len(),
            // Never left for the receiver to guess (a snapshot saved before memberships
            // were recorded holds none): what this log says held at its index.
            membership: Some(self.membership_as_of(snapshot.meta.index)),
        });
        self.send_ahead_of_log(to, message, out);
        true
    }

    pub(crate) fn on_install_snapshot_response(
        &mut self,
        from: NodeId,
        response: InstallSnapshotResponse,
        out: &mut Out,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let len = self.snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
        let Some(progress) = self.follower(from) else {
            return;
        };
        progress.recent_active = true;
        if response.done {
            if progress.accepted(response.meta.index) {
                self.maybe_commit(out);
                self.maybe_send_timeout_now(from, out);
            }
            self.send_appends(from, out);
            return;
        }
        // Act on an answer that moves the transfer forward, that moves it back (the follower
        // lost what it had taken: it restarted, or a late copy of the first chunk started it
        // over), or that says where to resume when no chunk is in flight. An answer that only
        // repeats the offset the leader is at is a late or duplicated one, and is dropped.
        // One past the snapshot's end comes from no correct follower, and is dropped too.
        let Mode::Snapshot { index, offset } = progress.mode else {
            return;
        };
        let news = response.next_offset != offset || progress.is_idle();
        if index == response.meta.index && response.next_offset <= len && news {
            progress.send_snapshot_from(index, response.next_offset);
            self.send_one_append(from, false, out);
        }
    }

    /// A follower takes a chunk; with the last one it installs the snapshot (paper section 7).
    pub(crate) fn on_install_snapshot(
        &mut self,
        from: NodeId,
        chunk: InstallSnapshot,
        out: &mut Out,
    ) {
        self.become_follower(self.term, Some(from), out);
        let meta = chunk.meta;
        let reply = |raft: &mut Raft, next_offset: u64, done: bool, out: &mut Out| {
            let response = InstallSnapshotResponse {
                term: raft.term,
                meta,
                next_offset,
                done,
            };
            raft.send(from, Message::InstallSnapshotResponse(response), out);
        };
        if meta.index <= self.commit_index {
            // Already covered by what this node committed.
            self.incoming = None;
            return reply(self, 0, true, out);
        }
        // Chunks are taken in order; anything else is answered with the offset expected.
        let expected = match &self.incoming {
            Some((m, bytes)) if *m == meta => bytes.len() as u64,
            _ => 0,
        };
        if chunk.offset == 0 {
            self.incoming = Some((meta, Vec::with_capacity(chunk.data.len())));
        } else if chunk.offset != expected {
            return reply(self, expected, false, out);
        }
        let Some((_, bytes)) = self.incoming.as_mut() else {
            return reply(self, 0, false, out);
        };
        bytes.extend_from_slice(&chunk.data);
        let received = bytes.len() as u64;
        if !chunk.done {
            return reply(self, received, false, out);
        }
        let (meta, bytes) = self.incoming.take().expect("chunks were collected above");
        self.install(
            Snapshot {
                meta,
                membership: chunk.membership,
                data: Bytes::from(bytes),
            },
            out,
        );
        // `send` flushes first: the snapshot is durable before the leader counts it.
        reply(self, received, true, out);
    }

    /// Replaces the log's prefix (or the whole log) and the state machine with a snapshot.
    fn install(&mut self, snapshot: Snapshot, out: &mut Out) {
        let meta = snapshot.meta;
        let discarded = self.log.compact_to(meta);
        if discarded {
            self.truncate(meta.index + 1);
        }
        self.disk.draft.snapshot = Some(snapshot.clone());
        self.commit_index = meta.index;
        self.applied_index = meta.index;
        out.push(Action::Restore(snapshot.clone()));
        self.snapshot = Some(snapshot);
        self.refresh_membership();
    }
}
