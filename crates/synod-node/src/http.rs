//! `/metrics` (Prometheus' text format), `/health`, `/version`, and the live view (`/live`, a
//! page, and `/status`, the JSON it polls) over plain HTTP/1.1, on the
//! metrics port and, as etcd serves them, on the client port next to gRPC (a connection that
//! opens with HTTP/2's preface goes to gRPC, any other here), where etcd's JSON gateway
//! (`POST /v3/...`, see `api::gateway`) is served too. Deliberately small: one request per
//! connection, a head of at most 8 KiB, a body only with a Content-Length.
//!
//! With TLS on the client port (`--cert-file`), every connection must open with a TLS
//! handshake, and which side it goes to is read off the protocol the client offered (ALPN):
//! gRPC clients offer only `h2`; a client offering HTTP/1.1 too (curl, a browser) is
//! answered here. A client that offers none is told apart by its first bytes, as without
//! TLS.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use synod_core::ReadConsistency;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::api::{gateway, Api};
use crate::tls::{ClientTls, Io};
use crate::transport::MetricsRenderer;

const REQUEST_BYTES_MAX: usize = 8 << 10;

/// The first bytes of HTTP/2's connection preface ("PRI * HTTP/2.0..."), which every gRPC
/// client sends first.
const HTTP2_PREFACE: &[u8] = b"PRI ";

/// How long a new client connection may take to send its first bytes before it is dropped.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(5);

/// Who is at the other end of a client connection, as the gRPC services see it (in each
/// request's extensions).
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    /// Its address.
    pub remote: Option<SocketAddr>,
    /// The common name of the certificate it presented, verified against the trusted CA.
    pub common_name: Option<Arc<str>>,
}

/// A client connection for the gRPC server: plain TCP or TLS.
pub struct ClientConn {
    io: Pin<Box<dyn Io>>,
    info: ClientInfo,
}

impl tonic::transport::server::Connected for ClientConn {
    type ConnectInfo = ClientInfo;

    fn connect_info(&self) -> ClientInfo {
        self.info.clone()
    }
}

impl AsyncRead for ClientConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.io.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}

/// Accepts on the client port until the server stops, handing gRPC connections to `grpc`
/// (the gRPC server's incoming stream) and answering the others here; with `tls`, after a
/// TLS handshake.
pub async fn split_client_port(
    listener: TcpListener,
    grpc: mpsc::Sender<std::io::Result<ClientConn>>,
    api: Arc<Api>,
    transport: MetricsRenderer,
    tls: Option<Arc<ClientTls>>,
) {
    let mut stop = api.stop.clone();
    while let Some(stream) = accept(&listener, &mut stop).await {
        // Nagle's algorithm against delayed acks costs small answers 40 ms.
        let _ = stream.set_nodelay(true);
        let (grpc, api, transport, tls) =
            (grpc.clone(), api.clone(), transport.clone(), tls.clone());
        tokio::spawn(async move {
            let remote = stream.peer_addr().ok();
            let Some(opened) = open(stream, tls.as_deref(), remote).await else {
                return;
            };
            if opened.http2 {
                let info = ClientInfo {
                    remote,
                    common_name: opened.common_name,
                };
                let conn = ClientConn {
                    io: opened.io,
                    info,
                };
                let _ = grpc.send(Ok(conn)).await;
            } else if let Err(e) = answer(opened.io, &api, &transport, Port::Client).await {
                debug!(error = %e, "an HTTP request on the client port failed");
            }
        });
    }
}

/// A client connection past its TLS handshake (if any), with what it speaks.
struct Opened {
    io: Pin<Box<dyn Io>>,
    http2: bool,
    common_name: Option<Arc<str>>,
}

