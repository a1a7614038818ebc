//! etcd's errors, with its gRPC codes and messages, so that etcd clients react to Synod as
//! they do to etcd: retry on "leader changed", give up on "key not found", and so on.

use synod_core::MembershipRefusal;
use synod_dns::Dns;
use synod_kv::KvError;
use synod_replica::Protocol;
use tonic::Status;

use crate::node::Refusal;

/// Writes and linearizable reads found no leader in time.
pub fn no_leader() -> Status {
    Status::unavailable("etcdserver: no leader")
}

/// Moving leadership on a protocol that has no leader (Basic Paxos: every node proposes).
pub fn leaderless(protocol: &str) -> Status {
    Status::failed_precondition(format!(
        "synod: {protocol} has no leader to move; run raft or multi-paxos for that"
    ))
}

/// Leases under a protocol without consensus (gossip): nothing could hold a clock the whole
/// cluster agrees on, so no lease call is taken.
pub fn no_leases(protocol: &str) -> Status {
    Status::unimplemented(format!(
        "synod: {protocol} has no leases: they need a clock the whole cluster agrees on, which only consensus gives; run raft, multi-paxos, basic-paxos or zab for them"
    ))
}

/// The protocol elects its leaders but moves none on request (ZooKeeper's ZAB has no leader
/// transfer).
pub fn no_leader_transfer(protocol: &str) -> Status {
    let why = if protocol == Dns::NAME {
        "its primary is the lowest voting member, and moves only when the membership changes"
    } else {
        "its leader leads until it fails"
    };
    Status::failed_precondition(format!(
        "synod: {protocol} moves no leadership on request ({why}); run raft or multi-paxos for that"
    ))
}

/// The node a request was forwarded to no longer leads; the sender retries.
pub const LEADER_CHANGED: &str = "etcdserver: leader changed";

/// See [`LEADER_CHANGED`].
pub fn leader_changed() -> Status {
    Status::unavailable(LEADER_CHANGED)
}

/// The request was proposed but not answered in time: it may or may not take effect.
pub fn timed_out() -> Status {
    Status::unavailable("etcdserver: request timed out")
}

/// A learner refuses everything but serializable reads and its own status.
pub fn learner() -> Status {
    Status::unavailable("etcdserver: rpc not supported for learner")
}

/// The server is shutting down.
pub fn stopped() -> Status {
    Status::unavailable("etcdserver: server stopped")
}

/// A request over `--max-request-bytes`.
pub fn too_large() -> Status {
    Status::invalid_argument("etcdserver: request is too large")
}

/// A put or delete without a key.
pub fn empty_key() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

/// etcd's ErrGRPCInvalidSortOption.
pub fn invalid_sort_option() -> Status {
    Status::invalid_argument("etcdserver: invalid sort option")
}

/// A transaction over `--max-txn-ops`.
pub fn too_many_ops() -> Status {
    Status::invalid_argument("etcdserver: too many operations in txn request")
}

/// A lease TTL etcd would refuse.
pub fn lease_ttl_too_large() -> Status {
    Status::out_of_range("etcdserver: too large lease TTL")
}

/// A lease that does not exist.
pub fn lease_not_found() -> Status {
    Status::not_found("etcdserver: requested lease not found")
}

/// A NOSPACE alarm is raised, or this write would take the store past its space quota.
pub fn no_space() -> Status {
    Status::resource_exhausted("etcdserver: mvcc: database space exceeded")
}

/// A CORRUPT alarm is raised: members hold different data.
pub fn corrupt() -> Status {
    Status::data_loss("etcdserver: corrupt cluster")
}

/// A member id that is not in the cluster.
pub fn member_not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}

/// What the store's deterministic errors are in etcd's words.
pub fn kv(e: KvError) -> Status {
    match e {
        KvError::Compacted { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
        }
        KvError::FutureRevision => {
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
        }
        KvError::LeaseNotFound(_) => lease_not_found(),
        KvError::LeaseExists(_) => Status::failed_precondition("etcdserver: lease already exists"),
        KvError::KeyNotFound => Status::invalid_argument("etcdserver: key not found"),
        KvError::DuplicateKey(_) => {
            Status::invalid_argument("etcdserver: duplicate key given in txn request")
        }
        KvError::Invalid(reason) => Status::invalid_argument(format!("etcdserver: {reason}")),
        KvError::NoSpace => no_space(),
        KvError::Corrupt => corrupt(),
        KvError::Auth(e) => super::auth::status(e),
        // A command that does not decode, or a stale session request: neither comes from a
        // correct etcd client through this server.
        other @ (KvError::Malformed(_) | KvError::StaleRequest { .. }) => {
            Status::internal(format!("etcdserver: {other}"))
        }
    }
}

/// A node's refusal, for a client.
pub fn refusal(r: Refusal) -> Status {
    match r {
        Refusal::NotLeader(_) => no_leader(),
        Refusal::Stopped => stopped(),
        Refusal::Kv(e) => kv(e),
        // etcd has no such refusal: its API always has consensus behind it. The message
        // says what this protocol cannot do and why.
        Refusal::Unsupported(why) => {
            Status::unimplemented(format!("synod: not supported under this protocol: {why}"))
        }
        // As Cassandra's UnavailableException and write timeout; a taken write's outcome
        // is unknown, as after etcd's "request timed out".
        r @ Refusal::Unavailable { written: true, .. } => {
            Status::unavailable(format!("etcdserver: request timed out ({r})"))
        }
        r @ Refusal::Unavailable { .. } => Status::unavailable(format!("synod: {r}")),
        Refusal::Membership(refusal) => membership(refusal),
        Refusal::OutcomeUnknown => timed_out(),
        Refusal::Learner => learner(),
    }
}

/// A refused membership change, with etcd's code and message for it.
pub fn membership(refusal: MembershipRefusal) -> Status {
    let message = refusal.message();
    match refusal {
        MembershipRefusal::NotFound => Status::not_found(message),
        MembershipRefusal::BadUrls => Status::invalid_argument(message),
        MembershipRefusal::ChangePending => Status::unavailable(message),
        MembershipRefusal::PeerUrlExists
        | MembershipRefusal::NotLearner
        | MembershipRefusal::LearnerNotReady
        | MembershipRefusal::TooManyLearners
        | MembershipRefusal::NotEnoughStarted
        | MembershipRefusal::LastVoter => Status::failed_precondition(message),
    }
}
