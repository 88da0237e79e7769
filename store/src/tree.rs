//! Reading the tree.

use depfs_proto::{decode_value, Content, Node, RelPath, Version};
use rocksdb::{Direction, IteratorMode};

use crate::chunks::PinGuard;
use crate::db::cf;
use crate::error::{Result, StoreError};
use crate::keys::*;
use crate::Store;

/// One child of a directory.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// The child's name.
    pub name: Vec<u8>,
    /// Its entry.
    pub node: Node,
}

/// Sizes and counts, for `status` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live entries (including the root).
    pub entries: u64,
    /// Tombstones kept for peers.
    pub tombstones: u64,
    /// Recorded conflicts.
    pub conflicts: u64,
    /// Stored chunks.
    pub chunks: u64,
    /// Log records (changes not yet fully superseded).
    pub log_records: u64,
}

pub(crate) fn decode_version(what: &str, key: &[u8], bytes: &[u8]) -> Result<Version> {
    decode_value(bytes).map_err(|source| StoreError::Corrupt {
        what: format!("{what}/{}", String::from_utf8_lossy(key)),
        source,
    })
}

impl Store {
    /// The live entry at `path`, if any.
    pub fn get(&self, path: &RelPath) -> Result<Option<Node>> {
        Ok(self.get_version(path)?.and_then(|v| match v.state {
            depfs_proto::State::Live(node) => Some(node),
            depfs_proto::State::Deleted => None,
        }))
    }

    /// The winning version at `path` (live entry or tombstone), if any.
    pub fn get_version(&self, path: &RelPath) -> Result<Option<Version>> {
        let db = &self.inner.db;
        let key = path.key();
        if let Some(bytes) = db.get_pinned_cf(cf(db, CF_ENTRIES), &key)? {
            return Ok(Some(decode_version(CF_ENTRIES, &key, &bytes)?));
        }
        match db.get_pinned_cf(cf(db, CF_TOMBSTONES), &key)? {
            Some(bytes) => Ok(Some(decode_version(CF_TOMBSTONES, &key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The live entry at `path` with its chunks pinned, so an open file stays readable
    /// even if the path is overwritten or deleted while it is open.
    pub fn get_pinned(&self, path: &RelPath) -> Result<Option<(Node, PinGuard)>> {
        // Commits hold the pin table while they write, so the entry read here and the
        // chunks it names are consistent.
        let pins = self.inner.pins.lock();
        let node = self.get(path)?;
        drop(pins);
        Ok(node.map(|node| {
            let guard = self.pin(&node.content);
            (node, guard)
        }))
    }

    /// The live children of directory `dir`, in name order.
    pub fn list(&self, dir: &RelPath) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        self.for_each_child(dir, |name, node| {
            out.push(DirEntry {
                name: name.to_vec(),
                node,
            });
            true
        })?;
        Ok(out)
    }

    /// True if `dir` has at least one live child.
    pub fn has_children(&self, dir: &RelPath) -> Result<bool> {
        let mut any = false;
        self.for_each_child(dir, |_, _| {
            any = true;
            false
        })?;
        Ok(any)
    }

    /// Calls `f(name, node)` for each live child until it returns false.
    fn for_each_child(&self, dir: &RelPath, mut f: impl FnMut(&[u8], Node) -> bool) -> Result<()> {
        let db = &self.inner.db;
        let prefix = dir.children_prefix();
        let iter = db.iterator_cf(
            cf(db, CF_ENTRIES),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let version = decode_version(CF_ENTRIES, &key, &value)?;
            if let depfs_proto::State::Live(node) = version.state {
                if !f(&key[prefix.len()..], node) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Every live entry below (not including) `dir`, depth first in key order of each
    /// level. Used to move or check whole subtrees.
    pub fn descendants(&self, dir: &RelPath) -> Result<Vec<(RelPath, Node)>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for child in self.list(&d)? {
                let path = d.join(&child.name).map_err(|_| StoreError::Corrupt {
                    what: format!("entries under {d}"),
                    source: depfs_proto::DecodeError::Empty,
                })?;
                if child.node.meta.kind == depfs_proto::Kind::Dir {
                    stack.push(path.clone());
                }
                out.push((path, child.node));
            }
        }
        Ok(out)
    }

    /// Counts of what the store holds.
    pub fn stats(&self) -> Result<StoreStats> {
        let db = &self.inner.db;
        let count = |name: &str| -> Result<u64> {
            let mut n = 0;
            for item in db.iterator_cf(cf(db, name), IteratorMode::Start) {
                item?;
                n += 1;
            }
            Ok(n)
        };
        Ok(StoreStats {
            entries: count(CF_ENTRIES)?,
            tombstones: count(CF_TOMBSTONES)?,
            conflicts: count(CF_CONFLICTS)?,
            chunks: count(CF_CHUNKS)?,
            log_records: count(CF_LOG)?,
        })
    }

    /// A digest of the visible tree (paths, kinds, modes, owners, mtimes, contents; not
    /// ctimes, which record local arrival): two nodes have converged iff their digests
    /// are equal.
    pub fn tree_digest(&self) -> Result<blake3::Hash> {
        let db = &self.inner.db;
        let mut hasher = blake3::Hasher::new();
        for item in db.iterator_cf(cf(db, CF_ENTRIES), IteratorMode::Start) {
            let (key, value) = item?;
            let version = decode_version(CF_ENTRIES, &key, &value)?;
            let Some(node) = version.node() else { continue };
            hasher.update(&(key.len() as u64).to_le_bytes());
            hasher.update(&key);
            let m = &node.meta;
            hasher.update(
                format!(
                    "{:?} {:o} {} {} {:?}",
                    m.kind, m.perm, m.uid, m.gid, m.mtime
                )
                .as_bytes(),
            );
            match &node.content {
                Content::Inline(bytes) => {
                    hasher.update(blake3::hash(bytes).as_bytes());
                }
                Content::Chunked(chunks) => {
                    for chunk in chunks {
                        hasher.update(&chunk.hash.0);
                    }
                }
            }
        }
        Ok(hasher.finalize())
    }
}
