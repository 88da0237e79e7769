//! Differential test: the same seeded random sequence of filesystem calls runs on a depfs
//! mount and on a plain directory of the native filesystem; every result (data, errno,
//! attributes) and the final trees must be identical.
//!
//! Reproduce a failure with the seed it prints:
//! `DEPFS_SEED=<seed> cargo test -p depfs --test differential`.
//! `DEPFS_DIFF_OPS` sets the number of operations per seed.

#![cfg(test)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use common::Node;

const COMPONENTS: [&str; 6] = ["a", "b", "c", "x", "y", "z"];
const SLOTS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Create {
        path: String,
        mode: u32,
    },
    WriteAt {
        path: String,
        offset: u64,
        len: usize,
        byte: u8,
    },
    Truncate {
        path: String,
        len: u64,
    },
    Read {
        path: String,
    },
    Stat {
        path: String,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rmdir {
        path: String,
    },
    Unlink {
        path: String,
    },
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    Symlink {
        target: String,
        path: String,
    },
    Readlink {
        path: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Utimens {
        path: String,
        secs: i64,
        nanos: u32,
    },
    Fsync {
        path: String,
    },
    List {
        path: String,
    },
    OpenKeep {
        slot: usize,
        path: String,
        create: bool,
    },
    /// `open(O_RDONLY | O_CREAT [| O_EXCL])`, kept open: how flock(1) and Java's
    /// `FileChannel.open(READ, CREATE)` make lock and marker files.
    OpenReadOnly {
        slot: usize,
        path: String,
        exclusive: bool,
    },
    FdWrite {
        slot: usize,
        offset: u64,
        len: usize,
        byte: u8,
    },
    FdRead {
        slot: usize,
        offset: u64,
        len: usize,
    },
    FdTruncate {
        slot: usize,
        len: u64,
    },
    FdFsync {
        slot: usize,
    },
    FdStat {
        slot: usize,
    },
    Close {
        slot: usize,
    },
}

/// What a call returned, in a form comparable across filesystems.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Err(i32),
    Data(Vec<u8>),
    Stat(Summary),
    Names(Vec<Vec<u8>>),
}

/// The attributes compared. Directory sizes and link counts are filesystem-specific
/// (ext4 reports 4096 and 2+subdirs), and mtimes set by the clock differ between the
/// two runs, so mtimes are compared only where the test set them (`utimens`).
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    kind: u32,
    size: Option<u64>,
    perm: u32,
    nlink: Option<u64>,
    mtime: Option<(i64, i64)>,
}

/// An outcome for a failure message: data as its length and its distinct runs.
fn brief(outcome: &Outcome) -> String {
    let Outcome::Data(bytes) = outcome else {
        return format!("{outcome:?}");
    };
    let mut runs: Vec<(usize, u8)> = Vec::new();
    for &b in bytes {
        match runs.last_mut() {
            Some((n, last)) if *last == b => *n += 1,
            _ => runs.push((1, b)),
        }
    }
    let shown: Vec<String> = runs
        .iter()
        .take(8)
        .map(|(n, b)| format!("{n}×{b}"))
        .collect();
    format!(
        "Data({} bytes: {}{})",
        bytes.len(),
        shown.join(" "),
        if runs.len() > 8 { " …" } else { "" }
    )
}

/// Entries that exist now on the native side: (path, is_dir).
fn existing(root: &Path) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let full = if dir.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&dir)
        };
        let Ok(entries) = std::fs::read_dir(&full) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                stack.push(rel.clone());
            }
            out.push((rel, is_dir));
        }
    }
    out.sort();
    out
}

