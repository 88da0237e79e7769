//! How often one close of a written file takes the inode tables' lock: every `flush` and
//! `release` of a handle locks them a few times, and the count should only go down.
//! (Counted in debug builds only; a release build has nothing to check.)

#![cfg(test)]

mod common;

use depfs_fs::{Caller, DepFs};

const ROOT_INO: u64 = 1;

/// Tables locks taken by the close (`flush` + `release`) of a new file written through
/// the daemon (passthrough off): the figure when this test was written (the flush 6:
/// its handle, the publish 4, marking the handle flushed; the release 5: its handle,
/// the publish finding the file clean, removing the handle, closing the inode, and
/// clearing `copy_arriving`).
const CLOSE_LOCKS: u64 = 11;

/// The same through passthrough (when the staging filesystem allows it): one more.
const PASSTHROUGH_CLOSE_LOCKS: u64 = 12;

/// Creates `name`, writes to it and closes it: the tables locks taken by the
/// `flush` + `release`, and by the whole.
fn create_write_close(fs: &DepFs, name: &[u8]) -> (u64, u64) {
    let caller = Caller { uid: 0, gid: 0 };
    let start = fs.tables_locks();
    let (_, fh, _) = fs
        .create(ROOT_INO, name, 0o644, libc::O_WRONLY, caller)
        .unwrap();
    fs.write(fh, 0, b"some bytes").unwrap();
    let before_close = fs.tables_locks();
    fs.flush(fh).unwrap();
    fs.release(fh).unwrap();
    let end = fs.tables_locks();
    (end - before_close, end - start)
}

#[test]
fn closing_a_written_file_takes_the_tables_lock_a_bounded_number_of_times() {
    if !cfg!(debug_assertions) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = common::filesystem(dir.path(), |config| config.local_copy_budget = 0);
    let (close, all) = create_write_close(&fs, b"f");
    eprintln!("through the daemon: close {close}, create+write+close {all}");
    assert!(
        close <= CLOSE_LOCKS,
        "a close took the tables lock {close} times"
    );
}

#[test]
fn closing_a_file_written_through_passthrough_is_counted_too() {
    if !cfg!(debug_assertions) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = common::filesystem(dir.path(), |_| {});
    let (close, all) = create_write_close(&fs, b"f");
    eprintln!(
        "passthrough {}: close {close}, create+write+close {all}",
        fs.passthrough_enabled()
    );
    assert!(
        close <= PASSTHROUGH_CLOSE_LOCKS,
        "a close took the tables lock {close} times"
    );
}
