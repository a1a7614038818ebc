//! The linearizability search for one sequential model.
//!
//! This is Wing and Gong's algorithm with Lowe's memoization, the form used by Knossos and
//! Porcupine. Calls and returns sit in one list ordered by time. Walking it, the search tries
//! to linearize each pending call (apply it to the model state now); it must have linearized
//! every operation whose return it reaches, else it backtracks to the most recent choice. A
//! cache of (set of linearized operations, model state) pairs prunes configurations already
//! explored, which turns the exponential search into a practical one on real histories.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

use crate::history::{Operation, Time};

/// A sequential specification.
pub trait Model {
    /// The object's state.
    type State: Clone + Eq + Hash + Debug;
    /// An operation's arguments.
    type Input: Debug;
    /// An operation's result.
    type Output: Debug + PartialEq;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` runs on `state`, if it could have returned `output` there.
    /// `output` is `None` for an operation whose result was never seen: any result goes.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// What the search concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchResult {
    /// Some order of the operations explains every output.
    Linearizable,
    /// None does. `stuck` is the operation whose return the search could never get past,
    /// and `prefix` the longest order it found that explains the operations in it.
    Violation {
        /// Index (into the checked slice) of the operation that could not be linearized.
        stuck: usize,
        /// The longest linearizable order found, as indexes into the checked slice.
        prefix: Vec<usize>,
    },
    /// The search explored `budget` configurations without an answer.
    Inconclusive,
}

const NIL: usize = usize::MAX;

/// One call or return in the doubly linked event list.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call, the index of its return event.
    partner: usize,
    prev: usize,
    next: usize,
}

/// A fixed-size set of operation indexes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BitSet(Box<[u64]>);

impl BitSet {
    fn new(len: usize) -> Self {
        BitSet(vec![0; len.div_ceil(64)].into_boxed_slice())
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Builds the event list: index `2 * ops.len()` is the head sentinel.
fn build_events<I, O>(ops: &[Operation<I, O>]) -> Vec<Event> {
    let mut order: Vec<(Time, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.call, false, i));
        order.push((op.effective_return(), true, i));
    }
    // At equal times a call sorts before a return: such operations count as concurrent,
    // which never reports a violation that a finer clock would not.
    order.sort_unstable();
    let head = order.len();
    let mut events: Vec<Event> = order
        .iter()
        .enumerate()
        .map(|(pos, &(_, is_return, op))| Event {
            op,
            is_call: !is_return,
            partner: NIL,
            prev: if pos == 0 { head } else { pos - 1 },
            next: if pos + 1 == order.len() { NIL } else { pos + 1 },
        })
        .collect();
    let mut call_of = vec![NIL; ops.len()];
    for pos in 0..events.len() {
        let op = events[pos].op;
        if events[pos].is_call {
            call_of[op] = pos;
        } else {
            events[call_of[op]].partner = pos;
        }
    }
    events.push(Event {
        op: NIL,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: if order.is_empty() { NIL } else { 0 },
    });
    events
}

/// Removes a call and its return from the list.
fn lift(events: &mut [Event], call: usize) {
    for e in [call, events[call].partner] {
        let (prev, next) = (events[e].prev, events[e].next);
        events[prev].next = next;
        if next != NIL {
            events[next].prev = prev;
        }
    }
}

/// Puts back what [`lift`] removed, in reverse order.
fn unlift(events: &mut [Event], call: usize) {
    for e in [events[call].partner, call] {
        let (prev, next) = (events[e].prev, events[e].next);
        events[prev].next = e;
        if next != NIL {
            events[next].prev = e;
        }
    }
}

/// Decides whether `ops` are linearizable under `model`, exploring at most `budget`
/// configurations. Deterministic: a search with a larger budget takes the same steps first,
/// so a smaller budget can leave undecided what a larger one decides, never decide it
/// otherwise (`check_kv` relies on it).
pub fn check<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> SearchResult {
    let mut events = build_events(ops);
    let head = events.len() - 1;
    let mut state = model.init();
    let mut linearized = BitSet::new(ops.len());
    let mut cache: HashSet<(BitSet, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut deepest: (usize, usize, Vec<usize>) = (0, NIL, Vec::new());
    let mut explored = 0u64;
    let mut cursor = events[head].next;

    while events[head].next != NIL {
        explored += 1;
        if explored > budget {
            return SearchResult::Inconclusive;
        }
        let event = events[cursor];
        if event.is_call {
            let op = &ops[event.op];
            if let Some(next_state) = model.step(&state, &op.input, op.output()) {
                linearized.set(event.op);
                if cache.insert((linearized.clone(), next_state.clone())) {
                    stack.push((cursor, std::mem::replace(&mut state, next_state)));
                    lift(&mut events, cursor);
                    cursor = events[head].next;
                    continue;
                }
                linearized.clear(event.op);
            }
            cursor = event.next;
        } else {
            // A return whose call is still in the list: that operation was not linearized
            // in time. Undo the most recent choice and try the next candidate after it.
            if deepest.1 == NIL || stack.len() > deepest.0 {
                let prefix = stack.iter().map(|&(call, _)| events[call].op).collect();
                deepest = (stack.len(), event.op, prefix);
            }
            let Some((call, previous)) = stack.pop() else {
                return SearchResult::Violation {
                    stuck: deepest.1,
                    prefix: deepest.2,
                };
            };
            state = previous;
            linearized.clear(events[call].op);
            unlift(&mut events, call);
            cursor = events[call].next;
        }
    }
    SearchResult::Linearizable
}
