//! Crashes: `kill -9` of a daemon in the middle of a 1,000-file burst and of a
//! large-file write, on the writer and on a receiver. After the restart the store opens
//! and verifies, every write whose `close` returned is there, no file is ever visible
//! partially written, and the cluster converges.

#![cfg(test)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{depfs, wait_until, Cluster, Node};
use rand::{RngCore, SeedableRng};

const T: Duration = Duration::from_secs(60);
const BURST: usize = 1000;

fn content(seed: u64, i: usize) -> Vec<u8> {
    let mut data = vec![0u8; 4096];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (i as u64) << 20).fill_bytes(&mut data);
    data
}

fn name(i: usize) -> String {
    format!("d{:02}/api-{i:04}.xml", i % 20)
}

/// Every visible burst file of `node`, checked complete: returns their indices.
fn complete_files(node: &Node, seed: u64) -> Vec<usize> {
    let mut seen = Vec::new();
    for i in 0..BURST {
        match std::fs::read(node.path(&name(i))) {
            Ok(bytes) => {
                assert_eq!(
                    bytes,
                    content(seed, i),
                    "{}: {} is visible but not the complete file (seed {seed:#x})",
                    node.name,
                    name(i)
                );
                seen.push(i);
            }
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOENT),
                "{}: {}",
                node.name,
                name(i)
            ),
        }
    }
    seen
}

fn assert_verifies(node: &Node) {
    let out = depfs(&["verify", "--config", node.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}: {}{}",
        node.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the burst on `writer` from a thread; returns the count of acknowledged files
/// (whose close returned) as it grows.
fn start_burst(writer: &Node, seed: u64) -> (Arc<AtomicUsize>, std::thread::JoinHandle<()>) {
    start_burst_acked_by(writer, seed, Ack::Fsync)
}

/// What acknowledges a write: `close` alone (the daemon must survive its own crash)
/// or `fsync` then `close`.
#[derive(Clone, Copy)]
enum Ack {
    Close,
    Fsync,
}

fn start_burst_acked_by(
    writer: &Node,
    seed: u64,
    ack: Ack,
) -> (Arc<AtomicUsize>, std::thread::JoinHandle<()>) {
    for d in 0..20 {
        std::fs::create_dir_all(writer.path(&format!("d{d:02}"))).unwrap();
    }
    let acked = Arc::new(AtomicUsize::new(0));
    let counter = acked.clone();
    let root = writer.mountpoint.clone();
    let thread = std::thread::spawn(move || {
        for i in 0..BURST {
            let result = std::fs::File::create(root.join(name(i))).and_then(|mut f| {
                f.write_all(&content(seed, i))?;
                if let Ack::Fsync = ack {
                    f.sync_all()?;
                }
                common::close(f)
            });
            if result.is_err() {
                return;
            }
            counter.store(i + 1, Ordering::SeqCst);
        }
    });
    (acked, thread)
}

#[test]
fn killing_the_writer_mid_burst_loses_nothing_acknowledged() {
    kill_writer_mid_burst(0xb0b5_0001, Ack::Fsync);
}

/// `close` is the acknowledgement depfs gives (publish on close): a daemon killed right
/// after it must still have the file.
#[test]
fn killing_the_writer_mid_burst_loses_nothing_closed() {
    for round in 0..3 {
        kill_writer_mid_burst(0xc105_0000 + round, Ack::Close);
    }
}

fn kill_writer_mid_burst(seed: u64, ack: Ack) {
    let c = Cluster::new(2);
    c.mount_all();
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let (acked, thread) = start_burst_acked_by(a, seed, ack);
    assert!(wait_until(T, || acked.load(Ordering::SeqCst) >= 300));
    a.kill9();
    thread.join().unwrap();
    let acked = acked.load(Ordering::SeqCst);
    assert!(acked < BURST, "the burst finished before the kill");

    a.mount();
    assert_verifies(a);
    let on_a = complete_files(a, seed);
    for i in 0..acked {
        assert!(
            on_a.contains(&i),
            "acknowledged {} lost (seed {seed:#x})",
            name(i)
        );
    }
    // At most the one file being written at the kill is beyond the acknowledged ones.
    assert!(on_a.len() <= acked + 1);
    assert!(
        wait_until(T, || complete_files(b, seed) == on_a),
        "b did not converge on a's files (seed {seed:#x})"
    );
    assert_verifies(b);
}

#[test]
fn killing_a_receiver_mid_burst_converges_after_restart() {
    let seed = 0xb0b5_0002;
    let c = Cluster::new(2);
    c.mount_all();
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let (acked, thread) = start_burst(a, seed);
    // Kill b while it is receiving: some files there, not all.
    assert!(wait_until(T, || complete_files(b, seed).len() >= 100));
    b.kill9();
    thread.join().unwrap();
    assert_eq!(acked.load(Ordering::SeqCst), BURST);
    b.mount();
    assert_verifies(b);
    let all: Vec<usize> = (0..BURST).collect();
    assert!(
        wait_until(T, || complete_files(b, seed) == all),
        "b did not converge after its restart (seed {seed:#x})"
    );
    assert_eq!(complete_files(a, seed), all);
}

/// The large-file cases: replacing a 48 MiB file, killed before the new version is
/// closed (on the writer) or while it travels (on the receiver).
#[test]
fn a_large_write_killed_midway_is_never_seen_partially() {
    let seed = 0x1a76e;
    let size = 48 << 20;
    let mut v1 = vec![0u8; size];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v1);
    let mut v2 = v1.clone();
    for b in v2.iter_mut().step_by(4096) {
        *b ^= 0xff;
    }
    let c = Cluster::new(2);
    c.mount_all();
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    std::fs::write(a.path("gateway.war"), &v1).unwrap();
    assert!(b.wait_for("gateway.war", &v1, T));

    // The writer dies halfway through writing v2 (the file is open, not closed).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(a.path("gateway.war"))
        .unwrap();
    f.write_all(&v2[..size / 2]).unwrap();
    a.kill9();
    drop(f);
    a.mount();
    assert_verifies(a);
    let versions: BTreeMap<&str, &Vec<u8>> = [("v1", &v1), ("v2", &v2)].into_iter().collect();
    let which = |node: &Node| -> &'static str {
        let got = std::fs::read(node.path("gateway.war")).unwrap();
        for (name, v) in &versions {
            if &got == *v {
                return name;
            }
        }
        panic!(
            "{}: gateway.war is {} bytes of neither version (seed {seed:#x})",
            node.name,
            got.len()
        );
    };
    assert_eq!(which(a), "v1", "the unclosed write became visible");
    assert_eq!(which(b), "v1");

    // The receiver dies while v2 travels to it.
    std::fs::write(a.path("gateway.war"), &v2).unwrap();
    b.kill9();
    b.mount();
    assert_verifies(b);
    // Whatever it shows right after the restart is a whole version, and then v2.
    which(b);
    assert!(b.wait_for("gateway.war", &v2, T), "seed {seed:#x}");
    assert_verifies(b);
}
