//! The system calls the other crates share: the wall clock in milliseconds and a safe
//! `statvfs`.
//!
//! They live here because the store is the lowest crate that already talks to the
//! operating system, and `depfs-fs`, `depfs-replicator` and `depfs` all depend on it.
//! Keeping one copy of each means one place that decides what "now" is and one
//! `unsafe` block for `statvfs`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock in milliseconds since the Unix epoch: the physical part of hybrid
/// logical clock ticks and the `*_ms` timestamps depfs reports.
///
/// Never panics: a clock set before the epoch reads 0, and one too far ahead for a
/// `u64` of milliseconds reads `u64::MAX`.
pub fn now_ms() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        Err(_) => 0,
    }
}

/// What `statvfs` says about a filesystem: the fields depfs uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// The unit of `blocks`, `free` and `available`, in bytes (`f_frsize`).
    pub block_size: u64,
    /// Size of the filesystem in `block_size` units (`f_blocks`).
    pub blocks: u64,
    /// Free blocks (`f_bfree`).
    pub free: u64,
    /// Free blocks available to unprivileged users (`f_bavail`).
    pub available: u64,
    /// Inodes (`f_files`).
    pub files: u64,
    /// Free inodes (`f_ffree`).
    pub files_free: u64,
    /// Mount flags: `libc::ST_*` bits (`f_flag`).
    pub flags: u64,
    /// Longest file name, in bytes (`f_namemax`).
    pub name_max: u64,
}

impl Space {
    /// Bytes available to unprivileged writers, saturating at `u64::MAX`.
    pub fn available_bytes(&self) -> u64 {
        self.available.saturating_mul(self.block_size)
    }

    /// True if the filesystem is mounted read-only (`ST_RDONLY`).
    pub fn read_only(&self) -> bool {
        self.flags & libc::ST_RDONLY != 0
    }
}

/// `statvfs(2)` of the filesystem holding `path`.
///
/// Fails with the call's `errno`, or with [`io::ErrorKind::InvalidInput`] if `path`
/// contains a NUL byte (no such path can exist).
pub fn statvfs(path: &Path) -> io::Result<Space> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `libc::statvfs` is a struct of integers, for which all-zero bytes are a
    // valid value. `c_path` is a NUL-terminated string that lives until the end of
    // this block, and `&mut st` is a valid, exclusive pointer to a `libc::statvfs`,
    // which is all the call writes to.
    let (rc, st) = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        let rc = libc::statvfs(c_path.as_ptr(), &mut st);
        (rc, st)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // All u64 on 64-bit Linux, the only targets depfs is built for.
    Ok(Space {
        block_size: st.f_frsize,
        blocks: st.f_blocks,
        free: st.f_bfree,
        available: st.f_bavail,
        files: st.f_files,
        files_free: st.f_ffree,
        flags: st.f_flag,
        name_max: st.f_namemax,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_ms_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }

    #[test]
    fn statvfs_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let space = statvfs(dir.path()).unwrap();
        assert!(space.block_size > 0 && space.blocks > 0);
        assert!(space.available <= space.free && space.free <= space.blocks);
        assert!(space.name_max > 0);
    }

    #[test]
    fn statvfs_errors() {
        let missing = statvfs(Path::new("/nonexistent/depfs-sys-test")).unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
        let nul = statvfs(Path::new(std::ffi::OsStr::from_bytes(b"a\0b"))).unwrap_err();
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput);
    }
}
