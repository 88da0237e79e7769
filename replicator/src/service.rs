//! The replicator service: a QUIC endpoint, connections to peers (dialled with backoff,
//! accepted after mutual TLS), and one thread that drives the [`Replica`] state machine
//! with their messages, local commits and ticks.
//!
//! Data flows one way: the store's commit hook wakes the replica thread, which sends to
//! peers; messages from peers are applied to the store by the same thread, which reports
//! the changed paths through the `on_changed` callback (kernel cache invalidation).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use depfs_proto::{Certificate, Message, NodeName, RelPath, VersionVector};
use depfs_store::sys::now_ms;
use depfs_store::Store;
use parking_lot::Mutex;
use tokio::sync::mpsc as tmpsc;

use crate::frame;
use crate::replica::{Mode, Output, PromoteError, Replica, ReplicaConfig};
use crate::revoked::{Revoked, SharedRevoked, Watcher};
use crate::tls::{self, TlsConfig};

/// How the service runs.
pub struct ServiceConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Peers to dial, `host:port`.
    pub peers: Vec<String>,
    /// TLS identity and trust.
    pub tls: TlsConfig,
    /// Protocol tunables.
    pub replica: ReplicaConfig,
    /// Who may write.
    pub mode: Mode,
    /// The deny list of revoked certificates, re-read when it changes.
    pub revoked: Option<std::path::PathBuf>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The QUIC endpoint could not be set up.
    #[error("cannot listen on {addr}: {detail}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        detail: String,
    },
    /// The async runtime or a thread could not be started.
    #[error("cannot start the replicator: {0}")]
    Start(String),
}

/// What `status` shows about one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerStatus {
    /// Node name (from its certificate).
    pub name: String,
    /// Address of the current or last connection.
    pub addr: String,
    /// True while connected.
    pub connected: bool,
    /// Unix milliseconds of the last connect or disconnect.
    pub since_ms: u64,
    /// Round-trip time of the connection.
    pub rtt_ms: f64,
    /// Bytes of protocol frames sent to it.
    pub bytes_sent: u64,
    /// Bytes of protocol frames received from it.
    pub bytes_received: u64,
    /// Changes of ours and others the peer has not acknowledged.
    pub lag_changes: u64,
    /// Age of the oldest change it has not acknowledged, in milliseconds.
    pub lag_ms: u64,
    /// Changes it has that this node lacks (catching up from it).
    pub behind_changes: u64,
}

/// A snapshot of the service for `status`.
#[derive(Debug, Clone, Default)]
pub struct ServiceStatus {
    /// Address the endpoint is bound to.
    pub listen: String,
    /// Known peers, in name order.
    pub peers: Vec<PeerStatus>,
    /// Received changes waiting for their chunks.
    pub pending_transfers: usize,
    /// This node's progress.
    pub progress: VersionVector,
    /// Running totals of the replica.
    pub counters: crate::replica::Counters,
    /// Peers disconnected for asking for chunks faster than they read them.
    pub slow_readers_disconnected: u64,
}

/// The role this node plays after a change of manager (one-way mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChange {
    /// The manager now followed.
    pub manager: Option<NodeName>,
    /// Its term.
    pub term: u64,
    /// True if this node is the manager: its mount must become writable.
    pub manages: bool,
}

/// What the service tells the daemon.
pub struct Callbacks {
    /// Paths changed by peers: drop them from the kernel caches.
    pub on_changed: Box<dyn Fn(Vec<RelPath>) + Send>,
    /// The manager changed (one-way mode).
    pub on_role: Box<dyn Fn(RoleChange) + Send>,
}

/// Bytes of frames queued towards one peer beyond which its chunk requests wait: a peer
/// that asks for chunks and does not read the answers is served no faster than it
/// reads (an honest peer fetching a large file is only slowed to its own pace).
pub const SEND_QUEUE_BYTES: usize = 64 << 20;

/// Chunk hashes a peer may have asked for and be waiting for while its send queue is
/// full (32 MiB of hashes, the chunk lists of several of the largest files a frame can
/// carry); a peer that asks for more is disconnected.
pub const DEFERRED_CHUNK_HASHES: usize = 1 << 20;

/// Bytes of frames received from one connection and not yet handled by the replica
/// thread; past it the connection is not read (QUIC flow control then holds the peer).
pub const RECEIVE_QUEUE_BYTES: usize = 64 << 20;

