//! Client commands speaking etcd's v3 gRPC API: `put`, `get`, `del`, `txn`, `watch`, `lease`,
//! `member list` and `status`. Output follows etcdctl's simple format, so either tool's
//! output reads the same.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::auth_client::AuthClient;
use synod_proto::etcdserverpb::cluster_client::ClusterClient;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::lease_client::LeaseClient;
use synod_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_proto::etcdserverpb::watch_client::WatchClient;
use synod_proto::mvccpb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where the cluster is.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Client addresses, comma-separated; the first that answers is used.
    #[arg(
        long,
        default_value = "127.0.0.1:2379",
        value_delimiter = ',',
        global = true
    )]
    pub endpoints: Vec<String>,
    /// Give up connecting after this many milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS", global = true)]
    pub dial_timeout_ms: u64,
    #[command(flatten)]
    pub tls: Tls,
    /// Authenticate as this user (`NAME:PASSWORD`, or NAME with --password), as etcdctl's
    /// --user; each request then carries the token the cluster gave.
    #[arg(long, value_name = "NAME[:PASSWORD]", global = true)]
    pub user: Option<String>,
    /// The password of --user.
    #[arg(long, value_name = "PASSWORD", global = true)]
    pub password: Option<String>,
}

/// A channel whose requests carry the token of `--user`, if one was given.
pub type Authed = tonic::service::interceptor::InterceptedService<Channel, WithToken>;

/// Puts a token in every request's metadata, where etcd's clients put it.
#[derive(Clone, Debug, Default)]
pub struct WithToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for WithToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("token", token.clone());
        }
        Ok(request)
    }
}

/// TLS to the cluster, with etcdctl's flag names.
#[derive(Args, Debug, Clone, Default)]
pub struct Tls {
    /// Speak TLS, and verify the servers' certificates against this CA (PEM).
    #[arg(long, value_name = "FILE", global = true)]
    pub cacert: Option<PathBuf>,
    /// Present this client certificate (PEM), for servers run with --client-cert-auth; its
    /// common name is the user it authenticates as.
    #[arg(long, value_name = "FILE", global = true, requires = "tls_key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(
        long = "key",
        id = "tls_key",
        value_name = "FILE",
        global = true,
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
}

impl Tls {
    /// An endpoint for `endpoint` (`host:port` or a URL): `https://` and TLS with --cacert.
    pub fn endpoint(&self, endpoint: &str) -> anyhow::Result<Endpoint> {
        let Some(ca) = &self.cacert else {
            return Endpoint::from_shared(url(endpoint))
                .with_context(|| format!("{endpoint} is not an address"));
        };
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        let https = if endpoint.contains("://") {
            endpoint.replacen("http://", "https://", 1)
        } else {
            format!("https://{endpoint}")
        };
        Endpoint::from_shared(https)
            .with_context(|| format!("{endpoint} is not an address"))?
            .tls_config(config)
            .context("the TLS settings do not work")
    }
}

/// `http://` in front of a bare address.
pub fn url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

