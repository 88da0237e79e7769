//! Open files: reading, staged writing, attribute changes, and publishing a file's new
//! content as one change on close or fsync.

use std::sync::Arc;

use depfs_proto::limits::MAX_FILE_SIZE;
use depfs_proto::{Content, Dot, Kind, Meta, Node, RelPath};
use depfs_store::{ContentReader, Durability, PinGuard};
use std::sync::atomic::Ordering;

use crate::attr::Attr;
use crate::depfs::DepFs;
use crate::error::{Errno, FsResult};
use crate::local_copy::Stamp;
use crate::namespace::touch_parent;
use crate::open_file::{CacheMode, FileData, OpenFile, Staged, Writes};
use crate::staging::{SpillPolicy, Staging};
use crate::tables::{Handle, Inode, Place, Tables};
use crate::types::{now, now_ms, tag_of, PageDrop, SetAttr};

/// Pages written through the daemon are dropped from the kernel's cache in steps of this
/// size (see `DepFs::write`).
const PAGE_DROP_STEP: u64 = 4 << 20;

/// A published file written through passthrough up to this size has its pages handed
/// to the kernel (see `DepFs::fill_pages_with`).
const FILL_PAGES_UP_TO: u64 = 64 << 10;

/// The longest an `open` waits for the release of the inode's last handle to finish
/// (normally microseconds; the bound only keeps a stuck release from holding up opens).
const COPY_ARRIVAL_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The longest an `open` waits for the releases of handles whose descriptors were all
/// closed (normally well under a millisecond). A descriptor `dup`ed before the close
/// keeps its handle open: then the open goes on without the local copy after this.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Content stored ahead of a publish, without the file's lock: used if the staging
/// file still has `stamp` when the publish looks.
pub(crate) struct Prepared {
    stamp: Stamp,
    content: Content,
    pin: PinGuard,
}

