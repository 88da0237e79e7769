//! The synchronisation protocol as a deterministic state machine: messages and ticks in,
//! messages and store writes out. No sockets, no clock reads, no threads — the caller
//! passes the time — so the same code runs in the cluster simulation and in the daemon.
//!
//! Per peer, the replica remembers what the peer is known to have (`known`: its last
//! `Hello`, raised by everything sent to it since). Pushing to a peer sends every change
//! it lacks — changes made here and changes relayed from others — in bounded `Changes`
//! messages, at most [`ReplicaConfig::window`] unacknowledged at a time; the last message
//! of a batch carries `upto`, this node's progress, which the receiver adopts if it
//! already had `base`. Anything lost, duplicated or reordered on the way is repaired by
//! the next `Hello`, which every node sends on connect and periodically.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use depfs_proto::{
    Authority, Certificate, Change, ChunkData, ChunkHash, Dot, Leadership, Message, NodeName,
    RelPath, VersionVector,
};
use depfs_store::{Applied, PinGuard, Store, StoreError};

use crate::members::{self, Learned, Members, TermRefusal};
use crate::tls::Identity;
use depfs_proto::lead::Term;

/// Tunables, with defaults suited to a LAN cluster.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Changes per `Changes` message at most.
    pub batch_changes: usize,
    /// Approximate bytes of inline content per `Changes` message at most.
    pub batch_bytes: usize,
    /// Unacknowledged `Changes` messages per peer at most (flow control).
    pub window: usize,
    /// Chunks asked for per `GetChunks` at most.
    pub fetch_batch: usize,
    /// Bytes of chunks per `Chunks` reply at most.
    pub chunk_reply_bytes: usize,
    /// Anti-entropy: a `Hello` to every peer this often.
    pub hello_every_ms: u64,
    /// A peer that acknowledges nothing for this long is resynchronised.
    pub stall_ms: u64,
    /// Tombstones are collected this often.
    pub gc_every_ms: u64,
    /// Changes received from one peer are relayed to the others after this delay, so
    /// that their `Progress` (sent by every node when it applies changes) can show that
    /// they already have them.
    pub relay_delay_ms: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            batch_changes: 512,
            batch_bytes: 4 << 20,
            window: 4,
            fetch_batch: 256,
            chunk_reply_bytes: 8 << 20,
            hello_every_ms: 5_000,
            stall_ms: 15_000,
            gc_every_ms: 60_000,
            relay_delay_ms: 50,
        }
    }
}

/// What the replica asks its driver to do.
#[derive(Debug)]
pub enum Output {
    /// Send `msg` to `to`.
    Send {
        /// The peer.
        to: NodeName,
        /// The message.
        msg: Message,
    },
    /// These paths changed on this node because of a peer: invalidate their caches.
    Changed(Vec<RelPath>),
    /// One-way mode: the manager followed changed (or this node was promoted). The
    /// mount must be writable exactly when `manages`.
    Role {
        /// The manager now followed.
        manager: Option<NodeName>,
        /// Its term.
        term: u64,
        /// True if this node is the manager.
        manages: bool,
    },
}

/// Why a peer's message was refused. The driver closes that peer's connection and logs
/// the error; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The peer said something no honest node says.
    #[error("peer {peer}: {what}")]
    Protocol {
        /// The peer.
        peer: NodeName,
        /// What was wrong.
        what: String,
    },
    /// A certificate was not accepted.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The store failed (disk full, I/O error) or refused the peer's data.
    #[error("peer {peer}: {source}")]
    Store {
        /// The peer.
        peer: NodeName,
        /// The store's error.
        source: StoreError,
    },
}

/// Where a `Changes` message stands in its batch.
#[derive(Debug)]
struct Part {
    batch: u64,
    part: u32,
    last: bool,
    base: VersionVector,
    /// The sender's progress, carried by the last part only.
    upto: Option<VersionVector>,
}

/// A `Changes` part waiting for its chunks.
struct Waiting {
    part: Part,
    changes: Vec<Change>,
    missing: BTreeSet<ChunkHash>,
    _pins: PinGuard,
}

/// A batch of changes being sent to a peer.
struct Outgoing {
    batch: u64,
    next_part: u32,
    base: VersionVector,
    upto: VersionVector,
    dots: VecDeque<Dot>,
}

/// The parts of an incoming batch applied so far.
#[derive(Default)]
struct Incoming {
    applied: BTreeSet<u32>,
    /// From the last part: its number, `base` and `upto`.
    last: Option<(u32, VersionVector, VersionVector)>,
}

/// Incoming batches remembered per peer (older ones are forgotten: their progress is
/// recovered by the next `Hello`).
const INCOMING_BATCHES: usize = 16;

#[derive(Default)]
struct Peer {
    known: Option<VersionVector>,
    outgoing: Option<Outgoing>,
    in_flight: usize,
    last_progress_ms: u64,
    last_hello_ms: Option<u64>,
    waiting: VecDeque<Waiting>,
    fetched: Vec<PinGuard>,
    asked: BTreeSet<ChunkHash>,
    /// When chunks were last asked for or received.
    fetch_activity_ms: u64,
    /// When changes received from other peers are due to be relayed to this one.
    relay_at_ms: Option<u64>,
    /// The last batch number used towards this peer.
    batches_sent: u64,
    /// Batches being received from this peer.
    incoming: BTreeMap<u64, Incoming>,
    /// Changes sent in this session that `known` does not cover (held here beyond our
    /// own progress): not sent again until the peer's next `Hello`.
    sent_beyond: BTreeSet<Dot>,
    /// Origins whose certificates were sent in this session (sent again after the
    /// peer's next `Hello`, which may follow lost messages).
    certificates_sent: BTreeSet<NodeName>,
    /// The certificate the peer authenticated this session with; `None` while no
    /// session is up.
    certificate: Option<Certificate>,
}

