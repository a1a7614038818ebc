//! `synod server`: one member of a cluster, serving etcd's v3 API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;
use synod_core::NodeId;
use synod_node::compactor::AutoCompaction;
use synod_node::config::{parse_named_cluster, ServerConfig};
use synod_node::tls::TlsFiles;
use tokio::io::AsyncReadExt;

/// Flags of `synod server`. Every setting can also come from `--config FILE` (TOML, the same
/// names with `-` or `_`); a flag given on the command line wins over the file.
#[derive(Args, Debug, Default, Clone)]
pub struct ServerArgs {
    /// A TOML file with any of the settings below.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This member's id in --initial-cluster (1 or more).
    #[arg(long)]
    pub id: Option<u64>,
    /// A human-readable name (default: n<id>); `n<id>` also works in place of --id.
    #[arg(long)]
    pub name: Option<String>,
    /// Every member's peer address: `1=127.0.0.1:2380,2=127.0.0.1:2390,...`, or etcd's
    /// `infra0=http://10.0.1.10:2380,...` (members numbered in the order listed; --name picks
    /// this one).
    #[arg(long, value_name = "LIST")]
    pub initial_cluster: Option<String>,
    /// etcd's flag: `new` (the default) starts a new cluster. `existing` joins a running one
    /// (raft, multi-paxos, basic-paxos) after `member add`: give the list `member add`
    /// prints, this member's --name, and an empty data directory; the member learns its id
    /// from the cluster.
    #[arg(long, value_name = "STATE")]
    pub initial_cluster_state: Option<String>,
    /// Mixed into the cluster id, so two clusters with the same members refuse each other.
    #[arg(long)]
    pub cluster_token: Option<String>,
    /// Where clients connect (etcd's v3 gRPC API), e.g. 127.0.0.1:2379.
    #[arg(long, value_name = "ADDR")]
    pub listen_client: Option<String>,
    /// The URL other members give clients for this one (default: http://<listen-client>).
    #[arg(long, value_name = "URL")]
    pub advertise_client: Option<String>,
    /// Where peers connect (default: this member's address in --initial-cluster).
    #[arg(long, value_name = "ADDR")]
    pub listen_peer: Option<String>,
    /// Prometheus metrics and /health over HTTP, e.g. 127.0.0.1:2381 (off by default).
    #[arg(long, value_name = "ADDR")]
    pub listen_metrics: Option<String>,
    /// The log, hard state and snapshots live here.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The replication protocol: raft, multi-paxos, basic-paxos, zab, sync, dns or gossip
    /// (default raft). A data directory keeps the protocol it was first written with.
    #[arg(long)]
    pub protocol: Option<String>,
    /// Gossip: replicas that must hold a write before it is answered: one, quorum or all
    /// (default one).
    #[arg(long, value_name = "LEVEL")]
    pub write_level: Option<String>,
    /// Gossip: replicas a linearizable range consults: one, quorum or all (default one). A
    /// serializable range always reads this member.
    #[arg(long, value_name = "LEVEL")]
    pub read_level: Option<String>,
    /// One engine tick, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// Leader heartbeats, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// The shortest election timeout, in milliseconds (each node picks from [t, 2t)).
    #[arg(long, value_name = "MS")]
    pub election_timeout_ms: Option<u64>,
    /// Take a snapshot and trim the log every this many applied entries.
    #[arg(long, value_name = "N")]
    pub snapshot_every: Option<u64>,
    /// The largest request accepted, in bytes (etcd's default: 1.5 MiB; at most 32 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// The most operations in one transaction.
    #[arg(long, value_name = "N")]
    pub max_txn_ops: Option<usize>,
    /// Raise a NOSPACE alarm, and refuse writes that add data, when the store would hold
    /// more than this many bytes of keys and values, history included (etcd's flag; 0: the
    /// default of 2 GiB; negative: no quota).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    pub quota_backend_bytes: Option<i64>,
    /// A window of revisions the state machine itself keeps for watches and reads in the
    /// past, compacting older ones as writes go on (default 0: history is kept until a client
    /// or --auto-compaction-retention compacts it, as in etcd).
    #[arg(long, value_name = "N")]
    pub history_revisions: Option<i64>,
    /// How --auto-compaction-retention counts: `periodic` (a time, the default) or
    /// `revision` (a number of revisions), as etcd's flag.
    #[arg(long, value_name = "MODE")]
    pub auto_compaction_mode: Option<String>,
    /// History the leader keeps, compacting the rest: a time for `periodic` (`1h`, `30m`;
    /// a bare number is hours, as in etcd) or a count for `revision`. 0, the default: none
    /// is compacted on its own.
    #[arg(long, value_name = "RETENTION")]
    pub auto_compaction_retention: Option<String>,
    /// Give up on a request after this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// How often idle watchers that asked for progress notifications get one, as a Go
    /// duration like etcd's (`10m`, `5s`, `500ms`; default 10m).
    #[arg(
        long,
        alias = "experimental-watch-progress-notify-interval",
        value_name = "DURATION"
    )]
    pub watch_progress_notify_interval: Option<String>,
    /// How often the leader compares every member's data at one revision and raises a
    /// CORRUPT alarm for a member that differs, as a Go duration (`5m`); default: never.
    #[arg(
        long,
        alias = "experimental-corrupt-check-time",
        value_name = "DURATION"
    )]
    pub corrupt_check_time: Option<String>,
    /// Threads serving requests (default: one per core). Nodes that share a machine do
    /// better with a share of its cores each; with 1, the node loop and every connection
    /// share one thread.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// How long a token from Authenticate is good for, in seconds (etcd's, default 300).
    #[arg(long, value_name = "SECONDS")]
    pub auth_token_ttl: Option<u64>,
    /// TLS on the client port: this server's certificate (PEM). Clients must then speak
    /// TLS, and the advertised client URL is `https://`.
    #[arg(long, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// The private key of --cert-file (PEM).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The CA that clients' certificates must chain to (PEM); with it alone, a certificate
    /// is checked if a client presents one.
    #[arg(long, value_name = "FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require every client to present a certificate that chains to --trusted-ca-file.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// TLS on the peer link: this member's certificate (PEM), presented both when it dials
    /// and when it is dialled, and valid for the host of its peer address.
    #[arg(long, value_name = "FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of --peer-cert-file (PEM).
    #[arg(long, value_name = "FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// The CA every member's certificate must chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require a member that dials to present a certificate that chains to
    /// --peer-trusted-ca-file and is issued for the host of its peer address.
    #[arg(long)]
    pub peer_client_cert_auth: bool,
    /// Stop gracefully when standard input closes (how `synod cluster up` stops its nodes).
    #[arg(long, hide = true)]
    pub exit_on_stdin_eof: bool,
    /// For fault tests (`synod nemesis`): run this node's clock at this rate against true
    /// time, e.g. 1.1 for 10% fast (0.8 to 1.25). Refused unless
    /// SYNOD_ALLOW_INJECTED_BUGS=1 is set.
    #[arg(long, hide = true, value_name = "RATE")]
    pub clock_rate: Option<f64>,
    /// For fault tests only: break a protocol rule on purpose (see `InjectedBug`). Refused
    /// unless SYNOD_ALLOW_INJECTED_BUGS=1 is set, so no production member runs one by mistake.
    #[arg(long, hide = true, value_name = "NAME")]
    pub inject_bug: Option<String>,
}

