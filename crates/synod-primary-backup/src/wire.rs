//! Primary-backup messages on the wire. Tags and field order are part of the protocol
//! between members: append new variants, never renumber.

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{Entry, Membership, SnapshotMeta, Wire};

use crate::message::Message;

impl Wire for Message {
    fn encode(&self, enc: &mut Encoder) {
        match self {
            Message::Replicate {
                view,
                prev_index,
                prev_era,
                entries,
                commit,
                round,
            } => {
                enc.u8(0)
                    .u64(*view)
                    .u64(*prev_index)
                    .u64(*prev_era)
                    .u64(*commit)
                    .u64(*round);
                Entry::encode_all(entries, enc);
            }
            Message::Ack {
                view,
                last,
                ok,
                round,
            } => {
                enc.u8(1).u64(*view).u64(*last).bool(*ok).u64(*round);
            }
            Message::Stale { view } => {
                enc.u8(2).u64(*view);
            }
            Message::TakeOver {
                view,
                commit,
                commit_era,
            } => {
                enc.u8(3).u64(*view).u64(*commit).u64(*commit_era);
            }
            Message::Snap {
                view,
                meta,
                offset,
                data,
                done,
                membership,
            } => {
                enc.u8(4).u64(*view);
                meta.encode(enc);
                enc.u64(*offset)
                    .bytes(data)
                    .bool(*done)
                    .bool(membership.is_some());
                if let Some(membership) = membership {
                    membership.encode(enc);
                }
            }
            Message::SnapAck {
                view,
                meta,
                next_offset,
                done,
            } => {
                enc.u8(5).u64(*view);
                meta.encode(enc);
                enc.u64(*next_offset).bool(*done);
            }
        }
    }

    fn decode(dec: &mut Decoder<'_>) -> Result<Message, DecodeError> {
        Ok(match dec.tag("primary-backup message", 6)? {
            0 => {
                let view = dec.u64("view")?;
                let prev_index = dec.u64("prev index")?;
                let prev_era = dec.u64("prev era")?;
                let commit = dec.u64("commit")?;
                let round = dec.u64("round")?;
                let entries = Entry::decode_all(dec)?;
                Message::Replicate {
                    view,
                    prev_index,
                    prev_era,
                    entries,
                    commit,
                    round,
                }
            }
            1 => Message::Ack {
                view: dec.u64("view")?,
                last: dec.u64("last")?,
                ok: dec.bool("ok")?,
                round: dec.u64("round")?,
            },
            2 => Message::Stale {
                view: dec.u64("view")?,
            },
            3 => Message::TakeOver {
                view: dec.u64("view")?,
                commit: dec.u64("commit")?,
                commit_era: dec.u64("commit era")?,
            },
            4 => Message::Snap {
                view: dec.u64("view")?,
                meta: SnapshotMeta::decode(dec)?,
                offset: dec.u64("offset")?,
                data: dec.owned_bytes("data")?,
                done: dec.bool("done")?,
                membership: if dec.bool("has membership")? {
                    Some(Membership::decode(dec)?)
                } else {
                    None
                },
            },
            _ => Message::SnapAck {
                view: dec.u64("view")?,
                meta: SnapshotMeta::decode(dec)?,
                next_offset: dec.u64("next offset")?,
                done: dec.bool("done")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use synod_core::wire::conformance;
    use synod_core::{Payload, Proposal, RequestId};

    fn samples() -> Vec<Message> {
        let entry = Entry {
            index: 18,
            era: (2 << 16) | 3,
            payload: Payload::Command(Proposal {
                id: RequestId::new(9, 2),
                command: Bytes::from_static(b"put k v"),
            }),
        };
        vec![
            Message::Replicate {
                view: (2 << 16) | 3,
                prev_index: 17,
                prev_era: 1,
                entries: vec![entry],
                commit: 16,
                round: 4,
            },
            Message::Ack {
                view: 7,
                last: 18,
                ok: false,
                round: 4,
            },
            Message::Stale { view: 9 },
            Message::TakeOver {
                view: 9,
                commit: 17,
                commit_era: 1,
            },
            Message::Snap {
                view: 9,
                meta: SnapshotMeta { index: 40, era: 9 },
                offset: 4096,
                data: Bytes::from_static(b"state"),
                done: true,
                membership: Some(Membership::of_voters(&[synod_core::NodeId(1)])),
            },
            Message::SnapAck {
                view: 9,
                meta: SnapshotMeta { index: 40, era: 9 },
                next_offset: 4101,
                done: false,
            },
        ]
    }

    #[test]
    fn every_message_round_trips_and_no_prefix_decodes() {
        for message in samples() {
            conformance::round_trip(&message);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let encoded: Vec<Vec<u8>> = samples().iter().map(Wire::to_bytes).collect();
        conformance::garbage_never_panics::<Message>(&encoded, 20_000);
    }
}
