//! Large files published after their `close` returned ("owed", fs/src/owed.rs), driven
//! without a kernel: the publishing thread, the order of later changes, and the local
//! copy an owed file leaves.

#![cfg(test)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use depfs_fs::{CacheMode, Caller, DepFs};
use depfs_proto::RelPath;
use depfs_testkit::pattern as content;

const ROOT_INO: u64 = 1;
const MIB: usize = 1 << 20;
const CALLER: Caller = Caller { uid: 0, gid: 0 };

/// A filesystem with its publishing thread, or `None` (and a line on stderr) where
/// passthrough is off: without it nothing is owed.
fn filesystem(dir: &std::path::Path) -> Option<Arc<DepFs>> {
    let fs = Arc::new(common::filesystem(dir, |_| {}));
    if !fs.passthrough_enabled() {
        eprintln!("no fine-grained file times here: nothing is owed");
        return None;
    }
    fs.start_publisher().unwrap();
    Some(fs)
}

fn write_all(fs: &DepFs, fh: u64, data: &[u8]) {
    for (i, block) in data.chunks(MIB).enumerate() {
        fs.write(fh, (i * MIB) as u64, block).unwrap();
    }
}

fn read_all(fs: &DepFs, ino: u64) -> Vec<u8> {
    let (fh, _) = fs.open(ino, libc::O_RDONLY).unwrap();
    let mut out = Vec::new();
    loop {
        let part = fs.read(fh, out.len() as u64, MIB as u32).unwrap();
        if part.is_empty() {
            break;
        }
        out.extend_from_slice(&part);
    }
    fs.release(fh).unwrap();
    out
}

fn wait_until_published(fs: &DepFs) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs.owed_files() > 0 {
        assert!(
            Instant::now() < deadline,
            "the owed file was never published"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_large_closed_file_is_published_by_the_thread_and_leaves_a_local_copy() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = filesystem(dir.path()) else {
        return;
    };
    let data = content(1, 40 * MIB + 123);
    let (attr, fh, cache) = fs
        .create(ROOT_INO, b"app.war", 0o644, libc::O_WRONLY, CALLER)
        .unwrap();
    assert!(matches!(cache, CacheMode::Passthrough(_)));
    write_all(&fs, fh, &data);
    fs.flush(fh).unwrap();
    fs.release(fh).unwrap();
    wait_until_published(&fs);
    let path = RelPath::parse(b"app.war").unwrap();
    let node = fs.store().get(&path).unwrap().expect("published");
    assert_eq!(node.content.size(), data.len() as u64);

    // The staging file stays as the content's local copy: a writer goes through
    // passthrough again (and, writing nothing, publishes nothing).
    let (fh, cache) = fs.open(attr.ino, libc::O_WRONLY).unwrap();
    assert!(
        matches!(cache, CacheMode::Passthrough(_)),
        "the rewrite of an owed file's content is not served through its local copy"
    );
    fs.flush(fh).unwrap();
    fs.release(fh).unwrap();
    assert_eq!(fs.owed_files(), 0);
    assert!(read_all(&fs, attr.ino) == data);
    let again = fs.store().get(&path).unwrap().expect("still there");
    assert_eq!(
        again.meta, node.meta,
        "an open that wrote nothing changed the file"
    );

    // A rewrite through the local copy is owed as well (the staging file kept the
    // name it got the first time: an O_TMPFILE can be linked once only).
    let new = content(4, 36 * MIB);
    let (fh, cache) = fs.open(attr.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    assert!(matches!(cache, CacheMode::Passthrough(_)));
    write_all(&fs, fh, &new);
    fs.flush(fh).unwrap();
    assert_eq!(fs.owed_files(), 1, "the rewrite was published in close");
    fs.release(fh).unwrap();
    wait_until_published(&fs);
    let node = fs.store().get(&path).unwrap().expect("published");
    assert_eq!(node.content.size(), new.len() as u64);
    assert!(read_all(&fs, attr.ino) == new);

    // A change inside the file is published in its close: peers see it soon after
    // the close rather than after the whole file is chunked again.
    let mut changed = new.clone();
    let patch = content(5, MIB);
    changed[7 * MIB..8 * MIB].copy_from_slice(&patch);
    let (fh, cache) = fs.open(attr.ino, libc::O_WRONLY).unwrap();
    assert!(matches!(cache, CacheMode::Passthrough(_)));
    fs.write(fh, (7 * MIB) as u64, &patch).unwrap();
    fs.flush(fh).unwrap();
    assert_eq!(fs.owed_files(), 0, "a change inside a file was owed");
    let node = fs.store().get(&path).unwrap().expect("published");
    assert_eq!(node.content.size(), changed.len() as u64);
    fs.release(fh).unwrap();
    assert!(read_all(&fs, attr.ino) == changed);
}

#[test]
fn a_change_after_an_owed_close_waits_for_its_publish() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = filesystem(dir.path()) else {
        return;
    };
    let data = content(3, 48 * MIB);
    let (attr, fh, _) = fs
        .create(ROOT_INO, b"app.war", 0o644, libc::O_WRONLY, CALLER)
        .unwrap();
    write_all(&fs, fh, &data);
    fs.flush(fh).unwrap();
    fs.release(fh).unwrap();
    // The next change commits after the file: whoever sees the directory sees the
    // file whole (the publish of 48 MiB takes far longer than this call).
    fs.mkdir(ROOT_INO, b"after", 0o755, CALLER).unwrap();
    assert_eq!(fs.owed_files(), 0, "the mkdir did not wait for the publish");
    let node = fs
        .store()
        .get(&RelPath::parse(b"app.war").unwrap())
        .unwrap()
        .expect("published before the mkdir");
    assert_eq!(node.content.size(), data.len() as u64);
    assert!(read_all(&fs, attr.ino) == data);
}
