//! The change log: one record per committed change, keyed by its dot.
//!
//! A record lists the paths the change wrote and how many of those versions are still
//! current (a winner, a tombstone or a recorded conflict). When that count reaches zero the
//! change is fully superseded and its record is deleted: the log holds exactly the changes
//! a peer may still need, so it stays bounded under endless overwrites of the same files.

use depfs_proto::{Hlc, RelPath};
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
}
