//! `depfs mount`: open the store, import on first mount, serve the filesystem until
//! unmounted or signalled, and (without `-f`) do it in the background once the mount is
//! ready.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use depfs_fs::ops::FuseAdapter;
use depfs_fs::{DepFs, FsConfig, Invalidation};
use depfs_proto::{Kind, Leadership, Meta, Timespec};
use depfs_replicator::{Callbacks, ReplicaConfig, RoleChange, Service, ServiceConfig};
use depfs_store::sys::now_ms;
use depfs_store::{Store, StoreOptions};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::os::unix::ffi::OsStrExt;

use crate::config::{Config, Mode, Role};
use crate::options::MountOptions;
use depfs_replicator::pki::CertRole;
use depfs_replicator::Mode as ReplicationMode;

/// The line a background daemon prints on its status pipe once the mount is ready.
const READY: &str = "ready";
/// The prefix of a progress line on the status pipe (long first imports).
const PROGRESS: &str = "progress: ";

/// Shows a progress line in place on a terminal (logs have the same figures).
fn show_progress(tty: bool, line: &str) {
    if tty {
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
}

/// Arguments of `depfs mount`.
pub struct MountArgs {
    pub config: PathBuf,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub options: Vec<String>,
    /// Internal: this process is the background daemon started by `depfs mount`.
    pub daemon_child: bool,
}

/// Runs `depfs mount`.
pub fn run(args: MountArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let options = MountOptions::parse(args.options.iter().map(String::as_str))?;
    let mountpoint = check_mountpoint(&args.mountpoint)?;
    let loosened = if args.foreground || args.daemon_child {
        secure_data_dir(&config.data_dir)?
    } else {
        None
    };
    let report_loosened = || {
        if let Some(mode) = loosened {
            tracing::warn!(
                data_dir = %config.data_dir.display(),
                "data_dir was mode {mode:o}, readable by other users; tightened to 700"
            );
        }
    };
    if args.foreground {
        crate::init_logging(None);
        report_loosened();
        let tty = std::io::stderr().is_terminal();
        serve(
            &config,
            &mountpoint,
            &options,
            &mut |line| show_progress(tty, line),
            |_| {
                if tty {
                    eprintln!();
                }
            },
        )
    } else if args.daemon_child {
        let log = config.data_dir.join("depfs.log");
        crate::init_logging(Some(&log));
        report_loosened();
        // Progress goes to the waiting parent, which shows it on its terminal.
        let mut progress = |line: &str| {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{PROGRESS}{line}");
            let _ = out.flush();
        };
        let result = serve(&config, &mountpoint, &options, &mut progress, |status| {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{status}");
            let _ = out.flush();
            detach_stdio();
        });
        if let Err(e) = &result {
            tracing::error!("{e:#}");
            println!("error: {e:#}");
        }
        result
    } else {
        spawn_daemon(&args)
    }
}

/// Makes everything the daemon creates private to its user (umask 077) and data_dir
/// mode 700: the store holds every replicated file in the clear, and the mount's own
/// permission checks mean nothing if a local user can read the store. A looser
/// data_dir is tightened (and its former mode returned, for a log line); so is a log
/// file left readable by an older version.
fn secure_data_dir(dir: &Path) -> Result<Option<u32>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe { libc::umask(0o077) };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data_dir {}", dir.display()))?;
    let tighten = |path: &Path, mode: u32| -> Result<Option<u32>> {
        let Ok(md) = std::fs::symlink_metadata(path) else {
            return Ok(None);
        };
        let was = md.permissions().mode() & 0o7777;
        if was & 0o077 == 0 {
            return Ok(None);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot make {} private (mode {mode:o})", path.display()))?;
        Ok(Some(was))
    };
    tighten(&dir.join("depfs.log"), 0o600)?;
    tighten(dir, 0o700)
}

fn check_mountpoint(path: &Path) -> Result<PathBuf> {
    let md = std::fs::metadata(path).map_err(|e| anyhow!("mount point {}: {e}", path.display()))?;
    if !md.is_dir() {
        bail!("mount point {}: not a directory", path.display());
    }
    path.canonicalize()
        .map_err(|e| anyhow!("mount point {}: {e}", path.display()))
}

/// Starts this program again as the background daemon and waits until it reports the
/// mount ready (exit 0) or fails (its error, exit non-zero).
fn spawn_daemon(args: &MountArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the depfs executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg(&args.config)
        .arg(&args.mountpoint)
        .arg("--daemon-child");
    for o in &args.options {
        cmd.arg("-o").arg(o);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; the daemon leaves the caller's session so a
    // terminal hang-up does not stop it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the depfs daemon")?;
    let stdout = child.stdout.take().context("daemon status pipe missing")?;
    let mut last = String::new();
    let tty = std::io::stderr().is_terminal();
    let mut shown = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        if line == READY {
            if shown {
                eprintln!();
            }
            return Ok(());
        }
        if let Some(progress) = line.strip_prefix(PROGRESS) {
            show_progress(tty, progress);
            shown = tty;
            continue;
        }
        last = line;
    }
    let status = child.wait().context("waiting for the depfs daemon")?;
    let message = last.strip_prefix("error: ").unwrap_or(&last).to_string();
    if message.is_empty() {
        bail!("the depfs daemon exited ({status}) before the mount was ready");
    }
    bail!("{message}")
}

/// Points stdin/stdout/stderr at /dev/null once the parent has our status.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto the standard descriptors of this process.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// Opens the store, imports on first mount, mounts, reports readiness through `ready`,
/// and serves until unmounted (by `umount`, SIGTERM, SIGINT or SIGHUP).
///
/// Each phase has a function of its own, called in this order (which matters: the
/// store's signer is set and its mode checked before the import writes to it, and the
/// mount is reported ready only once the control socket listens): [`open_node`],
/// [`import_on_first_mount`], [`start_replicator`], [`start_fs`], the FUSE session and
/// the threads feeding it ([`feed_kernel`]), [`start_endpoints`], [`watch_signals`];
/// then the session runs, and [`shut_down`] stops the rest.
fn serve(
    config: &Config,
    mountpoint: &Path,
    options: &MountOptions,
    progress: &mut dyn FnMut(&str),
    ready: impl FnOnce(&str),
) -> Result<()> {
    raise_open_file_limit();
    let (store, tls) = open_node(config, mountpoint)?;
    if !store.is_initialized()? {
        import_on_first_mount(config, &store, mountpoint, progress)?;
        store.mark_initialized()?;
    }

    // Paths changed behind the kernel's back (by peers, or by control commands such as
    // restoring a conflict) go to one invalidation thread, started with the session.
    let (changed_tx, changed_rx) = std::sync::mpsc::channel();
    let (role_tx, role_rx) = std::sync::mpsc::channel();
    let service = start_replicator(config, tls, &store, changed_tx.clone(), role_tx)?;
    let read_only = options.read_only || !may_write(config, &store);
    let fs = start_fs(config, store, read_only)?;

    let mut session = fuser::Session::new(
        FuseAdapter::new(fs.clone()),
        mountpoint,
        &fuse_config(config, options, read_only),
    )
    .map_err(|e| anyhow!("cannot mount {}: {e}", mountpoint.display()))?;
    let unmounter = session.unmount_callable();
    feed_kernel(&session, &fs, changed_rx);
    if !options.read_only {
        spawn_role_keeper(fs.clone(), mountpoint.to_path_buf(), role_rx);
    }
    start_endpoints(config, mountpoint, &fs, &service, changed_tx)?;
    let signals = watch_signals(mountpoint, unmounter)?;
    tracing::info!(node = %config.node, mountpoint = %mountpoint.display(), "mounted");
    ready(READY);
    let result = session.run();
    signals.stop();
    shut_down(config, &fs, service);
    tracing::info!("unmounted");
    result.map_err(|e| anyhow!("serving {} failed: {e}", mountpoint.display()))
}

/// Opens the node's store and loads its TLS identity, if it has one. Every change this
/// node makes is signed with its key, its import included: peers refuse unsigned
/// changes (docs/reliability.md, "Threat model"). So the signer is set, and changes
/// made before the node had a key are signed, before anything else writes; then the
/// store's mode is checked against the config.
fn open_node(
    config: &Config,
    mountpoint: &Path,
) -> Result<(Store, Option<depfs_replicator::tls::TlsConfig>)> {
    let root_md = std::fs::metadata(mountpoint)?;
    let store = open_store(config, &root_md)?;
    let tls = load_tls(config)?;
    if let Some(tls) = &tls {
        let sealed = store
            .set_signer(tls.identity.signer.clone())
            .map_err(|e| anyhow!("cannot sign this node's earlier changes: {e}"))?;
        if sealed > 0 {
            tracing::info!(
                changes = sealed,
                "signed this node's changes made before it had a key"
            );
        }
    }
    check_mode(config, &store)?;
    Ok((store, tls))
}

/// The first mount of a store over a non-empty directory imports that directory, with
/// its progress shown through `progress` and logged every 2 s. A worker does not
/// import: its tree comes from the manager.
fn import_on_first_mount(
    config: &Config,
    store: &Store,
    mountpoint: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let non_empty = std::fs::read_dir(mountpoint)?.next().is_some();
    if non_empty && config.read_only() {
        tracing::warn!(dir = %mountpoint.display(), "a worker does not import: its tree comes from the manager");
    } else if non_empty {
        tracing::info!(dir = %mountpoint.display(), "first mount over a non-empty directory: importing it");
        let mut last_report = std::time::Instant::now();
        let stats = depfs_fs::import_dir(store, mountpoint, now_ms, &mut |p| {
            let line = import_progress_line(mountpoint, p);
            progress(&line);
            let finished = p.done.files == p.total_files;
            if finished || last_report.elapsed() >= std::time::Duration::from_secs(2) {
                last_report = std::time::Instant::now();
                tracing::info!("{line}");
            }
        })
        .with_context(|| format!("cannot import {}", mountpoint.display()))?;
        tracing::info!(?stats, "import complete");
    }
    Ok(())
}

/// One line of import progress: files and MiB done out of the totals, and how far
/// along that is (by bytes, or by files when there are no bytes).
fn import_progress_line(mountpoint: &Path, p: &depfs_fs::ImportProgress) -> String {
    format!(
        "importing {}: {}/{} files, {:.1}/{:.1} MiB ({:.0}%)",
        mountpoint.display(),
        p.done.files,
        p.total_files,
        p.done.bytes as f64 / 1048576.0,
        p.total_bytes as f64 / 1048576.0,
        if p.total_bytes > 0 {
            100.0 * p.done.bytes as f64 / p.total_bytes as f64
        } else {
            100.0 * p.done.files as f64 / p.total_files.max(1) as f64
        }
    )
}

/// The filesystem over `store`, before it is mounted: its staging directory made, the
/// large files closed just before the last daemon stopped published (see depfs_fs's
/// `owed`), and the thread publishing large files started.
fn start_fs(config: &Config, store: Store, read_only: bool) -> Result<Arc<DepFs>> {
    let staging = config.data_dir.join("staging");
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let mut fs_config = FsConfig::new(staging);
    fs_config.read_only = read_only;
    fs_config.local_copy_budget = config.local_copies_bytes;
    fs_config.spill_threshold = config.local_copy_min_bytes;
    let fs = Arc::new(DepFs::new(store, fs_config));
    let recovered = fs
        .publish_left_over()
        .map_err(|e| anyhow!("cannot publish files closed before the last stop: {e}"))?;
    if recovered > 0 {
        tracing::info!(
            files = recovered,
            "published files closed before the last stop"
        );
    }
    fs.start_publisher()
        .context("cannot start the thread publishing large files")?;
    Ok(fs)
}

/// Starts the threads that talk to the kernel through the session's notifiers: cache
/// invalidations for paths changed behind its back, dropping written pages, and filling
/// pages of files being read.
fn feed_kernel(session: &fuser::Session<FuseAdapter>, fs: &Arc<DepFs>, changed: ChangedPaths) {
    spawn_invalidator(fs.clone(), session.notifier(), changed);
    spawn_page_dropper(fs, session.notifier());
    let filler = session.notifier();
    fs.fill_pages_with(Box::new(move |ino, data| {
        filler.store(fuser::INodeNo(ino), 0, data)
    }));
}

/// Starts the control socket (what `depfs status` and the other commands talk to) and,
/// when configured, the metrics endpoint. Paths the control commands change are sent
/// to `changed`, like those peers change.
fn start_endpoints(
    config: &Config,
    mountpoint: &Path,
    fs: &Arc<DepFs>,
    service: &Option<Arc<Service>>,
    changed: std::sync::mpsc::Sender<Vec<depfs_proto::RelPath>>,
) -> Result<()> {
    let control = Arc::new(crate::control::State {
        config: config.clone(),
        mountpoint: mountpoint.to_path_buf(),
        store: fs.store().clone(),
        service: service.clone(),
        started: std::time::Instant::now(),
        on_change: Box::new(move |paths| {
            let _ = changed.send(paths);
        }),
        settle_owed: {
            let fs = fs.clone();
            Box::new(move || fs.settle_owed())
        },
    });
    crate::control::serve(control)?;
    if let Some(addr) = config.metrics {
        crate::metrics::serve(
            addr,
            Arc::new(crate::metrics::Sources {
                fs: fs.clone(),
                service: service.clone(),
            }),
        )?;
    }
    Ok(())
}

/// The thread that unmounts on the first SIGTERM, SIGINT or SIGHUP (lazily, if the
/// unmount fails), and what stops it once the session has ended.
struct SignalWatch {
    handle: signal_hook::iterator::Handle,
    thread: std::thread::JoinHandle<()>,
}

impl SignalWatch {
    /// Stops watching and waits for the thread.
    fn stop(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}

/// Starts the [`SignalWatch`] of the mount at `mountpoint`.
fn watch_signals(mountpoint: &Path, mut unmounter: fuser::SessionUnmounter) -> Result<SignalWatch> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let handle = signals.handle();
    let mp = mountpoint.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("depfs-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "unmounting on signal");
                if let Err(e) = unmounter.unmount() {
                    tracing::warn!(error = %e, "unmount failed, detaching lazily");
                    lazy_unmount(&mp);
                }
            }
        })?;
    Ok(SignalWatch { handle, thread })
}

