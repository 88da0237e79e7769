//! When a replica may forget a tombstone: only once every peer it knows of acknowledged
//! it. Peers are configured by address, so a daemon learns their names when they
//! connect; until as many peers as the configuration lists have been heard from,
//! nothing is collected.

#![cfg(test)]

use depfs_proto::{Content, Kind, Node, NodeName, RelPath};
use depfs_replicator::{Replica, ReplicaConfig};
use depfs_store::{Durability, Store, StoreOptions};
use depfs_testkit::{meta, Ca};

/// A replica of `gw1` over `store`.
fn replica(store: Store) -> Replica {
    let ca = Ca::new();
    let identity = ca.identity(store.node());
    Replica::new(store, Vec::new(), ReplicaConfig::default(), &identity).unwrap()
}

fn path(p: &str) -> RelPath {
    RelPath::parse(p.as_bytes()).unwrap()
}

/// A store of node `gw1` holding the tombstone of `doomed.xml`.
fn store_with_a_tombstone(dir: &std::path::Path) -> Store {
    let node = NodeName::new("gw1").unwrap();
    let store = Store::open(&dir.join("gw1"), &node, &StoreOptions::new(meta(Kind::Dir))).unwrap();
    let mut tx = store.transaction();
    tx.put(
        path("doomed.xml"),
        Node {
            meta: meta(Kind::File),
            content: Content::Inline(b"x".to_vec()),
        },
    );
    tx.commit(1000, Durability::Process).unwrap();
    let mut tx = store.transaction();
    tx.delete(path("doomed.xml"));
    tx.commit(1001, Durability::Process).unwrap();
    assert_eq!(store.heads(&path("doomed.xml")).unwrap().len(), 1);
    store
}

fn gc_due() -> u64 {
    ReplicaConfig::default().gc_every_ms + 1
}

#[test]
fn a_configured_peer_never_heard_from_keeps_every_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let mut replica = replica(store_with_a_tombstone(dir.path())).expecting_peers(1);
    replica.tick(gc_due()).unwrap();
    assert_eq!(
        replica.store().heads(&path("doomed.xml")).unwrap().len(),
        1,
        "a tombstone was collected although the configured peer never acknowledged it"
    );
}

#[test]
fn a_single_node_collects_its_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let mut replica = replica(store_with_a_tombstone(dir.path()));
    replica.tick(gc_due()).unwrap();
    assert!(replica
        .store()
        .heads(&path("doomed.xml"))
        .unwrap()
        .is_empty());
}

#[test]
fn a_peer_heard_from_once_is_waited_for_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_a_tombstone(dir.path());
    let gw2 = NodeName::new("gw2").unwrap();
    // gw2 acknowledged everything before the tombstone, in an earlier run.
    let mut acked = depfs_proto::VersionVector::new();
    acked.raise(&NodeName::new("gw1").unwrap(), 1);
    store.set_peer_acked(&gw2, &acked).unwrap();
    // A restarted daemon: no names configured, none connected yet.
    let mut replica = replica(store).expecting_peers(1);
    replica.tick(gc_due()).unwrap();
    assert_eq!(
        replica.store().heads(&path("doomed.xml")).unwrap().len(),
        1,
        "collected a tombstone gw2 never acknowledged"
    );
}
