//! TCP between peers.
//!
//! Every node dials every peer once and keeps that connection for all it sends to the peer;
//! what the peer sends back arrives on the connection the peer dialed. A connection opens with
//! a handshake naming the protocol version, the cluster and both nodes, so a node of another
//! cluster, an unknown node or an old binary is refused with a log line saying which. Then
//! frames follow, each a little-endian `u32` length and one engine message in its
//! [`Wire`] encoding.
//!
//! Sends never wait: each peer has a bounded queue, and a message that finds it full is
//! dropped and counted (engines tolerate loss; a slow or dead peer must not grow memory). A
//! sender writes everything queued in one system call. A lost connection is redialled with
//! exponential backoff; what was queued meanwhile is stale and is dropped. A connection whose
//! data goes unacknowledged for `stall_timeout` is given up (TCP_USER_TIMEOUT) and redialled:
//! otherwise TCP's retransmission backoff, doubled by every cut it runs into, leaves a healed
//! link idle for up to two minutes (the real-host nemesis found writes under synchronous
//! primary-backup stalled 117 s that way). A peer that redials supersedes its older inbound
//! connection, which is closed, even halfway through a frame; an inbound connection silent
//! for `stall_timeout` is probed (TCP keepalive) and closed when the probes go unanswered,
//! so a peer whose host vanished holds no reader and no half-received frame. Bytes that do not
//! make a frame (garbage, an oversized length, a message that does not decode, a connection
//! cut mid-frame) close that one connection and nothing else.
//!
//! The peers change with the membership ([`Transport::set_peers`]): a new member gets a
//! queue and a dialler, a removed one loses them, and the acceptor takes handshakes only from
//! the members of the day. A node that joins a running cluster knows no member at first: it
//! takes whoever dials it until the membership reaches it through the log.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use synod_core::wire::Wire;
use synod_core::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::tls::{Io, PeerTls};

/// Version of the peer protocol (handshake, framing, and what the replicated log may hold).
/// Peers must agree exactly. 3: lease epochs and era-bound expiries in the log, snapshot
/// format 3. 4: the Basic Paxos lease keeper's pings. 5: Multi-Paxos hands over its
/// leadership (TimeoutNow). 6: members answer the Basic Paxos keeper's pings. 7: a ZAB
/// follower's Ping says whether it is in broadcast; synchronous primary-backup. 8: Raft
/// membership changes (a membership entry in the log, the membership with InstallSnapshot,
/// changes forwarded to the leader). 9: Paxos membership changes (the change itself as a
/// value, a follower's decided log end in its heartbeat answer, the membership with the last
/// snapshot chunk). 10: ZAB membership changes (the membership with the last snapshot chunk).
/// 11: primary-backup and DNS membership changes (primary-backup's snapshot chunks and a
/// commit point with TakeOver; the membership with DNS's last full-transfer chunk).
/// 12: gossip membership changes (the epoch and listing on pings and acks, the agreement
/// messages). 13: gossip's removed members hand over (`Held`), and the agreement's answers
/// name what they answer (nonces, the value accepted). 14: auth in the log (users, roles, a
/// client's request with its user), snapshot format 5.
pub const PROTOCOL_VERSION: u16 = 14;
const MAGIC: [u8; 4] = *b"SYNP";
/// Each of a handshake's variable parts (the client URL, the settings) is at most this long.
const URL_BYTES_MAX: usize = 1024;
/// An inbound connection keeps a frame buffer of at most this many bytes between frames.
const FRAME_BYTES_KEPT: usize = 4 << 20;

/// How the transport behaves.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// The cluster this node belongs to; peers of another cluster are refused.
    pub cluster_id: u64,
    /// This node.
    pub me: NodeId,
    /// Where clients reach this node, told to peers so they can forward requests here.
    pub client_url: String,
    /// Where peers reach this node (`host:port`), told to peers so a member that joined and
    /// knows no membership yet can answer whoever dialled it.
    pub peer_address: String,
    /// The settings every member must share because they shape the replicated state (the
    /// protocol, the history window, the session limit), as text; a peer with other settings
    /// is refused, so replicas cannot drift apart by a flag given to one of them.
    pub settings: String,
    /// Every other member and its peer address (`host:port`).
    pub peers: BTreeMap<NodeId, String>,
    /// Messages queued per peer before new ones are dropped.
    pub queue_messages: usize,
    /// Largest frame accepted or sent; a longer one closes the connection.
    pub frame_bytes_max: usize,
    /// First wait before redialling a lost peer; it doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest wait between dials.
    pub reconnect_max: Duration,
    /// A handshake not finished in this time fails.
    pub handshake_timeout: Duration,
    /// A dial (the TCP connect alone) not answered in this time is retried.
    pub connect_timeout: Duration,
    /// Data sent and not acknowledged for this long closes the connection, which is then
    /// redialled.
    pub stall_timeout: Duration,
    /// TLS on every connection, both ways (`None`: plain TCP).
    pub tls: Option<Arc<PeerTls>>,
    /// The peer addresses of the cluster list this node was started with: with TLS, a
    /// dialler this node knows no address of (while it joins) must be at one of these, and
    /// its certificate valid for it.
    pub listed: BTreeSet<String>,
}

