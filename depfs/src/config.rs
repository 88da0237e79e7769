//! The node configuration file (TOML; docs/operations.md, "Configure a node").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use depfs_proto::NodeName;
use serde::Deserialize;

/// Replication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every node writable.
    MultiWriter,
    /// A manager writes, workers follow read-only.
    OneWay,
}

/// Role in one-way mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Manager,
    Worker,
}

/// Certificate files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The deny list `depfs ca revoke` writes: certificates refused from then on. Read
    /// at start and again whenever the file changes; a missing file revokes nothing.
    #[serde(default)]
    pub revoked: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: String,
    data_dir: PathBuf,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    tls: Option<TlsPaths>,
    /// Free space (MiB) kept on the data_dir's filesystem; writes that would leave less
    /// fail with ENOSPC.
    #[serde(default)]
    min_free_mib: Option<u64>,
    /// Address of the Prometheus metrics endpoint (none by default).
    #[serde(default)]
    metrics: Option<String>,
    /// Disk (MiB) for idle local copies of large files written here, which the kernel
    /// reads directly (FUSE passthrough); 0 turns passthrough off.
    #[serde(default)]
    local_copies_mib: Option<u64>,
    /// Files written here from this size (KiB) are staged on disk and get a local copy.
    #[serde(default)]
    local_copy_min_kib: Option<u64>,
    /// Changes stamped more than this many seconds ahead of the local clock are refused.
    #[serde(default)]
    max_clock_ahead_s: Option<u64>,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration was read from.
    pub source: PathBuf,
    pub node: NodeName,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub peers: Vec<String>,
    pub mode: Mode,
    /// `Some` exactly in one-way mode.
    pub role: Option<Role>,
    pub tls: Option<TlsPaths>,
    /// Free space kept on the data_dir's filesystem, in bytes.
    pub min_free_bytes: u64,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Budget of idle local copies, in bytes (0: no passthrough).
    pub local_copies_bytes: u64,
    /// Staged content spills to disk, and gets a local copy, from this size in bytes.
    pub local_copy_min_bytes: u64,
    /// A peer's change stamped further ahead of the local clock than this is refused.
    pub max_clock_ahead_ms: u64,
}

/// Default of `max_clock_ahead_s`: an hour. Clocks minutes apart (a drifting NTP
/// client) are followed; a clock set a day ahead, or a forged far-future stamp that
/// would win every concurrent write, is not.
pub const DEFAULT_MAX_CLOCK_AHEAD_S: u64 = 60 * 60;
/// Largest `max_clock_ahead_s` accepted: a week.
pub const MAX_CLOCK_AHEAD_S: u64 = 7 * 24 * 60 * 60;

/// Default budget of idle local copies.
pub const DEFAULT_LOCAL_COPIES_MIB: u64 = 1024;
/// Default size from which a written file gets a local copy.
pub const DEFAULT_LOCAL_COPY_MIN_KIB: u64 = 4096;

/// The QUIC port used when `listen` is not given.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7400";

impl Config {
    /// Reads and validates `path`. Errors name the file and, for syntax errors, the line.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text read from `source`: the TOML first
    /// ([`read_toml`]), then the values ([`RawConfig::check`]), then relative paths are
    /// resolved against the file's directory ([`RawConfig::into_config`]).
    pub fn parse(text: &str, source: &Path) -> Result<Config> {
        let at = source.display();
        let raw = read_toml(text, &at)?;
        let checked = raw.check(&at)?;
        Ok(raw.into_config(checked, source))
    }

    /// True if this node must refuse local writes.
    pub fn read_only(&self) -> bool {
        self.role == Some(Role::Worker)
    }
}

/// The TOML of a config file, with syntax errors naming the file (`at`) and the line.
fn read_toml(text: &str, at: &std::path::Display<'_>) -> Result<RawConfig> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                anyhow::anyhow!("config {at}, line {line}: {message}")
            }
            None => anyhow::anyhow!("config {at}: {message}"),
        }
    })
}

/// The values of a [`RawConfig`] that [`RawConfig::check`] parsed or defaulted.
struct Checked {
    node: NodeName,
    listen: SocketAddr,
    mode: Mode,
    metrics: Option<SocketAddr>,
    max_clock_ahead_s: u64,
}

