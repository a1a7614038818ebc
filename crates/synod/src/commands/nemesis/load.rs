//! The checked load of a nemesis run: clients in the harness's namespace that read, write and
//! compare-and-swap a few registers and add keys to a set, over etcd's API, through every
//! member in turn, recording each call and its outcome; and the checks on what they saw.
//!
//! Registers (`nemesis/r/<k>`) carry unique numbers, so the history is checked for
//! linearizability key by key (synod-check). Set keys (`nemesis/s/<client>/<n>`) are written
//! once each, so after the heal every acknowledged one must be on every member: a write that
//! is acknowledged and then lost shows up here even where linearizability is not promised.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use synod_check::{History, KvInput, KvOutput, Outcome};
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

/// Registers the load reads and writes; few, so operations on each overlap a lot.
pub const REGISTERS: u64 = 8;
/// Every key of the load starts with this.
pub const PREFIX: &str = "nemesis/";

/// A client's view of one member: a channel that connects lazily, so a dead member fails
/// each request rather than the client.
pub fn channel(address: &str, timeout: Duration) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .connect_lazy())
}

fn register(key: u64) -> String {
    format!("{PREFIX}r/{key}")
}

/// What the clients saw, as they saw it.
pub struct Recorder {
    history: Mutex<History<KvInput, KvOutput>>,
    sets: Mutex<Vec<(String, Outcome<()>)>>,
    /// When each write (of any kind) was acknowledged, in nanoseconds from the start.
    acknowledged: Mutex<Vec<u64>>,
    started: Instant,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            history: Mutex::new(History::new()),
            sets: Mutex::default(),
            acknowledged: Mutex::default(),
            started: Instant::now(),
        }
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn acknowledged(&self, at: u64) {
        self.acknowledged.lock().expect("recorder").push(at);
    }

    /// Writes (of any kind) acknowledged at or after `since` (nanoseconds from the start).
    pub fn acknowledged_since(&self, since: u64) -> usize {
        let acks = self.acknowledged.lock().expect("recorder");
        acks.iter().filter(|&&at| at >= since).count()
    }

    /// The longest stretch of `[from, to]` in which no write was acknowledged, and where it
    /// began, in nanoseconds from the start.
    pub fn longest_gap(&self, from: u64, to: u64) -> (u64, u64) {
        let mut acks = self.acknowledged.lock().expect("recorder").clone();
        acks.retain(|&at| at >= from && at <= to);
        acks.sort_unstable();
        let mut longest = (0, from);
        let mut last = from;
        for at in acks.into_iter().chain(std::iter::once(to)) {
            if at - last > longest.0 {
                longest = (at - last, last);
            }
            last = at;
        }
        longest
    }

    /// The register history.
    pub fn history(&self) -> History<KvInput, KvOutput> {
        self.history.lock().expect("recorder").clone()
    }

    /// Every set key whose write was acknowledged.
    pub fn acknowledged_set(&self) -> BTreeSet<String> {
        let sets = self.sets.lock().expect("recorder");
        sets.iter()
            .filter(|(_, outcome)| matches!(outcome, Outcome::Ok(())))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Counts of set writes: (acknowledged, failed, unknown).
    pub fn set_tally(&self) -> (usize, usize, usize) {
        let sets = self.sets.lock().expect("recorder");
        sets.iter()
            .fold((0, 0, 0), |(ok, fail, open), (_, outcome)| match outcome {
                Outcome::Ok(()) => (ok + 1, fail, open),
                Outcome::Fail => (ok, fail + 1, open),
                _ => (ok, fail, open + 1),
            })
    }
}

/// Whether a failed call surely had no effect: it never reached a member.
fn surely_not_sent(status: &tonic::Status) -> bool {
    let text = format!("{status:?}");
    text.contains("error trying to connect")
        || text.contains("tcp connect error")
        || text.contains("Connection refused")
}

/// Records a register write (or compare-and-swap) that got no answer: a failure if it surely
/// never reached a member, else unknown, since it may still take effect. Returns whether it
/// may have.
fn unanswered(
    history: &mut History<KvInput, KvOutput>,
    id: synod_check::OpId,
    at: u64,
    error: &tonic::Status,
) -> bool {
    if surely_not_sent(error) {
        history.fail(id, at);
        false
    } else {
        history.indeterminate(id, at);
        true
    }
}

/// How a client behaves.
#[derive(Clone, Copy, Debug)]
pub struct ClientConfig {
    /// Whether to compare-and-swap (transactions with a compare; gossip refuses them).
    pub cas: bool,
    /// Pause between one operation and the next (none: as fast as the cluster answers).
    pub pace: Option<Duration>,
    /// Seed for the client's choices.
    pub seed: u64,
}

