//! What the kernel-less filesystem tests share: a filesystem over a fresh store.

use depfs_fs::{DepFs, FsConfig};
use depfs_proto::{Kind, NodeName};
use depfs_store::{Store, StoreOptions};

/// A filesystem over a new store in `dir` (node `gw1`), staging in `dir/staging`,
/// its config adjusted by `configure`.
pub fn filesystem(dir: &std::path::Path, configure: impl FnOnce(&mut FsConfig)) -> DepFs {
    let root = depfs_testkit::meta_at(Kind::Dir, 0);
    let store = Store::open(
        &dir.join("store"),
        &NodeName::new("gw1").unwrap(),
        &StoreOptions::new(root),
    )
    .unwrap();
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let mut config = FsConfig::new(staging);
    configure(&mut config);
    DepFs::new(store, config)
}
