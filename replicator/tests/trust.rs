//! A member speaks only for itself (docs/reliability.md, "Threat model"), in the replica
//! state machine: a change is applied only with its origin's signature, whoever relays
//! it; a manager term is followed only with the signature of the manager it names, under
//! a certificate that allows the role; a revoked certificate signs nothing any more.

#![cfg(test)]

use depfs_proto::lead::Term;
use depfs_proto::{
    Change, Content, Hlc, Kind, Leadership, Message, NodeName, State, VersionVector,
};
use depfs_replicator::pki::CertRole;
use depfs_replicator::revoked::Revoked;
use depfs_replicator::{Mode, Output, Replica, ReplicaConfig, ReplicaError};
use depfs_store::{Durability, Store, StoreOptions};
use depfs_testkit::{changes_message, meta, path, signed_change, Ca};

fn name(n: &str) -> NodeName {
    depfs_testkit::node(n)
}

struct Member {
    replica: Replica,
}

fn node(ca: &Ca, dir: &std::path::Path, n: &str, mode: Mode, role: Option<CertRole>) -> Member {
    let store = Store::open(&dir.join(n), &name(n), &StoreOptions::new(meta(Kind::Dir))).unwrap();
    let identity = ca.identity_with_role(&name(n), role);
    let replica = Replica::new(store, Vec::new(), ReplicaConfig::default(), &identity)
        .unwrap()
        .with_mode(mode);
    Member { replica }
}

impl Member {
    fn name(&self) -> NodeName {
        self.replica.store().node().clone()
    }

    fn write(&self, p: &str, bytes: &[u8]) {
        let mut tx = self.replica.store().transaction();
        tx.put(path(p), Member::file(bytes));
        tx.commit(1000, Durability::Process).unwrap();
    }

    fn file(bytes: &[u8]) -> depfs_proto::Node {
        depfs_proto::Node {
            meta: meta(Kind::File),
            content: Content::Inline(bytes.to_vec()),
        }
    }

    fn holds(&self, p: &str) -> Option<Vec<u8>> {
        match self.replica.store().get(&path(p)).unwrap()?.content {
            Content::Inline(b) => Some(b),
            Content::Chunked(_) => None,
        }
    }
}

/// Delivers messages between `a` and `b` until silence; the first refusal is returned
/// with the side that refused.
fn exchange(
    a: &mut Member,
    b: &mut Member,
    mut from_a: Vec<Output>,
    mut from_b: Vec<Output>,
) -> Result<(), (NodeName, ReplicaError)> {
    let (na, nb) = (a.name(), b.name());
    for _ in 0..200 {
        if from_a.is_empty() && from_b.is_empty() {
            return Ok(());
        }
        let mut next_a = Vec::new();
        let mut next_b = Vec::new();
        for o in from_a.drain(..) {
            if let Output::Send { msg, .. } = o {
                next_b.extend(
                    b.replica
                        .receive(&na, msg, 2000)
                        .map_err(|e| (nb.clone(), e))?,
                );
            }
        }
        for o in from_b.drain(..) {
            if let Output::Send { msg, .. } = o {
                next_a.extend(
                    a.replica
                        .receive(&nb, msg, 2000)
                        .map_err(|e| (na.clone(), e))?,
                );
            }
        }
        from_a = next_a;
        from_b = next_b;
    }
    panic!("the replicas never fell silent");
}

fn connect(ca: &Ca, a: &mut Member, b: &mut Member) -> Result<(), (NodeName, ReplicaError)> {
    let (na, nb) = (a.name(), b.name());
    let out_a = a
        .replica
        .connected(&nb, &ca.certificate(&nb), 1000)
        .unwrap();
    let out_b = b
        .replica
        .connected(&na, &ca.certificate(&na), 1000)
        .unwrap();
    exchange(a, b, out_a, out_b)
}

fn disconnect(a: &mut Member, b: &mut Member) {
    let (na, nb) = (a.name(), b.name());
    a.replica.disconnected(&nb);
    b.replica.disconnected(&na);
}

