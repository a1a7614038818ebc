//! etcd's v3 API as Rust types and gRPC services (generated from `proto/`), shared by the
//! server and by Synod's own client commands.

#![allow(missing_docs)] // generated code
#![allow(clippy::all)]

/// Keys and events (etcd's `mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Requests, responses and services (etcd's `etcdserverpb`).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's lock service (`v3lockpb`), on top of leases and revisions.
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// etcd's election service (`v3electionpb`), on top of leases and revisions.
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}
