//! The key-value model the simulator's clients are checked against, and the per-key check.
//!
//! Each operation touches one key, and a map of independent registers is linearizable exactly
//! when each register is (linearizability is local, Herlihy and Wing 1990), so the history is
//! split by key and every key is searched on its own: many small searches instead of one huge
//! one. Values are unique numbers chosen by the workload, so a read names the write it saw.

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{Operation, Outcome};
use crate::search::{check, Model, SearchResult};

/// A key of the checked store.
pub type Key = u64;
/// A value of the checked store; the workload never writes one twice.
pub type Value = u64;

/// An operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvInput {
    /// Read the key.
    Read {
        /// The key.
        key: Key,
    },
    /// Overwrite the key.
    Write {
        /// The key.
        key: Key,
        /// The new value.
        value: Value,
    },
    /// Write `new` if the key currently holds `expected` (`None`: if it is absent).
    Cas {
        /// The key.
        key: Key,
        /// The value the key must hold.
        expected: Option<Value>,
        /// The value to write.
        new: Value,
    },
    /// Remove the key.
    Delete {
        /// The key.
        key: Key,
    },
}

impl KvInput {
    /// The key the operation touches.
    pub fn key(&self) -> Key {
        match self {
            KvInput::Read { key }
            | KvInput::Write { key, .. }
            | KvInput::Cas { key, .. }
            | KvInput::Delete { key } => *key,
        }
    }
}

/// What an operation on one key returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOutput {
    /// The value read, if the key existed.
    Read(Option<Value>),
    /// The write happened.
    Written,
    /// Whether the compare held and the write happened.
    Cas(bool),
    /// The delete happened.
    Deleted,
}

/// One register: the state of a single key.
#[derive(Clone, Copy, Debug, Default)]
pub struct Register;

impl Model for Register {
    type State = Option<Value>;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> Option<Value> {
        None
    }

    fn step(
        &self,
        state: &Option<Value>,
        input: &KvInput,
        output: Option<&KvOutput>,
    ) -> Option<Option<Value>> {
        match input {
            KvInput::Read { .. } => match output {
                None => Some(*state),
                Some(KvOutput::Read(seen)) if seen == state => Some(*state),
                Some(_) => None,
            },
            KvInput::Write { value, .. } => Some(Some(*value)),
            KvInput::Delete { .. } => Some(None),
            KvInput::Cas { expected, new, .. } => {
                let holds = state == expected;
                match output {
                    Some(KvOutput::Cas(claimed)) if *claimed != holds => None,
                    Some(KvOutput::Cas(_)) | None => Some(if holds { Some(*new) } else { *state }),
                    Some(_) => None,
                }
            }
        }
    }
}

/// Configurations the search may explore per key before it gives up.
pub const SEARCH_BUDGET_PER_KEY: u64 = 20_000_000;

/// The first pass over the keys explores at most this fraction of the budget per key.
const FIRST_PASS_SHARE: u64 = 20;

/// The verdict on a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// This key's history is not.
    Violation(Violation),
    /// No key's history is shown wrong, but the search ran out of budget on these keys, so
    /// the history as a whole is undecided.
    Inconclusive {
        /// The undecided keys, in order.
        keys: Vec<Key>,
    },
}

