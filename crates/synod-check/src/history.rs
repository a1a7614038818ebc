//! What clients saw: operations with the times they were invoked and answered.

use std::fmt::Debug;

/// A point in a history. Any monotone unit works (the simulator uses virtual microseconds);
/// only the order matters.
pub type Time = u64;

/// Identifies an operation within a [`History`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub usize);

/// How an operation ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// Still waiting for an answer.
    Pending,
    /// Answered with this output.
    Ok(O),
    /// Definitely did not take effect (refused before it could reach the log).
    Fail,
    /// The client stopped waiting (timeout, lost connection): the operation may take effect
    /// at any later time, or never.
    Indeterminate,
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client (process) that ran it; a client runs one operation at a time.
    pub client: u64,
    /// What was asked.
    pub input: I,
    /// When it was invoked.
    pub call: Time,
    /// When the client learned the outcome (or gave up).
    pub end: Option<Time>,
    /// The outcome.
    pub outcome: Outcome<O>,
}

impl<I, O> Operation<I, O> {
    /// The latest time at which the operation can take effect: its answer's time if it was
    /// answered, otherwise never bounded.
    pub fn effective_return(&self) -> Time {
        match (&self.outcome, self.end) {
            (Outcome::Ok(_), Some(end)) => end,
            _ => Time::MAX,
        }
    }

    /// The observed output, if the operation was answered.
    pub fn output(&self) -> Option<&O> {
        match &self.outcome {
            Outcome::Ok(o) => Some(o),
            _ => None,
        }
    }
}

/// A history recorded as clients invoke operations and learn their outcomes.
#[derive(Clone, Debug, Default)]
pub struct History<I, O> {
    ops: Vec<Operation<I, O>>,
}

impl<I: Clone + Debug, O: Clone + Debug> History<I, O> {
    /// An empty history.
    pub fn new() -> Self {
        History { ops: Vec::new() }
    }

    /// Records that `client` invoked `input` at `at`.
    pub fn invoke(&mut self, client: u64, input: I, at: Time) -> OpId {
        self.ops.push(Operation {
            client,
            input,
            call: at,
            end: None,
            outcome: Outcome::Pending,
        });
        OpId(self.ops.len() - 1)
    }

    /// Records an answer.
    pub fn ok(&mut self, id: OpId, output: O, at: Time) {
        self.finish(id, Outcome::Ok(output), at);
    }

    /// Records a definite failure: the operation had no effect.
    pub fn fail(&mut self, id: OpId, at: Time) {
        self.finish(id, Outcome::Fail, at);
    }

    /// Records that the client gave up without knowing whether the operation took effect.
    pub fn indeterminate(&mut self, id: OpId, at: Time) {
        self.finish(id, Outcome::Indeterminate, at);
    }

    fn finish(&mut self, id: OpId, outcome: Outcome<O>, at: Time) {
        let op = &mut self.ops[id.0];
        assert!(
            matches!(op.outcome, Outcome::Pending),
            "operation {id:?} finished twice"
        );
        assert!(at >= op.call, "operation {id:?} ends before it starts");
        op.outcome = outcome;
        op.end = Some(at);
    }

    /// Every operation recorded, in invocation order.
    pub fn operations(&self) -> &[Operation<I, O>] {
        &self.ops
    }

    /// Number of operations recorded.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Counts of (ok, failed, indeterminate or pending) operations.
    pub fn tally(&self) -> (usize, usize, usize) {
        self.ops
            .iter()
            .fold((0, 0, 0), |(ok, fail, open), op| match op.outcome {
                Outcome::Ok(_) => (ok + 1, fail, open),
                Outcome::Fail => (ok, fail + 1, open),
                Outcome::Indeterminate | Outcome::Pending => (ok, fail, open + 1),
            })
    }
}
