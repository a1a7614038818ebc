//! Raft messages on the wire. Tags and field order are part of the protocol between nodes:
//! append new variants, never renumber.

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{Entry, Membership, SnapshotMeta, Wire};

use crate::message::*;

fn encode_vote_request(enc: &mut Encoder, m: &VoteRequest) {
    enc.u64(m.term)
        .u64(m.last_log_index)
        .u64(m.last_log_term)
        .bool(m.leader_transfer);
}

fn decode_vote_request(dec: &mut Decoder<'_>) -> Result<VoteRequest, DecodeError> {
    Ok(VoteRequest {
        term: dec.u64("term")?,
        last_log_index: dec.u64("last_log_index")?,
        last_log_term: dec.u64("last_log_term")?,
        leader_transfer: dec.bool("leader_transfer")?,
    })
}

fn decode_vote_response(dec: &mut Decoder<'_>) -> Result<VoteResponse, DecodeError> {
    Ok(VoteResponse {
        term: dec.u64("term")?,
        granted: dec.bool("granted")?,
    })
}

impl Wire for Message {
    fn encode(&self, enc: &mut Encoder) {
        match self {
            Message::PreVote(m) => {
                enc.u8(0);
                encode_vote_request(enc, m);
            }
            Message::PreVoteResponse(m) => {
                enc.u8(1).u64(m.term).bool(m.granted);
            }
            Message::RequestVote(m) => {
                enc.u8(2);
                encode_vote_request(enc, m);
            }
            Message::RequestVoteResponse(m) => {
                enc.u8(3).u64(m.term).bool(m.granted);
            }
            Message::AppendEntries(m) => {
                enc.u8(4)
                    .u64(m.term)
                    .u64(m.prev_log_index)
                    .u64(m.prev_log_term)
                    .u64(m.leader_commit);
                Entry::encode_all(&m.entries, enc);
            }
            Message::AppendEntriesResponse(m) => {
                enc.u8(5).u64(m.term);
                match m.outcome {
                    AppendOutcome::Accepted { match_index } => enc.u8(0).u64(match_index),
                    AppendOutcome::Rejected {
                        prev_log_index,
                        conflict_term,
                        conflict_index,
                    } => enc
                        .u8(1)
                        .u64(prev_log_index)
                        .bool(conflict_term.is_some())
                        .u64(conflict_term.unwrap_or(0))
                        .u64(conflict_index),
                };
            }
            Message::Heartbeat(m) => {
                enc.u8(6).u64(m.term).u64(m.commit).u64(m.read_round);
            }
            Message::HeartbeatResponse(m) => {
                enc.u8(7).u64(m.term).u64(m.read_round);
            }
            Message::TimeoutNow(m) => {
                enc.u8(8).u64(m.term);
            }
            Message::InstallSnapshot(m) => {
                enc.u8(9)
                    .u64(m.term)
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
            Message::InstallSnapshotResponse(m) => {
                enc.u8(10)
                    .u64(m.term)
                    .u64(m.meta.index)
                    .u64(m.meta.era)
                    .u64(m.next_offset)
                    .bool(m.done);
            }
            Message::Commit(m) => {
                enc.u8(11).u64(m.term).u64(m.commit);
            }
        }
    }

    fn decode(dec: &mut Decoder<'_>) -> Result<Message, DecodeError> {
        Ok(match dec.tag("raft message", 12)? {
            0 => Message::PreVote(decode_vote_request(dec)?),
            1 => Message::PreVoteResponse(decode_vote_response(dec)?),
            2 => Message::RequestVote(decode_vote_request(dec)?),
            3 => Message::RequestVoteResponse(decode_vote_response(dec)?),
            4 => {
                let (term, prev_log_index, prev_log_term, leader_commit) = (
                    dec.u64("term")?,
                    dec.u64("prev_log_index")?,
                    dec.u64("prev_log_term")?,
                    dec.u64("leader_commit")?,
                );
                let entries = Entry::decode_all(dec)?;
                Message::AppendEntries(AppendEntries {
                    term,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                })
            }
            5 => {
                let term = dec.u64("term")?;
                let outcome = match dec.tag("append outcome", 2)? {
                    0 => AppendOutcome::Accepted {
                        match_index: dec.u64("match_index")?,
                    },
                    _ => {
                        let prev_log_index = dec.u64("prev_log_index")?;
                        let has_term = dec.bool("has conflict term")?;
                        let term = dec.u64("conflict_term")?;
                        AppendOutcome::Rejected {
                            prev_log_index,
                            conflict_term: has_term.then_some(term),
                            conflict_index: dec.u64("conflict_index")?,
                        }
                    }
                };
                Message::AppendEntriesResponse(AppendEntriesResponse { term, outcome })
            }
            6 => Message::Heartbeat(Heartbeat {
                term: dec.u64("term")?,
                commit: dec.u64("commit")?,
                read_round: dec.u64("read_round")?,
            }),
            7 => Message::HeartbeatResponse(HeartbeatResponse {
                term: dec.u64("term")?,
                read_round: dec.u64("read_round")?,
            }),
            8 => Message::TimeoutNow(TimeoutNow {
                term: dec.u64("term")?,
            }),
            9 => Message::InstallSnapshot(InstallSnapshot {
                term: dec.u64("term")?,
                meta: SnapshotMeta {
                    index: dec.u64("index")?,
                    era: dec.u64("era")?,
                },
                offset: dec.u64("offset")?,
                data: dec.owned_bytes("data")?,
                done: dec.bool("done")?,
                membership: if dec.bool("has membership")? {
                    Some(Membership::decode(dec)?)
                } else {
                    None
                },
            }),
            11 => Message::Commit(CommitNotice {
                term: dec.u64("term")?,
                commit: dec.u64("commit")?,
            }),
            _ => Message::InstallSnapshotResponse(InstallSnapshotResponse {
                term: dec.u64("term")?,
                meta: SnapshotMeta {
                    index: dec.u64("index")?,
                    era: dec.u64("era")?,
                },
                next_offset: dec.u64("next_offset")?,
                done: dec.bool("done")?,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use synod_core::wire::conformance::{garbage_never_panics, round_trip};
    use synod_core::{Payload, Proposal, RequestId};

    use super::*;

    fn every_message() -> Vec<Message> {
        let entries = vec![
            Entry {
                index: 7,
                era: 3,
                payload: Payload::Noop,
            },
            Entry {
                index: 8,
                era: 3,
                payload: Payload::Command(Proposal {
                    id: RequestId::new(4, 9),
                    command: Bytes::from_static(b"put k v"),
                }),
            },
            Entry {
                index: 9,
                era: 3,
                payload: Payload::Marker(77),
            },
        ];
        let vote = VoteRequest {
            term: 5,
            last_log_index: 9,
            last_log_term: 4,
            leader_transfer: true,
        };
        let meta = SnapshotMeta { index: 100, era: 4 };
        vec![
            Message::PreVote(vote.clone()),
            Message::PreVoteResponse(VoteResponse {
                term: 6,
                granted: true,
            }),
            Message::RequestVote(vote),
            Message::RequestVoteResponse(VoteResponse {
                term: 6,
                granted: false,
            }),
            Message::AppendEntries(AppendEntries {
                term: 3,
                prev_log_index: 6,
                prev_log_term: 2,
                entries,
                leader_commit: 5,
            }),
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term: 3,
                outcome: AppendOutcome::Accepted { match_index: 9 },
            }),
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term: 3,
                outcome: AppendOutcome::Rejected {
                    prev_log_index: 6,
                    conflict_term: Some(2),
                    conflict_index: 4,
                },
            }),
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term: 3,
                outcome: AppendOutcome::Rejected {
                    prev_log_index: 6,
                    conflict_term: None,
                    conflict_index: 3,
                },
            }),
            Message::Heartbeat(Heartbeat {
                term: 3,
                commit: 5,
                read_round: 11,
            }),
            Message::HeartbeatResponse(HeartbeatResponse {
                term: 3,
                read_round: 11,
            }),
            Message::TimeoutNow(TimeoutNow { term: 3 }),
            Message::Commit(CommitNotice { term: 3, commit: 8 }),
            Message::InstallSnapshot(InstallSnapshot {
                term: 4,
                meta,
                offset: 256,
                data: Bytes::from_static(b"chunk"),
                done: false,
                membership: None,
            }),
            Message::InstallSnapshot(InstallSnapshot {
                term: 4,
                meta,
                offset: 261,
                data: Bytes::from_static(b"last"),
                done: true,
                membership: Some(synod_core::Membership::of_voters(&[
                    synod_core::NodeId(1),
                    synod_core::NodeId(4),
                ])),
            }),
            Message::InstallSnapshotResponse(InstallSnapshotResponse {
                term: 4,
                meta,
                next_offset: 261,
                done: true,
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
