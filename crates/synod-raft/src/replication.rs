//! Log replication (paper 5.3, 5.4.2): the leader's appends, heartbeats and commit rule,
//! and the follower's consistency check.

use synod_core::quorum::majority_index;
use synod_core::{NodeId, Payload, Proposal, Role};

use crate::message::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, CommitNotice, Heartbeat,
    HeartbeatResponse, Message,
};
use crate::progress::Mode;
use crate::raft::{Out, Raft};

impl Raft {
    /// Client commands: the leader appends them all and ships them in as few appends as
    /// the batch limits allow. Anyone else refuses them, pointing at the leader.
    pub(crate) fn on_propose(&mut self, proposals: Vec<Proposal>, out: &mut Out) {
        let transferring = self.lead.as_ref().is_some_and(|l| l.transfer.is_some());
        if self.role != Role::Leader || transferring {
            for p in proposals {
                self.reject(p.id, out);
            }
            return;
        }
        if proposals.is_empty() {
            return;
        }
        for p in proposals {
            self.append(Payload::Command(p));
        }
        self.broadcast_append(out);
        // A cluster of one commits once its own write is durable (see `on_persisted`).
        self.maybe_commit(out);
    }

    pub(crate) fn broadcast_append(&mut self, out: &mut Out) {
        for to in self.peers.clone() {
            self.send_appends(to, out);
        }
    }

    /// Sends `to` everything it lacks, as far as its window allows.
    pub(crate) fn send_appends(&mut self, to: NodeId, out: &mut Out) {
        while self.send_one_append(to, false, out) {}
    }

    /// Sends one AppendEntries from the follower's next index. With `even_if_empty`, sends it
    /// even with no entries, as a probe of where the logs agree. Returns whether it sent.
    pub(crate) fn send_one_append(
        &mut self,
        to: NodeId,
        even_if_empty: bool,
        out: &mut Out,
    ) -> bool {
        let base = self.log.base().index;
        let needs_snapshot = self
            .progress(to)
            .is_some_and(|p| matches!(p.mode, Mode::Snapshot { .. }) || p.next_index <= base);
        if needs_snapshot {
            return self.send_snapshot_chunk(to, out);
        }
        let config = &self.config;
        let Some(progress) = self.lead.as_mut().and_then(|l| l.progress.get_mut(&to)) else {
            return false;
        };
        let last_index = self.log.last_index();
        if !progress.can_send(config.inflight_appends_max)
            || (progress.next_index > last_index && !even_if_empty)
        {
            return false;
        }
        let prev_log_index = progress.next_index - 1;
        let prev_log_term = self
            .log
            .era(prev_log_index)
            .expect("a follower's next index is within the leader's log");
        let entries = self.log.slice(
            progress.next_index,
            config.append_entries_max,
            config.append_bytes_max,
        );
        progress.sent(prev_log_index + entries.len() as u64, self.ticks);
        progress.commit_sent = progress.commit_sent.max(self.commit_index);
        let message = Message::AppendEntries(AppendEntries {
            term: self.term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit_index,
        });
        self.send_ahead_of_log(to, message, out);
        true
    }

    /// Paper 5.3, the receiver's rules for AppendEntries.
    pub(crate) fn on_append_entries(
        &mut self,
        from: NodeId,
        request: AppendEntries,
        out: &mut Out,
    ) {
        // Same term (settled already): `from` is this term's leader.
        self.become_follower(self.term, Some(from), out);
        let outcome = match self.log.era(request.prev_log_index) {
            // Everything through the commit index is the same on every log (Log Matching and
            // Leader Completeness) and may be compacted here: say how far that goes.
            _ if request.prev_log_index < self.commit_index => AppendOutcome::Accepted {
                match_index: self.commit_index,
            },
            None => AppendOutcome::Rejected {
                prev_log_index: request.prev_log_index,
                conflict_term: None,
                conflict_index: self.log.last_index() + 1,
            },
            Some(term) if term != request.prev_log_term => AppendOutcome::Rejected {
                prev_log_index: request.prev_log_index,
                conflict_term: Some(term),
                conflict_index: self.log.first_index_of_era_at(request.prev_log_index),
            },
            Some(_) => {
                let match_index = self.accept_entries(&request);
                self.commit_to(request.leader_commit.min(match_index), out);
                AppendOutcome::Accepted { match_index }
            }
        };
        let response = AppendEntriesResponse {
            term: self.term,
            outcome,
        };
        // `send` flushes first: the entries are durable before the leader counts them.
        self.send(from, Message::AppendEntriesResponse(response), out);
    }

