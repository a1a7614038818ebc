//! `synod bench put|get|mixed`: closed-loop load over etcd's v3 API, against Synod or etcd.
//!
//! Each client sends one request, waits for the answer, and sends the next; clients share
//! `--conns` HTTP/2 connections, spread round-robin over the endpoints. The figures are
//! measured at the client: throughput over the whole run, and latency percentiles over every
//! request that succeeded. `synod bench floor` measures what one client's put cannot beat
//! here (see `floor`); `watch`, `lease` and `keep-alive` measure watchers and leases at scale
//! (see `watch` and `lease`).

mod floor;
mod lease;
mod watch;

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use synod_core::Rng;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::kv_client::KvClient;

use super::client::Connection;
use crate::progress::Progress;

/// What the load does.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Puts of random keys in the key space.
    Put,
    /// Reads of random keys in the key space (run `put` first to fill it).
    Get,
    /// Reads and puts, --read-ratio of them reads.
    Mixed,
    /// One client's puts to the leader next to their floor: a serializable get's round trip,
    /// an fdatasync in --dir and a loopback round trip, --total samples of each (one client:
    /// --clients, --conns and --read-ratio do not apply).
    Floor,
    /// --watchers watchers on one prefix, spread over --conns watch streams, and --total puts
    /// under it by --clients writers: every event delivered to every watcher, timed from its
    /// put to its arrival.
    Watch,
    /// --total leases granted (--lease-ttl seconds each) by --clients clients.
    Lease,
    /// --total keep-alives by --clients clients, each on a keep-alive stream of its own, of
    /// every lease the cluster holds, in turn (run `lease` first).
    KeepAlive,
}

/// How the figures are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// For people.
    Text,
    /// One JSON object, for scripts.
    Json,
}

/// Flags of `synod bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// put, get, mixed or floor.
    #[arg(value_enum)]
    workload: Workload,
    #[command(flatten)]
    connection: Connection,
    /// Concurrent clients, each with one request outstanding.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// HTTP/2 connections the clients share (0: one per 16 clients, at least one per endpoint).
    #[arg(long, default_value_t = 0)]
    conns: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 10_000)]
    total: usize,
    /// Bytes in each value put.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keys are drawn from this many.
    #[arg(long, default_value_t = 100_000)]
    key_space: u64,
    /// Reads: `l` linearizable or `s` serializable.
    #[arg(long, default_value = "l")]
    consistency: String,
    /// The share of reads in `mixed`.
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    /// text or json.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Seeds the key choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// floor: where to time fdatasync, a directory on the disk the servers' data is on.
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
    /// watch: watchers on the prefix.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// lease: each lease's time to live, in seconds.
    #[arg(long, default_value_t = 600)]
    lease_ttl: i64,
}

/// What one client measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
}

impl Tally {
    /// Counts a success that took `start.elapsed()`.
    fn ok(&mut self, start: Instant) {
        self.latencies_us.push(micros(start));
    }

    /// Counts a failure, keeping the first one's message.
    fn failed(&mut self, error: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error());
        }
    }

    /// What every task measured, together.
    async fn gather(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> anyhow::Result<Tally> {
        let mut all = Tally::default();
        for task in tasks {
            let t = task.await.context("a client task failed")?;
            all.latencies_us.extend(t.latencies_us);
            all.errors += t.errors;
            if all.first_error.is_none() {
                all.first_error = t.first_error;
            }
        }
        Ok(all)
    }
}