/// Change `seq` of `origin` writing `p`, sealed by `signer`.
fn change(origin: &str, seq: u64, p: &str, signer: &dyn depfs_proto::SignChanges) -> Change {
    let state = State::Live(Member::file(b"forged"));
    signed_change(origin, seq, p, state, Hlc::new(1_000, 0), signer)
}

#[test]
fn a_change_is_applied_only_with_its_origins_signature() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let mut victim = node(&ca, dir.path(), "gw1", Mode::MultiWriter, None);
    let mut liar = node(&ca, dir.path(), "liar", Mode::MultiWriter, None);
    let gw2 = ca.identity(&name("gw2"));
    connect(&ca, &mut victim, &mut liar).unwrap();
    let liar_key = ca.identity(&name("liar")).signer;

    let forged = [
        (
            "under gw2's name, signed by the liar",
            change("gw2", 1, "a.xml", liar_key.as_ref()),
        ),
        (
            "under the victim's own name",
            change("gw1", 1, "b.xml", liar_key.as_ref()),
        ),
        ("unsigned", {
            let mut c = change("liar", 1, "c.xml", liar_key.as_ref());
            c.seal.signature.clear();
            c
        }),
        ("with content its seal does not cover", {
            let mut c = change("liar", 1, "d.xml", liar_key.as_ref());
            c.ops[0].state = State::Live(Member::file(b"altered"));
            c
        }),
    ];
    for (what, c) in forged {
        let p = c.ops[0].path.clone();
        let refused = victim
            .replica
            .receive(&liar.name(), changes_message(vec![c]), 2000);
        match refused {
            Err(ReplicaError::Protocol { what: why, .. }) => {
                assert!(why.contains("not made by its origin"), "{what}: {why}")
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(
            victim.replica.store().get(&p).unwrap().is_none(),
            "{what}: applied"
        );
        // The driver closes the session after a refusal; a new one starts clean.
        disconnect(&mut victim, &mut liar);
        connect(&ca, &mut victim, &mut liar).unwrap();
    }
    assert_eq!(victim.replica.counters().changes_forged, 4);

    // gw2's own change, relayed by the liar with gw2's certificate, is applied.
    let honest = change("gw2", 1, "relayed.xml", gw2.signer.as_ref());
    let relayed = Message::Changes {
        batch: 2,
        part: 0,
        last: true,
        base: VersionVector::new(),
        certificates: vec![gw2.certificate.clone()],
        changes: vec![honest],
        upto: Some(VersionVector::new()),
    };
    victim.replica.receive(&liar.name(), relayed, 2000).unwrap();
    assert_eq!(victim.holds("relayed.xml").as_deref(), Some(&b"forged"[..]));
}

#[test]
fn changes_reach_a_node_through_a_relay_with_their_origins_signature() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let mut a = node(&ca, dir.path(), "a", Mode::MultiWriter, None);
    let mut b = node(&ca, dir.path(), "b", Mode::MultiWriter, None);
    let mut c = node(&ca, dir.path(), "c", Mode::MultiWriter, None);
    a.write("from-a.xml", b"a");
    connect(&ca, &mut a, &mut b).unwrap();
    disconnect(&mut a, &mut b);
    // c has never met a: it learns a's certificate from b, with a's change.
    connect(&ca, &mut b, &mut c).unwrap();
    assert_eq!(c.holds("from-a.xml").as_deref(), Some(&b"a"[..]));
}

/// A history as a liar would send it: the liar's own store keeps it (its store signs only
/// the liar's own terms, so a term naming another node stays unsigned).
fn liar_with_history(ca: &Ca, dir: &std::path::Path, liar: &str, lead: Leadership) -> Member {
    let node = node(ca, dir, liar, Mode::OneWay, Some(CertRole::Worker));
    node.replica.store().set_leadership(lead).unwrap();
    node
}

