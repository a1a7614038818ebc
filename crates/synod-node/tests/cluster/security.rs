//! TLS on the client port and auth, in process: tokens that expire or are revoked, a bad
//! token, stalled and plain-text connections on a TLS port that cost nothing else, and
//! certificates rotated on disk without a restart.

use std::path::Path;
use std::time::Duration;

use synod_core::NodeId;
use synod_node::tls::{authority, TlsFiles};
use synod_proto::authpb;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::auth_client::AuthClient;
use synod_proto::etcdserverpb::kv_client::KvClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{put, Cluster};

/// `request` with `token` in etcd's metadata.
fn with_token<T>(request: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(request);
    let value = tonic::metadata::MetadataValue::try_from(token).expect("ascii token");
    request.metadata_mut().insert("token", value);
    request
}

async fn authenticate(auth: &mut AuthClient<Channel>, name: &str, password: &str) -> String {
    let request = pb::AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    };
    auth.authenticate(request)
        .await
        .expect("authenticated")
        .into_inner()
        .token
}

/// Adds root (with its role) and turns auth on.
async fn enable_auth(auth: &mut AuthClient<Channel>) {
    let root = pb::AuthUserAddRequest {
        name: "root".into(),
        password: "rootpw".into(),
        ..Default::default()
    };
    auth.user_add(root).await.expect("root added");
    let grant = pb::AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    };
    auth.user_grant_role(grant).await.expect("role granted");
    auth.auth_enable(pb::AuthEnableRequest {})
        .await
        .expect("enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_are_revoked_by_a_password_change_and_are_checked_everywhere() {
    let cluster = Cluster::start_with("auth-tokens", 3, |config| {
        config.auth_token_ttl = Duration::from_secs(2);
    })
    .await;
    cluster.leader().await;
    let mut auth = AuthClient::new(cluster.channel(NodeId(1)).await);
    enable_auth(&mut auth).await;
    let token = authenticate(&mut auth, "root", "rootpw").await;
    // A token from one member is good on every member (writes forwarded to the leader too).
    for id in 1..=3 {
        let mut kv = cluster.kv(NodeId(id)).await;
        kv.put(with_token(put("k", "v"), &token))
            .await
            .expect("a put with a good token");
    }
    // No token, a garbage one, a forged one: refused with etcd's errors.
    let mut kv = cluster.kv(NodeId(2)).await;
    let status = kv.put(put("k", "v")).await.expect_err("no user");
    assert_eq!(status.message(), "etcdserver: user name is empty");
    for bad in ["garbage", "", "726f6f74.1.99999999999.00"] {
        let status = kv
            .put(with_token(put("k", "v"), bad))
            .await
            .expect_err("a bad token");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad}");
        assert_eq!(status.message(), "etcdserver: invalid auth token");
    }
    // etcd's JSON gateway takes the token in `Authorization`, and refuses without one.
    let address = cluster.servers[&NodeId(1)].client_addr;
    let body = r#"{"key":"Zw==","value":"MQ=="}"#;
    let answer = gateway(address, "/v3/kv/put", body, Some(&token)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = gateway(address, "/v3/kv/put", body, None).await;
    assert!(answer.contains("user name is empty"), "{answer}");
    let answer = gateway(address, "/v3/kv/put", body, Some("forged")).await;
    assert!(answer.contains("invalid auth token"), "{answer}");
    // A password change voids the tokens issued before it.
    let change = pb::AuthUserChangePasswordRequest {
        name: "root".into(),
        password: "newpw".into(),
        ..Default::default()
    };
    auth.user_change_password(with_token(change, &token))
        .await
        .expect("password changed");
    let status = kv
        .put(with_token(put("k", "v"), &token))
        .await
        .expect_err("a revoked token");
    assert_eq!(status.message(), "etcdserver: invalid auth token");
    let fresh = authenticate(&mut auth, "root", "newpw").await;
    kv.put(with_token(put("k", "v2"), &fresh))
        .await
        .expect("a new token");
    // And a token runs out.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let status = kv
        .put(with_token(put("k", "v"), &fresh))
        .await
        .expect_err("an expired token");
    assert_eq!(status.message(), "etcdserver: invalid auth token");
    // A read-only user: a write is refused, and a watch of keys it may not read is
    // cancelled with etcd's reason.
    let root = authenticate(&mut auth, "root", "newpw").await;
    let reader = pb::AuthRoleAddRequest {
        name: "reader".into(),
    };
    auth.role_add(with_token(reader, &root))
        .await
        .expect("role");
    let permission = pb::AuthRoleGrantPermissionRequest {
        name: "reader".into(),
        perm: Some(authpb::Permission {
            perm_type: 0,
            key: b"app/".to_vec().into(),
            range_end: b"app0".to_vec().into(),
        }),
    };
    auth.role_grant_permission(with_token(permission, &root))
        .await
        .expect("permission");
    let alice = pb::AuthUserAddRequest {
        name: "alice".into(),
        password: "alicepw".into(),
        ..Default::default()
    };
    auth.user_add(with_token(alice, &root))
        .await
        .expect("alice");
    let grant = pb::AuthUserGrantRoleRequest {
        user: "alice".into(),
        role: "reader".into(),
    };
    auth.user_grant_role(with_token(grant, &root))
        .await
        .expect("granted");
    let alice = authenticate(&mut auth, "alice", "alicepw").await;
    let status = kv
        .put(with_token(put("app/x", "1"), &alice))
        .await
        .expect_err("read-only");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), "etcdserver: permission denied");
    let mut watch =
        synod_proto::etcdserverpb::watch_client::WatchClient::new(cluster.channel(NodeId(3)).await);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"secret/".to_vec().into(),
                range_end: b"secret0".to_vec().into(),
                ..Default::default()
            },
        )),
    };
    let requests = tokio_stream::iter([create]).chain(tokio_stream::pending());
    let mut responses = watch
        .watch(with_token(requests, &alice))
        .await
        .expect("a watch stream")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("an answer")
        .expect("a message")
        .expect("a response");
    assert!(first.canceled, "{first:?}");
    assert_eq!(first.cancel_reason, "etcdserver: permission denied");
    cluster.shutdown().await;
}

