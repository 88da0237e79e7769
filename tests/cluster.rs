//! A cluster of real daemons on real mounts, replicating over QUIC with mutual TLS on
//! loopback: propagation, bursts, atomic replace, conflicts, catch-up after a
//! crash, bootstrap of an empty node, refusal of foreign certificates, and the bytes a
//! small change in a large file costs.

#![cfg(test)]

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::{wait_until, Ca, Cluster, Node};
use depfs_testkit::pattern;

const T: Duration = Duration::from_secs(30);

#[test]
fn a_file_closed_on_any_node_is_on_the_others() {
    let c = Cluster::new(3);
    c.mount_all();
    for (i, writer) in c.nodes.iter().enumerate() {
        let name = format!("from-{i}.xml");
        let data = pattern(i as u64, 4096);
        std::fs::write(writer.path(&name), &data).unwrap();
        for reader in &c.nodes {
            assert!(
                reader.wait_for(&name, &data, T),
                "{name} did not reach {}",
                reader.name
            );
        }
    }
    // Modifications too.
    std::fs::write(c.nodes[1].path("from-0.xml"), b"modified").unwrap();
    for reader in &c.nodes {
        assert!(reader.wait_for("from-0.xml", b"modified", T));
    }
}

#[test]
fn a_burst_of_1000_files_in_10_directories_converges() {
    let c = Cluster::new(3);
    c.mount_all();
    let w = &c.nodes[0];
    for d in 0..10 {
        std::fs::create_dir(w.path(&format!("apis{d}"))).unwrap();
    }
    for i in 0..1000 {
        std::fs::write(
            w.path(&format!("apis{}/api{i}.xml", i % 10)),
            pattern(i, 4096),
        )
        .unwrap();
    }
    for reader in &c.nodes[1..] {
        let ok = wait_until(T, || {
            (0..1000).all(|i| {
                std::fs::read(reader.path(&format!("apis{}/api{i}.xml", i % 10)))
                    .is_ok_and(|b| b == pattern(i, 4096))
            })
        });
        assert!(ok, "burst incomplete on {}", reader.name);
    }
}

#[test]
fn deletes_renames_trees_modes_and_mtimes_propagate() {
    let c = Cluster::new(3);
    c.mount_all();
    let (a, b) = (&c.nodes[0], &c.nodes[2]);
    std::fs::create_dir_all(a.path("synapse-configs/default/api")).unwrap();
    std::fs::write(a.path("synapse-configs/default/api/x.xml"), b"x").unwrap();
    std::fs::write(a.path("synapse-configs/default/api/y.xml"), b"y").unwrap();
    std::fs::write(a.path("old.xml"), b"old").unwrap();
    assert!(b.wait_for("synapse-configs/default/api/y.xml", b"y", T));
    assert!(b.wait_for("old.xml", b"old", T));

    // Rename over an existing file, delete, rename a directory, chmod, utimens.
    std::fs::write(a.path("new.xml"), b"new").unwrap();
    std::fs::rename(a.path("new.xml"), a.path("old.xml")).unwrap();
    std::fs::remove_file(a.path("synapse-configs/default/api/x.xml")).unwrap();
    std::fs::rename(
        a.path("synapse-configs/default"),
        a.path("synapse-configs/tenant"),
    )
    .unwrap();
    std::fs::set_permissions(a.path("old.xml"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let t = std::time::UNIX_EPOCH + Duration::new(1_650_000_000, 42);
    std::fs::File::options()
        .write(true)
        .open(a.path("old.xml"))
        .unwrap()
        .set_modified(t)
        .unwrap();

    assert!(b.wait_for("old.xml", b"new", T));
    assert!(b.wait_for("synapse-configs/tenant/api/y.xml", b"y", T));
    assert!(wait_until(T, || !b.path("new.xml").exists()
        && !b.path("synapse-configs/default").exists()));
    assert!(!b.path("synapse-configs/tenant/api/x.xml").exists());
    assert!(wait_until(T, || {
        std::fs::metadata(b.path("old.xml")).is_ok_and(|m| {
            m.mode() & 0o7777 == 0o600 && (m.mtime(), m.mtime_nsec()) == (1_650_000_000, 42)
        })
    }));
}

#[test]
fn write_to_temp_then_rename_never_shows_a_partial_file() {
    let c = Cluster::new(2);
    c.mount_all();
    let (writer, reader) = (&c.nodes[0], &c.nodes[1]);
    let version = |i: u64| -> Vec<u8> {
        let mut v = format!("<api version=\"{i}\">").into_bytes();
        v.extend(std::iter::repeat_n(
            b'a' + (i % 26) as u8,
            30_000 + (i as usize % 7) * 1000,
        ));
        v.extend_from_slice(b"</api>");
        v
    };
    std::fs::write(writer.path("api.xml"), version(0)).unwrap();
    assert!(reader.wait_for("api.xml", &version(0), T));
    let target = reader.path("api.xml");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_reader = stop.clone();
    let checker = std::thread::spawn(move || {
        let mut reads = 0u64;
        while !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
            let data = std::fs::read(&target).expect("the target never disappears");
            let text = String::from_utf8_lossy(&data[..20.min(data.len())]).to_string();
            let i: u64 = text
                .split('"')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("partial file: {text:?}"));
            let want = version(i);
            assert!(
                data == want,
                "version {i} is incomplete or mixed: {} bytes read, {} expected; ends with {:?}",
                data.len(),
                want.len(),
                String::from_utf8_lossy(&data[data.len().saturating_sub(12)..])
            );
            reads += 1;
        }
        reads
    });
    for i in 1..=150 {
        let tmp = writer.path(".api.xml.tmp");
        std::fs::write(&tmp, version(i)).unwrap();
        std::fs::rename(&tmp, writer.path("api.xml")).unwrap();
    }
    assert!(reader.wait_for("api.xml", &version(150), T));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = checker.join().expect("reader saw a partial file");
    assert!(reads > 10, "the reader only managed {reads} reads");
}