/// The same settings as a TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    id: Option<u64>,
    name: Option<String>,
    #[serde(alias = "initial_cluster")]
    initial_cluster: Option<String>,
    #[serde(alias = "initial_cluster_state")]
    initial_cluster_state: Option<String>,
    #[serde(alias = "cluster_token")]
    cluster_token: Option<String>,
    #[serde(alias = "listen_client")]
    listen_client: Option<String>,
    #[serde(alias = "advertise_client")]
    advertise_client: Option<String>,
    #[serde(alias = "listen_peer")]
    listen_peer: Option<String>,
    #[serde(alias = "listen_metrics")]
    listen_metrics: Option<String>,
    #[serde(alias = "data_dir")]
    data_dir: Option<PathBuf>,
    protocol: Option<String>,
    #[serde(alias = "write_level")]
    write_level: Option<String>,
    #[serde(alias = "read_level")]
    read_level: Option<String>,
    #[serde(alias = "tick_ms")]
    tick_ms: Option<u64>,
    #[serde(alias = "heartbeat_ms")]
    heartbeat_ms: Option<u64>,
    #[serde(alias = "election_timeout_ms")]
    election_timeout_ms: Option<u64>,
    #[serde(alias = "snapshot_every")]
    snapshot_every: Option<u64>,
    #[serde(alias = "max_request_bytes")]
    max_request_bytes: Option<usize>,
    #[serde(alias = "max_txn_ops")]
    max_txn_ops: Option<usize>,
    #[serde(alias = "quota_backend_bytes")]
    quota_backend_bytes: Option<i64>,
    #[serde(alias = "history_revisions")]
    history_revisions: Option<i64>,
    #[serde(alias = "auto_compaction_mode")]
    auto_compaction_mode: Option<String>,
    #[serde(alias = "auto_compaction_retention")]
    auto_compaction_retention: Option<String>,
    #[serde(alias = "request_timeout_ms")]
    request_timeout_ms: Option<u64>,
    #[serde(alias = "watch_progress_notify_interval")]
    watch_progress_notify_interval: Option<String>,
    #[serde(alias = "corrupt_check_time")]
    corrupt_check_time: Option<String>,
    threads: Option<usize>,
    #[serde(alias = "auth_token_ttl")]
    auth_token_ttl: Option<u64>,
    #[serde(alias = "cert_file")]
    cert_file: Option<PathBuf>,
    #[serde(alias = "key_file")]
    key_file: Option<PathBuf>,
    #[serde(alias = "trusted_ca_file")]
    trusted_ca_file: Option<PathBuf>,
    #[serde(alias = "client_cert_auth")]
    client_cert_auth: Option<bool>,
    #[serde(alias = "peer_cert_file")]
    peer_cert_file: Option<PathBuf>,
    #[serde(alias = "peer_key_file")]
    peer_key_file: Option<PathBuf>,
    #[serde(alias = "peer_trusted_ca_file")]
    peer_trusted_ca_file: Option<PathBuf>,
    #[serde(alias = "peer_client_cert_auth")]
    peer_client_cert_auth: Option<bool>,
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid config file", path.display()))
}

