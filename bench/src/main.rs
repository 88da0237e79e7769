//! `depfs-bench`: measures depfs against the native disk and a plain FUSE passthrough
//! (Debian's `bindfs`) on the same machine, in one run, interleaved, and prints medians
//! and ratios as a Markdown table.
//!
//! `cargo build --release -p depfs -p depfs-bench && target/release/depfs-bench local`

use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod replication;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "depfs-bench", about = "depfs benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replication on loopback: visibility latency of a 4 KiB file (create, modify,
    /// delete) from close on one node to complete content on another, and the time for
    /// a burst of files to converge.
    Replication {
        /// Trials per latency measurement.
        #[arg(long, default_value_t = 200)]
        trials: usize,
        /// Files in the burst.
        #[arg(long, default_value_t = 1000)]
        burst: usize,
        /// The depfs binary (default: next to this one).
        #[arg(long)]
        depfs: Option<PathBuf>,
    },
    /// Local operations on one node: small files and sequential I/O, against the native
    /// disk and bindfs.
    Local {
        /// Small files per run.
        #[arg(long, default_value_t = 2000)]
        files: usize,
        /// Directories they are spread over.
        #[arg(long, default_value_t = 20)]
        dirs: usize,
        /// Size of the sequential file in MiB.
        #[arg(long, default_value_t = 256)]
        seq_mib: usize,
        /// Repetitions (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The depfs binary (default: next to this one).
        #[arg(long)]
        depfs: Option<PathBuf>,
        /// Where to create the test directories (default: a temporary directory under /var/tmp).
        #[arg(long)]
        base: Option<PathBuf>,
    },
}

/// One filesystem under test.
struct System {
    name: &'static str,
    root: PathBuf,
}

/// Results of one run on one system.
#[derive(Default, Clone)]
struct Run {
    create: f64,
    stat: f64,
    read: f64,
    delete: f64,
    seq_write: f64,
    seq_read: f64,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Replication {
            trials,
            burst,
            depfs,
        } => replication::run(trials, burst, depfs),
        Cmd::Local {
            files,
            dirs,
            seq_mib,
            runs,
            depfs,
            base,
        } => local(files, dirs, seq_mib, runs, depfs, base),
    }
}

/// Mounts that are unmounted when dropped.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for mp in self.0.iter().rev() {
            let _ = Command::new("umount").arg(mp).status();
        }
    }
}

fn local(
    files: usize,
    dirs: usize,
    seq_mib: usize,
    runs: usize,
    depfs: Option<PathBuf>,
    base: Option<PathBuf>,
) -> Result<()> {
    let depfs = match depfs {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("depfs"),
    };
    if !depfs.exists() {
        bail!(
            "depfs binary {} not found (build it with cargo build --release -p depfs)",
            depfs.display()
        );
    }
    let tmp = match base {
        Some(b) => tempfile::Builder::new()
            .prefix("depfs-bench-")
            .tempdir_in(b)?,
        None => tempfile::Builder::new()
            .prefix("depfs-bench-")
            .tempdir_in("/var/tmp")?,
    };
    let base = tmp.path();
    let mut mounts = Mounts(Vec::new());

    let native = base.join("native");
    fs::create_dir(&native)?;

    let bind_src = base.join("bindfs-src");
    let bind_mnt = base.join("bindfs");
    fs::create_dir(&bind_src)?;
    fs::create_dir(&bind_mnt)?;
    let ok = Command::new("bindfs")
        .arg(&bind_src)
        .arg(&bind_mnt)
        .status()
        .context("run bindfs (apt-get install bindfs)")?;
    if !ok.success() {
        bail!("bindfs failed");
    }
    mounts.0.push(bind_mnt.clone());

    let depfs_mnt = base.join("depfs");
    fs::create_dir(&depfs_mnt)?;
    let config = base.join("bench.toml");
    fs::write(
        &config,
        format!(
            "node = \"bench\"\ndata_dir = \"{}\"\npeers = []\n",
            base.join("depfs-data").display()
        ),
    )?;
    let out = Command::new(&depfs)
        .arg("mount")
        .arg(&config)
        .arg(&depfs_mnt)
        .output()?;
    if !out.status.success() {
        bail!(
            "depfs mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    mounts.0.push(depfs_mnt.clone());

    let systems = [
        System {
            name: "native",
            root: native,
        },
        System {
            name: "bindfs",
            root: bind_mnt,
        },
        System {
            name: "depfs",
            root: depfs_mnt,
        },
    ];
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); systems.len()];
    for run in 0..runs {
        // Rotate the order so no system always runs first (warm or cold).
        for k in 0..systems.len() {
            let i = (k + run) % systems.len();
            let r = measure(&systems[i], run, files, dirs, seq_mib)
                .with_context(|| format!("{} (run {run})", systems[i].name))?;
            results[i].push(r);
        }
    }
    drop(mounts);

    let medians: Vec<Run> = results.iter().map(|rs| median_run(rs)).collect();
    print_report(&systems, &medians, files, dirs, seq_mib, runs);
    Ok(())
}

