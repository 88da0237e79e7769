//! The `depfs` command: mount a replicated directory and operate it.

mod config;
mod control;
mod metrics;
mod mount;
mod options;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use depfs_proto::NodeName;
use serde_json::{json, Value};

use crate::config::Config;

/// depfs keeps one directory identical on every node of a cluster: each node mounts it
/// through FUSE, keeps a full local copy, and publishes every closed file to its peers.
#[derive(Parser)]
#[command(name = "depfs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount the directory described by CONFIG at MOUNTPOINT and serve it.
    ///
    /// Without -f the command returns once the mount is ready and the daemon keeps
    /// serving in the background (logging to DATA_DIR/depfs.log). On the first mount over
    /// a non-empty directory its contents are imported. SIGTERM, SIGINT or `umount`
    /// unmount cleanly.
    Mount {
        /// Node configuration file (TOML).
        config: PathBuf,
        /// Directory to mount on.
        mountpoint: PathBuf,
        /// Serve in the foreground, logging to stderr.
        #[arg(short, long)]
        foreground: bool,
        /// Mount options, comma separated: ro, allow_other, allow_root, nosuid, nodev,
        /// noexec, fsname=NAME; fstab-only options such as _netdev are accepted.
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        #[arg(long, hide = true)]
        daemon_child: bool,
    },
    /// Manage the cluster's certificate authority and node certificates.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Show the node, its peers (connection, round-trip time, replication lag), the last
    /// change, transfers, conflicts and the store.
    Status {
        /// The node's configuration (default: the only file in /etc/depfs/*.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON (stable field names) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List, show or restore conflicts: losing concurrent versions kept out of the tree.
    Conflicts {
        /// The node's configuration (default: the only file in /etc/depfs/*.toml).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<ConflictsCommand>,
    },
    /// Recent changes: time, node, operation, path.
    Log {
        /// The node's configuration (default: the only file in /etc/depfs/*.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// How many changes.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: u64,
        /// Keep printing new changes.
        #[arg(short, long)]
        follow: bool,
    },
    /// Wait until every change made on this node is acknowledged by all reachable peers.
    Sync {
        /// The node's configuration (default: the only file in /etc/depfs/*.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Give up after this many seconds (exit 1).
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Check the whole store: every chunk against its blake3 hash, reference counts, the
    /// change log, and the tree against the merge rules. Works on a running node (through
    /// its daemon) or a stopped one. Corrupt chunks are quarantined and fetched again
    /// from a peer by the running daemon. Exits 1 if anything is wrong.
    Verify {
        /// The node's configuration (default: the only file in /etc/depfs/*.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// One-way mode: make this node the manager, in a new term, for the whole cluster
    /// (after the manager failed). A returning old manager steps down to worker.
    Promote {
        /// The node's configuration (default: the only file in /etc/depfs/*.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConflictsCommand {
    /// List the recorded conflicts (the default).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the content of a conflicting version.
    Show {
        /// The path, as in the list.
        path: String,
        /// The version's id (`node:seq`), as in the list.
        id: String,
    },
    /// Put a conflicting version back into the tree (at its path, or at --to), and
    /// resolve the conflict. The restored content replicates like any change.
    Restore {
        /// The path, as in the list.
        path: String,
        /// The version's id (`node:seq`), as in the list.
        id: String,
        /// Restore to this path instead (for example `api.xml.restored`).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a new cluster CA: DIR/ca.pem and DIR/ca.key (0600).
    Init {
        /// Directory to write to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a certificate for a node: OUT/NAME.pem and OUT/NAME.key (0600).
    Issue {
        /// Directory of the CA (ca.pem, ca.key).
        #[arg(long)]
        ca: PathBuf,
        /// The node's name (as in its config's `node`).
        #[arg(long)]
        node: String,
        /// Directory to write to.
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = depfs_replicator::pki::NODE_VALID_DAYS)]
        days: u64,
        /// One-way mode: the role the certificate allows. `worker` (the default) can
        /// never manage: it cannot start as the manager, be promoted, or be followed as
        /// one. `manager` allows both roles; give it only to the nodes that may manage.
        /// Multi-writer clusters ignore roles.
        #[arg(long, default_value = "worker")]
        role: String,
    },
    /// Revoke a certificate: append it to the CA's deny list, DIR/revoked. Copy that
    /// file to the path every node's config names in `[tls] revoked`: running nodes
    /// re-read it within a second, refuse the certificate and disconnect its node.
    Revoke {
        /// Directory of the CA (the deny list is written there).
        #[arg(long)]
        ca: PathBuf,
        /// The certificate to revoke (its fingerprint is listed).
        #[arg(long, conflicts_with = "node", required_unless_present = "node")]
        cert: Option<PathBuf>,
        /// Revoke every certificate of this node instead (when its file is lost).
        #[arg(long)]
        node: Option<String>,
    },
}

fn main() -> ExitCode {
    if let Err(e) = check_cpu() {
        eprintln!("depfs: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse_from(mount_helper_args(std::env::args_os().collect()));
    let result = match cli.command {
        Command::Mount {
            config,
            mountpoint,
            foreground,
            options,
            daemon_child,
        } => mount::run(mount::MountArgs {
            config,
            mountpoint,
            foreground,
            options,
            daemon_child,
        }),
        Command::Ca { command } => ca(command),
        Command::Status { config, json } => status(config, json),
        Command::Sync { config, timeout } => sync(config, timeout),
        Command::Promote { config } => promote(config),
        Command::Verify { config } => verify(config),
        Command::Conflicts { config, command } => conflicts(config, command),
        Command::Log {
            config,
            limit,
            follow,
        } => log(config, limit, follow),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("depfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Refuses to run on an x86-64 CPU without the instructions the build enables
/// (`.cargo/config.toml`: RocksDB's hardware CRC32C), with a clear message instead of an
/// illegal-instruction crash in the middle of a write.
fn check_cpu() -> Result<(), String> {
    #[cfg(target_arch = "x86_64")]
    {
        let missing: Vec<&str> = [
            ("sse4.2", std::arch::is_x86_feature_detected!("sse4.2")),
            (
                "pclmulqdq",
                std::arch::is_x86_feature_detected!("pclmulqdq"),
            ),
            ("popcnt", std::arch::is_x86_feature_detected!("popcnt")),
        ]
        .into_iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            return Err(format!(
                "this CPU lacks {} (this build needs SSE4.2, PCLMULQDQ and POPCNT; rebuild \
                 without the rustflags of .cargo/config.toml to run here, at a cost in speed)",
                missing.join(", ")
            ));
        }
    }
    Ok(())
}

/// Lets depfs run as a mount helper: mount(8) runs `mount.fuse.depfs CONFIG MOUNTPOINT -o
/// OPTIONS` (through a link of that name) and mount.fuse3 runs `depfs CONFIG MOUNTPOINT
/// -o OPTIONS`; both become `depfs mount CONFIG MOUNTPOINT -o OPTIONS`.
fn mount_helper_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let argv0 = args
        .first()
        .map(|a| Path::new(a).file_name().unwrap_or_default().to_os_string())
        .unwrap_or_default();
    let as_helper = argv0.to_string_lossy().starts_with("mount.");
    const COMMANDS: [&str; 10] = [
        "mount",
        "ca",
        "status",
        "sync",
        "promote",
        "verify",
        "conflicts",
        "log",
        "help",
        "--help",
    ];
    let first_is_file = args.get(1).is_some_and(|a| {
        !COMMANDS.contains(&a.to_string_lossy().as_ref()) && Path::new(a).is_file()
    });
    if !(as_helper || first_is_file) {
        return args;
    }
    let mut out = vec![std::ffi::OsString::from("depfs"), "mount".into()];
    // mount(8) also passes -n (no mtab), -s (sloppy), -f (fake) and -v: drop them.
    out.extend(
        args.into_iter()
            .skip(1)
            .filter(|a| !matches!(a.to_str(), Some("-n" | "-s" | "-v"))),
    );
    out
}

fn ca(command: CaCommand) -> Result<()> {
    match command {
        CaCommand::Init { out } => {
            let (cert, key) = depfs_replicator::pki::init_ca(&out)?;
            println!("created {} and {}", cert.display(), key.display());
        }
        CaCommand::Issue {
            ca,
            node,
            out,
            days,
            role,
        } => {
            let name = NodeName::new(&node).map_err(|e| anyhow::anyhow!("node {node:?}: {e}"))?;
            let role = depfs_replicator::pki::CertRole::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("--role {role:?}: expected manager or worker"))?;
            let (cert, key) = depfs_replicator::pki::issue_node(
                &ca,
                &name,
                &out,
                SystemTime::now(),
                days,
                Some(role),
            )?;
            println!("created {} and {}", cert.display(), key.display());
        }
        CaCommand::Revoke { ca, cert, node } => {
            use depfs_replicator::revoked::{self, Entry};
            let entry = match (cert, node) {
                (Some(cert), _) => Entry::certificate_file(&cert)?,
                (None, Some(node)) => Entry::Node(
                    NodeName::new(&node).map_err(|e| anyhow::anyhow!("node {node:?}: {e}"))?,
                ),
                (None, None) => bail!("name a certificate (--cert) or a node (--node)"),
            };
            let list = ca.join("revoked");
            revoked::append(&list, &entry, SystemTime::now())?;
            println!(
                "revoked {entry}: {} now lists it; copy it to every node's `[tls] revoked` path",
                list.display()
            );
        }
    }
    Ok(())
}

/// The config named on the command line, or the only one in /etc/depfs.
fn find_config(config: Option<PathBuf>) -> Result<Config> {
    if let Some(path) = config {
        return Config::load(&path);
    }
    let candidates: Vec<PathBuf> = std::fs::read_dir("/etc/depfs")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    match candidates.as_slice() {
        [one] => Config::load(one),
        [] => bail!("no --config given and no /etc/depfs/*.toml found"),
        _ => bail!("several configs in /etc/depfs; choose one with --config"),
    }
}

/// `depfs status`: the daemon's reply as JSON, or as the text of [`status_text`].
fn status(config: Option<PathBuf>, as_json: bool) -> Result<()> {
    let config = find_config(config)?;
    let reply = control::request(&config, json!({"cmd": "status"}))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{}", status_text(&reply));
    }
    Ok(())
}

/// A string field of a reply, or "" if it is missing.
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The text `depfs status` prints for a `status` reply: the node's summary, then its
/// peers. Computed apart from printing so that the format can be read (and tested) in
/// one place.
fn status_text(reply: &Value) -> String {
    let mut out = node_summary(reply);
    out.push_str(&peer_table(
        reply["peers"].as_array().map_or(&[], Vec::as_slice),
    ));
    out
}

/// The lines about the node itself: who it is, its mount, its last change, transfers,
/// catching up (only while behind), conflicts and the store.
fn node_summary(reply: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let (node, mode, role) = (&reply["node"], &reply["mode"], &reply["role"]);
    let _ = writeln!(
        out,
        "node        {} ({} {})",
        text(node),
        text(mode),
        text(role)
    );
    if reply["mode"] == "one-way" {
        let _ = match reply["manager"].as_str() {
            Some(m) => writeln!(out, "manager     {m} (term {})", reply["term"]),
            None => writeln!(out, "manager     not known yet"),
        };
        if let Some(note) = reply["contested_term"].as_str() {
            let _ = writeln!(out, "contested   {note}");
        }
    }
    let _ = writeln!(out, "mount       {}", text(&reply["mountpoint"]));
    let _ = writeln!(out, "data_dir    {}", text(&reply["data_dir"]));
    let _ = writeln!(out, "uptime      {} s", reply["uptime_s"]);
    if let Some(last) = reply["last_change"].as_object() {
        let _ = writeln!(
            out,
            "last change {} by {} at {} ms: {}",
            last["change"].as_str().unwrap_or(""),
            last["node"].as_str().unwrap_or(""),
            last["time_ms"],
            last["paths"]
        );
    }
    let _ = writeln!(out, "transfers   {} pending", reply["pending_transfers"]);
    let catching_up = &reply["catching_up"];
    let behind = catching_up["changes_remaining"].as_u64().unwrap_or(0);
    if behind > 0 {
        let _ = writeln!(
            out,
            "catching up {} changes remaining, {} applied, {} bytes received",
            behind, catching_up["changes_applied"], catching_up["bytes_received"]
        );
    }
    let _ = writeln!(out, "conflicts   {}", reply["conflicts"]);
    let st = &reply["store"];
    let _ = writeln!(
        out,
        "store       {} entries, {} chunks, {} log records, {} bytes",
        st["entries"], st["chunks"], st["log_records"], st["size_bytes"]
    );
    out
}

/// The peers as a table (or "none"): address, state, round-trip time and lag.
fn peer_table(peers: &[Value]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if peers.is_empty() {
        let _ = writeln!(out, "peers       none");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:<10} {:>9} {:>12} {:>10}",
        "PEER", "ADDRESS", "STATE", "RTT ms", "LAG changes", "LAG ms"
    );
    for p in peers {
        let state = if p["connected"].as_bool() == Some(true) {
            "connected"
        } else {
            "down"
        };
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<10} {:>9.2} {:>12} {:>10}",
            text(&p["name"]),
            text(&p["addr"]),
            state,
            p["rtt_ms"].as_f64().unwrap_or(0.0),
            p["lag_changes"],
            p["lag_ms"]
        );
    }
    out
}

fn sync(config: Option<PathBuf>, timeout: f64) -> Result<()> {
    let config = find_config(config)?;
    let reply = control::request(
        &config,
        json!({"cmd": "sync", "timeout_ms": (timeout * 1000.0) as u64}),
    )?;
    if reply["synced"].as_bool() == Some(true) {
        Ok(())
    } else {
        bail!(
            "not acknowledged by {} after {} ms",
            reply["pending"],
            reply["waited_ms"]
        )
    }
}

fn verify(config: Option<PathBuf>) -> Result<()> {
    let config = find_config(config)?;
    let started = std::time::Instant::now();
    let problems: Vec<String> = match control::request(&config, json!({"cmd": "verify"})) {
        Ok(reply) => {
            if let Some(e) = reply["error"].as_str() {
                bail!("{e}");
            }
            reply["problems"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| p.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default()
        }
        // Not running: check the store directly.
        Err(_) => {
            if !config.data_dir.join("db").exists() {
                bail!("no depfs store in {}", config.data_dir.display());
            }
            let root = depfs_proto::Meta {
                kind: depfs_proto::Kind::Dir,
                perm: 0o755,
                uid: 0,
                gid: 0,
                mtime: Default::default(),
                ctime: Default::default(),
            };
            let store = depfs_store::Store::open(
                &config.data_dir,
                &config.node,
                &depfs_store::StoreOptions::new(root),
            )?;
            store.check_integrity()?
        }
    };
    for p in &problems {
        println!("problem: {p}");
    }
    if problems.is_empty() {
        println!(
            "{}: store verified in {:.1} s, no problems",
            config.node,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        bail!(
            "{} problem(s) in the store of {}",
            problems.len(),
            config.node
        )
    }
}

fn promote(config: Option<PathBuf>) -> Result<()> {
    let config = find_config(config)?;
    let reply = control::request(&config, json!({"cmd": "promote"}))?;
    if let Some(e) = reply["error"].as_str() {
        bail!("{e}");
    }
    println!(
        "{} is the manager now (term {}); its mount is writable",
        config.node, reply["term"]
    );
    Ok(())
}

fn conflicts(config: Option<PathBuf>, command: Option<ConflictsCommand>) -> Result<()> {
    let config = find_config(config)?;
    let check = |reply: Value| -> Result<Value> {
        match reply["error"].as_str() {
            Some(e) => bail!("{e}"),
            None => Ok(reply),
        }
    };
    match command.unwrap_or(ConflictsCommand::List { json: false }) {
        ConflictsCommand::List { json: as_json } => {
            let reply = check(control::request(&config, json!({"cmd": "conflicts"}))?)?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&reply["conflicts"])?);
                return Ok(());
            }
            let list = reply["conflicts"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no conflicts");
            }
            for c in list {
                println!(
                    "{}  {}  from {} at {} ms, {} bytes",
                    c["path"].as_str().unwrap_or(""),
                    c["id"].as_str().unwrap_or(""),
                    c["node"].as_str().unwrap_or(""),
                    c["time_ms"],
                    c["size"]
                );
            }
        }
        ConflictsCommand::Show { path, id } => {
            let reply = check(control::request(
                &config,
                json!({"cmd": "conflict_content", "path": path, "id": id}),
            )?)?;
            let bytes: Vec<u8> = serde_json::from_value(reply["content"].clone())?;
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
        ConflictsCommand::Restore { path, id, to } => {
            let reply = check(control::request(
                &config,
                json!({"cmd": "restore", "path": path, "id": id, "to": to}),
            )?)?;
            println!(
                "restored to {} ({})",
                reply["restored"].as_str().unwrap_or(""),
                reply["change"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn log(config: Option<PathBuf>, limit: u64, follow: bool) -> Result<()> {
    let config = find_config(config)?;
    let mut seen = std::collections::HashSet::new();
    loop {
        let reply = control::request(&config, json!({"cmd": "log", "limit": limit}))?;
        let mut entries = reply["log"].as_array().cloned().unwrap_or_default();
        entries.reverse();
        for e in entries {
            let change = e["change"].as_str().unwrap_or("").to_string();
            if !seen.insert(change.clone()) {
                continue;
            }
            for op in e["ops"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<10} {:<14} {:<10} {}",
                    e["time_ms"],
                    e["node"].as_str().unwrap_or(""),
                    change,
                    op["op"].as_str().unwrap_or(""),
                    op["path"].as_str().unwrap_or("")
                );
            }
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Logs with `tracing` to stderr, or to `file` (appending) for the background daemon.
/// The level comes from RUST_LOG (default `info`). A panic is logged too: the background
/// daemon's stderr goes nowhere.
pub(crate) fn init_logging(file: Option<&Path>) {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("panicked: {info}");
        default_hook(info);
    }));
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file.and_then(|f| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .ok()
    }) {
        Some(f) => {
            let _ = builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init();
        }
        None => {
            let _ = builder.with_writer(std::io::stderr).try_init();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_of_a_worker_catching_up() {
        let reply = json!({
            "node": "gw2", "mode": "one-way", "role": "worker",
            "manager": "gw1", "term": 3, "contested_term": "term 2: gw1 and gw3",
            "mountpoint": "/srv/deploy", "data_dir": "/var/lib/depfs/gw2", "uptime_s": 12,
            "last_change": {"change": "gw1:5", "node": "gw1", "time_ms": 1000, "paths": ["a", "b"]},
            "pending_transfers": 2,
            "catching_up": {"changes_remaining": 4, "changes_applied": 7, "bytes_received": 99},
            "conflicts": 1,
            "store": {"entries": 10, "chunks": 3, "log_records": 5, "size_bytes": 4096},
            "peers": [
                {"name": "gw1", "addr": "10.0.0.1:7400", "connected": true, "rtt_ms": 1.5, "lag_changes": 0, "lag_ms": 0},
                {"name": "gw3", "addr": "", "connected": false, "rtt_ms": 0.0, "lag_changes": 12, "lag_ms": 800},
            ],
        });
        // Numbers from the reply are JSON values, which take no padding.
        let expected = "\
node        gw2 (one-way worker)
manager     gw1 (term 3)
contested   term 2: gw1 and gw3
mount       /srv/deploy
data_dir    /var/lib/depfs/gw2
uptime      12 s
last change gw1:5 by gw1 at 1000 ms: [\"a\",\"b\"]
transfers   2 pending
catching up 4 changes remaining, 7 applied, 99 bytes received
conflicts   1
store       10 entries, 3 chunks, 5 log records, 4096 bytes
PEER             ADDRESS                STATE         RTT ms  LAG changes     LAG ms
gw1              10.0.0.1:7400          connected       1.50 0 0
gw3                                     down            0.00 12 800
";
        assert_eq!(status_text(&reply), expected);
    }

    #[test]
    fn status_text_of_a_lone_writer() {
        let reply = json!({
            "node": "gw1", "mode": "multi-writer", "role": "writer",
            "mountpoint": "/srv", "data_dir": "/d", "uptime_s": 0, "last_change": null,
            "pending_transfers": 0, "catching_up": {"changes_remaining": 0},
            "conflicts": 0, "store": {"entries": 1, "chunks": 0, "log_records": 0, "size_bytes": 0},
            "peers": [],
        });
        let expected = "\
node        gw1 (multi-writer writer)
mount       /srv
data_dir    /d
uptime      0 s
transfers   0 pending
conflicts   0
store       1 entries, 0 chunks, 0 log records, 0 bytes
peers       none
";
        assert_eq!(status_text(&reply), expected);
    }
}
