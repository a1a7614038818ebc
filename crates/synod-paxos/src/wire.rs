//! Paxos messages on the wire. Tags and field order are part of the protocol between nodes:
//! append new variants, never renumber.

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{Entry, Membership, Payload, RequestId, SnapshotMeta, Wire};

use crate::acceptor::{decode_ballot, encode_ballot};
use crate::message::*;

fn encode_scope(enc: &mut Encoder, scope: Scope) {
    enc.u8(match scope {
        Scope::One => 0,
        Scope::Onward => 1,
    });
}

fn decode_scope(dec: &mut Decoder<'_>) -> Result<Scope, DecodeError> {
    Ok(match dec.tag("scope", 2)? {
        0 => Scope::One,
        _ => Scope::Onward,
    })
}

impl Wire for Message {
    fn encode(&self, enc: &mut Encoder) {
        match self {
            Message::Prepare(m) => {
                enc.u8(0);
                encode_ballot(enc, m.ballot);
                enc.u64(m.slot);
                encode_scope(enc, m.scope);
                enc.bool(m.handover);
            }
            Message::Promise(m) => {
                enc.u8(1);
                encode_ballot(enc, m.ballot);
                enc.u64(m.slot);
                encode_scope(enc, m.scope);
                enc.u64(m.accepted.len() as u64);
                for (slot, ballot, value) in &m.accepted {
                    enc.u64(*slot);
                    encode_ballot(enc, *ballot);
                    value.encode(enc);
                }
                enc.u64(m.compacted_through);
            }
            Message::Accept(m) => {
                enc.u8(2);
                encode_ballot(enc, m.ballot);
                enc.u64(m.first).u64(m.commit).u64(m.values.len() as u64);
                m.values.iter().for_each(|v| v.encode(enc));
            }
            Message::Accepted(m) => {
                enc.u8(3);
                encode_ballot(enc, m.ballot);
                enc.u64(m.first).u64(m.count);
            }
            Message::Nack(m) => {
                enc.u8(4);
                encode_ballot(enc, m.ballot);
                enc.u64(m.slot);
                encode_ballot(enc, m.promised);
            }
            Message::Decided(m) => {
                enc.u8(5);
                Entry::encode_all(&m.entries, enc);
            }
            Message::AskDecided(m) => {
                enc.u8(6).u64(m.from);
            }
            Message::Heartbeat(m) => {
                enc.u8(7);
                encode_ballot(enc, m.ballot);
                enc.u64(m.commit).u64(m.read_round);
            }
            Message::HeartbeatAck(m) => {
                enc.u8(8);
                encode_ballot(enc, m.ballot);
                enc.u64(m.read_round).u64(m.prefix);
            }
            Message::SnapshotRequest(m) => {
                enc.u8(9).u64(m.meta.index).u64(m.meta.era).u64(m.offset);
            }
            Message::SnapshotChunk(m) => {
                enc.u8(10)
                    .u64(m.meta.index)
                    .u64(m.meta.era)
                    .u64(m.offset)
                    .bytes(&m.data)
                    .bool(m.done)
                    .bool(m.membership.is_some());
                if let Some(membership) = &m.membership {
                    membership.encode(enc);
                }
            }
            Message::AskOutcome(m) => {
                enc.u8(11).u64(m.slot);
            }
            Message::Commit(m) => {
                enc.u8(13);
                encode_ballot(enc, m.ballot);
                enc.u64(m.commit);
            }
            Message::TimeoutNow(m) => {
                enc.u8(14);
                encode_ballot(enc, m.ballot);
                enc.u64(m.commit);
            }
            Message::Outcome(m) => {
                enc.u8(12).u64(m.slot);
                match m.decided {
                    SlotOutcome::Command(id) => enc.u8(0).u64(id.client.0).u64(id.seq),
                    SlotOutcome::NoCommand => enc.u8(1),
                    SlotOutcome::Unknown => enc.u8(2),
                };
            }
        }
    }

