//! Opening RocksDB and initialising a new store.

use std::path::Path;

use depfs_proto::{
    decode_value, encode_value, Dot, Hlc, HlcClock, Meta, NodeName, RelPath, State, Version,
    VersionVector,
};
use parking_lot::Mutex;
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, DB};

use crate::chunks::PinTable;
use crate::error::{Result, StoreError};
use crate::keys::*;
use crate::lock::DirLock;
use crate::tx::{Writer, WriterState};
use crate::{Inner, StoreOptions};

pub(crate) fn open(dir: &Path, options: &StoreOptions) -> Result<(DB, bool)> {
    let path = dir.join("db");
    let created = !path.join("CURRENT").exists();
    let cache = Cache::new_lru_cache(options.block_cache_bytes);
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

pub(crate) fn init(
    db: DB,
    dir: &Path,
    node: &NodeName,
    options: &StoreOptions,
    created: bool,
    lock: DirLock,
) -> Result<Inner> {
    let meta = cf(&db, CF_META);
    match db.get_cf(meta, META_NODE)? {
        Some(stored) if stored.as_slice() != node.as_str().as_bytes() => {
            return Err(StoreError::WrongNode {
                dir: dir.to_path_buf(),
                stored: String::from_utf8_lossy(&stored).into_owned(),
                configured: node.to_string(),
            });
        }
        Some(_) => {}
        None => write_genesis(&db, node, &options.root)?,
    }
    let state: WriterState = match db.get_cf(cf(&db, CF_META), META_WRITER)? {
        Some(bytes) => decode_value(&bytes).map_err(|source| StoreError::Corrupt {
            what: "meta/writer".into(),
            source,
        })?,
        None => WriterState::default(),
    };
    let lead = match db.get_cf(cf(&db, CF_META), META_LEADERSHIP)? {
        Some(bytes) => {
            crate::lead::decode_leadership(&bytes).map_err(|source| StoreError::Corrupt {
                what: "meta/leadership".into(),
                source,
            })?
        }
        None => depfs_proto::Leadership::default(),
    };
    tracing::info!(seq = state.seq, vv = ?state.vv, "store opened");
    let writer = Writer {
        clock: HlcClock::new(state.hlc, options.max_clock_drift_ms),
        seq: state.seq,
        vv: state.vv,
    };
    Ok(Inner {
        db,
        dir: dir.to_path_buf(),
        node: node.clone(),
        writer: Mutex::new(writer),
        pins: Mutex::new(PinTable::default()),
        created,
        commit_hook: parking_lot::RwLock::new(None),
        signer: parking_lot::RwLock::new(None),
        min_free_bytes: options.min_free_bytes,
        free_space: Mutex::new(None),
        lead: parking_lot::RwLock::new(lead),
        _lock: lock,
    })
}

/// A new store gets its node name and a root directory. The root's version has sequence
/// number 0 and time zero: it is dominated by every real change to the root, on this
/// node or any other, so the first `chmod` of the root anywhere wins everywhere.
fn write_genesis(db: &DB, node: &NodeName, root: &Meta) -> Result<()> {
    let genesis = Version {
        dot: Dot::new(node.clone(), 0),
        hlc: Hlc::ZERO,
        ctx: VersionVector::new(),
        state: State::Live(depfs_proto::Node {
            meta: root.clone(),
            content: depfs_proto::Content::empty(),
        }),
    };
    let mut batch = rocksdb::WriteBatch::default();
    if let State::Live(node) = &genesis.state {
        batch.put_cf(
            cf(db, CF_ENTRIES),
            RelPath::root().key(),
            encode_value(node),
        );
    }
    batch.put_cf(
        cf(db, CF_HEADS),
        RelPath::root().key(),
        encode_value(&vec![genesis]),
    );
    batch.put_cf(cf(db, CF_META), META_NODE, node.as_str().as_bytes());
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync)?;
    Ok(())
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
