//! A run recorded for viewers: the JSON trace `synod viz` plays back, in the format
//! `docs/trace-format.md` describes. Recording observes the world after each step and each
//! event; it never feeds anything back, so a recorded run is the same run as an unrecorded
//! one with the same seed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use synod_check::{KvInput, KvOutput, Operation, Outcome};
use synod_core::{ElectionTimer, LogIndex, NodeId, Role, Status};

use crate::SimTime;

/// Events a trace keeps; a longer run is cut off (`truncated`), its verdict still whole.
const EVENTS_MAX: usize = 500_000;

/// Log entries shown per node.
pub(crate) const LOG_TAIL: usize = 48;

/// What a viewer saw of one node last, so that only changes are written.
#[derive(Default)]
struct Seen {
    state: Option<(Role, u64, Option<NodeId>, LogIndex, LogIndex, LogIndex)>,
    log: (LogIndex, Vec<Option<u64>>),
    /// The timer written last: when it started and when it runs out.
    timer: Option<(SimTime, SimTime)>,
    up: bool,
    paused: bool,
}

/// The events of a run being recorded, written as JSON as they happen.
pub(crate) struct Timeline {
    events: String,
    count: usize,
    truncated: bool,
    next_message: u64,
    seen: BTreeMap<NodeId, Seen>,
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Timeline {
    pub(crate) fn new(nodes: &[NodeId]) -> Timeline {
        Timeline {
            events: String::new(),
            count: 0,
            truncated: false,
            next_message: 0,
            // Every node boots as the run starts.
            seen: nodes
                .iter()
                .map(|&id| {
                    (
                        id,
                        Seen {
                            up: true,
                            ..Seen::default()
                        },
                    )
                })
                .collect(),
            cut: BTreeSet::new(),
        }
    }

    /// Starts an event of kind `kind` at `t`; the caller writes its other fields, each
    /// starting with a comma, and `end` closes it. `None` once the trace is full.
    fn event(&mut self, t: SimTime, kind: &str) -> Option<&mut String> {
        if self.count >= EVENTS_MAX {
            self.truncated = true;
            return None;
        }
        if self.count > 0 {
            self.events.push_str(",\n");
        }
        self.count += 1;
        let _ = write!(self.events, "{{\"t\":{t},\"k\":\"{kind}\"");
        Some(&mut self.events)
    }

    /// A simple event with one node field.
    pub(crate) fn node_event(&mut self, t: SimTime, kind: &str, node: NodeId) {
        if let Some(out) = self.event(t, kind) {
            let _ = write!(out, ",\"n\":{}}}", node.0);
        }
    }

    /// A free-text event (`fault`, `note`).
    pub(crate) fn text(&mut self, t: SimTime, kind: &str, text: &str) {
        if let Some(out) = self.event(t, kind) {
            out.push_str(",\"text\":");
            string(out, text);
            out.push('}');
        }
    }

    /// A node's status, applied index, log tail and timer after one of its steps, each
    /// written only if it changed. `tick_us` is the node's own tick, to place its timer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn node_stepped(
        &mut self,
        t: SimTime,
        status: &Status,
        applied: LogIndex,
        log: (LogIndex, Vec<Option<u64>>),
        era_label: impl FnOnce(u64) -> String,
        timer: Option<ElectionTimer>,
        tick_us: SimTime,
    ) {
        let id = status.id;
        let seen = self.seen.entry(id).or_default();
        let state = (
            status.role,
            status.era,
            status.leader,
            status.commit_index,
            applied,
            status.last_index,
        );
        let state_changed = seen.state != Some(state);
        seen.state = Some(state);
        let log_changed = seen.log != log;
        // Where the timer started and when it runs out, on the simulator's clock. Rewritten
        // when either moves by more than a tick: a reset, a new timeout, or a pause (whose
        // ticks the node never sees).
        let timer = timer.map(|timer| {
            let start = t.saturating_sub(timer.elapsed * tick_us);
            (start, start + timer.timeout * tick_us)
        });
        let moved = |a: SimTime, b: SimTime| a.abs_diff(b) > tick_us;
        let timer_changed = match (seen.timer, timer) {
            (None, None) => false,
            (Some((s0, d0)), Some((s1, d1))) => moved(s0, s1) || moved(d0, d1),
            _ => true,
        };
        if timer_changed {
            seen.timer = timer;
        }
        if state_changed {
            if let Some(out) = self.event(t, "state") {
                let _ = write!(out, ",\"n\":{},\"role\":\"{}\"", id.0, status.role);
                let _ = write!(out, ",\"era\":{},\"era_label\":", status.era);
                string(out, &era_label(status.era));
                match status.leader {
                    Some(leader) => write!(out, ",\"leader\":{}", leader.0),
                    None => write!(out, ",\"leader\":null"),
                }
                .ok();
                let _ = write!(
                    out,
                    ",\"commit\":{},\"applied\":{applied},\"last\":{}}}",
                    status.commit_index, status.last_index
                );
            }
        }
        if log_changed {
            if let Some(out) = self.event(t, "log") {
                let _ = write!(out, ",\"n\":{},\"from\":{},\"eras\":[", id.0, log.0);
                for (i, era) in log.1.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match era {
                        Some(era) => write!(out, "{era}"),
                        None => write!(out, "null"),
                    }
                    .ok();
                }
                out.push_str("]}");
            }
            if let Some(seen) = self.seen.get_mut(&id) {
                seen.log = log;
            }
        }
        if timer_changed {
            if let Some(out) = self.event(t, "timer") {
                match timer {
                    Some((start, deadline)) => write!(
                        out,
                        ",\"n\":{},\"start\":{start},\"deadline\":{deadline}}}",
                        id.0
                    ),
                    None => write!(out, ",\"n\":{},\"start\":null,\"deadline\":null}}", id.0),
                }
                .ok();
            }
        }
    }

    /// A message leaves; returns the id its arrival is recorded under.
    pub(crate) fn send(
        &mut self,
        t: SimTime,
        from: NodeId,
        to: NodeId,
        label: &str,
        arrive: Option<SimTime>,
    ) -> u64 {
        self.next_message += 1;
        let id = self.next_message;
        if let Some(out) = self.event(t, "send") {
            let _ = write!(out, ",\"id\":{id},\"from\":{},\"to\":{}", from.0, to.0);
            out.push_str(",\"type\":");
            string(out, message_type(label));
            out.push_str(",\"label\":");
            string(out, label);
            match arrive {
                Some(at) => write!(out, ",\"arrive\":{at}}}"),
                None => write!(out, ",\"arrive\":null}}"),
            }
            .ok();
        }
        id
    }

    /// Message `id` arrived: handled (`recv`) or lost (`lost`).
    pub(crate) fn arrived(&mut self, t: SimTime, id: u64, handled: bool) {
        let kind = if handled { "recv" } else { "lost" };
        if let Some(out) = self.event(t, kind) {
            let _ = write!(out, ",\"id\":{id}}}");
        }
    }

    /// Looks at what any event may change: which nodes are up or paused, and the network's
    /// cuts.
    pub(crate) fn observe(
        &mut self,
        t: SimTime,
        nodes: impl Iterator<Item = (NodeId, bool, bool)>,
        cut: &BTreeSet<(NodeId, NodeId)>,
    ) {
        let mut changes = Vec::new();
        for (id, up, paused) in nodes {
            let seen = self.seen.entry(id).or_default();
            if seen.up != up {
                changes.push((if up { "restart" } else { "crash" }, id));
                seen.up = up;
                if !up {
                    // A paused process killed is not resumed: it is gone.
                    seen.state = None;
                    seen.timer = None;
                    seen.paused = false;
                }
            }
            if seen.paused != paused {
                changes.push((if paused { "pause" } else { "resume" }, id));
                seen.paused = paused;
            }
        }
        for (kind, id) in changes {
            self.node_event(t, kind, id);
        }
        if *cut != self.cut {
            self.cut = cut.clone();
            if let Some(out) = self.event(t, "net") {
                out.push_str(",\"cut\":[");
                for (i, (from, to)) in cut.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "[{},{}]", from.0, to.0);
                }
                out.push_str("]}");
            }
        }
    }

    /// Client `client` sends (or sends again) operation `op` of the history to `node`.
    pub(crate) fn invoke(&mut self, t: SimTime, op: usize, client: u64, node: NodeId) {
        if let Some(out) = self.event(t, "invoke") {
            let _ = write!(out, ",\"op\":{op},\"c\":{client},\"n\":{}}}", node.0);
        }
    }

    /// The run broke a property here.
    pub(crate) fn violation(&mut self, t: SimTime, kind: &str, detail: &str) {
        if let Some(out) = self.event(t, "violation") {
            out.push_str(",\"kind\":");
            string(out, kind);
            out.push_str(",\"detail\":");
            string(out, detail);
            out.push('}');
        }
    }
}

