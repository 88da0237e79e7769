//! [`DepFs`], the filesystem of one mount: its state, its configuration and the calls
//! that do not touch files or the namespace. The calls themselves are `impl DepFs`
//! blocks in the modules above this one ([`crate::file`], [`crate::namespace`],
//! [`crate::recover`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use depfs_proto::RelPath;
use depfs_store::Store;
use parking_lot::Mutex;

use crate::error::{Errno, FsResult};
use crate::tables::Tables;
use crate::types::{PageDrop, Statfs};
use crate::{local_copy, owed, stats};

/// How the filesystem behaves.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Refuse every change with `EROFS` (one-way mode workers).
    pub read_only: bool,
    /// How long the kernel may cache entries and attributes. Changes from other nodes
    /// invalidate the kernel's caches explicitly, so this can be long.
    pub ttl: Duration,
    /// Where staged content larger than `spill_threshold` is kept.
    pub staging_dir: PathBuf,
    /// Staged content above this size moves from memory to a temporary file.
    pub spill_threshold: u64,
    /// Bytes of idle local copies kept for passthrough (see [`local_copy`]); 0 turns
    /// passthrough off.
    pub local_copy_budget: u64,
}

impl FsConfig {
    /// Defaults: writable, 10 s kernel cache, spill above 4 MiB into `staging_dir`,
    /// 1 GiB of local copies.
    pub fn new(staging_dir: PathBuf) -> Self {
        FsConfig {
            read_only: false,
            ttl: Duration::from_secs(10),
            staging_dir,
            spill_threshold: 4 << 20,
            local_copy_budget: 1 << 30,
        }
    }
}

/// The filesystem of one mount.
pub struct DepFs {
    pub(crate) store: Store,
    pub(crate) config: FsConfig,
    /// Starts as `!config.read_only`; one-way mode flips it when this node is promoted
    /// to manager or steps down.
    pub(crate) writable: AtomicBool,
    pub(crate) stats: stats::FsStats,
    /// Locked only through `DepFs::tables`.
    pub(crate) tables: Mutex<Tables>,
    /// How many times the tables were locked (debug builds: lets a test bound it).
    #[cfg(debug_assertions)]
    pub(crate) tables_locks: std::sync::atomic::AtomicU64,
    /// Serve files with a local copy through FUSE passthrough; off when the budget is 0,
    /// the staging filesystem's times are too coarse, or the kernel refuses it.
    pub(crate) passthrough: AtomicBool,
    /// Idle local copies (a leaf lock).
    pub(crate) local_copies: Mutex<local_copy::LocalCopies>,
    /// Closes large files given up (local copies evicted, staging files not kept).
    pub(crate) disposer: local_copy::Disposer,
    /// Wakes `open`s waiting for a file being closed to become a local copy.
    pub(crate) copy_arrived: parking_lot::Condvar,
    /// Opens waiting on `copy_arrived`, now and since the mount.
    pub(crate) opens_waiting: std::sync::atomic::AtomicUsize,
    pub(crate) release_waits: std::sync::atomic::AtomicU64,
    /// Where to send the kernel page ranges it may drop (a leaf lock).
    pub(crate) page_drops: Mutex<Option<std::sync::mpsc::Sender<PageDrop>>>,
    /// Large files closed and not yet published (see [`owed`]).
    pub(crate) owed: owed::Owed,
    /// Hands the kernel the pages of a small file just published (see
    /// [`DepFs::fill_pages_with`]; a leaf lock).
    pub(crate) page_filler: std::sync::OnceLock<PageFiller>,
}

/// The nice value of the thread publishing owed files (see [`owed`]).
const PUBLISHER_NICE: libc::c_int = 10;

/// Stores `data` in the kernel's page cache of inode `ino` from offset 0
/// (`FUSE_NOTIFY_STORE`).
pub type PageFiller = Box<dyn Fn(u64, &[u8]) -> std::io::Result<()> + Send + Sync>;

impl DepFs {
    /// A filesystem over `store`.
    pub fn new(store: Store, config: FsConfig) -> Self {
        let passthrough = config.local_copy_budget > 0 && {
            let fine = local_copy::fine_grained_stamps(&config.staging_dir);
            if !fine {
                tracing::info!(
                    dir = %config.staging_dir.display(),
                    "file times there are too coarse to notice passthrough writes: passthrough off"
                );
            }
            fine
        };
        DepFs {
            store,
            writable: AtomicBool::new(!config.read_only),
            stats: stats::FsStats::default(),
            passthrough: AtomicBool::new(passthrough),
            local_copies: Mutex::new(local_copy::LocalCopies::new(config.local_copy_budget)),
            disposer: local_copy::Disposer::start(),
            copy_arrived: parking_lot::Condvar::new(),
            opens_waiting: std::sync::atomic::AtomicUsize::new(0),
            release_waits: std::sync::atomic::AtomicU64::new(0),
            owed: owed::Owed::new(&config.staging_dir),
            page_filler: std::sync::OnceLock::new(),
            config,
            tables: Mutex::new(Tables::new()),
            #[cfg(debug_assertions)]
            tables_locks: std::sync::atomic::AtomicU64::new(0),
            page_drops: Mutex::new(None),
        }
    }