impl RawConfig {
    /// Validates the values, in the order their errors are reported: node name,
    /// data_dir, listen address, the cluster settings ([`RawConfig::check_cluster`]),
    /// metrics address, clock limit.
    fn check(&self, at: &std::path::Display<'_>) -> Result<Checked> {
        let node = NodeName::new(&self.node).map_err(|e| {
            anyhow::anyhow!(
                "config {at}: node {:?} is not a valid node name: {e}",
                self.node
            )
        })?;
        if self.data_dir.as_os_str().is_empty() {
            bail!("config {at}: data_dir is empty");
        }
        let listen_text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            anyhow::anyhow!("config {at}: listen {listen_text:?} is not an address:port")
        })?;
        let mode = self.check_cluster(at)?;
        let metrics = match &self.metrics {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!("config {at}: metrics {text:?} is not an address:port")
            })?),
        };
        let max_clock_ahead_s = self.max_clock_ahead_s.unwrap_or(DEFAULT_MAX_CLOCK_AHEAD_S);
        if !(1..=MAX_CLOCK_AHEAD_S).contains(&max_clock_ahead_s) {
            bail!(
                "config {at}: max_clock_ahead_s = {max_clock_ahead_s} is outside 1..={MAX_CLOCK_AHEAD_S}"
            );
        }
        Ok(Checked {
            node,
            listen,
            mode,
            metrics,
            max_clock_ahead_s,
        })
    }

    /// Checks how the node joins its cluster (every peer is host:port, a role is given
    /// exactly in one-way mode, peers need a [tls] section) and returns the mode.
    fn check_cluster(&self, at: &std::path::Display<'_>) -> Result<Mode> {
        for peer in &self.peers {
            let port_ok = peer
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                bail!("config {at}: peer {peer:?} is not host:port");
            }
        }
        let mode = self.mode.unwrap_or(Mode::MultiWriter);
        match (mode, self.role) {
            (Mode::MultiWriter, Some(_)) => {
                bail!("config {at}: role is only meaningful with mode = \"one-way\"")
            }
            (Mode::OneWay, None) => {
                bail!("config {at}: mode = \"one-way\" needs role = \"manager\" or \"worker\"")
            }
            _ => {}
        }
        if !self.peers.is_empty() && self.tls.is_none() {
            bail!("config {at}: a [tls] section (ca, cert, key) is required when peers are configured");
        }
        Ok(mode)
    }

    /// The [`Config`]: sizes in bytes, defaults filled in, and relative paths resolved
    /// against the directory of `source`.
    fn into_config(self, checked: Checked, source: &Path) -> Config {
        let base = source.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        Config {
            source: source.to_path_buf(),
            node: checked.node,
            data_dir: resolve(&self.data_dir),
            listen: checked.listen,
            peers: self.peers,
            mode: checked.mode,
            role: self.role,
            min_free_bytes: self
                .min_free_mib
                .map_or(depfs_store::DEFAULT_MIN_FREE_BYTES, |m| {
                    m.saturating_mul(1 << 20)
                }),
            metrics: checked.metrics,
            local_copies_bytes: self
                .local_copies_mib
                .unwrap_or(DEFAULT_LOCAL_COPIES_MIB)
                .saturating_mul(1 << 20),
            local_copy_min_bytes: self
                .local_copy_min_kib
                .unwrap_or(DEFAULT_LOCAL_COPY_MIN_KIB)
                .saturating_mul(1 << 10),
            max_clock_ahead_ms: checked.max_clock_ahead_s * 1000,
            tls: self.tls.map(|t| TlsPaths {
                ca: resolve(&t.ca),
                cert: resolve(&t.cert),
                key: resolve(&t.key),
                revoked: t.revoked.as_deref().map(resolve),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/depfs/gw1.toml"))
    }

    #[test]
    fn a_single_node_needs_no_tls() {
        let c = parse("node = \"gw1\"\ndata_dir = \"/var/lib/depfs/gw1\"\npeers = []\n").unwrap();
        assert_eq!(c.node.as_str(), "gw1");
        assert_eq!(c.mode, Mode::MultiWriter);
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(!c.read_only());
    }

    #[test]
    fn a_one_way_worker_example_parses() {
        let c = parse(
            r#"
node = "gw1"
data_dir = "/var/lib/depfs/gw1"
listen = "0.0.0.0:7400"
peers = ["gw2.example:7400", "gw3.example:7400"]
mode = "one-way"
role = "worker"
[tls]
ca = "/etc/depfs/ca.pem"
cert = "/etc/depfs/gw1.pem"
key = "/etc/depfs/gw1.key"
"#,
        )
        .unwrap();
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.role, Some(Role::Worker));
        assert!(c.read_only());
    }

    #[test]
    fn errors_say_what_and_where_on_one_line() {
        let cases = [
            ("node = \"gw1\"\ndata_dir = \"/x\"\nbogus = 1\n", "line 3"),
            (
                "node = \"gw 1\"\ndata_dir = \"/x\"\n",
                "not a valid node name",
            ),
            ("node = \"gw1\"\n", "data_dir"),
            (
                "node = \"gw1\"\ndata_dir = \"/x\"\nlisten = \"nowhere\"\n",
                "listen",
            ),
            (
                "node = \"gw1\"\ndata_dir = \"/x\"\npeers = [\"gw2\"]\n",
                "host:port",
            ),
            (
                "node = \"gw1\"\ndata_dir = \"/x\"\npeers = [\"gw2:7400\"]\n",
                "[tls]",
            ),
            (
                "node = \"gw1\"\ndata_dir = \"/x\"\nmode = \"one-way\"\n",
                "role",
            ),
            (
                "node = \"gw1\"\ndata_dir = \"/x\"\nrole = \"worker\"\n",
                "one-way",
            ),
            (
                "node = \"gw1\"\ndata_dir = \"/x\"\nmode = \"sideways\"\n",
                "line 3",
            ),
            ("node = \"gw1\"\ndata_dir = \"/x\n", "line"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?} gave {err:?}");
            assert!(err.starts_with("config /etc/depfs/gw1.toml"), "{err}");
            assert!(!err.contains('\n'), "multi-line error: {err:?}");
        }
    }
}
