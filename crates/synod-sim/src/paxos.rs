//! Running Basic and Multi-Paxos in the simulator, and the safety properties of "Paxos Made
//! Simple" checked while they run: a promise is never broken (not even across a restart), a
//! ballot proposes one value per slot, and at most one value is chosen per slot. (That no two
//! learners learn different values is the world's state machine safety check.)

use std::collections::{BTreeMap, BTreeSet};

use synod_core::quorum::majority;
use synod_core::{NodeId, Payload};
use synod_paxos::{Acceptor, AcceptorEvent, Ballot, BasicPaxos, Message, MultiPaxos, Scope, Slot};

use crate::protocol::{Invariants, Protocol};

/// What the checker needs from a Paxos engine.
pub trait PaxosNode {
    /// The node's acceptor.
    fn acceptor(&self) -> &Acceptor;
    /// The voters deciding `slot`, if the node knows them (membership changes decide that
    /// through the log).
    fn voters_at(&self, slot: Slot) -> Option<Vec<NodeId>>;
    /// Acceptor events through this number are durable.
    fn durable_events(&self) -> u64;
    /// Slots through here are in the node's decided log (answered from it, not the acceptor).
    fn decided_through(&self) -> u64;
}

/// The simulator's glue for one Paxos engine; both expose the same constructors and views.
macro_rules! paxos_protocol {
    ($engine:ident, $era_label:expr) => {
        impl PaxosNode for $engine {
            fn acceptor(&self) -> &Acceptor {
                $engine::acceptor(self)
            }
            fn voters_at(&self, slot: Slot) -> Option<Vec<NodeId>> {
                $engine::voters_at(self, slot)
            }
            fn durable_events(&self) -> u64 {
                $engine::durable_events(self)
            }
            fn decided_through(&self) -> u64 {
                $engine::decided_through(self)
            }
        }

        impl Protocol for $engine {
            type Invariants = PaxosInvariants;

            /// The decided log's newest slots, then the slots after it that the acceptor
            /// holds something for (accepted values not yet known decided).
            fn log_tail(&self, max: usize) -> (synod_core::LogIndex, Vec<Option<u64>>) {
                slots_tail(
                    $engine::decided_tail(self, max),
                    $engine::decided_through(self),
                    $engine::acceptor(self),
                    max,
                )
            }

            fn era_label(era: u64) -> String {
                $era_label(era)
            }

            fn replay_flags(options: &Self::Options) -> String {
                if options.no_backoff {
                    " --backoff off".to_string()
                } else {
                    String::new()
                }
            }
        }
    };
}

/// Decided slots, then undecided ones through the highest the acceptor holds: the newest
/// `max` of them.
fn slots_tail(
    decided: &[synod_core::Entry],
    decided_through: synod_core::LogIndex,
    acceptor: &Acceptor,
    max: usize,
) -> (synod_core::LogIndex, Vec<Option<u64>>) {
    let pending: BTreeMap<Slot, u64> = acceptor
        .slots()
        .filter(|(slot, _)| *slot > decided_through)
        .filter_map(|(slot, state)| state.accepted.as_ref().map(|(b, _)| (slot, b.era())))
        .collect();
    let last = pending
        .keys()
        .next_back()
        .copied()
        .unwrap_or(decided_through);
    // The decided entries are consecutive and end at `decided_through`.
    let decided_from = decided_through + 1 - decided.len() as u64;
    let first = decided_from.max((last + 1).saturating_sub(max as u64));
    let eras = (first..=last)
        .map(|slot| match slot.checked_sub(decided_from) {
            Some(at) if slot <= decided_through => decided.get(at as usize).map(|e| e.era),
            _ => pending.get(&slot).copied(),
        })
        .collect();
    (first, eras)
}

// Basic Paxos's status carries the highest round it has seen; Multi-Paxos's, its ballot.
paxos_protocol!(BasicPaxos, |round: u64| round.to_string());
paxos_protocol!(MultiPaxos, |era| Ballot::from_era(era).to_string());