impl TransportConfig {
    /// Defaults for node `me` of cluster `cluster_id`.
    pub fn new(cluster_id: u64, me: NodeId, peers: BTreeMap<NodeId, String>) -> Self {
        TransportConfig {
            cluster_id,
            me,
            client_url: String::new(),
            peer_address: String::new(),
            settings: String::new(),
            peers,
            queue_messages: 4096,
            frame_bytes_max: 64 << 20,
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(2),
            tls: None,
            listed: BTreeSet::new(),
        }
    }
}

/// A message from a peer.
#[derive(Debug)]
pub struct Inbound<M> {
    /// Who sent it.
    pub from: NodeId,
    /// What it is.
    pub message: M,
}

/// Counters of the transport, for metrics and tests.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Bytes written to peers.
    pub bytes_out: AtomicU64,
    /// Bytes read from peers.
    pub bytes_in: AtomicU64,
    /// Messages handed to peers' sockets.
    pub messages_out: AtomicU64,
    /// Messages received and decoded.
    pub messages_in: AtomicU64,
    /// Messages dropped: queue full, or peer unreachable.
    pub messages_dropped: AtomicU64,
    /// Connections closed for bytes that made no valid frame or message.
    pub bad_frames: AtomicU64,
    /// Handshakes refused, in either direction.
    pub handshakes_refused: AtomicU64,
    /// Outbound connections established.
    pub connects: AtomicU64,
}

impl TransportStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What this node learnt of the other members: their client URLs, from their handshakes.
#[derive(Debug, Default)]
pub struct PeerDirectory {
    client_urls: RwLock<BTreeMap<NodeId, String>>,
}

impl PeerDirectory {
    /// The client URL `node` announced, if it has connected.
    pub fn client_url(&self, node: NodeId) -> Option<String> {
        self.client_urls
            .read()
            .ok()
            .and_then(|urls| urls.get(&node).cloned())
    }

    fn learn(&self, node: NodeId, url: String) {
        if url.is_empty() {
            return;
        }
        if let Ok(mut urls) = self.client_urls.write() {
            urls.insert(node, url);
        }
    }
}

/// Who may connect: the peers of the day, or anyone (`None`) until a joining node learns
/// the membership.
/// Who may connect (`None`: anyone of the cluster), and where each listens for peers.
type Admitted = Arc<RwLock<Option<BTreeMap<NodeId, String>>>>;

/// One peer's queue and the task that drains it into the connection.
struct Link<M> {
    address: String,
    queue: mpsc::Sender<M>,
    task: JoinHandle<()>,
}

/// The sending half: one queue per peer, each drained by a task that owns the connection.
pub struct Transport<M> {
    config: Arc<TransportConfig>,
    links: BTreeMap<NodeId, Link<M>>,
    /// Weak handles on the queues, for the metrics.
    queues: Arc<Mutex<BTreeMap<NodeId, mpsc::WeakSender<M>>>>,
    admitted: Admitted,
    /// Nodes with an id below this that are no longer peers may still connect (0: none):
    /// a leaderless protocol's removed members, which hand over what they hold and must
    /// hear that they were removed however long they were away.
    former_below: Arc<AtomicU64>,
    /// While anyone may connect, and for former members: who did, and where it listens, to
    /// answer it.
    dialled_by: Arc<Mutex<BTreeMap<NodeId, String>>>,
    stats: Arc<TransportStats>,
    directory: Arc<PeerDirectory>,
    acceptor: JoinHandle<()>,
}

