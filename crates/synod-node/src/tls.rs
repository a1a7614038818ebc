//! TLS for the client port and the peer link, with etcd's flags and meanings.
//!
//! - The client port (`--cert-file`, `--key-file`, `--trusted-ca-file`,
//!   `--client-cert-auth`): every connection must speak TLS. With `--client-cert-auth` a
//!   client must present a certificate that chains to the trusted CA; with only
//!   `--trusted-ca-file`, a certificate is verified if presented. A verified certificate's
//!   common name is who the client is when authentication is on, as in etcd.
//! - The peer link (`--peer-*`): a member presents its certificate when it dials and verifies
//!   the one it is answered with against the peer CA and the host it dialled. With
//!   `--peer-client-cert-auth` the member dialled verifies the dialler's in turn, and after
//!   the handshake names the member, checks that the certificate is valid for the host that
//!   member's peer address names: a certificate from another CA, or one issued to another
//!   host, is refused before any message of it reaches the engine.
//!
//! Certificates are read again when their files change (checked at most once a second, when
//! a connection arrives), so they can be rotated without a restart; a rotation that does not
//! load (a half-written file, a key that does not match) is logged and the old one kept.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{info, warn};

/// A connection of either kind, plain or TLS, as the transport and the client port use it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The files of one side (clients or peers), as etcd names them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// This server's certificate (chain), PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// The CA that the other side's certificates must chain to, PEM.
    pub trusted_ca: Option<PathBuf>,
    /// Require a certificate of whoever connects (`--client-cert-auth`,
    /// `--peer-client-cert-auth`).
    pub client_cert_auth: bool,
}

/// Why TLS could not be set up.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A file holds no PEM item of the kind wanted.
    #[error("{}: {what}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the certificates or key.
    #[error("{0}")]
    Rustls(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Content {
            path: path.to_path_buf(),
            what: format!("not a PEM certificate file ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Content {
            path: path.to_path_buf(),
            what: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Content {
        path: path.to_path_buf(),
        what: format!("holds no private key ({e})"),
    })
}

fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Content {
            path: path.to_path_buf(),
            what: format!("not a usable CA certificate ({e})"),
        })?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rustls_error(e: impl fmt::Display) -> TlsError {
    TlsError::Rustls(e.to_string())
}

/// What the server side of a TLS connection presents and asks for.
fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?;
    let builder = match &files.trusted_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(load_roots(ca)?, provider());
            let verifier = if files.client_cert_auth {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(rustls_error)?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| {
            TlsError::Rustls(format!(
                "{} and {} do not make a certificate and its key: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// What a member presents when it dials a peer, and the CA it checks the peer against.
fn dial_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let Some(ca) = &files.trusted_ca else {
        return Err(TlsError::Rustls(
            "--peer-trusted-ca-file is required with --peer-cert-file: members check each \
             other against it"
                .into(),
        ));
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(load_roots(ca)?, provider())
        .build()
        .map_err(rustls_error)?;
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(rustls_error)
}

/// When each file last changed, to tell a rotation.
fn stamp(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.trusted_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
    .collect()
}

/// How often the files are looked at for a rotation, at most.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A TLS configuration that follows its files.
struct Reloading<T> {
    what: &'static str,
    files: TlsFiles,
    build: fn(&TlsFiles) -> Result<T, TlsError>,
    state: Mutex<Loaded<T>>,
}

struct Loaded<T> {
    config: Arc<T>,
    stamp: Vec<Option<SystemTime>>,
    checked: Instant,
}

impl<T> Reloading<T> {
    fn new(
        what: &'static str,
        files: TlsFiles,
        build: fn(&TlsFiles) -> Result<T, TlsError>,
    ) -> Result<Self, TlsError> {
        let stamp = stamp(&files);
        let config = Arc::new(build(&files)?);
        Ok(Reloading {
            what,
            files,
            build,
            state: Mutex::new(Loaded {
                config,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration in force, read again first if its files changed.
    fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let now = stamp(&self.files);
            if now != state.stamp {
                state.stamp = now;
                match (self.build)(&self.files) {
                    Ok(config) => {
                        state.config = Arc::new(config);
                        info!(what = self.what, cert = %self.files.cert.display(),
                              "certificates changed on disk: reloaded");
                    }
                    Err(e) => warn!(what = self.what, error = %e,
                                    "certificates changed on disk but do not load; keeping the old ones"),
                }
            }
        }
        state.config.clone()
    }
}

/// How long a TLS handshake may take before the connection is dropped: a client that opens
/// connections and stalls (slowloris) holds a socket that long and no longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS on the client port.
pub struct ClientTls {
    config: Reloading<ServerConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.config.files)
            .finish()
    }
}

impl ClientTls {
    /// Loads the client port's certificates; fails if they do not load.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        // gRPC clients offer only HTTP/2 and get it. The server's order decides, so a client
        // that offers both (curl, a browser) gets HTTP/1.1, which etcd's HTTP endpoints
        // (/health, the JSON gateway) are served in.
        let build = |files: &TlsFiles| server_config(files, &[b"http/1.1", b"h2"]);
        Ok(ClientTls {
            config: Reloading::new("clients", files, build)?,
        })
    }

    /// Runs the server side of a handshake on a new connection.
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(self.config.current());
        timed_out(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
    }
}

async fn timed_out<T>(
    limit: Duration,
    handshake: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, handshake).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no TLS handshake within {limit:?}"),
        )
    })?
}