/// A path: mostly one that exists or a new name in an existing directory, so that most
/// operations do something; sometimes anything, to reach the error paths.
fn random_path(rng: &mut ChaCha8Rng, live: &[(String, bool)]) -> String {
    let component = |rng: &mut ChaCha8Rng| COMPONENTS[rng.gen_range(0..COMPONENTS.len())];
    match rng.gen_range(0..100) {
        0..=49 if !live.is_empty() => live[rng.gen_range(0..live.len())].0.clone(),
        0..=84 => {
            let dirs: Vec<&String> = live.iter().filter(|(_, d)| *d).map(|(p, _)| p).collect();
            if dirs.is_empty() || rng.gen_bool(0.3) {
                component(rng).to_string()
            } else {
                format!("{}/{}", dirs[rng.gen_range(0..dirs.len())], component(rng))
            }
        }
        _ => {
            let depth = rng.gen_range(1..=3);
            (0..depth)
                .map(|_| component(rng))
                .collect::<Vec<_>>()
                .join("/")
        }
    }
}

fn random_op(rng: &mut ChaCha8Rng, live: &[(String, bool)]) -> Op {
    let path = random_path(rng, live);
    let slot = rng.gen_range(0..SLOTS);
    let mode = [0o644, 0o600, 0o755, 0o640][rng.gen_range(0..4)];
    let len = *[0usize, 1, 100, 4096, 5000, 20_000, 70_000]
        .get(rng.gen_range(0..7))
        .unwrap_or(&1);
    let offset = *[0u64, 1, 4095, 10_000, 65_536]
        .get(rng.gen_range(0..5))
        .unwrap_or(&0);
    let byte = rng.gen();
    match rng.gen_range(0..100) {
        0..=11 => Op::Create { path, mode },
        12..=21 => Op::WriteAt {
            path,
            offset,
            len,
            byte,
        },
        22..=24 => Op::Truncate {
            path,
            len: offset + len as u64 / 2,
        },
        25..=29 => Op::Read { path },
        30..=34 => Op::Stat { path },
        35..=38 => Op::Mkdir { path, mode },
        39..=41 => Op::Rmdir { path },
        42..=51 => Op::Unlink { path },
        52..=59 => Op::Rename {
            from: path,
            to: random_path(rng, live),
            flags: [0, 0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][rng.gen_range(0..5)],
        },
        60..=62 => Op::Symlink {
            target: ["a", "b", "x", "a/b", "missing"][rng.gen_range(0..5)].to_string(),
            path,
        },
        63..=64 => Op::Readlink { path },
        65..=67 => Op::Chmod { path, mode },
        68..=70 => Op::Utimens {
            path,
            secs: rng.gen_range(1_000_000_000..1_800_000_000),
            nanos: rng.gen_range(0..1_000_000_000),
        },
        71..=72 => Op::Fsync { path },
        73..=76 => Op::List {
            path: if rng.gen_bool(0.3) {
                String::new()
            } else {
                path
            },
        },
        77..=83 => Op::OpenKeep {
            slot,
            path,
            create: rng.gen_bool(0.7),
        },
        84..=85 => Op::OpenReadOnly {
            slot,
            path,
            exclusive: rng.gen_bool(0.5),
        },
        86..=88 => Op::FdWrite {
            slot,
            offset,
            len,
            byte,
        },
        89..=90 => Op::FdRead {
            slot,
            offset,
            len: len.max(1),
        },
        91..=92 => Op::FdTruncate { slot, len: offset },
        93 => Op::FdFsync { slot },
        94..=96 => Op::FdStat { slot },
        _ => Op::Close { slot },
    }
}