impl<M> fmt::Debug for Transport<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("peers", &self.links.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<M: Wire + Send + 'static> Transport<M> {
    /// Starts accepting peers on `listener` (their messages go to `inbound`) and dialling
    /// every peer of `config`. With `open`, anyone of the cluster may connect until the first
    /// [`Transport::set_peers`] (a node joining a running cluster). Must run inside a tokio
    /// runtime.
    pub fn start(
        config: TransportConfig,
        listener: TcpListener,
        inbound: mpsc::Sender<Inbound<M>>,
        open: bool,
    ) -> Transport<M> {
        let peers = config.peers.clone();
        let config = Arc::new(config);
        let stats = Arc::new(TransportStats::default());
        let directory = Arc::new(PeerDirectory::default());
        let admitted: Admitted = Arc::new(RwLock::new((!open).then(|| peers.clone())));
        let dialled_by: Arc<Mutex<BTreeMap<NodeId, String>>> = Arc::default();
        let former_below = Arc::new(AtomicU64::new(0));
        let acceptor = Acceptor::<M> {
            config: config.clone(),
            admitted: admitted.clone(),
            former_below: former_below.clone(),
            dialled_by: dialled_by.clone(),
            stats: stats.clone(),
            directory: directory.clone(),
            inbound,
            latest: Default::default(),
            message: PhantomData,
        };
        let acceptor = tokio::spawn(acceptor.run(listener));
        let mut transport = Transport {
            config,
            links: BTreeMap::new(),
            queues: Default::default(),
            admitted,
            former_below,
            dialled_by,
            stats,
            directory,
            acceptor,
        };
        for (peer, address) in peers {
            transport.link(peer, address);
        }
        transport
    }

    /// Starts a queue and a dialler for `peer` at `address`.
    fn link(&mut self, peer: NodeId, address: String) {
        let (queue, rx) = mpsc::channel(self.config.queue_messages.max(1));
        let sender = PeerSender {
            config: self.config.clone(),
            peer,
            address: address.clone(),
            queue: rx,
            stats: self.stats.clone(),
            directory: self.directory.clone(),
        };
        lock(&self.queues).insert(peer, queue.downgrade());
        let task = tokio::spawn(sender.run());
        self.links.insert(
            peer,
            Link {
                address,
                queue,
                task,
            },
        );
    }

    /// The peers are now these (every other member and its `host:port`): new ones are
    /// dialled, removed ones dropped with what was queued for them, moved ones redialled at
    /// their new address; only these may connect from now on. With `open` (a joining node
    /// that is not yet in the membership it runs with, catching up through older ones),
    /// anyone of the cluster may still connect and those who dialled keep their links.
    pub fn set_peers(&mut self, peers: &BTreeMap<NodeId, String>, open: bool) {
        let former_below = self.former_below.load(Ordering::Relaxed);
        if !open {
            let mut dialled = lock(&self.dialled_by);
            // A peer that leaves (a member removed) is a former member: its link stays, so
            // that it can still be answered while it hands over.
            for (id, link) in &self.links {
                if id.0 < former_below && !peers.contains_key(id) {
                    dialled.entry(*id).or_insert_with(|| link.address.clone());
                }
            }
            // Former members keep their way back, except at an address a member now has (an
            // operator reusing a removed member's address must not see it dialled as the old
            // id).
            let taken: BTreeSet<&String> = peers.values().collect();
            dialled.retain(|id, address| {
                id.0 < former_below && !peers.contains_key(id) && !taken.contains(address)
            });
        }
        let dialled = lock(&self.dialled_by).clone();
        let gone: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(id, link)| {
                peers.get(id) != Some(&link.address) && dialled.get(id) != Some(&link.address)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            // Its queue closes: the sender writes what is queued (a removed member's last
            // news: that its removal committed), then ends; it dials no more.
            if let Some(link) = self.links.remove(&id) {
                drop(link.queue);
                lock(&self.queues).remove(&id);
                info!(peer = %id, address = %link.address, "no longer a peer at this address");
            }
        }
        for (&id, address) in peers {
            if !self.links.contains_key(&id) {
                info!(peer = %id, %address, "a new peer");
                self.link(id, address.clone());
            }
        }
        *self
            .admitted
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = (!open).then(|| peers.clone());
    }

    /// Lets nodes with an id below `below` connect although they are no longer peers, and
    /// answers them where their handshake says they listen (`below` is the membership's next
    /// id: every node ever a member).
    pub fn admit_former_members(&self, below: u64) {
        self.former_below.store(below, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<M: Wire + Send + 'static> Transport<M> {
    /// Queues `message` for `to`; hands it back (and counts the drop) when the queue is full
    /// or `to` is not a peer. Never waits.
    pub fn send(&mut self, to: NodeId, message: M) -> Result<(), M> {
        if !self.links.contains_key(&to) {
            // A joining node answers the members that dialled it before it knows them all.
            let address = lock(&self.dialled_by).get(&to).cloned();
            if let Some(address) = address {
                self.link(to, address);
            }
        }
        let refused = match self.links.get(&to) {
            Some(link) => match link.queue.try_send(message) {
                Ok(()) => return Ok(()),
                Err(e) => e.into_inner(),
            },
            None => message,
        };
        TransportStats::add(&self.stats.messages_dropped, 1);
        Err(refused)
    }

    /// Messages waiting in `peer`'s queue.
    pub fn queue_depth(&self, peer: NodeId) -> usize {
        self.links
            .get(&peer)
            .map_or(0, |l| l.queue.max_capacity() - l.queue.capacity())
    }

    /// The transport's counters.
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }

    /// What peers told this node about themselves.
    pub fn directory(&self) -> &Arc<PeerDirectory> {
        &self.directory
    }

    /// Renders the transport's metrics in Prometheus' text format, for as long as the
    /// transport lives (after that, nothing).
    pub fn metrics_renderer(&self) -> MetricsRenderer
    where
        M: Send + 'static,
    {
        let stats = Arc::downgrade(&self.stats);
        let queues = Arc::downgrade(&self.queues);
        Arc::new(move |out: &mut String| {
            use std::fmt::Write;
            let Some(stats) = stats.upgrade() else {
                return;
            };
            let counters = [
                (
                    "synod_network_peer_sent_bytes_total",
                    "Bytes sent to peers.",
                    &stats.bytes_out,
                ),
                (
                    "synod_network_peer_received_bytes_total",
                    "Bytes received from peers.",
                    &stats.bytes_in,
                ),
                (
                    "synod_network_peer_sent_messages_total",
                    "Messages sent to peers.",
                    &stats.messages_out,
                ),
                (
                    "synod_network_peer_received_messages_total",
                    "Messages received from peers.",
                    &stats.messages_in,
                ),
                (
                    "synod_network_peer_dropped_messages_total",
                    "Messages dropped: queue full or peer unreachable.",
                    &stats.messages_dropped,
                ),
                (
                    "synod_network_peer_bad_frames_total",
                    "Peer connections closed for bytes that made no valid frame.",
                    &stats.bad_frames,
                ),
                (
                    "synod_network_peer_refused_handshakes_total",
                    "Peer handshakes refused, in either direction.",
                    &stats.handshakes_refused,
                ),
            ];
            for (name, help, counter) in counters {
                let value = TransportStats::get(counter);
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
                );
            }
            let name = "synod_network_peer_send_queue_depth";
            let _ = writeln!(
                out,
                "# HELP {name} Messages waiting to be sent, per peer.\n# TYPE {name} gauge"
            );
            let Some(queues) = queues.upgrade() else {
                return;
            };
            let queues: Vec<(NodeId, mpsc::WeakSender<M>)> = lock(&queues)
                .iter()
                .map(|(&id, q)| (id, q.clone()))
                .collect();
            for (peer, queue) in &queues {
                let depth = queue
                    .upgrade()
                    .map_or(0, |q| q.max_capacity() - q.capacity());
                let _ = writeln!(out, "{name}{{peer=\"{}\"}} {depth}", peer.0);
            }
        })
    }
}

