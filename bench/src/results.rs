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
pub const DEPFS5: &str = "depfs 5 nodes";
pub const LSYNCD_TUNED: &str = "lsyncd delay 0";
pub const LSYNCD_DEFAULT: &str = "lsyncd delay 15 (default)";
pub const GLUSTER: &str = "GlusterFS replica 2";

/// Every system label.
pub const LABELS: [&str; 9] = [
    NATIVE,
    BINDFS,
    NFS,
    DEPFS1,
    DEPFS3,
    DEPFS5,
    LSYNCD_TUNED,
    LSYNCD_DEFAULT,
    GLUSTER,
];

/// The `'static` label constant equal to `s`, if there is one.
pub fn label_of(s: &str) -> Option<&'static str> {
    LABELS.into_iter().find(|l| *l == s)
}

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
    /// The burst whose after-last-close time is the median (timeouts count as largest;
    /// the upper median for an even count, as [`crate::util::median`]).
    pub fn median_burst(&self) -> Option<&Burst> {
        let mut v: Vec<&Burst> = self.bursts.iter().collect();
        v.sort_by(|a, b| {
            let k = |x: &Burst| x.after_last_close_ms.unwrap_or(f64::INFINITY);
            k(a).total_cmp(&k(b))
        });
        v.get(v.len() / 2).copied()
    }
}

/// How a deployment tree reached the other node(s).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Converge {
    /// One copy on one node (native, bindfs, depfs 1 node).
    NotReplicated,
    /// Shared storage (NFS): one copy on the server that every client reads; nothing to
    /// converge.
    Shared,
    /// Complete on every receiver this many seconds after the last close.
    After(f64),
    /// Not complete within the deadline (s).
    NotWithin(f64),
}

impl Converge {
    /// The seconds until complete everywhere, if measured.
    pub fn secs(self) -> Option<f64> {
        match self {
            Converge::After(s) => Some(s),
            _ => None,
        }
    }

    /// The table cell.
    pub fn text(self) -> String {
        match self {
            Converge::NotReplicated => "(not replicated)".into(),
            Converge::Shared => "n/a: shared storage (one copy, on the server)".into(),
            Converge::After(s) => crate::util::num(s, "s"),
            Converge::NotWithin(d) => format!("not within {d:.0} s"),
        }
    }
}

/// The deployment tree on one system.
#[derive(Clone, Debug)]
pub struct TreeRow {
    pub label: &'static str,
    pub write_s: f64,
    pub read_s: f64,
    pub converge: Converge,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_burst_is_the_upper_median_and_timeouts_count_as_largest() {
        let b = |ms: Option<f64>| Burst {
            after_last_close_ms: ms,
            ..Burst::default()
        };
        let mut r = ReplResult {
            label: DEPFS3,
            receivers: 2,
            vis: Visibility::default(),
            bursts: vec![b(Some(146.0)), b(Some(90.5))],
            bandwidth: None,
            bytes_how: String::new(),
        };
        let median_ms = |r: &ReplResult| r.median_burst().and_then(|b| b.after_last_close_ms);
        assert_eq!(median_ms(&r), Some(146.0));
        r.bursts.push(b(None));
        assert_eq!(median_ms(&r), Some(146.0));
        r.bursts.push(b(None));
        assert_eq!(median_ms(&r), None);
    }
}
