//! What one server needs to know: who it is, who the others are, where to listen and store,
//! and how fast to tick. Validated before anything starts, with errors that say what to fix.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use synod_core::NodeId;
use thiserror::Error;

/// The largest request size limit a member takes. A request travels to the other members as
/// one log entry, in one message of the peer link (64 MiB at most, `transport`): the limit
/// leaves room for the entries batched with it and their framing. (etcd takes larger limits
/// but warns above 10 MiB; a larger entry here could never reach a follower, and every
/// write after it would wait behind it.)
pub const MAX_REQUEST_BYTES_LIMIT: usize = 32 << 20;

/// The settings of one server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This node's id; must appear in `initial_cluster`.
    pub id: NodeId,
    /// A human name, shown by `member list`.
    pub name: String,
    /// Where clients connect (gRPC), `host:port`.
    pub client_listen: String,
    /// The URL other nodes give clients to reach this one; defaults to `http://` plus
    /// `client_listen`.
    pub advertise_client_url: Option<String>,
    /// Where peers connect, `host:port`; defaults to this node's entry in `initial_cluster`.
    pub peer_listen: Option<String>,
    /// Every member and its peer address, this node included.
    pub initial_cluster: BTreeMap<NodeId, String>,
    /// Joins a running cluster (etcd's `--initial-cluster-state existing`): the node learns
    /// its id and the cluster's from the first member that dials it (after `member add`), and
    /// the membership from the leader's log. `id` then only picks this node's entry of
    /// `initial_cluster` (its name and peer address).
    pub join: bool,
    /// Every member's name, as `member list` shows it (`n<id>` unless named otherwise).
    pub member_names: BTreeMap<NodeId, String>,
    /// Mixed into the cluster id, so two clusters on one network cannot join by mistake.
    pub cluster_token: String,
    /// Where the log and snapshots live.
    pub data_dir: PathBuf,
    /// The replication protocol, one of [`synod_replica::PROTOCOL_NAMES`]. A data directory
    /// keeps the one it was first written with.
    pub protocol: String,
    /// Length of one engine tick.
    pub tick: Duration,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Shortest election timeout (timeouts are drawn from it to twice it).
    pub election_timeout: Duration,
    /// Snapshot after this many applied entries (0: never).
    pub snapshot_every: u64,
    /// Requests larger than this are refused with etcd's "request is too large".
    pub max_request_bytes: usize,
    /// Operations in one transaction at most (etcd's `--max-txn-ops`).
    pub max_txn_ops: usize,
    /// The space quota, in bytes of keys and values the store holds (history included):
    /// writes that would pass it raise a NOSPACE alarm and are refused, as etcd's
    /// `--quota-backend-bytes`. Negative: no quota.
    pub quota_backend_bytes: i64,
    /// History the leader compacts on its own (etcd's `--auto-compaction-*`); `None`, the
    /// default as in etcd, keeps it until a client compacts.
    pub auto_compaction: Option<crate::compactor::AutoCompaction>,
    /// How often the leader compares the members' data (etcd's
    /// `--experimental-corrupt-check-time`); `None`, the default as in etcd: never.
    pub corrupt_check_interval: Option<Duration>,
    /// A window of history the state machine itself keeps, compacting the rest as writes go
    /// on (every member alike); 0, the default, keeps it until compacted.
    pub history_revisions: i64,
    /// How long a client request may wait for the cluster before "request timed out".
    pub request_timeout: Duration,
    /// Where `/metrics` and `/health` are served over HTTP, if anywhere.
    pub metrics_listen: Option<String>,
    /// How often watches that asked for progress notifications get one when idle.
    pub watch_progress_interval: Duration,
    /// Gossip: replicas that must hold a write before it is answered.
    pub write_level: synod_gossip::Level,
    /// Gossip: replicas a linearizable range consults (a serializable one reads this node).
    pub read_level: synod_gossip::Level,
    /// How long a token from `Authenticate` is good for (etcd's `--auth-token-ttl`).
    pub auth_token_ttl: Duration,
    /// TLS on the client port (`--cert-file`, `--key-file`, `--trusted-ca-file`,
    /// `--client-cert-auth`); `None`: plain.
    pub client_tls: Option<crate::tls::TlsFiles>,
    /// TLS on the peer link (`--peer-cert-file`, ...); `None`: plain.
    pub peer_tls: Option<crate::tls::TlsFiles>,
    /// For fault tests: how fast this node's clock runs against true time (1.0: exactly).
    /// Every timer of the node is a count of ticks, so a rate of 1.1 makes its heartbeats,
    /// election timeouts and lease clocks all run 10% fast, as a drifting clock would.
    pub clock_rate: f64,
    /// For fault tests only: a protocol rule this node breaks on purpose, so a test can show
    /// that its checker catches the consequences. Never set in production.
    pub injected_bug: Option<InjectedBug>,
}

