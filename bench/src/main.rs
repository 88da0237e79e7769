//! `depfs-bench`: measures depfs against the native disk, a FUSE passthrough (bindfs),
//! NFS (nfs-ganesha through libnfs), lsyncd+rsync and GlusterFS on one machine, in one
//! run, interleaved, and writes docs/benchmarks.md with tables and SVG charts.
//!
//! ```sh
//! cargo build --release -p depfs -p depfs-bench
//! target/release/depfs-bench all            # or: all --quick
//! ```
//!
//! `local` and `replication` run the depfs-only subsets and print Markdown tables;
//! `seal` measures what signing changes costs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

mod all;
mod charts;
mod machine;
mod raw;
mod replication;
mod report;
mod results;
mod seal;
mod systems;
mod template;
mod tree;
mod util;
mod workloads;

#[derive(Parser)]
#[command(name = "depfs-bench", about = "depfs benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every system and workload in one run (as root); regenerates the report and charts.
    All {
        /// Fewer repetitions and trials, smaller sizes, no lsyncd at its 15 s default
        /// delay: under 3 minutes.
        #[arg(long)]
        quick: bool,
        /// The Markdown report to write.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Directory for the SVG charts.
        #[arg(long, default_value = "docs/bench")]
        charts: PathBuf,
        /// The raw figures (every repetition, medians, targets) as JSON.
        #[arg(long, default_value = "docs/bench/results.json")]
        json: PathBuf,
        /// The depfs binary (default: next to this one).
        #[arg(long)]
        depfs: Option<PathBuf>,
        /// The bench/systems directory with the comparison systems' scripts.
        #[arg(long)]
        systems: Option<PathBuf>,
        /// Where to create the temporary working directory (default /var/tmp).
        #[arg(long)]
        base: Option<PathBuf>,
        /// Sizes of the deployment tree in APIs, comma separated (default 100,1000,10000;
        /// with --quick 100).
        #[arg(long, value_delimiter = ',')]
        apis: Option<Vec<usize>>,
    },
    /// Local operations only: native disk, bindfs and one depfs node.
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
        /// Random 4 KiB reads of the sequential file.
        #[arg(long, default_value_t = 20_000)]
        rand_reads: usize,
        /// Repetitions (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The depfs binary (default: next to this one).
        #[arg(long)]
        depfs: Option<PathBuf>,
    },
    /// What signing changes costs: seal and verify per change, with a real node key.
    Seal {
        /// Changes measured per row.
        #[arg(long, default_value_t = 5000)]
        changes: usize,
        /// Versions per change of the second row (a deploy of several files).
        #[arg(long, default_value_t = 50)]
        multi: usize,
    },
    /// depfs replication only, on loopback: visibility, burst, bandwidth.
    Replication {
        /// Trials per latency measurement.
        #[arg(long, default_value_t = 200)]
        trials: usize,
        /// Files in the burst.
        #[arg(long, default_value_t = 1000)]
        burst: usize,
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// The depfs binary (default: next to this one).
        #[arg(long)]
        depfs: Option<PathBuf>,
    },
}

fn depfs_path(p: Option<PathBuf>) -> Result<PathBuf> {
    let p = match p {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("depfs"),
    };
    if !p.exists() {
        bail!(
            "depfs binary {} not found (cargo build --release -p depfs, or pass --depfs)",
            p.display()
        );
    }
    Ok(p)
}

fn systems_dir(p: Option<PathBuf>) -> PathBuf {
    p.unwrap_or_else(|| {
        let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systems");
        if built.is_dir() {
            built
        } else {
            PathBuf::from("bench/systems")
        }
    })
}

fn main() -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    match Cli::parse().command {
        Cmd::All {
            quick,
            out,
            charts,
            json,
            depfs,
            systems,
            base,
            apis,
        } => all::run(all::AllArgs {
            quick,
            out,
            charts,
            json,
            depfs: depfs_path(depfs)?,
            systems: systems_dir(systems),
            base,
            apis,
            command,
        }),
        Cmd::Local {
            files,
            dirs,
            seq_mib,
            rand_reads,
            runs,
            depfs,
        } => local(
            workloads::LocalParams {
                files,
                dirs,
                seq_mib,
                rand_reads,
            },
            runs,
            depfs_path(depfs)?,
        ),
        Cmd::Seal { changes, multi } => seal::run(changes.max(1), multi.max(1)),
        Cmd::Replication {
            trials,
            burst,
            nodes,
            depfs,
        } => replication_only(trials, burst, nodes.max(2), depfs_path(depfs)?),
    }
}

