//! What nodes send each other: the engine's own messages, and the requests a follower hands
//! to the leader.
//!
//! A follower does not answer writes and linearizable reads by itself, and it does not make
//! its clients reconnect either: it hands the write to the leader as a proposal that keeps the
//! follower's request id, and answers the client when it applies the entry with that id from
//! its own log (as etcd forwards proposals inside Raft). A linearizable read asks the leader
//! for a read index, then waits until this node has applied that far (thesis 6.4, "follower
//! reads"); the read itself is served here.

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::wire::Wire;
use synod_core::{ClientId, MembershipChange, MembershipRefusal, NodeId, Proposal, RequestId};

/// One message between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage<M> {
    /// The engine's message.
    Engine(M),
    /// Writes a follower took from its clients, for the leader to propose.
    Propose(Vec<Proposal>),
    /// Linearizable reads a follower took: the leader confirms it still leads.
    ReadIndex(Vec<RequestId>),
    /// The leader confirmed: the reads may be served once the asker has applied `index`.
    ReadReady {
        /// The reads.
        ids: Vec<RequestId>,
        /// Everything up to here must be applied first.
        index: u64,
    },
    /// The receiver does not lead: the requests had no effect.
    Refused {
        /// The requests.
        ids: Vec<RequestId>,
        /// Who leads, as far as the refuser knows.
        leader: Option<NodeId>,
    },
    /// Without a leader: the keeper of the lease clocks in this era is alive.
    KeeperAlive {
        /// The lease epoch it keeps.
        era: u64,
    },
    /// Without a leader: a member heard the keeper of this era. A keeper that stops hearing
    /// this from a quorum falls silent, so that others claim the clocks.
    KeeperHeard {
        /// The lease epoch the keeper said it keeps.
        era: u64,
    },
    /// A membership change a follower took from an operator, for the leader to order under
    /// the follower's request id.
    ChangeMembership {
        /// The request.
        id: RequestId,
        /// The change.
        change: MembershipChange,
    },
    /// The leader refused a membership change it was handed: it had no effect.
    MembershipRefused {
        /// The request.
        id: RequestId,
        /// Why.
        refusal: MembershipRefusal,
    },
}

fn encode_id(enc: &mut Encoder, id: &RequestId) {
    enc.u64(id.client.0).u64(id.seq);
}

fn decode_id(dec: &mut Decoder<'_>) -> Result<RequestId, DecodeError> {
    Ok(RequestId {
        client: ClientId(dec.u64("client")?),
        seq: dec.u64("seq")?,
    })
}

fn encode_ids(enc: &mut Encoder, ids: &[RequestId]) {
    enc.u64(ids.len() as u64);
    ids.iter().for_each(|id| encode_id(enc, id));
}

fn decode_ids(dec: &mut Decoder<'_>) -> Result<Vec<RequestId>, DecodeError> {
    let count = dec.count("request ids")?;
    (0..count).map(|_| decode_id(dec)).collect()
}

impl<M: Wire> Wire for PeerMessage<M> {
    fn encode(&self, enc: &mut Encoder) {
        match self {
            PeerMessage::Engine(m) => {
                enc.u8(0);
                m.encode(enc);
            }
            PeerMessage::Propose(proposals) => {
                enc.u8(1).u64(proposals.len() as u64);
                for p in proposals {
                    encode_id(enc, &p.id);
                    enc.bytes(&p.command);
                }
            }
            PeerMessage::ReadIndex(ids) => {
                enc.u8(2);
                encode_ids(enc, ids);
            }
            PeerMessage::ReadReady { ids, index } => {
                enc.u8(3).u64(*index);
                encode_ids(enc, ids);
            }
            PeerMessage::Refused { ids, leader } => {
                enc.u8(4).u64(leader.map_or(0, |l| l.0));
                encode_ids(enc, ids);
            }
            PeerMessage::KeeperAlive { era } => {
                enc.u8(5).u64(*era);
            }
            PeerMessage::KeeperHeard { era } => {
                enc.u8(6).u64(*era);
            }
            PeerMessage::ChangeMembership { id, change } => {
                enc.u8(7);
                encode_id(enc, id);
                change.encode(enc);
            }
            PeerMessage::MembershipRefused { id, refusal } => {
                enc.u8(8);
                encode_id(enc, id);
                refusal.encode(enc);
            }
        }
    }

    fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match dec.tag("peer message", 9)? {
            0 => PeerMessage::Engine(M::decode(dec)?),
            // Collected as they decode, nothing reserved ahead: a count is bounded only by the
            // frame's bytes, and a frame of 64 MiB could claim millions of proposals of 48
            // bytes each in memory.
            1 => PeerMessage::Propose(
                (0..dec.count("proposals")?)
                    .map(|_| {
                        let id = decode_id(dec)?;
                        let command = dec.owned_bytes("command")?;
                        Ok(Proposal { id, command })
                    })
                    .collect::<Result<_, DecodeError>>()?,
            ),
            2 => PeerMessage::ReadIndex(decode_ids(dec)?),
            3 => {
                let index = dec.u64("index")?;
                PeerMessage::ReadReady {
                    ids: decode_ids(dec)?,
                    index,
                }
            }
            4 => {
                let leader = dec.u64("leader")?;
                PeerMessage::Refused {
                    leader: (leader != 0).then_some(NodeId(leader)),
                    ids: decode_ids(dec)?,
                }
            }
            5 => PeerMessage::KeeperAlive {
                era: dec.u64("era")?,
            },
            6 => PeerMessage::KeeperHeard {
                era: dec.u64("era")?,
            },
            7 => PeerMessage::ChangeMembership {
                id: decode_id(dec)?,
                change: MembershipChange::decode(dec)?,
            },
            _ => PeerMessage::MembershipRefused {
                id: decode_id(dec)?,
                refusal: MembershipRefusal::decode(dec)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Ping(u64);

    impl Wire for Ping {
        fn encode(&self, enc: &mut Encoder) {
            enc.u64(self.0);
        }
        fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
            Ok(Ping(dec.u64("ping")?))
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let id = RequestId::new(u64::MAX, 7);
        let messages = vec![
            PeerMessage::Engine(Ping(3)),
            PeerMessage::Propose(vec![Proposal {
                id,
                command: bytes::Bytes::from_static(b"put"),
            }]),
            PeerMessage::ReadIndex(vec![id, RequestId::new(1, 2)]),
            PeerMessage::ReadReady {
                ids: vec![id],
                index: 42,
            },
            PeerMessage::Refused {
                ids: vec![id],
                leader: Some(NodeId(3)),
            },
            PeerMessage::Refused {
                ids: vec![],
                leader: None,
            },
            PeerMessage::KeeperAlive { era: 7 << 32 | 2 },
            PeerMessage::KeeperHeard { era: 7 << 32 | 2 },
            PeerMessage::ChangeMembership {
                id,
                change: MembershipChange::Add {
                    peer_urls: vec!["http://10.0.0.4:2380".into()],
                    learner: true,
                },
            },
            PeerMessage::ChangeMembership {
                id,
                change: MembershipChange::Publish {
                    id: NodeId(4),
                    name: "four".into(),
                    client_urls: vec!["http://10.0.0.4:2379".into()],
                },
            },
            PeerMessage::MembershipRefused {
                id,
                refusal: MembershipRefusal::LearnerNotReady,
            },
        ];
        for message in messages {
            let bytes = message.to_bytes();
            assert_eq!(PeerMessage::<Ping>::from_bytes(&bytes), Ok(message));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for garbage in [&[9u8][..], &[1, 200], &[2, 5, 1], &[3], &[]] {
            assert!(
                PeerMessage::<Ping>::from_bytes(garbage).is_err(),
                "{garbage:?}"
            );
        }
    }
}
