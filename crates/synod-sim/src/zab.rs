//! Running ZAB in the simulator, and the properties of the DSN 2011 paper checked while it
//! runs. The world checks for every protocol that one node leads per era (one established
//! leader per epoch) and that the replicas' state machines agree. Here:
//!
//! - The paper's six properties, each by its name, over what primaries broadcast and what
//!   processes deliver ([`PaperProperties`]): integrity, total order, agreement, local
//!   primary order, global primary order and primary integrity.
//! - Over the histories themselves, before anything is delivered: an established leader's
//!   history holds every transaction committed in an earlier epoch, at its position; a zxid
//!   names one transaction, and two histories that hold it agree on everything before it
//!   (checked as Raft's Log Matching).
//! - The epochs a node persists never go backwards of each other: its current epoch (f.a) is
//!   at most its accepted epoch (f.p), and its history holds no epoch beyond f.p.

use std::collections::BTreeMap;

use synod_core::{Entry, Log, LogIndex, NodeId, SnapshotMeta};
use synod_zab::{Zab, Zxid};

use crate::protocol::{Invariants, Protocol};
use crate::raft::{LogEngine, LogInvariants};

impl Protocol for Zab {
    type Invariants = ZabInvariants;

    fn log_tail(&self, max: usize) -> (synod_core::LogIndex, Vec<Option<u64>>) {
        crate::protocol::tail_of(self.log(), max)
    }
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
    paper: PaperProperties,
    /// Per epoch, how far its primary's broadcasts were recorded.
    broadcast_through: BTreeMap<u64, LogIndex>,
}

impl ZabInvariants {
    /// What the primary broadcast since the last step, and what `id` delivered.
    fn check_paper(&mut self, id: NodeId, incarnation: u64, zab: &Zab) -> Result<(), String> {
        let log = zab.log();
        let base = log.base();
        let commit = zab.commit_index();
        if let Some(epoch) = zab.established_epoch().filter(|&e| log.last_era() == e) {
            let from = match self.broadcast_through.get(&epoch) {
                Some(&recorded) => recorded + 1,
                None => log.first_index_of_era_at(log.last_index()),
            }
            .max(base.index + 1);
            for index in from..=log.last_index() {
                let entry = log.entry(index).expect("index within the log");
                self.paper.broadcasts(epoch, entry, commit)?;
            }
            self.broadcast_through.insert(epoch, log.last_index());
        }
        let from = match self.paper.last_delivered(id, incarnation) {
            Some(last) if last >= base.index => last + 1,
            Some(_) | None => base.index + 1,
        };
        if from > commit && self.paper.last_delivered(id, incarnation).is_some() {
            return Ok(());
        }
        let offset = base.index + 1;
        let entries = &log.entries()[(from - offset) as usize..(commit + 1 - offset) as usize];
        self.paper.delivers(id, incarnation, base, entries)
    }
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
            .map_err(|e| format!("history: {e}"))?;
        self.check_paper(id, incarnation, zab)
    }

    fn periodic(&mut self, live: &[(NodeId, u64, &Zab)]) -> Result<(), String> {
        self.logs
            .periodic(live)
            .map_err(|e| format!("history: {e}"))
    }
}

/// The six properties of the DSN 2011 paper (section III), checked over what primaries
/// broadcast and what every process delivers, in the paper's terms: a transaction ⟨v, z⟩ is
/// a value and its zxid; a primary is the established leader of an epoch; a process is one
/// incarnation of a node (a restart begins a new one, delivering from its snapshot on).
///
/// Delivery follows the commit point, in zxid order; a snapshot delivers everything it
/// covers at once, so only its last zxid is seen. `sequence` is the one order that every
/// delivery must follow, built from the deliveries themselves.
#[derive(Default)]
pub struct PaperProperties {
    /// What the primaries broadcast.
    broadcast: BTreeMap<Zxid, Entry>,
    /// Per epoch whose primary broadcast: where its first transaction sits, and how far the
    /// primary had delivered when it broadcast it.
    primaries: BTreeMap<u64, (LogIndex, LogIndex)>,
    /// The zxid delivered at each position.
    sequence: BTreeMap<LogIndex, Zxid>,
    /// Per node: the incarnation and the last zxid it delivered.
    delivered: BTreeMap<NodeId, (u64, Zxid)>,
    /// Deliveries checked, for tests to see the checks ran.
    pub deliveries: u64,
}