/// Command-line flags over the file's settings over the defaults; also the thread count.
pub fn resolve(args: &ServerArgs) -> anyhow::Result<(ServerConfig, Option<usize>)> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    macro_rules! pick {
        ($field:ident) => {
            args.$field.clone().or(file.$field.clone())
        };
    }
    let protocol = pick!(protocol).unwrap_or_else(|| "raft".into());
    let name = pick!(name);
    let join = match pick!(initial_cluster_state).as_deref() {
        None | Some("new") => false,
        Some("existing") => true,
        Some(other) => bail!("--initial-cluster-state {other}: new or existing"),
    };
    if pick!(id).is_none() && name.is_none() {
        bail!("give this member's --id (or its --name in --initial-cluster)");
    }
    let cluster_text = pick!(initial_cluster).context(
        "give --initial-cluster, e.g. 1=127.0.0.1:2380,2=127.0.0.1:2390,3=127.0.0.1:2400",
    )?;
    let list = parse_named_cluster(&cluster_text)?;
    let id = match pick!(id) {
        Some(id) => id,
        // Checked above: without an id there is a name.
        None => {
            let name = name.as_deref().unwrap_or_default();
            list.id_of(name).map(|id| id.0).with_context(|| {
                format!(
                    "--name {name} is not in --initial-cluster; give --id, or a name listed there"
                )
            })?
        }
    };
    let cluster: BTreeMap<NodeId, String> = list.members.clone();
    let client = pick!(listen_client).unwrap_or_else(|| "127.0.0.1:2379".into());
    let data_dir = pick!(data_dir).unwrap_or_else(|| PathBuf::from(format!("synod-data/n{id}")));
    let mut config = ServerConfig::new(NodeId(id), cluster, client, data_dir);
    config.protocol = protocol;
    config.join = join;
    if let Some(level) = pick!(write_level) {
        config.write_level = level
            .parse()
            .map_err(|e| anyhow::anyhow!("--write-level: {e}"))?;
    }
    if let Some(level) = pick!(read_level) {
        config.read_level = level
            .parse()
            .map_err(|e| anyhow::anyhow!("--read-level: {e}"))?;
    }
    config.name = match name {
        Some(name) => name,
        None => list
            .names
            .get(&NodeId(id))
            .cloned()
            .unwrap_or_else(|| format!("n{id}")),
    };
    config.member_names = list.names;
    if let Some(token) = pick!(cluster_token) {
        config.cluster_token = token;
    }
    config.advertise_client_url = pick!(advertise_client);
    config.peer_listen = pick!(listen_peer);
    config.metrics_listen = pick!(listen_metrics);
    let ms = Duration::from_millis;
    if let Some(v) = pick!(tick_ms) {
        config.tick = ms(v);
    }
    if let Some(v) = pick!(heartbeat_ms) {
        config.heartbeat_interval = ms(v);
    }
    if let Some(v) = pick!(election_timeout_ms) {
        config.election_timeout = ms(v);
    }
    if let Some(v) = pick!(request_timeout_ms) {
        config.request_timeout = ms(v);
    }
    if let Some(v) = pick!(watch_progress_notify_interval) {
        config.watch_progress_interval =
            go_duration(&v).with_context(|| format!("--watch-progress-notify-interval {v}"))?;
    }
    if let Some(v) = pick!(corrupt_check_time) {
        let every = go_duration(&v).with_context(|| format!("--corrupt-check-time {v}"))?;
        config.corrupt_check_interval = (!every.is_zero()).then_some(every);
    }
    if let Some(v) = pick!(snapshot_every) {
        config.snapshot_every = v;
    }
    if let Some(v) = pick!(max_request_bytes) {
        config.max_request_bytes = v;
    }
    if let Some(v) = pick!(max_txn_ops) {
        config.max_txn_ops = v;
    }
    if let Some(v) = pick!(quota_backend_bytes) {
        config.quota_backend_bytes = if v == 0 {
            ServerConfig::DEFAULT_QUOTA_BYTES
        } else {
            v
        };
    }
    if let Some(v) = pick!(history_revisions) {
        config.history_revisions = v;
    }
    config.auto_compaction = auto_compaction(
        pick!(auto_compaction_mode).as_deref(),
        pick!(auto_compaction_retention).as_deref(),
    )?;
    if let Some(ttl) = pick!(auth_token_ttl) {
        if ttl == 0 {
            bail!("--auth-token-ttl must be at least 1 second");
        }
        config.auth_token_ttl = Duration::from_secs(ttl);
    }
    config.client_tls = tls_files(
        "",
        pick!(cert_file),
        pick!(key_file),
        pick!(trusted_ca_file),
        args.client_cert_auth || file.client_cert_auth == Some(true),
    )?;
    config.peer_tls = tls_files(
        "peer-",
        pick!(peer_cert_file),
        pick!(peer_key_file),
        pick!(peer_trusted_ca_file),
        args.peer_client_cert_auth || file.peer_client_cert_auth == Some(true),
    )?;
    if config.peer_tls.is_none() && cluster_text.contains("https://") {
        bail!("--initial-cluster names https:// peer URLs: give --peer-cert-file, --peer-key-file and --peer-trusted-ca-file for TLS between members");
    }
    // Both test switches weaken the member on purpose; neither is taken by accident.
    let allowed = std::env::var("SYNOD_ALLOW_INJECTED_BUGS").as_deref() == Ok("1");
    if let Some(rate) = args.clock_rate {
        if !allowed {
            bail!("--clock-rate skews this member's clock on purpose, for fault tests; it needs SYNOD_ALLOW_INJECTED_BUGS=1 in the environment");
        }
        config.clock_rate = rate;
    }
    if let Some(name) = &args.inject_bug {
        if !allowed {
            bail!("--inject-bug breaks the protocol on purpose, for tests; it needs SYNOD_ALLOW_INJECTED_BUGS=1 in the environment");
        }
        config.injected_bug = Some(name.parse()?);
    }
    config.validate()?;
    let threads = pick!(threads);
    if threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    Ok((config, threads))
}

