//! The Markdown report (docs/benchmarks.md) of one `depfs-bench all` run: machine and
//! versions, the targets (docs/targets.md) met or not, one table per workload with
//! every system and ratios to native and NFS, the charts, caveats, and what limits
//! depfs where a target is not met.
//!
//! The prose is not here but in bench/report/: `report.md` is the skeleton of the whole
//! report, one file per section (`systems.md`, `local.md`, …) and `paragraphs.md` the
//! paragraphs used only when something holds (a `--quick` run, a missed target), by
//! name. This file judges the targets, builds the tables and the sentences whose figures
//! it computes, and fills the templates' `{{placeholders}}` with them
//! ([`crate::template::fill`], which fails on a placeholder left without a value). The
//! tests in `report/fixture.rs` compare the whole output with bench/tests/fixtures/.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::charts;
use crate::replication::{Bandwidth, Burst, CpuUse, SentBytes};
use crate::results::*;
use crate::template::{fill, paragraph};
use crate::util::{median, num, percentile, thousands};
use crate::workloads::{Metric, METRICS};

/// Writes the report to `out`, linking the charts in `charts_dir` and naming the raw
/// figures' file `json`.
pub fn write(r: &Results, out: &Path, charts_dir: &Path, json: &Path) -> Result<()> {
    let text = render(r, &chart_prefix(out, charts_dir), &chart_prefix(out, json))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    fs::write(out, text).with_context(|| format!("write {}", out.display()))
}

/// How the report refers to the charts directory or another file next to it (relative
/// to the report if possible).
fn chart_prefix(out: &Path, charts_dir: &Path) -> String {
    let abs = |p: &Path| -> PathBuf { std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()) };
    let out_dir = abs(out).parent().map(Path::to_path_buf).unwrap_or_default();
    let c = abs(charts_dir);
    match c.strip_prefix(&out_dir) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => c.display().to_string(),
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b != 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// Met, not met, or not measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    Met,
    NotMet,
    NotMeasured,
}

impl Status {
    fn of(ok: bool) -> Status {
        if ok {
            Status::Met
        } else {
            Status::NotMet
        }
    }
    fn text(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::NotMet => "**not met**",
            Status::NotMeasured => "not measured",
        }
    }
}

/// One row of the targets table; `key` links it to its explanation.
pub struct Target {
    pub key: &'static str,
    pub target: String,
    pub measured: String,
    pub status: Status,
}

fn vis_p(v: &[f64], p: f64) -> f64 {
    percentile(v, p)
}

/// The targets (docs/targets.md, "What docs/benchmarks.md judges"), judged on this
/// run's figures.
pub fn targets(r: &Results) -> Vec<Target> {
    let d3 = r.repl(DEPFS3);
    let mut t = visibility_targets(d3);
    t.extend(d3.and_then(burst_target));
    t.extend(bandwidth_targets(d3));
    t.extend(local_targets(r));
    t.push(memory_target(r));
    t.push(five_nodes_target(r));
    t
}

fn visibility_targets(d3: Option<&ReplResult>) -> Vec<Target> {
    let Some(v) = d3.map(|d| &d.vis).filter(|v| !v.create.is_empty()) else {
        return vec![Target {
            key: "vis",
            target: "visibility p50 ≤ 2 ms, p99 ≤ 10 ms".into(),
            measured: "–".into(),
            status: Status::NotMeasured,
        }];
    };
    let (p50, p99) = (vis_p(&v.create, 0.5), vis_p(&v.create, 0.99));
    let ok = |x: &[f64], to: usize| {
        !x.is_empty() && to == 0 && vis_p(x, 0.5) <= 2.0 && vis_p(x, 0.99) <= 10.0
    };
    vec![
        Target {
            key: "vis",
            target: "visibility of a new 4 KiB file on the other nodes: p50 ≤ 2 ms, p99 ≤ 10 ms"
                .into(),
            measured: format!(
                "p50 {} ms, p99 {} ms ({} trials, {} timeouts; 3 nodes, complete on both others)",
                num(p50, "ms"),
                num(p99, "ms"),
                v.create.len(),
                v.timeouts[0]
            ),
            status: Status::of(p50 <= 2.0 && p99 <= 10.0 && v.timeouts[0] == 0),
        },
        Target {
            key: "vis_md",
            target: "modifications and deletes as fast as creations (same bounds)".into(),
            measured: format!(
                "modify p50 {} / p99 {} ms; delete p50 {} / p99 {} ms",
                num(vis_p(&v.modify, 0.5), "ms"),
                num(vis_p(&v.modify, 0.99), "ms"),
                num(vis_p(&v.delete, 0.5), "ms"),
                num(vis_p(&v.delete, 0.99), "ms")
            ),
            status: Status::of(ok(&v.modify, v.timeouts[1]) && ok(&v.delete, v.timeouts[2])),
        },
    ]
}

fn burst_target(d: &ReplResult) -> Option<Target> {
    if d.bursts.is_empty() {
        return None;
    }
    let after = burst_after(d);
    let worst = after.iter().copied().fold(0.0, f64::max);
    Some(Target {
        key: "burst",
        target: "burst: 1,000 files of 4 KiB correct on the others within 0.3 s of the last close"
            .into(),
        measured: format!(
            "median {} ms, worst {} ms over {} bursts",
            num(median(&after), "ms"),
            num(worst, "ms"),
            after.len()
        ),
        status: Status::of(median(&after) <= 300.0),
    })
}

