//! Local copies: whole-file copies of large contents, kept so the kernel can read them
//! directly through FUSE passthrough instead of asking the daemon for every page.
//!
//! A file written here past the spill threshold is staged in an anonymous file of the
//! staging directory; once published, that file holds exactly the committed content.
//! Instead of throwing it away at the last close, it is kept here with the content it
//! holds (its chunk list), within a byte budget (oldest first out). The next open of that content takes
//! it back and hands it to the kernel as the inode's backing file, so reads (and writes)
//! run at the speed of the local disk's page cache.
//!
//! The files are anonymous (`O_TMPFILE`): a crash frees them, and nothing needs cleaning
//! at the next start. Content received from peers has no local copy; it is read through
//! the daemon as before.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

use depfs_proto::{Content, Timespec};

use crate::staging::OwedName;

/// What identifies the state of a local copy file without reading it: size, and the
/// modification and change times the kernel sets on every write (fine-grained once they
/// have been queried, so two writes are never confused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) len: u64,
    pub(crate) mtime: Timespec,
    pub(crate) ctime: Timespec,
}

impl Stamp {
    pub(crate) fn of(file: &File) -> io::Result<Stamp> {
        let md = file.metadata()?;
        let time = |secs: i64, nanos: i64| Timespec::new(secs, nanos.clamp(0, 999_999_999) as u32);
        Ok(Stamp {
            len: md.len(),
            mtime: time(md.mtime(), md.mtime_nsec()),
            ctime: time(md.ctime(), md.ctime_nsec()),
        })
    }
}

/// True if the filesystem of `dir` gives every write a distinct change time once the
/// previous one was looked at (Linux multigrain timestamps, 6.13+ on ext4, xfs, btrfs
/// and tmpfs). Writes made through passthrough never reach the daemon, which tells them
/// apart by [`Stamp`]s: without fine-grained times two writes in one clock tick would look
/// like none, so passthrough is not used.
pub(crate) fn fine_grained_stamps(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::FileExt;
    let probe = || -> io::Result<bool> {
        let file = tempfile::tempfile_in(dir)?;
        let mut last = Stamp::of(&file)?;
        for round in 0..8u8 {
            file.write_all_at(&[round], 0)?;
            let now = Stamp::of(&file)?;
            if now == last {
                return Ok(false);
            }
            last = now;
        }
        Ok(true)
    };
    match probe() {
        Ok(fine) => fine,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot probe file timestamps; passthrough off");
            false
        }
    }
}

/// The backing file of an inode served through passthrough, and the kernel's id for it
/// (registered at the first open, reused by every open while the inode stays open: the
/// kernel allows one backing file per inode).
#[derive(Debug)]
pub struct Backing {
    file: File,
    id: parking_lot::Mutex<Option<fuser::BackingId>>,
}

impl Backing {
    pub(crate) fn new(file: &File) -> io::Result<Backing> {
        Ok(Backing {
            file: file.try_clone()?,
            id: parking_lot::Mutex::new(None),
        })
    }

    /// The file to register with the kernel.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The kernel's id of the file, once registered (see [`crate::ops`]).
    pub fn id(&self) -> parking_lot::MutexGuard<'_, Option<fuser::BackingId>> {
        self.id.lock()
    }
}

/// Closes large files on a thread of its own. The last close of a file of hundreds of
/// MiB frees its pages, which is slow (docs/measurements.md): done under a lock or on a
/// thread serving requests, it would hold up an `open` that has nothing to do with it.
#[derive(Debug)]
pub(crate) struct Disposer {
    to: Option<std::sync::mpsc::Sender<File>>,
}

impl Disposer {
    /// Starts the thread; if that fails, files are closed where they are given up.
    pub(crate) fn start() -> Disposer {
        let (tx, rx) = std::sync::mpsc::channel::<File>();
        let spawned = std::thread::Builder::new()
            .name("depfs-dispose".into())
            .spawn(move || rx.into_iter().for_each(drop));
        match spawned {
            Ok(_) => Disposer { to: Some(tx) },
            Err(e) => {
                tracing::warn!(error = %e, "no thread for closing large files; closing them inline");
                Disposer { to: None }
            }
        }
    }

    /// Closes `files` away from the caller (the thread ends once the disposer is dropped
    /// and every file given to it is closed).
    pub(crate) fn dispose(&self, files: impl IntoIterator<Item = File>) {
        for file in files {
            // Without the thread (or once it is gone) the file is closed here: dropped
            // with the send's error, or at the end of this iteration.
            if let Some(to) = &self.to {
                let _ = to.send(file);
            }
        }
    }
}

/// Local copies not in use, oldest first, within a byte budget.
#[derive(Debug)]
pub(crate) struct LocalCopies {
    budget: u64,
    used: u64,
    /// Few entries (each is a large file): found by comparing chunk lists.
    idle: VecDeque<(Content, File, Option<OwedName>)>,
}

