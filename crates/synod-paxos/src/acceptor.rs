//! The acceptor (Paxos Made Simple, section 2.2), shared by both engines.
//!
//! P1a: an acceptor accepts a proposal numbered n unless it has promised a higher one. It
//! promises per slot (Basic Paxos) or for all slots at once (Multi-Paxos's phase 1 covers the
//! whole future). It keeps what it accepted in slots not yet in the node's durable decided
//! log; once a slot is there, the log answers for it.
//!
//! Its durable form is a checkpoint of the whole state ([`Acceptor::encode`]) followed by the
//! events since it ([`AcceptorEvent::encode`]), replayed in order at a restart
//! ([`Acceptor::replay`]): under load an acceptor holds hundreds of accepted values, and
//! restating all of them at every accept would cost a persist what the acceptor holds rather
//! than what changed.

use std::collections::{BTreeMap, VecDeque};

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::{NodeId, Payload};

use crate::ballot::Ballot;
use crate::message::{AcceptedValue, Slot};

/// What an acceptor holds for one slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotState {
    /// The highest ballot promised for this slot alone.
    pub promised: Ballot,
    /// The value accepted with the highest ballot.
    pub accepted: Option<(Ballot, Payload)>,
}

/// Something an acceptor did, kept for checkers (the simulator verifies promises are never
/// broken, across restarts too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptorEvent {
    /// Promised `ballot` for `slot` alone, or for every slot (`slot` is `None`).
    Promised {
        /// The slot, or `None` for all of them.
        slot: Option<Slot>,
        /// The ballot promised.
        ballot: Ballot,
    },
    /// Accepted `value` in `slot` under `ballot`.
    Accepted {
        /// The slot.
        slot: Slot,
        /// The ballot.
        ballot: Ballot,
        /// The value.
        value: Payload,
    },
}

impl AcceptorEvent {
    /// Encodes the event as a journal record's part.
    pub(crate) fn encode(&self, enc: &mut Encoder) {
        match self {
            AcceptorEvent::Promised { slot: None, ballot } => {
                enc.u8(0);
                encode_ballot(enc, *ballot);
            }
            AcceptorEvent::Promised {
                slot: Some(slot),
                ballot,
            } => {
                enc.u8(1).u64(*slot);
                encode_ballot(enc, *ballot);
            }
            AcceptorEvent::Accepted {
                slot,
                ballot,
                value,
            } => {
                enc.u8(2).u64(*slot);
                encode_ballot(enc, *ballot);
                value.encode(enc);
            }
        }
    }

    /// Decodes what [`AcceptorEvent::encode`] wrote.
    pub(crate) fn decode(dec: &mut Decoder<'_>) -> Result<AcceptorEvent, DecodeError> {
        Ok(match dec.tag("acceptor event", 3)? {
            0 => AcceptorEvent::Promised {
                slot: None,
                ballot: decode_ballot(dec)?,
            },
            1 => AcceptorEvent::Promised {
                slot: Some(dec.u64("slot")?),
                ballot: decode_ballot(dec)?,
            },
            _ => AcceptorEvent::Accepted {
                slot: dec.u64("slot")?,
                ballot: decode_ballot(dec)?,
                value: Payload::decode(dec)?,
            },
        })
    }
}

/// Events kept for checkers; older ones are dropped (a checker reads them after every step).
const EVENTS_KEPT: usize = 4096;

/// A Paxos acceptor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acceptor {
    /// The highest ballot promised for every slot at once.
    floor: Ballot,
    /// Per-slot state for slots above the durable decided log.
    slots: BTreeMap<Slot, SlotState>,
    events: VecDeque<(u64, AcceptorEvent)>,
    next_event: u64,
}

impl Acceptor {
    /// The ballot `slot` is promised to: nothing below it may be accepted there.
    pub fn promised(&self, slot: Slot) -> Ballot {
        self.slots
            .get(&slot)
            .map_or(Ballot::ZERO, |s| s.promised)
            .max(self.floor)
    }

    /// The highest ballot promised for every slot.
    pub fn floor(&self) -> Ballot {
        self.floor
    }

    /// What the acceptor holds for a slot.
    pub fn slot(&self, slot: Slot) -> Option<&SlotState> {
        self.slots.get(&slot)
    }

