//! Auto-compaction, as etcd's `--auto-compaction-mode` and `--auto-compaction-retention`: the
//! leader proposes `Compact` requests through the log, so every member forgets the same
//! history. Without it (the default, as in etcd) history is kept until a client compacts.
//!
//! - **periodic**: keep about `retention` of history. Every tenth of it the leader notes the
//!   current revision; once it has noted for a whole `retention`, it compacts to the oldest
//!   revision noted, which is about `retention` old.
//! - **revision**: keep the last `retention` revisions. The leader compacts to `current -
//!   retention` every second (etcd looks every five minutes, to the same bound).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use synod_core::Role;
use synod_kv::{CompactRequest, KvError, Request};
use tracing::{debug, info};

use crate::api::Api;
use crate::node::Refusal;

/// What auto-compaction keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// About this long of history.
    Periodic(Duration),
    /// This many revisions.
    Revision(i64),
}

/// Runs until the server stops.
pub async fn run(api: Arc<Api>, mode: AutoCompaction) {
    let every = match mode {
        AutoCompaction::Periodic(retention) => (retention / 10).max(Duration::from_millis(10)),
        AutoCompaction::Revision(_) => Duration::from_secs(1),
    };
    let mut stop = api.stop.clone();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Revisions noted, every `every`, while this member led.
    let mut noted: VecDeque<i64> = VecDeque::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        if api.node.current_status().role != Role::Leader {
            // Only the leader compacts; a new one starts noting afresh, as etcd's does.
            noted.clear();
            continue;
        }
        let (current, compacted) = {
            let kv = api.node.shared.kv();
            (kv.revision(), kv.compacted_revision())
        };
        let target = match mode {
            AutoCompaction::Revision(keep) => current - keep,
            AutoCompaction::Periodic(_) => {
                noted.push_back(current);
                if noted.len() <= 10 {
                    continue;
                }
                noted.pop_front().unwrap_or(current)
            }
        };
        if target <= compacted.max(1) {
            continue;
        }
        let compact = Request::Compact(CompactRequest { revision: target });
        match api.node.propose(&compact).await {
            Ok(_) => info!(revision = target, "compacted the history"),
            // Someone compacted further meanwhile: nothing to do.
            Err(Refusal::Kv(KvError::Compacted { .. })) => {}
            Err(e) => debug!(error = %e, "auto-compaction did not go through; trying again"),
        }
    }
}