/// A non-linearizable key, with the operations that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: Key,
    /// The operation the search could not place, as printed in `context`.
    pub stuck: String,
    /// The operations overlapping or just before it, one per line, the stuck one marked.
    pub context: Vec<String>,
    /// The tail of the longest order found that explains what came before.
    pub prefix_tail: Vec<String>,
    /// Length of that order.
    pub prefix_len: usize,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "history of key k{} is not linearizable", self.key)?;
        writeln!(
            f,
            "  no order explains this operation's result: {}",
            self.stuck
        )?;
        writeln!(f, "  operations around it (>> marks it):")?;
        for line in &self.context {
            writeln!(f, "    {line}")?;
        }
        writeln!(
            f,
            "  the longest explainable order has {} operations; it ends:",
            self.prefix_len
        )?;
        for line in &self.prefix_tail {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

/// Checks a whole history key by key. Failed operations are dropped (they had no effect);
/// indeterminate and pending ones may take effect at any time after their call, or never.
///
/// A key the search cannot decide does not end the check: a violation on any other key still
/// decides the whole history, and only a history with no violation anywhere is inconclusive.
pub fn check_kv(ops: &[Operation<KvInput, KvOutput>]) -> Verdict {
    check_kv_within(ops, SEARCH_BUDGET_PER_KEY)
}

/// [`check_kv`] with the search's budget per key given.
pub fn check_kv_within(ops: &[Operation<KvInput, KvOutput>], budget_per_key: u64) -> Verdict {
    let mut by_key: BTreeMap<Key, Vec<Operation<KvInput, KvOutput>>> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.outcome != Outcome::Fail) {
        by_key.entry(op.input.key()).or_default().push(op.clone());
    }
    // Every key first gets a small share of its budget: a key that breaks the model mostly
    // shows it at once, and a hard key checked first would otherwise spend its whole budget
    // before a plain violation on a later key was looked at. The keys still undecided then
    // get the whole budget, so the verdict is the one a single pass would give (when several
    // keys break, it may name another of them).
    let first_pass = (budget_per_key / FIRST_PASS_SHARE)
        .max(1)
        .min(budget_per_key);
    let mut undecided: Vec<_> = by_key.into_iter().collect();
    for budget in [first_pass, budget_per_key] {
        let mut still = Vec::new();
        for (key, key_ops) in undecided {
            match check(&Register, &key_ops, budget) {
                SearchResult::Linearizable => {}
                SearchResult::Inconclusive => still.push((key, key_ops)),
                SearchResult::Violation { stuck, prefix } => {
                    return Verdict::Violation(explain(key, &key_ops, stuck, &prefix))
                }
            }
        }
        undecided = still;
    }
    if undecided.is_empty() {
        Verdict::Linearizable
    } else {
        let keys = undecided.into_iter().map(|(key, _)| key).collect();
        Verdict::Inconclusive { keys }
    }
}

/// How many operations before the stuck one are shown for context.
const CONTEXT_BEFORE: usize = 6;
/// How many operations of the longest explainable order are shown.
const PREFIX_SHOWN: usize = 8;

fn explain(
    key: Key,
    ops: &[Operation<KvInput, KvOutput>],
    stuck: usize,
    prefix: &[usize],
) -> Violation {
    let target = &ops[stuck];
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].call, i));
    let position = order.iter().position(|&i| i == stuck).unwrap_or(0);
    let context = order
        .iter()
        .enumerate()
        .filter(|&(pos, &i)| {
            let overlaps = ops[i].call <= target.effective_return()
                && ops[i].effective_return() >= target.call;
            overlaps || (pos < position && position - pos <= CONTEXT_BEFORE)
        })
        .map(|(_, &i)| {
            format!(
                "{} {}",
                if i == stuck { ">>" } else { "  " },
                describe(&ops[i])
            )
        })
        .collect();
    Violation {
        key,
        stuck: describe(target),
        context,
        prefix_tail: prefix[prefix.len().saturating_sub(PREFIX_SHOWN)..]
            .iter()
            .map(|&i| describe(&ops[i]))
            .collect(),
        prefix_len: prefix.len(),
    }
}

/// Names keys for a person: `key k3` or `keys k0, k3`.
pub fn key_list(keys: &[Key]) -> String {
    let names: Vec<String> = keys.iter().map(|k| format!("k{k}")).collect();
    match names.len() {
        1 => format!("key {}", names[0]),
        _ => format!("keys {}", names.join(", ")),
    }
}

/// One operation on one line: client, what it did, what it got, when.
pub fn describe(op: &Operation<KvInput, KvOutput>) -> String {
    let what = match &op.input {
        KvInput::Read { key } => format!("read k{key}"),
        KvInput::Write { key, value } => format!("write k{key} := {value}"),
        KvInput::Cas { key, expected, new } => match expected {
            Some(e) => format!("cas k{key} {e} -> {new}"),
            None => format!("cas k{key} absent -> {new}"),
        },
        KvInput::Delete { key } => format!("delete k{key}"),
    };
    let got = match &op.outcome {
        Outcome::Ok(KvOutput::Read(Some(v))) => format!("= {v}"),
        Outcome::Ok(KvOutput::Read(None)) => "= absent".to_string(),
        Outcome::Ok(KvOutput::Cas(ok)) => if *ok { "ok" } else { "failed" }.to_string(),
        Outcome::Ok(_) => "ok".to_string(),
        Outcome::Fail => "refused".to_string(),
        Outcome::Indeterminate => "unknown".to_string(),
        Outcome::Pending => "pending".to_string(),
    };
    let end = op.end.map_or("..".to_string(), |e| e.to_string());
    format!(
        "c{:<3} {what:<28} {got:<10} [{} .. {end}]",
        op.client, op.call
    )
}
