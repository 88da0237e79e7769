//! The Prometheus metrics endpoint, when the node config has `metrics = "ADDR:PORT"`:
//! `GET /metrics` in the text exposition format, from a small HTTP/1.1 responder on a
//! thread of its own. Everything it reports is read from counters the daemon keeps
//! anyway, except each peer's lag, which scans the change log on this thread (never on
//! the replica thread).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use depfs_fs::stats::BUCKETS_S;
use depfs_fs::DepFs;
use depfs_replicator::{PeerStatus, Service, ServiceStatus};

/// What the endpoint reads from.
pub struct Sources {
    pub fs: Arc<DepFs>,
    pub service: Option<Arc<Service>>,
}

/// Binds `addr` and serves scrapes until the process exits.
pub fn serve(addr: SocketAddr, sources: Arc<Sources>) -> Result<()> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen for metrics on {addr}"))?;
    tracing::info!(%addr, "metrics endpoint listening");
    std::thread::Builder::new()
        .name("depfs-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &sources) {
                    tracing::debug!(error = %e, "metrics request failed");
                }
            }
        })?;
    Ok(())
}

/// Most bytes of a request's line and headers read; a scrape's are a few hundred. What
/// follows is not read (the request is answered from what was).
pub const MAX_REQUEST_HEAD: u64 = 8 * 1024;

/// Longest a client may take to send its request, all reads together: one that sends
/// a byte now and then cannot hold the endpoint (it serves one client at a time).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

fn answer(stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_REQUEST_HEAD));
    let mut request = String::new();
    read_line_before(&mut reader, &mut request, deadline)?;
    // Skip the headers.
    let mut line = String::new();
    while read_line_before(&mut reader, &mut line, deadline)? > 2 {
        line.clear();
    }
    let mut stream = stream;
    if request.starts_with("GET /metrics ") || request.starts_with("GET / ") {
        let body = render(sources);
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    }
}

/// `read_line`, failing with `TimedOut` once `deadline` has passed.
fn read_line_before(
    reader: &mut BufReader<std::io::Take<TcpStream>>,
    line: &mut String,
    deadline: Instant,
) -> std::io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    reader.get_ref().get_ref().set_read_timeout(Some(left))?;
    reader.read_line(line)
}

/// One metric family: its help and type lines, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn label(key: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{{{key}=\"{escaped}\"}}")
}

/// A metric family with one sample and no labels.
struct Single {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: f64,
}

impl Single {
    fn counter(name: &'static str, help: &'static str, value: f64) -> Self {
        Single {
            name,
            kind: "counter",
            help,
            value,
        }
    }

    fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Single {
            name,
            kind: "gauge",
            help,
            value,
        }
    }
}

/// Writes families of one unlabelled sample each, in order.
fn singles(out: &mut String, families: &[Single]) {
    for f in families {
        family(out, f.name, f.kind, f.help, &[(String::new(), f.value)]);
    }
}

/// The whole exposition: the store's families, then (with replication) the replica's
/// and each peer's, then the filesystem's. The order is part of the output.
pub fn render(sources: &Sources) -> String {
    let mut out = String::new();
    singles(&mut out, &store_families(sources.fs.store()));
    if let Some(service) = &sources.service {
        // One status for all replication families, so that they agree with each other.
        let status = service.status();
        singles(&mut out, &replication_families(&status));
        peer_families(&mut out, &status.peers);
    }
    fs_families(&mut out, &sources.fs);
    op_durations(&mut out, &sources.fs);
    out
}

/// What the store knows without asking the replicator.
fn store_families(store: &depfs_store::Store) -> [Single; 3] {
    [
        Single::counter(
            "depfs_changes_committed_total",
            "Changes committed on this node.",
            store.last_seq() as f64,
        ),
        Single::gauge(
            "depfs_conflicts",
            "Recorded conflicts.",
            store.conflict_count().unwrap_or(0) as f64,
        ),
        Single::gauge(
            "depfs_entries",
            "Files, directories and symlinks (RocksDB estimate).",
            store.estimated_entries().unwrap_or(0) as f64,
        ),
    ]
}

