//! Hosts of their own for the members of a nemesis run: one Linux network namespace per member,
//! each with one interface on a bridge the harness creates, so the network between members can
//! be cut, made lossy or slow with the kernel's own tools (iptables, tc) while clients in the
//! harness's namespace still reach every member.
//!
//! Everything is named after the harness's process id (`snm<pid>...`), and everything created
//! is removed when [`Hosts`] drops, also after a failure or a panic. What a killed harness left
//! behind is removed by the next one ([`sweep_stale`]): a name whose process is gone is stale.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// The prefix of every name the harness gives: namespaces, links, and its firewall rule.
const PREFIX: &str = "snm";

/// The harness's network: a bridge and one namespace per member.
pub struct Hosts {
    tag: String,
    bridge: String,
    subnet: [u8; 3],
    members: Vec<Host>,
    /// Whether the FORWARD rule that lets the bridge carry traffic between members is in.
    forward_rule: bool,
    bridge_created: bool,
    /// Whether the kernel has `tc netem` (some, like this project's CI machines, do not).
    pub netem: bool,
}

/// One member's host.
pub struct Host {
    /// The member's id.
    pub id: u64,
    /// Its network namespace.
    pub namespace: String,
    /// Its address on the bridge.
    pub address: Ipv4Addr,
}

/// Runs a command to the end; its failure is an error that quotes its standard error.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command, and its standard output.
fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The comment that marks the harness's rule in the host's FORWARD chain.
fn forward_comment(tag: &str) -> String {
    format!("synod-nemesis-{tag}")
}

/// The FORWARD rule that lets bridged traffic between members pass a host firewall that drops
/// forwarded packets (Docker sets FORWARD's policy to DROP, and bridged frames traverse it).
fn forward_rule(bridge: &str, tag: &str) -> Vec<String> {
    [
        "FORWARD",
        "-i",
        bridge,
        "-o",
        bridge,
        "-m",
        "comment",
        "--comment",
        &forward_comment(tag),
        "-j",
        "ACCEPT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Checks the harness can do its job here: root, and the tools it drives.
pub fn preflight() -> anyhow::Result<()> {
    // The effective user id is the third field of /proc/self/status's Uid line.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        bail!("synod nemesis creates network namespaces and firewall rules: run it as root");
    }
    for tool in ["ip", "iptables", "tc"] {
        if Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("synod nemesis needs `{tool}` (Debian: iproute2, iptables)");
        }
    }
    Ok(())
}

/// Whether names carrying this harness pid are stale: its process is gone, or it is this
/// very process (which has made nothing yet when it sweeps, so they are an earlier harness's
/// that had the same pid).
fn stale(pid: u32) -> bool {
    pid == std::process::id() || !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The harness pid a name of ours carries (`snm<pid>...`), if it is one of ours.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The names of the links `ip -o link show` lists (`7: snm12h1@if2: <...>` gives `snm12h1`).
fn link_names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect()
}

/// Removes what harnesses that are no longer running left behind: their members' processes
/// (a member frozen when its harness was killed never sees its standard input close),
/// namespaces, links and FORWARD rules.
pub fn sweep_stale() {
    let mut tags = std::collections::BTreeSet::new();
    if let Ok(list) = output("ip", &["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(pid) = owner(name).filter(|&pid| stale(pid)) else {
                continue;
            };
            tags.insert(pid);
            if let Ok(pids) = output("ip", &["netns", "pids", name]) {
                for member in pids.split_whitespace() {
                    let _ = run("kill", &["-KILL", member]);
                }
            }
            let _ = run("ip", &["netns", "delete", name]);
        }
    }
    if let Ok(list) = output("ip", &["-o", "link", "show"]) {
        for name in link_names(&list) {
            if let Some(pid) = owner(&name).filter(|&pid| stale(pid)) {
                tags.insert(pid);
                let _ = run("ip", &["link", "delete", &name]);
            }
        }
    }
    if let Ok(rules) = output("iptables", &["-S", "FORWARD"]) {
        for rule in rules.lines() {
            let Some(pid) = rule
                .split("synod-nemesis-")
                .nth(1)
                .and_then(owner)
                .filter(|&pid| stale(pid))
            else {
                continue;
            };
            tags.insert(pid);
        }
    }
    // Rebuilt from the name, not parsed back from iptables' listing, whose quoting varies.
    for pid in tags {
        let tag = format!("{PREFIX}{pid}");
        let mut rule = vec!["-D".to_string()];
        rule.extend(forward_rule(&format!("{tag}br"), &tag));
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        while run("iptables", &rule).is_ok() {}
    }
}

