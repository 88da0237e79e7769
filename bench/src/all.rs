//! `depfs-bench all`: sets up every system, runs every workload on each (interleaved,
//! the order rotating between repetitions), tears everything down, and writes the
//! report and its charts.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::machine::Machine;
use crate::replication::{self, ByteCounter, DepfsNodes, Replica, Visibility};
use crate::results::*;
use crate::systems::{self, DepfsNode, Mount, ScriptSystem, Workspace};
use crate::tree::{self, Tree};
use crate::util::{
    check_interrupted, install_interrupt_handler, progress, run_captured, unique_content, Rng,
};
use crate::workloads::{self, LocalParams, LocalRun};
use crate::{charts, raw, report};

/// Options of `depfs-bench all`.
pub struct AllArgs {
    pub quick: bool,
    pub out: PathBuf,
    pub charts: PathBuf,
    /// The raw figures as JSON (docs/bench/results.json).
    pub json: PathBuf,
    pub depfs: PathBuf,
    pub systems: PathBuf,
    pub base: Option<PathBuf>,
    pub apis: Option<Vec<usize>>,
    /// The command line, for the report.
    pub command: String,
}

impl Params {
    fn new(quick: bool, apis: Option<Vec<usize>>) -> Params {
        Params {
            quick,
            local: LocalParams {
                files: 2000,
                dirs: 20,
                seq_mib: if quick { 128 } else { 256 },
                rand_reads: if quick { 10_000 } else { 20_000 },
            },
            local_reps: if quick { 2 } else { 5 },
            repl_reps: if quick { 2 } else { 3 },
            burst_files: 1000,
            poll_us: 100,
            apis: apis.unwrap_or_else(|| {
                if quick {
                    vec![100]
                } else {
                    vec![100, 1000, 10_000]
                }
            }),
            rss_files: if quick { 10_000 } else { 100_000 },
        }
    }
}

/// The largest deployment tree (in APIs) written on GlusterFS.
const GLUSTER_TREE_MAX: usize = 1000;

/// How long a replicated system gets to make a deployment tree complete on the others.
const TREE_DEADLINE: Duration = Duration::from_secs(300);

/// How many trials and bursts a replicated system gets per repetition.
struct Plan {
    trials_per_rep: usize,
    burst_reps: usize,
    bandwidth: bool,
    warmup: bool,
}

/// Every running system; each guard stops its system when dropped.
struct Running {
    native: PathBuf,
    bindfs: Option<(Mount, PathBuf)>,
    nfs: Option<(ScriptSystem, String, PathBuf)>,
    depfs1: DepfsNode,
    depfs3: Vec<DepfsNode>,
    /// Mounted for the replication phase only (after the local operations, stopped
    /// before the deployment trees).
    depfs5: Option<Vec<DepfsNode>>,
    lsyncd_tuned: Option<(ScriptSystem, PathBuf, PathBuf)>,
    lsyncd_default: Option<(ScriptSystem, PathBuf, PathBuf)>,
    gluster: Option<(ScriptSystem, PathBuf, PathBuf)>,
}

/// Turns a failure of one system's step into a note; fails (dropping what the step
/// made, which stops it) once interrupted.
fn soft<T>(r: Result<T>, what: &str, skipped: &mut Vec<String>) -> Result<Option<T>> {
    check_interrupted()?;
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            check_interrupted()?;
            progress(format!("FAILED: {what}: {e:#}"));
            skipped.push(format!("{what}: failed: {e:#}"));
            Ok(None)
        }
    }
}

