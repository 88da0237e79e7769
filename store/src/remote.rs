//! Changes from other nodes: what a peer still needs, applying what a peer sent, the
//! chunks that travel with them, peers' acknowledgements, and tombstone collection.

use depfs_proto::{
    decode_value, encode_value, Change, ChangeOp, ChunkData, ChunkHash, Content, Dot, Kind, Node,
    NodeName, RelPath, Seal, State, VersionVector,
};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::chunks::PinGuard;
use crate::db::cf;
use crate::error::{Result, StoreError};
use crate::keys::*;
use crate::log::{read_record, LogRecord};
use crate::merge::{arrive, Arrival, Batch, Source};
use crate::store::Store;
use crate::tx::Durability;
use crate::writer::Writer;

/// What applying a batch of remote changes did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Versions that became heads.
    pub admitted: usize,
    /// Versions that were old news (already known or superseded).
    pub obsolete: usize,
    /// Paths whose visible entry changed (for kernel cache invalidation).
    pub changed: Vec<RelPath>,
    /// True if the node's progress moved to the sender's (see [`Store::apply_remote`]).
    pub progressed: bool,
    /// The sender's progress claim named more than it could back (see
    /// `Store::provable`); only the part it backs was adopted.
    pub unproven: bool,
    /// Changes under this node's name beyond its own sequence: it did not make them (or
    /// lost them with its store's last writes). They are not applied.
    pub not_made_here: Vec<Dot>,
    /// Paths that received versions an old manager wrote while cut off (one-way mode):
    /// the current manager re-asserts them (see [`Store::reassert`]).
    pub cut_off: Vec<RelPath>,
}

/// A change that cannot be applied because it is malformed.
fn malformed(what: String) -> StoreError {
    StoreError::Malformed(what)
}

/// The bytes of inline content `changes` bring: what applying them needs of the space
/// reserve (chunks were checked when they were stored).
fn inline_bytes(changes: &[Change]) -> u64 {
    changes
        .iter()
        .flat_map(|c| &c.ops)
        .map(|op| match &op.state {
            State::Live(Node {
                content: Content::Inline(bytes),
                ..
            }) => bytes.len() as u64,
            _ => 0,
        })
        .sum()
}

/// Extends the log record of `change` by the paths where it became a head. The same
/// change may arrive in parts (relayed by nodes that had different parts of it still
/// current), so a record may exist already.
fn record_change(
    store: &Store,
    batch: &mut Batch<'_>,
    change: &Change,
    admitted: Vec<RelPath>,
) -> Result<()> {
    if admitted.is_empty() {
        return Ok(());
    }
    let key = log_key(&change.dot);
    let mut record = match batch.overlay.get(store, CF_LOG, &key)? {
        Some(bytes) => read_record(&change.dot, &bytes)?,
        None => LogRecord {
            hlc: change.hlc,
            paths: Vec::new(),
            live: 0,
            seal: change.seal.clone(),
        },
    };
    if !record.seal.is_signed() {
        // Kept from a store written before seals: the sealed copy replaces it.
        record.seal = change.seal.clone();
    }
    record.live += admitted.len() as u32;
    for path in admitted {
        if !record.paths.contains(&path) {
            record.paths.push(path);
        }
    }
    batch.log(&change.dot, &record);
    Ok(())
}

impl Store {
    /// Applies changes received from a peer, all in one atomic write. Every chunk of every
    /// live file version must already be stored (see [`Store::missing_chunks`]).
    ///
    /// `progress` is `(base, upto)` from the sender: if this node's progress covered
    /// `base` before the changes, it covers `upto` after them (the sender sent every
    /// version this node lacked between the two). Otherwise the changes are applied but
    /// progress does not move, and the caller should ask the sender to resend from this
    /// node's real progress.
    pub fn apply_remote(
        &self,
        changes: &[Change],
        progress: Option<(&VersionVector, &VersionVector)>,
        wall_ms: u64,
    ) -> Result<Applied> {
        self.ensure_space(inline_bytes(changes))?;
        let mut writer = self.inner.writer.lock();
        let mut batch = Batch::new(self);
        let mut applied = Applied::default();
        for change in changes {
            // Nothing of the batch is written when one change is refused.
            validate(change)?;
            if !self.admissible(&mut writer, change, wall_ms, &mut applied)? {
                continue;
            }
            let admitted = self.admit_change(&mut batch, &writer, change, &mut applied)?;
            record_change(self, &mut batch, change, admitted)?;
        }
        batch.settle()?;
        batch.release_log_records()?;
        if let Some((base, upto)) = progress {
            self.adopt_progress(&mut writer, base, upto, changes, &mut applied)?;
        }
        writer.persist(&mut batch);
        applied.changed = batch.changed.iter().cloned().collect();
        self.write_batch(batch, Durability::Process)?;
        Ok(applied)
    }

