//! Gossip messages on the wire. Tags and field order are part of the protocol between
//! members: append new variants, never renumber.

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{KeySpan, Membership, NodeId, RequestId, Wire};

use crate::message::{Candidate, MemberState, Message, Update};
use crate::store::{Record, BUCKETS};
use crate::version::Version;

fn encode_updates(updates: &[Update], enc: &mut Encoder) {
    enc.u64(updates.len() as u64);
    for u in updates {
        let state = match u.state {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead => 2,
        };
        enc.u64(u.member.0).u8(state).u64(u.incarnation);
    }
}

fn decode_updates(dec: &mut Decoder<'_>) -> Result<Vec<Update>, DecodeError> {
    let count = dec.count("updates")?;
    let mut updates = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let member = NodeId(dec.u64("member")?);
        let state = match dec.tag("member state", 3)? {
            0 => MemberState::Alive,
            1 => MemberState::Suspect,
            _ => MemberState::Dead,
        };
        let incarnation = dec.u64("incarnation")?;
        updates.push(Update {
            member,
            state,
            incarnation,
        });
    }
    Ok(updates)
}

/// A bucket number, refused when out of range.
fn decode_bucket(dec: &mut Decoder<'_>) -> Result<u16, DecodeError> {
    let bucket = dec.u64("bucket")?;
    if bucket >= BUCKETS as u64 {
        return Err(DecodeError::Invalid("bucket out of range"));
    }
    Ok(bucket as u16)
}

fn encode_candidate(c: &Candidate, enc: &mut Encoder) {
    enc.u64(c.ballot).u64(c.id.client.0).u64(c.id.seq);
    c.membership.encode(enc);
}

fn decode_candidate(dec: &mut Decoder<'_>) -> Result<Candidate, DecodeError> {
    Ok(Candidate {
        ballot: dec.u64("ballot")?,
        id: RequestId::new(dec.u64("client")?, dec.u64("seq")?),
        membership: Membership::decode(dec)?,
    })
}

fn encode_records(records: &[Record], enc: &mut Encoder) {
    enc.u64(records.len() as u64);
    for r in records {
        r.encode(enc);
    }
}

fn decode_records(dec: &mut Decoder<'_>) -> Result<Vec<Record>, DecodeError> {
    let count = dec.count("records")?;
    let mut records = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        records.push(Record::decode(dec)?);
    }
    Ok(records)
}

impl Wire for Message {
    fn encode(&self, enc: &mut Encoder) {
        match self {
            Message::Ping {
                seq,
                clock,
                synced,
                epoch,
                listed,
                updates,
            } => {
                enc.u8(0)
                    .u64(*seq)
                    .u64(*clock)
                    .bool(*synced)
                    .u64(*epoch)
                    .bool(*listed);
                encode_updates(updates, enc);
            }
            Message::Ack {
                seq,
                clock,
                synced,
                epoch,
                listed,
                updates,
            } => {
                enc.u8(1)
                    .u64(*seq)
                    .u64(*clock)
                    .bool(*synced)
                    .u64(*epoch)
                    .bool(*listed);
                encode_updates(updates, enc);
            }
            Message::PingReq {
                seq,
                target,
                updates,
            } => {
                enc.u8(2).u64(*seq).u64(target.0);
                encode_updates(updates, enc);
            }
            Message::Push { records, ack } => {
                enc.u8(3);
                encode_records(records, enc);
                enc.bool(ack.is_some()).u64(ack.unwrap_or(0));
            }
            Message::PushAck { round } => {
                enc.u8(4).u64(*round);
            }
            Message::Digest { digests } => {
                enc.u8(5).u64(digests.len() as u64);
                for d in digests {
                    enc.u64(*d);
                }
            }
            Message::Keys { buckets } => {
                enc.u8(6).u64(buckets.len() as u64);
                for (bucket, keys) in buckets {
                    enc.u64(u64::from(*bucket)).u64(keys.len() as u64);
                    for (key, version) in keys {
                        enc.bytes(key).u64(version.0);
                    }
                }
            }
            Message::Pull { keys } => {
                enc.u8(7).u64(keys.len() as u64);
                for key in keys {
                    enc.bytes(key);
                }
            }
            Message::ReadQuery { round, span } => {
                enc.u8(8)
                    .u64(*round)
                    .bytes(&span.key)
                    .bytes(&span.range_end);
            }
            Message::ReadReply {
                round,
                records,
                truncated,
            } => {
                enc.u8(9).u64(*round);
                encode_records(records, enc);
                enc.bool(*truncated);
            }
            Message::Prepare {
                epoch,
                ballot,
                nonce,
            } => {
                enc.u8(10).u64(*epoch).u64(*ballot).u64(*nonce);
            }
            Message::Promise {
                epoch,
                ballot,
                nonce,
                accepted,
            } => {
                enc.u8(11)
                    .u64(*epoch)
                    .u64(*ballot)
                    .u64(*nonce)
                    .bool(accepted.is_some());
                if let Some(c) = accepted {
                    encode_candidate(c, enc);
                }
            }
            Message::Accept { epoch, candidate } => {
                enc.u8(12).u64(*epoch);
                encode_candidate(candidate, enc);
            }
            Message::Accepted { epoch, ballot, id } => {
                enc.u8(13)
                    .u64(*epoch)
                    .u64(*ballot)
                    .u64(id.client.0)
                    .u64(id.seq);
            }
            Message::Outbid {
                epoch,
                refused,
                nonce,
                promised,
            } => {
                enc.u8(14)
                    .u64(*epoch)
                    .u64(*refused)
                    .u64(*nonce)
                    .u64(*promised);
            }
            Message::Held { buckets } => {
                enc.u8(16).u64(buckets.len() as u64);
                for b in buckets {
                    enc.u64(u64::from(*b));
                }
            }
            Message::Agreed {
                epoch,
                id,
                membership,
            } => {
                enc.u8(15).u64(*epoch).u64(id.client.0).u64(id.seq);
                membership.encode(enc);
            }
        }
    }

