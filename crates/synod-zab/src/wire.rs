//! ZAB messages on the wire. Tags and field order are part of the protocol between nodes:
//! append new variants, never renumber.

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{Entry, Membership, NodeId, SnapshotMeta, Wire};

use crate::message::{Message, PeerState, Vote, Zxid};

fn zxid(enc: &mut Encoder, z: Zxid) {
    enc.u64(z.epoch).u64(z.counter);
}

fn read_zxid(dec: &mut Decoder<'_>) -> Result<Zxid, DecodeError> {
    Ok(Zxid {
        epoch: dec.u64("zxid epoch")?,
        counter: dec.u64("zxid counter")?,
    })
}

impl Wire for Message {
    fn encode(&self, enc: &mut Encoder) {
        match self {
            Message::Notification { round, vote, state } => {
                let state = match state {
                    PeerState::Looking => 0,
                    PeerState::Following => 1,
                    PeerState::Leading => 2,
                };
                enc.u8(0).u64(*round).u64(vote.leader.0).u64(vote.epoch);
                zxid(enc, vote.zxid);
                enc.u8(state);
            }
            Message::FollowerInfo {
                accepted_epoch,
                accepted_from,
            } => {
                enc.u8(1)
                    .u64(*accepted_epoch)
                    .u64(accepted_from.map_or(0, |n| n.0));
            }
            Message::NewEpoch { epoch } => {
                enc.u8(2).u64(*epoch);
            }
            Message::AckEpoch {
                epoch,
                current_epoch,
                last,
                committed,
            } => {
                enc.u8(3).u64(*epoch).u64(*current_epoch);
                zxid(enc, *last);
                enc.u64(*committed);
            }
            Message::Proposal {
                epoch,
                prev,
                entries,
                commit,
            } => {
                enc.u8(4).u64(*epoch);
                zxid(enc, *prev);
                enc.u64(*commit);
                Entry::encode_all(entries, enc);
            }
            Message::Ack { epoch, last, ok } => {
                enc.u8(5).u64(*epoch).u64(*last).bool(*ok);
            }
            Message::Snap {
                epoch,
                meta: m,
                offset,
                data,
                done,
                membership,
            } => {
                enc.u8(6).u64(*epoch);
                m.encode(enc);
                enc.u64(*offset)
                    .bytes(data)
                    .bool(*done)
                    .bool(membership.is_some());
                if let Some(membership) = membership {
                    membership.encode(enc);
                }
            }
            Message::SnapAck {
                epoch,
                meta: m,
                next_offset,
                done,
            } => {
                enc.u8(7).u64(*epoch);
                m.encode(enc);
                enc.u64(*next_offset).bool(*done);
            }
            Message::NewLeader { epoch, last } => {
                enc.u8(8).u64(*epoch);
                zxid(enc, *last);
            }
            Message::AckNewLeader { epoch } => {
                enc.u8(9).u64(*epoch);
            }
            Message::Commit { epoch, commit } => {
                enc.u8(10).u64(*epoch).u64(*commit);
            }
            Message::Ping { epoch, synced } => {
                enc.u8(11).u64(*epoch).bool(*synced);
            }
            Message::PingAck { epoch, commit } => {
                enc.u8(12).u64(*epoch).u64(*commit);
            }
            Message::Confirm { epoch, round } => {
                enc.u8(13).u64(*epoch).u64(*round);
            }
            Message::Confirmed { epoch, round } => {
                enc.u8(14).u64(*epoch).u64(*round);
            }
        }
    }