/// One side's TLS flags (`--cert-file`... or `--peer-cert-file`...), checked to fit
/// together: a certificate needs its key, and asking for client certificates needs a CA.
fn tls_files(
    side: &str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    trusted_ca: Option<PathBuf>,
    client_cert_auth: bool,
) -> anyhow::Result<Option<TlsFiles>> {
    match (cert, key) {
        (None, None) => {
            if client_cert_auth || trusted_ca.is_some() {
                bail!("--{side}client-cert-auth and --{side}trusted-ca-file need TLS: give --{side}cert-file and --{side}key-file too");
            }
            Ok(None)
        }
        (Some(_), None) => bail!("--{side}cert-file needs its --{side}key-file"),
        (None, Some(_)) => bail!("--{side}key-file needs its --{side}cert-file"),
        (Some(cert), Some(key)) => {
            if client_cert_auth && trusted_ca.is_none() {
                bail!("--{side}client-cert-auth needs --{side}trusted-ca-file: the CA client certificates must chain to");
            }
            if side == "peer-" && trusted_ca.is_none() {
                bail!("--peer-cert-file needs --peer-trusted-ca-file: members check each other's certificates against it");
            }
            Ok(Some(TlsFiles {
                cert,
                key,
                trusted_ca,
                client_cert_auth,
            }))
        }
    }
}

