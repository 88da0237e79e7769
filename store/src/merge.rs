//! The merge rules as pure functions over versions, and the batch that writes what they
//! decide.
//!
//! The rules are stated once, in `docs/design.md`, "Merge rules" (and, for versions an old
//! manager wrote cut off, "One-way mode"); each function here names the rule it follows
//! instead of restating it. None of them reads or writes the store, so a local commit
//! (`tx.rs`), a peer's change (`remote.rs`), re-judging after a change of manager
//! (`lead.rs`) and `depfs verify` (`check.rs`) follow the same code, and
//! `tests/merge_props.rs` checks their properties without RocksDB:
//!
//! * [`arrive`] (and [`heads_after`]): whether a version is old news, and which heads it
//!   evicts (rule 1);
//! * [`local_context`]: the causal context of a local write (rule 4);
//! * [`judge`], made of [`contenders`], [`visible`] and [`conflicts`]: what a path shows,
//!   and its conflicts (rules 2 and 3);
//! * [`without_cut_off`]: the heads the current manager re-asserts a path from.
//!
//! [`Batch`] writes their decisions into one atomic change of the store.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use depfs_proto::{
    decode_value, encode_value, Content, Dot, Kind, Leadership, Meta, Node, RelPath, State,
    Timespec, Version, VersionVector,
};

use crate::error::{Result, StoreError};
use crate::keys::*;
use crate::log::{read_record, LogRecord};
use crate::overlay::Overlay;
use crate::store::Store;

/// The winner-picking order: later HLC time, then greater node name.
pub(crate) fn stamp_key(v: &Version) -> (depfs_proto::Hlc, &str) {
    (v.hlc, v.dot.node.as_str())
}

/// Where an arriving version comes from: rule 1 treats the two differently (old news,
/// cut-off versions).
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A commit of this node, its version made by [`local_context`].
    Local,
    /// A peer's change.
    Peer {
        /// This node's progress (its version vector).
        progress: &'a VersionVector,
        /// The manager terms this node follows (empty in multi-writer mode).
        lead: &'a Leadership,
    },
}

/// What rule 1 decides for a version arriving at a path.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<'h> {
    /// Old news: held already, or a head descends from it. The heads stay as they are.
    Obsolete,
    /// It joins the heads, and the heads in `evicted` leave them.
    Joins {
        /// The heads it supersedes.
        evicted: Vec<&'h Version>,
        /// It was made cut off (one-way mode): the current manager re-asserts the path.
        cut_off: bool,
    },
}

/// Rule 1, arrival: what becomes of a path's `heads` when `new` arrives from `source`.
pub fn arrive<'h>(heads: &'h [Version], new: &Version, source: Source<'_>) -> Arrival<'h> {
    debug_assert!(
        new.ctx.covers(&new.dot),
        "version {} does not descend from itself",
        new.dot
    );
    match source {
        Source::Local => {
            debug_assert!(
                heads.iter().all(|h| h.dot != new.dot),
                "the local change {} is already a head",
                new.dot
            );
            Arrival::Joins {
                evicted: covered_by(heads, new, |_| true),
                cut_off: false,
            }
        }
        Source::Peer { progress, lead } => {
            let old_news = progress.covers(&new.dot)
                || heads
                    .iter()
                    .any(|h| h.dot == new.dot || h.ctx.covers(&new.dot));
            if old_news {
                return Arrival::Obsolete;
            }
            let cut_off = lead.is_cut_off(&new.dot);
            Arrival::Joins {
                evicted: covered_by(heads, new, |h| !cut_off || lead.is_cut_off(&h.dot)),
                cut_off,
            }
        }
    }
}

/// The heads `new` descends from that `evictable` lets it evict.
fn covered_by<'h>(
    heads: &'h [Version],
    new: &Version,
    evictable: impl Fn(&Version) -> bool,
) -> Vec<&'h Version> {
    heads
        .iter()
        .filter(|h| new.ctx.covers(&h.dot) && evictable(h))
        .collect()
}

/// The heads of a path after `new` arrives from `source`, in dot order (the order they
/// are stored in): [`arrive`] applied to a list of versions.
pub fn heads_after(heads: &[Version], new: Version, source: Source<'_>) -> Vec<Version> {
    let mut out: Vec<Version> = match arrive(heads, &new, source) {
        Arrival::Obsolete => heads.to_vec(),
        Arrival::Joins { evicted, .. } => {
            let mut kept: Vec<Version> = heads
                .iter()
                .filter(|h| evicted.iter().all(|e| e.dot != h.dot))
                .cloned()
                .collect();
            kept.push(new);
            kept
        }
    };
    out.sort_by(|a, b| a.dot.cmp(&b.dot));
    out
}

/// Rule 4, local writes: the causal context of this node's new version `dot` of a path.
/// It takes the contexts of the heads the write is based on — those named in `base` (a
/// write prepared earlier: the heads it started from), or else every head but the
/// recorded conflicts `conflicted` — and covers `dot`, so every earlier change of this
/// node too.
///
/// Covering `dot` also covers this node's own earlier versions still among the heads
/// (one that lost to a concurrent write, say): the new version supersedes them, so it
/// takes their contexts too, until no further head is covered. Without that, a node
/// that held only what such a version superseded would keep it beside the new version
/// while this node does not: two nodes holding the same versions would show different
/// heads.
pub fn local_context(
    heads: &[Version],
    base: Option<&[Dot]>,
    conflicted: &[Dot],
    dot: &Dot,
) -> VersionVector {
    let mut ctx = VersionVector::new();
    for head in heads.iter().filter(|h| match base {
        Some(base) => base.contains(&h.dot),
        None => !conflicted.contains(&h.dot),
    }) {
        ctx.merge(&head.ctx);
    }
    ctx.raise(&dot.node, dot.seq);
    close_over_covered(ctx, heads)
}

