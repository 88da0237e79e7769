//! Deterministic simulation of a whole cluster (in the spirit of FoundationDB's and
//! TigerBeetle's): 3 to 7 nodes in one process, each with its own real RocksDB store,
//! running the real [`Replica`] state machine, driven by a seeded scheduler that makes
//! local changes (including concurrent writes, deletes, renames and mkdirs of the same
//! paths), delays, reorders, duplicates and drops messages, partitions nodes, skews
//! clocks, and crashes nodes (dropping all in-memory state) and restarts them from their
//! store. At the end the network heals and the checker asserts convergence, no lost
//! acknowledged write, store integrity, and garbage collection.
//!
//! Reproduce a failing seed: `DEPFS_SIM_SEED=<seed> cargo test -p depfs-replicator --test simulation`.
//! `DEPFS_SIM_SEEDS=<n>` runs seeds 1..=n (default 200).

#![cfg(test)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::PathBuf;

use depfs_proto::{
    Content, Dot, Kind, Message, Meta, Node, NodeName, RelPath, State, Timespec, VersionVector,
};
use depfs_replicator::{Output, Replica, ReplicaConfig};
use depfs_store::{Durability, Store, StoreOptions};
use depfs_testkit::Ca;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn root_meta() -> Meta {
    Meta {
        kind: Kind::Dir,
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: Timespec::new(1_700_000_000, 0),
        ctime: Timespec::new(1_700_000_000, 0),
    }
}

fn config() -> ReplicaConfig {
    ReplicaConfig {
        batch_changes: 7,
        batch_bytes: 64 << 10,
        window: 2,
        fetch_batch: 5,
        chunk_reply_bytes: 100 << 10,
        hello_every_ms: 400,
        stall_ms: 1_500,
        gc_every_ms: 2_000,
        relay_delay_ms: 30,
    }
}

struct SimNode {
    name: NodeName,
    dir: PathBuf,
    replica: Option<Replica>,
    clock_skew_ms: i64,
}

/// A version made by a local commit, for the no-loss check.
#[derive(Debug, Clone)]
struct Made {
    path: RelPath,
    dot: Dot,
    ctx: VersionVector,
    live: bool,
}

struct Envelope {
    from: usize,
    to: usize,
    msg: Message,
}

