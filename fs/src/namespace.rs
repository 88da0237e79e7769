//! Calls that change or read the namespace: lookup, getattr, create, mkdir, symlink,
//! unlink, rmdir, rename, readdir.

use depfs_proto::{Content, Dot, Kind, Meta, Node, RelPath, Timespec};
use depfs_store::{Durability, Tx};

use crate::attr::Attr;
use crate::depfs::DepFs;
use crate::error::{Errno, FsResult};
use crate::open_file::{CacheMode, OpenFile};
use crate::tables::{Handle, Inode, Place, Tables, ROOT_INO};
use crate::types::{new_meta, now, now_ms, tag_of, Caller};
use std::sync::Arc;

/// `d_ino` for a directory entry whose inode the kernel has not looked up yet
/// (libfuse's `FUSE_UNKNOWN_INO`).
const UNKNOWN_INO: u64 = 0xffff_ffff;

/// Rename flags (Linux values).
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

impl DepFs {
    /// `lookup`: the attributes of `parent/name`, counting one kernel reference.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        let path = self.child_path(parent, name)?;
        let mut tables = self.tables();
        if let Some(ino) = tables.pending_at(&path) {
            let inode = tables.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
            inode.lookups += 1;
            let file = inode.file.clone();
            drop(tables);
            return file.and_then(|f| f.staged_attr(ino)).ok_or(Errno::ENOENT);
        }
        let node = self.store.get(&path)?.ok_or(Errno::ENOENT)?;
        let ino = tables.intern(&path, node.meta.kind);
        let file = match tables.inodes.get_mut(&ino) {
            Some(inode) => {
                inode.attr_tag = Some(tag_of(&node.meta, node.size()));
                inode.file.clone()
            }
            None => None,
        };
        drop(tables);
        let size = node.size();
        Ok(file
            .and_then(|f| {
                f.staged_attr(ino)
                    .or_else(|| f.attr_if_reading_other(ino, &node.content))
            })
            .unwrap_or_else(|| Attr::new(ino, node.meta, size)))
    }

    /// `getattr`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let mut tables = self.tables();
        let inode = tables.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let file = inode.file.clone();
        let mut current = None;
        let base = match &inode.place {
            Place::Live(path) => {
                let node = self.store.get(path)?.ok_or(Errno::ENOENT)?;
                let size = node.size();
                inode.attr_tag = Some(tag_of(&node.meta, size));
                let attr = Attr::new(ino, node.meta, size);
                current = Some(node.content);
                Some(attr)
            }
            Place::Pending(_) => None,
            Place::Detached(meta) => meta.clone().map(|meta| Attr::new(ino, meta, 0).unlinked()),
        };
        let unlinked = inode.path().is_none();
        drop(tables);
        if let Some(file) = file {
            if let Some(attr) = file.staged_attr(ino) {
                return Ok(if unlinked { attr.unlinked() } else { attr });
            }
            if unlinked {
                // Unlinked or replaced while open: what the open file has.
                if let Some(attr) = file.attr(ino) {
                    return Ok(attr.unlinked());
                }
            }
            // Changed by a peer, not yet detached from this inode: what the open file
            // reads. (`attr_tag` keeps the store's version, so opens meanwhile bypass
            // the page cache.)
            if let Some(attr) = current
                .as_ref()
                .and_then(|c| file.attr_if_reading_other(ino, c))
            {
                return Ok(attr);
            }
        }
        base.ok_or(Errno::ENOENT)
    }

    /// `readlink`.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let path = self.tables().path(ino).cloned().ok_or(Errno::ENOENT)?;
        let node = self.store.get(&path)?.ok_or(Errno::ENOENT)?;
        match (node.meta.kind, node.content) {
            (Kind::Symlink, Content::Inline(target)) => Ok(target),
            _ => Err(Errno::EINVAL),
        }
    }

    /// `mkdir`.
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> FsResult<Attr> {
        self.make_entry(parent, name, Kind::Dir, mode, Content::empty(), caller)
    }

    /// `mknod` for regular files (others are refused with `EPERM`: devices, FIFOs and
    /// sockets mean nothing on another node). Unlike `create`, it commits at once: there
    /// is no open handle whose close would publish it.
    pub fn mknod(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> FsResult<Attr> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(Errno::EPERM);
        }
        self.make_entry(parent, name, Kind::File, mode, Content::empty(), caller)
    }

    /// `symlink`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> FsResult<Attr> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() > depfs_proto::limits::MAX_SYMLINK_LEN {
            return Err(Errno::ENAMETOOLONG);
        }
        self.make_entry(
            parent,
            name,
            Kind::Symlink,
            0o777,
            Content::Inline(target.to_vec()),
            caller,
        )
    }

    fn make_entry(
        &self,
        parent: u64,
        name: &[u8],
        kind: Kind,
        mode: u32,
        content: Content,
        caller: Caller,
    ) -> FsResult<Attr> {
        self.check_writable()?;
        self.owed.settle();
        let path = self.child_path(parent, name)?;
        let mut tx = self.store.transaction();
        let parent_meta = self.check_free(&tx, &path)?;
        let meta = new_meta(kind, mode, caller, &parent_meta);
        let size = content.size();
        tx.put(
            path.clone(),
            Node {
                meta: meta.clone(),
                content,
            },
        );
        touch_parent(&mut tx, &path, meta.mtime)?;
        let ino = self.commit(tx, |tables| tables.intern(&path, kind))?;
        Ok(Attr::new(ino, meta, size))
    }

    /// Checks that `path` can be created: its parent is a directory and nothing is there.
    /// Returns the parent's attributes.
    fn check_free(&self, tx: &Tx<'_>, path: &RelPath) -> FsResult<depfs_proto::Meta> {
        let parent_path = path.parent().ok_or(Errno::EEXIST)?;
        let parent = tx.get(&parent_path)?.ok_or(Errno::ENOENT)?;
        if parent.meta.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if tx.get(path)?.is_some() || self.tables().pending_at(path).is_some() {
            return Err(Errno::EEXIST);
        }
        Ok(parent.meta)
    }

    /// `create`: a new regular file, open. It stays pending (visible only here) until
    /// its first close or fsync publishes it with its content — whatever the handle's
    /// access mode: a file created read-only is published, empty, at its close.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> FsResult<(Attr, u64, CacheMode)> {
        self.check_writable()?;
        self.owed.settle();
        let path = self.child_path(parent, name)?;
        let tx = self.store.transaction();
        let parent_meta = self.check_free(&tx, &path)?;
        let meta = new_meta(Kind::File, mode, caller, &parent_meta);
        let started_from = self.head_dots(&path)?;
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let file = self.new_file(meta.clone(), started_from, u32::from(writable));
        let cache = file.cache_mode_at_create();
        let mut tables = self.tables();
        let ino = tables.insert_new(
            &path,
            Inode {
                lookups: 1,
                open: 1,
                file: Some(file),
                ..Inode::new(Place::Pending(path.clone()), Kind::File)
            },
        );
        let fh = tables.new_handle(Handle::File {
            ino,
            writable,
            flushed: false,
        });
        drop(tables);
        drop(tx);
        Ok((Attr::new(ino, meta, 0), fh, cache))
    }

    /// The open file of a new file: staged in a file of its own served through
    /// passthrough when that is on, else in memory through the daemon.
    fn new_file(&self, meta: Meta, started_from: Vec<Dot>, writers: u32) -> Arc<OpenFile> {
        if self.passthrough_enabled() {
            let on_disk = tempfile::tempfile_in(&self.config.staging_dir).and_then(|file| {
                OpenFile::pending_on_disk(meta.clone(), started_from.clone(), writers, file)
            });
            match on_disk {
                Ok(file) => return file,
                Err(e) => {
                    tracing::warn!(error = %e, "no staging file for a new file; writing through the daemon")
                }
            }
        }
        OpenFile::pending(meta, started_from, writers)
    }

    /// `unlink`.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        self.owed.settle();
        let path = self.child_path(parent, name)?;
        let mut tx = self.store.transaction();
        {
            let mut tables = self.tables();
            if tables.pending_at(&path).is_some() {
                // Never published: it just goes away (open handles keep it).
                tables.detach(&path, None);
                return Ok(());
            }
        }
        let node = tx.get(&path)?.ok_or(Errno::ENOENT)?;
        if node.meta.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        tx.delete(path.clone());
        touch_parent(&mut tx, &path, now())?;
        self.commit(tx, |tables| tables.detach(&path, Some(node.meta)))
    }

    /// `rmdir`.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        self.owed.settle();
        let path = self.child_path(parent, name)?;
        let mut tx = self.store.transaction();
        let node = tx.get(&path)?.ok_or(Errno::ENOENT)?;
        if node.meta.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if tx.has_children(&path)? || !self.tables().pending_children(&path).is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        tx.delete(path.clone());
        touch_parent(&mut tx, &path, now())?;
        self.commit(tx, |tables| tables.detach(&path, Some(node.meta)))
    }

    /// `rename`, with Linux's `RENAME_NOREPLACE` and `RENAME_EXCHANGE` flags. The whole
    /// rename (a directory with everything below it, or both sides of an exchange) is
    /// one change, so other nodes see it in one step.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable()?;
        self.owed.settle();
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(Errno::EINVAL);
        }
        let src = self.child_path(parent, name)?;
        let dst = self.child_path(new_parent, new_name)?;

        self.publish_pending_under(&[&src, &dst])?;

        let mut tx = self.store.transaction();
        let src_node = tx.get(&src)?.ok_or(Errno::ENOENT)?;
        let dst_parent = dst.parent().ok_or(Errno::EBUSY)?;
        match tx.get(&dst_parent)? {
            Some(p) if p.meta.kind == Kind::Dir => {}
            Some(_) => return Err(Errno::ENOTDIR),
            None => return Err(Errno::ENOENT),
        }
        if src == dst {
            return Ok(());
        }
        if src.is_ancestor_of(&dst) {
            return Err(Errno::EINVAL);
        }
        let dst_node = tx.get(&dst)?;
        if flags & RENAME_EXCHANGE != 0 {
            let dst_node = dst_node.ok_or(Errno::ENOENT)?;
            return self.exchange(tx, (&src, src_node), (&dst, dst_node));
        }
        if let Some(existing) = &dst_node {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Errno::EEXIST);
            }
            check_replaceable(&tx, &src_node, existing, &dst)?;
        }
        let t = now();
        let tree = subtree(&tx, &src, src_node)?;
        for (path, _) in &tree {
            tx.delete(path.clone());
        }
        move_tree(&mut tx, &tree, &src, &dst, t)?;
        touch_parent(&mut tx, &src, t)?;
        touch_parent(&mut tx, &dst, t)?;
        let replaced = dst_node.map(|n| n.meta);
        self.commit(tx, |tables| {
            if let Some(meta) = replaced {
                tables.detach(&dst, Some(meta));
            }
            tables.rebase(&src, &dst);
        })
    }

    /// A rename publishes: files created here under `paths` and still open are
    /// committed first, so the renamed tree holds them.
    fn publish_pending_under(&self, paths: &[&RelPath]) -> FsResult<()> {
        let pending: Vec<u64> = {
            let tables = self.tables();
            paths.iter().flat_map(|p| tables.pending_under(p)).collect()
        };
        for ino in pending {
            self.publish(ino, Durability::Process)?;
        }
        Ok(())
    }

    /// `RENAME_EXCHANGE`: both trees swap places in one change.
    fn exchange(
        &self,
        mut tx: Tx<'_>,
        (src, src_node): (&RelPath, Node),
        (dst, dst_node): (&RelPath, Node),
    ) -> FsResult<()> {
        if dst.is_ancestor_of(src) {
            return Err(Errno::EINVAL);
        }
        let t = now();
        let src_tree = subtree(&tx, src, src_node)?;
        let dst_tree = subtree(&tx, dst, dst_node)?;
        for (path, _) in src_tree.iter().chain(&dst_tree) {
            tx.delete(path.clone());
        }
        move_tree(&mut tx, &src_tree, src, dst, t)?;
        move_tree(&mut tx, &dst_tree, dst, src, t)?;
        touch_parent(&mut tx, src, t)?;
        touch_parent(&mut tx, dst, t)?;
        self.commit(tx, |tables| tables.exchange(src, dst))
    }

    /// `opendir`: takes a snapshot of the listing, served by `readdir`.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let mut tables = self.tables();
        let path = tables.path(ino).cloned().ok_or(Errno::ENOENT)?;
        let parent_ino = path
            .parent()
            .and_then(|p| tables.by_path.get(&p).copied())
            .unwrap_or(ROOT_INO);
        let mut entries = vec![
            (ino, Kind::Dir, b".".to_vec()),
            (parent_ino, Kind::Dir, b"..".to_vec()),
        ];
        let mut names = std::collections::HashSet::new();
        for child in self.store.list(&path)? {
            let child_ino = path
                .join(&child.name)
                .ok()
                .and_then(|p| tables.by_path.get(&p).copied())
                .unwrap_or(UNKNOWN_INO);
            names.insert(child.name.clone());
            entries.push((child_ino, child.node.meta.kind, child.name));
        }
        for (child_ino, name) in tables.pending_children(&path) {
            if names.insert(name.clone()) {
                entries.push((child_ino, Kind::File, name));
            }
        }
        Ok(tables.new_handle(Handle::Dir { entries }))
    }

    /// `readdir`: entries of the snapshot from index `offset` on, each with the offset
    /// of the next one.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, Kind, &[u8]) -> bool,
    ) -> FsResult<()> {
        let tables = self.tables();
        let Some(Handle::Dir { entries }) = tables.handles.get(&fh) else {
            return Err(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if add(*ino, i as u64 + 1, *kind, name) {
                break;
            }
        }
        Ok(())
    }

    /// `releasedir`.
    pub fn releasedir(&self, fh: u64) {
        self.tables().handles.remove(&fh);
    }

    /// `forget`: the kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.tables().forget(ino, n);
    }

    /// Commits `tx` and updates the inode tables in the same critical section, so a
    /// concurrent lookup never sees the new tree with the old table.
    pub(crate) fn commit<T>(
        &self,
        tx: Tx<'_>,
        update: impl FnOnce(&mut Tables) -> T,
    ) -> FsResult<T> {
        let mut tables = self.tables();
        tx.commit(now_ms(), Durability::Process)?;
        Ok(update(&mut tables))
    }
}

