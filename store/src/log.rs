//! The change log: one record per committed change, keyed by its dot.
//!
//! A record lists the paths the change wrote and how many of those versions are still
//! current (a winner, a tombstone or a recorded conflict). When that count reaches zero the
//! change is fully superseded and its record is deleted: the log holds exactly the changes
//! a peer may still need, so it stays bounded under endless overwrites of the same files.
//! It also keeps the change's seal, so that any node can serve the change to any other
//! with its origin's signature (see `depfs_proto::seal`).

use depfs_proto::codec::decode_value_or_older;
use depfs_proto::{DecodeError, Hlc, RelPath, Seal};
use serde::{Deserialize, Serialize};

/// What the log keeps about one change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The change's HLC time.
    pub hlc: Hlc,
    /// Every path the change wrote, in the order it wrote them.
    pub paths: Vec<RelPath>,
    /// How many of those versions are still current.
    pub live: u32,
    /// The origin's seal.
    pub seal: Seal,
}

/// A record as stores written before seals existed hold it.
#[derive(Deserialize)]
struct UnsealedRecord {
    hlc: Hlc,
    paths: Vec<RelPath>,
    live: u32,
}

impl LogRecord {
    /// Decodes a stored record; one written before seals existed reads as unsigned.
    pub fn decode(bytes: &[u8]) -> Result<LogRecord, DecodeError> {
        decode_value_or_older(bytes, |old: UnsealedRecord| LogRecord {
            hlc: old.hlc,
            paths: old.paths,
            live: old.live,
            seal: Seal::default(),
        })
    }
}

/// Decodes the stored record of `dot`; a record that does not decode is corruption.
pub(crate) fn read_record(dot: &depfs_proto::Dot, bytes: &[u8]) -> crate::error::Result<LogRecord> {
    LogRecord::decode(bytes).map_err(|source| crate::error::StoreError::Corrupt {
        what: format!("log/{dot}"),
        source,
    })
}
