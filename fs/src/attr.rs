//! Attributes as the kernel sees them.

use depfs_proto::{Kind, Meta};

/// What `stat` shows for one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Kind and attributes.
    pub meta: Meta,
    /// Size in bytes.
    pub size: u64,
    /// Link count: 0 for an unlinked open file.
    pub nlink: u32,
}

impl Attr {
    pub(crate) fn new(ino: u64, meta: Meta, size: u64) -> Self {
        let nlink = if meta.kind == Kind::Dir { 2 } else { 1 };
        Attr {
            ino,
            meta,
            size,
            nlink,
        }
    }

    pub(crate) fn unlinked(mut self) -> Self {
        self.nlink = 0;
        self
    }
}
