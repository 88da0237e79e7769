//! The merge rules, and the batch that applies them.
//!
//! Each path has a set of *heads*: the versions no other known version of that path
//! descends from. A new version is either obsolete (a head descends from it: it is old
//! news) or it joins the heads, evicting the heads it descends from. What the path shows
//! (its *visible* entry) is a function of its heads and of whether it has visible
//! children:
//!
//! * no visible children: the head with the greatest `(hlc, node)` — a tombstone
//!   shows nothing;
//! * visible children ("a path with live children is a directory"): the greatest live
//!   directory head, or, if there is none, a directory made up from the heads (mode
//!   0755, owner root, mtime of the latest head) — every node makes the same one.
//!
//! Live heads that are not shown and whose content differs from what is shown are
//! *conflicts*: kept, listed, restorable, never in the tree.
//!
//! In one-way mode, heads an old manager wrote while cut off from the cluster (see
//! `depfs_proto::lead`) lose to every other head: they become conflicts. Only when a
//! path has nothing but cut-off heads are they shown, so that the old manager's files
//! do not vanish before the current manager re-asserts its own version of the path. All of this depends only on
//! the set of versions a node holds, never on the order they arrived in, so nodes that
//! hold the same versions show the same tree.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use depfs_proto::{
    decode_value, encode_value, Content, Dot, Kind, Leadership, Meta, Node, RelPath, State,
    Timespec, Version,
};

use crate::error::{Result, StoreError};
use crate::keys::*;
use crate::log::{read_record, LogRecord};
use crate::overlay::Overlay;
use crate::Store;

/// The winner-picking order: later HLC time, then greater node name.
pub(crate) fn stamp_key(v: &Version) -> (depfs_proto::Hlc, &str) {
    (v.hlc, v.dot.node.as_str())
}

/// The heads that compete for what a path shows: cut-off heads only when there is
/// nothing else.
pub fn contenders<'a>(heads: &'a [Version], lead: &Leadership) -> Cow<'a, [Version]> {
    if lead.is_empty() || !heads.iter().any(|h| lead.is_cut_off(&h.dot)) {
        return Cow::Borrowed(heads);
    }
    let kept: Vec<Version> = heads
        .iter()
        .filter(|h| !lead.is_cut_off(&h.dot))
        .cloned()
        .collect();
    if kept.is_empty() {
        Cow::Borrowed(heads)
    } else {
        Cow::Owned(kept)
    }
}

/// What a path shows, given its heads and whether it has visible children. Returns the
/// entry and the head it comes from (`None` for a made-up directory).
pub fn visible(
    heads: &[Version],
    has_children: bool,
    is_root: bool,
) -> (Option<Node>, Option<Dot>) {
    if has_children || is_root {
        let dir = heads
            .iter()
            .filter(|h| matches!(&h.state, State::Live(n) if n.meta.kind == Kind::Dir))
            .max_by(|a, b| stamp_key(a).cmp(&stamp_key(b)));
        return match dir {
            Some(h) => (h.node().cloned(), Some(h.dot.clone())),
            None => (Some(made_up_dir(heads)), None),
        };
    }
    match heads.iter().max_by(|a, b| stamp_key(a).cmp(&stamp_key(b))) {
        Some(h) => match &h.state {
            State::Live(node) => (Some(node.clone()), Some(h.dot.clone())),
            State::Deleted => (None, None),
        },
        None => (None, None),
    }
}

/// The directory shown where children exist but no head is a live directory (it was
/// deleted, or replaced by a file, concurrently with the children's creation).
fn made_up_dir(heads: &[Version]) -> Node {
    let wall = heads.iter().map(|h| h.hlc.wall_ms).max().unwrap_or(0);
    let t = Timespec::from_millis(wall);
    Node {
        meta: Meta {
            kind: Kind::Dir,
            perm: 0o755,
            uid: 0,
            gid: 0,
            mtime: t,
            ctime: t,
        },
        content: Content::empty(),
    }
}

/// Live heads that lose to what is shown and hold something else: the conflicts.
pub fn conflicts<'a>(
    heads: &'a [Version],
    shown: &Option<Node>,
    shown_dot: &Option<Dot>,
) -> Vec<&'a Version> {
    heads
        .iter()
        .filter(|h| Some(&h.dot) != shown_dot.as_ref())
        .filter(|h| match (&h.state, shown) {
            (State::Live(node), Some(shown)) => !node.same_as(shown),
            (State::Live(_), None) => true,
            (State::Deleted, _) => false,
        })
        .collect()
}

