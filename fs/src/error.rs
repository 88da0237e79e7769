//! Errno results for filesystem calls.

use depfs_proto::NameError;
use depfs_store::StoreError;

/// A failed filesystem call: the errno Linux would return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(libc::EPERM);
    /// No such file or directory.
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    /// Input/output error (damaged or unreadable content).
    pub const EIO: Errno = Errno(libc::EIO);
    /// Bad file handle.
    pub const EBADF: Errno = Errno(libc::EBADF);
    /// The name exists.
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    /// Not a directory.
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    /// Is a directory.
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// File too large (past the size limit).
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    /// Read-only filesystem (a worker in one-way mode).
    pub const EROFS: Errno = Errno(libc::EROFS);
    /// Name too long.
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    /// Directory not empty.
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    /// Not supported.
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
    /// Operation not supported.
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    /// Inappropriate ioctl.
    pub const ENOTTY: Errno = Errno(libc::ENOTTY);
    /// Busy.
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    /// Stale handle: the entry is gone.
    pub const ESTALE: Errno = Errno(libc::ESTALE);
}

/// The result of a filesystem call.
pub type FsResult<T> = Result<T, Errno>;

impl From<StoreError> for Errno {
    fn from(e: StoreError) -> Self {
        // Store failures are the daemon's problem, not the caller's: log them in full.
        tracing::error!(error = %e, "store operation failed");
        Errno(e.errno())
    }
}

impl From<NameError> for Errno {
    fn from(e: NameError) -> Self {
        match e {
            NameError::TooLong { .. } => Errno::ENAMETOOLONG,
            NameError::Empty => Errno::ENOENT,
            NameError::ForbiddenByte { .. } | NameError::Dot => Errno::EINVAL,
        }
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        tracing::error!(error = %e, "staging I/O failed");
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}
