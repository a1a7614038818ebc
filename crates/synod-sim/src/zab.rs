//! Running ZAB in the simulator, and the properties of the DSN 2011 paper checked while it
//! runs. The world checks for every protocol that one node leads per era (one established
//! leader per epoch) and that delivered transactions agree (integrity, total order and
//! agreement); here, over the histories themselves:
//!
//! - **Primary integrity** (with global primary order): an established leader's history
//!   holds every transaction committed in an earlier epoch, at its position.
//! - **Local primary order** and prefix agreement: a zxid names one transaction, and two
//!   histories that hold it agree on everything before it (checked as Raft's Log Matching).
//! - The epochs a node persists never go backwards of each other: its current epoch (f.a) is
//!   at most its accepted epoch (f.p), and its history holds no epoch beyond f.p.

use synod_core::{Log, LogIndex, NodeId};
use synod_zab::Zab;

use crate::protocol::{Invariants, Protocol};
use crate::raft::{LogEngine, LogInvariants};

impl Protocol for Zab {
    type Invariants = ZabInvariants;
}

impl LogEngine for Zab {
    fn log(&self) -> &Log {
        Zab::log(self)
    }

    fn leading_era(&self) -> Option<u64> {
        self.established_epoch()
    }

    fn commit_index(&self) -> LogIndex {
        Zab::commit_index(self)
    }
}

/// ZAB's properties (see the module documentation).
#[derive(Default)]
pub struct ZabInvariants {
    logs: LogInvariants,
}

impl Invariants<Zab> for ZabInvariants {
    fn after_step(&mut self, id: NodeId, incarnation: u64, zab: &Zab) -> Result<(), String> {
        if zab.current_epoch() > zab.accepted_epoch() {
            return Err(format!(
                "epochs: {id} has current epoch {} above its accepted epoch {}",
                zab.current_epoch(),
                zab.accepted_epoch()
            ));
        }
        if zab.log().last_era() > zab.accepted_epoch() {
            return Err(format!(
                "epochs: {id} holds a transaction of epoch {} beyond its accepted epoch {}",
                zab.log().last_era(),
                zab.accepted_epoch()
            ));
        }
        self.logs
            .after_step(id, incarnation, zab)
            .map_err(|e| format!("primary integrity: {e}"))
    }

    fn periodic(&mut self, live: &[(NodeId, u64, &Zab)]) -> Result<(), String> {
        self.logs
            .periodic(live)
            .map_err(|e| format!("local primary order: {e}"))
    }
}