/// A protocol rule a server can be told to break (`synod server --inject-bug NAME`, a hidden
/// flag), so the real-host nemesis can prove it catches what the simulator catches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// Raft: a leader answers linearizable reads at once, without confirming with a quorum
    /// that it still leads, so a leader cut off from its followers serves stale reads.
    ReadWithoutConfirmation,
}

impl InjectedBug {
    /// Every bug by its flag value, with the protocol it applies to.
    pub const ALL: [(&'static str, &'static str, InjectedBug); 1] = [(
        "read-without-confirmation",
        "raft",
        InjectedBug::ReadWithoutConfirmation,
    )];

    /// The protocol whose rule this bug breaks.
    pub fn protocol(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, _, bug)| *bug == self)
            .map_or("raft", |(_, protocol, _)| protocol)
    }
}

impl std::str::FromStr for InjectedBug {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        Self::ALL
            .iter()
            .find(|(name, _, _)| *name == text)
            .map(|(_, _, bug)| *bug)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(name, _, _)| *name).collect();
                ConfigError::Invalid(format!(
                    "--inject-bug {text}: no such bug (there are: {})",
                    names.join(", ")
                ))
            })
    }
}

/// A setting that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The cluster list does not parse.
    #[error("--initial-cluster: {0}")]
    Cluster(String),
    /// This node is not in the cluster list.
    #[error("node id {0} is not in --initial-cluster (members: {1})")]
    NotAMember(u64, String),
    /// Times that contradict each other.
    #[error("{0}")]
    Timing(String),
    /// Anything else.
    #[error("{0}")]
    Invalid(String),
}

impl ServerConfig {
    /// etcd's default space quota: 2 GiB.
    pub const DEFAULT_QUOTA_BYTES: i64 = 2 << 30;

