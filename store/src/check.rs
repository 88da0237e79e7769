//! An integrity check of a whole store (the heart of `depfs verify`): every invariant the
//! store relies on, reported as readable problems rather than panics.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use depfs_proto::{ChunkHash, Dot, Kind, Node, RelPath, State};
use rocksdb::IteratorMode;

use crate::db::cf;
use crate::error::Result;
use crate::keys::*;
use crate::log::LogRecord;
use crate::merge::{conflicts, contenders, decode_heads, visible};
use crate::tree::decode_node;
use crate::Store;

impl Store {
    /// Checks the store's invariants and returns the problems found (none when healthy):
    /// heads and log records agree, reference counts match the versions that use each
    /// chunk, no chunk is orphaned or corrupt, and every visible entry is what the merge
    /// rules make of its path's heads. Corrupt chunks found are quarantined (see
    /// [`Store::damaged_chunks`]) so that the replicator fetches them again.
    pub fn check_integrity(&self) -> Result<Vec<String>> {
        let db = &self.inner.db;
        let mut problems = Vec::new();

        let mut heads: BTreeMap<RelPath, Vec<depfs_proto::Version>> = BTreeMap::new();
        let mut per_dot: HashMap<Dot, Vec<RelPath>> = HashMap::new();
        let mut uses: HashMap<ChunkHash, u64> = HashMap::new();
        for item in db.iterator_cf(cf(db, CF_HEADS), IteratorMode::Start) {
            let (key, value) = item?;
            let Ok(path) = RelPath::from_key(&key) else {
                problems.push(format!("heads key {key:?} names no valid path"));
                continue;
            };
            let versions = match decode_heads(&key, &value) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("heads of {path}: {e}"));
                    continue;
                }
            };
            if versions.is_empty() {
                problems.push(format!("{path} has an empty heads record"));
            }
            for version in versions {
                if let State::Live(node) = &version.state {
                    if node.meta.kind == Kind::File {
                        for c in node.content.chunks() {
                            *uses.entry(c.hash).or_insert(0) += 1;
                        }
                    }
                }
                if version.dot.seq > 0 {
                    per_dot
                        .entry(version.dot.clone())
                        .or_default()
                        .push(path.clone());
                }
                heads.entry(path.clone()).or_default().push(version);
            }
        }

        let mut logged = BTreeSet::new();
        for item in db.iterator_cf(cf(db, CF_LOG), IteratorMode::Start) {
            let (key, value) = item?;
            let Some(dot) = parse_log_key(&key) else {
                problems.push(format!("log key {key:?} is malformed"));
                continue;
            };
            let record = match LogRecord::decode(&value) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("log record {dot}: {e}"));
                    continue;
                }
            };
            let held = per_dot.get(&dot).map_or(0, Vec::len);
            if record.live as usize != held {
                problems.push(format!(
                    "log record {dot} counts {} current versions, {held} exist",
                    record.live
                ));
            }
            for path in per_dot.get(&dot).into_iter().flatten() {
                if !record.paths.contains(path) {
                    problems.push(format!("log record {dot} does not list {path}"));
                }
            }
            logged.insert(dot);
        }
        for dot in per_dot.keys() {
            if !logged.contains(dot) {
                problems.push(format!("versions of change {dot} have no log record"));
            }
        }

        let mut counted = HashMap::new();
        for item in db.iterator_cf(cf(db, CF_REFS), IteratorMode::Start) {
            let (key, value) = item?;
            let Ok(hash) = <[u8; 32]>::try_from(key.as_ref()) else {
                problems.push(format!("refs key {key:?} is not a hash"));
                continue;
            };
            let n = u64::from_le_bytes(value.as_ref().try_into().unwrap_or([0; 8]));
            counted.insert(ChunkHash(hash), n);
        }
        for (hash, n) in &uses {
            let c = counted.get(hash).copied().unwrap_or(0);
            if c != *n {
                problems.push(format!("chunk {hash:?} is used {n} times, counted {c}"));
            }
        }
        for (hash, c) in &counted {
            if !uses.contains_key(hash) {
                problems.push(format!("chunk {hash:?} counted {c} but unused"));
            }
        }
        for item in db.iterator_cf(cf(db, CF_CHUNKS), IteratorMode::Start) {
            let (key, value) = item?;
            let Ok(hash) = <[u8; 32]>::try_from(key.as_ref()) else {
                problems.push(format!("chunk key {key:?} is not a hash"));
                continue;
            };
            let hash = ChunkHash(hash);
            if !hash.verifies(&value) {
                problems.push(format!(
                    "chunk {hash:?} is corrupt (blake3 mismatch): quarantined, a peer's copy will repair it"
                ));
                self.quarantine_chunk(&hash)?;
                continue;
            }
            // Chunks written for a commit or a transfer still in progress carry a
            // pending mark (swept at the next start if it never completes).
            if !uses.contains_key(&hash) && db.get_pinned_cf(cf(db, CF_PENDING), hash.0)?.is_none()
            {
                problems.push(format!("chunk {hash:?} is orphaned"));
            }
        }
        let damaged: BTreeSet<ChunkHash> = self.damaged_chunks()?.into_iter().collect();
        for hash in uses.keys() {
            if damaged.contains(hash) {
                problems.push(format!(
                    "chunk {hash:?} is damaged, waiting for a peer's copy"
                ));
            } else if db.get_pinned_cf(cf(db, CF_CHUNKS), hash.0)?.is_none() {
                problems.push(format!("chunk {hash:?} is used but missing"));
            }
        }

        let mut entries: BTreeMap<RelPath, Node> = BTreeMap::new();
        for item in db.iterator_cf(cf(db, CF_ENTRIES), IteratorMode::Start) {
            let (key, value) = item?;
            match (RelPath::from_key(&key), decode_node(&key, &value)) {
                (Ok(path), Ok(node)) => {
                    entries.insert(path, node);
                }
                _ => problems.push(format!("entry {key:?} is malformed")),
            }
        }
        let mut marked: BTreeSet<Vec<u8>> = BTreeSet::new();
        for item in db.iterator_cf(cf(db, CF_CONFLICTS), IteratorMode::Start) {
            marked.insert(item?.0.to_vec());
        }
        let paths: BTreeSet<&RelPath> = heads.keys().chain(entries.keys()).collect();
        let lead = self.leadership();
        let mut expected_marks = BTreeSet::new();
        for path in paths {
            let hs = heads.get(path).map(Vec::as_slice).unwrap_or(&[]);
            let has_children = entries
                .range(path.clone()..)
                .skip(1)
                .take_while(|(p, _)| path.is_ancestor_of(p))
                .any(|(p, _)| p.parent().as_ref() == Some(path));
            let (shown, dot) = visible(&contenders(hs, &lead), has_children, path.is_root());
            if entries.get(path) != shown.as_ref() {
                problems.push(format!(
                    "{path} shows {:?}, its versions make {:?}",
                    entries.get(path).map(|n| n.meta.kind),
                    shown.as_ref().map(|n| n.meta.kind)
                ));
            }
            for lost in conflicts(hs, &shown, &dot) {
                expected_marks.insert(head_key(path, &lost.dot));
            }
            if let (Some(_), Some(parent)) = (entries.get(path), path.parent()) {
                if entries.get(&parent).map(|n| n.meta.kind) != Some(Kind::Dir) {
                    problems.push(format!(
                        "{path} is visible but its parent is not a directory"
                    ));
                }
            }
        }
        if marked != expected_marks {
            problems.push(format!(
                "conflict index has {} entries, the versions make {}",
                marked.len(),
                expected_marks.len()
            ));
        }
        Ok(problems)
    }
}