impl PaperProperties {
    /// The primary of `epoch`, having delivered through `delivered`, broadcasts `entry`.
    pub fn broadcasts(
        &mut self,
        epoch: u64,
        entry: &Entry,
        delivered: LogIndex,
    ) -> Result<(), String> {
        let zxid = Zxid {
            epoch,
            counter: entry.index,
        };
        match self.broadcast.get(&zxid) {
            Some(seen) if seen == entry => return Ok(()),
            Some(seen) => {
                return Err(format!(
                    "integrity: the primary of epoch {epoch} broadcast {seen} and {entry} as {zxid}"
                ))
            }
            None => {}
        }
        self.broadcast.insert(zxid, entry.clone());
        if self.primaries.contains_key(&epoch) {
            return Ok(());
        }
        self.primaries.insert(epoch, (entry.index, delivered));
        // Primary integrity, for what was delivered before this primary's first broadcast.
        let earlier = self
            .sequence
            .iter()
            .rev()
            .find(|(_, z)| z.epoch < epoch)
            .map(|(_, z)| *z);
        match earlier {
            Some(z) if z.counter > delivered => Err(format!(
                "primary integrity: the primary of epoch {epoch} broadcast {zxid} having \
                 delivered through {delivered}, but {z} of an earlier epoch was delivered"
            )),
            _ => Ok(()),
        }
    }

    /// Process `(id, incarnation)`, whose history starts at `base` (its snapshot), delivers
    /// `entries` (the next ones, in order; empty when only a snapshot moved it on).
    pub fn delivers(
        &mut self,
        id: NodeId,
        incarnation: u64,
        base: SnapshotMeta,
        entries: &[Entry],
    ) -> Result<(), String> {
        let snapshot_end = Zxid {
            epoch: base.era,
            counter: base.index,
        };
        let mut last = match self.delivered.get(&id) {
            Some(&(inc, last)) if inc == incarnation && last.counter >= base.index => last,
            _ => {
                // A new process, or one a snapshot moved on: the snapshot delivered
                // everything through its last zxid, which must sit where everyone has it.
                if base.index > 0 {
                    self.agree(id, snapshot_end)?;
                }
                snapshot_end
            }
        };
        for entry in entries {
            let zxid = Zxid {
                epoch: entry.era,
                counter: entry.index,
            };
            self.deliveries += 1;
            if self.broadcast.get(&zxid) != Some(entry) {
                return Err(format!(
                    "integrity: {id} delivered {entry} as {zxid}, which no primary broadcast"
                ));
            }
            // With agreement on every position (`agree`, for this delivery and for `last`,
            // which was agreed when delivered or installed), consecutive positions make one
            // order for every process.
            if zxid.counter != last.counter + 1 {
                return Err(format!(
                    "total order: {id} delivered {zxid} right after {last}, out of the one order"
                ));
            }
            if zxid.epoch < last.epoch {
                return Err(format!(
                    "global primary order: {id} delivered {zxid} of an earlier epoch after {last}"
                ));
            }
            let first_of_epoch = self.primaries.get(&zxid.epoch).map(|&(first, _)| first);
            if first_of_epoch.is_some_and(|first| zxid.counter > first)
                && last
                    != (Zxid {
                        epoch: zxid.epoch,
                        counter: zxid.counter - 1,
                    })
            {
                return Err(format!(
                    "local primary order: {id} delivered {zxid} without the primary's previous \
                     broadcast, right before it (it delivered {last})"
                ));
            }
            self.agree(id, zxid)?;
            for (&epoch, &(_, delivered)) in self.primaries.range(zxid.epoch + 1..) {
                if zxid.counter > delivered {
                    return Err(format!(
                        "primary integrity: {id} delivered {zxid}, which the primary of \
                         epoch {epoch} had not delivered (through {delivered}) when it broadcast"
                    ));
                }
            }
            last = zxid;
        }
        self.delivered.insert(id, (incarnation, last));
        Ok(())
    }

    /// The position of the last transaction `id` delivered in `incarnation`, if it delivered
    /// anything in it yet.
    pub fn last_delivered(&self, id: NodeId, incarnation: u64) -> Option<LogIndex> {
        match self.delivered.get(&id) {
            Some(&(inc, last)) if inc == incarnation => Some(last.counter),
            _ => None,
        }
    }

