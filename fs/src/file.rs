//! Open files: reading, staged writing, attribute changes, and publishing a file's new
//! content as one change on close or fsync.

use std::sync::Arc;

use depfs_proto::limits::MAX_FILE_SIZE;
use depfs_proto::{Content, Dot, Kind, Meta, Node};
use depfs_store::{ContentReader, Durability, PinGuard};
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::attr::Attr;
use crate::error::{Errno, FsResult};
use crate::namespace::touch_parent;
use crate::staging::{SpillPolicy, Staging};
use crate::tables::{Handle, VersionTag};
use crate::{now, now_ms, DepFs, SetAttr};

/// The state shared by all open handles of one regular file.
#[derive(Debug)]
pub(crate) struct OpenFile {
    pub(crate) data: RwLock<FileData>,
    /// Mirrors `data.staged.is_some()`, readable without the data lock (by the code that
    /// applies changes from other nodes).
    pub(crate) dirty: AtomicBool,
    /// The committed version this file reads (a leaf lock: may be taken under the
    /// tables).
    tag: parking_lot::Mutex<Option<VersionTag>>,
}

/// How the kernel may cache an open file's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Keep the page cache across opens: it holds this version.
    Keep,
    /// Bypass the page cache for this handle: it may hold another version (a peer's
    /// change not yet invalidated), and mixing the two would show a file that never
    /// existed.
    Direct,
}

pub(crate) fn tag_of(meta: &Meta, size: u64) -> VersionTag {
    (meta.mtime, meta.ctime, size)
}

#[derive(Debug)]
pub(crate) struct FileData {
    /// The committed content as of open or the last publish, pinned so it stays readable
    /// if the path is overwritten or unlinked meanwhile.
    base: ContentReader,
    _pin: PinGuard,
    /// Content being written; once present it is the file's local content.
    staging: Option<Staging>,
    /// Attributes with unpublished changes; `Some` exactly while the file is dirty.
    staged: Option<Meta>,
    /// The versions the unpublished changes started from (see `Tx::put_based`).
    started_from: Vec<Dot>,
    /// Attributes of the committed content (as of open or the last publish).
    committed_meta: Option<Meta>,
}

impl FileData {
    fn size(&self) -> u64 {
        match &self.staging {
            Some(s) => s.len(),
            None => self.base.size(),
        }
    }
}

impl OpenFile {
    pub(crate) fn committed(content: Content, meta: Meta, pin: PinGuard) -> Arc<OpenFile> {
        let tag = tag_of(&meta, content.size());
        Arc::new(OpenFile {
            tag: parking_lot::Mutex::new(Some(tag)),
            data: RwLock::new(FileData {
                base: ContentReader::new(content),
                _pin: pin,
                staging: None,
                staged: None,
                started_from: Vec::new(),
                committed_meta: Some(meta),
            }),
            dirty: AtomicBool::new(false),
        })
    }

    /// A file created here and not yet published; `started_from` are the versions of
    /// the path (tombstones) when it was created.
    pub(crate) fn pending(meta: Meta, started_from: Vec<Dot>) -> Arc<OpenFile> {
        Arc::new(OpenFile {
            tag: parking_lot::Mutex::new(None),
            data: RwLock::new(FileData {
                base: ContentReader::new(Content::empty()),
                _pin: PinGuard::none(),
                staging: Some(Staging::empty()),
                staged: Some(meta),
                started_from,
                committed_meta: None,
            }),
            dirty: AtomicBool::new(true),
        })
    }

    /// Attributes including unpublished changes, if there are any.
    pub(crate) fn staged_attr(&self, ino: u64) -> Option<Attr> {
        let data = self.data.read();
        let meta = data.staged.clone()?;
        Some(Attr::new(ino, meta, data.size()))
    }

    /// Attributes as this open file sees them: staged ones, else the committed ones.
    pub(crate) fn attr(&self, ino: u64) -> Option<Attr> {
        let data = self.data.read();
        let meta = data
            .staged
            .clone()
            .or_else(|| data.committed_meta.clone())?;
        Some(Attr::new(ino, meta, data.size()))
    }
}