fn bandwidth_targets(d3: Option<&ReplResult>) -> Vec<Target> {
    let Some(b) = d3.and_then(|d| d.bandwidth.as_ref()) else {
        return vec![Target {
            key: "bw_bytes",
            target: "a 1 MiB change inside a 50 MiB file: ≤ 1.1 MB, visible within 50 ms".into(),
            measured: "–".into(),
            status: Status::NotMeasured,
        }];
    };
    let per = b.bytes.map(|x| x / b.receivers.max(1) as u64);
    vec![
        Target {
            key: "bw_bytes",
            target: "a 1 MiB change inside a 50 MiB file sends at most 1.1 MB".into(),
            measured: match per {
                Some(p) => format!(
                    "{} to each of {} peers ({} in all)",
                    mb(p),
                    b.receivers,
                    mb(b.bytes.unwrap_or(0))
                ),
                None => "not counted".into(),
            },
            status: per.map_or(Status::NotMeasured, |p| Status::of(p <= 1_100_000)),
        },
        Target {
            key: "bw_time",
            target: "… and is visible within 50 ms".into(),
            measured: format!("{} ms (on both other nodes)", num(b.visible_ms, "ms")),
            status: Status::of(b.visible_ms <= 50.0),
        },
    ]
}

/// The small-file operations against NFS and bindfs, and the sequential figures.
fn local_targets(r: &Results) -> Vec<Target> {
    let Some(d) = r.local(DEPFS1) else {
        return Vec::new();
    };
    let mut t: Vec<Target> = METRICS
        .iter()
        .take(4)
        .map(|m| small_file_target(r, d, m))
        .collect();
    if let Some(n) = r.local(NATIVE) {
        let m = &METRICS[5];
        let (dv, nv) = (d.median(m), n.median(m));
        t.push(Target {
            key: "seq_read",
            target: "sequential read within 1.5× of the native disk".into(),
            measured: format!(
                "{} GB/s vs native {} GB/s ({} of native)",
                num(dv, "GB/s"),
                num(nv, "GB/s"),
                ratio(dv, nv)
            ),
            status: Status::of(dv * 1.5 >= nv),
        });
    }
    let v = d.median(&METRICS[4]);
    t.push(Target {
        key: "seq_write",
        target: "sequential write at least 1 GB/s".into(),
        measured: format!("{} GB/s", num(v, "GB/s")),
        status: Status::of(v >= 1.0),
    });
    t
}

fn small_file_target(r: &Results, d: &LocalResult, m: &Metric) -> Target {
    let v = d.median(m);
    let mut parts = Vec::new();
    let mut ok = true;
    for other in [NFS, BINDFS] {
        if let Some(o) = r.local(other) {
            let ov = o.median(m);
            ok &= v >= ov;
            parts.push(format!("{} {other} ({})", ratio(v, ov), num(ov, m.unit)));
        }
    }
    Target {
        key: m.key,
        target: format!("small-file {} at least as fast as NFS and bindfs", m.key),
        measured: format!("{} {}: {}", num(v, m.unit), m.unit, parts.join(", ")),
        status: if parts.is_empty() {
            Status::NotMeasured
        } else {
            Status::of(ok)
        },
    }
}

fn memory_target(r: &Results) -> Target {
    let Some(m) = r.memory.as_ref().filter(|m| m.points.len() >= 2) else {
        return Target {
            key: "memory",
            target: "daemon memory stays bounded with 100,000 files".into(),
            measured: "–".into(),
            status: Status::NotMeasured,
        };
    };
    let last = m.points[m.points.len() - 1];
    let mid = m.points[m.points.len() / 2];
    // bounded: the growth levels off — the second half of the files adds at most half of
    // what the first half added (linear growth is not bounded)
    let first_half = mid.1 as f64 - m.points[0].1 as f64;
    let second_half = last.1 as f64 - mid.1 as f64;
    let per_file = second_half * 1024.0 / (last.0 - mid.0).max(1) as f64;
    Target {
        key: "memory",
        target: format!(
            "{} files on one node, daemon memory stays bounded (judged here: the second half of the files adds at most half the RSS the first half added)",
            thousands(last.0 as f64)
        ),
        measured: format!(
            "VmRSS {} MiB just mounted, {} MiB at {} files, {} MiB at {} files: {} bytes per file over the second half",
            m.points[0].1 / 1024,
            mid.1 / 1024,
            thousands(mid.0 as f64),
            last.1 / 1024,
            thousands(last.0 as f64),
            thousands(per_file)
        ),
        status: Status::of(second_half <= 0.5 * first_half.max(0.0)),
    }
}

/// The replication bounds of the targets table a replicated system misses: visibility
/// of creations, modifications and deletes (p50 ≤ 2 ms, p99 ≤ 10 ms, no timeouts) and
/// the burst (median ≤ 0.3 s after the last close). Empty: all hold.
fn missed_bounds(x: &ReplResult) -> Vec<String> {
    let mut missed = Vec::new();
    let v = &x.vis;
    for (k, (op, ms)) in [
        ("create", &v.create),
        ("modify", &v.modify),
        ("delete", &v.delete),
    ]
    .into_iter()
    .enumerate()
    {
        let (p50, p99) = (vis_p(ms, 0.5), vis_p(ms, 0.99));
        if ms.is_empty() || v.timeouts[k] > 0 || !(p50 <= 2.0 && p99 <= 10.0) {
            missed.push(format!(
                "{op} p50 {} / p99 {} ms{}",
                num(p50, "ms"),
                num(p99, "ms"),
                if v.timeouts[k] > 0 {
                    format!(", {} timeouts", v.timeouts[k])
                } else {
                    String::new()
                }
            ));
        }
    }
    match x.median_burst().map(|b| b.after_last_close_ms) {
        Some(Some(ms)) if ms <= 300.0 => {}
        Some(Some(ms)) => missed.push(format!(
            "burst median {} ms after the last close",
            num(ms, "ms")
        )),
        Some(None) => missed.push("burst median: not complete within the deadline".into()),
        None => missed.push("no burst".into()),
    }
    missed
}