/// Once unmounted: publishes what is still open for writing, removes the control
/// socket, and stops replication (only if nothing else holds the service; a control
/// or metrics thread that does lets it go when the process exits).
fn shut_down(config: &Config, fs: &DepFs, service: Option<Arc<Service>>) {
    fs.publish_all();
    crate::control::remove(config);
    if let Some(service) = service {
        match Arc::try_unwrap(service) {
            Ok(service) => service.shutdown(),
            // Another thread still holds it: peers are told now all the same.
            Err(service) => service.close_connections(),
        }
    }
}

/// Raises the soft limit on open files to the hard limit, as long-running servers do:
/// RocksDB keeps its table files open, and every file open through passthrough holds its
/// local copy open (the default soft limit, 1024, is easily reached by a burst).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer for getrlimit and a valid input to setrlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let before = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                tracing::debug!(before, now = limit.rlim_cur, "open file limit raised");
            }
        }
    }
}

/// Paths changed by peers, from the replicator to the invalidation thread.
type ChangedPaths = std::sync::mpsc::Receiver<Vec<depfs_proto::RelPath>>;

/// A store keeps the mode it was created in: switching an existing cluster between
/// multi-writer and one-way is refused (see docs/operations.md). In one-way mode, a
/// manager's certificate must allow the role.
fn check_mode(config: &Config, store: &Store) -> Result<()> {
    let wanted = match config.mode {
        Mode::MultiWriter => "multi-writer",
        Mode::OneWay => "one-way",
    };
    match store.app_meta("mode")? {
        Some(stored) if stored != wanted.as_bytes() => {
            bail!(
                "data_dir {} holds a {} cluster's store, but the config says mode = {wanted:?}; \
                 switching modes needs new (empty) data_dirs on every node",
                config.data_dir.display(),
                String::from_utf8_lossy(&stored)
            )
        }
        Some(_) => {}
        None => store.set_app_meta("mode", wanted.as_bytes())?,
    }
    if config.mode == Mode::OneWay && config.role == Some(Role::Manager) {
        let lead = store.leadership();
        match lead.manager() {
            None => {
                tracing::info!("first start of the manager: term 1 begins");
                store.set_leadership(Leadership::first(
                    config.node.clone(),
                    store.version_vector(),
                ))?;
            }
            Some(m) if m != &config.node => tracing::warn!(
                manager = %m,
                term = lead.term(),
                "the config says role = \"manager\", but another node was promoted since: \
                 running as a worker (`depfs promote` makes this node the manager again)"
            ),
            Some(_) => {}
        }
    }
    if config.role == Some(Role::Manager) {
        if let Some(tls) = &config.tls {
            if depfs_replicator::tls::role_of_file(&tls.cert)? == Some(CertRole::Worker) {
                bail!(
                    "config {} says role = \"manager\", but certificate {} only allows the worker role",
                    config.source.display(),
                    tls.cert.display()
                );
            }
        }
    }
    Ok(())
}

