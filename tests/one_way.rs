//! One-way mode: a manager writes, workers follow read-only.

#![cfg(test)]

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{depfs, wait_until, Cluster, Node};

const T: Duration = Duration::from_secs(30);

fn errno_of<V>(r: std::io::Result<V>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn the_manager_writes_and_workers_follow_read_only() {
    let c = Cluster::one_way(&["manager", "worker", "worker"]);
    c.mount_all();
    let (m, w1, w2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    std::fs::create_dir_all(m.path("synapse-configs/default/api")).unwrap();
    std::fs::write(m.path("synapse-configs/default/api/a.xml"), b"<api/>").unwrap();
    std::fs::write(m.path("existing.xml"), b"keep").unwrap();
    for w in [w1, w2] {
        assert!(
            w.wait_for("synapse-configs/default/api/a.xml", b"<api/>", T),
            "{}",
            w.name
        );
        assert!(w.wait_for("existing.xml", b"keep", T));
    }

    for w in [w1, w2] {
        let p = |s: &str| w.path(s);
        let cases: Vec<(&str, i32)> = vec![
            ("create", errno_of(std::fs::write(p("new.xml"), b"x"))),
            (
                "write",
                errno_of(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(p("existing.xml")),
                ),
            ),
            (
                "rename",
                errno_of(std::fs::rename(p("existing.xml"), p("moved.xml"))),
            ),
            ("unlink", errno_of(std::fs::remove_file(p("existing.xml")))),
            ("mkdir", errno_of(std::fs::create_dir(p("dir")))),
            (
                "rmdir",
                errno_of(std::fs::remove_dir(p("synapse-configs/default/api"))),
            ),
            (
                "chmod",
                errno_of(std::fs::set_permissions(
                    p("existing.xml"),
                    std::fs::Permissions::from_mode(0o600),
                )),
            ),
            ("truncate", {
                let c = CString::new(p("existing.xml").as_os_str().as_bytes()).unwrap();
                if unsafe { libc::truncate(c.as_ptr(), 0) } == 0 {
                    0
                } else {
                    std::io::Error::last_os_error().raw_os_error().unwrap()
                }
            }),
            (
                "symlink",
                errno_of(std::os::unix::fs::symlink("existing.xml", p("link"))),
            ),
        ];
        for (what, errno) in cases {
            assert_eq!(errno, libc::EROFS, "{what} on worker {}", w.name);
        }
        // The mount itself reports read-only.
        let st = depfs_store::sys::statvfs(&w.mountpoint).unwrap();
        assert!(st.read_only(), "statvfs does not say read-only");
    }
    // Nothing changed anywhere.
    std::fs::write(m.path("marker.xml"), b"after").unwrap();
    for node in [m, w1, w2] {
        assert!(node.wait_for("marker.xml", b"after", T));
        assert_eq!(std::fs::read(node.path("existing.xml")).unwrap(), b"keep");
        assert!(
            !node.path("new.xml").exists()
                && !node.path("dir").exists()
                && !node.path("moved.xml").exists()
        );
        let mode = std::fs::metadata(node.path("existing.xml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_ne!(mode, 0o600);
    }
    let status = w1.status();
    assert_eq!(status["mode"], "one-way");
    assert_eq!(status["role"], "worker");
}

#[test]
fn a_worker_with_a_forged_manager_config_is_not_followed() {
    let c = Cluster::one_way(&["manager", "worker"]);
    c.mount_all();
    std::fs::write(c.nodes[0].path("a.xml"), b"real").unwrap();
    assert!(c.nodes[1].wait_for("a.xml", b"real", T));

    // gw3 holds a worker's certificate but its config claims the manager role.
    let tls = c.ca.issue_with_role("gw3", Some("worker"));
    let rest = format!(
        "listen = \"127.0.0.1:{}\"\npeers = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\nmode = \"one-way\"\nrole = \"manager\"\n{tls}",
        common::free_port(),
        c.ports[0],
        c.ports[1]
    );
    let forged = Node::with_config("gw3", &rest);
    let out = forged.try_mount(&[]);
    assert!(!out.status.success(), "the forged manager started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only allows the worker role"), "{err}");
    // The cluster still follows its manager.
    std::fs::write(c.nodes[0].path("b.xml"), b"still the manager").unwrap();
    assert!(c.nodes[1].wait_for("b.xml", b"still the manager", T));
    let out = depfs(&[
        "status",
        "--config",
        c.nodes[1].config.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success());
    assert!(wait_until(T, || c.nodes[1].status()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["name"] != "gw3")));
}

/// `depfs conflicts list --json` of `node`, as (path, origin, cut_off) triples.
fn conflicts_of(node: &Node) -> Vec<(String, String, bool)> {
    let out = depfs(&[
        "conflicts",
        "--config",
        node.config.to_str().unwrap(),
        "list",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut v: Vec<(String, String, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                c["node"].as_str().unwrap().to_string(),
                c["cut_off"].as_bool().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn is_read_only_mount(node: &Node) -> bool {
    depfs_store::sys::statvfs(&node.mountpoint)
        .unwrap()
        .read_only()
}

#[test]
fn a_promoted_worker_takes_over_and_the_old_manager_steps_down() {
    // gw2's certificate allows the manager role, so it can be promoted; gw3's is what
    // `depfs ca issue` gives without `--role`, a worker's (least privilege).
    let c = Cluster::one_way_with_certs(
        &["manager", "worker", "worker"],
        &[Some("manager"), Some("manager"), None],
    );
    c.mount_all();
    let (m, w1, w2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    std::fs::write(m.path("a.xml"), b"a1").unwrap();
    std::fs::write(m.path("b.xml"), b"b1").unwrap();
    std::fs::write(m.path("c.xml"), b"c1").unwrap();
    for w in [w1, w2] {
        assert!(w.wait_for("c.xml", b"c1", T), "{}", w.name);
    }

    // The manager dies; gw3 cannot be promoted with its worker certificate; gw2 can.
    m.kill9();
    let refused = depfs(&["promote", "--config", w2.config.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only allows the worker role"));
    let out = depfs(&["promote", "--config", w1.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "promote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(w1.status()["role"], "manager");
    assert_eq!(w1.status()["term"], 2);
    assert!(wait_until(T, || !is_read_only_mount(w1)));
    // Nothing the old manager had delivered to gw2 is lost.
    for (f, bytes) in [("a.xml", b"a1"), ("b.xml", b"b1"), ("c.xml", b"c1")] {
        assert!(w1.wait_for(f, bytes, T), "{f}");
    }
    std::fs::write(w1.path("e.xml"), b"from gw2").unwrap();
    assert!(w2.wait_for("e.xml", b"from gw2", T));
    assert!(wait_until(T, || w2.status()["manager"] == "gw2"));

    // The old manager comes back cut off (no peers) and, still manager of term 1 as far
    // as it knows, writes.
    let config = std::fs::read_to_string(&m.config).unwrap();
    let isolated_config = m.dir.path().join("isolated.toml");
    let isolated: String = config
        .lines()
        .map(|l| {
            if l.starts_with("peers") {
                "peers = []".to_string()
            } else if l.starts_with("listen") {
                format!("listen = \"127.0.0.1:{}\"", common::free_port())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&isolated_config, isolated).unwrap();
    let out = depfs(&[
        "mount",
        isolated_config.to_str().unwrap(),
        m.mountpoint.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(m.status()["role"], "manager");
    std::fs::write(m.path("a.xml"), b"a2 cut off").unwrap();
    std::fs::remove_file(m.path("b.xml")).unwrap();
    std::fs::write(m.path("d.xml"), b"created cut off").unwrap();
    m.unmount();

    // It rejoins: steps down, converges on gw2's tree, and its cut-off changes are
    // conflicts everywhere.
    m.mount();
    assert!(wait_until(T, || m.status()["role"] == "worker"));
    assert_eq!(m.status()["manager"], "gw2");
    assert!(wait_until(T, || is_read_only_mount(m)));
    let expected = vec![
        ("/a.xml".to_string(), "gw1".to_string(), true),
        ("/d.xml".to_string(), "gw1".to_string(), true),
    ];
    for node in [m, w1, w2] {
        assert!(node.wait_for("a.xml", b"a1", T), "{}: a.xml", node.name);
        assert!(node.wait_for("b.xml", b"b1", T), "{}: b.xml", node.name);
        assert!(node.wait_for("e.xml", b"from gw2", T), "{}", node.name);
        assert!(
            wait_until(T, || !node.path("d.xml").exists()),
            "{}: d.xml",
            node.name
        );
        assert!(
            wait_until(T, || conflicts_of(node) == expected),
            "{}: conflicts {:?}",
            node.name,
            conflicts_of(node)
        );
    }
    assert_eq!(
        errno_of(std::fs::write(m.path("x.xml"), b"x")),
        libc::EROFS,
        "the old manager still writes"
    );
    // The new manager keeps writing; everyone follows it.
    std::fs::write(w1.path("f.xml"), b"after").unwrap();
    assert!(m.wait_for("f.xml", b"after", T));
    assert!(w2.wait_for("f.xml", b"after", T));
}

#[test]
fn switching_an_existing_store_between_modes_is_refused() {
    let node = Node::new("solo");
    node.mount();
    std::fs::write(node.path("a.xml"), b"kept").unwrap();
    node.unmount();
    let config = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        format!("{config}mode = \"one-way\"\nrole = \"manager\"\n"),
    )
    .unwrap();
    let out = node.try_mount(&[]);
    assert!(
        !out.status.success(),
        "a multi-writer store mounted one-way"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("switching modes needs new (empty) data_dirs"),
        "{err}"
    );
    // The store is untouched: back in its own mode, the file is there.
    std::fs::write(&node.config, config).unwrap();
    node.mount();
    assert_eq!(std::fs::read(node.path("a.xml")).unwrap(), b"kept");
}