fn errno(e: std::io::Error) -> Outcome {
    Outcome::Err(e.raw_os_error().unwrap_or(-1))
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_errno() -> Outcome {
    errno(std::io::Error::last_os_error())
}

/// One side of the comparison: a root directory and its open descriptors.
struct Side {
    root: PathBuf,
    fds: Vec<Option<File>>,
}

impl Side {
    fn new(root: PathBuf) -> Side {
        Side {
            root,
            fds: (0..SLOTS).map(|_| None).collect(),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    fn summary(md: &std::fs::Metadata, exact_mtime: bool) -> Summary {
        let kind = md.mode() & libc::S_IFMT;
        Summary {
            kind,
            size: (kind != libc::S_IFDIR).then(|| md.size()),
            perm: md.mode() & 0o7777,
            nlink: (kind == libc::S_IFREG).then(|| md.nlink()),
            mtime: exact_mtime.then(|| (md.mtime(), md.mtime_nsec())),
        }
    }

    /// Opens `path` with `options` into `slot` (closing what the slot held).
    fn keep_open(&mut self, slot: usize, path: &str, options: &OpenOptions) -> Outcome {
        self.fds[slot] = None;
        match options.open(self.p(path)) {
            Ok(f) => {
                self.fds[slot] = Some(f);
                Outcome::Ok
            }
            Err(e) => errno(e),
        }
    }

    fn apply(&mut self, op: &Op, exact_mtime: bool) -> Outcome {
        match op {
            Op::Create { path, mode } => match OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(*mode)
                .open(self.p(path))
            {
                Ok(_) => Outcome::Ok,
                Err(e) => errno(e),
            },
            Op::WriteAt {
                path,
                offset,
                len,
                byte,
            } => match OpenOptions::new().write(true).open(self.p(path)) {
                Ok(f) => match f.write_all_at(&vec![*byte; *len], *offset) {
                    Ok(()) => Outcome::Ok,
                    Err(e) => errno(e),
                },
                Err(e) => errno(e),
            },
            Op::Truncate { path, len } => {
                let c = cstr(&self.p(path));
                if unsafe { libc::truncate(c.as_ptr(), *len as i64) } == 0 {
                    Outcome::Ok
                } else {
                    last_errno()
                }
            }
            Op::Read { path } => match File::open(self.p(path)) {
                Ok(mut f) => {
                    let mut buf = Vec::new();
                    match f.read_to_end(&mut buf) {
                        Ok(_) => Outcome::Data(buf),
                        Err(e) => errno(e),
                    }
                }
                Err(e) => errno(e),
            },
            Op::Stat { path } => match std::fs::symlink_metadata(self.p(path)) {
                Ok(md) => Outcome::Stat(Self::summary(&md, exact_mtime)),
                Err(e) => errno(e),
            },
            Op::Mkdir { path, mode } => {
                let c = cstr(&self.p(path));
                if unsafe { libc::mkdir(c.as_ptr(), *mode) } == 0 {
                    Outcome::Ok
                } else {
                    last_errno()
                }
            }
            Op::Rmdir { path } => match std::fs::remove_dir(self.p(path)) {
                Ok(()) => Outcome::Ok,
                Err(e) => errno(e),
            },
            Op::Unlink { path } => match std::fs::remove_file(self.p(path)) {
                Ok(()) => Outcome::Ok,
                Err(e) => errno(e),
            },
            Op::Rename { from, to, flags } => {
                let (a, b) = (cstr(&self.p(from)), cstr(&self.p(to)));
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        *flags,
                    )
                };
                if r == 0 {
                    Outcome::Ok
                } else {
                    last_errno()
                }
            }
            Op::Symlink { target, path } => {
                match std::os::unix::fs::symlink(target, self.p(path)) {
                    Ok(()) => Outcome::Ok,
                    Err(e) => errno(e),
                }
            }
            Op::Readlink { path } => match std::fs::read_link(self.p(path)) {
                Ok(t) => Outcome::Data(t.as_os_str().as_bytes().to_vec()),
                Err(e) => errno(e),
            },
            Op::Chmod { path, mode } => {
                match std::fs::set_permissions(self.p(path), std::fs::Permissions::from_mode(*mode))
                {
                    Ok(()) => Outcome::Ok,
                    Err(e) => errno(e),
                }
            }
            Op::Utimens { path, secs, nanos } => {
                let c = cstr(&self.p(path));
                let times = [
                    libc::timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_OMIT,
                    },
                    libc::timespec {
                        tv_sec: *secs,
                        tv_nsec: *nanos as i64,
                    },
                ];
                if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } == 0 {
                    Outcome::Ok
                } else {
                    last_errno()
                }
            }
            Op::Fsync { path } => match File::open(self.p(path)).and_then(|f| f.sync_all()) {
                Ok(()) => Outcome::Ok,
                Err(e) => errno(e),
            },
            Op::List { path } => match std::fs::read_dir(self.p(path)) {
                Ok(entries) => {
                    let mut names: Vec<Vec<u8>> = entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().as_bytes().to_vec())
                        .collect();
                    names.sort();
                    Outcome::Names(names)
                }
                Err(e) => errno(e),
            },
            Op::OpenKeep { slot, path, create } => self.keep_open(
                *slot,
                path,
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(*create)
                    .mode(0o644),
            ),
            Op::OpenReadOnly {
                slot,
                path,
                exclusive,
            } => self.keep_open(
                *slot,
                path,
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_CREAT | if *exclusive { libc::O_EXCL } else { 0 })
                    .mode(0o644),
            ),
            Op::FdWrite {
                slot,
                offset,
                len,
                byte,
            } => match &self.fds[*slot] {
                Some(f) => match f.write_all_at(&vec![*byte; *len], *offset) {
                    Ok(()) => Outcome::Ok,
                    Err(e) => errno(e),
                },
                None => Outcome::Err(libc::EBADF),
            },
            Op::FdRead { slot, offset, len } => match &self.fds[*slot] {
                Some(f) => {
                    let mut buf = vec![0u8; *len];
                    let mut got = 0;
                    loop {
                        match f.read_at(&mut buf[got..], offset + got as u64) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) => return errno(e),
                        }
                        if got == buf.len() {
                            break;
                        }
                    }
                    buf.truncate(got);
                    Outcome::Data(buf)
                }
                None => Outcome::Err(libc::EBADF),
            },
            Op::FdTruncate { slot, len } => match &self.fds[*slot] {
                Some(f) => match f.set_len(*len) {
                    Ok(()) => Outcome::Ok,
                    Err(e) => errno(e),
                },
                None => Outcome::Err(libc::EBADF),
            },
            Op::FdFsync { slot } => match &self.fds[*slot] {
                Some(f) => match f.sync_all() {
                    Ok(()) => Outcome::Ok,
                    Err(e) => errno(e),
                },
                None => Outcome::Err(libc::EBADF),
            },
            Op::FdStat { slot } => match &self.fds[*slot] {
                Some(f) => match f.metadata() {
                    Ok(md) => Outcome::Stat(Self::summary(&md, false)),
                    Err(e) => errno(e),
                },
                None => Outcome::Err(libc::EBADF),
            },
            Op::Close { slot } => {
                self.fds[*slot] = None;
                Outcome::Ok
            }
        }
    }
}

