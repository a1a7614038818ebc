//! Snapshots of the state machine, which let a log be compacted and a lagging node catch up.

use bytes::Bytes;

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::ids::LogIndex;
use crate::membership::Membership;

/// The last log position a snapshot covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot includes.
    pub index: LogIndex,
    /// That entry's era (Raft term, ZAB epoch, Paxos ballot).
    pub era: u64,
}

impl SnapshotMeta {
    /// Appends its encoding: index, era.
    pub fn encode(&self, enc: &mut Encoder) {
        enc.u64(self.index).u64(self.era);
    }

    /// Reads what [`SnapshotMeta::encode`] wrote.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<SnapshotMeta, DecodeError> {
        Ok(SnapshotMeta {
            index: dec.u64("snapshot index")?,
            era: dec.u64("snapshot era")?,
        })
    }
}

/// The state machine as of applying every entry through `meta.index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// The membership as of `meta.index`, when a change through the log set one; `None`
    /// means the cluster still has the membership it booted with.
    pub membership: Option<Membership>,
    /// The state machine's own encoding of its state (opaque to engines and storage).
    pub data: Bytes,
}