    fn decode(dec: &mut Decoder<'_>) -> Result<Message, DecodeError> {
        Ok(match dec.tag("paxos message", 15)? {
            0 => Message::Prepare(Prepare {
                ballot: decode_ballot(dec)?,
                slot: dec.u64("slot")?,
                scope: decode_scope(dec)?,
                handover: dec.bool("handover")?,
            }),
            1 => {
                let (ballot, slot, scope) =
                    (decode_ballot(dec)?, dec.u64("slot")?, decode_scope(dec)?);
                let accepted = (0..dec.count("accepted")?)
                    .map(|_| Ok((dec.u64("slot")?, decode_ballot(dec)?, Payload::decode(dec)?)))
                    .collect::<Result<_, DecodeError>>()?;
                Message::Promise(Promise {
                    ballot,
                    slot,
                    scope,
                    accepted,
                    compacted_through: dec.u64("compacted_through")?,
                })
            }
            2 => {
                let (ballot, first, commit) =
                    (decode_ballot(dec)?, dec.u64("first")?, dec.u64("commit")?);
                let values = (0..dec.count("values")?)
                    .map(|_| Payload::decode(dec))
                    .collect::<Result<_, _>>()?;
                Message::Accept(Accept {
                    ballot,
                    first,
                    values,
                    commit,
                })
            }
            3 => Message::Accepted(Accepted {
                ballot: decode_ballot(dec)?,
                first: dec.u64("first")?,
                count: dec.u64("count")?,
            }),
            4 => Message::Nack(Nack {
                ballot: decode_ballot(dec)?,
                slot: dec.u64("slot")?,
                promised: decode_ballot(dec)?,
            }),
            5 => Message::Decided(Decided {
                entries: Entry::decode_all(dec)?,
            }),
            6 => Message::AskDecided(AskDecided {
                from: dec.u64("from")?,
            }),
            7 => Message::Heartbeat(Heartbeat {
                ballot: decode_ballot(dec)?,
                commit: dec.u64("commit")?,
                read_round: dec.u64("read_round")?,
            }),
            8 => Message::HeartbeatAck(HeartbeatAck {
                ballot: decode_ballot(dec)?,
                read_round: dec.u64("read_round")?,
                prefix: dec.u64("prefix")?,
            }),
            9 => Message::SnapshotRequest(SnapshotRequest {
                meta: SnapshotMeta::decode(dec)?,
                offset: dec.u64("offset")?,
            }),
            10 => Message::SnapshotChunk(SnapshotChunk {
                meta: SnapshotMeta::decode(dec)?,
                offset: dec.u64("offset")?,
                data: dec.owned_bytes("data")?,
                done: dec.bool("done")?,
                membership: if dec.bool("has membership")? {
                    Some(Membership::decode(dec)?)
                } else {
                    None
                },
            }),
            11 => Message::AskOutcome(AskOutcome {
                slot: dec.u64("slot")?,
            }),
            12 => Message::Outcome(Outcome {
                slot: dec.u64("slot")?,
                decided: match dec.tag("slot outcome", 3)? {
                    0 => SlotOutcome::Command(RequestId::new(dec.u64("client")?, dec.u64("seq")?)),
                    1 => SlotOutcome::NoCommand,
                    _ => SlotOutcome::Unknown,
                },
            }),
            13 => Message::Commit(CommitNotice {
                ballot: decode_ballot(dec)?,
                commit: dec.u64("commit")?,
            }),
            _ => Message::TimeoutNow(TimeoutNow {
                ballot: decode_ballot(dec)?,
                commit: dec.u64("commit")?,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use synod_core::wire::conformance::{garbage_never_panics, round_trip};
    use synod_core::{NodeId, Proposal, RequestId};

    use super::*;
    use crate::Ballot;

    fn every_message() -> Vec<Message> {
        let b = Ballot {
            round: 7,
            node: NodeId(3),
        };
        let command = Payload::Command(Proposal {
            id: RequestId::new(2, 5),
            command: Bytes::from_static(b"put"),
        });
        let meta = SnapshotMeta {
            index: 40,
            era: b.era(),
        };
        vec![
            Message::Prepare(Prepare {
                ballot: b,
                slot: 9,
                scope: Scope::One,
                handover: false,
            }),
            Message::Prepare(Prepare {
                ballot: b,
                slot: 9,
                scope: Scope::Onward,
                handover: true,
            }),
            Message::Promise(Promise {
                ballot: b,
                slot: 9,
                scope: Scope::Onward,
                accepted: vec![
                    (9, b, command.clone()),
                    (11, Ballot::ZERO, Payload::Marker(4)),
                ],
                compacted_through: 3,
            }),
            Message::Accept(Accept {
                ballot: b,
                first: 9,
                values: vec![command, Payload::Noop],
                commit: 8,
            }),
            Message::Accepted(Accepted {
                ballot: b,
                first: 9,
                count: 2,
            }),
            Message::Nack(Nack {
                ballot: b,
                slot: 9,
                promised: Ballot {
                    round: 8,
                    node: NodeId(1),
                },
            }),
            Message::Decided(Decided {
                entries: vec![Entry {
                    index: 9,
                    era: b.era(),
                    payload: Payload::Noop,
                }],
            }),
            Message::AskDecided(AskDecided { from: 4 }),
            Message::Heartbeat(Heartbeat {
                ballot: b,
                commit: 8,
                read_round: 2,
            }),
            Message::HeartbeatAck(HeartbeatAck {
                ballot: b,
                read_round: 2,
                prefix: 40,
            }),
            Message::SnapshotRequest(SnapshotRequest { meta, offset: 100 }),
            Message::SnapshotChunk(SnapshotChunk {
                meta,
                offset: 100,
                data: Bytes::from_static(b"bytes"),
                done: true,
                membership: Some(Membership::of_voters(&[NodeId(1), NodeId(4)])),
            }),
            Message::AskOutcome(AskOutcome { slot: 12 }),
            Message::Outcome(Outcome {
                slot: 12,
                decided: SlotOutcome::Command(RequestId::new(9, 4)),
            }),
            Message::Outcome(Outcome {
                slot: 12,
                decided: SlotOutcome::NoCommand,
            }),
            Message::Outcome(Outcome {
                slot: 12,
                decided: SlotOutcome::Unknown,
            }),
            Message::Commit(CommitNotice {
                ballot: b,
                commit: 8,
            }),
            Message::TimeoutNow(TimeoutNow {
                ballot: b,
                commit: 8,
            }),
        ]
    }

    #[test]
    fn every_message_round_trips_and_no_truncation_decodes() {
        for message in every_message() {
            round_trip(&message);
        }
    }

    #[test]
    fn garbage_from_a_peer_is_an_error_never_a_panic() {
        let samples: Vec<Vec<u8>> = every_message().iter().map(Wire::to_bytes).collect();
        garbage_never_panics::<Message>(&samples, 20_000);
    }
}
