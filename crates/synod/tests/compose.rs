//! The container image and the compose file: `scripts/docker-image.sh` builds the image (from
//! this test's binary), `compose.yaml` brings a three-member cluster up, etcdctl writes through
//! one member, the member is killed, the write is read back through another, and the killed
//! member, started again on its volume, serves it too.
//!
//! It needs a running Docker engine, a compose tool (`docker compose` or `docker-compose`) and
//! etcdctl; without them it says so and passes. CI has all three, so CI always runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The compose tool here: the Docker plugin, else the standalone one.
fn compose_tool() -> Option<Vec<&'static str>> {
    if succeeds("docker", &["compose", "version"]) {
        Some(vec!["docker", "compose"])
    } else if succeeds("docker-compose", &["version"]) {
        Some(vec!["docker-compose"])
    } else {
        None
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A compose project of this test's, taken down with its volumes and image when dropped.
struct Project {
    tool: Vec<&'static str>,
    name: String,
    image: String,
    ports: [u16; 3],
}

impl Project {
    fn command(&self, args: &[&str]) -> Output {
        let mut command = Command::new(self.tool[0]);
        command
            .args(&self.tool[1..])
            .args(["-p", &self.name, "-f"])
            .arg(repo().join("compose.yaml"))
            .args(args)
            .env("SYNOD_IMAGE", &self.image);
        for (i, port) in self.ports.iter().enumerate() {
            command.env(format!("SYNOD_PORT_{}", i + 1), port.to_string());
        }
        command.output().expect("run the compose tool")
    }

    fn container(&self, service: &str) -> String {
        let output = self.command(&["ps", "-q", service]);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn health(&self, service: &str) -> String {
        let output = Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{.State.Health.Status}}",
                &self.container(service),
            ])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn wait_healthy(&self, services: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let states: Vec<String> = services.iter().map(|s| self.health(s)).collect();
            if states.iter().all(|s| s == "healthy") {
                return;
            }
            if Instant::now() > deadline {
                let logs = self.command(&["logs", "--tail", "20"]);
                panic!(
                    "{services:?} not healthy in {within:?}: {states:?}\n{}",
                    String::from_utf8_lossy(&logs.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        self.command(&["down", "-v", "--timeout", "5"]);
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

fn etcdctl(port: u16, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=127.0.0.1:{port}"))
        .arg("--command-timeout=3s")
        .args(args)
        .output()
        .expect("run etcdctl")
}

/// Runs etcdctl until it succeeds or `within` passes; its standard output.
fn etcdctl_until_ok(port: u16, args: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let output = etcdctl(port, args);
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "etcdctl {args:?} via port {port}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn compose_runs_a_cluster_that_keeps_a_write_when_a_container_is_killed() {
    let Some(tool) = compose_tool() else {
        eprintln!("skipped: no docker compose here (CI has it)");
        return;
    };
    if !succeeds("docker", &["info"]) || !succeeds("etcdctl", &["version"]) {
        eprintln!("skipped: needs a running Docker engine and etcdctl (CI has both)");
        return;
    }
    let image = format!("synod:test-{}", std::process::id());
    let built = Command::new(repo().join("scripts/docker-image.sh"))
        .arg(&image)
        .env("SYNOD_BINARY", env!("CARGO_BIN_EXE_synod"))
        .output()
        .expect("run docker-image.sh");
    assert!(
        built.status.success(),
        "docker-image.sh: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let project = Project {
        tool,
        name: format!("synodtest{}", std::process::id()),
        image,
        ports: [free_port(), free_port(), free_port()],
    };
    let up = project.command(&["up", "-d"]);
    assert!(
        up.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    project.wait_healthy(&["synod1", "synod2", "synod3"], Duration::from_secs(90));

    let [first, second, _] = project.ports;
    etcdctl_until_ok(
        first,
        &["put", "greeting", "hello"],
        Duration::from_secs(10),
    );
    let killed = Command::new("docker")
        .args(["kill", &project.container("synod1")])
        .output()
        .expect("docker kill");
    assert!(killed.status.success(), "docker kill failed");
    let read = etcdctl_until_ok(
        second,
        &["get", "greeting", "--print-value-only"],
        Duration::from_secs(20),
    );
    assert_eq!(read.trim(), "hello");

    // Started again on its volume, the killed member serves the write too.
    let started = project.command(&["start", "synod1"]);
    assert!(started.status.success(), "compose start failed");
    project.wait_healthy(&["synod1"], Duration::from_secs(60));
    let read = etcdctl_until_ok(
        first,
        &["get", "greeting", "--print-value-only"],
        Duration::from_secs(20),
    );
    assert_eq!(read.trim(), "hello");
}