/// The median burst's ms from the last close until complete everywhere (timeouts count
/// as largest; infinite if the median burst timed out, NaN without bursts).
fn burst_median(x: &ReplResult) -> f64 {
    x.median_burst()
        .map_or(f64::NAN, |b| b.after_last_close_ms.unwrap_or(f64::INFINITY))
}

/// Per burst: ms from the last close until complete everywhere (infinite: timeout).
fn burst_after(x: &ReplResult) -> Vec<f64> {
    x.bursts
        .iter()
        .map(|b| b.after_last_close_ms.unwrap_or(f64::INFINITY))
        .collect()
}

fn five_nodes_target(r: &Results) -> Target {
    let target = "5 nodes without degrading (judged here: the visibility bounds above and the 0.3 s burst bound still hold with 5 nodes, every change complete on all 4 others)".to_string();
    let (Some(d3), Some(d5)) = (r.repl(DEPFS3), r.repl(DEPFS5)) else {
        return Target {
            key: "five_nodes",
            target,
            measured: "the 5-node cluster did not run (see the end of this report)".into(),
            status: Status::NotMeasured,
        };
    };
    if d5.vis.create.is_empty() || d5.bursts.is_empty() {
        return Target {
            key: "five_nodes",
            target,
            measured: "5-node figures missing (see the end of this report)".into(),
            status: Status::NotMeasured,
        };
    }
    let fig = |x: &ReplResult| {
        format!(
            "create p50 {} / p99 {} ms, burst {} ms",
            num(vis_p(&x.vis.create, 0.5), "ms"),
            num(vis_p(&x.vis.create, 0.99), "ms"),
            num(burst_median(x), "ms")
        )
    };
    let missed = missed_bounds(d5);
    Target {
        key: "five_nodes",
        target,
        measured: format!(
            "5 nodes: {}; 3 nodes: {}{} ([5 against 3](#5-nodes-against-3))",
            fig(d5),
            fig(d3),
            if missed.is_empty() {
                String::new()
            } else {
                format!("; missed with 5: {}", missed.join(", "))
            }
        ),
        status: Status::of(missed.is_empty()),
    }
}

/// The skeleton of the report; the sections and paragraphs below fill it.
const REPORT: &str = include_str!("../report/report.md");
const SYSTEMS: &str = include_str!("../report/systems.md");
const LOCAL: &str = include_str!("../report/local.md");
const TREE: &str = include_str!("../report/tree.md");
const REPLICATION: &str = include_str!("../report/replication.md");
const FIVE_NODES: &str = include_str!("../report/five-nodes.md");
const MEMORY: &str = include_str!("../report/memory.md");
const NOT_MEASURED: &str = include_str!("../report/not-measured.md");
/// Paragraphs and sentences used only when something holds, by name.
const PARAGRAPHS: &str = include_str!("../report/paragraphs.md");

/// The paragraph `name` of bench/report/paragraphs.md, filled with `values`.
fn para(name: &str, values: &[(&str, String)]) -> Result<String> {
    fill(paragraph(PARAGRAPHS, name)?, values)
}

/// The whole report.
pub fn render(r: &Results, charts: &str, json: &str) -> Result<String> {
    let ts = targets(r);
    let quick = if r.params.quick {
        para("quick", &[])?
    } else {
        String::new()
    };
    let mut values = vec![
        ("charts", charts.to_string()),
        ("json", json.to_string()),
        ("command", r.command.clone()),
        ("quick", quick),
        ("date", r.machine.date.clone()),
        ("minutes", format!("{:.1}", r.wall_s / 60.0)),
        ("caveat", load_caveat(r)?.unwrap_or_default()),
        ("targets_table", targets_table(&ts)),
        ("systems", systems_section(r)?),
        ("local", local_section(r, charts)?),
        ("tree", tree_section(r, charts)?),
        ("replication", repl_section(r, charts)?),
        ("memory", memory_section(r)?),
        ("limits", limits(r, &ts)?),
        ("not_measured", not_measured(r)?),
    ];
    values.extend(machine_values(r));
    fill(REPORT, &values)
}

/// The rows of the machine table.
fn machine_values(r: &Results) -> Vec<(&'static str, String)> {
    let m = &r.machine;
    let packages: Vec<String> = m
        .packages
        .iter()
        .map(|(p, v)| format!("| {p} (Debian) | {v} |"))
        .collect();
    vec![
        ("cpus", m.cpus.to_string()),
        ("cpu", m.cpu.clone()),
        ("ram_gib", format!("{:.1}", m.ram_gib)),
        ("kernel", m.kernel.clone()),
        ("var_tmp_fs", m.var_tmp_fs.clone()),
        ("load_before", m.load_before.clone()),
        ("load_after", r.load_after.clone()),
        ("depfs_commit", m.depfs_commit.clone()),
        ("depfs_binary", m.depfs_binary.clone()),
        ("depfs_version", m.depfs_version.clone()),
        ("depfs_built", m.depfs_built.clone()),
        ("depfs_rustc", m.depfs_rustc.clone()),
        ("packages", packages.join("\n")),
    ]
}