/// Runs the TLS handshake (with `tls`) and tells HTTP/2 from HTTP/1; `None` if the
/// connection fails or stalls first.
async fn open(
    stream: TcpStream,
    tls: Option<&ClientTls>,
    remote: Option<SocketAddr>,
) -> Option<Opened> {
    let Some(tls) = tls else {
        let first = tokio::time::timeout(FIRST_BYTES_TIMEOUT, opens_with_http2(&stream)).await;
        let http2 = first.ok()?.ok()?;
        return Some(Opened {
            io: Box::pin(stream),
            http2,
            common_name: None,
        });
    };
    let stream = match tls.accept(stream).await {
        Ok(stream) => stream,
        Err(e) => {
            // Plain text on a TLS port, an untrusted certificate, a stalled handshake: one
            // line, and the connection is closed.
            info!(client = ?remote, error = %e, "refused a client connection: TLS handshake failed");
            return None;
        }
    };
    let session = stream.get_ref().1;
    let common_name = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| crate::tls::common_name(cert))
        .map(Arc::from);
    let (io, http2): (Pin<Box<dyn Io>>, bool) = match session.alpn_protocol() {
        Some(protocol) => {
            let http2 = protocol == b"h2";
            (Box::pin(stream), http2)
        }
        None => {
            let mut stream = Rewound::new(stream);
            let first = tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.peek(HTTP2_PREFACE.len()));
            let seen = first.await.ok()?.ok()?;
            let http2 = seen == HTTP2_PREFACE;
            (Box::pin(stream), http2)
        }
    };
    Some(Opened {
        io,
        http2,
        common_name,
    })
}

/// A stream whose first bytes were read to look at them, and are read again.
struct Rewound<S> {
    inner: S,
    seen: Vec<u8>,
    at: usize,
}

impl<S: AsyncRead + Unpin> Rewound<S> {
    fn new(inner: S) -> Self {
        Rewound {
            inner,
            seen: Vec::new(),
            at: 0,
        }
    }

    /// Reads until `len` bytes are seen (fewer if the stream ends), and returns them.
    async fn peek(&mut self, len: usize) -> std::io::Result<&[u8]> {
        while self.seen.len() < len {
            let mut buf = vec![0u8; len - self.seen.len()];
            let n = self.inner.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            self.seen.extend_from_slice(&buf[..n]);
        }
        Ok(&self.seen)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.seen.len() {
            let n = (self.seen.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.seen[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether the connection's first bytes are HTTP/2's preface; reads nothing off it.
async fn opens_with_http2(stream: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; HTTP2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if n == first.len() || first[..n] != HTTP2_PREFACE[..n] {
            return Ok(first[..n] == *HTTP2_PREFACE);
        }
        // A prefix of the preface so far (rare: clients send it in one segment): wait for
        // the rest. Peek returns at once while the bytes it saw are unread, so poll gently.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next connection, or `None` once the server stops. A failed accept (out of file
/// descriptors, say) is tried again a little later rather than ending the port.
async fn accept(
    listener: &TcpListener,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<TcpStream> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => return Some(stream),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            _ = stop.changed() => return None,
        }
    }
}

/// Serves until the server stops.
pub async fn serve(listener: TcpListener, api: Arc<Api>, transport: MetricsRenderer) {
    let mut stop = api.stop.clone();
    while let Some(stream) = accept(&listener, &mut stop).await {
        let api = api.clone();
        let transport = transport.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &api, &transport, Port::Metrics).await {
                debug!(error = %e, "an HTTP request failed");
            }
        });
    }
}

async fn answer(
    mut stream: impl Io,
    api: &Arc<Api>,
    transport: &MetricsRenderer,
    port: Port,
) -> std::io::Result<()> {
    let Some(mut request) =
        read_head(&mut stream, REQUEST_BYTES_MAX, Duration::from_secs(5)).await?
    else {
        return respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            "bad request\n",
        )
        .await;
    };
    let (method, path) = request_line(&request);
    let (method, path) = (method.as_str(), path.as_str());
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if port == Port::Client && method == "POST" && gateway::handles(path) {
        let head_end = request
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(request.len(), |at| at + 4);
        let body_start = request.split_off(head_end);
        return gateway_call(stream, api, path, &request, body_start).await;
    }
    if method != "GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET, or POST to etcd's gateway calls under /v3/ on the client port\n",
        )
        .await;
    }
    match path {
        "/metrics" => {
            let mut body = String::with_capacity(8 << 10);
            api.node.shared.metrics.render(&mut body);
            transport(&mut body);
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &body).await
        }
        "/version" => {
            // etcd's answer; the API version Synod speaks, for clients that check it.
            let body = "{\"etcdserver\":\"3.5.0\",\"etcdcluster\":\"3.5.0\"}\n";
            respond(&mut stream, "200 OK", "application/json", body).await
        }
        "/health" => {
            let (status, body) = match health(api, query).await {
                Ok(()) => (
                    "200 OK",
                    "{\"health\":\"true\",\"reason\":\"\"}\n".to_string(),
                ),
                Err(reason) => (
                    "503 Service Unavailable",
                    format!("{{\"health\":\"false\",\"reason\":\"{reason}\"}}\n"),
                ),
            };
            respond(&mut stream, status, "application/json", &body).await
        }
        "/status" => {
            // The live view polls every member from one page: each answers any origin.
            let body = status_json(api);
            let cors = "Access-Control-Allow-Origin: *\r\nCache-Control: no-store\r\n";
            respond_with(&mut stream, "200 OK", "application/json", cors, &body).await
        }
        "/live" => respond(&mut stream, "200 OK", "text/html; charset=utf-8", LIVE_HTML).await,
        _ => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
    }
}

