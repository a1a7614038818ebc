//! What primary and backups say to each other, and what a view number means.

use std::fmt;

use bytes::Bytes;
use synod_core::{Entry, LogIndex, Membership, NodeId, SnapshotMeta};

/// Node ids fit the low bits of a view.
pub(crate) const NODE_ID_MAX: u64 = (1 << NODE_BITS) - 1;
const NODE_BITS: u32 = 16;

/// The primary of `view`: its low bits.
pub fn primary_of(view: u64) -> NodeId {
    NodeId(view & NODE_ID_MAX)
}

/// The view after `view` whose primary is `node`; none past the last round.
pub(crate) fn next_view(view: u64, node: NodeId) -> Option<u64> {
    let round = (view >> NODE_BITS).checked_add(1)?;
    (round < 1 << (64 - NODE_BITS)).then_some((round << NODE_BITS) | node.0)
}

/// The first view of a cluster: its lowest member is primary. A node that joins a running
/// cluster boots knowing no members, in view 0, which names no primary; it takes the view of
/// the primary that first replicates to it.
pub(crate) fn first_view(voters: &[NodeId]) -> u64 {
    voters.iter().map(|n| n.0).min().unwrap_or(0)
}

/// Messages between members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Primary to backup: the entries after `prev` (index, era), the commit point, and a read
    /// round to confirm. Empty as a heartbeat. A backup in an older view moves to this one.
    Replicate {
        /// The sender's view.
        view: u64,
        /// Index of the entry before `entries`.
        prev_index: LogIndex,
        /// Its era (the view that wrote it).
        prev_era: u64,
        /// Entries to hold, in order.
        entries: Vec<Entry>,
        /// Everything through here is on every member.
        commit: LogIndex,
        /// The read round this message confirms the view for.
        round: u64,
    },
    /// Backup to primary: it holds the primary's history durably through `last` (when `ok`),
    /// or it does not hold `prev` and the primary should resend from after `last`.
    Ack {
        /// The view it answers in.
        view: u64,
        /// See above.
        last: LogIndex,
        /// Whether `prev` matched.
        ok: bool,
        /// The read round of the Replicate answered.
        round: u64,
    },
    /// Refusal of a message from an older view: the sender is no longer primary.
    Stale {
        /// The view the refusing member is in.
        view: u64,
    },
    /// An operator's failover, relayed by the member it was sent to, or a removed primary's
    /// hand-over: the receiver makes itself primary of a view after `view`. It carries the
    /// sender's commit point, which the receiver takes if it holds that very entry: a
    /// member takes over only once it knows the membership that makes it a voter committed.
    TakeOver {
        /// The newest view the relaying member knew.
        view: u64,
        /// The sender's commit point.
        commit: LogIndex,
        /// The era of the entry there.
        commit_era: u64,
    },
    /// Primary to a backup that needs what the primary compacted (a member that joined, or
    /// one far behind): a chunk of its newest snapshot.
    Snap {
        /// The sender's view.
        view: u64,
        /// The snapshot's position.
        meta: SnapshotMeta,
        /// Where this chunk starts in the snapshot's bytes.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// Whether it is the last chunk.
        done: bool,
        /// The membership the snapshot records (with the last chunk).
        membership: Option<Membership>,
    },
    /// Backup to primary: the snapshot's bytes it holds (`next_offset`), or that it installed
    /// it durably (`done`).
    SnapAck {
        /// The view it answers in.
        view: u64,
        /// The snapshot it answers for.
        meta: SnapshotMeta,
        /// The bytes it holds so far.
        next_offset: u64,
        /// It installed the snapshot.
        done: bool,
    },
}

impl Message {
    /// The view a message is sent in.
    pub fn view(&self) -> u64 {
        match self {
            Message::Replicate { view, .. }
            | Message::Ack { view, .. }
            | Message::Stale { view }
            | Message::TakeOver { view, .. }
            | Message::Snap { view, .. }
            | Message::SnapAck { view, .. } => *view,
        }
    }
}

/// A view as `round.primary`, for traces.
pub(crate) struct ViewName(pub u64);

impl fmt::Display for ViewName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 >> NODE_BITS, self.0 & NODE_ID_MAX)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Replicate {
                view,
                prev_index,
                entries,
                commit,
                round,
                ..
            } => {
                write!(f, "Replicate v{} after {prev_index}", ViewName(*view))?;
                if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                    write!(f, " {}..={}", first.index, last.index)?;
                }
                write!(f, " commit={commit} round={round}")
            }
            Message::Ack {
                view,
                last,
                ok,
                round,
            } => {
                let verdict = if *ok { "" } else { " refused" };
                write!(
                    f,
                    "Ack v{} last={last}{verdict} round={round}",
                    ViewName(*view)
                )
            }
            Message::Stale { view } => write!(f, "Stale v{}", ViewName(*view)),
            Message::TakeOver { view, commit, .. } => {
                write!(f, "TakeOver after v{} commit={commit}", ViewName(*view))
            }
            Message::Snap {
                view,
                meta,
                offset,
                data,
                done,
                ..
            } => write!(
                f,
                "Snap v{} through {} offset={offset} len={}{}",
                ViewName(*view),
                meta.index,
                data.len(),
                if *done { " done" } else { "" }
            ),
            Message::SnapAck {
                view,
                meta,
                next_offset,
                done,
            } => write!(
                f,
                "SnapAck v{} through {} next={next_offset}{}",
                ViewName(*view),
                meta.index,
                if *done { " installed" } else { "" }
            ),
        }
    }
}