fn targets_table(ts: &[Target]) -> String {
    let mut s = String::from("| target | measured | status |\n|---|---|---|\n");
    for t in ts {
        let _ = writeln!(s, "| {} | {} | {} |", t.target, t.measured, t.status.text());
    }
    s
}

fn not_measured(r: &Results) -> Result<String> {
    if r.skipped.is_empty() {
        return Ok(String::new());
    }
    let items: Vec<String> = r
        .skipped
        .iter()
        .map(|k| format!("- {}", k.replace('\n', " ")))
        .collect();
    fill(NOT_MEASURED, &[("items", items.join("\n"))])
}

/// A warning when the machine was busy before the run started (1-minute load average
/// above half the CPUs): other work shared the CPUs with the benchmark.
fn load_caveat(r: &Results) -> Result<Option<String>> {
    let m = &r.machine;
    let load: Option<f64> = m
        .load_before
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok());
    match load {
        Some(load) if m.cpus > 0 && load > 0.5 * m.cpus as f64 => Ok(Some(para(
            "caveat",
            &[
                ("load", format!("{load:.2}")),
                ("cpus", m.cpus.to_string()),
                ("load_after", r.load_after.clone()),
            ],
        )?)),
        _ => Ok(None),
    }
}

fn systems_section(r: &Results) -> Result<String> {
    let m = &r.machine;
    let version = |p: &str| m.package(p).to_string();
    fill(
        SYSTEMS,
        &[
            ("native", NATIVE.into()),
            ("bindfs", BINDFS.into()),
            ("nfs", NFS.into()),
            ("depfs1", DEPFS1.into()),
            ("depfs3", DEPFS3.into()),
            ("depfs5", DEPFS5.into()),
            ("lsyncd_tuned", LSYNCD_TUNED.into()),
            ("lsyncd_default", LSYNCD_DEFAULT.into()),
            ("gluster", GLUSTER.into()),
            ("bindfs_version", version("bindfs")),
            ("ganesha_version", version("nfs-ganesha")),
            ("libnfs_version", version("libnfs13")),
            ("lsyncd_version", version("lsyncd")),
            ("rsync_version", version("rsync")),
            ("gluster_version", version("glusterfs-server")),
        ],
    )
}

fn local_section(r: &Results, charts: &str) -> Result<String> {
    let p = &r.params;
    let tables: String = METRICS.iter().map(|m| local_table(r, m)).collect();
    fill(
        LOCAL,
        &[
            ("files", thousands(p.local.files as f64)),
            ("dirs", p.local.dirs.to_string()),
            ("seq_mib", p.local.seq_mib.to_string()),
            ("rand_reads", thousands(p.local.rand_reads as f64)),
            ("reps", p.local_reps.to_string()),
            ("charts", charts.into()),
            ("chart_small", charts::LOCAL_SMALL.into()),
            ("chart_seq", charts::LOCAL_SEQ.into()),
            ("chart_rand", charts::LOCAL_RAND.into()),
            ("tables", tables),
        ],
    )
}

/// One figure of the local operations, every system.
fn local_table(r: &Results, m: &Metric) -> String {
    let (native, nfs) = (r.local(NATIVE), r.local(NFS));
    let mut s = format!("**{}** ({})\n\n", m.label, m.unit);
    s.push_str("| system | median | min – max | × native | × NFS |\n|---|---:|---:|---:|---:|\n");
    for l in r.local.iter().filter(|l| !l.runs.is_empty()) {
        let v = l.median(m);
        let (lo, hi) = l.range(m);
        let _ = writeln!(
            s,
            "| {} | {} | {} – {} | {} | {} |",
            l.label,
            num(v, m.unit),
            num(lo, m.unit),
            num(hi, m.unit),
            native.map_or("–".into(), |n| ratio(v, n.median(m))),
            nfs.map_or("–".into(), |n| ratio(v, n.median(m)))
        );
    }
    s + "\n"
}

fn tree_section(r: &Results, charts: &str) -> Result<String> {
    if r.trees.is_empty() {
        return Ok(String::new());
    }
    fill(
        TREE,
        &[
            ("charts", charts.into()),
            ("chart", charts::TREE.into()),
            ("tables", r.trees.iter().map(tree_table).collect()),
        ],
    )
}

/// The deployment tree of one size, every system.
fn tree_table(t: &TreeResult) -> String {
    let mut s = format!(
        "**{} APIs**: {} files, {:.1} MB\n\n",
        thousands(t.apis as f64),
        thousands(t.files as f64),
        t.bytes as f64 / 1e6
    );
    s.push_str("| system | write s | files/s | write × native | write × NFS | read back s | read × NFS | complete on the other node(s), s after the last close |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let native = t.rows.iter().find(|x| x.label == NATIVE).map(|x| x.write_s);
    let nfs = t.rows.iter().find(|x| x.label == NFS);
    for row in &t.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            num(row.write_s, "s"),
            thousands(t.files as f64 / row.write_s),
            native.map_or("–".into(), |n| ratio(row.write_s, n)),
            nfs.map_or("–".into(), |n| ratio(row.write_s, n.write_s)),
            num(row.read_s, "s"),
            nfs.map_or("–".into(), |n| ratio(row.read_s, n.read_s)),
            row.converge.text()
        );
    }
    s + "\n"
}

