//! Local transactions: read the tree, stage puts and deletes, commit them as one change.
//!
//! A transaction holds the store's writer lock from [`Store::transaction`] to
//! [`Tx::commit`], so the checks a filesystem call makes (does the target exist, is the
//! directory empty) and the change it commits see the same tree. Content is written
//! *before* the transaction ([`Store::write_content`]), so chunking a large file never
//! blocks other writers.
//!
//! Which context a new version takes and which heads it evicts are the merge rules
//! (`docs/design.md`, "Merge rules", rules 1 and 4), applied by the pure functions of
//! [`crate::merge`] exactly as a peer's change is: a commit reads the staged paths,
//! plans the versions with those functions, and writes the plan in one batch.

use std::collections::{BTreeMap, HashMap};

use depfs_proto::seal::op_digest;
use depfs_proto::{
    encode_value, Content, Digest, Dot, Hlc, Node, RelPath, Seal, State, Version, VersionVector,
};
use parking_lot::MutexGuard;

use crate::db::cf;
use crate::error::{Result, StoreError};
use crate::keys::*;
use crate::log::{read_record, LogRecord};
use crate::merge::{arrive, local_context, Arrival, Batch, RefDeltas, Source};
use crate::overlay::Overlay;
use crate::store::Store;
use crate::tree::DirEntry;
use crate::writer::{Writer, WriterState};

impl Writer {
    /// Persists the writer's state in `batch`.
    pub(crate) fn persist(&self, batch: &mut Batch<'_>) {
        let state = WriterState {
            seq: self.seq,
            hlc: self.clock.last(),
            vv: self.vv.clone(),
        };
        batch
            .overlay
            .put(CF_META, META_WRITER.to_vec(), encode_value(&state));
    }
}

/// How durable a commit must be when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Written to the RocksDB write-ahead log in the OS page cache: survives a crash of
    /// the daemon (`close`).
    Process,
    /// The write-ahead log is synced to disk: survives power loss (`fsync`).
    Machine,
}

/// A committed change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Its identity.
    pub dot: Dot,
    /// Its time.
    pub hlc: Hlc,
}

/// A local transaction; see the module documentation.
pub struct Tx<'a> {
    store: &'a Store,
    writer: MutexGuard<'a, Writer>,
    ops: Vec<(RelPath, Option<Node>)>,
    index: HashMap<RelPath, usize>,
    /// Paths whose new version also supersedes their recorded conflicts.
    resolve: std::collections::HashSet<RelPath>,
    /// Deletions to commit even though nothing is visible (they resolve conflicts).
    forced_deletes: std::collections::HashSet<RelPath>,
    /// For writes prepared earlier (a file open for writing): the heads they started
    /// from. Heads that appeared since are concurrent, not superseded.
    bases: HashMap<RelPath, Vec<Dot>>,
    /// What this transaction read from the store, handed to the commit's batch (which
    /// reads the same entries again).
    reads: Overlay,
}

impl Store {
    /// Starts a local transaction (waits for the writer lock).
    pub fn transaction(&self) -> Tx<'_> {
        Tx {
            store: self,
            writer: self.inner.writer.lock(),
            ops: Vec::new(),
            index: HashMap::new(),
            resolve: Default::default(),
            forced_deletes: Default::default(),
            bases: HashMap::new(),
            reads: Overlay::default(),
        }
    }

    /// The sequence number of this node's last committed change.
    pub fn last_seq(&self) -> u64 {
        self.inner.writer.lock().seq
    }

    /// The node's progress: for each origin, the changes it has.
    pub fn version_vector(&self) -> VersionVector {
        self.inner.writer.lock().vv.clone()
    }

    /// The sequence number of this node's last local change.
    pub fn own_seq(&self) -> u64 {
        self.inner.writer.lock().seq
    }
}

impl<'a> Tx<'a> {
    /// The visible entry at `path` as this transaction sees it.
    pub fn get(&self, path: &RelPath) -> Result<Option<Node>> {
        match self.index.get(path) {
            Some(&i) => Ok(self.ops[i].1.clone()),
            None => self.reads.stored_entry(self.store, path),
        }
    }

    /// The visible children of `dir` as this transaction sees them, in name order.
    pub fn list(&self, dir: &RelPath) -> Result<Vec<DirEntry>> {
        let mut children: BTreeMap<Vec<u8>, Node> = self
            .store
            .list(dir)?
            .into_iter()
            .map(|e| (e.name, e.node))
            .collect();
        for (path, op) in &self.ops {
            if path.parent().as_ref() == Some(dir) {
                match op {
                    Some(node) => children.insert(path.name().to_vec(), node.clone()),
                    None => children.remove(path.name()),
                };
            }
        }
        Ok(children
            .into_iter()
            .map(|(name, node)| DirEntry { name, node })
            .collect())
    }

