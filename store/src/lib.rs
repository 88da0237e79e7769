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

mod check;
mod chunks;
mod db;
mod error;
mod keys;
mod lead;
mod lock;
pub mod log;
pub mod merge;
mod overlay;
mod remote;
pub mod sys;
mod tree;
mod tx;

pub use chunks::{ContentReader, ContentSource, PinGuard, SEGMENT};
pub use error::{Result, StoreError};
pub use remote::Applied;
pub use tree::Conflict;
pub use tree::{DirEntry, StoreStats};
pub use tx::{Committed, Durability, Tx};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use depfs_proto::{HlcClock, Meta, NodeName, SignChanges};
use parking_lot::Mutex;

use crate::chunks::PinTable;
use crate::lock::DirLock;
use crate::tx::Writer;

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Attributes of the root directory of a brand-new store.
    pub root: Meta,
    /// RocksDB block cache size in bytes.
    pub block_cache_bytes: usize,
    /// How far ahead of the local clock a peer's change may be stamped: one stamped
    /// further ahead is refused (see [`StoreError::AheadOfClock`]).
    pub max_clock_drift_ms: u64,
    /// Free space kept on the store's filesystem: a write that would leave less fails
    /// with `ENOSPC` before RocksDB sees it. RocksDB stops all writes until it is
    /// reopened once its own write hits a full disk; the reserve also leaves room for
    /// its memtable flushes and compactions.
    pub min_free_bytes: u64,
}

/// The default [`StoreOptions::min_free_bytes`]: room for a memtable flush of every
/// column family with margin.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;

