//! One-way failover in the replica state machine: a worker is promoted while the old
//! manager is cut off and still writing; when the old manager returns it steps down, the
//! cluster converges on the new manager's tree, and the old manager's cut-off changes are
//! conflicts on every node — whichever node they reach first.

#![cfg(test)]

use std::collections::{BTreeSet, VecDeque};

use depfs_proto::{Content, Kind, Leadership, Message, Node, NodeName, RelPath, VersionVector};
use depfs_replicator::{Mode, Output, Replica, ReplicaConfig};
use depfs_store::{Durability, Store, StoreOptions};
use depfs_testkit::{meta, Ca};

fn path(p: &str) -> RelPath {
    RelPath::parse(p.as_bytes()).unwrap()
}

/// Nodes, links and messages in flight, delivered in order until silence.
struct Net {
    ca: Ca,
    nodes: Vec<Replica>,
    links: BTreeSet<(usize, usize)>,
    queue: VecDeque<(usize, usize, Message)>,
    now: u64,
}

impl Net {
    fn new(dir: &std::path::Path, names: &[&str]) -> Net {
        let ca = Ca::new();
        let nodes = names
            .iter()
            .map(|name| {
                let node = NodeName::new(name).unwrap();
                let store =
                    Store::open(&dir.join(name), &node, &StoreOptions::new(meta(Kind::Dir)))
                        .unwrap();
                Replica::new(
                    store,
                    Vec::new(),
                    ReplicaConfig::default(),
                    &ca.identity(&node),
                )
                .unwrap()
                .with_mode(Mode::OneWay)
            })
            .collect();
        Net {
            ca,
            nodes,
            links: BTreeSet::new(),
            queue: VecDeque::new(),
            now: 1_000,
        }
    }

    fn name(&self, i: usize) -> NodeName {
        self.nodes[i].store().node().clone()
    }

    fn index(&self, name: &NodeName) -> usize {
        (0..self.nodes.len())
            .find(|&i| &self.name(i) == name)
            .unwrap()
    }

