//! Shared helpers for end-to-end tests: real `depfs` daemons on real FUSE mounts.

#![allow(dead_code)]

pub mod relay;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The `depfs` binary under test.
pub fn depfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_depfs")
}

/// Runs `depfs` with `args`.
pub fn depfs(args: &[&str]) -> Output {
    Command::new(depfs_bin())
        .args(args)
        .output()
        .expect("cannot run depfs")
}

/// Closes `file`, reporting the error `close` returns (which `File`'s drop ignores):
/// depfs publishes on close, so that error is the write's.
pub fn close(file: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just taken from the `File`, which no longer owns it.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub use depfs_testkit::wait_until;

/// True if `path` is a mount point (listed in /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|mp| mp == target))
}

/// One node: a config, a data directory and a mount point in a temporary directory.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub mountpoint: PathBuf,
}

impl Node {
    /// A single node named `name` with no peers.
    pub fn new(name: &str) -> Node {
        Self::with_config(name, "peers = []\n")
    }

    /// A node whose config is `node`, `data_dir` and then `rest` (TOML).
    pub fn with_config(name: &str, rest: &str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("depfs-test-")
            .tempdir()
            .expect("tempdir");
        let data_dir = dir.path().join("data");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "node = \"{name}\"\ndata_dir = \"{}\"\n{rest}",
                data_dir.display()
            ),
        )
        .unwrap();
        Node {
            dir,
            name: name.to_string(),
            config,
            data_dir,
            mountpoint,
        }
    }

    /// `depfs mount CONFIG MOUNTPOINT` (background daemon); panics if it fails.
    pub fn mount(&self) {
        let out = self.try_mount(&[]);
        assert!(
            out.status.success(),
            "depfs mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(&self.mountpoint),
            "mount returned before the mount was ready"
        );
    }

    /// Mounts with a wall clock `offset` (like "+10m" or "-10m") for the daemon, through
    /// libfaketime (Debian's `faketime` package, installed by scripts/setup).
    pub fn mount_with_clock(&self, offset: &str) {
        let lib = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
            .iter()
            .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketime.so.1"))
            .find(|p| Path::new(p).exists())
            .expect("libfaketime (apt-get install faketime)");
        let out = Command::new(depfs_bin())
            .args([
                "mount",
                self.config.to_str().unwrap(),
                self.mountpoint.to_str().unwrap(),
            ])
            .env("LD_PRELOAD", lib)
            .env("FAKETIME", offset)
            // Shift only the wall clock; timers keep the real monotonic clock.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .output()
            .expect("cannot run depfs");
        assert!(
            out.status.success(),
            "depfs mount (clock {offset}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(is_mounted(&self.mountpoint));
    }

    /// `depfs mount` with extra arguments, returning its output.
    pub fn try_mount(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "mount",
            self.config.to_str().unwrap(),
            self.mountpoint.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        depfs(&args)
    }

    /// The daemon's pid, from the data directory lock file.
    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data_dir.join("depfs.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// True while some process holds the data directory.
    pub fn daemon_alive(&self) -> bool {
        self.daemon_pid()
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
    }

    /// `umount MOUNTPOINT` and waits for the daemon to exit.
    pub fn unmount(&self) {
        let status = Command::new("umount")
            .arg(&self.mountpoint)
            .status()
            .expect("umount");
        assert!(status.success(), "umount failed");
        assert!(
            wait_until(Duration::from_secs(20), || !self.daemon_alive()),
            "daemon still running after umount"
        );
        self.assert_stopped_cleanly();
    }

    /// The daemon's log ends its last run with a clean stop, and holds no panic.
    pub fn assert_stopped_cleanly(&self) {
        let log = std::fs::read_to_string(self.data_dir.join("depfs.log")).unwrap_or_default();
        assert!(!log.contains("panicked"), "{} panicked:\n{log}", self.name);
        let lines: Vec<&str> = log.lines().collect();
        let last = |what: &str| lines.iter().rposition(|l| l.contains(what));
        assert!(
            last(": unmounted") > last(": mounted node="),
            "{} did not log a clean stop after its last mount:\n{log}",
            self.name
        );
    }

    /// `kill -9` the daemon and clear the dead mount.
    pub fn kill9(&self) {
        let pid = self.daemon_pid().expect("daemon pid");
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(wait_until(Duration::from_secs(20), || !self.daemon_alive()));
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        assert!(wait_until(Duration::from_secs(10), || !is_mounted(
            &self.mountpoint
        )));
    }

    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("umount").arg(&self.mountpoint).status();
            if is_mounted(&self.mountpoint) {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .status();
            }
        }
        if let Some(pid) = self.daemon_pid() {
            if wait_until(
                Duration::from_secs(10),
                || unsafe { libc::kill(pid, 0) } != 0,
            ) {
                return;
            }
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// A free UDP port on 127.0.0.1 (probed by binding port 0).
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A cluster CA in a temporary directory, issuing node certificates with `depfs ca`.
pub struct Ca {
    pub dir: tempfile::TempDir,
}

impl Ca {
    pub fn new() -> Ca {
        let dir = tempfile::Builder::new()
            .prefix("depfs-ca-")
            .tempdir()
            .unwrap();
        let out = depfs(&[
            "ca",
            "init",
            "--out",
            dir.path().join("ca").to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "ca init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ca { dir }
    }

    /// Issues `name`'s certificate; returns the `[tls]` section for its config.
    /// Issues `name`'s certificate allowing the manager role (and so any role): the
    /// tests of one-way mode promote nodes of a [`Cluster`].
    pub fn issue(&self, name: &str) -> String {
        self.issue_with_role(name, Some("manager"))
    }

    /// Issues `name`'s certificate allowing `role` (`manager`/`worker`; `None`: what
    /// `depfs ca issue` gives without `--role`).
    pub fn issue_with_role(&self, name: &str, role: Option<&str>) -> String {
        let ca = self.dir.path().join("ca");
        let certs = self.dir.path().join("certs");
        let mut args = vec![
            "ca",
            "issue",
            "--ca",
            ca.to_str().unwrap(),
            "--node",
            name,
            "--out",
            certs.to_str().unwrap(),
        ];
        if let Some(role) = role {
            args.extend(["--role", role]);
        }
        let out = depfs(&args);
        assert!(
            out.status.success(),
            "ca issue: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every node reads the CA's deny list (`depfs ca revoke` writes it): on one
        // machine that is the copy an operator makes to every node.
        format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nrevoked = \"{}\"\n",
            ca.join("ca.pem").display(),
            certs.join(format!("{name}.pem")).display(),
            certs.join(format!("{name}.key")).display(),
            ca.join("revoked").display()
        )
    }

    /// `depfs ca revoke --ca CA ARGS...`; panics if it fails.
    pub fn revoke(&self, args: &[&str]) {
        let ca = self.dir.path().join("ca");
        let mut all = vec!["ca", "revoke", "--ca", ca.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = depfs(&all);
        assert!(
            out.status.success(),
            "ca revoke: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The certificate file issued for `name`.
    pub fn cert_of(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join("certs").join(format!("{name}.pem"))
    }
}

/// Nodes `gw1..gwN` that all list each other, with certificates from one CA.
pub struct Cluster {
    pub ca: Ca,
    pub ports: Vec<u16>,
    pub nodes: Vec<Node>,
    /// With [`Cluster::partitionable`]: `links[i][j]` carries node i's dialling of j.
    pub links: Vec<Vec<Option<relay::Relay>>>,
}

impl Cluster {
    /// `n` nodes (multi-writer) that reach each other only through relays, so that
    /// links can be cut and restored ([`Cluster::cut`], [`Cluster::heal`]). `extra` is
    /// appended to every config.
    pub fn partitionable(n: usize, extra: &str) -> Cluster {
        let ca = Ca::new();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let links: Vec<Vec<Option<relay::Relay>>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        (i != j).then(|| {
                            relay::Relay::start(format!("127.0.0.1:{}", ports[j]).parse().unwrap())
                        })
                    })
                    .collect()
            })
            .collect();
        let nodes = (0..n)
            .map(|i| {
                let name = format!("gw{}", i + 1);
                let peers: Vec<String> = links[i]
                    .iter()
                    .flatten()
                    .map(|r| format!("\"{}\"", r.addr))
                    .collect();
                let rest = format!(
                    "listen = \"127.0.0.1:{}\"\npeers = [{}]\n{extra}{}",
                    ports[i],
                    peers.join(", "),
                    ca.issue(&name)
                );
                Node::with_config(&name, &rest)
            })
            .collect();
        Cluster {
            ca,
            ports,
            nodes,
            links,
        }
    }

    /// Cuts the links between `a` and `b` (both directions of dialling).
    pub fn cut(&self, a: usize, b: usize) {
        self.set_link(a, b, true);
    }

    /// Restores the links between `a` and `b`.
    pub fn heal(&self, a: usize, b: usize) {
        self.set_link(a, b, false);
    }

    fn set_link(&self, a: usize, b: usize, blocked: bool) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(r) = &self.links[x][y] {
                r.set_blocked(blocked);
            }
        }
    }

    /// Cuts (or restores) every link of node `i`.
    pub fn isolate(&self, i: usize, isolated: bool) {
        for j in 0..self.nodes.len() {
            if j != i {
                self.set_link(i, j, isolated);
            }
        }
    }

    /// Creates (but does not mount) `n` nodes.
    pub fn new(n: usize) -> Cluster {
        Self::with_roles(&vec![None; n], &vec![None; n])
    }

    /// A one-way cluster: node i has role `roles[i]` in its config and certificate.
    pub fn one_way(roles: &[&str]) -> Cluster {
        let roles: Vec<Option<&str>> = roles.iter().map(|r| Some(*r)).collect();
        Self::with_roles(&roles, &roles)
    }

    /// A one-way cluster whose certificates allow `cert_roles` (`None`: any role, so the
    /// node can be promoted).
    pub fn one_way_with_certs(roles: &[&str], cert_roles: &[Option<&str>]) -> Cluster {
        let roles: Vec<Option<&str>> = roles.iter().map(|r| Some(*r)).collect();
        Self::with_roles(&roles, cert_roles)
    }

    fn with_roles(roles: &[Option<&str>], cert_roles: &[Option<&str>]) -> Cluster {
        let n = roles.len();
        let ca = Ca::new();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let nodes = (0..n)
            .map(|i| {
                let name = format!("gw{}", i + 1);
                let peers: Vec<String> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| format!("\"127.0.0.1:{}\"", ports[j]))
                    .collect();
                let mode = match roles[i] {
                    Some(role) => format!("mode = \"one-way\"\nrole = \"{role}\"\n"),
                    None => String::new(),
                };
                let rest = format!(
                    "listen = \"127.0.0.1:{}\"\npeers = [{}]\n{mode}{}",
                    ports[i],
                    peers.join(", "),
                    ca.issue_with_role(&name, cert_roles[i])
                );
                Node::with_config(&name, &rest)
            })
            .collect();
        Cluster {
            ca,
            ports,
            nodes,
            links: Vec::new(),
        }
    }

    /// Mounts every node.
    pub fn mount_all(&self) {
        for node in &self.nodes {
            node.mount();
        }
    }
}

impl Node {
    /// `depfs status --json` of this node.
    pub fn status(&self) -> serde_json::Value {
        let out = depfs(&[
            "status",
            "--config",
            self.config.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Waits until `rel` on this node holds `content`.
    pub fn wait_for(&self, rel: &str, content: &[u8], timeout: Duration) -> bool {
        let path = self.path(rel);
        wait_until(timeout, || std::fs::read(&path).is_ok_and(|c| c == content))
    }
}

/// `GET path` on `addr`; the response's status line and body.
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// The value of the first metric line of `body` starting with `line_start`.
pub fn metric(body: &str, line_start: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The resident memory of process `pid` in bytes (0 if it is gone).
pub fn rss_of(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}