    /// False if `change` is under this node's name beyond its own sequence: not made
    /// here (forged), or made here and lost with the store's last writes; never applied
    /// under this node's name either way. Otherwise moves the clock past the change's
    /// time, or refuses the change if it is stamped too far ahead.
    fn admissible(
        &self,
        writer: &mut Writer,
        change: &Change,
        wall_ms: u64,
        applied: &mut Applied,
    ) -> Result<bool> {
        if &change.dot.node == self.node() && change.dot.seq > writer.seq {
            applied.not_made_here.push(change.dot.clone());
            return Ok(false);
        }
        writer
            .clock
            .observe(change.hlc, wall_ms)
            .map_err(|drift| StoreError::AheadOfClock {
                dot: change.dot.clone(),
                drift,
            })?;
        Ok(true)
    }

    /// Applies the arrival rule ([`arrive`]) to each version of `change` and writes what
    /// it decides. Returns the paths where the change's version became a head.
    fn admit_change(
        &self,
        batch: &mut Batch<'_>,
        writer: &Writer,
        change: &Change,
        applied: &mut Applied,
    ) -> Result<Vec<RelPath>> {
        let mut admitted = Vec::new();
        for op in &change.ops {
            let version = change.version(op);
            let heads = batch.heads(&op.path)?;
            let source = Source::Peer {
                progress: &writer.vv,
                lead: &batch.lead,
            };
            let Arrival::Joins { evicted, cut_off } = arrive(&heads, &version, source) else {
                applied.obsolete += 1;
                continue;
            };
            if cut_off {
                applied.cut_off.push(op.path.clone());
            }
            self.check_chunk_lengths(change, op)?;
            batch.join(&op.path, &evicted, version)?;
            admitted.push(op.path.clone());
        }
        applied.admitted += admitted.len();
        Ok(admitted)
    }

    /// Adopts the sender's progress `upto` if this node's progress covered `base` before
    /// the changes (see [`Store::apply_remote`]), as far as the sender can back it.
    fn adopt_progress(
        &self,
        writer: &mut Writer,
        base: &VersionVector,
        upto: &VersionVector,
        changes: &[Change],
        applied: &mut Applied,
    ) -> Result<()> {
        if !writer.vv.dominates(base) {
            return Ok(());
        }
        let provable = self.provable(upto, changes, &writer.vv, writer.seq)?;
        applied.unproven = provable != *upto;
        writer.adopt(&provable);
        applied.progressed = true;
        Ok(())
    }

    /// The part of a peer's progress claim `upto` that it can back: for each node, no
    /// more than this node already covers, the batch's changes and contexts name, or
    /// its log holds (earlier parts of the batch); for this node itself, no more than
    /// its own sequence `own_seq`. A peer that claims more (a forged `mgr:1000000`)
    /// would otherwise make this node, and every node it talks to, take the named
    /// node's next changes for known ones. An honest claim is cut only for changes
    /// of which nothing is left anywhere (collected tombstones, on a node that joined
    /// after); the entry then catches up with that node's next change.
    fn provable(
        &self,
        upto: &VersionVector,
        changes: &[Change],
        covered: &VersionVector,
        own_seq: u64,
    ) -> Result<VersionVector> {
        let own = self.node();
        let mut evidence = covered.clone();
        for change in changes {
            evidence.raise(&change.dot.node, change.dot.seq);
            for op in &change.ops {
                evidence.merge(&op.ctx);
            }
        }
        let mut provable = VersionVector::new();
        for (node, seq) in upto.iter() {
            let bound = if node == own {
                own_seq
            } else if evidence.get(node) >= seq {
                seq
            } else {
                evidence.get(node).max(self.highest_logged(node)?)
            };
            provable.raise(node, seq.min(bound));
        }
        debug_assert!(upto.dominates(&provable), "a claim is only ever cut");
        Ok(provable)
    }

    /// The highest sequence number of `node`'s changes this store has a log record of.
    fn highest_logged(&self, node: &NodeName) -> Result<u64> {
        let db = &self.inner.db;
        let mut iter = db.raw_iterator_cf(cf(db, CF_LOG));
        iter.seek_for_prev(log_key(&Dot::new(node.clone(), u64::MAX)));
        let found = iter
            .key()
            .and_then(parse_log_key)
            .filter(|dot| &dot.node == node)
            .map_or(0, |dot| dot.seq);
        iter.status()?;
        Ok(found)
    }

