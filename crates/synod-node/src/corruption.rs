//! etcd's periodic corruption check (`--experimental-corrupt-check-time`): now and then the
//! leader hashes its keys at its current revision and asks every other member for its hash at
//! that revision (`HashKV`; a member not there yet waits a little for it). A member that
//! answers with a different hash holds different data, which no correct run of any protocol here allows
//! (a bug, a disk that lied, or members restored from different backups): the leader raises
//! a CORRUPT alarm for it through the log, and every member then refuses requests until an
//! operator has looked and cleared it (`etcdctl alarm disarm`).

use std::sync::Arc;
use std::time::Duration;

use synod_core::Role;
use synod_kv::AlarmKind;
use synod_proto::etcdserverpb as pb;
use synod_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tracing::{debug, error};

use crate::api::Api;

/// Runs until the server stops, checking every `every`.
pub async fn run(api: Arc<Api>, every: Duration) {
    let mut stop = api.stop.clone();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        if api.node.current_status().role == Role::Leader {
            check(&api).await;
        }
    }
}

/// One round: compares this member's hash with every other member's at this revision, and
/// raises an alarm for each that differs (each alarm once while its raise is under way).
pub async fn check(api: &Api) {
    // A copy under the lock; the hashing on another thread, so applying goes on meanwhile.
    let copy = api.node.shared.kv().clone();
    let Ok(Ok(mine)) = tokio::task::spawn_blocking(move || copy.hash_kv(0)).await else {
        return;
    };
    // The members of the day, under a protocol whose membership changes.
    let me = api.node.shared.id;
    let peers: Vec<synod_core::NodeId> = match api.node.shared.membership() {
        Some(membership) => membership
            .ids()
            .into_iter()
            .filter(|&id| id != me)
            .collect(),
        None => api.config.peers().keys().copied().collect(),
    };
    for peer in peers {
        let Some(channel) = api.channel(peer) else {
            continue;
        };
        let mut asked = tonic::Request::new(pb::HashKvRequest {
            revision: mine.revision,
        });
        // HashKV is root's while auth is on: a member asks as root, as it may (it holds
        // the key tokens are signed with).
        if let Some(token) = api.member_token() {
            asked.metadata_mut().insert(crate::api::TOKEN, token);
        }
        let answer = tokio::time::timeout(
            api.config.request_timeout,
            MaintenanceClient::new(channel).hash_kv(asked),
        )
        .await;
        let theirs = match answer {
            Ok(Ok(answer)) => answer.into_inner(),
            // Not there yet (a future revision to it), compacted past it, or unreachable:
            // nothing to compare this round.
            Ok(Err(status)) => {
                debug!(%peer, error = %status.message(), "no hash to compare this round");
                continue;
            }
            Err(_) => continue,
        };
        // The hashes are of the keys at the revision alone, so members that compacted their
        // history differently still compare (etcd, which hashes history, skips those).
        if theirs.hash == mine.hash {
            continue;
        }
        error!(
            %peer,
            revision = mine.revision,
            ours = mine.hash,
            theirs = theirs.hash,
            "a member holds different data at the same revision: raising a CORRUPT alarm"
        );
        api.raise_alarm_for(peer.0, AlarmKind::Corrupt);
    }
}
