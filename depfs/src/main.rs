//! The `depfs` command: mount a replicated directory and operate it.

mod config;
mod control;
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
    /// Wait until every change made on this node is acknowledged by all reachable peers.
    Sync {
        /// The node's configuration (default: the only file in /etc/depfs/*.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Give up after this many seconds (exit 1).
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("depfs: {e:#}");
            ExitCode::FAILURE
        }
    }
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
        } => {
            let name = NodeName::new(&node).map_err(|e| anyhow::anyhow!("node {node:?}: {e}"))?;
            let (cert, key) =
                depfs_replicator::pki::issue_node(&ca, &name, &out, SystemTime::now(), days)?;
            println!("created {} and {}", cert.display(), key.display());
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

fn status(config: Option<PathBuf>, as_json: bool) -> Result<()> {
    let config = find_config(config)?;
    let reply = control::request(&config, json!({"cmd": "status"}))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    println!(
        "node        {} ({} {})",
        s(&reply["node"]),
        s(&reply["mode"]),
        s(&reply["role"])
    );
    println!("mount       {}", s(&reply["mountpoint"]));
    println!("data_dir    {}", s(&reply["data_dir"]));
    println!("uptime      {} s", reply["uptime_s"]);
    if let Some(last) = reply["last_change"].as_object() {
        println!(
            "last change {} by {} at {} ms: {}",
            last["change"].as_str().unwrap_or(""),
            last["node"].as_str().unwrap_or(""),
            last["time_ms"],
            last["paths"]
        );
    }
    println!("transfers   {} pending", reply["pending_transfers"]);
    println!("conflicts   {}", reply["conflicts"]);
    let st = &reply["store"];
    println!(
        "store       {} entries, {} chunks, {} log records, {} bytes",
        st["entries"], st["chunks"], st["log_records"], st["size_bytes"]
    );
    let peers = reply["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        println!("peers       none");
    } else {
        println!(
            "{:<16} {:<22} {:<10} {:>9} {:>12} {:>10}",
            "PEER", "ADDRESS", "STATE", "RTT ms", "LAG changes", "LAG ms"
        );
        for p in peers {
            println!(
                "{:<16} {:<22} {:<10} {:>9.2} {:>12} {:>10}",
                s(&p["name"]),
                s(&p["addr"]),
                if p["connected"].as_bool() == Some(true) {
                    "connected"
                } else {
                    "down"
                },
                p["rtt_ms"].as_f64().unwrap_or(0.0),
                p["lag_changes"],
                p["lag_ms"]
            );
        }
    }
    Ok(())
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

/// Logs with `tracing` to stderr, or to `file` (appending) for the background daemon.
/// The level comes from RUST_LOG (default `info`).
pub(crate) fn init_logging(file: Option<&Path>) {
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
