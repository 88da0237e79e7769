//! Local-operation workloads on one directory (native disk, bindfs, depfs) and the same
//! workloads through `nfsbench` (libnfs) for NFS: small files (create, stat, read,
//! delete), a sequential write and read, and random 4 KiB reads of the sequential file.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::{percentile, rate, run_captured, tag_seed, unique_content, Rng};

/// Sizes of the local workloads.
#[derive(Clone, Copy, Debug)]
pub struct LocalParams {
    /// Small files per run (4 KiB each).
    pub files: usize,
    /// Directories they are spread over.
    pub dirs: usize,
    /// Size of the sequential file, MiB.
    pub seq_mib: usize,
    /// Random 4 KiB reads of the sequential file.
    pub rand_reads: usize,
}

/// Figures of one run on one system.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalRun {
    pub create: f64,
    pub stat: f64,
    pub read: f64,
    pub delete: f64,
    /// GB/s (10^9 B/s).
    pub seq_write: f64,
    pub seq_read: f64,
    /// Random 4 KiB reads per second, and their latency in µs.
    pub rand_rate: f64,
    pub rand_p50_us: f64,
    pub rand_p99_us: f64,
}

/// One figure of [`LocalRun`], for tables and charts.
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub get: fn(&LocalRun) -> f64,
}

/// Every figure of a local run, in report order.
pub const METRICS: [Metric; 9] = [
    Metric {
        key: "create",
        label: "create 4 KiB (open, write, close)",
        unit: "files/s",
        get: |r| r.create,
    },
    Metric {
        key: "stat",
        label: "stat",
        unit: "files/s",
        get: |r| r.stat,
    },
    Metric {
        key: "read",
        label: "read 4 KiB (open, read, close)",
        unit: "files/s",
        get: |r| r.read,
    },
    Metric {
        key: "delete",
        label: "delete",
        unit: "files/s",
        get: |r| r.delete,
    },
    Metric {
        key: "seq_write",
        label: "sequential write (1 MiB writes, until close)",
        unit: "GB/s",
        get: |r| r.seq_write,
    },
    Metric {
        key: "seq_read",
        label: "sequential read (1 MiB reads)",
        unit: "GB/s",
        get: |r| r.seq_read,
    },
    Metric {
        key: "rand_rate",
        label: "random 4 KiB reads (pread)",
        unit: "reads/s",
        get: |r| r.rand_rate,
    },
    Metric {
        key: "rand_p50",
        label: "random 4 KiB read latency p50",
        unit: "µs",
        get: |r| r.rand_p50_us,
    },
    Metric {
        key: "rand_p99",
        label: "random 4 KiB read latency p99",
        unit: "µs",
        get: |r| r.rand_p99_us,
    },
];

const MIB: usize = 1 << 20;
const BLOCK: usize = 4096;

/// Runs every local workload in a fresh directory `root/run-TAG` and removes it.
/// `seq_data` is `seq_mib` MiB of random bytes; each 4 KiB block gets a stamp unique to
/// `tag`, so no run can deduplicate against another.
pub fn run_dir(root: &Path, tag: &str, p: &LocalParams, seq_data: &mut [u8]) -> Result<LocalRun> {
    let dir = root.join(format!("run-{tag}"));
    fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut r = small_files(&dir, tag, p)?;
    let big = dir.join("seq.bin");
    stamp_blocks(seq_data, tag);
    (r.seq_write, r.seq_read) = sequential(&big, seq_data)?;
    (r.rand_rate, r.rand_p50_us, r.rand_p99_us) = random_reads(&big, seq_data, p.rand_reads)?;
    fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    Ok(r)
}