/// True if local changes are allowed: always in multi-writer mode, only on the current
/// manager in one-way mode (the store's manager terms decide, not the config's role,
/// which only says how a node starts).
fn may_write(config: &Config, store: &Store) -> bool {
    match config.mode {
        Mode::MultiWriter => true,
        Mode::OneWay => store.leadership().manager() == Some(&config.node),
    }
}

/// Applies changes of manager to the mount: writable exactly on the manager. The kernel
/// mount is remounted too, so `statfs` and the mount table tell the truth.
fn spawn_role_keeper(
    fs: Arc<DepFs>,
    mountpoint: PathBuf,
    roles: std::sync::mpsc::Receiver<RoleChange>,
) {
    let _ = std::thread::Builder::new()
        .name("depfs-role".into())
        .spawn(move || {
            while let Ok(role) = roles.recv() {
                let read_only = !role.manages;
                if read_only == fs.is_read_only() {
                    continue;
                }
                if read_only {
                    // Refuse new changes first, then tell the kernel.
                    fs.set_read_only(true);
                }
                if let Err(e) = remount(&mountpoint, read_only) {
                    tracing::warn!(error = %e, read_only, "cannot remount; depfs itself still enforces the role");
                }
                if !read_only {
                    fs.set_read_only(false);
                }
                tracing::info!(manager = ?role.manager.map(|m| m.to_string()), term = role.term, read_only, "role changed");
            }
        });
}