    /// Agreement: every process delivers the same transaction at a position.
    fn agree(&mut self, id: NodeId, zxid: Zxid) -> Result<(), String> {
        match self.sequence.insert(zxid.counter, zxid) {
            Some(other) if other != zxid => Err(format!(
                "agreement: {id} delivered {zxid} where another process delivered {other}"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use synod_core::{Payload, Proposal, RequestId};

    use super::*;

    /// Transaction ⟨v, z⟩ with z = (epoch, counter); `v` tells values apart.
    fn txn(epoch: u64, counter: u64, v: u64) -> Entry {
        Entry {
            index: counter,
            era: epoch,
            payload: Payload::Command(Proposal {
                id: RequestId::new(v, counter),
                command: Bytes::new(),
            }),
        }
    }

    const NONE: SnapshotMeta = SnapshotMeta { index: 0, era: 0 };

    /// The primary of `epoch`, having delivered through `delivered`, broadcasts these.
    fn broadcast(p: &mut PaperProperties, epoch: u64, delivered: LogIndex, txns: &[Entry]) {
        for t in txns {
            p.broadcasts(epoch, t, delivered).unwrap();
        }
    }

    fn deliver(p: &mut PaperProperties, node: u64, txns: &[Entry]) -> Result<(), String> {
        p.delivers(NodeId(node), 1, NONE, txns)
    }

    fn property(result: Result<(), String>) -> String {
        let error = result.unwrap_err();
        error.split(':').next().unwrap().to_string()
    }

    #[test]
    fn a_history_that_keeps_every_property_passes() {
        let mut p = PaperProperties::default();
        broadcast(&mut p, 1, 0, &[txn(1, 1, 1), txn(1, 2, 1), txn(1, 3, 1)]);
        deliver(&mut p, 1, &[txn(1, 1, 1), txn(1, 2, 1)]).unwrap();
        // Epoch 2's primary took 1 and 2 as its initial history and dropped 3.
        broadcast(&mut p, 2, 2, &[txn(2, 3, 2), txn(2, 4, 2)]);
        deliver(&mut p, 1, &[txn(2, 3, 2)]).unwrap();
        deliver(
            &mut p,
            2,
            &[txn(1, 1, 1), txn(1, 2, 1), txn(2, 3, 2), txn(2, 4, 2)],
        )
        .unwrap();
        // A restarted process starts from its snapshot.
        let snapshot = SnapshotMeta { index: 3, era: 2 };
        p.delivers(NodeId(1), 2, snapshot, &[txn(2, 4, 2)]).unwrap();
        assert_eq!(p.deliveries, 8);
    }

    #[test]
    fn integrity_flags_a_transaction_no_primary_broadcast() {
        let mut p = PaperProperties::default();
        broadcast(&mut p, 1, 0, &[txn(1, 1, 1)]);
        assert_eq!(property(deliver(&mut p, 1, &[txn(1, 1, 9)])), "integrity");
        assert_eq!(property(deliver(&mut p, 2, &[txn(2, 1, 1)])), "integrity");
        assert_eq!(
            property(p.broadcasts(1, &txn(1, 1, 7), 0)),
            "integrity",
            "one zxid, one value"
        );
    }

    #[test]
    fn total_order_flags_a_delivery_that_skips_a_transaction() {
        let mut p = PaperProperties::default();
        broadcast(&mut p, 1, 0, &[txn(1, 1, 1), txn(1, 2, 1), txn(1, 3, 1)]);
        assert_eq!(
            property(deliver(&mut p, 1, &[txn(1, 1, 1), txn(1, 3, 1)])),
            "total order"
        );
    }

    #[test]
    fn agreement_flags_two_transactions_delivered_at_one_position() {
        let mut p = PaperProperties::default();
        broadcast(&mut p, 1, 0, &[txn(1, 1, 1), txn(1, 2, 1)]);
        broadcast(&mut p, 2, 1, &[txn(2, 2, 2)]);
        deliver(&mut p, 2, &[txn(1, 1, 1), txn(2, 2, 2)]).unwrap();
        assert_eq!(
            property(deliver(&mut p, 1, &[txn(1, 1, 1), txn(1, 2, 1)])),
            "agreement"
        );
    }

    #[test]
    fn local_primary_order_flags_a_primary_transaction_delivered_without_its_predecessor() {
        let mut p = PaperProperties::default();
        broadcast(&mut p, 1, 0, &[txn(1, 1, 1)]);
        // The checker takes the primary of epoch 2 at its word that it delivered 1.
        broadcast(&mut p, 2, 1, &[txn(2, 1, 2), txn(2, 2, 2)]);
        assert_eq!(
            property(deliver(&mut p, 1, &[txn(1, 1, 1), txn(2, 2, 2)])),
            "local primary order"
        );
    }

    #[test]
    fn global_primary_order_flags_an_earlier_epoch_delivered_after_a_later_one() {
        let mut p = PaperProperties::default();
        broadcast(&mut p, 1, 0, &[txn(1, 1, 1), txn(1, 2, 1)]);
        broadcast(&mut p, 2, 2, &[txn(2, 1, 2)]);
        assert_eq!(
            property(deliver(&mut p, 1, &[txn(2, 1, 2), txn(1, 2, 1)])),
            "global primary order"
        );
    }

    #[test]
    fn primary_integrity_flags_a_primary_that_broadcast_before_delivering_the_past() {
        // Delivered before the new primary broadcast.
        let mut p = PaperProperties::default();
        broadcast(&mut p, 1, 0, &[txn(1, 1, 1), txn(1, 2, 1)]);
        deliver(&mut p, 1, &[txn(1, 1, 1), txn(1, 2, 1)]).unwrap();
        assert_eq!(
            property(p.broadcasts(2, &txn(2, 3, 2), 1)),
            "primary integrity"
        );
        // Delivered after it.
        let mut p = PaperProperties::default();
        broadcast(&mut p, 1, 0, &[txn(1, 1, 1), txn(1, 2, 1)]);
        broadcast(&mut p, 2, 1, &[txn(2, 3, 2)]);
        assert_eq!(
            property(deliver(&mut p, 1, &[txn(1, 1, 1), txn(1, 2, 1)])),
            "primary integrity"
        );
    }
}
