//! Clocks: a node whose wall clock is 10 minutes ahead and one 10 minutes
//! behind (libfaketime on their daemons) converge with the documented semantics
//! (docs/reliability.md, "Clocks"): a write made after seeing another always wins,
//! whatever the clocks say; among concurrent writes the greatest hybrid-logical time
//! wins, so the node whose clock runs ahead wins races while it is ahead.

#![cfg(test)]

mod common;

use std::time::{Duration, SystemTime};

use common::{wait_until, Cluster};

const T: Duration = Duration::from_secs(60);

fn mtime_offset_s(path: &std::path::Path) -> i64 {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    match mtime.duration_since(SystemTime::now()) {
        Ok(ahead) => ahead.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

#[test]
fn nodes_ten_minutes_apart_converge() {
    // Without passthrough: files written through it get their times from the kernel,
    // whose clock libfaketime does not shift.
    let c = Cluster::partitionable(3, "local_copies_mib = 0\n");
    let (ahead, normal, behind) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    ahead.mount_with_clock("+10m");
    normal.mount();
    behind.mount_with_clock("-10m");

    // A write from the node ahead, then one from the node behind that has seen it:
    // the later one wins, though its clock says it is 20 minutes older.
    std::fs::write(ahead.path("api.xml"), b"v1 from ahead").unwrap();
    for n in [normal, behind] {
        assert!(n.wait_for("api.xml", b"v1 from ahead", T), "{}", n.name);
    }
    // File times are the writer's clock: ten minutes in the future.
    let skew = mtime_offset_s(&normal.path("api.xml"));
    assert!((590..=610).contains(&skew), "mtime {skew} s from now");
    std::fs::write(behind.path("api.xml"), b"v2 from behind").unwrap();
    for n in [ahead, normal] {
        assert!(n.wait_for("api.xml", b"v2 from behind", T), "{}", n.name);
    }

    // Concurrent writes (all links cut): the node ahead writes first in real time, yet
    // its time is the greatest, so it wins everywhere; the others are conflicts.
    for (p, q) in [(0, 1), (1, 2), (0, 2)] {
        c.cut(p, q);
    }
    std::fs::write(ahead.path("race.xml"), b"ahead").unwrap();
    std::fs::write(normal.path("race.xml"), b"normal").unwrap();
    std::fs::write(behind.path("race.xml"), b"behind").unwrap();
    for (p, q) in [(0, 1), (1, 2), (0, 2)] {
        c.heal(p, q);
    }
    for n in &c.nodes {
        assert!(n.wait_for("race.xml", b"ahead", T), "{}", n.name);
        assert!(
            wait_until(T, || n.status()["conflicts"] == 2),
            "{}: {} conflicts",
            n.name,
            n.status()["conflicts"]
        );
        assert_eq!(std::fs::read(n.path("api.xml")).unwrap(), b"v2 from behind");
    }
}
