//! Replication workloads between a written directory and one or more receiving
//! directories, the same for every system (depfs nodes, lsyncd source/target, the two
//! GlusterFS mounts):
//!
//! - visibility: a 4 KiB file is created, rewritten (same size, new content) and deleted
//!   on the writer; each time, from the writer's `close` (or `unlink`) returning until
//!   every receiver reads the complete new content (or no longer has the file);
//! - burst: 1,000 files of 4 KiB in 10 directories; a poller thread records when each
//!   file is complete on every receiver, from the first close on;
//! - bandwidth: a 1 MiB change in the middle of a 50 MiB file: time until the receivers
//!   read the new megabyte and the bytes the system moved meanwhile.
//!
//! Over the visibility trials and each burst, the CPU time of the system's daemons and
//! how busy the machine was are recorded, and for depfs the bytes the writer and every
//! node sent to their peers.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::systems::{clock_ticks_per_s, cpu_ticks, depfs_bytes_sent, io_counters, machine_ticks};
use crate::util::{check_interrupted, has_content, poll_until, tag_seed, unique_content, Rng};

/// How a system's bytes on the wire are counted for the bandwidth scenario.
#[derive(Clone, Debug)]
pub enum ByteCounter {
    /// `bytes_sent` to all peers in `depfs status --json` of the writer.
    Depfs { depfs: PathBuf, config: PathBuf },
    /// `wchar` of a process (and its reaped children) from /proc/PID/io, less its
    /// `write_bytes` (data written to files) when `minus_file_writes`.
    ProcIo { pid: u32, minus_file_writes: bool },
}

impl ByteCounter {
    fn read(&self) -> Result<u64> {
        match self {
            ByteCounter::Depfs { depfs, config } => depfs_bytes_sent(depfs, config),
            ByteCounter::ProcIo {
                pid,
                minus_file_writes,
            } => {
                let (wchar, write_bytes) = io_counters(*pid)?;
                Ok(if *minus_file_writes {
                    wchar.saturating_sub(write_bytes)
                } else {
                    wchar
                })
            }
        }
    }
}

/// A replicated pair (or set) of directories.
pub struct Replica {
    pub label: String,
    pub writer: PathBuf,
    pub receivers: Vec<PathBuf>,
    pub bytes: Option<ByteCounter>,
    /// Poll interval of the visibility trials.
    pub interval: Duration,
    /// Give up on one change after this long.
    pub deadline: Duration,
    /// The system's daemons (the depfs nodes), whose CPU time is recorded; may be empty.
    pub daemons: Vec<u32>,
    /// For depfs: every node's configuration, writer first, to count the bytes each
    /// node sends during the visibility trials and the bursts.
    pub nodes: Option<DepfsNodes>,
}

/// The depfs nodes of a cluster, writer first.
#[derive(Clone, Debug)]
pub struct DepfsNodes {
    pub depfs: PathBuf,
    pub configs: Vec<PathBuf>,
}

impl DepfsNodes {
    /// `bytes_sent` to all peers of every node (from `depfs status --json`).
    fn read(&self) -> Result<Vec<u64>> {
        self.configs
            .iter()
            .map(|c| depfs_bytes_sent(&self.depfs, c))
            .collect()
    }
}

/// Bytes sent to their peers by the writer and by every node together (writer included)
/// over measured intervals (summed over several).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SentBytes {
    pub writer: u64,
    pub all_nodes: u64,
}

/// A start point for [`SentBytes`]; None when not depfs or a status cannot be read.
fn sent_start(r: &Replica) -> Option<Vec<u64>> {
    r.nodes.as_ref()?.read().ok()
}

fn sent_since(r: &Replica, start: Option<Vec<u64>>) -> Option<SentBytes> {
    let (start, now) = (start?, r.nodes.as_ref()?.read().ok()?);
    let d: Vec<u64> = now
        .iter()
        .zip(&start)
        .map(|(b, a)| b.saturating_sub(*a))
        .collect();
    Some(SentBytes {
        writer: *d.first()?,
        all_nodes: d.iter().sum(),
    })
}

