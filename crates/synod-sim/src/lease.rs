//! The lease checker: what holders were promised, against when expiry deleted their keys.
//!
//! A holder is promised its lease until the TTL of the last answer it got has run out on its
//! own clock: a grant counts from when the client asked (the leader's clock cannot start
//! earlier), a keep-alive from when its answer arrived (etcd's client counts so). Clocks here
//! drift up to 10% apart and answers spend up to the network's worst delay in flight, so the
//! check allows [`DRIFT`] of the TTL. Two properties:
//!
//! - **Safety**: no lease is revoked by expiry (a revoke the replica proposed by itself)
//!   before its holder's promise has run out.
//! - **Liveness**: after the heal, a lease its holder let lapse is gone within
//!   [`LAPSE_BOUND_US`] of its promise running out.

use std::collections::BTreeMap;

use synod_core::{ClientId, Proposal};
use synod_kv::Request;

use crate::protocol::Protocol;
use crate::report::ViolationKind;
use crate::world::World;
use crate::SimTime;

/// The share of a TTL the checker allows for clock drift and answers in flight.
const DRIFT: f64 = 0.2;

/// After the heal, a lapsed lease is gone within this long after its promise ran out: a TTL
/// (at most 3 s here) again for a leader that took over meanwhile, its election timeout, and
/// a second of slack.
pub(crate) const LAPSE_BOUND_US: SimTime = 7_000_000;

/// What holders were promised, and when leases were expired.
#[derive(Debug, Default)]
pub(crate) struct LeaseCheck {
    /// Per lease, until when its holder was promised it.
    promised: BTreeMap<i64, SimTime>,
    /// When each lease's grant committed.
    granted_at: BTreeMap<i64, SimTime>,
    /// The lease epoch, as the committed log has it so far (the stores apply in batches, so
    /// a store read after a batch may already hold a later epoch).
    epoch: u64,
}

impl<P: Protocol> World<P> {
    /// A holder heard, at `from`, that its lease lives `ttl` seconds more.
    pub(crate) fn promise(&mut self, lease: i64, from: SimTime, ttl: i64) {
        let until = from + (ttl.max(0) as f64 * 1_000_000.0 * (1.0 - DRIFT)) as SimTime;
        let promised = self.leases.promised.entry(lease).or_default();
        *promised = (*promised).max(until);
    }

    /// A command committed (applied for the first time anywhere): an expiry revoke must come
    /// after its holder's promise ran out.
    pub(crate) fn on_committed_command(&mut self, index: u64, proposal: &Proposal) {
        let lease = match Request::decode(&proposal.command) {
            Ok(Request::LeaseGrant(grant)) => {
                self.leases.granted_at.insert(grant.id, self.now);
                return;
            }
            Ok(Request::LeaseEpoch(epoch)) => {
                if epoch.era > self.leases.epoch {
                    self.leases.epoch = epoch.era;
                    self.stats.lease_epochs += 1;
                }
                return;
            }
            // An expiry counts only in the lease epoch of the era that decided it.
            Ok(Request::LeaseExpire(expire)) => {
                if self.leases.epoch != expire.era {
                    let epoch = self.leases.epoch;
                    self.trace_line(|| {
                        format!(
                            "lease {} expiry of era {} void in epoch {epoch}",
                            expire.id, expire.era
                        )
                    });
                    return;
                }
                expire.id
            }
            // A revoke the replica proposed by itself, not a client's (an injected bug).
            Ok(Request::LeaseRevoke(revoke))
                if proposal.id.client.0 >= ClientId::UNTRACKED_FROM =>
            {
                revoke.id
            }
            _ => return,
        };
        self.stats.leases_expired += 1;
        let now = self.now;
        self.trace_line(|| format!("lease {lease} expires at index {index}"));
        if let Some(&promised) = self.leases.promised.get(&lease) {
            if now < promised {
                let detail = format!(
                    "lease promise: lease {lease} was revoked by expiry at index {index}, {} ms \
                     before the TTL its holder was last given ran out",
                    (promised - now) / 1000
                );
                self.fail(ViolationKind::Safety, detail);
            }
        }
    }

    /// At the end of a run: every lease whose promise ran out long enough ago, after the
    /// heal, is gone.
    pub(crate) fn check_lapsed_leases(&self) -> Result<(), String> {
        let Some(healed) = self.healed_at else {
            return Ok(());
        };
        let Some(replica) = self.nodes.iter().find_map(|n| n.replica.as_ref()) else {
            return Ok(());
        };
        let kv = replica.store().read();
        for &lease in kv.leases().keys() {
            let promised = self.leases.promised.get(&lease).copied().unwrap_or(0);
            let granted = self.leases.granted_at.get(&lease).copied().unwrap_or(0);
            let since = promised.max(granted).max(healed);
            if since + LAPSE_BOUND_US < self.now {
                return Err(format!(
                    "lease {lease} still exists {} ms after its promise ran out, it was \
                     granted and the cluster healed",
                    (self.now - since) / 1000
                ));
            }
        }
        Ok(())
    }
}
