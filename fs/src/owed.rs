//! Publishing large files after their `close` has returned.
//!
//! Cutting a file of hundreds of MiB into chunks, hashing and storing them is slow; a
//! writer waiting for that in `close` writes far below the disk's speed (figures in
//! docs/measurements.md).
//! A file of [`OWED_FROM`] bytes or more written from empty (created here, opened with
//! `O_TRUNC` or truncated to 0) through passthrough (so its bytes are already in a file
//! of the staging directory) is *owed* instead: `close` links its
//! staging file under a name of the staging directory, next to a note saying where it
//! goes, and returns; a thread publishes it. Both survive a crash of the daemon (the
//! page cache keeps them): the next mount publishes owed files before it serves, so the
//! promise of `close` (the content survives `kill -9`) holds. `fsync` still publishes
//! before it returns, and makes the store durable against power loss.
//!
//! Order: every operation that commits a change, or opens a file for writing, first
//! waits until nothing is owed ([`Owed::settle`]). The cluster sees changes in the order
//! they were made (write a temporary file, close, rename: the content commits before
//! the rename), and no writer changes an owed file under the thread publishing it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use depfs_proto::{Dot, Meta, RelPath};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::local_copy::{Backing, Stamp};
use crate::open_file::OpenFile;
use crate::staging::{remove_quietly, OwedName};

/// Files of this size or more are published after their `close` returns (the size at
/// which the store writes chunks in bulk, skipping its write-ahead log).
pub const OWED_FROM: u64 = 32 << 20;

/// What the next mount needs to publish an owed file the daemon did not get to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Note {
    /// Where the content goes.
    pub(crate) path: RelPath,
    pub(crate) meta: Meta,
    /// The versions of `path` the writes started from (see `Tx::put_based`).
    pub(crate) started_from: Vec<Dot>,
    /// Created by this write: published even though the path holds no file yet.
    pub(crate) new_file: bool,
    /// The content's length.
    pub(crate) len: u64,
}

/// A file to publish: its inode (kept open for the job), its open file and the
/// staging file the content is read from, the state that file had at `close`, and the
/// number of its note.
pub(crate) struct Job {
    pub(crate) ino: u64,
    pub(crate) file: Arc<OpenFile>,
    pub(crate) source: Arc<Backing>,
    pub(crate) stamp: Stamp,
    pub(crate) number: u64,
}

/// The owed files of one mount: their count, and where their jobs go.
#[derive(Debug)]
pub(crate) struct Owed {
    dir: PathBuf,
    /// Owed files not yet published.
    count: Mutex<usize>,
    settled: Condvar,
    /// The publishing thread, once started (see `DepFs::start_publisher`).
    to: std::sync::OnceLock<std::sync::mpsc::Sender<Job>>,
    next: std::sync::atomic::AtomicU64,
}

impl Owed {
    pub(crate) fn new(dir: &Path) -> Owed {
        Owed {
            dir: dir.to_path_buf(),
            count: Mutex::new(0),
            settled: Condvar::new(),
            to: std::sync::OnceLock::new(),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// True once a thread publishes owed files: without it every file is published in
    /// its `close`.
    pub(crate) fn enabled(&self) -> bool {
        self.to.get().is_some()
    }

    /// Sends jobs to `to` from now on; false if a publisher was set already.
    pub(crate) fn set_publisher(&self, to: std::sync::mpsc::Sender<Job>) -> bool {
        self.to.set(to).is_ok()
    }

    /// Waits until every owed file is published.
    pub(crate) fn settle(&self) {
        let mut count = self.count.lock();
        while *count > 0 {
            self.settled.wait(&mut count);
        }
    }

    /// Owed files not yet published.
    pub(crate) fn pending(&self) -> usize {
        *self.count.lock()
    }

    /// Gives the anonymous staging `file` a name in the staging directory. An
    /// `O_TMPFILE` can be linked once only: the file keeps the name, and every later
    /// note of it uses it, until the file is closed ([`OwedName`] removes it then).
    pub(crate) fn name(&self, file: &File) -> std::io::Result<OwedName> {
        let number = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.data_path(number);
        link_anonymous(file, &path)?;
        Ok(OwedName::new(number, path))
    }

    /// Makes the file named `name` owed as `note` says, and counts it.
    pub(crate) fn record(&self, name: &OwedName, note: &Note) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("owed-{}.note.tmp", name.number()));
        let written = std::fs::write(&tmp, depfs_proto::codec::encode_value(note))
            .and_then(|()| std::fs::rename(&tmp, self.note_path(name.number())));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        *self.count.lock() += 1;
        Ok(())
    }

