//! Membership and failure detection by SWIM (Das, Gupta, Motivala, 2002).
//!
//! Every probe period a node pings one peer, taking them in a shuffled round-robin order so
//! each is probed within two periods. No ack within the ack timeout: it asks `k` others to
//! ping that peer for it (ping-req), and relays their acks. Still no ack by the end of the
//! period: the peer is **suspect**. A suspect that does not refute the suspicion within the
//! suspicion timeout is declared **dead**. Each member numbers its own lives with an
//! **incarnation**: a member that hears itself suspected or declared dead refutes it by
//! announcing itself alive with a higher incarnation, which overrides the older news.
//! News of members travels piggybacked on pings and acks, each item sent a few times
//! (a multiple of log n), newest first.
//!
//! Who is a member is not SWIM's to decide here: the engine hands it the members of the
//! membership agreed (`set_peers`). A dead member is still probed: when a partition heals,
//! the prober's ping tells it what it is held to be, and it refutes. A ping from a node that
//! is not a member is answered all the same (a member that was removed, or one that has
//! joined and not yet learned the membership, must hear back to learn it).

use std::collections::{BTreeMap, HashMap};

use synod_core::{NodeId, Rng};

use crate::message::{MemberState, Message, Update};

/// Updates piggybacked on one message at most.
pub const UPDATES_PER_MESSAGE: usize = 8;

/// Timeouts of the failure detector, in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwimTiming {
    /// A peer is probed every this many ticks.
    pub probe_ticks: u64,
    /// A ping unanswered this long goes to `indirect` others as ping-reqs.
    pub ack_ticks: u64,
    /// A suspect is declared dead after this long.
    pub suspect_ticks: u64,
    /// Members asked to ping a silent peer for us.
    pub indirect: usize,
}

#[derive(Clone, Copy, Debug)]
struct Member {
    state: MemberState,
    incarnation: u64,
    /// When it became suspect (ticks).
    since: u64,
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    target: NodeId,
    seq: u64,
    sent_at: u64,
    asked_others: bool,
    acked: bool,
}

/// A ping sent on behalf of another member's ping-req.
#[derive(Clone, Copy, Debug)]
struct Relay {
    requester: NodeId,
    seq: u64,
    sent_at: u64,
}

/// One node's view of the membership and its failure detector.
#[derive(Clone, Debug)]
pub struct Swim {
    id: NodeId,
    incarnation: u64,
    members: BTreeMap<NodeId, Member>,
    timing: SwimTiming,
    order: Vec<NodeId>,
    cursor: usize,
    probe: Option<Probe>,
    next_seq: u64,
    relays: HashMap<u64, Relay>,
    /// News to piggyback, with the number of sends left.
    news: Vec<(Update, u32)>,
    retransmits: u32,
    /// Peers that answered a probe since the last `take_heard`.
    heard: Vec<NodeId>,
}

impl Swim {
    /// A view in which every peer is alive at incarnation 0.
    pub fn new(id: NodeId, voters: &[NodeId], timing: SwimTiming) -> Swim {
        let peers: Vec<NodeId> = voters.iter().copied().filter(|&p| p != id).collect();
        let members = peers
            .iter()
            .map(|&p| {
                let member = Member {
                    state: MemberState::Alive,
                    incarnation: 0,
                    since: 0,
                };
                (p, member)
            })
            .collect();
        // 3 ⌈log2(n + 1)⌉ sends per item of news: enough for an epidemic to reach everyone
        // with high probability.
        let n = voters.len() as u64 + 1;
        let retransmits = 3 * (u64::BITS - n.leading_zeros()).max(1);
        Swim {
            id,
            incarnation: 0,
            members,
            timing,
            order: peers,
            cursor: usize::MAX,
            probe: None,
            next_seq: 0,
            relays: HashMap::new(),
            news: Vec::new(),
            retransmits,
            heard: Vec::new(),
        }
    }

