//! Linux errnos and behaviours the differential test does not reach: name limits,
//! rename flags, refused operations, open handles across rename and unlink.

mod common;

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
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
    let p = c(&node.mountpoint);
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(p.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_namemax, 255);
    assert!(st.f_blocks > 0 && st.f_bavail > 0);
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
