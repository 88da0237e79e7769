//! The report rendered from a fixed run, compared with the saved output
//! (bench/tests/fixtures/): a change to the report's text or layout shows up here.
//!
//! The run is the raw figures of a real full run (bench/tests/fixtures/results.json, a
//! frozen copy of a docs/bench/results.json), read back into [`Results`]; a second,
//! degraded variant of it misses every target, so that every explanation of a missed
//! target is rendered too. After an intended change of the report, regenerate the
//! fixtures with `DEPFS_BENCH_BLESS=1 cargo test -p depfs-bench report` and review
//! their diff.

use std::path::PathBuf;

use serde_json::Value;

use super::render;
use crate::machine::Machine;
use crate::replication::{Bandwidth, Burst, CpuUse, SentBytes, Visibility};
use crate::results::*;
use crate::workloads::{LocalParams, LocalRun};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn label(v: &Value) -> &'static str {
    let s = v.as_str().unwrap();
    label_of(s).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn u(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_string()
}

fn fs(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn cpu(v: &Value) -> CpuUse {
    // only the busy fraction was kept: as parts per million
    let busy = f(&v["machine_busy_fraction"]);
    CpuUse {
        wall_s: f(&v["wall_s"]),
        daemons_s: v["daemons_cpu_s"].as_f64(),
        machine_busy: if busy.is_finite() {
            (busy * 1e6).round() as u64
        } else {
            0
        },
        machine_total: if busy.is_finite() { 1_000_000 } else { 0 },
    }
}

fn sent(v: &Value) -> Option<SentBytes> {
    v.is_object().then(|| SentBytes {
        writer: v["writer"].as_u64().unwrap(),
        all_nodes: v["all_nodes"].as_u64().unwrap(),
    })
}

fn local_run(v: &Value) -> LocalRun {
    LocalRun {
        create: f(&v["create"]),
        stat: f(&v["stat"]),
        read: f(&v["read"]),
        delete: f(&v["delete"]),
        seq_write: f(&v["seq_write"]),
        seq_read: f(&v["seq_read"]),
        rand_rate: f(&v["rand_rate"]),
        rand_p50_us: f(&v["rand_p50"]),
        rand_p99_us: f(&v["rand_p99"]),
    }
}

fn repl(v: &Value) -> ReplResult {
    let vis = &v["visibility"];
    let op = |k: &str| fs(&vis[k]["ms"]);
    let timeouts = |k: &str| u(&vis[k]["timeouts"]);
    ReplResult {
        label: label(&v["system"]),
        receivers: u(&v["receivers"]),
        vis: Visibility {
            create: op("create"),
            modify: op("modify"),
            delete: op("delete"),
            timeouts: [timeouts("create"), timeouts("modify"), timeouts("delete")],
            cpu: cpu(&vis["cpu"]),
            sent: sent(&vis["sent_bytes"]),
        },
        bursts: v["bursts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| Burst {
                files: u(&b["files"]),
                write_ms: f(&b["write_ms"]),
                after_last_close_ms: b["after_last_close_ms"].as_f64(),
                curve_ms: fs(&b["curve_ms"]),
                cpu: b["cpu"].is_object().then(|| cpu(&b["cpu"])),
                sent: sent(&b["sent_bytes"]),
            })
            .collect(),
        bandwidth: v["bandwidth"].is_object().then(|| Bandwidth {
            visible_ms: f(&v["bandwidth"]["visible_ms"]),
            bytes: v["bandwidth"]["bytes_all_receivers"].as_u64(),
            receivers: u(&v["bandwidth"]["receivers"]),
        }),
        bytes_how: s(&v["bytes_counted_how"]),
    }
}

fn tree(v: &Value) -> TreeResult {
    let row = |r: &Value| TreeRow {
        label: label(&r["system"]),
        write_s: f(&r["write_s"]),
        read_s: f(&r["read_s"]),
        converge: match (r["converge"].as_str().unwrap(), r["converge_s"].as_f64()) {
            ("not replicated", _) => Converge::NotReplicated,
            ("shared storage", _) => Converge::Shared,
            (_, Some(secs)) => Converge::After(secs),
            (other, None) => Converge::NotWithin(
                other
                    .trim_start_matches("not within ")
                    .trim_end_matches(" s")
                    .parse()
                    .unwrap(),
            ),
        },
    };
    TreeResult {
        apis: u(&v["apis"]),
        files: u(&v["files"]),
        bytes: v["bytes"].as_u64().unwrap(),
        rows: v["rows"].as_array().unwrap().iter().map(row).collect(),
    }
}

fn memory(v: &Value) -> Option<MemoryResult> {
    let kib = |p: &Value, k: &str| p[k].as_u64().unwrap();
    v.is_object().then(|| MemoryResult {
        points: v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (u(&p["files"]), kib(p, "vm_rss_kib"), kib(p, "vm_hwm_kib")))
            .collect(),
        after_walk: v["after_stat_walk"].is_object().then(|| {
            (
                kib(&v["after_stat_walk"], "vm_rss_kib"),
                kib(&v["after_stat_walk"], "vm_hwm_kib"),
            )
        }),
        create_s: f(&v["create_s"]),
    })
}

