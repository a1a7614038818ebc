//! Synod's server runtime: what turns an engine into a running node that speaks etcd's API.
//!
//! - [`node`]: the loop that drives an engine and applies what it commits;
//! - [`disk`]: the thread that makes the engine's state durable, with group commit;
//! - [`transport`]: engine messages between peers over TCP;
//! - [`api`]: etcd's v3 gRPC services over a node;
//! - [`server`]: all of the above started and stopped together;
//! - [`compactor`] and [`corruption`]: etcd's auto-compaction and corruption check, run by
//!   the leader;
//! - [`backup`]: a member's state as one file (etcd's `snapshot save`), and its restore;
//! - [`metrics`] and [`http`]: what an operator watches;
//! - [`tls`]: TLS on the client port and the peer link.

pub mod api;
pub mod backup;
pub mod compactor;
pub mod config;
pub mod corruption;
pub mod disk;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod server;
pub mod tls;
pub mod transport;
