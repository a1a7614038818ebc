//! `synod viz`: a web page that runs the simulator on request and plays the run back in the
//! browser. The server is this file: plain HTTP/1.1 on one port, the page's three files
//! compiled into the binary (nothing is loaded from elsewhere), and `GET /api/run`, which
//! runs one seed with the page's settings and a viewer's interventions and answers the
//! recording (`docs/trace-format.md`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use synod_node::http::{read_head, request_line};
use synod_sim::{FaultSet, Intervention, RunConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::sim::{record, Variant, PROTOCOLS};

const INDEX_HTML: &str = include_str!("../viz/index.html");
const VIZ_JS: &str = include_str!("../viz/viz.js");
const VIZ_CSS: &str = include_str!("../viz/viz.css");

/// A request head longer than this is refused.
const HEAD_BYTES_MAX: usize = 16 << 10;

/// Interventions one run takes at most.
const INTERVENTIONS_MAX: usize = 200;

/// The most work one run may be: nodes x clients x ticks. About half a minute on one core,
/// and a recording of at most 500,000 events.
const WORK_MAX: u64 = 2_000_000;

/// Spare nodes the simulator starts under membership faults (`synod_sim`'s `SPARE_NODES`).
const SPARE_NODES: usize = synod_sim::SPARE_NODES;

/// Options of `synod viz`.
#[derive(Args, Debug)]
pub struct VizArgs {
    /// Address to serve the page on. Loopback by default: the page runs simulations on
    /// request, which anyone who can reach it may ask for. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
}

/// Serves the page until interrupted.
pub fn run(args: VizArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(args.listen))
}

