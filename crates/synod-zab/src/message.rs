//! ZAB's messages, named as in the papers (Junqueira, Reed and Serafini, DSN 2011; Medeiros,
//! 2012), phase by phase.
//!
//! ZAB assumes FIFO channels (TCP). Synod's network may lose, duplicate and reorder, so every
//! message names the epoch it belongs to, a Proposal names the zxid it follows, and acks are
//! cumulative: a follower acknowledges the highest zxid it holds in order.

use std::fmt;

use bytes::Bytes;
use synod_core::{Entry, LogIndex, Membership, NodeId, SnapshotMeta};

/// A transaction id: the epoch of the leader that proposed it, and its position. ZooKeeper
/// restarts the counter in every epoch; Synod's counter is the position in the history, which
/// orders zxids the same way (epoch first) and names the log index at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Zxid {
    /// The epoch of the leader that proposed it.
    pub epoch: u64,
    /// Its position in the history, from 1 (0 for the empty history).
    pub counter: LogIndex,
}

impl fmt::Display for Zxid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.counter)
    }
}

/// A vote of Fast Leader Election: who the voter proposes, with that node's current epoch
/// and last zxid. A better vote has a higher epoch, then a higher zxid, then a higher id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vote {
    /// The proposed leader's current epoch (the last epoch it acknowledged a NewLeader of).
    pub epoch: u64,
    /// The proposed leader's last zxid.
    pub zxid: Zxid,
    /// The proposed leader.
    pub leader: NodeId,
}

/// What a node is doing, as its election notifications say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Electing.
    Looking,
    /// Following `Vote::leader`.
    Following,
    /// Leading (prospective or established).
    Leading,
}