    /// Hands `job` to the publishing thread; gives it back if there is none.
    pub(crate) fn send(&self, job: Job) -> Result<(), Job> {
        match self.to.get() {
            Some(to) => to.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// A job is over (its files forgotten, or left for the next mount): wakes whoever
    /// waits in `settle` once none is left.
    pub(crate) fn finish(&self) {
        let mut count = self.count.lock();
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.settled.notify_all();
        }
    }

    /// Removes the note of `number` (its file is published).
    pub(crate) fn forget(&self, number: u64) {
        remove_quietly(&self.note_path(number));
    }

    fn note_path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("owed-{number}.note"))
    }

    fn data_path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("owed-{number}.data"))
    }

    /// The owed files a previous daemon left, oldest first: number, note (or why it
    /// cannot be read) and content file. Named files without a note (kept local
    /// copies, published) are removed.
    pub(crate) fn left_over(&self) -> std::io::Result<Vec<LeftOver>> {
        let mut found = Vec::new();
        let mut named = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str().and_then(|n| n.strip_prefix("owed-")) else {
                continue;
            };
            if let Some(number) = name
                .strip_suffix(".data")
                .and_then(|n| n.parse::<u64>().ok())
            {
                named.push(number);
                continue;
            }
            let Some(number) = name
                .strip_suffix(".note")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let note = std::fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    depfs_proto::codec::decode_value::<Note>(&bytes).map_err(|e| e.to_string())
                });
            found.push(LeftOver {
                number,
                note,
                data: self.data_path(number),
            });
        }
        found.sort_by_key(|l| l.number);
        for number in named {
            if found.iter().all(|l| l.number != number) {
                remove_quietly(&self.data_path(number));
            }
        }
        // Numbers continue after the left-over ones (their files stay until published).
        if let Some(last) = found.last() {
            self.next
                .fetch_max(last.number + 1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(found)
    }
}

/// An owed file found at mount.
#[derive(Debug)]
pub(crate) struct LeftOver {
    pub(crate) number: u64,
    pub(crate) note: Result<Note, String>,
    pub(crate) data: PathBuf,
}

/// Gives the anonymous (`O_TMPFILE`) `file` the name `to`.
fn link_anonymous(file: &File, to: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use depfs_proto::{Kind, NodeName, Timespec};
    use depfs_store::{Store, StoreOptions};

    fn meta(mtime: i64) -> Meta {
        Meta {
            kind: Kind::File,
            perm: 0o644,
            uid: 0,
            gid: 0,
            mtime: Timespec::new(mtime, 0),
            ctime: Timespec::new(mtime, 0),
        }
    }

    fn filesystem(dir: &Path) -> crate::DepFs {
        let root = Meta {
            kind: Kind::Dir,
            perm: 0o755,
            ..meta(0)
        };
        let store = Store::open(
            &dir.join("store"),
            &NodeName::new("gw1").unwrap(),
            &StoreOptions::new(root),
        )
        .unwrap();
        let staging = dir.join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        crate::DepFs::new(store, crate::FsConfig::new(staging))
    }

    /// Leaves `data` and a note for it as a killed daemon would have.
    fn leave(dir: &Path, number: u64, note: &Note, data: &[u8]) {
        let staging = dir.join("staging");
        std::fs::write(staging.join(format!("owed-{number}.data")), data).unwrap();
        std::fs::write(
            staging.join(format!("owed-{number}.note")),
            depfs_proto::codec::encode_value(note),
        )
        .unwrap();
    }

    fn staging_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("staging"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn left_over_files_are_published_once_and_bad_ones_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fs = filesystem(dir.path());
        let path = RelPath::parse(b"app.war").unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let note = |mtime: i64, len: usize| Note {
            path: path.clone(),
            meta: meta(mtime),
            started_from: Vec::new(),
            new_file: true,
            len: len as u64,
        };

        // Not published before the kill: published now.
        leave(dir.path(), 3, &note(100, data.len()), &data);
        // An orphan name (a local copy's) and a note whose content is short.
        std::fs::write(dir.path().join("staging/owed-5.data"), b"x").unwrap();
        leave(dir.path(), 9, &note(200, data.len()), &data[..1000]);
        assert_eq!(fs.publish_left_over().unwrap(), 1);
        let node = fs.store().get(&path).unwrap().expect("published");
        assert_eq!(node.meta, meta(100));
        assert_eq!(node.content.size(), data.len() as u64);
        assert_eq!(staging_files(dir.path()), ["owed-9.data", "owed-9.note"]);
        std::fs::remove_file(dir.path().join("staging/owed-9.note")).unwrap();

        // Published, but killed before the note went: not committed again.
        let seq = fs.store().last_seq();
        leave(dir.path(), 11, &note(100, data.len()), &data);
        assert_eq!(fs.publish_left_over().unwrap(), 0);
        assert_eq!(fs.store().last_seq(), seq, "committed twice");
        assert_eq!(staging_files(dir.path()), Vec::<String>::new());

        // A corrupt note is kept for the operator, with its content.
        std::fs::write(dir.path().join("staging/owed-12.note"), b"\x01garbage").unwrap();
        std::fs::write(dir.path().join("staging/owed-12.data"), &data).unwrap();
        assert_eq!(fs.publish_left_over().unwrap(), 0);
        assert_eq!(staging_files(dir.path()), ["owed-12.data", "owed-12.note"]);
    }
}
