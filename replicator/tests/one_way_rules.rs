//! One-way rules of the replica state machine: whom a worker follows, and which changes
//! it accepts.

use depfs_proto::{
    Content, Kind, Leadership, Meta, Node, NodeName, RelPath, Timespec, VersionVector,
};
use depfs_replicator::pki::CertRole;
use depfs_replicator::{Mode, Output, Replica, ReplicaConfig};
use depfs_store::{Durability, Store, StoreOptions};

fn meta(kind: Kind) -> Meta {
    Meta {
        kind,
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: Timespec::new(1, 0),
        ctime: Timespec::new(1, 0),
    }
}

/// A replica; `manager` starts term 1 with itself as the manager (one-way mode).
fn replica(dir: &std::path::Path, name: &str, mode: Mode, manager: bool) -> Replica {
    let node = NodeName::new(name).unwrap();
    let store = Store::open(&dir.join(name), &node, &StoreOptions::new(meta(Kind::Dir))).unwrap();
    if manager {
        store
            .set_leadership(Leadership::first(node, VersionVector::new()))
            .unwrap();
    }
    Replica::new(store, Vec::new(), ReplicaConfig::default()).with_mode(mode)
}

fn write(r: &Replica, path: &str, bytes: &[u8]) {
    let mut tx = r.store().transaction();
    tx.put(
        RelPath::parse(path.as_bytes()).unwrap(),
        Node {
            meta: meta(Kind::File),
            content: Content::Inline(bytes.to_vec()),
        },
    );
    tx.commit(1000, Durability::Process).unwrap();
}

/// True if `r`'s tree has an entry at `path`.
fn holds(r: &Replica, path: &[u8]) -> bool {
    r.store()
        .get(&RelPath::parse(path).unwrap())
        .unwrap()
        .is_some()
}

/// Delivers messages between `a` and `b` until they fall silent.
fn exchange(a: &mut Replica, b: &mut Replica, mut from_a: Vec<Output>, mut from_b: Vec<Output>) {
    let (na, nb) = (a.store().node().clone(), b.store().node().clone());
    for _ in 0..100 {
        if from_a.is_empty() && from_b.is_empty() {
            return;
        }
        let mut next_a = Vec::new();
        let mut next_b = Vec::new();
        for o in from_a.drain(..) {
            if let Output::Send { msg, .. } = o {
                next_b.extend(b.receive(&na, msg, 2000).unwrap());
            }
        }
        for o in from_b.drain(..) {
            if let Output::Send { msg, .. } = o {
                next_a.extend(a.receive(&nb, msg, 2000).unwrap());
            }
        }
        from_a = next_a;
        from_b = next_b;
    }
    panic!("the replicas never fell silent");
}

fn connect(a: &mut Replica, a_role: Option<CertRole>, b: &mut Replica, b_role: Option<CertRole>) {
    let (na, nb) = (a.store().node().clone(), b.store().node().clone());
    a.set_peer_role(&nb, b_role);
    b.set_peer_role(&na, a_role);
    let out_a = a.connected(&nb, 1000);
    let out_b = b.connected(&na, 1000);
    exchange(a, b, out_a, out_b);
}

#[test]
fn a_worker_follows_the_manager_and_not_a_worker_certificate_claiming_the_role() {
    let dir = tempfile::tempdir().unwrap();
    let mut worker = replica(dir.path(), "w1", Mode::OneWay, false);
    let mut forged = replica(dir.path(), "forged", Mode::OneWay, true);
    write(&forged, "evil.xml", b"forged");
    connect(
        &mut worker,
        Some(CertRole::Worker),
        &mut forged,
        Some(CertRole::Worker),
    );
    assert_eq!(worker.manager(), None, "followed a worker certificate");
    assert!(!holds(&worker, b"evil.xml"));

    let m_name = NodeName::new("m").unwrap();
    let mut manager = replica(dir.path(), "m", Mode::OneWay, true);
    write(&manager, "api.xml", b"real");
    connect(
        &mut worker,
        Some(CertRole::Worker),
        &mut manager,
        Some(CertRole::Manager),
    );
    assert_eq!(worker.manager(), Some(m_name.clone()));
    assert!(holds(&worker, b"api.xml"));

    // Now that it follows a manager, the forged node's changes are refused, not applied.
    worker.disconnected(forged.store().node());
    forged.disconnected(worker.store().node());
    connect(
        &mut worker,
        Some(CertRole::Worker),
        &mut forged,
        Some(CertRole::Worker),
    );
    assert!(!holds(&worker, b"evil.xml"));
    assert_eq!(worker.store().leadership().manager(), Some(&m_name));
}

#[test]
fn multi_writer_accepts_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = replica(dir.path(), "a", Mode::MultiWriter, false);
    let mut b = replica(dir.path(), "b", Mode::MultiWriter, false);
    write(&b, "x", b"from b");
    connect(&mut a, None, &mut b, None);
    assert!(holds(&a, b"x"));
}

/// A member relays a history whose new term names a node whose certificate allows
/// only the worker role, or names the receiving node itself: neither is followed, and
/// the relayed changes are refused like any non-manager's.
#[test]
fn a_relayed_term_for_a_worker_or_for_the_receiver_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let m_name = NodeName::new("m").unwrap();
    let mut manager = replica(dir.path(), "m", Mode::OneWay, true);
    let mut worker = replica(dir.path(), "w1", Mode::OneWay, false);
    connect(
        &mut worker,
        Some(CertRole::Worker),
        &mut manager,
        Some(CertRole::Manager),
    );
    assert_eq!(worker.manager(), Some(m_name.clone()));
    // w9 holds a worker certificate, as w1 has seen.
    let mut w9 = replica(dir.path(), "w9", Mode::OneWay, false);
    connect(
        &mut worker,
        Some(CertRole::Worker),
        &mut w9,
        Some(CertRole::Worker),
    );

    for named in ["w9", "w1"] {
        // A relaying worker whose store holds the forged history.
        let liar_name = format!("liar-{named}");
        let mut liar = replica(dir.path(), &liar_name, Mode::OneWay, false);
        let forged = Leadership::first(m_name.clone(), VersionVector::new())
            .promote(NodeName::new(named).unwrap(), VersionVector::new());
        liar.store().set_leadership(forged).unwrap();
        write(&liar, &format!("{named}.xml"), b"forged");
        connect(
            &mut worker,
            Some(CertRole::Worker),
            &mut liar,
            Some(CertRole::Worker),
        );
        assert_eq!(
            worker.manager(),
            Some(m_name.clone()),
            "followed a term naming {named}"
        );
        assert_eq!(worker.store().leadership().term(), 1);
        assert!(!holds(&worker, format!("{named}.xml").as_bytes()));
    }
}

/// `promote` refuses to make a history longer than any peer accepts, instead of
/// making one every peer then drops the connection over.
#[test]
fn promote_stops_at_the_longest_history_a_peer_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = replica(dir.path(), "w1", Mode::OneWay, false);
    let other = NodeName::new("m").unwrap();
    let mut lead = Leadership::first(other.clone(), VersionVector::new());
    while lead.terms().len() < depfs_proto::lead::MAX_TERMS {
        lead = lead.promote(other.clone(), VersionVector::new());
    }
    node.store().set_leadership(lead).unwrap();
    let refused = node.promote(3000);
    assert!(
        matches!(refused, Err(depfs_replicator::PromoteError::HistoryFull(_))),
        "{:?}",
        refused.map(|(t, _)| t)
    );
    assert!(node.store().leadership().validate().is_ok());
}
