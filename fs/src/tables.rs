//! Inode and file-handle tables.
//!
//! depfs entries are identified by path; the kernel speaks inode numbers. An inode here is
//! a path the kernel has looked up (or a file still open after its path went away).
//! Inode numbers are never reused within a mount, so no generation numbers are needed.

use std::collections::HashMap;
use std::sync::Arc;

use depfs_proto::{Kind, Meta, RelPath};

use crate::open_file::OpenFile;
use crate::types::VersionTag;

/// The root's inode number (FUSE's fixed `FUSE_ROOT_ID`).
pub(crate) const ROOT_INO: u64 = 1;

/// Where an inode's entry is. One value rather than separate flags, so that "has a
/// path", "is pending" and "was detached" cannot disagree: an inode is created
/// `Pending` (by `create`) or `Live` (by a lookup), a pending one becomes `Live` when its
/// first publish commits it, and either becomes `Detached` for good when its path goes
/// away (it never gets one back: a later lookup of that path makes a new inode).
#[derive(Debug, Clone)]
pub(crate) enum Place {
    /// Created here and not yet committed: the entry exists only in this table until
    /// its first close publishes it with its content.
    Pending(RelPath),
    /// Committed at this path.
    Live(RelPath),
    /// Unlinked or replaced while open or looked up; the entry's last attributes if
    /// they were known.
    Detached(Option<Meta>),
}

#[derive(Debug)]
pub(crate) struct Inode {
    /// Where the entry is.
    pub(crate) place: Place,
    pub(crate) kind: Kind,
    /// The kernel's lookup count (FUSE `nlookup`).
    pub(crate) lookups: u64,
    /// Open file handles.
    pub(crate) open: u32,
    /// State shared by the open handles of a regular file.
    pub(crate) file: Option<Arc<OpenFile>>,
    /// The version of the content whose pages the kernel may hold for this inode (see
    /// `DepFs::open`); `None` when it holds none.
    pub(crate) cache_tag: Option<VersionTag>,
    /// The version of the attributes (size above all) last given to the kernel.
    pub(crate) attr_tag: Option<VersionTag>,
    /// Its last handle was released and its file is on its way into the local copies
    /// (see `DepFs::release`): an `open` meanwhile waits for it instead of missing it.
    pub(crate) copy_arriving: bool,
    /// How many of its `open` handles are `flushed`.
    pub(crate) flushed: u32,
}

impl Inode {
    /// An inode with no lookups, handles or file yet.
    pub(crate) fn new(place: Place, kind: Kind) -> Self {
        Inode {
            place,
            kind,
            lookups: 0,
            open: 0,
            file: None,
            cache_tag: None,
            attr_tag: None,
            copy_arriving: false,
            flushed: 0,
        }
    }

    /// Where the entry is, unless it was detached.
    pub(crate) fn path(&self) -> Option<&RelPath> {
        match &self.place {
            Place::Pending(path) | Place::Live(path) => Some(path),
            Place::Detached(_) => None,
        }
    }

    /// Created here and not committed yet.
    pub(crate) fn is_pending(&self) -> bool {
        matches!(self.place, Place::Pending(_))
    }

    /// The last attributes of a detached entry, if known.
    pub(crate) fn detached_meta_mut(&mut self) -> Option<&mut Meta> {
        match &mut self.place {
            Place::Detached(meta) => meta.as_mut(),
            Place::Pending(_) | Place::Live(_) => None,
        }
    }

    /// Its first publish committed it: a pending entry is live from now on.
    pub(crate) fn committed(&mut self) {
        if let Place::Pending(path) = &self.place {
            self.place = Place::Live(path.clone());
        }
    }

    /// Its entry moved to `to` (a rename), pending or live as before.
    fn moved_to(&mut self, to: RelPath) {
        debug_assert!(
            self.path().is_some(),
            "a detached inode has no by_path entry to move"
        );
        match &mut self.place {
            Place::Pending(path) | Place::Live(path) => *path = to,
            Place::Detached(_) => self.place = Place::Live(to),
        }
    }

    /// Checks (in debug builds) what holds whenever the tables are unlocked: `flushed`
    /// counts a subset of the `open` handles, and a pending inode has its file (the
    /// only copy of its content) until its last handle goes, which detaches it.
    pub(crate) fn check(&self) {
        debug_assert!(
            self.flushed <= self.open,
            "flushed handles ({}) beyond open ones ({})",
            self.flushed,
            self.open
        );
        debug_assert!(
            !self.is_pending() || self.file.is_some(),
            "a pending inode without its file"
        );
    }
}

#[derive(Debug)]
pub(crate) enum Handle {
    File {
        ino: u64,
        writable: bool,
        /// Its descriptor was closed (`flush`) and it was not used since: its release
        /// is most likely on its way (see `DepFs::open`).
        flushed: bool,
    },
    Dir {
        /// The listing taken at `opendir`: (inode number hint, kind, name).
        entries: Vec<(u64, Kind, Vec<u8>)>,
    },
}

#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) inodes: HashMap<u64, Inode>,
    pub(crate) by_path: HashMap<RelPath, u64>,
    pub(crate) handles: HashMap<u64, Handle>,
    next_ino: u64,
    next_fh: u64,
}

impl Tables {
    pub(crate) fn new() -> Self {
        let mut inodes = HashMap::new();
        let mut root = Inode::new(Place::Live(RelPath::root()), Kind::Dir);
        root.lookups = 1;
        inodes.insert(ROOT_INO, root);
        let mut by_path = HashMap::new();
        by_path.insert(RelPath::root(), ROOT_INO);
        Tables {
            inodes,
            by_path,
            handles: HashMap::new(),
            next_ino: ROOT_INO + 1,
            next_fh: 1,
        }
    }