    /// Defaults for node `id` of `initial_cluster`, storing under `data_dir`.
    pub fn new(
        id: NodeId,
        initial_cluster: BTreeMap<NodeId, String>,
        client_listen: String,
        data_dir: PathBuf,
    ) -> Self {
        ServerConfig {
            id,
            name: format!("n{}", id.0),
            client_listen,
            advertise_client_url: None,
            peer_listen: None,
            member_names: initial_cluster
                .keys()
                .map(|id| (*id, format!("n{}", id.0)))
                .collect(),
            initial_cluster,
            join: false,
            cluster_token: "synod".into(),
            data_dir,
            protocol: "raft".into(),
            tick: Duration::from_millis(10),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            // etcd's default snapshot count. A snapshot stops applying while the store is
            // serialized (~100 ms for 100k keys of 256 bytes), so not too often.
            snapshot_every: 100_000,
            max_request_bytes: 3 << 19, // 1.5 MiB, etcd's default
            max_txn_ops: 128,
            quota_backend_bytes: Self::DEFAULT_QUOTA_BYTES,
            auto_compaction: None,
            corrupt_check_interval: None,
            history_revisions: 0,
            request_timeout: Duration::from_secs(5),
            metrics_listen: None,
            watch_progress_interval: Duration::from_secs(600),
            write_level: synod_gossip::Level::One,
            read_level: synod_gossip::Level::One,
            auth_token_ttl: Duration::from_secs(300),
            client_tls: None,
            peer_tls: None,
            clock_rate: 1.0,
            injected_bug: None,
        }
    }

    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.0 == 0 {
            return Err(ConfigError::Invalid(
                "node id 0 is reserved; use 1 or more".into(),
            ));
        }
        if !self.initial_cluster.contains_key(&self.id) {
            let members = self
                .initial_cluster
                .keys()
                .map(|id| id.0.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConfigError::NotAMember(self.id.0, members));
        }
        if !synod_replica::PROTOCOL_NAMES.contains(&self.protocol.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "--protocol {}: not a protocol this server runs (it runs {})",
                self.protocol,
                synod_replica::PROTOCOL_NAMES.join(", ")
            )));
        }
        if self.tick.is_zero() {
            return Err(ConfigError::Timing(
                "the tick must be longer than zero".into(),
            ));
        }
        if self.heartbeat_interval < self.tick {
            return Err(ConfigError::Timing(format!(
                "the heartbeat interval ({:?}) is shorter than a tick ({:?})",
                self.heartbeat_interval, self.tick
            )));
        }
        if self.election_timeout < self.heartbeat_interval * 5 {
            return Err(ConfigError::Timing(format!(
                "the election timeout ({:?}) should be at least 5 heartbeat intervals ({:?})",
                self.election_timeout,
                self.heartbeat_interval * 5
            )));
        }
        if self.max_request_bytes == 0 || self.max_txn_ops == 0 {
            return Err(ConfigError::Invalid(
                "request size and transaction limits must be at least 1".into(),
            ));
        }
        if self.max_request_bytes > MAX_REQUEST_BYTES_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "the request size limit ({} bytes) is above the {} MiB one log entry may take: \
                 a request travels to the other members as one entry in one message",
                self.max_request_bytes,
                MAX_REQUEST_BYTES_LIMIT >> 20
            )));
        }
        if self.watch_progress_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "the watch progress notify interval must be longer than zero".into(),
            ));
        }
        if !(0.8..=1.25).contains(&self.clock_rate) {
            return Err(ConfigError::Invalid(format!(
                "--clock-rate {}: must be between 0.8 and 1.25",
                self.clock_rate
            )));
        }
        if let Some(bug) = self.injected_bug {
            if bug.protocol() != self.protocol {
                return Err(ConfigError::Invalid(format!(
                    "--inject-bug: {bug:?} breaks a rule of {}, not of {}",
                    bug.protocol(),
                    self.protocol
                )));
            }
        }
        Ok(())
    }

    /// The peer address to listen on.
    pub fn peer_listen(&self) -> String {
        self.peer_listen
            .clone()
            .or_else(|| self.initial_cluster.get(&self.id).cloned())
            .unwrap_or_default()
    }

    /// The URL clients reach this node at.
    pub fn client_url(&self) -> String {
        self.advertise_client_url
            .clone()
            .unwrap_or_else(|| format!("{}://{}", self.client_scheme(), self.client_listen))
    }

    /// `https` with TLS on the client port, `http` without.
    pub fn client_scheme(&self) -> &'static str {
        if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `https` with TLS between members, `http` without.
    pub fn peer_scheme(&self) -> &'static str {
        if self.peer_tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Every member but this one.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        let mut peers = self.initial_cluster.clone();
        peers.remove(&self.id);
        peers
    }

    /// The cluster's id: a hash of the token and the member list (as etcd derives its own),
    /// the same on every member given the same flags.
    pub fn cluster_id(&self) -> u64 {
        let mut text = self.cluster_token.clone();
        for (id, address) in &self.initial_cluster {
            text.push_str(&format!(",{}={}", id.0, address));
        }
        fnv1a(text.as_bytes())
    }

    /// The client sessions every member keeps for exactly-once writes (not a flag yet; one
    /// value for the whole cluster).
    pub fn session_limit(&self) -> usize {
        synod_kv::Sessions::DEFAULT_LIMIT
    }

    /// The settings that shape the replicated state, which every member must share: a member
    /// with another history window would answer a read in the past that another refuses as
    /// compacted, one with another session limit would apply a retried write that another
    /// drops. Compared at every peer handshake; a member started with others is refused.
    pub fn replicated_settings(&self) -> String {
        format!(
            "protocol={} history-revisions={} session-limit={}",
            self.protocol,
            self.history_revisions,
            self.session_limit()
        )
    }

    /// Ticks in one duration, at least one.
    pub fn ticks(&self, duration: Duration) -> u64 {
        (duration.as_nanos() / self.tick.as_nanos().max(1)).max(1) as u64
    }
}

