//! The store at the sizes users run: memory per key, the cost of taking, writing and loading
//! a snapshot, and what a snapshot in progress does to the latency of the writes around it.
//! A benchmark that prints figures, not a test.
//!
//! ```sh
//! cargo bench -p synod-kv --bench scale                          # 1,000,000 keys
//! SYNOD_BENCH_KEYS=10000000 cargo bench -p synod-kv --bench scale  # 10,000,000 keys
//! SYNOD_BENCH_HISTORY=0 cargo bench -p synod-kv --bench scale     # every revision kept
//! ```
//!
//! The store is filled through [`KvStore::apply`] with puts of `SYNOD_BENCH_VALUE` bytes
//! (256 by default) under distinct random keys, wrapped as the server wraps a client's write.
//! Then, as the replica does: a snapshot is taken by copying the store on the applying thread
//! (the only part of a snapshot that stops applying) and encoding the copy on another thread,
//! while this thread goes on applying puts that overwrite random keys; each put's apply time is
//! recorded, without a snapshot and during one, and their quantiles printed side by side.
//! Memory is this process's resident set (system allocator; the server runs mimalloc).

#![allow(clippy::unwrap_used)] // benchmarks fail loudly on purpose
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_core::{ClientId, Entry, Payload, Proposal, RequestId};
use synod_kv::{KvStore, PutRequest, Request};

/// Clients whose writes the fill and the load interleave (sessions kept).
const CLIENTS: u64 = 256;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

/// A bijective mix of `i`, so keys are distinct and arrive in random order.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("/bench/{:016x}", mix(i)))
}

/// Resident set of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Puts entries into the store one by one, as applied log entries.
struct Writer {
    index: u64,
    seq: u64,
    value: Bytes,
}

impl Writer {
    fn put(&mut self, store: &mut KvStore, key: Bytes) {
        self.index += 1;
        self.seq += 1;
        let request = Request::As {
            user: None,
            since: None,
            request: Box::new(Request::Put(PutRequest {
                key,
                value: self.value.clone(),
                ..PutRequest::default()
            })),
        };
        let entry = Entry {
            index: self.index,
            era: 1,
            payload: Payload::Command(Proposal {
                id: RequestId {
                    client: ClientId(1 + self.seq % CLIENTS),
                    seq: self.seq,
                },
                command: request.encode(),
            }),
        };
        let (_, result) = store.apply(&entry).unwrap();
        result.unwrap();
    }
}

fn quantiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let q = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        samples[i].as_secs_f64() * 1e6
    };
    println!(
        "  {label:<24} {:>8} puts  p50 {:>7.1} us  p99 {:>7.1} us  p99.9 {:>9.1} us  max {:>10.1} us",
        samples.len(),
        q(0.5),
        q(0.99),
        q(0.999),
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
    );
}

fn main() {
    let keys = env_usize("SYNOD_BENCH_KEYS", 1_000_000) as u64;
    let value_size = env_usize("SYNOD_BENCH_VALUE", 256);
    let load = env_usize("SYNOD_BENCH_LOAD", 200_000);
    // Revisions of history kept (0: all of them, as the server by default and etcd).
    let history = env_usize(
        "SYNOD_BENCH_HISTORY",
        KvStore::DEFAULT_HISTORY_REVISIONS as usize,
    );
    println!("synod-kv scale: {keys} keys, {value_size}-byte values, history {history}");

    let before = rss();
    let mut store = KvStore::with_limits(synod_kv::Sessions::DEFAULT_LIMIT, history as i64);
    let mut writer = Writer {
        index: 0,
        seq: 0,
        value: Bytes::from(vec![b'v'; value_size]),
    };
    let start = Instant::now();
    for i in 0..keys {
        writer.put(&mut store, key(i));
    }
    let fill = start.elapsed();
    let grown = rss().saturating_sub(before);
    println!(
        "  fill                     {:.1} s, {:.0} puts/s applied",
        fill.as_secs_f64(),
        keys as f64 / fill.as_secs_f64()
    );
    println!(
        "  memory                   {:.0} MB resident, {} bytes per key ({} of key and value)",
        grown as f64 / 1e6,
        grown / keys,
        key(0).len() + value_size
    );

    // Writes alone: overwrite random keys.
    let mut rng = 1u64;
    let mut next_key = || {
        rng = mix(rng);
        key(rng % keys)
    };
    let mut alone = Vec::with_capacity(load);
    for _ in 0..load {
        let key = next_key();
        let t = Instant::now();
        writer.put(&mut store, key);
        alone.push(t.elapsed());
    }

    // A snapshot as the replica takes one: copy here, encode on another thread.
    let t = Instant::now();
    let copy = store.clone();
    let copied = t.elapsed();
    let encoder = std::thread::spawn(move || {
        let t = Instant::now();
        let bytes = copy.snapshot();
        (bytes, t.elapsed())
    });
    let mut during = vec![copied];
    while !encoder.is_finished() || during.len() < load {
        let key = next_key();
        let t = Instant::now();
        writer.put(&mut store, key);
        during.push(t.elapsed());
    }
    let (bytes, encoded) = encoder.join().unwrap();
    println!(
        "  snapshot copy            {:.1} ms on the applying thread",
        copied.as_secs_f64() * 1e3
    );
    println!(
        "  snapshot encode          {:.2} s on another thread, {:.0} MB",
        encoded.as_secs_f64(),
        bytes.len() as f64 / 1e6
    );
    quantiles("puts, no snapshot", alone);
    quantiles("puts, during a snapshot", during);

    let t = Instant::now();
    let restored = KvStore::restore(&bytes).unwrap();
    println!(
        "  snapshot load            {:.2} s ({} keys)",
        t.elapsed().as_secs_f64(),
        restored.len()
    );
}
