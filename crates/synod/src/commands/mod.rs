//! The subcommands of `synod`.

pub mod auth;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod nemesis;
pub mod server;
pub mod sim;
pub mod snapshot;
pub mod viz;
pub mod wal;