/// CPU use over measured intervals (summed over several): the system's daemons and the
/// whole machine, to tell a slow system from a busy machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    pub wall_s: f64,
    /// CPU seconds (user + system, every thread) of the system's daemons; None if they
    /// are not known (not depfs) or could not be read.
    pub daemons_s: Option<f64>,
    /// Busy and all jiffies of every CPU of the machine (/proc/stat: every process,
    /// this program and anything else running included).
    pub machine_busy: u64,
    pub machine_total: u64,
}

impl CpuUse {
    /// The share of the machine's CPU time that was busy (0..1); NaN if not measured.
    pub fn machine_busy_fraction(&self) -> f64 {
        if self.machine_total == 0 {
            f64::NAN
        } else {
            self.machine_busy as f64 / self.machine_total as f64
        }
    }

    fn add(&mut self, o: &CpuUse) {
        self.wall_s += o.wall_s;
        self.daemons_s = match (self.daemons_s, o.daemons_s) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.machine_busy += o.machine_busy;
        self.machine_total += o.machine_total;
    }
}

/// A start point for [`CpuUse`].
struct CpuMeter {
    at: Instant,
    daemons: Option<u64>,
    machine: (u64, u64),
}

impl CpuMeter {
    /// None if /proc/stat cannot be read.
    fn start(daemons: &[u32]) -> Option<CpuMeter> {
        Some(CpuMeter {
            at: Instant::now(),
            daemons: daemon_ticks(daemons),
            machine: machine_ticks().ok()?,
        })
    }

    fn stop(&self, daemons: &[u32]) -> Option<CpuUse> {
        let wall_s = self.at.elapsed().as_secs_f64();
        let (busy, total) = machine_ticks().ok()?;
        let hz = clock_ticks_per_s();
        Some(CpuUse {
            wall_s,
            daemons_s: self
                .daemons
                .zip(daemon_ticks(daemons))
                .map(|(a, b)| b.saturating_sub(a) as f64 / hz),
            machine_busy: busy.saturating_sub(self.machine.0),
            machine_total: total.saturating_sub(self.machine.1),
        })
    }
}

/// The summed CPU ticks of `pids`; None if there are none or one cannot be read.
fn daemon_ticks(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_ticks(p).ok()).sum::<Option<u64>>()
}

/// Visibility latencies (ms) and timeouts, pooled over repetitions.
#[derive(Clone, Debug, Default)]
pub struct Visibility {
    pub create: Vec<f64>,
    pub modify: Vec<f64>,
    pub delete: Vec<f64>,
    /// Changes that hit the deadline: create, modify, delete.
    pub timeouts: [usize; 3],
    /// CPU use over the trials (each call of [`visibility`], warm-up excluded).
    pub cpu: CpuUse,
    /// Bytes sent during the trials (depfs only).
    pub sent: Option<SentBytes>,
}

/// One burst.
#[derive(Clone, Debug, Default)]
pub struct Burst {
    pub files: usize,
    /// From the first close to the last close, ms.
    pub write_ms: f64,
    /// From the last close until every file was complete on every receiver, ms (None:
    /// not within the deadline).
    pub after_last_close_ms: Option<f64>,
    /// For each file complete on every receiver: ms since the first close, sorted.
    pub curve_ms: Vec<f64>,
    /// CPU use from just before the first write until the poller stopped (every file
    /// complete everywhere, or the deadline).
    pub cpu: Option<CpuUse>,
    /// Bytes sent from just before the first write until 0.5 s after the poller stopped
    /// (depfs only).
    pub sent: Option<SentBytes>,
}

/// The 1 MiB-in-50 MiB scenario.
#[derive(Clone, Debug, Default)]
pub struct Bandwidth {
    /// From the writer's close until every receiver reads the new megabyte, ms.
    pub visible_ms: f64,
    /// Bytes counted meanwhile (all receivers together), if measurable.
    pub bytes: Option<u64>,
    pub receivers: usize,
}

/// Creates the directories `rels` on the writer and waits (untimed) until every receiver
/// has all of them. Directories already there cost nothing, so a system with a long
/// delay can get all its directories in one go (see [`dirs_for`]).
pub fn make_dirs(r: &Replica, rels: &[String]) -> Result<()> {
    for rel in rels {
        let a = r.writer.join(rel);
        fs::create_dir_all(&a).with_context(|| format!("create {}", a.display()))?;
    }
    poll_until(Instant::now(), Duration::from_millis(1), r.deadline, || {
        rels.iter()
            .all(|rel| r.receivers.iter().all(|b| b.join(rel).is_dir()))
    })
    .with_context(|| format!("{}: directories never reached the receivers", r.label))?;
    Ok(())
}

