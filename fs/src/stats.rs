//! Latency of filesystem operations, for the metrics endpoint: a count, a sum and a
//! fixed-bucket histogram per operation, updated with relaxed atomics (no locks on the
//! request path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The operations measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsOp {
    /// `lookup` calls.
    Lookup,
    /// `getattr` calls.
    Getattr,
    /// `setattr` calls.
    Setattr,
    /// `readlink` calls.
    Readlink,
    /// `mknod` calls.
    Mknod,
    /// `mkdir` calls.
    Mkdir,
    /// `unlink` calls.
    Unlink,
    /// `rmdir` calls.
    Rmdir,
    /// `symlink` calls.
    Symlink,
    /// `rename` calls.
    Rename,
    /// `link` calls.
    Link,
    /// `open` calls.
    Open,
    /// `read` calls.
    Read,
    /// `write` calls.
    Write,
    /// `flush` calls.
    Flush,
    /// `release` calls.
    Release,
    /// `fsync` calls.
    Fsync,
    /// `opendir` calls.
    Opendir,
    /// `readdir` calls.
    Readdir,
    /// `statfs` calls.
    Statfs,
    /// `create` calls.
    Create,
    /// `xattr` calls.
    Xattr,
    /// `access` calls.
    Access,
}

impl FsOp {
    /// Every operation, in the order of [`FsOp::index`].
    pub const ALL: [FsOp; 23] = [
        FsOp::Lookup,
        FsOp::Getattr,
        FsOp::Setattr,
        FsOp::Readlink,
        FsOp::Mknod,
        FsOp::Mkdir,
        FsOp::Unlink,
        FsOp::Rmdir,
        FsOp::Symlink,
        FsOp::Rename,
        FsOp::Link,
        FsOp::Open,
        FsOp::Read,
        FsOp::Write,
        FsOp::Flush,
        FsOp::Release,
        FsOp::Fsync,
        FsOp::Opendir,
        FsOp::Readdir,
        FsOp::Statfs,
        FsOp::Create,
        FsOp::Xattr,
        FsOp::Access,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            FsOp::Lookup => "lookup",
            FsOp::Getattr => "getattr",
            FsOp::Setattr => "setattr",
            FsOp::Readlink => "readlink",
            FsOp::Mknod => "mknod",
            FsOp::Mkdir => "mkdir",
            FsOp::Unlink => "unlink",
            FsOp::Rmdir => "rmdir",
            FsOp::Symlink => "symlink",
            FsOp::Rename => "rename",
            FsOp::Link => "link",
            FsOp::Open => "open",
            FsOp::Read => "read",
            FsOp::Write => "write",
            FsOp::Flush => "flush",
            FsOp::Release => "release",
            FsOp::Fsync => "fsync",
            FsOp::Opendir => "opendir",
            FsOp::Readdir => "readdir",
            FsOp::Statfs => "statfs",
            FsOp::Create => "create",
            FsOp::Xattr => "xattr",
            FsOp::Access => "access",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the histogram buckets, in seconds (the last bucket is +Inf).
pub const BUCKETS_S: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1, 1.0,
];

#[derive(Default)]
struct OpCounters {
    count: AtomicU64,
    sum_ns: AtomicU64,
    /// Non-cumulative counts per bucket; the last is above every bound.
    buckets: [AtomicU64; BUCKETS_S.len() + 1],
}

/// Counters for every operation.
#[derive(Default)]
pub struct FsStats {
    ops: [OpCounters; FsOp::ALL.len()],
    passthrough_opens: AtomicU64,
    panics: AtomicU64,
}

/// One operation's figures: count, total seconds, and cumulative bucket counts.
#[derive(Debug, Clone, PartialEq)]
pub struct OpSnapshot {
    /// The operation.
    pub op: FsOp,
    /// Calls completed.
    pub count: u64,
    /// Their total time, in seconds.
    pub sum_s: f64,
    /// Cumulative counts for each bound of [`BUCKETS_S`], then +Inf.
    pub cumulative: Vec<u64>,
}

impl FsStats {
    /// Counts an open served through FUSE passthrough.
    pub fn passthrough_opened(&self) {
        self.passthrough_opens.fetch_add(1, Ordering::Relaxed);
    }

    /// Opens served through FUSE passthrough so far.
    pub fn passthrough_opens(&self) -> u64 {
        self.passthrough_opens.load(Ordering::Relaxed)
    }

    /// Counts an operation that panicked (and was answered `EIO`).
    pub fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Operations that panicked so far.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Records one call of `op` that took `ns` nanoseconds.
    pub fn record(&self, op: FsOp, ns: u64) {
        let c = &self.ops[op.index()];
        c.count.fetch_add(1, Ordering::Relaxed);
        c.sum_ns.fetch_add(ns, Ordering::Relaxed);
        let s = ns as f64 / 1e9;
        let bucket = BUCKETS_S
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS_S.len());
        c.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Measures `op` until the returned guard is dropped.
    pub fn timer(&self, op: FsOp) -> OpTimer<'_> {
        OpTimer {
            stats: self,
            op,
            start: Instant::now(),
        }
    }

    /// The figures of every operation called at least once.
    pub fn snapshot(&self) -> Vec<OpSnapshot> {
        FsOp::ALL
            .iter()
            .filter_map(|&op| {
                let c = &self.ops[op.index()];
                let count = c.count.load(Ordering::Relaxed);
                (count > 0).then(|| {
                    let mut total = 0;
                    let cumulative = c
                        .buckets
                        .iter()
                        .map(|b| {
                            total += b.load(Ordering::Relaxed);
                            total
                        })
                        .collect();
                    OpSnapshot {
                        op,
                        count,
                        sum_s: c.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
                        cumulative,
                    }
                })
            })
            .collect()
    }
}

/// Records the time since its creation when dropped.
pub struct OpTimer<'a> {
    stats: &'a FsStats,
    op: FsOp,
    start: Instant,
}

impl Drop for OpTimer<'_> {
    fn drop(&mut self) {
        let ns = self.start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.stats.record(self.op, ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_cumulative_buckets() {
        let s = FsStats::default();
        s.record(FsOp::Read, 30_000); // 30 µs
        s.record(FsOp::Read, 2_000_000); // 2 ms
        s.record(FsOp::Read, 5_000_000_000); // 5 s
        let snap = s.snapshot();
        assert_eq!(snap.len(), 1);
        let r = &snap[0];
        assert_eq!(r.count, 3);
        assert_eq!(r.cumulative[0], 1); // <= 50 µs
        assert_eq!(r.cumulative[5], 2); // <= 2.5 ms
        assert_eq!(r.cumulative[BUCKETS_S.len() - 1], 2); // <= 1 s
        assert_eq!(r.cumulative[BUCKETS_S.len()], 3); // +Inf
        assert!((r.sum_s - 5.00203).abs() < 1e-9);
    }
}
