//! The peer link with TLS (`--peer-cert-file` and the rest): members of one CA talk; a node
//! with a certificate from another CA, or one issued to another host than its member's, is
//! refused at the handshake before any message of it reaches the engine; plain text,
//! garbage and stalled handshakes on the TLS port close only their own connection.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::wire::Wire;
use synod_core::NodeId;
use synod_node::tls::{authority, PeerTls, TlsFiles};
use synod_node::transport::{Inbound, Transport, TransportConfig, TransportStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Note(u64);

impl Wire for Note {
    fn encode(&self, enc: &mut Encoder) {
        enc.u64(self.0);
    }

    fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Note(dec.u64("n")?))
    }
}

const CLUSTER: u64 = 0x7a;

struct Node {
    transport: Transport<Note>,
    inbox: mpsc::Receiver<Inbound<Note>>,
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("synod-peer-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A CA in `dir` with certificates `server` (for 127.0.0.1) and `elsewhere` (for another
/// host).
fn authority_in(dir: &Path, ca: &str) -> authority::Files {
    let here = ["127.0.0.1".to_string()];
    let there = ["10.1.2.3".to_string()];
    authority::generate(dir, ca, &[("server", &here), ("elsewhere", &there)], &[])
        .expect("generate certificates")
}

/// Peer TLS presenting `name`'s certificate and trusting `trusted`'s CA.
fn peer_tls(issued: &authority::Files, name: &str, trusted: &authority::Files) -> Arc<PeerTls> {
    let (cert, key) = issued.of(name).expect("issued");
    Arc::new(
        PeerTls::new(TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            trusted_ca: Some(trusted.ca.clone()),
            client_cert_auth: true,
        })
        .expect("load certificates"),
    )
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = l.local_addr().expect("address").to_string();
    (l, address)
}

fn start(me: u64, peers: &[(u64, &str)], tls: Arc<PeerTls>, listener: TcpListener) -> Node {
    let peers: BTreeMap<NodeId, String> = peers
        .iter()
        .map(|(id, a)| (NodeId(*id), a.to_string()))
        .collect();
    let mut config = TransportConfig::new(CLUSTER, NodeId(me), peers);
    config.handshake_timeout = Duration::from_millis(500);
    config.tls = Some(tls);
    let (tx, inbox) = mpsc::channel(1024);
    Node {
        transport: Transport::start(config, listener, tx, false),
        inbox,
    }
}

/// Sends until one arrives (the first sends may be dropped while the connection opens).
async fn deliver(from: &mut Node, to_id: u64, to: &mut Node, tag: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let _ = from.transport.send(NodeId(to_id), Note(tag));
        match tokio::time::timeout(Duration::from_millis(50), to.inbox.recv()).await {
            Ok(Some(m)) if m.message.0 == tag => return,
            _ if tokio::time::Instant::now() > deadline => panic!("nothing arrived"),
            _ => {}
        }
    }
}

fn refused(node: &Node) -> u64 {
    TransportStats::get(&node.transport.stats().handshakes_refused)
}

/// Sends from `intruder` to node 1 for a while; asserts n1 refused it and heard nothing of it.
async fn refused_without_a_word(n1: &mut Node, intruder: &mut Node) {
    for _ in 0..20 {
        let _ = intruder.transport.send(NodeId(1), Note(666));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused(n1) >= 1, "n1 refused no handshake");
    while let Ok(m) = n1.inbox.try_recv() {
        assert_ne!(
            m.message,
            Note(666),
            "a refused peer's message reached the engine"
        );
    }
}