/// The directories the workloads below use for `tags`.
pub fn dirs_for(tags: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    for t in tags {
        v.push(format!("vis-{t}"));
        v.push(format!("burst-{t}"));
        v.extend((0..10).map(|d| format!("burst-{t}/d{d:02}")));
        v.push(format!("bw-{t}"));
    }
    v
}

/// Creates `rel` (and waits for it) and returns its path on the writer and receivers.
fn make_dir(r: &Replica, rel: &str) -> Result<(PathBuf, Vec<PathBuf>)> {
    make_dirs(r, &[rel.to_string()])?;
    let bs = r.receivers.iter().map(|b| b.join(rel)).collect();
    Ok((r.writer.join(rel), bs))
}

/// Polls until `done(receiver)` held for every receiver; time since `start`, or None at
/// the deadline.
fn wait_all(
    r: &Replica,
    start: Instant,
    mut done: impl FnMut(&Path) -> bool,
    bs: &[PathBuf],
) -> Result<Option<f64>> {
    let mut pending: Vec<&PathBuf> = bs.iter().collect();
    loop {
        pending.retain(|b| !done(b));
        if pending.is_empty() {
            return Ok(Some(start.elapsed().as_secs_f64() * 1e3));
        }
        if start.elapsed() > r.deadline {
            return Ok(None);
        }
        check_interrupted()?;
        std::thread::sleep(r.interval);
    }
}

/// Runs `trials` create/modify/delete trials in `vis-TAG` and adds them to `v`.
pub fn visibility(r: &Replica, tag: &str, trials: usize, v: &mut Visibility) -> Result<()> {
    let rel = format!("vis-{tag}");
    let (a, bs) = make_dir(r, &rel)?;
    let sent0 = sent_start(r);
    let meter = CpuMeter::start(&r.daemons);
    for i in 0..trials {
        let name = format!("api-{i:04}.xml");
        let pa = a.join(&name);
        let salt = tag_seed(tag).wrapping_add(i);
        for (k, kind) in [b'c', b'm'].into_iter().enumerate() {
            let data = unique_content(kind, salt, 4096);
            fs::write(&pa, &data).with_context(|| format!("write {}", pa.display()))?;
            let t = Instant::now();
            match wait_all(r, t, |b| has_content(&b.join(&name), &data), &bs)? {
                Some(ms) => [&mut v.create, &mut v.modify][k].push(ms),
                None => v.timeouts[k] += 1,
            }
        }
        fs::remove_file(&pa)?;
        let t = Instant::now();
        match wait_all(r, t, |b| !b.join(&name).exists(), &bs)? {
            Some(ms) => v.delete.push(ms),
            None => v.timeouts[2] += 1,
        }
    }
    if let Some(used) = meter.and_then(|m| m.stop(&r.daemons)) {
        v.cpu.add(&used);
    }
    if let Some(sent) = sent_since(r, sent0) {
        let total = v.sent.get_or_insert_with(SentBytes::default);
        total.writer += sent.writer;
        total.all_nodes += sent.all_nodes;
    }
    Ok(())
}