impl StoreOptions {
    /// Defaults with the given root attributes.
    pub fn new(root: Meta) -> Self {
        StoreOptions {
            root,
            block_cache_bytes: 64 << 20,
            max_clock_drift_ms: HlcClock::DEFAULT_MAX_DRIFT_MS,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// How old the free-space figure a change without content is checked against may be
/// (see [`Store::ensure_space_for_metadata`]).
const METADATA_FREE_SPACE_AGE: std::time::Duration = std::time::Duration::from_millis(100);

/// A function called after every local commit.
pub type CommitHook = Box<dyn Fn() + Send + Sync>;

/// A node's store. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: rocksdb::DB,
    pub(crate) dir: PathBuf,
    pub(crate) node: NodeName,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) pins: Mutex<PinTable>,
    /// True if the store was created by this open (nothing was there before).
    pub(crate) created: bool,
    /// See [`StoreOptions::min_free_bytes`].
    pub(crate) min_free_bytes: u64,
    /// The last `statvfs` of the store's filesystem: when, and the bytes it had free.
    pub(crate) free_space: Mutex<Option<(std::time::Instant, u64)>>,
    /// Called after every local commit (the replicator's wake-up).
    pub(crate) commit_hook: parking_lot::RwLock<Option<CommitHook>>,
    /// Seals every local commit (see [`Store::set_signer`]).
    pub(crate) signer: parking_lot::RwLock<Option<Arc<dyn SignChanges>>>,
    /// One-way mode: the manager terms, which decide which changes are cut off. Changed
    /// only with the writer lock held.
    pub(crate) lead: parking_lot::RwLock<depfs_proto::Leadership>,
    _lock: DirLock,
}

impl Store {
    /// Opens (or creates) the store in `dir` for node `node`. Fails with
    /// [`StoreError::InUse`] if another process has it open, and with
    /// [`StoreError::WrongNode`] if it was created for another node.
    pub fn open(dir: &Path, node: &NodeName, options: &StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("create data_dir {}", dir.display()), e))?;
        let lock = DirLock::acquire(dir)?;
        let (db, created) = db::open(dir, options)?;
        let inner = db::init(db, dir, node, options, created, lock)?;
        let store = Store {
            inner: Arc::new(inner),
        };
        store.sweep_uncommitted_chunks()?;
        Ok(store)
    }

    /// Fails with [`StoreError::NoSpace`] if writing `incoming` more bytes would leave
    /// less than [`StoreOptions::min_free_bytes`] free on the store's filesystem.
    pub fn ensure_space(&self, incoming: u64) -> Result<()> {
        self.ensure_free(incoming.saturating_add(self.inner.min_free_bytes))
    }

    /// Like [`Store::ensure_space`] for changes without content (mkdir, rename, delete,
    /// chmod, ...): they may use half of the reserve, so that files can still be
    /// deleted to make room when content writes are refused.
    ///
    /// Such changes write a few hundred bytes each, so they check against a free-space
    /// figure up to [`METADATA_FREE_SPACE_AGE`] old: a `statvfs` per `unlink` was a
    /// measurable part of deleting many files.
    pub(crate) fn ensure_space_for_metadata(&self) -> Result<()> {
        let cached = *self.inner.free_space.lock();
        match cached {
            Some((at, available)) if at.elapsed() < METADATA_FREE_SPACE_AGE => {
                self.check_free(available, self.inner.min_free_bytes / 2)
            }
            _ => self.ensure_free(self.inner.min_free_bytes / 2),
        }
    }

    fn ensure_free(&self, needed: u64) -> Result<()> {
        let available = sys::statvfs(&self.inner.dir)
            .map(|space| space.available_bytes())
            .map_err(|e| StoreError::io(format!("statvfs {}", self.inner.dir.display()), e))?;
        *self.inner.free_space.lock() = Some((std::time::Instant::now(), available));
        self.check_free(available, needed)
    }

    fn check_free(&self, available: u64, needed: u64) -> Result<()> {
        if available < needed {
            return Err(StoreError::NoSpace {
                dir: self.inner.dir.clone(),
                available,
                needed,
            });
        }
        Ok(())
    }

    /// This node's name.
    pub fn node(&self) -> &NodeName {
        &self.inner.node
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Sets the function called after every local commit (replaces any previous one).
    pub fn set_commit_hook(&self, hook: CommitHook) {
        *self.inner.commit_hook.write() = Some(hook);
    }

    /// Signs every change committed here from now on with this node's key, and this
    /// node's changes the log keeps unsigned (see [`Store::seal_own_changes`]). Peers
    /// refuse unsigned changes: a daemon sets it before anything can commit.
    /// Setting the signer already set does nothing (the daemon sets it before its
    /// import, the replicator again when it starts).
    pub fn set_signer(&self, signer: Arc<dyn SignChanges>) -> Result<usize> {
        {
            let mut current = self.inner.signer.write();
            if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, &signer)) {
                return Ok(0);
            }
            *current = Some(signer.clone());
        }
        let mut lead = self.leadership();
        if lead.sign_terms_of(self.node(), signer.as_ref()) > 0 {
            // Terms this node made before it had a key (an older store).
            self.set_leadership(lead)?;
        }
        self.seal_own_changes()
    }

    /// A value the daemon keeps in the store (`app/KEY`): the mode a store was created
    /// in, the manager a worker follows.
    pub fn app_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let db = &self.inner.db;
        Ok(db.get_cf(db::cf(db, keys::CF_META), format!("app/{key}"))?)
    }

    /// Sets an [`Store::app_meta`] value (synced).
    pub fn set_app_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        let db = &self.inner.db;
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        db.put_cf_opt(
            db::cf(db, keys::CF_META),
            format!("app/{key}"),
            value,
            &options,
        )?;
        Ok(())
    }

    /// Every [`Store::app_meta`] value whose key starts with `prefix`, with its key.
    pub fn app_meta_under(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let db = &self.inner.db;
        let full = format!("app/{prefix}");
        let start = rocksdb::IteratorMode::From(full.as_bytes(), rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in db.iterator_cf(db::cf(db, keys::CF_META), start) {
            let (key, value) = item?;
            if !key.starts_with(full.as_bytes()) {
                break;
            }
            let key = String::from_utf8_lossy(key.strip_prefix(b"app/").unwrap_or_default());
            let key = key.into_owned();
            out.push((key, value.into_vec()));
        }
        Ok(out)
    }

    /// True if this open created the store (first start of this node).
    pub fn was_created(&self) -> bool {
        self.inner.created
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("node", &self.inner.node)
            .finish()
    }
}

impl Store {
    /// Syncs the write-ahead log: every change committed so far survives power loss.
    pub fn sync(&self) -> Result<()> {
        self.inner.db.flush_wal(true)?;
        Ok(())
    }
}

impl Store {
    /// True once the first mount finished setting the store up (for example importing
    /// the directory it was mounted over). An interrupted import is redone.
    pub fn is_initialized(&self) -> Result<bool> {
        let db = &self.inner.db;
        Ok(db
            .get_cf(db::cf(db, keys::CF_META), keys::META_IMPORTED)?
            .is_some())
    }

    /// Records that the first-mount set-up is complete.
    pub fn mark_initialized(&self) -> Result<()> {
        let db = &self.inner.db;
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        db.put_cf_opt(
            db::cf(db, keys::CF_META),
            keys::META_IMPORTED,
            b"1",
            &options,
        )?;
        Ok(())
    }
}
