//! The `fuser` adapter: translates kernel requests into [`DepFs`] calls and replies.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use depfs_proto::{Kind, Timespec};
use fuser::{
    AccessFlags, BackingId, BsdFileFlags, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::attr::Attr;
use crate::depfs::DepFs;
use crate::error::Errno;
use crate::local_copy::Backing;
use crate::open_file::CacheMode;
use crate::stats::{FsOp, FsStats};
use crate::types::{Caller, SetAttr};

/// Largest write the kernel may send in one request.
const MAX_WRITE: u32 = 1 << 20;

/// A [`DepFs`] served to the kernel.
pub struct FuseAdapter {
    fs: Arc<DepFs>,
}

impl FuseAdapter {
    /// Serves `fs`.
    pub fn new(fs: Arc<DepFs>) -> Self {
        FuseAdapter { fs }
    }

    /// Runs one request's handler, timed as `op`. A panic answers that request with
    /// `EIO` and the mount keeps serving: the reply, dropped unsent while unwinding,
    /// sends `EIO` itself (fuser's `Drop` for replies), and the panic is logged. A panic
    /// is a bug; this is the last line of defence against a bug that would otherwise
    /// end the session and take the directory away from the application.
    fn serve(&self, op: FsOp, handler: impl FnOnce()) {
        let _timer = self.fs.stats().timer(op);
        contain_panic(self.fs.stats(), op, handler);
    }

    fn ttl(&self) -> Duration {
        self.fs.config().ttl
    }

    /// The kernel's id of `backing`, registered with `register` at the inode's first
    /// open. Never retried once refused (passthrough is then off), so the opens of one
    /// inode are all passthrough or none, as the kernel requires.
    fn register<'a>(
        &self,
        backing: &'a Backing,
        register: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> parking_lot::MutexGuard<'a, Option<BackingId>> {
        let mut id = backing.id();
        if id.is_none() && self.fs.passthrough_enabled() {
            match register(backing.file()) {
                Ok(registered) => *id = Some(registered),
                Err(e) => self
                    .fs
                    .disable_passthrough(&format!("the kernel refused a backing file: {e}")),
            }
        }
        id
    }
}

/// Runs `handler`; if it panics, the panic is counted and logged instead of unwinding
/// further (see `FuseAdapter::serve`).
fn contain_panic(stats: &FsStats, op: FsOp, handler: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)) {
        stats.panicked();
        tracing::error!(
            op = op.name(),
            panic = panic_message(panic.as_ref()),
            "a filesystem operation panicked; it was answered EIO and the mount goes on"
        );
    }
}

/// The message of a caught panic, if it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

/// A stored time as a `SystemTime`, saturating at the epoch's representable range
/// (times come from other nodes and are never trusted to be sane).
fn time(t: Timespec) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
    let at = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
    };
    at.and_then(|at| at.checked_add(nanos))
        .unwrap_or(UNIX_EPOCH)
}

fn timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec::new(d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (secs, nanos) = if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            };
            Timespec::new(secs, nanos)
        }
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

