//! The members of a nemesis run: one `synod server` process in each host's namespace, which
//! the nemesis kills, pauses and restarts.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::hosts::Hosts;

/// Ports every member uses on its own address.
pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

/// How to start the members.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `synod` executable.
    pub exe: PathBuf,
    /// The protocol they run.
    pub protocol: String,
    /// Passed on to every member.
    pub election_timeout_ms: u64,
    /// Passed on to every member, if set.
    pub snapshot_every: Option<u64>,
    /// Passed on to every member: a bug it breaks on purpose.
    pub inject_bug: Option<String>,
    /// Where data directories and logs go.
    pub dir: PathBuf,
}

/// One member's process.
struct Member {
    id: u64,
    child: Option<Child>,
    paused: bool,
    clock_rate: f64,
}

/// The member processes.
pub struct Members {
    launch: Launch,
    initial_cluster: String,
    members: Vec<Member>,
}

impl Members {
    /// Starts one member on each host, member i's clock at `rates[i - 1]`.
    pub fn start(hosts: &Hosts, launch: Launch, rates: &[f64]) -> anyhow::Result<Members> {
        let initial_cluster = hosts
            .members()
            .iter()
            .map(|h| format!("{}={}:{PEER_PORT}", h.id, h.address))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Members {
            launch,
            initial_cluster,
            members: hosts
                .members()
                .iter()
                .map(|h| Member {
                    id: h.id,
                    child: None,
                    paused: false,
                    clock_rate: rates.get((h.id - 1) as usize).copied().unwrap_or(1.0),
                })
                .collect(),
        };
        for id in 1..=members.members.len() as u64 {
            members.spawn(hosts, id)?;
        }
        Ok(members)
    }

    fn member(&mut self, id: u64) -> &mut Member {
        &mut self.members[(id - 1) as usize]
    }

    /// Where the members keep their data and logs.
    pub fn dir(&self) -> &Path {
        &self.launch.dir
    }

    /// Where member `id` logs.
    pub fn log(&self, id: u64) -> PathBuf {
        self.launch.dir.join(format!("n{id}.log"))
    }

    /// Starts member `id` (again), at its clock rate, on the data it left.
    pub fn spawn(&mut self, hosts: &Hosts, id: u64) -> anyhow::Result<()> {
        let host = hosts.host(id);
        let log_path = self.log(id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let launch = &self.launch;
        let rate = self.members[(id - 1) as usize].clock_rate;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &host.namespace])
            .arg(&launch.exe)
            .arg("server")
            .args(["--id", &id.to_string()])
            .args(["--initial-cluster", &self.initial_cluster])
            .args([
                "--listen-client",
                &format!("{}:{CLIENT_PORT}", host.address),
            ])
            .args(["--listen-peer", &format!("{}:{PEER_PORT}", host.address)])
            .arg("--data-dir")
            .arg(launch.dir.join(format!("n{id}")))
            .args(["--protocol", &launch.protocol])
            .args([
                "--election-timeout-ms",
                &launch.election_timeout_ms.to_string(),
            ])
            .args([
                "--heartbeat-ms",
                &(launch.election_timeout_ms / 10).to_string(),
            ])
            .args(["--threads", "1"])
            .args(["--clock-rate", &rate.to_string()])
            .env("SYNOD_ALLOW_INJECTED_BUGS", "1")
            // If the harness dies, its members follow it (their standard input closes).
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().context("cannot share a log file")?)
            .stderr(log);
        if let Some(every) = launch.snapshot_every {
            command.args(["--snapshot-every", &every.to_string()]);
        }
        if let Some(bug) = &launch.inject_bug {
            command.args(["--inject-bug", bug]);
        }
        // `ip netns exec` enters the namespace and then executes the server in its own place,
        // so the child's pid is the server's: signals reach the server itself.
        let child = command
            .spawn()
            .with_context(|| format!("cannot start member {id}"))?;
        let member = self.member(id);
        member.child = Some(child);
        member.paused = false;
        Ok(())
    }

    /// Sets the rate member `id`'s clock runs at from its next start.
    pub fn set_clock_rate(&mut self, id: u64, rate: f64) {
        self.member(id).clock_rate = rate;
    }

    /// Member `id`'s clock rate.
    pub fn clock_rate(&self, id: u64) -> f64 {
        self.members[(id - 1) as usize].clock_rate
    }

    fn signal(&mut self, id: u64, signal: &str) -> anyhow::Result<()> {
        let Some(child) = self.member(id).child.as_ref() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .context("cannot run kill")?;
        anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
        Ok(())
    }

    /// Kills member `id` at once (SIGKILL): no chance to flush or say goodbye.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        if self.member(id).paused {
            self.signal(id, "-CONT")?;
        }
        let member = self.member(id);
        member.paused = false;
        if let Some(mut child) = member.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Freezes member `id` (SIGSTOP): its sockets stay open and nothing answers.
    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "-STOP")?;
        self.member(id).paused = true;
        Ok(())
    }

    /// Lets a frozen member `id` go on (SIGCONT).
    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        if self.member(id).paused {
            self.signal(id, "-CONT")?;
            self.member(id).paused = false;
        }
        Ok(())
    }

    /// Whether member `id`'s process is running (not killed; it may be paused).
    pub fn running(&self, id: u64) -> bool {
        self.members[(id - 1) as usize].child.is_some()
    }

    /// Members whose process exited on its own, with how: a member that stops without
    /// being killed has failed, and the run with it.
    pub fn exited(&mut self) -> Vec<(u64, String)> {
        let mut exited = Vec::new();
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((member.id, status.to_string()));
                    member.child = None;
                }
            }
        }
        exited
    }

    /// Resumes every paused member and starts every killed one.
    pub fn revive_all(&mut self, hosts: &Hosts) -> anyhow::Result<()> {
        for id in 1..=self.members.len() as u64 {
            self.resume(id)?;
            if !self.running(id) {
                self.spawn(hosts, id)?;
            }
        }
        Ok(())
    }

    /// Stops every member gracefully (closing its standard input), killing what does not stop
    /// within a few seconds. Returns the members that did not stop cleanly, and how.
    pub fn stop_all(&mut self) -> Vec<(u64, String)> {
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut() {
                if member.paused {
                    let _ = Command::new("kill")
                        .args(["-CONT", &child.id().to_string()])
                        .status();
                    member.paused = false;
                }
                drop(child.stdin.take());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut unclean = Vec::new();
        for member in &mut self.members {
            let Some(mut child) = member.child.take() else {
                continue;
            };
            loop {
                match child.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => {
                        unclean.push((member.id, status.to_string()));
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        unclean.push((member.id, "did not stop within 10 s".to_string()));
                        break;
                    }
                }
            }
        }
        unclean
    }

    /// The last lines of member `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        tail(&self.log(id), lines)
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