async fn serve(listen: SocketAddr) -> Result<ExitCode> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr().context("reading the bound address")?;
    println!("synod viz: open http://{address}/ (Ctrl-C to stop)");
    // Simulations run on blocking threads, as many at once as there are cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runs = Arc::new(Semaphore::new(cores));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let runs = runs.clone();
                tokio::spawn(async move {
                    let _ = answer(stream, &runs).await;
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Answers one request on a connection, then closes it.
async fn answer(mut stream: TcpStream, runs: &Semaphore) -> std::io::Result<()> {
    let Some(head) = read_head(&mut stream, HEAD_BYTES_MAX, Duration::from_secs(10)).await? else {
        return respond(&mut stream, 400, "text/plain", b"bad request\n").await;
    };
    let (method, target) = request_line(&head);
    let (method, target) = (method.as_str(), target.as_str());
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", b"only GET is served\n").await;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/" | "/index.html" => {
            respond(
                &mut stream,
                200,
                "text/html; charset=utf-8",
                INDEX_HTML.as_bytes(),
            )
            .await
        }
        "/viz.js" => {
            let kind = "text/javascript; charset=utf-8";
            respond(&mut stream, 200, kind, VIZ_JS.as_bytes()).await
        }
        "/viz.css" => {
            respond(
                &mut stream,
                200,
                "text/css; charset=utf-8",
                VIZ_CSS.as_bytes(),
            )
            .await
        }
        "/api/options" => respond(&mut stream, 200, "application/json", options().as_bytes()).await,
        "/api/run" => {
            let settings = match Settings::from_query(query) {
                Ok(settings) => settings,
                Err(e) => {
                    let body = format!("{e}\n");
                    return respond(&mut stream, 400, "text/plain", body.as_bytes()).await;
                }
            };
            let Ok(_permit) = runs.acquire().await else {
                return respond(&mut stream, 503, "text/plain", b"shutting down\n").await;
            };
            let run = tokio::task::spawn_blocking(move || settings.run()).await;
            match run {
                Ok(Ok(json)) => {
                    respond(&mut stream, 200, "application/json", json.as_bytes()).await
                }
                Ok(Err(e)) => {
                    let body = format!("{e:#}\n");
                    respond(&mut stream, 400, "text/plain", body.as_bytes()).await
                }
                Err(e) => {
                    let body = format!("the simulation failed: {e}\n");
                    respond(&mut stream, 500, "text/plain", body.as_bytes()).await
                }
            }
        }
        _ => respond(&mut stream, 404, "text/plain", b"not found\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// What `/api/options` answers: the choices and the defaults the page starts from.
fn options() -> String {
    let quoted = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let d = Settings::default();
    format!(
        "{{\"protocols\":[{}],\"faults\":[{}],\"defaults\":{{\"protocol\":\"{}\",\"nodes\":{},\
         \"seed\":{},\"faults\":\"{}\",\"clients\":{},\"keys\":{},\"safety-ticks\":{},\
         \"liveness-ticks\":{},\"snapshot-every\":{},\"level\":\"{}\",\"backoff\":\"{}\",\"spread-clients\":\"{}\"}}}}\n",
        quoted(&PROTOCOLS),
        quoted(&synod_sim::FAULT_NAMES),
        d.protocol,
        d.config.nodes,
        d.config.seed,
        d.config.faults,
        d.config.clients,
        d.config.keys,
        d.config.safety_ticks,
        d.config.liveness_ticks,
        d.config.snapshot_every,
        d.variant.level,
        if d.variant.backoff { "on" } else { "off" },
        if d.config.spread_clients { "on" } else { "off" },
    )
}

/// One run the page asks for.
#[derive(Clone, Debug)]
struct Settings {
    protocol: String,
    variant: Variant,
    config: RunConfig,
}

impl Default for Settings {
    /// Three nodes, three clients, no faults (the viewer brings them), a 10 s safety phase.
    fn default() -> Settings {
        let mut config = RunConfig::new(1, 3);
        config.faults = FaultSet::NONE;
        config.clients = 3;
        config.keys = 3;
        config.safety_ticks = 1_000;
        config.liveness_ticks = 500;
        Settings {
            protocol: "raft".to_string(),
            variant: Variant {
                level: synod_gossip::Level::One,
                backoff: true,
            },
            config,
        }
    }
}

impl Settings {
    /// Reads the page's query string; an unknown parameter (the page's own, like `t`) is
    /// ignored, a bad value refused with the reason.
    fn from_query(query: &str) -> Result<Settings, String> {
        let mut settings = Settings::default();
        let mut interventions = String::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (name, value) = (decode(name)?, decode(value)?);
            let number = |low: u64, high: u64| -> Result<u64, String> {
                match value.trim().parse::<u64>() {
                    Ok(n) if (low..=high).contains(&n) => Ok(n),
                    _ => Err(format!(
                        "{name} must be a number from {low} to {high}, not {value:?}"
                    )),
                }
            };
            let config = &mut settings.config;
            match name.as_str() {
                "protocol" => {
                    if !PROTOCOLS.contains(&value.as_str()) {
                        return Err(format!(
                            "unknown protocol {value:?}; one of {}",
                            PROTOCOLS.join(", ")
                        ));
                    }
                    settings.protocol = value;
                }
                "nodes" => config.nodes = number(1, 9)? as usize,
                "seed" => config.seed = number(0, u64::MAX)?,
                "faults" => config.faults = FaultSet::parse(&value)?,
                "clients" => config.clients = number(1, 200)? as usize,
                "keys" => config.keys = number(1, 100)?,
                "safety-ticks" => config.safety_ticks = number(1, 20_000)?,
                "liveness-ticks" => config.liveness_ticks = number(1, 10_000)?,
                "snapshot-every" => config.snapshot_every = number(0, 1_000_000)?,
                "level" => settings.variant.level = value.parse()?,
                "backoff" => settings.variant.backoff = on_off(&name, &value)?,
                "spread-clients" => config.spread_clients = on_off(&name, &value)?,
                "do" => interventions = value,
                _ => {}
            }
        }
        let config = &settings.config;
        let work = config.nodes as u64
            * config.clients as u64
            * (config.safety_ticks + config.liveness_ticks);
        if work > WORK_MAX {
            return Err(format!(
                "that run is too big to watch: nodes x clients x (safety + liveness ticks) is \
                 {work}, at most {WORK_MAX} (about half a minute of simulation); \
                 synod sim runs bigger ones"
            ));
        }
        // Spare nodes an operator adds under membership faults can be clicked too.
        let spares = if config.faults.membership {
            SPARE_NODES
        } else {
            0
        };
        let mut list = Intervention::parse_list(&interventions, config.nodes + spares)?;
        if list.len() > INTERVENTIONS_MAX {
            return Err(format!("at most {INTERVENTIONS_MAX} interventions per run"));
        }
        list.sort_by_key(|i| i.at);
        settings.config.interventions = list;
        Ok(settings)
    }

    fn run(&self) -> Result<String> {
        record(&self.protocol, self.variant, &self.config)
    }
}

/// `on` or `off`.
fn on_off(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{name} is on or off, not {value:?}")),
    }
}

/// Decodes a query component: `%XX` escapes and `+` for a space.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape in {text:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_sets_a_run() {
        let settings = Settings::from_query(
            "protocol=basic-paxos&nodes=5&seed=42&faults=crash%2Cpartition&clients=4&t=99\
             &do=crash%3A1%401000%2Ccut:2-3@2000",
        )
        .expect("parses");
        assert_eq!(settings.protocol, "basic-paxos");
        assert_eq!(settings.config.nodes, 5);
        assert_eq!(settings.config.seed, 42);
        assert_eq!(settings.config.faults.to_string(), "partition,crash");
        assert_eq!(settings.config.clients, 4);
        assert_eq!(
            Intervention::list_to_string(&settings.config.interventions),
            "crash:1@1000,cut:2-3@2000"
        );
    }

    #[test]
    fn bad_queries_are_refused_with_the_reason() {
        for (query, says) in [
            ("protocol=pbft", "unknown protocol"),
            ("nodes=0", "nodes must be"),
            ("nodes=12", "nodes must be"),
            ("faults=meteor", "meteor"),
            ("do=crash:7@1", "not a node"),
            ("seed=%zz", "bad escape"),
            ("level=most", "consistency level"),
            ("backoff=maybe", "backoff is on or off"),
            ("spread-clients=yes", "spread-clients is on or off"),
            ("nodes=9&clients=200&safety-ticks=20000", "too big to watch"),
        ] {
            let error = Settings::from_query(query).expect_err(query);
            assert!(error.contains(says), "{query}: {error}");
        }
    }

    #[test]
    fn the_options_are_json_with_every_protocol() {
        let options: serde_json::Value = serde_json::from_str(&options()).expect("json");
        assert_eq!(options["protocols"].as_array().map(Vec::len), Some(7));
        assert_eq!(options["defaults"]["nodes"], 3);
    }
}
