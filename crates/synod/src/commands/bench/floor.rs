//! `synod bench floor`: what one client's put cannot beat on this machine, measured piece by
//! piece, next to the put itself.
//!
//! A put from a lone client to the leader waits, at the least, for its round trip through
//! gRPC to that server, for one `fdatasync` of the log (the leader's own overlaps with the
//! followers'), and for one round trip to a follower carrying the entry and its
//! acknowledgement. Each is measured on its own:
//!
//! - **gRPC round trip**: a serializable get of one key from the leader, which the server
//!   answers from its own store without a word to its peers;
//! - **fdatasync**: a write of a put's size into a file in `--dir` (give a directory on the
//!   servers' disk) whose space was allocated first, then `fdatasync`, as a log append does
//!   (the cheapest kind on ext4: the file's length does not change);
//! - **peer round trip**: a put's entry to a socket on loopback and a small acknowledgement
//!   back, over the network a local cluster's members talk over (a cluster spread over hosts
//!   has its own).
//!
//! The floor is the sum of their medians; the report sets the put's median against it. The
//! leader is asked for before and after: a run across a change of leader is refused, as its
//! puts would have been forwarded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use synod_core::Rng;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_storage::{Dir, RealDir};

use super::{key, quantile_ms, BenchArgs, Format};
use crate::commands::client::grpc;

/// Bytes of a peer message around an entry's value (its header, the key, the framing).
const ENTRY_OVERHEAD: usize = 64;

/// Bytes of a peer's acknowledgement.
const ACK_BYTES: usize = 16;

/// One piece's samples, in microseconds, sorted.
struct Samples(Vec<u32>);

impl Samples {
    fn new(mut micros: Vec<u32>) -> Self {
        micros.sort_unstable();
        Samples(micros)
    }

    fn ms(&self, q: f64) -> f64 {
        quantile_ms(&self.0, q)
    }
}

fn micros(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// Measures each piece of the floor and the put, `--total` samples each after a tenth as
/// many to warm up, and prints them.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let Some(dir) = args.dir.clone() else {
        bail!("--dir: give a directory on the disk the servers' data is on, to time fdatasync in");
    };
    let samples = args.total;
    let warmup = (samples / 10).max(1);
    let leader = find_leader(args).await?;
    let mut kv = KvClient::new(args.connection.channel_to(&leader).await?)
        .max_decoding_message_size(usize::MAX);
    let value: bytes::Bytes = vec![b'v'; args.value_size].into();

    let probe = key(0);
    kv.put(pb::PutRequest {
        key: probe.clone(),
        value: value.clone(),
        ..Default::default()
    })
    .await
    .map_err(grpc)?;
    let mut get = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let start = Instant::now();
        kv.range(pb::RangeRequest {
            key: probe.clone(),
            serializable: true,
            ..Default::default()
        })
        .await
        .map_err(grpc)?;
        if i >= warmup {
            get.push(micros(start));
        }
    }
    let get = Samples::new(get);

    let mut rng = Rng::new(args.seed);
    let mut put = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let start = Instant::now();
        kv.put(pb::PutRequest {
            key: key(rng.range(0, args.key_space)),
            value: value.clone(),
            ..Default::default()
        })
        .await
        .map_err(grpc)?;
        if i >= warmup {
            put.push(micros(start));
        }
    }
    let put = Samples::new(put);

    if find_leader(args).await? != leader {
        bail!("the leader changed while the puts ran (from {leader}); run it again");
    }

    let size = args.value_size;
    let fsync = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || time_fdatasync(&dir, size, warmup, samples))
            .await
            .context("the fdatasync probe stopped")??
    };
    let peer = tokio::task::spawn_blocking(move || time_loopback(size, warmup, samples))
        .await
        .context("the loopback probe stopped")??;

    report(args, &dir, &leader, &get, &fsync, &peer, &put);
    Ok(ExitCode::SUCCESS)
}

