//! One test per merge rule (docs/design.md, "Merge rules"), with real stores exchanging
//! changes the way the replicator does: `dots_since` + `change` on one side,
//! `missing_chunks` + `put_chunks` + `apply_remote` on the other.

#![cfg(test)]

use depfs_proto::{Change, Content, Kind, Meta, Node, NodeName, RelPath, VersionVector};
use depfs_store::{Durability, Store, StoreError, StoreOptions};
use depfs_testkit::meta_at;

struct Cluster {
    _dir: tempfile::TempDir,
    stores: Vec<Store>,
}

fn root() -> Meta {
    meta_at(Kind::Dir, 0)
}

fn cluster(n: usize) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let stores = (0..n)
        .map(|i| {
            let name = NodeName::new(&format!("gw{}", i + 1)).unwrap();
            Store::open(
                &dir.path().join(name.as_str()),
                &name,
                &StoreOptions::new(root()),
            )
            .unwrap()
        })
        .collect();
    Cluster { _dir: dir, stores }
}

fn p(s: &str) -> RelPath {
    RelPath::parse(s.as_bytes()).unwrap()
}

fn file(bytes: &[u8]) -> Node {
    Node {
        meta: meta_at(Kind::File, 1_700_000_000),
        content: Content::Inline(bytes.to_vec()),
    }
}

fn dir() -> Node {
    Node {
        meta: meta_at(Kind::Dir, 1_700_000_000),
        content: Content::empty(),
    }
}

fn put(s: &Store, path: &str, node: Node, wall: u64) {
    let mut tx = s.transaction();
    tx.put(p(path), node);
    tx.commit(wall, Durability::Process).unwrap().unwrap();
}

fn delete(s: &Store, path: &str, wall: u64) {
    let mut tx = s.transaction();
    tx.delete(p(path));
    tx.commit(wall, Durability::Process).unwrap().unwrap();
}

/// `len` bytes that do not repeat (a linear congruential sequence from `seed`), so that
/// no chunk deduplicates.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// The changes `to` lacks from `from`, as the protocol would send them.
fn delta(from: &Store, to: &Store) -> (Vec<Change>, VersionVector, VersionVector) {
    let base = to.version_vector();
    let upto = from.version_vector();
    let changes = from
        .dots_since(&base)
        .unwrap()
        .iter()
        .filter_map(|d| from.change(d).unwrap())
        .collect();
    (changes, base, upto)
}

/// Brings `to` up to date with `from` (chunks first, then one atomic apply).
fn sync(from: &Store, to: &Store, wall: u64) -> depfs_store::Applied {
    let (changes, base, upto) = delta(from, to);
    let (missing, _pins) = to.missing_chunks(&changes).unwrap();
    let chunks: Vec<_> = missing
        .iter()
        .map(|h| depfs_proto::ChunkData {
            hash: *h,
            data: from.read_chunk(h).unwrap(),
        })
        .collect();
    let _fetched = to.put_chunks(&chunks).unwrap();
    to.apply_remote(&changes, Some((&base, &upto)), wall)
        .unwrap()
}

fn sync_all(c: &Cluster) {
    for _ in 0..2 {
        for a in &c.stores {
            for b in &c.stores {
                if !std::ptr::eq(a, b) {
                    sync(a, b, 1_800_000_000_000);
                }
            }
        }
    }
}

fn shows(s: &Store, path: &str) -> Option<Vec<u8>> {
    s.get(&p(path)).unwrap().map(|n| match n.content {
        Content::Inline(b) => b,
        Content::Chunked(_) => b"<chunked>".to_vec(),
    })
}

fn assert_converged(c: &Cluster) {
    let d = c.stores[0].tree_digest().unwrap();
    let conflicts = |s: &Store| -> Vec<_> {
        s.conflicts()
            .unwrap()
            .into_iter()
            .map(|c| (c.path, c.version.dot))
            .collect()
    };
    for s in &c.stores {
        assert_eq!(s.tree_digest().unwrap(), d, "trees differ");
        assert_eq!(conflicts(s), conflicts(&c.stores[0]), "conflicts differ");
        assert_eq!(s.check_integrity().unwrap(), Vec::<String>::new());
    }
}

