//! Who is in the cluster: the members, which of them vote, and how the set changes.
//!
//! A membership is part of the replicated log: a change is a log entry holding the whole new
//! membership, so every replica learns it in the same place of the same history, and a
//! snapshot carries the membership it was taken under. Engines look only at ids and at who
//! votes; the addresses ride along for the runtime, which connects to whoever is a member.
//!
//! Changes move at most one voter at a time (Raft thesis 4.1, "single-server changes"): any
//! majority of the old voters then overlaps any majority of the new, so two leaders can never
//! be elected by disjoint quorums while a change is under way.

use std::fmt;

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::ids::NodeId;

/// One member of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Member {
    /// Its id, never reused after it leaves.
    pub id: NodeId,
    /// A name for people (`--name`), empty until the member has started and said it.
    pub name: String,
    /// Where its peers reach it.
    pub peer_urls: Vec<String>,
    /// Where clients reach it, empty until the member has started and said it.
    pub client_urls: Vec<String>,
    /// A learner receives the log but does not vote and does not count in any quorum.
    pub learner: bool,
}

/// Every member, ordered by id, and the next id to hand out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// The members, ordered by id.
    pub members: Vec<Member>,
    /// The id the next added member gets; above every id ever used, so none is reused.
    pub next_id: u64,
}

/// A change an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Adds a member reached at `peer_urls`, as a learner or as a voter.
    Add {
        /// Where its peers will reach it.
        peer_urls: Vec<String>,
        /// Whether it joins as a learner.
        learner: bool,
    },
    /// Removes a member.
    Remove {
        /// The member.
        id: NodeId,
    },
    /// Makes a learner a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Changes where a member's peers reach it.
    Update {
        /// The member.
        id: NodeId,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
    /// A member says its name and where clients reach it, once started (as etcd members
    /// publish their attributes).
    Publish {
        /// The member.
        id: NodeId,
        /// Its `--name`.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
    },
}

/// Why a membership change was refused; each has etcd's error for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipRefusal {
    /// No member has this id.
    NotFound,
    /// Another member already uses one of these peer URLs.
    PeerUrlExists,
    /// Only a learner can be promoted.
    NotLearner,
    /// The learner is too far behind the leader to be promoted yet.
    LearnerNotReady,
    /// The cluster already has as many learners as it allows.
    TooManyLearners,
    /// Another change is not yet committed, or this leader has not yet committed an entry of
    /// its own term: one change at a time (Raft thesis 4.1 and its 2015 erratum).
    ChangePending,
    /// Not enough voters are reachable to keep a quorum once the change is made.
    NotEnoughStarted,
    /// The change would leave no voter.
    LastVoter,
    /// The change asks for nothing (no peer URLs, for one).
    BadUrls,
}

impl MembershipRefusal {
    /// The message etcd gives for this refusal.
    pub fn message(self) -> &'static str {
        match self {
            MembershipRefusal::NotFound => "etcdserver: member not found",
            MembershipRefusal::PeerUrlExists => "etcdserver: Peer URLs already exists",
            MembershipRefusal::NotLearner => "etcdserver: can only promote a learner member",
            MembershipRefusal::LearnerNotReady => {
                "etcdserver: can only promote a learner member which is in sync with leader"
            }
            MembershipRefusal::TooManyLearners => "etcdserver: too many learner members in cluster",
            MembershipRefusal::ChangePending => "etcdserver: unhealthy cluster",
            MembershipRefusal::NotEnoughStarted => {
                "etcdserver: re-configuration failed due to not enough started members"
            }
            MembershipRefusal::LastVoter => {
                "etcdserver: re-configuration failed: the cluster would have no voting member"
            }
            MembershipRefusal::BadUrls => "etcdserver: given member URLs are invalid",
        }
    }
}

