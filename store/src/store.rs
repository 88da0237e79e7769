//! The store handle: [`Store`], the state its clones share, the options it is opened
//! with, and its basic accessors. The operations on the tree, its content, the log and
//! peers are `impl Store` blocks of the modules above this one (`chunks`, `tree`, `tx`,
//! `lead`, `remote`, `check`); opening a store is in `open`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use depfs_proto::{HlcClock, Meta, NodeName, SignChanges};
use parking_lot::Mutex;

use crate::db;
use crate::error::{Result, StoreError};
use crate::keys;
use crate::lock::DirLock;
use crate::pins::PinTable;
use crate::sys;
use crate::writer::Writer;

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
    pub(crate) inner: Arc<Inner>,
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
    pub(crate) _lock: DirLock,
}

impl Store {
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
