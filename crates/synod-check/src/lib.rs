//! Checks what clients of a replicated service saw.
//!
//! A [`History`] records each client operation with its invocation time, its answer and the
//! answer's time. [`check_kv`] decides whether some total order of the operations, consistent
//! with real time, explains every answer (linearizability, Herlihy and Wing 1990). On a
//! violation it names the key and shows the operations around the one that cannot be placed.

pub mod generate;
mod history;
mod kv;
mod search;

pub use history::{History, OpId, Operation, Outcome, Time};
pub use kv::{
    check_kv, check_kv_within, describe, key_list, Key, KvInput, KvOutput, Register, Value,
    Verdict, Violation, SEARCH_BUDGET_PER_KEY,
};
pub use search::{check, Model, SearchResult};
