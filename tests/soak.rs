//! The soak: three nodes, a seeded random multi-writer workload, `kill -9`s
//! and partitions at random times, then a convergence and no-loss check.
//!
//! CI runs it for 20 seconds. A real soak (`DEPFS_SOAK_KILLS=0` leaves the kills out,
//! `DEPFS_SOAK_NODES` changes the cluster size, `DEPFS_SOAK_KEEP=DIR` keeps the daemons'
//! logs of a failed run):
//!
//! ```text
//! DEPFS_SOAK_SECS=600 DEPFS_SOAK_SEED=7 cargo test -p depfs --test soak -- --nocapture
//! ```
//!
//! It prints one summary line (operations, faults injected, data lost) and fails — with
//! its seed — if the nodes do not converge, a store does not verify, or any
//! acknowledged write is lost. The figures of the last long run are in
//! docs/reliability.md.

#![cfg(test)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{depfs, wait_until, Cluster, Node};
use rand::{Rng, SeedableRng};

/// What a path may hold, from what its single writer did: after an acknowledged
/// operation exactly its result; an operation whose outcome is unknown (the daemon died
/// during it) adds its result to the possibilities. A rename carries every possibility
/// of its source.
#[derive(Clone)]
struct Expect {
    possible: Vec<Option<Vec<u8>>>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            possible: vec![None],
        }
    }
}

impl Expect {
    fn allows(&self, got: &Option<Vec<u8>>) -> bool {
        self.possible.contains(got)
    }

    fn may_exist(&self) -> bool {
        self.possible.iter().any(Option::is_some)
    }
}

/// The paths an operation changed, and what each may hold after it.
type Effects = Vec<(String, Vec<Option<Vec<u8>>>)>;

#[derive(Default)]
struct Ledger {
    /// Files only one node writes (`n{i}/...`): the no-loss check.
    own: BTreeMap<String, Expect>,
    /// Files every node writes (`shared/...`): whatever was written by someone.
    shared: BTreeMap<String, BTreeSet<Vec<u8>>>,
    ops: u64,
    acked: u64,
}

fn snapshot(node: &Node) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &path, out);
            } else {
                // A file that is listed but cannot be read shows as its error.
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| format!("<read error: {e}>").into_bytes());
                out.insert(rel, bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&node.mountpoint, &node.mountpoint, &mut out);
    out
}

fn content(rng: &mut impl Rng, tag: &str) -> Vec<u8> {
    // Mostly small files, some above the inline limit (chunked).
    let len = if rng.gen_bool(0.1) {
        rng.gen_range(20_000..120_000)
    } else {
        rng.gen_range(50..4000)
    };
    let mut data = format!("{tag}\n").into_bytes();
    data.resize(len, b'x' + (len % 7) as u8);
    data
}

/// `std::fs::write`, but acknowledged only once `close` succeeded: depfs publishes on
/// close, and `std::fs::File`'s drop ignores the result of `close`, so a daemon killed
/// between the last `write` and the publish would otherwise look like an acknowledged
/// write.
fn write_acknowledged(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(body)?;
    common::close(file)
}

/// Paths under a mount reached through a descriptor of its root.
struct MountRoot(String);

impl MountRoot {
    fn path(&self, rel: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("{}/{rel}", self.0))
    }
}

/// Opens the root of the FUSE mount at `mountpoint`, or `None` if no FUSE filesystem is
/// mounted there right now.
fn open_mount_root(mountpoint: &Path) -> Option<std::fs::File> {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    let f = std::fs::File::open(mountpoint).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and out-pointer.
    let rc = unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) };
    (rc == 0 && st.f_type as i64 == FUSE_SUPER_MAGIC).then_some(f)
}

