//! What the run was measured on: the machine, the date, the exact versions.

use std::fs;
use std::path::Path;

use crate::util::query;

/// The machine and software of a run, as text for the report.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub ram_gib: f64,
    pub kernel: String,
    /// Filesystem type and device of /var/tmp (where every system keeps its data).
    pub var_tmp_fs: String,
    /// UTC date and time of the start of the run.
    pub date: String,
    pub load_before: String,
    /// depfs: repository commit and dirty flag, `depfs --version`, the rustc that built it.
    pub depfs_commit: String,
    pub depfs_version: String,
    pub depfs_rustc: String,
    pub depfs_binary: String,
    /// When the depfs binary was last modified (built).
    pub depfs_built: String,
    /// (package, version) from dpkg.
    pub packages: Vec<(String, String)>,
}

const PACKAGES: &[&str] = &[
    "bindfs",
    "nfs-ganesha",
    "nfs-ganesha-vfs",
    "libnfs13",
    "rpcbind",
    "lsyncd",
    "rsync",
    "glusterfs-server",
    "glusterfs-client",
    "fuse3",
];

impl Machine {
    /// Collects everything; unknown items say "unknown".
    pub fn collect(depfs: &Path) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let ram_gib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map(|kib| kib / (1 << 20) as f64)
            .unwrap_or(f64::NAN);
        let unknown = || "unknown".to_string();
        let var_tmp_fs = query(
            "findmnt",
            &["-n", "-o", "FSTYPE,SOURCE,OPTIONS", "--target", "/var/tmp"],
        )
        .map(
            |s| match s.split_whitespace().collect::<Vec<_>>().as_slice() {
                [fs_type, dev, opts, ..] => format!("{fs_type} on {dev}, mounted {opts}"),
                _ => s.clone(),
            },
        )
        .unwrap_or_else(unknown);
        let packages = PACKAGES
            .iter()
            .map(|p| {
                let v = query("dpkg-query", &["-W", "-f=${Version}", p])
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "not installed".into());
                (p.to_string(), v)
            })
            .collect();
        Machine {
            cpu,
            cpus,
            ram_gib,
            kernel: query("uname", &["-r"]).unwrap_or_else(unknown),
            var_tmp_fs,
            date: query("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(unknown),
            load_before: load_average(),
            depfs_commit: git_commit(),
            depfs_version: query(&depfs.to_string_lossy(), &["--version"]).unwrap_or_else(unknown),
            depfs_rustc: rustc_of(depfs).unwrap_or_else(unknown),
            depfs_binary: depfs.display().to_string(),
            depfs_built: query(
                "date",
                &["-u", "-r", &depfs.to_string_lossy(), "+%Y-%m-%d %H:%M UTC"],
            )
            .unwrap_or_else(unknown),
            packages,
        }
    }

    /// The dpkg version of `package`.
    pub fn package(&self, package: &str) -> &str {
        self.packages
            .iter()
            .find(|(p, _)| p == package)
            .map(|(_, v)| v.as_str())
            .unwrap_or("unknown")
    }
}

/// `git rev-parse --short HEAD` of the working directory's repository, plus "(dirty)"
/// when files outside the regenerated report differ from it.
fn git_commit() -> String {
    let Some(head) = query("git", &["rev-parse", "--short", "HEAD"]) else {
        return "unknown (not run inside the git repository)".into();
    };
    let dirty = query(
        "git",
        &[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)docs/benchmarks.md",
            ":(exclude)docs/bench",
        ],
    )
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head} (dirty: uncommitted changes to tracked files)")
    } else {
        head
    }
}

/// The rustc version recorded in the binary's `.comment` section ("rustc version ...").
fn rustc_of(binary: &Path) -> Option<String> {
    let bytes = fs::read(binary).ok()?;
    let needle = b"rustc version ";
    let at = bytes.windows(needle.len()).position(|w| w == needle)?;
    let rest = &bytes[at + needle.len()..];
    let end = rest.iter().position(|&b| b == 0 || b == b'\n')?.min(80);
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// The 1, 5 and 15 minute load averages from /proc/loadavg.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
