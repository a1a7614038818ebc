//! etcd's `hasleader` guard. A client that must not be served by a member cut off from its
//! leader (etcd's `clientv3.WithRequireLeader`, used by Kubernetes for watches) marks its
//! requests with the metadata `hasleader: true`. Such a request is refused at once while this
//! member knows no leader, and a stream opened with the mark ends with "no leader" once the
//! member has had none for three election timeouts, so the client moves to one that has.

use std::sync::Arc;

use tokio::sync::watch as signal;
use tonic::{Request, Status};

use super::{errors, Api};

/// The metadata key etcd's clients set, and the value that asks for a leader.
const REQUIRE_LEADER: &str = "hasleader";
const HAS_LEADER: &str = "true";

/// Election timeouts without a leader after which marked streams end (etcd's count).
const LEADERLESS_TIMEOUTS: u32 = 3;

/// Whether the client asked to be served only while there is a leader.
pub(crate) fn requires_leader<T>(request: &Request<T>) -> bool {
    request
        .metadata()
        .get(REQUIRE_LEADER)
        .is_some_and(|v| v.as_bytes() == HAS_LEADER.as_bytes())
}

/// An interceptor for every service: refuses a marked request while no leader is known.
pub(crate) fn guard(
    api: Arc<Api>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        if requires_leader(&request) && api.node.current_status().proposer().is_none() {
            return Err(errors::no_leader());
        }
        Ok(request)
    }
}

/// Publishes `true` on `api.leaderless` once the member has had no leader for
/// [`LEADERLESS_TIMEOUTS`] election timeouts, and `false` as soon as it has one again. Runs
/// until the server stops.
pub(crate) async fn watch_leadership(api: Arc<Api>) {
    let mut status = api.node.status.clone();
    let mut stop = api.stop.clone();
    let patience = api.config.election_timeout * LEADERLESS_TIMEOUTS;
    let has_leader = |s: &synod_core::Status| s.proposer().is_some();
    loop {
        // Wait for the leader to go, then give it `patience` to come back.
        let lost = async {
            status.wait_for(|s| !has_leader(s)).await.is_ok()
                && tokio::time::timeout(patience, status.wait_for(has_leader))
                    .await
                    .is_err()
        };
        let lost = tokio::select! {
            lost = lost => lost,
            _ = stop.changed() => return,
        };
        if !lost {
            continue;
        }
        api.leaderless.send_replace(true);
        tokio::select! {
            back = status.wait_for(has_leader) => if back.is_err() { return },
            _ = stop.changed() => return,
        }
        api.leaderless.send_replace(false);
    }
}

/// Ends when a stream opened by `request` must end for want of a leader; never, for a stream
/// that did not ask for one.
pub(crate) fn stream_guard<T>(api: &Api, request: &Request<T>) -> StreamGuard {
    StreamGuard(requires_leader(request).then(|| api.leaderless.subscribe()))
}

/// See [`stream_guard`].
pub(crate) struct StreamGuard(Option<signal::Receiver<bool>>);

impl StreamGuard {
    /// A guard for a stream that did not ask for a leader: it never ends the stream.
    pub(crate) fn none() -> StreamGuard {
        StreamGuard(None)
    }
}

impl StreamGuard {
    /// Resolves (with etcd's error) once the member has been leaderless for too long.
    pub(crate) async fn lost(&mut self) -> Status {
        match &mut self.0 {
            Some(leaderless) => {
                if leaderless.wait_for(|&l| l).await.is_err() {
                    std::future::pending::<()>().await;
                }
                errors::no_leader()
            }
            None => std::future::pending().await,
        }
    }
}