/// Which paths have an mtime set by the test (and not changed since): only those are
/// compared, since clock-set mtimes differ between the two runs.
#[derive(Default)]
struct MtimeModel {
    exact: std::collections::HashSet<String>,
}

impl MtimeModel {
    fn under<'a>(&'a self, root: &'a str) -> impl Iterator<Item = String> + 'a {
        self.exact
            .iter()
            .filter(move |p| *p == root || p.starts_with(&format!("{root}/")))
            .cloned()
    }

    fn observe(&mut self, op: &Op, outcome: &Outcome, native: &Path) {
        if *outcome != Outcome::Ok {
            return;
        }
        match op {
            Op::Utimens { path, .. } => {
                if std::fs::symlink_metadata(native.join(path)).is_ok_and(|m| m.is_file()) {
                    self.exact.insert(path.clone());
                } else {
                    // Through a symlink or on a directory: stop tracking both ends.
                    self.exact.clear();
                }
            }
            Op::Create { path, .. } | Op::WriteAt { path, .. } | Op::Truncate { path, .. } => {
                // The path may be a symlink to a tracked file.
                let _ = path;
                self.exact.clear();
            }
            Op::Unlink { path } | Op::Rmdir { path } => {
                let gone: Vec<String> = self.under(path).collect();
                for p in gone {
                    self.exact.remove(&p);
                }
            }
            Op::Rename { from, to, flags } => {
                let moved: Vec<String> = self.under(from).collect();
                let replaced: Vec<String> = self.under(to).collect();
                for p in moved.iter().chain(&replaced) {
                    self.exact.remove(p);
                }
                for p in moved {
                    self.exact.insert(format!("{to}{}", &p[from.len()..]));
                }
                if *flags == libc::RENAME_EXCHANGE {
                    for p in replaced {
                        self.exact.insert(format!("{from}{}", &p[to.len()..]));
                    }
                }
            }
            Op::FdWrite { .. }
            | Op::FdTruncate { .. }
            | Op::OpenKeep { .. }
            | Op::OpenReadOnly { .. } => self.exact.clear(),
            _ => {}
        }
    }
}

