//! Synod's web pages in a real browser: `synod viz` (pick a protocol, watch the first
//! election, crash the leader by clicking, see the next one; Raft, Multi-Paxos and Basic
//! Paxos; a narrow window) and the live view `cluster up` prints (kill -9 of the leader shows
//! as a leader change). Headless Chromium driven by Selenium, from Debian's `chromium`,
//! `chromium-driver` and `python3-selenium`, which `.ci/run` installs; without them these
//! tests say so and pass, unless `SYNOD_REQUIRE_BROWSER` is set (CI sets it). Screenshots of
//! each key state are written under the target directory's `browser-screenshots/`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{cluster_up, free_port_block, temp_dir, SYNOD};

const PYTHON: &str = "/usr/bin/python3";

/// Whether the browser and its driver are here; panics if they must be and are not.
fn browser_available() -> bool {
    let chromium = Path::new("/usr/bin/chromium").exists();
    let driver = Path::new("/usr/bin/chromedriver").exists();
    let selenium = Command::new(PYTHON)
        .args(["-c", "import selenium"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let here = chromium && driver && selenium;
    if !here {
        let missing =
            format!("chromium {chromium}, chromium-driver {driver}, python3-selenium {selenium}");
        assert!(
            std::env::var_os("SYNOD_REQUIRE_BROWSER").is_none(),
            "SYNOD_REQUIRE_BROWSER is set but the browser is missing: {missing}"
        );
        eprintln!("skipped: no browser to drive ({missing}); apt install chromium chromium-driver python3-selenium");
    }
    here
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots")
}

/// Runs `pages.py MODE URL`, then `clean_up` (the servers it drove), and fails with what
/// it printed if a check failed.
fn drive(mode: &str, url: &str, clean_up: impl FnOnce()) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/pages.py");
    let output = Command::new(PYTHON)
        .arg(script)
        .args([mode, url])
        .arg(screenshots())
        .output();
    clean_up();
    let output = output.expect("run pages.py");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{said}");
    assert!(
        output.status.success(),
        "the {mode} page failed in the browser:\n{said}"
    );
}

#[test]
fn the_simulator_page_replays_elections_and_forks_on_a_click() {
    if !browser_available() {
        return;
    }
    let mut viz = Command::new(SYNOD)
        .args(["viz", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start synod viz");
    let mut banner = String::new();
    let stdout = viz.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .read_line(&mut banner)
        .expect("read the banner");
    let url = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("synod viz printed no address: {banner:?}"))
        .to_string();
    drive("viz", &url, || {
        let _ = viz.kill();
        let _ = viz.wait();
    });
}

#[test]
fn the_live_view_shows_a_new_leader_after_the_leader_is_killed() {
    if !browser_available() {
        return;
    }
    let data = temp_dir("live-view");
    let (mut up, banner) = cluster_up(&data, free_port_block(30), 3, "raft", &[]);
    let url = banner
        .iter()
        .find_map(|line| line.strip_prefix("live view: "))
        .unwrap_or_else(|| panic!("cluster up printed no live view: {banner:?}"))
        .to_string();
    drive("live", &url, || {
        common::signal(up.id(), "TERM");
        let _ = common::wait_exit(&mut up, std::time::Duration::from_secs(20));
        let _ = up.kill();
        let _ = std::fs::remove_dir_all(&data);
    });
}