    fn decode(dec: &mut Decoder<'_>) -> Result<Message, DecodeError> {
        Ok(match dec.tag("gossip message", 17)? {
            0 => Message::Ping {
                seq: dec.u64("seq")?,
                clock: dec.u64("clock")?,
                synced: dec.bool("synced")?,
                epoch: dec.u64("epoch")?,
                listed: dec.bool("listed")?,
                updates: decode_updates(dec)?,
            },
            1 => Message::Ack {
                seq: dec.u64("seq")?,
                clock: dec.u64("clock")?,
                synced: dec.bool("synced")?,
                epoch: dec.u64("epoch")?,
                listed: dec.bool("listed")?,
                updates: decode_updates(dec)?,
            },
            2 => Message::PingReq {
                seq: dec.u64("seq")?,
                target: NodeId(dec.u64("target")?),
                updates: decode_updates(dec)?,
            },
            3 => {
                let records = decode_records(dec)?;
                let has_ack = dec.bool("asks an ack")?;
                let round = dec.u64("round")?;
                Message::Push {
                    records,
                    ack: has_ack.then_some(round),
                }
            }
            4 => Message::PushAck {
                round: dec.u64("round")?,
            },
            5 => {
                let count = dec.count("digests")?;
                if count != BUCKETS {
                    return Err(DecodeError::Invalid("a digest of another bucket count"));
                }
                let mut digests = Vec::with_capacity(BUCKETS);
                for _ in 0..count {
                    digests.push(dec.u64("digest")?);
                }
                Message::Digest { digests }
            }
            6 => {
                let count = dec.count("buckets")?;
                let mut buckets = Vec::with_capacity(count.min(BUCKETS));
                for _ in 0..count {
                    let bucket = decode_bucket(dec)?;
                    let n = dec.count("keys")?;
                    let mut keys = Vec::with_capacity(n.min(1024));
                    for _ in 0..n {
                        keys.push((dec.owned_bytes("key")?, Version(dec.u64("version")?)));
                    }
                    buckets.push((bucket, keys));
                }
                Message::Keys { buckets }
            }
            7 => {
                let count = dec.count("keys")?;
                let mut keys = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    keys.push(dec.owned_bytes("key")?);
                }
                Message::Pull { keys }
            }
            8 => Message::ReadQuery {
                round: dec.u64("round")?,
                span: KeySpan {
                    key: dec.owned_bytes("key")?,
                    range_end: dec.owned_bytes("range end")?,
                },
            },
            9 => Message::ReadReply {
                round: dec.u64("round")?,
                records: decode_records(dec)?,
                truncated: dec.bool("truncated")?,
            },
            10 => Message::Prepare {
                epoch: dec.u64("epoch")?,
                ballot: dec.u64("ballot")?,
                nonce: dec.u64("nonce")?,
            },
            11 => {
                let epoch = dec.u64("epoch")?;
                let ballot = dec.u64("ballot")?;
                let nonce = dec.u64("nonce")?;
                let accepted = if dec.bool("accepted")? {
                    Some(decode_candidate(dec)?)
                } else {
                    None
                };
                Message::Promise {
                    epoch,
                    ballot,
                    nonce,
                    accepted,
                }
            }
            12 => Message::Accept {
                epoch: dec.u64("epoch")?,
                candidate: decode_candidate(dec)?,
            },
            13 => Message::Accepted {
                epoch: dec.u64("epoch")?,
                ballot: dec.u64("ballot")?,
                id: RequestId::new(dec.u64("client")?, dec.u64("seq")?),
            },
            14 => Message::Outbid {
                epoch: dec.u64("epoch")?,
                refused: dec.u64("refused ballot")?,
                nonce: dec.u64("nonce")?,
                promised: dec.u64("promised")?,
            },
            16 => {
                let count = dec.count("buckets")?;
                let mut buckets = Vec::with_capacity(count.min(BUCKETS));
                for _ in 0..count {
                    buckets.push(decode_bucket(dec)?);
                }
                Message::Held { buckets }
            }
            _ => Message::Agreed {
                epoch: dec.u64("epoch")?,
                id: RequestId::new(dec.u64("client")?, dec.u64("seq")?),
                membership: Membership::decode(dec)?,
            },
        })
    }
}