impl Peer {
    fn is_connected(&self) -> bool {
        self.certificate.is_some()
    }

    /// A `Hello` starts the session over: what was in flight either arrived or is
    /// sent again.
    fn restart_session(&mut self, known: VersionVector, now_ms: u64) {
        self.known = Some(known);
        self.outgoing = None;
        self.in_flight = 0;
        self.sent_beyond.clear();
        self.certificates_sent.clear();
        self.last_progress_ms = now_ms;
    }

    /// The next part of the outgoing batch, carrying `changes` and the certificates of
    /// their origins not yet sent in this session; the last part ends the batch and
    /// raises what the peer is known to have.
    fn next_part(&mut self, changes: Vec<Change>, members: &Members) -> Option<Message> {
        let mut certificates = Vec::new();
        for change in &changes {
            if self.certificates_sent.insert(change.dot.node.clone()) {
                certificates.extend(members.certificates(&change.dot.node));
            }
        }
        let outgoing = self.outgoing.as_mut()?;
        let last = outgoing.dots.is_empty();
        let part = outgoing.next_part;
        outgoing.next_part += 1;
        let msg = Message::Changes {
            batch: outgoing.batch,
            part,
            last,
            base: outgoing.base.clone(),
            certificates,
            changes,
            upto: last.then(|| outgoing.upto.clone()),
        };
        if last {
            let upto = outgoing.upto.clone();
            self.outgoing = None;
            if let Some(known) = &mut self.known {
                known.merge(&upto);
            }
        }
        Some(msg)
    }

    /// True if a waiting part lacks `hash`.
    fn waits_for(&self, hash: &ChunkHash) -> bool {
        self.waiting.iter().any(|w| w.missing.contains(hash))
    }

    /// Records `part` as applied; returns the batch's `base` and `upto` once every part
    /// of it is, which is when the sender's progress may be adopted.
    fn complete_part(&mut self, part: &Part) -> Option<(VersionVector, VersionVector)> {
        let batch = self.incoming.entry(part.batch).or_default();
        batch.applied.insert(part.part);
        if let (true, Some(upto)) = (part.last, &part.upto) {
            batch.last = Some((part.part, part.base.clone(), upto.clone()));
        }
        let done = match &batch.last {
            Some((last, base, upto)) if batch.applied.len() as u64 == u64::from(*last) + 1 => {
                Some((base.clone(), upto.clone()))
            }
            _ => None,
        };
        if done.is_some() {
            self.incoming.remove(&part.batch);
        }
        while self.incoming.len() > INCOMING_BATCHES {
            self.incoming.pop_first();
        }
        done
    }
}

/// The store key ([`Store::app_meta`]) of the last promotion contest seen: two nodes
/// promoted to the same term (`depfs status` shows it).
pub const CONTESTED_TERM_KEY: &str = "lead/contested";

/// Who may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every node writes; changes from any member are applied.
    MultiWriter,
    /// One manager writes; only managers' changes are applied (others are refused and
    /// logged). The manager terms are kept by the store (see
    /// [`depfs_store::Store::leadership`]) and spread with every `Hello`.
    OneWay,
}

/// Why `promote` was refused.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// Only one-way clusters have a manager.
    #[error(
        "this node is in a multi-writer cluster: every node writes, there is nothing to promote"
    )]
    NotOneWay,
    /// Nothing to do.
    #[error("this node already is the manager (term {0})")]
    AlreadyManager(u64),
    /// The history holds the most terms a peer accepts.
    #[error("the leadership history already holds {0} terms, the most a peer accepts")]
    HistoryFull(usize),
    /// The store could not record the new term.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The replicator is not running.
    #[error("the replicator is not running")]
    Stopped,
}

/// One node's side of replication with all its peers.
pub struct Replica {
    store: Store,
    config: ReplicaConfig,
    peers: BTreeMap<NodeName, Peer>,
    configured: Vec<NodeName>,
    /// How many peers the configuration lists (by address: their names are learned when
    /// they connect). Tombstones are collected only once at least this many peers are
    /// known by name.
    expected_peers: usize,
    last_gc_ms: u64,
    mode: Mode,
    /// The members' certificates, which every change received is checked against.
    members: Members,
    /// Which peer is asked for damaged chunks next.
    repair_turn: usize,
    counters: Counters,
}

/// Running totals since the replica started, for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Changes sent to peers (each copy counts).
    pub changes_sent: u64,
    /// Versions received from peers that became heads.
    pub versions_applied: u64,
    /// Versions received that were old news.
    pub versions_obsolete: u64,
    /// Changes refused (one-way mode: not made by a manager).
    pub changes_refused: u64,
    /// Changes whose seal did not verify with their origin's certificate (the peer is
    /// disconnected).
    pub changes_forged: u64,
    /// Manager histories not followed because a term was not signed by the manager it
    /// names under a manager-capable certificate (a forged signature disconnects).
    pub terms_refused: u64,
    /// Batches refused because a change was stamped too far ahead of the local clock
    /// (the peer is disconnected; it retries when it reconnects).
    pub changes_from_the_future: u64,
    /// Progress claims cut to what their sender backed with changes.
    pub progress_claims_cut: u64,
    /// Chunks received from peers and stored.
    pub chunks_received: u64,
    /// Chunks sent to peers.
    pub chunks_sent: u64,
}