fn repl_section(r: &Results, charts: &str) -> Result<String> {
    let p = &r.params;
    fill(
        REPLICATION,
        &[
            ("poll_us", p.poll_us.to_string()),
            ("rounds", p.repl_reps.to_string()),
            ("charts", charts.into()),
            ("chart_visibility", charts::VISIBILITY.into()),
            ("visibility_tables", visibility_tables(r)?),
            ("burst_files", thousands(p.burst_files as f64)),
            ("chart_burst", charts::BURST.into()),
            ("burst_table", burst_table(r)),
            ("bandwidth_table", bandwidth_table(r)),
            ("five_against_three", five_against_three(r)?),
        ],
    )
}

/// Visibility after a create, a modify and a delete, every replicated system.
fn visibility_tables(r: &Results) -> Result<String> {
    let nfs = para("nfs-visibility", &[])?;
    let mut s = String::new();
    for (k, op) in ["create", "modify", "delete"].iter().enumerate() {
        let _ = writeln!(s, "**{op}** (ms)\n");
        let _ = writeln!(s, "| system | receivers | trials | p50 | p99 | max | timeouts (30–60 s) |\n|---|---:|---:|---:|---:|---:|---:|");
        for x in &r.repl {
            let v = [&x.vis.create, &x.vis.modify, &x.vis.delete][k];
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                x.label,
                x.receivers,
                v.len() + x.vis.timeouts[k],
                num(percentile(v, 0.5), "ms"),
                num(percentile(v, 0.99), "ms"),
                num(percentile(v, 1.0), "ms"),
                x.vis.timeouts[k]
            );
        }
        let _ = writeln!(s, "| {NFS} | – | {nfs} | | | | |\n");
    }
    Ok(s)
}

/// A figure in ms, or `timeout` if infinite.
fn ms_or_timeout(v: f64) -> String {
    if v.is_finite() {
        num(v, "ms")
    } else {
        "timeout".into()
    }
}

/// The bursts, every replicated system that ran them.
fn burst_table(r: &Results) -> String {
    let mut s = String::from("| system | bursts | writing took (ms, median) | all complete after the first close (ms, median) | all complete after the last close (ms, median) | worst |\n|---|---:|---:|---:|---:|---:|\n");
    for x in r.repl.iter().filter(|x| !x.bursts.is_empty()) {
        let after = burst_after(x);
        let write: Vec<f64> = x.bursts.iter().map(|b| b.write_ms).collect();
        let total: Vec<f64> = x
            .bursts
            .iter()
            .map(|b| b.write_ms + b.after_last_close_ms.unwrap_or(f64::INFINITY))
            .collect();
        let worst = after.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            x.label,
            x.bursts.len(),
            num(median(&write), "ms"),
            ms_or_timeout(median(&total)),
            if median(&after).is_finite() {
                num(median(&after), "ms")
            } else {
                "not within the deadline".into()
            },
            ms_or_timeout(worst)
        );
    }
    s
}

/// The 1 MiB change in a 50 MiB file, every replicated system.
fn bandwidth_table(r: &Results) -> String {
    let mut s = String::from("| system | visible after (ms) | bytes, all receivers | per receiver | how they are counted |\n|---|---:|---:|---:|---|\n");
    for x in &r.repl {
        let _ = match &x.bandwidth {
            Some(b) => writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                x.label,
                num(b.visible_ms, "ms"),
                b.bytes.map_or("–".into(), mb),
                b.bytes
                    .map_or("–".into(), |v| mb(v / b.receivers.max(1) as u64)),
                x.bytes_how
            ),
            None => writeln!(s, "| {} | – | – | – | {} |", x.label, x.bytes_how),
        };
    }
    s
}

/// The same replication figures for 3 and 5 depfs nodes side by side, and whether 5
/// nodes degrade.
fn five_against_three(r: &Results) -> Result<String> {
    let (Some(d3), Some(d5)) = (r.repl(DEPFS3), r.repl(DEPFS5)) else {
        return Ok(String::new());
    };
    let mut table = format!(
        "| | {DEPFS3} ({} receivers) | {DEPFS5} ({} receivers) | 5 ÷ 3 |\n|---|---:|---:|---:|\n",
        d3.receivers, d5.receivers
    );
    table += &five_visibility_rows(d3, d5);
    table += &five_burst_rows(r, d3, d5);
    table += &five_cpu_rows(d3, d5);
    table += &five_bytes_rows(d3, d5);
    table += &five_bandwidth_rows(d3, d5);
    fill(
        FIVE_NODES,
        &[
            ("depfs3", DEPFS3.into()),
            ("depfs5", DEPFS5.into()),
            ("table", table),
            ("verdict", five_verdict(r, d3, d5)?),
        ],
    )
}

/// A row of the 5-against-3 table: a figure with 3 and with 5 nodes and their ratio.
fn five_row(what: &str, a: f64, b: f64, unit: &str) -> String {
    // infinite: a burst that did not complete within the deadline
    let cell = |v: f64| {
        if v == f64::INFINITY {
            "timeout".to_string()
        } else {
            num(v, unit)
        }
    };
    format!("| {what} | {} | {} | {} |\n", cell(a), cell(b), ratio(b, a))
}