impl Connection {
    /// A channel to one endpoint, authenticated as --user if given.
    pub async fn channel_to(&self, endpoint: &str) -> anyhow::Result<Authed> {
        let channel = self
            .tls
            .endpoint(endpoint)?
            .connect_timeout(Duration::from_millis(self.dial_timeout_ms))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {endpoint}"))?;
        let token = match &self.user {
            Some(user) => self.authenticate(&channel, user).await?,
            None => None,
        };
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel,
            WithToken(token),
        ))
    }

    /// Logs in as `user` (`NAME:PASSWORD` or NAME with --password); returns the token, or
    /// none while auth is off (as etcd's clients, which go on without one).
    async fn authenticate(
        &self,
        channel: &Channel,
        user: &str,
    ) -> anyhow::Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>> {
        let (name, password) = match (user.split_once(':'), &self.password) {
            (Some((name, password)), None) => (name, password),
            (None, Some(password)) => (user, password.as_str()),
            (Some(_), Some(_)) => bail!("--password given, and a password in --user too"),
            (None, None) => bail!("give --user NAME:PASSWORD, or --password"),
        };
        let request = pb::AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        };
        let token = match AuthClient::new(channel.clone()).authenticate(request).await {
            Ok(answer) => answer.into_inner().token,
            Err(s) if s.message() == "etcdserver: authentication is not enabled" => {
                return Ok(None);
            }
            Err(s) => bail!("{}", s.message()),
        };
        token
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("the cluster answered a token that is not text"))
    }

    /// One endpoint's answer to Maintenance.Status.
    pub async fn status(&self, endpoint: &str) -> anyhow::Result<pb::StatusResponse> {
        let mut client = MaintenanceClient::new(self.channel_to(endpoint).await?);
        client
            .status(pb::StatusRequest {})
            .await
            .map_err(grpc)
            .map(|r| r.into_inner())
    }

    /// A channel to the first endpoint that answers.
    pub async fn channel(&self) -> anyhow::Result<Authed> {
        let mut last = None;
        for endpoint in &self.endpoints {
            match self.channel_to(endpoint).await {
                Ok(channel) => return Ok(channel),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no --endpoints given")))
    }
}

/// A key and where its range ends.
#[derive(Args, Debug, Clone)]
pub struct KeyRange {
    /// The key (or the first key of a range).
    key: String,
    /// The end of the range, exclusive.
    range_end: Option<String>,
    /// Every key starting with KEY.
    #[arg(long)]
    prefix: bool,
    /// Every key from KEY on.
    #[arg(long)]
    from_key: bool,
}

impl KeyRange {
    /// The key (the first of the range).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key and range end, as etcd's API takes them.
    pub fn bytes(&self) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let key = self.key.as_bytes().to_vec();
        let end = match (&self.range_end, self.prefix, self.from_key) {
            (Some(end), false, false) => end.as_bytes().to_vec(),
            (None, true, false) => prefix_end(&key),
            (None, false, true) => vec![0],
            (None, false, false) => Vec::new(),
            _ => bail!("give one of a range end, --prefix or --from-key"),
        };
        // Every key: etcd's clients send an empty prefix, or from an empty key, as from "\0"
        // (a range without a key is refused).
        if key.is_empty() && (self.prefix || self.from_key) {
            return Ok((vec![0], vec![0]));
        }
        Ok((key, end))
    }
}

/// The first key after every key starting with `prefix` (etcd's rule; `\0` means "to the end").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `put KEY VALUE`.
#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    connection: Connection,
    /// The key.
    key: String,
    /// The value (optional with --ignore-value).
    value: Option<String>,
    /// Attach the key to this lease (hexadecimal, as `lease grant` prints it).
    #[arg(long)]
    lease: Option<String>,
    /// Print the value the key had before.
    #[arg(long)]
    prev_kv: bool,
    /// Keep the current value (update the lease only).
    #[arg(long)]
    ignore_value: bool,
    /// Keep the current lease.
    #[arg(long)]
    ignore_lease: bool,
}

/// `get KEY [END]`.
#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    range: KeyRange,
    /// At most this many keys (0: all).
    #[arg(long, default_value_t = 0)]
    limit: i64,
    /// Read as of this revision (0: the latest).
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// `l` linearizable (through the leader) or `s` serializable (this node's state).
    #[arg(long, default_value = "l")]
    consistency: String,
    /// Keys only, no values.
    #[arg(long)]
    keys_only: bool,
    /// Only how many keys match.
    #[arg(long)]
    count_only: bool,
    /// Values only, no keys.
    #[arg(long)]
    print_value_only: bool,
}

/// `del KEY [END]`.
#[derive(Args, Debug)]
pub struct DelArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    range: KeyRange,
    /// Print the deleted keys and values.
    #[arg(long)]
    prev_kv: bool,
}

/// `txn --compare ... --then ... --else ...`.
#[derive(Args, Debug)]
pub struct TxnArgs {
    #[command(flatten)]
    connection: Connection,
    /// A comparison, etcdctl's syntax: `value("k") = "v"`, `mod(k) > 5`, `create(k) = 0`,
    /// `version(k) != 2`, `lease(k) = 694d...`. All must hold.
    #[arg(long = "compare", value_name = "CMP")]
    compares: Vec<String>,
    /// An operation when they hold: `put k v`, `get k [end]`, `del k [end]` (`--prefix` at
    /// the end makes a prefix of the key).
    #[arg(long = "then", value_name = "OP")]
    success: Vec<String>,
    /// An operation when they do not.
    #[arg(long = "else", value_name = "OP")]
    failure: Vec<String>,
}

