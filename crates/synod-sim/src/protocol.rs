//! What the simulator needs from a protocol beyond how a replica boots it
//! ([`synod_replica::Protocol`]): which safety properties of its paper to check while it runs.

use synod_core::{Engine, Log, LogIndex, NodeId};

/// A protocol the simulator can run: one that boots as a replica does, with the safety
/// properties of its paper to check while it runs.
pub trait Protocol: synod_replica::Protocol {
    /// The safety properties checked as the run goes.
    type Invariants: Invariants<Self>;

    /// Whether a write needs every member (synchronous replication). A member whose disk is
    /// damaged stays down for good, and would stop such a cluster's writes for good, by
    /// design (an operator would rebuild it, which Synod does not automate): the nemesis damages
    /// no disk under such a protocol. Torn writes and crashes still happen.
    const WRITES_NEED_EVERY_MEMBER: bool = false;

    /// Whether a member may come back with an empty disk (an operator replaced a failed
    /// one) and rejoin: true for gossip, whose data needs no votes and whose members back
    /// from an empty disk abstain from membership votes until they may vote again; a
    /// consensus member that forgot its votes could break safety. The nemesis then replaces
    /// disks too.
    const REJOINS_EMPTY: bool = false;

    /// Where this node stands in its membership's history, for finding the newest
    /// membership: by default how far its log goes; an engine whose indices are its own
    /// (gossip) counts its agreed changes instead.
    fn membership_rank(&self) -> (u64, u64) {
        let s = self.status();
        (s.commit_index, s.last_index)
    }

    /// Whether, with these options, a write or a read needs every member (the const above,
    /// or a consistency level of ALL).
    fn needs_every_member(_options: &Self::Options) -> bool {
        Self::WRITES_NEED_EVERY_MEMBER
    }

    /// How long a client may answer a read from its cache (a DNS resolver's TTL); 0: clients
    /// cache nothing. Only a protocol that does not promise linearizability sets it.
    const CLIENT_CACHE_TTL_US: u64 = 0;

    /// How stale an answer may be, at most, while nothing fails and no message is lost; a
    /// run without faults breaks the protocol's promise if a read is staler. `None`: no
    /// answer is ever stale (the linearizability checker holds the protocol to that).
    const STALENESS_BOUND_US: Option<u64> = None;

    /// Whether clients may ask what needs consensus: compare-and-swaps (transactions with
    /// compares) and leases. A protocol without consensus refuses them (gossip), so its
    /// clients only read, write and delete.
    const TAKES_CONSENSUS_OPS: bool = true;

    /// For a protocol that does not order writes, with these options: whether a write is
    /// acknowledged once one member holds it (gossip at ONE), so losing that member's disk
    /// for good may lose the write.
    fn acknowledges_alone(_options: &Self::Options) -> bool {
        false
    }

    /// For a protocol that does not order writes (its replicas' revisions differ): one
    /// number for everything the engine holds, equal on replicas that hold the same.
    fn fingerprint(&self) -> u64 {
        0
    }

    /// For a protocol that does not order writes: the version of `key` the engine holds and
    /// the local index it was applied under (tombstones included).
    fn version_of(&self, _key: &[u8]) -> Option<(u64, u64)> {
        None
    }

    /// For viewers: the newest entries of the node's log (for Paxos, its slots), at most
    /// `max`: the index of the first, and the era of each (`None`: a slot with nothing
    /// accepted yet). Empty for an engine without one log (gossip).
    fn log_tail(&self, _max: usize) -> (LogIndex, Vec<Option<u64>>) {
        (0, Vec::new())
    }

    /// Flags of `synod sim` that select these options, after the protocol's, for a replay
    /// command line (gossip's consistency level).
    fn replay_flags(_options: &Self::Options) -> String {
        String::new()
    }

    /// How a viewer writes one of this protocol's eras (a Paxos ballot as round.node).
    fn era_label(era: u64) -> String {
        era.to_string()
    }
}

/// [`Protocol::log_tail`] of an engine that keeps a [`Log`].
pub(crate) fn tail_of(log: &Log, max: usize) -> (LogIndex, Vec<Option<u64>>) {
    let entries = log.entries();
    let tail = &entries[entries.len().saturating_sub(max)..];
    let first = tail.first().map_or(log.last_index() + 1, |e| e.index);
    (first, tail.iter().map(|e| Some(e.era)).collect())
}

/// Protocol-specific safety checks. An `Err` is a violation, described for a human.
pub trait Invariants<P: Engine>: Default {
    /// Called as a node boots in its `incarnation` (bumped at each crash), with the state it
    /// restored from its disk, before it takes any input: the one moment that state can be
    /// told apart from what its first step changes in memory only.
    fn after_boot(&mut self, _id: NodeId, _incarnation: u64, _engine: &P) -> Result<(), String> {
        Ok(())
    }
    /// Called after every step of a live node, in its `incarnation`.
    fn after_step(&mut self, id: NodeId, incarnation: u64, engine: &P) -> Result<(), String>;
    /// Called every so often with every live node, and at the end of a run.
    fn periodic(&mut self, live: &[(NodeId, u64, &P)]) -> Result<(), String>;

    /// Called as a message leaves node `from` (after the persists before it completed).
    fn before_send(
        &mut self,
        _from: NodeId,
        _message: &P::Message,
        _engine: &P,
    ) -> Result<(), String> {
        Ok(())
    }
}
