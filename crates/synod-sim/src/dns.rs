//! Running DNS-style propagation in the simulator. It promises no linearizability (the
//! run counts histories without a linearization instead of failing them) and is held to
//! what it does promise: the world's checks (replicas converge once the network heals; no
//! two nodes apply different commands at one serial, so no acknowledged write is lost),
//! Raft's log checks (an (era, serial) names one change), and:
//!
//! - **Serials never go back**: a node's serial (what it applied) never decreases, across
//!   crashes included, so a client never sees a copy older than one it already read there.
//! - **Bounded staleness**: in a run without faults, no read, cached or not, is staler than
//!   the refresh interval plus the clients' TTL plus the retry interval (the time a transfer
//!   takes to cross the network and reach the secondary's disk).

use std::collections::BTreeMap;

use synod_core::{Log, LogIndex, NodeId};
use synod_dns::Dns;

use crate::protocol::{Invariants, Protocol};
use crate::raft::{LogEngine, LogInvariants};
use crate::TICK_US;

/// How long simulated clients cache an answer: 10 ticks.
const CLIENT_TTL_TICKS: u64 = 10;

impl Protocol for Dns {
    type Invariants = DnsInvariants;
    /// Reads can only be as fresh as the primary's disk keeps its history: a primary that
    /// loses its disk loses every write since it was made, which DNS accepts (the operator
    /// restores the zone). The nemesis damages no disk here, as under sync.
    const WRITES_NEED_EVERY_MEMBER: bool = true;
    const CLIENT_CACHE_TTL_US: u64 = CLIENT_TTL_TICKS * TICK_US;
    const STALENESS_BOUND_US: Option<u64> = Some(
        (synod_dns::Config::DEFAULT_REFRESH_TICKS
            + CLIENT_TTL_TICKS
            + synod_dns::Config::DEFAULT_RETRY_TICKS)
            * TICK_US,
    );

    fn log_tail(&self, max: usize) -> (synod_core::LogIndex, Vec<Option<u64>>) {
        crate::protocol::tail_of(self.log(), max)
    }
}

impl LogEngine for Dns {
    fn log(&self) -> &Log {
        Dns::log(self)
    }

    /// The primary's era, and a removed primary's while it hands over: the writes it made
    /// durable and its own removal are committed too.
    fn leading_era(&self) -> Option<u64> {
        (self.is_primary() || self.is_handing_over()).then_some(self.era())
    }

    fn commit_index(&self) -> LogIndex {
        self.serial()
    }
}

/// DNS-style propagation's properties (see the module documentation).
#[derive(Default)]
pub struct DnsInvariants {
    logs: LogInvariants,
    /// The highest serial each node reached, in any life.
    serials: BTreeMap<NodeId, LogIndex>,
}

impl Invariants<Dns> for DnsInvariants {
    fn after_step(&mut self, id: NodeId, incarnation: u64, node: &Dns) -> Result<(), String> {
        self.logs.after_step(id, incarnation, node)?;
        let highest = self.serials.entry(id).or_default();
        if node.serial() < *highest {
            return Err(format!(
                "serials never go back: {id} is at serial {} after it reached {highest}",
                node.serial()
            ));
        }
        *highest = node.serial();
        Ok(())
    }

    fn periodic(&mut self, live: &[(NodeId, u64, &Dns)]) -> Result<(), String> {
        self.logs.periodic(live)
    }
}
