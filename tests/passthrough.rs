//! Local copies served through FUSE passthrough: a large file written on a node is read
//! (and written) by the kernel directly from its local copy, and what is written that
//! way is still published on close, replicated, and kept across a remount.
//!
//! Each test first checks that passthrough is really in use (the metrics count the
//! opens it served), so a kernel without it fails here instead of passing vacuously.

#![cfg(test)]

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::Duration;

use common::{http_get, metric, Cluster, Node};
use rand::{RngCore, SeedableRng};

const T: Duration = Duration::from_secs(20);

/// The tests here run one at a time: they count commits while a file is open for
/// writing, and a descriptor open in this process is copied into every process another
/// test spawns, and closed there at exec, which FUSE turns into a flush (a publish).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}
const MIB: usize = 1 << 20;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// A node with local copies from 64 KiB and a metrics endpoint; its metrics address.
fn node(name: &str) -> (Node, String) {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let node = Node::with_config(
        name,
        &format!("peers = []\nlocal_copy_min_kib = 64\nmetrics = \"{addr}\"\n"),
    );
    (node, addr)
}

fn passthrough_opens(addr: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics");
    metric(&body, "depfs_fs_passthrough_opens_total ").expect("passthrough metric")
}

fn changes_committed(addr: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics");
    metric(&body, "depfs_changes_committed_total ").expect("changes metric")
}

#[test]
fn a_large_file_written_here_is_read_back_through_passthrough() {
    let _serial = one_at_a_time();
    let (node, addr) = node("pt1");
    node.mount();
    let data = random_bytes(8 * MIB + 12_345, 1);
    std::fs::write(node.path("app.car"), &data).unwrap();
    assert_eq!(
        passthrough_opens(&addr),
        1.0,
        "a new file is written through passthrough from its create"
    );

    // Read at once: the open usually waits for the writer's release and gets the local
    // copy it left; whichever it got, the bytes are right, and passthrough is used as
    // soon as the release is through.
    assert!(std::fs::read(node.path("app.car")).unwrap() == data);
    assert!(common::wait_until(T, || {
        let before = passthrough_opens(&addr);
        std::fs::read(node.path("app.car")).unwrap() == data && passthrough_opens(&addr) > before
    }));
    let opens = passthrough_opens(&addr);
    let file = File::open(node.path("app.car")).unwrap();
    let mut buf = vec![0u8; 4096];
    for offset in [0usize, 4096 * 7, 5 * MIB + 3, data.len() - 4096] {
        file.read_exact_at(&mut buf, offset as u64).unwrap();
        assert!(buf == data[offset..offset + 4096], "offset {offset}");
    }
    drop(file);
    assert_eq!(passthrough_opens(&addr), opens + 1.0);
    std::fs::write(node.path("small.xml"), b"<api/>").unwrap();

    // Local copies do not survive the daemon: after a remount both files are read
    // through it (and a small file never gets a local copy).
    node.unmount();
    node.mount();
    assert!(std::fs::read(node.path("app.car")).unwrap() == data);
    assert_eq!(std::fs::read(node.path("small.xml")).unwrap(), b"<api/>");
    assert_eq!(std::fs::read(node.path("small.xml")).unwrap(), b"<api/>");
    assert_eq!(passthrough_opens(&addr), 0.0);
}

/// The writer's RELEASE reaches the daemon after `close` returned, on another request
/// thread than the open that follows; that open must wait for it and take the local
/// copy the release leaves, not join the writer's file and read through the daemon.
#[test]
fn an_open_right_after_the_writers_close_reads_through_passthrough() {
    let _serial = one_at_a_time();
    let (node, addr) = node("pt3");
    node.mount();
    for round in 0..30usize {
        let data = random_bytes(MIB + 4096 * round, 100 + round as u64);
        let path = node.path(&format!("app{round}.car"));
        std::fs::write(&path, &data).unwrap();
        let before = passthrough_opens(&addr);
        assert!(std::fs::read(&path).unwrap() == data, "round {round}");
        assert_eq!(
            passthrough_opens(&addr),
            before + 1.0,
            "round {round}: the open right after the close read through the daemon"
        );
    }

    // A descriptor duplicated before the close keeps the writer's handle open: the
    // next open waits a bounded time, then reads the right bytes through the daemon.
    let data = random_bytes(2 * MIB, 7);
    let path = node.path("dup.car");
    let mut writer = File::create(&path).unwrap();
    writer.write_all(&data).unwrap();
    let kept = writer.try_clone().unwrap();
    drop(writer);
    let started = std::time::Instant::now();
    assert!(std::fs::read(&path).unwrap() == data);
    assert!(std::fs::read(&path).unwrap() == data);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "opens held up by a handle that stays open: {:?}",
        started.elapsed()
    );
    drop(kept);
}