impl fmt::Display for MembershipRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl MembershipRefusal {
    const ALL: [MembershipRefusal; 9] = [
        MembershipRefusal::NotFound,
        MembershipRefusal::PeerUrlExists,
        MembershipRefusal::NotLearner,
        MembershipRefusal::LearnerNotReady,
        MembershipRefusal::TooManyLearners,
        MembershipRefusal::ChangePending,
        MembershipRefusal::NotEnoughStarted,
        MembershipRefusal::LastVoter,
        MembershipRefusal::BadUrls,
    ];

    /// Appends its encoding: its position in a fixed list.
    pub fn encode(self, enc: &mut Encoder) {
        let tag = Self::ALL.iter().position(|&r| r == self).unwrap_or(0);
        enc.u8(tag as u8);
    }

    /// Reads what [`MembershipRefusal::encode`] wrote.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<MembershipRefusal, DecodeError> {
        let tag = dec.tag("membership refusal", Self::ALL.len() as u64)?;
        Ok(Self::ALL[tag as usize])
    }
}

impl MembershipChange {
    /// Appends its encoding.
    pub fn encode(&self, enc: &mut Encoder) {
        match self {
            MembershipChange::Add { peer_urls, learner } => {
                enc.u8(0).bool(*learner);
                encode_strings(peer_urls, enc);
            }
            MembershipChange::Remove { id } => {
                enc.u8(1).u64(id.0);
            }
            MembershipChange::Promote { id } => {
                enc.u8(2).u64(id.0);
            }
            MembershipChange::Update { id, peer_urls } => {
                enc.u8(3).u64(id.0);
                encode_strings(peer_urls, enc);
            }
            MembershipChange::Publish {
                id,
                name,
                client_urls,
            } => {
                enc.u8(4).u64(id.0).bytes(name.as_bytes());
                encode_strings(client_urls, enc);
            }
        }
    }

    /// Reads what [`MembershipChange::encode`] wrote.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<MembershipChange, DecodeError> {
        Ok(match dec.tag("membership change", 5)? {
            0 => MembershipChange::Add {
                learner: dec.bool("learner")?,
                peer_urls: decode_strings(dec, "peer urls")?,
            },
            1 => MembershipChange::Remove {
                id: NodeId(dec.u64("member id")?),
            },
            2 => MembershipChange::Promote {
                id: NodeId(dec.u64("member id")?),
            },
            3 => MembershipChange::Update {
                id: NodeId(dec.u64("member id")?),
                peer_urls: decode_strings(dec, "peer urls")?,
            },
            _ => MembershipChange::Publish {
                id: NodeId(dec.u64("member id")?),
                name: decode_string(dec, "member name")?,
                client_urls: decode_strings(dec, "client urls")?,
            },
        })
    }
}

/// Why a runtime refuses a membership change for an engine whose members are fixed at boot
/// ([`crate::Engine::membership`] is `None`; every served protocol changes its own).
pub const FIXED_MEMBERSHIP: &str = "this engine's members are fixed when it boots";

/// Learners a cluster may hold at once (etcd's default `--max-learners`).
pub const LEARNERS_MAX: usize = 1;

impl Membership {
    /// Every node of `voters` as a voter, with no addresses: the boot membership of a cluster
    /// whose runtime knows its addresses otherwise.
    pub fn of_voters(voters: &[NodeId]) -> Membership {
        let mut members: Vec<Member> = voters
            .iter()
            .map(|&id| Member {
                id,
                ..Member::default()
            })
            .collect();
        members.sort_by_key(|m| m.id);
        members.dedup_by_key(|m| m.id);
        let next_id = members.last().map_or(1, |m| m.id.0 + 1);
        Membership { members, next_id }
    }

    /// The membership a node boots with: the one the runtime gave (with names and
    /// addresses), else `voters` alone.
    pub fn at_boot(boot: Option<&Membership>, voters: &[NodeId]) -> Membership {
        boot.cloned()
            .unwrap_or_else(|| Membership::of_voters(voters))
    }