/// One client: operations on random registers and set keys, each through the next member in
/// turn, recorded until `stop` fires.
pub async fn client(
    id: u64,
    channels: Arc<Vec<Channel>>,
    recorder: Arc<Recorder>,
    config: ClientConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = synod_core::Rng::new(config.seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // The last value this client knows each register held: what its compare-and-swaps expect.
    let mut known: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    let mut seq = 0u64;
    let mut failures = 0u64;
    while !*stop.borrow_and_update() {
        seq += 1;
        let mut kv = KvClient::new(channels[((seq + id) % channels.len() as u64) as usize].clone());
        let key = rng.range(0, REGISTERS);
        let value = id * 1_000_000_000 + seq;
        let choice = rng.range(0, 10);
        let ok = match choice {
            0..=3 => read(&mut kv, &recorder, id, key, &mut known).await,
            // A compare-and-swap expects what this client last saw; having seen nothing (or
            // lost track), it looks first.
            7 | 8 if config.cas && known.contains_key(&key) => {
                cas(&mut kv, &recorder, id, key, value, &mut known).await
            }
            7 | 8 if config.cas => read(&mut kv, &recorder, id, key, &mut known).await,
            9 => add(&mut kv, &recorder, format!("{PREFIX}s/{id}/{seq}")).await,
            _ => write(&mut kv, &recorder, id, key, value, &mut known).await,
        };
        if ok {
            failures = 0;
        } else {
            failures += 1;
        }
        // Back off while the cluster does not answer, so a client does not spin on errors.
        let pause = match (config.pace, failures) {
            (_, f) if f > 0 => Some(Duration::from_millis((10 * f).min(200))),
            (pace, _) => pace,
        };
        if let Some(pause) = pause {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

async fn read(
    kv: &mut KvClient<Channel>,
    recorder: &Recorder,
    client: u64,
    key: u64,
    known: &mut BTreeMap<u64, Option<u64>>,
) -> bool {
    let id = recorder.history.lock().expect("recorder").invoke(
        client,
        KvInput::Read { key },
        recorder.now(),
    );
    let request = pb::RangeRequest {
        key: register(key).into_bytes().into(),
        ..Default::default()
    };
    let outcome = kv.range(request).await;
    let at = recorder.now();
    let mut history = recorder.history.lock().expect("recorder");
    match outcome.map(|r| parse_value(r.into_inner().kvs.first().map(|kv| &kv.value[..]))) {
        Ok(Ok(value)) => {
            history.ok(id, KvOutput::Read(value), at);
            known.insert(key, value);
            true
        }
        Ok(Err(garbage)) => {
            // A value the load never wrote: record it as read, so the check reports it.
            history.ok(id, KvOutput::Read(Some(garbage)), at);
            true
        }
        // A read changes nothing, whatever became of it.
        Err(_) => {
            history.fail(id, at);
            false
        }
    }
}

/// The number a register holds; a value that is not one of the load's numbers maps to
/// `Err(u64::MAX)`, which no client writes.
fn parse_value(value: Option<&[u8]>) -> Result<Option<u64>, u64> {
    match value {
        None => Ok(None),
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or(u64::MAX),
    }
}

async fn write(
    kv: &mut KvClient<Channel>,
    recorder: &Recorder,
    client: u64,
    key: u64,
    value: u64,
    known: &mut BTreeMap<u64, Option<u64>>,
) -> bool {
    let id = recorder.history.lock().expect("recorder").invoke(
        client,
        KvInput::Write { key, value },
        recorder.now(),
    );
    let request = pb::PutRequest {
        key: register(key).into_bytes().into(),
        value: value.to_string().into_bytes().into(),
        ..Default::default()
    };
    let outcome = kv.put(request).await;
    let at = recorder.now();
    let mut history = recorder.history.lock().expect("recorder");
    match outcome {
        Ok(_) => {
            history.ok(id, KvOutput::Written, at);
            drop(history);
            recorder.acknowledged(at);
            known.insert(key, Some(value));
            true
        }
        Err(e) => {
            if unanswered(&mut history, id, at, &e) {
                known.remove(&key);
            }
            false
        }
    }
}

async fn cas(
    kv: &mut KvClient<Channel>,
    recorder: &Recorder,
    client: u64,
    key: u64,
    new: u64,
    known: &mut BTreeMap<u64, Option<u64>>,
) -> bool {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let expected = known.get(&key).copied().flatten();
    let id = recorder.history.lock().expect("recorder").invoke(
        client,
        KvInput::Cas { key, expected, new },
        recorder.now(),
    );
    let name = register(key).into_bytes();
    let (target, union) = match expected {
        Some(value) => (
            CompareTarget::Value,
            TargetUnion::Value(value.to_string().into_bytes().into()),
        ),
        // An absent key has version 0.
        None => (CompareTarget::Version, TargetUnion::Version(0)),
    };
    let request = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: CompareResult::Equal as i32,
            target: target as i32,
            key: name.clone().into(),
            target_union: Some(union),
            range_end: Default::default(),
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: name.into(),
                value: new.to_string().into_bytes().into(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let outcome = kv.txn(request).await;
    let at = recorder.now();
    let mut history = recorder.history.lock().expect("recorder");
    match outcome {
        Ok(response) => {
            let succeeded = response.into_inner().succeeded;
            history.ok(id, KvOutput::Cas(succeeded), at);
            drop(history);
            if succeeded {
                recorder.acknowledged(at);
                known.insert(key, Some(new));
            } else {
                known.remove(&key);
            }
            true
        }
        Err(e) => {
            if unanswered(&mut history, id, at, &e) {
                known.remove(&key);
            }
            false
        }
    }
}

async fn add(kv: &mut KvClient<Channel>, recorder: &Recorder, key: String) -> bool {
    let request = pb::PutRequest {
        key: key.clone().into_bytes().into(),
        value: b"1".to_vec().into(),
        ..Default::default()
    };
    let outcome = kv.put(request).await;
    let at = recorder.now();
    let (outcome, ok) = match outcome {
        Ok(_) => {
            recorder.acknowledged(at);
            (Outcome::Ok(()), true)
        }
        Err(e) if surely_not_sent(&e) => (Outcome::Fail, false),
        Err(_) => (Outcome::Indeterminate, false),
    };
    recorder.sets.lock().expect("recorder").push((key, outcome));
    ok
}

/// After the heal: a linearizable read of every register through every member, added to the
/// history (as clients 1001, 1002, ...), so a write lost after it was acknowledged, or a
/// member that never caught up, fails the check. Retries each read until `deadline`.
pub async fn final_reads(
    channels: &[Channel],
    recorder: &Recorder,
    deadline: Instant,
) -> Result<(), String> {
    for (i, channel) in channels.iter().enumerate() {
        let client = 1001 + i as u64;
        let mut kv = KvClient::new(channel.clone());
        let mut known = BTreeMap::new();
        for key in 0..REGISTERS {
            while !read(&mut kv, recorder, client, key, &mut known).await {
                if Instant::now() > deadline {
                    return Err(format!(
                        "member {} answered no read of register {key} after the heal",
                        i + 1
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}

/// Every key under the load's prefix on one member, read from its own copy.
async fn contents(channel: &Channel) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, tonic::Status> {
    let mut kv = KvClient::new(channel.clone()).max_decoding_message_size(1 << 30);
    let prefix = PREFIX.as_bytes().to_vec();
    let request = pb::RangeRequest {
        range_end: super::super::client::prefix_end(&prefix).into(),
        key: prefix.into(),
        serializable: true,
        ..Default::default()
    };
    let response = kv.range(request).await?.into_inner();
    Ok(response
        .kvs
        .into_iter()
        .map(|kv| (kv.key.to_vec(), kv.value.to_vec()))
        .collect())
}

/// What every member holds once they agree.
pub struct Converged {
    /// Keys under the prefix.
    pub keys: usize,
    /// How long after the heal they agreed.
    pub after: Duration,
}

/// Waits until every member's own copy holds the same keys and values, and every
/// acknowledged set key; says what is missing where if that does not happen by `deadline`.
pub async fn converge(
    channels: &[Channel],
    acknowledged: &BTreeSet<String>,
    healed: Instant,
    deadline: Instant,
) -> Result<Converged, String> {
    loop {
        let mut copies = Vec::new();
        let mut problem = None;
        for (i, channel) in channels.iter().enumerate() {
            match contents(channel).await {
                Ok(copy) => copies.push(copy),
                Err(e) => {
                    problem = Some(format!("member {} did not answer: {}", i + 1, e.message()));
                    break;
                }
            }
        }
        if problem.is_none() {
            for (i, copy) in copies.iter().enumerate() {
                let missing: Vec<&String> = acknowledged
                    .iter()
                    .filter(|k| !copy.contains_key(k.as_bytes()))
                    .collect();
                if let Some(first) = missing.first() {
                    problem = Some(format!(
                        "member {} lacks {} acknowledged set writes (first: {first})",
                        i + 1,
                        missing.len()
                    ));
                    break;
                }
                if copy != &copies[0] {
                    let differing = copy
                        .iter()
                        .filter(|(k, v)| copies[0].get(*k) != Some(*v))
                        .count()
                        + copies[0].keys().filter(|k| !copy.contains_key(*k)).count();
                    problem = Some(format!(
                        "members 1 and {} differ on {differing} keys",
                        i + 1
                    ));
                    break;
                }
            }
        }
        match problem {
            None => {
                return Ok(Converged {
                    keys: copies.first().map_or(0, BTreeMap::len),
                    after: healed.elapsed(),
                })
            }
            Some(problem) if Instant::now() > deadline => return Err(problem),
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// For protocols that promise no linearizability: reads that returned a value no client
/// ever tried to write to that register.
pub fn invented_reads(history: &History<KvInput, KvOutput>) -> Vec<String> {
    let mut written: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for op in history.operations() {
        match op.input {
            KvInput::Write { key, value } => {
                written.entry(key).or_default().insert(value);
            }
            KvInput::Cas { key, new, .. } => {
                written.entry(key).or_default().insert(new);
            }
            _ => {}
        }
    }
    history
        .operations()
        .iter()
        .filter_map(|op| match (&op.input, &op.outcome) {
            (KvInput::Read { key }, Outcome::Ok(KvOutput::Read(Some(value))))
                if !written.get(key).is_some_and(|w| w.contains(value)) =>
            {
                Some(synod_check::describe(op))
            }
            _ => None,
        })
        .collect()
}

/// What each member says of the cluster, polled while the run goes on: the leader changes
/// seen, and the leader now (the one named in the highest term any member reports).
#[derive(Default)]
pub struct Leadership {
    seen: Mutex<BTreeSet<(u64, u64)>>,
    current: Mutex<Option<u64>>,
}

impl Leadership {
    /// The leader as last seen, if any.
    pub fn current(&self) -> Option<u64> {
        *self.current.lock().expect("leadership")
    }

    /// How many times leadership changed hands (or terms) after the first leader.
    pub fn changes(&self) -> usize {
        self.seen
            .lock()
            .expect("leadership")
            .len()
            .saturating_sub(1)
    }

    /// Polls every member's status every 250 ms until `stop` fires.
    pub async fn watch(
        self: Arc<Self>,
        channels: Arc<Vec<Channel>>,
        mut stop: watch::Receiver<bool>,
    ) {
        while !*stop.borrow_and_update() {
            // No leader named by anyone answering: aim leader faults at no one in particular.
            let leader = self.poll(&channels).await;
            *self.current.lock().expect("leadership") = leader;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn poll(&self, channels: &[Channel]) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for channel in channels {
            let mut client = MaintenanceClient::new(channel.clone());
            let answer = tokio::time::timeout(
                Duration::from_millis(300),
                client.status(pb::StatusRequest {}),
            )
            .await;
            let Ok(Ok(status)) = answer else {
                continue;
            };
            let status = status.into_inner();
            if status.leader == 0 {
                continue;
            }
            self.seen
                .lock()
                .expect("leadership")
                .insert((status.raft_term, status.leader));
            if best.is_none_or(|(term, _)| status.raft_term > term) {
                best = Some((status.raft_term, status.leader));
            }
        }
        best.map(|(_, leader)| leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_from_the_start_and_to_the_end() {
        let recorder = Recorder::new();
        for at in [10, 20, 50, 55] {
            recorder.acknowledged(at);
        }
        assert_eq!(recorder.longest_gap(0, 60), (30, 20));
        assert_eq!(recorder.longest_gap(0, 100), (45, 55));
        assert_eq!(recorder.longest_gap(30, 40), (10, 30));
    }

    #[test]
    fn a_read_of_a_value_never_written_is_reported() {
        let mut history = History::new();
        let w = history.invoke(1, KvInput::Write { key: 0, value: 7 }, 0);
        history.indeterminate(w, 1);
        let r = history.invoke(2, KvInput::Read { key: 0 }, 2);
        history.ok(r, KvOutput::Read(Some(7)), 3);
        assert!(invented_reads(&history).is_empty());
        let r = history.invoke(2, KvInput::Read { key: 0 }, 4);
        history.ok(r, KvOutput::Read(Some(8)), 5);
        assert_eq!(invented_reads(&history).len(), 1);
        assert_eq!(parse_value(Some(b"x")), Err(u64::MAX));
        assert_eq!(parse_value(Some(b"12")), Ok(Some(12)));
    }
}
