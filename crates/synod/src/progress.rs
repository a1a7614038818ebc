//! A one-line progress bar on standard error, drawn only when it is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Redraws at most every 100 ms.
pub struct Progress {
    label: String,
    enabled: bool,
    last_draw: Mutex<Option<Instant>>,
}

const WIDTH: usize = 30;

impl Progress {
    /// A bar named `label`; silent when standard error is not a terminal.
    pub fn new(label: &str) -> Progress {
        Progress {
            label: label.to_string(),
            enabled: std::io::stderr().is_terminal(),
            last_draw: Mutex::new(None),
        }
    }

    /// Shows `done` of `total`, with a note after the bar.
    pub fn update(&self, done: usize, total: usize, note: &str) {
        if !self.enabled {
            return;
        }
        let mut last = self.last_draw.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if done < total && last.is_some_and(|t| now - t < Duration::from_millis(100)) {
            return;
        }
        *last = Some(now);
        let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
        let bar: String = "#".repeat(filled) + &"-".repeat(WIDTH - filled);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{} [{bar}] {done}/{total} {note}  ", self.label);
        if done == total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}