    /// The membership a node's log starts from: the one its snapshot records, else the boot
    /// one ([`Membership::at_boot`]).
    pub fn under_log(
        snapshot: Option<&crate::snapshot::Snapshot>,
        boot: Option<&Membership>,
        voters: &[NodeId],
    ) -> Membership {
        snapshot
            .and_then(|s| s.membership.clone())
            .unwrap_or_else(|| Membership::at_boot(boot, voters))
    }

    /// The member with this id.
    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Whether `id` is a member, voting or not.
    pub fn contains(&self, id: NodeId) -> bool {
        self.get(id).is_some()
    }

    /// Whether `id` is a learner here: a member that follows without voting.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.get(id).is_some_and(|m| m.learner)
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.get(id).is_some_and(|m| !m.learner)
    }

    /// The voters, ordered by id.
    pub fn voters(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| !m.learner)
            .map(|m| m.id)
            .collect()
    }

    /// How many members vote.
    pub fn voter_count(&self) -> usize {
        self.members.iter().filter(|m| !m.learner).count()
    }

    /// Every member's id, ordered.
    pub fn ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// The membership after `change`, or why it cannot be made. Checks only what the
    /// membership itself shows; the leader checks replication and pending changes.
    pub fn changed(&self, change: &MembershipChange) -> Result<Membership, MembershipRefusal> {
        let mut next = self.clone();
        let taken = |urls: &[String], except: Option<NodeId>| {
            self.members
                .iter()
                .filter(|m| Some(m.id) != except)
                .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
        };
        match change {
            MembershipChange::Add { peer_urls, learner } => {
                if peer_urls.is_empty() {
                    return Err(MembershipRefusal::BadUrls);
                }
                if taken(peer_urls, None) {
                    return Err(MembershipRefusal::PeerUrlExists);
                }
                let learners = self.members.iter().filter(|m| m.learner).count();
                if *learner && learners >= LEARNERS_MAX {
                    return Err(MembershipRefusal::TooManyLearners);
                }
                let id = NodeId(self.next_id.max(1));
                next.next_id = id.0 + 1;
                next.members.push(Member {
                    id,
                    peer_urls: peer_urls.clone(),
                    learner: *learner,
                    ..Member::default()
                });
            }
            MembershipChange::Remove { id } => {
                let member = self.get(*id).ok_or(MembershipRefusal::NotFound)?;
                if !member.learner && self.voter_count() == 1 {
                    return Err(MembershipRefusal::LastVoter);
                }
                next.members.retain(|m| m.id != *id);
            }
            MembershipChange::Promote { id } => {
                let member = next.member_mut(*id)?;
                if !member.learner {
                    return Err(MembershipRefusal::NotLearner);
                }
                member.learner = false;
            }
            MembershipChange::Update { id, peer_urls } => {
                if peer_urls.is_empty() {
                    return Err(MembershipRefusal::BadUrls);
                }
                if taken(peer_urls, Some(*id)) {
                    return Err(MembershipRefusal::PeerUrlExists);
                }
                next.member_mut(*id)?.peer_urls = peer_urls.clone();
            }
            MembershipChange::Publish {
                id,
                name,
                client_urls,
            } => {
                let member = next.member_mut(*id)?;
                member.name = name.clone();
                member.client_urls = client_urls.clone();
            }
        }
        next.members.sort_by_key(|m| m.id);
        Ok(next)
    }

    fn member_mut(&mut self, id: NodeId) -> Result<&mut Member, MembershipRefusal> {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or(MembershipRefusal::NotFound)
    }

    /// Appends the encoding: next id, member count, then each member.
    pub fn encode(&self, enc: &mut Encoder) {
        enc.u64(self.next_id).u64(self.members.len() as u64);
        for m in &self.members {
            enc.u64(m.id.0).bytes(m.name.as_bytes()).bool(m.learner);
            encode_strings(&m.peer_urls, enc);
            encode_strings(&m.client_urls, enc);
        }
    }

    /// Reads what [`Membership::encode`] wrote.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<Membership, DecodeError> {
        let next_id = dec.u64("next member id")?;
        let members = (0..dec.count("members")?)
            .map(|_| {
                Ok(Member {
                    id: NodeId(dec.u64("member id")?),
                    name: decode_string(dec, "member name")?,
                    learner: dec.bool("learner")?,
                    peer_urls: decode_strings(dec, "peer urls")?,
                    client_urls: decode_strings(dec, "client urls")?,
                })
            })
            .collect::<Result<Vec<Member>, DecodeError>>()?;
        Ok(Membership { members, next_id })
    }
}