#[tokio::test]
async fn members_of_one_ca_talk_and_a_peer_of_another_ca_is_refused() {
    let dir = temp_dir("ca");
    let ours = authority_in(&dir.join("ours"), "our CA");
    let theirs = authority_in(&dir.join("theirs"), "their CA");
    let (l1, a1) = listener().await;
    let (l2, a2) = listener().await;
    let (l3, a3) = listener().await;
    let cluster = [(1, a1.as_str()), (2, a2.as_str()), (3, a3.as_str())];
    let mut n1 = start(
        1,
        &[cluster[1], cluster[2]],
        peer_tls(&ours, "server", &ours),
        l1,
    );
    let mut n2 = start(
        2,
        &[cluster[0], cluster[2]],
        peer_tls(&ours, "server", &ours),
        l2,
    );
    deliver(&mut n1, 2, &mut n2, 1).await;
    deliver(&mut n2, 1, &mut n1, 2).await;
    // Member 3's address, but a certificate of another CA (trusting ours, so it would
    // accept n1's answer).
    let mut intruder = start(3, &[cluster[0]], peer_tls(&theirs, "server", &ours), l3);
    refused_without_a_word(&mut n1, &mut intruder).await;
    assert_eq!(TransportStats::get(&intruder.transport.stats().connects), 0);
    deliver(&mut n1, 2, &mut n2, 3).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_certificate_issued_to_another_host_than_the_members_is_refused() {
    let dir = temp_dir("host");
    let ours = authority_in(&dir, "our CA");
    let (l1, a1) = listener().await;
    let (l2, a2) = listener().await;
    let (l3, a3) = listener().await;
    let cluster = [(1, a1.as_str()), (2, a2.as_str()), (3, a3.as_str())];
    let mut n1 = start(
        1,
        &[cluster[1], cluster[2]],
        peer_tls(&ours, "server", &ours),
        l1,
    );
    let mut n2 = start(
        2,
        &[cluster[0], cluster[2]],
        peer_tls(&ours, "server", &ours),
        l2,
    );
    // Our CA signed it, but for 10.1.2.3, while member 3 is at 127.0.0.1: whoever holds it
    // is not member 3. n1 refuses it when it dials, and will not talk to it when n1 dials.
    let mut impostor = start(3, &[cluster[0]], peer_tls(&ours, "elsewhere", &ours), l3);
    refused_without_a_word(&mut n1, &mut impostor).await;
    let _ = n1.transport.send(NodeId(3), Note(7));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        impostor.inbox.try_recv().is_err(),
        "n1 talked to the impostor"
    );
    deliver(&mut n1, 2, &mut n2, 4).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Waits for the node to close `s`.
async fn closed(mut s: TcpStream, within: Duration) {
    let mut buf = [0u8; 256];
    let result = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(result.is_ok(), "the connection stayed open");
}

#[tokio::test]
async fn plain_text_garbage_and_stalled_handshakes_close_only_their_own_connection() {
    let dir = temp_dir("bad");
    let ours = authority_in(&dir, "our CA");
    let (l1, a1) = listener().await;
    let (l2, a2) = listener().await;
    let mut n1 = start(1, &[(2, &a2)], peer_tls(&ours, "server", &ours), l1);
    let mut n2 = start(2, &[(1, &a1)], peer_tls(&ours, "server", &ours), l2);
    // A plain-text handshake, as a member without TLS would send it.
    let mut plain = TcpStream::connect(&a1).await.expect("connect");
    let mut hello = b"SYNP".to_vec();
    hello.extend_from_slice(&synod_node::transport::PROTOCOL_VERSION.to_le_bytes());
    hello.extend_from_slice(&CLUSTER.to_le_bytes());
    hello.extend_from_slice(&[0u8; 22]);
    plain.write_all(&hello).await.expect("write");
    // Garbage, and a TLS record header announcing far more than a record may hold.
    let mut garbage = TcpStream::connect(&a1).await.expect("connect");
    garbage.write_all(&[0xff; 4096]).await.expect("write");
    let mut oversized = TcpStream::connect(&a1).await.expect("connect");
    oversized
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff])
        .await
        .expect("write");
    // Connections that never finish (or never start) a handshake.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(TcpStream::connect(&a1).await.expect("connect"));
    }
    let mut half = TcpStream::connect(&a1).await.expect("connect");
    half.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01])
        .await
        .expect("write");
    // Meanwhile the members talk.
    deliver(&mut n2, 1, &mut n1, 11).await;
    deliver(&mut n1, 2, &mut n2, 12).await;
    let within = Duration::from_secs(5);
    closed(plain, within).await;
    closed(garbage, within).await;
    closed(oversized, within).await;
    closed(half, within).await;
    for s in stalled {
        closed(s, within).await;
    }
    assert!(refused(&n1) >= 24, "n1 counted {} refusals", refused(&n1));
    deliver(&mut n2, 1, &mut n1, 13).await;
    let _ = std::fs::remove_dir_all(dir);
}
