//! Column families and key layouts.
//!
//! | column family | key                                  | value                          |
//! |---------------|--------------------------------------|--------------------------------|
//! | `entries`     | path key (`parent NUL name`)         | the visible [`Node`]           |
//! | `heads`       | path key                             | the path's current [`Version`]s |
//! | `conflicts`   | head key (`len path-key node NUL seq`) | empty: a losing live version |
//! | `chunks`      | blake3 hash (32 bytes)               | chunk bytes                    |
//! | `refs`        | blake3 hash                          | reference count (u64 LE)       |
//! | `pending`     | blake3 hash                          | empty: written, not committed  |
//! | `log`         | node NUL seq (BE)                    | [`LogRecord`]                  |
//! | `meta`        | ASCII name                           | per-name value                 |
//!
//! Path keys put the children of a directory in one contiguous range. A path's heads are
//! one value, rewritten in place (most paths have exactly one). Conflict keys start with
//! the path key's length, so the conflicts of one path share a prefix that no other
//! path's conflicts have. Log keys put the changes of one origin in sequence order, so
//! "changes of node N after seq S" is one range scan.
//!
//! [`Node`]: depfs_proto::Node
//! [`Version`]: depfs_proto::Version
//! [`LogRecord`]: crate::log::LogRecord

use depfs_proto::{Dot, NodeName, RelPath};

pub(crate) const CF_ENTRIES: &str = "entries";
pub(crate) const CF_HEADS: &str = "heads";
pub(crate) const CF_CONFLICTS: &str = "conflicts";
pub(crate) const CF_CHUNKS: &str = "chunks";
pub(crate) const CF_REFS: &str = "refs";
pub(crate) const CF_PENDING: &str = "pending";

/// The value of a `pending` marker whose chunk bytes were written without the
/// write-ahead log by a bulk write that has not flushed them yet (see
/// `chunks::ChunkWriter`): until the commit clears it, the chunk does not count as
/// stored for changes from peers. Other markers are empty.
pub(crate) const PENDING_UNFLUSHED: &[u8] = b"unflushed";
pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_META: &str = "meta";

pub(crate) const ALL_CFS: [&str; 8] = [
    CF_ENTRIES,
    CF_HEADS,
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
/// Chunks found corrupt on disk and removed, waiting to be fetched again from a peer:
/// this prefix, then the 32-byte hash.
pub(crate) const META_DAMAGED_PREFIX: &[u8] = b"damaged/";

/// One-way mode: the manager terms (see `depfs_proto::lead`).
pub(crate) const META_LEADERSHIP: &[u8] = b"leadership";
/// This node's own sequence up to which its log records are sealed (see
/// `Store::seal_own_changes`).
pub(crate) const META_SEALED_UPTO: &[u8] = b"sealed_upto";
/// `acked/<node>`: the progress a peer last acknowledged.
pub(crate) const META_ACKED_PREFIX: &[u8] = b"acked/";

/// `node NUL seq` (big-endian, so keys sort by sequence).
pub(crate) fn log_key(dot: &Dot) -> Vec<u8> {
    let mut key = Vec::with_capacity(dot.node.as_str().len() + 9);
    key.extend_from_slice(dot.node.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(&dot.seq.to_be_bytes());
    key
}

/// The meta key marking `hash` as damaged.
pub(crate) fn damaged_key(hash: &depfs_proto::ChunkHash) -> Vec<u8> {
    let mut key = META_DAMAGED_PREFIX.to_vec();
    key.extend_from_slice(&hash.0);
    key
}

/// The prefix shared by the head keys of `path`: its key's length (u16 BE), then the key.
pub(crate) fn heads_prefix(path: &RelPath) -> Vec<u8> {
    let key = path.key();
    let mut prefix = Vec::with_capacity(key.len() + 2);
    prefix.extend_from_slice(&(key.len() as u16).to_be_bytes());
    prefix.extend_from_slice(&key);
    prefix
}

/// The key of the head made by `dot` at `path`.
pub(crate) fn head_key(path: &RelPath, dot: &Dot) -> Vec<u8> {
    let mut key = heads_prefix(path);
    key.extend_from_slice(&log_key(dot));
    key
}

/// The path of a head key.
pub(crate) fn head_key_path(key: &[u8]) -> Option<RelPath> {
    let len = u16::from_be_bytes(key.get(..2)?.try_into().ok()?) as usize;
    RelPath::from_key(key.get(2..2 + len)?).ok()
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

    #[test]
    fn head_keys_of_one_path_share_a_prefix_no_other_path_has() {
        let n = NodeName::new("gw1").unwrap();
        let root = RelPath::root();
        let top = RelPath::parse(b"gw1").unwrap();
        let k = head_key(&top, &Dot::new(n.clone(), 1));
        assert!(k.starts_with(&heads_prefix(&top)));
        assert!(!k.starts_with(&heads_prefix(&root)));
        assert!(!head_key(&root, &Dot::new(n, 1)).starts_with(&heads_prefix(&top)));
        assert_eq!(head_key_path(&k), Some(top));
    }
}
