//! The state of an open regular file, shared by all its handles: its committed
//! content, its staged writes and how the kernel may cache it. The calls that use it
//! are in [`crate::file`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use depfs_proto::{Content, Dot, Meta};
use depfs_store::{ContentReader, PinGuard};
use parking_lot::RwLock;

use crate::attr::Attr;
use crate::local_copy::{Backing, Stamp};
use crate::staging::{OwedName, Staging};
use crate::types::{now, tag_of, VersionTag};

/// The state shared by all open handles of one regular file.
#[derive(Debug)]
pub(crate) struct OpenFile {
    pub(crate) data: RwLock<FileData>,
    /// Mirrors `data.writes` being `Dirty`, readable without the data lock (by the code
    /// that applies changes from other nodes, and by `open`). Written only by
    /// `OpenFile::new` and `OpenFile::set_writes`, under the data lock.
    pub(crate) dirty: AtomicBool,
    /// The committed version this file reads (a leaf lock: may be taken under the
    /// tables).
    pub(crate) tag: parking_lot::Mutex<Option<VersionTag>>,
    /// Set when the file is served through passthrough: every open of the inode then
    /// uses this backing file (its local copy, which is also its staging), and reads and
    /// writes go to it without reaching the daemon.
    pub(crate) backing: Option<Arc<Backing>>,
    /// Published by the owed-files thread (see [`crate::owed`]): the release leaves it
    /// to that thread.
    pub(crate) owed: AtomicBool,
}

/// How the kernel may cache an open file's pages.
#[derive(Debug, Clone)]
pub enum CacheMode {
    /// Keep the page cache across opens: it holds this version.
    Keep,
    /// Bypass the page cache for this handle: it may hold another version (a peer's
    /// change not yet invalidated), and mixing the two would show a file that never
    /// existed.
    Direct,
    /// Hand reads and writes to this local file (FUSE passthrough).
    Passthrough(Arc<Backing>),
}

#[derive(Debug)]
pub(crate) struct FileData {
    /// The committed content as of open or the last publish, pinned so it stays readable
    /// if the path is overwritten or unlinked meanwhile.
    pub(crate) base: ContentReader,
    pub(crate) _pin: PinGuard,
    /// Content being written; once present it is the file's local content. Outside
    /// `writes`: it outlives a publish, as the content's local copy.
    pub(crate) staging: Option<Staging>,
    /// Unpublished changes, if any.
    pub(crate) writes: Writes,
    /// Attributes of the committed content (as of open or the last publish); `None`
    /// until a file created here is first published (it has no committed version yet,
    /// even once detached).
    pub(crate) committed_meta: Option<Meta>,
    /// Passthrough only: the state of the local copy when it last matched `base`
    /// (taken from the cache, or published). Another stamp means the kernel wrote to it.
    pub(crate) stamp: Option<Stamp>,
    /// Handles open for writing.
    pub(crate) writers: u32,
}

/// Whether an open file has changes its committed version lacks. Each state holds the
/// data that has a meaning in it: a publish drops all of `Staged` at once.
#[derive(Debug)]
pub(crate) enum Writes {
    /// Nothing unpublished: the file reads as its committed version.
    Clean,
    /// Changes not yet published, committed together by the next publish.
    Dirty(Staged),
}

/// A dirty file's unpublished changes and what they rest on.
#[derive(Debug)]
pub(crate) struct Staged {
    /// The attributes with the unpublished changes.
    pub(crate) meta: Meta,
    /// The versions the unpublished changes started from (see `Tx::put_based`).
    pub(crate) started_from: Vec<Dot>,
    /// The staged content was written from empty (a new file, `O_TRUNC`, truncate to
    /// 0): only such a file is owed at close. A change inside an existing file is
    /// published in its close, so that peers see it soon after.
    pub(crate) from_empty: bool,
    /// When `setattr` last set the modification time explicitly: a passthrough write
    /// after it moves the time again, one before it does not.
    pub(crate) explicit_mtime_at: Option<depfs_proto::Timespec>,
    /// The kernel was told it may drop its pages of this file below this offset.
    pub(crate) pages_dropped_to: u64,
}

