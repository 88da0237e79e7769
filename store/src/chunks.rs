//! Content: inline bytes or blake3-addressed chunks cut by FastCDC.
//!
//! Chunks are deduplicated by hash and reference-counted by the entries (and conflicts)
//! that use them. A chunk is deleted in the commit that drops its count to zero, unless
//! it is *pinned*: an open file (possibly already unlinked or replaced) or a content being
//! committed holds pins, and a pinned chunk's deletion waits until the last pin goes.
//!
//! Chunks written for a commit that never happens (a crash between writing chunks and
//! committing) carry a `pending` marker and are swept at the next open.
//!
//! Content is cut in *segments* of [`SEGMENT`] bytes, with a cut forced at every segment
//! boundary, so that the segments of a large file are chunked, hashed and written by
//! several threads at once, and the chunks do not depend on how many did it. A forced
//! cut costs little deduplication: an insertion changes at most the two chunks around
//! each later boundary (32 KiB in 8 MiB), an overwrite in place none.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use depfs_proto::limits::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, INLINE_MAX, MAX_FILE_SIZE};
use depfs_proto::{ChunkData, ChunkHash, ChunkRef, ChunkSet, Content};
use rocksdb::WriteBatch;

use crate::db::cf;
use crate::error::{Result, StoreError};
use crate::keys::{
    damaged_key, CF_CHUNKS, CF_META, CF_PENDING, CF_REFS, META_DAMAGED_PREFIX, PENDING_UNFLUSHED,
};
use crate::pins::PinTable;
use crate::store::{Inner, Store};

/// Chunk batches are written in pieces of about this size, bounding the memory a large
/// file's commit needs.
const CHUNK_BATCH_BYTES: usize = 8 << 20;

/// Content is chunked in independent segments of this size (see the module doc).
pub const SEGMENT: u64 = 8 << 20;

/// Contents at least this large have their chunks written around the write-ahead log
/// and flushed into blob files before the commit that references them (see
/// [`ChunkWriter`]).
const BULK_CONTENT_BYTES: u64 = 32 << 20;

/// The chunks of one segment, written and pinned.
type Segment = (Vec<ChunkRef>, PinGuard);

/// At most this many threads chunk one content.
const MAX_CHUNKING_THREADS: usize = 4;

/// Content to store, read by position, so that several threads can read its segments.
pub trait ContentSource: Sync {
    /// Fills `buf` with the bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ContentSource for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match self.get(start..).and_then(|rest| rest.get(..buf.len())) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

impl ContentSource for std::fs::File {
    /// Past the end of the file (a file extended with `set_len` may still be shorter on
    /// disk than its length says), bytes read as zeros.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n =
                std::os::unix::fs::FileExt::read_at(self, &mut buf[done..], offset + done as u64)?;
            if n == 0 {
                buf[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }
}

/// Keeps a set of chunks from being deleted while it lives.
#[must_use = "chunks are unpinned when the guard is dropped"]
pub struct PinGuard {
    inner: Option<Arc<Inner>>,
    hashes: Vec<ChunkHash>,
}

impl PinGuard {
    /// A guard that pins nothing (inline content).
    pub fn none() -> Self {
        PinGuard {
            inner: None,
            hashes: Vec::new(),
        }
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            let mut pins = inner.pins.lock();
            for hash in &self.hashes {
                pins.unpin(hash);
            }
        }
    }
}

impl std::fmt::Debug for PinGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinGuard({} chunks)", self.hashes.len())
    }
}

impl Store {
    /// Pins the chunks of `content` (they stay readable until the guard is dropped).
    /// The caller must have read `content` from the store while no commit could delete
    /// its chunks: use [`Store::get_pinned`] for entries.
    pub fn pin(&self, content: &Content) -> PinGuard {
        let hashes: Vec<ChunkHash> = content.chunks().iter().map(|c| c.hash).collect();
        self.pin_hashes(&hashes)
    }

