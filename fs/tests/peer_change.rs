//! What an inode shows between a peer's change reaching the store and the invalidator
//! handling it (`DepFs::remote_changed`): the replicator and the kernel run
//! concurrently, so requests arrive in that window.

#![cfg(test)]

use depfs_fs::{DepFs, FsConfig};
use depfs_proto::{Content, Kind, Node, NodeName, RelPath};
use depfs_store::{Durability, Store, StoreOptions};
use depfs_testkit::meta_at;

const ROOT_INO: u64 = 1;

fn open_store(dir: &std::path::Path, name: &str) -> Store {
    let node = NodeName::new(name).unwrap();
    Store::open(
        &dir.join(name),
        &node,
        &StoreOptions::new(meta_at(Kind::Dir, 0)),
    )
    .unwrap()
}

fn put(store: &Store, path: &str, bytes: &[u8], secs: i64, wall_ms: u64) {
    let mut tx = store.transaction();
    tx.put(
        RelPath::parse(path.as_bytes()).unwrap(),
        Node {
            meta: meta_at(Kind::File, secs),
            content: Content::Inline(bytes.to_vec()),
        },
    );
    tx.commit(wall_ms, Durability::Process).unwrap().unwrap();
}

/// Hands `to` what it lacks from `from`, as the replicator does (inline content only).
fn sync(from: &Store, to: &Store, wall_ms: u64) {
    let base = to.version_vector();
    let upto = from.version_vector();
    let changes: Vec<_> = from
        .dots_since(&base)
        .unwrap()
        .iter()
        .filter_map(|d| from.change(d).unwrap())
        .collect();
    to.apply_remote(&changes, Some((&base, &upto)), wall_ms)
        .unwrap();
}

/// A file open on this node while a peer replaces it with a longer or shorter version:
/// until the invalidator runs, `stat` of the open inode must give the size of the version
/// the handle reads. With the new version's size, the kernel (which reads through its
/// page cache up to the size it was last told) cut reads of the open version short, or
/// padded them: `cluster::write_to_temp_then_rename_never_shows_a_partial_file` caught
/// it as 30,024 bytes of a 36,024-byte version.
#[test]
fn an_open_file_shows_the_size_of_the_version_it_reads_until_invalidated() {
    let dir = tempfile::tempdir().unwrap();
    let peer = open_store(dir.path(), "peer");
    let here = open_store(dir.path(), "here");
    let fs = DepFs::new(here.clone(), FsConfig::new(dir.path().join("staging")));

    let v1 = vec![b'a'; 3000];
    let v2 = vec![b'b'; 2000];
    put(&peer, "api.xml", &v1, 1_700_000_000, 1_700_000_000_000);
    sync(&peer, &here, 1_700_000_000_100);

    let ino = fs.lookup(ROOT_INO, b"api.xml").unwrap().ino;
    let (fh, _cache) = fs.open(ino, libc::O_RDONLY).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().size, 3000);

    // The peer's new version reaches the store; the invalidator has not run yet.
    put(&peer, "api.xml", &v2, 1_700_000_001, 1_700_000_001_000);
    sync(&peer, &here, 1_700_000_001_100);

    assert_eq!(
        fs.getattr(ino).unwrap().size,
        3000,
        "stat of the open inode shows the version its handle reads"
    );
    assert_eq!(fs.lookup(ROOT_INO, b"api.xml").unwrap().size, 3000);
    assert_eq!(fs.read(fh, 0, 8192).unwrap(), v1);

    // The invalidator runs: the path moves to a new inode showing the new version.
    let path = RelPath::parse(b"api.xml").unwrap();
    let _ = fs.remote_changed(&[path]);
    let now = fs.lookup(ROOT_INO, b"api.xml").unwrap();
    assert_ne!(now.ino, ino);
    assert_eq!(now.size, 2000);
    let (fh2, _) = fs.open(now.ino, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(fh2, 0, 8192).unwrap(), v2);
    // The old handle still reads what it opened.
    assert_eq!(fs.read(fh, 0, 8192).unwrap(), v1);
    fs.release(fh).unwrap();
    fs.release(fh2).unwrap();
}

/// A change made here to an open file's attributes (no new content) shows at once.
#[test]
fn a_local_chmod_of_an_open_file_shows_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let here = open_store(dir.path(), "here");
    let fs = DepFs::new(here.clone(), FsConfig::new(dir.path().join("staging")));
    put(
        &here,
        "api.xml",
        b"<api/>",
        1_700_000_000,
        1_700_000_000_000,
    );
    let ino = fs.lookup(ROOT_INO, b"api.xml").unwrap().ino;
    let (fh, _) = fs.open(ino, libc::O_RDONLY).unwrap();
    let changes = depfs_fs::SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    fs.setattr(ino, &changes).unwrap();
    let attr = fs.getattr(ino).unwrap();
    assert_eq!(attr.meta.perm, 0o600);
    assert_eq!(attr.size, 6);
    fs.release(fh).unwrap();
}
