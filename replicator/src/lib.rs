//! depfs replication over QUIC: sessions authenticated by mutual TLS with the cluster's
//! CA, live push of committed changes, catch-up by version vectors, relay, and transfer of
//! the content chunks a peer lacks.
//!
//! The protocol logic will be a deterministic state machine (messages in, messages and
//! store writes out) driven by a thin async layer, so that the same code runs in the
//! deterministic cluster simulation and in the daemon. Nothing is implemented here yet;
//! the crate exists so the workspace shows the architecture (see `docs/design.md`).