fn file_attr(attr: &Attr) -> FileAttr {
    let m = &attr.meta;
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: time(m.mtime),
        mtime: time(m.mtime),
        ctime: time(m.ctime),
        crtime: time(m.ctime),
        kind: file_type(m.kind),
        perm: (m.perm & 0o7777) as u16,
        nlink: attr.nlink,
        uid: m.uid,
        gid: m.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with open(), so truncate-and-rewrite is staged and published as
        // one change instead of an empty file first.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            tracing::warn!(
                ?missing,
                "kernel lacks atomic O_TRUNC; truncation publishes separately"
            );
        }
        let _ = config.set_max_write(MAX_WRITE);
        // Handles that bypass a stale page cache (see `DepFs::open`) can still be mapped.
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        // Files with a local copy are read and written by the kernel directly (Linux
        // 6.9+). Backing files must be on a plain filesystem (stack depth 0).
        if self.fs.passthrough_enabled() {
            let accepted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !accepted {
                self.fs
                    .disable_passthrough("the kernel does not offer FUSE passthrough");
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.fs.publish_all();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.serve(FsOp::Lookup, || {
            match self.fs.lookup(parent.0, name.as_bytes()) {
                Ok(attr) => reply.entry(&self.ttl(), &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.serve(FsOp::Getattr, || match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.ttl(), &file_attr(&attr)),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.serve(FsOp::Setattr, || {
            let changes = SetAttr {
                mode,
                uid,
                gid,
                size,
                mtime: mtime.map(|t| match t {
                    TimeOrNow::SpecificTime(t) => timespec(t),
                    TimeOrNow::Now => timespec(SystemTime::now()),
                }),
            };
            match self.fs.setattr(ino.0, &changes) {
                Ok(attr) => reply.attr(&self.ttl(), &file_attr(&attr)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.serve(FsOp::Readlink, || match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.serve(FsOp::Mknod, || {
            match self
                .fs
                .mknod(parent.0, name.as_bytes(), mode & !umask, caller(req))
            {
                Ok(attr) => reply.entry(&self.ttl(), &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.serve(FsOp::Mkdir, || {
            match self
                .fs
                .mkdir(parent.0, name.as_bytes(), mode & !umask, caller(req))
            {
                Ok(attr) => reply.entry(&self.ttl(), &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.serve(FsOp::Unlink, || {
            match self.fs.unlink(parent.0, name.as_bytes()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.serve(FsOp::Rmdir, || {
            match self.fs.rmdir(parent.0, name.as_bytes()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.serve(FsOp::Symlink, || {
            match self.fs.symlink(
                parent.0,
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
                caller(req),
            ) {
                Ok(attr) => reply.entry(&self.ttl(), &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.serve(FsOp::Rename, || {
            match self.fs.rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                flags.bits(),
            ) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    /// Hard links would make one entry reachable by two paths, which path-identified
    /// replication cannot express: refused with `EPERM`, as on filesystems without them.
    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.serve(FsOp::Link, || {
            reply.error(fuser::Errno::EPERM);
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.serve(FsOp::Open, || {
            match self.fs.open(ino.0, flags.0) {
                Ok((fh, CacheMode::Keep)) => {
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE)
                }
                Ok((fh, CacheMode::Direct)) => {
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
                }
                Ok((fh, CacheMode::Passthrough(backing))) => {
                    let id = self.register(&backing, |file| reply.open_backing(file));
                    match id.as_ref() {
                        Some(id) => {
                            self.fs.stats().passthrough_opened();
                            reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), id)
                        }
                        // Served by the daemon from the same local copy; the page cache may
                        // hold another version, so it is bypassed.
                        None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                    }
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.serve(FsOp::Read, || match self.fs.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.serve(FsOp::Write, || match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.serve(FsOp::Flush, || match self.fs.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.serve(FsOp::Release, || match self.fs.release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.serve(FsOp::Fsync, || match self.fs.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.serve(FsOp::Setattr, || {
            match self.fs.fallocate(fh.0, offset, length, mode) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    /// No ioctl is a depfs operation. `ENOTTY` is what a regular file answers to a
    /// terminal ioctl (`isatty()` sends `TCGETS`; Python's `open` calls it on every
    /// file), so it is given quietly: fuser's default logs a warning for each.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(errno(Errno::ENOTTY));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.serve(FsOp::Opendir, || match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.serve(FsOp::Readdir, || {
            let result = self.fs.readdir(fh.0, offset, |ino, next, kind, name| {
                reply.add(INodeNo(ino), next, file_type(kind), OsStr::from_bytes(name))
            });
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsyncdir() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.serve(FsOp::Statfs, || match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(errno(e)),
        });
    }

    /// Extended attributes are not replicated, so they are not supported at all rather
    /// than silently kept on one node. The replies are `ENOSYS`: the kernel then answers
    /// `EOPNOTSUPP` itself from then on and stops asking. That matters for `getxattr`,
    /// which the kernel sends before every write (to see whether the write must clear
    /// `security.capability`): with `EOPNOTSUPP` from here, each write would cost a
    /// round trip more.
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.serve(FsOp::Xattr, || {
            reply.error(fuser::Errno::from_i32(libc::ENOSYS));
        });
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        self.serve(FsOp::Xattr, || {
            reply.error(fuser::Errno::from_i32(libc::ENOSYS));
        });
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.serve(FsOp::Xattr, || {
            if size == 0 {
                reply.size(0);
            } else {
                reply.data(&[]);
            }
        });
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.serve(FsOp::Xattr, || {
            reply.error(fuser::Errno::from_i32(libc::ENOSYS));
        });
    }

    /// Permission checks are the kernel's (`default_permissions`); this only answers
    /// whether the inode exists.
    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.serve(FsOp::Access, || match self.fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.serve(FsOp::Create, || {
            match self
                .fs
                .create(parent.0, name.as_bytes(), mode & !umask, flags, caller(req))
            {
                Ok((attr, fh, CacheMode::Passthrough(backing))) => {
                    let id = self.register(&backing, |file| reply.open_backing(file));
                    match id.as_ref() {
                        Some(id) => {
                            self.fs.stats().passthrough_opened();
                            reply.created_passthrough(
                                &self.ttl(),
                                &file_attr(&attr),
                                Generation(0),
                                FileHandle(fh),
                                FopenFlags::empty(),
                                id,
                            )
                        }
                        None => reply.created(
                            &self.ttl(),
                            &file_attr(&attr),
                            Generation(0),
                            FileHandle(fh),
                            FopenFlags::FOPEN_DIRECT_IO,
                        ),
                    }
                }
                Ok((attr, fh, _)) => reply.created(
                    &self.ttl(),
                    &file_attr(&attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(errno(e)),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Stands for a fuser reply: dropped unsent, it answers EIO.
    struct Reply<'a>(&'a AtomicBool);

    impl Drop for Reply<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_panicking_operation_is_answered_and_counted_and_the_caller_goes_on() {
        let stats = FsStats::default();
        let answered = AtomicBool::new(false);
        let reply = Reply(&answered);
        contain_panic(&stats, FsOp::Read, move || {
            let _reply = reply;
            panic!("a bug in read");
        });
        assert!(
            answered.load(Ordering::SeqCst),
            "the reply was dropped, so it answered"
        );
        assert_eq!(stats.panics(), 1);
        contain_panic(&stats, FsOp::Read, || ());
        assert_eq!(stats.panics(), 1, "an operation that returns is no panic");
    }
}
