//! Small shared types and helpers: what a call brings (its caller, attribute changes),
//! what it returns (`statfs` figures, page ranges to drop), and the clock. Depends on
//! nothing else in this crate.

use std::time::{SystemTime, UNIX_EPOCH};

use depfs_proto::{Meta, Timespec};

/// Pages of a file the kernel can drop from its cache: inode, offset and length in
/// bytes (0: to the end of the file, as FUSE's inode invalidation reads it). Sent while a
/// large file is written through the daemon, whose staging file holds the same bytes
/// (see `DepFs::write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageDrop {
    /// The inode.
    pub ino: u64,
    /// First byte.
    pub offset: u64,
    /// Bytes; 0 means to the end of the file.
    pub len: u64,
}

/// Attribute changes of a `setattr` call.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend).
    pub size: Option<u64>,
    /// New modification time.
    pub mtime: Option<Timespec>,
}

/// Who is making a call (for the owner of new entries).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The caller's user id.
    pub uid: u32,
    /// The caller's group id.
    pub gid: u32,
}

/// `statfs` figures.
#[derive(Debug, Clone, Copy)]
pub struct Statfs {
    /// Blocks of the data_dir's filesystem.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks free to unprivileged users.
    pub bavail: u64,
    /// Inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size in bytes.
    pub bsize: u32,
    /// The longest name depfs accepts.
    pub namelen: u32,
}

/// Identifies a committed version of a file's content for the kernel page cache.
pub(crate) type VersionTag = (depfs_proto::Timespec, depfs_proto::Timespec, u64);

/// The version tag of content of `size` bytes with attributes `meta`.
pub(crate) fn tag_of(meta: &Meta, size: u64) -> VersionTag {
    (meta.mtime, meta.ctime, size)
}

/// The wall clock now, as a timespec.
pub(crate) fn now() -> Timespec {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timespec::new(d.as_secs() as i64, d.subsec_nanos())
}

/// The wall clock in milliseconds, for HLC ticks.
pub(crate) use depfs_store::sys::now_ms;

/// Attributes for a new entry made by `caller` in a directory with attributes `parent`:
/// setgid directories pass their group on, as on Linux.
pub(crate) fn new_meta(kind: depfs_proto::Kind, perm: u32, caller: Caller, parent: &Meta) -> Meta {
    let t = now();
    let gid = if parent.perm & libc::S_ISGID != 0 {
        parent.gid
    } else {
        caller.gid
    };
    let mut perm = perm & 0o7777;
    if kind == depfs_proto::Kind::Dir && parent.perm & libc::S_ISGID != 0 {
        perm |= libc::S_ISGID;
    }
    Meta {
        kind,
        perm,
        uid: caller.uid,
        gid,
        mtime: t,
        ctime: t,
    }
}
