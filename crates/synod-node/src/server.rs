//! One whole server: disk, engine, node loop, peer transport, the etcd API and metrics,
//! started together and stopped in the right order.
//!
//! Shutdown is graceful: the client port stops taking requests and streams end, requests in
//! flight get their answers (for at most the request timeout), then the node loop stops and
//! the disk thread writes and syncs what is queued. Nothing acknowledged is lost, because
//! nothing is acknowledged before it is durable on a majority.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use synod_core::{Membership, NodeId};
use synod_dns::Dns;
use synod_gossip::Gossip;
use synod_paxos::{BasicPaxos, MultiPaxos};
use synod_primary_backup::PrimaryBackup;
use synod_raft::Raft;
use synod_replica::{
    Boot, DnsOptions, GossipOptions, PaxosOptions, PrimaryBackupOptions, Protocol, RaftOptions,
    Timing, ZabOptions,
};
use synod_zab::Zab;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::{self, Api};
use crate::config::{ConfigError, ServerConfig};
use crate::disk::Disk;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::tls::{ClientTls, PeerTls};
use crate::transport::{Transport, TransportConfig};

/// Why a server did not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The settings do not work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be opened or recovered.
    // The cause is part of the message, not a `source`: printed as a chain, it would repeat.
    #[error("data directory {dir}: {cause}")]
    Storage {
        /// The directory.
        dir: String,
        /// What went wrong.
        cause: synod_storage::StorageError,
    },
    /// What is on disk cannot restart the engine.
    #[error("data directory {dir}: {reason}")]
    Recovery {
        /// The directory.
        dir: String,
        /// What went wrong.
        reason: String,
    },
    /// The certificates do not load.
    #[error("{what}: {cause}")]
    Tls {
        /// Which side: clients or peers.
        what: &'static str,
        /// What went wrong.
        cause: crate::tls::TlsError,
    },
    /// A port could not be bound.
    #[error("cannot listen on {address} ({what}): {source}")]
    Listen {
        /// Which port.
        what: &'static str,
        /// The address.
        address: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    /// The API state (for tests and the binary).
    pub api: Arc<Api>,
    /// Where clients connect.
    pub client_addr: SocketAddr,
    /// Where peers connect.
    pub peer_addr: SocketAddr,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    front_stop: watch::Sender<bool>,
    node_stop: watch::Sender<bool>,
    grpc: JoinHandle<()>,
    node: JoinHandle<Result<(), String>>,
}

async fn bind(what: &'static str, address: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Listen {
            what,
            address: address.to_string(),
            source,
        })
}

/// Starts a server running the protocol its configuration names.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    config.validate()?;
    match config.protocol.as_str() {
        MultiPaxos::NAME => start_with::<MultiPaxos>(config, &PaxosOptions::default()).await,
        BasicPaxos::NAME => start_with::<BasicPaxos>(config, &PaxosOptions::default()).await,
        Zab::NAME => start_with::<Zab>(config, &ZabOptions::default()).await,
        PrimaryBackup::NAME => {
            start_with::<PrimaryBackup>(config, &PrimaryBackupOptions::default()).await
        }
        Dns::NAME => start_with::<Dns>(config, &DnsOptions::default()).await,
        Gossip::NAME => {
            let options = GossipOptions {
                write_level: config.write_level,
                read_level: config.read_level,
                tweak: None,
            };
            start_with::<Gossip>(config, &options).await
        }
        _ => {
            let options = RaftOptions {
                tweak: match config.injected_bug {
                    #[cfg(feature = "inject-bugs")]
                    Some(crate::config::InjectedBug::ReadWithoutConfirmation) => {
                        Some(|c: &mut synod_raft::Config| c.bugs.read_without_confirmation = true)
                    }
                    #[cfg(not(feature = "inject-bugs"))]
                    Some(_) => {
                        return Err(StartError::Config(ConfigError::Invalid(
                            "--inject-bug: this build has no injectable bugs (feature inject-bugs)"
                                .into(),
                        )))
                    }
                    None => None,
                },
            };
            start_with::<Raft>(config, &options).await
        }
    }
}

