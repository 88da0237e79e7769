//! What one path holds: its kind, attributes and a reference to its content.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::INLINE_MAX;

/// The kinds of entry depfs stores. Devices, FIFOs and sockets are refused: they have no
/// meaning on another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; its target is the content.
    Symlink,
}

/// A point in time with nanosecond precision, as in `struct timespec`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timespec {
    /// Seconds since the Unix epoch (may be negative).
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Timespec {
    /// Builds a timespec, normalising nanoseconds out of range into seconds.
    pub fn new(secs: i64, nanos: u32) -> Self {
        Timespec {
            secs: secs.saturating_add(i64::from(nanos / 1_000_000_000)),
            nanos: nanos % 1_000_000_000,
        }
    }

    /// From milliseconds since the epoch.
    pub fn from_millis(ms: u64) -> Self {
        Timespec::new((ms / 1000) as i64, ((ms % 1000) * 1_000_000) as u32)
    }
}

/// Attributes of an entry. `mtime` is replicated exactly (WSO2's deployer watches it);
/// `ctime` records when this version was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// File, directory or symlink.
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last content modification.
    pub mtime: Timespec,
    /// Last change of content or attributes.
    pub ctime: Timespec,
}

/// A blake3 hash: the address of a content chunk.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    /// Hashes `data` with blake3.
    pub fn of(data: &[u8]) -> Self {
        ChunkHash(*blake3::hash(data).as_bytes())
    }

    /// True if `data` is what this hash names: every chunk read from disk or received
    /// from a peer is checked with this before it is used.
    pub fn verifies(&self, data: &[u8]) -> bool {
        Self::of(data) == *self
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A `BuildHasher` for tables keyed by [`ChunkHash`]: a large file's open, close and
/// commit look up every one of its chunks (16,384 for 256 MiB), and SipHash over 32
/// bytes made those lookups a visible share of each. The keys are blake3 outputs, evenly
/// spread already, so a few multiply-rotate rounds over their four words, started from a
/// per-table random key, spread them as well for a fraction of the cost.
///
/// This gives up SipHash's resistance to crafted collisions. Only nodes holding a
/// certificate of the cluster's CA can name chunk hashes that were not computed here, and
/// such a node can already change any file; the worst it could do here is slow its
/// victims' tables down.
#[derive(Clone, Debug)]
pub struct ChunkHashState {
    key: u64,
}

impl Default for ChunkHashState {
    fn default() -> Self {
        use std::hash::BuildHasher;
        ChunkHashState {
            key: std::collections::hash_map::RandomState::new().hash_one(0x0064_6570_6673_u64),
        }
    }
}

impl std::hash::BuildHasher for ChunkHashState {
    type Hasher = ChunkHasher;

    fn build_hasher(&self) -> ChunkHasher {
        ChunkHasher(self.key)
    }
}

/// The hasher of [`ChunkHashState`].
#[derive(Clone, Debug)]
pub struct ChunkHasher(u64);

impl std::hash::Hasher for ChunkHasher {
    fn write(&mut self, bytes: &[u8]) {
        const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
        for word in bytes.chunks(8) {
            let mut le = [0u8; 8];
            le[..word.len()].copy_from_slice(word);
            self.0 = (self.0 ^ u64::from_le_bytes(le))
                .wrapping_mul(MULTIPLIER)
                .rotate_left(29);
        }
    }

    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0xff51_afd7_ed55_8ccd) ^ (self.0 >> 32)
    }
}

/// A hash map keyed by chunk hash (see [`ChunkHashState`]).
pub type ChunkMap<V> = std::collections::HashMap<ChunkHash, V, ChunkHashState>;

/// A set of chunk hashes (see [`ChunkHashState`]).
pub type ChunkSet = std::collections::HashSet<ChunkHash, ChunkHashState>;

/// One chunk of a file: its hash and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// blake3 of the chunk's bytes.
    pub hash: ChunkHash,
    /// Length of the chunk in bytes.
    pub len: u32,
}

/// The content of an entry: small contents (and symlink targets) inline, larger ones as a
/// list of content-defined chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// The bytes themselves (at most [`INLINE_MAX`] for files).
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Chunks in file order; the size is the sum of their lengths.
    Chunked(Vec<ChunkRef>),
}

impl Content {
    /// No content (directories, empty files).
    pub fn empty() -> Self {
        Content::Inline(Vec::new())
    }

    /// Total size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Content::Inline(bytes) => bytes.len() as u64,
            Content::Chunked(chunks) => chunks.iter().map(|c| u64::from(c.len)).sum(),
        }
    }

    /// The chunks referenced (none for inline content).
    pub fn chunks(&self) -> &[ChunkRef] {
        match self {
            Content::Inline(_) => &[],
            Content::Chunked(chunks) => chunks,
        }
    }

    /// True if the content is stored inline and small enough to be.
    pub fn is_inline(&self) -> bool {
        matches!(self, Content::Inline(b) if b.len() <= INLINE_MAX)
    }
}

/// A live entry: attributes plus content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Kind and attributes.
    pub meta: Meta,
    /// File bytes, symlink target, or empty for directories.
    pub content: Content,
}

impl Node {
    /// Size in bytes as `stat` reports it.
    pub fn size(&self) -> u64 {
        self.content.size()
    }

    /// True if `self` and `other` hold the same thing (kind, content, mode, owner, mtime):
    /// two such versions made concurrently are no conflict.
    pub fn same_as(&self, other: &Node) -> bool {
        self.meta.kind == other.meta.kind
            && self.meta.perm == other.meta.perm
            && self.meta.uid == other.meta.uid
            && self.meta.gid == other.meta.gid
            && self.content == other.content
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn chunk_hashes_spread_over_a_table() {
        let state = ChunkHashState::default();
        let hash = |seed: u32| state.hash_one(ChunkHash::of(&seed.to_le_bytes()));
        assert_eq!(hash(7), hash(7), "a key hashes the same every time");
        // 4,096 keys into 1,024 buckets by the low bits (as hashbrown uses them): no
        // bucket holds more than a few.
        let mut buckets = [0u32; 1024];
        for seed in 0..4096 {
            buckets[(hash(seed) & 1023) as usize] += 1;
        }
        let fullest = buckets.iter().max().copied().unwrap_or(0);
        assert!(fullest <= 16, "a bucket holds {fullest} of 4,096 keys");
        // Keys differing only past their first eight bytes still differ.
        let mut a = [0u8; 32];
        let b = {
            let mut b = a;
            b[31] = 1;
            b
        };
        a[31] = 2;
        assert_ne!(state.hash_one(ChunkHash(a)), state.hash_one(ChunkHash(b)));
    }

    #[test]
    fn tables_keyed_by_chunk_hash_work() {
        let mut map: ChunkMap<u32> = ChunkMap::default();
        for seed in 0..1000u32 {
            *map.entry(ChunkHash::of(&seed.to_le_bytes())).or_insert(0) += seed;
        }
        assert_eq!(map.len(), 1000);
        assert_eq!(map.get(&ChunkHash::of(&999u32.to_le_bytes())), Some(&999));
    }
}
