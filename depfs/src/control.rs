//! The control socket: `data_dir/control.sock` (mode 0600, so root only by default), one
//! JSON request per connection, one JSON reply. `depfs status` and `depfs sync` use it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use depfs_replicator::pki::CertRole;
use depfs_replicator::{PeerStatus, Service, ServiceStatus};
use depfs_store::sys::now_ms;
use depfs_store::{Store, StoreStats};
use serde_json::{json, Value};

use crate::config::{Config, Mode};

/// What the control socket reports on.
pub struct State {
    pub config: Config,
    pub mountpoint: PathBuf,
    pub store: Store,
    pub service: Option<Arc<Service>>,
    pub started: Instant,
    /// Called with the paths a control command changed (kernel cache invalidation).
    pub on_change: Box<dyn Fn(Vec<depfs_proto::RelPath>) + Send + Sync>,
    /// Waits until large files closed here are published (see depfs_fs's `owed`), so
    /// that `depfs sync` counts them as changes made before it.
    pub settle_owed: Box<dyn Fn() + Send + Sync>,
}

/// The socket path for a config.
pub fn socket_path(config: &Config) -> PathBuf {
    config.data_dir.join("control.sock")
}

/// Serves the control socket on a thread until the process exits.
pub fn serve(state: Arc<State>) -> Result<()> {
    let path = socket_path(&state.config);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("depfs-control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                let _ = std::thread::Builder::new()
                    .name("depfs-control-req".into())
                    .spawn(move || {
                        if let Err(e) = handle(&state, stream) {
                            tracing::debug!(error = %e, "control request failed");
                        }
                    });
            }
        })?;
    Ok(())
}

/// Removes the socket at shutdown.
pub fn remove(config: &Config) {
    let _ = std::fs::remove_file(socket_path(config));
}

fn handle(state: &State, stream: UnixStream) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
    let reply = match request.get("cmd").and_then(Value::as_str) {
        Some("status") => status(state),
        Some("sync") => {
            let timeout = request
                .get("timeout_ms")
                .and_then(Value::as_u64)
                .unwrap_or(30_000);
            sync(state, Duration::from_millis(timeout))
        }
        Some("conflicts") => conflicts(state),
        Some("conflict_content") => {
            conflict_content(state, &request).unwrap_or_else(|e| json!({"error": e.to_string()}))
        }
        Some("restore") => {
            restore(state, &request).unwrap_or_else(|e| json!({"error": e.to_string()}))
        }
        Some("verify") => match state.store.check_integrity() {
            Ok(problems) => json!({ "problems": problems }),
            Err(e) => json!({"error": format!("cannot read the store: {e}")}),
        },
        Some("promote") => promote(state).unwrap_or_else(|e| json!({"error": format!("{e:#}")})),
        Some("log") => log(
            state,
            request.get("limit").and_then(Value::as_u64).unwrap_or(20) as usize,
        ),
        _ => json!({"error": "unknown request"}),
    };
    let mut stream = stream;
    writeln!(stream, "{reply}")?;
    Ok(())
}

/// The reply to `status`: who this node is, its peers, its last change, how far it
/// is from caught up, and its store. The parts are computed by the functions below;
/// the keys stay in this order.
fn status(state: &State) -> Value {
    let store = &state.store;
    let stats = store.stats().ok();
    let service = state.service.as_ref().map(|s| s.status());
    let peers: Vec<Value> = service
        .iter()
        .flat_map(|s| s.peers.iter())
        .map(peer_status)
        .collect();
    let last = last_change(store);
    let lead = store.leadership();
    let (mode, role) = mode_and_role(state.config.mode, lead.manager() == Some(store.node()));
    json!({
        "node": state.config.node.to_string(),
        "mode": mode,
        "role": role,
        "manager": lead.manager().map(|m| m.to_string()),
        "term": lead.term(),
        // Two nodes promoted to the same term (the last such contest this node saw).
        "contested_term": store
            .app_meta(depfs_replicator::replica::CONTESTED_TERM_KEY)
            .ok()
            .flatten()
            .map(|note| String::from_utf8_lossy(&note).into_owned()),
        "mountpoint": state.mountpoint.display().to_string(),
        "data_dir": state.config.data_dir.display().to_string(),
        "config": state.config.source.display().to_string(),
        "uptime_s": state.started.elapsed().as_secs(),
        "listen": state.config.listen.to_string(),
        "peers": peers,
        "last_change": last,
        "pending_transfers": service.as_ref().map_or(0, |s| s.pending_transfers),
        "catching_up": catching_up(service.as_ref()),
        "conflicts": stats.as_ref().map_or(0, |s| s.conflicts),
        "store": store_figures(stats.as_ref(), &state.config.data_dir),
        "progress": store.version_vector().iter().map(|(n, s)| (n.to_string(), json!(s))).collect::<serde_json::Map<_, _>>(),
    })
}