/// Starts a server running protocol `P`.
async fn start_with<P: Protocol>(
    mut config: ServerConfig,
    options: &P::Options,
) -> Result<RunningServer, StartError> {
    let dir = config.data_dir.display().to_string();
    // Certificates first: a typo in a path should not cost a disk recovery to find out.
    let client_tls = match &config.client_tls {
        Some(files) => Some(Arc::new(ClientTls::new(files.clone()).map_err(
            |cause| StartError::Tls {
                what: "client TLS (--cert-file, --key-file, --trusted-ca-file)",
                cause,
            },
        )?)),
        None => None,
    };
    let peer_tls = match &config.peer_tls {
        Some(files) => Some(Arc::new(PeerTls::new(files.clone()).map_err(|cause| {
            StartError::Tls {
                what: "peer TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)",
                cause,
            }
        })?)),
        None => None,
    };
    if config
        .peer_tls
        .as_ref()
        .is_some_and(|files| !files.client_cert_auth)
    {
        warn!("peer TLS without --peer-client-cert-auth: anyone who reaches the peer port can speak for a member (and so change users and roles); give --peer-client-cert-auth");
    }
    let metrics = Arc::new(Metrics::default());
    let (disk, disk_events, recovered) = Disk::open(&config.data_dir, P::NAME, metrics.clone())
        .map_err(|cause| StartError::Storage {
            dir: dir.clone(),
            cause,
        })?;
    // This node's entry of the cluster list says where peers reach it (and, unless told
    // otherwise, where it listens), whatever id it turns out to have.
    let advertised_peer = config
        .initial_cluster
        .get(&config.id)
        .cloned()
        .unwrap_or_else(|| config.peer_listen());
    config.peer_listen = Some(config.peer_listen());
    let peer_listener = bind("peers", &config.peer_listen()).await?;
    let identity =
        crate::identity::establish(&config, &recovered, &peer_listener, peer_tls.as_deref())
            .await
            .map_err(|reason| StartError::Recovery {
                dir: dir.clone(),
                reason,
            })?;
    config.id = identity.id;
    // A member that joined a running cluster learns its membership from the leader's log;
    // one that booted the cluster starts from the cluster list, with names and addresses.
    let (voters, members): (Vec<NodeId>, Option<Membership>) = if identity.joined {
        (Vec::new(), None)
    } else {
        let members = crate::identity::boot_membership(&config);
        (members.voters(), Some(members))
    };
    let boot = Boot {
        id: config.id,
        voters: &voters,
        members: members.as_ref(),
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(config.id.0, |d| d.as_nanos() as u64 ^ config.id.0),
        timing: Timing {
            election_ticks: config.ticks(config.election_timeout),
            heartbeat_ticks: config.ticks(config.heartbeat_interval),
        },
        snapshot_chunk_bytes: 1 << 20,
    };
    let engine = P::boot(&boot, &recovered, options).map_err(|reason| StartError::Recovery {
        dir: dir.clone(),
        reason,
    })?;

    let client_listener = bind("clients", &config.client_listen).await?;
    let metrics_listener = match &config.metrics_listen {
        Some(address) => Some(bind("metrics", address).await?),
        None => None,
    };
    let peer_addr = peer_listener
        .local_addr()
        .map_err(|source| StartError::Listen {
            what: "peers",
            address: config.peer_listen(),
            source,
        })?;
    let client_addr = client_listener
        .local_addr()
        .map_err(|source| StartError::Listen {
            what: "clients",
            address: config.client_listen.clone(),
            source,
        })?;
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    // The peers of the membership in force (after changes, not the cluster list's); a joining
    // node that has heard nothing yet takes whoever of its cluster dials.
    let peers = match engine.membership() {
        Some(membership) => crate::identity::peers_of(membership, config.id),
        None => config.peers(),
    };
    let open = identity.joined && peers.is_empty();
    let mut transport_config = TransportConfig::new(identity.cluster_id, config.id, peers);
    transport_config.client_url = config.client_url();
    transport_config.peer_address = advertised_peer.clone();
    transport_config.settings = config.replicated_settings();
    transport_config.tls = peer_tls;
    transport_config.listed = config.initial_cluster.values().cloned().collect();
    // A connection whose data goes unacknowledged for an election timeout is given up and
    // redialled, so a healed network carries messages again within about that time.
    transport_config.stall_timeout = config.election_timeout.max(Duration::from_millis(500));
    let (inbound_tx, inbound) = mpsc::channel(8192);
    let transport = Transport::start(transport_config, peer_listener, inbound_tx, open);
    let directory = transport.directory().clone();
    let transport_metrics = transport.metrics_renderer();

    let options = crate::node::NodeOptions {
        id: config.id,
        joining: (identity.joined && !identity.kept).then(|| crate::node::JoinCheck {
            identity,
            data_dir: config.data_dir.clone(),
            peer_address: advertised_peer.clone(),
        }),
        joined: identity.joined,
        name: config.name.clone(),
        client_url: config.client_url(),
        peers: voters.iter().copied().filter(|&v| v != config.id).collect(),
        tick: config.tick,
        clock_rate: config.clock_rate,
        election_timeout: config.election_timeout,
        snapshot_every: config.snapshot_every,
    };
    let store = synod_replica::boot_store(
        recovered.snapshot.as_ref(),
        config.session_limit(),
        config.history_revisions,
    )
    .map_err(|reason| StartError::Recovery { dir, reason })?;
    let snapshot_era = recovered.snapshot.as_ref().map_or(0, |s| s.meta.era);
    let (node, handle) = Node::new(
        options,
        engine,
        store,
        snapshot_era,
        transport,
        inbound,
        disk,
        disk_events,
        metrics,
    );
    let (node_stop, node_stop_rx) = watch::channel(false);
    let node = tokio::spawn(node.run(node_stop_rx));

    let (front_stop, front_stop_rx) = watch::channel(false);
    let config = Arc::new(config);
    let forward_tls = forward_tls(&config).map_err(|cause| StartError::Tls {
        what: "client TLS, to forward requests to other members",
        cause,
    })?;
    let api = Arc::new(
        Api::new(
            handle,
            identity.cluster_id,
            config.clone(),
            directory,
            front_stop_rx.clone(),
        )
        .with_forward_tls(forward_tls),
    );
    tokio::spawn(api::watch_leadership(api.clone()));
    if let Some(mode) = config.auto_compaction {
        tokio::spawn(crate::compactor::run(api.clone(), mode));
    }
    if let Some(every) = config.corrupt_check_interval {
        tokio::spawn(crate::corruption::run(api.clone(), every));
    }
    if let Some(listener) = metrics_listener {
        tokio::spawn(crate::http::serve(
            listener,
            api.clone(),
            transport_metrics.clone(),
        ));
    }
    let mut shutdown = front_stop_rx;
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)));
    let router = api::router(api.clone(), &mut builder);
    // One client port for gRPC and etcd's HTTP endpoints (/metrics, /health, /version).
    let (grpc_connections, incoming) = mpsc::channel(64);
    tokio::spawn(crate::http::split_client_port(
        client_listener,
        grpc_connections,
        api.clone(),
        transport_metrics.clone(),
        client_tls,
    ));
    let grpc = tokio::spawn(async move {
        let served = router
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(incoming),
                async move {
                    let _ = shutdown.changed().await;
                },
            )
            .await;
        if let Err(e) = served {
            warn!(error = %e, "the client port failed");
        }
    });
    info!(
        node = %config.id,
        clients = %client_addr,
        peers = %peer_addr,
        data_dir = %config.data_dir.display(),
        "started"
    );
    Ok(RunningServer {
        api,
        client_addr,
        peer_addr,
        metrics_addr,
        front_stop,
        node_stop,
        grpc,
        node,
    })
}