    /// Appends what is new in `request`, cutting off our log at the first conflicting
    /// entry (paper Figure 2, receiver rules 3 and 4). Returns the last index it covers.
    fn accept_entries(&mut self, request: &AppendEntries) -> u64 {
        let mut new_entries = request.entries.iter().peekable();
        // A membership entry takes effect as it is appended and ends as it is cut (4.1).
        let mut membership_moved = false;
        while let Some(entry) = new_entries.peek() {
            match self.log.era(entry.index) {
                Some(term) if term == entry.era => {
                    new_entries.next();
                }
                Some(_) => {
                    membership_moved |= entry.index <= self.membership_index;
                    self.truncate(entry.index);
                    break;
                }
                None => break,
            }
        }
        for entry in new_entries {
            membership_moved |= matches!(entry.payload, Payload::Membership { .. });
            self.disk.draft.entries.push(entry.clone());
            self.log.push(entry.clone());
        }
        if membership_moved {
            self.refresh_membership();
        }
        request.prev_log_index + request.entries.len() as u64
    }

    pub(crate) fn on_append_response(
        &mut self,
        from: NodeId,
        response: AppendEntriesResponse,
        out: &mut Out,
    ) {
        if self.role != Role::Leader {
            return;
        }
        match response.outcome {
            AppendOutcome::Accepted { match_index } => {
                let Some(progress) = self.follower(from) else {
                    return;
                };
                progress.recent_active = true;
                if progress.accepted(match_index) {
                    self.maybe_commit(out);
                    self.maybe_send_timeout_now(from, out);
                }
                self.send_appends(from, out);
            }
            AppendOutcome::Rejected {
                prev_log_index,
                conflict_term,
                conflict_index,
            } => {
                let next = match conflict_term
                    .and_then(|t| self.log.last_index_of_era(t, prev_log_index))
                {
                    Some(last_of_term) => last_of_term + 1,
                    None => conflict_index,
                };
                let Some(progress) = self.follower(from) else {
                    return;
                };
                progress.recent_active = true;
                if !progress.is_fresh_rejection(prev_log_index) {
                    return;
                }
                // Always move back, by at least one, never below what is known to match.
                progress.probe_from(next.clamp(1, prev_log_index.max(1)));
                self.send_one_append(from, true, out);
            }
        }
    }

    pub(crate) fn follower(&mut self, id: NodeId) -> Option<&mut crate::progress::Progress> {
        self.lead.as_mut()?.progress.get_mut(&id)
    }

    /// Paper 5.3 and 5.4.2: an entry is committed once stored on a majority, but a leader
    /// counts replicas only for entries of its own term; earlier ones commit with them.
    pub(crate) fn maybe_commit(&mut self, out: &mut Out) {
        let Some(lead) = &self.lead else { return };
        let mut matched: Vec<u64> = lead
            .progress
            .iter()
            .filter(|(&id, _)| self.membership.is_voter(id))
            .map(|(_, p)| p.match_index)
            .collect();
        // A leader being removed manages the cluster without counting itself (4.2.2).
        if self.membership.is_voter(self.id) {
            matched.push(self.disk.durable_index());
        }
        if matched.is_empty() {
            return;
        }
        let candidate = majority_index(&mut matched);
        let own_term = self.log.era(candidate) == Some(self.term);
        #[cfg(any(test, feature = "inject-bugs"))]
        let own_term = own_term || self.config.bugs.commit_entries_of_earlier_terms;
        if candidate > self.commit_index && own_term {
            let before = self.commit_index;
            self.commit_to(candidate, out);
            self.on_commit_past_membership(before, out);
            self.on_commit_advanced(out);
        }
        // Also when the commit point did not move now: a follower whose append was in flight
        // when it moved has just answered, and that append carried the older point.
        self.announce_commit(out);
        self.step_down_if_removed(out);
    }