    /// True if `dir` has a visible child as this transaction sees it.
    pub fn has_children(&self, dir: &RelPath) -> Result<bool> {
        if self
            .ops
            .iter()
            .all(|(p, _)| p.parent().as_ref() != Some(dir))
        {
            return self.store.has_children(dir);
        }
        Ok(!self.list(dir)?.is_empty())
    }

    /// Stages `node` at `path`.
    pub fn put(&mut self, path: RelPath, node: Node) {
        self.stage(path, Some(node));
    }

    /// Stages `node` at `path` as a write that started from the heads `base` (the dots
    /// of [`Store::heads`] when the file was first written). Versions of the path that
    /// arrived since are concurrent with it: they stay, as the winner or as a conflict,
    /// instead of being silently overwritten.
    pub fn put_based(&mut self, path: RelPath, node: Node, base: Vec<Dot>) {
        self.bases.insert(path.clone(), base);
        self.stage(path, Some(node));
    }

    /// Stages the deletion of `path`.
    pub fn delete(&mut self, path: RelPath) {
        self.stage(path, None);
    }

    /// Stages a deletion based on the heads `base` (see [`Tx::put_based`]), committed even
    /// if nothing is visible at `path`.
    pub(crate) fn delete_based(&mut self, path: RelPath, base: Vec<Dot>) {
        self.bases.insert(path.clone(), base);
        self.forced_deletes.insert(path.clone());
        self.stage(path, None);
    }

    /// Stages a deletion that is committed even if nothing is visible at `path`.
    fn delete_resolving(&mut self, path: RelPath) {
        self.forced_deletes.insert(path.clone());
        self.stage(path, None);
    }

    fn stage(&mut self, path: RelPath, op: Option<Node>) {
        match self.index.get(&path) {
            Some(&i) => self.ops[i].1 = op,
            None => {
                self.index.insert(path.clone(), self.ops.len());
                self.ops.push((path, op));
            }
        }
    }

    /// True if nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Commits the staged operations as one change with the next sequence number and a
    /// new HLC time (from `wall_ms`, the caller's wall clock). Returns `None` if there was
    /// nothing to commit.
    ///
    /// Each new version takes its context and evicts heads by the merge rules
    /// (`docs/design.md`, "Merge rules", rule 4): a local write never silently resolves
    /// another node's conflicting write (see [`Store::restore_conflict`]).
    pub fn commit(mut self, wall_ms: u64, durability: Durability) -> Result<Option<Committed>> {
        let store = self.store;
        store.reserve_for(&self.ops)?;
        let mut batch = Batch::with_reads(store, std::mem::take(&mut self.reads));
        let reads = self.read_paths(&batch)?;
        if reads.is_empty() {
            return Ok(None);
        }
        let stamp = self.stamp(&reads, wall_ms);
        let plan = plan(reads, &self.bases, &stamp)?;
        self.write_plan(&mut batch, plan, &stamp)?;
        store.write_batch(batch, durability)?;
        drop(self.writer);
        if let Some(hook) = store.inner.commit_hook.read().as_ref() {
            hook();
        }
        Ok(Some(stamp))
    }

    /// Reads what the commit of each staged path depends on: its heads and its recorded
    /// conflicts. Deleting what is not there is no change: such paths are left out.
    fn read_paths(&mut self, batch: &Batch<'_>) -> Result<Vec<PathRead>> {
        let mut reads = Vec::with_capacity(self.ops.len());
        for (path, op) in std::mem::take(&mut self.ops) {
            if op.is_none() && !self.forced_deletes.contains(&path) && batch.entry(&path)?.is_none()
            {
                continue;
            }
            let heads = batch.heads(&path)?;
            let conflicted = if self.resolve.contains(&path) {
                Vec::new()
            } else {
                batch.conflict_dots(&path)?
            };
            reads.push(PathRead {
                path,
                op,
                heads,
                conflicted,
            });
        }
        Ok(reads)
    }