    /// Pins chunks by hash.
    pub(crate) fn pin_hashes(&self, hashes: &[ChunkHash]) -> PinGuard {
        if hashes.is_empty() {
            return PinGuard::none();
        }
        let mut pins = self.inner.pins.lock();
        self.pin_under(&mut pins, hashes.to_vec())
    }

    /// Pins `hashes` with the pin table already locked (see [`Store::get_pinned`]).
    pub(crate) fn pin_under(&self, pins: &mut PinTable, hashes: Vec<ChunkHash>) -> PinGuard {
        if hashes.is_empty() {
            return PinGuard::none();
        }
        for hash in &hashes {
            pins.pin(*hash);
        }
        PinGuard {
            inner: Some(self.inner.clone()),
            hashes,
        }
    }

    /// Stores `data` as content: inline if small, else as chunks (written now, counted
    /// when a commit references them). The guard keeps the chunks alive until that commit.
    pub fn write_content(&self, data: &[u8]) -> Result<(Content, PinGuard)> {
        self.write_content_from(data, data.len() as u64)
    }

    /// Like [`Store::write_content`] for the first `len` bytes of `source` (a staging
    /// file), holding one segment per thread in memory, not the whole content.
    pub fn write_content_from(
        &self,
        source: &(impl ContentSource + ?Sized),
        len: u64,
    ) -> Result<(Content, PinGuard)> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_CHUNKING_THREADS);
        self.write_content_with_threads(source, len, threads)
    }

    /// Like [`Store::write_content_from`], chunking on at most `threads` threads (one
    /// for work in the background, which must leave the machine to the foreground).
    pub fn write_content_with_threads(
        &self,
        source: &(impl ContentSource + ?Sized),
        len: u64,
        threads: usize,
    ) -> Result<(Content, PinGuard)> {
        if len > MAX_FILE_SIZE {
            return Err(StoreError::TooLarge(len));
        }
        if len <= INLINE_MAX as u64 {
            let mut data = vec![0u8; len as usize];
            source
                .read_exact_at(&mut data, 0)
                .map_err(|e| StoreError::io("read staged content", e))?;
            return Ok((Content::Inline(data), PinGuard::none()));
        }
        self.ensure_space(len)?;
        let bulk = len >= BULK_CONTENT_BYTES;
        let segments = len.div_ceil(SEGMENT) as usize;
        let threads = threads.clamp(1, MAX_CHUNKING_THREADS).min(segments);
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let done: Vec<parking_lot::Mutex<Option<Result<Segment>>>> = (0..segments)
            .map(|_| parking_lot::Mutex::new(None))
            .collect();
        let work = || {
            let mut buf = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= segments {
                    break;
                }
                let result = self.write_segment(source, i as u64 * SEGMENT, len, bulk, &mut buf);
                failed.fetch_or(result.is_err(), Ordering::Relaxed);
                *done[i].lock() = Some(result);
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(work);
            }
            work();
        });
        let mut refs = Vec::new();
        let mut pins = PinGuard {
            inner: Some(self.inner.clone()),
            hashes: Vec::new(),
        };
        for segment in done {
            // A segment not started is after one that failed, whose error is returned.
            let Some(result) = segment.into_inner() else {
                continue;
            };
            let (segment_refs, mut segment_pins) = result?;
            refs.extend(segment_refs);
            pins.hashes.append(&mut segment_pins.hashes);
        }
        if bulk {
            // The chunks written without the log reach blob files before any commit
            // can name them (the commit itself is logged as always).
            let db = &self.inner.db;
            db.flush_cf(cf(db, CF_CHUNKS))?;
        }
        Ok((Content::Chunked(refs), pins))
    }

    /// Chunks, hashes and writes the segment of `source` at `start`, using `buf`.
    fn write_segment(
        &self,
        source: &(impl ContentSource + ?Sized),
        start: u64,
        len: u64,
        bulk: bool,
        buf: &mut Vec<u8>,
    ) -> Result<Segment> {
        let size = SEGMENT.min(len - start) as usize;
        buf.resize(size, 0);
        source
            .read_exact_at(buf, start)
            .map_err(|e| StoreError::io("read staged content", e))?;
        let mut writer = ChunkWriter::new(self, bulk);
        for cut in fastcdc::v2020::FastCDC::new(buf, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX) {
            writer.add(&buf[cut.offset..cut.offset + cut.length])?;
        }
        writer.finish()
    }

    /// Reads one chunk and checks it against its hash. A chunk whose bytes do not match
    /// is quarantined (see [`Store::damaged_chunks`]): the reader gets
    /// [`StoreError::BadChunk`] — never wrong bytes — until a peer's copy repairs it.
    pub fn read_chunk(&self, hash: &ChunkHash) -> Result<Vec<u8>> {
        let db = &self.inner.db;
        match db.get_pinned_cf(cf(db, CF_CHUNKS), hash.0)? {
            Some(bytes) if hash.verifies(&bytes) => Ok(bytes.to_vec()),
            Some(_) => {
                self.quarantine_chunk(hash)?;
                Err(StoreError::BadChunk(*hash))
            }
            None if self.is_damaged(hash)? => Err(StoreError::BadChunk(*hash)),
            None => Err(StoreError::MissingChunk(*hash)),
        }
    }

    /// Reads the chunk `chunk` names, checked against its hash (see
    /// [`Store::read_chunk`]) and against the length the reference claims.
    pub fn read_chunk_ref(&self, chunk: &ChunkRef) -> Result<Vec<u8>> {
        let bytes = self.read_chunk(&chunk.hash)?;
        if bytes.len() != chunk.len as usize {
            return Err(StoreError::ChunkLength {
                hash: chunk.hash,
                claimed: chunk.len,
                stored: bytes.len(),
            });
        }
        Ok(bytes)
    }

    /// Overwrites a stored chunk's bytes without any check: fault injection for tests
    /// and recovery drills (depfs itself never calls it).
    #[doc(hidden)]
    pub fn inject_chunk_corruption(&self, hash: &ChunkHash, bytes: &[u8]) -> Result<()> {
        let db = &self.inner.db;
        db.put_cf(cf(db, CF_CHUNKS), hash.0, bytes)?;
        Ok(())
    }

    /// Removes a chunk whose bytes do not match its hash and records it as damaged, so
    /// the replicator fetches it again from a peer.
    pub(crate) fn quarantine_chunk(&self, hash: &ChunkHash) -> Result<()> {
        tracing::error!(chunk = ?hash, "chunk corrupt on disk (blake3 mismatch): quarantined until a peer's copy repairs it");
        let db = &self.inner.db;
        let mut batch = WriteBatch::default();
        batch.delete_cf(cf(db, CF_CHUNKS), hash.0);
        batch.put_cf(cf(db, CF_META), damaged_key(hash), []);
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        db.write_opt(batch, &options)?;
        Ok(())
    }

    fn is_damaged(&self, hash: &ChunkHash) -> Result<bool> {
        let db = &self.inner.db;
        Ok(db
            .get_pinned_cf(cf(db, CF_META), damaged_key(hash))?
            .is_some())
    }

    /// Chunks found corrupt and not repaired yet that some version still uses (marks of
    /// chunks nothing uses any more are dropped).
    pub fn damaged_chunks(&self) -> Result<Vec<ChunkHash>> {
        let db = &self.inner.db;
        let mut out = Vec::new();
        let mut unused = Vec::new();
        for item in crate::db::prefix_iter(db, CF_META, META_DAMAGED_PREFIX) {
            let (key, _) = item?;
            let Some(rest) = key.strip_prefix(META_DAMAGED_PREFIX) else {
                break;
            };
            let Ok(bytes) = <[u8; 32]>::try_from(rest) else {
                unused.push(key.to_vec());
                continue;
            };
            let hash = ChunkHash(bytes);
            if db.get_pinned_cf(cf(db, CF_REFS), hash.0)?.is_some() {
                out.push(hash);
            } else {
                unused.push(key.to_vec());
            }
        }
        if !unused.is_empty() {
            let mut batch = WriteBatch::default();
            for key in unused {
                batch.delete_cf(cf(db, CF_META), key);
            }
            db.write(batch)?;
        }
        Ok(out)
    }

    /// Stores the peer-sent copies of damaged chunks that match their hash. Returns how
    /// many were repaired.
    pub fn repair_chunks(&self, chunks: &[ChunkData]) -> Result<usize> {
        let db = &self.inner.db;
        let mut batch = WriteBatch::default();
        let mut repaired = 0;
        for ChunkData { hash, data } in chunks {
            if hash.verifies(data) && self.is_damaged(hash)? {
                batch.put_cf(cf(db, CF_CHUNKS), hash.0, data);
                batch.delete_cf(cf(db, CF_META), damaged_key(hash));
                repaired += 1;
            }
        }
        if repaired > 0 {
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(true);
            db.write_opt(batch, &options)?;
            tracing::info!(repaired, "damaged chunks repaired from a peer's copy");
        }
        Ok(repaired)
    }

    /// Deletes chunks that were written for a commit that never happened.
    pub(crate) fn sweep_uncommitted_chunks(&self) -> Result<()> {
        let db = &self.inner.db;
        let mut batch = WriteBatch::default();
        let mut swept = 0usize;
        for item in db.iterator_cf(cf(db, CF_PENDING), rocksdb::IteratorMode::Start) {
            let (key, _) = item?;
            if db.get_pinned_cf(cf(db, CF_REFS), &key)?.is_none() {
                batch.delete_cf(cf(db, CF_CHUNKS), &key);
                swept += 1;
            }
            batch.delete_cf(cf(db, CF_PENDING), &key);
        }
        if !batch.is_empty() {
            db.write(batch)?;
        }
        if swept > 0 {
            tracing::info!(swept, "removed chunks of commits interrupted by a crash");
        }
        Ok(())
    }
}