#[test]
fn later_hlc_time_wins_and_ties_break_by_node_name() {
    let c = cluster(3);
    put(&c.stores[0], "api.xml", file(b"gw1"), 1000);
    put(&c.stores[1], "api.xml", file(b"gw2"), 2000);
    put(&c.stores[2], "tie.xml", file(b"gw3"), 5000);
    put(&c.stores[1], "tie.xml", file(b"gw2"), 5000);
    sync_all(&c);
    assert_converged(&c);
    assert_eq!(shows(&c.stores[0], "api.xml").unwrap(), b"gw2");
    assert_eq!(
        shows(&c.stores[0], "tie.xml").unwrap(),
        b"gw3",
        "same HLC: the greater node name wins"
    );
}

#[test]
fn the_losing_concurrent_write_is_kept_as_a_conflict_and_can_be_restored() {
    let c = cluster(2);
    put(&c.stores[0], "api.xml", file(b"mine"), 1000);
    put(&c.stores[1], "api.xml", file(b"theirs"), 2000);
    sync_all(&c);
    assert_converged(&c);
    let conflicts = c.stores[0].conflicts().unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].path, p("api.xml"));
    assert_eq!(conflicts[0].version.dot.node.as_str(), "gw1");
    assert_eq!(
        conflicts[0].version.node().unwrap().content,
        Content::Inline(b"mine".to_vec())
    );
    // Restore it beside the winner; the conflict is resolved, everywhere.
    c.stores[1]
        .restore_conflict(
            &p("api.xml"),
            &conflicts[0].version.dot,
            &p("api.xml.restored"),
            3000,
        )
        .unwrap()
        .unwrap();
    sync_all(&c);
    assert_converged(&c);
    assert_eq!(shows(&c.stores[0], "api.xml").unwrap(), b"theirs");
    assert_eq!(shows(&c.stores[0], "api.xml.restored").unwrap(), b"mine");
    assert!(c.stores[0].conflicts().unwrap().is_empty());
}

#[test]
fn identical_concurrent_content_is_no_conflict() {
    let c = cluster(2);
    put(&c.stores[0], "same.xml", file(b"<x/>"), 1000);
    put(&c.stores[1], "same.xml", file(b"<x/>"), 2000);
    sync_all(&c);
    assert_converged(&c);
    assert!(c.stores[0].conflicts().unwrap().is_empty());
}

#[test]
fn deletes_are_versions_too() {
    let c = cluster(2);
    put(&c.stores[0], "a.xml", file(b"v1"), 1000);
    put(&c.stores[0], "b.xml", file(b"v1"), 1000);
    sync_all(&c);
    // a: the delete is later and wins; b: the write is later and wins.
    put(&c.stores[0], "a.xml", file(b"v2"), 2000);
    delete(&c.stores[1], "a.xml", 3000);
    delete(&c.stores[0], "b.xml", 2000);
    put(&c.stores[1], "b.xml", file(b"v3"), 3000);
    sync_all(&c);
    assert_converged(&c);
    assert_eq!(shows(&c.stores[0], "a.xml"), None);
    assert_eq!(shows(&c.stores[0], "b.xml").unwrap(), b"v3");
    // The overwritten-then-deleted v2 is not destroyed silently: it is a conflict.
    let conflicts = c.stores[0].conflicts().unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].path, p("a.xml"));
}

