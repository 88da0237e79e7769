//! depfs replication: the synchronisation protocol ([`replica`]), and (next) the QUIC
//! transport with mutual TLS that carries it.
//!
//! The protocol logic is a deterministic state machine with no sockets and no clock
//! reads, driven by a thin async layer, so that the deterministic cluster simulation in
//! `tests/simulation.rs` runs exactly the code the daemon runs.

pub mod replica;

pub use replica::{Output, Replica, ReplicaConfig, ReplicaError};