/// Writes `files` files of 4 KiB in 10 directories of `burst-TAG` while a poller thread
/// records when each is complete on every receiver.
pub fn burst(r: &Replica, tag: &str, files: usize) -> Result<Burst> {
    let rel = format!("burst-{tag}");
    let subdirs: Vec<String> = (0..10).map(|d| format!("{rel}/d{d:02}")).collect();
    let mut all = vec![rel.clone()];
    all.extend(subdirs);
    make_dirs(r, &all)?;
    let salt = tag_seed(tag);
    let rel_of = move |i: usize| format!("d{:02}/f{i:05}.xml", i % 10);
    let receivers: Vec<PathBuf> = r.receivers.iter().map(|b| b.join(&rel)).collect();
    let content = |i: usize| unique_content(b'b', salt.wrapping_add(i), 4096);
    let a = r.writer.join(&rel);
    let progress = WriteProgress::default();
    let mut first_close = None;
    let mut last_close = Instant::now();
    let mut write_err = None;
    let sent0 = sent_start(r);
    let meter = CpuMeter::start(&r.daemons);
    let complete = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            track_arrivals(receivers.len(), files, &progress, r.deadline, |k, i| {
                has_content(&receivers[k].join(rel_of(i)), &content(i))
            })
        });
        for i in 0..files {
            let p = a.join(rel_of(i));
            if let Err(e) = fs::write(&p, content(i)) {
                write_err = Some(anyhow::Error::new(e).context(format!("write {}", p.display())));
                break;
            }
            last_close = Instant::now();
            first_close.get_or_insert(last_close);
            progress.written.store(i + 1, Ordering::Release);
        }
        progress.done.store(true, Ordering::Release);
        poller.join()
    })
    .map_err(|_| anyhow::anyhow!("burst poller panicked"))?;
    let cpu = meter.and_then(|m| m.stop(&r.daemons));
    let sent = if sent0.is_some() {
        // late copies and acknowledgements
        std::thread::sleep(Duration::from_millis(500));
        sent_since(r, sent0)
    } else {
        None
    };
    if let Some(e) = write_err {
        return Err(e);
    }
    check_interrupted()?;
    let first = first_close.unwrap_or(last_close);
    let mut curve_ms: Vec<f64> = complete
        .iter()
        .flatten()
        .map(|t| t.saturating_duration_since(first).as_secs_f64() * 1e3)
        .collect();
    curve_ms.sort_by(|x, y| x.total_cmp(y));
    let all = complete.iter().all(Option::is_some);
    let after_last_close_ms = all.then(|| {
        complete
            .iter()
            .flatten()
            .map(|t| t.saturating_duration_since(last_close).as_secs_f64() * 1e3)
            .fold(0.0, f64::max)
    });
    Ok(Burst {
        files,
        write_ms: last_close.duration_since(first).as_secs_f64() * 1e3,
        after_last_close_ms,
        curve_ms,
        cpu,
        sent,
    })
}

/// How far a writer has got: files written (closed) so far, and whether it is done.
#[derive(Default)]
pub struct WriteProgress {
    pub written: AtomicUsize,
    pub done: AtomicBool,
}

