//! Real `synod server` processes on loopback for tests: free ports picked at run time, data
//! in a temporary directory, every process killed when the cluster is dropped.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::{Channel, Endpoint};

/// The `synod` executable Cargo built for these tests.
pub const SYNOD: &str = env!("CARGO_BIN_EXE_synod");

/// Ports for test servers come from below the kernel's ephemeral range (32768 and up on
/// Linux). A port the kernel hands out for "port 0" is free when asked but can be taken by any
/// outgoing connection before the server binds it; ports down here are never handed out that
/// way, and the counter keeps the tests of one binary from picking the same one twice.
const PORTS_LOW: u32 = 10_000;
const PORTS_HIGH: u32 = 32_000;
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The first of `len` consecutive ports nobody listens on right now, for commands that take a
/// base port and for single servers (`len` 1).
pub fn free_port_block(len: u16) -> u16 {
    use std::sync::atomic::Ordering;
    let span = PORTS_HIGH - PORTS_LOW;
    // The process id spreads the binaries of concurrent `cargo test` runs apart.
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let taken = NEXT_PORT.fetch_add(u32::from(len), Ordering::Relaxed);
        let base = PORTS_LOW + (offset + taken) % span;
        if base + u32::from(len) > PORTS_HIGH {
            continue;
        }
        let base = base as u16;
        let all_free =
            (base..base + len).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no block of {len} free ports between {PORTS_LOW} and {PORTS_HIGH}");
}

/// A port nobody listens on right now, and that no other test of this binary was given.
pub fn free_port() -> u16 {
    free_port_block(1)
}

/// A fresh directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir =
        std::env::temp_dir().join(format!("synod-proc-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// Sends a signal by name (`STOP`, `CONT`, `TERM`) through the shell's `kill`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{name} {pid}"))
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// One member.
pub struct Member {
    pub id: u64,
    pub client: String,
    pub peer: String,
    pub metrics: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// For a member that joined a running cluster: the cluster list it was started with
    /// (`member add`'s), with which it starts as `--initial-cluster-state existing`.
    pub joined_with: Option<String>,
}

/// A cluster of `synod server` processes.
pub struct Cluster {
    pub root: PathBuf,
    pub members: Vec<Member>,
    pub initial_cluster: String,
    pub extra: Vec<String>,
    /// Run with short election and heartbeat timeouts, so tests see failovers quickly.
    short_timeouts: bool,
    /// TLS on clients and peers, with client certificates required.
    pub tls: Option<ClientCerts>,
    /// Keep the directory (and logs) for a look after a failure.
    keep: bool,
}

impl Cluster {
    /// Starts `n` members with short timeouts (election 500 ms, heartbeat 50 ms) and `extra`
    /// flags on each.
    pub fn start(name: &str, n: u64, extra: &[&str]) -> Cluster {
        Cluster::build(name, n, extra, |_| None, true, false)
    }

    /// As [`Cluster::start`], with TLS on the client port and between members, client
    /// certificates required on both (a CA and certificates made for the cluster).
    pub fn start_tls(name: &str, n: u64, extra: &[&str]) -> Cluster {
        Cluster::build(name, n, extra, |_| None, true, true)
    }

    /// As [`Cluster::start`], with member `id`'s data directory where `data_dir(id)` says
    /// (under the cluster's directory when it says nothing).
    pub fn start_with_data_dir(
        name: &str,
        n: u64,
        extra: &[&str],
        data_dir: impl Fn(u64) -> Option<PathBuf>,
    ) -> Cluster {
        Cluster::build(name, n, extra, data_dir, true, false)
    }

    /// As [`Cluster::start`], with the server's default timeouts (as `cluster up` runs).
    pub fn start_with_default_timeouts(name: &str, n: u64, extra: &[&str]) -> Cluster {
        Cluster::build(name, n, extra, |_| None, false, false)
    }