impl Replica {
    /// A replica over `store` whose configured peers are `configured` (tombstones are
    /// kept until all of them have acknowledged), for the node `identity` names: from
    /// now on every change committed to `store` is signed with its key, and every change
    /// received is checked against the certificates of its origin — this node's own,
    /// those the store kept from earlier runs, and those learned from peers.
    pub fn new(
        store: Store,
        configured: Vec<NodeName>,
        config: ReplicaConfig,
        identity: &Identity,
    ) -> Result<Self, ReplicaError> {
        let mut members = Members::new(identity.ca.clone(), identity.revoked.clone());
        let own = members
            .learn(&identity.certificate)
            .map_err(|e| ReplicaError::Certificate(format!("this node's own: {e}")))?;
        if &own.node != store.node() {
            return Err(ReplicaError::Certificate(format!(
                "this node's own names {}, the store belongs to {}",
                own.node,
                store.node()
            )));
        }
        let sealed = store
            .set_signer(identity.signer.clone())
            .map_err(|source| ReplicaError::Store {
                peer: own.node.clone(),
                source,
            })?;
        if sealed > 0 {
            tracing::info!(
                changes = sealed,
                "signed this node's changes made before it had a key"
            );
        }
        match store.app_meta_under(members::STORE_PREFIX) {
            Ok(kept) => {
                for (key, der) in kept {
                    if let Err(e) = members.learn(&Certificate(der)) {
                        tracing::warn!(%key, error = %e, "a member certificate kept in the store is not accepted any more");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read the member certificates kept in the store")
            }
        }
        Ok(Replica {
            store,
            config,
            peers: BTreeMap::new(),
            expected_peers: configured.len(),
            configured,
            last_gc_ms: 0,
            mode: Mode::MultiWriter,
            members,
            repair_turn: 0,
            counters: Counters::default(),
        })
    }

    /// The configuration lists `n` peers, whose names are not known yet: no tombstone
    /// is collected before `n` peers have been heard from (a peer never heard from may
    /// still hold what the tombstone deleted).
    pub fn expecting_peers(mut self, n: usize) -> Self {
        self.expected_peers = self.expected_peers.max(n);
        self
    }

    /// Sets who may write (multi-writer by default).
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The current mode (and, in one-way mode, the manager followed).
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Accepts a member's certificate (a peer's, from its TLS handshake, or one a peer
    /// sent) and keeps a new one in the store.
    pub fn learn_certificate(
        &mut self,
        certificate: &Certificate,
    ) -> Result<Learned, ReplicaError> {
        let learned = self
            .members
            .learn(certificate)
            .map_err(|e| ReplicaError::Certificate(e.to_string()))?;
        if learned.new {
            tracing::info!(node = %learned.node, "learned a member certificate");
            self.store
                .set_app_meta(&Members::store_key(certificate), &certificate.0)
                .map_err(|source| ReplicaError::Store {
                    peer: learned.node.clone(),
                    source,
                })?;
        }
        Ok(learned)
    }

    /// The manager followed, in one-way mode.
    pub fn manager(&self) -> Option<NodeName> {
        self.store.leadership().manager().cloned()
    }

    /// True if this node is the current manager (one-way mode).
    pub fn is_manager(&self) -> bool {
        self.mode == Mode::OneWay && self.manager().as_ref() == Some(self.store.node())
    }

    /// In one-way mode, keeps only the changes made by a manager (including those an old
    /// manager made cut off, which the store keeps as conflicts); the others are refused
    /// and logged. Returns `None` while no manager is known (nothing can be judged yet).
    fn admissible(
        &mut self,
        from: &NodeName,
        changes: Vec<Change>,
    ) -> Result<Option<Vec<Change>>, StoreError> {
        if self.mode == Mode::MultiWriter {
            return Ok(Some(changes));
        }
        let lead = self.store.leadership();
        if lead.is_empty() {
            return Ok(None);
        }
        let (keep, refused): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .partition(|c| lead.authority(&c.dot) != Authority::NotManager);
        if !refused.is_empty() {
            self.counters.changes_refused += refused.len() as u64;
            let origins: BTreeSet<String> =
                refused.iter().map(|c| c.dot.node.to_string()).collect();
            tracing::warn!(
                peer = %from,
                refused = refused.len(),
                ?origins,
                manager = ?lead.manager().map(|m| m.to_string()),
                "refused changes not made by a manager"
            );
        }
        Ok(Some(keep))
    }

    /// A peer told us the manager terms it follows. A later history is followed, unless
    /// the peer itself claims to be the manager while its certificate only allows the
    /// worker role. Following a new term may make this node step down.
    fn leadership_claim(
        &mut self,
        from: &NodeName,
        claimed: Leadership,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), ReplicaError> {
        if self.mode == Mode::MultiWriter || claimed.is_empty() {
            return Ok(());
        }
        claimed
            .validate()
            .map_err(|e| protocol(from, format!("leadership history: {e}")))?;
        let ours = self.store.leadership();
        let later = claimed.supersedes(&ours);
        // Two nodes promoted to the same term: the claim or ours names the other.
        let contest = match (claimed.current(), ours.current()) {
            (Some(theirs), Some(mine))
                if theirs.number == mine.number && theirs.manager != mine.manager =>
            {
                Some((theirs.clone(), mine.clone()))
            }
            _ => None,
        };
        let signs_more = claimed.signs_more_of(&ours);
        if !later && !signs_more && contest.is_none() {
            return Ok(());
        }
        if !self.terms_verify(from, &claimed, &ours)? {
            return Ok(());
        }
        if let Some((theirs, mine)) = &contest {
            let (followed, other) = if later {
                (theirs, mine)
            } else {
                (mine, theirs)
            };
            self.record_contest(from, followed, other)?;
        }
        if !later {
            if signs_more {
                // The same terms, signed since this node stored them: keep them.
                self.store
                    .set_leadership(claimed)
                    .map_err(store_error(from))?;
            }
            return Ok(());
        }
        self.follow(from, claimed, now_ms, out)
    }

    /// Checks the terms of `claimed` this node does not hold: true if all verify. A
    /// forged signature ends the session; a term that is merely not followable (an
    /// unknown manager, a worker's certificate) is ignored with a warning.
    fn terms_verify(
        &mut self,
        from: &NodeName,
        claimed: &Leadership,
        ours: &Leadership,
    ) -> Result<bool, ReplicaError> {
        for term in claimed.unknown_terms(ours) {
            match self.members.verify_term(term) {
                Ok(()) => {}
                Err(refusal @ TermRefusal::Forged { .. }) => {
                    self.counters.terms_refused += 1;
                    return Err(protocol(
                        from,
                        format!("sent a manager term its manager did not make: {refusal}"),
                    ));
                }
                Err(refusal) => {
                    self.counters.terms_refused += 1;
                    tracing::warn!(peer = %from, "a manager history is not followed: {refusal}");
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Follows a verified, later manager history: this node may step down, and the
    /// other peers hear of it.
    fn follow(
        &mut self,
        from: &NodeName,
        claimed: Leadership,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), ReplicaError> {
        let Some(term) = claimed.current().cloned() else {
            return Ok(());
        };
        if &term.manager == self.store.node() {
            // Only this node signs its own terms, and it holds every one it made.
            self.counters.terms_refused += 1;
            tracing::warn!(peer = %from, term = term.number, "a term naming this node, which it does not hold, is not followed");
            return Ok(());
        }
        let was_manager = self.is_manager();
        let changed = self
            .store
            .set_leadership(claimed)
            .map_err(store_error(from))?;
        if was_manager {
            tracing::warn!(manager = %term.manager, term = term.number, via = %from, "another node was promoted: this node steps down to worker; its changes the new manager lacked are kept as conflicts");
        } else {
            tracing::info!(manager = %term.manager, term = term.number, via = %from, "following the manager");
        }
        if !changed.is_empty() {
            out.push(Output::Changed(changed));
        }
        out.push(self.role_output());
        // Spread the news.
        for peer in self.connected_peers() {
            if &peer != from {
                out.push(self.hello(&peer, now_ms));
            }
        }
        Ok(())
    }

    /// Two nodes were promoted to the same term (both terms verified): logged, and kept
    /// for `depfs status` until a later contest replaces it.
    fn record_contest(
        &mut self,
        from: &NodeName,
        followed: &Term,
        other: &Term,
    ) -> Result<(), ReplicaError> {
        let note = format!(
            "term {}: {} and {} were both promoted; {} is followed",
            followed.number, other.manager, followed.manager, followed.manager
        );
        let store_err = store_error(from);
        if self
            .store
            .app_meta(CONTESTED_TERM_KEY)
            .map_err(&store_err)?
            .as_deref()
            == Some(note.as_bytes())
        {
            return Ok(());
        }
        tracing::warn!(term = followed.number, followed = %followed.manager, other = %other.manager, "two nodes were promoted to the same term: the greater name is followed everywhere, the other steps down");
        self.store
            .set_app_meta(CONTESTED_TERM_KEY, note.as_bytes())
            .map_err(store_err)
    }

    fn role_output(&self) -> Output {
        let lead = self.store.leadership();
        Output::Role {
            manager: lead.manager().cloned(),
            term: lead.term(),
            manages: self.is_manager(),
        }
    }

    /// `depfs promote`: makes this node the manager in a new term. Every change of the
    /// old manager this node has stays; later ones it made cut off become conflicts.
    pub fn promote(&mut self, now_ms: u64) -> Result<(u64, Vec<Output>), PromoteError> {
        if self.mode != Mode::OneWay {
            return Err(PromoteError::NotOneWay);
        }
        if self.is_manager() {
            return Err(PromoteError::AlreadyManager(self.store.leadership().term()));
        }
        if self.store.leadership().terms().len() >= depfs_proto::lead::MAX_TERMS {
            // One more term would make a history every peer refuses.
            return Err(PromoteError::HistoryFull(depfs_proto::lead::MAX_TERMS));
        }
        let lead = self
            .store
            .leadership()
            .promote(self.store.node().clone(), self.store.version_vector());
        let term = lead.term();
        let changed = self.store.set_leadership(lead)?;
        tracing::warn!(term, "promoted to manager");
        let mut out = Vec::new();
        if !changed.is_empty() {
            out.push(Output::Changed(changed));
        }
        out.push(self.role_output());
        for peer in self.connected_peers() {
            out.push(self.hello(&peer, now_ms));
        }
        Ok((term, out))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Peers with an open connection.
    pub fn connected_peers(&self) -> Vec<NodeName> {
        self.peers
            .iter()
            .filter(|(_, p)| p.is_connected())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A connection to `peer`, authenticated by `certificate`, is up: say what we have.
    /// A certificate the cluster CA did not issue for `peer` is refused (the transport
    /// checked it already; this keeps the replica from trusting a driver that did not).
    pub fn connected(
        &mut self,
        peer: &NodeName,
        certificate: &Certificate,
        now_ms: u64,
    ) -> Result<Vec<Output>, ReplicaError> {
        let learned = self.learn_certificate(certificate)?;
        if &learned.node != peer {
            return Err(protocol(
                peer,
                format!("its certificate names {}", learned.node),
            ));
        }
        let p = self.peers.entry(peer.clone()).or_default();
        *p = Peer {
            last_progress_ms: now_ms,
            certificate: Some(certificate.clone()),
            ..Peer::default()
        };
        Ok(vec![self.hello(peer, now_ms)])
    }

    /// The deny list was reloaded: the certificates it names are forgotten (changes and
    /// terms they sign are refused from now on). Returns the connected peers whose
    /// session certificate it names: the driver disconnects them.
    pub fn revocations_changed(&mut self) -> Vec<NodeName> {
        let lost = self.members.forget_revoked();
        if !lost.is_empty() {
            tracing::warn!(nodes = ?lost.iter().map(|n| n.to_string()).collect::<Vec<_>>(), "certificates revoked: what they sign is refused from now on");
        }
        self.peers
            .iter()
            .filter(|(_, p)| {
                p.certificate
                    .as_ref()
                    .is_some_and(|c| self.members.is_revoked(c))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The connection to `peer` is gone: forget the session (progress is in the store).
    pub fn disconnected(&mut self, peer: &NodeName) {
        if let Some(p) = self.peers.get_mut(peer) {
            *p = Peer::default();
        }
    }

    fn hello(&mut self, peer: &NodeName, now_ms: u64) -> Output {
        if let Some(p) = self.peers.get_mut(peer) {
            p.last_hello_ms = Some(now_ms);
        }
        let lead = match self.mode {
            Mode::MultiWriter => Leadership::default(),
            Mode::OneWay => self.store.leadership(),
        };
        let certificates = lead
            .managers()
            .into_iter()
            .flat_map(|m| self.members.certificates(m))
            .collect();
        Output::Send {
            to: peer.clone(),
            msg: Message::Hello {
                node: self.store.node().clone(),
                vv: self.store.version_vector(),
                lead,
                certificates,
            },
        }
    }

    /// Something was committed locally: push it to every peer.
    pub fn local_commit(&mut self, now_ms: u64) -> Result<Vec<Output>, StoreError> {
        let mut out = Vec::new();
        let peers: Vec<NodeName> = self.connected_peers();
        for peer in peers {
            self.push(&peer, now_ms, &mut out)?;
        }
        Ok(out)
    }

    /// Periodic work: anti-entropy hellos, stalled peers, chunk re-requests, collection.
    pub fn tick(&mut self, now_ms: u64) -> Result<Vec<Output>, StoreError> {
        let mut out = Vec::new();
        let peers: Vec<NodeName> = self.connected_peers();
        for peer in peers {
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            if p.in_flight > 0 && now_ms.saturating_sub(p.last_progress_ms) >= self.config.stall_ms
            {
                // Acknowledgements were lost: start over from the peer's next Hello.
                p.outgoing = None;
                p.in_flight = 0;
                p.known = None;
                p.last_progress_ms = now_ms;
            }
            if !p.waiting.is_empty()
                && now_ms.saturating_sub(p.fetch_activity_ms) >= self.config.stall_ms
            {
                // A request or its answer was lost: ask again for what still misses.
                let missing: BTreeSet<ChunkHash> = p
                    .waiting
                    .iter()
                    .flat_map(|w| w.missing.iter().copied())
                    .collect();
                p.asked = missing.clone();
                p.fetch_activity_ms = now_ms;
                let missing: Vec<ChunkHash> = missing.into_iter().collect();
                for hashes in missing.chunks(self.config.fetch_batch) {
                    out.push(Output::Send {
                        to: peer.clone(),
                        msg: Message::GetChunks {
                            hashes: hashes.to_vec(),
                        },
                    });
                }
            }
            if p.relay_at_ms.is_some_and(|t| now_ms >= t) {
                p.relay_at_ms = None;
                self.push(&peer, now_ms, &mut out)?;
            }
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            let due = p
                .last_hello_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= self.config.hello_every_ms);
            if due {
                out.push(self.hello(&peer, now_ms));
            }
        }
        self.ask_for_damaged_chunks(&mut out)?;
        if now_ms.saturating_sub(self.last_gc_ms) >= self.config.gc_every_ms {
            self.last_gc_ms = now_ms;
            self.collect_tombstones()?;
        }
        Ok(out)
    }

    /// Deletes the tombstones every peer has acknowledged. The peers are every node this
    /// one has ever heard from (their acknowledgements are in the store), the configured
    /// ones and the connected ones; while fewer are known than the configuration lists,
    /// nothing is collected. A peer that never acknowledged counts as having nothing.
    fn collect_tombstones(&mut self) -> Result<usize, StoreError> {
        let mut peers: BTreeSet<NodeName> = self.store.acked_peers()?.into_iter().collect();
        peers.extend(self.configured.iter().cloned());
        peers.extend(self.peers.keys().cloned());
        peers.remove(self.store.node());
        if peers.len() < self.expected_peers {
            return Ok(0);
        }
        let peers: Vec<NodeName> = peers.into_iter().collect();
        self.store.collect_tombstones(&peers)
    }

    /// Chunks found corrupt on disk are asked for again, from one connected peer per
    /// tick in turn (a peer without a good copy answers "missing").
    fn ask_for_damaged_chunks(&mut self, out: &mut Vec<Output>) -> Result<(), StoreError> {
        let peers = self.connected_peers();
        if peers.is_empty() {
            return Ok(());
        }
        let damaged = self.store.damaged_chunks()?;
        if damaged.is_empty() {
            return Ok(());
        }
        self.repair_turn = self.repair_turn.wrapping_add(1);
        let peer = peers[self.repair_turn % peers.len()].clone();
        tracing::info!(%peer, chunks = damaged.len(), "asking a peer for damaged chunks");
        for hashes in damaged.chunks(self.config.fetch_batch) {
            out.push(Output::Send {
                to: peer.clone(),
                msg: Message::GetChunks {
                    hashes: hashes.to_vec(),
                },
            });
        }
        Ok(())
    }

    /// Handles a message from `from` (whose identity the transport has authenticated).
    pub fn receive(
        &mut self,
        from: &NodeName,
        msg: Message,
        now_ms: u64,
    ) -> Result<Vec<Output>, ReplicaError> {
        if !self.peers.get(from).is_some_and(Peer::is_connected) {
            return Err(protocol(from, "message outside a session"));
        }
        let mut out = Vec::new();
        match msg {
            Message::Hello {
                node,
                vv,
                lead,
                certificates,
            } => {
                if &node != from {
                    return Err(protocol(from, format!("claims to be {node}")));
                }
                self.learn_sent(from, &certificates)?;
                self.on_hello(from, vv, lead, now_ms, &mut out)?;
            }
            Message::Ack { vv } => self.on_ack(from, vv, now_ms, &mut out)?,
            Message::Changes {
                batch,
                part,
                last,
                base,
                certificates,
                changes,
                upto,
            } => {
                self.learn_sent(from, &certificates)?;
                self.verify(from, &changes)?;
                if last != upto.is_some() {
                    return Err(protocol(from, "progress on a part that is not the last"));
                }
                let part = Part {
                    batch,
                    part,
                    last,
                    base,
                    upto,
                };
                self.on_changes(from, part, changes, now_ms, &mut out)?;
            }
            Message::Progress { vv } => self.on_progress(from, &vv)?,
            Message::GetChunks { hashes } => self.on_get_chunks(from, hashes, &mut out)?,
            Message::Chunks { chunks, missing } => {
                self.on_chunks(from, chunks, &missing, now_ms, &mut out)?;
            }
        }
        Ok(out)
    }

    /// A peer (re)starts its session: it says what it has and whom it follows.
    fn on_hello(
        &mut self,
        from: &NodeName,
        vv: VersionVector,
        lead: Leadership,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), ReplicaError> {
        tracing::debug!(peer = %from, ?vv, "hello received");
        self.leadership_claim(from, lead, now_ms, out)?;
        let (theirs, ours) = (vv.get(self.store.node()), self.store.own_seq());
        if theirs > ours {
            tracing::error!(peer = %from, theirs, ours, "the peer has changes this node made that its store lost");
        }
        self.store
            .set_peer_acked(from, &vv)
            .map_err(store_error(from))?;
        if let Some(p) = self.peers.get_mut(from) {
            p.restart_session(vv, now_ms);
        }
        self.push(from, now_ms, out).map_err(store_error(from))
    }

    /// The peer applied what we sent: its window opens again.
    fn on_ack(
        &mut self,
        from: &NodeName,
        vv: VersionVector,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), ReplicaError> {
        self.store
            .set_peer_acked(from, &vv)
            .map_err(store_error(from))?;
        if let Some(p) = self.peers.get_mut(from) {
            p.in_flight = p.in_flight.saturating_sub(1);
            p.last_progress_ms = now_ms;
            if let Some(known) = &mut p.known {
                known.merge(&vv);
            }
        }
        self.push(from, now_ms, out).map_err(store_error(from))
    }

    /// The peer says what it has now (after it applied someone else's changes).
    fn on_progress(&mut self, from: &NodeName, vv: &VersionVector) -> Result<(), ReplicaError> {
        self.store
            .set_peer_acked(from, vv)
            .map_err(store_error(from))?;
        if let Some(known) = self.peers.get_mut(from).and_then(|p| p.known.as_mut()) {
            known.merge(vv);
        }
        Ok(())
    }

    /// A part of a batch of verified changes: it waits for the chunks it lacks, asked
    /// for here, and is applied in order once they are all present.
    fn on_changes(
        &mut self,
        from: &NodeName,
        part: Part,
        changes: Vec<Change>,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), ReplicaError> {
        tracing::debug!(peer = %from, ?part, dots = ?changes.iter().map(|c| c.dot.to_string()).collect::<Vec<_>>(), "changes received");
        let Some(changes) = self.admissible(from, changes).map_err(store_error(from))? else {
            // No manager known yet: nothing is applied; the peer resends after our
            // next Hello. The acknowledgement keeps its window open.
            out.push(Output::Send {
                to: from.clone(),
                msg: Message::Ack {
                    vv: self.store.version_vector(),
                },
            });
            return Ok(());
        };
        let (missing, pins) = self
            .store
            .missing_chunks(&changes)
            .map_err(store_error(from))?;
        let p = self.peers.entry(from.clone()).or_default();
        let ask: Vec<ChunkHash> = missing
            .iter()
            .filter(|h| !p.asked.contains(h))
            .copied()
            .collect();
        p.asked.extend(ask.iter().copied());
        if !ask.is_empty() {
            p.fetch_activity_ms = now_ms;
        }
        p.waiting.push_back(Waiting {
            part,
            changes,
            missing: missing.into_iter().collect(),
            _pins: pins,
        });
        for hashes in ask.chunks(self.config.fetch_batch) {
            out.push(Output::Send {
                to: from.clone(),
                msg: Message::GetChunks {
                    hashes: hashes.to_vec(),
                },
            });
        }
        self.apply_ready(from, now_ms, out)
    }

    /// Answers every hash asked for, as a chunk or as missing, in replies of bounded
    /// size.
    fn on_get_chunks(
        &mut self,
        from: &NodeName,
        hashes: Vec<ChunkHash>,
        out: &mut Vec<Output>,
    ) -> Result<(), ReplicaError> {
        let mut chunks = Vec::new();
        let mut missing = Vec::new();
        let mut bytes = 0;
        for hash in hashes.into_iter().take(self.config.fetch_batch) {
            let Some(data) = self
                .store
                .chunk_if_present(&hash)
                .map_err(store_error(from))?
            else {
                missing.push(hash);
                continue;
            };
            if bytes + data.len() > self.config.chunk_reply_bytes && !chunks.is_empty() {
                out.push(Output::Send {
                    to: from.clone(),
                    msg: Message::Chunks {
                        chunks: std::mem::take(&mut chunks),
                        missing: Vec::new(),
                    },
                });
                bytes = 0;
            }
            bytes += data.len();
            self.counters.chunks_sent += 1;
            chunks.push(ChunkData { hash, data });
        }
        out.push(Output::Send {
            to: from.clone(),
            msg: Message::Chunks { chunks, missing },
        });
        Ok(())
    }

    /// Chunks asked for arrived: the parts waiting for them may now apply.
    fn on_chunks(
        &mut self,
        from: &NodeName,
        chunks: Vec<ChunkData>,
        missing: &[ChunkHash],
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), ReplicaError> {
        self.store
            .repair_chunks(&chunks)
            .map_err(store_error(from))?;
        // Keep only chunks that something waits for (late answers to requests dropped
        // by a resync, or unsolicited data, are not stored).
        let p = self.peers.entry(from.clone()).or_default();
        let chunks: Vec<ChunkData> = chunks
            .into_iter()
            .filter(|c| p.waits_for(&c.hash))
            .collect();
        let pins = self.store.put_chunks(&chunks).map_err(store_error(from))?;
        self.counters.chunks_received += chunks.len() as u64;
        let p = self.peers.entry(from.clone()).or_default();
        p.fetched.push(pins);
        p.fetch_activity_ms = now_ms;
        for ChunkData { hash, .. } in &chunks {
            p.asked.remove(hash);
            for w in p.waiting.iter_mut() {
                w.missing.remove(hash);
            }
        }
        if missing.iter().any(|h| p.waits_for(h)) {
            // The peer superseded those versions meanwhile: drop what waits and ask
            // again from our real progress.
            p.waiting.clear();
            p.asked.clear();
            out.push(self.hello(from, now_ms));
        }
        self.apply_ready(from, now_ms, out)?;
        if let Some(p) = self.peers.get_mut(from) {
            if p.waiting.is_empty() {
                p.fetched.clear();
            }
        }
        Ok(())
    }

    /// Applies, in order, the waiting messages from `from` whose chunks are all here.
    fn apply_ready(
        &mut self,
        from: &NodeName,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), ReplicaError> {
        let mut changed = BTreeSet::new();
        let mut cut_off = Vec::new();
        let mut admitted = 0;
        while let Some(w) = self.next_ready(from) {
            let applied = self.apply_part(from, w, now_ms, out)?;
            admitted += applied.admitted;
            changed.extend(applied.changed);
            cut_off.extend(applied.cut_off);
        }
        if !changed.is_empty() {
            out.push(Output::Changed(changed.into_iter().collect()));
        }
        if self.reassert_cut_off(from, cut_off, now_ms, out)? {
            // Our re-assertions go to everyone at once, the sender included.
            for peer in self.connected_peers() {
                self.push(&peer, now_ms, out).map_err(store_error(from))?;
            }
        } else if admitted > 0 {
            self.announce_progress(from, now_ms, out);
        }
        Ok(())
    }

    /// Applies one part whose chunks are all here and acknowledges it; adopts the
    /// sender's progress when the part completes its batch.
    fn apply_part(
        &mut self,
        from: &NodeName,
        w: Waiting,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<Applied, ReplicaError> {
        let complete = self
            .peers
            .get_mut(from)
            .and_then(|p| p.complete_part(&w.part));
        let progress = complete.as_ref().map(|(b, u)| (b, u));
        tracing::debug!(peer = %from, part = ?w.part, complete = complete.is_some(), vv = ?self.store.version_vector(), "applying");
        let applied = match self.store.apply_remote(&w.changes, progress, now_ms) {
            Ok(a) => a,
            Err(StoreError::Malformed(what)) => return Err(protocol(from, what)),
            Err(e @ StoreError::AheadOfClock { .. }) => {
                self.counters.changes_from_the_future += 1;
                return Err(protocol(
                    from,
                    format!("{e}; its clock, or the clock of the node that made it, is wrong"),
                ));
            }
            Err(e) => return Err(store_error(from)(e)),
        };
        if applied.unproven {
            self.counters.progress_claims_cut += 1;
            tracing::warn!(peer = %from, "the peer claimed progress it did not back with changes; adopted only what it backed");
        }
        if let Some(first) = applied.not_made_here.first() {
            self.counters.changes_refused += applied.not_made_here.len() as u64;
            tracing::error!(peer = %from, changes = applied.not_made_here.len(), %first, own_seq = self.store.own_seq(), "refused changes under this node's name that it did not make (forged, or lost with this store's last writes)");
        }
        self.counters.versions_applied += applied.admitted as u64;
        self.counters.versions_obsolete += applied.obsolete as u64;
        if let Some(p) = self.peers.get_mut(from) {
            if p.waiting.is_empty() {
                // Applied chunks are referenced now; fetched ones need no pins.
                p.fetched.clear();
            }
            if let (Some((_, upto)), Some(known)) = (&complete, &mut p.known) {
                known.merge(upto);
            }
        }
        if complete.is_some() && !applied.progressed {
            // We lacked something the sender assumed we had: ask again.
            out.push(self.hello(from, now_ms));
        }
        out.push(Output::Send {
            to: from.clone(),
            msg: Message::Ack {
                vv: self.store.version_vector(),
            },
        });
        Ok(applied)
    }

    /// A manager that received changes an old manager made cut off keeps them as
    /// conflicts and re-asserts its own versions; true if it committed any.
    fn reassert_cut_off(
        &mut self,
        from: &NodeName,
        cut_off: Vec<RelPath>,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<bool, ReplicaError> {
        if cut_off.is_empty() || !self.is_manager() {
            return Ok(false);
        }
        tracing::warn!(peer = %from, paths = cut_off.len(), "received changes an old manager made cut off: kept as conflicts, re-asserting this manager's versions");
        let reasserted = self
            .store
            .reassert(&cut_off, now_ms)
            .map_err(store_error(from))?
            .is_some();
        if reasserted {
            // Committed here, but not by the filesystem: its caches must drop them.
            out.push(Output::Changed(cut_off));
        }
        Ok(reasserted)
    }

    /// Tells the other peers what this node has now, and schedules relaying to them a
    /// little later: what they say they have meanwhile is left out.
    fn announce_progress(&mut self, from: &NodeName, now_ms: u64, out: &mut Vec<Output>) {
        let vv = self.store.version_vector();
        let relay_at = now_ms + self.config.relay_delay_ms;
        for peer in self.connected_peers() {
            if &peer == from {
                continue;
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                p.relay_at_ms = Some(p.relay_at_ms.map_or(relay_at, |t| t.min(relay_at)));
            }
            out.push(Output::Send {
                to: peer,
                msg: Message::Progress { vv: vv.clone() },
            });
        }
    }

    /// The first waiting message from `from`, if all its chunks are here.
    fn next_ready(&mut self, from: &NodeName) -> Option<Waiting> {
        let p = self.peers.get_mut(from)?;
        if p.waiting.front()?.missing.is_empty() {
            p.waiting.pop_front()
        } else {
            None
        }
    }

    /// Sends `peer` what it lacks, within the flow-control window.
    fn push(
        &mut self,
        peer: &NodeName,
        _now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        let Some(p) = self
            .peers
            .get_mut(peer)
            .filter(|p| p.is_connected() && p.known.is_some())
        else {
            return Ok(());
        };
        if p.outgoing.is_none() && !start_batch(&self.store, &self.members, p)? {
            return Ok(());
        }
        while p.in_flight < self.config.window {
            let Some(outgoing) = p.outgoing.as_mut() else {
                break;
            };
            let changes = next_changes(&self.store, &self.config, &mut outgoing.dots)?;
            self.counters.changes_sent += changes.len() as u64;
            let Some(msg) = p.next_part(changes, &self.members) else {
                break;
            };
            p.in_flight += 1;
            out.push(Output::Send {
                to: peer.clone(),
                msg,
            });
        }
        Ok(())
    }

    /// Changes `peer` said it has (in its last `Hello`) that this node lacks: how far
    /// behind it this node is, e.g. while a new node catches up.
    pub fn behind(&self, peer: &NodeName) -> u64 {
        let Some(known) = self.peers.get(peer).and_then(|p| p.known.as_ref()) else {
            return 0;
        };
        let ours = self.store.version_vector();
        known
            .iter()
            .map(|(node, seq)| seq.saturating_sub(ours.get(node)))
            .sum()
    }

    /// Running totals since start (metrics).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Received changes waiting for their chunks, over all peers (`status`).
    pub fn pending_transfers(&self) -> usize {
        self.peers.values().map(|p| p.waiting.len()).sum()
    }

    /// The progress `peer` last acknowledged.
    pub fn peer_acked(&self, peer: &NodeName) -> Result<VersionVector, StoreError> {
        self.store.peer_acked(peer)
    }

    /// Learns the certificates `from` sent; one the CA did not issue ends the session.
    fn learn_sent(
        &mut self,
        from: &NodeName,
        certificates: &[Certificate],
    ) -> Result<(), ReplicaError> {
        for certificate in certificates {
            self.learn_certificate(certificate).map_err(|e| {
                protocol(
                    from,
                    format!("sent a certificate that is not accepted: {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// Checks that every change `from` sent is what its origin signed: one that is not
    /// ends the session and nothing of the message is applied. Changes this node's
    /// progress covers are skipped (old news is never applied, so need not be checked).
    fn verify(&mut self, from: &NodeName, changes: &[Change]) -> Result<(), ReplicaError> {
        let vv = self.store.version_vector();
        for change in changes.iter().filter(|c| !vv.covers(&c.dot)) {
            if let Err(forgery) = self.members.verify(change) {
                self.counters.changes_forged += 1;
                return Err(protocol(
                    from,
                    format!("refused a change not made by its origin: {forgery}"),
                ));
            }
        }
        Ok(())
    }
}

/// Plans a new batch towards `p`: every change it lacks whose origin's certificate is
/// trusted here. False if there is nothing to send.
fn start_batch(store: &Store, members: &Members, p: &mut Peer) -> Result<bool, StoreError> {
    let Some(known) = p.known.clone() else {
        return Ok(false);
    };
    // Read progress before listing changes: everything it covers is listed.
    let upto = store.version_vector();
    let dots: Vec<Dot> = store
        .dots_since(&known)?
        .into_iter()
        // A change already sent beyond our progress is not repeated — unless `upto` now
        // covers it: the claim "you have everything up to `upto`" must hold even if the
        // earlier message was lost.
        .filter(|d| upto.covers(d) || !p.sent_beyond.contains(d))
        // Only changes whose origin's certificate is trusted here: the peer checks each
        // against it. A revoked member's earlier changes stay where they are and spread
        // no further (docs/operations.md, "Revoke a certificate").
        .filter(|d| members.knows(&d.node))
        .collect();
    if dots.is_empty() {
        return Ok(false);
    }
    p.sent_beyond
        .extend(dots.iter().filter(|d| !upto.covers(d)).cloned());
    p.batches_sent += 1;
    p.outgoing = Some(Outgoing {
        batch: p.batches_sent,
        next_part: 0,
        base: known,
        upto,
        dots: dots.into(),
    });
    Ok(true)
}

/// Takes from `dots` the changes of the next part, within the configured count and
/// bytes (a change the store no longer holds is skipped).
fn next_changes(
    store: &Store,
    config: &ReplicaConfig,
    dots: &mut VecDeque<Dot>,
) -> Result<Vec<Change>, StoreError> {
    let mut changes = Vec::new();
    let mut bytes = 0;
    while changes.len() < config.batch_changes && bytes < config.batch_bytes {
        let Some(dot) = dots.pop_front() else {
            break;
        };
        if let Some(change) = store.change(&dot)? {
            bytes += change_size(&change);
            changes.push(change);
        }
    }
    Ok(changes)
}

/// A protocol violation by `peer`.
fn protocol(peer: &NodeName, what: impl Into<String>) -> ReplicaError {
    ReplicaError::Protocol {
        peer: peer.clone(),
        what: what.into(),
    }
}

/// Wraps a store error met while handling `peer`'s message.
fn store_error(peer: &NodeName) -> impl Fn(StoreError) -> ReplicaError + '_ {
    move |source| ReplicaError::Store {
        peer: peer.clone(),
        source,
    }
}

fn change_size(change: &Change) -> usize {
    change
        .ops
        .iter()
        .map(|op| match &op.state {
            depfs_proto::State::Live(node) => match &node.content {
                depfs_proto::Content::Inline(b) => b.len() + 64,
                depfs_proto::Content::Chunked(c) => c.len() * 40 + 64,
            },
            depfs_proto::State::Deleted => 64,
        })
        .sum()
}
