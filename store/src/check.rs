//! An integrity check of a whole store (the heart of `depfs verify`): every invariant the
//! store relies on, reported as readable problems rather than panics.
//!
//! The check reads each column family once and runs one function per invariant; the
//! problems are reported in the order the checks run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use depfs_proto::{ChunkHash, Dot, Kind, Node, RelPath, State, Version};
use rocksdb::IteratorMode;

use crate::db::{cf, decode_node};
use crate::error::Result;
use crate::keys::*;
use crate::log::LogRecord;
use crate::merge::{decode_heads, judge};
use crate::store::Store;

/// What the heads column family holds, gathered once for the checks that need it.
#[derive(Default)]
struct Heads {
    /// The current versions of each path.
    by_path: BTreeMap<RelPath, Vec<Version>>,
    /// The paths each change still has a current version at.
    per_dot: HashMap<Dot, Vec<RelPath>>,
    /// How many current versions use each chunk.
    uses: HashMap<ChunkHash, u64>,
}

impl Heads {
    fn add(&mut self, path: &RelPath, version: Version) {
        if let State::Live(node) = &version.state {
            if node.meta.kind == Kind::File {
                for c in node.content.chunks() {
                    *self.uses.entry(c.hash).or_insert(0) += 1;
                }
            }
        }
        if version.dot.seq > 0 {
            self.per_dot
                .entry(version.dot.clone())
                .or_default()
                .push(path.clone());
        }
        self.by_path.entry(path.clone()).or_default().push(version);
    }
}

impl Store {
    /// Checks the store's invariants and returns the problems found (none when healthy):
    /// heads and log records agree, reference counts match the versions that use each
    /// chunk, no chunk is orphaned or corrupt, and every visible entry is what the merge
    /// rules make of its path's heads. Corrupt chunks found are quarantined (see
    /// [`Store::damaged_chunks`]) so that the replicator fetches them again.
    pub fn check_integrity(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let heads = self.scan_heads(&mut problems)?;
        self.check_log(&heads.per_dot, &mut problems)?;
        self.check_refs(&heads.uses, &mut problems)?;
        self.check_stored_chunks(&heads.uses, &mut problems)?;
        self.check_used_chunks(&heads.uses, &mut problems)?;
        let entries = self.scan_entries(&mut problems)?;
        self.check_tree(&heads.by_path, &entries, &mut problems)?;
        Ok(problems)
    }

    /// Reads every path's heads; reports keys and values that do not decode, and empty
    /// records.
    fn scan_heads(&self, problems: &mut Vec<String>) -> Result<Heads> {
        let db = &self.inner.db;
        let mut heads = Heads::default();
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
                heads.add(&path, version);
            }
        }
        Ok(heads)
    }

    /// Each log record counts and lists its change's current versions, and every change
    /// with a current version has a record.
    fn check_log(
        &self,
        per_dot: &HashMap<Dot, Vec<RelPath>>,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let db = &self.inner.db;
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
        Ok(())
    }

    /// Every chunk's reference count is the number of current versions using it.
    fn check_refs(&self, uses: &HashMap<ChunkHash, u64>, problems: &mut Vec<String>) -> Result<()> {
        let db = &self.inner.db;
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
        for (hash, n) in uses {
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
        Ok(())
    }

    /// Every stored chunk matches its hash (a corrupt one is quarantined) and is used or
    /// pending.
    fn check_stored_chunks(
        &self,
        uses: &HashMap<ChunkHash, u64>,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let db = &self.inner.db;
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
        Ok(())
    }

    /// Every used chunk is stored, or known damaged and waiting for a peer's copy. Runs
    /// after [`Store::check_stored_chunks`], which quarantines the corrupt ones.
    fn check_used_chunks(
        &self,
        uses: &HashMap<ChunkHash, u64>,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let db = &self.inner.db;
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
        Ok(())
    }

    /// Reads every visible entry; reports the ones that do not decode.
    fn scan_entries(&self, problems: &mut Vec<String>) -> Result<BTreeMap<RelPath, Node>> {
        let db = &self.inner.db;
        let mut entries = BTreeMap::new();
        for item in db.iterator_cf(cf(db, CF_ENTRIES), IteratorMode::Start) {
            let (key, value) = item?;
            match (RelPath::from_key(&key), decode_node(&key, &value)) {
                (Ok(path), Ok(node)) => {
                    entries.insert(path, node);
                }
                _ => problems.push(format!("entry {key:?} is malformed")),
            }
        }
        Ok(entries)
    }

    /// Every path shows what the merge rules make of its heads, under a directory, and
    /// the conflict index holds exactly the conflicts they make.
    fn check_tree(
        &self,
        heads: &BTreeMap<RelPath, Vec<Version>>,
        entries: &BTreeMap<RelPath, Node>,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let lead = self.leadership();
        let mut expected_marks = BTreeSet::new();
        let paths: BTreeSet<&RelPath> = heads.keys().chain(entries.keys()).collect();
        for path in paths {
            let hs = heads.get(path).map(Vec::as_slice).unwrap_or(&[]);
            let has_children = has_visible_child(entries, path);
            let judged = judge(hs, &lead, has_children, path.is_root());
            if entries.get(path) != judged.shown.as_ref() {
                problems.push(format!(
                    "{path} shows {:?}, its versions make {:?}",
                    entries.get(path).map(|n| n.meta.kind),
                    judged.shown.as_ref().map(|n| n.meta.kind)
                ));
            }
            expected_marks.extend(
                judged
                    .conflicts
                    .iter()
                    .map(|lost| head_key(path, &lost.dot)),
            );
            check_parent(entries, path, problems);
        }
        self.check_conflict_index(&expected_marks, problems)
    }

    /// The conflict index holds exactly `expected` (the keys of the conflicts).
    fn check_conflict_index(
        &self,
        expected: &BTreeSet<Vec<u8>>,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let db = &self.inner.db;
        let mut marked: BTreeSet<Vec<u8>> = BTreeSet::new();
        for item in db.iterator_cf(cf(db, CF_CONFLICTS), IteratorMode::Start) {
            marked.insert(item?.0.to_vec());
        }
        if &marked != expected {
            problems.push(format!(
                "conflict index has {} entries, the versions make {}",
                marked.len(),
                expected.len()
            ));
        }
        Ok(())
    }
}

/// True if some entry is a visible child of `path`.
fn has_visible_child(entries: &BTreeMap<RelPath, Node>, path: &RelPath) -> bool {
    entries
        .range(path.clone()..)
        .skip(1)
        .take_while(|(p, _)| path.is_ancestor_of(p))
        .any(|(p, _)| p.parent().as_ref() == Some(path))
}

/// A visible path's parent is a directory.
fn check_parent(entries: &BTreeMap<RelPath, Node>, path: &RelPath, problems: &mut Vec<String>) {
    if let (Some(_), Some(parent)) = (entries.get(path), path.parent()) {
        if entries.get(&parent).map(|n| n.meta.kind) != Some(Kind::Dir) {
            problems.push(format!(
                "{path} is visible but its parent is not a directory"
            ));
        }
    }
}
