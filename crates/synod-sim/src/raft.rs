//! Running Raft in the simulator, and the safety properties of the Raft paper's Figure 3
//! that are checked while it runs (Election Safety and State Machine Safety are checked for
//! every protocol by the world itself). ZAB keeps a log the same way, and the same checks
//! are its papers' properties (see `zab.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use synod_core::{Engine, Entry, Log, LogIndex, NodeId, Role};
use synod_raft::Raft;

use crate::protocol::{Invariants, Protocol};

impl Protocol for Raft {
    type Invariants = RaftInvariants;

    fn log_tail(&self, max: usize) -> (synod_core::LogIndex, Vec<Option<u64>>) {
        crate::protocol::tail_of(self.log(), max)
    }
}

/// An engine that keeps a log whose entries are named by (index, era), one leader per era.
pub trait LogEngine: Engine {
    /// The node's log.
    fn log(&self) -> &Log;
    /// The era it leads, while it leads (for ZAB: an established epoch).
    fn leading_era(&self) -> Option<u64>;
    /// Highest index it knows committed.
    fn commit_index(&self) -> LogIndex;
}

impl LogEngine for Raft {
    fn log(&self) -> &Log {
        Raft::log(self)
    }

    fn leading_era(&self) -> Option<u64> {
        (self.role() == Role::Leader).then(|| self.term())
    }

    fn commit_index(&self) -> LogIndex {
        Raft::commit_index(self)
    }
}

/// Log Matching and Leader Completeness (Raft paper Figure 3).
pub type RaftInvariants = LogInvariants;

/// Log Matching and Leader Completeness, for any [`LogEngine`].
#[derive(Default)]
pub struct LogInvariants {
    /// Every entry a leader has committed, with the era of the leader that committed it.
    committed: BTreeMap<LogIndex, (u64, Entry)>,
    /// Eras whose leader has been checked for completeness.
    leaders_checked: BTreeSet<u64>,
    /// Log matching: what (index, era) was seen to hold, and the era before it.
    seen: HashMap<(LogIndex, u64), (Entry, u64)>,
    /// Per node and incarnation, the log prefix already checked (committed, so immutable).
    checked_through: BTreeMap<NodeId, (u64, LogIndex)>,
}

impl<E: LogEngine> Invariants<E> for LogInvariants {
    fn after_step(&mut self, _id: NodeId, _incarnation: u64, engine: &E) -> Result<(), String> {
        let Some(era) = engine.leading_era() else {
            return Ok(());
        };
        if self.leaders_checked.insert(era) {
            self.check_leader_completeness(engine, era)?;
        }
        // Entries this leader already compacted were recorded when first committed.
        let recorded = self.committed.keys().next_back().copied().unwrap_or(0);
        let from = (recorded + 1).max(engine.log().base().index + 1);
        for index in from..=engine.commit_index() {
            let entry = engine
                .log()
                .entry(index)
                .expect("committed entries after the base are in the log");
            self.committed.insert(index, (era, entry.clone()));
        }
        Ok(())
    }

    fn periodic(&mut self, live: &[(NodeId, u64, &E)]) -> Result<(), String> {
        for &(id, incarnation, engine) in live {
            self.check_log_matching(id, incarnation, engine)?;
        }
        Ok(())
    }
}

impl LogInvariants {
    /// Leader Completeness: a leader of era T holds every entry committed in an era < T.
    fn check_leader_completeness<E: LogEngine>(&self, engine: &E, era: u64) -> Result<(), String> {
        let base = engine.log().base().index;
        for (index, (committed_in, entry)) in self.committed.range(base + 1..) {
            if *committed_in < era && engine.log().entry(*index) != Some(entry) {
                return Err(format!(
                    "leader completeness: {} leads era {era} without entry {entry}, committed in era {committed_in}",
                    engine.status().id,
                ));
            }
        }
        Ok(())
    }