/// A directory entry changed: its parent's mtime and ctime move to `t`, as on Linux.
pub(crate) fn touch_parent(tx: &mut Tx<'_>, path: &RelPath, t: Timespec) -> FsResult<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    if let Some(mut node) = tx.get(&parent)? {
        if node.meta.kind == Kind::Dir {
            node.meta.mtime = t;
            node.meta.ctime = t;
            tx.put(parent, node);
        }
    }
    Ok(())
}

/// `root` and everything below it.
fn subtree(tx: &Tx<'_>, root: &RelPath, node: Node) -> FsResult<Vec<(RelPath, Node)>> {
    let mut out = Vec::new();
    let is_dir = node.meta.kind == Kind::Dir;
    out.push((root.clone(), node));
    if is_dir {
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for child in tx.list(&dir)? {
                let path = dir.join(&child.name)?;
                if child.node.meta.kind == Kind::Dir {
                    stack.push(path.clone());
                }
                out.push((path, child.node));
            }
        }
    }
    Ok(out)
}

/// Puts the entries of `tree` (rooted at `from`) under `to`. The moved root's ctime
/// changes, as on Linux.
fn move_tree(
    tx: &mut Tx<'_>,
    tree: &[(RelPath, Node)],
    from: &RelPath,
    to: &RelPath,
    t: Timespec,
) -> FsResult<()> {
    for (path, node) in tree {
        let new_path = from.rebase(path, to).ok_or(Errno::ENAMETOOLONG)?;
        let mut node = node.clone();
        if path == from {
            node.meta.ctime = t;
        }
        tx.put(new_path, node);
    }
    Ok(())
}

