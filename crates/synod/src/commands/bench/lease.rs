//! `synod bench lease` and `synod bench keep-alive`: what leases cost at scale. `lease` grants
//! `--total` leases; `keep-alive` then renews every lease the cluster holds, in turn, each
//! client on a keep-alive stream of its own (as an etcd client keeps its leases alive), so a
//! run's server CPU over its keep-alives is the cost of one.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::lease_client::LeaseClient;

use super::{connect, describe, gather_and_report, share, BenchArgs, Tally};
use crate::commands::client::grpc;

/// Grants `--total` leases of `--lease-ttl` seconds, `--clients` at a time.
pub(super) async fn grant(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.lease_ttl < 1 {
        bail!("--lease-ttl must be at least 1 second");
    }
    let channels = connect(args, args.clients.div_ceil(16)).await?;
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let count = share(args.total, args.clients, c);
        let mut leases = LeaseClient::new(channels[c % channels.len()].clone());
        let (ttl, done) = (args.lease_ttl, done.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..count {
                let start = Instant::now();
                match leases
                    .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
                    .await
                {
                    Ok(r) if r.get_ref().error.is_empty() => tally.ok(start),
                    Ok(r) => tally.failed(|| r.into_inner().error),
                    Err(status) => tally.failed(|| describe(&status)),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        }));
    }
    gather_and_report(args, channels.len(), started, done, tasks, "grants").await
}

/// `--total` keep-alives of the cluster's leases, `--clients` streams at a time.
pub(super) async fn keep_alive(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let channels = connect(args, args.clients.div_ceil(16)).await?;
    let ids: Vec<i64> = LeaseClient::new(channels[0].clone())
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .map_err(grpc)?
        .into_inner()
        .leases
        .into_iter()
        .map(|l| l.id)
        .collect();
    if ids.is_empty() {
        bail!("the cluster holds no lease to keep alive: run `synod bench lease` first");
    }
    let ids = Arc::new(ids);
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let count = share(args.total, args.clients, c);
        let mut leases = LeaseClient::new(channels[c % channels.len()].clone());
        let (ids, done, clients) = (ids.clone(), done.clone(), args.clients);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            if count == 0 {
                return tally;
            }
            // Client c renews leases c, c + clients, c + 2 * clients, ... round and round.
            let mut next = c % ids.len();
            let mut renew = || {
                let id = ids[next];
                next = (next + clients) % ids.len();
                pb::LeaseKeepAliveRequest { id }
            };
            // The first request goes out as the stream opens: a server may hold back the
            // stream's headers until it has something to answer (etcd does).
            let (requests, outgoing) = tokio::sync::mpsc::channel(1);
            let mut start = Instant::now();
            if requests.send(renew()).await.is_err() {
                tally.failed(|| "the keep-alive stream closed".to_string());
                return tally;
            }
            let stream = tokio_stream::wrappers::ReceiverStream::new(outgoing);
            let mut responses = match leases.lease_keep_alive(stream).await {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    tally.failed(|| describe(&status));
                    return tally;
                }
            };
            for i in 0..count {
                if i > 0 {
                    start = Instant::now();
                    if requests.send(renew()).await.is_err() {
                        tally.failed(|| "the keep-alive stream closed".to_string());
                        break;
                    }
                }
                match responses.message().await {
                    Ok(Some(r)) if r.ttl > 0 => tally.ok(start),
                    Ok(Some(r)) => tally.failed(|| format!("lease {:x} is gone", r.id)),
                    Ok(None) => {
                        tally.failed(|| "the server ended a keep-alive stream".to_string());
                        break;
                    }
                    Err(status) => {
                        tally.failed(|| describe(&status));
                        break;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        }));
    }
    gather_and_report(args, channels.len(), started, done, tasks, "keep-alives").await
}