fn machine(v: &Value) -> Machine {
    let m = &v["machine"];
    Machine {
        cpu: s(&m["cpu"]),
        cpus: u(&m["cpus"]),
        ram_gib: f(&m["ram_gib"]),
        kernel: s(&m["kernel"]),
        var_tmp_fs: s(&m["var_tmp_fs"]),
        date: s(&v["date"]),
        load_before: s(&m["load_before"]),
        depfs_commit: s(&m["depfs_commit"]),
        depfs_version: s(&m["depfs_version"]),
        depfs_rustc: s(&m["depfs_rustc"]),
        depfs_binary: s(&m["depfs_binary"]),
        depfs_built: s(&m["depfs_built"]),
        packages: m["packages"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), s(v)))
            .collect(),
    }
}

/// The run of bench/tests/fixtures/results.json.
pub(crate) fn recorded() -> Results {
    let path = fixtures().join("results.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let p = &v["params"];
    let arr = |k: &str| v[k].as_array().unwrap().clone();
    Results {
        machine: machine(&v),
        command: s(&v["command"]),
        params: Params {
            quick: v["quick"].as_bool().unwrap(),
            local: LocalParams {
                files: u(&p["local_files"]),
                dirs: u(&p["local_dirs"]),
                seq_mib: u(&p["seq_mib"]),
                rand_reads: u(&p["rand_reads"]),
            },
            local_reps: u(&p["local_reps"]),
            repl_reps: u(&p["repl_reps"]),
            burst_files: u(&p["burst_files"]),
            poll_us: p["poll_us"].as_u64().unwrap(),
            apis: p["tree_apis"].as_array().unwrap().iter().map(u).collect(),
            rss_files: u(&p["memory_files"]),
        },
        local: arr("local")
            .iter()
            .map(|l| LocalResult {
                label: label(&l["system"]),
                runs: l["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(local_run)
                    .collect(),
            })
            .collect(),
        repl: arr("replication").iter().map(repl).collect(),
        trees: arr("trees").iter().map(tree).collect(),
        memory: memory(&v["memory"]),
        skipped: arr("skipped").iter().map(s).collect(),
        wall_s: f(&v["wall_s"]),
        load_after: s(&v["machine"]["load_after"]),
    }
}

/// The recorded run made to miss every target: a `--quick` run whose one-node depfs is
/// slow, whose replication is slow or times out, and whose daemon memory grows linearly.
fn degraded() -> Results {
    let mut r = recorded();
    r.params.quick = true;
    r.machine.load_before = "0.10 0.20 0.30".into();
    for l in r.local.iter_mut().filter(|l| l.label == DEPFS1) {
        for run in &mut l.runs {
            *run = LocalRun {
                create: 10.0,
                stat: 10.0,
                read: 10.0,
                delete: 10.0,
                seq_write: 0.1,
                seq_read: 0.1,
                ..*run
            };
        }
    }
    for x in r.repl.iter_mut().filter(|x| x.label.starts_with("depfs")) {
        for v in [&mut x.vis.create, &mut x.vis.modify, &mut x.vis.delete] {
            v.iter_mut().for_each(|ms| *ms *= 20.0);
        }
        x.vis.timeouts = [1, 0, 2];
        for (i, b) in x.bursts.iter_mut().enumerate() {
            b.after_last_close_ms = (i != 0).then_some(900.0 + i as f64);
        }
        if let Some(b) = &mut x.bandwidth {
            b.visible_ms = 120.0;
        }
    }
    if let Some(m) = &mut r.memory {
        for (i, p) in m.points.iter_mut().enumerate() {
            p.1 = 16_000 + 10_000 * i as u64;
        }
    }
    r.skipped.push("a second reason\nover two lines".into());
    r
}

/// Compares `text` with the fixture `name`, or writes it with DEPFS_BENCH_BLESS=1.
fn check(name: &str, text: &str) {
    let path = fixtures().join(name);
    if std::env::var_os("DEPFS_BENCH_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap();
    if text != want {
        let line = text
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(text.lines().count().min(want.lines().count()));
        panic!(
            "the report differs from {} from line {}:\n  got:  {:?}\n  want: {:?}\n(DEPFS_BENCH_BLESS=1 regenerates it)",
            path.display(),
            line + 1,
            text.lines().nth(line),
            want.lines().nth(line)
        );
    }
}

#[test]
fn report_of_a_recorded_run_is_unchanged() {
    check(
        "report.md",
        &render(&recorded(), "bench", "bench/results.json").unwrap(),
    );
}

#[test]
fn report_of_a_run_missing_every_target_is_unchanged() {
    let text = render(&degraded(), "bench", "bench/results.json").unwrap();
    check("report-degraded.md", &text);
    // the variant does what it claims: every target is missed
    let ts = super::targets(&degraded());
    assert!(
        ts.iter().all(|t| t.status == super::Status::NotMet),
        "{:?}",
        ts.iter().map(|t| (t.key, t.status)).collect::<Vec<_>>()
    );
}

#[test]
fn a_run_meeting_every_target_it_measures_has_no_stray_blank_lines() {
    let text = render(&super::tests::sample(), "bench", "bench/results.json").unwrap();
    assert!(text.contains("Every measured target is met in this run.\n\n"));
    assert!(!text.contains("\n\n\n"), "{text}");
    assert!(text.ends_with(".\n\n"));
}