/// Every message between ZAB peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    // Leader election (Fast Leader Election).
    /// A node's current vote, in election round `round` (ZooKeeper's logical clock).
    Notification {
        /// The sender's election round.
        round: u64,
        /// Whom it votes for (or follows, or is, when not looking).
        vote: Vote,
        /// What it is doing.
        state: PeerState,
    },

    // Phase 1: discovery.
    /// A follower tells its prospective leader the last epoch it accepted.
    FollowerInfo {
        /// The follower's accepted epoch (f.p in the paper).
        accepted_epoch: u64,
        /// The leader that proposed it (two prospective leaders may propose the same epoch;
        /// only one can establish it).
        accepted_from: Option<NodeId>,
    },
    /// The prospective leader proposes a new epoch, above every follower's accepted one.
    NewEpoch {
        /// The proposed epoch (e').
        epoch: u64,
    },
    /// A follower accepted `epoch` and reports its history.
    AckEpoch {
        /// The epoch accepted.
        epoch: u64,
        /// The follower's current epoch (f.a), the last one it synchronized with.
        current_epoch: u64,
        /// The follower's last zxid.
        last: Zxid,
        /// The highest position it knows committed (never ahead of any new leader's history).
        committed: LogIndex,
    },

    // Phase 2: synchronization, and phase 3: broadcast.
    /// Transactions for the follower's history: in synchronization the leader's initial
    /// history after `prev` (a DIFF; a TRUNC when `prev` is the follower's commit point rather
    /// than its last zxid), in broadcast new proposals. The follower takes them only if its
    /// history holds `prev`; an entry of its own at the same position but another epoch, and
    /// everything after it, gives way (it was never committed).
    Proposal {
        /// The leader's epoch.
        epoch: u64,
        /// The zxid the entries follow.
        prev: Zxid,
        /// The transactions, at consecutive positions after `prev`.
        entries: Vec<Entry>,
        /// The leader's commit point (used in broadcast only).
        commit: LogIndex,
    },
    /// A follower holds (durably) every transaction through `last`; or, when `ok` is false,
    /// it could not take a Proposal, and its history ends at `last`.
    Ack {
        /// The leader's epoch.
        epoch: u64,
        /// Position of the last transaction held in order.
        last: LogIndex,
        /// Whether the Proposal answered fit.
        ok: bool,
    },
    /// The leader's history is the follower's now (a SNAP): a chunk of its snapshot.
    Snap {
        /// The leader's epoch.
        epoch: u64,
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// Where this chunk starts.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// Whether it is the last chunk.
        done: bool,
        /// The membership the snapshot was taken under, on the last chunk: a node that
        /// joined learns who the members are from it when the history that named them was
        /// compacted.
        membership: Option<Membership>,
    },
    /// A follower received a snapshot up to `next_offset` (installed it durably, if `done`).
    SnapAck {
        /// The leader's epoch.
        epoch: u64,
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// The next byte wanted.
        next_offset: u64,
        /// Installed.
        done: bool,
    },
    /// The follower's history now equals the leader's initial history, which ends at `last`:
    /// take `epoch` as the current epoch.
    NewLeader {
        /// The new epoch.
        epoch: u64,
        /// The last zxid of the leader's initial history.
        last: Zxid,
    },
    /// A follower took `epoch` as its current epoch, durably.
    AckNewLeader {
        /// The epoch.
        epoch: u64,
    },
    /// Transactions through `commit` are committed: deliver them.
    Commit {
        /// The leader's epoch.
        epoch: u64,
        /// The new commit point.
        commit: LogIndex,
    },

    // Liveness, follower to leader.
    /// A follower checks that its leader is alive.
    Ping {
        /// The epoch the follower follows.
        epoch: u64,
        /// Whether it took NewLeader in this session (is in broadcast). A leader that counts
        /// it in broadcast on the word of an acknowledgement from an earlier session
        /// synchronizes it again.
        synced: bool,
    },
    /// The leader is alive, and has committed through `commit`.
    PingAck {
        /// The leader's epoch.
        epoch: u64,
        /// Its commit point.
        commit: LogIndex,
    },

    // Linearizable reads.
    /// The leader asks its followers to confirm they still follow it (ZooKeeper's sync).
    Confirm {
        /// The leader's epoch.
        epoch: u64,
        /// The read round.
        round: u64,
    },
    /// A follower still follows the leader of `epoch`.
    Confirmed {
        /// The epoch.
        epoch: u64,
        /// The round confirmed.
        round: u64,
    },
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Notification { round, vote, state } => write!(
                f,
                "Notification round={round} vote={} ({} {}) {state:?}",
                vote.leader, vote.epoch, vote.zxid
            ),
            Message::FollowerInfo {
                accepted_epoch,
                accepted_from,
            } => {
                write!(f, "FollowerInfo accepted={accepted_epoch}")?;
                match accepted_from {
                    Some(n) => write!(f, " from {n}"),
                    None => Ok(()),
                }
            }
            Message::NewEpoch { epoch } => write!(f, "NewEpoch {epoch}"),
            Message::AckEpoch {
                epoch,
                current_epoch,
                last,
                committed,
            } => write!(
                f,
                "AckEpoch {epoch} current={current_epoch} last={last} committed={committed}"
            ),
            Message::Proposal {
                epoch,
                prev,
                entries,
                commit,
            } => {
                write!(f, "Proposal e{epoch} after {prev}")?;
                match (entries.first(), entries.last()) {
                    (Some(a), Some(b)) => write!(f, " {}..={}", a.index, b.index)?,
                    _ => write!(f, " -")?,
                }
                write!(f, " commit={commit}")
            }
            Message::Ack { epoch, last, ok } => {
                write!(
                    f,
                    "Ack e{epoch} last={last}{}",
                    if *ok { "" } else { " refused" }
                )
            }
            Message::Snap {
                epoch,
                meta,
                offset,
                data,
                done,
                ..
            } => write!(
                f,
                "Snap e{epoch} through {} offset={offset} len={}{}",
                meta.index,
                data.len(),
                if *done { " done" } else { "" }
            ),
            Message::SnapAck {
                epoch,
                meta,
                next_offset,
                done,
            } => write!(
                f,
                "SnapAck e{epoch} through {} next={next_offset}{}",
                meta.index,
                if *done { " done" } else { "" }
            ),
            Message::NewLeader { epoch, last } => write!(f, "NewLeader {epoch} last={last}"),
            Message::AckNewLeader { epoch } => write!(f, "AckNewLeader {epoch}"),
            Message::Commit { epoch, commit } => write!(f, "Commit e{epoch} through {commit}"),
            Message::Ping { epoch, synced } => {
                let state = if *synced { "" } else { " unsynced" };
                write!(f, "Ping e{epoch}{state}")
            }
            Message::PingAck { epoch, commit } => write!(f, "PingAck e{epoch} commit={commit}"),
            Message::Confirm { epoch, round } => write!(f, "Confirm e{epoch} round={round}"),
            Message::Confirmed { epoch, round } => write!(f, "Confirmed e{epoch} round={round}"),
        }
    }
}

impl Vote {
    /// No vote: what a node that is not a voter in its own eyes says until it backs a
    /// candidate. It names no node and is below every real vote, so no one takes it.
    pub const NONE: Vote = Vote {
        epoch: 0,
        zxid: Zxid {
            epoch: 0,
            counter: 0,
        },
        leader: NodeId(0),
    };

    /// A vote for `leader` with its epoch and last zxid.
    pub fn new(leader: NodeId, epoch: u64, zxid: Zxid) -> Vote {
        Vote {
            epoch,
            zxid,
            leader,
        }
    }
}

/// For traces: the node a vote names.
impl fmt::Display for Vote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} {})", self.leader, self.epoch, self.zxid)
    }
}
