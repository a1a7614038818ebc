//! The real-host nemesis (`synod nemesis`): for every served protocol, a short run in which
//! each member has a network namespace of its own and the nemesis partitions them, cuts one
//! way, bridges, loses and delays packets, pauses, kills and skews clocks under a checked
//! load; and a run with a Raft rule broken on purpose, which the checks must catch.
//!
//! It needs root (namespaces, iptables) and iproute2; without them the tests say so and pass.
//! CI runs as root, so CI always runs them. The runs share the machine's two cores, so they
//! take turns.

use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One run at a time: each starts a cluster and a load that want the whole machine.
static TURN: Mutex<()> = Mutex::new(());

/// Whether this machine lets the harness make hosts: root, with `ip` and `iptables`.
fn can_make_hosts() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let tools = ["ip", "iptables", "tc"]
        .iter()
        .all(|tool| Command::new(tool).arg("-V").output().is_ok());
    if !(root && tools) {
        eprintln!("skipped: the nemesis needs root, ip, iptables and tc (CI has them)");
    }
    root && tools
}

/// Runs `synod nemesis` to the end; its exit code and what it printed. Checks it left no
/// namespace or link behind (each is named `snm<its pid>...`).
fn nemesis(args: &[&str]) -> (Option<i32>, String) {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .arg("nemesis")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run synod nemesis");
    let ours = format!("snm{}", child.id());
    let output = child.wait_with_output().expect("synod nemesis output");
    let rules = Command::new("iptables")
        .args(["-S", "FORWARD"])
        .output()
        .expect("iptables");
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains(&format!("synod-nemesis-{ours} ")),
        "the run left its FORWARD rule behind: {rules}"
    );
    for what in [&["netns", "list"][..], &["-o", "link", "show"][..]] {
        let listed = Command::new("ip").args(what).output().expect("ip");
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(
            !listed.lines().any(|l| l.contains(&format!("{ours}n"))
                || l.contains(&format!("{ours}br"))
                || l.contains(&format!("{ours}h"))),
            "the run left {ours}... behind: {listed}"
        );
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{text}");
    (output.status.code(), text)
}

/// A short run under every fault: it must pass, and every fault must have been injected.
fn survives_every_fault(protocol: &str) {
    if !can_make_hosts() {
        return;
    }
    let (code, text) = nemesis(&[
        "--protocol",
        protocol,
        "--faults",
        "all",
        "--time",
        "20",
        "--hold-ms",
        "2500",
        "--clients",
        "6",
    ]);
    assert_eq!(code, Some(0), "the nemesis run on {protocol} failed");
    assert!(text.contains("verdict: PASS"), "{text}");
    let faults = text
        .lines()
        .find(|l| l.trim_start().starts_with("faults "))
        .expect("a faults line");
    for kind in [
        "partition ",
        "partition-leader",
        "bridge",
        "one-way",
        "netem",
        "pause",
        "kill",
        "clocks skewed",
    ] {
        assert!(faults.contains(kind), "{kind} was not injected: {faults}");
    }
}

#[test]
fn raft_survives_the_nemesis() {
    survives_every_fault("raft");
}

#[test]
fn multi_paxos_survives_the_nemesis() {
    survives_every_fault("multi-paxos");
}

#[test]
fn basic_paxos_survives_the_nemesis() {
    survives_every_fault("basic-paxos");
}

#[test]
fn zab_survives_the_nemesis() {
    survives_every_fault("zab");
}

#[test]
fn sync_survives_the_nemesis() {
    survives_every_fault("sync");
}

#[test]
fn dns_survives_the_nemesis() {
    survives_every_fault("dns");
}

#[test]
fn gossip_survives_the_nemesis() {
    survives_every_fault("gossip");
}

/// A Raft leader that answers linearizable reads without asking a quorum serves stale reads
/// once it is cut off from its followers and they elect another: the history check must
/// catch it.
#[test]
fn the_nemesis_catches_a_raft_leader_that_reads_without_confirmation() {
    if !can_make_hosts() {
        return;
    }
    let (code, text) = nemesis(&[
        "--protocol",
        "raft",
        "--faults",
        "partition-leader",
        "--time",
        "30",
        // Enough clients that some are free to read from the cut-off leader while others
        // wait on writes it cannot commit.
        "--clients",
        "16",
        "--inject-bug",
        "read-without-confirmation",
    ]);
    assert_eq!(code, Some(1), "the broken leader went unnoticed");
    assert!(text.contains("NOT LINEARIZABLE"), "{text}");
    assert!(text.contains("verdict: FAIL"), "{text}");
}

#[test]
fn the_nemesis_refuses_bad_flags_with_a_clear_error() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_synod"))
            .arg("nemesis")
            .args(args)
            .output()
            .expect("run synod nemesis");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, error) = run(&["--faults", "flood"]);
    assert_eq!(code, Some(2));
    assert!(error.contains("no fault named `flood`"), "{error}");
    let (code, error) = run(&["--protocol", "chain"]);
    assert_eq!(code, Some(2));
    assert!(error.contains("not a protocol"), "{error}");
    let (code, error) = run(&[
        "--protocol",
        "zab",
        "--inject-bug",
        "read-without-confirmation",
    ]);
    assert_eq!(code, Some(2));
    assert!(error.contains("breaks raft"), "{error}");
}
