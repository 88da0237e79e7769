//! Linux errnos and behaviours the differential test does not reach: name limits,
//! rename flags, refused operations, open handles across rename and unlink.

#![cfg(test)]

mod common;

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Node;

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_errno(r: i32) -> i32 {
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

#[test]
fn names_and_directory_errors() {
    let node = Node::new("gw1");
    node.mount();
    let long = "x".repeat(255);
    std::fs::write(node.path(&long), b"ok").unwrap();
    assert_eq!(std::fs::read(node.path(&long)).unwrap(), b"ok");
    assert!(std::fs::read_dir(&node.mountpoint)
        .unwrap()
        .any(|e| e.unwrap().file_name().len() == 255));
    let too_long = "y".repeat(256);
    assert_eq!(
        errno_of(std::fs::write(node.path(&too_long), b"no")),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno_of(std::fs::create_dir(node.path(&too_long))),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno_of(std::fs::metadata(node.path(&too_long))),
        libc::ENAMETOOLONG
    );

    std::fs::create_dir(node.path("d")).unwrap();
    std::fs::write(node.path("d/f"), b"").unwrap();
    assert_eq!(
        errno_of(std::fs::remove_dir(node.path("d"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno_of(std::fs::create_dir(node.path("d/f"))),
        libc::EEXIST
    );
    assert_eq!(errno_of(std::fs::create_dir(node.path("d"))), libc::EEXIST);
    assert_eq!(errno_of(std::fs::remove_file(node.path("d"))), libc::EISDIR);
    assert_eq!(
        errno_of(std::fs::remove_dir(node.path("d/f"))),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(std::fs::remove_dir(node.path("nope"))),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(std::fs::create_dir(node.path("nope/sub"))),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(std::fs::write(node.path("d/f/under-a-file"), b"")),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(std::fs::rename(node.path("d"), node.path("d/inside"))),
        libc::EINVAL
    );
    std::fs::create_dir(node.path("e")).unwrap();
    assert_eq!(
        errno_of(std::fs::rename(node.path("e"), node.path("d"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno_of(std::fs::rename(node.path("e"), node.path("d/f"))),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(std::fs::rename(node.path("d/f"), node.path("e"))),
        libc::EISDIR
    );
    // An empty directory can be replaced by a directory.
    std::fs::rename(node.path("e"), node.path("d2")).unwrap();
    std::fs::create_dir(node.path("e")).unwrap();
    std::fs::rename(node.path("d2"), node.path("e")).unwrap();
    assert!(node.path("e").is_dir() && !node.path("d2").exists());
}

#[test]
fn rename_flags_and_refused_operations() {
    let node = Node::new("gw1");
    node.mount();
    std::fs::write(node.path("a"), b"A").unwrap();
    std::fs::write(node.path("b"), b"B").unwrap();
    let (a, b) = (c(&node.path("a")), c(&node.path("b")));
    let rename2 = |from: &CString, to: &CString, flags: u32| {
        last_errno(unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                flags,
            )
        })
    };
    assert_eq!(rename2(&a, &b, libc::RENAME_NOREPLACE), libc::EEXIST);
    assert_eq!(rename2(&a, &b, libc::RENAME_EXCHANGE), 0);
    assert_eq!(std::fs::read(node.path("a")).unwrap(), b"B");
    assert_eq!(std::fs::read(node.path("b")).unwrap(), b"A");
    assert_eq!(rename2(&a, &b, libc::RENAME_WHITEOUT), libc::EINVAL);
    let missing = c(&node.path("missing"));
    assert_eq!(rename2(&a, &missing, libc::RENAME_EXCHANGE), libc::ENOENT);

    // Hard links are refused (documented in docs/design.md), as are device nodes and FIFOs.
    assert_eq!(
        errno_of(std::fs::hard_link(node.path("a"), node.path("hl"))),
        libc::EPERM
    );
    let fifo = c(&node.path("fifo"));
    assert_eq!(
        last_errno(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }),
        libc::EPERM
    );
    // Extended attributes are not supported (the daemon answers ENOSYS, which the kernel
    // turns into ENOTSUP, the first time and every time after).
    let name = CString::new("user.test").unwrap();
    for _ in 0..2 {
        let r = unsafe { libc::setxattr(a.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
        assert_eq!(last_errno(r), libc::ENOTSUP);
        let mut buf = [0u8; 16];
        let r = unsafe { libc::getxattr(a.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 16) };
        assert_eq!(last_errno(r as i32), libc::ENOTSUP);
        let r = unsafe { libc::removexattr(a.as_ptr(), name.as_ptr()) };
        assert_eq!(last_errno(r), libc::ENOTSUP);
    }
    let r = unsafe { libc::listxattr(a.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(r, 0, "no extended attributes listed");
    // Symlink targets longer than PATH_MAX - 1 are refused.
    let target = "t".repeat(4096);
    assert_eq!(
        errno_of(std::os::unix::fs::symlink(&target, node.path("longlink"))),
        libc::ENAMETOOLONG
    );
    // Truncating a directory.
    let dir = c(&node.mountpoint);
    assert_eq!(
        last_errno(unsafe { libc::truncate(dir.as_ptr(), 0) }),
        libc::EISDIR
    );
    // mknod of a regular file works.
    let reg = c(&node.path("regular"));
    assert_eq!(
        last_errno(unsafe { libc::mknod(reg.as_ptr(), libc::S_IFREG | 0o600, 0) }),
        0
    );
    assert!(node.path("regular").is_file());
}

#[test]
fn statfs_reports_linux_name_limit() {
    let node = Node::new("gw1");
    node.mount();
    let st = depfs_store::sys::statvfs(&node.mountpoint).unwrap();
    assert_eq!(st.name_max, 255);
    assert!(st.blocks > 0 && st.available > 0);
}

#[test]
fn open_handles_survive_rename_and_unlink() {
    let node = Node::new("gw1");
    node.mount();
    std::fs::write(node.path("f"), b"original content").unwrap();
    let mut reader = std::fs::File::open(node.path("f")).unwrap();
    let mut writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(node.path("f"))
        .unwrap();
    std::fs::rename(node.path("f"), node.path("g")).unwrap();
    writer.write_all(b"ORIGINAL").unwrap();
    let mut s = String::new();
    reader.read_to_string(&mut s).unwrap();
    assert_eq!(
        s, "ORIGINAL content",
        "both handles follow the file across the rename"
    );
    drop(writer);
    assert_eq!(std::fs::read(node.path("g")).unwrap(), b"ORIGINAL content");

    // Replace g by a rename (the deploy pattern): the open handle keeps the old file.
    std::fs::write(node.path("tmp"), b"replacement").unwrap();
    std::fs::rename(node.path("tmp"), node.path("g")).unwrap();
    reader.seek(SeekFrom::Start(0)).unwrap();
    s.clear();
    reader.read_to_string(&mut s).unwrap();
    assert_eq!(s, "ORIGINAL content");
    assert_eq!(std::fs::read(node.path("g")).unwrap(), b"replacement");

    // Unlink with the file open: still readable and writable, gone from the tree.
    let mut h = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(node.path("g"))
        .unwrap();
    std::fs::remove_file(node.path("g")).unwrap();
    assert!(!node.path("g").exists());
    h.seek(SeekFrom::End(0)).unwrap();
    h.write_all(b"!").unwrap();
    h.seek(SeekFrom::Start(0)).unwrap();
    s.clear();
    h.read_to_string(&mut s).unwrap();
    assert_eq!(s, "replacement!");
    assert_eq!(h.metadata().unwrap().len(), 12);
    drop(h);
    assert!(
        !node.path("g").exists(),
        "closing an unlinked file does not bring it back"
    );
    assert_eq!(std::fs::read_dir(&node.mountpoint).unwrap().count(), 0);
}

#[test]
fn a_new_file_is_visible_locally_before_its_first_close() {
    let node = Node::new("gw1");
    node.mount();
    let mut f = std::fs::File::create(node.path("new.xml")).unwrap();
    f.write_all(b"<partial").unwrap();
    assert_eq!(std::fs::read(node.path("new.xml")).unwrap(), b"<partial");
    assert_eq!(std::fs::metadata(node.path("new.xml")).unwrap().len(), 8);
    let names: Vec<_> = std::fs::read_dir(&node.mountpoint)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["new.xml"]);
    f.write_all(b"/>").unwrap();
    drop(f);
    assert_eq!(std::fs::read(node.path("new.xml")).unwrap(), b"<partial/>");
}

/// A file created through a read-only descriptor (`O_CREAT|O_RDONLY`, how flock(1),
/// lock files and Java's `FileChannel.open(READ, CREATE)` make them) exists, empty,
/// once that descriptor is closed, and stays after a remount.
#[test]
fn a_file_created_read_only_remains_after_its_close() {
    let node = Node::new("gw1");
    node.mount();
    let lock = node.path("deploy.lock");
    let out = std::process::Command::new("flock")
        .arg(&lock)
        .arg("true")
        .output()
        .expect("flock(1) from util-linux");
    assert!(
        out.status.success(),
        "flock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lock.is_file(),
        "flock(1)'s lock file is gone after the command"
    );

    // The same calls by hand: create exclusively read-only, lock, close.
    let marker = c(&node.path("marker"));
    let fd = unsafe {
        libc::open(
            marker.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDONLY,
            0o640,
        )
    };
    assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
    assert_eq!(unsafe { libc::flock(fd, libc::LOCK_EX) }, 0);
    assert_eq!(unsafe { libc::close(fd) }, 0);
    let md = std::fs::metadata(node.path("marker")).unwrap();
    assert_eq!((md.len(), md.permissions().mode() & 0o777), (0, 0o640));
    std::fs::set_permissions(node.path("marker"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod of the marker");
    node.unmount();
    node.mount();
    assert!(node.path("deploy.lock").is_file());
    assert_eq!(
        std::fs::metadata(node.path("marker"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    std::fs::remove_file(node.path("marker")).expect("unlink of the marker");
}

/// `fallocate` in every mode, on depfs and on the native filesystem: the same result,
/// size and content.
#[test]
fn fallocate_gives_what_the_native_filesystem_gives() {
    let node = Node::new("gw1");
    node.mount();
    let native = tempfile::tempdir().unwrap();
    let modes = [
        0,
        libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_ZERO_RANGE,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_PUNCH_HOLE,
    ];
    let ranges = [(0i64, 4096i64), (100, 50), (10_000, 100_000), (5000, 1)];
    let run = |root: &Path, name: &str, mode: i32, (offset, len): (i64, i64)| {
        let path = root.join(name);
        std::fs::write(&path, vec![0xabu8; 8000]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        use std::os::fd::AsRawFd;
        let r = last_errno(unsafe { libc::fallocate(f.as_raw_fd(), mode, offset, len) });
        drop(f);
        (r, std::fs::read(&path).unwrap())
    };
    for (i, mode) in modes.iter().enumerate() {
        for (j, range) in ranges.iter().enumerate() {
            let name = format!("f{i}-{j}");
            let want = run(native.path(), &name, *mode, *range);
            let got = run(&node.mountpoint, &name, *mode, *range);
            assert_eq!(
                (got.0, got.1.len()),
                (want.0, want.1.len()),
                "mode {mode:#x}, range {range:?}: errno and size"
            );
            assert!(got.1 == want.1, "mode {mode:#x}, range {range:?}: content");
        }
    }
    // A read-only descriptor cannot allocate.
    let f = std::fs::File::open(node.path("f0-0")).unwrap();
    use std::os::fd::AsRawFd;
    assert_eq!(
        last_errno(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 1 << 20) }),
        libc::EBADF
    );
}

/// `isatty()` on a file (Python's `open` asks it of every file) is answered ENOTTY,
/// as a regular file answers it, and leaves nothing in the log.
#[test]
fn a_terminal_ioctl_on_a_file_is_refused_quietly() {
    let node = Node::new("gw1");
    node.mount();
    std::fs::write(node.path("f"), b"x").unwrap();
    let f = std::fs::File::open(node.path("f")).unwrap();
    use std::os::fd::AsRawFd;
    for _ in 0..100 {
        assert_eq!(unsafe { libc::isatty(f.as_raw_fd()) }, 0);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOTTY)
        );
    }
    drop(f);
    node.unmount();
    let log = std::fs::read_to_string(node.data_dir.join("depfs.log")).unwrap_or_default();
    assert!(
        !log.contains("ioctl"),
        "ioctls were logged: {}",
        log.lines().filter(|l| l.contains("ioctl")).count()
    );
}

/// A truncate or chmod by path while the file is open only for reading is published at
/// once: no writer's close would publish it, and the reader's close must not drop it.
#[test]
fn a_truncate_while_only_readers_hold_the_file_is_kept() {
    for config in ["peers = []\n", "peers = []\nlocal_copy_min_kib = 16\n"] {
        let node = Node::with_config("gw1", config);
        node.mount();
        std::fs::write(node.path("f"), vec![7u8; 20_001]).unwrap();
        let reader = std::fs::File::open(node.path("f")).unwrap();
        let f = c(&node.path("f"));
        assert_eq!(last_errno(unsafe { libc::truncate(f.as_ptr(), 4145) }), 0);
        assert_eq!(std::fs::metadata(node.path("f")).unwrap().len(), 4145);
        drop(reader);
        assert_eq!(
            std::fs::read(node.path("f")).unwrap().len(),
            4145,
            "{config:?}: the truncate was lost at the reader's close"
        );
        node.unmount();
        node.mount();
        assert_eq!(
            std::fs::metadata(node.path("f")).unwrap().len(),
            4145,
            "{config:?}"
        );
    }
}