use tokio_stream::StreamExt as _;

/// One call to etcd's JSON gateway on the client port (plain HTTP/1.1); the whole answer.
async fn gateway(
    address: std::net::SocketAddr,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let authorization = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{authorization}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A TLS channel to `address`, trusting `ca`, presenting `identity`'s certificate.
async fn tls_channel(
    address: std::net::SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let read = |path: &Path| std::fs::read(path).expect("read a certificate");
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert), read(key)));
    }
    Endpoint::from_shared(format!("https://{address}"))
        .expect("a url")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Waits for the server to close `s` (a TLS alert may come first).
async fn closed(mut s: tokio::net::TcpStream, within: Duration) {
    let mut buf = [0u8; 256];
    let ended = tokio::time::timeout(within, async {
        while let Ok(1..) = s.read(&mut buf).await {}
    })
    .await;
    assert!(ended.is_ok(), "the connection stayed open");
}

/// Certificates for a one-member TLS cluster under `dir`.
fn certificates(dir: &Path) -> authority::Files {
    let hosts = ["127.0.0.1".to_string()];
    authority::generate(dir, "test CA", &[("server", &hosts)], &["root"]).expect("certificates")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_plain_connections_on_a_tls_port_cost_nothing_else_and_certificates_rotate() {
    let dir = super::temp_dir("client-tls");
    let files = certificates(&dir.join("first"));
    let (cert, key) = files.of("server").expect("issued");
    let client_tls = TlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        trusted_ca: Some(files.ca.clone()),
        client_cert_auth: true,
    };
    let cluster = Cluster::start_with("client-tls", 1, |config| {
        config.client_tls = Some(client_tls.clone());
    })
    .await;
    let address = cluster.servers[&NodeId(1)].client_addr;
    let root = files.of("root").expect("root's");
    // Connections that never start a handshake, one that stops halfway, plain text.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        stalled.push(
            tokio::net::TcpStream::connect(address)
                .await
                .expect("connect"),
        );
    }
    let mut half = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    half.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01])
        .await
        .expect("write");
    let mut plain = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    // Meanwhile a client with a certificate is served at once...
    let started = std::time::Instant::now();
    let channel = tls_channel(address, &files.ca, Some(root))
        .await
        .expect("TLS");
    KvClient::new(channel)
        .put(put("k", "v"))
        .await
        .expect("served while others stall");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // ...one without is refused, and the plain-text one is closed.
    let without = async {
        let channel = tls_channel(address, &files.ca, None).await?;
        Ok::<_, tonic::transport::Error>(KvClient::new(channel).put(put("k", "v")).await.is_ok())
    };
    assert!(
        !without.await.unwrap_or(false),
        "served without a certificate"
    );
    closed(plain, Duration::from_secs(5)).await;
    // The stalled ones are dropped after the handshake timeout.
    let limit = synod_node::tls::HANDSHAKE_TIMEOUT + Duration::from_secs(3);
    for s in stalled.into_iter().chain([half]) {
        closed(s, limit).await;
    }

    // Rotation: new certificates from a new CA written over the files are served without a
    // restart.
    let second = certificates(&dir.join("second"));
    let (new_cert, new_key) = second.of("server").expect("issued");
    std::fs::copy(new_key, key).expect("replace the key");
    std::fs::copy(new_cert, cert).expect("replace the certificate");
    std::fs::copy(&second.ca, &files.ca).expect("replace the CA");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let new_root = second.of("root").expect("root's");
    let channel = tls_channel(address, &files.ca, Some(new_root))
        .await
        .expect("TLS with the new certificates");
    KvClient::new(channel)
        .put(put("k", "rotated"))
        .await
        .expect("served with the rotated certificates");
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