/// Reference-count changes, netted per chunk.
#[derive(Default)]
pub(crate) struct RefDeltas(pub(crate) depfs_proto::ChunkMap<i64>);

impl RefDeltas {
    fn apply(&mut self, version: &Version, delta: i64) {
        if let State::Live(node) = &version.state {
            if node.meta.kind == Kind::File {
                for chunk in node.content.chunks() {
                    *self.0.entry(chunk.hash).or_insert(0) += delta;
                }
            }
        }
    }
}

/// One atomic change to the store under construction: heads added and evicted, log
/// records, reference counts, and the visible entries they imply.
pub(crate) struct Batch<'s> {
    pub(crate) store: &'s Store,
    pub(crate) overlay: Overlay,
    pub(crate) refs: RefDeltas,
    /// Evicted heads per change, to decrement their log records.
    released: HashMap<Dot, u32>,
    /// Paths whose visible entry must be recomputed, deepest first.
    dirty: BTreeSet<(Reverse<usize>, RelPath)>,
    /// Paths whose visible entry changed.
    pub(crate) changed: BTreeSet<RelPath>,
    /// The manager terms the merge rules follow (one-way mode).
    pub(crate) lead: Leadership,
}

impl<'s> Batch<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Self::with_reads(store, Overlay::default())
    }

    /// A batch that starts from `reads`: an overlay without writes, holding what a
    /// transaction read under the same writer lock.
    pub(crate) fn with_reads(store: &'s Store, reads: Overlay) -> Self {
        Batch {
            store,
            overlay: reads,
            refs: RefDeltas::default(),
            released: HashMap::new(),
            dirty: BTreeSet::new(),
            changed: BTreeSet::new(),
            lead: store.inner.lead.read().clone(),
        }
    }

    pub(crate) fn into_parts(self) -> (Overlay, RefDeltas) {
        (self.overlay, self.refs)
    }

    /// The current heads of `path`, in dot order.
    pub(crate) fn heads(&self, path: &RelPath) -> Result<Vec<Version>> {
        match self.overlay.get(self.store, CF_HEADS, &path.key())? {
            Some(bytes) => decode_heads(&path.key(), &bytes),
            None => Ok(Vec::new()),
        }
    }

    fn write_heads(&mut self, path: &RelPath, mut heads: Vec<Version>) {
        if heads.is_empty() {
            self.overlay.delete(CF_HEADS, path.key());
        } else {
            heads.sort_by(|a, b| a.dot.cmp(&b.dot));
            self.overlay.put(CF_HEADS, path.key(), encode_value(&heads));
        }
    }

    /// Removes a head (it was superseded or collected). Its conflict record, if it had
    /// one, goes when `settle` recomputes the path's conflicts: deleting it here blindly
    /// would leave a RocksDB tombstone under the path's prefix at every change of a busy
    /// directory, and every later scan of that prefix would wade through them.
    pub(crate) fn evict(&mut self, path: &RelPath, head: &Version) -> Result<()> {
        let mut heads = self.heads(path)?;
        heads.retain(|h| h.dot != head.dot);
        self.write_heads(path, heads);
        self.refs.apply(head, -1);
        if head.dot.seq > 0 {
            *self.released.entry(head.dot.clone()).or_insert(0) += 1;
        }
        self.mark(path);
        Ok(())
    }

    /// Adds a head.
    pub(crate) fn admit(&mut self, path: &RelPath, version: Version) -> Result<()> {
        self.refs.apply(&version, 1);
        let mut heads = self.heads(path)?;
        heads.push(version);
        self.write_heads(path, heads);
        self.mark(path);
        Ok(())
    }

    /// Records the log record of a change that made `live` heads.
    pub(crate) fn log(&mut self, dot: &Dot, record: &LogRecord) {
        self.overlay.put(CF_LOG, log_key(dot), encode_value(record));
    }

    pub(crate) fn mark(&mut self, path: &RelPath) {
        self.dirty.insert((Reverse(path.depth()), path.clone()));
    }

    /// The visible entry of `path` as this batch leaves it.
    pub(crate) fn entry(&self, path: &RelPath) -> Result<Option<Node>> {
        match self.overlay.get(self.store, CF_ENTRIES, &path.key())? {
            Some(bytes) => Ok(Some(decode_value(&bytes).map_err(|source| {
                StoreError::Corrupt {
                    what: format!("entries/{path}"),
                    source,
                }
            })?)),
            None => Ok(None),
        }
    }

    fn has_visible_children(&self, path: &RelPath) -> Result<bool> {
        let prefix = path.children_prefix();
        // A path with visible children is shown as a directory. If the store showed this
        // one as anything else, or not at all, its children can only come from this
        // batch: no need to scan the store (the common case: a file is deleted or
        // replaced).
        if !self.stored_is_dir(path)? && !self.overlay.puts_under(CF_ENTRIES, &prefix) {
            return Ok(false);
        }
        Ok(!self
            .overlay
            .scan(self.store, CF_ENTRIES, &prefix, 1)?
            .is_empty())
    }

    /// True if the store (before this batch) shows `path` as a directory.
    fn stored_is_dir(&self, path: &RelPath) -> Result<bool> {
        Ok(self
            .overlay
            .stored_entry(self.store, path)?
            .is_some_and(|node| node.meta.kind == Kind::Dir))
    }

    /// The keys of the conflicts recorded for `path`, as this batch leaves them.
    ///
    /// A conflict is only ever recorded for one of its path's heads, and `settle`
    /// rewrites a path's records whenever its heads change, so the stored records are
    /// found by looking up the keys of the stored heads (usually one) instead of scanning
    /// the path's key range — a scan that gets slower with every record deleted under it
    /// until RocksDB compacts the tombstones away.
    pub(crate) fn conflict_keys(&self, path: &RelPath) -> Result<Vec<Vec<u8>>> {
        let key = path.key();
        let stored_heads = match self.overlay.get_stored(self.store, CF_HEADS, &key)? {
            Some(bytes) => decode_heads(&key, &bytes)?,
            None => Vec::new(),
        };
        let mut candidates: BTreeSet<Vec<u8>> = stored_heads
            .iter()
            .map(|h| head_key(path, &h.dot))
            .collect();
        candidates.extend(
            self.overlay
                .written_under(CF_CONFLICTS, &heads_prefix(path)),
        );
        let mut out = Vec::new();
        for candidate in candidates {
            if self
                .overlay
                .get(self.store, CF_CONFLICTS, &candidate)?
                .is_some()
            {
                out.push(candidate);
            }
        }
        Ok(out)
    }

    /// The dots of the conflicts recorded for `path` (see [`Batch::conflict_keys`]).
    pub(crate) fn conflict_dots(&self, path: &RelPath) -> Result<Vec<Dot>> {
        let prefix = heads_prefix(path);
        Ok(self
            .conflict_keys(path)?
            .iter()
            .filter_map(|key| parse_log_key(key.get(prefix.len()..)?))
            .collect())
    }

    /// Recomputes the visible entries of every marked path, deepest first, following
    /// changes up to the parents whose children appeared or vanished.
    pub(crate) fn settle(&mut self) -> Result<()> {
        while let Some(item) = self.dirty.pop_first() {
            let path = item.1;
            let heads = self.heads(&path)?;
            let contending = contenders(&heads, &self.lead);
            // Children only matter when the latest head is not a live directory (a
            // directory is shown either way); skipping the scan keeps commits in busy
            // directories cheap.
            let latest_is_dir = contending
                .iter()
                .max_by(|a, b| stamp_key(a).cmp(&stamp_key(b)))
                .is_some_and(|h| matches!(&h.state, State::Live(n) if n.meta.kind == Kind::Dir));
            let has_children = !latest_is_dir && self.has_visible_children(&path)?;
            let (shown, shown_dot) = visible(&contending, has_children, path.is_root());
            let recorded = self.conflict_keys(&path)?;
            let lost: BTreeSet<Vec<u8>> = conflicts(&heads, &shown, &shown_dot)
                .into_iter()
                .map(|lost| head_key(&path, &lost.dot))
                .collect();
            for key in &recorded {
                if !lost.contains(key) {
                    self.overlay.delete(CF_CONFLICTS, key.clone());
                }
            }
            for key in lost {
                if !recorded.contains(&key) {
                    self.overlay.put(CF_CONFLICTS, key, Vec::new());
                }
            }
            let before = self.entry(&path)?;
            if before != shown {
                match &shown {
                    Some(node) => self.overlay.put(CF_ENTRIES, path.key(), encode_value(node)),
                    None => self.overlay.delete(CF_ENTRIES, path.key()),
                }
                if before.is_some() != shown.is_some() {
                    if let Some(parent) = path.parent() {
                        self.mark(&parent);
                    }
                }
                self.changed.insert(path);
            }
        }
        Ok(())
    }

    /// Decrements the log records of evicted heads, deleting records that reach zero.
    pub(crate) fn release_log_records(&mut self) -> Result<()> {
        for (dot, n) in std::mem::take(&mut self.released) {
            let key = log_key(&dot);
            let Some(bytes) = self.overlay.get(self.store, CF_LOG, &key)? else {
                continue;
            };
            let mut record = read_record(&dot, &bytes)?;
            record.live = record.live.saturating_sub(n);
            if record.live == 0 {
                self.overlay.delete(CF_LOG, key);
            } else {
                self.overlay.put(CF_LOG, key, encode_value(&record));
            }
        }
        Ok(())
    }
}