/// Creations, modifications and deletes of all visibility trials.
fn changes(x: &ReplResult) -> usize {
    x.vis.create.len() + x.vis.modify.len() + x.vis.delete.len()
}

/// The median over the bursts of a figure, leaving out those without it.
fn burst_fig(x: &ReplResult, f: impl Fn(&Burst) -> Option<f64>) -> f64 {
    median(&x.bursts.iter().filter_map(f).collect::<Vec<_>>())
}

fn five_visibility_rows(d3: &ReplResult, d5: &ReplResult) -> String {
    let mut s = String::new();
    for (k, op) in ["create", "modify", "delete"].iter().enumerate() {
        let v = |x: &ReplResult| [&x.vis.create, &x.vis.modify, &x.vis.delete][k].clone();
        for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
            let what = format!("visibility after {op}, {name} (ms)");
            s += &five_row(&what, vis_p(&v(d3), p), vis_p(&v(d5), p), "ms");
        }
    }
    let trials = |x: &ReplResult| {
        let timeouts = x.vis.timeouts.iter().sum::<usize>();
        format!("{} ({timeouts} timeouts)", changes(x))
    };
    let _ = writeln!(
        s,
        "| visibility trials, all changes | {} | {} | |",
        trials(d3),
        trials(d5)
    );
    s
}

fn five_burst_rows(r: &Results, d3: &ReplResult, d5: &ReplResult) -> String {
    let writes = |x: &ReplResult| burst_fig(x, |b| Some(b.write_ms));
    let worst = |x: &ReplResult| burst_after(x).into_iter().fold(f64::NAN, f64::max);
    let what = format!(
        "burst of {}: all complete after the last close, median (ms)",
        thousands(r.params.burst_files as f64)
    );
    five_row(&what, burst_median(d3), burst_median(d5), "ms")
        + &five_row("burst: worst (ms)", worst(d3), worst(d5), "ms")
        + &five_row(
            "burst: writing took, median (ms)",
            writes(d3),
            writes(d5),
            "ms",
        )
}

/// The CPU time of the depfs daemons (NaN if unknown) and how busy the whole machine was
/// (%), over a measured interval.
fn daemons_s(c: &CpuUse) -> f64 {
    c.daemons_s.unwrap_or(f64::NAN)
}

fn busy(c: &CpuUse) -> f64 {
    c.machine_busy_fraction() * 100.0
}

fn five_cpu_rows(d3: &ReplResult, d5: &ReplResult) -> String {
    let burst_cpu = |x: &ReplResult, f: fn(&CpuUse) -> f64| burst_fig(x, |b| b.cpu.as_ref().map(f));
    let per_change = |x: &ReplResult| daemons_s(&x.vis.cpu) * 1e3 / changes(x).max(1) as f64;
    five_row(
        "burst: CPU time of all the depfs daemons, median (s)",
        burst_cpu(d3, daemons_s),
        burst_cpu(d5, daemons_s),
        "s",
    ) + &five_row(
        "burst: the machine's CPUs busy (every process), median (%)",
        burst_cpu(d3, busy),
        burst_cpu(d5, busy),
        "%",
    ) + &five_row(
        "visibility trials: CPU time of all the depfs daemons per change (ms)",
        per_change(d3),
        per_change(d5),
        "ms",
    ) + &five_row(
        "visibility trials: the machine's CPUs busy (every process) (%)",
        busy(&d3.vis.cpu),
        busy(&d5.vis.cpu),
        "%",
    )
}

/// What the writer sent, and what every node sent together.
fn five_bytes_rows(d3: &ReplResult, d5: &ReplResult) -> String {
    let vis_kb = |x: &ReplResult, f: fn(&SentBytes) -> u64| {
        x.vis
            .sent
            .as_ref()
            .map_or(f64::NAN, |b| f(b) as f64 / 1e3 / changes(x).max(1) as f64)
    };
    let burst_mb = |x: &ReplResult, f: fn(&SentBytes) -> u64| {
        burst_fig(x, |b| b.sent.as_ref().map(|b| f(b) as f64 / 1e6))
    };
    let writer: fn(&SentBytes) -> u64 = |b| b.writer;
    let all: fn(&SentBytes) -> u64 = |b| b.all_nodes;
    five_row(
        "visibility trials: kB sent per change by the writer",
        vis_kb(d3, writer),
        vis_kb(d5, writer),
        "kB",
    ) + &five_row(
        "visibility trials: kB sent per change by all nodes together",
        vis_kb(d3, all),
        vis_kb(d5, all),
        "kB",
    ) + &five_row(
        "burst: MB sent by the writer, median",
        burst_mb(d3, writer),
        burst_mb(d5, writer),
        "MB",
    ) + &five_row(
        "burst: MB sent by all nodes together, median",
        burst_mb(d3, all),
        burst_mb(d5, all),
        "MB",
    )
}

fn five_bandwidth_rows(d3: &ReplResult, d5: &ReplResult) -> String {
    let (Some(b3), Some(b5)) = (&d3.bandwidth, &d5.bandwidth) else {
        return String::new();
    };
    let per = |b: &Bandwidth| {
        b.bytes
            .map_or(f64::NAN, |x| x as f64 / b.receivers.max(1) as f64 / 1e6)
    };
    five_row(
        "1 MiB change in a 50 MiB file: visible after (ms)",
        b3.visible_ms,
        b5.visible_ms,
        "ms",
    ) + &format!(
        "| 1 MiB change: MB sent per receiver | {:.2} | {:.2} | {} |\n",
        per(b3),
        per(b5),
        ratio(per(b5), per(b3))
    )
}