/// The endpoint whose member says it is the leader.
async fn find_leader(args: &BenchArgs) -> anyhow::Result<String> {
    let mut last = None;
    for endpoint in &args.connection.endpoints {
        match args.connection.status(endpoint).await {
            Ok(status) => {
                let me = status.header.map(|h| h.member_id);
                if me.is_some_and(|me| me == status.leader && me != 0) {
                    return Ok(endpoint.clone());
                }
            }
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => bail!("no endpoint answered as the leader (one said: {e:#})"),
        None => bail!(
            "no member of --endpoints says it leads: give every member's (a leaderless \
             protocol, gossip or DNS-style, has no leader to measure)"
        ),
    }
}

/// Writes of a put's size, one after another, into a fresh file in `dir` whose space was
/// allocated first (as the log's segments are), each followed by `fdatasync`.
fn time_fdatasync(
    dir: &Path,
    size: usize,
    warmup: usize,
    samples: usize,
) -> anyhow::Result<Samples> {
    let name = format!(".synod-bench-floor-{}", std::process::id());
    let mut dir = RealDir::existing(dir).context("--dir")?;
    // A log entry: the value, the key and a header.
    let record = vec![b'e'; size + ENTRY_OVERHEAD];
    let mut timed = || {
        dir.create(&name)?;
        dir.preallocate(&name, ((warmup + samples) * record.len()) as u64)?;
        let mut times = Vec::with_capacity(samples);
        for i in 0..warmup + samples {
            let start = Instant::now();
            dir.write_at(&name, (i * record.len()) as u64, &record)?;
            dir.sync(&name)?;
            if i >= warmup {
                times.push(micros(start));
            }
        }
        Ok::<_, synod_storage::StorageError>(times)
    };
    let times = timed();
    if let Err(e) = dir.remove(&name) {
        eprintln!("warning: {e}");
    }
    Ok(Samples::new(times.context("the fdatasync probe (--dir)")?))
}

/// Round trips over loopback TCP to a thread that acknowledges each message: an entry of a
/// put's size out, an acknowledgement back.
fn time_loopback(size: usize, warmup: usize, samples: usize) -> anyhow::Result<Samples> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on loopback")?;
    let address = listener.local_addr()?;
    let entry = vec![7u8; size + ENTRY_OVERHEAD];
    let length = entry.len();
    let peer = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buf = vec![0u8; length];
        loop {
            match stream.read_exact(&mut buf) {
                Ok(()) => stream.write_all(&[1u8; ACK_BYTES])?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut stream = TcpStream::connect(address).context("cannot connect on loopback")?;
    stream.set_nodelay(true)?;
    let mut ack = [0u8; ACK_BYTES];
    let mut times = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let start = Instant::now();
        stream.write_all(&entry)?;
        stream.read_exact(&mut ack)?;
        if i >= warmup {
            times.push(micros(start));
        }
    }
    drop(stream);
    match peer.join() {
        Ok(result) => result.context("the loopback peer failed")?,
        Err(_) => bail!("the loopback peer thread panicked"),
    }
    Ok(Samples::new(times))
}

fn report(
    args: &BenchArgs,
    dir: &Path,
    leader: &str,
    get: &Samples,
    fsync: &Samples,
    peer: &Samples,
    put: &Samples,
) {
    let floor = get.ms(0.5) + fsync.ms(0.5) + peer.ms(0.5);
    let ratio = put.ms(0.5) / floor.max(1e-9);
    match args.format {
        Format::Json => println!(
            "{{\"workload\":\"floor\",\"leader\":{},\"samples\":{},\"get_p50_ms\":{:.3},\"fdatasync_p50_ms\":{:.3},\"peer_rtt_p50_ms\":{:.3},\"floor_ms\":{floor:.3},\"put_p50_ms\":{:.3},\"put_p99_ms\":{:.3},\"put_over_floor\":{ratio:.2}}}",
            synod_node::http::json_string(leader),
            args.total,
            get.ms(0.5),
            fsync.ms(0.5),
            peer.ms(0.5),
            put.ms(0.5),
            put.ms(0.99),
        ),
        Format::Text => {
            let line = |what: &str, s: &Samples| {
                println!(
                    "  {what:<44} p50 {:>7.3} ms   p99 {:>7.3} ms",
                    s.ms(0.5),
                    s.ms(0.99)
                )
            };
            println!(
                "floor of one client's put to the leader {leader}, {} samples each, {}-byte values, fdatasync in {}",
                args.total,
                args.value_size,
                dir.display()
            );
            line("serializable get (gRPC round trip)", get);
            line("fdatasync of a write into allocated space", fsync);
            line("loopback TCP round trip (peer)", peer);
            println!("  {:<44} p50 {floor:>7.3} ms", "floor (sum of the medians)");
            line("put, one client", put);
            println!("  {:<44} {ratio:.2}x", "put p50 over the floor");
        }
    }
}
