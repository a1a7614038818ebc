//! What Raft nodes say to each other (paper Figure 2, thesis chapters 3, 6 and 9).

use bytes::Bytes;
use synod_core::{Entry, LogIndex, Membership, SnapshotMeta};

/// A Raft term (paper 5.1): a number that only grows, at most one leader per term.
pub type Term = u64;

/// Every message between Raft peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Would you vote for me in `term`? Asked before campaigning; changes no one's state
    /// (thesis 9.6).
    PreVote(VoteRequest),
    /// Answer to a [`Message::PreVote`].
    PreVoteResponse(VoteResponse),
    /// Vote for me in `term` (paper 5.2).
    RequestVote(VoteRequest),
    /// Answer to a [`Message::RequestVote`].
    RequestVoteResponse(VoteResponse),
    /// Replicate entries after the given position (paper 5.3).
    AppendEntries(AppendEntries),
    /// Answer to [`Message::AppendEntries`].
    AppendEntriesResponse(AppendEntriesResponse),
    /// I am still leader; here is how far you may commit. Carries no log position, so it
    /// cannot race with pipelined appends (the paper's empty AppendEntries, as etcd sends it).
    Heartbeat(Heartbeat),
    /// Answer to a [`Message::Heartbeat`]; confirms leadership for ReadIndex (thesis 6.4).
    HeartbeatResponse(HeartbeatResponse),
    /// The commit point moved: sent at once rather than with the next heartbeat, so followers
    /// apply (and answer the clients whose writes they handed on) without waiting. Unanswered.
    Commit(CommitNotice),
    /// Start an election now: the leader is handing over to you (thesis 3.10).
    TimeoutNow(TimeoutNow),
    /// A chunk of the leader's snapshot, for a follower that needs entries the leader has
    /// compacted away (paper section 7).
    InstallSnapshot(InstallSnapshot),
    /// Answer to [`Message::InstallSnapshot`].
    InstallSnapshotResponse(InstallSnapshotResponse),
}

impl Message {
    /// The sender's term.
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote(m) | Message::RequestVote(m) => m.term,
            Message::PreVoteResponse(m) | Message::RequestVoteResponse(m) => m.term,
            Message::AppendEntries(m) => m.term,
            Message::AppendEntriesResponse(m) => m.term,
            Message::Heartbeat(m) => m.term,
            Message::HeartbeatResponse(m) => m.term,
            Message::Commit(m) => m.term,
            Message::TimeoutNow(m) => m.term,
            Message::InstallSnapshot(m) => m.term,
            Message::InstallSnapshotResponse(m) => m.term,
        }
    }

    /// The message's name, for traces.
    pub fn name(&self) -> &'static str {
        match self {
            Message::PreVote(_) => "PreVote",
            Message::PreVoteResponse(_) => "PreVoteResponse",
            Message::RequestVote(_) => "RequestVote",
            Message::RequestVoteResponse(_) => "RequestVoteResponse",
            Message::AppendEntries(_) => "AppendEntries",
            Message::AppendEntriesResponse(_) => "AppendEntriesResponse",
            Message::Heartbeat(_) => "Heartbeat",
            Message::HeartbeatResponse(_) => "HeartbeatResponse",
            Message::Commit(_) => "Commit",
            Message::TimeoutNow(_) => "TimeoutNow",
            Message::InstallSnapshot(_) => "InstallSnapshot",
            Message::InstallSnapshotResponse(_) => "InstallSnapshotResponse",
        }
    }
}

/// A request for a vote or a pre-vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// The term the candidate runs in (for a pre-vote: the term it would run in).
    pub term: Term,
    /// Index of the candidate's last log entry (paper 5.4.1).
    pub last_log_index: LogIndex,
    /// Term of the candidate's last log entry.
    pub last_log_term: Term,
    /// The election follows a leadership transfer, so voters must not ignore it because
    /// they heard from the leader recently (thesis 3.10 with 4.2.3).
    pub leader_transfer: bool,
}

/// An answer to a vote or pre-vote request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteResponse {
    /// The voter's term; for a granted pre-vote, the term it was granted for.
    pub term: Term,
    /// Whether the vote is granted.
    pub granted: bool,
}

/// Entries to replicate (paper Figure 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntries {
    /// The leader's term.
    pub term: Term,
    /// Index of the entry just before the new ones.
    pub prev_log_index: LogIndex,
    /// Term of that entry: the consistency check.
    pub prev_log_term: Term,
    /// The entries, possibly none.
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub leader_commit: LogIndex,
}

/// An answer to AppendEntries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntriesResponse {
    /// The follower's term.
    pub term: Term,
    /// Accepted, or where the logs disagree.
    pub outcome: AppendOutcome,
}