/// TLS on the peer link: both the dialling and the answering side.
pub struct PeerTls {
    accept: Reloading<ServerConfig>,
    dial: Reloading<ClientConfig>,
    /// Whether a dialler must present a certificate valid for its member's host.
    pub client_cert_auth: bool,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("files", &self.accept.files)
            .finish()
    }
}

impl PeerTls {
    /// Loads the peer certificates; fails if they do not load.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let client_cert_auth = files.client_cert_auth;
        let build = |files: &TlsFiles| server_config(files, &[b"synod-peer"]);
        Ok(PeerTls {
            accept: Reloading::new("peers", files.clone(), build)?,
            dial: Reloading::new("peers (dialling)", files, dial_config)?,
            client_cert_auth,
        })
    }

    /// Dials side: the handshake on a connection to `address` (`host:port`), checking the
    /// peer's certificate is valid for `host`.
    pub async fn dial(
        &self,
        stream: TcpStream,
        address: &str,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = server_name(address)?;
        let connector = TlsConnector::from(self.dial.current());
        timed_out(HANDSHAKE_TIMEOUT, connector.connect(name, stream)).await
    }

    /// Answering side: the handshake on a connection a peer opened.
    pub async fn accept(
        &self,
        stream: TcpStream,
        limit: Duration,
    ) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(self.accept.current());
        timed_out(limit, acceptor.accept(stream)).await
    }

    /// With `--peer-client-cert-auth`: whether `cert`, the one a dialler presented (already
    /// checked against the CA), is valid for the host of `address`, the peer address of the
    /// member it says it is. `Err` says why not.
    pub fn check_member(
        &self,
        cert: Option<&CertificateDer<'_>>,
        address: &str,
    ) -> Result<(), String> {
        if !self.client_cert_auth {
            return Ok(());
        }
        let Some(cert) = cert else {
            return Err("it presented no certificate".into());
        };
        let name = server_name(address).map_err(|e| e.to_string())?;
        let cert = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
        cert.verify_is_valid_for_subject_name(&name)
            .map_err(|_| format!("its certificate is not issued for {}", host_of(address)))
    }
}

/// The host of `host:port` (`[v6]:port` too).
fn host_of(address: &str) -> &str {
    let address = address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .trim_end_matches('/');
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => address,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The name a certificate must be valid for to be `address`'s.
fn server_name(address: &str) -> io::Result<ServerName<'static>> {
    let host = host_of(address);
    ServerName::try_from(host.to_string()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host} is not a host name or address a certificate can name"),
        )
    })
}

