//! RocksDB underneath the store: opening the database, column family handles, prefix
//! iteration, and decoding the stored entries.

use std::path::Path;

use depfs_proto::Node;
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, DB};

use crate::error::{Result, StoreError};
use crate::keys::*;

/// Opens (or creates) the RocksDB database under `dir` with all column families; true
/// if it was created by this open.
pub(crate) fn open(dir: &Path, block_cache_bytes: usize) -> Result<(DB, bool)> {
    let path = dir.join("db");
    let created = !path.join("CURRENT").exists();
    let cache = Cache::new_lru_cache(block_cache_bytes);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);

    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_max_background_jobs(2);
    db_opts.set_keep_log_file_num(3);
    db_opts.set_block_based_table_factory(&table);

    let cfs = ALL_CFS.iter().map(|&name| {
        let mut cf = Options::default();
        cf.set_block_based_table_factory(&table);
        match name {
            // Chunks are large, already-deduplicated values: keep them out of the LSM
            // tree's rewrites with RocksDB's blob files.
            CF_CHUNKS => {
                cf.set_enable_blob_files(true);
                cf.set_min_blob_size(4096);
                cf.set_enable_blob_gc(true);
                cf.set_blob_compression_type(DBCompressionType::Lz4);
                cf.set_write_buffer_size(64 << 20);
            }
            _ => cf.set_compression_type(DBCompressionType::Lz4),
        }
        ColumnFamilyDescriptor::new(name, cf)
    });
    let db = DB::open_cf_descriptors(&db_opts, &path, cfs)?;
    Ok((db, created))
}

/// The handle of a column family that `open` created.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    match db.cf_handle(name) {
        Some(cf) => cf,
        // open_cf_descriptors created every name in ALL_CFS, so this is a programming
        // error, not bad input.
        None => panic!("column family {name} was not opened"),
    }
}

/// A key/value pair from an iterator.
pub(crate) type KeyValue = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>;

/// Iterates the keys starting with `prefix`, in order. The iterator is bounded above by
/// the prefix's successor, so it never walks the deleted keys that follow the range.
pub(crate) fn prefix_iter<'a>(
    db: &'a DB,
    cf_name: &str,
    prefix: &[u8],
) -> impl Iterator<Item = KeyValue> + 'a {
    let mut options = rocksdb::ReadOptions::default();
    if let Some(end) = prefix_successor(prefix) {
        options.set_iterate_upper_bound(end);
    }
    let prefix = prefix.to_vec();
    db.iterator_cf_opt(
        cf(db, cf_name),
        options,
        rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
    )
}

/// The smallest key greater than every key starting with `prefix` (`None` if there is
/// none: the prefix is empty or all 0xFF).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Decodes the entry stored under `key` (in `entries`).
pub(crate) fn decode_node(key: &[u8], bytes: &[u8]) -> Result<Node> {
    depfs_proto::node_codec::decode_node(bytes).map_err(|source| StoreError::Corrupt {
        what: format!("entries/{}", String::from_utf8_lossy(key)),
        source,
    })
}