/// etcd's auto-compaction flags read: `None` when the retention is absent or zero.
fn auto_compaction(
    mode: Option<&str>,
    retention: Option<&str>,
) -> anyhow::Result<Option<AutoCompaction>> {
    let retention = retention.unwrap_or("0").trim();
    match mode.unwrap_or("periodic") {
        "periodic" => {
            // A bare number is hours, as etcd reads it.
            let every = match retention.parse::<u64>() {
                Ok(hours) => Duration::from_secs(hours.checked_mul(3600).with_context(|| {
                    format!("--auto-compaction-retention {retention}: too many hours")
                })?),
                Err(_) => go_duration(retention)
                    .with_context(|| format!("--auto-compaction-retention {retention}"))?,
            };
            Ok((!every.is_zero()).then_some(AutoCompaction::Periodic(every)))
        }
        "revision" => {
            let keep: i64 = retention.parse().ok().filter(|&n| n >= 0).with_context(|| {
                format!("--auto-compaction-retention {retention}: revision mode takes a number of revisions")
            })?;
            Ok((keep > 0).then_some(AutoCompaction::Revision(keep)))
        }
        other => bail!("--auto-compaction-mode {other}: periodic or revision"),
    }
}

/// A duration written as Go writes them, which is how etcd's flags take them: one or more
/// numbers with a unit each (`h`, `m`, `s`, `ms`, `us`, `ns`), e.g. `1h30m` or `1.5s`.
pub fn go_duration(text: &str) -> anyhow::Result<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        bail!("an empty duration");
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .with_context(|| format!("{text:?} has a number without a unit (use s, ms, m or h)"))?;
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| anyhow::anyhow!("{text:?} is not a duration like 10m or 500ms"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            other => bail!("{text:?}: unknown unit {other:?} (use h, m, s, ms, us or ns)"),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| anyhow::anyhow!("{text:?} is out of range"))
}

/// Runs one member until SIGINT or SIGTERM (or its disk fails).
pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let (config, threads) = resolve(&args)?;
    crate::logging::init();
    if let Some(bug) = config.injected_bug {
        tracing::warn!(
            ?bug,
            "this member breaks its protocol on purpose (--inject-bug)"
        );
    }
    if config.clock_rate != 1.0 {
        tracing::warn!(
            rate = config.clock_rate,
            "this member's clock is skewed (--clock-rate)"
        );
    }
    // One thread runs everything on a current-thread runtime: the node loop, the peer links
    // and every client connection take turns on it, so whatever one turn answered leaves in
    // one write per connection. A multi-thread runtime with a single worker did the same work
    // with a write for nearly every response and 25% more CPU per put (docs/benchmarks.md).
    let workers = threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        runtime.worker_threads(workers);
        runtime
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let exit = runtime.block_on(async move {
        let mut server = synod_node::server::start(config).await?;
        let reason = tokio::select! {
            reason = stop_signal(args.exit_on_stdin_eof) => reason,
            failure = server.failed() => {
                tracing::error!(reason = %failure, "the node stopped");
                return Ok(ExitCode::from(1));
            }
        };
        tracing::info!(%reason, "shutting down");
        match server.shutdown().await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(reason) => {
                tracing::error!(%reason, "shutdown was not clean");
                Ok(ExitCode::from(1))
            }
        }
    });
    // A read of standard input (`--exit-on-stdin-eof`) may still be blocked in the runtime's
    // blocking pool: exit without waiting for it (a member that stopped on its own, removed
    // from the cluster, would otherwise wait for its standard input to close).
    runtime.shutdown_background();
    exit
}

