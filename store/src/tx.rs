//! Local transactions: read the tree, stage puts and deletes, commit them as one change.
//!
//! A transaction holds the store's writer lock from [`Store::transaction`] to
//! [`Tx::commit`], so the checks a filesystem call makes (does the target exist, is the
//! directory empty) and the change it commits see the same tree. Content is written
//! *before* the transaction ([`Store::write_content`]), so chunking a large file never
//! blocks other writers.

use std::collections::HashMap;

use depfs_proto::{
    encode_value, ChunkHash, Dot, Hlc, HlcClock, Kind, Node, RelPath, State, Version, VersionVector,
};
use parking_lot::MutexGuard;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::db::cf;
use crate::error::Result;
use crate::keys::*;
use crate::log::LogRecord;
use crate::tree::{decode_version, DirEntry};
use crate::Store;

/// The writer's in-memory state, persisted in every commit.
pub(crate) struct Writer {
    pub(crate) clock: HlcClock,
    pub(crate) seq: u64,
    pub(crate) vv: VersionVector,
}

/// What `meta/writer` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct WriterState {
    pub(crate) seq: u64,
    pub(crate) hlc: Hlc,
    pub(crate) vv: VersionVector,
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
}

impl Store {
    /// Starts a local transaction (waits for the writer lock).
    pub fn transaction(&self) -> Tx<'_> {
        Tx {
            store: self,
            writer: self.inner.writer.lock(),
            ops: Vec::new(),
            index: HashMap::new(),
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
}

impl<'a> Tx<'a> {
    /// The live entry at `path` as this transaction sees it.
    pub fn get(&self, path: &RelPath) -> Result<Option<Node>> {
        match self.index.get(path) {
            Some(&i) => Ok(self.ops[i].1.clone()),
            None => self.store.get(path),
        }
    }