struct Sim {
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    names: Vec<NodeName>,
    now: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    envelopes: BTreeMap<usize, Envelope>,
    next_id: usize,
    cut: BTreeSet<(usize, usize)>,
    links_up: BTreeSet<(usize, usize)>,
    lossy: bool,
    made: Vec<Made>,
    stats: BTreeMap<&'static str, u64>,
    ca: Ca,
    _tmp: tempfile::TempDir,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = rng.gen_range(3..=7);
        let tmp = tempfile::Builder::new()
            .prefix("depfs-sim-")
            .tempdir()
            .unwrap();
        let names: Vec<NodeName> = (0..n)
            .map(|i| NodeName::new(&format!("n{i}")).unwrap())
            .collect();
        let skewed = rng.gen_range(0..n);
        let nodes = (0..n)
            .map(|i| SimNode {
                name: names[i].clone(),
                dir: tmp.path().join(format!("n{i}")),
                replica: None,
                // One node's wall clock is ten minutes off, ahead or behind.
                clock_skew_ms: if i == skewed {
                    [-600_000, 600_000][rng.gen_range(0..2)]
                } else {
                    rng.gen_range(-50..50)
                },
            })
            .collect();
        let mut sim = Sim {
            rng,
            nodes,
            names,
            now: 1_700_000_000_000,
            queue: BinaryHeap::new(),
            envelopes: BTreeMap::new(),
            next_id: 0,
            cut: BTreeSet::new(),
            links_up: BTreeSet::new(),
            lossy: true,
            made: Vec::new(),
            stats: BTreeMap::new(),
            ca: Ca::new(),
            _tmp: tmp,
        };
        for i in 0..n {
            sim.start(i);
        }
        sim.refresh_links();
        sim
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_insert(0) += 1;
    }

    fn wall(&self, i: usize) -> u64 {
        (self.now as i64 + self.nodes[i].clock_skew_ms) as u64
    }

    fn start(&mut self, i: usize) {
        let store = Store::open(
            &self.nodes[i].dir,
            &self.nodes[i].name,
            &StoreOptions::new(root_meta()),
        )
        .unwrap();
        let peers: Vec<NodeName> = self
            .names
            .iter()
            .filter(|n| **n != self.nodes[i].name)
            .cloned()
            .collect();
        let identity = self.ca.identity(&self.nodes[i].name);
        self.nodes[i].replica = Some(Replica::new(store, peers, config(), &identity).unwrap());
    }

    fn crash(&mut self, i: usize) {
        if std::env::var("DEPFS_SIM_TRACE").is_ok() {
            eprintln!("t={} {} crashes", self.now, self.names[i]);
        }
        self.nodes[i].replica = None;
        self.count("crashes");
        self.refresh_links();
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some()
    }

    fn link_ok(&self, a: usize, b: usize) -> bool {
        self.alive(a) && self.alive(b) && !self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// Brings connections up and down to match liveness and partitions.
    fn refresh_links(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in (a + 1)..n {
                let ok = self.link_ok(a, b);
                let was = self.links_up.contains(&(a, b));
                if ok && !was {
                    self.links_up.insert((a, b));
                    let (na, nb) = (self.names[a].clone(), self.names[b].clone());
                    let now = (self.wall(a), self.wall(b));
                    let (ca, cb) = (self.ca.certificate(&na), self.ca.certificate(&nb));
                    let out_a = self.nodes[a]
                        .replica
                        .as_mut()
                        .unwrap()
                        .connected(&nb, &cb, now.0)
                        .unwrap();
                    let out_b = self.nodes[b]
                        .replica
                        .as_mut()
                        .unwrap()
                        .connected(&na, &ca, now.1)
                        .unwrap();
                    self.route(a, out_a);
                    self.route(b, out_b);
                } else if !ok && was {
                    self.links_up.remove(&(a, b));
                    let (na, nb) = (self.names[a].clone(), self.names[b].clone());
                    if let Some(r) = self.nodes[a].replica.as_mut() {
                        r.disconnected(&nb);
                    }
                    if let Some(r) = self.nodes[b].replica.as_mut() {
                        r.disconnected(&na);
                    }
                }
            }
        }
    }

    fn route(&mut self, from: usize, outputs: Vec<Output>) {
        for o in outputs {
            if let Output::Send { to, msg } = o {
                let to = self.names.iter().position(|n| *n == to).unwrap();
                let copies = if self.lossy && self.rng.gen_bool(0.03) {
                    self.count("duplicated");
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    if self.lossy && self.rng.gen_bool(0.03) {
                        self.count("dropped");
                        continue;
                    }
                    let delay = if self.lossy {
                        self.rng.gen_range(1..60)
                    } else {
                        self.rng.gen_range(1..5)
                    };
                    let id = self.next_id;
                    self.next_id += 1;
                    self.envelopes.insert(
                        id,
                        Envelope {
                            from,
                            to,
                            msg: msg.clone(),
                        },
                    );
                    self.queue.push(Reverse((self.now + delay, id as u64, id)));
                }
            }
        }
    }

    fn deliver_due(&mut self) {
        while let Some(Reverse((at, _, id))) = self.queue.peek().copied() {
            if at > self.now {
                break;
            }
            self.queue.pop();
            let Some(env) = self.envelopes.remove(&id) else {
                continue;
            };
            // A message crosses only a live link (a cut link or dead node loses it).
            if !self
                .links_up
                .contains(&(env.from.min(env.to), env.from.max(env.to)))
            {
                continue;
            }
            let from = self.names[env.from].clone();
            let wall = self.wall(env.to);
            if std::env::var("DEPFS_SIM_TRACE").is_ok() {
                eprintln!(
                    "t={} {} -> {}: {}",
                    self.now,
                    from,
                    self.names[env.to],
                    summary(&env.msg)
                );
            }
            let result = self.nodes[env.to]
                .replica
                .as_mut()
                .unwrap()
                .receive(&from, env.msg, wall);
            self.count("delivered");
            match result {
                Ok(out) => self.route(env.to, out),
                Err(e) => panic!(
                    "node {} refused a message from {from}: {e}",
                    self.names[env.to]
                ),
            }
        }
    }

    fn tick_all(&mut self) {
        for i in 0..self.nodes.len() {
            let wall = self.wall(i);
            if let Some(r) = self.nodes[i].replica.as_mut() {
                let out = r.tick(wall).unwrap();
                self.route(i, out);
            }
        }
    }

    fn random_path(&mut self) -> RelPath {
        let depth = self.rng.gen_range(1..=3);
        let parts: Vec<&str> = (0..depth)
            .map(|_| NAMES[self.rng.gen_range(0..NAMES.len())])
            .collect();
        RelPath::parse(parts.join("/").as_bytes()).unwrap()
    }

    fn file(&mut self, store: &Store) -> (Node, depfs_store::PinGuard) {
        let size = *[0usize, 10, 3000, 40_000, 200_000]
            .get(self.rng.gen_range(0..5))
            .unwrap();
        // Few distinct contents, so identical concurrent writes happen too.
        let seed: u8 = self.rng.gen_range(0..6);
        let data: Vec<u8> = (0..size)
            .map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
            .collect();
        let (content, pin) = store.write_content(&data).unwrap();
        let node = Node {
            meta: Meta {
                kind: Kind::File,
                perm: 0o644,
                uid: 1000,
                gid: 1000,
                mtime: Timespec::new(1_700_000_000 + i64::from(seed), 0),
                ctime: Timespec::new(1_700_000_000, 0),
            },
            content,
        };
        (node, pin)
    }

    fn dir_node(&self) -> Node {
        Node {
            meta: Meta {
                perm: 0o755,
                ..root_meta()
            },
            content: Content::empty(),
        }
    }

    /// One random local operation on node `i`, with the checks a filesystem makes.
    fn local_op(&mut self, i: usize) {
        let Some(store) = self.nodes[i].replica.as_ref().map(|r| r.store().clone()) else {
            return;
        };
        let path = self.random_path();
        let kind = self.rng.gen_range(0..100);
        // The content's pin is held until the commit that references it, as the
        // filesystem does.
        let (file, _pin) = if kind < 45 {
            let (node, pin) = self.file(&store);
            (Some(node), Some(pin))
        } else {
            (None, None)
        };
        let target = self.random_path();
        let dir = self.dir_node();
        let wall = self.wall(i);
        let mut tx = store.transaction();
        let parent_is_dir = |tx: &depfs_store::Tx<'_>, p: &RelPath| {
            p.parent().is_some_and(|d| {
                tx.get(&d)
                    .unwrap()
                    .is_some_and(|n| n.meta.kind == Kind::Dir)
            })
        };
        let existing = tx.get(&path).unwrap();
        match kind {
            // Write a file (create or overwrite), as a close would.
            0..=44 => {
                if !parent_is_dir(&tx, &path)
                    || existing.as_ref().is_some_and(|n| n.meta.kind == Kind::Dir)
                {
                    return;
                }
                tx.put(path, file.unwrap());
            }
            // mkdir -p
            45..=64 => {
                let mut chain: Vec<RelPath> = path.ancestors().filter(|a| !a.is_root()).collect();
                chain.reverse();
                chain.push(path.clone());
                for p in chain {
                    match tx.get(&p).unwrap() {
                        Some(n) if n.meta.kind == Kind::Dir => {}
                        Some(_) => return,
                        None => tx.put(p, dir.clone()),
                    }
                }
            }
            // unlink / rmdir
            65..=79 => match &existing {
                Some(n) if n.meta.kind != Kind::Dir => tx.delete(path),
                Some(_) if !tx.has_children(&path).unwrap() => tx.delete(path),
                _ => return,
            },
            // rename (a file, or a directory with everything below it)
            _ => {
                let Some(node) = existing else { return };
                if target == path || path.is_ancestor_of(&target) || !parent_is_dir(&tx, &target) {
                    return;
                }
                match tx.get(&target).unwrap() {
                    Some(t) if t.meta.kind == Kind::Dir || node.meta.kind == Kind::Dir => return,
                    _ => {}
                }
                let mut moved = vec![(path.clone(), node.clone())];
                if node.meta.kind == Kind::Dir {
                    for (p, n) in store.descendants(&path).unwrap() {
                        moved.push((p, n));
                    }
                }
                for (p, _) in &moved {
                    tx.delete(p.clone());
                }
                for (p, n) in moved {
                    tx.put(path.rebase(&p, &target).unwrap(), n);
                }
            }
        }
        let Some(committed) = tx.commit(wall, Durability::Process).unwrap() else {
            return;
        };
        self.count("local changes");
        if std::env::var("DEPFS_SIM_TRACE").is_ok() {
            let record = store.log_record(&committed.dot).unwrap().unwrap();
            eprintln!(
                "t={} {} commits {} {:?}",
                self.now, self.names[i], committed.dot, record.paths
            );
        }
        let record = store.log_record(&committed.dot).unwrap().unwrap();
        for p in record.paths {
            if let Some(h) = store
                .heads(&p)
                .unwrap()
                .into_iter()
                .find(|h| h.dot == committed.dot)
            {
                self.made.push(Made {
                    path: p,
                    dot: h.dot.clone(),
                    ctx: h.ctx.clone(),
                    live: matches!(h.state, State::Live(_)),
                });
            }
        }
        let out = self.nodes[i]
            .replica
            .as_mut()
            .unwrap()
            .local_commit(wall)
            .unwrap();
        self.route(i, out);
    }

    fn step(&mut self) {
        self.now += self.rng.gen_range(1..20);
        let n = self.nodes.len();
        let roll = self.rng.gen_range(0..1000);
        match roll {
            0..=299 => {
                let i = self.rng.gen_range(0..n);
                self.local_op(i);
            }
            300..=304 => {
                let i = self.rng.gen_range(0..n);
                if self.alive(i) {
                    self.crash(i);
                } else {
                    self.start(i);
                    self.count("restarts");
                    self.refresh_links();
                }
            }
            305..=309 => {
                let a = self.rng.gen_range(0..n);
                let b = self.rng.gen_range(0..n);
                if a != b {
                    let key = (a.min(b), a.max(b));
                    if !self.cut.remove(&key) {
                        self.cut.insert(key);
                        self.count("partitions");
                    }
                    self.refresh_links();
                }
            }
            310..=340 => self.tick_all(),
            _ => {}
        }
        self.deliver_due();
    }

    /// Heals everything and runs until every message is delivered and ticks settle.
    fn heal_and_settle(&mut self) {
        self.lossy = false;
        self.cut.clear();
        for i in 0..self.nodes.len() {
            if !self.alive(i) {
                self.start(i);
            }
        }
        self.refresh_links();
        for _ in 0..400 {
            self.now += 100;
            self.tick_all();
            for _ in 0..50 {
                if self.queue.is_empty() {
                    break;
                }
                self.now += 5;
                self.deliver_due();
            }
            if self.queue.is_empty() && self.converged() {
                // Two more rounds so acknowledgements reach everyone, then collect.
                for _ in 0..3 {
                    self.now += 2_500;
                    self.tick_all();
                    for _ in 0..10_000 {
                        if self.queue.is_empty() {
                            break;
                        }
                        self.now += 5;
                        self.deliver_due();
                    }
                }
                return;
            }
        }
    }

    fn store(&self, i: usize) -> &Store {
        self.nodes[i].replica.as_ref().unwrap().store()
    }

    fn converged(&self) -> bool {
        let vv0 = self.store(0).version_vector();
        let d0 = self.store(0).tree_digest().unwrap();
        (1..self.nodes.len()).all(|i| {
            self.store(i).version_vector() == vv0 && self.store(i).tree_digest().unwrap() == d0
        })
    }
}