fn encode_strings(strings: &[String], enc: &mut Encoder) {
    enc.u64(strings.len() as u64);
    for s in strings {
        enc.bytes(s.as_bytes());
    }
}

fn decode_string(dec: &mut Decoder<'_>, what: &'static str) -> Result<String, DecodeError> {
    let bytes = dec.bytes(what)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid(what))
}

fn decode_strings(dec: &mut Decoder<'_>, what: &'static str) -> Result<Vec<String>, DecodeError> {
    (0..dec.count(what)?)
        .map(|_| decode_string(dec, what))
        .collect()
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                if m.learner {
                    format!("{}(learner)", m.id)
                } else {
                    m.id.to_string()
                }
            })
            .collect();
        write!(f, "[{}]", names.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(u: &str) -> Vec<String> {
        vec![u.to_string()]
    }

    #[test]
    fn changes_keep_ids_unique_and_never_reuse_one() {
        let m = Membership::of_voters(&[NodeId(1), NodeId(2), NodeId(3)]);
        let add = MembershipChange::Add {
            peer_urls: urls("http://a:1"),
            learner: true,
        };
        let m = m.changed(&add).unwrap();
        assert_eq!(m.get(NodeId(4)).map(|x| x.learner), Some(true));
        assert_eq!(
            m.changed(&MembershipChange::Add {
                peer_urls: urls("http://b:1"),
                learner: true
            }),
            Err(MembershipRefusal::TooManyLearners)
        );
        assert_eq!(
            m.changed(&MembershipChange::Add {
                peer_urls: urls("http://a:1"),
                learner: false
            }),
            Err(MembershipRefusal::PeerUrlExists)
        );
        let m = m
            .changed(&MembershipChange::Promote { id: NodeId(4) })
            .unwrap();
        assert_eq!(m.voters().len(), 4);
        assert_eq!(
            m.changed(&MembershipChange::Promote { id: NodeId(4) }),
            Err(MembershipRefusal::NotLearner)
        );
        let m = m
            .changed(&MembershipChange::Remove { id: NodeId(4) })
            .unwrap();
        let m = m.changed(&add).unwrap();
        assert_eq!(m.ids(), vec![NodeId(1), NodeId(2), NodeId(3), NodeId(5)]);
        assert_eq!(
            m.changed(&MembershipChange::Remove { id: NodeId(9) }),
            Err(MembershipRefusal::NotFound)
        );
    }

    #[test]
    fn the_last_voter_stays() {
        let m = Membership::of_voters(&[NodeId(1)]);
        assert_eq!(
            m.changed(&MembershipChange::Remove { id: NodeId(1) }),
            Err(MembershipRefusal::LastVoter)
        );
    }

    #[test]
    fn encoding_round_trips() {
        let m = Membership::of_voters(&[NodeId(1), NodeId(2)])
            .changed(&MembershipChange::Add {
                peer_urls: urls("http://a:1"),
                learner: true,
            })
            .unwrap()
            .changed(&MembershipChange::Publish {
                id: NodeId(1),
                name: "one".into(),
                client_urls: urls("http://c:2"),
            })
            .unwrap();
        let mut enc = Encoder::with_capacity(64);
        m.encode(&mut enc);
        let bytes = enc.finish();
        let mut dec = Decoder::new(&bytes);
        assert_eq!(Membership::decode(&mut dec), Ok(m));
        dec.finish().unwrap();
    }
}