fn stamp_blocks(data: &mut [u8], tag: &str) {
    let h = tag_seed(tag) as u64;
    for (i, block) in data.chunks_mut(BLOCK).enumerate() {
        if block.len() >= 16 {
            block[..8].copy_from_slice(&h.to_le_bytes());
            block[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        }
    }
}

fn small_files(dir: &Path, tag: &str, p: &LocalParams) -> Result<LocalRun> {
    for d in 0..p.dirs {
        fs::create_dir(dir.join(format!("d{d:03}")))?;
    }
    let paths: Vec<PathBuf> = (0..p.files)
        .map(|i| dir.join(format!("d{:03}/f{i:06}.xml", i % p.dirs)))
        .collect();
    let salt = tag_seed(tag);
    let contents: Vec<Vec<u8>> = (0..p.files)
        .map(|i| unique_content(b's', salt.wrapping_add(i), BLOCK))
        .collect();

    let t = Instant::now();
    for (path, c) in paths.iter().zip(&contents) {
        let mut f = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        f.write_all(c)?;
    }
    let create = rate(p.files, t.elapsed());

    let t = Instant::now();
    for path in &paths {
        let md = fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
        if md.len() != BLOCK as u64 {
            bail!("{}: size {}", path.display(), md.len());
        }
    }
    let stat = rate(p.files, t.elapsed());

    let mut buf = Vec::with_capacity(2 * BLOCK);
    let t = Instant::now();
    for (path, c) in paths.iter().zip(&contents) {
        buf.clear();
        fs::File::open(path)?.read_to_end(&mut buf)?;
        if buf != *c {
            bail!("{}: content differs from what was written", path.display());
        }
    }
    let read = rate(p.files, t.elapsed());

    let t = Instant::now();
    for path in &paths {
        fs::remove_file(path).with_context(|| format!("unlink {}", path.display()))?;
    }
    let delete = rate(p.files, t.elapsed());
    Ok(LocalRun {
        create,
        stat,
        read,
        delete,
        ..LocalRun::default()
    })
}

/// Writes `data` to `path` in 1 MiB writes (timed until close returns), reads it back in
/// 1 MiB reads; GB/s both ways.
fn sequential(path: &Path, data: &[u8]) -> Result<(f64, f64)> {
    let t = Instant::now();
    {
        let mut f = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        for block in data.chunks(MIB) {
            f.write_all(block)?;
        }
    }
    let write = data.len() as f64 / t.elapsed().as_secs_f64() / 1e9;

    let mut buf = vec![0u8; MIB];
    let t = Instant::now();
    let mut f = fs::File::open(path)?;
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        // spot check: the stamp at the start of each read
        if total.is_multiple_of(BLOCK) && n >= 16 && buf[..16] != data[total..total + 16] {
            bail!("{}: wrong data at offset {total}", path.display());
        }
        total += n;
    }
    let read = total as f64 / t.elapsed().as_secs_f64() / 1e9;
    if total != data.len() {
        bail!("{}: read {total} bytes of {}", path.display(), data.len());
    }
    Ok((write, read))
}

/// `reads` preads of 4 KiB at random aligned offsets (seeded); reads/s, p50 and p99 µs.
fn random_reads(path: &Path, data: &[u8], reads: usize) -> Result<(f64, f64, f64)> {
    let f = fs::File::open(path)?;
    let blocks = data.len() / BLOCK;
    let mut rng = Rng::new(12345);
    let mut buf = vec![0u8; BLOCK];
    let mut lat = Vec::with_capacity(reads);
    let t = Instant::now();
    for _ in 0..reads {
        let off = (rng.next_u64() as usize % blocks) * BLOCK;
        let a = Instant::now();
        f.read_exact_at(&mut buf, off as u64)
            .with_context(|| format!("pread {} at {off}", path.display()))?;
        lat.push(a.elapsed().as_secs_f64() * 1e6);
        if buf[..16] != data[off..off + 16] {
            bail!("{}: wrong data at offset {off}", path.display());
        }
    }
    let r = rate(reads, t.elapsed());
    Ok((r, percentile(&lat, 0.5), percentile(&lat, 0.99)))
}

/// The same workloads through `nfsbench` (libnfs, NFSv3) against `url`.
pub fn run_nfsbench(bin: &Path, url: &str, p: &LocalParams) -> Result<LocalRun> {
    let out = run_captured(
        Command::new(bin).args([
            "-u",
            url,
            "-V",
            "3",
            "-w",
            "all",
            "-n",
            &p.files.to_string(),
            "-d",
            &p.dirs.to_string(),
            "-m",
            &p.seq_mib.to_string(),
            "-r",
            &p.rand_reads.to_string(),
        ]),
        true,
    )
    .context("nfsbench")?;
    parse_nfsbench(&out)
}

/// Seconds `nfsbench -w tree` took to write a tree to NFS and to read it back.
#[derive(Clone, Copy, Debug)]
pub struct NfsTree {
    pub write_s: f64,
    pub read_s: f64,
}

/// Copies the local tree `src` to NFS with `nfsbench -w tree` (libnfs, NFSv3): into
/// `EXPORT/name`, then reads it back (compared) and removes it.
pub fn run_nfsbench_tree(bin: &Path, url: &str, src: &Path, name: &str) -> Result<NfsTree> {
    let out = run_captured(
        Command::new(bin)
            .args(["-u", url, "-V", "3", "-w", "tree", "-p", name, "-t"])
            .arg(src),
        true,
    )
    .context("nfsbench -w tree")?;
    parse_nfsbench_tree(&out)
}

