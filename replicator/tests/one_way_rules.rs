//! One-way rules of the replica state machine: whom a worker follows, and which changes
//! it accepts.

#![cfg(test)]

use depfs_proto::{Content, Kind, Leadership, Node, NodeName, RelPath, VersionVector};
use depfs_replicator::pki::CertRole;
use depfs_replicator::{Mode, Output, Replica, ReplicaConfig};
use depfs_store::{Durability, Store, StoreOptions};
use depfs_testkit::{meta, Ca};

/// A replica whose certificate allows `role`; `manager` starts term 1 with itself as
/// the manager (one-way mode).
fn replica(
    ca: &Ca,
    dir: &std::path::Path,
    name: &str,
    mode: Mode,
    manager: bool,
    role: Option<CertRole>,
) -> Replica {
    let node = NodeName::new(name).unwrap();
    let store = Store::open(&dir.join(name), &node, &StoreOptions::new(meta(Kind::Dir))).unwrap();
    if manager {
        store
            .set_leadership(Leadership::first(node.clone(), VersionVector::new()))
            .unwrap();
    }
    let identity = ca.identity_with_role(&node, role);
    Replica::new(store, Vec::new(), ReplicaConfig::default(), &identity)
        .unwrap()
        .with_mode(mode)
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

/// Connects `a` and `b`, each presenting the certificate `ca` issued it.
fn connect(ca: &Ca, a: &mut Replica, b: &mut Replica) {
    let (na, nb) = (a.store().node().clone(), b.store().node().clone());
    let out_a = a.connected(&nb, &ca.certificate(&nb), 1000).unwrap();
    let out_b = b.connected(&na, &ca.certificate(&na), 1000).unwrap();
    exchange(a, b, out_a, out_b);
}

#[test]
fn a_worker_follows_the_manager_and_not_a_worker_certificate_claiming_the_role() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let mut worker = replica(
        &ca,
        dir.path(),
        "w1",
        Mode::OneWay,
        false,
        Some(CertRole::Worker),
    );
    let mut forged = replica(
        &ca,
        dir.path(),
        "forged",
        Mode::OneWay,
        true,
        Some(CertRole::Worker),
    );
    write(&forged, "evil.xml", b"forged");
    connect(&ca, &mut worker, &mut forged);
    assert_eq!(worker.manager(), None, "followed a worker certificate");
    assert!(!holds(&worker, b"evil.xml"));

    let m_name = NodeName::new("m").unwrap();
    let mut manager = replica(
        &ca,
        dir.path(),
        "m",
        Mode::OneWay,
        true,
        Some(CertRole::Manager),
    );
    write(&manager, "api.xml", b"real");
    connect(&ca, &mut worker, &mut manager);
    assert_eq!(worker.manager(), Some(m_name.clone()));
    assert!(holds(&worker, b"api.xml"));

    // Now that it follows a manager, the forged node's changes are refused, not applied.
    worker.disconnected(forged.store().node());
    forged.disconnected(worker.store().node());
    connect(&ca, &mut worker, &mut forged);
    assert!(!holds(&worker, b"evil.xml"));
    assert_eq!(worker.store().leadership().manager(), Some(&m_name));
}

#[test]
fn multi_writer_accepts_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let mut a = replica(&ca, dir.path(), "a", Mode::MultiWriter, false, None);
    let mut b = replica(&ca, dir.path(), "b", Mode::MultiWriter, false, None);
    write(&b, "x", b"from b");
    connect(&ca, &mut a, &mut b);
    assert!(holds(&a, b"x"));
}

/// A member relays a history whose new term names a node whose certificate allows
/// only the worker role, or names the receiving node itself: neither is followed, and
/// the relayed changes are refused like any non-manager's.
#[test]
fn a_relayed_term_for_a_worker_or_for_the_receiver_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let m_name = NodeName::new("m").unwrap();
    let mut manager = replica(
        &ca,
        dir.path(),
        "m",
        Mode::OneWay,
        true,
        Some(CertRole::Manager),
    );
    let mut worker = replica(
        &ca,
        dir.path(),
        "w1",
        Mode::OneWay,
        false,
        Some(CertRole::Worker),
    );
    connect(&ca, &mut worker, &mut manager);
    assert_eq!(worker.manager(), Some(m_name.clone()));
    // w9 holds a worker certificate, as w1 has seen.
    let mut w9 = replica(
        &ca,
        dir.path(),
        "w9",
        Mode::OneWay,
        false,
        Some(CertRole::Worker),
    );
    connect(&ca, &mut worker, &mut w9);

    for named in ["w9", "w1"] {
        // A relaying worker whose store holds the forged history.
        let liar_name = format!("liar-{named}");
        let mut liar = replica(
            &ca,
            dir.path(),
            &liar_name,
            Mode::OneWay,
            false,
            Some(CertRole::Worker),
        );
        let forged = Leadership::first(m_name.clone(), VersionVector::new())
            .promote(NodeName::new(named).unwrap(), VersionVector::new());
        liar.store().set_leadership(forged).unwrap();
        write(&liar, &format!("{named}.xml"), b"forged");
        connect(&ca, &mut worker, &mut liar);
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
    let ca = Ca::new();
    let mut node = replica(
        &ca,
        dir.path(),
        "w1",
        Mode::OneWay,
        false,
        Some(CertRole::Worker),
    );
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