    fn route(&mut self, from: usize, outputs: Vec<Output>) {
        for o in outputs {
            if let Output::Send { to, msg } = o {
                let to = self.index(&to);
                if self.links.contains(&(from.min(to), from.max(to))) {
                    self.queue.push_back((from, to, msg));
                }
            }
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        self.links.insert((a.min(b), a.max(b)));
        let (na, nb) = (self.name(a), self.name(b));
        // Certificates that allow any role, as the transport would report them.
        let (ca, cb) = (self.ca.certificate(&na), self.ca.certificate(&nb));
        let out = self.nodes[a].connected(&nb, &cb, self.now).unwrap();
        self.route(a, out);
        let out = self.nodes[b].connected(&na, &ca, self.now).unwrap();
        self.route(b, out);
        self.run();
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        self.links.remove(&(a.min(b), a.max(b)));
        let (na, nb) = (self.name(a), self.name(b));
        self.nodes[a].disconnected(&nb);
        self.nodes[b].disconnected(&na);
        self.queue
            .retain(|(f, t, _)| !((*f == a && *t == b) || (*f == b && *t == a)));
    }

    /// Delivers every message, then lets time pass for delayed relays, until silent.
    fn run(&mut self) {
        let mut steps = 0;
        for _ in 0..10 {
            while let Some((from, to, msg)) = self.queue.pop_front() {
                steps += 1;
                assert!(steps < 100_000, "the replicas never fell silent");
                self.now += 1;
                let from_name = self.name(from);
                let out = self.nodes[to].receive(&from_name, msg, self.now).unwrap();
                self.route(to, out);
            }
            self.now += ReplicaConfig::default().relay_delay_ms + 1;
            for i in 0..self.nodes.len() {
                let out = self.nodes[i].tick(self.now).unwrap();
                self.route(i, out);
            }
            if self.queue.is_empty() {
                break;
            }
        }
    }

    fn write(&mut self, i: usize, p: &str, bytes: &[u8]) {
        let mut tx = self.nodes[i].store().transaction();
        tx.put(
            path(p),
            Node {
                meta: meta(Kind::File),
                content: Content::Inline(bytes.to_vec()),
            },
        );
        tx.commit(self.now, Durability::Process).unwrap();
        let out = self.nodes[i].local_commit(self.now).unwrap();
        self.route(i, out);
        self.run();
    }

    fn delete(&mut self, i: usize, p: &str) {
        let mut tx = self.nodes[i].store().transaction();
        tx.delete(path(p));
        tx.commit(self.now, Durability::Process).unwrap();
        let out = self.nodes[i].local_commit(self.now).unwrap();
        self.route(i, out);
        self.run();
    }

    fn read(&self, i: usize, p: &str) -> Option<Vec<u8>> {
        let node = self.nodes[i].store().get(&path(p)).unwrap()?;
        match node.content {
            Content::Inline(bytes) => Some(bytes),
            _ => panic!("test files are inline"),
        }
    }

    /// The recorded conflicts of node `i`, as (path, origin, content).
    fn conflicts(&self, i: usize) -> BTreeSet<(String, String, Vec<u8>)> {
        self.nodes[i]
            .store()
            .conflicts()
            .unwrap()
            .into_iter()
            .map(|c| {
                let bytes = match c.version.node().map(|n| n.content.clone()) {
                    Some(Content::Inline(b)) => b,
                    _ => Vec::new(),
                };
                (c.path.to_string(), c.version.dot.node.to_string(), bytes)
            })
            .collect()
    }
}

/// Runs the failover story; `first_contact` is the node the old manager reaches first
/// when it returns.
fn failover(first_contact: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::new(dir.path(), &["m", "w1", "w2"]);
    let (m, w1, w2) = (0, 1, 2);
    net.nodes[m]
        .store()
        .set_leadership(Leadership::first(net.name(m), VersionVector::new()))
        .unwrap();
    net.connect(m, w1);
    net.connect(m, w2);
    net.connect(w1, w2);
    net.write(m, "a.xml", b"a1");
    net.write(m, "b.xml", b"b1");
    net.write(m, "c.xml", b"c1");
    for i in [w1, w2] {
        assert_eq!(net.read(i, "c.xml").as_deref(), Some(&b"c1"[..]));
        assert_eq!(net.nodes[i].manager(), Some(net.name(m)));
    }

    // The manager is cut off; w1 is promoted and writes; w2 follows it.
    net.disconnect(m, w1);
    net.disconnect(m, w2);
    let (term, out) = net.nodes[w1].promote(net.now).unwrap();
    assert_eq!(term, 2);
    net.route(w1, out);
    net.run();
    assert!(net.nodes[w1].is_manager());
    assert_eq!(net.nodes[w2].manager(), Some(net.name(w1)));
    net.write(w1, "e.xml", b"from the new manager");
    assert_eq!(
        net.read(w2, "e.xml").as_deref(),
        Some(&b"from the new manager"[..])
    );

    // Meanwhile the old manager, cut off, still believes it manages and writes.
    assert!(net.nodes[m].is_manager());
    net.write(m, "a.xml", b"a2 cut off");
    net.delete(m, "b.xml");
    net.write(m, "d.xml", b"created cut off");

    // It comes back.
    let other = if first_contact == w1 { w2 } else { w1 };
    net.connect(m, first_contact);
    net.connect(m, other);
    net.run();
    // Anti-entropy: one more round of hellos settles anything relayed late.
    for i in 0..3 {
        let out = net.nodes[i].tick(net.now + 10_000).unwrap();
        net.route(i, out);
    }
    net.run();

    assert!(
        !net.nodes[m].is_manager(),
        "the old manager did not step down"
    );
    for i in [m, w1, w2] {
        let who = net.name(i);
        assert_eq!(net.nodes[i].manager(), Some(net.name(w1)), "{who}");
        assert_eq!(
            net.read(i, "a.xml").as_deref(),
            Some(&b"a1"[..]),
            "{who}: a.xml"
        );
        assert_eq!(
            net.read(i, "b.xml").as_deref(),
            Some(&b"b1"[..]),
            "{who}: b.xml"
        );
        assert_eq!(net.read(i, "d.xml"), None, "{who}: d.xml");
        assert_eq!(
            net.read(i, "e.xml").as_deref(),
            Some(&b"from the new manager"[..]),
            "{who}"
        );
        let conflicts = net.conflicts(i);
        let expected: BTreeSet<(String, String, Vec<u8>)> = [
            (
                "/a.xml".to_string(),
                "m".to_string(),
                b"a2 cut off".to_vec(),
            ),
            (
                "/d.xml".to_string(),
                "m".to_string(),
                b"created cut off".to_vec(),
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(conflicts, expected, "{who}: conflicts");
    }
    let digest = net.nodes[w1].store().tree_digest().unwrap();
    for i in [m, w2] {
        assert_eq!(net.nodes[i].store().tree_digest().unwrap(), digest);
    }
}

#[test]
fn a_returning_manager_steps_down_and_its_cut_off_changes_become_conflicts() {
    failover(1);
}

#[test]
fn the_same_when_the_old_manager_reaches_a_worker_first() {
    failover(2);
}

#[test]
fn a_manager_cannot_be_promoted_and_multi_writer_has_no_manager() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::new(dir.path(), &["m"]);
    net.nodes[0]
        .store()
        .set_leadership(Leadership::first(net.name(0), VersionVector::new()))
        .unwrap();
    assert!(net.nodes[0].promote(net.now).is_err());
    let node = NodeName::new("x").unwrap();
    let store = Store::open(
        &dir.path().join("x"),
        &node,
        &StoreOptions::new(meta(Kind::Dir)),
    )
    .unwrap();
    let mut multi = Replica::new(
        store,
        Vec::new(),
        ReplicaConfig::default(),
        &net.ca.identity(&node),
    )
    .unwrap();
    assert!(multi.promote(net.now).is_err());
}

#[test]
fn a_worker_catches_up_through_another_worker() {
    // w2 is linked to w1 only: the manager's uplink serves one worker, which relays.
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::new(dir.path(), &["m", "w1", "w2"]);
    net.nodes[0]
        .store()
        .set_leadership(Leadership::first(net.name(0), VersionVector::new()))
        .unwrap();
    net.connect(0, 1);
    net.connect(1, 2);
    net.write(0, "api.xml", b"v1");
    assert_eq!(net.read(2, "api.xml").as_deref(), Some(&b"v1"[..]));
    assert_eq!(net.nodes[2].manager(), Some(net.name(0)));
    // A worker that joins late catches up from the relay alone.
    net.disconnect(1, 2);
    net.write(0, "api.xml", b"v2");
    net.write(0, "seq.xml", b"s");
    assert_eq!(net.read(2, "api.xml").as_deref(), Some(&b"v1"[..]));
    net.connect(1, 2);
    assert_eq!(net.read(2, "api.xml").as_deref(), Some(&b"v2"[..]));
    assert_eq!(net.read(2, "seq.xml").as_deref(), Some(&b"s"[..]));
}
