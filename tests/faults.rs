//! Faults on disk: corrupt chunks (read as `EIO`, repaired from a peer, found by
//! `depfs verify`) and a full disk (`ENOSPC`, writes work again once space is freed).
//! Each test prints its seed on failure where it uses one.

#![cfg(test)]

mod common;

use std::time::Duration;

use common::{depfs, wait_until, Cluster, Node};
use depfs_proto::{ChunkHash, Content, Kind, Meta, RelPath, Timespec};
use depfs_store::{Store, StoreOptions};
use rand::{RngCore, SeedableRng};

const T: Duration = Duration::from_secs(30);

/// Opens a stopped node's store directly.
fn open_store(node: &Node) -> Store {
    let root = Meta {
        kind: Kind::Dir,
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: Timespec::default(),
        ctime: Timespec::default(),
    };
    Store::open(
        &node.data_dir,
        &depfs_proto::NodeName::new(&node.name).unwrap(),
        &StoreOptions::new(root),
    )
    .expect("open the stopped node's store")
}

/// The chunks of the file at `rel` in a stopped node's store.
fn chunks_of(node: &Node, rel: &str) -> Vec<ChunkHash> {
    let store = open_store(node);
    let entry = store
        .get(&RelPath::parse(rel.as_bytes()).unwrap())
        .unwrap()
        .expect("the file is in the store");
    match entry.content {
        Content::Chunked(chunks) => chunks.iter().map(|c| c.hash).collect(),
        Content::Inline(_) => panic!("{rel} is inline, not chunked"),
    }
}

fn corrupt(node: &Node, hash: &ChunkHash) {
    open_store(node)
        .inject_chunk_corruption(hash, b"rotten bits")
        .unwrap();
}

fn errno_of_read(node: &Node, rel: &str) -> Option<i32> {
    std::fs::read(node.path(rel))
        .err()
        .and_then(|e| e.raw_os_error())
}

fn verify(node: &Node) -> (bool, String) {
    let out = depfs(&["verify", "--config", node.config.to_str().unwrap()]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_corrupt_chunk_reads_as_eio_and_is_repaired_from_a_peer() {
    let seed = 0x5eed_c0de;
    let mut data = vec![0u8; 300 * 1024];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut data);
    let c = Cluster::new(2);
    c.mount_all();
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    std::fs::write(a.path("app.car"), &data).unwrap();
    assert!(b.wait_for("app.car", &data, T), "seed {seed:#x}");
    let (ok, report) = verify(b);
    assert!(ok, "a healthy store fails verify: {report}");

    // Bit rot on b while it is stopped.
    b.unmount();
    let chunks = chunks_of(b, "app.car");
    assert!(chunks.len() > 2, "want a multi-chunk file");
    corrupt(b, &chunks[1]);
    b.mount();
    // The reader gets EIO, never wrong bytes...
    assert_eq!(errno_of_read(b, "app.car"), Some(libc::EIO));
    // ...and the daemon fetches a good copy from a by itself.
    assert!(
        wait_until(T, || std::fs::read(b.path("app.car"))
            .is_ok_and(|d| d == data)),
        "not repaired (seed {seed:#x})"
    );
    assert!(verify(b).0);

    // `depfs verify` on a stopped node finds corruption before anything reads it; the
    // daemon then repairs what it quarantined.
    b.unmount();
    corrupt(b, &chunks[2]);
    let (ok, report) = verify(b);
    assert!(!ok, "verify missed a corrupt chunk");
    assert!(report.contains("corrupt"), "{report}");
    b.mount();
    assert!(
        wait_until(T, || verify(b).0),
        "still damaged: {}",
        verify(b).1
    );
    assert_eq!(std::fs::read(b.path("app.car")).unwrap(), data);
    // a never served its copy wrongly, and is healthy.
    assert!(verify(a).0);
}

#[test]
fn without_a_peer_a_corrupt_chunk_stays_an_error_and_is_reported() {
    let node = Node::new("solo");
    node.mount();
    let mut data = vec![0u8; 200 * 1024];
    rand_chacha::ChaCha8Rng::seed_from_u64(7).fill_bytes(&mut data);
    std::fs::write(node.path("big.war"), &data).unwrap();
    std::fs::write(node.path("small.xml"), b"intact").unwrap();
    node.unmount();
    let chunks = chunks_of(&node, "big.war");
    corrupt(&node, &chunks[0]);
    node.mount();
    for _ in 0..3 {
        assert_eq!(errno_of_read(&node, "big.war"), Some(libc::EIO));
    }
    // Everything else is intact.
    assert_eq!(std::fs::read(node.path("small.xml")).unwrap(), b"intact");
    let (ok, report) = verify(&node);
    assert!(!ok);
    assert!(report.contains("waiting for a peer's copy"), "{report}");
}

/// A tmpfs mounted on a directory for the life of the value (lazily unmounted after).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
        Tmpfs(dir.to_path_buf())
    }

    fn free_bytes(&self) -> u64 {
        depfs_store::sys::statvfs(&self.0)
            .unwrap()
            .available_bytes()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn write_file(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[test]
fn a_full_disk_fails_writes_with_enospc_and_service_resumes_when_space_is_freed() {
    let node = Node::with_config("full", "peers = []\nmin_free_mib = 8\n");
    let disk = Tmpfs::mount(&node.data_dir, 64);
    node.mount();
    let mut big = vec![0u8; 1 << 20];
    rand_chacha::ChaCha8Rng::seed_from_u64(11).fill_bytes(&mut big);
    std::fs::write(node.path("big.car"), &big).unwrap();
    for i in 0..10 {
        std::fs::write(node.path(&format!("keep{i}.xml")), format!("keep {i}")).unwrap();
    }

    // Something else fills the disk to 6 MiB free, below the 8 MiB reserve.
    let ballast = node.data_dir.join("ballast");
    let fill = disk.free_bytes().saturating_sub(6 << 20);
    std::fs::write(&ballast, vec![0u8; fill as usize]).unwrap();

    let errno = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
    assert_eq!(
        errno(write_file(&node.path("new.car"), &big[..200 << 10])),
        Some(libc::ENOSPC),
        "a content write on a full disk"
    );
    assert_eq!(
        errno(write_file(&node.path("new.xml"), b"<api/>")),
        Some(libc::ENOSPC),
        "a small file on a full disk"
    );
    // Changes without content may still use half of the reserve: files can be deleted.
    std::fs::remove_file(node.path("keep9.xml")).unwrap();
    // Nothing stored before is damaged.
    assert_eq!(std::fs::read(node.path("big.car")).unwrap(), big);
    for i in 0..9 {
        assert_eq!(
            std::fs::read(node.path(&format!("keep{i}.xml"))).unwrap(),
            format!("keep {i}").into_bytes()
        );
    }
    // Space is freed: writes work again, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    write_file(&node.path("new.car"), &big[..200 << 10]).unwrap();
    write_file(&node.path("new.xml"), b"<api/>").unwrap();
    assert_eq!(
        std::fs::read(node.path("new.car")).unwrap(),
        &big[..200 << 10]
    );
    let (ok, report) = verify(&node);
    assert!(ok, "{report}");
    node.unmount();
    drop(disk);
}