    /// The path of a live inode.
    pub(crate) fn path(&self, ino: u64) -> Option<&RelPath> {
        self.inodes.get(&ino).and_then(Inode::path)
    }

    /// The inode for `path`, created if needed, with its lookup count raised by one.
    pub(crate) fn intern(&mut self, path: &RelPath, kind: Kind) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            if let Some(inode) = self.inodes.get_mut(&ino) {
                if inode.kind == kind {
                    inode.lookups += 1;
                    return ino;
                }
            }
            // The path now holds another kind of entry: it is a different inode.
            self.detach(path, None);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut inode = Inode::new(Place::Live(path.clone()), kind);
        inode.lookups = 1;
        self.inodes.insert(ino, inode);
        self.by_path.insert(path.clone(), ino);
        ino
    }

    /// Allocates an inode for a newly created entry.
    pub(crate) fn insert_new(&mut self, path: &RelPath, inode: Inode) -> u64 {
        self.detach(path, None);
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        self.by_path.insert(path.clone(), ino);
        ino
    }

    /// The entry at `path` is gone (unlinked, or replaced by a rename): its inode keeps
    /// living for open handles and outstanding lookups, with the given last attributes.
    pub(crate) fn detach(&mut self, path: &RelPath, last: Option<Meta>) {
        if let Some(ino) = self.by_path.remove(path) {
            if let Some(inode) = self.inodes.get_mut(&ino) {
                inode.place = match std::mem::replace(&mut inode.place, Place::Detached(None)) {
                    Place::Detached(Some(meta)) => Place::Detached(Some(meta)),
                    _ => Place::Detached(last),
                };
            }
            debug_assert!(
                !self.by_path.values().any(|&other| other == ino),
                "a detached inode is still reachable by a path"
            );
            self.maybe_drop(ino);
        }
    }

    /// Moves the inodes of `from` and everything below it to `to`.
    pub(crate) fn rebase(&mut self, from: &RelPath, to: &RelPath) {
        let moved: Vec<(RelPath, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| *p == from || from.is_ancestor_of(p))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, _) in &moved {
            self.by_path.remove(old);
        }
        for (old, ino) in moved {
            if let Some(new) = from.rebase(&old, to) {
                if let Some(inode) = self.inodes.get_mut(&ino) {
                    inode.moved_to(new.clone());
                }
                self.by_path.insert(new, ino);
            }
        }
    }

    /// Drops the kernel's `n` lookups of `ino`.
    pub(crate) fn forget(&mut self, ino: u64, n: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(n);
        }
        self.maybe_drop(ino);
    }

    /// Removes an inode nobody refers to any more.
    pub(crate) fn maybe_drop(&mut self, ino: u64) {
        if ino == ROOT_INO {
            return;
        }
        let unused = self
            .inodes
            .get(&ino)
            .is_some_and(|i| i.lookups == 0 && i.open == 0 && !i.is_pending());
        if unused {
            if let Some(inode) = self.inodes.remove(&ino) {
                if let Some(path) = inode.path() {
                    if self.by_path.get(path) == Some(&ino) {
                        self.by_path.remove(path);
                    }
                }
            }
        }
    }

    pub(crate) fn new_handle(&mut self, handle: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, handle);
        fh
    }

    /// Pending (not yet committed) files directly inside `dir`: (ino, name).
    pub(crate) fn pending_children(&self, dir: &RelPath) -> Vec<(u64, Vec<u8>)> {
        self.inodes
            .iter()
            .filter_map(|(&ino, i)| match &i.place {
                Place::Pending(path) if path.parent().as_ref() == Some(dir) => {
                    Some((ino, path.name().to_vec()))
                }
                _ => None,
            })
            .collect()
    }

    /// Pending files at or below `dir`.
    pub(crate) fn pending_under(&self, dir: &RelPath) -> Vec<u64> {
        self.inodes
            .iter()
            .filter(
                |(_, i)| matches!(&i.place, Place::Pending(p) if p == dir || dir.is_ancestor_of(p)),
            )
            .map(|(&ino, _)| ino)
            .collect()
    }

    /// The pending inode at `path`, if any.
    pub(crate) fn pending_at(&self, path: &RelPath) -> Option<u64> {
        let &ino = self.by_path.get(path)?;
        self.inodes
            .get(&ino)
            .filter(|i| i.is_pending())
            .map(|_| ino)
    }
}

impl Tables {
    /// Swaps the inodes at and below `a` with those at and below `b` (`RENAME_EXCHANGE`).
    pub(crate) fn exchange(&mut self, a: &RelPath, b: &RelPath) {
        let take = |t: &mut Tables, root: &RelPath| -> Vec<(RelPath, u64)> {
            let moved: Vec<(RelPath, u64)> = t
                .by_path
                .iter()
                .filter(|(p, _)| *p == root || root.is_ancestor_of(p))
                .map(|(p, &i)| (p.clone(), i))
                .collect();
            for (p, _) in &moved {
                t.by_path.remove(p);
            }
            moved
        };
        let under_a = take(self, a);
        let under_b = take(self, b);
        for (list, from, to) in [(under_a, a, b), (under_b, b, a)] {
            for (old, ino) in list {
                if let Some(new) = from.rebase(&old, to) {
                    if let Some(inode) = self.inodes.get_mut(&ino) {
                        inode.moved_to(new.clone());
                    }
                    self.by_path.insert(new, ino);
                }
            }
        }
    }
}