/// Microseconds since `start`.
fn micros(start: Instant) -> u32 {
    start.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// A status as a line.
fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn key(n: u64) -> bytes::Bytes {
    format!("bench/{n:010}").into_bytes().into()
}

/// Runs the benchmark and prints its figures.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.clients == 0 || args.total == 0 || args.key_space == 0 {
        bail!("--clients, --total and --key-space must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio is a share between 0 and 1");
    }
    let serializable = match args.consistency.as_str() {
        "l" => false,
        "s" => true,
        other => bail!("--consistency {other}: use l (linearizable) or s (serializable)"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let reads = match args.workload {
        Workload::Put => Reads::Never,
        Workload::Get => Reads::Always,
        Workload::Mixed => Reads::Share(args.read_ratio),
        Workload::Floor => return runtime.block_on(floor::run(&args)),
        Workload::Watch => return runtime.block_on(watch::run(&args)),
        Workload::Lease => return runtime.block_on(lease::grant(&args)),
        Workload::KeepAlive => return runtime.block_on(lease::keep_alive(&args)),
    };
    runtime.block_on(async move {
        let channels = connect(&args, args.clients.div_ceil(16)).await?;
        let conns = channels.len();
        let value: bytes::Bytes = vec![b'v'; args.value_size].into();
        let done = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut clients = Vec::with_capacity(args.clients);
        let mut seeds = Rng::new(args.seed);
        for c in 0..args.clients {
            let share = share(args.total, args.clients, c);
            let client = Client {
                kv: KvClient::new(channels[c % channels.len()].clone())
                    .max_decoding_message_size(usize::MAX),
                rng: seeds.fork(),
                reads,
                key_space: args.key_space,
                serializable,
                value: value.clone(),
                done: done.clone(),
            };
            clients.push(tokio::spawn(client.run(share)));
        }
        gather_and_report(&args, conns, started, done, clients, "requests").await
    })
}

/// Waits for the clients, drawing progress as `done` counts up to `--total`, and prints the
/// figures of the run that began at `started`; `what` names the operations counted.
async fn gather_and_report(
    args: &BenchArgs,
    conns: usize,
    started: Instant,
    done: Arc<AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<Tally>>,
    what: &str,
) -> anyhow::Result<ExitCode> {
    let progress = Shown::start(args, done, args.total);
    let tally = Tally::gather(clients).await?;
    let elapsed = started.elapsed();
    progress.finish().await;
    report(args, conns, elapsed, tally, what)
}

/// `--conns` connections (by default `default` of them), at least one per endpoint, spread
/// round-robin over the endpoints.
async fn connect(args: &BenchArgs, default: usize) -> anyhow::Result<Vec<super::client::Authed>> {
    let endpoints = args.connection.endpoints.len().max(1);
    let conns = match args.conns {
        0 => default.max(endpoints),
        n => n,
    };
    let mut channels = Vec::with_capacity(conns);
    for i in 0..conns {
        let endpoint = &args.connection.endpoints[i % endpoints];
        channels.push(args.connection.channel_to(endpoint).await?);
    }
    Ok(channels)
}

/// Client `c`'s share of `total` requests split among `clients`, as evenly as they go.
fn share(total: usize, clients: usize, c: usize) -> usize {
    total / clients + usize::from(c < total % clients)
}

/// Progress drawn (on a terminal) as `done` counts up to `total`.
struct Shown {
    done: Arc<AtomicUsize>,
    total: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Shown {
    fn start(args: &BenchArgs, done: Arc<AtomicUsize>, total: usize) -> Shown {
        let progress = Progress::new(&format!("bench {:?}", args.workload).to_lowercase());
        let counter = done.clone();
        let task = tokio::spawn(async move {
            loop {
                let n = counter.load(Ordering::Relaxed);
                progress.update(n.min(total), total, "");
                if n >= total {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Shown { done, total, task }
    }

    /// Draws the end, also of a run that stopped short.
    async fn finish(self) {
        self.done.fetch_max(self.total, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

/// Which of a client's requests are reads.
#[derive(Clone, Copy)]
enum Reads {
    Never,
    Always,
    /// This share of them, drawn at random.
    Share(f64),
}

struct Client {
    kv: KvClient<super::client::Authed>,
    rng: Rng,
    reads: Reads,
    key_space: u64,
    serializable: bool,
    value: bytes::Bytes,
    done: Arc<AtomicUsize>,
}

impl Client {
    async fn run(mut self, requests: usize) -> Tally {
        let mut tally = Tally {
            latencies_us: Vec::with_capacity(requests),
            ..Default::default()
        };
        for _ in 0..requests {
            let key = key(self.rng.range(0, self.key_space));
            let read = match self.reads {
                Reads::Never => false,
                Reads::Always => true,
                Reads::Share(ratio) => self.rng.chance(ratio),
            };
            let start = Instant::now();
            let outcome = if read {
                self.kv
                    .range(pb::RangeRequest {
                        key,
                        serializable: self.serializable,
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            } else {
                self.kv
                    .put(pb::PutRequest {
                        key,
                        value: self.value.clone(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            };
            match outcome {
                Ok(()) => tally.ok(start),
                Err(status) => tally.failed(|| describe(&status)),
            }
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        tally
    }
}

/// The `q` quantile of sorted latencies, in milliseconds.
fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// Prints the figures; `what` names the operations counted (requests, events).
fn report(
    args: &BenchArgs,
    conns: usize,
    elapsed: Duration,
    mut tally: Tally,
    what: &str,
) -> anyhow::Result<ExitCode> {
    tally.latencies_us.sort_unstable();
    let ok = tally.latencies_us.len();
    let seconds = elapsed.as_secs_f64();
    let throughput = ok as f64 / seconds.max(1e-9);
    let l = &tally.latencies_us;
    let (p50, p90, p99, p999, max) = (
        quantile_ms(l, 0.50),
        quantile_ms(l, 0.90),
        quantile_ms(l, 0.99),
        quantile_ms(l, 0.999),
        quantile_ms(l, 1.0),
    );
    let workload = format!("{:?}", args.workload).to_lowercase();
    match args.format {
        Format::Json => println!(
            "{{\"workload\":\"{workload}\",\"clients\":{},\"conns\":{conns},\"total\":{},\"ok\":{ok},\"errors\":{},\"seconds\":{seconds:.3},\"throughput\":{throughput:.1},\"p50_ms\":{p50:.3},\"p90_ms\":{p90:.3},\"p99_ms\":{p99:.3},\"p999_ms\":{p999:.3},\"max_ms\":{max:.3}}}",
            args.clients, args.total, tally.errors
        ),
        Format::Text => {
            println!(
                "{workload}: {} requests, {} clients over {conns} connections, {}-byte values",
                args.total, args.clients, args.value_size
            );
            println!("  throughput  {throughput:.0} {what}/s ({ok} ok in {seconds:.2} s)");
            println!(
                "  latency     p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms, max {max:.2} ms"
            );
            println!("  errors      {}", tally.errors);
        }
    }
    if let Some(error) = tally.first_error {
        eprintln!("first error: {error}");
    }
    Ok(if tally.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::quantile_ms;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let l: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(quantile_ms(&l, 0.5), 500.0);
        assert_eq!(quantile_ms(&l, 0.99), 990.0);
        assert_eq!(quantile_ms(&l, 0.999), 999.0);
        assert_eq!(quantile_ms(&l, 1.0), 1000.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
    }
}