/// How a member reaches other members' client ports (to forward a request to the leader)
/// when they speak TLS: it checks them against the client CA (the peer CA if there is none)
/// and presents its own server certificate, as a client's.
fn forward_tls(
    config: &ServerConfig,
) -> Result<Option<tonic::transport::ClientTlsConfig>, crate::tls::TlsError> {
    let Some(files) = &config.client_tls else {
        return Ok(None);
    };
    let ca = files
        .trusted_ca
        .as_ref()
        .or(config.peer_tls.as_ref().and_then(|p| p.trusted_ca.as_ref()));
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| crate::tls::TlsError::Read {
            path: path.clone(),
            source,
        })
    };
    let mut tls = tonic::transport::ClientTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(read(&files.cert)?, read(&files.key)?),
    );
    if let Some(ca) = ca {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

impl RunningServer {
    /// Resolves if the node stops by itself (its disk failed), with the reason.
    pub async fn failed(&mut self) -> String {
        match (&mut self.node).await {
            Ok(Ok(())) => "the node loop ended".into(),
            Ok(Err(reason)) => reason,
            Err(e) => format!("the node loop panicked: {e}"),
        }
    }

    /// Stops gracefully: no new requests, in-flight ones answered, the disk synced.
    pub async fn shutdown(self) -> Result<(), String> {
        let _ = self.front_stop.send(true);
        let grace = self.api.config.request_timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, self.grpc).await.is_err() {
            warn!("client connections did not close in time; stopping anyway");
        }
        let _ = self.node_stop.send(true);
        let outcome = match self.node.await {
            Ok(outcome) => outcome,
            Err(e) => Err(format!("the node loop panicked: {e}")),
        };
        info!("stopped");
        outcome
    }
}
