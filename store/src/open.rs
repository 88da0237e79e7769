//! Opening a store: RocksDB, a new store's genesis, and the state kept in memory.

use std::path::Path;
use std::sync::Arc;

use depfs_proto::{
    decode_value, encode_value, Dot, Hlc, HlcClock, Meta, NodeName, RelPath, State, Version,
    VersionVector,
};
use parking_lot::Mutex;
use rocksdb::DB;

use crate::db::{self, cf};
use crate::error::{Result, StoreError};
use crate::keys::*;
use crate::lead::decode_leadership;
use crate::lock::DirLock;
use crate::pins::PinTable;
use crate::store::{Inner, Store, StoreOptions};
use crate::writer::{Writer, WriterState};

impl Store {
    /// Opens (or creates) the store in `dir` for node `node`. Fails with
    /// [`StoreError::InUse`] if another process has it open, and with
    /// [`StoreError::WrongNode`] if it was created for another node.
    pub fn open(dir: &Path, node: &NodeName, options: &StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("create data_dir {}", dir.display()), e))?;
        let lock = DirLock::acquire(dir)?;
        let (db, created) = db::open(dir, options.block_cache_bytes)?;
        let inner = init(db, dir, node, options, created, lock)?;
        let store = Store {
            inner: Arc::new(inner),
        };
        store.sweep_uncommitted_chunks()?;
        Ok(store)
    }
}

fn init(
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
        Some(bytes) => decode_leadership(&bytes).map_err(|source| StoreError::Corrupt {
            what: "meta/leadership".into(),
            source,
        })?,
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
