//! etcd's v3 API as Rust types and gRPC services (generated from `proto/`), shared by the
//! server and by Synod's own client commands.

#![allow(missing_docs)] // generated code
#![allow(clippy::all)]

/// Keys and events (etcd's `mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// Users, roles and permissions (etcd's `authpb`).
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// Requests, responses and services (etcd's `etcdserverpb`).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's lock service (`v3lockpb`), on top of leases and revisions.
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's election service (`v3electionpb`), on top of leases and revisions.
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}
