//! Identifiers shared by every engine and runtime.

use std::fmt;

/// Position of an entry in a replicated log. The first entry is at index 1; index 0 means
/// "before the first entry" and never holds one.
pub type LogIndex = u64;

/// A server in the cluster. Ids are chosen by the operator and are never 0 (the default,
/// which stands for "no node").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A client session, as in Raft thesis 6.3: the unit of exactly-once deduplication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

impl ClientId {
    /// Ids from 2^63 up belong to servers, which number their own requests (to route answers
    /// back) but keep no session for them: a server never retries a write itself, and its
    /// requests may commit out of order, which a session would refuse.
    pub const UNTRACKED_FROM: u64 = 1 << 63;

    /// Whether the state machine keeps a session (exactly-once) for this client. Id 0 is
    /// anonymous and untracked too.
    pub fn is_tracked(self) -> bool {
        self.0 != 0 && self.0 < Self::UNTRACKED_FROM
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// One client request: the client's id plus a sequence number the client increases with
/// every request. A retry reuses the id of the request it retries, which is how the state
/// machine recognises it and answers it without applying it twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId {
    /// The session this request belongs to.
    pub client: ClientId,
    /// Increases with every request of the session; retries keep it.
    pub seq: u64,
}

impl RequestId {
    /// The request `seq` of `client`.
    pub fn new(client: u64, seq: u64) -> Self {
        RequestId {
            client: ClientId(client),
            seq,
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.client, self.seq)
    }
}