/// Renders metrics into a string; see [`Transport::metrics_renderer`].
pub type MetricsRenderer = Arc<dyn Fn(&mut String) + Send + Sync>;

impl<M> Drop for Transport<M> {
    fn drop(&mut self) {
        self.acceptor.abort();
        for link in self.links.values() {
            link.task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake.

/// The dialer's opening.
#[derive(Debug, PartialEq, Eq)]
struct Hello {
    version: u16,
    cluster_id: u64,
    from: NodeId,
    to: NodeId,
    client_url: String,
    settings: String,
    /// Where the sender listens for peers (`host:port`).
    peer_address: String,
}

/// Why a handshake was refused; the byte is sent to the dialer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Version = 1,
    Cluster = 2,
    UnknownNode = 3,
    WrongNode = 4,
    Settings = 5,
    Identity = 6,
}

impl Refusal {
    fn from_byte(byte: u8) -> Option<Refusal> {
        Some(match byte {
            1 => Refusal::Version,
            2 => Refusal::Cluster,
            3 => Refusal::UnknownNode,
            4 => Refusal::WrongNode,
            5 => Refusal::Settings,
            6 => Refusal::Identity,
            _ => return None,
        })
    }

    fn explain(self) -> &'static str {
        match self {
            Refusal::Version => "speaks another peer protocol version",
            Refusal::Cluster => "belongs to another cluster",
            Refusal::UnknownNode => "is not a member of this cluster",
            Refusal::WrongNode => "was dialled at the address of another node",
            Refusal::Settings => "runs with other replicated settings",
            Refusal::Identity => "presented a certificate not issued for its peer address",
        }
    }
}

fn encode_hello(hello: &Hello) -> Vec<u8> {
    let url = &hello.client_url.as_bytes()[..hello.client_url.len().min(URL_BYTES_MAX)];
    let settings = &hello.settings.as_bytes()[..hello.settings.len().min(URL_BYTES_MAX)];
    let peer = &hello.peer_address.as_bytes()[..hello.peer_address.len().min(URL_BYTES_MAX)];
    let mut buf = Vec::with_capacity(38 + url.len() + settings.len() + peer.len());
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&hello.version.to_le_bytes());
    buf.extend_from_slice(&hello.cluster_id.to_le_bytes());
    buf.extend_from_slice(&hello.from.0.to_le_bytes());
    buf.extend_from_slice(&hello.to.0.to_le_bytes());
    buf.extend_from_slice(&(url.len() as u16).to_le_bytes());
    buf.extend_from_slice(url);
    buf.extend_from_slice(&(settings.len() as u16).to_le_bytes());
    buf.extend_from_slice(settings);
    buf.extend_from_slice(&(peer.len() as u16).to_le_bytes());
    buf.extend_from_slice(peer);
    buf
}

/// A handshake's text part: a length, then that many bytes of UTF-8.
async fn read_text(stream: &mut (impl AsyncReadExt + Unpin), what: &str) -> io::Result<String> {
    let len = read_u16(stream).await? as usize;
    if len > URL_BYTES_MAX {
        return Err(invalid(format!("{what} of {len} bytes")));
    }
    let mut bytes = vec![0u8; len];
    stream.read_exact(&mut bytes).await?;
    String::from_utf8(bytes).map_err(|_| invalid(format!("{what} is not UTF-8")))
}

async fn read_u16(stream: &mut (impl AsyncReadExt + Unpin)) -> io::Result<u16> {
    let mut b = [0u8; 2];
    stream.read_exact(&mut b).await?;
    Ok(u16::from_le_bytes(b))
}

