//! Starting and stopping the systems under test, each behind a guard whose `Drop` stops
//! it: bindfs and depfs mounts, and the `bench/systems/*.sh` scripts (nfs-ganesha,
//! lsyncd, GlusterFS). A [`Workspace`] owns the temporary base directory and, when it
//! drops last, sweeps whatever is still mounted below it and tears down every script
//! system again (the scripts' teardown is idempotent) before removing the directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{progress, query, run_captured};

/// The temporary directory everything lives in, plus the final cleanup.
pub struct Workspace {
    pub base: PathBuf,
    /// `bench/systems` (the scripts).
    pub scripts: PathBuf,
    /// (script, STATE) of every script system set up, for the final teardown.
    started: Mutex<Vec<(PathBuf, PathBuf)>>,
}

impl Workspace {
    /// Creates `/var/tmp/depfs-bench-all-XXXXXX` (or under `parent`).
    pub fn new(parent: Option<&Path>, scripts: PathBuf) -> Result<Workspace> {
        let parent = parent.unwrap_or(Path::new("/var/tmp"));
        let base = tempfile::Builder::new()
            .prefix("depfs-bench-all-")
            .tempdir_in(parent)
            .with_context(|| format!("create a temporary directory in {}", parent.display()))?
            .keep();
        for s in ["nfs.sh", "lsyncd.sh", "gluster.sh", "build-nfsbench.sh"] {
            if !scripts.join(s).exists() {
                bail!(
                    "{} not found: pass --systems DIR (the repository's bench/systems)",
                    scripts.join(s).display()
                );
            }
        }
        Ok(Workspace {
            base,
            scripts,
            started: Mutex::new(Vec::new()),
        })
    }

    /// A new empty directory `name` in the base directory.
    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.base.join(name);
        fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        Ok(d)
    }

    /// Starts a script system: runs `SCRIPT setup ARGS` with `STATE` in the base
    /// directory and `env`; the returned guard runs `SCRIPT teardown` when dropped (also
    /// after a failed setup). Returns the guard and the script's stdout.
    pub fn script_system(
        &self,
        label: &str,
        script: &str,
        state_name: &str,
        env: &[(&str, &str)],
        args: &[&Path],
    ) -> Result<(ScriptSystem, String)> {
        let state = self.base.join(state_name);
        let script = self.scripts.join(script);
        if let Ok(mut s) = self.started.lock() {
            s.push((script.clone(), state.clone()));
        }
        let guard = ScriptSystem {
            label: label.to_string(),
            script,
            state,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            down: false,
        };
        progress(format!("setting up {label}"));
        let mut cmd = guard.command("setup");
        cmd.args(args);
        let out = run_captured(&mut cmd, false).with_context(|| format!("set up {label}"))?;
        Ok((guard, out))
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // Anything still mounted below base (a guard that could not unmount).
        for mp in mounts_below(&self.base).into_iter().rev() {
            progress(format!("final cleanup: unmounting {}", mp.display()));
            unmount(&mp);
        }
        let started = self.started.lock().map(|s| s.clone()).unwrap_or_default();
        for (script, state) in started.iter().rev() {
            if state.exists() {
                progress(format!("final cleanup: {} teardown", script.display()));
                let _ = run_captured(
                    Command::new(script).arg("teardown").env("STATE", state),
                    false,
                );
            }
        }
        if mounts_below(&self.base).is_empty() {
            progress(format!("removing {}", self.base.display()));
            if let Err(e) = fs::remove_dir_all(&self.base) {
                progress(format!(
                    "warning: cannot remove {}: {e}",
                    self.base.display()
                ));
            }
        } else {
            progress(format!(
                "warning: {} still has mounts below it; left in place",
                self.base.display()
            ));
        }
    }
}

/// A system started by one of the bench/systems scripts; torn down on drop.
pub struct ScriptSystem {
    pub label: String,
    script: PathBuf,
    pub state: PathBuf,
    env: Vec<(String, String)>,
    down: bool,
}