/// The checks, fed by the acceptors' event journals.
#[derive(Default)]
pub struct PaxosInvariants {
    /// Per node: (incarnation, last event read).
    read_through: BTreeMap<NodeId, (u64, u64)>,
    /// The highest ballot each node ever promised for every slot, and per slot: across
    /// restarts, because forgetting a promise is exactly the bug to catch.
    promised_all: BTreeMap<NodeId, Ballot>,
    promised_slot: BTreeMap<(NodeId, Slot), Ballot>,
    /// Per slot and ballot: the value proposed and who accepted it.
    votes: BTreeMap<(Slot, Ballot), (Payload, Vec<NodeId>)>,
    /// The value chosen in each slot.
    chosen: BTreeMap<Slot, (Ballot, Payload)>,
    /// Votes whose slot's voters no node consulted so far knew: whether they chose a value
    /// is decided once one does.
    undetermined: BTreeSet<(Slot, Ballot)>,
}

impl<P: PaxosNode + synod_core::Engine<Message = Message>> Invariants<P> for PaxosInvariants {
    /// A new life: what the acceptor restored from its disk is durable, even what no event of
    /// the last life showed as such (an unsynced record that survived the crash whole: the log
    /// syncs what it read when it opens, so it stays). It answers from it, so it counts. Only
    /// at boot: after the first step the acceptor also holds what that step changed and has not
    /// persisted yet.
    fn after_boot(&mut self, id: NodeId, incarnation: u64, engine: &P) -> Result<(), String> {
        self.observe_restored(id, engine.acceptor())?;
        self.read_through.insert(id, (incarnation, 0));
        self.determine_chosen(engine)
    }

    fn after_step(&mut self, id: NodeId, incarnation: u64, engine: &P) -> Result<(), String> {
        let last = match self.read_through.get(&id) {
            Some(&(inc, seen)) if inc == incarnation => seen,
            _ => {
                return Err(format!(
                    "checker: {id} stepped in incarnation {incarnation} before it booted"
                ))
            }
        };
        // Only what is durable counts: a promise or accept lost in a crash before it was
        // persisted was never answered, and forgetting it is allowed.
        let durable = engine.durable_events();
        let mut newest = last;
        for (seq, event) in engine
            .acceptor()
            .events_after(last)
            .take_while(|(seq, _)| *seq <= durable)
        {
            newest = *seq;
            self.observe(id, event)?;
        }
        self.read_through.insert(id, (incarnation, newest));
        self.determine_chosen(engine)
    }

    fn periodic(&mut self, _live: &[(NodeId, u64, &P)]) -> Result<(), String> {
        Ok(())
    }