async fn read_u64(stream: &mut (impl AsyncReadExt + Unpin)) -> io::Result<u64> {
    let mut b = [0u8; 8];
    stream.read_exact(&mut b).await?;
    Ok(u64::from_le_bytes(b))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

async fn read_hello(stream: &mut (impl AsyncReadExt + Unpin)) -> io::Result<Hello> {
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).await?;
    if magic != MAGIC {
        return Err(invalid(format!(
            "not a Synod peer (first bytes {magic:02x?})"
        )));
    }
    let version = read_u16(stream).await?;
    let cluster_id = read_u64(stream).await?;
    let from = NodeId(read_u64(stream).await?);
    let to = NodeId(read_u64(stream).await?);
    if version != PROTOCOL_VERSION {
        // What follows may be laid out otherwise: answer with the refusal now.
        return Ok(Hello {
            version,
            cluster_id,
            from,
            to,
            client_url: String::new(),
            settings: String::new(),
            peer_address: String::new(),
        });
    }
    let client_url = read_text(stream, "client URL").await?;
    let settings = read_text(stream, "settings").await?;
    let peer_address = read_text(stream, "peer address").await?;
    Ok(Hello {
        version,
        cluster_id,
        from,
        to,
        client_url,
        settings,
        peer_address,
    })
}

/// The listener's answer: 0 and its own hello, or a refusal byte.
async fn write_answer(stream: &mut impl Io, answer: Result<&Hello, Refusal>) -> io::Result<()> {
    let mut buf = MAGIC.to_vec();
    match answer {
        Ok(hello) => {
            buf.push(0);
            buf.extend_from_slice(&encode_hello(hello));
        }
        Err(refusal) => buf.push(refusal as u8),
    }
    stream.write_all(&buf).await
}

