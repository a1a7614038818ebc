//! A readable log of everything that happens in a run: messages, persists, commits, client
//! operations, faults and role changes, stamped with virtual time in ticks.

use std::fmt::Write as _;

use crate::{SimTime, TICK_US};

/// Where trace lines go.
#[derive(Debug, Default)]
pub enum Trace {
    /// Nowhere: tracing is off and costs nothing.
    #[default]
    Off,
    /// Into memory, for printing or comparing afterwards.
    Memory(String),
}

impl Trace {
    /// A trace kept in memory.
    pub fn memory() -> Trace {
        Trace::Memory(String::new())
    }

    /// Whether lines are kept.
    pub fn is_on(&self) -> bool {
        matches!(self, Trace::Memory(_))
    }

    /// Appends one line stamped with `now`.
    pub fn line(&mut self, now: SimTime, text: &str) {
        if let Trace::Memory(buffer) = self {
            let _ = writeln!(
                buffer,
                "{:>5}.{:03} {text}",
                now / TICK_US,
                (now % TICK_US) / 10
            );
        }
    }

    /// The lines kept so far.
    pub fn text(&self) -> &str {
        match self {
            Trace::Off => "",
            Trace::Memory(buffer) => buffer,
        }
    }
}