#[test]
fn a_term_is_followed_only_with_the_signature_of_the_manager_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let mut manager = node(&ca, dir.path(), "m", Mode::OneWay, Some(CertRole::Manager));
    manager
        .replica
        .store()
        .set_leadership(Leadership::first(name("m"), VersionVector::new()))
        .unwrap();
    manager.write("api.xml", b"real");
    let mut worker = node(&ca, dir.path(), "w1", Mode::OneWay, Some(CertRole::Worker));
    connect(&ca, &mut worker, &mut manager).unwrap();
    assert_eq!(worker.replica.manager(), Some(name("m")));
    let history = worker.replica.store().leadership();
    assert!(history.terms()[0].is_signed(), "term 1 is not signed");

    // "m2" holds a manager certificate the worker has seen, but did not promote itself.
    let mut m2 = node(&ca, dir.path(), "m2", Mode::OneWay, Some(CertRole::Manager));
    connect(&ca, &mut worker, &mut m2).unwrap();
    disconnect(&mut worker, &mut m2);

    for (i, named) in ["ghost", "m2"].into_iter().enumerate() {
        let liar_name = format!("liar{i}");
        let mut liar = liar_with_history(
            &ca,
            dir.path(),
            &liar_name,
            history.promote(name(named), VersionVector::new()),
        );
        liar.write(&format!("{named}.xml"), b"forged");
        connect(&ca, &mut worker, &mut liar).unwrap();
        assert_eq!(
            worker.replica.manager(),
            Some(name("m")),
            "followed a term for {named}"
        );
        assert_eq!(worker.replica.store().leadership().term(), 1);
        assert!(worker.holds(&format!("{named}.xml")).is_none());
    }
    assert!(worker.replica.counters().terms_refused >= 2);

    // A term for m2 signed with the liar's key is a forgery: the liar is disconnected.
    let mut forged_term = history.promote(name("m2"), VersionVector::new());
    let mut terms: Vec<Term> = forged_term.terms().to_vec();
    let liar_key = ca.identity(&name("liar1")).signer;
    let last = terms.last_mut().unwrap();
    last.signature = liar_key.sign(&last.digest());
    forged_term = Leadership::from_terms(terms);
    let hello = Message::Hello {
        node: name("liar1"),
        vv: VersionVector::new(),
        lead: forged_term,
        certificates: Vec::new(),
    };
    let liar1 = name("liar1");
    let refused = worker.replica.receive(&liar1, hello, 3000);
    assert!(
        matches!(&refused, Err(ReplicaError::Protocol { what, .. }) if what.contains("did not make")),
        "{refused:?}"
    );
    assert_eq!(worker.replica.manager(), Some(name("m")));
}

#[test]
fn a_worker_certificate_never_manages_even_when_it_signs_its_own_term() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let mut worker = node(&ca, dir.path(), "w1", Mode::OneWay, Some(CertRole::Worker));
    // w9 promotes itself in its own store: its store signs the term with w9's key.
    let w9 = liar_with_history(
        &ca,
        dir.path(),
        "w9",
        Leadership::first(name("w9"), VersionVector::new()),
    );
    assert!(w9.replica.store().leadership().terms()[0].is_signed());
    w9.write("w9.xml", b"worker");
    let mut w9 = w9;
    connect(&ca, &mut worker, &mut w9).unwrap();
    assert_eq!(
        worker.replica.manager(),
        None,
        "followed a worker's own term"
    );
    assert!(worker.holds("w9.xml").is_none());
}