fn measure(sys: &System, run: usize, files: usize, dirs: usize, seq_mib: usize) -> Result<Run> {
    let root = sys.root.join(format!("run{run}"));
    fs::create_dir(&root)?;
    for d in 0..dirs {
        fs::create_dir(root.join(format!("d{d:02}")))?;
    }
    let paths: Vec<PathBuf> = (0..files)
        .map(|i| root.join(format!("d{:02}/f{i:05}.xml", i % dirs)))
        .collect();
    let content = vec![b'x'; 4096];

    let t = Instant::now();
    for p in &paths {
        let mut f = fs::File::create(p)?;
        f.write_all(&content)?;
    }
    let create = rate(files, t.elapsed());

    let t = Instant::now();
    for p in &paths {
        let md = fs::metadata(p)?;
        if md.len() != 4096 {
            bail!("{}: size {}", p.display(), md.len());
        }
    }
    let stat = rate(files, t.elapsed());

    let mut buf = Vec::with_capacity(8192);
    let t = Instant::now();
    for p in &paths {
        buf.clear();
        fs::File::open(p)?.read_to_end(&mut buf)?;
        if buf.len() != 4096 {
            bail!("{}: read {} bytes", p.display(), buf.len());
        }
    }
    let read = rate(files, t.elapsed());

    let t = Instant::now();
    for p in &paths {
        fs::remove_file(p)?;
    }
    let delete = rate(files, t.elapsed());

    let big = root.join("seq.bin");
    let block: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let t = Instant::now();
    {
        let mut f = fs::File::create(&big)?;
        for _ in 0..seq_mib {
            f.write_all(&block)?;
        }
    }
    let seq_write = (seq_mib << 20) as f64 / t.elapsed().as_secs_f64() / 1e9;

    let t = Instant::now();
    let mut f = fs::File::open(&big)?;
    let mut total = 0usize;
    let mut rbuf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut rbuf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let seq_read = total as f64 / t.elapsed().as_secs_f64() / 1e9;
    drop(f);
    if total != seq_mib << 20 {
        bail!("{}: read {total} bytes", big.display());
    }
    fs::remove_dir_all(&root).with_context(|| format!("remove {}", root.display()))?;
    Ok(Run {
        create,
        stat,
        read,
        delete,
        seq_write,
        seq_read,
    })
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn median_run(rs: &[Run]) -> Run {
    let m = |f: fn(&Run) -> f64| median(rs.iter().map(f).collect());
    Run {
        create: m(|r| r.create),
        stat: m(|r| r.stat),
        read: m(|r| r.read),
        delete: m(|r| r.delete),
        seq_write: m(|r| r.seq_write),
        seq_read: m(|r| r.seq_read),
    }
}

fn print_report(
    systems: &[System],
    medians: &[Run],
    files: usize,
    dirs: usize,
    seq_mib: usize,
    runs: usize,
) {
    type Row = (&'static str, &'static str, fn(&Run) -> f64);
    let rows: [Row; 6] = [
        ("create 4 KiB", "files/s", |r| r.create),
        ("stat", "files/s", |r| r.stat),
        ("read 4 KiB", "files/s", |r| r.read),
        ("delete", "files/s", |r| r.delete),
        ("sequential write", "GB/s", |r| r.seq_write),
        ("sequential read", "GB/s", |r| r.seq_read),
    ];
    println!("Local operations: {files} files of 4 KiB in {dirs} directories; sequential {seq_mib} MiB; median of {runs} interleaved runs.\n");
    print!("| workload | unit |");
    for s in systems {
        print!(" {} |", s.name);
    }
    println!(" depfs/native | depfs/bindfs |");
    print!("|---|---|");
    for _ in systems {
        print!("---:|");
    }
    println!("---:|---:|");
    let idx = |name: &str| systems.iter().position(|s| s.name == name).unwrap_or(0);
    let (n, b, d) = (idx("native"), idx("bindfs"), idx("depfs"));
    for (label, unit, f) in rows {
        print!("| {label} | {unit} |");
        for m in medians {
            let v = f(m);
            if unit == "GB/s" {
                print!(" {v:.2} |");
            } else {
                print!(" {v:.0} |");
            }
        }
        println!(
            " {:.2}x | {:.2}x |",
            f(&medians[d]) / f(&medians[n]),
            f(&medians[d]) / f(&medians[b])
        );
    }
}
