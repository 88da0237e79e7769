//! Importing an existing directory into a new store.
//!
//! WSO2 ships default artifacts in `repository/deployment/server`; when depfs is first
//! mounted over it, what is there becomes the initial tree, so nothing the operator had
//! disappears.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use depfs_proto::{Content, Kind, Meta, Node, RelPath, Timespec};
use depfs_store::{Durability, PinGuard, Store, StoreError};

/// What an import found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Regular files imported.
    pub files: u64,
    /// Directories imported.
    pub dirs: u64,
    /// Symbolic links imported.
    pub symlinks: u64,
    /// Bytes of file content imported.
    pub bytes: u64,
    /// Devices, FIFOs and sockets, which depfs does not store.
    pub skipped: u64,
}

/// Why an import failed. The source directory is never modified, so a failed import
/// loses nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the source failed.
    #[error("import {path}: {source}")]
    Io {
        /// The source entry.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A source name cannot be stored (see `depfs_proto::name`).
    #[error("import {path}: name not allowed: {source}")]
    Name {
        /// The source entry.
        path: PathBuf,
        /// Why the name is refused.
        source: depfs_proto::NameError,
    },
    /// The store failed.
    #[error("import: {0}")]
    Store(#[from] StoreError),
}

/// Entries committed per change during an import.
const BATCH: usize = 512;

/// What `fs_path` holds, as the kind, content and pin of the entry to import, counted in
/// `stats`; `None` for a device, FIFO or socket, which depfs does not store.
fn read_entry(
    store: &Store,
    fs_path: &Path,
    md: &fs::Metadata,
    stats: &mut ImportStats,
) -> Result<Option<(Kind, Content, PinGuard)>, ImportError> {
    let io = |source| ImportError::Io {
        path: fs_path.to_path_buf(),
        source,
    };
    let ft = md.file_type();
    let entry = if ft.is_dir() {
        stats.dirs += 1;
        (Kind::Dir, Content::empty(), PinGuard::none())
    } else if ft.is_file() {
        let file = fs::File::open(fs_path).map_err(io)?;
        let (content, pin) = store.write_content_from(&file, md.len())?;
        stats.files += 1;
        stats.bytes += md.len();
        (Kind::File, content, pin)
    } else if ft.is_symlink() {
        let target = fs::read_link(fs_path).map_err(io)?;
        stats.symlinks += 1;
        let target = Content::Inline(target.as_os_str().as_bytes().to_vec());
        (Kind::Symlink, target, PinGuard::none())
    } else {
        tracing::warn!(path = %fs_path.display(), "import skips a device, FIFO or socket");
        stats.skipped += 1;
        return Ok(None);
    };
    Ok(Some(entry))
}

/// Copies the tree under `dir` (including the attributes of `dir` itself, which become
/// the root's) into `store`, in changes of at most [`BATCH`] entries, parents first.
pub fn import_dir(
    store: &Store,
    dir: &Path,
    wall_ms: impl Fn() -> u64,
    progress: &mut dyn FnMut(&ImportProgress),
) -> Result<ImportStats, ImportError> {
    let mut stats = ImportStats::default();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Io { path, source }
    };
    let (total_files, total_bytes) = measure(dir);
    let mut report = |stats: &ImportStats| {
        progress(&ImportProgress {
            done: stats.clone(),
            total_files,
            total_bytes,
        })
    };
    let root_meta = fs::symlink_metadata(dir).map_err(io(dir))?;
    let mut batch: Vec<(RelPath, Node, PinGuard)> = vec![(
        RelPath::root(),
        Node {
            meta: meta_of(&root_meta, Kind::Dir),
            content: Content::empty(),
        },
        PinGuard::none(),
    )];
    let mut queue = vec![(dir.to_path_buf(), RelPath::root())];
    while let Some((fs_dir, rel_dir)) = queue.pop() {
        let mut children: Vec<_> = fs::read_dir(&fs_dir)
            .map_err(io(&fs_dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&fs_dir))?;
        children.sort_by_key(|e| e.file_name());
        for child in children {
            let fs_path = child.path();
            let rel = rel_dir
                .join(child.file_name().as_bytes())
                .map_err(|source| ImportError::Name {
                    path: fs_path.clone(),
                    source,
                })?;
            let md = fs::symlink_metadata(&fs_path).map_err(io(&fs_path))?;
            let Some((kind, content, pin)) = read_entry(store, &fs_path, &md, &mut stats)? else {
                continue;
            };
            if kind == Kind::Dir {
                queue.push((fs_path.clone(), rel.clone()));
            }
            batch.push((
                rel,
                Node {
                    meta: meta_of(&md, kind),
                    content,
                },
                pin,
            ));
            if batch.len() >= BATCH {
                commit(store, &mut batch, wall_ms())?;
                report(&stats);
            }
        }
    }
    commit(store, &mut batch, wall_ms())?;
    store.sync()?;
    report(&stats);
    Ok(stats)
}

/// How far an import has come, for progress reports.
#[derive(Debug, Clone, Default)]
pub struct ImportProgress {
    /// What is imported so far.
    pub done: ImportStats,
    /// Regular files in the directory (counted before the import starts).
    pub total_files: u64,
    /// Their bytes.
    pub total_bytes: u64,
}

/// Regular files under `dir` and their bytes (unreadable parts count as nothing: the
/// import itself reports them).
fn measure(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut queue = vec![dir.to_path_buf()];
    while let Some(d) = queue.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(md) if md.is_dir() => queue.push(entry.path()),
                Ok(md) if md.is_file() => {
                    files += 1;
                    bytes += md.len();
                }
                _ => {}
            }
        }
    }
    (files, bytes)
}

fn commit(
    store: &Store,
    batch: &mut Vec<(RelPath, Node, PinGuard)>,
    wall_ms: u64,
) -> Result<(), ImportError> {
    let mut tx = store.transaction();
    let mut pins = Vec::with_capacity(batch.len());
    for (path, node, pin) in batch.drain(..) {
        tx.put(path, node);
        pins.push(pin);
    }
    tx.commit(wall_ms, Durability::Process)?;
    drop(pins);
    Ok(())
}

fn meta_of(md: &fs::Metadata, kind: Kind) -> Meta {
    Meta {
        kind,
        perm: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: Timespec::new(md.mtime(), md.mtime_nsec() as u32),
        ctime: Timespec::new(md.ctime(), md.ctime_nsec() as u32),
    }
}