/// The replica thread's side of a connection.
struct Link {
    conn: u64,
    /// The connection itself, to close it at once (a close sent through `tx` would wait
    /// behind everything queued for a peer that does not read).
    connection: quinn::Connection,
    tx: tmpsc::UnboundedSender<Outgoing>,
    /// Bytes handed to the connection's writer and not written yet.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// Set while chunk requests wait: the writer then reports when it has drained.
    waiting: Arc<std::sync::atomic::AtomicBool>,
    /// Chunk requests waiting for the send queue to drain, in arrival order, and how
    /// many hashes they hold (changed only by `defer` and `next_deferred`).
    deferred: std::collections::VecDeque<Vec<depfs_proto::ChunkHash>>,
    deferred_hashes: usize,
}

impl Link {
    fn send(&self, msg: &Message) {
        let bytes = frame::encode(msg);
        self.queued.fetch_add(bytes.len(), Ordering::AcqRel);
        let _ = self.tx.send(Outgoing::Frame(bytes));
    }

    fn full(&self) -> bool {
        self.queued.load(Ordering::Acquire) > SEND_QUEUE_BYTES
    }

    /// Keeps a chunk request until the send queue drains; false if that would be more
    /// than [`DEFERRED_CHUNK_HASHES`] hashes.
    fn defer(&mut self, hashes: Vec<depfs_proto::ChunkHash>) -> bool {
        if self.deferred_hashes + hashes.len() > DEFERRED_CHUNK_HASHES {
            return false;
        }
        self.deferred_hashes += hashes.len();
        self.deferred.push_back(hashes);
        self.waiting.store(true, Ordering::Release);
        true
    }

    /// The oldest waiting chunk request, if the send queue has room for its answer.
    fn next_deferred(&mut self) -> Option<Message> {
        if self.full() {
            self.waiting.store(true, Ordering::Release);
            return None;
        }
        let hashes = self.deferred.pop_front()?;
        self.deferred_hashes -= hashes.len();
        Some(Message::GetChunks { hashes })
    }
}

enum Event {
    Connected {
        peer: NodeName,
        certificate: Option<Certificate>,
        link: Link,
    },
    /// The writer of a connection whose chunk requests wait has drained its queue.
    Drained {
        peer: NodeName,
        conn: u64,
    },
    Disconnected {
        peer: NodeName,
        conn: u64,
    },
    Received {
        peer: NodeName,
        conn: u64,
        msg: Message,
        /// Its share of the connection's receive budget, returned when handled.
        _budget: tokio::sync::OwnedSemaphorePermit,
    },
    LocalCommit,
    Status(mpsc::Sender<ServiceStatus>),
    Promote(mpsc::Sender<Result<u64, PromoteError>>),
    Shutdown,
}

enum Outgoing {
    Frame(Vec<u8>),
    Close(String),
}

#[derive(Default)]
struct PeerInfo {
    addr: String,
    connected: bool,
    since_ms: u64,
    rtt_ms: f64,
    bytes_sent: Arc<AtomicU64>,
    bytes_received: Arc<AtomicU64>,
}

struct ConnHandle {
    id: u64,
    conn: quinn::Connection,
    dialled_by_us: bool,
}

struct Shared {
    node: NodeName,
    events: mpsc::Sender<Event>,
    conns: Mutex<HashMap<NodeName, ConnHandle>>,
    peers: Mutex<BTreeMap<NodeName, PeerInfo>>,
    /// Which node answered at which dialled address.
    addr_names: Mutex<HashMap<String, NodeName>>,
    next_conn: AtomicU64,
    /// Peers disconnected for asking for chunks faster than they read them.
    refused_slow_readers: AtomicU64,
}

impl Shared {
    /// The state of a service of `node` that has no connection yet.
    fn new(node: NodeName, events: mpsc::Sender<Event>) -> Self {
        Shared {
            node,
            events,
            conns: Mutex::new(HashMap::new()),
            peers: Mutex::new(BTreeMap::new()),
            addr_names: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            refused_slow_readers: AtomicU64::new(0),
        }
    }
}

/// The running replicator.
pub struct Service {
    shared: Arc<Shared>,
    /// For the parts of `status` that read the store (lag), on the caller's thread.
    store: Store,
    runtime: Option<tokio::runtime::Runtime>,
    endpoint: quinn::Endpoint,
    thread: Option<std::thread::JoinHandle<()>>,
    local_addr: SocketAddr,
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // quinn closes idle connections after 30 s; keep-alives keep peers connected.
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(20)) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

/// A failure to start, as [`ServiceError::Start`].
fn start_error(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Start(e.to_string())
}

