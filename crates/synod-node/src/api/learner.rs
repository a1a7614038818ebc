//! What a learner serves, as etcd's learners do: serializable reads (`Range` with
//! `serializable`) and the maintenance calls that only read its own state (`Status`,
//! `Snapshot`, and, unlike etcd, `Hash` and `HashKV`, which the leader's corruption check asks
//! of every member here over this API). Everything else is refused with etcd's
//! "etcdserver: rpc not supported for learner" (`Unavailable`), so that clients go on to a
//! voting member. Writes, linearizable reads and lease calls are refused by the replica
//! itself (and so in the simulator too); this module refuses the calls the server answers
//! alone.

use std::sync::Arc;

use tonic::{Request, Status};

use super::{errors, Api};

/// Whether a service serves learners at all; where it does, its handlers (and the replica)
/// refuse what a learner must not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learners {
    /// Some of its calls are served to learners.
    Served,
    /// None is.
    Refused,
}

/// Refuses the call if this member is a learner.
pub(crate) fn refuse(api: &Api) -> Result<(), Status> {
    if api.node.shared.is_learner() {
        return Err(errors::learner());
    }
    Ok(())
}

/// Refuses every call of a service that learners do not serve, while this member is one.
pub(crate) fn guard(
    api: Arc<Api>,
    learners: Learners,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        if learners == Learners::Refused {
            refuse(&api)?;
        }
        Ok(request)
    }
}

/// Whether an etcd gateway path (`/v3/...`) is served to learners; its handler refuses
/// further what it must (a linearizable range).
pub(crate) fn gateway_serves(path: &str) -> bool {
    matches!(
        path,
        "/v3/kv/range"
            | "/v3/maintenance/status"
            | "/v3/maintenance/snapshot"
            | "/v3/maintenance/hash"
            | "/v3/maintenance/hashkv"
    )
}
