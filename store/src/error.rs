//! Store errors.

use std::io;
use std::path::PathBuf;

use depfs_proto::{ChunkHash, DecodeError};

/// Everything that can go wrong in the store. Each variant says what was being done, so a
/// log line is enough to act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused an operation.
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    /// A file operation on the data directory failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// Another process holds the data directory.
    #[error("data_dir {dir} is in use by another depfs process{}", pid_hint(.pid))]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The pid recorded by the holder, if readable.
        pid: Option<u32>,
    },
    /// The data directory was created for another node.
    #[error("data_dir {dir} belongs to node {stored:?}, but the config names node {configured:?}")]
    WrongNode {
        /// The data directory.
        dir: PathBuf,
        /// The node name recorded in the store.
        stored: String,
        /// The node name from the config.
        configured: String,
    },
    /// A stored value could not be decoded.
    #[error("corrupt {what}: {source}")]
    Corrupt {
        /// Which value (column family and key).
        what: String,
        /// The decoding error.
        source: DecodeError,
    },
    /// A chunk's bytes do not match its hash (bit rot or tampering).
    #[error("chunk {0:?} is corrupt: its content does not match its blake3 hash")]
    BadChunk(ChunkHash),
    /// A file's chunk reference claims another length than the chunk has: the version
    /// that references it is a lie (no honest node makes one), never read as data.
    #[error("chunk {hash:?} is {stored} bytes, but a reference to it claims {claimed}")]
    ChunkLength {
        /// The chunk.
        hash: ChunkHash,
        /// The length the reference claims.
        claimed: u32,
        /// The length of the stored chunk.
        stored: usize,
    },
    /// A peer's change is stamped further ahead of the local clock than accepted.
    /// Applied, it would win every concurrent write until real time caught up with it;
    /// refused, it is accepted once the local clock is within the bound of its stamp.
    #[error("change {dot} is stamped {drift}")]
    AheadOfClock {
        /// The change.
        dot: depfs_proto::Dot,
        /// How far ahead, and the bound.
        drift: depfs_proto::ClockDrift,
    },
    /// A referenced chunk is not in the store.
    #[error("chunk {0:?} is missing")]
    MissingChunk(ChunkHash),
    /// A change or key that no honest node produces.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// The store's filesystem is (nearly) full: nothing was written.
    #[error("no space for the store in {dir}: {available} bytes free, {needed} needed (including the reserve)")]
    NoSpace {
        /// The store's directory.
        dir: std::path::PathBuf,
        /// Bytes free.
        available: u64,
        /// Bytes the write needed, reserve included.
        needed: u64,
    },
    /// A file larger than depfs accepts.
    #[error("file of {0} bytes exceeds the size limit")]
    TooLarge(u64),
}

fn pid_hint(pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// The errno a filesystem call should fail with because of this error.
    pub fn errno(&self) -> i32 {
        match self {
            StoreError::Io { source, .. } => source.raw_os_error().unwrap_or(libc_eio()),
            StoreError::TooLarge(_) => 27,             // EFBIG
            StoreError::NoSpace { .. } => 28,          // ENOSPC
            StoreError::Db(e) if is_no_space(e) => 28, // ENOSPC
            _ => libc_eio(),
        }
    }
}

fn libc_eio() -> i32 {
    5
}

fn is_no_space(e: &rocksdb::Error) -> bool {
    let s = e.to_string();
    s.contains("No space left") || s.contains("NoSpace")
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