/// `watch KEY [END]`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    range: KeyRange,
    /// Start from this revision (0: from now).
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Print each key's previous value too.
    #[arg(long)]
    prev_kv: bool,
    /// Stop after this many events (0: never).
    #[arg(long, default_value_t = 0)]
    count: usize,
}

/// `lease ...`.
#[derive(Args, Debug)]
pub struct LeaseArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: LeaseCommand,
}

#[derive(Subcommand, Debug)]
enum LeaseCommand {
    /// Grant a lease of TTL seconds.
    Grant { ttl: i64 },
    /// Revoke a lease, deleting its keys.
    Revoke { id: String },
    /// Keep a lease alive until interrupted (or once).
    KeepAlive {
        id: String,
        #[arg(long)]
        once: bool,
    },
    /// A lease's TTL, time left and (with --keys) keys.
    Timetolive {
        id: String,
        #[arg(long)]
        keys: bool,
    },
    /// Every lease.
    List,
}

/// `member ...`.
#[derive(Args, Debug)]
pub struct MemberArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: MemberCommand,
}

#[derive(Subcommand, Debug)]
enum MemberCommand {
    /// Every member with its URLs.
    List,
    /// Adds a member reached at --peer-urls (raft, multi-paxos, basic-paxos); prints how to
    /// start it, as etcdctl does.
    Add {
        /// The new member's name (its --name).
        name: String,
        /// Where its peers will reach it: http://HOST:PORT, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add it as a learner, which receives the log but does not vote until promoted.
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member, by the hex id `member list` shows.
    Remove {
        /// The member's id, in hex.
        id: String,
    },
    /// Makes a learner that has caught up a voter.
    Promote {
        /// The learner's id, in hex.
        id: String,
    },
    /// Changes where a member's peers reach it.
    Update {
        /// The member's id, in hex.
        id: String,
        /// Its new peer URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
    },
}

/// A member id as etcdctl writes it: hex.
fn member_id(text: &str) -> anyhow::Result<u64> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| {
        anyhow::anyhow!("bad member ID '{text}' (hex, as `member list` shows it): {e}")
    })
}

fn print_members(members: &[pb::Member]) {
    for m in members {
        let started = if m.name.is_empty() {
            "unstarted"
        } else {
            "started"
        };
        println!(
            "{:x}, {started}, {}, {}, {}, {}",
            m.id,
            m.name,
            m.peer_ur_ls.join(","),
            m.client_ur_ls.join(","),
            m.is_learner
        );
    }
}

/// `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    connection: Connection,
}