/// The live view of a cluster (`/live`): one page that polls every member's `/status`.
const LIVE_HTML: &str = include_str!("live.html");

/// What `/status` answers: this member's view of the cluster and its counters, for the live
/// view.
fn status_json(api: &Api) -> String {
    use std::fmt::Write as _;
    let shared = &api.node.shared;
    let status = api.node.current_status();
    let applied = shared.kv().applied_index();
    let metrics = &shared.metrics;
    let members: Vec<String> = match shared.membership() {
        Some(membership) => membership
            .voters()
            .into_iter()
            .map(|id| id.0.to_string())
            .collect(),
        None => api
            .config
            .initial_cluster
            .keys()
            .map(|id| id.0.to_string())
            .collect(),
    };
    let mut out = String::with_capacity(2048);
    let _ = write!(
        out,
        "{{\"id\":{},\"pid\":{},\"name\":{},\"protocol\":{},\"role\":\"{}\",\"era\":{},\"leader\":{},\
         \"commit\":{},\"applied\":{applied},\"last\":{},\"members\":[{}],\"uptime_s\":{:.3},\
         \"proposals_committed\":{},\"proposals_failed\":{},\"leader_changes\":{},\
         \"requests\":{},\"latency\":",
        shared.id.0,
        std::process::id(),
        json_string(&api.config.name),
        json_string(&api.config.protocol),
        status.role,
        status.era,
        status.leader.map_or("null".to_string(), |l| l.0.to_string()),
        status.commit_index,
        status.last_index,
        members.join(","),
        metrics.started.0.elapsed().as_secs_f64(),
        metrics.proposals_committed.get(),
        metrics.proposals_failed.get(),
        metrics.leader_changes.get(),
        metrics.requests.count(),
    );
    metrics.requests.json(&mut out);
    out.push_str(",\"fsync\":");
    metrics.fsync.json(&mut out);
    out.push_str("}\n");
    out
}

/// `text` as a JSON string.
pub fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// Reads a request's head, through the blank line, within `within` and at most `max` bytes.
/// Returns what was read (the head, and any body bytes that came with it), or `None` when no
/// whole head arrived.
pub async fn read_head(
    stream: &mut (impl AsyncRead + Unpin),
    max: usize,
    within: Duration,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            if request.len() > max {
                return Ok::<bool, std::io::Error>(false);
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(false);
            }
            request.extend_from_slice(&buf[..n]);
        }
        Ok(true)
    };
    let whole = tokio::time::timeout(within, read)
        .await
        .unwrap_or(Ok(false))?;
    Ok(whole.then_some(request))
}

/// The method and the target (path and query) of a request's first line; empty where
/// missing.
pub fn request_line(head: &[u8]) -> (String, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    (method, parts.next().unwrap_or("").to_string())
}

/// Which port a connection came in on: the gateway is served on the client port only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    Client,
    Metrics,
}

