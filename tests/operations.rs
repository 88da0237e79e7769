//! Operating depfs: `status --json` following peers, conflicts listed, shown
//! and restored, mounting through mount(8) with an fstab line, and the shipped systemd
//! units.

#![cfg(test)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{depfs, http_get, metric, wait_until, Cluster};

const T: Duration = Duration::from_secs(30);

fn peer(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn status_json_follows_a_peer_that_stops_and_starts() {
    let c = Cluster::new(3);
    c.mount_all();
    let gw1 = &c.nodes[0];
    assert!(wait_until(T, || {
        let s = gw1.status();
        ["gw2", "gw3"]
            .iter()
            .all(|n| peer(&s, n)["connected"] == true)
    }));
    let s = gw1.status();
    for field in ["node", "mode", "role", "mountpoint", "conflicts", "peers"] {
        assert!(!s[field].is_null(), "status lacks {field}: {s}");
    }
    assert_eq!(s["node"], "gw1");
    assert_eq!(s["mode"], "multi-writer");
    let p = peer(&s, "gw3");
    for field in [
        "name",
        "addr",
        "connected",
        "rtt_ms",
        "lag_changes",
        "lag_ms",
    ] {
        assert!(!p[field].is_null(), "peer lacks {field}: {p}");
    }
    assert!(p["rtt_ms"].as_f64().is_some());

    // A node that stops cleanly closes its connections: the others show it gone at
    // once, not after the QUIC idle timeout (docs/operations.md, "Status").
    c.nodes[2].unmount();
    let stopped = std::time::Instant::now();
    assert!(wait_until(T, || peer(&gw1.status(), "gw3")["connected"] == false));
    assert!(
        stopped.elapsed() < Duration::from_secs(1),
        "gw1 showed gw3 connected for {:?} after it stopped",
        stopped.elapsed()
    );
    // While gw3 is away, a change is not acknowledged by it: it lags.
    std::fs::write(gw1.path("while-away.xml"), b"x").unwrap();
    assert!(wait_until(T, || peer(&gw1.status(), "gw3")["lag_changes"]
        .as_u64()
        >= Some(1)));
    c.nodes[2].mount();
    assert!(wait_until(T, || {
        let p = peer(&gw1.status(), "gw3");
        p["connected"] == true && p["lag_changes"] == 0
    }));

    // A stopped daemon: a clear message and a non-zero exit.
    c.nodes[1].unmount();
    let out = depfs(&["status", "--config", c.nodes[1].config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
}

#[test]
fn conflicts_are_listed_shown_and_restored_and_the_restore_replicates() {
    let c = Cluster::new(2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    a.mount();
    std::fs::write(a.path("api.xml"), b"<api from=\"gw1\"/>").unwrap();
    a.unmount();
    b.mount();
    std::fs::write(b.path("api.xml"), b"<api from=\"gw2\"/>").unwrap();
    a.mount();
    let cfg = a.config.to_str().unwrap().to_string();
    let list = || -> serde_json::Value {
        let out = depfs(&["conflicts", "--config", &cfg, "list", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(wait_until(T, || list()
        .as_array()
        .is_some_and(|l| l.len() == 1)));
    let conflict = list()[0].clone();
    assert_eq!(conflict["path"], "/api.xml");
    let id = conflict["id"].as_str().unwrap().to_string();
    let shown = depfs(&["conflicts", "--config", &cfg, "show", "/api.xml", &id]);
    assert!(shown.status.success());
    let winner = std::fs::read(a.path("api.xml")).unwrap();
    let loser = shown.stdout.clone();
    assert_ne!(winner, loser);
    assert!(loser == b"<api from=\"gw1\"/>" || loser == b"<api from=\"gw2\"/>");

    let out = depfs(&[
        "conflicts",
        "--config",
        &cfg,
        "restore",
        "/api.xml",
        &id,
        "--to",
        "/api.xml.restored",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in [a, b] {
        assert!(
            node.wait_for("api.xml.restored", &loser, T),
            "restore did not reach {}",
            node.name
        );
        assert!(node.wait_for("api.xml", &winner, T));
        assert!(
            wait_until(T, || node.status()["conflicts"] == 0),
            "{} still lists a conflict",
            node.name
        );
    }
    let log = depfs(&["log", "--config", &cfg]);
    assert!(String::from_utf8_lossy(&log.stdout).contains("/api.xml.restored"));
}

#[test]
fn mount_8_with_an_fstab_line_mounts_and_umount_unmounts() {
    let node = common::Node::new("fstab");
    let fstab = node.dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{} {} fuse.depfs _netdev,allow_other 0 0\n",
            node.config.display(),
            node.mountpoint.display()
        ),
    )
    .unwrap();
    // mount(8) runs /sbin/mount.fuse.depfs for type fuse.depfs: a link to depfs.
    let helper = std::path::Path::new("/sbin/mount.fuse.depfs");
    let ours = !helper.exists();
    if ours {
        std::os::unix::fs::symlink(common::depfs_bin(), helper)
            .expect("install /sbin/mount.fuse.depfs");
    }
    let status = Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg(&node.mountpoint)
        .status()
        .unwrap();
    let result = std::panic::catch_unwind(|| {
        assert!(status.success(), "mount -T failed");
        assert!(common::is_mounted(&node.mountpoint));
        std::fs::write(node.path("through-fstab"), b"ok").unwrap();
        assert_eq!(std::fs::read(node.path("through-fstab")).unwrap(), b"ok");
        node.unmount();
        assert!(!common::is_mounted(&node.mountpoint));
    });
    if ours {
        let _ = std::fs::remove_file(helper);
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn the_shipped_systemd_units_pass_systemd_analyze_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: nothing to verify here");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd");
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin/depfs", common::depfs_bin());
        let name = path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace("@.service", "@gw1.service");
        std::fs::write(dir.path().join(&name), text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(&name))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_metrics_endpoint_counts_operations_changes_and_peers() {
    let c = Cluster::new(2);
    let addr = format!("127.0.0.1:{}", common::free_port());
    let config = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    std::fs::write(
        &c.nodes[0].config,
        config.replacen("listen =", &format!("metrics = \"{addr}\"\nlisten ="), 1),
    )
    .unwrap();
    c.mount_all();
    let (gw1, gw2) = (&c.nodes[0], &c.nodes[1]);
    for i in 0..5 {
        std::fs::write(gw1.path(&format!("api{i}.xml")), b"<api/>").unwrap();
    }
    assert!(gw2.wait_for("api4.xml", b"<api/>", T));
    std::fs::write(gw2.path("from-gw2.xml"), b"x").unwrap();
    assert!(gw1.wait_for("from-gw2.xml", b"x", T));

    let (status, body) = http_get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(metric(&body, "depfs_changes_committed_total ").unwrap() >= 5.0);
    assert!(metric(&body, "depfs_changes_sent_total ").unwrap() >= 5.0);
    assert!(metric(&body, "depfs_versions_applied_total ").unwrap() >= 1.0);
    assert_eq!(metric(&body, "depfs_conflicts "), Some(0.0));
    assert_eq!(metric(&body, "depfs_fs_owed_files "), Some(0.0));
    assert_eq!(
        metric(&body, "depfs_peer_connected{peer=\"gw2\"} "),
        Some(1.0)
    );
    assert!(metric(&body, "depfs_peer_sent_bytes_total{peer=\"gw2\"} ").unwrap() > 0.0);
    // FUSE latencies: a histogram per operation, cumulative, +Inf equal to the count.
    // (Writes to new files go through passthrough, never to the daemon: creates are
    // counted.)
    let creates = metric(&body, "depfs_fs_op_duration_seconds_count{op=\"create\"} ").unwrap();
    assert!(creates >= 5.0, "{body}");
    assert_eq!(
        metric(
            &body,
            "depfs_fs_op_duration_seconds_bucket{op=\"create\",le=\"+Inf\"} "
        ),
        Some(creates)
    );
    assert!(body.contains("# TYPE depfs_fs_op_duration_seconds histogram"));
    let (status, _) = http_get(&addr, "/nothing");
    assert!(status.contains("404"), "{status}");
    assert_eq!(metric(&body, "depfs_fs_panics_total "), Some(0.0));
}

/// A request line with no end (a client that sends 64 MiB without a newline) and a
/// client that sends a byte now and then neither grow the daemon's memory nor keep the
/// endpoint from answering the next scrape.
#[test]
fn the_metrics_endpoint_bounds_what_a_client_sends() {
    use std::io::Write;
    let addr = format!("127.0.0.1:{}", common::free_port());
    let node = common::Node::with_config("gw1", &format!("peers = []\nmetrics = \"{addr}\"\n"));
    node.mount();
    let pid = node.daemon_pid().expect("daemon pid");
    let before = common::rss_of(pid);

    let mut flood = std::net::TcpStream::connect(&addr).unwrap();
    let block = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..64 {
        match flood.write_all(&block) {
            Ok(()) => sent += block.len(),
            Err(_) => break, // the endpoint stopped reading and closed: what it should do
        }
    }
    drop(flood);
    let after = common::rss_of(pid);
    assert!(
        after < before + (16 << 20),
        "RSS grew from {before} to {after} bytes after {sent} bytes of request line"
    );

    // A slow client holds the endpoint for at most its deadline.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GE").unwrap();
    let started = std::time::Instant::now();
    let (status, body) = http_get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(metric(&body, "depfs_changes_committed_total ").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a scrape waited {:?} behind a slow client",
        started.elapsed()
    );
    drop(slow);
}

#[test]
fn a_first_import_reports_progress_on_the_terminal_and_in_the_log() {
    let node = common::Node::new("imp");
    for d in 0..10 {
        let dir = node.mountpoint.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..250 {
            std::fs::write(dir.join(format!("f{f}.xml")), vec![b'x'; 1000]).unwrap();
        }
    }
    // `script` gives `depfs mount` a terminal, where the daemon's progress is drawn.
    let cmd = format!(
        "{} mount {} {}",
        common::depfs_bin(),
        node.config.display(),
        node.mountpoint.display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("/2500 files"),
        "no progress shown: {shown:?}"
    );
    assert!(shown.contains("2500/2500 files"), "{shown:?}");
    assert!(common::is_mounted(&node.mountpoint));
    let log = std::fs::read_to_string(node.data_dir.join("depfs.log")).unwrap();
    assert!(log.contains("2500/2500 files"), "{log}");
    assert_eq!(
        std::fs::read(node.path("d9/f249.xml")).unwrap(),
        vec![b'x'; 1000]
    );
}

#[test]
fn status_reports_a_new_node_catching_up() {
    let c = Cluster::new(2);
    c.nodes[0].mount();
    for i in 0..1500 {
        std::fs::write(c.nodes[0].path(&format!("api{i}.xml")), b"<api/>").unwrap();
    }
    let fresh = &c.nodes[1];
    fresh.mount();
    let mut seen_remaining = 0;
    assert!(wait_until(T, || {
        let s = fresh.status();
        let remaining = s["catching_up"]["changes_remaining"].as_u64().unwrap();
        seen_remaining = seen_remaining.max(remaining);
        remaining == 0 && s["catching_up"]["changes_applied"].as_u64().unwrap() >= 1500
    }));
    let s = fresh.status();
    assert!(s["catching_up"]["bytes_received"].as_u64().unwrap() > 1500 * 6);
    assert_eq!(peer(&s, "gw1")["behind_changes"], 0);
    assert!(fresh.wait_for("api1499.xml", b"<api/>", T));
    eprintln!("most changes seen remaining: {seen_remaining}");
}