/// Remounts `mountpoint` read-only or read-write, keeping its other flags.
fn remount(mountpoint: &Path, read_only: bool) -> std::io::Result<()> {
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())?;
    let space = depfs_store::sys::statvfs(mountpoint)?;
    // The ST_* flags of statvfs have the values of the matching MS_* mount flags.
    let keep = libc::ST_NOSUID
        | libc::ST_NODEV
        | libc::ST_NOEXEC
        | libc::ST_SYNCHRONOUS
        | libc::ST_NOATIME
        | libc::ST_NODIRATIME
        | libc::ST_RELATIME;
    let mut flags = libc::MS_REMOUNT | (space.flags as libc::c_ulong & keep);
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    // SAFETY: null source, type and data are allowed for a remount.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The node's TLS configuration and identity, when it has one.
fn load_tls(config: &Config) -> Result<Option<depfs_replicator::tls::TlsConfig>> {
    let Some(paths) = &config.tls else {
        return Ok(None);
    };
    Ok(Some(depfs_replicator::tls::load(
        &paths.ca,
        &paths.cert,
        &paths.key,
        &config.node,
    )?))
}

/// Starts replication when the node has a TLS identity (to reach peers or accept them).
fn start_replicator(
    config: &Config,
    tls: Option<depfs_replicator::tls::TlsConfig>,
    store: &Store,
    changed: std::sync::mpsc::Sender<Vec<depfs_proto::RelPath>>,
    roles: std::sync::mpsc::Sender<RoleChange>,
) -> Result<Option<Arc<Service>>> {
    let Some(tls) = tls else {
        return Ok(None);
    };
    let service = Service::start(
        ServiceConfig {
            listen: config.listen,
            peers: config.peers.clone(),
            tls,
            revoked: config.tls.as_ref().and_then(|t| t.revoked.clone()),
            replica: ReplicaConfig::default(),
            mode: match config.mode {
                Mode::MultiWriter => ReplicationMode::MultiWriter,
                Mode::OneWay => ReplicationMode::OneWay,
            },
        },
        store.clone(),
        Callbacks {
            on_changed: Box::new(move |paths| {
                let _ = changed.send(paths);
            }),
            on_role: Box::new(move |role| {
                let _ = roles.send(role);
            }),
        },
    )?;
    store.set_commit_hook(Box::new(service.commit_notifier()));
    Ok(Some(Arc::new(service)))
}