/// What a follower did with an AppendEntries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The follower's log now matches the leader's up to `match_index`.
    Accepted {
        /// Last index the request covered.
        match_index: LogIndex,
    },
    /// The consistency check failed at `prev_log_index`. The hint lets the leader skip a
    /// whole conflicting term at once (paper 5.3, end): the follower's term at that index and
    /// the first index it holds of that term, or, if its log is too short, its length + 1.
    Rejected {
        /// The `prev_log_index` of the rejected request.
        prev_log_index: LogIndex,
        /// Term of the follower's entry at `prev_log_index`, if it has one.
        conflict_term: Option<Term>,
        /// First index of `conflict_term` in the follower's log, or its last index + 1.
        conflict_index: LogIndex,
    },
}

/// Leader liveness and commit progress, without log positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The leader's term.
    pub term: Term,
    /// How far the follower may commit: the leader's commit index capped at what the
    /// leader knows the follower holds, so it is safe without a consistency check.
    pub commit: LogIndex,
    /// The newest ReadIndex round; echoed back to confirm leadership.
    pub read_round: u64,
}

/// A new commit point for one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitNotice {
    /// The leader's term.
    pub term: Term,
    /// How far the follower may commit, capped as in [`Heartbeat::commit`].
    pub commit: LogIndex,
}

/// An answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// The follower's term.
    pub term: Term,
    /// The round of the heartbeat answered.
    pub read_round: u64,
}

/// One chunk of a snapshot (paper Figure 13, sent in bounded chunks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshot {
    /// The leader's term.
    pub term: Term,
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// Where this chunk starts in the snapshot's bytes.
    pub offset: u64,
    /// The chunk.
    pub data: Bytes,
    /// Whether this is the last chunk.
    pub done: bool,
    /// The membership as of the snapshot (paper section 7: the snapshot carries the latest
    /// configuration it covers), sent with the last chunk.
    pub membership: Option<Membership>,
}

/// An answer to a snapshot chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshotResponse {
    /// The follower's term.
    pub term: Term,
    /// The snapshot the answer is about.
    pub meta: SnapshotMeta,
    /// The offset the follower expects next (the chunk was taken if it moved forward).
    pub next_offset: u64,
    /// The follower holds the whole snapshot, durably.
    pub done: bool,
}

/// Ask the target of a leadership transfer to campaign at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutNow {
    /// The leader's term.
    pub term: Term,
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::PreVote(m) | Message::RequestVote(m) => write!(
                f,
                "{} term={} last={}/{}{}",
                self.name(),
                m.term,
                m.last_log_index,
                m.last_log_term,
                if m.leader_transfer { " transfer" } else { "" }
            ),
            Message::PreVoteResponse(m) | Message::RequestVoteResponse(m) => {
                write!(f, "{} term={} granted={}", self.name(), m.term, m.granted)
            }
            Message::AppendEntries(m) => {
                write!(f, "AppendEntries term={} prev={}/{} entries=", m.term, m.prev_log_index, m.prev_log_term)?;
                match (m.entries.first(), m.entries.last()) {
                    (Some(first), Some(last)) => write!(f, "{}..={}", first.index, last.index)?,
                    _ => f.write_str("none")?,
                }
                write!(f, " commit={}", m.leader_commit)
            }
            Message::AppendEntriesResponse(m) => match m.outcome {
                AppendOutcome::Accepted { match_index } => {
                    write!(f, "AppendEntriesResponse term={} accepted match={match_index}", m.term)
                }
                AppendOutcome::Rejected { prev_log_index, conflict_term, conflict_index } => write!(
                    f,
                    "AppendEntriesResponse term={} rejected prev={prev_log_index} conflict={conflict_index}/{}",
                    m.term,
                    conflict_term.map_or("-".to_string(), |t| t.to_string())
                ),
            },
            Message::Heartbeat(m) => write!(f, "Heartbeat term={} commit={} round={}", m.term, m.commit, m.read_round),
            Message::HeartbeatResponse(m) => write!(f, "HeartbeatResponse term={} round={}", m.term, m.read_round),
            Message::Commit(m) => write!(f, "Commit term={} commit={}", m.term, m.commit),
            Message::TimeoutNow(m) => write!(f, "TimeoutNow term={}", m.term),
            Message::InstallSnapshot(m) => write!(
                f,
                "InstallSnapshot term={} through={}/{} offset={} bytes={}{}",
                m.term,
                m.meta.index,
                m.meta.era,
                m.offset,
                m.data.len(),
                if m.done { " done" } else { "" }
            ),
            Message::InstallSnapshotResponse(m) => write!(
                f,
                "InstallSnapshotResponse term={} through={} next={}{}",
                m.term,
                m.meta.index,
                m.next_offset,
                if m.done { " done" } else { "" }
            ),
        }
    }
}