    fn decode(dec: &mut Decoder<'_>) -> Result<Message, DecodeError> {
        Ok(match dec.tag("zab message", 15)? {
            0 => {
                let round = dec.u64("round")?;
                let leader = NodeId(dec.u64("vote leader")?);
                let epoch = dec.u64("vote epoch")?;
                let vote = Vote::new(leader, epoch, read_zxid(dec)?);
                let state = match dec.tag("peer state", 3)? {
                    0 => PeerState::Looking,
                    1 => PeerState::Following,
                    _ => PeerState::Leading,
                };
                Message::Notification { round, vote, state }
            }
            1 => Message::FollowerInfo {
                accepted_epoch: dec.u64("accepted epoch")?,
                accepted_from: match dec.u64("accepted from")? {
                    0 => None,
                    n => Some(NodeId(n)),
                },
            },
            2 => Message::NewEpoch {
                epoch: dec.u64("epoch")?,
            },
            3 => Message::AckEpoch {
                epoch: dec.u64("epoch")?,
                current_epoch: dec.u64("current epoch")?,
                last: read_zxid(dec)?,
                committed: dec.u64("committed")?,
            },
            4 => {
                let epoch = dec.u64("epoch")?;
                let prev = read_zxid(dec)?;
                let commit = dec.u64("commit")?;
                let entries = Entry::decode_all(dec)?;
                Message::Proposal {
                    epoch,
                    prev,
                    entries,
                    commit,
                }
            }
            5 => Message::Ack {
                epoch: dec.u64("epoch")?,
                last: dec.u64("last")?,
                ok: dec.bool("ok")?,
            },
            6 => Message::Snap {
                epoch: dec.u64("epoch")?,
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
            7 => Message::SnapAck {
                epoch: dec.u64("epoch")?,
                meta: SnapshotMeta::decode(dec)?,
                next_offset: dec.u64("next offset")?,
                done: dec.bool("done")?,
            },
            8 => Message::NewLeader {
                epoch: dec.u64("epoch")?,
                last: read_zxid(dec)?,
            },
            9 => Message::AckNewLeader {
                epoch: dec.u64("epoch")?,
            },
            10 => Message::Commit {
                epoch: dec.u64("epoch")?,
                commit: dec.u64("commit")?,
            },
            11 => Message::Ping {
                epoch: dec.u64("epoch")?,
                synced: dec.bool("synced")?,
            },
            12 => Message::PingAck {
                epoch: dec.u64("epoch")?,
                commit: dec.u64("commit")?,
            },
            13 => Message::Confirm {
                epoch: dec.u64("epoch")?,
                round: dec.u64("round")?,
            },
            _ => Message::Confirmed {
                epoch: dec.u64("epoch")?,
                round: dec.u64("round")?,
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
        let z = Zxid {
            epoch: 3,
            counter: 17,
        };
        let entry = Entry {
            index: 18,
            era: 4,
            payload: Payload::Command(Proposal {
                id: RequestId::new(9, 2),
                command: Bytes::from_static(b"put k v"),
            }),
        };
        let m = SnapshotMeta { index: 40, era: 3 };
        vec![
            Message::Notification {
                round: 5,
                vote: Vote::new(NodeId(2), 3, z),
                state: PeerState::Following,
            },
            Message::FollowerInfo {
                accepted_epoch: 3,
                accepted_from: Some(NodeId(2)),
            },
            Message::NewEpoch { epoch: 4 },
            Message::AckEpoch {
                epoch: 4,
                current_epoch: 3,
                last: z,
                committed: 12,
            },
            Message::Proposal {
                epoch: 4,
                prev: z,
                entries: vec![entry],
                commit: 16,
            },
            Message::Ack {
                epoch: 4,
                last: 18,
                ok: false,
            },
            Message::Snap {
                epoch: 4,
                meta: m,
                offset: 7,
                data: Bytes::from_static(b"state"),
                done: true,
                membership: Some(Membership::of_voters(&[NodeId(1), NodeId(2)])),
            },
            Message::Snap {
                epoch: 4,
                meta: m,
                offset: 0,
                data: Bytes::from_static(b"st"),
                done: false,
                membership: None,
            },
            Message::SnapAck {
                epoch: 4,
                meta: m,
                next_offset: 12,
                done: false,
            },
            Message::NewLeader { epoch: 4, last: z },
            Message::AckNewLeader { epoch: 4 },
            Message::Commit {
                epoch: 4,
                commit: 18,
            },
            Message::Ping {
                epoch: 4,
                synced: true,
            },
            Message::PingAck {
                epoch: 4,
                commit: 18,
            },
            Message::Confirm { epoch: 4, round: 9 },
            Message::Confirmed { epoch: 4, round: 9 },
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
