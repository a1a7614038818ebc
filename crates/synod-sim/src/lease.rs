//! The lease checker: what holders were promised, against when expiry deleted their keys.
//!
//! A holder is promised its lease until the TTL of the last answer it got (a grant or a
//! keep-alive) has run out. etcd's client counts a keep-alive's TTL from when the answer
//! arrives; what the answer spends in flight after its node sent it is outside any server's
//! power, so the checker counts from when the node sent it (a grant from when the client
//! asked: the leader's clock cannot start earlier). The TTL is measured on the clock of the
//! node that expired the lease, which drifts from true time by up to 10% here: that node's
//! own drift is all the slack the check allows. Two properties:
//!
//! - **Safety**: no lease is revoked by expiry (a revoke the replica proposed by itself)
//!   before, by the clock of the node that decided it, the TTL of the last answer its holder
//!   got has run out since that answer was sent. A leader that renews a lease and later
//!   expires it keeps this to the microsecond; a leader that takes over keeps it only by
//!   extending every clock on promotion, as etcd does, since its predecessor may have
//!   answered a keep-alive after the successor's clocks started. Checked when an expiry
//!   commits, and earlier too: the keeper of the newest lease epoch never holds a deadline
//!   that would expire a lease before its promise ran out, whether or not a sweep then lands
//!   in the gap.
//! - **Liveness**: after the heal, a lease its holder let lapse is gone within
//!   [`LAPSE_BOUND_US`] of its promise running out.

use std::collections::BTreeMap;

use synod_core::{ClientId, NodeId, Proposal};
use synod_kv::Request;

use crate::protocol::Protocol;
use crate::report::ViolationKind;
use crate::world::World;
use crate::SimTime;

/// After the heal, a lapsed lease is gone within this long after its promise ran out: a TTL
/// (at most 3 s here) again for a leader that took over meanwhile, its election timeout, and
/// a second of slack.
pub(crate) const LAPSE_BOUND_US: SimTime = 7_000_000;

/// What holders were promised, and when leases were expired.
#[derive(Debug, Default)]
pub(crate) struct LeaseCheck {
    /// Per lease, the last answer its holder got: when it was sent, and its TTL.
    promised: BTreeMap<i64, Promise>,
    /// Each lease's grant, the last one that took effect.
    granted: BTreeMap<i64, Grant>,
    /// Leases expired since their last grant: when the expiry committed, and which node
    /// decided it. An answer still in flight then may reach its holder afterwards.
    expired: BTreeMap<i64, (SimTime, NodeId)>,
    /// The lease epoch, as the committed log has it so far (the stores apply in batches, so
    /// a store read after a batch may already hold a later epoch).
    epoch: u64,
}

/// A grant committed at `at`, at log index `index` (which numbers the lease it made).
#[derive(Clone, Copy, Debug)]
struct Grant {
    at: SimTime,
    index: u64,
}

/// A holder was told, by an answer sent at `from`, that its lease lives `ttl_us` more.
#[derive(Clone, Copy, Debug)]
struct Promise {
    from: SimTime,
    ttl_us: SimTime,
}

impl Promise {
    /// When it runs out, in true time.
    fn until(&self) -> SimTime {
        self.from + self.ttl_us
    }
}

impl<P: Protocol> World<P> {
    /// A holder heard, by an answer sent at `from`, that its lease lives `ttl` seconds more.
    pub(crate) fn promise(&mut self, lease: i64, from: SimTime, ttl: i64) {
        let promise = Promise {
            from,
            ttl_us: ttl.max(0) as SimTime * 1_000_000,
        };
        // The lease may already be gone: its expiry committed while this answer was on its
        // way (or after the answer was sent, too early).
        if let Some(&(at, decider)) = self.leases.expired.get(&lease) {
            self.check_promise(lease, promise, at, decider, "an expiry committed earlier");
        }
        let last = self.leases.promised.entry(lease).or_insert(promise);
        if promise.until() > last.until() {
            *last = promise;
        }
    }