/// The run's description and results, around the events, make the whole document.
pub(crate) struct Document<'a> {
    /// The `run` object's fields, already JSON (`"protocol":"raft",...`).
    pub run: String,
    pub members: &'a [NodeId],
    pub history: &'a [Operation<KvInput, KvOutput>],
    /// `(kind, detail, at)` of the violation, if any.
    pub violation: Option<(String, String, SimTime)>,
    pub linearizable: &'a str,
}

impl Timeline {
    /// The whole trace, as `docs/trace-format.md` describes it.
    pub(crate) fn document(&self, doc: Document<'_>) -> String {
        let mut out = String::with_capacity(self.events.len() + 4096);
        out.push_str("{\"format\":\"synod-trace\",\"version\":1,\n\"run\":{");
        out.push_str(&doc.run);
        out.push_str("},\n\"members\":[");
        let members: Vec<String> = doc.members.iter().map(|m| m.0.to_string()).collect();
        out.push_str(&members.join(","));
        out.push_str("],\n\"events\":[\n");
        out.push_str(&self.events);
        out.push_str("\n],\n\"history\":[");
        for (i, op) in doc.history.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('\n');
            history_entry(&mut out, op);
        }
        out.push_str("\n],\n\"verdict\":{");
        match &doc.violation {
            None => out.push_str("\"clean\":true,\"kind\":null,\"detail\":null,\"at\":null"),
            Some((kind, detail, at)) => {
                out.push_str("\"clean\":false,\"kind\":");
                string(&mut out, kind);
                out.push_str(",\"detail\":");
                string(&mut out, detail);
                let _ = write!(out, ",\"at\":{at}");
            }
        }
        out.push_str(",\"linearizable\":");
        string(&mut out, doc.linearizable);
        let _ = writeln!(out, "}},\n\"truncated\":{}}}", self.truncated);
        out
    }
}

