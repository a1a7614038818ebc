//! Counters, gauges and histograms, rendered in Prometheus' text format. Small and lock-free:
//! the hot paths only do relaxed atomic adds.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use synod_core::Role;

/// A number that only grows.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A number that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket upper bounds in seconds: 100 µs to about 8 s, doubling (etcd's disk histograms
/// start at 1 ms; we start lower because batched fsyncs on fast disks take less).
const BUCKETS: [f64; 17] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536,
];

/// A distribution of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(duration.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The histogram as JSON for the live view: `bounds` in seconds, `counts` per bucket
    /// (not cumulative; the last count is of durations above the last bound), `count` and
    /// `sum` in seconds.
    pub fn json(&self, out: &mut String) {
        let bounds: Vec<String> = BUCKETS.iter().map(|b| b.to_string()).collect();
        let mut counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count = self.count();
        counts.push(count.saturating_sub(counts.iter().sum()));
        let counts: Vec<String> = counts.iter().map(u64::to_string).collect();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = write!(
            out,
            "{{\"bounds\":[{}],\"counts\":[{}],\"count\":{count},\"sum\":{sum}}}",
            bounds.join(","),
            counts.join(",")
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// What a node reports about itself.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Client writes applied.
    pub proposals_committed: Counter,
    /// Client writes refused or timed out.
    pub proposals_failed: Counter,
    /// Times this node saw a new leader.
    pub leader_changes: Counter,
    /// 1 when this node knows a leader.
    pub has_leader: Gauge,
    /// The node that keeps the lease clocks as far as this node knows (the leader, or under
    /// Basic Paxos the keeper the log chose); 0 if none.
    pub lease_keeper: Gauge,
    /// The node's role, as [`role_code`].
    pub role: Gauge,
    /// The engine's era (Raft term).
    pub term: Gauge,
    /// Highest log index known committed.
    pub commit_index: Gauge,
    /// Highest log index applied to the state machine.
    pub apply_index: Gauge,
    /// Duration of each fsync of the log (one per group commit).
    pub fsync: Histogram,
    /// Duration of applying each batch of committed entries.
    pub apply: Histogram,
    /// Snapshots saved.
    pub snapshots: Counter,
    /// Duration of each client write and linearizable read, from the node's API to its
    /// answer (replication, fsync and apply included).
    pub requests: Histogram,
    /// When the node started.
    pub started: Started,
}

/// When something started; `Default` is now.
#[derive(Debug)]
pub struct Started(pub std::time::Instant);

impl Default for Started {
    fn default() -> Started {
        Started(std::time::Instant::now())
    }
}

/// Roles as gauge values.
pub fn role_code(role: Role) -> i64 {
    match role {
        Role::Follower => 0,
        Role::PreCandidate => 1,
        Role::Candidate => 2,
        Role::Leader => 3,
        Role::Peer => 4,
        Role::Secondary => 5,
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

impl Metrics {
    /// Appends every metric in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        counter(
            out,
            "synod_server_proposals_committed_total",
            "Client writes committed and applied.",
            self.proposals_committed.get(),
        );
        counter(
            out,
            "synod_server_proposals_failed_total",
            "Client writes refused or timed out.",
            self.proposals_failed.get(),
        );
        counter(
            out,
            "synod_server_leader_changes_seen_total",
            "Leaders this node has seen.",
            self.leader_changes.get(),
        );
        gauge(
            out,
            "synod_server_has_leader",
            "1 when the node knows a leader.",
            self.has_leader.get(),
        );
        gauge(
            out,
            "synod_server_lease_keeper",
            "The member that keeps the lease clocks (the leader, or the keeper the log chose when \
             no member leads); 0 if none is known.",
            self.lease_keeper.get(),
        );
        gauge(
            out,
            "synod_server_is_leader",
            "1 when the node leads.",
            i64::from(self.role.get() == role_code(Role::Leader)),
        );
        gauge(
            out,
            "synod_server_role",
            "0 follower, 1 pre-candidate, 2 candidate, 3 leader, 4 peer, 5 secondary.",
            self.role.get(),
        );
        gauge(
            out,
            "synod_server_term",
            "The engine's current term (Raft) or era.",
            self.term.get(),
        );
        gauge(
            out,
            "synod_server_commit_index",
            "Highest log index known committed.",
            self.commit_index.get(),
        );
        gauge(
            out,
            "synod_server_apply_index",
            "Highest log index applied.",
            self.apply_index.get(),
        );
        counter(
            out,
            "synod_server_snapshots_total",
            "Snapshots of the state machine saved.",
            self.snapshots.get(),
        );
        self.fsync.render(
            out,
            "synod_disk_wal_fsync_duration_seconds",
            "Duration of log fsyncs, one per group commit.",
        );
        self.apply.render(
            out,
            "synod_server_apply_duration_seconds",
            "Duration of applying a batch of committed entries.",
        );
        self.requests.render(
            out,
            "synod_server_request_duration_seconds",
            "Duration of client writes and linearizable reads, from arrival to answer.",
        );
        process(out);
    }
}

/// The process's memory, under the names Prometheus' client libraries use (etcdctl's
/// `check datascale` reads `process_resident_memory_bytes`), from `/proc/self/status`.
fn process(out: &mut String) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<i64>()
                    .ok()
            })
    };
    for (field, name, help) in [
        (
            "VmRSS:",
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        ),
        (
            "VmSize:",
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        ),
    ] {
        if let Some(value) = kib(field) {
            gauge(out, name, help, value * 1024);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.0032\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"6.5536\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn process_memory_is_reported_as_prometheus_clients_name_it() {
        let mut out = String::new();
        process(&mut out);
        let rss = out
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<i64>().ok())
            .expect("resident memory");
        assert!(rss > 0, "{out}");
    }
}
