//! Everything one `depfs-bench all` run measured, as plain data for the report and
//! the charts.

use crate::machine::Machine;
use crate::replication::{Bandwidth, Burst, Visibility};
use crate::util::median;
use crate::workloads::{LocalParams, LocalRun, Metric};

/// Labels of the systems, used as keys across tables and charts.
pub const NATIVE: &str = "native";
pub const BINDFS: &str = "bindfs";
pub const NFS: &str = "NFS (ganesha, libnfs)";
pub const DEPFS1: &str = "depfs 1 node";
pub const DEPFS3: &str = "depfs 3 nodes";
pub const LSYNCD_TUNED: &str = "lsyncd delay 0";
pub const LSYNCD_DEFAULT: &str = "lsyncd delay 15 (default)";
pub const GLUSTER: &str = "GlusterFS replica 2";

/// Sizes and counts of the run.
#[derive(Clone, Debug)]
pub struct Params {
    pub quick: bool,
    pub local: LocalParams,
    pub local_reps: usize,
    pub repl_reps: usize,
    pub burst_files: usize,
    pub poll_us: u64,
    pub apis: Vec<usize>,
    pub rss_files: usize,
}

/// Local operations on one system.
#[derive(Clone, Debug)]
pub struct LocalResult {
    pub label: &'static str,
    pub runs: Vec<LocalRun>,
}

impl LocalResult {
    /// The median over runs of one figure.
    pub fn median(&self, m: &Metric) -> f64 {
        median(&self.runs.iter().map(m.get).collect::<Vec<_>>())
    }

    /// (min, max) over runs of one figure.
    pub fn range(&self, m: &Metric) -> (f64, f64) {
        self.runs
            .iter()
            .map(m.get)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    }
}

/// Replication on one system.
#[derive(Clone, Debug)]
pub struct ReplResult {
    pub label: &'static str,
    pub receivers: usize,
    pub vis: Visibility,
    pub bursts: Vec<Burst>,
    pub bandwidth: Option<Bandwidth>,
    /// How bytes were counted, or why not.
    pub bytes_how: String,
}

impl ReplResult {
    /// The burst whose after-last-close time is the median (timeouts count as largest).
    pub fn median_burst(&self) -> Option<&Burst> {
        let mut v: Vec<&Burst> = self.bursts.iter().collect();
        v.sort_by(|a, b| {
            let k = |x: &Burst| x.after_last_close_ms.unwrap_or(f64::INFINITY);
            k(a).total_cmp(&k(b))
        });
        v.get(v.len().saturating_sub(1) / 2).copied()
    }
}

/// The deployment tree on one system.
#[derive(Clone, Debug)]
pub struct TreeRow {
    pub label: &'static str,
    pub write_s: f64,
    pub read_s: f64,
    /// For replicated systems: s from the last close until the whole tree was complete on
    /// every receiver (inner None: not within the deadline).
    pub converge_s: Option<Option<f64>>,
}

/// The deployment tree for one size.
#[derive(Clone, Debug)]
pub struct TreeResult {
    pub apis: usize,
    pub files: usize,
    pub bytes: u64,
    pub rows: Vec<TreeRow>,
}

/// Daemon memory while a one-node depfs fills up.
#[derive(Clone, Debug, Default)]
pub struct MemoryResult {
    /// (files, VmRSS KiB, VmHWM KiB), the first at 0 files (just mounted).
    pub points: Vec<(usize, u64, u64)>,
    /// VmRSS/VmHWM after a `stat` walk of every file.
    pub after_walk: Option<(u64, u64)>,
    pub create_s: f64,
}

/// Everything of one run.
#[derive(Clone, Debug)]
pub struct Results {
    pub machine: Machine,
    pub command: String,
    pub params: Params,
    pub local: Vec<LocalResult>,
    pub repl: Vec<ReplResult>,
    pub trees: Vec<TreeResult>,
    pub memory: Option<MemoryResult>,
    /// Systems or parts not measured, and why.
    pub skipped: Vec<String>,
    pub wall_s: f64,
    /// /proc/loadavg (1, 5, 15 min) at the end of the run.
    pub load_after: String,
}

impl Results {
    pub fn local(&self, label: &str) -> Option<&LocalResult> {
        self.local
            .iter()
            .find(|l| l.label == label && !l.runs.is_empty())
    }

    pub fn repl(&self, label: &str) -> Option<&ReplResult> {
        self.repl.iter().find(|r| r.label == label)
    }
}