    /// A command committed (applied for the first time anywhere, where it `took_effect` or
    /// not): an expiry revoke must come after its holder's promise ran out.
    pub(crate) fn on_committed_command(
        &mut self,
        index: u64,
        proposal: &Proposal,
        took_effect: bool,
    ) {
        let request = Request::decode(&proposal.command);
        if !took_effect {
            // A retried grant, one refused because the lease exists, an expiry of a lease
            // granted again since its keeper decided it, or of an era whose epoch was
            // replaced: nothing changed, no promise either.
            if let Ok(Request::LeaseExpire(expire)) = request {
                self.trace_line(|| {
                    format!(
                        "lease {} expiry of era {} (grant {:?}) void at index {index}",
                        expire.id, expire.era, expire.granted_at
                    )
                });
            }
            return;
        }
        let lease = match request {
            // A lease granted under the id of one that is gone starts with no promise: what
            // the earlier one's holder was told is void.
            Ok(Request::LeaseGrant(grant)) => {
                let grant_at = Grant {
                    at: self.now,
                    index,
                };
                self.leases.granted.insert(grant.id, grant_at);
                self.leases.expired.remove(&grant.id);
                self.leases.promised.remove(&grant.id);
                return;
            }
            // A holder's own revoke (a client's write, under its user) voids its promise.
            Ok(Request::As { request, .. }) => {
                if let Request::LeaseRevoke(revoke) = *request {
                    self.leases.promised.remove(&revoke.id);
                }
                return;
            }
            Ok(Request::LeaseEpoch(epoch)) => {
                if epoch.era > self.leases.epoch {
                    self.leases.epoch = epoch.era;
                    self.stats.lease_epochs += 1;
                }
                return;
            }
            Ok(Request::LeaseExpire(expire)) => expire.id,
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
        self.note_line(|| format!("lease {lease} expires at index {index}"));
        // The replica's own commands carry its node id in their client id.
        let decider = NodeId((proposal.id.client.0 & !ClientId::UNTRACKED_FROM) >> 32);
        self.leases.expired.insert(lease, (now, decider));
        if let Some(&promise) = self.leases.promised.get(&lease) {
            let when = format!("expiry at index {index}");
            self.check_promise(lease, promise, now, decider, &when);
        }
    }

    /// An expiry that `decider` decided and that committed at `at` must come after, by the
    /// decider's clock, the TTL of `promise` has run out since its answer was sent.
    fn check_promise(
        &mut self,
        lease: i64,
        promise: Promise,
        at: SimTime,
        decider: NodeId,
        what: &str,
    ) {
        let Some(node) = self.nodes.iter().find(|n| n.id == decider) else {
            let detail = format!("lease {lease} expired by {decider}, not a member");
            return self.fail(ViolationKind::Safety, detail);
        };
        let elapsed = node
            .clock_us(at)
            .saturating_sub(node.clock_us(promise.from));
        if elapsed < promise.ttl_us {
            let detail = format!(
                "lease promise: lease {lease} was revoked by {what}, {} ms (by {decider}'s \
                 clock) before the TTL its holder was last given ran out",
                (promise.ttl_us - elapsed) / 1000
            );
            self.fail(ViolationKind::Safety, detail);
        }
    }

    /// Node `id`, if it keeps the clocks of the newest lease epoch, holds no deadline before, by its own clock, the
    /// TTL its holder was last given has run out since that answer was sent. Stricter than the
    /// expiry check: a deadline too early is a broken promise as soon as it is set, whether or
    /// not the holder happens to stay quiet until it passes and a sweep lands right after.
    pub(crate) fn check_lease_deadlines(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get(id.0 as usize - 1) else {
            return;
        };
        let Some(replica) = node.replica.as_ref() else {
            return;
        };
        // Only the keeper of the newest epoch: an earlier keeper that has not heard of its
        // successor yet may hold any deadline, since its expiries are void.
        let Some((era, deadlines)) = replica.lease_deadlines() else {
            return;
        };
        if era != self.leases.epoch {
            return;
        }
        // Only for the lease the holder was promised: a keeper whose store has not applied
        // yet a revoke and a grant of the id again holds the earlier lease's clock, whose
        // expiry names that lease's grant and will be refused.
        let kv = replica.store().read();
        let early = deadlines.into_iter().find_map(|(lease, deadline)| {
            let promise = self.leases.promised.get(&lease)?;
            if self.leases.expired.contains_key(&lease) {
                return None;
            }
            let held = kv.leases().get(&lease).map(|l| l.granted_at);
            if held != self.leases.granted.get(&lease).map(|g| g.index) {
                return None;
            }
            let runs_out = node.clock_us(promise.from) + promise.ttl_us;
            (deadline < runs_out).then(|| (lease, runs_out - deadline))
        });
        drop(kv);
        if let Some((lease, by)) = early {
            let detail = format!(
                "lease promise: {id}'s clock for lease {lease} runs out {} ms (by its clock) \
                 before the TTL its holder was last given",
                by / 1000
            );
            self.fail(ViolationKind::Safety, detail);
        }
    }

    /// At the end of a run: every lease whose promise ran out long enough ago, after the
    /// heal, is gone.
    pub(crate) fn check_lapsed_leases(&self) -> Result<(), String> {
        let Some(healed) = self.healed_at else {
            return Ok(());
        };
        // A member's store: a node removed from the membership keeps what it held.
        let members = self.final_members();
        let Some(replica) = self
            .nodes
            .iter()
            .filter(|n| members.as_ref().is_none_or(|m| m.contains(&n.id)))
            .find_map(|n| n.replica.as_ref())
        else {
            return Ok(());
        };
        let kv = replica.store().read();
        for &lease in kv.leases().keys() {
            let promised = self.leases.promised.get(&lease).map_or(0, Promise::until);
            let granted = self.leases.granted.get(&lease).map_or(0, |g| g.at);
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