impl Staged {
    /// Changes about to start from `meta`, the path being at versions `started_from`.
    pub(crate) fn new(meta: Meta, started_from: Vec<Dot>) -> Self {
        Staged {
            meta,
            started_from,
            from_empty: false,
            explicit_mtime_at: None,
            pages_dropped_to: 0,
        }
    }

    /// The attributes as they stand after the kernel's writes to the local copy: the
    /// writes' modification time, unless `setattr` set one explicitly after them.
    pub(crate) fn with_kernel_writes(&self, written: &Stamp) -> Meta {
        let mut meta = self.meta.clone();
        if self.explicit_mtime_at.is_none_or(|at| written.mtime > at) {
            meta.mtime = written.mtime;
            meta.ctime = meta.ctime.max(written.ctime);
        }
        meta
    }

    /// Content changed now: mtime and ctime move.
    pub(crate) fn touch_content(&mut self) {
        let t = now();
        self.meta.mtime = t;
        self.meta.ctime = t;
    }
}

impl FileData {
    /// The unpublished changes, if the file is dirty.
    pub(crate) fn staged(&self) -> Option<&Staged> {
        match &self.writes {
            Writes::Dirty(staged) => Some(staged),
            Writes::Clean => None,
        }
    }

    pub(crate) fn staged_mut(&mut self) -> Option<&mut Staged> {
        match &mut self.writes {
            Writes::Dirty(staged) => Some(staged),
            Writes::Clean => None,
        }
    }

    pub(crate) fn is_dirty(&self) -> bool {
        matches!(self.writes, Writes::Dirty(_))
    }

    pub(crate) fn size(&self) -> u64 {
        match &self.staging {
            Some(s) => s.len(),
            None => self.base.size(),
        }
    }

    /// True if the staged content is in a file (past the spill threshold): the file
    /// that becomes the content's local copy once published.
    pub(crate) fn staged_on_disk(&self) -> bool {
        self.staging
            .as_ref()
            .is_some_and(|s| s.disk_file().is_some())
    }

    /// Passthrough only: the local copy's current stamp, if the kernel wrote to it since
    /// it last matched the committed content.
    pub(crate) fn kernel_written(&self) -> Option<Stamp> {
        let file = self.staging.as_ref()?.disk_file()?;
        match Stamp::of(file) {
            Ok(now) if Some(now) != self.stamp => Some(now),
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot stat a local copy");
                None
            }
        }
    }
}

impl OpenFile {
    pub(crate) fn new(
        data: FileData,
        tag: Option<VersionTag>,
        backing: Option<Arc<Backing>>,
    ) -> Arc<OpenFile> {
        Arc::new(OpenFile {
            tag: parking_lot::Mutex::new(tag),
            dirty: AtomicBool::new(data.is_dirty()),
            data: RwLock::new(data),
            backing,
            owed: AtomicBool::new(false),
        })
    }

    /// Moves `data` (this file's, locked for writing) to `writes`: the one place that
    /// writes `dirty` after creation, so that the two never disagree.
    pub(crate) fn set_writes(&self, data: &mut FileData, writes: Writes) {
        debug_assert!(
            std::ptr::eq(data, self.data.data_ptr()),
            "set_writes given another file's data"
        );
        self.dirty
            .store(matches!(writes, Writes::Dirty(_)), Ordering::Release);
        data.writes = writes;
    }

    /// `dirty` agrees with `data` (this file's, locked): it only changes under the
    /// data lock taken for writing.
    pub(crate) fn check_dirty(&self, data: &FileData) {
        debug_assert_eq!(
            self.dirty.load(Ordering::Acquire),
            data.is_dirty(),
            "the lock-free dirty flag disagrees with the file's state"
        );
    }