    /// The commit's identity: the next sequence number, and a time after every head of
    /// every path it writes, so the local write is shown where it was made (rule 4).
    fn stamp(&mut self, reads: &[PathRead], wall_ms: u64) -> Committed {
        let writer = &mut *self.writer;
        for head in reads.iter().flat_map(|r| &r.heads) {
            writer.clock.advance_past(head.hlc);
        }
        let hlc = writer.clock.tick(wall_ms);
        debug_assert!(
            reads.iter().flat_map(|r| &r.heads).all(|h| h.hlc <= hlc),
            "a local write is stamped before a head it replaces"
        );
        Committed {
            dot: Dot::new(self.store.inner.node.clone(), writer.seq + 1),
            hlc,
        }
    }

    /// Writes `plan` into `batch`: evictions, new versions, the log record, what the
    /// paths show, and the writer's new state.
    fn write_plan(&mut self, batch: &mut Batch<'_>, plan: Plan, stamp: &Committed) -> Result<()> {
        let mut paths = Vec::with_capacity(plan.writes.len());
        for write in plan.writes {
            for head in &write.evicted {
                batch.evict(&write.path, head)?;
            }
            batch.admit(&write.path, write.version)?;
            paths.push(write.path);
        }
        let seal = match self.store.inner.signer.read().as_deref() {
            Some(signer) => Seal::new(&stamp.dot, stamp.hlc, plan.sealed, signer),
            None => Seal {
                ops: plan.sealed,
                signature: Vec::new(),
            },
        };
        let record = LogRecord {
            hlc: stamp.hlc,
            live: paths.len() as u32,
            paths,
            seal,
        };
        batch.log(&stamp.dot, &record);
        batch.settle()?;
        batch.release_log_records()?;
        self.writer.record_commit(&stamp.dot);
        self.writer.persist(batch);
        Ok(())
    }
}

/// One staged path as the commit read it.
struct PathRead {
    path: RelPath,
    /// The staged entry (`None`: delete).
    op: Option<Node>,
    heads: Vec<Version>,
    /// The heads recorded as conflicts, unless the commit resolves them.
    conflicted: Vec<Dot>,
}

/// What a commit writes.
struct Plan {
    writes: Vec<PlannedWrite>,
    /// The digests of the new versions, in order, for the change's seal.
    sealed: Vec<Digest>,
}

/// The new version of one path and the heads it evicts.
struct PlannedWrite {
    path: RelPath,
    version: Version,
    evicted: Vec<Version>,
}

/// The versions a commit stamped `stamp` makes of the paths read, by the merge rules
/// (rules 4 and 1). `bases` holds, for writes prepared earlier, the heads they started
/// from.
fn plan(
    reads: Vec<PathRead>,
    bases: &HashMap<RelPath, Vec<Dot>>,
    stamp: &Committed,
) -> Result<Plan> {
    let mut writes = Vec::with_capacity(reads.len());
    let mut sealed = Vec::with_capacity(reads.len());
    for read in reads {
        let base = bases.get(&read.path).map(Vec::as_slice);
        let ctx = local_context(&read.heads, base, &read.conflicted, &stamp.dot);
        let state = match read.op {
            Some(node) => State::Live(node),
            None => State::Deleted,
        };
        sealed.push(op_digest(&read.path, &ctx, &state));
        let version = Version {
            dot: stamp.dot.clone(),
            hlc: stamp.hlc,
            ctx,
            state,
        };
        let Arrival::Joins { evicted, .. } = arrive(&read.heads, &version, Source::Local) else {
            // `arrive` never finds a local version old news (see `Source::Local`).
            return Err(StoreError::Malformed(format!(
                "local change {} found old news at {}",
                stamp.dot, read.path
            )));
        };
        let evicted = evicted.into_iter().cloned().collect();
        writes.push(PlannedWrite {
            path: read.path,
            version,
            evicted,
        });
    }
    Ok(Plan { writes, sealed })
}

impl Store {
    /// Checks that a commit of `ops` leaves the space reserve: new content needs the
    /// whole reserve (chunked content was checked when its chunks were written); changes
    /// without content may use half of it.
    fn reserve_for(&self, ops: &[(RelPath, Option<Node>)]) -> Result<()> {
        let inline: u64 = ops
            .iter()
            .filter_map(|(_, op)| match op.as_ref().map(|n| &n.content) {
                Some(Content::Inline(bytes)) if !bytes.is_empty() => Some(bytes.len() as u64),
                _ => None,
            })
            .sum();
        if inline > 0 {
            self.ensure_space(inline)
        } else {
            self.ensure_space_for_metadata()
        }
    }
}

impl Store {
    /// Writes a settled batch: applies its reference-count changes (deleting chunks that
    /// drop to zero unless pinned) and writes everything in one RocksDB write. Must be
    /// called with the writer lock held.
    pub(crate) fn write_batch(&self, batch: Batch<'_>, durability: Durability) -> Result<()> {
        let (overlay, refs) = batch.into_parts();
        let mut write = overlay.into_batch(self);
        self.write_with_refs(&mut write, refs, durability)
    }