/// Records when each of `files` files (in write order) is complete on every one of
/// `receivers` receivers, while a writer reports its `progress`; `is_there(receiver,
/// file)` checks one. Stops when all written files are complete, `deadline` after the
/// writer is done, or on Ctrl-C; None for files never seen complete.
///
/// While the writer is still writing, each receiver is read in write order from where
/// it was last found incomplete, so a pass costs little and the receivers are not
/// flooded with lookups of files not there yet; a file is counted when it and every
/// earlier one are complete (a conservative time for systems that deliver out of
/// order). After the last close every file still missing is checked on every pass.
pub fn track_arrivals(
    receivers: usize,
    files: usize,
    progress: &WriteProgress,
    deadline: Duration,
    is_there: impl Fn(usize, usize) -> bool,
) -> Vec<Option<Instant>> {
    let mut seen = vec![vec![false; files]; receivers];
    let mut done_on = vec![0usize; files];
    let mut complete: Vec<Option<Instant>> = vec![None; files];
    let mut cursor = vec![0usize; receivers];
    let mut end: Option<Instant> = None;
    let mut found = |k: usize, i: usize, seen: &mut [Vec<bool>]| {
        if !seen[k][i] {
            seen[k][i] = true;
            done_on[i] += 1;
            if done_on[i] == receivers {
                complete[i] = Some(Instant::now());
            }
        }
    };
    loop {
        if check_interrupted().is_err() {
            break;
        }
        let finished = progress.done.load(Ordering::Acquire);
        let upto = progress.written.load(Ordering::Acquire).min(files);
        if finished {
            let e = *end.get_or_insert_with(Instant::now);
            let mut all = true;
            for i in 0..upto {
                for k in 0..receivers {
                    if !seen[k][i] {
                        if is_there(k, i) {
                            found(k, i, &mut seen);
                        } else {
                            all = false;
                        }
                    }
                }
            }
            if all || e.elapsed() > deadline {
                break;
            }
        } else {
            for k in 0..receivers {
                while cursor[k] < upto && (seen[k][cursor[k]] || is_there(k, cursor[k])) {
                    found(k, cursor[k], &mut seen);
                    cursor[k] += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    complete
}

/// Writes a 50 MiB file of random bytes, waits until every receiver has it, then
/// rewrites 1 MiB in its middle and measures time and bytes until the receivers read it.
pub fn bandwidth(r: &Replica, tag: &str) -> Result<Bandwidth> {
    const SIZE: usize = 50 << 20;
    const AT: u64 = 25 << 20;
    let (a, bs) = make_dir(r, &format!("bw-{tag}"))?;
    let big = Rng::new(0xB16).bytes(SIZE);
    let pa = a.join("big.war");
    fs::write(&pa, &big).with_context(|| format!("write {}", pa.display()))?;
    let t = Instant::now();
    let long = Duration::from_millis(20);
    let full = |b: &Path| {
        let p = b.join("big.war");
        fs::metadata(&p).is_ok_and(|m| m.len() == SIZE as u64) && has_content(&p, &big)
    };
    let mut pending: Vec<&PathBuf> = bs.iter().collect();
    while !pending.is_empty() {
        pending.retain(|b| !full(b));
        if t.elapsed() > r.deadline + Duration::from_secs(60) {
            bail!("{}: the 50 MiB file never reached the receivers", r.label);
        }
        check_interrupted()?;
        std::thread::sleep(long);
    }
    // let the system settle (acknowledgements, rsync children reaped)
    std::thread::sleep(Duration::from_secs(1));
    let before = r.bytes.as_ref().map(ByteCounter::read).transpose()?;
    let middle = Rng::new(0xC4A6E).bytes(1 << 20);
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&pa)
            .with_context(|| format!("open {}", pa.display()))?;
        f.write_all_at(&middle, AT)?;
    }
    let t = Instant::now();
    // the first and last 4 KiB of the new megabyte first (cheap), then all of it
    let changed = |b: &Path| {
        let Ok(f) = fs::File::open(b.join("big.war")) else {
            return false;
        };
        let mut edge = vec![0u8; 4096];
        let edges_new = f.read_exact_at(&mut edge, AT).is_ok()
            && edge[..] == middle[..4096]
            && f.read_exact_at(&mut edge, AT + (1 << 20) - 4096).is_ok()
            && edge[..] == middle[(1 << 20) - 4096..];
        let mut buf = vec![0u8; 1 << 20];
        edges_new && f.read_exact_at(&mut buf, AT).is_ok() && buf == middle
    };
    let visible_ms = wait_all(r, t, changed, &bs)?
        .with_context(|| format!("{}: the changed megabyte never became visible", r.label))?;
    std::thread::sleep(Duration::from_secs(1));
    let after = r.bytes.as_ref().map(ByteCounter::read).transpose()?;
    Ok(Bandwidth {
        visible_ms,
        bytes: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
        receivers: bs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "replica" whose receiver is the writer itself: everything is visible at once.
    #[test]
    fn workloads_run_on_a_loopback_replica() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Replica {
            label: "same dir".into(),
            writer: tmp.path().to_path_buf(),
            receivers: vec![tmp.path().to_path_buf()],
            bytes: None,
            interval: Duration::from_micros(100),
            deadline: Duration::from_secs(5),
            daemons: vec![std::process::id()],
            nodes: None,
        };
        let mut v = Visibility::default();
        visibility(&r, "t", 3, &mut v).unwrap();
        assert_eq!((v.create.len(), v.modify.len(), v.delete.len()), (3, 3, 3));
        let b = burst(&r, "t", 50).unwrap();
        assert_eq!(b.curve_ms.len(), 50);
        assert!(b.after_last_close_ms.is_some());
        // this process stands in for the daemons; a short interval may see no tick
        for cpu in [b.cpu.unwrap(), v.cpu] {
            assert!(cpu.wall_s > 0.0 && cpu.daemons_s.is_some());
            let busy = cpu.machine_busy_fraction();
            assert!(busy.is_nan() || (0.0..=1.0).contains(&busy), "{busy}");
        }
    }
}
