//! Client sessions: exactly-once application of retried writes (Raft thesis 6.3).
//!
//! A client numbers its requests and retries a request with the same number. The state
//! machine remembers, per client, the newest sequence number it applied and that request's
//! result. A retry of it gets the remembered result without running again; an even older
//! request (one the client has since given up on) is refused without running.
//!
//! Sessions are bounded: past `limit` clients, the one idle longest (by log index, so every
//! replica evicts the same one) is forgotten. A client silent for that long that then retries
//! its last request would see it applied again; the limit is set far above the number of
//! clients a deployment runs. Client id 0 and servers' own ids ([`ClientId::is_tracked`]) are
//! never deduplicated.

use std::collections::{BTreeMap, BTreeSet};

use synod_core::{ClientId, LogIndex, RequestId};

use crate::store::{Applied, KvError};

/// What the state machine remembers of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) seq: u64,
    pub(crate) last_used: LogIndex,
    pub(crate) result: Result<Applied, KvError>,
}

/// Every client session, with a deterministic least-recently-used bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sessions {
    pub(crate) by_client: BTreeMap<ClientId, Session>,
    by_age: BTreeSet<(LogIndex, ClientId)>,
    pub(crate) limit: usize,
    /// Set by [`Sessions::disable`]; not part of snapshots (the replica sets it again).
    disabled: bool,
}

impl Sessions {
    /// Sessions kept by default.
    pub const DEFAULT_LIMIT: usize = 100_000;

    /// No sessions yet; at most `limit` kept.
    pub fn new(limit: usize) -> Self {
        Sessions {
            by_client: BTreeMap::new(),
            by_age: BTreeSet::new(),
            limit: limit.max(1),
            disabled: false,
        }
    }

    /// Keeps no sessions from now on: every request runs.
    pub(crate) fn disable(&mut self) {
        self.by_client.clear();
        self.by_age.clear();
        self.disabled = true;
    }

    /// Number of sessions held.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// The answer for a request that must not run: the remembered result of a retry, or an
    /// error for a request older than the session's newest. `None` means: run it.
    pub(crate) fn replay(&self, id: RequestId) -> Option<Result<Applied, KvError>> {
        if !id.client.is_tracked() || self.disabled {
            return None;
        }
        let session = self.by_client.get(&id.client)?;
        if id.seq == session.seq {
            Some(session.result.clone())
        } else if id.seq < session.seq {
            Some(Err(KvError::StaleRequest {
                seq: id.seq,
                latest: session.seq,
            }))
        } else {
            None
        }
    }

    /// Remembers the result of a request that ran at log index `index`.
    pub(crate) fn record(
        &mut self,
        id: RequestId,
        result: Result<Applied, KvError>,
        index: LogIndex,
    ) {
        if !id.client.is_tracked() || self.disabled {
            return;
        }
        let session = Session {
            seq: id.seq,
            last_used: index,
            result,
        };
        self.insert(id.client, session);
        while self.by_client.len() > self.limit {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.by_client.remove(&oldest);
        }
    }

    /// Adds or replaces a session, keeping the age index in step.
    pub(crate) fn insert(&mut self, client: ClientId, session: Session) {
        if let Some(old) = self.by_client.get(&client) {
            self.by_age.remove(&(old.last_used, client));
        }
        self.by_age.insert((session.last_used, client));
        self.by_client.insert(client, session);
    }
}
