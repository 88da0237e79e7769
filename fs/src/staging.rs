//! Staged file content: the bytes of a file being written, kept until the file is closed
//! or fsynced and its new content is committed as one change.
//!
//! Small files stay in memory; past a threshold the content moves to an anonymous
//! temporary file in the data directory, so a 1 GiB write does not need 1 GiB of RAM.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use depfs_proto::Content;
use depfs_store::{ContentReader, PinGuard, Store};

use crate::error::FsResult;

/// Content being written.
#[derive(Debug)]
pub(crate) enum Staging {
    Memory(Vec<u8>),
    /// In `file`, which has the name `name` in the staging directory once the file
    /// was owed (see [`OwedName`]).
    Disk {
        file: File,
        len: u64,
        name: Option<OwedName>,
    },
}

/// Where staging spills to disk, and from what size.
#[derive(Debug, Clone)]
pub(crate) struct SpillPolicy<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) threshold: u64,
}

impl Staging {
    /// Staging initialised with the current committed content (copy-on-first-write).
    pub(crate) fn from_content(
        store: &Store,
        reader: &ContentReader,
        spill: &SpillPolicy<'_>,
    ) -> FsResult<Staging> {
        let size = reader.size();
        let mut staging = Staging::Memory(Vec::new());
        const STEP: usize = 1 << 20;
        let mut offset = 0u64;
        while offset < size {
            let data = reader.read(store, offset, STEP)?;
            if data.is_empty() {
                break;
            }
            staging.write(offset, &data, spill)?;
            offset += data.len() as u64;
        }
        Ok(staging)
    }

    pub(crate) fn empty() -> Staging {
        Staging::Memory(Vec::new())
    }

    /// Staging in `file`, which already holds `len` bytes (a local copy), with the
    /// name it has if it was owed.
    pub(crate) fn on_disk(file: File, len: u64, name: Option<OwedName>) -> Staging {
        Staging::Disk { file, len, name }
    }

    /// The name of the disk file in the staging directory, if it has one.
    pub(crate) fn owed_name(&self) -> Option<&OwedName> {
        match self {
            Staging::Disk { name, .. } => name.as_ref(),
            Staging::Memory(_) => None,
        }
    }

    /// Gives the disk file its name (it was just linked).
    pub(crate) fn set_owed_name(&mut self, new: OwedName) {
        if let Staging::Disk { name, .. } = self {
            *name = Some(new);
        }
    }

    /// The file holding the content, once it spilled to disk.
    pub(crate) fn disk_file(&self) -> Option<&File> {
        match self {
            Staging::Memory(_) => None,
            Staging::Disk { file, .. } => Some(file),
        }
    }

    /// The file and its name, given up (for keeping as a local copy).
    pub(crate) fn into_disk_file(self) -> Option<(File, Option<OwedName>)> {
        match self {
            Staging::Memory(_) => None,
            Staging::Disk { file, name, .. } => Some((file, name)),
        }
    }

    /// Records the length of a disk file written behind our back (by the kernel, through
    /// passthrough).
    pub(crate) fn set_known_len(&mut self, new_len: u64) {
        if let Staging::Disk { len, .. } = self {
            *len = new_len;
        }
    }

    pub(crate) fn len(&self) -> u64 {
        match self {
            Staging::Memory(buf) => buf.len() as u64,
            Staging::Disk { len, .. } => *len,
        }
    }

    pub(crate) fn read(&self, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        let len = self.len();
        if offset >= len {
            return Ok(Vec::new());
        }
        let end = len.min(offset.saturating_add(size as u64));
        match self {
            Staging::Memory(buf) => Ok(buf[offset as usize..end as usize].to_vec()),
            Staging::Disk { file, .. } => {
                let mut out = vec![0u8; (end - offset) as usize];
                file.read_exact_at(&mut out, offset)?;
                Ok(out)
            }
        }
    }

    pub(crate) fn write(
        &mut self,
        offset: u64,
        data: &[u8],
        spill: &SpillPolicy<'_>,
    ) -> io::Result<()> {
        let end = offset + data.len() as u64;
        if let Staging::Memory(buf) = self {
            if end > spill.threshold {
                let file = tempfile::tempfile_in(spill.dir)?;
                file.write_all_at(buf, 0)?;
                *self = Staging::Disk {
                    file,
                    len: buf.len() as u64,
                    name: None,
                };
            }
        }
        match self {
            Staging::Memory(buf) => {
                let end = end as usize;
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[offset as usize..end].copy_from_slice(data);
            }
            Staging::Disk { file, len, .. } => {
                file.write_all_at(data, offset)?;
                *len = (*len).max(end);
            }
        }
        Ok(())
    }

    pub(crate) fn truncate(&mut self, size: u64, spill: &SpillPolicy<'_>) -> io::Result<()> {
        match self {
            Staging::Memory(buf) if size <= spill.threshold => buf.resize(size as usize, 0),
            Staging::Memory(_) => {
                // Growing a memory buffer past the threshold: spill, then extend.
                self.write(size, &[], spill)?;
                return self.truncate(size, spill);
            }
            Staging::Disk { file, len, .. } => {
                file.set_len(size)?;
                *len = size;
            }
        }
        Ok(())
    }

    /// Stores the staged content (chunked, written, pinned) for a commit.
    pub(crate) fn store(&self, store: &Store) -> depfs_store::Result<(Content, PinGuard)> {
        match self {
            Staging::Memory(buf) => store.write_content_from(buf.as_slice(), buf.len() as u64),
            Staging::Disk { file, len, .. } => store.write_content_from(file, *len),
        }
    }
}

/// The name a staging file got when it was first owed; dropped with the file (closed,
/// or no longer kept), it removes the name.
#[derive(Debug)]
pub(crate) struct OwedName {
    number: u64,
    path: PathBuf,
}

impl OwedName {
    pub(crate) fn new(number: u64, path: PathBuf) -> OwedName {
        OwedName { number, path }
    }

    pub(crate) fn number(&self) -> u64 {
        self.number
    }
}

impl Drop for OwedName {
    fn drop(&mut self) {
        remove_quietly(&self.path);
    }
}

pub(crate) fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a file of the staging directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_spills_to_disk_and_keeps_content() {
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillPolicy {
            dir: dir.path(),
            threshold: 100,
        };
        let mut s = Staging::empty();
        s.write(0, b"hello", &spill).unwrap();
        assert!(matches!(s, Staging::Memory(_)));
        s.write(200, b"world", &spill).unwrap();
        assert!(matches!(s, Staging::Disk { .. }));
        assert_eq!(s.len(), 205);
        assert_eq!(s.read(0, 5).unwrap(), b"hello");
        assert_eq!(s.read(5, 3).unwrap(), vec![0, 0, 0]);
        assert_eq!(s.read(200, 100).unwrap(), b"world");
        s.truncate(300, &spill).unwrap();
        let all = s.read(0, 1000).unwrap();
        assert_eq!(all.len(), 300);
        assert_eq!(&all[200..205], b"world");
        assert!(all[205..].iter().all(|&b| b == 0));
        s.truncate(2, &spill).unwrap();
        assert_eq!(s.read(0, 10).unwrap(), b"he");
    }

    #[test]
    fn growing_truncate_past_threshold_spills() {
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillPolicy {
            dir: dir.path(),
            threshold: 10,
        };
        let mut s = Staging::empty();
        s.write(0, b"abc", &spill).unwrap();
        s.truncate(50, &spill).unwrap();
        assert_eq!(s.len(), 50);
        assert_eq!(s.read(0, 4).unwrap(), b"abc\0");
    }
}