/// What a publish commits: the attributes, and the local copy's stamp when the content
/// is read from it (passthrough).
struct PublishPlan {
    meta: Meta,
    read_at: Option<Stamp>,
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
            self.owed.settle();
        }
        let mut tables = self.tables();
        self.wait_for_local_copy(&mut tables, ino);
        let inode = tables.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if inode.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        if inode.file.is_none() {
            // A path replaced by a peer keeps its old inode until the kernel forgets it;
            // ESTALE makes the kernel look the name up again and open the new one.
            let path = inode.path().cloned().ok_or(Errno::ESTALE)?;
            inode.file = Some(self.open_committed(&path)?);
        }
        inode.open += 1;
        inode.check();
        let file = inode.file.clone().ok_or(Errno::EIO)?;
        let dirty = file.dirty.load(Ordering::Acquire);
        // Use the page cache only if the kernel's attributes and any pages it holds are
        // of the version this handle reads.
        let cache = match *file.tag.lock() {
            _ if file.backing.is_some() => {
                CacheMode::Passthrough(file.backing.clone().ok_or(Errno::EIO)?)
            }
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
        let fh = tables.new_handle(Handle::File {
            ino,
            writable,
            flushed: false,
        });
        drop(tables);
        if writable {
            let mut data = file.data.write();
            data.writers += 1;
            if file.backing.is_some() {
                // Its writes will not reach us: dirty until the last writer is gone, and
                // what was written is found out from the local copy at publish.
                self.make_dirty(ino, &file, &mut data)?;
            }
            if flags & libc::O_TRUNC != 0 {
                self.make_dirty(ino, &file, &mut data)?;
                match &mut data.staging {
                    // The backing file stays the same file: it is cut, not replaced.
                    Some(staging) if file.backing.is_some() => {
                        staging.truncate(0, &self.spill())?
                    }
                    staging => *staging = Some(Staging::empty()),
                }
                if let Some(staged) = data.staged_mut() {
                    staged.from_empty = true;
                    staged.touch_content();
                }
            }
        }
        Ok((fh, cache))
    }

    /// Waits while the inode's file may be about to become a local copy, so that the
    /// open uses it (passthrough) rather than reading through the daemon.
    ///
    /// The kernel does not wait for a `release`: an open right after a close can come
    /// while the closed handle is still counted (its descriptors all closed: every
    /// handle `flushed`), or while its file is on its way into the local copies
    /// (`copy_arriving`). Only files that can become one are waited for: clean, staged
    /// on disk, not served through passthrough already.
    fn wait_for_local_copy(&self, tables: &mut parking_lot::MutexGuard<'_, Tables>, ino: u64) {
        if !self.passthrough_enabled() {
            return;
        }
        let must_wait = |tables: &Tables| {
            let inode = tables.inodes.get(&ino)?;
            if inode.copy_arriving {
                return Some(COPY_ARRIVAL_WAIT);
            }
            let file = inode.file.as_ref()?;
            if inode.open == 0 || inode.flushed < inode.open || file.backing.is_some() {
                return None;
            }
            // Never blocks: elsewhere the data lock is taken before the tables.
            let data = file.data.try_read()?;
            file.check_dirty(&data);
            (data.staged_on_disk() && !data.is_dirty()).then_some(RELEASE_WAIT)
        };
        let Some(bound) = must_wait(tables) else {
            return;
        };
        let deadline = std::time::Instant::now() + bound;
        self.opens_waiting.fetch_add(1, Ordering::SeqCst);
        self.release_waits.fetch_add(1, Ordering::Relaxed);
        while must_wait(tables).is_some() {
            if self.copy_arrived.wait_until(tables, deadline).timed_out() {
                // A handle kept open by a duplicated descriptor: not waited for again
                // until it is flushed again.
                let Tables {
                    handles, inodes, ..
                } = &mut **tables;
                for handle in handles.values_mut() {
                    if let Handle::File {
                        ino: of, flushed, ..
                    } = handle
                    {
                        if *of == ino && *flushed {
                            *flushed = false;
                            if let Some(inode) = inodes.get_mut(&ino) {
                                debug_assert!(inode.flushed > 0, "flushed count underflow");
                                inode.flushed = inode.flushed.saturating_sub(1);
                            }
                        }
                    }
                }
                break;
            }
        }
        self.opens_waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// How many opens are waiting for a release (see `wait_for_local_copy`): lets a
    /// test deliver the release while an open waits for it.
    #[doc(hidden)]
    pub fn opens_waiting_for_release(&self) -> usize {
        self.opens_waiting.load(Ordering::SeqCst)
    }

    /// How many opens have waited for a release since the mount.
    #[doc(hidden)]
    pub fn release_waits(&self) -> u64 {
        self.release_waits.load(Ordering::Relaxed)
    }

    /// The versions `path` has now (what a change made from here starts from).
    pub(crate) fn head_dots(&self, path: &depfs_proto::RelPath) -> FsResult<Vec<Dot>> {
        Ok(self.store.heads(path)?.into_iter().map(|h| h.dot).collect())
    }

    /// The committed file at `path`, opened: through its local copy if there is one
    /// (passthrough), else with its chunks pinned, so that they stay readable through
    /// the daemon however the path changes meanwhile.
    fn open_committed(&self, path: &depfs_proto::RelPath) -> FsResult<Arc<OpenFile>> {
        if self.passthrough_enabled() && !self.local_copies.lock().is_empty() {
            let node = self.store.get(path)?.ok_or(Errno::ENOENT)?;
            let local = self.local_copies.lock().take(&node.content);
            if let Some(local) = local {
                // Served from the local copy only: no chunk of it is read.
                let pin = PinGuard::none();
                return Ok(OpenFile::committed(
                    node.content,
                    node.meta,
                    pin,
                    Some(local),
                ));
            }
        }
        let (node, pin) = self.store.get_pinned(path)?.ok_or(Errno::ENOENT)?;
        Ok(OpenFile::committed(node.content, node.meta, pin, None))
    }

    fn handle_file(&self, fh: u64) -> FsResult<(u64, bool, Arc<OpenFile>)> {
        self.use_handle(fh, None)
    }

    /// The handle's inode, whether it is writable, and its file; with `flushed`, marks
    /// it as closed by a `flush` (`Some(true)`) or used since (`Some(false)`).
    fn use_handle(&self, fh: u64, flushed: Option<bool>) -> FsResult<(u64, bool, Arc<OpenFile>)> {
        let mut tables = self.tables();
        let Tables {
            handles, inodes, ..
        } = &mut *tables;
        let Some(Handle::File {
            ino,
            writable,
            flushed: was_flushed,
        }) = handles.get_mut(&fh)
        else {
            return Err(Errno::EBADF);
        };
        let inode = inodes.get_mut(ino).ok_or(Errno::EBADF)?;
        if let Some(now) = flushed {
            if now != *was_flushed {
                *was_flushed = now;
                if now {
                    inode.flushed += 1;
                } else {
                    debug_assert!(inode.flushed > 0, "inode {ino}: flushed count underflow");
                    inode.flushed = inode.flushed.saturating_sub(1);
                }
                inode.check();
            }
        }
        let file = inode.file.clone().ok_or(Errno::EBADF)?;
        Ok((*ino, *writable, file))
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
        let (ino, writable, file) = self.use_handle(fh, Some(false))?;
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
        // The kernel keeps a copy of every page written through it, and the staging file
        // holds the same bytes: as a large file is written, all but its last
        // `PAGE_DROP_STEP` are dropped from the kernel's copy, so that it is cached once
        // (and the open that later switches the inode to passthrough, which drops that
        // copy, does not wait for hundreds of MiB to be freed).
        let end = offset + bytes.len() as u64;
        let on_disk = data.staged_on_disk();
        let staged = data.staged_mut().ok_or(Errno::EIO)?;
        staged.touch_content();
        if on_disk && end >= staged.pages_dropped_to + 2 * PAGE_DROP_STEP {
            let upto = (end / PAGE_DROP_STEP - 1) * PAGE_DROP_STEP;
            self.drop_pages(ino, staged.pages_dropped_to, upto - staged.pages_dropped_to);
            staged.pages_dropped_to = upto;
        }
        Ok(bytes.len() as u32)
    }

    fn drop_pages(&self, ino: u64, offset: u64, len: u64) {
        if let Some(to) = self.page_drops.lock().as_ref() {
            let _ = to.send(PageDrop { ino, offset, len });
        }
    }

    /// `flush` (each `close` of a descriptor): a writer's close publishes, or makes a
    /// large file owed (see [`crate::owed`]).
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let (ino, writable, file) = self.handle_file(fh)?;
        if writable {
            self.owed.settle();
            if !self.owe_publish(ino, &file) {
                self.publish(ino, Durability::Process)?;
            }
        } else if self.is_pending(ino) {
            // Created through a read-only handle (`O_CREAT|O_RDONLY`, as flock(1) and
            // lock files do): nothing will be written, but the file exists from now on.
            self.publish(ino, Durability::Process)?;
        }
        // Marked only once published: an open waiting for the release must not find
        // the file still dirty.
        self.use_handle(fh, Some(true))?;
        Ok(())
    }

    /// `fsync`: publishes and makes the store durable against power loss.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let (ino, _, _) = self.handle_file(fh)?;
        self.owed.settle();
        self.publish(ino, Durability::Machine)
    }

    /// `fsyncdir`: every committed change is made durable.
    pub fn fsyncdir(&self) -> FsResult<()> {
        self.owed.settle();
        Ok(self.store.sync()?)
    }

    /// Links a large staging file under a name of the staging directory, where the next
    /// mount finds it if this daemon does not publish it (done once per file). False if
    /// it cannot be named: the file is then published in its close. `written` is updated
    /// to the stamp after the link, which moved the file's change time.
    fn name_owed_staging(&self, ino: u64, staging: &mut Staging, written: &mut Stamp) -> bool {
        if staging.owed_name().is_some() {
            return true;
        }
        let Some(disk) = staging.disk_file() else {
            return false;
        };
        match self.owed.name(disk) {
            Ok(name) => {
                // The link moved the file's change time; nothing else may have.
                if let Ok(linked) = Stamp::of(disk) {
                    if linked.len == written.len && linked.mtime == written.mtime {
                        *written = linked;
                    }
                }
                staging.set_owed_name(name);
                true
            }
            Err(e) => {
                tracing::warn!(ino, error = %e, "cannot name a large staging file; publishing it in close");
                false
            }
        }
    }

    /// Makes `file` owed if it is large and written through passthrough: linked and
    /// noted in the staging directory, its inode held open, and handed to the
    /// publishing thread. False if the caller publishes it now.
    fn owe_publish(&self, ino: u64, file: &Arc<OpenFile>) -> bool {
        let Some(source) = file.backing.clone().filter(|_| self.owed.enabled()) else {
            return false;
        };
        let mut data = file.data.write();
        if !data.staged().is_some_and(|s| s.from_empty) {
            return false;
        }
        let Some(mut written) = data.kernel_written() else {
            return false;
        };
        if written.len < crate::owed::OWED_FROM {
            return false;
        }
        let mut tables = self.tables();
        let Some(inode) = tables.inodes.get_mut(&ino) else {
            return false;
        };
        let Some(path) = inode.path().cloned() else {
            return false; // unlinked while open: its writes die with it
        };
        let new_file = inode.is_pending();
        if let Some(staging) = data.staging.as_mut() {
            if !self.name_owed_staging(ino, staging, &mut written) {
                return false;
            }
        }
        // What the publish will commit (the attributes after the link, as it sees them).
        let Some(staged) = data.staged() else {
            return false;
        };
        let note = crate::owed::Note {
            path,
            meta: staged.with_kernel_writes(&written),
            started_from: staged.started_from.clone(),
            new_file,
            len: written.len,
        };
        let Some(name) = data.staging.as_ref().and_then(Staging::owed_name) else {
            return false;
        };
        let number = name.number();
        if let Err(e) = self.owed.record(name, &note) {
            tracing::warn!(ino, error = %e, "cannot note a large file as owed; publishing it in close");
            return false;
        }
        // The job holds the inode open, as a handle would, until it is published.
        inode.open += 1;
        file.owed.store(true, Ordering::Release);
        drop(tables);
        drop(data);
        let job = crate::owed::Job {
            ino,
            file: file.clone(),
            source,
            stamp: written,
            number,
        };
        if let Err(job) = self.owed.send(job) {
            file.owed.store(false, Ordering::Release);
            self.owed.forget(job.number);
            self.owed.finish();
            self.handle_closed(ino, false);
            return false;
        }
        true
    }

    /// Publishes an owed file (on the owed-files thread): its chunks are stored
    /// without the file's lock, so that opens, reads and attributes of it go on.
    pub(crate) fn publish_owed(&self, job: crate::owed::Job) {
        let span = tracing::info_span!("publish_owed", ino = job.ino, number = job.number);
        let _entered = span.enter();
        let result = self
            .store
            .write_content_with_threads(job.source.file(), job.stamp.len, 1)
            .map_err(Errno::from)
            .and_then(|(content, pin)| {
                let prepared = Prepared {
                    stamp: job.stamp,
                    content,
                    pin,
                };
                self.publish_prepared(job.ino, Durability::Process, Some(prepared))
            });
        job.file.owed.store(false, Ordering::Release);
        match result {
            Ok(()) => self.owed.forget(job.number),
            Err(e) => {
                // Left noted: the next mount publishes it (or says why it cannot).
                tracing::error!(
                    ino = job.ino,
                    errno = e.0,
                    "cannot publish a closed file; the next mount retries"
                );
            }
        }
        // The local copy is in place before anyone waiting for owed files goes on.
        self.handle_closed(job.ino, false);
        self.owed.finish();
    }

    /// `release`: the last reference to a handle is gone.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let result = match self.handle_file(fh) {
            Ok((ino, true, file)) => {
                {
                    let mut data = file.data.write();
                    data.writers = data.writers.saturating_sub(1);
                }
                if file.owed.load(Ordering::Acquire) {
                    Ok(()) // the owed-files thread publishes it
                } else {
                    self.publish(ino, Durability::Process)
                }
            }
            // A file created through a read-only handle whose flush did not publish it
            // (no flush reached us, or it failed): published now or never.
            Ok((ino, false, file)) if self.is_pending(ino) || self.unpublished(&file) => {
                self.publish(ino, Durability::Process)
            }
            _ => Ok(()),
        };
        let removed = self.tables().handles.remove(&fh);
        if let Some(Handle::File { ino, flushed, .. }) = removed {
            self.handle_closed(ino, flushed);
        }
        result
    }

    /// True if `file` has staged changes and no writer left to publish them.
    fn unpublished(&self, file: &OpenFile) -> bool {
        let data = file.data.read();
        file.check_dirty(&data);
        data.is_dirty() && data.writers == 0 && !file.owed.load(Ordering::Acquire)
    }

    /// True if `ino` was created here and is not committed yet.
    fn is_pending(&self, ino: u64) -> bool {
        self.tables()
            .inodes
            .get(&ino)
            .is_some_and(Inode::is_pending)
    }

    /// A handle of `ino` is gone (released by the kernel, or an owed file's job done):
    /// the last one takes the file, which may become a local copy.
    fn handle_closed(&self, ino: u64, flushed: bool) {
        let mut closed = None;
        let mut tables = self.tables();
        let mut dropped = None;
        if let Some(inode) = tables.inodes.get_mut(&ino) {
            debug_assert!(
                inode.open > 0,
                "inode {ino}: a handle closed that was not open"
            );
            debug_assert!(
                !flushed || inode.flushed > 0,
                "inode {ino}: a flushed handle closed that was not counted"
            );
            inode.open = inode.open.saturating_sub(1);
            if flushed {
                inode.flushed = inode.flushed.saturating_sub(1);
            }

            if inode.open == 0 {
                closed = inode.file.take().map(|file| (ino, file));
                inode.copy_arriving = closed.is_some();
                if inode.is_pending() {
                    // A new file that could not be published (the error went to
                    // the closer, e.g. ENOSPC) is dropped with its last handle.
                    dropped = inode.path().cloned();
                }
            }
        }
        match dropped {
            // Its name leads nowhere now: an open through a cached name gets
            // ESTALE, so the kernel looks it up again (and may create it anew).
            Some(path) => tables.detach(&path, None),
            None => tables.maybe_drop(ino),
        }
        if let Some(inode) = tables.inodes.get(&ino) {
            inode.check();
        }
        drop(tables);
        let closed = closed.map(|(ino, file)| {
            self.keep_local_copy(&file);
            if let Some(inode) = self.tables().inodes.get_mut(&ino) {
                inode.copy_arriving = false;
            }
            file
        });
        // Opens may wait for this release (see `wait_for_local_copy`); they go on
        // before the closed file is dropped, which unpins each of its chunks.
        self.copy_arrived.notify_all();
        drop(closed);
    }

    /// The last handle of `file` is gone: its staging file, if it holds exactly the
    /// committed content, is kept as that content's local copy for the next open; if
    /// not, it is closed on the disposer's thread.
    fn keep_local_copy(&self, file: &OpenFile) {
        let mut data = file.data.write();
        if let Some(backing) = &file.backing {
            // The kernel has released the inode's backing file before telling us.
            backing.id().take();
        }
        file.check_dirty(&data);
        if data.is_dirty() {
            return; // unpublished (its publish failed): dropped with the file
        }
        let size = data.base.size();
        let keep = self.passthrough_enabled()
            // written after its last publish (cannot happen once all are closed)
            && !(file.backing.is_some() && data.kernel_written().is_some())
            && size >= self.config.spill_threshold
            && data.staging.as_ref().map(Staging::len) == Some(size);
        // Clean: from now on whoever still holds the file reads the committed content.
        let Some((disk, name)) = data
            .staging
            .take_if(|s| s.disk_file().is_some())
            .and_then(Staging::into_disk_file)
        else {
            return;
        };
        let content = data.base.content().clone();
        drop(data);
        if keep {
            let given_back = self.local_copies.lock().put(&content, disk, name);
            self.disposer.dispose(given_back);
        } else if size < self.config.spill_threshold {
            drop(disk); // small: closing it costs less than waking the disposer
        } else {
            self.disposer.dispose([disk]);
        }
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
        self.owed.settle();
        let (kind, file, path) = {
            let tables = self.tables();
            let inode = tables.inodes.get(&ino).ok_or(Errno::ENOENT)?;
            (inode.kind, inode.file.clone(), inode.path().cloned())
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
            file.check_dirty(&data);
            if changes.size.is_some() || data.is_dirty() {
                self.make_dirty(ino, file, &mut data)?;
                if let Some(size) = changes.size {
                    self.ensure_staging(&mut data)?;
                    if let Some(staging) = &mut data.staging {
                        staging.truncate(size, &self.spill())?;
                    }
                }
                let staged = data.staged_mut().ok_or(Errno::EIO)?;
                if changes.size == Some(0) {
                    staged.from_empty = true;
                }
                if changes.size.is_some() {
                    staged.touch_content();
                }
                apply(&mut staged.meta, changes);
                if changes.mtime.is_some() {
                    staged.explicit_mtime_at = Some(now());
                }
                // Staged for a writer's close to publish with its writes; with no
                // writer (the file is open only for reading) nobody would: now, then.
                let no_writer = data.writers == 0;
                drop(data);
                if no_writer {
                    self.publish(ino, Durability::Process)?;
                }
                return self.getattr(ino);
            }
        }
        let Some(path) = path else {
            let mut tables = self.tables();
            let inode = tables.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
            if let Some(meta) = inode.detached_meta_mut() {
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

    /// `fallocate` through a writable handle. Every mode ext4 offers for regular files
    /// that keeps the file's bytes meaningful is supported: depfs stores contents, not
    /// blocks, so reserving space is a no-op beyond the size it sets.
    /// - 0: the file grows to `offset + length` if it is shorter (zeros);
    /// - `KEEP_SIZE`: nothing changes (no blocks to reserve);
    /// - `PUNCH_HOLE | KEEP_SIZE`, `ZERO_RANGE [| KEEP_SIZE]`: the range reads as zeros
    ///   (written as zeros: a stored content has no holes), growing the file unless
    ///   `KEEP_SIZE`.
    ///
    /// Other modes (`COLLAPSE_RANGE`, `INSERT_RANGE`, `UNSHARE_RANGE`) give `EOPNOTSUPP`,
    /// as on filesystems without them.
    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        const ZEROING: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !(libc::FALLOC_FL_KEEP_SIZE | ZEROING) != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        if mode & libc::FALLOC_FL_PUNCH_HOLE != 0 && mode & libc::FALLOC_FL_KEEP_SIZE == 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        if length == 0 || mode & ZEROING == ZEROING {
            return Err(Errno::EINVAL);
        }
        let (ino, writable, file) = self.handle_file(fh)?;
        if !writable {
            return Err(Errno::EBADF);
        }
        let end = offset
            .checked_add(length)
            .filter(|&end| end <= MAX_FILE_SIZE)
            .ok_or(Errno::EFBIG)?;
        let size = file.data.read().size();
        if mode & ZEROING != 0 {
            let zeroed_to = if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
                end.min(size)
            } else {
                end
            };
            return self.write_zeros(fh, offset, zeroed_to);
        }
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > size {
            let grow = SetAttr {
                size: Some(end),
                ..SetAttr::default()
            };
            self.setattr(ino, &grow)?;
        }
        Ok(())
    }

    /// Writes zeros over `from..to` through handle `fh`, a bounded piece at a time.
    fn write_zeros(&self, fh: u64, from: u64, to: u64) -> FsResult<()> {
        const PIECE: u64 = 1 << 20;
        let zeros = vec![0u8; PIECE.min(to.saturating_sub(from)) as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(PIECE) as usize;
            let piece = zeros.get(..n).ok_or(Errno::EIO)?;
            at += u64::from(self.write(fh, at, piece)?);
        }
        Ok(())
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
        let (content, _pin) = staging.store(&self.store)?;
        Ok(content)
    }

    /// Marks the file dirty, capturing its current attributes and the versions the
    /// changes start from.
    fn make_dirty(&self, ino: u64, file: &OpenFile, data: &mut FileData) -> FsResult<()> {
        file.check_dirty(data);
        if data.is_dirty() {
            return Ok(());
        }
        let tables = self.tables();
        let inode = tables.inodes.get(&ino).ok_or(Errno::ENOENT)?;
        let (meta, started_from) = match &inode.place {
            Place::Pending(path) | Place::Live(path) => {
                let meta = self.store.get(path)?.ok_or(Errno::ENOENT)?.meta;
                let dots = self.head_dots(path)?;
                (meta, dots)
            }
            Place::Detached(meta) => (meta.clone().ok_or(Errno::ENOENT)?, Vec::new()),
        };
        // Dirty before the tables are let go: `remote_changed` reads the flag under them
        // and detaches a clean file's path, which would drop these writes at close.
        file.set_writes(data, Writes::Dirty(Staged::new(meta, started_from)));
        drop(tables);
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
        self.publish_prepared(ino, durability, None)
    }

    /// `publish`, with the content stored ahead (used if the staging file is as it was
    /// then). In phases: the plan (what to commit), the content stored, the commit, and
    /// the file's move to the committed version.
    fn publish_prepared(
        &self,
        ino: u64,
        durability: Durability,
        prepared: Option<Prepared>,
    ) -> FsResult<()> {
        let file = {
            let tables = self.tables();
            tables.inodes.get(&ino).and_then(|i| i.file.clone())
        };
        let Some(file) = file else {
            return Ok(());
        };
        let mut data = file.data.write();
        file.check_dirty(&data);
        if !data.is_dirty() {
            if durability == Durability::Machine {
                self.store.sync()?;
            }
            return Ok(());
        }
        let has_path = {
            let tables = self.tables();
            tables.inodes.get(&ino).is_some_and(|i| i.path().is_some())
        };
        if !has_path {
            return Ok(()); // unlinked while open: its writes die with it
        }
        let Some(plan) = self.publish_plan(&file, &mut data) else {
            if durability == Durability::Machine {
                self.store.sync()?;
            }
            return Ok(());
        };
        let (content, pin) = match (prepared, &data.staging) {
            (Some(p), _) if plan.read_at == Some(p.stamp) => (p.content, p.pin),
            (_, Some(staging)) => staging.store(&self.store)?,
            (_, None) => {
                let content = data.base.content().clone();
                let pin = self.store.pin(&content);
                (content, pin)
            }
        };
        let fill = self.pages_to_fill(&file, &data, &content);
        let node = Node {
            meta: plan.meta,
            content,
        };
        let Some(path) = self.commit_publish(ino, &file, &data, &node, fill, durability)? else {
            return Ok(());
        };
        self.apply_published(ino, &file, &mut data, (node, pin), plan.read_at, &path)
    }

    /// What publishing dirty `data` commits. `None` if there is nothing to (passthrough:
    /// nothing written and no attribute changed); the file is then clean again unless a
    /// writer may still write behind our back.
    fn publish_plan(&self, file: &OpenFile, data: &mut FileData) -> Option<PublishPlan> {
        let staged = data.staged()?;
        let mut meta = staged.meta.clone();
        let mut read_at = None;
        // Passthrough: what the kernel wrote is found from the local copy's stamp.
        if file.backing.is_some() {
            match data.kernel_written() {
                None if data.committed_meta.as_ref() == Some(&meta) => {
                    if data.writers == 0 {
                        file.set_writes(data, Writes::Clean);
                    }
                    return None;
                }
                None => {}
                Some(written) => {
                    meta = staged.with_kernel_writes(&written);
                    if let Some(staging) = &mut data.staging {
                        staging.set_known_len(written.len);
                    }
                    read_at = Some(written);
                }
            }
        }
        Some(PublishPlan { meta, read_at })
    }

    /// Pages for the kernel at publish (see `DepFs::fill_pages_with`): the writes went
    /// to the staging file, not its cache. Inline content is at hand; larger is read
    /// back from the staging file.
    fn pages_to_fill(
        &self,
        file: &OpenFile,
        data: &FileData,
        content: &Content,
    ) -> Option<Vec<u8>> {
        match (content, &data.staging) {
            _ if file.backing.is_none()
                || !(1..=FILL_PAGES_UP_TO).contains(&content.size())
                || self.page_filler.get().is_none() =>
            {
                None
            }
            (Content::Inline(bytes), _) => Some(bytes.clone()),
            (_, Some(staging)) => staging
                .read(0, content.size() as usize)
                .ok()
                .filter(|bytes| bytes.len() as u64 == content.size()),
            (_, None) => None,
        }
    }

    /// Commits `node` at the inode's path, based on the versions `data`'s changes
    /// started from, and records the version the kernel now has. `None` (nothing
    /// committed) if the path went away, or a peer made it something else than a file.
    fn commit_publish(
        &self,
        ino: u64,
        file: &OpenFile,
        data: &FileData,
        node: &Node,
        fill: Option<Vec<u8>>,
        durability: Durability,
    ) -> FsResult<Option<RelPath>> {
        let started_from = data
            .staged()
            .map(|s| s.started_from.clone())
            .unwrap_or_default();
        let mut tx = self.store.transaction();
        let (path, pending) = {
            let tables = self.tables();
            let inode = tables.inodes.get(&ino).ok_or(Errno::ENOENT)?;
            (inode.path().cloned(), inode.is_pending())
        };
        debug_assert!(
            !pending || data.committed_meta.is_none(),
            "a pending file has no committed version"
        );
        let Some(path) = path else {
            return Ok(None); // unlinked while open: its writes die with it
        };
        if !pending && !matches!(tx.get(&path)?, Some(n) if n.meta.kind == Kind::File) {
            return Ok(None);
        }
        tx.put_based(path.clone(), node.clone(), started_from);
        if pending {
            touch_parent(&mut tx, &path, node.meta.ctime)?;
        }
        let mut tables = self.tables();
        tx.commit(now_ms(), durability)?;
        let tag = tag_of(&node.meta, node.content.size());
        *file.tag.lock() = Some(tag);
        if let Some(inode) = tables.inodes.get_mut(&ino) {
            inode.committed();
            if file.backing.is_none() {
                // The kernel's pages are our own writes: this version. (Passthrough
                // writes went to the backing file; the pages, if any, are older.)
                inode.cache_tag = Some(tag);
            }
            inode.attr_tag = Some(tag);
            if let Some(bytes) = &fill {
                self.fill_pages(ino, bytes);
                inode.cache_tag = Some(tag);
            }
        }
        Ok(Some(path))
    }

    /// The file reads the version just committed at `path`, and is clean, unless
    /// writers can still write behind our back through passthrough (or did while the
    /// content was read): then it stays dirty, so that the next publish looks again.
    fn apply_published(
        &self,
        ino: u64,
        file: &OpenFile,
        data: &mut FileData,
        (node, pin): (Node, PinGuard),
        read_at: Option<Stamp>,
        path: &RelPath,
    ) -> FsResult<()> {
        if file.backing.is_none() && self.passthrough_enabled() && data.staged_on_disk() {
            // This staging file becomes the local copy the next open reads through
            // passthrough, and that open drops the kernel's copy of the pages written
            // through us: dropped now, away from the opener (len 0: to the end).
            let dropped_to = data.staged().map_or(0, |s| s.pages_dropped_to);
            self.drop_pages(ino, dropped_to, 0);
        }
        data.base = ContentReader::new(node.content);
        data._pin = pin;
        data.committed_meta = Some(node.meta.clone());
        if let Some(before) = read_at {
            data.stamp = Some(before);
        }
        // Through passthrough, writers still open keep writing behind the daemon's back:
        // the file stays dirty, from the version just committed. Read before the state
        // changes, so that on an error it stays dirty and the next publish retries.
        let still_written =
            file.backing.is_some() && (data.writers > 0 || data.kernel_written().is_some());
        let started_from = match still_written {
            true => Some(self.head_dots(path)?),
            false => None,
        };
        file.set_writes(data, Writes::Clean);
        if let Some(started_from) = started_from {
            file.set_writes(data, Writes::Dirty(Staged::new(node.meta, started_from)));
        }
        Ok(())
    }

    /// Stores `bytes` as the kernel's pages of `ino`; if that fails part-way, the pages
    /// are dropped instead.
    fn fill_pages(&self, ino: u64, bytes: &[u8]) {
        let filled = match self.page_filler.get() {
            Some(fill) => fill(ino, bytes),
            None => return,
        };
        if let Err(e) = filled {
            tracing::debug!(ino, error = %e, "handing the kernel a published file's pages failed");
            self.drop_pages(ino, 0, 0);
        }
    }

    /// Publishes every file with unpublished changes (at unmount).
    pub fn publish_all(&self) {
        self.owed.settle();
        let inos: Vec<u64> = self
            .tables()
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