fn summary(msg: &Message) -> String {
    match msg {
        Message::Hello { vv, .. } => format!("Hello {vv:?}"),
        Message::Changes {
            batch,
            part,
            base,
            changes,
            upto,
            ..
        } => format!(
            "Changes {batch}.{part} base={base:?} {:?} upto={upto:?}",
            changes
                .iter()
                .map(|c| format!("{}({})", c.dot, c.ops.len()))
                .collect::<Vec<_>>()
        ),
        Message::Ack { vv } => format!("Ack {vv:?}"),
        Message::Progress { vv } => format!("Progress {vv:?}"),
        Message::GetChunks { hashes } => format!("GetChunks {}", hashes.len()),
        Message::Chunks { chunks, missing } => {
            format!("Chunks {} missing {}", chunks.len(), missing.len())
        }
    }
}

fn run(seed: u64) -> BTreeMap<&'static str, u64> {
    let mut sim = Sim::new(seed);
    let steps = sim.rng.gen_range(300..700);
    for _ in 0..steps {
        sim.step();
    }
    sim.heal_and_settle();
    let n = sim.nodes.len();
    let fail = |what: String| -> ! {
        panic!("seed {seed}: {what}\nreproduce: DEPFS_SIM_SEED={seed} cargo test -p depfs-replicator --test simulation")
    };

    // Convergence: same progress, same tree, same conflicts everywhere.
    let digest = sim.store(0).tree_digest().unwrap();
    let conflicts = |s: &Store| -> Vec<(RelPath, Dot)> {
        s.conflicts()
            .unwrap()
            .into_iter()
            .map(|c| (c.path, c.version.dot))
            .collect()
    };
    let c0 = conflicts(sim.store(0));
    for i in 0..n {
        let s = sim.store(i);
        if s.tree_digest().unwrap() != digest {
            let a: Vec<_> = sim
                .store(0)
                .all_entries()
                .unwrap()
                .into_iter()
                .map(|(p, n)| (p, n.meta.kind, n.size()))
                .collect();
            let b: Vec<_> = s
                .all_entries()
                .unwrap()
                .into_iter()
                .map(|(p, n)| (p, n.meta.kind, n.size()))
                .collect();
            let mut detail = String::new();
            for j in 0..n {
                let st = sim.store(j);
                detail.push_str(&format!(
                    "\n  n{j} vv={:?} stats={:?}",
                    st.version_vector(),
                    st.stats().unwrap()
                ));
                for (path, _, _) in a.iter().chain(&b) {
                    if !a.iter().any(|x| &x.0 == path) || !b.iter().any(|x| &x.0 == path) {
                        let hs: Vec<String> = st
                            .heads(path)
                            .unwrap()
                            .iter()
                            .map(|h| format!("{}", h.dot))
                            .collect();
                        detail.push_str(&format!(" {path}:{hs:?}"));
                    }
                }
            }
            fail(format!(
                "node {i} did not converge:\n n0: {a:?}\n n{i}: {b:?}{detail}"
            ));
        }
        if conflicts(s) != c0 {
            let mut detail = String::new();
            for (p, _) in conflicts(s).iter().chain(&c0) {
                for j in 0..n {
                    let hs: Vec<String> = sim
                        .store(j)
                        .heads(p)
                        .unwrap()
                        .iter()
                        .map(|h| {
                            format!(
                                "{}@{} ctx={:?} live={}",
                                h.dot,
                                h.hlc,
                                h.ctx,
                                h.node().is_some()
                            )
                        })
                        .collect();
                    detail.push_str(&format!("\n  n{j} {p}: {hs:?}"));
                }
            }
            fail(format!(
                "node {i} records other conflicts: {:?} vs {c0:?}{detail}",
                conflicts(s)
            ));
        }
        let waiting = sim.nodes[i].replica.as_ref().unwrap().pending_transfers();
        if waiting > 0 {
            fail(format!(
                "node {i} still has {waiting} messages waiting for chunks"
            ));
        }
        let problems = s.check_integrity().unwrap();
        if !problems.is_empty() {
            fail(format!("node {i} integrity: {problems:#?}"));
        }
    }

    // No acknowledged write is lost: every version that no other made version descends
    // from is still a head (shown, a conflict, or an identical loser) everywhere — or a
    // tombstone that was collected after every node had it.
    for m in &sim.made {
        let superseded = sim
            .made
            .iter()
            .any(|o| o.path == m.path && o.dot != m.dot && o.ctx.covers(&m.dot));
        if superseded {
            continue;
        }
        for i in 0..n {
            let held = sim
                .store(i)
                .heads(&m.path)
                .unwrap()
                .iter()
                .any(|h| h.dot == m.dot);
            if !held && m.live {
                fail(format!("node {i} lost {m:?}"));
            }
        }
    }

    // Collection: tombstones that every node acknowledged and that are alone are gone,
    // and the log holds no more records than there are current versions.
    let mut stats = sim.stats.clone();
    for i in 0..n {
        let s = sim.store(i);
        s.collect_tombstones(
            &sim.names
                .iter()
                .filter(|x| **x != sim.names[i])
                .cloned()
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let st = s.stats().unwrap();
        for (path, _) in s.all_entries().unwrap() {
            let _ = path;
        }
        let lone_tombstones = {
            let mut k = 0;
            let mut seen = BTreeSet::new();
            for m in &sim.made {
                if seen.insert(m.path.clone()) {
                    let hs = s.heads(&m.path).unwrap();
                    if hs.len() == 1 && matches!(hs[0].state, State::Deleted) {
                        k += 1;
                    }
                }
            }
            k
        };
        if lone_tombstones > 0 {
            fail(format!(
                "node {i} keeps {lone_tombstones} tombstones everyone has"
            ));
        }
        if st.log_records > st.heads {
            fail(format!(
                "node {i}: {} log records for {} current versions",
                st.log_records, st.heads
            ));
        }
        *stats.entry("tombstones kept (with conflicts)").or_insert(0) += st.tombstones;
        *stats.entry("conflicts").or_insert(0) += st.conflicts;
    }
    stats.insert("nodes", n as u64);
    stats
}

#[test]
fn clusters_converge_without_losing_acknowledged_writes() {
    let seeds: Vec<u64> = match std::env::var("DEPFS_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("DEPFS_SIM_SEED must be a number")],
        Err(_) => {
            let n: u64 = std::env::var("DEPFS_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            (1..=n).collect()
        }
    };
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in seeds {
        for (k, v) in run(seed) {
            *totals.entry(k).or_insert(0) += v;
        }
    }
    eprintln!("simulation totals: {totals:?}");
    assert!(totals.get("local changes").copied().unwrap_or(0) > 0);
}