/// Merges into `ctx` the context of every head it covers, until it covers no further
/// head: a version that supersedes another also descends from what that one did.
fn close_over_covered(mut ctx: VersionVector, heads: &[Version]) -> VersionVector {
    loop {
        let before = ctx.clone();
        for head in heads.iter().filter(|h| before.covers(&h.dot)) {
            ctx.merge(&head.ctx);
        }
        if ctx == before {
            return ctx;
        }
    }
}

/// The heads that compete for what a path shows: cut-off heads only when there is
/// nothing else (docs/design.md, "One-way mode").
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

/// The heads the current manager re-asserts a path from (docs/design.md, "One-way
/// mode"): those not made cut off, or `None` if no head was.
pub fn without_cut_off(heads: &[Version], lead: &Leadership) -> Option<Vec<Version>> {
    let base: Vec<Version> = heads
        .iter()
        .filter(|h| !lead.is_cut_off(&h.dot))
        .cloned()
        .collect();
    (base.len() != heads.len()).then_some(base)
}

/// Rule 2: what a path shows, given its heads and whether it has visible children.
/// Returns the entry and the head it comes from (`None` for a made-up directory).
pub fn visible(
    heads: &[Version],
    has_children: bool,
    is_root: bool,
) -> (Option<Node>, Option<Dot>) {
    if has_children || is_root {
        let dir = heads
            .iter()
            .filter(|h| is_live_dir(h))
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

fn is_live_dir(version: &Version) -> bool {
    matches!(&version.state, State::Live(n) if n.meta.kind == Kind::Dir)
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

/// Rule 3: the live heads that lose to what is shown and hold something else.
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

/// What a path shows, and its conflicts.
#[derive(Debug, PartialEq, Eq)]
pub struct Judgement<'h> {
    /// The visible entry (`None`: the path shows nothing).
    pub shown: Option<Node>,
    /// The head it comes from (`None` for nothing, or a made-up directory).
    pub shown_dot: Option<Dot>,
    /// The heads recorded as conflicts.
    pub conflicts: Vec<&'h Version>,
}

/// Rules 2 and 3 over a path's `heads`, cut-off heads competing only when there is
/// nothing else: what the path shows and which heads are conflicts.
pub fn judge<'h>(
    heads: &'h [Version],
    lead: &Leadership,
    has_children: bool,
    is_root: bool,
) -> Judgement<'h> {
    let (shown, shown_dot) = visible(&contenders(heads, lead), has_children, is_root);
    debug_assert!(
        shown_dot
            .as_ref()
            .is_none_or(|dot| heads.iter().any(|h| &h.dot == dot)),
        "a path shows a version that is not one of its heads"
    );
    let conflicts = conflicts(heads, &shown, &shown_dot);
    Judgement {
        shown,
        shown_dot,
        conflicts,
    }
}

/// False if what a path shows cannot depend on whether it has visible children: its
/// latest contending head is a live directory, shown either way. Settling a path then
/// skips the scan of its children, which keeps commits in busy directories cheap.
pub fn children_matter(heads: &[Version], lead: &Leadership) -> bool {
    !contenders(heads, lead)
        .iter()
        .max_by(|a, b| stamp_key(a).cmp(&stamp_key(b)))
        .is_some_and(is_live_dir)
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
        debug_assert!(
            heads
                .iter()
                .enumerate()
                .all(|(i, h)| heads[..i].iter().all(|e| e.dot != h.dot)),
            "{path} would hold one version twice"
        );
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
        // Its chunks' references and its log record's count go with it: evicting a
        // version that is not a head would undercount both.
        debug_assert!(
            heads.iter().any(|h| h.dot == head.dot),
            "{} is not a head of {path}",
            head.dot
        );
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

    /// Writes what [`arrive`] decided for `version` of `path`: the heads it evicts leave,
    /// and it joins the heads.
    pub(crate) fn join(
        &mut self,
        path: &RelPath,
        evicted: &[&Version],
        version: Version,
    ) -> Result<()> {
        for head in evicted {
            self.evict(path, head)?;
        }
        self.admit(path, version)
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
        while let Some((_, path)) = self.dirty.pop_first() {
            let heads = self.heads(&path)?;
            let has_children =
                children_matter(&heads, &self.lead) && self.has_visible_children(&path)?;
            let judged = judge(&heads, &self.lead, has_children, path.is_root());
            self.record_conflicts(&path, &judged.conflicts)?;
            self.show(path, judged.shown)?;
        }
        Ok(())
    }

    /// Makes the conflict records of `path` name exactly `lost`.
    fn record_conflicts(&mut self, path: &RelPath, lost: &[&Version]) -> Result<()> {
        let recorded = self.conflict_keys(path)?;
        let lost: BTreeSet<Vec<u8>> = lost.iter().map(|h| head_key(path, &h.dot)).collect();
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
        Ok(())
    }

    /// Makes `path` show `shown`; if it appears or vanishes, its parent is settled again
    /// (its children changed).
    fn show(&mut self, path: RelPath, shown: Option<Node>) -> Result<()> {
        let before = self.entry(&path)?;
        if before == shown {
            return Ok(());
        }
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
