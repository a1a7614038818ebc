//! The real-host nemesis (`synod nemesis`): for every served protocol, a short run in which
//! each member has a network namespace of its own and the nemesis partitions them, cuts one
//! way, bridges, loses and delays packets, pauses, kills and skews clocks under a checked
//! load; and a run with a Raft rule broken on purpose, which the checks must catch.
//!
//! It needs root (namespaces, iptables) and iproute2; without them the tests say so and pass.
//! CI runs as root, so CI always runs them. The runs go side by side, each on hosts of its
//! own: they spend most of their time holding faults, not computing.

use std::process::{Command, Stdio};
use std::sync::Mutex;

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
    (output.status.code(), text)
}

/// The bug-catching run wants the machine to itself; the side-by-side runs take it too.
static ALONE: Mutex<()> = Mutex::new(());

/// Every protocol under every fault, the seven runs side by side (each on hosts of its own,
/// at a paced load, so together they fit the machine): each must pass, with every kind of
/// fault injected and nothing left behind.
#[test]
fn every_protocol_survives_the_nemesis() {
    if !can_make_hosts() {
        return;
    }
    let _alone = ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let runs: Vec<_> = synod_replica::PROTOCOL_NAMES
        .iter()
        .map(|protocol| {
            let protocol = protocol.to_string();
            std::thread::spawn(move || {
                let outcome = nemesis(&[
                    "--protocol",
                    &protocol,
                    "--faults",
                    "all",
                    "--time",
                    "20",
                    "--hold-ms",
                    "2500",
                    "--clients",
                    "6",
                    "--rate",
                    "300",
                ]);
                (protocol, outcome)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for run in runs {
        let (protocol, (code, text)) = run.join().expect("a nemesis run");
        let faults = text
            .lines()
            .find(|l| l.trim_start().starts_with("faults "))
            .unwrap_or_default();
        let missing: Vec<&str> = [
            "partition ",
            "partition-leader",
            "bridge",
            "one-way",
            "netem",
            "pause",
            "kill",
            "clocks skewed",
        ]
        .into_iter()
        .filter(|kind| !faults.contains(kind))
        .collect();
        if code != Some(0) || !text.contains("verdict: PASS") || !missing.is_empty() {
            failures.push(format!(
                "{protocol}: exit {code:?}, faults not injected {missing:?}\n{text}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A Raft leader that answers linearizable reads without asking a quorum serves stale reads
/// once it is cut off from its followers and they elect another: the history check must
/// catch it.
#[test]
fn the_nemesis_catches_a_raft_leader_that_reads_without_confirmation() {
    if !can_make_hosts() {
        return;
    }
    // Alone on the machine: the stale reads come in the second or so between a new leader's
    // first write and the old leader's step-down, which a loaded machine blurs.
    let _alone = ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // A real run is not a seed: catching the bug takes a cut leader whose successor writes
    // before it steps down, and the checker must then prove the history wrong within its
    // budget. Alone, 30 s of cuts gave NOT LINEARIZABLE in 7 tries of 9, an inconclusive
    // search in 1 and a miss in 1; five tries make a miss all but impossible, and every try
    // that missed is reported.
    let mut misses = Vec::new();
    for _ in 0..5 {
        let (code, text) = nemesis(&[
            "--protocol",
            "raft",
            "--faults",
            "partition-leader",
            "--time",
            "30",
            // Enough clients, giving up soon enough, that some are free to read from the
            // cut-off leader while others wait on writes it cannot commit.
            "--clients",
            "24",
            "--timeout-ms",
            "300",
            "--inject-bug",
            "read-without-confirmation",
        ]);
        if code == Some(1) && text.contains("NOT LINEARIZABLE") {
            assert!(text.contains("verdict: FAIL"), "{text}");
            for miss in &misses {
                eprintln!("a try that missed the bug:\n{miss}");
            }
            return;
        }
        // Anything else but a pass or an undecided search is a failure of its own.
        let undecided = code == Some(1) && text.contains("history      inconclusive");
        assert!(
            code == Some(0) || undecided,
            "the run failed otherwise:\n{text}"
        );
        misses.push(text);
    }
    panic!(
        "the broken leader went unnoticed in five tries:\n{}",
        misses.join("\n")
    );
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