/// Parses `1=127.0.0.1:2380,2=127.0.0.1:2381`; an `http://` in front of an address is allowed.
/// etcd's form, `infra0=http://10.0.1.10:2380,...` as `etcdctl member add` prints it, works too
/// (see [`parse_named_cluster`]).
pub fn parse_cluster(text: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    Ok(parse_named_cluster(text)?.members)
}

/// A cluster list read: every member's id and peer address, and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterList {
    /// Every member and its peer address.
    pub members: BTreeMap<NodeId, String>,
    /// Every member's name: as given in etcd's form, else `n<id>`.
    pub names: BTreeMap<NodeId, String>,
}

impl ClusterList {
    /// The id of the member called `name`.
    pub fn id_of(&self, name: &str) -> Option<NodeId> {
        self.names
            .iter()
            .find_map(|(&id, n)| (n == name).then_some(id))
    }
}

/// Parses a cluster list whose entries are `ID=ADDRESS` (ids from 1, as Synod writes them),
/// `n<ID>=ADDRESS`, or etcd's `NAME=http://HOST:PORT`. With etcd's names (every entry must
/// have one), members get the ids 1, 2, 3... in the order listed, which every member reads
/// alike since they are all given the same list.
pub fn parse_named_cluster(text: &str) -> Result<ClusterList, ConfigError> {
    let mut entries = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, address) = part
            .split_once('=')
            .ok_or_else(|| ConfigError::Cluster(format!("'{part}' is not ID=HOST:PORT")))?;
        let address = address.trim();
        // Whether members speak TLS is the --peer-* flags' to say; the scheme is etcd's habit.
        let address = address
            .strip_prefix("http://")
            .or_else(|| address.strip_prefix("https://"))
            .unwrap_or(address)
            .trim_end_matches('/');
        if !address.contains(':') {
            return Err(ConfigError::Cluster(format!(
                "'{address}' has no port; write HOST:PORT"
            )));
        }
        entries.push((key.trim().to_string(), address.to_string()));
    }
    if entries.is_empty() {
        return Err(ConfigError::Cluster("no members given".into()));
    }
    // Ids as given (`1` or `n1`) when every entry gives one; else etcd's names, numbered.
    let given: Option<Vec<u64>> = entries
        .iter()
        .map(|(key, _)| key.strip_prefix('n').unwrap_or(key).parse::<u64>().ok())
        .collect();
    let named = given.is_none();
    if named && entries.iter().any(|(key, _)| key.parse::<u64>().is_ok()) {
        return Err(ConfigError::Cluster(
            "give every member a node id (1=HOST:PORT) or every one a name (infra0=http://HOST:PORT), not some of each".into(),
        ));
    }
    let ids = given.unwrap_or_else(|| (1..=entries.len() as u64).collect());
    let mut list = ClusterList {
        members: BTreeMap::new(),
        names: BTreeMap::new(),
    };
    for ((key, address), id) in entries.into_iter().zip(ids) {
        if id == 0 {
            return Err(ConfigError::Cluster("node id 0 is reserved".into()));
        }
        // A lease epoch names its keeper in 32 bits (Basic Paxos chooses one through the log).
        if !synod_replica::can_keep(NodeId(id)) {
            return Err(ConfigError::Cluster(format!(
                "node id {id} is too large: ids go up to {}",
                u32::MAX
            )));
        }
        let name = if named { key } else { format!("n{id}") };
        if list.id_of(&name).is_some() {
            return Err(ConfigError::Cluster(format!("{name} is listed twice")));
        }
        if list.members.insert(NodeId(id), address).is_some() {
            return Err(ConfigError::Cluster(format!("node {id} is listed twice")));
        }
        list.names.insert(NodeId(id), name);
    }
    Ok(list)
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_limit_no_entry_could_carry_is_refused() {
        let members = parse_cluster("1=h:1").unwrap();
        let mut c = ServerConfig::new(NodeId(1), members, "h:9".into(), "d".into());
        c.max_request_bytes = MAX_REQUEST_BYTES_LIMIT;
        assert_eq!(c.validate(), Ok(()));
        c.max_request_bytes += 1;
        let error = c.validate().unwrap_err().to_string();
        assert!(error.contains("32 MiB"), "{error}");
    }

    #[test]
    fn cluster_lists_parse_and_bad_ones_say_why() {
        let members = parse_cluster("1=127.0.0.1:2380, 2=http://127.0.0.1:2381/").unwrap();
        assert_eq!(members[&NodeId(2)], "127.0.0.1:2381");
        assert!(parse_cluster("").is_err());
        let error = parse_cluster("a=1.2.3.4:5,2=1.2.3.4:6")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not some of each"), "{error}");
        let error = parse_cluster("4294967296=127.0.0.1:1")
            .unwrap_err()
            .to_string();
        assert!(error.contains("too large"), "{error}");
        let error = parse_cluster("1=host").unwrap_err().to_string();
        assert!(error.contains("no port"), "{error}");
        let error = parse_cluster("1=h:1,1=h:2").unwrap_err().to_string();
        assert!(error.contains("twice"), "{error}");
        assert_eq!(
            parse_cluster("1=https://h:1/").map(|c| c[&NodeId(1)].clone()),
            Ok("h:1".to_string())
        );
    }

    #[test]
    fn etcds_named_cluster_lists_number_members_in_order() {
        // As `etcdctl member add` prints it for etcd's runbooks.
        let list = parse_named_cluster(
            "infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380,infra2=http://10.0.1.12:2380",
        )
        .unwrap();
        assert_eq!(list.members[&NodeId(2)], "10.0.1.11:2380");
        assert_eq!(list.names[&NodeId(3)], "infra2");
        assert_eq!(list.id_of("infra0"), Some(NodeId(1)));
        let synod = parse_named_cluster("n2=h:2,n5=h:5").unwrap();
        assert_eq!(synod.id_of("n5"), Some(NodeId(5)));
        assert!(parse_named_cluster("a=h:1,a=h:2").is_err());
    }

    #[test]
    fn the_cluster_id_depends_on_members_and_token() {
        let members = parse_cluster("1=h:1,2=h:2").unwrap();
        let a = ServerConfig::new(NodeId(1), members.clone(), "h:9".into(), "d".into());
        let mut b = ServerConfig::new(NodeId(2), members, "h:8".into(), "e".into());
        assert_eq!(a.cluster_id(), b.cluster_id(), "same cluster, any member");
        b.cluster_token = "other".into();
        assert_ne!(a.cluster_id(), b.cluster_id());
    }

    #[test]
    fn validation_names_the_problem() {
        let members = parse_cluster("1=h:1").unwrap();
        let mut c = ServerConfig::new(NodeId(2), members, "h:9".into(), "d".into());
        assert!(matches!(c.validate(), Err(ConfigError::NotAMember(2, _))));
        c.id = NodeId(1);
        assert_eq!(c.validate(), Ok(()));
        c.election_timeout = c.heartbeat_interval;
        assert!(matches!(c.validate(), Err(ConfigError::Timing(_))));
    }
}