/// The whole tree under `root`: path → (summary, content or link target).
fn snapshot(root: &Path, model: &MtimeModel) -> BTreeMap<String, (Summary, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let full = if dir.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&dir)
        };
        for entry in std::fs::read_dir(&full).expect("read_dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let md = std::fs::symlink_metadata(entry.path()).expect("lstat");
            let content = if md.is_file() {
                std::fs::read(entry.path()).expect("read")
            } else if md.file_type().is_symlink() {
                std::fs::read_link(entry.path())
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            } else {
                stack.push(rel.clone());
                Vec::new()
            };
            let exact = model.exact.contains(&rel);
            out.insert(rel, (Side::summary(&md, exact), content));
        }
    }
    out
}

/// Runs one seed on a node configured with `config` (TOML after `node` and `data_dir`);
/// `check` looks at the node before it is unmounted.
fn run_seed_with(seed: u64, ops: usize, config: &str, check: impl FnOnce(&Node)) {
    let node = Node::with_config("diff", config);
    node.mount();
    run_seed_on(seed, ops, &node, None, check);
}

/// Runs one seed on the mounted `node`; with `mirror` (another mounted node of its
/// cluster), the final tree must also reach the mirror, identical.
fn run_seed_on(
    seed: u64,
    ops: usize,
    node: &Node,
    mirror: Option<&Node>,
    check: impl FnOnce(&Node),
) {
    let native_dir = tempfile::Builder::new()
        .prefix("depfs-native-")
        .tempdir()
        .unwrap();
    let mut native = Side::new(native_dir.path().to_path_buf());
    let mut depfs = Side::new(node.mountpoint.clone());
    let mut model = MtimeModel::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut history: Vec<String> = Vec::new();
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();

    for i in 0..ops {
        let live = existing(&native.root);
        let op = random_op(&mut rng, &live);
        let exact = match &op {
            Op::Stat { path } => model.exact.contains(path),
            _ => false,
        };
        let expected = native.apply(&op, exact);
        let actual = depfs.apply(&op, exact);
        history.push(format!("{i}: {op:?} -> {}", brief(&expected)));
        let failed = matches!(expected, Outcome::Err(_));
        *counts.entry(if failed { "err" } else { "ok" }).or_default() += 1;
        if failed && std::env::var("DEPFS_DIFF_DEBUG").is_ok() {
            let kind = format!("{op:?}");
            let kind = kind.split([' ', '{']).next().unwrap_or("").to_string();
            *errors.entry(format!("{kind} {expected:?}")).or_default() += 1;
        }
        if expected != actual {
            let tail = history[history.len().saturating_sub(25)..].join("\n");
            let full = std::env::temp_dir().join(format!("depfs-differential-{seed}.txt"));
            let _ = std::fs::write(&full, history.join("\n"));
            eprintln!("every operation of seed {seed}: {}", full.display());
            panic!(
                "seed {seed}: operation {i} differs\n  op: {op:?}\n  native: {}\n  depfs:  {}\n\
                 last operations:\n{tail}\nreproduce: DEPFS_SEED={seed} cargo test -p depfs --test differential",
                brief(&expected),
                brief(&actual)
            );
        }
        model.observe(&op, &expected, &native.root);
    }
    for slot in 0..SLOTS {
        native.fds[slot] = None;
        depfs.fds[slot] = None;
    }
    let want = snapshot(&native.root, &model);
    let got = snapshot(&depfs.root, &model);
    assert_eq!(
        got, want,
        "seed {seed}: final trees differ (reproduce: DEPFS_SEED={seed} cargo test -p depfs --test differential)"
    );
    if !errors.is_empty() {
        eprintln!("seed {seed}: errors by operation: {errors:#?}");
    }
    if let Some(mirror) = mirror {
        let mirrored = || snapshot(&mirror.mountpoint, &model) == want;
        if !common::wait_until(std::time::Duration::from_secs(60), mirrored) {
            assert_eq!(
                snapshot(&mirror.mountpoint, &model),
                want,
                "seed {seed}: the tree did not reach {} (reproduce: DEPFS_SEED={seed} cargo test -p depfs --test differential)",
                mirror.name
            );
        }
    }
    check(node);
    assert!(
        counts.get("ok").copied().unwrap_or(0) > ops / 3,
        "seed {seed}: too few operations succeeded to mean anything: {counts:?}"
    );

    // The same tree comes back after a remount.
    node.unmount();
    node.mount();
    let again = snapshot(&depfs.root, &model);
    assert_eq!(
        again, want,
        "seed {seed}: tree changed across unmount/mount"
    );
    eprintln!(
        "seed {seed}: {ops} operations identical ({counts:?}), {} entries",
        want.len()
    );
}