/// Sends the kernel the cache invalidations for paths peers changed, from a thread of
/// its own (never from a request handler: the kernel may be waiting on that handler).
fn spawn_invalidator(fs: Arc<DepFs>, notifier: fuser::Notifier, changed: ChangedPaths) {
    let _ = std::thread::Builder::new()
        .name("depfs-invalidate".into())
        .spawn(move || {
            while let Ok(paths) = changed.recv() {
                for inv in fs.remote_changed(&paths) {
                    let result = match &inv {
                        Invalidation::Entry { parent, name } => notifier.inval_entry(
                            fuser::INodeNo(*parent),
                            std::ffi::OsStr::from_bytes(name),
                        ),
                        Invalidation::Inode(ino) => {
                            let sent = notifier.inval_inode(fuser::INodeNo(*ino), 0, 0);
                            fs.kernel_cache_dropped(*ino);
                            sent
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(?inv, error = %e, "kernel cache invalidation failed");
                    }
                }
            }
        });
}

/// Hands the kernel the page ranges of files being written that it may drop (see
/// `DepFs::write`), from a thread that serves no request.
fn spawn_page_dropper(fs: &DepFs, notifier: fuser::Notifier) {
    let (tx, rx) = std::sync::mpsc::channel::<depfs_fs::PageDrop>();
    fs.send_page_drops_to(tx);
    let _ = std::thread::Builder::new()
        .name("depfs-page-drop".into())
        .spawn(move || {
            while let Ok(drop) = rx.recv() {
                let (Ok(offset), Ok(len)) = (i64::try_from(drop.offset), i64::try_from(drop.len))
                else {
                    continue;
                };
                if let Err(e) = notifier.inval_inode(fuser::INodeNo(drop.ino), offset, len) {
                    tracing::debug!(?drop, error = %e, "dropping written pages failed");
                }
            }
        });
}

fn open_store(config: &Config, root: &std::fs::Metadata) -> Result<Store> {
    use std::os::unix::fs::MetadataExt;
    let t = Timespec::new(root.mtime(), root.mtime_nsec() as u32);
    let root = Meta {
        kind: Kind::Dir,
        perm: root.mode() & 0o7777,
        uid: root.uid(),
        gid: root.gid(),
        mtime: t,
        ctime: t,
    };
    let mut options = StoreOptions::new(root);
    options.min_free_bytes = config.min_free_bytes;
    options.max_clock_drift_ms = config.max_clock_ahead_ms;
    Store::open(&config.data_dir, &config.node, &options).map_err(|e| anyhow!("{e}"))
}

fn fuse_config(config: &Config, options: &MountOptions, read_only: bool) -> fuser::Config {
    use fuser::MountOption as O;
    let mut c = fuser::Config::default();
    c.mount_options.push(O::FSName(
        options
            .fsname
            .clone()
            .unwrap_or_else(|| format!("depfs:{}", config.node)),
    ));
    c.mount_options.push(O::Subtype("depfs".into()));
    c.mount_options.push(O::DefaultPermissions);
    c.mount_options.push(O::NoAtime);
    if read_only {
        c.mount_options.push(O::RO);
    }
    for flag in &options.kernel_flags {
        c.mount_options.push(match flag.as_str() {
            "nosuid" => O::NoSuid,
            "suid" => O::Suid,
            "nodev" => O::NoDev,
            "dev" => O::Dev,
            "noexec" => O::NoExec,
            "exec" => O::Exec,
            "sync" => O::Sync,
            _ => O::DirSync,
        });
    }
    if options.allow_other {
        c.acl = fuser::SessionACL::All;
    } else if options.allow_root {
        c.acl = fuser::SessionACL::RootAndOwner;
    }
    c.n_threads = Some(2);
    c
}

fn lazy_unmount(mountpoint: &Path) {
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: a valid C string; MNT_DETACH only detaches the mount.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
        tracing::error!(error = %std::io::Error::last_os_error(), "lazy unmount failed");
    }
}
