//! Synod's server runtime: what turns an engine into a running node. [`transport`] carries
//! engine messages between peers over TCP.

pub mod transport;