/// One node's writer: random writes, overwrites, deletes and renames of its own files
/// and writes of shared files, recorded in the ledger as acknowledged or uncertain.
fn writer(
    i: usize,
    seed: u64,
    c: Arc<Cluster>,
    up: Arc<Vec<AtomicBool>>,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ ((i as u64 + 1) * 0x9e37));
    let mut n = 0u64;
    let mut root: Option<std::fs::File> = None;
    while !stop.load(Ordering::SeqCst) {
        if root.is_none() && up[i].load(Ordering::SeqCst) {
            root = open_mount_root(&c.nodes[i].mountpoint);
        }
        let Some(root_fd) = root.as_ref().map(|f| f.as_raw_fd()) else {
            std::thread::sleep(Duration::from_millis(20)); // pacing while the node is down
            continue;
        };
        // Paths through the descriptor of the mount's root: after a kill (and the lazy
        // unmount) they fail instead of landing in the bare directory underneath.
        let node = MountRoot(format!("/proc/self/fd/{root_fd}"));
        n += 1;
        let dir = format!("n{i}/d{}", rng.gen_range(0..5));
        let _ = std::fs::create_dir_all(node.path(&dir));
        let roll = rng.gen_range(0..100);
        let mut l = ledger.lock().unwrap();
        l.ops += 1;
        if roll < 10 {
            let name = format!("shared/s{}.xml", rng.gen_range(0..8));
            let body = content(&mut rng, &format!("{name} by gw{} op {n}", i + 1));
            l.shared
                .entry(name.clone())
                .or_default()
                .insert(body.clone());
            drop(l);
            let _ = std::fs::create_dir_all(node.path("shared"));
            if write_acknowledged(&node.path(&name), &body).is_ok() {
                ledger.lock().unwrap().acked += 1;
            } else {
                root = None;
            }
            continue;
        }
        let name = format!("{dir}/f{}.xml", rng.gen_range(0..30));
        let exists = l.own.get(&name).is_some_and(Expect::may_exist);
        drop(l);
        // (path, state it gets) for each effect of the operation.
        let (effects, result): (Effects, std::io::Result<()>) = if roll < 75 || !exists {
            let body = content(&mut rng, &format!("{name} op {n}"));
            let r = write_acknowledged(&node.path(&name), &body);
            (vec![(name, vec![Some(body)])], r)
        } else if roll < 90 {
            let r = std::fs::remove_file(node.path(&name));
            (vec![(name, vec![None])], r)
        } else {
            let to = format!(
                "n{i}/d{}/f{}.xml",
                rng.gen_range(0..5),
                rng.gen_range(0..30)
            );
            if to == name {
                continue;
            }
            let before: Vec<Option<Vec<u8>>> = ledger.lock().unwrap().own[&name]
                .possible
                .iter()
                .filter(|s| s.is_some())
                .cloned()
                .collect();
            let _ = std::fs::create_dir_all(node.path(&to).parent().unwrap());
            let r = std::fs::rename(node.path(&name), node.path(&to));
            (vec![(name, vec![None]), (to, before)], r)
        };
        let mut l = ledger.lock().unwrap();
        let ok = result.is_ok();
        if !ok {
            root = None;
        }
        if ok {
            l.acked += 1;
        }
        for (path, states) in effects {
            let e = l.own.entry(path).or_default();
            if ok {
                e.possible = states;
            } else {
                for s in states {
                    if !e.possible.contains(&s) {
                        e.possible.push(s);
                    }
                }
            }
        }
    }
}

