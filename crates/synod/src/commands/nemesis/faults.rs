//! The nemesis: faults on real hosts, one at a time, each held for a few seconds and then
//! healed. Network faults are firewall and traffic-control rules inside the members'
//! namespaces; process faults are signals.

use std::fmt;
use std::time::Duration;

use anyhow::bail;
use synod_core::Rng;

use super::hosts::Hosts;
use super::members::Members;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The members split in two at random, a minority and a majority.
    Partition,
    /// The leader (under a protocol without one, any member) cut off from every other member,
    /// though not from its clients.
    PartitionLeader,
    /// Two sides that cannot hear each other, and one member that hears both.
    Bridge,
    /// One member cannot be heard by the others, or cannot hear them.
    OneWay,
    /// Packets between members lost (20%) and delayed.
    Netem,
    /// A member frozen (SIGSTOP), then let go (SIGCONT).
    Pause,
    /// A member killed (SIGKILL), then started again on its data.
    Kill,
    /// Members' clocks run at rates up to 10% apart (drawn at start and at every restart).
    Skew,
}

impl Fault {
    /// Whether the fault cuts or degrades the network between members (which takes three).
    pub fn cuts_the_network(self) -> bool {
        matches!(
            self,
            Fault::Partition
                | Fault::PartitionLeader
                | Fault::Bridge
                | Fault::OneWay
                | Fault::Netem
        )
    }
}

/// Every fault by name.
pub const FAULTS: [(&str, Fault); 8] = [
    ("partition", Fault::Partition),
    ("partition-leader", Fault::PartitionLeader),
    ("bridge", Fault::Bridge),
    ("one-way", Fault::OneWay),
    ("netem", Fault::Netem),
    ("pause", Fault::Pause),
    ("kill", Fault::Kill),
    ("skew", Fault::Skew),
];

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = FAULTS
            .iter()
            .find(|(_, fault)| fault == self)
            .map_or("?", |(name, _)| name);
        f.write_str(name)
    }
}

/// Parses `all`, `none` or a comma-separated list of fault names.
pub fn parse(text: &str) -> anyhow::Result<Vec<Fault>> {
    match text {
        "all" => return Ok(FAULTS.iter().map(|(_, f)| *f).collect()),
        "none" => return Ok(Vec::new()),
        _ => {}
    }
    let mut faults = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some((_, fault)) = FAULTS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = FAULTS.iter().map(|(n, _)| *n).collect();
            bail!(
                "--faults: no fault named `{name}` (there are: all, none, {})",
                names.join(", ")
            );
        };
        if !faults.contains(fault) {
            faults.push(*fault);
        }
    }
    Ok(faults)
}

/// A clock rate within 10% of true time, as the simulator's skew.
pub fn clock_rate(rng: &mut Rng) -> f64 {
    let rate = 0.9 + rng.unit() * 0.2;
    (rate * 1000.0).round() / 1000.0
}

/// A fault in force, and how to undo it.
pub enum Active {
    /// Firewall or traffic-control rules: undone by healing the network.
    Network,
    /// A frozen member.
    Paused(u64),
    /// A killed member.
    Killed(u64),
}

/// Shuffles `items` in place.
pub fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// The member a fault aimed at the leader hits: the leader if there is one (half the time for
/// process faults, so followers are hit too), else any member.
fn target(rng: &mut Rng, n: u64, leader: Option<u64>, always_leader: bool) -> u64 {
    match leader {
        Some(leader) if always_leader || rng.chance(0.5) => leader,
        _ => rng.range(1, n + 1),
    }
}