/// Writes the chunks of one content in bounded batches, pinning each before it checks
/// whether the chunk is already stored (so a concurrent commit cannot delete it between
/// the check and our commit).
///
/// In *bulk* mode (large contents) the chunk bytes skip RocksDB's write-ahead log: they
/// would be written three times (log, then blob file at the memtable's flush, the log
/// kept until then), and the flush of what is left would run after the commit, next to
/// whatever the user does with the file (it slows a read right after the close; the
/// figure is in docs/measurements.md). Instead the caller flushes the chunks' memtable
/// before committing. The `pending` markers still go through the log, ahead of the bytes they mark, so a crash
/// leaves nothing the sweep at the next start does not find. They say `unflushed`: a
/// change from a peer naming the same chunk must not count it as stored (its commit is
/// logged; these bytes are not, until the flush), so the chunk is fetched from the peer.
struct ChunkWriter<'a> {
    store: &'a Store,
    bulk: bool,
    /// Chunk bytes (and, unless bulk, their markers).
    batch: WriteBatch,
    /// Bulk only: the markers of the chunks in `batch`, written first with the log.
    markers: WriteBatch,
    batch_bytes: usize,
    refs: Vec<ChunkRef>,
    pins: PinGuard,
    written: ChunkSet,
}

impl<'a> ChunkWriter<'a> {
    fn new(store: &'a Store, bulk: bool) -> Self {
        ChunkWriter {
            store,
            bulk,
            batch: WriteBatch::default(),
            markers: WriteBatch::default(),
            batch_bytes: 0,
            refs: Vec::new(),
            pins: PinGuard {
                inner: Some(store.inner.clone()),
                hashes: Vec::new(),
            },
            written: ChunkSet::default(),
        }
    }

