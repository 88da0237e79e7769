//! Errno results for filesystem calls.

use depfs_proto::NameError;
use depfs_store::StoreError;

/// A failed filesystem call: the errno Linux would return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    pub const ENOTTY: Errno = Errno(libc::ENOTTY);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
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