#[test]
fn concurrent_writes_converge_to_one_winner_and_a_recorded_conflict() {
    let c = Cluster::new(2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    // Each node writes while the other is down: the two versions are concurrent.
    a.mount();
    std::fs::write(a.path("api.xml"), b"from gw1").unwrap();
    a.unmount();
    b.mount();
    std::fs::write(b.path("api.xml"), b"from gw2").unwrap();
    a.mount();
    let converged = wait_until(T, || {
        let (x, y) = (
            std::fs::read(a.path("api.xml")).ok(),
            std::fs::read(b.path("api.xml")).ok(),
        );
        x.is_some() && x == y
    });
    assert!(converged, "the nodes show different content");
    for node in [a, b] {
        assert!(
            wait_until(T, || node.status()["conflicts"].as_u64() == Some(1)),
            "{} records no conflict",
            node.name
        );
    }
}

#[test]
fn a_node_killed_while_others_write_catches_up_on_restart() {
    let c = Cluster::new(3);
    c.mount_all();
    std::fs::write(c.nodes[0].path("before.xml"), b"before").unwrap();
    assert!(c.nodes[2].wait_for("before.xml", b"before", T));
    c.nodes[2].kill9();
    for i in 0..50 {
        std::fs::write(
            c.nodes[i % 2].path(&format!("while-down-{i}.xml")),
            pattern(i as u64, 2000),
        )
        .unwrap();
    }
    std::fs::remove_file(c.nodes[1].path("before.xml")).unwrap();
    c.nodes[2].mount();
    for i in 0..50 {
        assert!(c.nodes[2].wait_for(&format!("while-down-{i}.xml"), &pattern(i as u64, 2000), T));
    }
    assert!(wait_until(T, || !c.nodes[2].path("before.xml").exists()));
}

#[test]
fn a_new_node_with_an_empty_data_dir_gets_the_whole_tree() {
    let c = Cluster::new(3);
    c.nodes[0].mount();
    c.nodes[1].mount();
    std::fs::create_dir_all(c.nodes[0].path("webapps/am")).unwrap();
    std::fs::write(c.nodes[0].path("webapps/am.war"), pattern(7, 2 << 20)).unwrap();
    for i in 0..200 {
        std::fs::write(c.nodes[1].path(&format!("api{i}.xml")), pattern(i, 1000)).unwrap();
    }
    // gw3 has never run: it starts empty and bootstraps.
    c.nodes[2].mount();
    assert!(c.nodes[2].wait_for("webapps/am.war", &pattern(7, 2 << 20), T));
    for i in 0..200 {
        assert!(c.nodes[2].wait_for(&format!("api{i}.xml"), &pattern(i, 1000), T));
    }
    assert!(c.nodes[2].path("webapps/am").is_dir());
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_refused_and_gets_nothing() {
    let c = Cluster::new(2);
    c.mount_all();
    std::fs::write(c.nodes[0].path("secret.xml"), b"cluster only").unwrap();
    assert!(c.nodes[1].wait_for("secret.xml", b"cluster only", T));
    let other_ca = Ca::new();
    let rest = format!(
        "listen = \"127.0.0.1:{}\"\npeers = [\"127.0.0.1:{}\"]\n{}",
        common::free_port(),
        c.ports[0],
        other_ca.issue("gw9")
    );
    let intruder = Node::with_config("gw9", &rest);
    intruder.mount();
    let refused = wait_until(T, || {
        std::fs::read_to_string(c.nodes[0].data_dir.join("depfs.log"))
            .is_ok_and(|l| l.contains("refused a connection"))
    });
    assert!(refused, "gw1 did not log the refusal");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !intruder.path("secret.xml").exists(),
        "the intruder received data"
    );
    let status = c.nodes[0].status();
    let peers: Vec<&str> = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(!peers.contains(&"gw9"), "gw9 became a peer: {peers:?}");
}

#[test]
fn changing_1mib_in_a_50mib_file_sends_about_1mib() {
    let c = Cluster::new(2);
    c.mount_all();
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let mut data = pattern(3, 50 << 20);
    std::fs::write(a.path("big.war"), &data).unwrap();
    assert!(b.wait_for("big.war", &data, Duration::from_secs(120)));
    let sent = |n: &Node| -> u64 {
        n.status()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["bytes_sent"].as_u64().unwrap())
            .sum()
    };
    let before = sent(a);
    let middle = pattern(4, 1 << 20);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(a.path("big.war"))
            .unwrap();
        f.seek(SeekFrom::Start(25 << 20)).unwrap();
        f.write_all(&middle).unwrap();
    }
    data[25 << 20..26 << 20].copy_from_slice(&middle);
    assert!(b.wait_for("big.war", &data, Duration::from_secs(60)));
    let bytes = sent(a) - before;
    eprintln!("a 1 MiB change in a 50 MiB file sent {bytes} bytes");
    assert!(
        bytes < (1 << 20) * 13 / 10,
        "sent {bytes} bytes for a 1 MiB change"
    );
    assert!(
        bytes >= 1 << 20,
        "sent only {bytes} bytes: the change cannot have travelled"
    );
}