/// Decodes the heads stored for a path.
pub(crate) fn decode_heads(key: &[u8], bytes: &[u8]) -> Result<Vec<Version>> {
    decode_value(bytes).map_err(|source| StoreError::Corrupt {
        what: format!("heads/{}", String::from_utf8_lossy(key)),
        source,
    })
}

#[cfg(test)]
mod tests {
    use depfs_proto::{Hlc, NodeName, VersionVector};

    use super::*;

    fn version(node: &str, seq: u64, ms: u64, kind: Option<Kind>, byte: u8) -> Version {
        let n = NodeName::new(node).unwrap();
        let mut ctx = VersionVector::new();
        ctx.raise(&n, seq);
        Version {
            dot: Dot::new(n, seq),
            hlc: Hlc::new(ms, 0),
            ctx,
            state: match kind {
                None => State::Deleted,
                Some(kind) => State::Live(Node {
                    meta: Meta {
                        kind,
                        perm: 0o644,
                        uid: 0,
                        gid: 0,
                        mtime: Timespec::default(),
                        ctime: Timespec::default(),
                    },
                    content: Content::Inline(vec![byte]),
                }),
            },
        }
    }

    #[test]
    fn later_time_wins_and_ties_break_by_node_name() {
        let a = version("a", 1, 10, Some(Kind::File), 1);
        let b = version("b", 1, 20, Some(Kind::File), 2);
        let (shown, dot) = visible(&[a.clone(), b.clone()], false, false);
        assert_eq!(dot, Some(b.dot.clone()));
        assert_eq!(shown, b.node().cloned());
        assert_eq!(conflicts(&[a.clone(), b.clone()], &shown, &dot), vec![&a]);
        let c = version("c", 1, 20, Some(Kind::File), 3);
        assert_eq!(visible(&[b, c.clone()], false, false).1, Some(c.dot));
    }