/// A /24 under 10.213.0.0/16 that no interface here uses yet.
fn free_subnet(seed: u32) -> anyhow::Result<[u8; 3]> {
    let used = output("ip", &["-o", "-4", "addr", "show"])?;
    for step in 0..256u32 {
        let third = ((seed + step) % 256) as u8;
        let prefix = format!("10.213.{third}.");
        if !used.contains(&prefix) {
            return Ok([10, 213, third]);
        }
    }
    bail!("every subnet of 10.213.0.0/16 is in use here")
}

impl Hosts {
    /// Creates the bridge and a namespace for each of `members` members.
    pub fn create(members: u64) -> anyhow::Result<Hosts> {
        let pid = std::process::id();
        let tag = format!("{PREFIX}{pid}");
        let subnet = free_subnet(pid)?;
        let mut hosts = Hosts {
            bridge: format!("{tag}br"),
            tag,
            subnet,
            members: Vec::new(),
            forward_rule: false,
            bridge_created: false,
            netem: false,
        };
        hosts.build(members)?;
        Ok(hosts)
    }

    fn build(&mut self, members: u64) -> anyhow::Result<()> {
        let bridge = self.bridge.clone();
        let gateway = format!("{}/24", self.gateway());
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        self.bridge_created = true;
        run("ip", &["addr", "add", &gateway, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        let mut rule = vec!["-I".to_string()];
        rule.extend(forward_rule(&bridge, &self.tag));
        rule.insert(2, "1".into());
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        run("iptables", &rule)?;
        self.forward_rule = true;
        for id in 1..=members {
            let namespace = format!("{}n{id}", self.tag);
            let veth = format!("{}h{id}", self.tag);
            let address = Ipv4Addr::new(
                self.subnet[0],
                self.subnet[1],
                self.subnet[2],
                10 + id as u8,
            );
            run("ip", &["netns", "add", &namespace])?;
            self.members.push(Host {
                id,
                namespace: namespace.clone(),
                address,
            });
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                    &namespace,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            let cidr = format!("{address}/24");
            self.exec(id, "ip", &["addr", "add", &cidr, "dev", "eth0"])?;
            self.exec(id, "ip", &["link", "set", "eth0", "up"])?;
            self.exec(id, "ip", &["link", "set", "lo", "up"])?;
        }
        // netem is a kernel module some kernels leave out; try it once on the first member.
        self.netem = self
            .exec(
                1,
                "tc",
                &[
                    "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms",
                ],
            )
            .is_ok();
        if self.netem {
            self.exec(1, "tc", &["qdisc", "del", "dev", "eth0", "root"])?;
        }
        Ok(())
    }

    /// The harness's own address on the bridge, from which clients connect.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], 1)
    }

    /// Every member's host.
    pub fn members(&self) -> &[Host] {
        &self.members
    }

    /// Member `id`'s host.
    pub fn host(&self, id: u64) -> &Host {
        &self.members[(id - 1) as usize]
    }

    /// Runs a command inside member `id`'s namespace.
    pub fn exec(&self, id: u64, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["netns", "exec", &self.host(id).namespace, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Drops, at member `at`, every packet that comes from member `from` (half of a cut).
    pub fn drop_from(&self, at: u64, from: u64) -> anyhow::Result<()> {
        let source = self.host(from).address.to_string();
        self.exec(
            at,
            "iptables",
            &["-A", "INPUT", "-s", &source, "-j", "DROP"],
        )
    }

    /// Drops, at member `at`, every packet it sends to member `to`: an egress rule, for
    /// one-way cuts.
    pub fn drop_to(&self, at: u64, to: u64) -> anyhow::Result<()> {
        let destination = self.host(to).address.to_string();
        self.exec(
            at,
            "iptables",
            &["-A", "OUTPUT", "-d", &destination, "-j", "DROP"],
        )
    }

    /// Cuts members `a` and `b` apart, both ways.
    pub fn cut(&self, a: u64, b: u64) -> anyhow::Result<()> {
        self.drop_from(a, b)?;
        self.drop_from(b, a)
    }

    /// Loses a share of the packets member `at` receives from the other members (its clients
    /// are spared, so the fault is the network between members).
    pub fn lose(&self, at: u64, percent: u32) -> anyhow::Result<()> {
        let probability = format!("{:.2}", percent as f64 / 100.0);
        for other in self.members.iter().filter(|m| m.id != at) {
            let source = other.address.to_string();
            self.exec(
                at,
                "iptables",
                &[
                    "-A",
                    "INPUT",
                    "-s",
                    &source,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &probability,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Slows member `at`'s link to the other members (its clients are spared): what it sends
    /// them goes through an HTB class of its own, limited to 512 kbit/s behind a short queue,
    /// which under load delays every packet and drops some; with netem, also delayed by
    /// `delay_ms` with jitter.
    pub fn slow(&self, at: u64, delay_ms: u32) -> anyhow::Result<()> {
        let tc = |args: &[&str]| self.exec(at, "tc", args);
        tc(&[
            "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1",
        ])?;
        tc(&[
            "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:1", "htb", "rate",
            "10gbit",
        ])?;
        tc(&[
            "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:2", "htb", "rate",
            "512kbit", "ceil", "512kbit",
        ])?;
        if self.netem {
            let delay = format!("{delay_ms}ms");
            let jitter = format!("{}ms", delay_ms / 2);
            tc(&[
                "qdisc", "add", "dev", "eth0", "parent", "1:2", "netem", "delay", &delay, &jitter,
                "limit", "100",
            ])?;
        } else {
            tc(&[
                "qdisc", "add", "dev", "eth0", "parent", "1:2", "pfifo", "limit", "20",
            ])?;
        }
        for other in self.members.iter().filter(|m| m.id != at) {
            let destination = format!("{}/32", other.address);
            tc(&[
                "filter",
                "add",
                "dev",
                "eth0",
                "parent",
                "1:",
                "protocol",
                "ip",
                "u32",
                "match",
                "ip",
                "dst",
                &destination,
                "flowid",
                "1:2",
            ])?;
        }
        Ok(())
    }

    /// Undoes every network fault on every member.
    pub fn heal(&self) -> anyhow::Result<()> {
        for host in &self.members {
            self.exec(host.id, "iptables", &["-F", "INPUT"])?;
            self.exec(host.id, "iptables", &["-F", "OUTPUT"])?;
            // Only fails when no qdisc was added.
            let _ = self.exec(host.id, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
        }
        Ok(())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // A namespace's links go some time after the namespace, in the background; deleting
        // each veth here first leaves nothing behind once the harness has exited.
        for host in &self.members {
            let _ = run(
                "ip",
                &["link", "delete", &format!("{}h{}", self.tag, host.id)],
            );
            if let Err(e) = run("ip", &["netns", "delete", &host.namespace]) {
                eprintln!("synod nemesis: {e}");
            }
        }
        if self.forward_rule {
            let mut rule = vec!["-D".to_string()];
            rule.extend(forward_rule(&self.bridge, &self.tag));
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            if let Err(e) = run("iptables", &rule) {
                eprintln!("synod nemesis: {e}");
            }
        }
        if self.bridge_created {
            if let Err(e) = run("ip", &["link", "delete", &self.bridge]) {
                eprintln!("synod nemesis: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_ours_carry_the_pid_of_the_harness_that_made_them() {
        assert_eq!(owner("snm4321n2"), Some(4321));
        assert_eq!(owner("snm4321br"), Some(4321));
        assert_eq!(owner("docker0"), None);
        assert_eq!(owner("snmx"), None);
        // The longest name fits a Linux interface name (15 bytes).
        assert!(format!("{PREFIX}{}h64", 4_194_304).len() <= 15);
        let listing = "48: snm18014br: <BROADCAST> mtu 1500\n53: snm18014h1@if2: <UP> mtu 1500\n";
        assert_eq!(link_names(listing), vec!["snm18014br", "snm18014h1"]);
    }
}
