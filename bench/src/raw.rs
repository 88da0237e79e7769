//! The raw figures of one `depfs-bench all` run as JSON (docs/bench/results.json, next to
//! the report): every repetition's measurements (each local run, each visibility trial,
//! each burst with its arrival curve, each tree), the medians and percentiles the report
//! shows, the targets as judged (docs/targets.md), the machine and the parameters.
//! Numbers are rounded to 6 significant digits; a figure that could not be measured is `null`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::replication::{Bandwidth, Burst, CpuUse, SentBytes, Visibility};
use crate::report::{self, Status};
use crate::results::*;
use crate::util::{median, percentile};
use crate::workloads::{LocalRun, METRICS};

/// Bumped when a field changes meaning or disappears.
const FORMAT: u32 = 1;

/// Writes the JSON of `r` to `path` (creating its directory).
pub fn write(r: &Results, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(&to_json(r)).context("encode results.json")?;
    text.push('\n');
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// A number rounded to 6 significant digits; `null` if not finite.
fn n(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let rounded: f64 = format!("{x:.5e}").parse().unwrap_or(x);
    json!(rounded)
}

fn ns(v: &[f64]) -> Value {
    Value::Array(v.iter().map(|&x| n(x)).collect())
}

/// The run as one JSON document.
pub fn to_json(r: &Results) -> Value {
    let m = &r.machine;
    let p = &r.params;
    let packages: Map<String, Value> = m
        .packages
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "format": FORMAT,
        "generated_by": "depfs-bench all",
        "command": r.command,
        "date": m.date,
        "quick": p.quick,
        "wall_s": n(r.wall_s),
        "machine": {
            "cpu": m.cpu,
            "cpus": m.cpus,
            "ram_gib": n(m.ram_gib),
            "kernel": m.kernel,
            "var_tmp_fs": m.var_tmp_fs,
            "load_before": m.load_before,
            "load_after": r.load_after,
            "depfs_commit": m.depfs_commit,
            "depfs_version": m.depfs_version,
            "depfs_rustc": m.depfs_rustc,
            "depfs_binary": m.depfs_binary,
            "depfs_built": m.depfs_built,
            "packages": packages,
        },
        "params": {
            "local_files": p.local.files,
            "local_dirs": p.local.dirs,
            "seq_mib": p.local.seq_mib,
            "rand_reads": p.local.rand_reads,
            "local_reps": p.local_reps,
            "repl_reps": p.repl_reps,
            "burst_files": p.burst_files,
            "poll_us": p.poll_us,
            "tree_apis": p.apis,
            "memory_files": p.rss_files,
        },
        "targets": report::targets(r).iter().map(|t| json!({
            "key": t.key,
            "target": t.target,
            "measured": t.measured,
            "status": match t.status {
                Status::Met => "met",
                Status::NotMet => "not met",
                Status::NotMeasured => "not measured",
            },
        })).collect::<Vec<_>>(),
        "local": r.local.iter().map(local).collect::<Vec<_>>(),
        "replication": r.repl.iter().map(repl).collect::<Vec<_>>(),
        "trees": r.trees.iter().map(tree).collect::<Vec<_>>(),
        "memory": r.memory.as_ref().map(|m| json!({
            "create_s": n(m.create_s),
            "points": m.points.iter().map(|(files, rss, hwm)| json!({
                "files": files, "vm_rss_kib": rss, "vm_hwm_kib": hwm,
            })).collect::<Vec<_>>(),
            "after_stat_walk": m.after_walk.map(|(rss, hwm)| json!({
                "vm_rss_kib": rss, "vm_hwm_kib": hwm,
            })),
        })),
        "skipped": r.skipped,
    })
}

/// One local run: every figure by its key.
fn local_run(run: &LocalRun) -> Value {
    Value::Object(
        METRICS
            .iter()
            .map(|m| (m.key.to_string(), n((m.get)(run))))
            .collect(),
    )
}

fn local(l: &LocalResult) -> Value {
    let per = |f: &dyn Fn(&crate::workloads::Metric) -> f64| -> Value {
        Value::Object(
            METRICS
                .iter()
                .map(|m| (m.key.to_string(), n(f(m))))
                .collect(),
        )
    };
    json!({
        "system": l.label,
        "units": Value::Object(METRICS.iter().map(|m| (m.key.to_string(), json!(m.unit))).collect()),
        "runs": l.runs.iter().map(local_run).collect::<Vec<_>>(),
        "median": per(&|m| l.median(m)),
        "min": per(&|m| l.range(m).0),
        "max": per(&|m| l.range(m).1),
    })
}