    #[test]
    fn a_later_delete_shows_nothing_and_keeps_the_write_as_a_conflict() {
        let write = version("a", 1, 10, Some(Kind::File), 1);
        let delete = version("b", 1, 20, None, 0);
        let heads = [write.clone(), delete];
        let (shown, dot) = visible(&heads, false, false);
        assert_eq!(shown, None);
        assert_eq!(conflicts(&heads, &shown, &dot), vec![&write]);
    }

    #[test]
    fn identical_concurrent_content_is_no_conflict() {
        let a = version("a", 1, 10, Some(Kind::File), 7);
        let b = version("b", 1, 20, Some(Kind::File), 7);
        let heads = [a, b];
        let (shown, dot) = visible(&heads, false, false);
        assert!(conflicts(&heads, &shown, &dot).is_empty());
    }

    #[test]
    fn a_path_with_live_children_is_a_directory() {
        let delete = version("a", 1, 50, None, 0);
        let (shown, dot) = visible(std::slice::from_ref(&delete), true, false);
        assert_eq!(shown.map(|n| n.meta.kind), Some(Kind::Dir));
        assert_eq!(dot, None);
        // A later file at the path loses to an older directory head when children exist.
        let dir = version("b", 1, 10, Some(Kind::Dir), 0);
        let file = version("c", 1, 60, Some(Kind::File), 9);
        let heads = [delete, dir.clone(), file.clone()];
        let (shown, dot) = visible(&heads, true, false);
        assert_eq!(dot, Some(dir.dot));
        assert_eq!(conflicts(&heads, &shown, &dot), vec![&file]);
    }
}