impl LocalCopies {
    pub(crate) fn new(budget: u64) -> Self {
        LocalCopies {
            budget,
            used: 0,
            idle: VecDeque::new(),
        }
    }

    /// True if no copy is kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }

    /// Takes the copy of `content` out of the cache, if there is one.
    pub(crate) fn take(&mut self, content: &Content) -> Option<(File, Option<OwedName>)> {
        if content.chunks().is_empty() {
            return None;
        }
        let at = self.idle.iter().position(|(c, _, _)| c == content)?;
        let (content, file, name) = self.idle.remove(at)?;
        self.used -= content.size();
        Some((file, name))
    }

    /// Keeps `file`, which holds exactly `content`, for the next open; the oldest copies
    /// go to stay within the budget. Returns the files no longer kept (`file` itself if
    /// it is not), for the caller to close outside the lock: closing the last descriptor
    /// of a large file frees its pages, which is slow.
    #[must_use = "closing the files returned is slow: hand them to a `Disposer`"]
    /// (A file's name, if it has one, goes with it: dropped, it is removed.)
    pub(crate) fn put(
        &mut self,
        content: &Content,
        file: File,
        name: Option<OwedName>,
    ) -> Vec<File> {
        let len = content.size();
        if content.chunks().is_empty()
            || len > self.budget
            || self.idle.iter().any(|(c, _, _)| c == content)
        {
            return vec![file];
        }
        let mut evicted = Vec::new();
        while self.used + len > self.budget {
            match self.idle.pop_front() {
                Some((dropped, old, _name)) => {
                    self.used -= dropped.size();
                    evicted.push(old);
                }
                None => break,
            }
        }
        self.used += len;
        self.idle.push_back((content.clone(), file, name));
        evicted
    }

    /// Bytes held by idle copies.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use depfs_proto::{ChunkHash, ChunkRef};

    fn content(seed: u8, len: u32) -> Content {
        Content::Chunked(vec![ChunkRef {
            hash: ChunkHash([seed; 32]),
            len,
        }])
    }

    #[test]
    fn copies_are_found_by_content_and_taken_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut copies = LocalCopies::new(100);
        let rejected = copies.put(
            &content(1, 40),
            tempfile::tempfile_in(dir.path()).unwrap(),
            None,
        );
        assert!(rejected.is_empty());
        assert!(copies.take(&content(2, 40)).is_none());
        assert!(copies.take(&content(1, 40)).is_some());
        assert!(
            copies.take(&content(1, 40)).is_none(),
            "a copy has one user"
        );
        assert_eq!(copies.used(), 0);
        assert!(copies.take(&Content::Inline(b"x".to_vec())).is_none());
    }

    #[test]
    fn the_oldest_copies_go_first_to_stay_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut copies = LocalCopies::new(100);
        let mut given_back = 0;
        for seed in 1..=3 {
            let file = tempfile::tempfile_in(dir.path()).unwrap();
            given_back += copies.put(&content(seed, 40), file, None).len();
        }
        assert_eq!(given_back, 1, "the oldest copy is handed back for closing");
        assert_eq!(copies.used(), 80);
        assert!(copies.take(&content(1, 40)).is_none());
        assert!(copies.take(&content(3, 40)).is_some());
        let too_large = tempfile::tempfile_in(dir.path()).unwrap();
        assert_eq!(copies.put(&content(9, 200), too_large, None).len(), 1);
        assert!(
            copies.take(&content(9, 200)).is_none(),
            "larger than the budget"
        );
    }

    #[test]
    fn the_disposer_closes_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = tempfile::tempfile_in(dir.path()).unwrap();
        let watch = file.try_clone().unwrap();
        let disposer = Disposer::start();
        disposer.dispose([file]);
        drop(disposer);
        // The thread closes the file and then ends; `watch` keeps the description open,
        // so the number of its descriptors drops to one (ours).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let fd_dir = std::path::Path::new("/proc/self/fd");
        let (dev, ino) = {
            let md = watch.metadata().unwrap();
            (md.dev(), md.ino())
        };
        let open_fds = || {
            std::fs::read_dir(fd_dir)
                .unwrap()
                .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
                .filter(|m| (m.dev(), m.ino()) == (dev, ino))
                .count()
        };
        while open_fds() > 1 {
            assert!(std::time::Instant::now() < deadline, "file never closed");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_stamp_changes_with_a_write() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let file = tempfile::tempfile_in(dir.path()).unwrap();
        file.write_all_at(b"abc", 0).unwrap();
        let before = Stamp::of(&file).unwrap();
        file.write_all_at(b"x", 1).unwrap();
        assert_ne!(Stamp::of(&file).unwrap(), before);
    }
}
