//! The depfs store: the one place that decides what the tree is.
//!
//! A node keeps its full copy of the tree in RocksDB: one entry per path (its winning
//! version), tombstones for deleted paths, conflict records for losing concurrent
//! versions, blake3-addressed content chunks with reference counts, and the change log.
//! Every local change is committed in one `WriteBatch` together with its log record and
//! the node's sequence number and clock, so the log can never disagree with the tree.
//!
//! See `docs/design.md` for the model. Modules:
//!
//! * [`keys`]: column families and key layouts.
//! * [`chunks`]: content-defined chunking, chunk storage, pins for open files.
//! * [`tx`]: local transactions, committed as one change.
//! * [`merge`]: the merge rules (heads, winners, conflicts) and the batch applying them.
//! * `remote`: what peers need, applying their changes, acknowledgements, collection.
//! * [`log`]: the change log record.
//! * [`sys`]: the wall clock in milliseconds and a safe `statvfs`, shared by all crates.
//! * `store`: the [`Store`] handle, its shared state and options; `open` opens it.
//!
//! Layers, lowest first; a module uses only modules of lower layers (no import cycles),
//! always from the module that defines the item, never through this file's re-exports:
//! `error`, `keys`, `sys`, `pins`, `writer` (plain values) → `lock`, [`log`], `db`
//! (files and RocksDB) → `store` (the handle) → `overlay`, [`merge`], `chunks` →
//! `tree` → `tx` → `remote` → `lead` → `check`, `open`. The `impl Store` blocks of
//! `chunks` and above call only methods of their own or lower layers.

mod check;
mod chunks;
mod db;
mod error;
mod keys;
mod lead;
mod lock;
pub mod log;
pub mod merge;
mod open;
mod overlay;
mod pins;
mod remote;
mod store;
pub mod sys;
mod tree;
mod tx;
mod writer;

pub use chunks::{ContentReader, ContentSource, PinGuard, SEGMENT};
pub use error::{Result, StoreError};
pub use remote::Applied;
pub use store::{CommitHook, Store, StoreOptions, DEFAULT_MIN_FREE_BYTES};
pub use tree::Conflict;
pub use tree::{DirEntry, StoreStats};
pub use tx::{Committed, Durability, Tx};