fn visibility(v: &Visibility) -> Value {
    let op = |ms: &[f64], timeouts: usize| {
        json!({
            "trials": ms.len() + timeouts,
            "timeouts": timeouts,
            "p50_ms": n(percentile(ms, 0.5)),
            "p99_ms": n(percentile(ms, 0.99)),
            "max_ms": n(percentile(ms, 1.0)),
            "ms": ns(ms),
        })
    };
    json!({
        "create": op(&v.create, v.timeouts[0]),
        "modify": op(&v.modify, v.timeouts[1]),
        "delete": op(&v.delete, v.timeouts[2]),
        "cpu": cpu(&v.cpu),
        "sent_bytes": v.sent.as_ref().map(sent),
    })
}

fn sent(b: &SentBytes) -> Value {
    json!({ "writer": b.writer, "all_nodes": b.all_nodes })
}

fn cpu(c: &CpuUse) -> Value {
    json!({
        "wall_s": n(c.wall_s),
        "daemons_cpu_s": c.daemons_s.map(n),
        "machine_busy_fraction": n(c.machine_busy_fraction()),
    })
}

fn burst(b: &Burst) -> Value {
    json!({
        "files": b.files,
        "write_ms": n(b.write_ms),
        "after_last_close_ms": b.after_last_close_ms.map(n),
        "complete_files": b.curve_ms.len(),
        "cpu": b.cpu.as_ref().map(cpu),
        "sent_bytes": b.sent.as_ref().map(sent),
        "curve_ms": ns(&b.curve_ms),
    })
}

fn bandwidth(b: &Bandwidth) -> Value {
    json!({
        "visible_ms": n(b.visible_ms),
        "bytes_all_receivers": b.bytes,
        "bytes_per_receiver": b.bytes.map(|x| x / b.receivers.max(1) as u64),
        "receivers": b.receivers,
    })
}

fn repl(x: &ReplResult) -> Value {
    let after: Vec<f64> = x
        .bursts
        .iter()
        .map(|b| b.after_last_close_ms.unwrap_or(f64::INFINITY))
        .collect();
    let write: Vec<f64> = x.bursts.iter().map(|b| b.write_ms).collect();
    json!({
        "system": x.label,
        "receivers": x.receivers,
        "visibility": visibility(&x.vis),
        "bursts": x.bursts.iter().map(burst).collect::<Vec<_>>(),
        "burst_median": {
            "write_ms": n(median(&write)),
            // null when the median burst did not complete (timeouts count as largest)
            "after_last_close_ms": x.median_burst().and_then(|b| b.after_last_close_ms).map(n),
            "worst_after_last_close_ms": n(after.iter().copied().fold(f64::NAN, f64::max)),
        },
        "bandwidth": x.bandwidth.as_ref().map(bandwidth),
        "bytes_counted_how": x.bytes_how,
    })
}

fn tree(t: &TreeResult) -> Value {
    json!({
        "apis": t.apis,
        "files": t.files,
        "bytes": t.bytes,
        "rows": t.rows.iter().map(|row| json!({
            "system": row.label,
            "write_s": n(row.write_s),
            "read_s": n(row.read_s),
            "converge_s": row.converge.secs().map(n),
            "converge": match row.converge {
                Converge::NotReplicated => "not replicated".to_string(),
                Converge::Shared => "shared storage".to_string(),
                Converge::After(_) => "complete on every receiver".to_string(),
                Converge::NotWithin(d) => format!("not within {d:.0} s"),
            },
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_rounded_and_nan_is_null() {
        assert_eq!(n(1.234_567_89), json!(1.23457));
        assert_eq!(n(123_456_789.0), json!(123_457_000.0));
        assert_eq!(n(f64::NAN), Value::Null);
        assert_eq!(n(f64::INFINITY), Value::Null);
    }

    #[test]
    fn every_repetition_and_the_medians_are_written() {
        let r = crate::report::tests::sample();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bench/results.json");
        write(&r, &path).unwrap();
        let v: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["format"], json!(FORMAT));
        let five = &v["replication"][1];
        assert_eq!(five["system"], json!(DEPFS5));
        assert_eq!(five["receivers"], json!(4));
        assert_eq!(five["visibility"]["create"]["ms"], json!([1.2, 1.8, 2.4]));
        assert_eq!(five["visibility"]["create"]["p50_ms"], json!(1.8));
        assert_eq!(five["bursts"][0]["after_last_close_ms"], json!(60.0));
        assert_eq!(five["burst_median"]["after_last_close_ms"], json!(60.0));
        let nfs = &v["trees"][0]["rows"][0];
        assert_eq!(nfs["converge"], json!("shared storage"));
        assert_eq!(nfs["converge_s"], Value::Null);
        assert_eq!(v["trees"][0]["rows"][1]["converge_s"], json!(0.3));
        assert!(v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == json!("five_nodes") && t["status"] == json!("met")));
    }
}