/// One peer in the `status` reply.
fn peer_status(p: &PeerStatus) -> Value {
    json!({
        "name": p.name,
        "addr": p.addr,
        "connected": p.connected,
        "since_ms": p.since_ms,
        "rtt_ms": p.rtt_ms,
        "lag_changes": p.lag_changes,
        "behind_changes": p.behind_changes,
        "lag_ms": p.lag_ms,
        "bytes_sent": p.bytes_sent,
        "bytes_received": p.bytes_received,
    })
}

/// The newest change in the log, if any (null in the reply otherwise).
fn last_change(store: &Store) -> Option<Value> {
    store
        .recent_changes(1)
        .ok()
        .and_then(|v| v.into_iter().next())
        .map(|(dot, r)| {
            json!({
                "change": dot.to_string(),
                "node": dot.node.to_string(),
                "time_ms": r.hlc.wall_ms,
                "paths": r.paths.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            })
        })
}

/// The names of the cluster's mode and of this node's role in it. In one-way mode the
/// role follows the store's manager terms (`manages`), not the config.
fn mode_and_role(mode: Mode, manages: bool) -> (&'static str, &'static str) {
    match mode {
        Mode::MultiWriter => ("multi-writer", "writer"),
        Mode::OneWay if manages => ("one-way", "manager"),
        Mode::OneWay => ("one-way", "worker"),
    }
}

/// Catching up (bootstrap of a new node): the most changes a peer has that this node
/// still lacks, and the content received so far. Zeros without a replicator.
fn catching_up(service: Option<&ServiceStatus>) -> Value {
    json!({
        "changes_remaining": service.map_or(0, |s| s.peers.iter().map(|p| p.behind_changes).max().unwrap_or(0)),
        "changes_applied": service.map_or(0, |s| s.counters.versions_applied),
        "bytes_received": service.map_or(0, |s| s.peers.iter().map(|p| p.bytes_received).sum::<u64>()),
    })
}

