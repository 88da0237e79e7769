//! Reads through the writes of a batch that is not written yet.
//!
//! A commit decides what to write by reading the tree (heads of a path, whether a
//! directory has children), and its own earlier decisions must be visible to those reads.
//! The overlay keeps the batch's writes per column family and merges them into reads.
//! It also remembers what it read from the store: a batch is built under the writer lock,
//! so nothing else changes those keys meanwhile, and a commit reads the same heads and
//! entries several times (to decide, to evict, to settle).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use depfs_proto::{Node, RelPath};
use rocksdb::WriteBatch;

use crate::db::cf;
use crate::error::Result;
use crate::keys::CF_ENTRIES;
use crate::store::Store;

/// Stored values by column family and key (`None`: the key was absent).
type ReadCache = HashMap<(&'static str, Vec<u8>), Option<Vec<u8>>>;

#[derive(Default)]
pub(crate) struct Overlay {
    writes: HashMap<&'static str, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Stored values read by this batch.
    reads: RefCell<ReadCache>,
}

impl Overlay {
    pub(crate) fn put(&mut self, cf: &'static str, key: Vec<u8>, value: Vec<u8>) {
        self.writes.entry(cf).or_default().insert(key, Some(value));
    }

    pub(crate) fn delete(&mut self, cf: &'static str, key: Vec<u8>) {
        self.writes.entry(cf).or_default().insert(key, None);
    }

    pub(crate) fn get(
        &self,
        store: &Store,
        cf_name: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        if let Some(w) = self.writes.get(cf_name).and_then(|m| m.get(key)) {
            return Ok(w.clone());
        }
        self.get_stored(store, cf_name, key)
    }

    /// The value of `key` as the store holds it, before this batch's writes.
    pub(crate) fn get_stored(
        &self,
        store: &Store,
        cf_name: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let cache_key = (cf_name, key.to_vec());
        if let Some(value) = self.reads.borrow().get(&cache_key) {
            return Ok(value.clone());
        }
        let db = &store.inner.db;
        let value = db.get_pinned_cf(cf(db, cf_name), key)?.map(|v| v.to_vec());
        self.reads.borrow_mut().insert(cache_key, value.clone());
        Ok(value)
    }

    /// The entry `path` shows in the store, before this batch's writes.
    pub(crate) fn stored_entry(&self, store: &Store, path: &RelPath) -> Result<Option<Node>> {
        let key = path.key();
        match self.get_stored(store, CF_ENTRIES, &key)? {
            Some(bytes) => Ok(Some(crate::db::decode_node(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// True if this batch puts (not deletes) a key starting with `prefix`.
    pub(crate) fn puts_under(&self, cf_name: &'static str, prefix: &[u8]) -> bool {
        self.writes.get(cf_name).is_some_and(|m| {
            m.range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .any(|(_, v)| v.is_some())
        })
    }

    /// The keys starting with `prefix` that this batch puts or deletes.
    pub(crate) fn written_under(&self, cf_name: &'static str, prefix: &[u8]) -> Vec<Vec<u8>> {
        self.writes.get(cf_name).map_or_else(Vec::new, |m| {
            m.range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect()
        })
    }

    /// Every key/value with `prefix`, in key order; stops after `limit` items.
    pub(crate) fn scan(
        &self,
        store: &Store,
        cf_name: &'static str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let db = &store.inner.db;
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let pending = self.writes.get(cf_name);
        // Enough stored items to fill `limit` after deletions in the overlay.
        let deletions = pending.map_or(0, |m| {
            m.range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .count()
        });
        let want = limit.saturating_add(deletions);
        for item in crate::db::prefix_iter(db, cf_name, prefix) {
            let (k, v) = item?;
            if !k.starts_with(prefix) || merged.len() >= want {
                break;
            }
            merged.insert(k.to_vec(), Some(v.to_vec()));
        }
        if let Some(m) = pending {
            for (k, v) in m
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
            {
                merged.insert(k.clone(), v.clone());
            }
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(limit)
            .collect())
    }

    pub(crate) fn into_batch(self, store: &Store) -> WriteBatch {
        let db = &store.inner.db;
        let mut batch = WriteBatch::default();
        for (cf_name, writes) in self.writes {
            let handle = cf(db, cf_name);
            for (k, v) in writes {
                match v {
                    Some(v) => batch.put_cf(handle, k, v),
                    None => batch.delete_cf(handle, k),
                }
            }
        }
        batch
    }
}