/// The value of header `name` (case-insensitive) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Reads a gateway call's body (`Content-Length` bytes, some of which came with the head),
/// runs it, and writes the answer: one JSON document, or JSON lines as a chunked stream
/// until the call ends or the client goes.
async fn gateway_call(
    mut stream: impl Io,
    api: &Arc<Api>,
    path: &str,
    head: &[u8],
    mut body: Vec<u8>,
) -> std::io::Result<()> {
    let head = String::from_utf8_lossy(head);
    let refuse = |status: &'static str, message: &str| {
        let json = serde_json::json!({ "error": message, "code": 3, "message": message });
        (status, json.to_string())
    };
    if header(&head, "transfer-encoding").is_some() {
        let (status, json) = refuse(
            "501 Not Implemented",
            "chunked request bodies are not taken: send the body with a Content-Length",
        );
        return respond(&mut stream, status, "application/json", &json).await;
    }
    // Base64 makes a value a third larger than etcd's request limit counts it.
    let limit = api
        .config
        .max_request_bytes
        .saturating_mul(2)
        .saturating_add(64 << 10);
    let length = match header(&head, "content-length").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) if n <= limit => n,
        Some(Ok(_)) => {
            let (status, json) = refuse("413 Payload Too Large", "the request is too large");
            return respond(&mut stream, status, "application/json", &json).await;
        }
        Some(Err(_)) => {
            let (status, json) = refuse("400 Bad Request", "the Content-Length is not a number");
            return respond(&mut stream, status, "application/json", &json).await;
        }
    };
    if body.len() < length
        && header(&head, "expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        // curl asks before sending a large body, and waits a second for this otherwise.
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let read_body = async {
        let mut buf = vec![0u8; 64 << 10];
        while body.len() < length {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&buf[..n]);
        }
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(30), read_body).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    }
    body.truncate(length);
    // A client that goes away ends the call: a lock or campaign it waited in is withdrawn,
    // a watch it followed stops.
    let answer = tokio::select! {
        answer = gateway::call(api, path, &body, header(&head, "authorization")) => answer,
        () = gone(&mut stream) => return Ok(()),
    };
    match answer {
        gateway::Answer::Whole(code, json) => {
            let status = match code {
                200 => "200 OK".to_string(),
                other => format!("{other} {}", gateway::reason_phrase(other)),
            };
            respond(&mut stream, &status, "application/json", &json).await
        }
        gateway::Answer::Lines(mut lines) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            loop {
                let line = tokio::select! {
                    line = lines.recv() => line,
                    () = gone(&mut stream) => return Ok(()),
                };
                let Some(mut line) = line else { break };
                line.push('\n');
                let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                stream.write_all(chunk.as_bytes()).await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
            stream.shutdown().await
        }
    }
}

/// Resolves once the client has closed its side of the connection (or it failed). Bytes it
/// sends after its request are read and dropped.
async fn gone(stream: &mut impl Io) {
    let mut buf = [0u8; 512];
    while let Ok(1..) = stream.read(&mut buf).await {}
}

/// Healthy means: the node that orders this one's writes is known (the leader; itself, on a
/// protocol without one) and, if that is this node, a linearizable read goes through here.
///
/// As etcd's: an alarm makes the member unhealthy unless the query excludes it
/// (`?exclude=NOSPACE`, as kubeadm's probes ask), and `serializable=true` skips the
/// linearizable read (the leader must still be known).
async fn health(api: &Api, query: &str) -> Result<(), String> {
    let params: Vec<(&str, &str)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let excluded = |name: &str| {
        params
            .iter()
            .any(|&(key, value)| key == "exclude" && value.eq_ignore_ascii_case(name))
    };
    let serializable = params
        .iter()
        .any(|&(key, value)| key == "serializable" && value == "true");
    let alarm = api
        .node
        .shared
        .kv()
        .alarms()
        .map(|(_, kind)| crate::api::alarm_name(kind))
        .find(|name| !excluded(name));
    if let Some(name) = alarm {
        return Err(format!("ALARM {name}"));
    }
    let status = api.node.current_status();
    match status.proposer() {
        None => Err("no leader".into()),
        Some(_) if serializable => Ok(()),
        Some(proposer) if proposer == status.id => {
            // One key, as etcd's health check reads: under gossip at QUORUM or ALL a read
            // of every key would ask the peers for the whole store.
            let health = synod_core::KeySpan {
                key: bytes::Bytes::from_static(b"health"),
                range_end: bytes::Bytes::new(),
            };
            let barrier = api
                .node
                .read_barrier(ReadConsistency::Linearizable, Some(health));
            match tokio::time::timeout(Duration::from_secs(2), barrier).await {
                Ok(Ok(())) => Ok(()),
                _ if status.role == synod_core::Role::Peer => {
                    Err("a linearizable read did not go through".into())
                }
                _ => Err("the leader could not confirm its leadership".into()),
            }
        }
        Some(_) => Ok(()),
    }
}

async fn respond(
    stream: &mut impl Io,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    respond_with(stream, status, content_type, "", body).await
}

/// [`respond`] with `extra` header lines (each ending in CRLF).
async fn respond_with(
    stream: &mut impl Io,
    status: &str,
    content_type: &str,
    extra: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await?;
    // Closing with request bytes unread would reset the connection, and the client might
    // see the reset rather than the answer: read (a little, briefly) until it closes too.
    let mut rest = [0u8; 4096];
    let drain = async {
        let mut left: usize = 64 << 10;
        while left > 0 {
            match stream.read(&mut rest).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    Ok(())
}