/// For a node joining a running cluster: waits until a member dials it, and returns the
/// cluster's id and the id that member knows this node by (the one `member add` gave the
/// peer address it dialled). That first connection is closed unanswered; the member dials
/// again and finds the transport started. Handshakes of another protocol version or with
/// other replicated settings are refused with a log line, as the transport would.
pub async fn await_identity(
    listener: &TcpListener,
    settings: &str,
    timeout: Duration,
    tls: Option<&PeerTls>,
    listed: &BTreeSet<String>,
) -> (u64, NodeId) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "cannot accept a peer connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (mut stream, cert): (Box<dyn Io>, _) = match tls {
            Some(tls) => match tls.accept(stream, timeout).await {
                Ok(stream) => {
                    let session = stream.get_ref().1;
                    let cert = session.peer_certificates().and_then(|c| c.first());
                    let cert = cert.map(|c| c.clone().into_owned());
                    (Box::new(stream), cert)
                }
                Err(e) => {
                    warn!(%remote, error = %e, "refused a peer connection: TLS handshake failed");
                    continue;
                }
            },
            None => (Box::new(stream), None),
        };
        match tokio::time::timeout(timeout, read_hello(&mut stream)).await {
            Ok(Ok(hello)) if hello.version != PROTOCOL_VERSION => {
                warn!(%remote, version = hello.version, "a peer of another protocol version dialled");
            }
            Ok(Ok(hello)) if hello.settings != settings => {
                warn!(%remote, theirs = %hello.settings, ours = %settings,
                      "a peer with other replicated settings dialled");
            }
            Ok(Ok(hello))
                if tls.is_some_and(|tls| {
                    tls.client_cert_auth
                        && (!listed.contains(&hello.peer_address)
                            || tls
                                .check_member(cert.as_ref(), &hello.peer_address)
                                .is_err())
                }) =>
            {
                warn!(%remote, member = %hello.from, address = %hello.peer_address,
                      "refused a peer: its certificate is not issued for its peer address");
            }
            Ok(Ok(hello)) if hello.to.0 != 0 => {
                info!(%remote, member = %hello.from, id = %hello.to,
                      cluster = format!("{:x}", hello.cluster_id), "joined: a member dialled");
                return (hello.cluster_id, hello.to);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(%remote, error = %e, "a peer connection without a handshake"),
            Err(_) => warn!(%remote, "no handshake in time"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sending.

struct PeerSender<M> {
    config: Arc<TransportConfig>,
    peer: NodeId,
    address: String,
    queue: mpsc::Receiver<M>,
    stats: Arc<TransportStats>,
    directory: Arc<PeerDirectory>,
}

/// Messages written per system call at most.
const BATCH_MESSAGES_MAX: usize = 512;
/// Bytes gathered per system call before writing.
const BATCH_BYTES_TARGET: usize = 1 << 20;

impl<M: Wire + Send + 'static> PeerSender<M> {
    async fn run(mut self) {
        let mut backoff = self.config.reconnect_min;
        let mut last_error = String::new();
        loop {
            match self.connect().await {
                Ok(stream) => {
                    backoff = self.config.reconnect_min;
                    last_error.clear();
                    TransportStats::add(&self.stats.connects, 1);
                    info!(peer = %self.peer, address = %self.address, "connected to peer");
                    match self.pump(stream).await {
                        Ok(()) => return, // the transport is gone
                        Err(e) => warn!(peer = %self.peer, error = %e, "lost connection to peer"),
                    }
                }
                Err(e) => {
                    // Say it once per kind of failure, not at every redial.
                    let error = e.to_string();
                    if error != last_error {
                        warn!(peer = %self.peer, address = %self.address, error = %error,
                              "cannot reach peer; retrying");
                        last_error = error;
                    }
                }
            }
            // Whatever queued up while the peer was away is stale.
            while self.queue.try_recv().is_ok() {
                TransportStats::add(&self.stats.messages_dropped, 1);
            }
            if self.queue.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.reconnect_max);
        }
    }

    async fn connect(&self) -> io::Result<Box<dyn Io>> {
        let timeout = self.config.handshake_timeout;
        let attempt = async {
            let stream = tokio::time::timeout(
                self.config.connect_timeout,
                TcpStream::connect(&self.address),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            give_up_when_stalled(&stream, self.config.stall_timeout)?;
            let mut stream: Box<dyn Io> = match &self.config.tls {
                Some(tls) => Box::new(tls.dial(stream, &self.address).await.map_err(|e| {
                    invalid(format!("TLS handshake with {} failed: {e}", self.address))
                })?),
                None => Box::new(stream),
            };
            let hello = Hello {
                version: PROTOCOL_VERSION,
                cluster_id: self.config.cluster_id,
                from: self.config.me,
                to: self.peer,
                client_url: self.config.client_url.clone(),
                settings: self.config.settings.clone(),
                peer_address: self.config.peer_address.clone(),
            };
            stream.write_all(&encode_hello(&hello)).await?;
            let mut head = [0u8; 5];
            stream.read_exact(&mut head).await?;
            if head[..4] != MAGIC {
                return Err(invalid(format!(
                    "{} is not a Synod peer port",
                    self.address
                )));
            }
            if let Some(refusal) = Refusal::from_byte(head[4]) {
                TransportStats::add(&self.stats.handshakes_refused, 1);
                let ours = match refusal {
                    Refusal::Settings => format!(" (ours: {})", self.config.settings),
                    _ => String::new(),
                };
                return Err(invalid(format!(
                    "peer refused the handshake: this node {}{ours}",
                    refusal.explain()
                )));
            }
            let theirs = read_hello(&mut stream).await?;
            if theirs.version != PROTOCOL_VERSION
                || theirs.from != self.peer
                || theirs.cluster_id != self.config.cluster_id
            {
                TransportStats::add(&self.stats.handshakes_refused, 1);
                return Err(invalid(format!(
                    "expected {} of cluster {:x}, found {} of cluster {:x} (peer protocol {})",
                    self.peer,
                    self.config.cluster_id,
                    theirs.from,
                    theirs.cluster_id,
                    theirs.version
                )));
            }
            if theirs.settings != self.config.settings {
                TransportStats::add(&self.stats.handshakes_refused, 1);
                return Err(invalid(format!(
                    "{} runs with other replicated settings: theirs {}, ours {}",
                    self.peer, theirs.settings, self.config.settings
                )));
            }
            self.directory.learn(self.peer, theirs.client_url);
            Ok(stream)
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
    }

    /// Writes queued messages until the connection fails (`Err`) or the transport is dropped
    /// (`Ok`).
    async fn pump(&mut self, mut stream: Box<dyn Io>) -> io::Result<()> {
        let mut batch = Vec::with_capacity(64 << 10);
        loop {
            let Some(first) = self.queue.recv().await else {
                return Ok(());
            };
            batch.clear();
            let mut count = 0u64;
            self.frame(&mut batch, first);
            count += 1;
            while batch.len() < BATCH_BYTES_TARGET && count < BATCH_MESSAGES_MAX as u64 {
                match self.queue.try_recv() {
                    Ok(message) => {
                        self.frame(&mut batch, message);
                        count += 1;
                    }
                    Err(_) => break,
                }
            }
            stream.write_all(&batch).await?;
            TransportStats::add(&self.stats.bytes_out, batch.len() as u64);
            TransportStats::add(&self.stats.messages_out, count);
        }
    }

    /// Appends one frame; a message too large for a frame is dropped (the engine will retry
    /// with smaller batches or a snapshot chunk).
    fn frame(&self, batch: &mut Vec<u8>, message: M) {
        let bytes = message.to_bytes();
        if bytes.len() > self.config.frame_bytes_max {
            warn!(peer = %self.peer, bytes = bytes.len(), "message too large for a frame; dropped");
            TransportStats::add(&self.stats.messages_dropped, 1);
            return;
        }
        batch.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        batch.extend_from_slice(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Receiving.

struct Acceptor<M> {
    config: Arc<TransportConfig>,
    admitted: Admitted,
    former_below: Arc<AtomicU64>,
    dialled_by: Arc<Mutex<BTreeMap<NodeId, String>>>,
    stats: Arc<TransportStats>,
    directory: Arc<PeerDirectory>,
    inbound: mpsc::Sender<Inbound<M>>,
    /// The newest inbound connection of each peer, by a number counted up at each accept:
    /// a peer dials again only after giving its connection up, so an older one is dead.
    latest: Mutex<BTreeMap<NodeId, watch::Sender<u64>>>,
    message: PhantomData<fn() -> M>,
}

/// Closes `stream` when data sent on it goes unacknowledged for `timeout` (Linux's
/// TCP_USER_TIMEOUT; elsewhere, TCP's own much longer limit applies).
fn give_up_when_stalled(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout))?;
    #[cfg(not(target_os = "linux"))]
    let _ = (stream, timeout);
    Ok(())
}

/// Resolves once a newer connection from `peer` replaced the inbound one numbered `number`.
async fn superseded(newer: &mut watch::Receiver<u64>, number: u64, peer: NodeId) {
    let _ = newer.wait_for(|latest| *latest != number).await;
    debug!(%peer, "a newer connection from the peer replaces this one");
}

/// Probes the peer of an inbound `stream` once it has been silent for `silence`, and closes the
/// stream when a few probes go unanswered: nothing is sent on an inbound connection after its
/// handshake, so without probes a peer whose host lost power would hold its reader (and a
/// frame half received) for good.
fn probe_when_silent(stream: &TcpStream, silence: Duration) -> io::Result<()> {
    // The kernel counts in whole seconds and refuses 0: a sub-second silence would leave the
    // system's defaults (two hours) in place.
    let silence = Duration::from_secs(silence.as_secs_f64().ceil().max(1.0) as u64);
    let probes = socket2::TcpKeepalive::new()
        .with_time(silence)
        .with_interval(Duration::from_secs(1));
    #[cfg(target_os = "linux")]
    let probes = probes.with_retries(3);
    socket2::SockRef::from(stream).set_tcp_keepalive(&probes)
}

impl<M: Wire + Send + 'static> Acceptor<M> {
    /// Marks a new connection from `from` as its newest; returns its number, and a receiver
    /// that changes when a newer one arrives.
    fn newest(&self, from: NodeId) -> (u64, watch::Receiver<u64>) {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let sender = latest.entry(from).or_insert_with(|| watch::channel(0).0);
        let mut number = 0;
        sender.send_modify(|n| {
            *n += 1;
            number = *n;
        });
        (number, sender.subscribe())
    }

    async fn run(self, listener: TcpListener) {
        let this = Arc::new(self);
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    warn!(error = %e, "cannot accept a peer connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let this = this.clone();
            tokio::spawn(async move {
                match this.serve(stream).await {
                    Ok(()) => debug!(%remote, "peer connection closed"),
                    Err(e) => warn!(%remote, error = %e, "closed a peer connection"),
                }
            });
        }
    }

    async fn serve(&self, stream: TcpStream) -> io::Result<()> {
        let _ = stream.set_nodelay(true);
        if let Err(e) = probe_when_silent(&stream, self.config.stall_timeout) {
            warn!(error = %e, "cannot set keepalive probes on a peer connection");
        }
        let limit = self.config.handshake_timeout;
        let (mut stream, tls): (Box<dyn Io>, _) = match &self.config.tls {
            Some(tls) => {
                let stream = tls.accept(stream, limit).await.map_err(|e| {
                    TransportStats::add(&self.stats.handshakes_refused, 1);
                    invalid(format!("TLS handshake failed: {e}"))
                })?;
                let cert = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| cert.clone().into_owned());
                (Box::new(stream) as Box<dyn Io>, Some((tls, cert)))
            }
            None => (Box::new(stream), None),
        };
        let hello = tokio::time::timeout(limit, read_hello(&mut stream))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no handshake in time"))??;
        if let Err(refusal) = self.check(&hello) {
            TransportStats::add(&self.stats.handshakes_refused, 1);
            let _ = write_answer(&mut stream, Err(refusal)).await;
            let settings = match refusal {
                Refusal::Settings => format!(
                    " (theirs: {}, ours: {})",
                    hello.settings, self.config.settings
                ),
                _ => String::new(),
            };
            return Err(invalid(format!(
                "refused {} (cluster {:x}, protocol {}): it {}{settings}",
                hello.from,
                hello.cluster_id,
                hello.version,
                refusal.explain()
            )));
        }
        if let Some((tls, cert)) = tls.filter(|(tls, _)| tls.client_cert_auth) {
            let Some(address) = self.address_of(&hello) else {
                TransportStats::add(&self.stats.handshakes_refused, 1);
                let _ = write_answer(&mut stream, Err(Refusal::Identity)).await;
                return Err(invalid(format!(
                    "refused {}: it says it listens at {}, where this node knows no member",
                    hello.from, hello.peer_address
                )));
            };
            if let Err(why) = tls.check_member(cert.as_ref(), &address) {
                TransportStats::add(&self.stats.handshakes_refused, 1);
                let _ = write_answer(&mut stream, Err(Refusal::Identity)).await;
                return Err(invalid(format!(
                    "refused {} (peer address {address}): {why}",
                    hello.from
                )));
            }
        }
        let ours = Hello {
            version: PROTOCOL_VERSION,
            cluster_id: self.config.cluster_id,
            from: self.config.me,
            to: hello.from,
            client_url: self.config.client_url.clone(),
            settings: self.config.settings.clone(),
            peer_address: self.config.peer_address.clone(),
        };
        write_answer(&mut stream, Ok(&ours)).await?;
        let (open, peer) = {
            let admitted = self
                .admitted
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let peer = admitted
                .as_ref()
                .is_none_or(|p| p.contains_key(&hello.from));
            (admitted.is_none(), peer)
        };
        // Anyone while open, and a former member (admitted although not a peer), is answered
        // where it listens.
        // (A former member's way back, learnt from the membership, is not overwritten by what
        // it says.)
        if (open || !peer) && !hello.peer_address.is_empty() {
            let mut dialled = lock(&self.dialled_by);
            if open {
                dialled.insert(hello.from, hello.peer_address.clone());
            } else {
                dialled
                    .entry(hello.from)
                    .or_insert_with(|| hello.peer_address.clone());
            }
        }
        self.directory.learn(hello.from, hello.client_url);
        let from = hello.from;
        // A newer connection from the peer means this one is dead (the peer dials again only
        // after giving it up): whatever this one waits for, a length or the rest of a frame,
        // never comes.
        let (number, mut newer) = self.newest(from);
        let mut reader = BufReader::with_capacity(256 << 10, stream);
        let mut frame = Vec::new();
        loop {
            let mut len = [0u8; 4];
            let read = tokio::select! {
                read = reader.read_exact(&mut len) => read,
                () = superseded(&mut newer, number, from) => return Ok(()),
            };
            match read {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let len = u32::from_le_bytes(len) as usize;
            if len > self.config.frame_bytes_max {
                TransportStats::add(&self.stats.bad_frames, 1);
                return Err(invalid(format!(
                    "{from} sent a frame of {len} bytes; the limit is {}",
                    self.config.frame_bytes_max
                )));
            }
            // Taken as it arrives: a peer that announces 64 MiB and stalls holds no more
            // than it sent.
            frame.clear();
            let mut body = (&mut reader).take(len as u64);
            let read = tokio::select! {
                read = body.read_to_end(&mut frame) => read,
                () = superseded(&mut newer, number, from) => return Ok(()),
            };
            let read = match read {
                Ok(got) if got < len => Err(io::ErrorKind::UnexpectedEof.into()),
                other => other.map(drop),
            };
            if let Err(e) = read {
                TransportStats::add(&self.stats.bad_frames, 1);
                return Err(invalid(format!("{from} cut a frame short: {e}")));
            }
            let message = M::from_bytes(&frame).map_err(|e| {
                TransportStats::add(&self.stats.bad_frames, 1);
                invalid(format!("{from} sent a message that does not decode: {e}"))
            })?;
            TransportStats::add(&self.stats.bytes_in, 4 + len as u64);
            TransportStats::add(&self.stats.messages_in, 1);
            if frame.capacity() > FRAME_BYTES_KEPT {
                frame = Vec::new(); // one large frame does not pin its size for good
            }
            if self.inbound.send(Inbound { from, message }).await.is_err() {
                return Ok(()); // the node is shutting down
            }
        }
    }

    /// Where the member `hello` names listens for peers, as this node knows it (as it says,
    /// while this node knows no membership).
    /// `None` when this node knows of no such member there: what a dialler says of itself
    /// is taken only at an address of the cluster list this node was started with.
    fn address_of(&self, hello: &Hello) -> Option<String> {
        let admitted = self
            .admitted
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let known = admitted
            .as_ref()
            .and_then(|peers| peers.get(&hello.from))
            .or(lock(&self.dialled_by).get(&hello.from))
            .cloned();
        known.or_else(|| {
            let listed = self.config.listed.contains(&hello.peer_address);
            listed.then(|| hello.peer_address.clone())
        })
    }

    fn check(&self, hello: &Hello) -> Result<(), Refusal> {
        let peer = self
            .admitted
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_none_or(|peers| peers.contains_key(&hello.from));
        let former = (1..self.former_below.load(Ordering::Relaxed)).contains(&hello.from.0);
        if hello.version != PROTOCOL_VERSION {
            Err(Refusal::Version)
        } else if hello.cluster_id != self.config.cluster_id {
            Err(Refusal::Cluster)
        } else if !peer && !former {
            Err(Refusal::UnknownNode)
        } else if hello.to != self.config.me {
            Err(Refusal::WrongNode)
        } else if hello.settings != self.config.settings {
            Err(Refusal::Settings)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hello_round_trips() {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            cluster_id: 0xfeed,
            from: NodeId(2),
            to: NodeId(3),
            client_url: "http://127.0.0.1:2379".into(),
            settings: "protocol=raft history-revisions=10000".into(),
            peer_address: "127.0.0.1:2380".into(),
        };
        let bytes = encode_hello(&hello);
        let mut reader = &bytes[..];
        assert_eq!(read_hello(&mut reader).await.unwrap(), hello);
        for cut in 0..bytes.len() {
            let mut reader = &bytes[..cut];
            assert!(read_hello(&mut reader).await.is_err(), "cut at {cut}");
        }
    }
}