/// Runs everything and writes the report.
pub fn run(args: AllArgs) -> Result<()> {
    install_interrupt_handler()?;
    let t0 = Instant::now();
    if !args.depfs.exists() {
        anyhow::bail!(
            "depfs binary {} not found (cargo build --release -p depfs, or pass --depfs)",
            args.depfs.display()
        );
    }
    let params = Params::new(args.quick, args.apis.clone());
    progress(format!(
        "depfs-bench all{}: depfs {}",
        if args.quick { " --quick" } else { "" },
        args.depfs.display()
    ));
    let machine = Machine::collect(&args.depfs);
    let mut skipped = Vec::new();
    let (local, repl, trees, memory) = {
        let ws = Workspace::new(args.base.as_deref(), args.systems.clone())?;
        progress(format!("working in {}", ws.base.display()));
        let mut running = setup(&ws, &args.depfs, &params, &mut skipped)?;
        let local = local_phase(&running, &params, &mut skipped)?;
        // five nodes only for the replication phase: not idling through the others
        progress("mounting depfs, 5 nodes on loopback");
        running.depfs5 = soft(
            systems::depfs_cluster(&args.depfs, &ws.base.join("depfs5"), 5),
            DEPFS5,
            &mut skipped,
        )?;
        let repl = repl_phase(&running, &args.depfs, &params, &mut skipped)?;
        drop(running.depfs5.take());
        let trees = tree_phase(&running, &ws, &params, &mut skipped)?;
        drop(running);
        let memory = soft(
            memory_phase(&ws, &args.depfs, params.rss_files),
            "daemon memory",
            &mut skipped,
        )?;
        (local, repl, trees, memory)
    };
    let results = Results {
        machine,
        command: args.command,
        params,
        local,
        repl,
        trees,
        memory,
        skipped,
        wall_s: t0.elapsed().as_secs_f64(),
        load_after: crate::machine::load_average(),
    };
    progress("writing the report and charts");
    charts::write_all(&results, &args.charts)?;
    report::write(&results, &args.out, &args.charts, &args.json)?;
    raw::write(&results, &args.json)?;
    progress(format!(
        "done in {:.0} s: {}, {} and {}",
        results.wall_s,
        args.out.display(),
        args.charts.display(),
        args.json.display()
    ));
    Ok(())
}

fn setup(
    ws: &Workspace,
    depfs: &Path,
    params: &Params,
    skipped: &mut Vec<String>,
) -> Result<Running> {
    let native = ws.dir("native")?;
    progress("mounting bindfs");
    let bindfs = soft(
        systems::bindfs(&ws.base.join("bindfs-src"), &ws.base.join("bindfs")),
        BINDFS,
        skipped,
    )?
    .map(|m| {
        let p = m.mountpoint.clone();
        (m, p)
    });
    let nfs = soft(setup_nfs(ws), NFS, skipped)?;
    progress("mounting depfs (1 node, and 3 nodes on loopback)");
    let depfs1 = systems::depfs_single(depfs, &ws.base.join("depfs1"), "local")?;
    let depfs3 = systems::depfs_cluster(depfs, &ws.base.join("depfs3"), 3)?;
    check_interrupted()?;
    let lsyncd =
        |name: &str, delay: &str, extra: &str| -> Result<(ScriptSystem, PathBuf, PathBuf)> {
            let src = ws.dir(&format!("{name}-src"))?;
            let dst = ws.dir(&format!("{name}-dst"))?;
            let label = if delay == "0" {
                LSYNCD_TUNED
            } else {
                LSYNCD_DEFAULT
            };
            let (g, _) = ws.script_system(
                label,
                "lsyncd.sh",
                &format!("{name}-state"),
                &[("RSYNC_EXTRA", extra)],
                &[&src, &dst, Path::new(delay)],
            )?;
            Ok((g, src, dst))
        };
    let lsyncd_tuned = soft(
        lsyncd("lsyncd0", "0", "--modify-window=-1"),
        LSYNCD_TUNED,
        skipped,
    )?;
    let lsyncd_default = if params.quick {
        skipped.push(format!(
            "{LSYNCD_DEFAULT}: not run with --quick (each change takes its 15 s delay); the full run measures it"
        ));
        None
    } else {
        soft(lsyncd("lsyncd15", "15", ""), LSYNCD_DEFAULT, skipped)?
    };
    let gluster = soft(
        (|| {
            let (g, out) = ws.script_system(GLUSTER, "gluster.sh", "gluster-state", &[], &[])?;
            let mut m = out.split_whitespace().map(PathBuf::from);
            let (m1, m2) = (m.next(), m.next());
            Ok((
                g,
                m1.context("gluster.sh printed no mounts")?,
                m2.context("gluster.sh printed one mount")?,
            ))
        })(),
        GLUSTER,
        skipped,
    )?;
    Ok(Running {
        native,
        bindfs,
        nfs,
        depfs1,
        depfs3,
        depfs5: None,
        lsyncd_tuned,
        lsyncd_default,
        gluster,
    })
}