    /// Tells followers the commit point at once, not with the next heartbeat, so they apply
    /// without waiting (and answer the clients whose requests they handed to the leader).
    /// A follower with an append in flight hears it when that append is answered.
    fn announce_commit(&mut self, out: &mut Out) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let mut notices = Vec::new();
        for (&to, progress) in lead.progress.iter_mut() {
            let commit = self.commit_index.min(progress.match_index);
            if commit > progress.commit_sent && progress.is_idle() {
                progress.commit_sent = commit;
                notices.push((to, commit));
            }
        }
        for (to, commit) in notices {
            let notice = CommitNotice {
                term: self.term,
                commit,
            };
            self.send_ahead_of_log(to, Message::Commit(notice), out);
        }
    }

    /// A follower learns a commit point, capped by the leader at what it holds (as in a
    /// heartbeat, which this is without the answer).
    pub(crate) fn on_commit_notice(&mut self, from: NodeId, notice: CommitNotice, out: &mut Out) {
        self.become_follower(self.term, Some(from), out);
        self.commit_to(notice.commit.min(self.log.last_index()), out);
    }

    /// Heartbeats carry no log position; a follower trusts the commit point in them because
    /// the leader capped it at what it knows the follower holds.
    pub(crate) fn on_heartbeat(&mut self, from: NodeId, heartbeat: Heartbeat, out: &mut Out) {
        self.become_follower(self.term, Some(from), out);
        self.commit_to(heartbeat.commit.min(self.log.last_index()), out);
        let response = HeartbeatResponse {
            term: self.term,
            read_round: heartbeat.read_round,
        };
        self.send(from, Message::HeartbeatResponse(response), out);
    }

    pub(crate) fn on_heartbeat_response(
        &mut self,
        from: NodeId,
        response: HeartbeatResponse,
        out: &mut Out,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let started = self.lead.as_ref().map_or(0, |l| l.reads.round());
        let Some(progress) = self.follower(from) else {
            return;
        };
        progress.recent_active = true;
        // A round this leadership never started confirms nothing (a confused or stale peer).
        if response.read_round <= started {
            progress.read_round_acked = progress.read_round_acked.max(response.read_round);
        }
        let lagging = progress.match_index < last_index && progress.is_idle();
        if lagging {
            let probe = progress.mode == Mode::Probe;
            self.send_one_append(from, probe, out);
        }
        self.confirm_reads(out);
    }

    pub(crate) fn broadcast_heartbeat(&mut self, out: &mut Out) {
        let Some(lead) = &self.lead else { return };
        let round = lead.reads.round();
        let beats: Vec<(NodeId, Heartbeat)> = lead
            .progress
            .iter()
            .map(|(&to, p)| {
                let heartbeat = Heartbeat {
                    term: self.term,
                    commit: self.commit_index.min(p.match_index),
                    read_round: round,
                };
                (to, heartbeat)
            })
            .collect();
        if let Some(lead) = self.lead.as_mut() {
            for (to, heartbeat) in &beats {
                if let Some(p) = lead.progress.get_mut(to) {
                    p.commit_sent = p.commit_sent.max(heartbeat.commit);
                }
            }
        }
        for (to, heartbeat) in beats {
            self.send_ahead_of_log(to, Message::Heartbeat(heartbeat), out);
        }
    }

    /// A leader's clock: heartbeats, the quorum check, retries and the transfer deadline.
    pub(crate) fn tick_leader(&mut self, out: &mut Out) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        lead.heartbeat_elapsed += 1;
        lead.quorum_check_elapsed += 1;
        if lead.quorum_check_elapsed >= self.config.election_timeout_ticks_min {
            lead.quorum_check_elapsed = 0;
            if self.config.check_quorum && !self.heard_from_quorum() {
                // Thesis 6.2: a leader that cannot reach a majority steps down, so clients
                // stop waiting on it and find the real leader.
                self.become_follower(self.term, None, out);
                return;
            }
        }
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if lead.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            lead.heartbeat_elapsed = 0;
            self.broadcast_heartbeat(out);
        }
        self.retry_stalled_appends(out);
        self.tick_transfer();
        self.tick_lingering();
    }

    /// Whether a majority (this node included) answered since the last check; resets the
    /// marks for the next period.
    fn heard_from_quorum(&mut self) -> bool {
        let quorum = self.quorum();
        let own = usize::from(self.membership.is_voter(self.id));
        let membership = &self.membership;
        let Some(lead) = self.lead.as_mut() else {
            return false;
        };
        let active = own
            + lead
                .progress
                .iter()
                .filter(|(&id, p)| p.recent_active && membership.is_voter(id))
                .count();
        lead.progress
            .values_mut()
            .for_each(|p| p.recent_active = false);
        active >= quorum
    }

    /// Appends are retried indefinitely (paper 5.3): a follower whose oldest append has gone
    /// unanswered too long is probed again from what it is known to hold.
    fn retry_stalled_appends(&mut self, out: &mut Out) {
        let (now, retry) = (self.ticks, self.config.append_retry_ticks);
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let stalled: Vec<NodeId> = lead
            .progress
            .iter_mut()
            .filter(|(_, p)| p.is_stalled(now, retry))
            .map(|(&id, p)| {
                match p.mode {
                    // A snapshot's transfer resumes with the chunk that went unanswered:
                    // starting over would never end for a snapshot of gigabytes, whose
                    // chunks a busy follower may take longer than the retry to answer.
                    Mode::Snapshot { index, offset } => p.send_snapshot_from(index, offset),
                    _ => p.probe_from(p.match_index + 1),
                }
                id
            })
            .collect();
        for to in stalled {
            self.send_one_append(to, true, out);
        }
    }
}
