//! What a viewer does to a run: crash or restart a node, cut or mend a link, at a moment of
//! virtual time. The rest of the run stays decided by its seed, so a run with interventions
//! is the run without them up to the first one, and replays alike.

use std::fmt;

use synod_core::NodeId;

use crate::SimTime;

/// One thing done to a run, at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervention {
    /// When, in microseconds of virtual time.
    pub at: SimTime,
    /// What.
    pub action: Action,
}

/// What an [`Intervention`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop the node, as the nemesis crashes one.
    Crash(NodeId),
    /// Start a crashed node from its disk.
    Restart(NodeId),
    /// Cut the link between two nodes, both ways.
    Cut(NodeId, NodeId),
    /// Mend it.
    Mend(NodeId, NodeId),
}

impl Intervention {
    /// Parses a comma-separated list such as `crash:1@2350000,cut:1-2@4000000`, for a
    /// cluster of `nodes` nodes.
    pub fn parse_list(text: &str, nodes: usize) -> Result<Vec<Intervention>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| Intervention::parse(part, nodes))
            .collect()
    }

    fn parse(text: &str, nodes: usize) -> Result<Intervention, String> {
        let bad = |why: &str| format!("intervention {text:?}: {why}");
        let (what, at) = text
            .split_once('@')
            .ok_or_else(|| bad("expected ACTION:NODES@MICROSECONDS"))?;
        let at: SimTime = at.parse().map_err(|_| bad("the time is not a number"))?;
        let (verb, args) = what
            .split_once(':')
            .ok_or_else(|| bad("expected ACTION:NODES"))?;
        let node = |s: &str| -> Result<NodeId, String> {
            match s.parse::<u64>() {
                Ok(id) if (1..=nodes as u64).contains(&id) => Ok(NodeId(id)),
                _ => Err(bad(&format!("{s:?} is not a node of 1..={nodes}"))),
            }
        };
        let pair = |s: &str| -> Result<(NodeId, NodeId), String> {
            let (a, b) = s.split_once('-').ok_or_else(|| bad("expected A-B"))?;
            let (a, b) = (node(a)?, node(b)?);
            if a == b {
                return Err(bad("a link joins two different nodes"));
            }
            Ok((a, b))
        };
        let action = match verb {
            "crash" => Action::Crash(node(args)?),
            "restart" => Action::Restart(node(args)?),
            "cut" => pair(args).map(|(a, b)| Action::Cut(a, b))?,
            "mend" => pair(args).map(|(a, b)| Action::Mend(a, b))?,
            _ => return Err(bad("the action is crash, restart, cut or mend")),
        };
        Ok(Intervention { at, action })
    }

    /// Writes a list back in the syntax [`Intervention::parse_list`] reads.
    pub fn list_to_string(list: &[Intervention]) -> String {
        list.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for Action {
    /// For people: `crash n1`, `cut n1-n2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Crash(n) => write!(f, "crash n{}", n.0),
            Action::Restart(n) => write!(f, "restart n{}", n.0),
            Action::Cut(a, b) => write!(f, "cut n{}-n{}", a.0, b.0),
            Action::Mend(a, b) => write!(f, "mend n{}-n{}", a.0, b.0),
        }
    }
}

impl fmt::Display for Intervention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Action::Crash(n) => write!(f, "crash:{}", n.0),
            Action::Restart(n) => write!(f, "restart:{}", n.0),
            Action::Cut(a, b) => write!(f, "cut:{}-{}", a.0, b.0),
            Action::Mend(a, b) => write!(f, "mend:{}-{}", a.0, b.0),
        }?;
        write!(f, "@{}", self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_round_trips() {
        let text = "crash:1@2350000,restart:1@4000000,cut:1-3@5,mend:3-1@6";
        let list = Intervention::parse_list(text, 3).expect("parses");
        assert_eq!(list.len(), 4);
        assert_eq!(list[2].action, Action::Cut(NodeId(1), NodeId(3)));
        assert_eq!(Intervention::list_to_string(&list), text);
        assert!(Intervention::parse_list("", 3).expect("empty").is_empty());
    }

    #[test]
    fn bad_interventions_are_refused_with_a_reason() {
        for bad in [
            "crash:4@1",
            "crash:1",
            "cut:1-1@5",
            "fly:1@2",
            "crash:x@1",
            "cut:1@2",
        ] {
            let error = Intervention::parse_list(bad, 3).expect_err(bad);
            assert!(error.contains(bad), "{error}");
        }
    }
}
