//! `synod`: the one command of Synod.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod logging;
mod progress;

use commands::{auth, bench, client, cluster, nemesis, server, sim, snapshot, viz, wal};

/// The server allocates and frees small buffers for every request; mimalloc does that with
/// about half of glibc's cost (12% of a server's CPU under puts was the allocator). Built
/// without transparent huge pages (`no_thp`): with them, every fresh mapping a large value
/// lands in is faulted in and zeroed two megabytes at a time, which took 72% of a leader's
/// CPU under 1 MiB puts (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// State machine replication speaking etcd's v3 API, with a simulator that checks it.
#[derive(Parser)]
#[command(name = "synod", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one member of a cluster, serving etcd's v3 gRPC API.
    Server(Box<server::ServerArgs>),
    /// Run a local cluster on loopback: `synod cluster up --nodes 3`.
    Cluster(cluster::ClusterArgs),
    /// Put a key.
    Put(client::PutArgs),
    /// Get a key or a range.
    Get(client::GetArgs),
    /// Delete a key or a range.
    Del(client::DelArgs),
    /// Compare and then put, get or delete, atomically.
    Txn(client::TxnArgs),
    /// Watch a key or a range and print its events.
    Watch(client::WatchArgs),
    /// Grant, revoke, keep alive and inspect leases.
    Lease(client::LeaseArgs),
    /// List the cluster's members.
    Member(client::MemberArgs),
    /// Each endpoint's leader, term, index and version.
    Status(client::StatusArgs),
    /// Whether each endpoint serves a linearizable read (as `etcdctl endpoint health`);
    /// exit code 1 if one does not.
    Health(client::HealthArgs),
    /// Drive load over etcd's API and print throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Run the deterministic simulator: seeded runs under faults, checked for safety,
    /// linearizability, liveness after heal and convergence.
    Sim(sim::SimArgs),
    /// Serve a web page that runs the simulator and plays runs back: pick a protocol and
    /// faults, watch the messages, crash a node by clicking it (`synod viz`, then open the
    /// printed address).
    Viz(viz::VizArgs),
    /// Run a cluster on real hosts of its own (network namespaces; needs root) under
    /// partitions, packet loss, pauses and kills, with a load whose history is checked.
    Nemesis(nemesis::NemesisArgs),
    /// Save a member's state to a file, check one, or restore one as a new member's data
    /// directory (`save`, `status`, `restore`).
    Snapshot(snapshot::SnapshotArgs),
    /// Inspect a node's write-ahead log: `dump` prints its records, `check` verifies it.
    Wal(wal::WalArgs),
    /// Add, list, inspect and delete users, set passwords, grant and revoke roles (as
    /// etcdctl's `user`).
    User(auth::UserArgs),
    /// Add, list, inspect and delete roles, grant and revoke permissions on keys (as
    /// etcdctl's `role`).
    Role(auth::RoleArgs),
    /// Turn authentication on or off, or show whether it is on (as etcdctl's `auth`).
    Auth(auth::AuthArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::run(*args),
        Command::Cluster(args) => cluster::run(args),
        Command::Put(args) => client::put(args),
        Command::Get(args) => client::get(args),
        Command::Del(args) => client::del(args),
        Command::Txn(args) => client::txn(args),
        Command::Watch(args) => client::watch(args),
        Command::Lease(args) => client::lease(args),
        Command::Member(args) => client::member(args),
        Command::Status(args) => client::status(args),
        Command::Health(args) => client::health(args),
        Command::Bench(args) => bench::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Viz(args) => viz::run(args),
        Command::Nemesis(args) => nemesis::run(args),
        Command::Wal(args) => wal::run(args),
        Command::Snapshot(args) => snapshot::run(args),
        Command::User(args) => auth::user(args),
        Command::Role(args) => auth::role(args),
        Command::Auth(args) => auth::auth(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
