//! What the primary and the secondaries say to each other.

use std::fmt;

use bytes::Bytes;
use synod_core::{Entry, LogIndex, Membership, SnapshotMeta};

/// Messages between members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Primary to secondary (DNS NOTIFY): the data changed and is now at `serial`.
    Notify {
        /// The primary's serial.
        serial: LogIndex,
    },
    /// Secondary to primary: it holds everything through `serial` and asks for what follows
    /// (the SOA check and the transfer request in one). While it receives a full transfer,
    /// `receiving` names the snapshot and how many of its bytes it holds.
    Query {
        /// The secondary's serial.
        serial: LogIndex,
        /// The full transfer under way, if any: its snapshot and the bytes held.
        receiving: Option<(SnapshotMeta, u64)>,
    },
    /// Primary to secondary, an incremental transfer (IXFR): the changes after `after`, in
    /// order, and the primary's serial. No changes: the secondary is up to date.
    Ixfr {
        /// The serial the changes follow.
        after: LogIndex,
        /// The primary's serial.
        serial: LogIndex,
        /// The changes.
        entries: Vec<Entry>,
    },
    /// Primary to secondary, a full transfer (AXFR): a chunk of the primary's snapshot.
    Axfr {
        /// The snapshot's position.
        meta: SnapshotMeta,
        /// Where this chunk starts.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// Whether it is the last chunk.
        done: bool,
        /// The primary's serial.
        serial: LogIndex,
        /// The membership the snapshot records (with the last chunk).
        membership: Option<Membership>,
    },
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Notify { serial } => write!(f, "Notify serial={serial}"),
            Message::Query { serial, receiving } => {
                write!(f, "Query serial={serial}")?;
                if let Some((meta, held)) = receiving {
                    write!(f, " receiving snapshot@{} held={held}", meta.index)?;
                }
                Ok(())
            }
            Message::Ixfr {
                after,
                serial,
                entries,
            } => match (entries.first(), entries.last()) {
                (Some(first), Some(last)) => {
                    write!(f, "Ixfr {}..={} serial={serial}", first.index, last.index)
                }
                _ => write!(f, "Ixfr after {after}: up to date, serial={serial}"),
            },
            Message::Axfr {
                meta,
                offset,
                data,
                done,
                serial,
                ..
            } => write!(
                f,
                "Axfr snapshot@{} offset={offset} len={}{} serial={serial}",
                meta.index,
                data.len(),
                if *done { " done" } else { "" }
            ),
        }
    }
}
