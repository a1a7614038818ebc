//! Running gossip in the simulator. Gossip promises neither linearizability nor one order
//! of writes (each replica applies changes under indices of its own), so the run counts
//! histories without a linearization instead of failing them, and holds gossip to what it
//! does promise:
//!
//! - **Convergence**: once the network heals and the run settles, every replica holds the
//!   same version of every key (the engines' fingerprints agree) and the same data (the
//!   state machines' keys and values agree; their revisions may differ).
//! - **No acknowledged write lost** unless superseded: at the end, every replica holds each
//!   acknowledged write's key at that write's version or a newer one.
//! - **Versions only move forward**: within one life of a replica, the versions it applies
//!   to a key increase.
//!
//! Reads are measured for staleness by version (`freshness.rs`): a read is stale if a newer
//! version of its key had been applied somewhere before the read was asked.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use synod_core::{Engine, Entry, NodeId, RequestId};
use synod_gossip::{Gossip, Level};
use synod_kv::Request;
use synod_replica::GossipOptions;

use crate::protocol::{Invariants, Protocol};

impl Protocol for Gossip {
    fn replay_flags(options: &Self::Options) -> String {
        format!(" --level {}", options.write_level)
    }

    type Invariants = GossipInvariants;
    const TAKES_CONSENSUS_OPS: bool = false;
    const REJOINS_EMPTY: bool = true;
    /// With nothing failing, a new version is pushed to three random members every tick for
    /// about log2 n rounds, and anti-entropy (every 10 ticks at the default timing) repairs
    /// whatever the epidemic missed (each member starts an exchange with a random peer every
    /// interval). The bound is probabilistic, so it is set at five intervals: 1,000
    /// fault-free seeds on each of 3, 5 and 7 nodes have p99 8 ticks and max 24.
    const STALENESS_BOUND_US: Option<u64> = Some(50 * crate::TICK_US);

    fn acknowledges_alone(options: &GossipOptions) -> bool {
        options.write_level == Level::One
    }

    /// At ALL, a member lost for good stops every write (or read) for good, by design.
    fn needs_every_member(options: &GossipOptions) -> bool {
        options.write_level == Level::All || options.read_level == Level::All
    }

    fn fingerprint(&self) -> u64 {
        self.store().fingerprint()
    }

    /// Changes agreed; among nodes at one epoch, one that is in its own membership (a node
    /// that joined and has not heard yet holds an empty one).
    fn membership_rank(&self) -> (u64, u64) {
        let listed = self
            .membership()
            .is_some_and(|m| m.contains(self.status().id));
        (self.membership_epoch(), u64::from(listed))
    }

    fn version_of(&self, key: &[u8]) -> Option<(u64, u64)> {
        self.store().get(key).map(|held| (held.version.0, held.at))
    }
}

/// Gossip's data is checked on applies and at the end (`Versions`); per step, its
/// membership: **one membership per epoch**, the one property its agreement exists for.
#[derive(Default)]
pub struct GossipInvariants {
    /// The membership first seen held at each epoch after the boot one, and by whom.
    agreed: HashMap<u64, (synod_core::Membership, NodeId)>,
}

impl Invariants<Gossip> for GossipInvariants {
    fn after_step(&mut self, id: NodeId, _: u64, engine: &Gossip) -> Result<(), String> {
        let epoch = engine.membership_epoch();
        let Some(membership) = engine.membership() else {
            return Ok(());
        };
        // Epoch 0 is the boot membership, which a node that joined holds empty.
        if epoch == 0 {
            return Ok(());
        }
        let (first, by) = self
            .agreed
            .entry(epoch)
            .or_insert_with(|| (membership.clone(), id));
        if first != membership {
            return Err(format!(
                "two memberships agreed for epoch {epoch}: {by} holds {first}, {id} holds {membership}"
            ));
        }
        Ok(())
    }

    fn periodic(&mut self, _: &[(NodeId, u64, &Gossip)]) -> Result<(), String> {
        Ok(())
    }
}

/// What the world tracks of versions under a protocol that does not order writes.
#[derive(Debug, Default)]
pub struct Versions {
    /// The newest version each life of each node applied to each key.
    newest: HashMap<(NodeId, u64, Bytes), u64>,
    /// Client writes applied at the node that took them: their key and version, until
    /// answered.
    written: HashMap<RequestId, (Bytes, u64)>,
    /// Writes answered as done: key, version, request, the node that answered.
    pub(crate) acknowledged: Vec<(Bytes, u64, RequestId, NodeId)>,
}