/// The subject common name of a DER certificate, if it has one: who a client is when it
/// authenticates by certificate. The certificate was verified by rustls first, but this reads
/// it defensively all the same: anything unexpected gives `None`.
pub fn common_name(cert: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate, ... }
    let (certificate, _) = der::element(cert, der::SEQUENCE)?;
    let (mut tbs, _) = der::element(certificate, der::SEQUENCE)?;
    // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
    //                               validity, subject, ... }
    if tbs.first() == Some(&der::VERSION) {
        tbs = der::element(tbs, der::VERSION)?.1;
    }
    for _ in ["serial", "signature", "issuer", "validity"] {
        tbs = der::skip(tbs)?;
    }
    let (mut subject, _) = der::element(tbs, der::SEQUENCE)?;
    // Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
    while !subject.is_empty() {
        let (mut set, rest) = der::element(subject, der::SET)?;
        subject = rest;
        while !set.is_empty() {
            let (pair, rest) = der::element(set, der::SEQUENCE)?;
            set = rest;
            let (oid, value) = der::element(pair, der::OID)?;
            if oid == der::COMMON_NAME {
                let (&tag, _) = value.split_first()?;
                let (text, _) = der::element(value, tag)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// Just enough DER to find a name in a certificate.
mod der {
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const OID: u8 = 0x06;
    /// `[0] EXPLICIT`, the version of a TBSCertificate.
    pub const VERSION: u8 = 0xa0;
    /// 2.5.4.3, id-at-commonName.
    pub const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

    /// The contents of the element at the start of `bytes` if its tag is `tag`, and what
    /// follows it.
    pub fn element(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&found, rest) = bytes.split_first()?;
        if found != tag {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let count = (first & 0x7f) as usize;
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (digits, after) = rest.split_at(count);
            rest = after;
            digits.iter().fold(0usize, |n, &d| (n << 8) | d as usize)
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }

    /// What follows the element at the start of `bytes`, whatever its tag.
    pub fn skip(bytes: &[u8]) -> Option<&[u8]> {
        let tag = *bytes.first()?;
        element(bytes, tag).map(|(_, rest)| rest)
    }
}

/// A CA and the certificates of a local cluster, for `cluster up --tls` and the tests: server
/// certificates (for clients and peers alike, each valid for its hosts, usable to dial as
/// well as to answer) and client certificates (each one's common name is the user it
/// authenticates as).
pub mod authority {
    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    /// Where `generate` wrote each file: `ca.crt`, and `NAME.crt` and `NAME.key` for each
    /// server and user.
    #[derive(Clone, Debug)]
    pub struct Files {
        /// The CA's certificate (`--trusted-ca-file`, etcdctl's `--cacert`).
        pub ca: PathBuf,
        /// Per server and per user, in the order given: its name, certificate and key.
        pub issued: Vec<(String, PathBuf, PathBuf)>,
    }

    /// The flags of a member whose certificate is `server` under `dir` (as `generate` names
    /// them): TLS on clients and peers alike, client certificates required on both.
    pub fn server_flags(dir: &Path) -> Vec<String> {
        let file = |name: &str| dir.join(name).display().to_string();
        let mut flags = Vec::new();
        for side in ["", "peer-"] {
            flags.extend([
                format!("--{side}cert-file={}", file("server.crt")),
                format!("--{side}key-file={}", file("server.key")),
                format!("--{side}trusted-ca-file={}", file("ca.crt")),
                format!("--{side}client-cert-auth"),
            ]);
        }
        flags
    }

    impl Files {
        /// The certificate and key issued to `name`.
        pub fn of(&self, name: &str) -> Option<(&Path, &Path)> {
            self.issued
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, cert, key)| (cert.as_path(), key.as_path()))
        }
    }

    fn named(common_name: &str, hosts: &[String]) -> Result<CertificateParams, String> {
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(|e| e.to_string())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        name.push(DnType::OrganizationName, "Synod local cluster");
        params.distinguished_name = name;
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        Ok(params)
    }

    /// Writes a new CA (named `ca_name`) into `dir`, and the certificates it signs: one per
    /// server (a name and the hosts it is valid for) and one per user.
    pub fn generate(
        dir: &Path,
        ca_name: &str,
        servers: &[(&str, &[String])],
        users: &[&str],
    ) -> Result<Files, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: String, text: &str| -> Result<PathBuf, String> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(path)
        };
        let fail = |e: rcgen::Error| e.to_string();

        let mut ca = named(ca_name, &[])?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(fail)?;
        let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
        let issuer = Issuer::new(ca, ca_key);

        let servers = servers
            .iter()
            .map(|(name, hosts)| (*name, hosts.to_vec(), true));
        let users = users.iter().map(|name| (*name, Vec::new(), false));
        let mut issued = Vec::new();
        for (name, hosts, server) in servers.chain(users) {
            let mut params = named(name, &hosts)?;
            params.extended_key_usages = if server {
                // Members dial each other with the certificate they answer with.
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ]
            } else {
                vec![ExtendedKeyUsagePurpose::ClientAuth]
            };
            let key = KeyPair::generate().map_err(fail)?;
            let cert = params.signed_by(&key, &issuer).map_err(fail)?;
            issued.push((
                name.to_string(),
                write(format!("{name}.crt"), &cert.pem())?,
                write(format!("{name}.key"), &key.serialize_pem())?,
            ));
        }
        Ok(Files {
            ca: write("ca.crt".into(), &ca_cert.pem())?,
            issued,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("127.0.0.1:2380"), "127.0.0.1");
        assert_eq!(host_of("https://node1.example:2380/"), "node1.example");
        assert_eq!(host_of("[::1]:2380"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn the_common_name_of_generated_certificates() {
        let dir = std::env::temp_dir().join(format!("synod-tls-cn-{}", std::process::id()));
        let hosts = ["127.0.0.1".to_string()];
        let files = authority::generate(&dir, "test CA", &[("server", &hosts)], &["alice"])
            .expect("generate");
        let name = |path: &Path| {
            let certs = load_certs(path).expect("load");
            common_name(&certs[0])
        };
        let alice = files.of("alice").expect("alice's").0;
        assert_eq!(name(alice).as_deref(), Some("alice"));
        assert_eq!(
            name(files.of("server").expect("issued").0).as_deref(),
            Some("server")
        );
        assert_eq!(name(&files.ca).as_deref(), Some("test CA"));
        // Garbage, truncations and other DER read as no name, never a panic.
        let der = load_certs(alice).expect("load")[0].to_vec();
        for len in 0..der.len() {
            let _ = common_name(&der[..len]);
        }
        assert_eq!(common_name(b"\x30\x84\xff\xff\xff\xff"), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn files_that_do_not_load_say_which_and_why() {
        let dir = std::env::temp_dir().join(format!("synod-tls-bad-{}", std::process::id()));
        let hosts = ["127.0.0.1".to_string()];
        let files =
            authority::generate(&dir, "test CA", &[("server", &hosts)], &[]).expect("generate");
        let (server_cert, server_key) = files.of("server").expect("issued");
        let (server_cert, server_key) = (server_cert.to_path_buf(), server_key.to_path_buf());
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let missing = TlsFiles {
            cert: dir.join("absent.crt"),
            key: server_key.clone(),
            ..TlsFiles::default()
        };
        let error = ClientTls::new(missing)
            .expect_err("no such file")
            .to_string();
        assert!(error.contains("absent.crt"), "{error}");
        let wrong_key = TlsFiles {
            cert: server_cert.clone(),
            key: garbage.clone(),
            ..TlsFiles::default()
        };
        let error = ClientTls::new(wrong_key).expect_err("no key").to_string();
        assert!(error.contains("garbage.pem"), "{error}");
        let mismatched = TlsFiles {
            cert: files.ca.clone(),
            key: server_key.clone(),
            ..TlsFiles::default()
        };
        assert!(ClientTls::new(mismatched).is_err());
        let no_ca = TlsFiles {
            cert: server_cert.clone(),
            key: server_key.clone(),
            ..TlsFiles::default()
        };
        let error = PeerTls::new(no_ca)
            .expect_err("peers need a CA")
            .to_string();
        assert!(error.contains("--peer-trusted-ca-file"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
