//! What a leader knows about each follower's log, and the flow control of its appends.

use std::collections::VecDeque;

use synod_core::LogIndex;

/// How a leader sends to one follower (as in etcd's raft).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Where the logs agree is unknown: one append at a time, backing up on rejection.
    Probe,
    /// The logs agree up to `match_index`: appends are pipelined up to the in-flight limit.
    Replicate,
    /// The follower needs entries the leader compacted away: it is sent the snapshot through
    /// `index`, one chunk at a time, from byte `offset`.
    Snapshot {
        /// The snapshot's last index.
        index: LogIndex,
        /// The next byte to send.
        offset: u64,
    },
}

/// One append awaiting acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Inflight {
    last_index: LogIndex,
    sent_at_tick: u64,
}

/// The leader's view of one follower (paper Figure 2: nextIndex, matchIndex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Highest index known replicated on the follower.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// Sending mode.
    pub mode: Mode,
    /// Whether the follower answered anything since the last quorum check.
    pub recent_active: bool,
    /// The leader's tick when it last heard from the follower in its term.
    pub heard_at: Option<u64>,
    /// Highest ReadIndex round the follower confirmed.
    pub read_round_acked: u64,
    /// Highest commit point sent to the follower (in an append or a heartbeat).
    pub commit_sent: LogIndex,
    inflight: VecDeque<Inflight>,
}

impl Progress {
    /// A follower about which nothing is known yet: probe from just after the leader's log.
    pub fn new(next_index: LogIndex) -> Self {
        Progress {
            match_index: 0,
            next_index,
            mode: Mode::Probe,
            recent_active: false,
            heard_at: None,
            read_round_acked: 0,
            commit_sent: 0,
            inflight: VecDeque::new(),
        }
    }

    /// Whether another append may go out now.
    pub fn can_send(&self, inflight_max: usize) -> bool {
        match self.mode {
            Mode::Probe | Mode::Snapshot { .. } => self.inflight.is_empty(),
            Mode::Replicate => self.inflight.len() < inflight_max,
        }
    }

    /// Records an append covering entries up to `last_index`.
    pub fn sent(&mut self, last_index: LogIndex, tick: u64) {
        self.inflight.push_back(Inflight {
            last_index,
            sent_at_tick: tick,
        });
        if self.mode == Mode::Replicate {
            self.next_index = last_index + 1;
        }
    }

    /// The follower holds the leader's log up to `match_index`. Returns false for news that
    /// is older than what is already known.
    pub fn accepted(&mut self, match_index: LogIndex) -> bool {
        if match_index < self.match_index {
            return false;
        }
        self.match_index = match_index;
        self.next_index = self.next_index.max(match_index + 1);
        while self
            .inflight
            .front()
            .is_some_and(|i| i.last_index <= match_index)
        {
            self.inflight.pop_front();
        }
        if self.mode != Mode::Replicate {
            self.mode = Mode::Replicate;
            self.next_index = match_index + 1;
            self.inflight.clear();
        }
        true
    }

    /// Starts (or restarts, from `offset`) sending the snapshot through `index`.
    pub fn send_snapshot_from(&mut self, index: LogIndex, offset: u64) {
        self.mode = Mode::Snapshot { index, offset };
        self.inflight.clear();
    }

    /// Whether a rejection of the append at `prev_log_index` is news, not a late answer to
    /// an append the leader has already moved past.
    pub fn is_fresh_rejection(&self, prev_log_index: LogIndex) -> bool {
        match self.mode {
            Mode::Replicate => prev_log_index > self.match_index,
            Mode::Probe => prev_log_index + 1 == self.next_index,
            Mode::Snapshot { .. } => false,
        }
    }

    /// Goes back to probing from `next_index`, forgetting every append in flight.
    pub fn probe_from(&mut self, next_index: LogIndex) {
        self.mode = Mode::Probe;
        self.next_index = next_index.max(self.match_index + 1);
        self.inflight.clear();
    }

    /// Whether the oldest unacknowledged append was sent at least `retry_ticks` ago.
    pub fn is_stalled(&self, now_tick: u64, retry_ticks: u64) -> bool {
        self.inflight
            .front()
            .is_some_and(|i| now_tick.saturating_sub(i.sent_at_tick) >= retry_ticks)
    }

    /// Whether no append is awaiting an answer.
    pub fn is_idle(&self) -> bool {
        self.inflight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_at_a_time_then_replicate_pipelines() {
        let mut p = Progress::new(5);
        assert!(p.can_send(3));
        p.sent(5, 0);
        assert!(!p.can_send(3), "a probe waits for its answer");
        assert_eq!(
            p.next_index, 5,
            "probing does not move next_index optimistically"
        );
        assert!(p.accepted(5));
        assert_eq!((p.mode, p.next_index), (Mode::Replicate, 6));
        for i in 0..3 {
            assert!(p.can_send(3));
            p.sent(6 + i, 1);
        }
        assert!(!p.can_send(3), "the window is full");
        assert_eq!(p.next_index, 9);
        assert!(p.accepted(7));
        assert!(p.can_send(3), "acknowledgements open the window");
        assert!(!p.accepted(6), "an older acknowledgement is stale");
    }

    #[test]
    fn rejections_are_fresh_only_for_the_current_probe() {
        let mut p = Progress::new(10);
        p.sent(12, 0);
        assert!(p.is_fresh_rejection(9));
        assert!(!p.is_fresh_rejection(7));
        p.probe_from(4);
        assert_eq!(p.next_index, 4);
        assert!(p.is_idle());
    }

    #[test]
    fn stalls_are_measured_from_the_oldest_append() {
        let mut p = Progress::new(1);
        p.sent(1, 10);
        assert!(!p.is_stalled(15, 6));
        assert!(p.is_stalled(16, 6));
    }
}