/// "Does it degrade?": the bounds 5 nodes miss, the ratios to 3 nodes, and how busy the
/// machine was.
fn five_verdict(r: &Results, d3: &ReplResult, d5: &ReplResult) -> Result<String> {
    let cpus = r.machine.cpus.to_string();
    let create = |x: &ReplResult| vis_p(&x.vis.create, 0.5);
    let comparison = para(
        "degrade-comparison",
        &[
            ("create", ratio(create(d5), create(d3))),
            ("burst", ratio(burst_median(d5), burst_median(d3))),
            ("cpus", cpus.clone()),
        ],
    )?;
    let busy5 = burst_fig(d5, |b| b.cpu.as_ref().map(busy));
    let busy_value = ("busy", format!("{busy5:.0}"));
    let cpu_note = if busy5 >= 90.0 {
        format!(" {}", para("cpu-bound", &[busy_value, ("cpus", cpus)])?)
    } else if busy5.is_finite() {
        format!(" {}", para("cpu-busy", &[busy_value])?)
    } else {
        String::new()
    };
    let missed = missed_bounds(d5);
    let mut values = vec![("comparison", comparison), ("cpu_note", cpu_note)];
    if missed.is_empty() {
        para("degrade-no", &values)
    } else {
        values.push(("missed", missed.join("; ")));
        para("degrade-yes", &values)
    }
}