    fn add(&mut self, data: &[u8]) -> Result<()> {
        let hash = ChunkHash::of(data);
        self.refs.push(ChunkRef {
            hash,
            len: data.len() as u32,
        });
        self.store.inner.pins.lock().pin(hash);
        self.pins.hashes.push(hash);
        let db = &self.store.inner.db;
        if !self.written.contains(&hash) && db.get_pinned_cf(cf(db, CF_REFS), hash.0)?.is_none() {
            // Unreferenced until a commit uses it: collected when unpinned if none does.
            self.store.inner.pins.lock().defer(hash);
            self.batch.put_cf(cf(db, CF_CHUNKS), hash.0, data);
            let (markers, marker): (_, &[u8]) = if self.bulk {
                (&mut self.markers, PENDING_UNFLUSHED)
            } else {
                (&mut self.batch, &[])
            };
            markers.put_cf(cf(db, CF_PENDING), hash.0, marker);
            self.batch_bytes += data.len();
            self.written.insert(hash);
            if self.batch_bytes >= CHUNK_BATCH_BYTES {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let db = &self.store.inner.db;
        let markers = std::mem::take(&mut self.markers);
        if !markers.is_empty() {
            db.write(markers)?;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if !batch.is_empty() {
            let mut options = rocksdb::WriteOptions::default();
            options.disable_wal(self.bulk);
            db.write_opt(batch, &options)?;
        }
        Ok(())
    }

    /// The chunks written, in order, and their pins.
    fn finish(mut self) -> Result<Segment> {
        self.flush()?;
        let pins = std::mem::replace(&mut self.pins, PinGuard::none());
        Ok((std::mem::take(&mut self.refs), pins))
    }
}

/// Random access to one content: inline bytes, or chunks located by a prefix-sum index.
#[derive(Debug, Clone)]
pub struct ContentReader {
    content: Content,
    /// Start offset of each chunk, plus the total size at the end.
    offsets: Vec<u64>,
}

impl ContentReader {
    /// Indexes `content` for reading.
    pub fn new(content: Content) -> Self {
        let mut offsets = Vec::with_capacity(content.chunks().len() + 1);
        let mut at = 0u64;
        for chunk in content.chunks() {
            offsets.push(at);
            at += u64::from(chunk.len);
        }
        offsets.push(at);
        ContentReader { content, offsets }
    }

    /// The content read.
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// Total size.
    pub fn size(&self) -> u64 {
        self.content.size()
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the content). Every chunk read
    /// is verified against its hash.
    pub fn read(&self, store: &Store, offset: u64, len: usize) -> Result<Vec<u8>> {
        let size = self.size();
        if offset >= size || len == 0 {
            return Ok(Vec::new());
        }
        let end = size.min(offset.saturating_add(len as u64));
        match &self.content {
            Content::Inline(bytes) => Ok(bytes
                .get(offset as usize..end as usize)
                .unwrap_or_default()
                .to_vec()),
            Content::Chunked(chunks) => {
                let mut out = Vec::with_capacity((end - offset) as usize);
                // The chunk containing `offset`: the last start <= offset.
                let first = self.offsets.partition_point(|&start| start <= offset);
                for (chunk, &start) in chunks
                    .iter()
                    .zip(&self.offsets)
                    .skip(first.saturating_sub(1))
                {
                    if start >= end {
                        break;
                    }
                    // Its length is checked against the reference: the offsets above
                    // were computed from the claimed lengths.
                    let data = store.read_chunk_ref(chunk)?;
                    let from = offset.saturating_sub(start) as usize;
                    let to = ((end - start) as usize).min(data.len());
                    out.extend_from_slice(data.get(from..to).unwrap_or_default());
                }
                debug_assert_eq!(
                    out.len() as u64,
                    end - offset,
                    "a read returns what it spans"
                );
                Ok(out)
            }
        }
    }
}