/// The QUIC endpoint, bound to `config.listen` inside `runtime`: it accepts peers with
/// the server side of the node's TLS configuration and dials them with the client
/// side. Returns it with the address it is bound to.
fn open_endpoint(
    runtime: &tokio::runtime::Runtime,
    config: &ServiceConfig,
) -> Result<(quinn::Endpoint, SocketAddr), ServiceError> {
    let server_crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(config.tls.server.clone())
            .map_err(start_error)?;
    let client_crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(config.tls.client.clone())
            .map_err(start_error)?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server_config.transport_config(transport());
    let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
    client_config.transport_config(transport());
    let mut endpoint = {
        let _guard = runtime.enter();
        quinn::Endpoint::server(server_config, config.listen).map_err(|e| ServiceError::Listen {
            addr: config.listen,
            detail: e.to_string(),
        })?
    };
    endpoint.set_default_client_config(client_config);
    let local_addr = endpoint.local_addr().map_err(start_error)?;
    Ok((endpoint, local_addr))
}

/// Reads the deny list of revoked certificates, when the config names one, into the
/// list the TLS verifiers share, and returns what watches its file for changes.
fn load_revoked(config: &ServiceConfig) -> Result<Option<Watcher>, ServiceError> {
    let Some(path) = &config.revoked else {
        return Ok(None);
    };
    let list = Revoked::load(path).map_err(start_error)?;
    *config.tls.identity.revoked.write() = list;
    Ok(Some(Watcher::new(path.clone())))
}

/// How often the replica thread ticks: ticks drive hellos, stalls, collection and
/// delayed relays, so at least twice per hello interval (50 ms to 1 s) and once per
/// relay delay, and at most every 10 ms.
fn tick_interval(replica: &ReplicaConfig) -> Duration {
    Duration::from_millis(
        (replica.hello_every_ms.clamp(50, 1000) / 2)
            .min(replica.relay_delay_ms)
            .max(10),
    )
}

impl Service {
    /// Starts listening and dialling. Local commits must be reported with
    /// [`Service::local_commit`] (the daemon wires the store's commit hook to it);
    /// `callbacks` receive the paths changed by peers and changes of manager.
    ///
    /// In order: the async runtime and the QUIC endpoint ([`open_endpoint`]), the deny
    /// list ([`load_revoked`]), the replica and its thread ([`replica_loop`]), then the
    /// tasks accepting and dialling peers.
    pub fn start(
        config: ServiceConfig,
        store: Store,
        callbacks: Callbacks,
    ) -> Result<Service, ServiceError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("depfs-net")
            .enable_all()
            .build()
            .map_err(start_error)?;
        let (endpoint, local_addr) = open_endpoint(&runtime, &config)?;
        let (events, rx) = mpsc::channel();
        let shared = Arc::new(Shared::new(store.node().clone(), events));

        let status_store = store.clone();
        let watcher = load_revoked(&config)?;
        let revoked = config.tls.identity.revoked.clone();
        let replica = Replica::new(
            store,
            Vec::new(),
            config.replica.clone(),
            &config.tls.identity,
        )
        .map_err(start_error)?
        .expecting_peers(config.peers.len())
        .with_mode(config.mode);
        let thread_shared = shared.clone();
        let tick = tick_interval(&config.replica);
        let thread = std::thread::Builder::new()
            .name("depfs-replica".into())
            .spawn(move || {
                let revocations = watcher.map(|w| Revocations {
                    watcher: w,
                    list: revoked,
                    next_check: Instant::now(),
                });
                replica_loop(replica, rx, thread_shared, callbacks, tick, revocations)
            })
            .map_err(start_error)?;

        runtime.spawn(accept_loop(endpoint.clone(), shared.clone()));
        for peer in config.peers {
            runtime.spawn(dial_loop(endpoint.clone(), shared.clone(), peer));
        }
        tracing::info!(listen = %local_addr, "replicator listening");
        Ok(Service {
            shared,
            store: status_store,
            runtime: Some(runtime),
            endpoint,
            thread: Some(thread),
            local_addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A local change was committed: push it.
    pub fn local_commit(&self) {
        let _ = self.shared.events.send(Event::LocalCommit);
    }

    /// A hook for the store: every local commit wakes the replicator.
    pub fn commit_notifier(&self) -> impl Fn() + Send + Sync + 'static {
        let events = Mutex::new(self.shared.events.clone());
        move || {
            let _ = events.lock().send(Event::LocalCommit);
        }
    }

    /// Peers, progress and transfers.
    pub fn status(&self) -> ServiceStatus {
        let (tx, rx) = mpsc::channel();
        if self.shared.events.send(Event::Status(tx)).is_err() {
            return ServiceStatus::default();
        }
        let mut status = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
        add_lag(&self.store, &mut status);
        status
    }

    /// `depfs promote`: makes this node the manager of its one-way cluster in a new
    /// term. Returns the term.
    pub fn promote(&self) -> Result<u64, PromoteError> {
        let (tx, rx) = mpsc::channel();
        self.shared
            .events
            .send(Event::Promote(tx))
            .map_err(|_| PromoteError::Stopped)?;
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| PromoteError::Stopped)?
    }