    /// Refuses a file version whose chunk references claim other lengths than the
    /// stored chunks have: reading it would return short or shifted data (see
    /// [`ContentReader::read`](crate::chunks::ContentReader::read), which checks again).
    fn check_chunk_lengths(&self, change: &Change, op: &ChangeOp) -> Result<()> {
        let State::Live(node) = &op.state else {
            return Ok(());
        };
        let db = &self.inner.db;
        for chunk in node.content.chunks() {
            if let Some(bytes) = db.get_pinned_cf(cf(db, CF_CHUNKS), chunk.hash.0)? {
                if bytes.len() != chunk.len as usize {
                    return Err(malformed(format!(
                        "change {}: {} references chunk {:?} as {} bytes; it has {}",
                        change.dot,
                        op.path,
                        chunk.hash,
                        chunk.len,
                        bytes.len()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Chunks that `changes` reference and this store lacks. The chunks it has are pinned
    /// by the returned guard until the changes are applied.
    pub fn missing_chunks(&self, changes: &[Change]) -> Result<(Vec<ChunkHash>, PinGuard)> {
        let mut all = Vec::new();
        for change in changes {
            for op in &change.ops {
                if let State::Live(node) = &op.state {
                    if node.meta.kind == Kind::File {
                        all.extend(node.content.chunks().iter().map(|c| c.hash));
                    }
                }
            }
        }
        all.sort();
        all.dedup();
        let guard = self.pin_hashes(&all);
        let db = &self.inner.db;
        let mut missing = Vec::new();
        for hash in all {
            // Stored and referenced, or received (and logged) for a change not yet
            // applied; not the unlogged bytes of a local bulk write in progress.
            let present = db.get_pinned_cf(cf(db, CF_REFS), hash.0)?.is_some()
                || db
                    .get_pinned_cf(cf(db, CF_PENDING), hash.0)?
                    .is_some_and(|marker| marker.as_ref() != PENDING_UNFLUSHED);
            if !present {
                missing.push(hash);
            }
        }
        Ok((missing, guard))
    }

    /// Stores chunks received from a peer after checking each against its hash. They are
    /// pinned by the returned guard until the changes that use them are applied.
    pub fn put_chunks(&self, chunks: &[ChunkData]) -> Result<PinGuard> {
        for ChunkData { hash, data } in chunks {
            if data.len() > depfs_proto::limits::CHUNK_MAX as usize || !hash.verifies(data) {
                return Err(StoreError::BadChunk(*hash));
            }
        }
        self.ensure_space(chunks.iter().map(|c| c.data.len() as u64).sum())?;
        let hashes: Vec<ChunkHash> = chunks.iter().map(|c| c.hash).collect();
        let guard = self.pin_hashes(&hashes);
        {
            // Unreferenced until applied: collected when unpinned if never used.
            let mut pins = self.inner.pins.lock();
            for hash in &hashes {
                pins.defer(*hash);
            }
        }
        let db = &self.inner.db;
        let mut batch = WriteBatch::default();
        for ChunkData { hash, data } in chunks {
            batch.put_cf(cf(db, CF_CHUNKS), hash.0, data);
            if db.get_pinned_cf(cf(db, CF_REFS), hash.0)?.is_none() {
                batch.put_cf(cf(db, CF_PENDING), hash.0, []);
            }
        }
        db.write(batch)?;
        Ok(guard)
    }

    /// The chunk's bytes if it is stored (for a peer that asked for it).
    pub fn chunk_if_present(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>> {
        match self.read_chunk(hash) {
            Ok(bytes) => Ok(Some(bytes)),
            // A damaged copy is never served: the peer asks someone else.
            Err(StoreError::MissingChunk(_) | StoreError::BadChunk(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The changes a node with progress `base` lacks, in log order: every change with a
    /// version still current here whose dot `base` does not cover.
    pub fn dots_since(&self, base: &VersionVector) -> Result<Vec<Dot>> {
        let db = &self.inner.db;
        let mut out = Vec::new();
        let mut iter = db.raw_iterator_cf(cf(db, CF_LOG));
        iter.seek_to_first();
        while iter.valid() {
            let Some(key) = iter.key() else { break };
            let Some(dot) = parse_log_key(key) else {
                return Err(StoreError::Malformed(format!("log key {key:?}")));
            };
            let known = base.get(&dot.node);
            if dot.seq <= known {
                iter.seek(log_key(&Dot::new(
                    dot.node.clone(),
                    known.saturating_add(1),
                )));
                continue;
            }
            out.push(dot);
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }

    /// Signs this node's changes that the log keeps unsigned — made before a signer was
    /// set: in a store written before changes were signed, or while the node ran alone
    /// without TLS — so that peers accept them. Only the versions still current are
    /// sealed: nothing else of such a change is ever sent again. Returns how many
    /// changes were sealed.
    ///
    /// Only the changes after the last pass are looked at: every commit made while a
    /// signer is set is sealed, and one made without gets a later sequence number.
    pub fn seal_own_changes(&self) -> Result<usize> {
        let Some(signer) = self.inner.signer.read().clone() else {
            return Ok(0);
        };
        // Commits and applies rewrite log records (their live counts): not meanwhile.
        let writer = self.inner.writer.lock();
        let db = &self.inner.db;
        let sealed_upto = match db.get_cf(cf(db, CF_META), META_SEALED_UPTO)? {
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice()).map_or(0, u64::from_be_bytes),
            None => 0,
        };
        let mut prefix = self.node().as_str().as_bytes().to_vec();
        prefix.push(0);
        let first = log_key(&Dot::new(
            self.node().clone(),
            sealed_upto.saturating_add(1),
        ));
        let mut batch = rocksdb::WriteBatch::default();
        let mut sealed = 0;
        let start = rocksdb::IteratorMode::From(&first, rocksdb::Direction::Forward);
        for item in db.iterator_cf(cf(db, CF_LOG), start) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let Some(dot) = parse_log_key(&key) else {
                continue;
            };
            let mut record = read_record(&dot, &value)?;
            if record.seal.is_signed() {
                continue;
            }
            let Some(change) = self.change(&dot)? else {
                continue;
            };
            record.seal = Seal::of_ops(&dot, record.hlc, &change.ops, signer.as_ref());
            batch.put_cf(cf(db, CF_LOG), &key, encode_value(&record));
            sealed += 1;
        }
        batch.put_cf(cf(db, CF_META), META_SEALED_UPTO, writer.seq.to_be_bytes());
        db.write(batch)?;
        Ok(sealed)
    }

    /// The change `dot` as it is current here (its superseded parts left out), or `None`
    /// if nothing of it is current any more.
    pub fn change(&self, dot: &Dot) -> Result<Option<Change>> {
        let Some(record) = self.log_record(dot)? else {
            return Ok(None);
        };
        let mut ops = Vec::new();
        for path in record.paths {
            if let Some(version) = self.heads(&path)?.into_iter().find(|h| &h.dot == dot) {
                ops.push(ChangeOp {
                    path,
                    ctx: version.ctx,
                    state: version.state,
                });
            }
        }
        Ok((!ops.is_empty()).then(|| Change {
            dot: dot.clone(),
            hlc: record.hlc,
            ops,
            seal: record.seal,
        }))
    }

    /// Records the progress `peer` acknowledged (monotonic).
    pub fn set_peer_acked(&self, peer: &NodeName, vv: &VersionVector) -> Result<VersionVector> {
        let mut merged = self.peer_acked(peer)?;
        if merged.dominates(vv) {
            return Ok(merged);
        }
        merged.merge(vv);
        let db = &self.inner.db;
        db.put_cf(cf(db, CF_META), acked_key(peer), encode_value(&merged))?;
        Ok(merged)
    }

    /// Every peer that has acknowledged progress to this node, ever.
    pub fn acked_peers(&self) -> Result<Vec<NodeName>> {
        let db = &self.inner.db;
        let mut peers = Vec::new();
        let start = IteratorMode::From(META_ACKED_PREFIX, Direction::Forward);
        for item in db.iterator_cf(cf(db, CF_META), start) {
            let (key, _) = item?;
            let Some(name) = key.strip_prefix(META_ACKED_PREFIX) else {
                break;
            };
            let name = std::str::from_utf8(name)
                .ok()
                .and_then(|n| NodeName::new(n).ok())
                .ok_or_else(|| {
                    StoreError::Malformed(format!("meta key {key:?} names no valid node"))
                })?;
            peers.push(name);
        }
        Ok(peers)
    }

    /// The progress `peer` last acknowledged.
    pub fn peer_acked(&self, peer: &NodeName) -> Result<VersionVector> {
        let db = &self.inner.db;
        match db.get_pinned_cf(cf(db, CF_META), acked_key(peer))? {
            Some(bytes) => decode_value(&bytes).map_err(|source| StoreError::Corrupt {
                what: format!("meta/acked/{peer}"),
                source,
            }),
            None => Ok(VersionVector::new()),
        }
    }

    /// Deletes tombstones that every peer in `peers` has acknowledged and that are the
    /// only head of their path: nothing can bring back what they deleted (see
    /// `docs/design.md`). Returns how many were collected.
    pub fn collect_tombstones(&self, peers: &[NodeName]) -> Result<usize> {
        let mut covered: Option<VersionVector> = None;
        for peer in peers {
            let acked = self.peer_acked(peer)?;
            covered = Some(match covered {
                None => acked,
                Some(c) => min(&c, &acked),
            });
        }
        let covered = match covered {
            Some(c) => c,
            None => self.version_vector(),
        };
        let writer = self.inner.writer.lock();
        let mut batch = Batch::new(self);
        let mut collected = 0;
        let db = &self.inner.db;
        for item in db.iterator_cf(cf(db, CF_LOG), IteratorMode::From(&[], Direction::Forward)) {
            let (key, value) = item?;
            let Some(dot) = parse_log_key(&key) else {
                continue;
            };
            if !covered.covers(&dot) {
                continue;
            }
            let record = read_record(&dot, &value)?;
            for path in &record.paths {
                let heads = batch.heads(path)?;
                if let [only] = heads.as_slice() {
                    if only.dot == dot && matches!(only.state, State::Deleted) {
                        batch.evict(path, only)?;
                        collected += 1;
                    }
                }
            }
        }
        batch.settle()?;
        batch.release_log_records()?;
        writer.persist(&mut batch);
        // Also deletes chunks whose last pin went without a commit using them.
        self.write_batch(batch, Durability::Process)?;
        Ok(collected)
    }
}

fn acked_key(peer: &NodeName) -> Vec<u8> {
    let mut key = META_ACKED_PREFIX.to_vec();
    key.extend_from_slice(peer.as_str().as_bytes());
    key
}

/// Pointwise minimum of two version vectors.
fn min(a: &VersionVector, b: &VersionVector) -> VersionVector {
    let mut out = VersionVector::new();
    for (node, seq) in a.iter() {
        out.raise(node, seq.min(b.get(node)));
    }
    out
}

/// Refuses changes no honest node makes: a version must cover its own dot, paths must be
/// unique, the root cannot be deleted, and content must be within limits.
fn validate(change: &Change) -> Result<()> {
    if change.dot.seq == 0 {
        return Err(malformed(format!(
            "change {} has sequence number 0",
            change.dot
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for op in &change.ops {
        if !op.ctx.covers(&change.dot) {
            return Err(malformed(format!(
                "change {}: version of {} does not cover its own dot",
                change.dot, op.path
            )));
        }
        if !seen.insert(&op.path) {
            return Err(malformed(format!(
                "change {} writes {} twice",
                change.dot, op.path
            )));
        }
        match &op.state {
            State::Deleted if op.path.is_root() => {
                return Err(malformed(format!("change {} deletes the root", change.dot)));
            }
            State::Live(node) if op.path.is_root() && node.meta.kind != Kind::Dir => {
                return Err(malformed(format!(
                    "change {} makes the root a non-directory",
                    change.dot
                )));
            }
            State::Live(node) => validate_live(change, op, node)?,
            State::Deleted => {}
        }
    }
    Ok(())
}

/// Refuses a live entry no honest node makes: content of the wrong form or beyond the
/// limits for its kind, nanoseconds beyond a second, a symlink target holding NUL, or
/// permission bits beyond `0o7777`.
fn validate_live(change: &Change, op: &ChangeOp, node: &Node) -> Result<()> {
    let content_ok = match (&node.meta.kind, &node.content) {
        (Kind::Dir, Content::Inline(b)) => b.is_empty(),
        (Kind::Symlink, Content::Inline(b)) => {
            !b.is_empty() && b.len() <= depfs_proto::limits::MAX_SYMLINK_LEN
        }
        (Kind::File, Content::Inline(b)) => b.len() <= depfs_proto::limits::INLINE_MAX,
        (Kind::File, Content::Chunked(c)) => c
            .iter()
            .all(|c| c.len > 0 && c.len <= depfs_proto::limits::CHUNK_MAX),
        _ => false,
    };
    if !content_ok || node.size() > depfs_proto::limits::MAX_FILE_SIZE {
        return Err(malformed(format!(
            "change {}: bad content for {}",
            change.dot, op.path
        )));
    }
    let times_ok = [node.meta.mtime, node.meta.ctime]
        .iter()
        .all(|t| t.nanos < 1_000_000_000);
    let symlink_ok = match (&node.meta.kind, &node.content) {
        (Kind::Symlink, Content::Inline(target)) => !target.contains(&0),
        _ => true,
    };
    if !times_ok || !symlink_ok || node.meta.perm > 0o7777 {
        return Err(malformed(format!(
            "change {}: bad attributes for {}",
            change.dot, op.path
        )));
    }
    Ok(())
}
