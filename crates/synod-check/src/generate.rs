//! Random histories that are linearizable by construction, for tests and benchmarks.
//!
//! Clients run operations one after another with random durations. Each operation gets a
//! random linearization point inside its interval; applying the operations to an atomic map
//! in the order of those points gives the outputs, so the result is linearizable. Some
//! writes end indeterminate, and half of those never take effect at all.

use std::collections::BTreeMap;

use synod_core::Rng;

use crate::history::{Operation, Outcome, Time};
use crate::kv::{Key, KvInput, KvOutput, Value};

/// The shape of a generated history.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Total operations.
    pub operations: usize,
    /// Concurrent clients, each running one operation at a time.
    pub clients: u64,
    /// Keys touched, uniformly.
    pub keys: u64,
    /// Longest operation, in time units.
    pub duration_max: Time,
    /// Share of writes and compare-and-swaps whose outcome the client never learns.
    pub indeterminate_share: f64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            operations: 1_000,
            clients: 5,
            keys: 5,
            duration_max: 100,
            indeterminate_share: 0.02,
        }
    }
}

struct Planned {
    op: Operation<KvInput, KvOutput>,
    point: Time,
    takes_effect: bool,
}

/// A linearizable history of `spec.operations` operations.
pub fn linearizable_history(rng: &mut Rng, spec: &Spec) -> Vec<Operation<KvInput, KvOutput>> {
    let mut planned = plan(rng, spec);
    planned.sort_by_key(|p| p.point);
    let mut store: BTreeMap<Key, Value> = BTreeMap::new();
    let mut next_value: Value = 1;
    for p in &mut planned {
        let key = p.op.input.key();
        // Inputs that name values are chosen now, against the state at the point.
        let current = store.get(&key).copied();
        match &mut p.op.input {
            KvInput::Write { value, .. } => {
                *value = next_value;
                next_value += 1;
            }
            KvInput::Cas { expected, new, .. } => {
                *new = next_value;
                next_value += 1;
                if rng.chance(0.6) {
                    *expected = current;
                }
            }
            KvInput::Read { .. } | KvInput::Delete { .. } => {}
        }
        let output = match &p.op.input {
            KvInput::Read { .. } => KvOutput::Read(current),
            KvInput::Write { value, .. } => {
                if p.takes_effect {
                    store.insert(key, *value);
                }
                KvOutput::Written
            }
            KvInput::Cas { expected, new, .. } => {
                let holds = current == *expected;
                if holds && p.takes_effect {
                    store.insert(key, *new);
                }
                KvOutput::Cas(holds)
            }
            KvInput::Delete { .. } => {
                if p.takes_effect {
                    store.remove(&key);
                }
                KvOutput::Deleted
            }
        };
        if matches!(p.op.outcome, Outcome::Pending) {
            p.op.outcome = Outcome::Ok(output);
        }
    }
    let mut ops: Vec<_> = planned.into_iter().map(|p| p.op).collect();
    ops.sort_by_key(|op| op.call);
    ops
}

/// Intervals, kinds and keys for every operation; values are filled in later.
fn plan(rng: &mut Rng, spec: &Spec) -> Vec<Planned> {
    let mut planned = Vec::with_capacity(spec.operations);
    let mut clock: Vec<Time> = (0..spec.clients)
        .map(|_| rng.range(0, spec.duration_max))
        .collect();
    for i in 0..spec.operations {
        let client = i as u64 % spec.clients;
        let call = clock[client as usize] + 1;
        let end = call + rng.range(0, spec.duration_max.max(1));
        clock[client as usize] = end + rng.range(0, 3);
        let key = rng.range(0, spec.keys);
        let input = match rng.range(0, 10) {
            0..=4 => KvInput::Read { key },
            5..=7 => KvInput::Write { key, value: 0 },
            8 => KvInput::Cas {
                key,
                expected: None,
                new: 0,
            },
            _ => KvInput::Delete { key },
        };
        let uncertain =
            !matches!(input, KvInput::Read { .. }) && rng.chance(spec.indeterminate_share);
        let takes_effect = !uncertain || rng.chance(0.5);
        planned.push(Planned {
            point: rng.range_inclusive(call, end),
            op: Operation {
                client,
                input,
                call,
                end: Some(end),
                outcome: if uncertain {
                    Outcome::Indeterminate
                } else {
                    Outcome::Pending
                },
            },
            takes_effect,
        });
    }
    planned
}