    /// Stops the service: closes connections and the endpoint, joins the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Closes every connection and waits (at most [`CLOSE_WAIT`]) until the peers were
    /// told: they show this node gone at once, instead of after the idle timeout. Takes
    /// `&self` because a daemon stopping may still share the service (control socket,
    /// metrics) with threads that are not joined.
    pub fn close_connections(&self) {
        let _ = self.shared.events.send(Event::Shutdown);
        self.endpoint.close(0u32.into(), b"shutting down");
        // (Not from inside an async context, where blocking would panic: the close
        // frames are then sent by the runtime while it runs.)
        let in_async = tokio::runtime::Handle::try_current().is_ok();
        if let Some(rt) = self.runtime.as_ref().filter(|_| !in_async) {
            let endpoint = self.endpoint.clone();
            // The timeout is made inside the runtime: made outside, its timer finds no
            // runtime and panics.
            let waited =
                rt.block_on(async { tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle()).await });
            if waited.is_err() {
                tracing::debug!("peers did not acknowledge the close in time");
            }
        }
    }

    fn stop(&mut self) {
        self.close_connections();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The deny list the replica loop re-reads when its file changes.
struct Revocations {
    watcher: Watcher,
    list: SharedRevoked,
    next_check: Instant,
}

/// The longest a stopping service waits for its peers to acknowledge the close.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// How often the deny list's file is looked at (a `stat`).
const REVOCATION_CHECK: Duration = Duration::from_secs(1);

impl Revocations {
    /// Re-reads the list if its file changed; returns the connected peers it revokes.
    fn poll(&mut self, replica: &mut Replica) -> Vec<NodeName> {
        if Instant::now() < self.next_check {
            return Vec::new();
        }
        self.next_check = Instant::now() + REVOCATION_CHECK;
        match self.watcher.reload_if_changed(&self.list) {
            None => Vec::new(),
            Some(Ok(entries)) => {
                tracing::info!(file = %self.watcher.path().display(), entries, "deny list of revoked certificates reloaded");
                replica.revocations_changed()
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "the deny list of revoked certificates does not parse: the previous one stays in force");
                Vec::new()
            }
        }
    }
}

/// The thread that owns the replica: it takes one event at a time (a burst of local
/// commits counts as one), lets [`ReplicaThread`] handle it, ticks when a tick is due,
/// and carries out what the replica asked for.
fn replica_loop(
    replica: Replica,
    rx: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
    callbacks: Callbacks,
    tick: Duration,
    revocations: Option<Revocations>,
) {
    let mut thread = ReplicaThread {
        replica,
        links: BTreeMap::new(),
        shared,
        callbacks,
        revocations,
    };
    let mut backlog: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
    let mut next_tick = Instant::now() + tick;
    loop {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        let event = match backlog.pop_front() {
            Some(ev) => Ok(ev),
            None => rx.recv_timeout(timeout),
        };
        let mut outputs = match event {
            Ok(Event::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(Event::LocalCommit) => {
                // Many commits may be queued: one push covers them all. Other events
                // keep their order in the backlog.
                while let Ok(ev) = rx.try_recv() {
                    if !matches!(ev, Event::LocalCommit) {
                        backlog.push_back(ev);
                    }
                }
                thread.local_commit()
            }
            Ok(event) => match thread.on_event(event) {
                Some(outputs) => outputs,
                // A frame from a connection no longer current, or a chunk request set
                // aside (or refused): nothing to deliver, and a due tick waits for the
                // next turn.
                None => continue,
            },
            Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
        };
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + tick;
            outputs.extend(thread.tick());
        }
        deliver(outputs, &thread.links, &thread.callbacks);
    }
    for (_, link) in thread.links {
        let _ = link.tx.send(Outgoing::Close("shutting down".into()));
    }
}