    /// A committed file; with `local`, a local copy of exactly `content`, it is served
    /// through passthrough.
    pub(crate) fn committed(
        content: Content,
        meta: Meta,
        pin: PinGuard,
        local: Option<(std::fs::File, Option<OwedName>)>,
    ) -> Arc<OpenFile> {
        let tag = tag_of(&meta, content.size());
        let size = content.size();
        let local = local.and_then(
            |(file, name)| match (Stamp::of(&file), Backing::new(&file)) {
                (Ok(stamp), Ok(backing)) if stamp.len == size => Some((file, name, stamp, backing)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "local copy unusable; reading through the daemon");
                    None
                }
                _ => None,
            },
        );
        let (staging, stamp, backing) = match local {
            Some((file, name, stamp, backing)) => (
                Some(Staging::on_disk(file, size, name)),
                Some(stamp),
                Some(Arc::new(backing)),
            ),
            None => (None, None, None),
        };
        let data = FileData {
            base: ContentReader::new(content),
            _pin: pin,
            staging,
            writes: Writes::Clean,
            committed_meta: Some(meta),
            stamp,
            writers: 0,
        };
        OpenFile::new(data, Some(tag), backing)
    }

    /// A file created here and not yet published; `started_from` are the versions of
    /// the path (tombstones) when it was created.
    pub(crate) fn pending(meta: Meta, started_from: Vec<Dot>, writers: u32) -> Arc<OpenFile> {
        Self::new_pending(meta, started_from, writers, Staging::empty(), None, None)
    }

    /// A file created here, staged from the start in `file` (empty) and served through
    /// passthrough: its writes go straight to `file`, at the speed of the local disk's
    /// page cache, and are found there at publish.
    pub(crate) fn pending_on_disk(
        meta: Meta,
        started_from: Vec<Dot>,
        writers: u32,
        file: std::fs::File,
    ) -> std::io::Result<Arc<OpenFile>> {
        let stamp = Stamp::of(&file)?;
        let backing = Arc::new(Backing::new(&file)?);
        let staging = Staging::on_disk(file, 0, None);
        Ok(Self::new_pending(
            meta,
            started_from,
            writers,
            staging,
            Some(stamp),
            Some(backing),
        ))
    }

    pub(crate) fn new_pending(
        meta: Meta,
        started_from: Vec<Dot>,
        writers: u32,
        staging: Staging,
        stamp: Option<Stamp>,
        backing: Option<Arc<Backing>>,
    ) -> Arc<OpenFile> {
        let data = FileData {
            base: ContentReader::new(Content::empty()),
            _pin: PinGuard::none(),
            staging: Some(staging),
            writes: Writes::Dirty(Staged {
                from_empty: true,
                ..Staged::new(meta, started_from)
            }),
            committed_meta: None,
            stamp,
            writers,
        };
        OpenFile::new(data, None, backing)
    }

    /// How the creator's handle is served: through the backing file if there is one.
    pub(crate) fn cache_mode_at_create(&self) -> CacheMode {
        match &self.backing {
            Some(backing) => CacheMode::Passthrough(backing.clone()),
            None => CacheMode::Keep,
        }
    }

    /// Attributes including unpublished changes, if there are any.
    pub(crate) fn staged_attr(&self, ino: u64) -> Option<Attr> {
        let data = self.data.read();
        self.check_dirty(&data);
        let staged = data.staged()?;
        if self.backing.is_some() {
            if let Some(written) = data.kernel_written() {
                return Some(Attr::new(
                    ino,
                    staged.with_kernel_writes(&written),
                    written.len,
                ));
            }
        }
        Some(Attr::new(ino, staged.meta.clone(), data.size()))
    }

    /// The attributes of the version this file reads, if it is clean and that is not
    /// `current` (the path's content in the store): a peer's change that the
    /// invalidator has not processed yet. Reporting `current`'s size for this inode would
    /// let the kernel cut reads of the open version at that size.
    pub(crate) fn attr_if_reading_other(&self, ino: u64, current: &Content) -> Option<Attr> {
        if self.dirty.load(Ordering::Acquire) {
            return None;
        }
        let data = self.data.read();
        self.check_dirty(&data);
        if data.is_dirty() || data.base.content() == current {
            return None;
        }
        let meta = data.committed_meta.clone()?;
        Some(Attr::new(ino, meta, data.base.content().size()))
    }

    /// Attributes as this open file sees them: staged ones, else the committed ones.
    pub(crate) fn attr(&self, ino: u64) -> Option<Attr> {
        let data = self.data.read();
        self.check_dirty(&data);
        let meta = match data.staged() {
            Some(staged) => staged.meta.clone(),
            None => data.committed_meta.clone()?,
        };
        Some(Attr::new(ino, meta, data.size()))
    }
}
