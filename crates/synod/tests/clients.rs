//! Client libraries nobody here wrote, against a Synod cluster of real processes: Debian's
//! `python3-etcd3` (keys, transactions, watch, lease keep-alive, lock, members). Skipped,
//! saying so, when it is not installed; `.ci/run` installs it, so CI always runs this.

mod common;

use std::process::Command;

use common::Cluster;

/// Debian's python, where `python3-etcd3` installs (a python on PATH may be another).
const PYTHON: &str = "/usr/bin/python3";

fn etcd3_installed() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import etcd3"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_etcd3_works_against_synod() {
    if !etcd3_installed() {
        eprintln!("SKIPPED: python3-etcd3 is not installed (apt-get install python3-etcd3)");
        return;
    }
    let cluster = Cluster::start("python-etcd3", 3, &[]);
    cluster.ready().await;
    // A follower, so requests go through forwarding as well.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/python_etcd3.py");
    let out = Command::new(PYTHON)
        .arg(script)
        .arg(&cluster.member(3).client)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "python-etcd3 against synod: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Standard base64, as etcd's gateway takes keys and values.
fn b64(data: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = data.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// POSTs `json` to `path` as curl would; the status line and the body.
fn post(address: &str, path: &str, json: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// etcd's JSON gateway on the client port, as `curl` uses it: keys and values in base64,
/// 64-bit numbers as strings, etcd's field names, and a watch streamed as JSON lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_gateway_serves_etcd_calls_over_http() {
    let cluster = Cluster::start("gateway", 3, &[]);
    cluster.ready().await;
    let at = cluster.member(2).client.clone();

    // A watch first, on its own connection, streaming.
    let watch_at = at.clone();
    let watcher = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(&watch_at).expect("connect");
        let json = format!(
            "{{\"create_request\": {{\"key\": \"{}\"}}}}",
            b64("watched")
        );
        write!(
            stream,
            "POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        )
        .expect("send");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .expect("timeout");
        let mut lines = BufReader::new(stream).lines();
        let mut seen = Vec::new();
        while let Some(Ok(line)) = lines.next() {
            if line.contains("\"events\"") {
                seen.push(line);
                break;
            }
            seen.push(line);
        }
        seen
    });
    std::thread::sleep(std::time::Duration::from_millis(500));

    let (status, body) = post(
        &at,
        "/v3/kv/put",
        &format!(
            "{{\"key\": \"{}\", \"value\": \"{}\"}}",
            b64("foo"),
            b64("bar")
        ),
    );
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(
        body.contains("\"revision\":\""),
        "64-bit numbers as strings: {body}"
    );
    let (status, body) = post(
        &at,
        "/v3/kv/range",
        &format!("{{\"key\": \"{}\"}}", b64("foo")),
    );
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(
        body.contains(&format!("\"value\":\"{}\"", b64("bar"))),
        "{body}"
    );
    assert!(body.contains("\"count\":\"1\""), "{body}");
    let txn = format!(
        "{{\"compare\": [{{\"key\": \"{}\", \"result\": \"EQUAL\", \"target\": \"VALUE\", \"value\": \"{}\"}}], \"success\": [{{\"request_put\": {{\"key\": \"{}\", \"value\": \"{}\"}}}}]}}",
        b64("foo"),
        b64("bar"),
        b64("foo"),
        b64("baz")
    );
    let (status, body) = post(&at, "/v3/kv/txn", &txn);
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("\"succeeded\":true"), "{body}");
    let (status, body) = post(&at, "/v3/lease/grant", "{\"TTL\": 30}");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("\"TTL\":\"30\""), "{body}");
    let (status, body) = post(&at, "/v3/maintenance/status", "");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("3.5.0-synod"), "{body}");

    post(
        &at,
        "/v3/kv/put",
        &format!(
            "{{\"key\": \"{}\", \"value\": \"{}\"}}",
            b64("watched"),
            b64("seen")
        ),
    );
    let watched = watcher.join().expect("the watcher");
    let last = watched.last().cloned().unwrap_or_default();
    assert!(
        last.contains("\"result\"") && last.contains(&b64("seen")),
        "{watched:?}"
    );

    // Bad input gets a clear error, as from etcd's gateway.
    let (status, body) = post(&at, "/v3/kv/range", "{not json");
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, _) = post(&at, "/v3/kv/range", "{\"key\": 12}");
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    let (status, body) = post(&at, "/v3/kv/put", "{\"value\": \"eA==\"}");
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    assert!(body.contains("key is not provided"), "{body}");
    let (status, _) = post(&at, "/v3/nothing/here", "{}");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    // Unknown fields are ignored, as etcd's gateway ignores them.
    let (status, body) = post(
        &at,
        "/v3/kv/range",
        &format!("{{\"key\": \"{}\", \"newer_field\": 1}}", b64("foo")),
    );
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    gateway_http_corners(&at);
    gateway_lock_waiter_that_hangs_up_is_withdrawn(&at);
}

/// Request framing as curl and other HTTP clients send it.
fn gateway_http_corners(at: &str) {
    use std::io::{Read, Write};
    // A chunked body is refused with a clear error, not taken as an empty request.
    let mut stream = std::net::TcpStream::connect(at).expect("connect");
    write!(
        stream,
        "POST /v3/lease/grant HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{{\"TTL\":5}}\r\n0\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert!(answer.contains("Content-Length"), "{answer}");

    // curl's Expect: 100-continue is answered before the body is sent.
    let json = format!(
        "{{\"key\": \"{}\", \"value\": \"{}\"}}",
        b64("big"),
        b64("v")
    );
    let mut stream = std::net::TcpStream::connect(at).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        json.len()
    )
    .expect("send the head");
    let mut first = [0u8; 25];
    stream.read_exact(&mut first).expect("an interim answer");
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(json.as_bytes()).expect("send the body");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

/// A client waiting for a lock through the gateway that hangs up leaves no key in line.
fn gateway_lock_waiter_that_hangs_up_is_withdrawn(at: &str) {
    use std::io::{Read, Write};
    let lock = format!("{{\"name\": \"{}\"}}", b64("gw-lock"));
    let (status, held) = post(at, "/v3/lock/lock", &lock);
    assert_eq!(status, "HTTP/1.1 200 OK", "{held}");
    let key = held
        .split("\"key\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the lock's key")
        .to_string();

    // A second caller waits, then hangs up.
    let mut waiter = std::net::TcpStream::connect(at).expect("connect");
    write!(
        waiter,
        "POST /v3/lock/lock HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{lock}",
        lock.len()
    )
    .expect("send");
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(waiter);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let (status, body) = post(at, "/v3/lock/unlock", &format!("{{\"key\": \"{key}\"}}"));
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    // The next caller gets the lock at once: the one that hung up holds no place before it
    // (its 60-second lease would otherwise keep it waiting).
    let mut next = std::net::TcpStream::connect(at).expect("connect");
    next.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(
        next,
        "POST /v3/lock/lock HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{lock}",
        lock.len()
    )
    .expect("send");
    let mut answer = String::new();
    let _ = next.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200 OK"),
        "the next caller waited: {answer}"
    );
}
