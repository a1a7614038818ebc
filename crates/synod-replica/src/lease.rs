//! The leader's lease clocks, on its monotonic clock (microseconds).
//!
//! Which leases exist, their TTLs and their keys are replicated state (granted and revoked
//! through the log); when a lease runs out is not: it is the leader's clock, as in etcd. The
//! promise to a holder is that its keys are not deleted by expiry before the TTL of the last
//! answer it got (a grant or a keep-alive) has run out. The replica keeps it so:
//!
//! - a keep-alive is answered only once the leader confirmed, after the keep-alive arrived,
//!   that it still leads (a linearizable read round), only if it still leads in the same
//!   era then, and only if that round started a moment ago by its monotonic clock: a leader
//!   paused between the round and the answer may have been replaced meanwhile, and a holder
//!   counts its TTL from when the answer arrives;
//! - a lease whose deadline has passed, or whose revoke this leader has decided, is never
//!   renewed again: the holder is told TTL 0, as etcd does;
//! - a new leader starts the clock of every lease it finds at its TTL plus an election
//!   timeout (etcd's extension on promotion): its predecessor's last answer may rest on a
//!   confirmation that was still in flight while this leader took over;
//! - an expiry revoke enters the log only on the node whose clock expired the lease, in the
//!   same step as the decision, while it leads in that era; it is never forwarded, so a
//!   successor whose clocks were renewed since cannot commit it.

use std::collections::{HashMap, HashSet};

use synod_kv::Leases;

/// Lease rules broken on purpose, to prove that the simulator's lease checker catches the
/// holes they open. Without the `inject-bugs` feature the type has no fields, so a production
/// build cannot turn any of them on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseBugs {
    /// The first keep-alive: a node that believes it leads renews the lease on its own clock
    /// at once, confirming nothing (neither its leadership nor that the lease's time is not
    /// already up by that clock).
    #[cfg(feature = "inject-bugs")]
    pub renew_without_confirming: bool,
    /// A keep-alive for a lease whose revoke is decided but not yet applied is answered with
    /// the full TTL.
    #[cfg(feature = "inject-bugs")]
    pub renew_while_revoking: bool,
    /// An expiry revoke goes through the ordinary write path: retried, and forwarded to
    /// whoever leads by then, until it applies.
    #[cfg(feature = "inject-bugs")]
    pub revoke_in_any_era: bool,
    /// A new leader starts every lease's clock at its TTL, without etcd's extension on
    /// promotion.
    #[cfg(feature = "inject-bugs")]
    pub no_extension_on_promotion: bool,
    /// A lease granted again under the id of one revoked or expired since the last sweep
    /// keeps that one's clock: its deadline, or its doom.
    #[cfg(feature = "inject-bugs")]
    pub regrant_keeps_old_clock: bool,
    /// An expiry names its lease by id alone, not by the grant that made it: decided on a
    /// store that has not applied yet a revoke of the lease and a grant of its id again, it
    /// deletes the new lease.
    #[cfg(feature = "inject-bugs")]
    pub expiry_by_id_only: bool,
}

impl LeaseBugs {
    /// Every rule kept.
    pub const NONE: LeaseBugs = LeaseBugs {
        #[cfg(feature = "inject-bugs")]
        renew_without_confirming: false,
        #[cfg(feature = "inject-bugs")]
        renew_while_revoking: false,
        #[cfg(feature = "inject-bugs")]
        revoke_in_any_era: false,
        #[cfg(feature = "inject-bugs")]
        no_extension_on_promotion: false,
        #[cfg(feature = "inject-bugs")]
        regrant_keeps_old_clock: false,
        #[cfg(feature = "inject-bugs")]
        expiry_by_id_only: false,
    };

    pub(crate) fn renew_without_confirming(&self) -> bool {
        #[cfg(feature = "inject-bugs")]
        return self.renew_without_confirming;
        #[cfg(not(feature = "inject-bugs"))]
        false
    }

    fn renew_while_revoking(&self) -> bool {
        #[cfg(feature = "inject-bugs")]
        return self.renew_while_revoking;
        #[cfg(not(feature = "inject-bugs"))]
        false
    }

    pub(crate) fn revoke_in_any_era(&self) -> bool {
        #[cfg(feature = "inject-bugs")]
        return self.revoke_in_any_era;
        #[cfg(not(feature = "inject-bugs"))]
        false
    }

    fn no_extension_on_promotion(&self) -> bool {
        #[cfg(feature = "inject-bugs")]
        return self.no_extension_on_promotion;
        #[cfg(not(feature = "inject-bugs"))]
        false
    }

    fn regrant_keeps_old_clock(&self) -> bool {
        #[cfg(feature = "inject-bugs")]
        return self.regrant_keeps_old_clock;
        #[cfg(not(feature = "inject-bugs"))]
        false
    }

