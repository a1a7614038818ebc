//! Which faults a run may inject, as named on the command line.

use std::fmt;

/// A set of fault kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultSet {
    /// Random latency spikes, so messages arrive out of order; and slow links, one way.
    pub delay: bool,
    /// Lost messages.
    pub drop: bool,
    /// Messages delivered twice.
    pub duplicate: bool,
    /// Network partitions: random halves, an isolated leader, a bridge node, one-way links.
    pub partition: bool,
    /// Node crashes (losing what was not yet persisted) and restarts.
    pub crash: bool,
    /// Nodes whose clocks tick faster or slower than others.
    pub skew: bool,
    /// Disk faults: unsynced writes cut short at a crash (a torn last write), and bits flipped
    /// in stored data, which the node must detect when it next starts.
    pub disk: bool,
    /// Races around a change of leader: the leader's messages reach one follower only for a
    /// moment, then the two are cut off while the rest elect a new leader, then the network
    /// heals while the old leader may still think it leads (and fills gaps in its log from
    /// the new leader's side). Also leaderships moved by an operator (etcd's MoveLeader) while
    /// clients keep working.
    pub leader_race: bool,
    /// Processes paused (as by SIGSTOP), mostly the leader's, for up to a few seconds: its
    /// clock stops, what reaches it waits, and it carries on afterwards as if nothing
    /// happened.
    pub pause: bool,
    /// An operator changes the membership (under protocols that can): spare nodes join as
    /// learners or voters, learners are promoted, voters (the leader, a crashed or a cut-off
    /// one among them) are removed, all while the other faults go on.
    pub membership: bool,
}

/// Every fault name, as `--faults` takes them, in the order `Display` prints them.
pub const NAMES: [&str; 10] = [
    "delay",
    "drop",
    "duplicate",
    "partition",
    "crash",
    "skew",
    "disk",
    "leader-race",
    "pause",
    "membership",
];

impl FaultSet {
    /// Every fault.
    pub const ALL: FaultSet = FaultSet {
        delay: true,
        drop: true,
        duplicate: true,
        partition: true,
        crash: true,
        skew: true,
        disk: true,
        leader_race: true,
        pause: true,
        membership: true,
    };
    /// No fault: a healthy network and no crashes.
    pub const NONE: FaultSet = FaultSet {
        delay: false,
        drop: false,
        duplicate: false,
        partition: false,
        crash: false,
        skew: false,
        disk: false,
        leader_race: false,
        pause: false,
        membership: false,
    };

    fn flags(&mut self) -> [&mut bool; 10] {
        [
            &mut self.delay,
            &mut self.drop,
            &mut self.duplicate,
            &mut self.partition,
            &mut self.crash,
            &mut self.skew,
            &mut self.disk,
            &mut self.leader_race,
            &mut self.pause,
            &mut self.membership,
        ]
    }

    /// Parses `all`, `none`, or a comma-separated list of fault names.
    pub fn parse(text: &str) -> Result<FaultSet, String> {
        match text.trim() {
            "all" => return Ok(FaultSet::ALL),
            "none" | "" => return Ok(FaultSet::NONE),
            _ => {}
        }
        let mut set = FaultSet::NONE;
        for name in text.split(',').map(str::trim) {
            let position = NAMES.iter().position(|n| *n == name).ok_or_else(|| {
                format!(
                    "unknown fault '{name}'; expected all, none, or some of: {}",
                    NAMES.join(", ")
                )
            })?;
            *set.flags()[position] = true;
        }
        Ok(set)
    }
}

impl fmt::Display for FaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == FaultSet::ALL {
            return f.write_str("all");
        }
        let mut copy = *self;
        let on: Vec<&str> = copy
            .flags()
            .into_iter()
            .zip(NAMES)
            .filter(|(flag, _)| **flag)
            .map(|(_, name)| name)
            .collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_lists_and_shorthands() {
        assert_eq!(FaultSet::parse("all").unwrap(), FaultSet::ALL);
        assert_eq!(FaultSet::parse("none").unwrap(), FaultSet::NONE);
        let set = FaultSet::parse("drop, crash").unwrap();
        assert!(set.drop && set.crash && !set.partition);
        assert_eq!(set.to_string(), "drop,crash");
        let err = FaultSet::parse("drop,meteor").unwrap_err();
        assert!(err.contains("meteor") && err.contains("partition"), "{err}");
    }
}