/// `depfs-bench local`: native, bindfs and one depfs node, interleaved; a Markdown table.
fn local(p: workloads::LocalParams, runs: usize, depfs: PathBuf) -> Result<()> {
    util::install_interrupt_handler()?;
    let ws = systems::Workspace::new(None, systems_dir(None))?;
    let native = ws.dir("native")?;
    let bind = systems::bindfs(&ws.base.join("bindfs-src"), &ws.base.join("bindfs"))?;
    let node = systems::depfs_single(&depfs, &ws.base.join("depfs1"), "local")?;
    let targets = [
        (results::NATIVE, native.clone()),
        (results::BINDFS, bind.mountpoint.clone()),
        (results::DEPFS1, node.root().to_path_buf()),
    ];
    let mut res: Vec<results::LocalResult> = targets
        .iter()
        .map(|(l, _)| results::LocalResult {
            label: l,
            runs: Vec::new(),
        })
        .collect();
    let mut seq = util::Rng::new(99).bytes(p.seq_mib << 20);
    for run in 0..runs {
        for k in 0..targets.len() {
            let i = (k + run) % targets.len();
            util::progress(format!("run {}/{runs}: {}", run + 1, targets[i].0));
            res[i].runs.push(workloads::run_dir(
                &targets[i].1,
                &format!("r{run}"),
                &p,
                &mut seq,
            )?);
        }
    }
    drop(node);
    drop(bind);
    println!("Local operations: median of {runs} interleaved runs.\n");
    println!("| workload | unit | native | bindfs | depfs | depfs/native | depfs/bindfs |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for m in &workloads::METRICS {
        let v: Vec<f64> = res.iter().map(|r| r.median(m)).collect();
        println!(
            "| {} | {} | {} | {} | {} | {:.2}x | {:.2}x |",
            m.label,
            m.unit,
            util::num(v[0], m.unit),
            util::num(v[1], m.unit),
            util::num(v[2], m.unit),
            v[2] / v[0],
            v[2] / v[1]
        );
    }
    Ok(())
}

/// `depfs-bench replication`: a depfs cluster on loopback; Markdown tables.
fn replication_only(trials: usize, burst: usize, nodes: usize, depfs: PathBuf) -> Result<()> {
    util::install_interrupt_handler()?;
    let ws = systems::Workspace::new(None, systems_dir(None))?;
    let cluster = systems::depfs_cluster(&depfs, &ws.base.join("cluster"), nodes)?;
    let r = replication::Replica {
        label: format!("depfs {nodes} nodes"),
        writer: cluster[0].root().to_path_buf(),
        receivers: cluster[1..]
            .iter()
            .map(|n| n.root().to_path_buf())
            .collect(),
        bytes: Some(replication::ByteCounter::Depfs {
            depfs: depfs.clone(),
            config: cluster[0].config.clone(),
        }),
        interval: Duration::from_micros(100),
        deadline: Duration::from_secs(30),
        daemons: cluster
            .iter()
            .map(|n| n.mount.daemon_pid)
            .collect::<Option<Vec<u32>>>()
            .unwrap_or_default(),
        nodes: Some(replication::DepfsNodes {
            depfs: depfs.clone(),
            configs: cluster.iter().map(|n| n.config.clone()).collect(),
        }),
    };
    let mut v = replication::Visibility::default();
    replication::visibility(&r, "warmup", 1, &mut replication::Visibility::default())?;
    util::progress(format!("{trials} visibility trials"));
    replication::visibility(&r, "r0", trials, &mut v)?;
    util::progress("burst");
    let b = replication::burst(&r, "r0", burst)?;
    util::progress("1 MiB change in a 50 MiB file");
    let bw = replication::bandwidth(&r, "r0")?;
    drop(cluster);
    println!("Replication on loopback: {nodes} nodes, {trials} trials per row, 4 KiB files; from the writer's close returning to complete content on every other node.\n");
    println!("| change | p50 ms | p99 ms | max ms | timeouts |\n|---|---:|---:|---:|---:|");
    for (k, (label, x)) in [
        ("create", &v.create),
        ("modify", &v.modify),
        ("delete", &v.delete),
    ]
    .into_iter()
    .enumerate()
    {
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} | {} |",
            util::percentile(x, 0.5),
            util::percentile(x, 0.99),
            util::percentile(x, 1.0),
            v.timeouts[k]
        );
    }
    println!(
        "\nBurst: {burst} files, written in {:.0} ms, all correct on every other node {} ms after the last close.",
        b.write_ms,
        b.after_last_close_ms
            .map_or("(timeout)".into(), |t| format!("{t:.0}"))
    );
    println!(
        "\nA 1 MiB change in the middle of a 50 MiB file: visible on every other node {:.1} ms after close, {} bytes sent to {} peers.",
        bw.visible_ms,
        bw.bytes.map_or("?".into(), |b| b.to_string()),
        bw.receivers
    );
    Ok(())
}