/// Resolves on SIGINT, SIGTERM or (when asked) the end of standard input.
async fn stop_signal(on_stdin_eof: bool) -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    let stdin_closed = async {
        if !on_stdin_eof {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate => "SIGTERM",
        _ = stdin_closed => "standard input closed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("synod-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("n2.toml");
        std::fs::write(
            &file,
            "id = 2\ninitial-cluster = \"1=127.0.0.1:2380,2=127.0.0.1:2390\"\ntick_ms = 5\nheartbeat-ms = 50\n",
        )
        .expect("write");
        let args = ServerArgs {
            config: Some(file.clone()),
            heartbeat_ms: Some(40),
            ..Default::default()
        };
        let (config, threads) = resolve(&args).expect("valid");
        assert_eq!(threads, None);
        assert_eq!(config.id, NodeId(2));
        assert_eq!(config.tick, Duration::from_millis(5));
        assert_eq!(config.heartbeat_interval, Duration::from_millis(40));
        assert_eq!(config.name, "n2");

        std::fs::write(&file, "id = 2\nelection = 5\n").expect("write");
        let error = resolve(&args).expect_err("unknown key").to_string();
        assert!(error.contains("not a valid config file"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_or_wrong_settings_say_what_to_give() {
        let no_id = ServerArgs::default();
        assert!(resolve(&no_id)
            .expect_err("no id")
            .to_string()
            .contains("--id"));
        let paxos = ServerArgs {
            id: Some(1),
            initial_cluster: Some("1=127.0.0.1:2380".into()),
            protocol: Some("paxos".into()),
            ..Default::default()
        };
        let error = resolve(&paxos).expect_err("paxos").to_string();
        assert!(
            error.contains("not a protocol") && error.contains("multi-paxos"),
            "{error}"
        );
        let stranger = ServerArgs {
            id: Some(4),
            initial_cluster: Some("1=127.0.0.1:2380".into()),
            ..Default::default()
        };
        let error = resolve(&stranger).expect_err("not a member").to_string();
        assert!(error.contains("not in --initial-cluster"), "{error}");
    }

    #[test]
    fn etcds_cluster_flags_work_as_its_runbooks_write_them() {
        let args = ServerArgs {
            name: Some("infra1".into()),
            initial_cluster: Some(
                "infra0=http://127.0.0.1:2380,infra1=http://127.0.0.1:2390,infra2=http://127.0.0.1:2400".into(),
            ),
            initial_cluster_state: Some("new".into()),
            ..Default::default()
        };
        let (config, _) = resolve(&args).expect("etcd's form");
        assert_eq!(config.id, NodeId(2));
        assert_eq!(config.name, "infra1");
        assert_eq!(config.member_names[&NodeId(3)], "infra2");
        assert_eq!(config.peer_listen(), "127.0.0.1:2390");

        let joining = ServerArgs {
            initial_cluster_state: Some("existing".into()),
            ..args.clone()
        };
        let (config, _) = resolve(&joining).expect("existing");
        assert!(config.join);
        assert_eq!(
            config.peer_listen(),
            "127.0.0.1:2390",
            "its own entry, by name"
        );
        let stranger = ServerArgs {
            name: Some("infra9".into()),
            initial_cluster: Some("infra0=http://127.0.0.1:2380".into()),
            ..Default::default()
        };
        let error = format!("{:#}", resolve(&stranger).expect_err("not listed"));
        assert!(error.contains("not in --initial-cluster"), "{error}");
    }

    #[test]
    fn durations_are_read_as_go_and_etcd_write_them() {
        let d = |t: &str| go_duration(t).expect(t);
        assert_eq!(d("10m"), Duration::from_secs(600));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("0"), Duration::ZERO);
        for bad in ["", "10", "5x", "m", "1..5s", "-1s"] {
            assert!(go_duration(bad).is_err(), "{bad:?} was taken");
        }
        let args = ServerArgs {
            id: Some(1),
            initial_cluster: Some("1=127.0.0.1:2380".into()),
            watch_progress_notify_interval: Some("0s".into()),
            ..Default::default()
        };
        let error = format!("{:#}", resolve(&args).expect_err("zero"));
        assert!(error.contains("longer than zero"), "{error}");
    }

    #[test]
    fn auto_compaction_flags_read_as_etcd_reads_them() {
        let read = |mode: Option<&str>, retention: Option<&str>| {
            auto_compaction(mode, retention).expect("valid")
        };
        assert_eq!(read(None, None), None);
        assert_eq!(read(None, Some("0")), None);
        assert_eq!(
            read(None, Some("1")),
            Some(AutoCompaction::Periodic(Duration::from_secs(3600)))
        );
        assert_eq!(
            read(Some("periodic"), Some("30m")),
            Some(AutoCompaction::Periodic(Duration::from_secs(1800)))
        );
        assert_eq!(
            read(Some("revision"), Some("1000")),
            Some(AutoCompaction::Revision(1000))
        );
        assert!(auto_compaction(Some("revision"), Some("1h")).is_err());
        assert!(auto_compaction(Some("hourly"), Some("1")).is_err());
        assert!(auto_compaction(None, Some("soon")).is_err());
    }
}