/// The store's counts (zeros if they could not be read) and the size of its database.
fn store_figures(stats: Option<&StoreStats>, data_dir: &Path) -> Value {
    json!({
        "entries": stats.map_or(0, |s| s.entries),
        "versions": stats.map_or(0, |s| s.heads),
        "tombstones": stats.map_or(0, |s| s.tombstones),
        "chunks": stats.map_or(0, |s| s.chunks),
        "log_records": stats.map_or(0, |s| s.log_records),
        "size_bytes": dir_size(&data_dir.join("db")),
    })
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// `depfs promote`: this node becomes the manager, if its certificate allows the role.
fn promote(state: &State) -> Result<Value> {
    if state.config.mode != Mode::OneWay {
        bail!(
            "{} is in a multi-writer cluster: every node writes already",
            state.config.node
        );
    }
    let Some(service) = &state.service else {
        bail!("this node has no replicator (no [tls] in its config)");
    };
    if let Some(tls) = &state.config.tls {
        if depfs_replicator::tls::role_of_file(&tls.cert)? == Some(CertRole::Worker) {
            bail!(
                "certificate {} only allows the worker role; issue one with `depfs ca issue --role manager`",
                tls.cert.display()
            );
        }
    }
    let term = service.promote()?;
    Ok(json!({"term": term, "manager": state.config.node.to_string()}))
}

/// Waits until every change made here before the call is acknowledged by every
/// connected peer.
fn sync(state: &State, timeout: Duration) -> Value {
    let start = Instant::now();
    (state.settle_owed)();
    let seq = state.store.last_seq();
    let me = state.store.node().clone();
    let Some(service) = &state.service else {
        return json!({"synced": true, "waited_ms": 0, "pending": []});
    };
    loop {
        let status = service.status();
        let pending: Vec<String> = status
            .peers
            .iter()
            .filter(|p| p.connected)
            .filter(|p| {
                depfs_proto::NodeName::new(&p.name)
                    .ok()
                    .and_then(|n| state.store.peer_acked(&n).ok())
                    .is_none_or(|acked| acked.get(&me) < seq)
            })
            .map(|p| p.name.clone())
            .collect();
        let waited = start.elapsed();
        if pending.is_empty() || waited >= timeout {
            return json!({"synced": pending.is_empty(), "waited_ms": waited.as_millis() as u64, "pending": pending, "at_ms": now_ms()});
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn conflicts(state: &State) -> Value {
    let lead = state.store.leadership();
    match state.store.conflicts() {
        Ok(list) => json!({"conflicts": list.iter().map(|c| {
            let node = c.version.node();
            json!({
                "path": c.path.to_string(),
                "id": c.version.dot.to_string(),
                "node": c.version.dot.node.to_string(),
                // One-way mode: written by an old manager cut off from the cluster.
                "cut_off": lead.is_cut_off(&c.version.dot),
                "time_ms": c.version.hlc.wall_ms,
                "kind": node.map(|n| format!("{:?}", n.meta.kind).to_lowercase()),
                "size": node.map(|n| n.size()),
                "mtime": node.map(|n| n.meta.mtime.secs),
            })
        }).collect::<Vec<_>>()}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// Finds the conflict `id` (`node:seq`) of `path`.
fn find_conflict(state: &State, request: &Value) -> Result<depfs_store::Conflict> {
    let path = request.get("path").and_then(Value::as_str).unwrap_or("");
    let id = request.get("id").and_then(Value::as_str).unwrap_or("");
    let rel = parse_path(path)?;
    state
        .store
        .conflicts()?
        .into_iter()
        .find(|c| c.path == rel && c.version.dot.to_string() == id)
        .ok_or_else(|| anyhow!("no conflict {id} at {path} (see `depfs conflicts list`)"))
}

/// A path as users write it (`/a/b` or `a/b`, relative to the mount).
pub fn parse_path(path: &str) -> Result<depfs_proto::RelPath> {
    depfs_proto::RelPath::parse(
        path.trim_start_matches('/')
            .trim_end_matches('/')
            .as_bytes(),
    )
    .map_err(|e| anyhow!("path {path:?}: {e}"))
}

fn conflict_content(state: &State, request: &Value) -> Result<Value> {
    let c = find_conflict(state, request)?;
    let node = c
        .version
        .node()
        .ok_or_else(|| anyhow!("not a live version"))?;
    let reader = depfs_store::ContentReader::new(node.content.clone());
    let bytes = reader.read(&state.store, 0, reader.size() as usize)?;
    Ok(json!({"content": bytes}))
}

fn restore(state: &State, request: &Value) -> Result<Value> {
    let c = find_conflict(state, request)?;
    let to = match request.get("to").and_then(Value::as_str) {
        Some(to) => parse_path(to)?,
        None => c.path.clone(),
    };
    let committed = state
        .store
        .restore_conflict(&c.path, &c.version.dot, &to, now_ms())?
        .ok_or_else(|| anyhow!("the conflict went away meanwhile"))?;
    (state.on_change)(vec![c.path.clone(), to.clone()]);
    Ok(json!({"restored": to.to_string(), "change": committed.dot.to_string()}))
}

fn log(state: &State, limit: usize) -> Value {
    let changes = match state.store.recent_changes(limit) {
        Ok(c) => c,
        Err(e) => return json!({"error": e.to_string()}),
    };
    let entries: Vec<Value> = changes
        .into_iter()
        .map(|(dot, record)| {
            let ops: Vec<Value> = record
                .paths
                .iter()
                .map(|p| {
                    let op = state
                        .store
                        .heads(p)
                        .ok()
                        .and_then(|hs| hs.into_iter().find(|h| h.dot == dot))
                        .map(|h| match h.node() {
                            Some(n) => format!("{:?}", n.meta.kind).to_lowercase(),
                            None => "delete".to_string(),
                        })
                        .unwrap_or_else(|| "superseded".into());
                    json!({"op": op, "path": p.to_string()})
                })
                .collect();
            json!({"change": dot.to_string(), "node": dot.node.to_string(), "time_ms": record.hlc.wall_ms, "ops": ops})
        })
        .collect();
    json!({"log": entries})
}

/// Sends a request to the daemon of `config` and returns its reply.
pub fn request(config: &Config, request: Value) -> Result<Value> {
    let path = socket_path(config);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        anyhow!(
            "depfs is not running for node {} (control socket {}: {e})",
            config.node,
            path.display()
        )
    })?;
    writeln!(stream, "{request}")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).context("malformed reply from the daemon")
}