    pub(crate) fn expiry_by_id_only(&self) -> bool {
        #[cfg(feature = "inject-bugs")]
        return self.expiry_by_id_only;
        #[cfg(not(feature = "inject-bugs"))]
        false
    }
}

/// Revokes decided per sweep at most, so a mass expiry does not flood the log at once.
const REVOKES_PER_SWEEP: usize = 256;

/// The leader's deadlines, by its clock.
#[derive(Debug, Default)]
pub(crate) struct LeaseClocks {
    /// The era this node leads, while it leads; clocks are kept only then.
    era: Option<u64>,
    /// Whether this era's first sweep ran (which starts every lease's clock).
    swept: bool,
    /// What a clock started by a new leader gets beyond the TTL.
    extension: u64,
    deadlines: HashMap<i64, u64>,
    /// Leases whose revoke this leader decided: doomed, never renewed again.
    revoking: HashSet<i64>,
    bugs: LeaseBugs,
}

impl LeaseClocks {
    pub(crate) fn new(extension: u64, bugs: LeaseBugs) -> LeaseClocks {
        let extension = if bugs.no_extension_on_promotion() {
            0
        } else {
            extension
        };
        LeaseClocks {
            extension,
            bugs,
            ..LeaseClocks::default()
        }
    }

    /// Keeps clocks only for `leading`, the era this node leads in: clocks of an earlier
    /// leadership of this node mean nothing in a new one, and are dropped.
    pub(crate) fn follow(&mut self, leading: Option<u64>) {
        if self.era != leading {
            self.era = leading;
            self.swept = false;
            self.deadlines.clear();
            self.revoking.clear();
        }
    }

    /// A lease was granted under `id` just now: any clock kept for that id belonged to an
    /// earlier lease of the same id (expired or revoked since; a grant of an id in use is
    /// refused), and the new one must not inherit its deadline or its doom. Its own clock
    /// starts at its TTL, at the next sweep or keep-alive.
    pub(crate) fn granted(&mut self, id: i64) {
        if self.bugs.regrant_keeps_old_clock() {
            return;
        }
        self.deadlines.remove(&id);
        self.revoking.remove(&id);
    }

    /// Whether the clocks of `era` have started (its first sweep ran).
    pub(crate) fn started(&self, era: u64) -> bool {
        self.era == Some(era) && self.swept
    }

    /// Pushes lease `id`'s deadline to at least `ttl` after `now`, unless its time is up
    /// (its deadline passed, or its revoke is decided): then `false`, and the holder must be
    /// told the lease is gone. A deadline is never pulled in: a clock started by a new leader
    /// keeps its extension.
    pub(crate) fn renew(&mut self, id: i64, ttl: u64, now: u64) -> bool {
        let revoking = self.revoking.contains(&id) && !self.bugs.renew_while_revoking();
        let expired = self.deadlines.get(&id).is_some_and(|&d| d <= now)
            && !self.bugs.renew_without_confirming();
        if revoking || expired {
            return false;
        }
        self.revoking.remove(&id);
        let unstarted = if self.swept {
            0
        } else {
            now + ttl + self.extension
        };
        let deadline = self.deadlines.entry(id).or_insert(unstarted);
        *deadline = (*deadline).max(now + ttl);
        true
    }

    /// The deadline of every lease whose clock runs here and whose revoke is not decided,
    /// once this era's clocks started: when each would expire if nobody renewed it.
    pub(crate) fn deadlines(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.deadlines
            .iter()
            .filter(|(id, _)| self.swept && !self.revoking.contains(id))
            .map(|(&id, &deadline)| (id, deadline))
    }

    /// Time left on lease `id` (`ttl` if its clock has not started here).
    pub(crate) fn remaining(&self, id: i64, ttl: u64, now: u64) -> u64 {
        self.deadlines
            .get(&id)
            .map_or(ttl, |&deadline| deadline.saturating_sub(now))
    }

