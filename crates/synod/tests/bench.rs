//! `synod bench`'s lease, keep-alive and watch workloads against a real cluster: each counts
//! every operation it was asked for, with no error. Their figures are measurements, printed,
//! never asserted here.

mod common;

use std::process::Command;

use common::Cluster;

/// Runs `synod bench ARGS --format json` against `endpoints` and returns its JSON line.
fn bench(endpoints: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_synod"))
        .arg("bench")
        .args(args)
        .args(["--endpoints", endpoints, "--format", "json"])
        .output()
        .expect("run synod bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "synod bench {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A number field of a JSON line.
fn field(json: &str, name: &str) -> u64 {
    let at = json
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("no {name} in {json}"));
    json[at + name.len() + 3..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number in {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keep_alive_and_watch_workloads_count_every_operation() {
    let cluster = Cluster::start("bench", 3, &[]);
    cluster.leader().await;
    let endpoints = cluster.endpoints();

    let granted = bench(&endpoints, &["lease", "--clients", "4", "--total", "40"]);
    assert_eq!((field(&granted, "ok"), field(&granted, "errors")), (40, 0));

    // Every lease the cluster holds, in turn, by clients on streams of their own.
    let renewed = bench(
        &endpoints,
        &["keep-alive", "--clients", "3", "--total", "100"],
    );
    assert_eq!((field(&renewed, "ok"), field(&renewed, "errors")), (100, 0));

    // 12 puts, each an event to each of 30 watchers spread over 2 streams.
    let watched = bench(
        &endpoints,
        &[
            "watch",
            "--watchers",
            "30",
            "--conns",
            "2",
            "--clients",
            "2",
            "--total",
            "12",
        ],
    );
    assert_eq!((field(&watched, "ok"), field(&watched, "errors")), (360, 0));
}