    /// Makes `peers` the members probed: new ones start alive at incarnation 0, those no
    /// longer listed are forgotten, the others keep their state.
    pub fn set_peers(&mut self, peers: &[NodeId]) {
        let peers: Vec<NodeId> = peers.iter().copied().filter(|&p| p != self.id).collect();
        self.members.retain(|id, _| peers.contains(id));
        for &p in &peers {
            self.members.entry(p).or_insert(Member {
                state: MemberState::Alive,
                incarnation: 0,
                since: 0,
            });
        }
        self.news
            .retain(|(u, _)| peers.contains(&u.member) || u.member == self.id);
        if self.probe.is_some_and(|p| !peers.contains(&p.target)) {
            self.probe = None;
        }
        self.order = peers;
        self.cursor = usize::MAX;
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The state this node holds `member` in (itself: alive).
    pub fn state(&self, member: NodeId) -> MemberState {
        self.members
            .get(&member)
            .map_or(MemberState::Alive, |m| m.state)
    }

    /// Peers not declared dead (suspects included: SWIM treats them as members until the
    /// suspicion is confirmed).
    pub fn reachable(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.state != MemberState::Dead)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Every peer.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.keys().copied()
    }

    /// Peers that answered a probe since the last call.
    pub fn take_heard(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.heard)
    }

    /// One tick at time `now`: ends and starts probe periods, sends ping-reqs, turns
    /// suspects dead.
    pub fn tick(&mut self, now: u64, rng: &mut Rng, out: &mut Vec<(NodeId, Message)>) {
        if self.order.is_empty() {
            return;
        }
        if now.is_multiple_of(self.timing.probe_ticks) {
            self.end_probe(now);
            self.start_probe(now, rng, out);
        } else if let Some(probe) = self.probe.as_mut() {
            if !probe.acked && !probe.asked_others && now >= probe.sent_at + self.timing.ack_ticks {
                probe.asked_others = true;
                let (target, seq) = (probe.target, probe.seq);
                let mut helpers: Vec<NodeId> = self
                    .reachable()
                    .into_iter()
                    .filter(|&p| p != target)
                    .collect();
                rng.shuffle(&mut helpers);
                helpers.truncate(self.timing.indirect);
                for helper in helpers {
                    let updates = self.piggyback(helper);
                    out.push((
                        helper,
                        Message::PingReq {
                            seq,
                            target,
                            updates,
                        },
                    ));
                }
            }
        }
        let expired: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.state == MemberState::Suspect && now >= m.since + self.timing.suspect_ticks
            })
            .map(|(&id, _)| id)
            .collect();
        for member in expired {
            let incarnation = self.members[&member].incarnation;
            self.learn(
                Update {
                    member,
                    state: MemberState::Dead,
                    incarnation,
                },
                now,
            );
        }
        let timeout = self.timing.probe_ticks;
        self.relays.retain(|_, r| now < r.sent_at + timeout);
    }

    fn end_probe(&mut self, now: u64) {
        let Some(probe) = self.probe.take() else {
            return;
        };
        if probe.acked {
            return;
        }
        if let Some(member) = self.members.get(&probe.target) {
            if member.state == MemberState::Alive {
                let update = Update {
                    member: probe.target,
                    state: MemberState::Suspect,
                    incarnation: member.incarnation,
                };
                self.learn(update, now);
            }
        }
    }

    fn start_probe(&mut self, now: u64, rng: &mut Rng, out: &mut Vec<(NodeId, Message)>) {
        self.cursor = self.cursor.wrapping_add(1);
        if self.cursor >= self.order.len() {
            rng.shuffle(&mut self.order);
            self.cursor = 0;
        }
        let target = self.order[self.cursor];
        self.next_seq += 1;
        let seq = self.next_seq;
        self.probe = Some(Probe {
            target,
            seq,
            sent_at: now,
            asked_others: false,
            acked: false,
        });
        let updates = self.piggyback(target);
        out.push((
            target,
            Message::Ping {
                seq,
                clock: 0,
                synced: false,
                epoch: 0,
                listed: false,
                updates,
            },
        ));
    }

    /// Handles a SWIM message; answers go to `out`.
    pub fn receive(
        &mut self,
        from: NodeId,
        message: Message,
        now: u64,
        out: &mut Vec<(NodeId, Message)>,
    ) {
        match message {
            Message::Ping { seq, updates, .. } => {
                self.learn_all(updates, now);
                let updates = self.piggyback(from);
                out.push((
                    from,
                    Message::Ack {
                        seq,
                        clock: 0,
                        synced: false,
                        epoch: 0,
                        listed: false,
                        updates,
                    },
                ));
            }
            Message::PingReq {
                seq,
                target,
                updates,
            } => {
                self.learn_all(updates, now);
                if target == self.id {
                    let updates = self.piggyback(from);
                    out.push((
                        from,
                        Message::Ack {
                            seq,
                            clock: 0,
                            synced: false,
                            epoch: 0,
                            listed: false,
                            updates,
                        },
                    ));
                    return;
                }
                self.next_seq += 1;
                let relay_seq = self.next_seq;
                self.relays.insert(
                    relay_seq,
                    Relay {
                        requester: from,
                        seq,
                        sent_at: now,
                    },
                );
                let updates = self.piggyback(target);
                out.push((
                    target,
                    Message::Ping {
                        seq: relay_seq,
                        clock: 0,
                        synced: false,
                        epoch: 0,
                        listed: false,
                        updates,
                    },
                ));
            }
            Message::Ack { seq, updates, .. } => {
                self.learn_all(updates, now);
                if let Some(relay) = self.relays.remove(&seq) {
                    let updates = self.piggyback(relay.requester);
                    out.push((
                        relay.requester,
                        Message::Ack {
                            seq: relay.seq,
                            clock: 0,
                            synced: false,
                            epoch: 0,
                            listed: false,
                            updates,
                        },
                    ));
                    return;
                }
                if let Some(probe) = self.probe.as_mut() {
                    if probe.seq == seq && !probe.acked {
                        probe.acked = true;
                        self.heard.push(probe.target);
                    }
                }
            }
            _ => {}
        }
    }

    fn learn_all(&mut self, updates: Vec<Update>, now: u64) {
        for update in updates {
            self.learn(update, now);
        }
    }

    /// Takes in news of a member, if it is newer than what is held; news taken is passed on.
    fn learn(&mut self, update: Update, now: u64) {
        if update.member == self.id {
            // Suspected or declared dead: refute, in a later incarnation than the news. News
            // of an older incarnation still gets the refutation again: the first one may
            // have been lost, and nobody else will repeat it.
            if update.state != MemberState::Alive {
                if update.incarnation >= self.incarnation {
                    self.incarnation = update.incarnation.saturating_add(1);
                }
                let alive = Update {
                    member: self.id,
                    state: MemberState::Alive,
                    incarnation: self.incarnation,
                };
                self.spread(alive);
            }
            return;
        }
        let Some(member) = self.members.get_mut(&update.member) else {
            return; // not a member of this cluster
        };
        let newer = match update.state {
            // Alive news overrides anything of an older incarnation.
            MemberState::Alive => update.incarnation > member.incarnation,
            // A suspicion overrides alive news of its incarnation or older, and an older
            // suspicion; it does not revive the dead.
            MemberState::Suspect => match member.state {
                MemberState::Alive => update.incarnation >= member.incarnation,
                MemberState::Suspect | MemberState::Dead => update.incarnation > member.incarnation,
            },
            MemberState::Dead => match member.state {
                MemberState::Dead => update.incarnation > member.incarnation,
                _ => update.incarnation >= member.incarnation,
            },
        };
        if !newer {
            return;
        }
        if update.state == MemberState::Suspect && member.state != MemberState::Suspect {
            member.since = now;
        }
        member.state = update.state;
        member.incarnation = update.incarnation;
        self.spread(update);
    }

    fn spread(&mut self, update: Update) {
        self.news.retain(|(u, _)| u.member != update.member);
        self.news.push((update, self.retransmits));
    }

    /// News for a message to `to`: what it is held to be, if not alive (so it can refute),
    /// then the items with the most sends left.
    fn piggyback(&mut self, to: NodeId) -> Vec<Update> {
        let mut updates = Vec::new();
        if let Some(member) = self.members.get(&to) {
            if member.state != MemberState::Alive {
                updates.push(Update {
                    member: to,
                    state: member.state,
                    incarnation: member.incarnation,
                });
            }
        }
        self.news.sort_by_key(|(_, left)| std::cmp::Reverse(*left));
        for (update, left) in self.news.iter_mut() {
            if updates.len() >= UPDATES_PER_MESSAGE {
                break;
            }
            if update.member != to || update.state == MemberState::Alive {
                updates.push(*update);
                *left -= 1;
            }
        }
        self.news.retain(|(_, left)| *left > 0);
        updates
    }
}