    fn write_with_refs(
        &self,
        batch: &mut rocksdb::WriteBatch,
        refs: RefDeltas,
        durability: Durability,
    ) -> Result<()> {
        let db = &self.inner.db;
        let mut zero = depfs_proto::ChunkSet::default();
        let mut referenced = Vec::new();
        for (&hash, &delta) in &refs.0 {
            if delta == 0 {
                continue;
            }
            let old = match db.get_pinned_cf(cf(db, CF_REFS), hash.0)? {
                Some(bytes) => u64::from_le_bytes(bytes.as_ref().try_into().unwrap_or([0; 8])),
                None => 0,
            };
            let new = (old as i64 + delta).max(0) as u64;
            if new == 0 {
                batch.delete_cf(cf(db, CF_REFS), hash.0);
                zero.insert(hash);
            } else {
                batch.put_cf(cf(db, CF_REFS), hash.0, new.to_le_bytes());
                if old == 0 {
                    batch.delete_cf(cf(db, CF_PENDING), hash.0);
                    referenced.push(hash);
                }
            }
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(durability == Durability::Machine);
        // Hold the pin table while writing: a reader that pins after this sees the new
        // tree, one that pinned before kept its chunks (see `chunks`).
        let mut pins = self.inner.pins.lock();
        for hash in &referenced {
            // Written unreferenced (deferred) and referenced now: no longer a candidate
            // for deletion when its pins go (which would cost the next commit a lookup
            // per chunk: 16,384 for a 256 MiB file).
            pins.undefer(hash);
        }
        for hash in pins.take_releasable() {
            let referenced_now = refs.0.get(&hash).is_some_and(|&d| d > 0);
            if !referenced_now
                && !zero.contains(&hash)
                && db.get_pinned_cf(cf(db, CF_REFS), hash.0)?.is_none()
            {
                zero.insert(hash);
            }
        }
        for hash in zero {
            if pins.is_pinned(&hash) {
                // Kept for its pins; the marker gets it swept if we crash meanwhile.
                pins.defer(hash);
                batch.put_cf(cf(db, CF_PENDING), hash.0, []);
            } else {
                batch.delete_cf(cf(db, CF_CHUNKS), hash.0);
                batch.delete_cf(cf(db, CF_PENDING), hash.0);
            }
        }
        db.write_opt(std::mem::take(batch), &options)?;
        Ok(())
    }

    /// The log record of `dot`, if it is still kept.
    pub fn log_record(&self, dot: &Dot) -> Result<Option<LogRecord>> {
        let db = &self.inner.db;
        match db.get_pinned_cf(cf(db, CF_LOG), log_key(dot))? {
            Some(bytes) => Ok(Some(read_record(dot, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The most recent log records, newest first, at most `limit`.
    pub fn recent_changes(&self, limit: usize) -> Result<Vec<(Dot, LogRecord)>> {
        let db = &self.inner.db;
        let mut all = Vec::new();
        for item in db.iterator_cf(cf(db, CF_LOG), rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            let Some(dot) = parse_log_key(&key) else {
                continue;
            };
            let record = read_record(&dot, &value)?;
            all.push((dot, record));
        }
        all.sort_by_key(|r| std::cmp::Reverse(r.1.hlc));
        all.truncate(limit);
        Ok(all)
    }
}

impl Store {
    /// Restores a recorded conflict: the losing version `dot` of `path` is written to `to`
    /// (which may be `path` itself) as a new local change, and the conflict at `path` is
    /// resolved in the same change. Returns `None` if there is no such conflict.
    pub fn restore_conflict(
        &self,
        path: &RelPath,
        dot: &Dot,
        to: &RelPath,
        wall_ms: u64,
    ) -> Result<Option<Committed>> {
        let Some(version) = self.heads(path)?.into_iter().find(|h| &h.dot == dot) else {
            return Ok(None);
        };
        let State::Live(node) = version.state else {
            return Ok(None);
        };
        let mut tx = self.transaction();
        if to != path {
            // The path keeps what it shows; the conflict is resolved.
            match tx.get(path)? {
                Some(shown) => tx.put(path.clone(), shown),
                None => tx.delete_resolving(path.clone()),
            }
        }
        tx.put(to.clone(), node);
        tx.resolve.insert(path.clone());
        tx.commit(wall_ms, Durability::Machine)
    }
}
