//! depfs replication: the synchronisation protocol ([`replica`]), certificates
//! ([`pki`]), the members' certificates that changes are checked against ([`members`])
//! and the certificates no longer trusted ([`revoked`]),
//! mutual TLS ([`tls`]), framing ([`frame`]) and the QUIC service that carries
//! it ([`service`]).
//!
//! The protocol logic is a deterministic state machine with no sockets and no clock
//! reads, driven by a thin layer (`service`), so that the deterministic cluster
//! simulation in `tests/simulation.rs` runs exactly the code the daemon runs.

pub mod frame;
pub mod members;
pub mod pki;
pub mod replica;
pub mod revoked;
pub mod service;
pub mod tls;

pub use replica::{Counters, Mode, Output, PromoteError, Replica, ReplicaConfig, ReplicaError};
pub use service::{
    Callbacks, PeerStatus, RoleChange, Service, ServiceConfig, ServiceError, ServiceStatus,
};
