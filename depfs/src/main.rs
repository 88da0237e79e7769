//! The `depfs` command: mount a replicated directory and operate it.

mod config;
mod mount;
mod options;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("depfs: {e:#}");
            ExitCode::FAILURE
        }
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