impl DepFs {
    fn spill(&self) -> SpillPolicy<'_> {
        SpillPolicy {
            dir: &self.config.staging_dir,
            threshold: self.config.spill_threshold,
        }
    }

    /// `open`. Returns the handle and how the kernel may cache its pages.
    ///
    /// The kernel's page cache of an inode may hold an older version than the store when
    /// a peer's change has been applied and its invalidation is still on its way; such an
    /// open bypasses the cache, so it reads exactly the version it opened.
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<(u64, CacheMode)> {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writable {
            self.check_writable()?;
        }
        let mut tables = self.tables.lock();
        let inode = tables.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if inode.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        if inode.file.is_none() {
            // A path replaced by a peer keeps its old inode until the kernel forgets it;
            // ESTALE makes the kernel look the name up again and open the new one.
            let path = inode.path.clone().ok_or(Errno::ESTALE)?;
            let (node, pin) = self.store.get_pinned(&path)?.ok_or(Errno::ENOENT)?;
            inode.file = Some(OpenFile::committed(node.content, node.meta, pin));
        }
        inode.open += 1;
        let file = inode.file.clone().ok_or(Errno::EIO)?;
        let dirty = file.dirty.load(Ordering::Acquire);
        // Use the page cache only if the kernel's attributes and any pages it holds are
        // of the version this handle reads.
        let cache = match *file.tag.lock() {
            _ if dirty => CacheMode::Keep,
            None => CacheMode::Keep,
            Some(tag)
                if inode.attr_tag == Some(tag) && inode.cache_tag.is_none_or(|c| c == tag) =>
            {
                inode.cache_tag = Some(tag);
                CacheMode::Keep
            }
            Some(_) => CacheMode::Direct,
        };
        let fh = tables.new_handle(Handle::File { ino, writable });
        drop(tables);
        if writable && flags & libc::O_TRUNC != 0 {
            let mut data = file.data.write();
            self.make_dirty(ino, &file, &mut data)?;
            data.staging = Some(Staging::empty());
            touch_content(&mut data);
        }
        Ok((fh, cache))
    }

    fn handle_file(&self, fh: u64) -> FsResult<(u64, bool, Arc<OpenFile>)> {
        let tables = self.tables.lock();
        let Some(&Handle::File { ino, writable }) = tables.handles.get(&fh) else {
            return Err(Errno::EBADF);
        };
        let file = tables
            .inodes
            .get(&ino)
            .and_then(|i| i.file.clone())
            .ok_or(Errno::EBADF)?;
        Ok((ino, writable, file))
    }

    /// `read`.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let (_, _, file) = self.handle_file(fh)?;
        let data = file.data.read();
        match &data.staging {
            Some(staging) => Ok(staging.read(offset, size as usize)?),
            None => Ok(data.base.read(&self.store, offset, size as usize)?),
        }
    }

    /// `write`: staged, published on close or fsync.
    pub fn write(&self, fh: u64, offset: u64, bytes: &[u8]) -> FsResult<u32> {
        let (ino, writable, file) = self.handle_file(fh)?;
        if !writable {
            return Err(Errno::EBADF);
        }
        // A node that stepped down from manager refuses writes on handles opened before.
        self.check_writable()?;
        if offset.saturating_add(bytes.len() as u64) > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let mut data = file.data.write();
        self.make_dirty(ino, &file, &mut data)?;
        self.ensure_staging(&mut data)?;
        if let Some(staging) = &mut data.staging {
            staging.write(offset, bytes, &self.spill())?;
        }
        touch_content(&mut data);
        Ok(bytes.len() as u32)
    }

    /// `flush` (each `close` of a descriptor): a writer's close publishes.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let (ino, writable, _) = self.handle_file(fh)?;
        if writable {
            self.publish(ino, Durability::Process)?;
        }
        Ok(())
    }

    /// `fsync`: publishes and makes the store durable against power loss.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let (ino, _, _) = self.handle_file(fh)?;
        self.publish(ino, Durability::Machine)
    }

    /// `fsyncdir`: every committed change is made durable.
    pub fn fsyncdir(&self) -> FsResult<()> {
        Ok(self.store.sync()?)
    }

    /// `release`: the last reference to a handle is gone.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let result = match self.handle_file(fh) {
            Ok((ino, true, _)) => self.publish(ino, Durability::Process),
            _ => Ok(()),
        };
        let mut tables = self.tables.lock();
        if let Some(Handle::File { ino, .. }) = tables.handles.remove(&fh) {
            let mut dropped = None;
            if let Some(inode) = tables.inodes.get_mut(&ino) {
                inode.open = inode.open.saturating_sub(1);
                if inode.open == 0 {
                    inode.file = None;
                    if inode.pending {
                        // A new file that could not be published (the error went to
                        // the closer, e.g. ENOSPC) is dropped with its last handle.
                        dropped = inode.path.clone();
                    }
                }
            }
            match dropped {
                // Its name leads nowhere now: an open through a cached name gets
                // ESTALE, so the kernel looks it up again (and may create it anew).
                Some(path) => tables.detach(&path, None),
                None => tables.maybe_drop(ino),
            }
        }
        result
    }

    /// `setattr`: chmod, chown, truncate, utimens. On a file with unpublished writes the
    /// change is staged with them (so other nodes never see new attributes on old
    /// content); otherwise it is committed at once.
    pub fn setattr(&self, ino: u64, changes: &SetAttr) -> FsResult<Attr> {
        if changes.mode.is_none()
            && changes.uid.is_none()
            && changes.gid.is_none()
            && changes.size.is_none()
            && changes.mtime.is_none()
        {
            return self.getattr(ino);
        }
        self.check_writable()?;
        let (kind, file, path) = {
            let tables = self.tables.lock();
            let inode = tables.inodes.get(&ino).ok_or(Errno::ENOENT)?;
            (inode.kind, inode.file.clone(), inode.path.clone())
        };
        if let Some(size) = changes.size {
            match kind {
                Kind::Dir => return Err(Errno::EISDIR),
                Kind::Symlink => return Err(Errno::EINVAL),
                Kind::File if size > MAX_FILE_SIZE => return Err(Errno::EFBIG),
                Kind::File => {}
            }
        }
        if let Some(file) = &file {
            let mut data = file.data.write();
            if changes.size.is_some() || data.staged.is_some() {
                self.make_dirty(ino, file, &mut data)?;
                if let Some(size) = changes.size {
                    self.ensure_staging(&mut data)?;
                    if let Some(staging) = &mut data.staging {
                        staging.truncate(size, &self.spill())?;
                    }
                    touch_content(&mut data);
                }
                if let Some(meta) = &mut data.staged {
                    apply(meta, changes);
                }
                drop(data);
                return self.getattr(ino);
            }
        }
        let Some(path) = path else {
            let mut tables = self.tables.lock();
            let inode = tables.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
            if let Some(meta) = &mut inode.detached {
                apply(meta, changes);
            }
            drop(tables);
            return self.getattr(ino);
        };
        let mut tx = self.store.transaction();
        let mut node = tx.get(&path)?.ok_or(Errno::ENOENT)?;
        if let Some(size) = changes.size {
            node.content = self.truncated(&node.content, size)?;
            let t = now();
            node.meta.mtime = t;
        }
        apply(&mut node.meta, changes);
        tx.put(path, node);
        self.commit(tx, |_| ())?;
        self.getattr(ino)
    }

    /// `content` cut or extended (with zeros) to `size`.
    fn truncated(&self, content: &Content, size: u64) -> FsResult<Content> {
        if size == 0 {
            return Ok(Content::empty());
        }
        let mut staging = Staging::from_content(
            &self.store,
            &ContentReader::new(content.clone()),
            &self.spill(),
        )?;
        staging.truncate(size, &self.spill())?;
        let (content, _pin) = self
            .store
            .write_content_from(staging.reader(), staging.len())?;
        Ok(content)
    }

    /// Marks the file dirty, capturing its current attributes and the versions the
    /// changes start from.
    fn make_dirty(&self, ino: u64, file: &OpenFile, data: &mut FileData) -> FsResult<()> {
        if data.staged.is_some() {
            return Ok(());
        }
        let tables = self.tables.lock();
        let inode = tables.inodes.get(&ino).ok_or(Errno::ENOENT)?;
        let (meta, started_from) = match &inode.path {
            Some(path) => {
                let meta = self.store.get(path)?.ok_or(Errno::ENOENT)?.meta;
                let dots = self.store.heads(path)?.into_iter().map(|h| h.dot).collect();
                (meta, dots)
            }
            None => (inode.detached.clone().ok_or(Errno::ENOENT)?, Vec::new()),
        };
        data.staged = Some(meta);
        data.started_from = started_from;
        file.dirty.store(true, Ordering::Release);
        Ok(())
    }

    fn ensure_staging(&self, data: &mut FileData) -> FsResult<()> {
        if data.staging.is_none() {
            data.staging = Some(Staging::from_content(
                &self.store,
                &data.base,
                &self.spill(),
            )?);
        }
        Ok(())
    }

    /// Commits the file's staged content and attributes as one change. Nothing happens
    /// for a clean file (beyond syncing for `Durability::Machine`) or for one whose path
    /// is gone.
    pub(crate) fn publish(&self, ino: u64, durability: Durability) -> FsResult<()> {
        let file = {
            let tables = self.tables.lock();
            tables.inodes.get(&ino).and_then(|i| i.file.clone())
        };
        let Some(file) = file else {
            return Ok(());
        };
        let mut data = file.data.write();
        let Some(meta) = data.staged.clone() else {
            if durability == Durability::Machine {
                self.store.sync()?;
            }
            return Ok(());
        };
        let has_path = {
            let tables = self.tables.lock();
            tables.inodes.get(&ino).is_some_and(|i| i.path.is_some())
        };
        if !has_path {
            return Ok(()); // unlinked while open: its writes die with it
        }
        let (content, pin) = match &data.staging {
            Some(staging) => self
                .store
                .write_content_from(staging.reader(), staging.len())?,
            None => {
                let content = data.base.content().clone();
                let pin = self.store.pin(&content);
                (content, pin)
            }
        };
        let mut tx = self.store.transaction();
        let (path, pending) = {
            let tables = self.tables.lock();
            let inode = tables.inodes.get(&ino).ok_or(Errno::ENOENT)?;
            (inode.path.clone(), inode.pending)
        };
        let Some(path) = path else {
            return Ok(()); // unlinked while open: its writes die with it
        };
        if !pending && !matches!(tx.get(&path)?, Some(n) if n.meta.kind == Kind::File) {
            return Ok(());
        }
        tx.put_based(
            path.clone(),
            Node {
                meta: meta.clone(),
                content: content.clone(),
            },
            data.started_from.clone(),
        );
        if pending {
            touch_parent(&mut tx, &path, meta.ctime)?;
        }
        {
            let mut tables = self.tables.lock();
            tx.commit(now_ms(), durability)?;
            let tag = tag_of(&meta, content.size());
            *file.tag.lock() = Some(tag);
            if let Some(inode) = tables.inodes.get_mut(&ino) {
                inode.pending = false;
                // The kernel's pages are our own writes: this version.
                inode.cache_tag = Some(tag);
                inode.attr_tag = Some(tag);
            }
        }
        data.base = ContentReader::new(content);
        data._pin = pin;
        data.staged = None;
        data.committed_meta = Some(meta);
        data.started_from.clear();
        file.dirty.store(false, Ordering::Release);
        Ok(())
    }

    /// Publishes every file with unpublished changes (at unmount).
    pub fn publish_all(&self) {
        let inos: Vec<u64> = self
            .tables
            .lock()
            .inodes
            .iter()
            .filter(|(_, i)| i.file.is_some())
            .map(|(&ino, _)| ino)
            .collect();
        for ino in inos {
            if let Err(e) = self.publish(ino, Durability::Machine) {
                tracing::error!(ino, errno = e.0, "could not publish a file at unmount");
            }
        }
    }
}

/// Content changed now: mtime and ctime move.
fn touch_content(data: &mut FileData) {
    if let Some(meta) = &mut data.staged {
        let t = now();
        meta.mtime = t;
        meta.ctime = t;
    }
}

fn apply(meta: &mut Meta, changes: &SetAttr) {
    if let Some(mode) = changes.mode {
        meta.perm = mode & 0o7777;
    }
    if let Some(uid) = changes.uid {
        meta.uid = uid;
    }
    if let Some(gid) = changes.gid {
        meta.gid = gid;
    }
    if let Some(mtime) = changes.mtime {
        meta.mtime = mtime;
    }
    meta.ctime = now();
}