fn memory_section(r: &Results) -> Result<String> {
    let Some(m) = &r.memory else {
        return Ok(String::new());
    };
    let last = m.points.last().map_or(0, |p| p.0);
    let mut table = String::from("| files | VmRSS MiB | VmHWM MiB |\n|---:|---:|---:|\n");
    for (f, rss, hwm) in &m.points {
        let _ = writeln!(
            table,
            "| {} | {:.1} | {:.1} |",
            thousands(*f as f64),
            *rss as f64 / 1024.0,
            *hwm as f64 / 1024.0
        );
    }
    if let Some((rss, hwm)) = m.after_walk {
        let _ = writeln!(
            table,
            "| {} after a stat of every file | {:.1} | {:.1} |",
            thousands(last as f64),
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    fill(
        MEMORY,
        &[
            ("files", thousands(last as f64)),
            ("rate", format!("{:.0}", last as f64 / m.create_s.max(1e-9))),
            ("table", table),
        ],
    )
}

/// What the 5-node figures say about the cost of more nodes: CPU and bytes per change,
/// against 3 nodes.
fn five_nodes_why(r: &Results) -> Result<String> {
    let (Some(d3), Some(d5)) = (r.repl(DEPFS3), r.repl(DEPFS5)) else {
        return para("why-other", &[]);
    };
    let cpu_ms = |x: &ReplResult| {
        x.vis
            .cpu
            .daemons_s
            .map_or(f64::NAN, |c| c * 1e3 / changes(x).max(1) as f64)
    };
    let burst_cpu = |x: &ReplResult| burst_fig(x, |b| b.cpu.and_then(|c| c.daemons_s));
    let mut why = para(
        "why-five-nodes-cpu",
        &[
            ("cpu5", num(cpu_ms(d5), "ms")),
            ("cpu3", num(cpu_ms(d3), "ms")),
            ("cpu_ratio", ratio(cpu_ms(d5), cpu_ms(d3))),
            ("burst5", num(burst_cpu(d5), "s")),
            ("burst3", num(burst_cpu(d3), "s")),
            ("burst_files", thousands(r.params.burst_files as f64)),
            ("burst_ratio", ratio(burst_cpu(d5), burst_cpu(d3))),
        ],
    )?;
    why += &relay_why(d3, d5)?;
    why += &para(
        "why-five-nodes-machine",
        &[
            ("cpus", r.machine.cpus.to_string()),
            (
                "busy",
                format!("{:.0}", burst_fig(d5, |b| b.cpu.map(|c| busy(&c)))),
            ),
        ],
    )?;
    Ok(why)
}

/// How many bytes the receivers sent per byte of the writer's during the bursts: relaying
/// every change to every other receiver gives n − 2 (each receiver sends each of its
/// n − 2 fellow receivers what the writer sent it).
fn relay_why(d3: &ReplResult, d5: &ReplResult) -> Result<String> {
    // bytes all nodes sent per byte the writer sent, less the writer's own
    let relay = |x: &ReplResult| {
        burst_fig(x, |b| {
            b.sent
                .filter(|s| s.writer > 0)
                .map(|s| s.all_nodes as f64 / s.writer as f64)
        }) - 1.0
    };
    if !relay(d5).is_finite() {
        return Ok(String::new());
    }
    let mut why = para(
        "why-five-nodes-relay",
        &[
            ("relay5", format!("{:.2}", relay(d5))),
            ("relay3", format!("{:.2}", relay(d3))),
        ],
    )?;
    if relay(d5) >= 0.75 * 3.0 {
        why += para("why-five-nodes-square", &[])?.as_str();
    }
    Ok(why)
}

/// Why each target not met is missed: one item each.
fn limits(r: &Results, ts: &[Target]) -> Result<String> {
    let not_met: Vec<&Target> = ts.iter().filter(|t| t.status == Status::NotMet).collect();
    if not_met.is_empty() {
        return para("all-met", &[]);
    }
    let mut items = Vec::new();
    for t in not_met {
        let why = match t.key {
            "five_nodes" => five_nodes_why(r)?,
            key => para(why_paragraph(key), &[])?,
        };
        items.push(format!("- **{}** — {}: {}", t.target, t.measured, why));
    }
    Ok(items.join("\n"))
}

/// The paragraph of bench/report/paragraphs.md explaining a missed target.
fn why_paragraph(key: &str) -> &'static str {
    match key {
        "delete" => "why-delete",
        "seq_read" => "why-seq-read",
        "seq_write" => "why-seq-write",
        "bw_bytes" => "why-bw-bytes",
        "stat" | "read" | "create" => "why-small-files",
        "vis" | "vis_md" | "burst" | "bw_time" => "why-replication",
        "memory" => "why-memory",
        _ => "why-other",
    }
}

#[cfg(test)]
mod fixture;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn numbers_format() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(num(f64::NAN, "ms"), "–");
        assert_eq!(num(0.456, "ms"), "0.46");
        assert_eq!(num(15020.4, "ms"), "15,020");
        assert_eq!(num(4.5612, "GB/s"), "4.56");
        assert_eq!(num(1.184, "MB"), "1.18");
        assert_eq!(num(96.4, "%"), "96");
        assert_eq!(ratio(2.0, 1.0), "2.00×");
    }

    /// A small run: depfs with 3 and 5 nodes, and a tree with an NFS row.
    pub(crate) fn sample() -> Results {
        use crate::replication::{Burst, Visibility};
        let repl = |label, receivers, ms: f64| ReplResult {
            label,
            receivers,
            vis: Visibility {
                create: vec![ms, ms * 1.5, ms * 2.0],
                modify: vec![ms; 3],
                delete: vec![ms; 3],
                timeouts: [0; 3],
                cpu: Default::default(),
                sent: None,
            },
            bursts: vec![Burst {
                files: 2,
                write_ms: 10.0,
                after_last_close_ms: Some(ms * 50.0),
                curve_ms: vec![1.0, 10.0 + ms * 50.0],
                cpu: None,
                sent: None,
            }],
            bandwidth: None,
            bytes_how: "test".into(),
        };
        Results {
            machine: crate::machine::Machine::default(),
            command: "depfs-bench all".into(),
            params: Params {
                quick: true,
                local: crate::workloads::LocalParams {
                    files: 10,
                    dirs: 2,
                    seq_mib: 1,
                    rand_reads: 10,
                },
                local_reps: 1,
                repl_reps: 1,
                burst_files: 2,
                poll_us: 100,
                apis: vec![100],
                rss_files: 10,
            },
            local: vec![],
            repl: vec![repl(DEPFS3, 2, 1.0), repl(DEPFS5, 4, 1.2)],
            trees: vec![TreeResult {
                apis: 100,
                files: 221,
                bytes: 1000,
                rows: vec![
                    TreeRow {
                        label: NFS,
                        write_s: 2.0,
                        read_s: 1.0,
                        converge: Converge::Shared,
                    },
                    TreeRow {
                        label: DEPFS3,
                        write_s: 1.0,
                        read_s: 0.5,
                        converge: Converge::After(0.3),
                    },
                ],
            }],
            memory: None,
            skipped: vec![],
            wall_s: 1.0,
            load_after: String::new(),
        }
    }

    #[test]
    fn five_nodes_against_three_and_nfs_in_the_tree_table() {
        let mut r = sample();
        let text = render(&r, "bench", "bench/results.json").unwrap();
        assert!(text.contains("### 5 nodes against 3"));
        assert!(text.contains("| visibility after create, p50 (ms) | 1.50 | 1.80 | 1.20× |"));
        // 5 nodes: create p50 1.8 ms, p99 2.4 ms and the burst 60 ms are within the bounds
        assert!(text.contains("**Does it degrade?** Not beyond the targets"));
        assert!(text.contains(
            "| NFS (ganesha, libnfs) | 2.00 | 111 | – | 1.00× | 1.00 | 1.00× | n/a: shared storage"
        ));
        assert!(text.contains("| depfs 3 nodes | 1.00 | 221 | – | 0.50× | 0.50 | 0.50× | 0.30 |"));
        assert!(text.contains("[`bench/results.json`](bench/results.json)"));
        let five = targets(&r)
            .into_iter()
            .find(|t| t.key == "five_nodes")
            .unwrap();
        assert_eq!(five.status, Status::Met);
        // a burst of 0.5 s with 5 nodes misses the 0.3 s bound
        r.repl[1].bursts[0].after_last_close_ms = Some(500.0);
        let five = targets(&r)
            .into_iter()
            .find(|t| t.key == "five_nodes")
            .unwrap();
        assert_eq!(five.status, Status::NotMet);
        assert!(render(&r, "bench", "bench/results.json")
            .unwrap()
            .contains("**Does it degrade?** Yes"));
        r.repl.pop();
        let five = targets(&r)
            .into_iter()
            .find(|t| t.key == "five_nodes")
            .unwrap();
        assert_eq!(five.status, Status::NotMeasured);
    }

    #[test]
    fn chart_links_are_relative_to_the_report() {
        assert_eq!(
            chart_prefix(Path::new("docs/benchmarks.md"), Path::new("docs/bench")),
            "bench"
        );
        assert_eq!(
            chart_prefix(
                Path::new("docs/benchmarks.md"),
                Path::new("docs/bench/results.json")
            ),
            "bench/results.json"
        );
    }
}
