//! Reading the tree.

use depfs_proto::{Content, Node, RelPath, State, Version};
use rocksdb::IteratorMode;

use crate::chunks::PinGuard;
use crate::db::cf;
use crate::db::decode_node;
use crate::error::{Result, StoreError};
use crate::keys::*;
use crate::merge::decode_heads;
use crate::store::Store;

/// One child of a directory.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// The child's name.
    pub name: Vec<u8>,
    /// Its entry.
    pub node: Node,
}

/// A recorded conflict: a live version that lost and holds something else than what the
/// path shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Where it was written.
    pub path: RelPath,
    /// The losing version (its origin, time and content).
    pub version: Version,
}

/// Sizes and counts, for `status` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Visible entries (including the root).
    pub entries: u64,
    /// Current versions of all paths (live, tombstones and conflicts).
    pub heads: u64,
    /// Tombstones kept for peers.
    pub tombstones: u64,
    /// Recorded conflicts.
    pub conflicts: u64,
    /// Stored chunks.
    pub chunks: u64,
    /// Log records (changes not yet fully superseded).
    pub log_records: u64,
}

impl Store {
    /// The visible entry at `path`, if any.
    pub fn get(&self, path: &RelPath) -> Result<Option<Node>> {
        let db = &self.inner.db;
        let key = path.key();
        match db.get_pinned_cf(cf(db, CF_ENTRIES), &key)? {
            Some(bytes) => Ok(Some(decode_node(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The current versions of `path`: what it shows, tombstones, and conflicts.
    pub fn heads(&self, path: &RelPath) -> Result<Vec<Version>> {
        let db = &self.inner.db;
        let key = path.key();
        match db.get_pinned_cf(cf(db, CF_HEADS), &key)? {
            Some(bytes) => decode_heads(&key, &bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Every recorded conflict, in path order.
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        let db = &self.inner.db;
        let mut out = Vec::new();
        for item in db.iterator_cf(cf(db, CF_CONFLICTS), IteratorMode::Start) {
            let (key, _) = item?;
            let Some(path) = head_key_path(&key) else {
                continue;
            };
            let Some(dot) = parse_log_key(&key[heads_prefix(&path).len()..]) else {
                continue;
            };
            if let Some(version) = self.heads(&path)?.into_iter().find(|h| h.dot == dot) {
                out.push(Conflict { path, version });
            }
        }
        Ok(out)
    }

    /// The visible entry at `path` with its chunks pinned, so an open file stays readable
    /// even if the path is overwritten or deleted while it is open.
    pub fn get_pinned(&self, path: &RelPath) -> Result<Option<(Node, PinGuard)>> {
        // Commits hold the pin table while they write, so the entry read here and the
        // chunks it names are consistent.
        // The pins are taken before the table is let go: in between, a commit could
        // drop the last reference to a chunk of this content and delete it.
        let mut pins = self.inner.pins.lock();
        let Some(node) = self.get(path)? else {
            return Ok(None);
        };
        let hashes = node.content.chunks().iter().map(|c| c.hash).collect();
        let guard = self.pin_under(&mut pins, hashes);
        Ok(Some((node, guard)))
    }

    /// The visible children of directory `dir`, in name order.
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

    /// True if `dir` has at least one visible child.
    pub fn has_children(&self, dir: &RelPath) -> Result<bool> {
        let mut any = false;
        self.for_each_child(dir, |_, _| {
            any = true;
            false
        })?;
        Ok(any)
    }

    /// Calls `f(name, node)` for each visible child until it returns false.
    fn for_each_child(&self, dir: &RelPath, mut f: impl FnMut(&[u8], Node) -> bool) -> Result<()> {
        let db = &self.inner.db;
        let prefix = dir.children_prefix();
        let iter = crate::db::prefix_iter(db, CF_ENTRIES, &prefix);
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            if !f(&key[prefix.len()..], decode_node(&key, &value)?) {
                break;
            }
        }
        Ok(())
    }

    /// Every visible entry below (not including) `dir`.
    pub fn descendants(&self, dir: &RelPath) -> Result<Vec<(RelPath, Node)>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for child in self.list(&d)? {
                let path = d
                    .join(&child.name)
                    .map_err(|_| StoreError::Malformed(format!("entry name under {d}")))?;
                if child.node.meta.kind == depfs_proto::Kind::Dir {
                    stack.push(path.clone());
                }
                out.push((path, child.node));
            }
        }
        Ok(out)
    }

    /// Every visible entry, in key order (for digests, checks and tests).
    pub fn all_entries(&self) -> Result<Vec<(RelPath, Node)>> {
        let db = &self.inner.db;
        let mut out = Vec::new();
        for item in db.iterator_cf(cf(db, CF_ENTRIES), IteratorMode::Start) {
            let (key, value) = item?;
            let path = RelPath::from_key(&key)
                .map_err(|_| StoreError::Malformed(format!("entry key {key:?}")))?;
            out.push((path, decode_node(&key, &value)?));
        }
        Ok(out)
    }

    /// The number of recorded conflicts (cheap: the conflict index is small).
    pub fn conflict_count(&self) -> Result<u64> {
        let db = &self.inner.db;
        let mut n = 0;
        for item in db.iterator_cf(cf(db, CF_CONFLICTS), IteratorMode::Start) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// RocksDB's estimate of the number of visible entries (no scan).
    pub fn estimated_entries(&self) -> Result<u64> {
        let db = &self.inner.db;
        Ok(db
            .property_int_value_cf(cf(db, CF_ENTRIES), "rocksdb.estimate-num-keys")?
            .unwrap_or(0))
    }

    /// Counts of what the store holds (a full scan: for `status`, not for scrapes).
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
        let mut heads = 0;
        let mut tombstones = 0;
        for item in db.iterator_cf(cf(db, CF_HEADS), IteratorMode::Start) {
            let (key, value) = item?;
            for head in decode_heads(&key, &value)? {
                heads += 1;
                if matches!(head.state, State::Deleted) {
                    tombstones += 1;
                }
            }
        }
        Ok(StoreStats {
            entries: count(CF_ENTRIES)?,
            heads,
            tombstones,
            conflicts: count(CF_CONFLICTS)?,
            chunks: count(CF_CHUNKS)?,
            log_records: count(CF_LOG)?,
        })
    }

    /// A digest of the visible tree (paths, kinds, modes, owners, mtimes, contents; not
    /// ctimes, which record local arrival): two nodes have converged iff their digests
    /// are equal.
    pub fn tree_digest(&self) -> Result<blake3::Hash> {
        let mut hasher = blake3::Hasher::new();
        for (path, node) in self.all_entries()? {
            let key = path.key();
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