fn parse_nfsbench_tree(out: &str) -> Result<NfsTree> {
    let (mut write_s, mut read_s) = (None, None);
    for line in out.lines().filter(|l| l.trim_start().starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("nfsbench output: {line}"))?;
        let slot = match v["workload"].as_str().unwrap_or("") {
            "tree_write" => &mut write_s,
            "tree_read" => &mut read_s,
            _ => continue,
        };
        *slot = v["value"].as_f64().filter(|x| x.is_finite() && *x > 0.0);
    }
    match (write_s, read_s) {
        (Some(write_s), Some(read_s)) => Ok(NfsTree { write_s, read_s }),
        _ => bail!("nfsbench -w tree printed no valid tree_write and tree_read:\n{out}"),
    }
}

fn parse_nfsbench(out: &str) -> Result<LocalRun> {
    let mut r = LocalRun::default();
    let mut seen = 0;
    for line in out.lines().filter(|l| l.trim_start().starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("nfsbench output: {line}"))?;
        let value = v["value"].as_f64().unwrap_or(f64::NAN);
        let slot = match v["workload"].as_str().unwrap_or("") {
            "create" => &mut r.create,
            "stat" => &mut r.stat,
            "read" => &mut r.read,
            "delete" => &mut r.delete,
            "seq_write" => &mut r.seq_write,
            "seq_read" => &mut r.seq_read,
            "rand_read_4k" => &mut r.rand_rate,
            "rand_read_4k_p50" => &mut r.rand_p50_us,
            "rand_read_4k_p99" => &mut r.rand_p99_us,
            _ => continue,
        };
        *slot = value;
        seen += 1;
    }
    if seen < METRICS.len() {
        bail!(
            "nfsbench printed {seen} of {} figures:\n{out}",
            METRICS.len()
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nfsbench_lines() {
        let out = r#"{"system":"nfs","workload":"create","unit":"files/s","value":807.07,"nfs_version":3}
{"system":"nfs","workload":"stat","unit":"files/s","value":2464,"nfs_version":3}
{"system":"nfs","workload":"read","unit":"files/s","value":1536,"nfs_version":3}
{"system":"nfs","workload":"delete","unit":"files/s","value":2171,"nfs_version":3}
{"system":"nfs","workload":"seq_write","unit":"GB/s","value":0.77,"nfs_version":3}
{"system":"nfs","workload":"seq_read","unit":"GB/s","value":1.9,"nfs_version":3}
{"system":"nfs","workload":"rand_read_4k","unit":"reads/s","value":10044,"nfs_version":3}
{"system":"nfs","workload":"rand_read_4k_p50","unit":"us","value":99,"nfs_version":3}
{"system":"nfs","workload":"rand_read_4k_p99","unit":"us","value":165,"nfs_version":3}"#;
        let r = parse_nfsbench(out).unwrap();
        assert_eq!(r.create, 807.07);
        assert_eq!(r.rand_p99_us, 165.0);
        assert!(parse_nfsbench("{\"workload\":\"create\",\"value\":1}").is_err());
    }

    #[test]
    fn parses_nfsbench_tree_lines() {
        let out = r#"{"system":"nfs","workload":"tree_write","unit":"s","value":1.25,"nfs_version":3,"files":221}
{"system":"nfs","workload":"tree_read","unit":"s","value":0.5,"nfs_version":3,"files":221}
{"system":"nfs","workload":"tree_remove","unit":"s","value":0.1,"nfs_version":3,"files":221}"#;
        let t = parse_nfsbench_tree(out).unwrap();
        assert_eq!((t.write_s, t.read_s), (1.25, 0.5));
        assert!(parse_nfsbench_tree(r#"{"workload":"tree_write","unit":"s","value":1}"#).is_err());
        assert!(parse_nfsbench_tree("").is_err());
    }

    #[test]
    fn local_workloads_run_on_a_plain_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let p = LocalParams {
            files: 20,
            dirs: 2,
            seq_mib: 2,
            rand_reads: 50,
        };
        let mut data = Rng::new(1).bytes(p.seq_mib << 20);
        let r = run_dir(tmp.path(), "t", &p, &mut data).unwrap();
        assert!(r.create > 0.0 && r.seq_read > 0.0 && r.rand_p99_us >= r.rand_p50_us);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
