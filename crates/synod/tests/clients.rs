//! Client libraries nobody here wrote, against a Synod cluster of real processes: Debian's
//! `python3-etcd3` (keys, transactions, watch, lease keep-alive, lock, members). Skipped,
//! saying so, when it is not installed; `.ci/run` installs it, so CI always runs this.

mod common;

use std::process::Command;

use common::Cluster;

/// Debian's python, where `python3-etcd3` installs (a python on PATH may be another).
const PYTHON: &str = "/usr/bin/python3";

fn etcd3_installed() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import etcd3"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_etcd3_works_against_synod() {
    if !etcd3_installed() {
        eprintln!("SKIPPED: python3-etcd3 is not installed (apt-get install python3-etcd3)");
        return;
    }
    let cluster = Cluster::start("python-etcd3", 3, &[]);
    cluster.ready().await;
    // A follower, so requests go through forwarding as well.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/python_etcd3.py");
    let out = Command::new(PYTHON)
        .arg(script)
        .arg(&cluster.member(3).client)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "python-etcd3 against synod: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
