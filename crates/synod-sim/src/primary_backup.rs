//! Running synchronous primary-backup in the simulator. Besides the world's checks (one
//! primary per view, replicas that agree, linearizable histories) and Raft's log checks
//! (a primary holds everything committed before its view; an (index, view) names one entry and
//! histories holding it agree before it), the claim that makes the model synchronous:
//!
//! - **On every member**: an entry a primary committed is in the history of every voter of
//!   the membership in force at it, up or restarted, from the moment it is committed
//!   (learners, members that joined later and members removed before it need not hold it).

use synod_core::{Engine, Entry, Log, LogIndex, Membership, NodeId};
use synod_primary_backup::PrimaryBackup;

use crate::protocol::{Invariants, Protocol};
use crate::raft::{LogEngine, LogInvariants};

impl Protocol for PrimaryBackup {
    type Invariants = PrimaryBackupInvariants;
    const WRITES_NEED_EVERY_MEMBER: bool = true;

    fn log_tail(&self, max: usize) -> (synod_core::LogIndex, Vec<Option<u64>>) {
        crate::protocol::tail_of(self.log(), max)
    }
}

impl LogEngine for PrimaryBackup {
    fn log(&self) -> &Log {
        PrimaryBackup::log(self)
    }

    fn leading_era(&self) -> Option<u64> {
        self.ready_view()
    }

    fn commit_index(&self) -> LogIndex {
        PrimaryBackup::commit_index(self)
    }
}

/// Synchronous primary-backup's properties (see the module documentation).
#[derive(Default)]
pub struct PrimaryBackupInvariants {
    logs: LogInvariants,
    /// The newest entry a primary committed, and the membership in force at it there.
    newest_committed: Option<(Entry, Option<Membership>)>,
}

impl Invariants<PrimaryBackup> for PrimaryBackupInvariants {
    fn after_step(
        &mut self,
        id: NodeId,
        incarnation: u64,
        node: &PrimaryBackup,
    ) -> Result<(), String> {
        self.logs.after_step(id, incarnation, node)?;
        if node.ready_view().is_some() {
            let commit = node.commit_index();
            let newer = self
                .newest_committed
                .as_ref()
                .is_none_or(|(e, _)| e.index < commit);
            if newer {
                if let Some(entry) = node.log().entry(commit) {
                    self.newest_committed = Some((entry.clone(), node.membership_at(commit)));
                }
            }
        }
        Ok(())
    }

    fn periodic(&mut self, live: &[(NodeId, u64, &PrimaryBackup)]) -> Result<(), String> {
        self.logs.periodic(live)?;
        let Some((committed, membership)) = &self.newest_committed else {
            return Ok(());
        };
        for &(id, _, node) in live {
            if membership.as_ref().is_some_and(|m| !m.is_voter(id)) {
                continue;
            }
            let log = node.log();
            if committed.index <= log.base().index {
                continue;
            }
            if log.entry(committed.index) != Some(committed) {
                return Err(format!(
                    "on every member: {id} lacks {committed}, which a primary committed"
                ));
            }
        }
        Ok(())
    }
}