    /// Every slot it holds state for, in order.
    pub fn slots(&self) -> impl Iterator<Item = (Slot, &SlotState)> {
        self.slots.iter().map(|(&slot, state)| (slot, state))
    }

    fn record(&mut self, event: AcceptorEvent) {
        self.next_event += 1;
        self.events.push_back((self.next_event, event));
        if self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    /// The number of the newest event.
    pub fn last_event(&self) -> u64 {
        self.next_event
    }

    /// Events numbered above `after`, oldest first, with their numbers.
    pub fn events_after(&self, after: u64) -> impl Iterator<Item = &(u64, AcceptorEvent)> {
        // Events are numbered consecutively: skip straight to the first one wanted.
        let first = self.events.front().map_or(0, |(n, _)| *n);
        let skip = (after + 1)
            .saturating_sub(first)
            .min(self.events.len() as u64);
        self.events.range(skip as usize..)
    }

    /// Phase 1b for one slot: promise `ballot` unless a higher one was promised. Returns the
    /// value accepted there, if any, or the higher promise.
    pub fn prepare(
        &mut self,
        slot: Slot,
        ballot: Ballot,
    ) -> Result<Option<(Ballot, Payload)>, Ballot> {
        let promised = self.promised(slot);
        if ballot < promised {
            return Err(promised);
        }
        let state = self.slots.entry(slot).or_default();
        state.promised = ballot;
        let accepted = state.accepted.clone();
        self.record(AcceptorEvent::Promised {
            slot: Some(slot),
            ballot,
        });
        Ok(accepted)
    }

    /// Phase 1b for every slot from `from` on (Multi-Paxos). Returns every value accepted
    /// there, or the higher promise that refuses it.
    pub fn prepare_onward(
        &mut self,
        from: Slot,
        ballot: Ballot,
    ) -> Result<Vec<AcceptedValue>, Ballot> {
        let highest = self
            .slots
            .range(from..)
            .map(|(_, s)| s.promised)
            .max()
            .unwrap_or(Ballot::ZERO);
        let promised = self.floor.max(highest);
        if ballot < promised {
            return Err(promised);
        }
        self.floor = ballot;
        self.record(AcceptorEvent::Promised { slot: None, ballot });
        Ok(self
            .slots
            .range(from..)
            .filter_map(|(&slot, s)| s.accepted.clone().map(|(b, v)| (slot, b, v)))
            .collect())
    }

    /// Phase 2b: accept `value` in `slot` under `ballot` unless a higher ballot was promised.
    /// Accepting again what is already accepted (a leader's retry) changes nothing and
    /// records no event.
    pub fn accept(&mut self, slot: Slot, ballot: Ballot, value: Payload) -> Result<(), Ballot> {
        let promised = self.promised(slot);
        if ballot < promised {
            return Err(promised);
        }
        let held = self.slots.get(&slot);
        if held.is_some_and(|s| {
            s.promised == ballot
                && s.accepted
                    .as_ref()
                    .is_some_and(|(b, v)| *b == ballot && *v == value)
        }) {
            return Ok(());
        }
        self.slots.insert(
            slot,
            SlotState {
                promised: ballot,
                accepted: Some((ballot, value.clone())),
            },
        );
        self.record(AcceptorEvent::Accepted {
            slot,
            ballot,
            value,
        });
        Ok(())
    }

    /// Redoes an event recorded before a restart: the state changes exactly as it did when the
    /// event happened (the checks were made then). Not recorded again: checkers saw it once.
    pub(crate) fn replay(&mut self, event: AcceptorEvent) {
        match event {
            AcceptorEvent::Promised { slot: None, ballot } => self.floor = ballot,
            AcceptorEvent::Promised {
                slot: Some(slot),
                ballot,
            } => self.slots.entry(slot).or_default().promised = ballot,
            AcceptorEvent::Accepted {
                slot,
                ballot,
                value,
            } => {
                let accepted = Some((ballot, value));
                let promised = ballot;
                self.slots.insert(slot, SlotState { promised, accepted });
            }
        }
    }

    /// Slots through `slot` are in the durable decided log: the acceptor may forget them.
    pub fn forget_through(&mut self, slot: Slot) {
        self.slots = self.slots.split_off(&(slot + 1));
    }

    /// Forgets every promise (an injected bug: a restarted acceptor that lost its promises).
    #[cfg(any(test, feature = "inject-bugs"))]
    pub(crate) fn forget_promises(&mut self) {
        self.floor = Ballot::ZERO;
        for state in self.slots.values_mut() {
            state.promised = state.accepted.as_ref().map_or(Ballot::ZERO, |(b, _)| *b);
        }
    }

    /// Encodes the acceptor's durable state.
    pub(crate) fn encode(&self, enc: &mut Encoder) {
        encode_ballot(enc, self.floor);
        enc.u64(self.slots.len() as u64);
        for (&slot, state) in &self.slots {
            enc.u64(slot);
            encode_ballot(enc, state.promised);
            match &state.accepted {
                None => {
                    enc.u8(0);
                }
                Some((ballot, value)) => {
                    enc.u8(1);
                    encode_ballot(enc, *ballot);
                    value.encode(enc);
                }
            }
        }
    }

    /// Decodes what [`Acceptor::encode`] wrote.
    pub(crate) fn decode(dec: &mut Decoder<'_>) -> Result<Acceptor, DecodeError> {
        let mut acceptor = Acceptor {
            floor: decode_ballot(dec)?,
            ..Acceptor::default()
        };
        for _ in 0..dec.count("slots")? {
            let slot = dec.u64("slot")?;
            let promised = decode_ballot(dec)?;
            let accepted = match dec.tag("accepted", 2)? {
                0 => None,
                _ => Some((decode_ballot(dec)?, Payload::decode(dec)?)),
            };
            acceptor
                .slots
                .insert(slot, SlotState { promised, accepted });
        }
        Ok(acceptor)
    }
}

pub(crate) fn encode_ballot(enc: &mut Encoder, ballot: Ballot) {
    enc.u64(ballot.round).u64(ballot.node.0);
}

pub(crate) fn decode_ballot(dec: &mut Decoder<'_>) -> Result<Ballot, DecodeError> {
    Ok(Ballot {
        round: dec.u64("round")?,
        node: NodeId(dec.u64("node")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(round: u64, node: u64) -> Ballot {
        Ballot {
            round,
            node: NodeId(node),
        }
    }

    #[test]
    fn p1a_an_acceptor_accepts_unless_it_promised_a_higher_ballot() {
        let mut a = Acceptor::default();
        assert_eq!(a.prepare(1, b(2, 1)), Ok(None));
        assert_eq!(
            a.accept(1, b(1, 9), Payload::Noop),
            Err(b(2, 1)),
            "below the promise"
        );
        assert_eq!(a.accept(1, b(2, 1), Payload::Marker(7)), Ok(()));
        assert_eq!(
            a.prepare(1, b(1, 5)),
            Err(b(2, 1)),
            "a lower prepare is refused with the promise"
        );
        assert_eq!(
            a.prepare(1, b(3, 2)),
            Ok(Some((b(2, 1), Payload::Marker(7)))),
            "a higher one learns what was accepted"
        );
        assert_eq!(a.prepare(2, b(1, 1)), Ok(None), "promises are per slot");
    }

    #[test]
    fn an_onward_promise_covers_every_slot_and_reports_what_was_accepted() {
        let mut a = Acceptor::default();
        a.accept(4, b(1, 1), Payload::Marker(4)).unwrap();
        a.accept(9, b(1, 1), Payload::Marker(9)).unwrap();
        let accepted = a.prepare_onward(5, b(2, 2)).unwrap();
        assert_eq!(accepted, vec![(9, b(1, 1), Payload::Marker(9))]);
        assert_eq!(
            a.accept(100, b(1, 1), Payload::Noop),
            Err(b(2, 2)),
            "even a slot never mentioned"
        );
        assert!(a.prepare_onward(1, b(1, 3)).is_err());
    }

    #[test]
    fn durable_state_round_trips_and_forgetting_keeps_later_slots() {
        let mut a = Acceptor::default();
        a.prepare_onward(1, b(3, 1)).unwrap();
        a.accept(5, b(3, 1), Payload::Marker(1)).unwrap();
        a.accept(6, b(3, 1), Payload::Noop).unwrap();
        let mut enc = Encoder::new();
        a.encode(&mut enc);
        let bytes = enc.finish();
        let back = Acceptor::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!((back.floor, back.slots.clone()), (a.floor, a.slots.clone()));
        a.forget_through(5);
        assert!(a.slot(5).is_none() && a.slot(6).is_some());
    }
}