#[test]
fn soak_with_kills_and_partitions_loses_nothing() {
    let secs: u64 = std::env::var("DEPFS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("DEPFS_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let nodes: usize = std::env::var("DEPFS_SOAK_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let kills_enabled = std::env::var("DEPFS_SOAK_KILLS").map_or(true, |v| v != "0");
    let c = Arc::new(Cluster::partitionable(nodes, ""));
    c.mount_all();
    let up: Arc<Vec<AtomicBool>> = Arc::new((0..nodes).map(|_| AtomicBool::new(true)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let writers: Vec<_> = (0..nodes)
        .map(|i| {
            let (c, up, stop, ledger) = (c.clone(), up.clone(), stop.clone(), ledger.clone());
            std::thread::spawn(move || writer(i, seed, c, up, stop, ledger))
        })
        .collect();

    let kills = AtomicU64::new(0);
    let mut partitions = 0u64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        // A fault every 2-5 s (the pause lets the workload run between faults).
        std::thread::sleep(Duration::from_millis(rng.gen_range(2000..5000)));
        let victim = rng.gen_range(0..nodes);
        if kills_enabled && rng.gen_bool(0.5) {
            up[victim].store(false, Ordering::SeqCst);
            c.nodes[victim].kill9();
            c.nodes[victim].mount();
            up[victim].store(true, Ordering::SeqCst);
            kills.fetch_add(1, Ordering::SeqCst);
        } else {
            c.isolate(victim, true);
            std::thread::sleep(Duration::from_millis(rng.gen_range(500..3000)));
            c.isolate(victim, false);
            partitions += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    for i in 0..nodes {
        c.isolate(i, false);
    }

    let converged = wait_until(Duration::from_secs(120), || {
        let first = snapshot(&c.nodes[0]);
        c.nodes[1..].iter().all(|n| snapshot(n) == first)
    });
    if !converged {
        for n in &c.nodes {
            let out = depfs(&["verify", "--config", n.config.to_str().unwrap()]);
            eprintln!(
                "{} verify: {}{}",
                n.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Ok(keep) = std::env::var("DEPFS_SOAK_KEEP") {
            for n in &c.nodes {
                let _ = std::fs::copy(
                    n.data_dir.join("depfs.log"),
                    format!("{keep}/{}.log", n.name),
                );
            }
        }
        // Say what differs and what each node thinks, for the post-mortem.
        let first = snapshot(&c.nodes[0]);
        for n in &c.nodes[1..] {
            let other = snapshot(n);
            let differing: Vec<&String> = first
                .keys()
                .chain(other.keys())
                .filter(|k| first.get(*k) != other.get(*k))
                .take(10)
                .collect();
            eprintln!(
                "{} differs from {} at {differing:?}",
                n.name, c.nodes[0].name
            );
            let head = |b: Option<&Vec<u8>>| {
                b.map(|b| String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned())
            };
            for k in differing.iter().take(3) {
                let expected: Vec<Option<String>> = ledger
                    .lock()
                    .unwrap()
                    .own
                    .get(*k)
                    .map(|e| e.possible.iter().map(|s| head(s.as_ref())).collect())
                    .unwrap_or_default();
                eprintln!(
                    "  {k}: {} holds {:?}, {} holds {:?}, the writer expects {expected:?}",
                    c.nodes[0].name,
                    head(first.get(*k)),
                    n.name,
                    head(other.get(*k))
                );
            }
        }
        let suspects: Vec<String> = {
            let first = snapshot(&c.nodes[0]);
            let last = snapshot(&c.nodes[c.nodes.len() - 1]);
            first
                .keys()
                .chain(last.keys())
                .filter(|k| first.get(*k) != last.get(*k))
                .take(3)
                .map(|k| format!("/{k}"))
                .collect()
        };
        for n in &c.nodes {
            let log = depfs(&[
                "log",
                "--config",
                n.config.to_str().unwrap(),
                "-n",
                "1000000",
            ]);
            for line in String::from_utf8_lossy(&log.stdout).lines() {
                if suspects.iter().any(|s| line.ends_with(s.as_str())) {
                    eprintln!("{} change log: {line}", n.name);
                }
            }
        }
        for n in &c.nodes {
            eprintln!("{}: {}", n.name, n.status());
            let log = std::fs::read_to_string(n.data_dir.join("depfs.log")).unwrap_or_default();
            for line in log
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.contains("store opened"))
            {
                eprintln!("{} log: {line}", n.name);
            }
        }
        panic!("no convergence (seed {seed}, DEPFS_SOAK_SEED={seed})");
    }
    let tree = snapshot(&c.nodes[0]);
    let ledger = ledger.lock().unwrap();
    let mut lost = Vec::new();
    for (path, expect) in &ledger.own {
        let got = tree.get(path).cloned();
        if !expect.allows(&got) {
            let show = |s: &Option<Vec<u8>>| {
                s.as_ref()
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned())
            };
            eprintln!(
                "{path}: holds {:?}, possible {:?}",
                show(&got),
                expect.possible.iter().map(show).collect::<Vec<_>>()
            );
            lost.push(path.clone());
        }
    }
    for (path, written) in &ledger.shared {
        if let Some(got) = tree.get(path) {
            assert!(
                written.contains(got),
                "{path}: content nobody wrote (seed {seed})"
            );
        }
    }
    for n in &c.nodes {
        let out = depfs(&["verify", "--config", n.config.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {} (seed {seed})",
            n.name,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let conflicts: Vec<u64> = c
        .nodes
        .iter()
        .map(|n| n.status()["conflicts"].as_u64().unwrap())
        .collect();
    println!(
        "soak: seed {seed}, {secs} s, {nodes} nodes: {} operations ({} acknowledged), {} files at the end, \
         faults: {} kill -9, {partitions} partitions; conflicts {:?}; data lost: {}",
        ledger.ops,
        ledger.acked,
        tree.len(),
        kills.load(Ordering::SeqCst),
        conflicts,
        lost.len()
    );
    assert!(
        conflicts.iter().all(|&n| n == conflicts[0]),
        "conflicts differ"
    );
    assert!(lost.is_empty(), "lost or stale: {lost:?} (seed {seed})");
}