/// A kernel cache entry to drop because a peer changed the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The name `name` in directory `parent` (its inode may be another now, or none).
    Entry {
        /// The directory's inode.
        parent: u64,
        /// The name.
        name: Vec<u8>,
    },
    /// The attributes and cached pages of an inode.
    Inode(u64),
}

impl DepFs {
    /// The kernel dropped its cached pages and attributes of `ino` (after an
    /// [`Invalidation::Inode`] was sent): the next open may use the page cache again.
    pub fn kernel_cache_dropped(&self, ino: u64) {
        if let Some(inode) = self.tables().inodes.get_mut(&ino) {
            inode.cache_tag = None;
            inode.attr_tag = None;
        }
    }

    /// Paths changed because of other nodes: updates the inode table and returns the
    /// kernel caches to invalidate (to be sent from a thread that is not serving a
    /// request).
    ///
    /// An open file whose content changed keeps reading the version it opened (its
    /// chunks are pinned) and new opens see the new version, so a reader never sees a
    /// mix. A file with unpublished local writes keeps them; when they are published,
    /// the version from the peer stays as the winner or as a conflict.
    pub fn remote_changed(&self, paths: &[RelPath]) -> Vec<Invalidation> {
        let mut out = Vec::new();
        let mut tables = self.tables();
        for path in paths {
            let parent = path.parent().and_then(|p| tables.by_path.get(&p).copied());
            if let Some(&ino) = tables.by_path.get(path) {
                let Some(inode) = tables.inodes.get(&ino) else {
                    continue;
                };
                let dirty = inode
                    .file
                    .as_ref()
                    .is_some_and(|f| f.dirty.load(std::sync::atomic::Ordering::Acquire));
                if inode.is_pending() || dirty {
                    continue;
                }
                let now = match self.store.get(path) {
                    Ok(now) => now,
                    Err(e) => {
                        tracing::error!(%path, error = %e, "cannot read a path changed by a peer");
                        None
                    }
                };
                let same_kind = now.as_ref().is_some_and(|n| n.meta.kind == inode.kind);
                if same_kind && inode.file.is_none() {
                    out.push(Invalidation::Inode(ino));
                } else {
                    // A live inode has no last attributes of its own to keep.
                    tables.detach(path, None);
                    if let Some(parent) = parent {
                        out.push(Invalidation::Entry {
                            parent,
                            name: path.name().to_vec(),
                        });
                    }
                }
            } else if let Some(parent) = parent {
                out.push(Invalidation::Entry {
                    parent,
                    name: path.name().to_vec(),
                });
            }
            if let Some(parent) = parent {
                out.push(Invalidation::Inode(parent));
            }
        }
        out.dedup();
        out
    }
}

/// What rename(2) allows to replace: a file by a file, a directory by an empty
/// directory.
fn check_replaceable(tx: &Tx<'_>, src: &Node, existing: &Node, dst: &RelPath) -> FsResult<()> {
    match (src.meta.kind == Kind::Dir, existing.meta.kind == Kind::Dir) {
        (true, false) => Err(Errno::ENOTDIR),
        (false, true) => Err(Errno::EISDIR),
        (true, true) if tx.has_children(dst)? => Err(Errno::ENOTEMPTY),
        _ => Ok(()),
    }
}