/// What the replica thread owns: the replica, its side of each connection, and what it
/// reports to. Each handler returns what the replica asked for, for
/// [`replica_loop`] to deliver.
struct ReplicaThread {
    replica: Replica,
    links: BTreeMap<NodeName, Link>,
    shared: Arc<Shared>,
    callbacks: Callbacks,
    revocations: Option<Revocations>,
}

impl ReplicaThread {
    /// Handles an event other than `Shutdown` and `LocalCommit`. `None` means the event
    /// was dropped or set aside before reaching the replica.
    fn on_event(&mut self, event: Event) -> Option<Vec<Output>> {
        match event {
            Event::Connected {
                peer,
                certificate,
                link,
            } => Some(self.connected(peer, certificate, link)),
            Event::Disconnected { peer, conn } => {
                if self.links.get(&peer).is_some_and(|l| l.conn == conn) {
                    self.links.remove(&peer);
                    self.replica.disconnected(&peer);
                }
                Some(Vec::new())
            }
            Event::Drained { peer, conn } => {
                if self.links.get(&peer).is_some_and(|l| l.conn == conn) {
                    serve_deferred(&mut self.replica, &mut self.links, &peer, &self.callbacks);
                }
                Some(Vec::new())
            }
            Event::Received {
                peer, conn, msg, ..
            } => self.received(peer, conn, msg),
            Event::Status(reply) => {
                let _ = reply.send(status(&self.replica, &self.shared));
                Some(Vec::new())
            }
            Event::Promote(reply) => {
                let (result, outputs) = match self.replica.promote(now_ms()) {
                    Ok((term, out)) => (Ok(term), out),
                    Err(e) => (Err(e), Vec::new()),
                };
                let _ = reply.send(result);
                Some(outputs)
            }
            // Taken care of by `replica_loop` before it gets here.
            Event::LocalCommit | Event::Shutdown => Some(Vec::new()),
        }
    }

    /// A connection is up: the replica checks the peer's certificate (and says hello),
    /// or the connection is closed.
    fn connected(
        &mut self,
        peer: NodeName,
        certificate: Option<Certificate>,
        link: Link,
    ) -> Vec<Output> {
        let accepted = certificate
            .ok_or_else(|| "the connection carries no peer certificate".to_string())
            .and_then(|c| {
                self.replica
                    .connected(&peer, &c, now_ms())
                    .map_err(|e| e.to_string())
            });
        match accepted {
            Ok(out) => {
                self.links.insert(peer, link);
                out
            }
            Err(e) => {
                tracing::error!(%peer, error = %e, "a connected peer is refused");
                link.connection
                    .close(quinn::VarInt::from_u32(1), b"refused");
                Vec::new()
            }
        }
    }

    /// A message from the current connection of `peer` (others are dropped). A chunk
    /// request while the peer's send queue is full, or others wait, waits its turn; a
    /// peer that lets too many wait is disconnected.
    fn received(&mut self, peer: NodeName, conn: u64, msg: Message) -> Option<Vec<Output>> {
        let link = self.links.get_mut(&peer).filter(|l| l.conn == conn)?;
        let msg = match msg {
            Message::GetChunks { hashes } if link.full() || !link.deferred.is_empty() => {
                if !link.defer(hashes) {
                    self.shared
                        .refused_slow_readers
                        .fetch_add(1, Ordering::Relaxed);
                    let why = format!(
                        "asked for more than {DEFERRED_CHUNK_HASHES} chunks without reading the answers"
                    );
                    tracing::warn!(%peer, "closing the connection to a peer that {why}");
                    close_link(&mut self.replica, &mut self.links, &peer, &why);
                }
                return None;
            }
            msg => msg,
        };
        Some(handle(&mut self.replica, &mut self.links, &peer, msg))
    }

    /// Pushes local commits to peers.
    fn local_commit(&mut self) -> Vec<Output> {
        match self.replica.local_commit(now_ms()) {
            Ok(out) => out,
            Err(e) => {
                tracing::error!(error = %e, "reading local changes to send failed");
                Vec::new()
            }
        }
    }

