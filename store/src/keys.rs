//! Column families and key layouts.
//!
//! | column family | key                              | value                         |
//! |---------------|----------------------------------|-------------------------------|
//! | `entries`     | path key (`parent NUL name`)     | live winning [`Version`]      |
//! | `tombstones`  | path key                         | deleted winning [`Version`]   |
//! | `conflicts`   | path key NUL node NUL seq (BE)   | losing live [`Version`]       |
//! | `chunks`      | blake3 hash (32 bytes)           | chunk bytes                   |
//! | `refs`        | blake3 hash                      | reference count (u64 LE)      |
//! | `pending`     | blake3 hash                      | empty: written, not committed |
//! | `log`         | node NUL seq (BE)                | [`LogRecord`]                 |
//! | `meta`        | ASCII name                       | per-name value                |
//!
//! Path keys put the children of a directory in one contiguous range; log keys put the
//! changes of one origin in sequence order, so "changes of node N after seq S" is one
//! range scan.
//!
//! [`Version`]: depfs_proto::Version
//! [`LogRecord`]: crate::log::LogRecord

use depfs_proto::{Dot, NodeName};

pub(crate) const CF_ENTRIES: &str = "entries";
pub(crate) const CF_TOMBSTONES: &str = "tombstones";
pub(crate) const CF_CONFLICTS: &str = "conflicts";
pub(crate) const CF_CHUNKS: &str = "chunks";
pub(crate) const CF_REFS: &str = "refs";
pub(crate) const CF_PENDING: &str = "pending";
pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_META: &str = "meta";

pub(crate) const ALL_CFS: [&str; 8] = [
    CF_ENTRIES,
    CF_TOMBSTONES,
    CF_CONFLICTS,
    CF_CHUNKS,
    CF_REFS,
    CF_PENDING,
    CF_LOG,
    CF_META,
];

pub(crate) const META_NODE: &[u8] = b"node";
pub(crate) const META_WRITER: &[u8] = b"writer";
pub(crate) const META_IMPORTED: &[u8] = b"imported";

/// `node NUL seq` (big-endian, so keys sort by sequence).
pub(crate) fn log_key(dot: &Dot) -> Vec<u8> {
    let mut key = Vec::with_capacity(dot.node.as_str().len() + 9);
    key.extend_from_slice(dot.node.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(&dot.seq.to_be_bytes());
    key
}

/// Inverse of [`log_key`]; `None` for a malformed key.
pub(crate) fn parse_log_key(key: &[u8]) -> Option<Dot> {
    let split = key.len().checked_sub(9)?;
    if key[split] != 0 {
        return None;
    }
    let node = NodeName::new(std::str::from_utf8(&key[..split]).ok()?).ok()?;
    let seq = u64::from_be_bytes(key[split + 1..].try_into().ok()?);
    Some(Dot::new(node, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_round_trip_and_sort_by_sequence() {
        let n = NodeName::new("gw1").unwrap();
        let a = log_key(&Dot::new(n.clone(), 2));
        let b = log_key(&Dot::new(n.clone(), 256));
        assert!(a < b);
        assert_eq!(parse_log_key(&b), Some(Dot::new(n, 256)));
        assert_eq!(parse_log_key(b"short"), None);
    }
}