#[test]
fn a_large_file_rewritten_then_renamed_arrives_whole_under_its_new_name() {
    // Files of 32 MiB and more are published after their close returns; the rename
    // that follows must still reach peers after the new content, never before it.
    let c = Cluster::new(2);
    c.mount_all();
    let (writer, reader) = (&c.nodes[0], &c.nodes[1]);
    // Large enough to be owed and to leave a local copy on the writer, so that the
    // rewrite goes through passthrough too.
    let old = pattern(31, 40 << 20);
    std::fs::write(writer.path("app.war.tmp"), &old).unwrap();
    assert!(reader.wait_for("app.war.tmp", &old, T));
    let new = pattern(32, 48 << 20);
    std::fs::write(writer.path("app.war.tmp"), &new).unwrap();
    std::fs::rename(writer.path("app.war.tmp"), writer.path("app.war")).unwrap();
    let target = reader.path("app.war");
    assert!(
        wait_until(T, || target.exists()),
        "the renamed file never reached the peer"
    );
    let first = std::fs::read(&target).unwrap();
    assert!(
        first == new,
        "the peer's first app.war has {} bytes, not the {} written before the rename",
        first.len(),
        new.len()
    );
}

#[test]
fn a_small_file_read_here_shows_a_peers_rewrite_of_the_same_size() {
    // The writer's kernel holds the pages of what it wrote (handed to it at publish);
    // a peer's change of the same size must replace them, not hide behind them.
    let c = Cluster::new(2);
    c.mount_all();
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    for round in 0..20u64 {
        let mine = pattern(100 + round, 6000);
        let theirs = pattern(200 + round, 6000);
        let name = format!("api{}.xml", round % 3);
        std::fs::write(a.path(&name), &mine).unwrap();
        assert!(std::fs::read(a.path(&name)).unwrap() == mine);
        assert!(
            b.wait_for(&name, &mine, T),
            "round {round}: b never got a's write"
        );
        std::fs::write(b.path(&name), &theirs).unwrap();
        assert!(
            a.wait_for(&name, &theirs, T),
            "round {round}: a still reads its own version"
        );
    }
}