    fn build(
        name: &str,
        n: u64,
        extra: &[&str],
        data_dir: impl Fn(u64) -> Option<PathBuf>,
        short_timeouts: bool,
        tls: bool,
    ) -> Cluster {
        let root = temp_dir(name);
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let tls = tls.then(|| {
            let certs = make_certs(&root.join("tls"));
            extra.extend(synod_node::tls::authority::server_flags(&root.join("tls")));
            certs
        });
        let members: Vec<Member> = (1..=n)
            .map(|id| Member {
                id,
                client: format!("127.0.0.1:{}", free_port()),
                peer: format!("127.0.0.1:{}", free_port()),
                metrics: format!("127.0.0.1:{}", free_port()),
                data_dir: data_dir(id).unwrap_or_else(|| root.join(format!("n{id}"))),
                log: root.join(format!("n{id}.log")),
                child: None,
                joined_with: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.id, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            root,
            members,
            initial_cluster,
            extra,
            short_timeouts,
            tls,
            keep: false,
        };
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster
    }

    pub fn member(&self, id: u64) -> &Member {
        &self.members[(id - 1) as usize]
    }

    fn member_mut(&mut self, id: u64) -> &mut Member {
        &mut self.members[(id - 1) as usize]
    }

    /// Ports and a directory for member `id`, not started: the member `member add` will
    /// add next. Its peer URL is `http://` and its `peer`.
    pub fn prepare_member(&mut self, id: u64) -> &Member {
        assert_eq!(
            id as usize,
            self.members.len() + 1,
            "members are numbered in order"
        );
        self.members.push(Member {
            id,
            client: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            metrics: format!("127.0.0.1:{}", free_port()),
            data_dir: self.root.join(format!("n{id}")),
            log: self.root.join(format!("n{id}.log")),
            child: None,
            joined_with: None,
        });
        self.member(id)
    }

    /// Starts a prepared member to join the running cluster, with the cluster list
    /// `member add` printed (`id=host:port,...`, this member included).
    pub fn join(&mut self, id: u64, cluster_list: &str) {
        self.member_mut(id).joined_with = Some(cluster_list.to_string());
        self.spawn(id);
    }

    /// Starts (or restarts) member `id`.
    pub fn spawn(&mut self, id: u64) {
        let mut initial = self.initial_cluster.clone();
        let mut extra = self.extra.clone();
        if let Some(list) = &self.member(id).joined_with {
            initial = list.clone();
            extra.extend(["--initial-cluster-state".into(), "existing".into()]);
        }
        if self.short_timeouts {
            let timeouts = ["--election-timeout-ms", "500", "--heartbeat-ms", "50"];
            extra.splice(0..0, timeouts.map(String::from));
        }
        if let Some(certs) = &self.tls {
            let client = self.member(id).client.clone();
            let mut members = TLS_MEMBERS.lock().unwrap_or_else(|p| p.into_inner());
            members.insert(client, certs.clone());
        }
        let member = self.member_mut(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("open the log");
        let child = Command::new(SYNOD)
            .arg("server")
            .args(["--id", &id.to_string()])
            .args(["--initial-cluster", &initial])
            .args(["--listen-client", &member.client])
            .args(["--listen-metrics", &member.metrics])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(&extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the log"))
            .stderr(log)
            .spawn()
            .expect("start synod server");
        member.child = Some(child);
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.member_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self, id: u64) -> ExitStatus {
        let mut child = self.member_mut(id).child.take().expect("a running member");
        signal(child.id(), "TERM");
        wait_exit(&mut child, Duration::from_secs(15)).expect("exits after SIGTERM")
    }

    pub fn pid(&self, id: u64) -> u32 {
        self.member(id).child.as_ref().expect("running").id()
    }

    /// Every client address, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.member(id).log).unwrap_or_default()
    }

    /// The last lines of a member's log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        let log = self.log_of(id);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Keeps the directory when the test fails, and says where it is.
    pub fn keep_on_failure(&mut self) {
        self.keep = true;
    }

    /// Waits until the running members named in `among` agree on a leader among them.
    pub async fn leader_among(&self, among: &[u64], within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            let mut silent = Vec::new();
            for &id in among {
                match status(&self.member(id).client).await {
                    Some(status) => seen.push(status.leader),
                    None => silent.push(id),
                }
            }
            if silent.is_empty() && among.contains(&seen[0]) && seen.iter().all(|&l| l == seen[0]) {
                return seen[0];
            }
            if Instant::now() >= deadline {
                let logs: String = silent
                    .iter()
                    .map(|&id| {
                        format!(
                            "\n--- node {id} did not answer; its log ends:\n{}",
                            self.log_tail(id)
                        )
                    })
                    .collect();
                panic!("no agreed leader among {among:?} within {within:?}: {seen:?}{logs}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the members `among` agree on who keeps the lease clocks, one of them (the
    /// leader; under Basic Paxos, the keeper the log chose), as their metrics say.
    pub async fn lease_keeper_among(&self, among: &[u64], within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let seen: Vec<u64> = among
                .iter()
                .map(|&id| {
                    let metrics = http_get(&self.member(id).metrics, "/metrics");
                    metrics
                        .lines()
                        .find_map(|l| l.strip_prefix("synod_server_lease_keeper "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0)
                })
                .collect();
            if among.contains(&seen[0]) && seen.iter().all(|&k| k == seen[0]) {
                return seen[0];
            }
            assert!(
                Instant::now() < deadline,
                "no agreed lease keeper among {among:?} within {within:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the cluster serves: until its members agree on a leader (returned), or,
    /// under a protocol without one (Basic Paxos), until a write goes through every member.
    pub async fn ready(&self) -> Option<u64> {
        let protocol = self
            .extra
            .windows(2)
            .find(|w| w[0] == "--protocol")
            .map_or("raft", |w| w[1].as_str());
        if !synod_replica::has_leader(protocol) {
            for member in &self.members {
                put_until_ok(&member.client, "ready", "yes", Duration::from_secs(20)).await;
            }
            None
        } else {
            Some(self.leader().await)
        }
    }

    pub async fn leader(&self) -> u64 {
        let all: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        self.leader_among(&all, Duration::from_secs(20)).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() || self.keep {
            eprintln!("cluster data and logs kept in {}", self.root.display());
            for member in &self.members {
                let log = std::fs::read_to_string(&member.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- last lines of n{} ---", member.id);
                for line in &lines[lines.len().saturating_sub(15)..] {
                    eprintln!("{line}");
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a client presents to a member that runs TLS: the CA to check it against, and a
/// certificate (for `--client-cert-auth`), whose common name is `root`.
#[derive(Clone, Debug)]
pub struct ClientCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientCerts {
    /// etcdctl's flags for them.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca.display()),
            format!("--cert={}", self.cert.display()),
            format!("--key={}", self.key.display()),
        ]
    }
}

/// Client addresses of members that run TLS, and how to reach them: every helper here (and
/// the etcdctl tests' runner) looks an address up, so one test body runs with TLS or without.
static TLS_MEMBERS: std::sync::Mutex<std::collections::BTreeMap<String, ClientCerts>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// How to reach `address` (`host:port`, or a list or URL naming it first) if it runs TLS.
pub fn tls_of(address: &str) -> Option<ClientCerts> {
    let first = address.split(',').next().unwrap_or(address);
    let first = first.split_once("://").map_or(first, |(_, rest)| rest);
    let members = TLS_MEMBERS.lock().unwrap_or_else(|p| p.into_inner());
    members.get(first.trim_end_matches('/')).cloned()
}

/// A CA and certificates for a test cluster under `dir`: one for every member (clients and
/// peers, valid for 127.0.0.1) and a client certificate for `root`.
pub fn make_certs(dir: &Path) -> ClientCerts {
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    let files =
        synod_node::tls::authority::generate(dir, "test CA", &[("server", &hosts)], &["root"])
            .expect("make certificates");
    let (cert, key) = files.of("root").expect("root's");
    ClientCerts {
        ca: files.ca.clone(),
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    }
}

/// A channel to one client address; connects lazily, so a dead member fails per request.
pub fn channel(address: &str) -> Channel {
    let endpoint = match tls_of(address) {
        None => Endpoint::from_shared(format!("http://{address}")).expect("a valid address"),
        Some(certs) => {
            let read = |path: &PathBuf| std::fs::read(path).expect("read a certificate");
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(&certs.ca)))
                .identity(tonic::transport::Identity::from_pem(
                    read(&certs.cert),
                    read(&certs.key),
                ));
            Endpoint::from_shared(format!("https://{address}"))
                .expect("a valid address")
                .tls_config(tls)
                .expect("TLS settings")
        }
    };
    endpoint
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(3))
        .connect_lazy()
}

pub async fn status(address: &str) -> Option<pb::StatusResponse> {
    let mut client = MaintenanceClient::new(channel(address));
    client
        .status(pb::StatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

pub fn put_request(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

pub fn get_request(key: &str, serializable: bool) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.as_bytes().to_vec().into(),
        serializable,
        ..Default::default()
    }
}

/// Puts, retrying "no leader" and the like until `within` passes.
pub async fn put_until_ok(address: &str, key: &str, value: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let mut kv = KvClient::new(channel(address));
    loop {
        match kv.put(put_request(key, value)).await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "put {key} via {address}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of `key` (None: absent) by a read of the given kind.
pub async fn get(
    address: &str,
    key: &str,
    serializable: bool,
) -> Result<Option<String>, tonic::Status> {
    let mut kv = KvClient::new(channel(address));
    let response = kv.range(get_request(key, serializable)).await?.into_inner();
    Ok(response
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// The value of `key` by a read of the given kind, retried until one is answered within
/// `within` (a member that just started may not serve yet).
pub async fn get_until_ok(
    address: &str,
    key: &str,
    serializable: bool,
    within: Duration,
) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        match get(address, key, serializable).await {
            Ok(value) => return value,
            Err(e) => assert!(Instant::now() < deadline, "get {key} via {address}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of an HTTP GET of `path` on `address`, with its status line.
pub fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
}

/// Files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Runs `synod cluster up --nodes N` (and `extra` flags) on `data` until it says it is up; returns the process
/// and what it printed.
pub fn cluster_up(
    data: &std::path::Path,
    base: u16,
    nodes: u64,
    protocol: &str,
    extra: &[&str],
) -> (std::process::Child, Vec<String>) {
    use std::io::BufRead;
    let stderr_path = data.with_extension(format!("up{nodes}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = std::process::Command::new(SYNOD)
        .args(["cluster", "up", "--nodes", &nodes.to_string()])
        .args(["--protocol", protocol])
        .args(["--base-port", &base.to_string()])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start cluster up");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut banner = Vec::new();
    while !banner.iter().any(|l: &String| l.starts_with("Ctrl-C")) {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => banner.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("cluster up never said it was up: {banner:?}; its stderr:\n{said}");
            }
        }
    }
    (child, banner)
}