impl ScriptSystem {
    fn command(&self, verb: &str) -> Command {
        let mut cmd = Command::new(&self.script);
        cmd.arg(verb).env("STATE", &self.state);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Stops the system (idempotent).
    pub fn teardown(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        progress(format!("tearing down {}", self.label));
        let t = Instant::now();
        match run_captured(&mut self.command("teardown"), false) {
            Ok(_) => progress(format!(
                "  {} down in {:.1} s",
                self.label,
                t.elapsed().as_secs_f64()
            )),
            Err(e) => progress(format!("warning: teardown of {}: {e:#}", self.label)),
        }
    }

    /// The pid recorded in `STATE/NAME` (lsyncd.pid, glusterd.pid...).
    pub fn pid_file(&self, name: &str) -> Result<u32> {
        let p = self.state.join(name);
        let s = fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
        s.trim()
            .parse()
            .with_context(|| format!("{}: not a pid", p.display()))
    }
}

impl Drop for ScriptSystem {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A FUSE mount (bindfs or depfs) unmounted on drop; for depfs also the daemon's pid,
/// which is waited for and, if it does not exit, killed.
pub struct Mount {
    pub mountpoint: PathBuf,
    pub daemon_pid: Option<u32>,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let t = Instant::now();
        unmount(&self.mountpoint);
        if let Some(pid) = self.daemon_pid {
            let t = Instant::now();
            while pid_alive(pid) && t.elapsed() < Duration::from_secs(15) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if pid_alive(pid) {
                progress(format!(
                    "warning: depfs daemon {pid} still running; killing it"
                ));
                // SAFETY: kill(2) on the pid of a daemon this program started.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
        progress(format!(
            "unmounted {} in {:.1} s",
            self.mountpoint.display(),
            t.elapsed().as_secs_f64()
        ));
    }
}

/// Mounts `src` on `mnt` with bindfs (Debian's package, as `scripts/setup` installs it;
/// installed here with apt-get if missing).
pub fn bindfs(src: &Path, mnt: &Path) -> Result<Mount> {
    fs::create_dir_all(src)?;
    fs::create_dir_all(mnt)?;
    if query("sh", &["-c", "command -v bindfs"]).is_none() {
        progress("installing bindfs (apt-get)");
        let install = || {
            run_captured(
                Command::new("apt-get")
                    .args(["install", "-y", "-qq", "--no-install-recommends", "bindfs"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                false,
            )
        };
        if install().is_err() {
            run_captured(Command::new("apt-get").args(["update", "-qq"]), false)?;
            install().context("apt-get install bindfs")?;
        }
    }
    run_captured(Command::new("bindfs").arg(src).arg(mnt), false).context("run bindfs")?;
    Ok(Mount {
        mountpoint: mnt.to_path_buf(),
        daemon_pid: None,
    })
}

/// One mounted depfs node.
pub struct DepfsNode {
    pub config: PathBuf,
    pub mount: Mount,
}

impl DepfsNode {
    pub fn root(&self) -> &Path {
        &self.mount.mountpoint
    }
}

/// Mounts one depfs node described by `config_text` (written to `dir/NAME.toml`) on
/// `dir/mnt-NAME`.
fn mount_depfs(depfs: &Path, dir: &Path, name: &str, config_text: &str) -> Result<DepfsNode> {
    let config = dir.join(format!("{name}.toml"));
    fs::write(&config, config_text).with_context(|| format!("write {}", config.display()))?;
    let mnt = dir.join(format!("mnt-{name}"));
    fs::create_dir_all(&mnt)?;
    run_captured(
        Command::new(depfs).arg("mount").arg(&config).arg(&mnt),
        false,
    )
    .with_context(|| format!("depfs mount {}", config.display()))?;
    let pid = find_daemon(&config);
    if pid.is_none() {
        progress(format!("warning: no daemon process found for {name}"));
    }
    Ok(DepfsNode {
        config,
        mount: Mount {
            mountpoint: mnt,
            daemon_pid: pid,
        },
    })
}

/// A one-node depfs (`peers = []`) in `dir`.
pub fn depfs_single(depfs: &Path, dir: &Path, name: &str) -> Result<DepfsNode> {
    fs::create_dir_all(dir)?;
    let text = format!(
        "node = \"{name}\"\ndata_dir = \"{}\"\npeers = []\n",
        dir.join(format!("data-{name}")).display()
    );
    mount_depfs(depfs, dir, name, &text)
}

/// `n` depfs nodes on 127.0.0.1, full mesh, mutual TLS with a fresh CA (`depfs ca`).
/// Returns once every node is mounted; connections may still be coming up.
pub fn depfs_cluster(depfs: &Path, dir: &Path, n: usize) -> Result<Vec<DepfsNode>> {
    fs::create_dir_all(dir)?;
    let ca = dir.join("ca");
    let certs = dir.join("certs");
    run_captured(
        Command::new(depfs).args(["ca", "init", "--out"]).arg(&ca),
        false,
    )?;
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
    let mut nodes = Vec::new();
    for i in 0..n {
        let name = format!("gw{}", i + 1);
        run_captured(
            Command::new(depfs)
                .args(["ca", "issue", "--ca"])
                .arg(&ca)
                .args(["--node", &name, "--out"])
                .arg(&certs),
            false,
        )?;
        let peers: Vec<String> = (0..n)
            .filter(|&j| j != i)
            .map(|j| format!("\"127.0.0.1:{}\"", ports[j]))
            .collect();
        let text = format!(
            "node = \"{name}\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\npeers = [{}]\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.join(format!("data-{name}")).display(),
            ports[i],
            peers.join(", "),
            ca.join("ca.pem").display(),
            certs.join(format!("{name}.pem")).display(),
            certs.join(format!("{name}.key")).display(),
        );
        nodes.push(mount_depfs(depfs, dir, &name, &text)?);
    }
    Ok(nodes)
}

/// Bytes the node of `config` has sent to all its peers, from `depfs status --json`.
pub fn depfs_bytes_sent(depfs: &Path, config: &Path) -> Result<u64> {
    let out = run_captured(
        Command::new(depfs)
            .args(["status", "--json", "--config"])
            .arg(config),
        false,
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parse depfs status --json")?;
    let peers = v["peers"]
        .as_array()
        .context("depfs status --json: no peers array")?;
    Ok(peers.iter().filter_map(|p| p["bytes_sent"].as_u64()).sum())
}

fn free_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The pid of the `depfs mount CONFIG ... --daemon-child` process serving `config`.
fn find_daemon(config: &Path) -> Option<u32> {
    let want = config.as_os_str().as_encoded_bytes();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.contains(&want) && args.contains(&b"--daemon-child".as_slice()) {
            return Some(pid);
        }
    }
    None
}

fn pid_alive(pid: u32) -> bool {
    // A zombie is not alive: it has released its resources.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Unmounts `mp`, retrying while busy, then lazily.
pub fn unmount(mp: &Path) {
    if !is_mounted(mp) {
        return;
    }
    for _ in 0..20 {
        if query("umount", &[&mp.to_string_lossy()]).is_some() || !is_mounted(mp) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    progress(format!("warning: {} busy; lazy unmount", mp.display()));
    let _ = query("umount", &["-l", &mp.to_string_lossy()]);
}

/// Mount points listed in /proc/self/mountinfo.
fn mount_points() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_mounted(mp: &Path) -> bool {
    mount_points().iter().any(|m| m == mp)
}

/// Mount points strictly below `base`.
fn mounts_below(base: &Path) -> Vec<PathBuf> {
    mount_points()
        .into_iter()
        .filter(|m| m.starts_with(base) && m != base)
        .collect()
}

/// VmRSS and VmHWM of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("/proc/{pid}/status: no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// `wchar` and `write_bytes` of `pid` from /proc/PID/io (the whole process, plus its
/// children that have exited and been reaped).
pub fn io_counters(pid: u32) -> Result<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/io"))
        .with_context(|| format!("read /proc/{pid}/io"))?;
    let field = |name: &str| -> Result<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("/proc/{pid}/io: no {name}"))
    };
    Ok((field("wchar:")?, field("write_bytes:")?))
}

/// User + system CPU time of `pid` (all its threads), in clock ticks, from
/// /proc/PID/stat.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // the fields after the command name (which may contain spaces) in parentheses:
    // state is field 3, utime 14, stime 15
    let rest: Vec<&str> = s
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| -> Result<u64> {
        rest.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat: field {} missing", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// Busy and all clock ticks of every CPU of the machine so far, from the `cpu` line of
/// /proc/stat (busy: user, nice, system, irq, softirq, steal; all: also idle and iowait).
pub fn machine_ticks() -> Result<(u64, u64)> {
    let s = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = s
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat: no cpu line")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().context("/proc/stat: bad cpu line"))
        .collect::<Result<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    Ok((busy, busy + at(3) + at(4)))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// The pid of the GlusterFS FUSE client serving `mountpoint`.
pub fn gluster_client_pid(mountpoint: &Path) -> Result<u32> {
    let want = mountpoint.as_os_str().as_encoded_bytes();
    for e in fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if !fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "glusterfs") {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == want) {
            return Ok(pid);
        }
    }
    bail!("no glusterfs client process for {}", mountpoint.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
