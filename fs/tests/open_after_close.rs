//! An open that reaches the daemon before the release of the writer's handle. The
//! kernel sends RELEASE without waiting for it after `close`, and the daemon serves
//! requests on several threads, so the open that follows a close can be served first:
//! it must wait for the release and get the local copy the release leaves (FUSE
//! passthrough), not join the writer's file and be read through the daemon.

#![cfg(test)]

use std::time::{Duration, Instant};

mod common;

use depfs_fs::{CacheMode, Caller, DepFs};

const ROOT_INO: u64 = 1;
const T: Duration = Duration::from_secs(20);

fn filesystem(dir: &std::path::Path) -> DepFs {
    common::filesystem(dir, |config| config.spill_threshold = 64 << 10)
}

/// Writes `len` bytes through the daemon to a file `name` and flushes it (the
/// descriptor's close); its inode and still-open handle. (A new file's own writes go
/// through passthrough: the file is created empty and closed first, then rewritten.)
fn write_and_close(fs: &DepFs, name: &[u8], len: usize) -> (u64, u64) {
    let caller = Caller { uid: 0, gid: 0 };
    let (attr, fh, _) = fs
        .create(ROOT_INO, name, 0o644, libc::O_WRONLY, caller)
        .unwrap();
    fs.flush(fh).unwrap();
    fs.release(fh).unwrap();
    let (fh, cache) = fs.open(attr.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    assert!(
        !matches!(cache, CacheMode::Passthrough(_)),
        "rewritten through the daemon"
    );
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
    for (i, block) in data.chunks(1 << 20).enumerate() {
        fs.write(fh, (i << 20) as u64, block).unwrap();
    }
    fs.flush(fh).unwrap();
    (attr.ino, fh)
}

fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn an_open_before_the_writers_release_waits_for_it_and_gets_the_local_copy() {
    let dir = tempfile::tempdir().unwrap();
    let fs = filesystem(dir.path());
    assert!(
        fs.passthrough_enabled(),
        "the staging filesystem's times are too coarse for passthrough here"
    );
    let (ino, writer) = write_and_close(&fs, b"app.car", 3 << 20);
    std::thread::scope(|s| {
        let opener = s.spawn(|| fs.open(ino, libc::O_RDONLY).unwrap());
        poll_until("the open to wait for the release", || {
            fs.opens_waiting_for_release() == 1
        });
        fs.release(writer).unwrap();
        let (reader, cache) = opener.join().unwrap();
        assert!(
            matches!(cache, CacheMode::Passthrough(_)),
            "the open joined the writer's file: {cache:?}"
        );
        assert_eq!(fs.read(reader, 5 << 16, 4).unwrap().len(), 4);
        fs.release(reader).unwrap();
    });
}

/// A descriptor duplicated before the close keeps the writer's handle open for good:
/// the open goes on after a bounded wait, through the daemon, and the next open does
/// not wait again.
#[test]
fn an_open_does_not_wait_for_a_handle_kept_by_a_duplicated_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let fs = filesystem(dir.path());
    let (ino, writer) = write_and_close(&fs, b"app.car", 3 << 20);
    let (first, cache) = fs.open(ino, libc::O_RDONLY).unwrap();
    assert!(!matches!(cache, CacheMode::Passthrough(_)));
    assert_eq!(fs.release_waits(), 1, "the first open waits (bounded)");
    let (second, _) = fs.open(ino, libc::O_RDONLY).unwrap();
    assert_eq!(fs.release_waits(), 1, "the second open does not wait again");
    assert_eq!(fs.read(second, 0, 16).unwrap().len(), 16);
    for fh in [first, second, writer] {
        fs.release(fh).unwrap();
    }
}