/// The replica's running totals, as counters, between the slow-reader counter and the
/// pending-transfers gauge.
fn replication_families(status: &ServiceStatus) -> Vec<Single> {
    let c = status.counters;
    let totals = [
        ("depfs_changes_sent_total", "Changes sent to peers.", c.changes_sent),
        (
            "depfs_versions_applied_total",
            "Versions received from peers and applied.",
            c.versions_applied,
        ),
        (
            "depfs_versions_obsolete_total",
            "Versions received that were already known or superseded.",
            c.versions_obsolete,
        ),
        (
            "depfs_changes_refused_total",
            "Changes refused (one-way mode: not made by a manager).",
            c.changes_refused,
        ),
        (
            "depfs_changes_forged_total",
            "Changes refused because their origin's signature did not fit them (the sender is disconnected).",
            c.changes_forged,
        ),
        (
            "depfs_terms_refused_total",
            "Manager histories not followed: a term not signed by the manager it names under a manager-capable certificate.",
            c.terms_refused,
        ),
        (
            "depfs_changes_ahead_of_clock_total",
            "Batches refused: a change stamped further ahead of this node's clock than max_clock_ahead_s.",
            c.changes_from_the_future,
        ),
        (
            "depfs_progress_claims_cut_total",
            "Progress claims from peers cut to what they backed with changes.",
            c.progress_claims_cut,
        ),
        ("depfs_chunks_received_total", "Content chunks received from peers.", c.chunks_received),
        ("depfs_chunks_sent_total", "Content chunks sent to peers.", c.chunks_sent),
    ];
    let mut families = vec![Single::counter(
        "depfs_peers_disconnected_slow_total",
        "Peers disconnected for asking for more chunks than they read.",
        status.slow_readers_disconnected as f64,
    )];
    families.extend(
        totals
            .into_iter()
            .map(|(name, help, value)| Single::counter(name, help, value as f64)),
    );
    families.push(Single::gauge(
        "depfs_pending_transfers",
        "Received changes waiting for their content.",
        status.pending_transfers as f64,
    ));
    families
}

/// A metric family with one sample per peer, labelled with the peer's name.
struct PeerFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// The peer's sample.
    figure: fn(&PeerStatus) -> f64,
}

/// The families with one sample per peer, in output order.
const PEER_FAMILIES: [PeerFamily; 6] = [
    PeerFamily {
        name: "depfs_peer_connected",
        kind: "gauge",
        help: "1 while connected to the peer.",
        figure: |p| f64::from(u8::from(p.connected)),
    },
    PeerFamily {
        name: "depfs_peer_rtt_seconds",
        kind: "gauge",
        help: "Round-trip time to the peer.",
        figure: |p| p.rtt_ms / 1000.0,
    },
    PeerFamily {
        name: "depfs_peer_lag_changes",
        kind: "gauge",
        help: "Changes the peer has not acknowledged.",
        figure: |p| p.lag_changes as f64,
    },
    PeerFamily {
        name: "depfs_peer_lag_seconds",
        kind: "gauge",
        help: "Age of the oldest change the peer has not acknowledged.",
        figure: |p| p.lag_ms as f64 / 1000.0,
    },
    PeerFamily {
        name: "depfs_peer_sent_bytes_total",
        kind: "counter",
        help: "Protocol bytes sent to the peer.",
        figure: |p| p.bytes_sent as f64,
    },
    PeerFamily {
        name: "depfs_peer_received_bytes_total",
        kind: "counter",
        help: "Protocol bytes received from the peer.",
        figure: |p| p.bytes_received as f64,
    },
];

/// Each of [`PEER_FAMILIES`], with a `peer` label per peer.
fn peer_families(out: &mut String, peers: &[PeerStatus]) {
    for f in PEER_FAMILIES {
        let samples: Vec<(String, f64)> = peers
            .iter()
            .map(|p| (label("peer", &p.name), (f.figure)(p)))
            .collect();
        family(out, f.name, f.kind, f.help, &samples);
    }
}

/// The filesystem's counters and gauges. Passthrough opens are written as an integer
/// (not through `f64`), as they always were.
fn fs_families(out: &mut String, fs: &DepFs) {
    let name = "depfs_fs_passthrough_opens_total";
    let _ = writeln!(
        out,
        "# HELP {name} Opens served by the kernel from a local copy (FUSE passthrough)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {}", fs.stats().passthrough_opens());
    singles(
        out,
        &[
            Single::counter(
                "depfs_fs_panics_total",
                "Filesystem operations that panicked (a bug) and were answered EIO; the mount went on.",
                fs.stats().panics() as f64,
            ),
            Single::gauge(
                "depfs_fs_owed_files",
                "Large files closed here and not yet published (see docs/design.md, Owed files).",
                fs.owed_files() as f64,
            ),
        ],
    );
}

/// The latency histogram of filesystem operations, one series per operation.
fn op_durations(out: &mut String, fs: &DepFs) {
    let name = "depfs_fs_op_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Latency of filesystem operations served."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for op in fs.stats().snapshot() {
        let op_name = op.op.name();
        for (i, count) in op.cumulative.iter().enumerate() {
            let le = BUCKETS_S
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{op=\"{op_name}\",le=\"{le}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_sum{{op=\"{op_name}\"}} {}", op.sum_s);
        let _ = writeln!(out, "{name}_count{{op=\"{op_name}\"}} {}", op.count);
    }
}