    /// Periodic work: the replica's tick, then the deny list (peers whose certificate
    /// it now names are disconnected).
    fn tick(&mut self) -> Vec<Output> {
        let outputs = match self.replica.tick(now_ms()) {
            Ok(out) => out,
            Err(e) => {
                tracing::error!(error = %e, "periodic replication work failed");
                Vec::new()
            }
        };
        let revoked = self
            .revocations
            .as_mut()
            .map(|r| r.poll(&mut self.replica))
            .unwrap_or_default();
        for peer in revoked {
            tracing::warn!(%peer, "disconnecting a peer whose certificate was revoked");
            close_link(
                &mut self.replica,
                &mut self.links,
                &peer,
                "certificate revoked",
            );
        }
        outputs
    }
}

/// Hands `msg` from `peer` to the replica; a peer that sent bad data is disconnected.
fn handle(
    replica: &mut Replica,
    links: &mut BTreeMap<NodeName, Link>,
    peer: &NodeName,
    msg: Message,
) -> Vec<Output> {
    match replica.receive(peer, msg, now_ms()) {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "closing the connection to a peer that sent bad data");
            close_link(replica, links, peer, &e.to_string());
            Vec::new()
        }
    }
}

fn close_link(
    replica: &mut Replica,
    links: &mut BTreeMap<NodeName, Link>,
    peer: &NodeName,
    reason: &str,
) {
    if let Some(link) = links.remove(peer) {
        link.connection.close(3u32.into(), reason.as_bytes());
    }
    replica.disconnected(peer);
}

/// Answers `peer`'s waiting chunk requests while its send queue has room.
fn serve_deferred(
    replica: &mut Replica,
    links: &mut BTreeMap<NodeName, Link>,
    peer: &NodeName,
    callbacks: &Callbacks,
) {
    while let Some(msg) = links.get_mut(peer).and_then(Link::next_deferred) {
        let outputs = handle(replica, links, peer, msg);
        deliver(outputs, links, callbacks);
    }
}

/// Carries out what the replica asked for.
fn deliver(outputs: Vec<Output>, links: &BTreeMap<NodeName, Link>, callbacks: &Callbacks) {
    for output in outputs {
        match output {
            Output::Send { to, msg } => {
                if let Some(link) = links.get(&to) {
                    link.send(&msg);
                }
            }
            Output::Changed(paths) => (callbacks.on_changed)(paths),
            Output::Role {
                manager,
                term,
                manages,
            } => (callbacks.on_role)(RoleChange {
                manager,
                term,
                manages,
            }),
        }
    }
}

/// Each peer's lag: the changes it has not acknowledged, and how old the oldest is. It
/// scans the change log, so it runs on the thread asking (`depfs status`, a metrics
/// scrape), never on the replica thread, which would stop replicating meanwhile.
fn add_lag(store: &Store, status: &mut ServiceStatus) {
    let now = now_ms();
    for peer in &mut status.peers {
        let Ok(name) = NodeName::new(&peer.name) else {
            continue;
        };
        let acked = store.peer_acked(&name).unwrap_or_default();
        let missing = store.dots_since(&acked).unwrap_or_default();
        peer.lag_changes = missing.len() as u64;
        peer.lag_ms = missing
            .first()
            .and_then(|d| store.log_record(d).ok().flatten())
            .map(|r| now.saturating_sub(r.hlc.wall_ms))
            .unwrap_or(0);
    }
}

fn status(replica: &Replica, shared: &Shared) -> ServiceStatus {
    let progress = replica.store().version_vector();
    let peers = shared
        .peers
        .lock()
        .iter()
        .map(|(name, info)| {
            PeerStatus {
                name: name.to_string(),
                addr: info.addr.clone(),
                connected: info.connected,
                since_ms: info.since_ms,
                rtt_ms: info.rtt_ms,
                bytes_sent: info.bytes_sent.load(Ordering::Relaxed),
                bytes_received: info.bytes_received.load(Ordering::Relaxed),
                // Filled in by `add_lag`, off this thread.
                lag_changes: 0,
                lag_ms: 0,
                behind_changes: replica.behind(name),
            }
        })
        .collect();
    ServiceStatus {
        listen: String::new(),
        peers,
        pending_transfers: replica.pending_transfers(),
        progress,
        counters: replica.counters(),
        slow_readers_disconnected: shared.refused_slow_readers.load(Ordering::Relaxed),
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            match incoming.await {
                Ok(conn) => run_connection(conn, shared, false).await,
                Err(e) => tracing::warn!(%addr, error = %e, "refused a connection"),
            }
        });
    }
}

