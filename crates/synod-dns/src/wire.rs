//! DNS-style messages on the wire. Tags and field order are part of the protocol between
//! members: append new variants, never renumber.

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{Entry, Membership, SnapshotMeta, Wire};

use crate::message::Message;

impl Wire for Message {
    fn encode(&self, enc: &mut Encoder) {
        match self {
            Message::Notify { serial } => {
                enc.u8(0).u64(*serial);
            }
            Message::Query { serial, receiving } => {
                enc.u8(1).u64(*serial).bool(receiving.is_some());
                if let Some((m, held)) = receiving {
                    m.encode(enc);
                    enc.u64(*held);
                }
            }
            Message::Ixfr {
                after,
                serial,
                entries,
            } => {
                enc.u8(2).u64(*after).u64(*serial);
                Entry::encode_all(entries, enc);
            }
            Message::Axfr {
                meta: m,
                offset,
                data,
                done,
                serial,
                membership,
            } => {
                enc.u8(3);
                m.encode(enc);
                enc.u64(*offset)
                    .bytes(data)
                    .bool(*done)
                    .u64(*serial)
                    .bool(membership.is_some());
                if let Some(membership) = membership {
                    membership.encode(enc);
                }
            }
        }
    }

    fn decode(dec: &mut Decoder<'_>) -> Result<Message, DecodeError> {
        Ok(match dec.tag("dns message", 4)? {
            0 => Message::Notify {
                serial: dec.u64("serial")?,
            },
            1 => {
                let serial = dec.u64("serial")?;
                let receiving = if dec.bool("receiving")? {
                    Some((SnapshotMeta::decode(dec)?, dec.u64("bytes held")?))
                } else {
                    None
                };
                Message::Query { serial, receiving }
            }
            2 => {
                let after = dec.u64("after")?;
                let serial = dec.u64("serial")?;
                let entries = Entry::decode_all(dec)?;
                Message::Ixfr {
                    after,
                    serial,
                    entries,
                }
            }
            _ => Message::Axfr {
                meta: SnapshotMeta::decode(dec)?,
                offset: dec.u64("offset")?,
                data: dec.owned_bytes("chunk")?,
                done: dec.bool("done")?,
                serial: dec.u64("serial")?,
                membership: if dec.bool("has membership")? {
                    Some(Membership::decode(dec)?)
                } else {
                    None
                },
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
            era: 1,
            payload: Payload::Command(Proposal {
                id: RequestId::new(9, 2),
                command: Bytes::from_static(b"put k v"),
            }),
        };
        let snapshot = SnapshotMeta { index: 40, era: 1 };
        vec![
            Message::Notify { serial: 19 },
            Message::Query {
                serial: 17,
                receiving: None,
            },
            Message::Query {
                serial: 17,
                receiving: Some((snapshot, 4096)),
            },
            Message::Ixfr {
                after: 17,
                serial: 19,
                entries: vec![entry],
            },
            Message::Axfr {
                meta: snapshot,
                offset: 4096,
                data: Bytes::from_static(b"zone"),
                done: true,
                serial: 41,
                membership: Some(Membership::of_voters(&[synod_core::NodeId(2)])),
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
