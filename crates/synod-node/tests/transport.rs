//! The peer transport on loopback: delivery, refusals, bad bytes, slow and restarting peers.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::time::Duration;

use synod_core::codec::{DecodeError, Decoder, Encoder};
use synod_core::wire::Wire;
use synod_core::NodeId;
use synod_node::transport::{Inbound, Transport, TransportConfig, TransportStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A stand-in for an engine message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Note(u64, Vec<u8>);

impl Wire for Note {
    fn encode(&self, enc: &mut Encoder) {
        enc.u64(self.0).bytes(&self.1);
    }

    fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Note(dec.u64("n")?, dec.bytes("body")?.to_vec()))
    }
}

const CLUSTER: u64 = 0xc1;

struct Node {
    transport: Transport<Note>,
    inbox: mpsc::Receiver<Inbound<Note>>,
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = l.local_addr().unwrap().to_string();
    (l, address)
}

fn config(cluster: u64, me: u64, peers: &[(u64, &str)]) -> TransportConfig {
    let peers: BTreeMap<NodeId, String> = peers
        .iter()
        .map(|(id, a)| (NodeId(*id), a.to_string()))
        .collect();
    let mut c = TransportConfig::new(cluster, NodeId(me), peers);
    c.client_url = format!("http://client-of-{me}");
    c
}

/// A node that takes whoever of its cluster dials (a member joining a running cluster).
fn start_open(config: TransportConfig, listener: TcpListener) -> Node {
    let (tx, inbox) = mpsc::channel(1024);
    Node {
        transport: Transport::start(config, listener, tx, true),
        inbox,
    }
}

fn start(config: TransportConfig, listener: TcpListener) -> Node {
    let (tx, inbox) = mpsc::channel(1024);
    Node {
        transport: Transport::start(config, listener, tx, false),
        inbox,
    }
}

async fn pair() -> (Node, Node, String, String) {
    let (l1, a1) = listener().await;
    let (l2, a2) = listener().await;
    let n1 = start(config(CLUSTER, 1, &[(2, &a2)]), l1);
    let n2 = start(config(CLUSTER, 2, &[(1, &a1)]), l2);
    (n1, n2, a1, a2)
}