async fn dial_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, peer: String) {
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::new();
    loop {
        let known = shared.addr_names.lock().get(&peer).cloned();
        if known.is_some_and(|n| shared.conns.lock().contains_key(&n)) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let result = async {
            let addr = tokio::net::lookup_host(&peer)
                .await
                .map_err(|e| e.to_string())?
                .next()
                .ok_or_else(|| "no address".to_string())?;
            let connecting = endpoint.connect(addr, "depfs").map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(5), connecting)
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                last_error.clear();
                if let Some(name) = tls::peer_node(&conn) {
                    shared.addr_names.lock().insert(peer.clone(), name);
                }
                run_connection(conn, shared.clone(), true).await;
            }
            Err(e) => {
                if e != last_error {
                    tracing::warn!(%peer, error = %e, "cannot connect to peer; retrying with backoff");
                    last_error = e;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Serves one authenticated connection until it ends: the handshake ([`peer_of`],
/// [`register`]), then, once the stream is open, the replica thread gets its
/// [`Link`], a [`Writer`] task writes what it queues and [`read_frames`] hands it what
/// the peer sends; at the end, [`unregister`].
async fn run_connection(conn: quinn::Connection, shared: Arc<Shared>, dialled_by_us: bool) {
    let addr = conn.remote_address();
    let Some(peer) = peer_of(&conn, &shared.node) else {
        return;
    };
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    if !register(&shared, &peer, id, &conn, dialled_by_us) {
        return;
    }
    let (bytes_sent, bytes_received) = {
        let mut peers = shared.peers.lock();
        let info = peers.entry(peer.clone()).or_default();
        info.addr = addr.to_string();
        info.connected = true;
        info.since_ms = now_ms();
        info.rtt_ms = conn.rtt().as_secs_f64() * 1000.0;
        (info.bytes_sent.clone(), info.bytes_received.clone())
    };
    tracing::info!(%peer, %addr, "peer connected");

    let streams = if dialled_by_us {
        conn.open_bi().await
    } else {
        conn.accept_bi().await
    };
    if let Ok((send, mut recv)) = streams {
        let writer = link_up(&shared, &peer, id, &conn, send, bytes_sent);
        let writer = tokio::spawn(writer.run());
        read_frames(&mut recv, &conn, &shared, &peer, id, &bytes_received).await;
        writer.abort();
    }
    unregister(&shared, &peer, id, addr);
    conn.close(0u32.into(), b"bye");
}

/// The node a new connection is from, named by its certificate; `None` (and the
/// connection closed) for a certificate that names no node or names this one.
fn peer_of(conn: &quinn::Connection, me: &NodeName) -> Option<NodeName> {
    let addr = conn.remote_address();
    let Some(peer) = tls::peer_node(conn) else {
        tracing::warn!(%addr, "refused a peer whose certificate names no node");
        conn.close(1u32.into(), b"no node name in certificate");
        return None;
    };
    if &peer == me {
        tracing::warn!(%addr, "refused a peer presenting this node's own name");
        conn.close(1u32.into(), b"that is my name");
        return None;
    }
    Some(peer)
}

/// True if the connection dialled by `dialler` is the one kept between `me` and
/// `peer`: one connection per pair of nodes, the one dialled by the smaller name.
fn preferred(me: &NodeName, peer: &NodeName, dialled_by_me: bool) -> bool {
    let dialler = if dialled_by_me { me } else { peer };
    dialler == std::cmp::min(me, peer)
}

/// Records connection `id` as the one to `peer`, closing an open connection it
/// replaces; false (and the new connection closed) if the open one is preferred.
fn register(
    shared: &Shared,
    peer: &NodeName,
    id: u64,
    conn: &quinn::Connection,
    dialled_by_us: bool,
) -> bool {
    let mut conns = shared.conns.lock();
    if let Some(existing) = conns.get(peer) {
        if existing.conn.close_reason().is_none()
            && (preferred(&shared.node, peer, existing.dialled_by_us)
                || !preferred(&shared.node, peer, dialled_by_us))
        {
            conn.close(2u32.into(), b"duplicate connection");
            return false;
        }
        existing.conn.close(2u32.into(), b"duplicate connection");
    }
    conns.insert(
        peer.clone(),
        ConnHandle {
            id,
            conn: conn.clone(),
            dialled_by_us,
        },
    );
    true
}

/// Gives the replica thread its side of connection `id` (a [`Link`], through
/// [`Event::Connected`]) and returns the [`Writer`] that empties its send queue.
fn link_up(
    shared: &Shared,
    peer: &NodeName,
    id: u64,
    conn: &quinn::Connection,
    send: quinn::SendStream,
    bytes_sent: Arc<AtomicU64>,
) -> Writer {
    let (tx, rx) = tmpsc::unbounded_channel();
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let waiting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _ = shared.events.send(Event::Connected {
        peer: peer.clone(),
        certificate: tls::peer_certificate(conn),
        link: Link {
            conn: id,
            connection: conn.clone(),
            tx,
            queued: queued.clone(),
            waiting: waiting.clone(),
            deferred: Default::default(),
            deferred_hashes: 0,
        },
    });
    Writer {
        rx,
        send,
        connection: conn.clone(),
        queued,
        waiting,
        bytes_sent,
        events: shared.events.clone(),
        peer: peer.clone(),
        conn: id,
    }
}

/// The task writing one connection's frames, in the order the replica thread queued
/// them, until the queue closes, a write fails or the thread asks to close.
struct Writer {
    rx: tmpsc::UnboundedReceiver<Outgoing>,
    send: quinn::SendStream,
    connection: quinn::Connection,
    /// Shared with the [`Link`]: bytes queued and not written yet.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// Shared with the [`Link`]: set while chunk requests wait for the queue to drain.
    waiting: Arc<std::sync::atomic::AtomicBool>,
    bytes_sent: Arc<AtomicU64>,
    events: mpsc::Sender<Event>,
    peer: NodeName,
    conn: u64,
}

impl Writer {
    /// Writes frames; reports [`Event::Drained`] once the queue is down to half of
    /// [`SEND_QUEUE_BYTES`] while chunk requests wait.
    async fn run(mut self) {
        while let Some(out) = self.rx.recv().await {
            match out {
                Outgoing::Frame(bytes) => {
                    if self.send.write_all(&bytes).await.is_err() {
                        break;
                    }
                    self.bytes_sent
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    let left = self.queued.fetch_sub(bytes.len(), Ordering::AcqRel) - bytes.len();
                    if left <= SEND_QUEUE_BYTES / 2 && self.waiting.swap(false, Ordering::AcqRel) {
                        let _ = self.events.send(Event::Drained {
                            peer: self.peer.clone(),
                            conn: self.conn,
                        });
                    }
                }
                Outgoing::Close(reason) => {
                    let _ = self.send.finish();
                    self.connection.close(3u32.into(), reason.as_bytes());
                    break;
                }
            }
        }
    }
}

/// Reads frames from `peer` and hands them to the replica thread until the stream ends
/// or a frame is bad (the connection is then closed). Frames wait unread while the
/// replica thread holds [`RECEIVE_QUEUE_BYTES`] of this connection's.
async fn read_frames(
    recv: &mut quinn::RecvStream,
    conn: &quinn::Connection,
    shared: &Shared,
    peer: &NodeName,
    id: u64,
    bytes_received: &AtomicU64,
) {
    let budget = Arc::new(tokio::sync::Semaphore::new(RECEIVE_QUEUE_BYTES));
    loop {
        match frame::read(recv).await {
            Ok((msg, size)) => {
                bytes_received.fetch_add(size as u64, Ordering::Relaxed);
                if let Some(info) = shared.peers.lock().get_mut(peer) {
                    info.rtt_ms = conn.rtt().as_secs_f64() * 1000.0;
                }
                // Wait (not reading the next frame) while the replica thread holds
                // too many of this connection's frames.
                let share = size.clamp(1, RECEIVE_QUEUE_BYTES) as u32;
                let Ok(permit) = budget.clone().acquire_many_owned(share).await else {
                    break;
                };
                let _ = shared.events.send(Event::Received {
                    peer: peer.clone(),
                    conn: id,
                    msg,
                    _budget: permit,
                });
            }
            Err(frame::FrameError::Stream(_)) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing the connection to a peer that sent a bad frame");
                conn.close(4u32.into(), b"bad frame");
                break;
            }
        }
    }
}

/// Tells the replica thread connection `id` ended and, if it is still the one to
/// `peer`, forgets it and shows the peer disconnected.
fn unregister(shared: &Shared, peer: &NodeName, id: u64, addr: SocketAddr) {
    let _ = shared.events.send(Event::Disconnected {
        peer: peer.clone(),
        conn: id,
    });
    let mut conns = shared.conns.lock();
    if conns.get(peer).is_some_and(|c| c.id == id) {
        conns.remove(peer);
        if let Some(info) = shared.peers.lock().get_mut(peer) {
            info.connected = false;
            info.since_ms = now_ms();
        }
        tracing::info!(%peer, %addr, "peer disconnected");
    }
}