#[test]
fn writes_through_passthrough_are_published_replicated_and_kept() {
    let _serial = one_at_a_time();
    let c = Cluster::new(2);
    let addr = format!("127.0.0.1:{}", common::free_port());
    for (i, node) in c.nodes.iter().enumerate() {
        let config = std::fs::read_to_string(&node.config).unwrap();
        let extra = if i == 0 {
            format!("local_copy_min_kib = 64\nmetrics = \"{addr}\"\nlisten =")
        } else {
            "local_copy_min_kib = 64\nlisten =".to_string()
        };
        std::fs::write(&node.config, config.replacen("listen =", &extra, 1)).unwrap();
    }
    c.mount_all();
    let (gw1, gw2) = (&c.nodes[0], &c.nodes[1]);
    let mut data = random_bytes(6 * MIB, 2);
    std::fs::write(gw1.path("big.war"), &data).unwrap();
    assert!(gw2.wait_for("big.war", &data, T));
    assert!(common::wait_until(T, || {
        let _ = std::fs::read(gw1.path("big.war"));
        passthrough_opens(&addr) > 0.0
    }));
    let base = passthrough_opens(&addr);

    // A reader opens first: the inode is in passthrough from then on, and the writer
    // that joins it writes to the same local copy.
    let reader = File::open(gw1.path("big.war")).unwrap();
    let writer = OpenOptions::new()
        .write(true)
        .open(gw1.path("big.war"))
        .unwrap();
    assert_eq!(passthrough_opens(&addr), base + 2.0, "reader and writer");
    let committed = changes_committed(&addr);
    writer.write_all_at(b"HELLO", MIB as u64).unwrap();
    writer.write_all_at(b"TAIL", data.len() as u64).unwrap();
    data[MIB..MIB + 5].copy_from_slice(b"HELLO");
    data.extend_from_slice(b"TAIL");
    // Same node: the reader sees the writes at once, and stat the new size.
    let mut buf = [0u8; 5];
    reader.read_exact_at(&mut buf, MIB as u64).unwrap();
    assert_eq!(&buf, b"HELLO");
    assert_eq!(
        std::fs::metadata(gw1.path("big.war")).unwrap().len(),
        data.len() as u64
    );
    // Nothing is published before the close.
    assert_eq!(changes_committed(&addr), committed);
    common::close(writer).unwrap();
    assert!(
        gw2.wait_for("big.war", &data, T),
        "the writes reached the peer"
    );
    assert_eq!(changes_committed(&addr), committed + 1.0);
    drop(reader);

    // A writable open that writes nothing publishes nothing.
    let idle = OpenOptions::new()
        .write(true)
        .open(gw1.path("big.war"))
        .unwrap();
    common::close(idle).unwrap();
    assert_eq!(changes_committed(&addr), committed + 1.0);

    // An explicit modification time set after the writes is the one kept.
    let writer = OpenOptions::new()
        .write(true)
        .open(gw1.path("big.war"))
        .unwrap();
    writer.write_all_at(b"again", 0).unwrap();
    data[..5].copy_from_slice(b"again");
    writer
        .set_times(
            std::fs::FileTimes::new()
                .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000)),
        )
        .unwrap();
    common::close(writer).unwrap();
    assert_eq!(
        std::fs::metadata(gw1.path("big.war")).unwrap().mtime(),
        1_000_000_000
    );
    assert!(gw2.wait_for("big.war", &data, T));
    assert!(common::wait_until(T, || std::fs::metadata(
        gw2.path("big.war")
    )
    .is_ok_and(|m| m.mtime() == 1_000_000_000)));

    // Truncation through an open file.
    let writer = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(gw1.path("big.war"))
        .unwrap();
    writer.write_all_at(b"short", 0).unwrap();
    common::close(writer).unwrap();
    assert!(gw2.wait_for("big.war", b"short", T));
    assert_eq!(std::fs::read(gw1.path("big.war")).unwrap(), b"short");

    gw1.unmount();
    gw1.mount();
    assert_eq!(std::fs::read(gw1.path("big.war")).unwrap(), b"short");
}

#[test]
fn a_local_copy_is_not_used_for_a_version_from_a_peer() {
    let _serial = one_at_a_time();
    let c = Cluster::new(2);
    for node in &c.nodes {
        let config = std::fs::read_to_string(&node.config).unwrap();
        std::fs::write(
            &node.config,
            config.replacen("listen =", "local_copy_min_kib = 64\nlisten =", 1),
        )
        .unwrap();
    }
    c.mount_all();
    let (gw1, gw2) = (&c.nodes[0], &c.nodes[1]);
    let first = random_bytes(2 * MIB, 3);
    std::fs::write(gw1.path("f.car"), &first).unwrap();
    assert!(std::fs::read(gw1.path("f.car")).unwrap() == first);
    assert!(gw2.wait_for("f.car", &first, T));
    // The peer replaces the content; gw1's local copy is of the old content and must
    // not be what a new open reads.
    let second = random_bytes(2 * MIB, 4);
    std::fs::write(gw2.path("f.car"), &second).unwrap();
    assert!(gw1.wait_for("f.car", &second, T));
    assert!(std::fs::read(gw1.path("f.car")).unwrap() == second);
}

fn daemon_reads(addr: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics");
    metric(&body, "depfs_fs_op_duration_seconds_count{op=\"read\"} ").unwrap_or(0.0)
}

/// A small new file is written through passthrough, so its pages are in the staging
/// file's cache; the publish hands them to the kernel's cache of the inode, and
/// reading the file back does not ask the daemon.
#[test]
fn a_small_file_written_here_is_read_back_from_the_kernels_cache() {
    let _serial = one_at_a_time();
    let (node, addr) = node("pt5");
    node.mount();
    let files: Vec<(String, Vec<u8>)> = (0..20u64)
        .map(|i| {
            (
                format!("api{i}.xml"),
                random_bytes(4096 + i as usize * 1000, i),
            )
        })
        .collect();
    for (name, data) in &files {
        std::fs::write(node.path(name), data).unwrap();
    }
    for (name, data) in &files {
        assert!(std::fs::read(node.path(name)).unwrap() == *data, "{name}");
    }
    assert_eq!(daemon_reads(&addr), 0.0, "reads reached the daemon");
}