    /// What a node promised or accepted is persisted before it answers: a Promise or Accepted
    /// leaving a node must report state that its durable acceptor events already hold (slots
    /// it answers from its decided log aside).
    fn before_send(&mut self, from: NodeId, message: &Message, engine: &P) -> Result<(), String> {
        let decided = engine.decided_through();
        match message {
            Message::Promise(p) if p.compacted_through == 0 => {
                let floor = self.promised_all.get(&from).copied().unwrap_or_default();
                let durable = match p.scope {
                    Scope::Onward => floor,
                    Scope::One if p.slot <= decided => return Ok(()),
                    Scope::One => floor.max(
                        self.promised_slot
                            .get(&(from, p.slot))
                            .copied()
                            .unwrap_or_default(),
                    ),
                };
                if durable < p.ballot {
                    return Err(format!(
                        "{from} sent a promise of ballot {} for slot {} before persisting it",
                        p.ballot, p.slot
                    ));
                }
            }
            Message::Accepted(a) => {
                for slot in (a.first..a.first + a.count).filter(|&s| s > decided) {
                    let recorded = self
                        .votes
                        .get(&(slot, a.ballot))
                        .is_some_and(|(_, who)| who.contains(&from));
                    if !recorded {
                        return Err(format!(
                            "{from} acknowledged slot {slot} under ballot {} before persisting it",
                            a.ballot
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl PaxosInvariants {
    /// Observes a restarted acceptor's state as the events that built it.
    fn observe_restored(&mut self, id: NodeId, acceptor: &Acceptor) -> Result<(), String> {
        let floor = AcceptorEvent::Promised {
            slot: None,
            ballot: acceptor.floor(),
        };
        self.observe_as(id, &floor, false)?;
        for (slot, state) in acceptor.slots() {
            if let Some((ballot, value)) = &state.accepted {
                let accepted = AcceptorEvent::Accepted {
                    slot,
                    ballot: *ballot,
                    value: value.clone(),
                };
                self.observe_as(id, &accepted, false)?;
            }
            let promised = AcceptorEvent::Promised {
                slot: Some(slot),
                ballot: state.promised,
            };
            self.observe_as(id, &promised, false)?;
        }
        Ok(())
    }

    fn observe(&mut self, id: NodeId, event: &AcceptorEvent) -> Result<(), String> {
        self.observe_as(id, event, true)
    }

    /// Observes one durable event; `fresh` events (not restored from disk) must also keep
    /// every promise known so far (a restored accept may predate a later promise).
    fn observe_as(&mut self, id: NodeId, event: &AcceptorEvent, fresh: bool) -> Result<(), String> {
        match event {
            AcceptorEvent::Promised { slot: None, ballot } => {
                let held = self.promised_all.entry(id).or_default();
                *held = (*held).max(*ballot);
            }
            AcceptorEvent::Promised {
                slot: Some(slot),
                ballot,
            } => {
                let held = self.promised_slot.entry((id, *slot)).or_default();
                *held = (*held).max(*ballot);
            }
            AcceptorEvent::Accepted {
                slot,
                ballot,
                value,
            } => {
                let promised = self.promised_all.get(&id).copied().unwrap_or_default();
                let promised = promised.max(
                    self.promised_slot
                        .get(&(id, *slot))
                        .copied()
                        .unwrap_or_default(),
                );
                if fresh && *ballot < promised {
                    return Err(format!("broken promise: {id} accepted ballot {ballot} in slot {slot} after promising {promised}"));
                }
                let (proposed, acceptors) = self
                    .votes
                    .entry((*slot, *ballot))
                    .or_insert_with(|| (value.clone(), Vec::new()));
                if !synod_paxos::same_decision(proposed, value) {
                    return Err(format!(
                        "ballot {ballot} proposed two values for slot {slot}"
                    ));
                }
                if !acceptors.contains(&id) {
                    acceptors.push(id);
                    self.undetermined.insert((*slot, *ballot));
                }
            }
        }
        Ok(())
    }

    /// Whether the votes not yet judged chose a value, for the slots whose voters `engine`
    /// knows: a majority of the slot's voters (not learners, not members of another
    /// membership) accepted it under one ballot.
    fn determine_chosen<P: PaxosNode>(&mut self, engine: &P) -> Result<(), String> {
        let mut judged = Vec::new();
        for &(slot, ballot) in &self.undetermined {
            let Some(voters) = engine.voters_at(slot) else {
                continue;
            };
            judged.push((slot, ballot));
            let (value, acceptors) = &self.votes[&(slot, ballot)];
            let votes = acceptors.iter().filter(|a| voters.contains(a)).count();
            if votes < majority(voters.len()) {
                continue;
            }
            match self.chosen.get(&slot) {
                Some((_, chosen)) if !synod_paxos::same_decision(chosen, value) => {
                    return Err(format!("two values chosen in slot {slot}: {chosen:?} and {value:?} (ballot {ballot})"));
                }
                Some(_) => {}
                None => {
                    self.chosen.insert(slot, (ballot, value.clone()));
                }
            }
        }
        for key in judged {
            self.undetermined.remove(&key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail loudly on purpose

    use synod_core::{Action, Engine, Input, Persist};
    use synod_paxos::{Accept, Config, Prepare};

    use super::*;

    const N3: NodeId = NodeId(3);

    fn config() -> Config {
        Config::new(N3, (1..=5).map(NodeId).collect())
    }

    fn ballot(round: u64, node: u64) -> Ballot {
        Ballot {
            round,
            node: NodeId(node),
        }
    }

    /// n3 receives a message from n1; returns the persists it asks for.
    fn receive(engine: &mut BasicPaxos, message: Message) -> Vec<Persist> {
        let mut out = Vec::new();
        engine.step(
            Input::Receive {
                from: NodeId(1),
                message,
            },
            &mut out,
        );
        out.into_iter()
            .filter_map(|action| match action {
                Action::Persist(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// An Accept of slot 401 under b536.1.
    fn accept_536() -> Message {
        Message::Accept(Accept {
            ballot: ballot(536, 1),
            first: 401,
            values: vec![Payload::Noop],
            commit: 0,
        })
    }

    /// n3 accepts [`accept_536`], and its persists complete.
    fn accepts_536(engine: &mut BasicPaxos) {
        for persist in receive(engine, accept_536()) {
            engine.step(Input::Persisted(persist.id), &mut Vec::new());
        }
        assert_eq!(engine.acceptor().promised(401), ballot(536, 1), "accepted");
    }

    fn prepare_590() -> Message {
        Message::Prepare(Prepare {
            ballot: ballot(590, 1),
            slot: 401,
            scope: Scope::One,
            handover: false,
        })
    }

    /// Seed 505 of `synod sim --protocol basic-paxos --nodes 5 --clients 10 --late-revokes`:
    /// a restarted node's first step was a Prepare, and the checker, reading the restored
    /// acceptor only after that step, took the promise it had not yet persisted for one its
    /// disk held. The node lost power before the write was synced; its next life, rightly,
    /// accepted a lower ballot there, and the checker called it a broken promise.
    #[test]
    fn a_promise_lost_before_it_was_persisted_binds_no_later_life() {
        let mut check = PaxosInvariants::default();
        let mut life = BasicPaxos::new(config()).unwrap();
        check.after_boot(N3, 1, &life).unwrap();
        receive(&mut life, prepare_590());
        assert_eq!(life.acceptor().promised(401), ballot(590, 1));
        check.after_step(N3, 1, &life).unwrap();

        let mut life = BasicPaxos::new(config()).unwrap();
        check.after_boot(N3, 2, &life).unwrap();
        accepts_536(&mut life);
        check.after_step(N3, 2, &life).unwrap();
    }

    /// A record not yet synced that survived the crash whole is on the disk the next life
    /// answers from: its promise binds that life.
    #[test]
    fn a_promise_restored_from_disk_binds_the_life_that_restored_it() {
        let mut check = PaxosInvariants::default();
        let mut life = BasicPaxos::new(config()).unwrap();
        check.after_boot(N3, 1, &life).unwrap();
        let journal: Vec<Vec<u8>> = receive(&mut life, prepare_590())
            .into_iter()
            .flat_map(|p| p.journal)
            .collect();
        assert!(!journal.is_empty(), "the promise is written");
        check.after_step(N3, 1, &life).unwrap();

        let mut life = BasicPaxos::restart(config(), None, &journal, None, Vec::new()).unwrap();
        check.after_boot(N3, 2, &life).unwrap();
        // The engine refuses the lower ballot; the checker would have caught it accepted.
        assert!(
            receive(&mut life, accept_536()).is_empty(),
            "nothing to persist"
        );
        assert_eq!(life.acceptor().promised(401), ballot(590, 1));
        // A stand-in for a restart that lost the promise its disk held.
        let mut forgetful = BasicPaxos::new(config()).unwrap();
        accepts_536(&mut forgetful);
        let err = check.after_step(N3, 2, &forgetful).unwrap_err();
        assert!(err.contains("broken promise"), "{err}");
    }

    #[test]
    fn a_life_that_steps_before_the_checker_saw_it_boot_is_refused() {
        let mut check = PaxosInvariants::default();
        let life = BasicPaxos::new(config()).unwrap();
        let err = check.after_step(N3, 0, &life).unwrap_err();
        assert!(err.contains("before it booted"), "{err}");
    }
}