    /// The live children of `dir` as this transaction sees them, in name order.
    pub fn list(&self, dir: &RelPath) -> Result<Vec<DirEntry>> {
        let mut children: std::collections::BTreeMap<Vec<u8>, Node> = self
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

    /// True if `dir` has a live child as this transaction sees it.
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

    /// Stages the deletion of `path`.
    pub fn delete(&mut self, path: RelPath) {
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
    pub fn commit(mut self, wall_ms: u64, durability: Durability) -> Result<Option<Committed>> {
        let store = self.store;
        let db = &store.inner.db;
        let node = store.inner.node.clone();

        // Deleting what does not exist is no change.
        let mut current = Vec::with_capacity(self.ops.len());
        let mut ops = Vec::with_capacity(self.ops.len());
        for (path, op) in std::mem::take(&mut self.ops) {
            let old = store.get_version(&path)?;
            let old_live = old.as_ref().is_some_and(|v| v.node().is_some());
            if op.is_none() && !old_live {
                continue;
            }
            current.push(old);
            ops.push((path, op));
        }
        if ops.is_empty() {
            return Ok(None);
        }

        let writer = &mut *self.writer;
        let seq = writer.seq + 1;
        let hlc = writer.clock.tick(wall_ms);
        let dot = Dot::new(node.clone(), seq);
        let mut batch = WriteBatch::default();
        let mut refs = RefDeltas::default();
        let mut superseded: HashMap<Dot, u32> = HashMap::new();

        for ((path, op), old) in ops.iter().zip(current) {
            let key = path.key();
            let mut ctx = VersionVector::new();
            if let Some(old) = &old {
                ctx = old.ctx.clone();
                if let Some(old_node) = old.node() {
                    refs.sub(old_node);
                }
                if old.dot.seq > 0 {
                    *superseded.entry(old.dot.clone()).or_insert(0) += 1;
                }
            }
            ctx.raise(&node, seq);
            let state = match op {
                Some(node) => {
                    refs.add(node);
                    State::Live(node.clone())
                }
                None => State::Deleted,
            };
            let live = matches!(state, State::Live(_));
            let version = Version {
                dot: dot.clone(),
                hlc,
                ctx,
                state,
            };
            let (put_cf, del_cf) = if live {
                (CF_ENTRIES, CF_TOMBSTONES)
            } else {
                (CF_TOMBSTONES, CF_ENTRIES)
            };
            batch.put_cf(cf(db, put_cf), &key, encode_value(&version));
            batch.delete_cf(cf(db, del_cf), &key);
        }

        let record = LogRecord {
            hlc,
            paths: ops.iter().map(|(p, _)| p.clone()).collect(),
            live: ops.len() as u32,
        };
        batch.put_cf(cf(db, CF_LOG), log_key(&dot), encode_value(&record));
        store.release_superseded(&mut batch, superseded)?;

        writer.seq = seq;
        writer.vv.raise(&node, seq);
        let state = WriterState {
            seq,
            hlc,
            vv: writer.vv.clone(),
        };
        batch.put_cf(cf(db, CF_META), META_WRITER, encode_value(&state));
        store.write_with_refs(batch, refs, durability)?;
        Ok(Some(Committed { dot, hlc }))
    }
}

/// Reference-count changes of one commit, netted per chunk.
#[derive(Default)]
pub(crate) struct RefDeltas(HashMap<ChunkHash, i64>);

impl RefDeltas {
    pub(crate) fn add(&mut self, node: &Node) {
        self.apply(node, 1);
    }

    pub(crate) fn sub(&mut self, node: &Node) {
        self.apply(node, -1);
    }

    fn apply(&mut self, node: &Node, delta: i64) {
        if node.meta.kind != Kind::File {
            return;
        }
        for chunk in node.content.chunks() {
            *self.0.entry(chunk.hash).or_insert(0) += delta;
        }
    }
}

impl Store {
    /// Decrements the live counts of superseded changes' log records, deleting records
    /// that reach zero.
    pub(crate) fn release_superseded(
        &self,
        batch: &mut WriteBatch,
        superseded: HashMap<Dot, u32>,
    ) -> Result<()> {
        let db = &self.inner.db;
        for (dot, n) in superseded {
            let key = log_key(&dot);
            let Some(bytes) = db.get_pinned_cf(cf(db, CF_LOG), &key)? else {
                continue;
            };
            let mut record: LogRecord =
                depfs_proto::decode_value(&bytes).map_err(|source| crate::StoreError::Corrupt {
                    what: format!("log/{dot}"),
                    source,
                })?;
            record.live = record.live.saturating_sub(n);
            if record.live == 0 {
                batch.delete_cf(cf(db, CF_LOG), &key);
            } else {
                batch.put_cf(cf(db, CF_LOG), &key, encode_value(&record));
            }
        }
        Ok(())
    }

    /// Applies reference-count changes to `batch`, deleting chunks that drop to zero
    /// unless pinned, and writes it. Must be called with the writer lock held.
    pub(crate) fn write_with_refs(
        &self,
        mut batch: WriteBatch,
        refs: RefDeltas,
        durability: Durability,
    ) -> Result<()> {
        let db = &self.inner.db;
        let mut zero = Vec::new();
        for (hash, delta) in refs.0 {
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
                zero.push(hash);
            } else {
                batch.put_cf(cf(db, CF_REFS), hash.0, new.to_le_bytes());
                if old == 0 {
                    batch.delete_cf(cf(db, CF_PENDING), hash.0);
                }
            }
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(durability == Durability::Machine);
        // Hold the pin table while writing: a reader that pins after this sees the new
        // tree, one that pinned before kept its chunks (see `chunks`).
        let mut pins = self.inner.pins.lock();
        for hash in pins.take_releasable() {
            if db.get_pinned_cf(cf(db, CF_REFS), hash.0)?.is_none() && !zero.contains(&hash) {
                zero.push(hash);
            }
        }
        for hash in zero {
            if pins.is_pinned(&hash) {
                pins.defer(hash);
            } else {
                batch.delete_cf(cf(db, CF_CHUNKS), hash.0);
                batch.delete_cf(cf(db, CF_PENDING), hash.0);
            }
        }
        db.write_opt(batch, &options)?;
        Ok(())
    }
}

/// Gives tests access to the raw log.
impl Store {
    /// The log record of `dot`, if it is still kept.
    pub fn log_record(&self, dot: &Dot) -> Result<Option<LogRecord>> {
        let db = &self.inner.db;
        match db.get_pinned_cf(cf(db, CF_LOG), log_key(dot))? {
            Some(bytes) => Ok(Some(depfs_proto::decode_value(&bytes).map_err(
                |source| crate::StoreError::Corrupt {
                    what: format!("log/{dot}"),
                    source,
                },
            )?)),
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
            let record: LogRecord = match depfs_proto::decode_value(&value) {
                Ok(r) => r,
                Err(source) => {
                    return Err(crate::StoreError::Corrupt {
                        what: format!("log/{dot}"),
                        source,
                    })
                }
            };
            all.push((dot, record));
        }
        all.sort_by_key(|r| std::cmp::Reverse(r.1.hlc));
        all.truncate(limit);
        Ok(all)
    }
}

#[allow(unused)]
fn _assert_decode_version_used() {
    let _ = decode_version;
}