fn setup_nfs(ws: &Workspace) -> Result<(ScriptSystem, String, PathBuf)> {
    let export = ws.dir("nfs-export")?;
    let (g, out) = ws.script_system(NFS, "nfs.sh", "nfs-state", &[], &[&export])?;
    let url = out
        .lines()
        .rev()
        .find(|l| l.starts_with("nfs://"))
        .context("nfs.sh printed no nfs:// URL")?
        .to_string();
    let bin = ws.base.join("nfsbench");
    progress("building nfsbench (libnfs)");
    run_captured(
        std::process::Command::new(ws.scripts.join("build-nfsbench.sh")).arg(&bin),
        false,
    )?;
    Ok((g, url, bin))
}

enum LocalTarget<'a> {
    Dir(&'a Path),
    Nfs { bin: &'a Path, url: &'a str },
}

fn local_phase(r: &Running, p: &Params, skipped: &mut Vec<String>) -> Result<Vec<LocalResult>> {
    let mut targets: Vec<(&'static str, LocalTarget)> = vec![(NATIVE, LocalTarget::Dir(&r.native))];
    if let Some((_, m)) = &r.bindfs {
        targets.push((BINDFS, LocalTarget::Dir(m)));
    }
    if let Some((_, url, bin)) = &r.nfs {
        targets.push((NFS, LocalTarget::Nfs { bin, url }));
    }
    targets.push((DEPFS1, LocalTarget::Dir(r.depfs1.root())));
    let mut results: Vec<LocalResult> = targets
        .iter()
        .map(|(l, _)| LocalResult {
            label: l,
            runs: Vec::new(),
        })
        .collect();
    let mut seq = Rng::new(99).bytes(p.local.seq_mib << 20);
    let mut failed = vec![false; targets.len()];
    for rep in 0..p.local_reps {
        for k in 0..targets.len() {
            check_interrupted()?;
            let i = (k + rep) % targets.len();
            if failed[i] {
                continue;
            }
            let (label, target) = &targets[i];
            progress(format!(
                "local ops, run {}/{}: {label}",
                rep + 1,
                p.local_reps
            ));
            let run: Result<LocalRun> = match target {
                LocalTarget::Dir(d) => {
                    workloads::run_dir(d, &format!("r{rep}"), &p.local, &mut seq)
                }
                LocalTarget::Nfs { bin, url } => workloads::run_nfsbench(bin, url, &p.local),
            };
            match soft(run, &format!("{label}: local ops"), skipped)? {
                Some(run) => results[i].runs.push(run),
                None => failed[i] = true,
            }
        }
    }
    Ok(results)
}

/// A replicated system with its plan and how its bytes are counted (for the report).
type ReplSetup = (Replica, Plan, String);

fn repl_phase(
    r: &Running,
    depfs: &Path,
    p: &Params,
    skipped: &mut Vec<String>,
) -> Result<Vec<ReplResult>> {
    let interval = Duration::from_micros(p.poll_us);
    let mut set = depfs_replicas(r, depfs, p, interval);
    set.extend(lsyncd_replicas(r, p, interval));
    set.extend(gluster_replica(r, p, interval));
    let mut out: Vec<ReplResult> = set
        .iter()
        .map(|(rep, _, how)| ReplResult {
            label: label_of(&rep.label).unwrap_or("?"),
            receivers: rep.receivers.len(),
            vis: Visibility::default(),
            bursts: Vec::new(),
            bandwidth: None,
            bytes_how: how.clone(),
        })
        .collect();
    let mut failed = prepare_repl_dirs(&set, p.repl_reps, skipped)?;
    for rep in 0..p.repl_reps {
        for k in 0..set.len() {
            check_interrupted()?;
            let i = (k + rep) % set.len();
            if failed[i] {
                continue;
            }
            let (replica, plan, _) = &set[i];
            let step = repl_round(replica, plan, &mut out[i], rep, p);
            if soft(step, &format!("{}: replication", replica.label), skipped)?.is_none() {
                failed[i] = true;
            }
        }
    }
    Ok(out)
}

/// Trials per repetition for `total` trials over the run.
fn per_rep(p: &Params, total: usize) -> usize {
    total.div_ceil(p.repl_reps)
}

/// The depfs clusters of 3 and 5 nodes.
fn depfs_replicas(r: &Running, depfs: &Path, p: &Params, interval: Duration) -> Vec<ReplSetup> {
    let mut set = Vec::new();
    let clusters = [(DEPFS3, Some(&r.depfs3)), (DEPFS5, r.depfs5.as_ref())];
    for (label, nodes) in clusters {
        let Some(nodes) = nodes else { continue };
        set.push((
            Replica {
                label: label.into(),
                writer: nodes[0].root().to_path_buf(),
                receivers: nodes[1..].iter().map(|n| n.root().to_path_buf()).collect(),
                bytes: Some(ByteCounter::Depfs {
                    depfs: depfs.to_path_buf(),
                    config: nodes[0].config.clone(),
                }),
                interval,
                deadline: Duration::from_secs(30),
                // all of them or none (a partial sum would mislead)
                daemons: nodes
                    .iter()
                    .map(|n| n.mount.daemon_pid)
                    .collect::<Option<Vec<u32>>>()
                    .unwrap_or_default(),
                nodes: Some(DepfsNodes {
                    depfs: depfs.to_path_buf(),
                    configs: nodes.iter().map(|n| n.config.clone()).collect(),
                }),
            },
            Plan {
                trials_per_rep: per_rep(p, if p.quick { 40 } else { 200 }),
                burst_reps: p.repl_reps,
                bandwidth: true,
                warmup: true,
            },
            format!(
                "`bytes_sent` to {} in `depfs status --json` of the writing node (every frame, protocol included)",
                match nodes.len() - 1 {
                    2 => "both peers".to_string(),
                    n => format!("all {n} peers"),
                }
            ),
        ));
    }
    set
}

/// lsyncd with delay 0 and at its default delay.
fn lsyncd_replicas(r: &Running, p: &Params, interval: Duration) -> Vec<ReplSetup> {
    let mut set = Vec::new();
    if let Some((g, src, dst)) = &r.lsyncd_tuned {
        let pid = g.pid_file("lsyncd.pid");
        set.push((
            Replica {
                label: LSYNCD_TUNED.into(),
                writer: src.clone(),
                receivers: vec![dst.clone()],
                bytes: pid.as_ref().ok().map(|&pid| ByteCounter::ProcIo {
                    pid,
                    minus_file_writes: true,
                }),
                interval,
                deadline: Duration::from_secs(30),
                daemons: Vec::new(),
                nodes: None,
            },
            Plan {
                trials_per_rep: per_rep(p, if p.quick { 10 } else { 30 }),
                burst_reps: p.repl_reps,
                bandwidth: true,
                warmup: true,
            },
            "bytes written by lsyncd and its (reaped) rsync children (`wchar` of /proc/PID/io) less the bytes they wrote to files (`write_bytes`): rsync's sender-to-receiver pipe".into(),
        ));
    }
    if let Some((_, src, dst)) = &r.lsyncd_default {
        set.push((
            Replica {
                label: LSYNCD_DEFAULT.into(),
                writer: src.clone(),
                receivers: vec![dst.clone()],
                bytes: None,
                interval: Duration::from_millis(1),
                deadline: Duration::from_secs(60),
                daemons: Vec::new(),
                nodes: None,
            },
            Plan {
                trials_per_rep: 1,
                burst_reps: 1,
                bandwidth: false,
                warmup: false,
            },
            "not run (same rsync transfer as with delay 0, 15 s later)".into(),
        ));
    }
    set
}

fn gluster_replica(r: &Running, p: &Params, interval: Duration) -> Option<ReplSetup> {
    let (_, m1, m2) = r.gluster.as_ref()?;
    let pid = systems::gluster_client_pid(m1);
    Some((
        Replica {
            label: GLUSTER.into(),
            writer: m1.clone(),
            receivers: vec![m2.clone()],
            bytes: pid.as_ref().ok().map(|&pid| ByteCounter::ProcIo {
                pid,
                minus_file_writes: false,
            }),
            interval,
            deadline: Duration::from_secs(30),
            daemons: Vec::new(),
            nodes: None,
        },
        Plan {
            trials_per_rep: per_rep(p, if p.quick { 6 } else { 21 }),
            burst_reps: p.repl_reps,
            bandwidth: true,
            warmup: true,
        },
        "bytes written by mount 1's GlusterFS client process (`wchar` of /proc/PID/io: its writes to both bricks' sockets)".into(),
    ))
}

/// Every directory of every round up front (lsyncd at delay 15 takes 15 s for each new
/// one); true for each system that failed.
fn prepare_repl_dirs(
    set: &[ReplSetup],
    reps: usize,
    skipped: &mut Vec<String>,
) -> Result<Vec<bool>> {
    let mut failed = vec![false; set.len()];
    for (i, (replica, plan, _)) in set.iter().enumerate() {
        let mut tags: Vec<String> = (0..reps).map(|rep| format!("r{rep}")).collect();
        if plan.warmup {
            tags.push("warmup".into());
        }
        progress(format!(
            "replication: preparing directories on {}",
            replica.label
        ));
        let made = replication::make_dirs(replica, &replication::dirs_for(&tags));
        if soft(made, &format!("{}: replication", replica.label), skipped)?.is_none() {
            failed[i] = true;
        }
    }
    Ok(failed)
}

/// Round `rep` of one system: its visibility trials, its burst and (in the first round)
/// the 1 MiB change.
fn repl_round(
    replica: &Replica,
    plan: &Plan,
    res: &mut ReplResult,
    rep: usize,
    p: &Params,
) -> Result<()> {
    let (tag, reps) = (format!("r{rep}"), p.repl_reps);
    if rep == 0 && plan.warmup {
        replication::visibility(replica, "warmup", 1, &mut Visibility::default())?;
    }
    if plan.trials_per_rep > 0 {
        progress(format!(
            "replication, round {}/{reps}: {} — {} visibility trials",
            rep + 1,
            replica.label,
            plan.trials_per_rep
        ));
        replication::visibility(replica, &tag, plan.trials_per_rep, &mut res.vis)?;
    }
    if rep < plan.burst_reps {
        progress(format!(
            "replication, round {}/{reps}: {} — burst",
            rep + 1,
            replica.label
        ));
        res.bursts
            .push(replication::burst(replica, &tag, p.burst_files)?);
    }
    if rep == 0 && plan.bandwidth {
        progress(format!(
            "replication: {} — 1 MiB change in a 50 MiB file",
            replica.label
        ));
        res.bandwidth = Some(replication::bandwidth(replica, &tag)?);
    }
    Ok(())
}

/// Where the deployment tree is written.
enum TreeTarget {
    /// A directory, and the directories it replicates to (none: not replicated).
    Dir {
        writer: PathBuf,
        receivers: Vec<PathBuf>,
    },
    /// NFS: `nfsbench -w tree` copies a local copy of the tree (written untimed).
    Nfs { bin: PathBuf, url: String },
}

fn tree_phase(
    r: &Running,
    ws: &Workspace,
    p: &Params,
    skipped: &mut Vec<String>,
) -> Result<Vec<TreeResult>> {
    let mut targets = tree_targets(r);
    let mut out = Vec::new();
    for (ni, &apis) in p.apis.iter().enumerate() {
        progress(format!("deployment tree: generating {apis} APIs"));
        let tree = Tree::generate(apis, 42);
        let mut res = TreeResult {
            apis,
            files: tree.files.len(),
            bytes: tree.bytes(),
            rows: Vec::new(),
        };
        let mut order: Vec<usize> = (0..targets.len())
            .map(|k| (k + ni) % targets.len())
            .collect();
        if let Some(g) = targets.iter().position(|t| t.0 == GLUSTER) {
            if let Some(why) = gluster_tree_skipped(apis, &tree, &out) {
                order.retain(|&i| i != g);
                skipped.push(why);
            }
        }
        // lsyncd at its default delay: once, at the smallest size, in the full run only
        if ni == 0 {
            if let Some((_, s, d)) = &r.lsyncd_default {
                targets.push((LSYNCD_DEFAULT, tree_dir(s, vec![d.clone()])));
                order.push(targets.len() - 1);
            }
        }
        for i in order {
            check_interrupted()?;
            let (label, target) = &targets[i];
            progress(format!(
                "deployment tree, {apis} APIs ({} files, {:.0} MB): {label}",
                res.files,
                res.bytes as f64 / 1e6
            ));
            let row = tree_row(label, target, &tree, &format!("tree-{apis}"), ws);
            let what = format!("{label}: deployment tree of {apis} APIs");
            if let Some(row) = soft(row, &what, skipped)? {
                res.rows.push(row);
            }
        }
        targets.retain(|(l, _)| *l != LSYNCD_DEFAULT);
        out.push(res);
    }
    Ok(out)
}

fn tree_dir(writer: &Path, receivers: Vec<PathBuf>) -> TreeTarget {
    TreeTarget::Dir {
        writer: writer.to_path_buf(),
        receivers,
    }
}

/// Every system that writes the deployment tree at every size.
fn tree_targets(r: &Running) -> Vec<(&'static str, TreeTarget)> {
    let mut targets = vec![(NATIVE, tree_dir(&r.native, vec![]))];
    if let Some((_, m)) = &r.bindfs {
        targets.push((BINDFS, tree_dir(m, vec![])));
    }
    if let Some((_, url, bin)) = &r.nfs {
        targets.push((
            NFS,
            TreeTarget::Nfs {
                bin: bin.clone(),
                url: url.clone(),
            },
        ));
    }
    targets.push((DEPFS1, tree_dir(r.depfs1.root(), vec![])));
    targets.push((
        DEPFS3,
        tree_dir(
            r.depfs3[0].root(),
            r.depfs3[1..]
                .iter()
                .map(|n| n.root().to_path_buf())
                .collect(),
        ),
    ));
    if let Some((_, s, d)) = &r.lsyncd_tuned {
        targets.push((LSYNCD_TUNED, tree_dir(s, vec![d.clone()])));
    }
    if let Some((_, m1, m2)) = &r.gluster {
        targets.push((GLUSTER, tree_dir(m1, vec![m2.clone()])));
    }
    targets
}

/// Why GlusterFS does not write the tree of `apis` APIs, if it does not. It creates files
/// at about 100/s here: a tree of more than GLUSTER_TREE_MAX APIs would take minutes to
/// write and longer to delete at teardown (bricks, .glusterfs links and xattrs).
fn gluster_tree_skipped(apis: usize, tree: &Tree, done: &[TreeResult]) -> Option<String> {
    if apis <= GLUSTER_TREE_MAX {
        return None;
    }
    let rate = done
        .iter()
        .filter_map(|t| {
            let row = t.rows.iter().find(|x| x.label == GLUSTER)?;
            Some(t.files as f64 / row.write_s)
        })
        .next_back();
    Some(format!(
        "{GLUSTER}: the deployment tree of {} APIs ({} files) is not run{}: writing it would take minutes, and deleting its bricks at teardown longer still, beyond this run's time budget",
        crate::util::thousands(apis as f64),
        crate::util::thousands(tree.files.len() as f64),
        rate.map_or(String::new(), |r| format!(" (it wrote {r:.0} files/s for the smaller trees)"))
    ))
}

/// Writes the tree as `name` on one system, waits until it is complete on the other
/// node(s), and reads it back.
fn tree_row(
    label: &'static str,
    target: &TreeTarget,
    tree: &Tree,
    name: &str,
    ws: &Workspace,
) -> Result<TreeRow> {
    match target {
        TreeTarget::Dir { writer, receivers } => {
            let root = writer.join(name);
            let (write, converge) = if receivers.is_empty() {
                (tree::write(tree, &root)?, Converge::NotReplicated)
            } else {
                let rs: Vec<PathBuf> = receivers.iter().map(|d| d.join(name)).collect();
                let (w, c) = tree::write_replicated(tree, &root, &rs, TREE_DEADLINE)?;
                let c = c.map_or(
                    Converge::NotWithin(TREE_DEADLINE.as_secs_f64()),
                    Converge::After,
                );
                (w, c)
            };
            let read = tree::read_back(tree, &root)?;
            Ok(TreeRow {
                label,
                write_s: write.as_secs_f64(),
                read_s: read.as_secs_f64(),
                converge,
            })
        }
        TreeTarget::Nfs { bin, url } => {
            // nfsbench copies a local tree: write it to the disk, untimed
            let src = ws.dir("nfs-tree-src")?.join(name);
            tree::write(tree, &src)?;
            let t = workloads::run_nfsbench_tree(bin, url, &src, name);
            fs::remove_dir_all(&src).with_context(|| format!("remove {}", src.display()))?;
            let t = t?;
            Ok(TreeRow {
                label,
                write_s: t.write_s,
                read_s: t.read_s,
                converge: Converge::Shared,
            })
        }
    }
}

fn memory_phase(ws: &Workspace, depfs: &Path, files: usize) -> Result<MemoryResult> {
    progress(format!(
        "daemon memory: one depfs node, {files} files of 4 KiB in 100 directories"
    ));
    let node = systems::depfs_single(depfs, &ws.base.join("depfs-mem"), "mem")?;
    let pid = node
        .mount
        .daemon_pid
        .context("the depfs daemon's pid was not found")?;
    let root = node.root().to_path_buf();
    let mut m = MemoryResult::default();
    let (rss, hwm) = systems::rss_kib(pid)?;
    m.points.push((0, rss, hwm));
    for d in 0..100 {
        fs::create_dir(root.join(format!("d{d:03}")))?;
    }
    let step = (files / 10).max(1);
    let t = Instant::now();
    for i in 0..files {
        let p = root.join(format!("d{:03}/f{i:06}.xml", i % 100));
        fs::write(&p, unique_content(b'r', i, 4096))
            .with_context(|| format!("write {}", p.display()))?;
        if (i + 1) % step == 0 || i + 1 == files {
            check_interrupted()?;
            let (rss, hwm) = systems::rss_kib(pid)?;
            m.points.push((i + 1, rss, hwm));
            progress(format!("  {} files: VmRSS {} MiB", i + 1, rss / 1024));
        }
    }
    m.create_s = t.elapsed().as_secs_f64();
    for d in 0..100 {
        for e in fs::read_dir(root.join(format!("d{d:03}")))? {
            e?.metadata()?;
        }
    }
    m.after_walk = Some(systems::rss_kib(pid)?);
    Ok(m)
}