    /// Log Matching: two logs with an entry of the same index and term are identical up to
    /// it. Checked inductively: every (index, term) must always hold the same entry, preceded
    /// by the same term.
    fn check_log_matching<E: LogEngine>(
        &mut self,
        id: NodeId,
        incarnation: u64,
        engine: &E,
    ) -> Result<(), String> {
        let log = engine.log();
        let from = match self.checked_through.get(&id) {
            Some(&(inc, through)) if inc == incarnation => through + 1,
            _ => 1,
        }
        .max(log.base().index + 1);
        for index in from..=log.last_index() {
            let entry = log.entry(index).expect("index within the log");
            let prev_term = log.era(index - 1).expect("index - 1 within the log");
            let key = (index, entry.era);
            match self.seen.get(&key) {
                None => {
                    self.seen.insert(key, (entry.clone(), prev_term));
                }
                Some((e, p)) if e == entry && *p == prev_term => {}
                Some((e, p)) => {
                    return Err(format!(
                        "log matching: {id} holds {entry} after term {prev_term}, another log holds {e} after term {p}"
                    ))
                }
            }
        }
        let through = engine.commit_index().min(log.last_index());
        self.checked_through.insert(id, (incarnation, through));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::{Action, Input, Payload, PersistId};
    use synod_raft::encode_hard_state;

    fn entry(index: u64, term: u64, tag: u64) -> Entry {
        let proposal = synod_core::Proposal {
            id: synod_core::RequestId::new(tag, index),
            command: bytes::Bytes::new(),
        };
        Entry {
            index,
            era: term,
            payload: Payload::Command(proposal),
        }
    }

    fn node(id: u64, term: u64, log: Vec<Entry>) -> Raft {
        let config = synod_raft::Config::new(NodeId(id), vec![NodeId(id)]);
        Raft::restart(config, Some(&encode_hard_state(term, None)), None, log).unwrap()
    }

    /// A one-node cluster that has elected itself and committed its log.
    fn elected(term: u64, log: Vec<Entry>) -> Raft {
        let mut raft = node(1, term, log);
        let mut out = Vec::new();
        while raft.role() != Role::Leader {
            raft.step(Input::Tick, &mut out);
        }
        let last = out.iter().filter_map(|a| match a {
            Action::Persist(p) => Some(p.id),
            _ => None,
        });
        let last: PersistId = last.max().unwrap();
        raft.step(Input::Persisted(last), &mut out);
        raft
    }

    #[test]
    fn log_matching_flags_one_index_and_term_holding_two_entries() {
        let a = node(1, 2, vec![entry(1, 1, 7), entry(2, 2, 7)]);
        let b = node(2, 2, vec![entry(1, 1, 7), entry(2, 2, 8)]);
        let mut check = RaftInvariants::default();
        check.periodic(&[(NodeId(1), 0, &a)]).unwrap();
        let err = check.periodic(&[(NodeId(2), 0, &b)]).unwrap_err();
        assert!(err.starts_with("log matching"), "{err}");
    }

    #[test]
    fn log_matching_flags_equal_entries_with_different_histories() {
        let a = node(1, 3, vec![entry(1, 1, 7), entry(2, 3, 7)]);
        let b = node(2, 3, vec![entry(1, 2, 7), entry(2, 3, 7)]);
        let mut check = RaftInvariants::default();
        let err = check
            .periodic(&[(NodeId(1), 0, &a), (NodeId(2), 0, &b)])
            .unwrap_err();
        assert!(err.starts_with("log matching"), "{err}");
    }

    #[test]
    fn leader_completeness_flags_a_leader_missing_a_committed_entry() {
        let mut check = RaftInvariants::default();
        let first = elected(0, vec![]);
        assert_eq!(first.commit_index(), 1);
        check.after_step(NodeId(1), 0, &first).unwrap();
        // A later leader whose log lacks what term 1 committed.
        let later = elected(4, vec![entry(1, 2, 9)]);
        let err = check.after_step(NodeId(1), 0, &later).unwrap_err();
        assert!(err.starts_with("leader completeness"), "{err}");
        // One that has it passes.
        let mut check = RaftInvariants::default();
        check.after_step(NodeId(1), 0, &first).unwrap();
        let good = elected(4, first.log().entries().to_vec());
        check.after_step(NodeId(1), 0, &good).unwrap();
    }
}