/// Operations per seed (`DEPFS_DIFF_OPS`, 2500) and the seeds: `DEPFS_SEED` alone if
/// set, else `default`.
fn ops_and_seeds(default: impl IntoIterator<Item = u64>) -> (usize, Vec<u64>) {
    let ops = std::env::var("DEPFS_DIFF_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2500);
    let seeds = match std::env::var("DEPFS_SEED") {
        Ok(s) => vec![s.parse().expect("DEPFS_SEED must be a number")],
        Err(_) => default.into_iter().collect(),
    };
    (ops, seeds)
}

fn run_seed(seed: u64, ops: usize) {
    run_seed_with(seed, ops, "peers = []\n", |_| ());
}

#[test]
fn depfs_behaves_like_the_native_filesystem() {
    let (ops, seeds) = ops_and_seeds(1..=4);
    for seed in seeds {
        run_seed(seed, ops);
    }
}

/// The same, with every file from 16 KiB staged on disk and given a local copy, so that
/// files are reopened through FUSE passthrough (reads and writes that never reach the
/// daemon) all along the sequence.
#[test]
fn depfs_behaves_like_the_native_filesystem_through_passthrough() {
    let (ops, seeds) = ops_and_seeds([101, 102]);
    for seed in seeds {
        let addr = format!("127.0.0.1:{}", common::free_port());
        let config = format!("peers = []\nlocal_copy_min_kib = 16\nmetrics = \"{addr}\"\n");
        run_seed_with(seed, ops, &config, |_| {
            let (_, body) = common::http_get(&addr, "/metrics");
            let opens = common::metric(&body, "depfs_fs_passthrough_opens_total ");
            assert!(
                opens.is_some_and(|n| n > 0.0),
                "seed {seed}: no open went through passthrough ({opens:?})"
            );
        });
    }
}

/// The same sequence on node 1 of a two-node cluster: node 2 ends with the same tree
/// (contents, kinds, modes, sizes and the mtimes the test set), read through its mount.
#[test]
fn what_a_sequence_leaves_on_one_node_is_identical_on_another() {
    let (ops, seeds) = ops_and_seeds([201]);
    for seed in seeds {
        let cluster = common::Cluster::new(2);
        cluster.mount_all();
        run_seed_on(
            seed,
            ops,
            &cluster.nodes[0],
            Some(&cluster.nodes[1]),
            |_| (),
        );
    }
}