#[test]
fn a_revoked_certificate_is_forgotten_and_its_peer_named_for_disconnection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let mut a = node(&ca, dir.path(), "a", Mode::MultiWriter, None);
    let mut b = node(&ca, dir.path(), "b", Mode::MultiWriter, None);
    b.write("before.xml", b"b");
    connect(&ca, &mut a, &mut b).unwrap();
    assert!(a.holds("before.xml").is_some());

    let identity = ca.identity(&name("a"));
    *identity.revoked.write() = Revoked::parse("node:b\n", "test").unwrap();
    assert_eq!(a.replica.revocations_changed(), vec![name("b")]);
    disconnect(&mut a, &mut b);
    // b's certificate is refused for a new session, and b's later changes with it.
    let refused = a
        .replica
        .connected(&name("b"), &ca.certificate(&name("b")), 3000);
    assert!(refused.is_err(), "a revoked certificate started a session");
    let b_key = ca.identity(&name("b")).signer;
    let late = change("b", 2, "after.xml", b_key.as_ref());
    // A node that never knew b gets none of b's changes from a (a cannot vouch for
    // them any more), and the session between them goes on.
    let mut relay = node(&ca, dir.path(), "r", Mode::MultiWriter, None);
    connect(&ca, &mut a, &mut relay).unwrap();
    assert!(relay.holds("before.xml").is_none());
    let refused = a
        .replica
        .receive(&relay.name(), changes_message(vec![late]), 3000);
    assert!(
        refused.is_err(),
        "applied a change signed with a revoked certificate"
    );
    assert!(a.holds("after.xml").is_none());
    assert!(
        a.holds("before.xml").is_some(),
        "a change applied before revocation was lost"
    );
}

/// A store written before changes were signed (or by a node that ran without TLS)
/// holds its own changes unsigned: setting the node's signer seals them, so peers
/// accept them.
#[test]
fn a_nodes_unsigned_changes_are_sealed_when_it_gets_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let store = Store::open(
        &dir.path().join("a"),
        &name("a"),
        &StoreOptions::new(meta(Kind::Dir)),
    )
    .unwrap();
    let mut tx = store.transaction();
    tx.put(path("old.xml"), Member::file(b"old"));
    tx.commit(1000, Durability::Process).unwrap();
    let dot = depfs_proto::Dot::new(name("a"), 1);
    assert!(!store.change(&dot).unwrap().unwrap().seal.is_signed());
    let mut a = Member {
        replica: Replica::new(
            store,
            Vec::new(),
            ReplicaConfig::default(),
            &ca.identity(&name("a")),
        )
        .unwrap(),
    };
    assert!(a
        .replica
        .store()
        .change(&dot)
        .unwrap()
        .unwrap()
        .seal
        .is_signed());
    let mut b = node(&ca, dir.path(), "b", Mode::MultiWriter, None);
    connect(&ca, &mut a, &mut b).unwrap();
    assert_eq!(b.holds("old.xml").as_deref(), Some(&b"old"[..]));
}

/// Two workers are promoted to the same term while apart: when they meet, both follow
/// the one whose name sorts last, the other steps down, and both record the contest
/// for `depfs status`.
#[test]
fn two_promotions_to_the_same_term_resolve_the_same_way_on_both_and_are_recorded() {
    use depfs_replicator::replica::CONTESTED_TERM_KEY;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let mut m = node(&ca, dir.path(), "m", Mode::OneWay, Some(CertRole::Manager));
    m.replica
        .store()
        .set_leadership(Leadership::first(name("m"), VersionVector::new()))
        .unwrap();
    let mut w1 = node(&ca, dir.path(), "w1", Mode::OneWay, Some(CertRole::Manager));
    let mut w2 = node(&ca, dir.path(), "w2", Mode::OneWay, Some(CertRole::Manager));
    connect(&ca, &mut w1, &mut m).unwrap();
    connect(&ca, &mut w2, &mut m).unwrap();
    disconnect(&mut w1, &mut m);
    disconnect(&mut w2, &mut m);
    assert_eq!(w1.replica.promote(3000).unwrap().0, 2);
    assert_eq!(w2.replica.promote(3000).unwrap().0, 2);
    connect(&ca, &mut w1, &mut w2).unwrap();
    for w in [&w1, &w2] {
        assert_eq!(w.replica.manager(), Some(name("w2")), "{}", w.name());
        let note = w.replica.store().app_meta(CONTESTED_TERM_KEY).unwrap();
        let note = String::from_utf8(note.expect("contest recorded")).unwrap();
        assert!(
            note.contains("term 2") && note.contains("w2 is followed"),
            "{note}"
        );
    }
    assert!(!w1.replica.is_manager() && w2.replica.is_manager());
}