/// Sends until one arrives (the first sends may be dropped while the connection opens).
async fn deliver(from: &mut Node, to_id: u64, to: &mut Node, tag: u64) -> Inbound<Note> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let _ = from
            .transport
            .send(NodeId(to_id), Note(tag, b"hello".to_vec()));
        match tokio::time::timeout(Duration::from_millis(50), to.inbox.recv()).await {
            Ok(Some(m)) if m.message.0 == tag => return m,
            _ if tokio::time::Instant::now() > deadline => panic!("nothing arrived"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn messages_flow_both_ways_and_peers_learn_client_urls() {
    let (mut n1, mut n2, _, _) = pair().await;
    let got = deliver(&mut n1, 2, &mut n2, 7).await;
    assert_eq!(got.from, NodeId(1));
    assert_eq!(got.message.1, b"hello");
    let back = deliver(&mut n2, 1, &mut n1, 8).await;
    assert_eq!(back.from, NodeId(2));
    // Both sides heard the other's client URL in a handshake.
    assert_eq!(
        n1.transport.directory().client_url(NodeId(2)).as_deref(),
        Some("http://client-of-2")
    );
    assert_eq!(
        n2.transport.directory().client_url(NodeId(1)).as_deref(),
        Some("http://client-of-1")
    );
    // Many messages arrive in order on one connection.
    for i in 100..1100 {
        let _ = n1.transport.send(NodeId(2), Note(i, vec![0; 100]));
    }
    let mut expected = 100;
    while expected < 1100 {
        let m = tokio::time::timeout(Duration::from_secs(10), n2.inbox.recv())
            .await
            .unwrap()
            .unwrap();
        if m.message.0 >= 100 {
            assert_eq!(m.message.0, expected, "messages arrive in the order sent");
            expected += 1;
        }
    }
}

#[tokio::test]
async fn foreign_and_unknown_nodes_are_refused_and_the_cluster_keeps_working() {
    let (mut n1, mut n2, a1, _) = pair().await;
    // A node of another cluster, and an unknown node of this one, both dial n1.
    let (lf, _) = listener().await;
    let mut foreign = start(config(0xbad, 2, &[(1, &a1)]), lf);
    let (lu, _) = listener().await;
    let mut unknown = start(config(CLUSTER, 9, &[(1, &a1)]), lu);
    for _ in 0..20 {
        let _ = foreign.transport.send(NodeId(1), Note(1, vec![]));
        let _ = unknown.transport.send(NodeId(1), Note(1, vec![]));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = |n: &Node| TransportStats::get(&n.transport.stats().handshakes_refused);
    assert!(refused(&n1) >= 2, "n1 refused {} handshakes", refused(&n1));
    assert!(refused(&foreign) >= 1 && refused(&unknown) >= 1);
    assert_eq!(TransportStats::get(&foreign.transport.stats().connects), 0);
    deliver(&mut n1, 2, &mut n2, 42).await;
}

#[tokio::test]
async fn a_member_with_other_replicated_settings_is_refused_both_ways() {
    let (l1, a1) = listener().await;
    let (l2, a2) = listener().await;
    let mut c1 = config(CLUSTER, 1, &[(2, &a2)]);
    c1.settings = "protocol=raft history-revisions=10000".into();
    let mut c2 = config(CLUSTER, 2, &[(1, &a1)]);
    c2.settings = "protocol=raft history-revisions=500".into();
    let mut n1 = start(c1, l1);
    let mut n2 = start(c2, l2);
    for i in 0..20 {
        let _ = n1.transport.send(NodeId(2), Note(i, vec![]));
        let _ = n2.transport.send(NodeId(1), Note(i, vec![]));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = |n: &Node| TransportStats::get(&n.transport.stats().handshakes_refused);
    let connects = |n: &Node| TransportStats::get(&n.transport.stats().connects);
    assert!(
        refused(&n1) >= 2 && refused(&n2) >= 2,
        "{} {}",
        refused(&n1),
        refused(&n2)
    );
    assert_eq!(
        (connects(&n1), connects(&n2)),
        (0, 0),
        "no connection was made"
    );
}

/// A raw connection to a node's peer port that has introduced itself as node `from`.
async fn introduced(address: &str, from: u64, to: u64) -> TcpStream {
    let mut s = TcpStream::connect(address).await.unwrap();
    let mut hello = b"SYNP".to_vec();
    hello.extend_from_slice(&synod_node::transport::PROTOCOL_VERSION.to_le_bytes());
    hello.extend_from_slice(&CLUSTER.to_le_bytes());
    hello.extend_from_slice(&from.to_le_bytes());
    hello.extend_from_slice(&to.to_le_bytes());
    hello.extend_from_slice(&0u16.to_le_bytes()); // no client URL
    hello.extend_from_slice(&0u16.to_le_bytes()); // no settings
    hello.extend_from_slice(&0u16.to_le_bytes()); // no peer address
    s.write_all(&hello).await.unwrap();
    let mut answer = [0u8; 5];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"SYNP\0", "handshake accepted");
    let mut rest = [0u8; 34];
    s.read_exact(&mut rest).await.unwrap();
    s
}

/// Waits for the node to close `s` (read returns end of file or an error).
async fn closed(mut s: TcpStream) {
    let mut buf = [0u8; 64];
    let result = tokio::time::timeout(Duration::from_secs(10), async {
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
async fn bad_bytes_close_only_their_own_connection() {
    let (mut n1, mut n2, _, a2) = pair().await;
    // Garbage instead of a handshake.
    let mut garbage = TcpStream::connect(&a2).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    closed(garbage).await;
    // A frame longer than the limit.
    let mut huge = introduced(&a2, 1, 2).await;
    huge.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    closed(huge).await;
    // A frame that does not decode.
    let mut junk = introduced(&a2, 1, 2).await;
    junk.write_all(&3u32.to_le_bytes()).await.unwrap();
    junk.write_all(&[0xff, 0xff, 0xff]).await.unwrap();
    closed(junk).await;
    // Half a frame, then the sender goes away.
    let mut half = introduced(&a2, 1, 2).await;
    half.write_all(&100u32.to_le_bytes()).await.unwrap();
    half.write_all(&[1, 2, 3]).await.unwrap();
    drop(half);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TransportStats::get(&n2.transport.stats().bad_frames) >= 3,
        "oversized, undecodable and cut frames are counted"
    );
    assert!(
        n2.inbox.try_recv().is_err(),
        "no bad frame became a message"
    );
    deliver(&mut n1, 2, &mut n2, 5).await;
}

#[tokio::test]
async fn a_peer_that_never_reads_costs_bounded_memory() {
    // A fake peer that accepts the handshake, then never reads another byte.
    let (fake, fake_address) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = fake.accept().await.unwrap();
        let mut hello = [0u8; 32];
        s.read_exact(&mut hello).await.unwrap();
        let mut answer = b"SYNP\0".to_vec();
        answer.extend_from_slice(b"SYNP");
        answer.extend_from_slice(&synod_node::transport::PROTOCOL_VERSION.to_le_bytes());
        answer.extend_from_slice(&CLUSTER.to_le_bytes());
        answer.extend_from_slice(&2u64.to_le_bytes());
        answer.extend_from_slice(&1u64.to_le_bytes());
        answer.extend_from_slice(&0u16.to_le_bytes()); // no client URL
        answer.extend_from_slice(&0u16.to_le_bytes()); // no settings
        answer.extend_from_slice(&0u16.to_le_bytes()); // no peer address
        s.write_all(&answer).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(s);
    });
    let (l1, _) = listener().await;
    let mut c = config(CLUSTER, 1, &[(2, &fake_address)]);
    c.queue_messages = 64;
    let mut n1 = start(c, l1);
    while TransportStats::get(&n1.transport.stats().connects) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = vec![7u8; 64 << 10];
    let mut refused = 0;
    for i in 0..2000 {
        if n1.transport.send(NodeId(2), Note(i, body.clone())).is_err() {
            refused += 1;
        }
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let stats = n1.transport.stats();
    let dropped = TransportStats::get(&stats.messages_dropped);
    assert!(
        dropped > 1000,
        "2000 messages of 64 KiB to a stuck peer: {dropped} dropped"
    );
    assert_eq!(
        refused, dropped,
        "the sender is told of every message not queued"
    );
    assert!(n1.transport.queue_depth(NodeId(2)) <= 64);
}

#[tokio::test]
async fn a_restarted_peer_is_redialled() {
    let (mut n1, n2, a1, a2) = pair().await;
    drop(n2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let l2 = TcpListener::bind(&a2).await.unwrap();
    let mut n2 = start(config(CLUSTER, 2, &[(1, &a1)]), l2);
    deliver(&mut n1, 2, &mut n2, 99).await;
    assert!(TransportStats::get(&n1.transport.stats().connects) >= 1);
}

/// A peer dials again only after giving its connection up (a stall, a restart), so its older
/// inbound connection, perhaps cut off where no reset can reach it, is closed rather than left
/// waiting forever.
#[tokio::test]
async fn a_peer_that_dials_again_supersedes_its_older_connection() {
    let (mut n1, mut n2, _, a2) = pair().await;
    let older = introduced(&a2, 1, 2).await;
    let newer = introduced(&a2, 1, 2).await;
    closed(older).await;
    // The newer one still delivers.
    let mut newer = newer;
    let frame = Note(9, b"still here".to_vec()).to_bytes();
    newer
        .write_all(&(frame.len() as u32).to_le_bytes())
        .await
        .unwrap();
    newer.write_all(&frame).await.unwrap();
    let inbound = tokio::time::timeout(Duration::from_secs(5), n2.inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inbound.message, Note(9, b"still here".to_vec()));
    drop(newer);
    // And the real node 1, which redials once its connection is gone, gets through again.
    deliver(&mut n1, 2, &mut n2, 6).await;
}

#[tokio::test]
async fn a_connection_stuck_in_the_middle_of_a_frame_goes_when_the_peer_dials_again() {
    // Node 2 alone; its peer 3 is played by hand (nothing redials behind the test's back).
    let (listener, address) = listener().await;
    let _n2 = start(config(CLUSTER, 2, &[(3, "127.0.0.1:9")]), listener);
    // Node 3's host went away after the start of a large frame...
    let mut stuck = introduced(&address, 3, 2).await;
    stuck.write_all(&(8u32 << 20).to_le_bytes()).await.unwrap();
    stuck.write_all(&[7; 1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...and came back: its new connection ends the old one, half a frame and all.
    let _newer = introduced(&address, 3, 2).await;
    closed(stuck).await;
}

/// A member that joins knows nobody: it takes the member that dials it and answers it at the
/// peer address that member gave. Once it knows the membership, only members may connect,
/// and a peer that left is dropped while a new one is dialled.
#[tokio::test]
async fn a_joining_node_answers_who_dialled_and_follows_the_membership() {
    let (l1, a1) = listener().await;
    let (l4, a4) = listener().await;
    let mut c1 = config(CLUSTER, 1, &[(4, &a4)]);
    c1.peer_address = a1.clone();
    let mut n1 = start(c1, l1);
    let mut n4 = start_open(config(CLUSTER, 4, &[]), l4);
    let got = deliver(&mut n1, 4, &mut n4, 1).await;
    assert_eq!(got.from, NodeId(1));
    let back = deliver(&mut n4, 1, &mut n1, 2).await;
    assert_eq!(
        back.from,
        NodeId(4),
        "n4 answered n1 at the address n1 gave"
    );

    // n4 learns a membership without n1 but with n3: n1 is refused from now on.
    let (l3, a3) = listener().await;
    let mut n3 = start(config(CLUSTER, 3, &[(4, &a4)]), l3);
    n4.transport
        .set_peers(&BTreeMap::from([(NodeId(3), a3.clone())]), false);
    let got = deliver(&mut n4, 3, &mut n3, 3).await;
    assert_eq!(got.from, NodeId(4));
    assert!(
        n4.transport.send(NodeId(1), Note(4, vec![])).is_err(),
        "n1 is no longer a peer"
    );
    let (l9, a9) = listener().await;
    let mut stranger = start(config(CLUSTER, 1, &[(4, &a4)]), l9);
    let _ = a9;
    for _ in 0..20 {
        let _ = stranger.transport.send(NodeId(4), Note(5, vec![]));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(TransportStats::get(&n4.transport.stats().handshakes_refused) >= 1);
}

/// Under a leaderless protocol a removed member (an id below the membership's next id) may
/// still connect and is answered where it listens, also after the membership dropped it;
/// an id never handed out is refused, and a former member's way back ends when its address
/// is given to a new member.
#[tokio::test]
async fn former_members_are_admitted_and_answered_until_their_address_is_reused() {
    let (l1, a1) = listener().await;
    let (l2, a2) = listener().await;
    let mut c2 = config(CLUSTER, 2, &[(1, &a1)]);
    c2.peer_address = a2.clone();
    let mut n1 = start(config(CLUSTER, 1, &[(2, &a2)]), l1);
    let mut n2 = start(c2, l2);
    n1.transport.admit_former_members(3);
    deliver(&mut n1, 2, &mut n2, 1).await;
    deliver(&mut n2, 1, &mut n1, 2).await;
    // n2 is removed: n1's membership no longer lists it, but it may still talk both ways.
    n1.transport.set_peers(&BTreeMap::new(), false);
    let got = deliver(&mut n2, 1, &mut n1, 3).await;
    assert_eq!(got.from, NodeId(2));
    let back = deliver(&mut n1, 2, &mut n2, 4).await;
    assert_eq!(back.from, NodeId(1), "answered at the address n2 gave");
    // An id the membership never handed out is refused.
    let (l7, _) = listener().await;
    let mut stranger = start(config(CLUSTER, 7, &[(1, &a1)]), l7);
    let refused = TransportStats::get(&n1.transport.stats().handshakes_refused);
    for _ in 0..20 {
        let _ = stranger.transport.send(NodeId(1), Note(5, vec![]));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(TransportStats::get(&n1.transport.stats().handshakes_refused) > refused);
    // n2's address goes to a new member, n3: n1 no longer answers n2 there.
    n1.transport
        .set_peers(&BTreeMap::from([(NodeId(3), a2.clone())]), false);
    assert!(
        n1.transport.send(NodeId(2), Note(6, vec![])).is_err(),
        "no way back at an address a member has now"
    );
}