    /// Starts the thread that publishes large files after their `close` has returned
    /// (see [`owed`]); until then they are published in `close`.
    pub fn start_publisher(self: &Arc<Self>) -> std::io::Result<()> {
        if self.owed.enabled() {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::channel::<owed::Job>();
        let fs = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("depfs-publish".into())
            .spawn(move || {
                // Below the threads serving requests (and the chunking threads it
                // starts inherit this): a large file's publish must not slow the
                // readers and writers of this node. Failing leaves the default.
                // SAFETY: plain system calls on the calling thread.
                let _ = unsafe {
                    libc::setpriority(libc::PRIO_PROCESS as _, libc::gettid() as _, PUBLISHER_NICE)
                };
                for job in rx {
                    match fs.upgrade() {
                        Some(fs) => fs.publish_owed(job),
                        None => break,
                    }
                }
            })?;
        // Only this call sets it (the check above): the thread ends if it is refused.
        self.owed.set_publisher(tx);
        Ok(())
    }

    /// Closed files not yet published (see [`owed`]).
    pub fn owed_files(&self) -> usize {
        self.owed.pending()
    }

    /// Waits until every closed file is published (for `depfs sync` and unmount).
    pub fn settle_owed(&self) {
        self.owed.settle();
    }

    /// Hands the kernel, at publish, the pages of small files written through
    /// passthrough. Their writes went to the staging file, not to the FUSE inode's page
    /// cache, so without this the first read after the close would ask the daemon;
    /// through the daemon the kernel keeps the pages it wrote. `fill` is called under
    /// the inode table's lock, right after the commit, so that an invalidation for a
    /// later change from a peer always comes after it. Set once; later calls are
    /// ignored.
    pub fn fill_pages_with(&self, fill: PageFiller) {
        let _ = self.page_filler.set(fill);
    }

    /// Sends the page ranges the kernel may drop to `to` (a thread that is not serving
    /// requests hands them to the kernel).
    pub fn send_page_drops_to(&self, to: std::sync::mpsc::Sender<PageDrop>) {
        *self.page_drops.lock() = Some(to);
    }

    /// True while files with a local copy are served through FUSE passthrough.
    pub fn passthrough_enabled(&self) -> bool {
        self.passthrough.load(Ordering::Acquire)
    }

    /// Stops using passthrough for files opened from now on (the kernel lacks it, or
    /// refused a backing file); files open through it keep it until closed.
    pub fn disable_passthrough(&self, why: &str) {
        if self.passthrough.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                why,
                "FUSE passthrough off: large files are read through the daemon"
            );
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    /// Latencies of the operations served (for the metrics endpoint).
    pub fn stats(&self) -> &stats::FsStats {
        &self.stats
    }

    /// Makes the filesystem refuse (or accept again) every change. Files open for writing
    /// keep their handles; their next write fails.
    pub fn set_read_only(&self, read_only: bool) {
        self.writable.store(!read_only, Ordering::SeqCst);
    }

    /// True if changes are refused with `EROFS`.
    pub fn is_read_only(&self) -> bool {
        !self.writable.load(Ordering::SeqCst)
    }

    /// Locks the inode tables; counted in debug builds (see `tables_locks`).
    pub(crate) fn tables(&self) -> parking_lot::MutexGuard<'_, Tables> {
        #[cfg(debug_assertions)]
        self.tables_locks.fetch_add(1, Ordering::Relaxed);
        self.tables.lock()
    }

    /// How many times the inode tables were locked since the mount, in debug builds (0
    /// in release builds): lets a test bound what one call costs in that lock.
    #[doc(hidden)]
    pub fn tables_locks(&self) -> u64 {
        #[cfg(debug_assertions)]
        return self.tables_locks.load(Ordering::Relaxed);
        #[cfg(not(debug_assertions))]
        0
    }

    pub(crate) fn check_writable(&self) -> FsResult<()> {
        if self.is_read_only() {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// The path of `parent`/`name`, validated by Linux rules.
    pub(crate) fn child_path(&self, parent: u64, name: &[u8]) -> FsResult<RelPath> {
        let tables = self.tables();
        let dir = tables.path(parent).ok_or(Errno::ENOENT)?;
        Ok(dir.join(name)?)
    }

    /// `statfs`: the data directory's filesystem, since that is where content goes.
    pub fn statfs(&self) -> FsResult<Statfs> {
        let st = depfs_store::sys::statvfs(self.store.dir())?;
        Ok(Statfs {
            blocks: st.blocks * st.block_size / 4096,
            bfree: st.free * st.block_size / 4096,
            bavail: st.available * st.block_size / 4096,
            files: st.files,
            ffree: st.files_free,
            bsize: 4096,
            namelen: depfs_proto::limits::MAX_NAME_LEN as u32,
        })
    }
}
