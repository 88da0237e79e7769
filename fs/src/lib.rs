//! The depfs filesystem: POSIX calls over the store. Knows nothing about the network.
//!
//! [`DepFs`] implements every call as a plain method returning an errno result, and
//! [`ops`] adapts those methods to `fuser`. Content written through a file handle is
//! staged ([`staging`]) and committed to the store as one change when the file is closed
//! or fsynced (publish-on-close); every other mutation commits at once. A file created
//! here is *pending* until its first close: it exists in this node's view but is not in
//! the store, so no other node ever sees it empty or half written.
//!
//! Locks are taken in one order only: an open file's data, then the store's writer lock
//! (a transaction), then the inode tables. The tables are held across a transaction's
//! commit (a RocksDB write, synced for `fsync`) and some store reads, so that what the
//! kernel is told changes together with what is committed; they are never held while
//! waiting for an open file's data lock or for the network.
//!
//! The modules form layers, lowest first; each uses only the layers below it:
//! `types`, `attr`, `error`, [`stats`] and `import` (nothing else of this
//! crate); `staging`, then `local_copy` (staged content and idle local copies);
//! `open_file` (the state of an open file); `owed` (files published after close);
//! `tables` (inodes and handles); `depfs` ([`DepFs`] itself); the calls, as
//! `impl DepFs` blocks: `namespace`, then `file` and `recover`; and [`ops`], the
//! adapter to `fuser`. This file only declares the modules and re-exports the API.

mod attr;
mod depfs;
mod error;
mod file;
mod import;
mod local_copy;
mod namespace;
mod open_file;
pub mod ops;
mod owed;
mod recover;
mod staging;
pub mod stats;
mod tables;
mod types;

pub use attr::Attr;
pub use depfs::{DepFs, FsConfig, PageFiller};
pub use error::{Errno, FsResult};
pub use import::{import_dir, ImportError, ImportProgress, ImportStats};
pub use local_copy::Backing;
pub use namespace::Invalidation;
pub use open_file::CacheMode;
pub use types::{Caller, PageDrop, SetAttr, Statfs};