fn history_entry(out: &mut String, op: &Operation<KvInput, KvOutput>) {
    let text = match &op.input {
        KvInput::Read { key } => format!("read k{key}"),
        KvInput::Write { key, value } => format!("write k{key} = {value}"),
        KvInput::Cas { key, expected, new } => match expected {
            Some(old) => format!("cas k{key} {old} -> {new}"),
            None => format!("cas k{key} absent -> {new}"),
        },
        KvInput::Delete { key } => format!("delete k{key}"),
    };
    let (outcome, result) = match &op.outcome {
        Outcome::Pending => ("unknown", "pending".to_string()),
        Outcome::Indeterminate => ("unknown", "timed out".to_string()),
        Outcome::Fail => ("failed", "refused".to_string()),
        Outcome::Ok(output) => (
            "ok",
            match output {
                KvOutput::Read(Some(v)) => format!("{v}"),
                KvOutput::Read(None) => "absent".to_string(),
                KvOutput::Written => "ok".to_string(),
                KvOutput::Cas(true) => "swapped".to_string(),
                KvOutput::Cas(false) => "compare failed".to_string(),
                KvOutput::Deleted => "deleted".to_string(),
            },
        ),
    };
    let _ = write!(out, "{{\"c\":{},\"text\":", op.client);
    string(out, &text);
    let _ = write!(out, ",\"call\":{},\"end\":", op.call);
    match op.end {
        Some(end) => write!(out, "{end}"),
        None => write!(out, "null"),
    }
    .ok();
    let _ = write!(out, ",\"outcome\":\"{outcome}\",\"result\":");
    string(out, &result);
    out.push('}');
}

/// A message's short name: the first word of its description, or the replica's name for
/// its own messages.
fn message_type(label: &str) -> &str {
    const REPLICA: [(&str, &str); 6] = [
        ("forwarded writes", "Forward"),
        ("read index", "ReadIndex"),
        ("reads x", "ReadReady"),
        ("refused", "Refused"),
        ("lease keeper", "KeeperAlive"),
        ("heard the lease", "KeeperHeard"),
    ];
    if let Some((_, name)) = REPLICA.iter().find(|(start, _)| label.starts_with(start)) {
        return name;
    }
    if label.starts_with("membership change refused") {
        return "MembershipRefused";
    }
    if label.starts_with("membership change") {
        return "ChangeMembership";
    }
    label
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .filter(|word| !word.is_empty())
        .unwrap_or("message")
}

/// Writes `text` as a JSON string.
pub(crate) fn string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn message_types_are_short_names() {
        assert_eq!(
            message_type("AppendEntries term=3 prev=1/1"),
            "AppendEntries"
        );
        assert_eq!(message_type("forwarded writes x3"), "Forward");
        assert_eq!(
            message_type("membership change refused: busy"),
            "MembershipRefused"
        );
        assert_eq!(message_type(""), "message");
    }
}