    /// Sweeps the clocks of the era followed (nothing if none): returns the leases whose time
    /// is up. `ttl_unit` converts a TTL in seconds to the clock's unit. The era's first sweep
    /// starts every lease's clock at its TTL plus the extension; a lease that appears later
    /// was granted under this leader and gets its TTL. An expired lease stays marked as
    /// revoking, and is returned again `retry` later if its revoke has not applied by then.
    pub(crate) fn sweep(
        &mut self,
        leases: &Leases,
        now: u64,
        ttl_unit: impl Fn(i64) -> u64,
        retry: u64,
    ) -> Vec<i64> {
        if self.era.is_none() {
            return Vec::new();
        }
        let extension = if self.swept { 0 } else { self.extension };
        self.swept = true;
        self.deadlines.retain(|id, _| leases.contains_key(id));
        self.revoking.retain(|id| leases.contains_key(id));
        let mut expired = Vec::new();
        for (&id, lease) in leases {
            let deadline = self
                .deadlines
                .entry(id)
                .or_insert_with(|| now + ttl_unit(lease.ttl) + extension);
            if *deadline <= now && expired.len() < REVOKES_PER_SWEEP {
                expired.push(id);
                self.revoking.insert(id);
                *deadline = now + retry;
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_kv::Lease;

    fn leases(ttls: &[(i64, i64)]) -> Leases {
        ttls.iter()
            .map(|&(id, ttl)| {
                let lease = Lease {
                    ttl,
                    granted_at: 0,
                    keys: Default::default(),
                };
                (id, lease)
            })
            .collect()
    }

    /// One unit per second, so TTLs read as units; the extension is 2.
    fn sweep(clocks: &mut LeaseClocks, leading: Option<u64>, all: &Leases, now: u64) -> Vec<i64> {
        clocks.follow(leading);
        clocks.sweep(all, now, |ttl| ttl as u64, 1)
    }

    #[test]
    fn only_a_leader_expires_and_a_new_era_extends_the_clocks() {
        let mut clocks = LeaseClocks::new(2, LeaseBugs::NONE);
        let all = leases(&[(1, 5), (2, 60)]);
        assert!(
            sweep(&mut clocks, None, &all, 0).is_empty(),
            "followers expire nothing"
        );
        assert!(sweep(&mut clocks, Some(3), &all, 0).is_empty());
        assert!(
            sweep(&mut clocks, Some(3), &all, 6).is_empty(),
            "not before TTL + extension"
        );
        assert_eq!(sweep(&mut clocks, Some(3), &all, 7), vec![1]);
        assert!(
            sweep(&mut clocks, Some(3), &all, 7).is_empty(),
            "a revoke in flight is not decided again at once"
        );
        assert_eq!(
            sweep(&mut clocks, Some(3), &all, 8),
            vec![1],
            "but again if it has not applied a retry later"
        );
        // A new era: every lease gets its TTL and the extension again.
        assert!(sweep(&mut clocks, Some(4), &all, 10).is_empty());
        assert!(clocks.renew(1, 5, 14));
        assert!(
            sweep(&mut clocks, Some(4), &all, 18).is_empty(),
            "kept alive"
        );
        assert_eq!(clocks.remaining(1, 5, 18), 1);
        // A lease granted under this leader: its TTL, no extension.
        let more = leases(&[(1, 5), (2, 60), (3, 5)]);
        assert!(sweep(&mut clocks, Some(4), &more, 18).is_empty());
        assert_eq!(clocks.remaining(3, 5, 18), 5);
    }

    #[test]
    fn a_lease_whose_time_is_up_is_not_renewed() {
        let mut clocks = LeaseClocks::new(0, LeaseBugs::NONE);
        let all = leases(&[(1, 5), (2, 5)]);
        sweep(&mut clocks, Some(1), &all, 0);
        // Lease 1's deadline has passed, though no sweep has seen it yet.
        assert!(!clocks.renew(1, 5, 5), "expired: not renewed");
        // Lease 2's revoke is decided: it stays doomed even when its deadline moves.
        assert_eq!(sweep(&mut clocks, Some(1), &all, 5), vec![1, 2]);
        assert!(!clocks.renew(2, 5, 5), "revoke in flight: not renewed");
        assert!(!clocks.renew(2, 5, 7), "still revoking");
        // Revoked, then granted again under the same id: a fresh clock.
        let none = leases(&[]);
        sweep(&mut clocks, Some(1), &none, 8);
        sweep(&mut clocks, Some(1), &all, 8);
        assert!(clocks.renew(2, 5, 9));
    }

    #[test]
    fn a_new_leadership_of_the_same_node_starts_clean_and_keeps_the_extension() {
        let mut clocks = LeaseClocks::new(2, LeaseBugs::NONE);
        let all = leases(&[(1, 5)]);
        sweep(&mut clocks, Some(5), &all, 0);
        assert_eq!(
            sweep(&mut clocks, Some(5), &all, 7),
            vec![1],
            "revoking in era 5"
        );
        // Leading again in era 7 before any sweep: era 5's verdict is gone, and a renewal
        // before the first sweep keeps the new leader's extension.
        clocks.follow(Some(7));
        assert!(
            clocks.renew(1, 5, 8),
            "era 5's revoke means nothing in era 7"
        );
        assert_eq!(clocks.remaining(1, 5, 8), 7);
        // A renewal never pulls a deadline in.
        assert!(clocks.renew(1, 1, 9));
        assert_eq!(clocks.remaining(1, 5, 9), 6);
    }
}