/// `health`.
#[derive(Args, Debug)]
pub struct HealthArgs {
    #[command(flatten)]
    connection: Connection,
    /// Give up on an endpoint's read after this many milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    command_timeout_ms: u64,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A gRPC failure as etcdctl shows it.
pub(crate) fn grpc(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

fn lease_id(text: &str) -> anyhow::Result<i64> {
    i64::from_str_radix(text.trim_start_matches("0x"), 16)
        .with_context(|| format!("{text} is not a lease id (hexadecimal, as `lease grant` prints)"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn print_kv(kv: &mvccpb::KeyValue) {
    println!("{}\n{}", text(&kv.key), text(&kv.value));
}

/// Runs `put`.
pub fn put(args: PutArgs) -> anyhow::Result<ExitCode> {
    let value = match (&args.value, args.ignore_value) {
        (Some(v), false) => v.clone(),
        (None, true) => String::new(),
        (Some(_), true) => bail!("give no value with --ignore-value"),
        (None, false) => bail!("give a value (or --ignore-value)"),
    };
    let lease = args
        .lease
        .as_deref()
        .map(lease_id)
        .transpose()?
        .unwrap_or(0);
    runtime()?.block_on(async {
        let mut kv = KvClient::new(args.connection.channel().await?);
        let response = kv
            .put(pb::PutRequest {
                key: args.key.into_bytes().into(),
                value: value.into_bytes().into(),
                lease,
                prev_kv: args.prev_kv,
                ignore_value: args.ignore_value,
                ignore_lease: args.ignore_lease,
            })
            .await
            .map_err(grpc)?
            .into_inner();
        println!("OK");
        if let Some(prev) = &response.prev_kv {
            print_kv(prev);
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn range_request(args: &GetArgs) -> anyhow::Result<pb::RangeRequest> {
    let (key, range_end) = args.range.bytes()?;
    let serializable = match args.consistency.as_str() {
        "l" => false,
        "s" => true,
        other => bail!("--consistency {other}: use l (linearizable) or s (serializable)"),
    };
    Ok(pb::RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        limit: args.limit,
        revision: args.rev,
        serializable,
        keys_only: args.keys_only,
        count_only: args.count_only,
        ..Default::default()
    })
}

/// Runs `get`.
pub fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let request = range_request(&args)?;
    runtime()?.block_on(async {
        let mut kv = KvClient::new(args.connection.channel().await?);
        let response = kv.range(request).await.map_err(grpc)?.into_inner();
        if args.count_only {
            println!("{}", response.count);
        }
        for kv in &response.kvs {
            if args.keys_only {
                println!("{}", text(&kv.key));
            } else if args.print_value_only {
                println!("{}", text(&kv.value));
            } else {
                print_kv(kv);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `del`.
pub fn del(args: DelArgs) -> anyhow::Result<ExitCode> {
    let (key, range_end) = args.range.bytes()?;
    runtime()?.block_on(async {
        let mut kv = KvClient::new(args.connection.channel().await?);
        let response = kv
            .delete_range(pb::DeleteRangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                prev_kv: args.prev_kv,
            })
            .await
            .map_err(grpc)?
            .into_inner();
        println!("{}", response.deleted);
        for kv in &response.prev_kvs {
            print_kv(kv);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Splits on spaces, keeping "quoted words" whole.
fn words(line: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut word = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => word.extend(chars.next()),
                    Some(c) => word.push(c),
                    None => bail!("an unclosed quote in `{line}`"),
                }
            }
            words.push(word);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            words.push(word);
        }
    }
    Ok(words)
}

/// Parses `target(key) op value`, etcdctl's comparison syntax.
pub fn parse_compare(line: &str) -> anyhow::Result<pb::Compare> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let bad = || format!("`{line}` is not a comparison like value(\"k\") = \"v\" or mod(k) > 3");
    let open = line.find('(').with_context(bad)?;
    let close = line.rfind(')').with_context(bad)?;
    if close < open {
        bail!(bad());
    }
    let target = line[..open].trim();
    let key = line[open + 1..close].trim().trim_matches('"').to_string();
    let rest = words(&line[close + 1..])?;
    let [op, value] = rest.as_slice() else {
        bail!(bad());
    };
    let result = match op.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        _ => bail!("`{op}` is not one of = != < > in `{line}`"),
    };
    let number = || {
        value
            .parse::<i64>()
            .with_context(|| format!("`{value}` is not a number in `{line}`"))
    };
    let (target, union) = match target {
        "value" | "val" | "v" => (
            CompareTarget::Value,
            TargetUnion::Value(value.clone().into_bytes().into()),
        ),
        "version" | "ver" => (CompareTarget::Version, TargetUnion::Version(number()?)),
        "create" | "c" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number()?),
        ),
        "mod" | "m" => (CompareTarget::Mod, TargetUnion::ModRevision(number()?)),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(lease_id(value)?)),
        other => bail!("`{other}` is not one of value, version, create, mod, lease in `{line}`"),
    };
    Ok(pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into_bytes().into(),
        target_union: Some(union),
        range_end: Default::default(),
    })
}

/// Parses `put k v`, `get k [end] [--prefix]` or `del k [end] [--prefix]`.
pub fn parse_op(line: &str) -> anyhow::Result<pb::RequestOp> {
    use pb::request_op::Request;
    let mut words = words(line)?;
    let prefix = words.last().is_some_and(|w| w == "--prefix");
    if prefix {
        words.pop();
    }
    let range = |words: &[String]| -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let key = words
            .get(1)
            .with_context(|| format!("`{line}` names no key"))?
            .as_bytes()
            .to_vec();
        let end = match (words.get(2), prefix) {
            (Some(end), false) => end.as_bytes().to_vec(),
            (None, true) => prefix_end(&key),
            (None, false) => Vec::new(),
            (Some(_), true) => bail!("`{line}`: a range end or --prefix, not both"),
        };
        Ok((key, end))
    };
    let request = match words.first().map(String::as_str) {
        Some("put") => {
            let [_, key, value] = words.as_slice() else {
                bail!("`{line}`: put takes a key and a value");
            };
            Request::RequestPut(pb::PutRequest {
                key: key.clone().into_bytes().into(),
                value: value.clone().into_bytes().into(),
                ..Default::default()
            })
        }
        Some("get") => {
            let (key, range_end) = range(&words)?;
            Request::RequestRange(pb::RangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                ..Default::default()
            })
        }
        Some("del") => {
            let (key, range_end) = range(&words)?;
            Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                prev_kv: false,
            })
        }
        _ => bail!("`{line}` is not put, get or del"),
    };
    Ok(pb::RequestOp {
        request: Some(request),
    })
}

fn print_responses(responses: &[pb::ResponseOp]) {
    use pb::response_op::Response;
    for response in responses {
        match &response.response {
            Some(Response::ResponsePut(_)) => println!("OK"),
            Some(Response::ResponseRange(r)) => r.kvs.iter().for_each(print_kv),
            Some(Response::ResponseDeleteRange(d)) => println!("{}", d.deleted),
            Some(Response::ResponseTxn(t)) => print_responses(&t.responses),
            None => {}
        }
    }
}

/// Runs `txn`.
pub fn txn(args: TxnArgs) -> anyhow::Result<ExitCode> {
    let request = pb::TxnRequest {
        compare: args
            .compares
            .iter()
            .map(|c| parse_compare(c))
            .collect::<anyhow::Result<_>>()?,
        success: args
            .success
            .iter()
            .map(|o| parse_op(o))
            .collect::<anyhow::Result<_>>()?,
        failure: args
            .failure
            .iter()
            .map(|o| parse_op(o))
            .collect::<anyhow::Result<_>>()?,
    };
    runtime()?.block_on(async {
        let mut kv = KvClient::new(args.connection.channel().await?);
        let response = kv.txn(request).await.map_err(grpc)?.into_inner();
        println!(
            "{}",
            if response.succeeded {
                "SUCCESS"
            } else {
                "FAILURE"
            }
        );
        println!();
        print_responses(&response.responses);
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `watch`: prints events as etcdctl does until interrupted (or --count events).
pub fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let (key, range_end) = args.range.bytes()?;
    runtime()?.block_on(async {
        let mut client = WatchClient::new(args.connection.channel().await?);
        let (requests, rx) = tokio::sync::mpsc::channel(1);
        requests
            .send(pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                    pb::WatchCreateRequest {
                        key: key.into(),
                        range_end: range_end.into(),
                        start_revision: args.rev,
                        prev_kv: args.prev_kv,
                        ..Default::default()
                    },
                )),
            })
            .await
            .context("the watch stream closed")?;
        let mut stream = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(grpc)?
            .into_inner();
        let mut seen = 0;
        while let Some(response) = stream.message().await.map_err(grpc)? {
            if response.canceled {
                bail!("watch canceled: {}", response.cancel_reason);
            }
            for event in response.events {
                let kind = if event.r#type == mvccpb::event::EventType::Delete as i32 {
                    "DELETE"
                } else {
                    "PUT"
                };
                println!("{kind}");
                if let Some(prev) = &event.prev_kv {
                    print_kv(prev);
                }
                if let Some(kv) = &event.kv {
                    print_kv(kv);
                }
                seen += 1;
                if args.count > 0 && seen >= args.count {
                    drop(requests);
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        bail!("the server ended the watch")
    })
}

/// Runs `lease ...`.
pub fn lease(args: LeaseArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut leases = LeaseClient::new(args.connection.channel().await?);
        match args.command {
            LeaseCommand::Grant { ttl } => {
                let r = leases
                    .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
                    .await
                    .map_err(grpc)?
                    .into_inner();
                println!("lease {:x} granted with TTL({}s)", r.id, r.ttl);
            }
            LeaseCommand::Revoke { id } => {
                let id = lease_id(&id)?;
                leases
                    .lease_revoke(pb::LeaseRevokeRequest { id })
                    .await
                    .map_err(grpc)?;
                println!("lease {id:x} revoked");
            }
            LeaseCommand::KeepAlive { id, once } => {
                let id = lease_id(&id)?;
                let (requests, rx) = tokio::sync::mpsc::channel(1);
                let mut stream = leases
                    .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .map_err(grpc)?
                    .into_inner();
                loop {
                    requests
                        .send(pb::LeaseKeepAliveRequest { id })
                        .await
                        .context("the keep-alive stream closed")?;
                    let Some(r) = stream.message().await.map_err(grpc)? else {
                        bail!("the server ended the keep-alive stream");
                    };
                    if r.ttl <= 0 {
                        bail!("lease {id:x} expired or revoked");
                    }
                    println!("lease {id:x} keepalived with TTL({})", r.ttl);
                    if once {
                        return Ok(ExitCode::SUCCESS);
                    }
                    tokio::time::sleep(Duration::from_secs((r.ttl as u64 / 3).max(1))).await;
                }
            }
            LeaseCommand::Timetolive { id, keys } => {
                let id = lease_id(&id)?;
                let r = leases
                    .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys })
                    .await
                    .map_err(grpc)?
                    .into_inner();
                if r.ttl < 0 {
                    println!("lease {id:x} already expired");
                } else if keys {
                    let names: Vec<String> = r.keys.iter().map(|k| text(k)).collect();
                    println!(
                        "lease {id:x} granted with TTL({}s), remaining({}s), attached keys({names:?})",
                        r.granted_ttl, r.ttl
                    );
                } else {
                    println!(
                        "lease {id:x} granted with TTL({}s), remaining({}s)",
                        r.granted_ttl, r.ttl
                    );
                }
            }
            LeaseCommand::List => {
                let r = leases
                    .lease_leases(pb::LeaseLeasesRequest {})
                    .await
                    .map_err(grpc)?
                    .into_inner();
                println!("found {} leases", r.leases.len());
                for lease in r.leases {
                    println!("{:x}", lease.id);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `member list`.
pub fn member(args: MemberArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut cluster = ClusterClient::new(args.connection.channel().await?);
        let cluster_id = |h: Option<pb::ResponseHeader>| h.map_or(0, |h| h.cluster_id);
        match args.command {
            MemberCommand::List => {
                let r = cluster
                    .member_list(pb::MemberListRequest {
                        linearizable: false,
                    })
                    .await
                    .map_err(grpc)?
                    .into_inner();
                print_members(&r.members);
            }
            MemberCommand::Add {
                name,
                peer_urls,
                learner,
            } => {
                let r = cluster
                    .member_add(pb::MemberAddRequest {
                        peer_ur_ls: peer_urls,
                        is_learner: learner,
                    })
                    .await
                    .map_err(grpc)?
                    .into_inner();
                let id = r.member.as_ref().map_or(0, |m| m.id);
                let kind = if learner { "learner" } else { "member" };
                println!(
                    "Member {id:x} added to cluster {:x} as a {kind}",
                    cluster_id(r.header)
                );
                // As etcdctl prints it: the list the new member starts with, by name.
                let list: Vec<String> = r
                    .members
                    .iter()
                    .flat_map(|m| {
                        let name = if m.id == id { name.clone() } else { m.name.clone() };
                        m.peer_ur_ls.iter().map(move |u| format!("{name}={u}"))
                    })
                    .collect();
                println!();
                println!("ETCD_NAME=\"{name}\"");
                println!("ETCD_INITIAL_CLUSTER=\"{}\"", list.join(","));
                println!("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
                println!();
                println!(
                    "start it with: synod server --name {name} --initial-cluster {} --initial-cluster-state existing --data-dir <empty dir> ...",
                    list.join(",")
                );
            }
            MemberCommand::Remove { id } => {
                let id = member_id(&id)?;
                let r = cluster
                    .member_remove(pb::MemberRemoveRequest { id })
                    .await
                    .map_err(grpc)?
                    .into_inner();
                println!("Member {id:x} removed from cluster {:x}", cluster_id(r.header));
            }
            MemberCommand::Promote { id } => {
                let id = member_id(&id)?;
                let r = cluster
                    .member_promote(pb::MemberPromoteRequest { id })
                    .await
                    .map_err(grpc)?
                    .into_inner();
                println!("Member {id:x} promoted in cluster {:x}", cluster_id(r.header));
            }
            MemberCommand::Update { id, peer_urls } => {
                let id = member_id(&id)?;
                let r = cluster
                    .member_update(pb::MemberUpdateRequest {
                        id,
                        peer_ur_ls: peer_urls,
                    })
                    .await
                    .map_err(grpc)?
                    .into_inner();
                println!("Member {id:x} updated in cluster {:x}", cluster_id(r.header));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `status`: one line per endpoint, as `etcdctl endpoint status` prints.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut failed = false;
        for endpoint in &args.connection.endpoints {
            match args.connection.status(endpoint).await {
                Ok(s) => {
                    let member = s.header.map(|h| h.member_id).unwrap_or_default();
                    println!(
                        "{endpoint}, {member:x}, {}, {} B, leader {:x}{}, term {}, index {}, applied {}",
                        s.version,
                        s.db_size,
                        s.leader,
                        if s.leader == member { " (this one)" } else { "" },
                        s.raft_term,
                        s.raft_index,
                        s.raft_applied_index
                    );
                }
                Err(e) => {
                    failed = true;
                    println!("{endpoint}: {e:#}");
                }
            }
        }
        Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
    })
}

/// Runs `health`: as `etcdctl endpoint health`, a linearizable read of the key `health`
/// through each endpoint, which only succeeds when the cluster has a quorum the endpoint
/// reaches. One line per endpoint; exit code 1 if any is unhealthy (container health checks
/// use it).
pub fn health(args: HealthArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut failed = false;
        for endpoint in &args.connection.endpoints {
            let started = std::time::Instant::now();
            let answer = async {
                let mut client = KvClient::new(args.connection.channel_to(endpoint).await?);
                let mut request = tonic::Request::new(pb::RangeRequest {
                    key: b"health".to_vec().into(),
                    ..Default::default()
                });
                request.set_timeout(Duration::from_millis(args.command_timeout_ms));
                client.range(request).await.map_err(grpc)
            };
            match answer.await {
                Ok(_) => println!(
                    "{endpoint} is healthy: successfully committed proposal: took = {:?}",
                    started.elapsed()
                ),
                Err(e) => {
                    failed = true;
                    println!("{endpoint} is unhealthy: failed to commit proposal: {e:#}");
                }
            }
        }
        Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_parse_as_etcdctl_writes_them() {
        let c = parse_compare(r#"value("k 1") = "a b""#).expect("value");
        assert_eq!(c.key.as_ref(), b"k 1");
        assert_eq!(
            c.target_union,
            Some(pb::compare::TargetUnion::Value(b"a b".to_vec().into()))
        );
        let c = parse_compare("mod(k) > 5").expect("mod");
        assert_eq!(c.result, pb::compare::CompareResult::Greater as i32);
        assert_eq!(
            c.target_union,
            Some(pb::compare::TargetUnion::ModRevision(5))
        );
        for bad in [
            "value k = 1",
            "mod(k) > x",
            "size(k) = 1",
            "ver(k) ~ 1",
            "val(k) =",
        ] {
            assert!(parse_compare(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn operations_parse_with_ranges_and_prefixes() {
        use pb::request_op::Request;
        match parse_op("get a/ --prefix").expect("get").request {
            Some(Request::RequestRange(r)) => assert_eq!(r.range_end.as_ref(), b"a0"),
            other => panic!("{other:?}"),
        }
        match parse_op(r#"put k "two words""#).expect("put").request {
            Some(Request::RequestPut(p)) => assert_eq!(p.value.as_ref(), b"two words"),
            other => panic!("{other:?}"),
        }
        for bad in ["put k", "jump k", "get", "del a b --prefix", "put \"k v"] {
            assert!(parse_op(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn every_key_is_asked_for_from_the_zero_byte_as_etcds_clients_do() {
        let range = |key: &str, prefix, from_key| KeyRange {
            key: key.to_string(),
            range_end: None,
            prefix,
            from_key,
        };
        let every = Some((vec![0], vec![0]));
        assert_eq!(range("", true, false).bytes().ok(), every);
        assert_eq!(range("", false, true).bytes().ok(), every);
        assert_eq!(
            range("a", false, true).bytes().ok(),
            Some((b"a".to_vec(), vec![0]))
        );
        assert_eq!(range("", false, false).bytes().ok(), Some((vec![], vec![])));
    }
}
