//! `synod bench watch`: what a watched write costs when many watch it. `--watchers` watchers
//! on one prefix, spread over `--conns` watch streams (one per connection, as an etcd client
//! multiplexes its watchers on one), then `--total` puts under the prefix by `--clients`
//! writers. Each value starts with the moment it was sent; each watcher's event is timed from
//! then to its arrival, so the latency is the put's commit plus the fan-out to every watcher,
//! and a run's server CPU over its events delivered is the cost of one.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::watch_client::WatchClient;

use super::{connect, describe, report, share, BenchArgs, Format, Shown, Tally};
use crate::commands::client::{grpc, prefix_end};

const PREFIX: &[u8] = b"bench-watch/";

/// How long every watcher may take to be confirmed, and the events to stop arriving for
/// before the missing ones are counted as lost.
const PATIENCE: Duration = Duration::from_secs(30);

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.watchers == 0 {
        bail!("--watchers must be at least 1");
    }
    let channels = connect(args, args.watchers.div_ceil(1_000)).await?;
    let epoch = Instant::now();
    let created = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut receivers = Vec::with_capacity(channels.len());
    let mut creators = Vec::with_capacity(channels.len());
    for (s, channel) in channels.iter().enumerate() {
        let count = share(args.watchers, channels.len(), s);
        let (requests, outgoing) = tokio::sync::mpsc::channel(1024);
        // The requests go out as the stream opens: a server may hold back the stream's
        // headers until it has something to answer (etcd does). The sender is handed back,
        // to keep the stream open until the end.
        creators.push(tokio::spawn(async move {
            for _ in 0..count {
                if requests.send(create_request()).await.is_err() {
                    break;
                }
            }
            requests
        }));
        let responses = WatchClient::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .watch(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await
            .map_err(grpc)?
            .into_inner();
        receivers.push(tokio::spawn(receive(
            responses,
            epoch,
            created.clone(),
            received.clone(),
            stopped.clone(),
        )));
    }
    let asked = Instant::now();
    while created.load(Ordering::Relaxed) < args.watchers {
        if asked.elapsed() > PATIENCE {
            bail!(
                "only {} of {} watchers were confirmed in {PATIENCE:?}",
                created.load(Ordering::Relaxed),
                args.watchers
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let expected = args.total * args.watchers;
    let progress = Shown::start(args, received.clone(), expected);
    let started = Instant::now();
    let mut writers = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let count = share(args.total, args.clients, c);
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        let (size, key_space) = (args.value_size.max(8), args.key_space);
        let mut rng = synod_core::Rng::new(args.seed.wrapping_add(c as u64));
        writers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..count {
                let mut key = PREFIX.to_vec();
                key.extend_from_slice(format!("{:010}", rng.range(0, key_space)).as_bytes());
                let mut value = (since(epoch) as u64).to_le_bytes().to_vec();
                value.resize(size, b'v');
                let start = Instant::now();
                let put = pb::PutRequest {
                    key: key.into(),
                    value: value.into(),
                    ..Default::default()
                };
                match kv.put(put).await {
                    Ok(_) => tally.ok(start),
                    Err(status) => tally.failed(|| describe(&status)),
                }
            }
            tally
        }));
    }
    let puts = Tally::gather(writers).await?;
    // Every put's event, to every watcher; or no new one for a long while.
    let (mut last, mut seen) = (Instant::now(), received.load(Ordering::Relaxed));
    while seen < expected && last.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = received.load(Ordering::Relaxed);
        if now != seen {
            (last, seen) = (Instant::now(), now);
        }
    }
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    for creator in creators {
        drop(creator.await);
    }
    progress.finish().await;
    let mut tally = Tally::gather(receivers).await?;
    let delivered = received.load(Ordering::Relaxed);
    // Puts that failed were never meant to arrive.
    let meant = (args.total - puts.errors) * args.watchers;
    if delivered < meant {
        tally.errors += meant - delivered;
        tally.first_error.get_or_insert_with(|| {
            format!("{} of {meant} events never arrived", meant - delivered)
        });
    }
    tally.errors += puts.errors;
    if let Some(e) = puts.first_error {
        tally.first_error.get_or_insert(e);
    }
    if args.format == Format::Text {
        println!(
            "watch: {} watchers on one prefix over {} streams, {} puts by {} writers: {delivered} events",
            args.watchers,
            channels.len(),
            args.total,
            args.clients
        );
    }
    report(args, channels.len(), elapsed, tally, "events")
}

fn create_request() -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: PREFIX.to_vec().into(),
                range_end: prefix_end(PREFIX).into(),
                ..Default::default()
            },
        )),
    }
}

/// Microseconds since `epoch`.
fn since(epoch: Instant) -> u128 {
    epoch.elapsed().as_micros()
}

/// Takes one stream's responses until told to stop: counts the watchers confirmed and the
/// events, and times each event from the moment its value says it was sent.
async fn receive(
    mut responses: tonic::Streaming<pb::WatchResponse>,
    epoch: Instant,
    created: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let response = tokio::select! {
            r = responses.message() => r,
            _ = stop.changed() => return tally,
        };
        let response = match response {
            Ok(Some(r)) => r,
            Ok(None) => return tally,
            Err(status) => {
                tally.failed(|| describe(&status));
                return tally;
            }
        };
        if response.created {
            created.fetch_add(1, Ordering::Relaxed);
        }
        if response.canceled {
            tally.failed(|| format!("a watch was canceled: {}", response.cancel_reason));
        }
        let now = since(epoch);
        for event in &response.events {
            let sent = event
                .kv
                .as_ref()
                .and_then(|kv| kv.value.first_chunk::<8>())
                .map(|stamp| u128::from(u64::from_le_bytes(*stamp)));
            match sent {
                Some(sent) => tally
                    .latencies_us
                    .push(now.saturating_sub(sent).min(u32::MAX as u128) as u32),
                None => tally.failed(|| "an event whose value the bench did not write".to_string()),
            }
        }
        received.fetch_add(response.events.len(), Ordering::Relaxed);
    }
}