impl Versions {
    /// `entry` was applied by `node` in its life `incarnation`; `Err` if a version went back.
    pub(crate) fn applied(
        &mut self,
        node: NodeId,
        incarnation: u64,
        entry: &Entry,
    ) -> Result<(), String> {
        let Some(proposal) = entry.proposal() else {
            return Ok(());
        };
        let Ok(request) = Request::decode(&proposal.command) else {
            return Ok(());
        };
        let version = entry.era;
        let keys = written_keys(&request);
        for key in &keys {
            let newest = self
                .newest
                .entry((node, incarnation, key.clone()))
                .or_default();
            if version <= *newest {
                return Err(format!(
                    "versions only move forward: {node} applied version {version:#x} of {:?} after {:#x}",
                    key, *newest
                ));
            }
            *newest = version;
        }
        if proposal.id.client.is_tracked() {
            if let [key] = keys.as_slice() {
                self.written.insert(proposal.id, (key.clone(), version));
            }
        }
        Ok(())
    }

    /// The newest version of `key` node `node` applied in its life `incarnation`.
    pub(crate) fn applied_version(
        &self,
        node: NodeId,
        incarnation: u64,
        key: &Bytes,
    ) -> Option<u64> {
        self.newest.get(&(node, incarnation, key.clone())).copied()
    }

    /// The write `request` was answered as done.
    pub(crate) fn acknowledged(&mut self, request: RequestId, by: NodeId) {
        if let Some((key, version)) = self.written.remove(&request) {
            self.acknowledged.push((key, version, request, by));
        }
    }

    /// Every acknowledged write is held by every replica at its version or a newer one.
    /// `lost_with` says whether a write may be lost with the node that acknowledged it (at
    /// ONE, a member whose disk is lost for good before it passed the write on takes it
    /// with it, as in Cassandra).
    pub(crate) fn check_kept<'a, P: Protocol + 'a>(
        &self,
        replicas: impl Iterator<Item = (NodeId, &'a P)> + Clone,
        lost_with: impl Fn(NodeId) -> bool,
    ) -> Result<(), String> {
        let mut newest: BTreeMap<&Bytes, (u64, RequestId)> = BTreeMap::new();
        for (key, version, request, by) in &self.acknowledged {
            if lost_with(*by) {
                continue;
            }
            let e = newest.entry(key).or_insert((*version, *request));
            if *version > e.0 {
                *e = (*version, *request);
            }
        }
        for (key, (version, request)) in newest {
            for (id, engine) in replicas.clone() {
                let held = engine.version_of(key).map_or(0, |(v, _)| v);
                if held < version {
                    return Err(format!(
                        "acknowledged write lost: {request} wrote {key:?} at version {version:#x}; {id} holds {held:#x}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The keys a put or delete of the workload writes.
fn written_keys(request: &Request) -> Vec<Bytes> {
    match request.inner() {
        Request::Put(put) => vec![put.key.clone()],
        Request::DeleteRange(delete) if delete.range.range_end.is_empty() => {
            vec![delete.range.key.clone()]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::{Entry, Payload, Proposal};
    use synod_kv::PutRequest;

    fn engine(id: u64) -> Gossip {
        let config = synod_gossip::Config::new(NodeId(id), vec![NodeId(1), NodeId(2)], 5);
        Gossip::restart(config, 1, None, &[], 0).expect("boots")
    }

    fn put_entry(index: u64, version: u64, client: u64) -> Entry {
        let request = Request::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ..PutRequest::default()
        });
        Entry {
            index,
            era: version,
            payload: Payload::Command(Proposal {
                id: RequestId::new(client, index),
                command: request.encode(),
            }),
        }
    }

    #[test]
    fn an_acknowledged_write_no_replica_holds_is_reported_lost_unless_its_member_died() {
        let mut versions = Versions::default();
        let write = put_entry(1, 77 << 12 | 1, 5);
        versions.applied(NodeId(1), 0, &write).expect("forward");
        let request = write.proposal().expect("a command").id;
        versions.acknowledged(request, NodeId(1));
        // Neither replica holds key k at all.
        let (a, b) = (engine(1), engine(2));
        let replicas = [(NodeId(1), &a), (NodeId(2), &b)];
        let lost = versions.check_kept(replicas.iter().copied(), |_| false);
        assert!(lost.is_err_and(|e| e.contains("acknowledged write lost")));
        // At ONE, with the member that took it lost for good, it may be gone.
        let excused = versions.check_kept(replicas.iter().copied(), |n| n == NodeId(1));
        assert!(excused.is_ok());
    }

    #[test]
    fn a_version_applied_below_an_earlier_one_is_a_violation() {
        let mut versions = Versions::default();
        versions
            .applied(NodeId(1), 0, &put_entry(1, 90, 0))
            .expect("first");
        let back = versions.applied(NodeId(1), 0, &put_entry(2, 80, 0));
        assert!(back.is_err_and(|e| e.contains("only move forward")));
        // A new life starts over (its state machine is rebuilt from disk).
        assert!(versions.applied(NodeId(1), 1, &put_entry(1, 80, 0)).is_ok());
    }
}