fn list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Injects one fault of `kind`; returns what it did, in words, and how to undo it.
pub fn inject(
    kind: Fault,
    rng: &mut Rng,
    hosts: &Hosts,
    members: &mut Members,
    leader: Option<u64>,
) -> anyhow::Result<(String, Active)> {
    let n = hosts.members().len() as u64;
    let mut ids: Vec<u64> = (1..=n).collect();
    let leader_note = |id: u64| {
        if Some(id) == leader {
            " (the leader)"
        } else {
            ""
        }
    };
    Ok(match kind {
        Fault::Partition => {
            shuffle(rng, &mut ids);
            let minority = rng.range(1, n / 2 + 1) as usize;
            let (small, large) = ids.split_at(minority);
            for &a in small {
                for &b in large {
                    hosts.cut(a, b)?;
                }
            }
            (
                format!("{} cut off from {}", list(small), list(large)),
                Active::Network,
            )
        }
        Fault::PartitionLeader => {
            let isolated = target(rng, n, leader, true);
            for other in (1..=n).filter(|&o| o != isolated) {
                hosts.cut(isolated, other)?;
            }
            (
                format!(
                    "{isolated}{} cut off from every member",
                    leader_note(isolated)
                ),
                Active::Network,
            )
        }
        Fault::Bridge => {
            shuffle(rng, &mut ids);
            let bridge = ids[0];
            let rest = &ids[1..];
            let (left, right) = rest.split_at(rest.len() / 2);
            for &a in left {
                for &b in right {
                    hosts.cut(a, b)?;
                }
            }
            (
                format!(
                    "{} and {} cut apart, {bridge}{} hears both",
                    list(left),
                    list(right),
                    leader_note(bridge)
                ),
                Active::Network,
            )
        }
        // Egress rules: what the member sends to the others, or what they send to it, is
        // dropped as it leaves. The peers speak TCP, whose connections then stall both ways
        // (acknowledgements are lost too), but the side that hears nothing notices first.
        Fault::OneWay => {
            let one = target(rng, n, leader, false);
            if rng.chance(0.5) {
                for other in (1..=n).filter(|&o| o != one) {
                    hosts.drop_to(one, other)?;
                }
                (
                    format!("{one}{} cannot be heard by the others", leader_note(one)),
                    Active::Network,
                )
            } else {
                for other in (1..=n).filter(|&o| o != one) {
                    hosts.drop_to(other, one)?;
                }
                (
                    format!("{one}{} cannot hear the others", leader_note(one)),
                    Active::Network,
                )
            }
        }
        Fault::Netem => {
            shuffle(rng, &mut ids);
            let count = rng.range(1, n + 1) as usize;
            let hit = &ids[..count];
            for &id in hit {
                hosts.lose(id, 20)?;
                hosts.slow(id, 50)?;
            }
            let how = if hosts.netem {
                "sending to them at 512 kbit/s, 50±25 ms late"
            } else {
                "sending to them at 512 kbit/s"
            };
            (
                format!("{} lose 20% of peer packets, {how}", list(hit)),
                Active::Network,
            )
        }
        Fault::Pause => {
            let id = target(rng, n, leader, false);
            members.pause(id)?;
            (
                format!("{id}{} paused", leader_note(id)),
                Active::Paused(id),
            )
        }
        Fault::Kill => {
            let id = target(rng, n, leader, false);
            members.kill(id)?;
            (
                format!("{id}{} killed", leader_note(id)),
                Active::Killed(id),
            )
        }
        Fault::Skew => bail!("skew is set when members start, not injected"),
    })
}

/// Undoes a fault; a killed member starts again (at a new clock rate if clocks are skewed).
pub fn heal(
    active: Active,
    rng: &mut Rng,
    skew: bool,
    hosts: &Hosts,
    members: &mut Members,
) -> anyhow::Result<String> {
    Ok(match active {
        Active::Network => {
            hosts.heal()?;
            "network healed".to_string()
        }
        Active::Paused(id) => {
            members.resume(id)?;
            format!("{id} resumed")
        }
        Active::Killed(id) => {
            if skew {
                members.set_clock_rate(id, clock_rate(rng));
            }
            members.spawn(hosts, id)?;
            if skew {
                format!("{id} restarted, clock rate {}", members.clock_rate(id))
            } else {
                format!("{id} restarted")
            }
        }
    })
}

/// How long a fault is held, or the quiet between two: `min` to `max`.
pub fn span(rng: &mut Rng, min: Duration, max: Duration) -> Duration {
    let spread = max.saturating_sub(min).as_millis() as u64;
    min + Duration::from_millis(rng.range(0, spread + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_and_bad_names_say_which_there_are() {
        assert_eq!(parse("all").unwrap().len(), FAULTS.len());
        assert!(parse("none").unwrap().is_empty());
        assert_eq!(
            parse("kill, pause,kill").unwrap(),
            vec![Fault::Kill, Fault::Pause]
        );
        let error = parse("kill,flood").unwrap_err().to_string();
        assert!(
            error.contains("flood") && error.contains("partition-leader"),
            "{error}"
        );
        for (name, fault) in FAULTS {
            assert_eq!(fault.to_string(), name);
        }
    }

    #[test]
    fn clock_rates_stay_within_ten_percent() {
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            let rate = clock_rate(&mut rng);
            assert!((0.9..=1.1).contains(&rate), "{rate}");
        }
    }
}