#[test]
fn concurrent_mkdir_p_merges() {
    let c = cluster(2);
    for (i, s) in c.stores.iter().enumerate() {
        let wall = 1000 + i as u64;
        put(s, "synapse-configs", dir(), wall);
        put(s, "synapse-configs/default", dir(), wall);
        put(
            s,
            &format!("synapse-configs/default/api{i}.xml"),
            file(b"x"),
            wall,
        );
    }
    sync_all(&c);
    assert_converged(&c);
    let names: Vec<_> = c.stores[0]
        .list(&p("synapse-configs/default"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec![b"api0.xml".to_vec(), b"api1.xml".to_vec()]);
    assert!(
        c.stores[0].conflicts().unwrap().is_empty(),
        "directories never conflict"
    );
}

#[test]
fn a_path_with_live_children_is_a_directory() {
    let c = cluster(2);
    put(&c.stores[0], "d", dir(), 1000);
    sync_all(&c);
    // gw1 removes the directory while gw2 creates a file in it (gw1's delete is later).
    put(&c.stores[1], "d/new.xml", file(b"n"), 2000);
    delete(&c.stores[0], "d", 3000);
    sync_all(&c);
    assert_converged(&c);
    assert_eq!(
        c.stores[0].get(&p("d")).unwrap().map(|n| n.meta.kind),
        Some(Kind::Dir)
    );
    assert_eq!(shows(&c.stores[0], "d/new.xml").unwrap(), b"n");
    // A file made concurrently at a path that has children elsewhere loses to the
    // directory and is kept as a conflict.
    put(&c.stores[0], "e", file(b"file"), 4000);
    put(&c.stores[1], "e", dir(), 3500);
    put(&c.stores[1], "e/child", file(b"c"), 3600);
    sync_all(&c);
    assert_converged(&c);
    assert_eq!(
        c.stores[0].get(&p("e")).unwrap().map(|n| n.meta.kind),
        Some(Kind::Dir)
    );
    assert!(c.stores[0]
        .conflicts()
        .unwrap()
        .iter()
        .any(|k| k.path == p("e")));
}

#[test]
fn a_rename_is_one_atomic_change() {
    let c = cluster(2);
    put(&c.stores[0], "api.xml", file(b"old"), 1000);
    sync_all(&c);
    // Write to a temporary name, then rename over the target: one change.
    put(&c.stores[0], ".api.xml.tmp", file(b"new"), 2000);
    sync_all(&c);
    let mut tx = c.stores[0].transaction();
    let node = tx.get(&p(".api.xml.tmp")).unwrap().unwrap();
    tx.delete(p(".api.xml.tmp"));
    tx.put(p("api.xml"), node);
    let rename = tx.commit(3000, Durability::Process).unwrap().unwrap();
    let change = c.stores[0].change(&rename.dot).unwrap().unwrap();
    assert_eq!(change.ops.len(), 2, "both paths travel in one change");
    // Applying that one change switches the target from old to new with the temporary
    // name gone, in one write: there is no state in between to observe.
    let applied = c.stores[1].apply_remote(&[change], None, 3001).unwrap();
    assert_eq!(applied.changed, vec![p(".api.xml.tmp"), p("api.xml")]);
    assert_eq!(shows(&c.stores[1], "api.xml").unwrap(), b"new");
    assert_eq!(shows(&c.stores[1], ".api.xml.tmp"), None);
}

#[test]
fn arrival_order_does_not_matter() {
    // Concurrent writes, a delete, a rename and mkdirs on three nodes; every order of
    // delivering the three nodes' changes to a fourth gives the same tree and conflicts.
    let c = cluster(3);
    put(&c.stores[0], "d", dir(), 100);
    sync_all(&c);
    put(&c.stores[0], "d/a", file(b"0a"), 1000);
    put(&c.stores[1], "d/a", file(b"1a"), 1100);
    delete(&c.stores[2], "d", 1200);
    put(&c.stores[2], "x", dir(), 1300);
    put(&c.stores[0], "x", dir(), 1400);
    put(&c.stores[1], "x/y", file(b"1y"), 1500);
    let mut tx = c.stores[0].transaction();
    tx.delete(p("d/a"));
    tx.put(p("x/moved"), file(b"0a"));
    tx.commit(1600, Durability::Process).unwrap();
    let deltas: Vec<Vec<Change>> = (0..3)
        .map(|i| {
            let s = &c.stores[i];
            s.dots_since(&VersionVector::new())
                .unwrap()
                .iter()
                .filter_map(|d| s.change(d).unwrap())
                .filter(|ch| ch.dot.node == *s.node())
                .collect()
        })
        .collect();
    let mut results = Vec::new();
    for order in [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            dir.path(),
            &NodeName::new("gw9").unwrap(),
            &StoreOptions::new(root()),
        )
        .unwrap();
        for i in order {
            // One change at a time, oldest first per origin.
            for change in &deltas[i] {
                s.apply_remote(std::slice::from_ref(change), None, 2000)
                    .unwrap();
            }
        }
        assert_eq!(s.check_integrity().unwrap(), Vec::<String>::new());
        let conflicts: Vec<_> = s
            .conflicts()
            .unwrap()
            .into_iter()
            .map(|c| (c.path, c.version.dot))
            .collect();
        results.push((s.tree_digest().unwrap(), conflicts));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
}

/// gw2 overwrites gw1's file; gw3 writes it concurrently, later, so gw2's version loses
/// there; gw2 writes again. That write supersedes gw2's losing version and so also what
/// that one overwrote: gw4, which only ever had gw1's version, must drop it when gw2's
/// last write arrives (before, it kept gw1's version for good, as a conflict gw2 never
/// had; docs/design.md, "Merge rules", rule 4).
#[test]
fn a_write_over_its_own_lost_version_also_supersedes_what_that_one_overwrote() {
    let c = cluster(4);
    let [gw1, gw2, gw3, gw4] = [&c.stores[0], &c.stores[1], &c.stores[2], &c.stores[3]];
    put(gw1, "f", file(b"gw1"), 1_000);
    sync(gw1, gw2, 1_000);
    sync(gw1, gw4, 1_000);
    put(gw2, "f", file(b"gw2, first"), 2_000);
    put(gw3, "f", file(b"gw3"), 3_000);
    sync(gw3, gw2, 3_000);
    assert_eq!(shows(gw2, "f").as_deref(), Some(&b"gw3"[..]));
    put(gw2, "f", file(b"gw2, again"), 4_000);
    sync(gw2, gw4, 4_000);
    sync_all(&c);
    assert_eq!(shows(gw4, "f").as_deref(), Some(&b"gw2, again"[..]));
    assert_converged(&c);
}

#[test]
fn old_changes_arriving_late_are_superseded_not_conflicts() {
    let c = cluster(3);
    put(&c.stores[0], "f", file(b"v1"), 1000);
    sync(&c.stores[0], &c.stores[1], 1001);
    put(&c.stores[1], "f", file(b"v2"), 2000); // gw2 saw v1: v2 supersedes it
                                               // gw3 receives v2 first, then the old v1 late.
    sync(&c.stores[1], &c.stores[2], 2001);
    let v1 = c.stores[0]
        .change(&c.stores[0].dots_since(&VersionVector::new()).unwrap()[0])
        .unwrap()
        .unwrap();
    let applied = c.stores[2].apply_remote(&[v1], None, 2002).unwrap();
    assert_eq!((applied.admitted, applied.obsolete), (0, 1));
    assert_eq!(shows(&c.stores[2], "f").unwrap(), b"v2");
    assert!(c.stores[2].conflicts().unwrap().is_empty());
}

#[test]
fn a_change_is_applied_only_with_all_its_chunks() {
    let c = cluster(2);
    let big = pseudo_random(7, 300_000);
    let (content, _pin) = c.stores[0].write_content(&big).unwrap();
    put(
        &c.stores[0],
        "app.war",
        Node {
            meta: meta_at(Kind::File, 1),
            content,
        },
        1000,
    );
    let (changes, _, _) = delta(&c.stores[0], &c.stores[1]);
    let (missing, _pins) = c.stores[1].missing_chunks(&changes).unwrap();
    assert!(missing.len() > 5);
    // A forged chunk is refused.
    let forged = vec![depfs_proto::ChunkData {
        hash: missing[0],
        data: vec![0u8; 100],
    }];
    assert!(c.stores[1].put_chunks(&forged).is_err());
    sync(&c.stores[0], &c.stores[1], 1001);
    let node = c.stores[1].get(&p("app.war")).unwrap().unwrap();
    let reader = depfs_store::ContentReader::new(node.content);
    assert_eq!(reader.read(&c.stores[1], 0, big.len()).unwrap(), big);
    // Only the changed chunks travel for a change in the middle.
    let mut changed = big.clone();
    changed[150_000..160_000].fill(9);
    let (content, _pin) = c.stores[0].write_content(&changed).unwrap();
    put(
        &c.stores[0],
        "app.war",
        Node {
            meta: meta_at(Kind::File, 2),
            content,
        },
        2000,
    );
    let (changes, _, _) = delta(&c.stores[0], &c.stores[1]);
    let (missing, _pins) = c.stores[1].missing_chunks(&changes).unwrap();
    assert!(
        missing.len() <= 3,
        "{} chunks for a 10 KB change",
        missing.len()
    );
}

#[test]
fn what_a_peer_still_needs_is_answered_from_the_store() {
    let c = cluster(2);
    for i in 0..5 {
        put(&c.stores[0], &format!("f{i}"), file(b"x"), 1000 + i);
    }
    put(&c.stores[0], "f0", file(b"y"), 2000); // supersedes change 1
    let mut vv = VersionVector::new();
    vv.raise(c.stores[0].node(), 3);
    let dots: Vec<u64> = c.stores[0]
        .dots_since(&vv)
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    assert_eq!(dots, vec![4, 5, 6]);
    let all: Vec<u64> = c.stores[0]
        .dots_since(&VersionVector::new())
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    assert_eq!(
        all,
        vec![2, 3, 4, 5, 6],
        "the superseded change 1 is not needed by anyone"
    );
    let applied = sync(&c.stores[0], &c.stores[1], 3000);
    assert!(applied.progressed);
    assert_eq!(c.stores[1].version_vector(), c.stores[0].version_vector());
}

#[test]
fn tombstones_are_collected_once_every_peer_has_them() {
    let c = cluster(2);
    put(&c.stores[0], "gone", file(b"x"), 1000);
    delete(&c.stores[0], "gone", 2000);
    let peers = [c.stores[1].node().clone()];
    assert_eq!(
        c.stores[0].collect_tombstones(&peers).unwrap(),
        0,
        "the peer has not acknowledged it"
    );
    sync(&c.stores[0], &c.stores[1], 2001);
    c.stores[0]
        .set_peer_acked(c.stores[1].node(), &c.stores[1].version_vector())
        .unwrap();
    assert_eq!(c.stores[0].collect_tombstones(&peers).unwrap(), 1);
    let st = c.stores[0].stats().unwrap();
    assert_eq!((st.tombstones, st.log_records), (0, 0));
    assert_eq!(c.stores[0].check_integrity().unwrap(), Vec::<String>::new());
}

#[test]
fn the_store_stays_bounded_under_endless_overwrites() {
    let c = cluster(2);
    for round in 0..300u64 {
        put(
            &c.stores[0],
            "hot.xml",
            file(format!("{round}").as_bytes()),
            1000 + round,
        );
        if round % 50 == 0 {
            sync(&c.stores[0], &c.stores[1], 1000 + round);
        }
    }
    sync_all(&c);
    for s in &c.stores {
        let st = s.stats().unwrap();
        assert!(st.heads <= 2 && st.log_records <= 1, "{st:?}");
    }
}

#[test]
fn a_change_stamped_far_ahead_is_refused_until_the_clock_reaches_it() {
    let c = cluster(2);
    let hour = 3_600_000;
    let now = 1_700_000_000_000;
    put(&c.stores[0], "f", file(b"old"), now);
    sync(&c.stores[0], &c.stores[1], now);
    put(&c.stores[1], "f", file(b"future"), now + 2 * hour);
    let before = c.stores[0].tree_digest().unwrap();
    let (changes, base, upto) = delta(&c.stores[1], &c.stores[0]);
    let refused = c.stores[0].apply_remote(&changes, Some((&base, &upto)), now);
    assert!(
        matches!(refused, Err(StoreError::AheadOfClock { drift, .. }) if drift.ahead_ms == 2 * hour),
        "{refused:?}"
    );
    assert_eq!(
        c.stores[0].tree_digest().unwrap(),
        before,
        "nothing applied"
    );
    assert!(
        !c.stores[0].version_vector().dominates(&upto),
        "progress did not move past the refused change"
    );
    // Within the bound of the local clock, the same change is an ordinary one.
    let applied = sync(&c.stores[1], &c.stores[0], now + hour + hour / 2);
    assert_eq!(applied.admitted, 1);
    assert_eq!(shows(&c.stores[0], "f").unwrap(), b"future");
    // A stamp at the end of time is refused too, without overflowing anything.
    let mut forged = changes.clone();
    forged[0].hlc = depfs_proto::Hlc::new(u64::MAX, u32::MAX);
    assert!(matches!(
        c.stores[0].apply_remote(&forged, None, now),
        Err(StoreError::AheadOfClock { .. })
    ));
}

#[test]
fn malformed_changes_are_refused_and_change_nothing() {
    let c = cluster(2);
    put(&c.stores[0], "f", file(b"x"), 1000);
    let (mut changes, _, _) = delta(&c.stores[0], &c.stores[1]);
    let before = c.stores[1].tree_digest().unwrap();
    changes[0].ops[0].ctx = VersionVector::new(); // does not cover its own dot
    assert!(c.stores[1].apply_remote(&changes, None, 1).is_err());
    let (mut changes, _, _) = delta(&c.stores[0], &c.stores[1]);
    changes[0].ops[0].path = RelPath::root();
    changes[0].ops[0].state = depfs_proto::State::Deleted;
    assert!(c.stores[1].apply_remote(&changes, None, 1).is_err());
    // Attributes no node writes: an out-of-range nanosecond field (found by the
    // decoder fuzz: it used to reach the FUSE layer's time conversion), a mode beyond
    // 0o7777.
    for bad in 0..2 {
        let (mut changes, _, _) = delta(&c.stores[0], &c.stores[1]);
        if let depfs_proto::State::Live(node) = &mut changes[0].ops[0].state {
            match bad {
                0 => {
                    node.meta.mtime = depfs_proto::Timespec {
                        secs: i64::MAX,
                        nanos: 1_000_000_000,
                    }
                }
                _ => node.meta.perm = 0o177777,
            }
        }
        assert!(matches!(
            c.stores[1].apply_remote(&changes, None, 1),
            Err(depfs_store::StoreError::Malformed(_))
        ));
    }
    assert_eq!(c.stores[1].tree_digest().unwrap(), before);
}

/// A local write of 32 MiB or more stores its chunks without the write-ahead log until
/// its commit (they are flushed first). A peer's change naming the same chunks meanwhile
/// must not count them as stored: its commit is logged, and a crash before the local
/// flush would leave it naming chunks that are gone. They are fetched from the peer.
#[test]
fn chunks_of_an_uncommitted_bulk_write_do_not_count_for_a_peers_change() {
    let c = cluster(2);
    let big = pseudo_random(11, (33 << 20) + 77);
    let (content, _pin) = c.stores[0].write_content(&big).unwrap();
    put(
        &c.stores[0],
        "gateway.war",
        Node {
            meta: meta_at(Kind::File, 1),
            content: content.clone(),
        },
        1000,
    );
    // The receiver writes the same bytes itself (bulk) and has not committed them.
    let (local, _local_pin) = c.stores[1].write_content(&big).unwrap();
    assert_eq!(local, content);
    let (changes, _, _) = delta(&c.stores[0], &c.stores[1]);
    let (missing, _pins) = c.stores[1].missing_chunks(&changes).unwrap();
    assert_eq!(
        missing.len(),
        content.chunks().len(),
        "chunks of the unfinished bulk write counted as stored"
    );
    sync(&c.stores[0], &c.stores[1], 1001);
    let node = c.stores[1].get(&p("gateway.war")).unwrap().unwrap();
    let reader = depfs_store::ContentReader::new(node.content);
    assert!(reader.read(&c.stores[1], 0, big.len()).unwrap() == big);
}
