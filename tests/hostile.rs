//! Hostile peers and input: certificates that must not be accepted, and an
//! authenticated member that sends garbage, oversized frames, lies about its name,
//! names paths that escape or break the tree, or sends chunks that do not match their
//! hash. Each is refused with a log line; the daemon keeps serving its cluster and
//! nothing is written anywhere.

#![cfg(test)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{wait_until, Cluster, Node};
use depfs_proto::{
    Change, ChunkData, ChunkHash, ChunkRef, Content, Hlc, Kind, Message, NodeName, SignChanges,
    State, VersionVector,
};
use depfs_testkit::{changes_message, meta, node, signed_change};

const T: Duration = Duration::from_secs(30);

fn log_of(node: &Node) -> String {
    std::fs::read_to_string(node.data_dir.join("depfs.log")).unwrap_or_default()
}

fn peer_names(node: &Node) -> Vec<String> {
    node.status()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["connected"] == true)
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// A QUIC client with a certificate of the cluster's CA (or not), speaking raw frames.
struct Hostile {
    rt: tokio::runtime::Runtime,
    endpoint: quinn::Endpoint,
    /// Its key, which it signs its own changes with (it is a member).
    identity: depfs_replicator::tls::Identity,
}

impl Hostile {
    /// A client with `ca`'s certificate of `name` (issued in `ca`'s `certs`).
    fn issued_by(ca: &common::Ca, name: &str) -> Hostile {
        let certs = ca.dir.path().join("certs");
        Hostile::new(
            &ca.dir.path().join("ca").join("ca.pem"),
            &certs.join(format!("{name}.pem")),
            &certs.join(format!("{name}.key")),
            name,
        )
    }

    fn new(ca: &Path, cert: &Path, key: &Path, name: &str) -> Hostile {
        let tls =
            depfs_replicator::tls::load(ca, cert, key, &NodeName::new(name).unwrap()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let endpoint = {
            let _guard = rt.enter();
            let mut e = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            let crypto =
                quinn::crypto::rustls::QuicClientConfig::try_from(tls.client.clone()).unwrap();
            e.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
            e
        };
        Hostile {
            rt,
            endpoint,
            identity: tls.identity,
        }
    }

    /// Connects and sends `bytes` on a stream; returns how the daemon ended the
    /// connection (its close reason), or `None` if it did not within the deadline.
    fn send(&self, to: SocketAddr, bytes: Vec<u8>) -> Result<Option<String>, String> {
        self.send_waiting(to, bytes, T)
    }

    /// As [`Hostile::send`], waiting at most `wait` for the close.
    fn send_waiting(
        &self,
        to: SocketAddr,
        bytes: Vec<u8>,
        wait: Duration,
    ) -> Result<Option<String>, String> {
        self.rt.block_on(async {
            let conn = self
                .endpoint
                .connect(to, "depfs")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let (mut send, _recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(&bytes).await.map_err(|e| e.to_string())?;
            match tokio::time::timeout(wait, conn.closed()).await {
                Ok(reason) => Ok(Some(reason.to_string())),
                Err(_) => Ok(None),
            }
        })
    }

    /// Connects and reports the handshake's outcome.
    fn handshake(&self, to: SocketAddr) -> Result<(), String> {
        self.rt.block_on(async {
            let conn = self
                .endpoint
                .connect(to, "depfs")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            // The server may accept the handshake and close right after.
            match tokio::time::timeout(Duration::from_secs(2), conn.closed()).await {
                Ok(reason) => Err(reason.to_string()),
                Err(_) => Ok(()),
            }
        })
    }
}

fn frame(msg: &Message) -> Vec<u8> {
    depfs_replicator::frame::encode(msg)
}

/// Change `seq` of `origin`, writing `path` with `content`, sealed by `signer`.
fn change(
    origin: &str,
    seq: u64,
    path: &str,
    content: Content,
    signer: &dyn SignChanges,
) -> Change {
    let state = State::Live(depfs_proto::Node {
        meta: meta(Kind::File),
        content,
    });
    signed_change(origin, seq, path, state, Hlc::new(1, 0), signer)
}

/// A `Changes` message from evil, honestly signed, writing `path` with `content`.
fn changes(evil: &Hostile, path: &str, content: Content) -> Message {
    let signer = evil.identity.signer.as_ref();
    changes_message(vec![change("evil", 1, path, content, signer)])
}

fn hello(name: &str) -> Message {
    Message::Hello {
        node: node(name),
        vv: VersionVector::new(),
        lead: Default::default(),
        certificates: Vec::new(),
    }
}

/// Replaces the only occurrence of `from` in `bytes` by `to` (same length).
fn patch(mut bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern in the frame");
    bytes[at..at + from.len()].copy_from_slice(to);
    bytes
}

struct Setup {
    c: Cluster,
    evil: Hostile,
    victim: SocketAddr,
}

/// Two nodes, and "evil": an authenticated member of the same CA.
fn setup() -> Setup {
    let c = Cluster::new(2);
    c.mount_all();
    std::fs::write(c.nodes[0].path("before.xml"), b"ok").unwrap();
    assert!(c.nodes[1].wait_for("before.xml", b"ok", T));
    c.ca.issue("evil");
    let evil = Hostile::issued_by(&c.ca, "evil");
    let victim = format!("127.0.0.1:{}", c.ports[0]).parse().unwrap();
    Setup { c, evil, victim }
}

/// The victim still serves: a new file crosses the cluster, the store verifies.
fn still_healthy(c: &Cluster, marker: &str) {
    std::fs::write(c.nodes[0].path(marker), marker).unwrap();
    assert!(
        c.nodes[1].wait_for(marker, marker.as_bytes(), T),
        "the cluster stopped replicating after {marker}"
    );
    for n in &c.nodes {
        let out = common::depfs(&["verify", "--config", n.config.to_str().unwrap()]);
        assert!(out.status.success(), "{}: store damaged", n.name);
    }
}

/// Evil sends `change` and then `chunks` (the frame answering the victim's request):
/// the victim closes the connection with `reason`, stays up, and no node has `path`.
fn refused_everywhere(s: &Setup, change: &Message, chunks: Vec<u8>, reason: &str, path: &str) {
    let closed = s
        .evil
        .send(
            s.victim,
            [frame(&hello("evil")), frame(change), chunks].concat(),
        )
        .unwrap()
        .expect("connection not closed");
    assert!(closed.contains(reason), "closed with {closed}");
    assert!(s.c.nodes[0].daemon_alive(), "the lie crashed the daemon");
    for n in &s.c.nodes {
        assert!(!n.path(path).exists(), "{}: applied a lying change", n.name);
    }
}

#[test]
fn garbage_oversized_frames_and_lies_are_refused_and_nothing_crashes() {
    let s = setup();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "random bytes",
            (0..4000).map(|i| (i * 7 + 3) as u8).collect(),
            "bad frame",
        ),
        (
            "an oversized frame header",
            vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
            "bad frame",
        ),
        (
            "a frame that is not a message",
            [&[0, 0, 0, 5][..], b"hello"].concat(),
            "bad frame",
        ),
        (
            "a Hello with another node's name",
            frame(&hello("gw2")),
            "claims to be gw2",
        ),
    ];
    for (what, bytes, reason) in cases {
        let closed = s
            .evil
            .send(s.victim, bytes)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: connection not closed"));
        assert!(closed.contains(reason), "{what}: closed with {closed}");
        assert!(s.c.nodes[0].daemon_alive(), "{what} crashed the daemon");
    }
    still_healthy(&s.c, "after-garbage.xml");
    assert!(log_of(&s.c.nodes[0]).contains("bad frame"));
}

#[test]
fn paths_that_escape_or_break_the_tree_are_refused() {
    let s = setup();
    let valid = |p: &str| frame(&changes(&s.evil, p, Content::Inline(b"pwned".to_vec())));
    let long_ok = format!("{}/{}", "a".repeat(150), "b".repeat(149));
    let long_bad = format!("{}{}{}", "a".repeat(150), "a", "b".repeat(149));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("..", patch(valid("xx/etc"), b"xx/etc", b"../etc")),
        ("a leading /", patch(valid("tmpxx"), b"tmpxx", b"/tmp/")),
        ("a NUL byte", patch(valid("axb"), b"axb", b"a\0b")),
        (
            "a 300-byte name",
            patch(valid(&long_ok), long_ok.as_bytes(), long_bad.as_bytes()),
        ),
    ];
    for (what, bytes) in cases {
        let closed = s
            .evil
            .send(s.victim, [frame(&hello("evil")), bytes].concat())
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: connection not closed"));
        assert!(closed.contains("bad frame"), "{what}: {closed}");
        assert!(s.c.nodes[0].daemon_alive(), "{what} crashed the daemon");
    }
    assert!(!Path::new("/etc/pwned").exists() && !Path::new("/tmp/pwned").exists());
    for n in &s.c.nodes {
        let names: Vec<String> = std::fs::read_dir(&n.mountpoint)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["before.xml".to_string()], "{}", n.name);
    }
    still_healthy(&s.c, "after-paths.xml");
}

#[test]
fn chunks_that_do_not_match_their_hash_are_refused() {
    let s = setup();
    let data = vec![7u8; 40_000];
    let hash = ChunkHash::of(&data);
    let change = changes(
        &s.evil,
        "big.war",
        Content::Chunked(vec![ChunkRef {
            hash,
            len: data.len() as u32,
        }]),
    );
    // The daemon asks evil for the chunk; evil answers with other bytes.
    let lie = frame(&Message::Chunks {
        chunks: vec![ChunkData {
            hash,
            data: vec![8u8; 40_000],
        }],
        missing: Vec::new(),
    });
    refused_everywhere(&s, &change, lie, "corrupt", "big.war");
    still_healthy(&s.c, "after-chunks.xml");
}

#[test]
fn expired_foreign_and_borrowed_certificates_are_refused() {
    // The victim's clock runs two days ahead, so a certificate issued now for one day
    // has expired as far as it is concerned (its own is valid for ten years).
    let ca = common::Ca::new();
    let port = common::free_port();
    let victim_node = Node::with_config(
        "gw1",
        &format!(
            "listen = \"127.0.0.1:{port}\"\npeers = []\n{}",
            ca.issue("gw1")
        ),
    );
    victim_node.mount_with_clock("+2d");
    let victim: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ca_dir = ca.dir.path().join("ca");
    let short = ca.dir.path().join("short");
    depfs_replicator::pki::issue_node(&ca_dir, &node("stale"), &short, SystemTime::now(), 1, None)
        .unwrap();
    let stale = Hostile::new(
        &ca_dir.join("ca.pem"),
        &short.join("stale.pem"),
        &short.join("stale.key"),
        "stale",
    );
    assert!(
        stale.handshake(victim).is_err(),
        "an expired certificate was accepted"
    );

    // A certificate of another CA.
    let other = common::Ca::new();
    other.issue("gw9");
    let foreign = Hostile::issued_by(&other, "gw9");
    assert!(
        foreign.handshake(victim).is_err(),
        "a foreign CA was accepted"
    );

    // A node configured with another node's certificate does not start.
    ca.issue("gw2");
    let certs = ca.dir.path().join("certs");
    let rest = format!(
        "listen = \"127.0.0.1:{}\"\npeers = [\"{victim}\"]\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        common::free_port(),
        ca_dir.join("ca.pem").display(),
        certs.join("gw2.pem").display(),
        certs.join("gw2.key").display(),
    );
    let borrower = Node::with_config("gw7", &rest);
    let out = borrower.try_mount(&[]);
    assert!(!out.status.success(), "gw7 started with gw2's certificate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gw2"), "{err}");

    // The victim logged the refusals and made no peer; it still serves.
    assert!(wait_until(T, || log_of(&victim_node)
        .matches("refused a connection")
        .count()
        >= 2));
    assert!(peer_names(&victim_node).is_empty());
    std::fs::write(victim_node.path("still.xml"), b"fine").unwrap();
    assert_eq!(
        std::fs::read(victim_node.path("still.xml")).unwrap(),
        b"fine"
    );
}

/// A chunk reference that claims more bytes than its chunk has (a well-formed lie: the
/// hash is right) is refused when the change is applied, so no node ever holds a file
/// whose reads would come out short or shifted; the reader's own check is shown by the
/// store's tests.
#[test]
fn chunk_references_that_lie_about_their_length_are_refused() {
    let s = setup();
    let data = b"forty-five bytes of a chunk that is not long.".to_vec();
    assert_eq!(data.len(), 45);
    let hash = ChunkHash::of(&data);
    let lying = ChunkRef { hash, len: 60_000 };
    let change = changes(
        &s.evil,
        "lying.war",
        Content::Chunked(vec![lying, lying, lying]),
    );
    let chunk = frame(&Message::Chunks {
        chunks: vec![ChunkData { hash, data }],
        missing: Vec::new(),
    });
    refused_everywhere(&s, &change, chunk, "references chunk", "lying.war");
    still_healthy(&s.c, "after-lying-lengths.xml");
}

/// A member writes under other members' names: a change stamped as gw1's (signed with
/// its own key, or not signed at all) and one stamped as gw2's sent to gw1. Each is
/// refused as not made by its origin, the liar is disconnected, no node holds the path,
/// and neither node's progress moves (docs/reliability.md, "Threat model").
#[test]
fn changes_under_another_members_name_are_refused() {
    let s = setup();
    let gw1_seq = |c: &Cluster| c.nodes[0].status()["progress"]["gw1"].as_u64();
    let before = (
        gw1_seq(&s.c),
        s.c.nodes[0].status()["progress"]["gw2"].as_u64(),
    );
    let own = s.evil.identity.signer.as_ref();
    let unsigned = {
        let mut c = change(
            "gw1",
            1_000,
            "unsigned.xml",
            Content::Inline(b"x".to_vec()),
            own,
        );
        c.seal.signature.clear();
        c
    };
    let cases = [
        (
            "a change as gw1 signed by evil",
            change(
                "gw1",
                1_000,
                "as-gw1.xml",
                Content::Inline(b"x".to_vec()),
                own,
            ),
            "as-gw1.xml",
        ),
        (
            "a change as gw2 signed by evil",
            change(
                "gw2",
                1_000,
                "as-gw2.xml",
                Content::Inline(b"x".to_vec()),
                own,
            ),
            "as-gw2.xml",
        ),
        ("an unsigned change as gw1", unsigned, "unsigned.xml"),
    ];
    for (what, forged, path) in cases {
        let closed = s
            .evil
            .send(
                s.victim,
                [frame(&hello("evil")), frame(&changes_message(vec![forged]))].concat(),
            )
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: connection not closed"));
        assert!(
            closed.contains("not made by its origin"),
            "{what}: closed with {closed}"
        );
        assert!(s.c.nodes[0].daemon_alive(), "{what} crashed the daemon");
        for n in &s.c.nodes {
            assert!(!n.path(path).exists(), "{}: applied {what}", n.name);
        }
    }
    // The real gw1 and gw2 go on writing under their names, and nobody's progress
    // went where the forgeries pointed.
    still_healthy(&s.c, "after-forged-origins.xml");
    let after = (
        gw1_seq(&s.c),
        s.c.nodes[0].status()["progress"]["gw2"].as_u64(),
    );
    assert!(
        after.0.unwrap_or(0) < 1_000 && after.1.unwrap_or(0) < 1_000,
        "{before:?} -> {after:?}"
    );
    assert!(log_of(&s.c.nodes[0]).contains("not made by its origin"));
}

/// A member that asks for chunks again and again and never reads the answers: the
/// victim stops answering while its queue towards it is full, keeps the requests only
/// up to a bound, then disconnects it; its memory stays bounded and it keeps serving.
#[test]
fn a_peer_that_asks_for_chunks_and_never_reads_is_bounded_then_disconnected() {
    let s = setup();
    // A file whose chunks the victim holds, and their hashes (same chunking here).
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(s.c.nodes[0].path("big.war"), &data).unwrap();
    assert!(s.c.nodes[1].wait_for("big.war", &data, T));
    let scratch = tempfile::tempdir().unwrap();
    let hashes: Vec<ChunkHash> = {
        let root = meta(Kind::Dir);
        let store = depfs_store::Store::open(
            scratch.path(),
            &node("scratch"),
            &depfs_store::StoreOptions::new(root),
        )
        .unwrap();
        let (content, _pin) = store.write_content(&data).unwrap();
        content.chunks().iter().map(|c| c.hash).collect()
    };
    assert!(hashes.len() > 16, "{} chunks", hashes.len());
    let request: Vec<ChunkHash> = hashes.iter().copied().cycle().take(256).collect();
    let ask = frame(&Message::GetChunks { hashes: request });
    let pid = s.c.nodes[0].daemon_pid().unwrap();
    let before = common::rss_of(pid);
    let limit = before + (400 << 20);

    let outcome: Result<String, String> = s.evil.rt.block_on(async {
        let conn = s
            .evil
            .endpoint
            .connect(s.victim, "depfs")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, _never_read) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&frame(&hello("evil")))
            .await
            .map_err(|e| e.to_string())?;
        // 6,000 requests of 256 chunks (1.5 M chunks, some 6 GiB of answers), checking
        // the victim's memory as they go.
        for round in 0..60 {
            for _ in 0..100 {
                if send.write_all(&ask).await.is_err() {
                    break;
                }
            }
            if let Some(reason) = conn.close_reason() {
                return Ok(reason.to_string());
            }
            let rss = common::rss_of(pid);
            if rss > limit {
                return Err(format!(
                    "after {} requests the victim's RSS is {rss} bytes (from {before})",
                    (round + 1) * 100
                ));
            }
        }
        match tokio::time::timeout(T, conn.closed()).await {
            Ok(reason) => Ok(reason.to_string()),
            Err(_) => Err("not disconnected".to_string()),
        }
    });
    let reason = outcome.unwrap_or_else(|e| {
        let log = log_of(&s.c.nodes[0]);
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        panic!("{e}; the victim's log ends with:\n{}", tail.join("\n"))
    });
    assert!(reason.contains("without reading"), "closed with {reason}");
    assert!(s.c.nodes[0].daemon_alive());
    assert!(
        common::rss_of(pid) < limit,
        "RSS {} from {before} bytes",
        common::rss_of(pid)
    );
    still_healthy(&s.c, "after-unread-chunks.xml");
}

/// A member claims progress it cannot back — every change of both real nodes up to a
/// million — in an empty `Changes`: the victim adopts none of it, so the real nodes'
/// later writes still reach it, and its own still reach the others.
#[test]
fn forged_progress_claims_are_not_adopted() {
    let s = setup();
    let mut upto = VersionVector::new();
    upto.raise(&node("gw1"), 1_000_000);
    upto.raise(&node("gw2"), 1_000_000);
    for i in 0..50 {
        upto.raise(&node(&format!("invented{i}")), 5);
    }
    let lie = frame(&Message::Changes {
        batch: 1,
        part: 0,
        last: true,
        base: VersionVector::new(),
        certificates: Vec::new(),
        changes: Vec::new(),
        upto: Some(upto),
    });
    // The victim applies nothing and stays connected: it has nothing to object to.
    let _ = s.evil.send(s.victim, [frame(&hello("evil")), lie].concat());
    assert!(s.c.nodes[0].daemon_alive());
    let progress = &s.c.nodes[0].status()["progress"];
    let text = progress.to_string();
    assert!(
        !text.contains("1000000") && !text.contains("invented"),
        "adopted a forged claim: {text}"
    );
    std::fs::write(s.c.nodes[1].path("from-gw2.xml"), b"gw2").unwrap();
    assert!(
        s.c.nodes[0].wait_for("from-gw2.xml", b"gw2", T),
        "gw2's write no longer reaches gw1"
    );
    still_healthy(&s.c, "after-forged-progress.xml");
}

/// A member with a worker's certificate tries to take over a one-way cluster: it relays
/// a history whose term 2 names a made-up manager "ghost", then one whose term 2 names
/// itself, signed with its own (worker) key, each followed by a change under the claimed
/// manager's name. The worker follows neither, applies nothing, and the real manager
/// keeps managing and replicating.
#[test]
fn a_forged_manager_term_is_not_followed_by_real_daemons() {
    let c = Cluster::one_way_with_certs(&["manager", "worker"], &[Some("manager"), None]);
    c.mount_all();
    let (manager, worker) = (&c.nodes[0], &c.nodes[1]);
    std::fs::write(manager.path("api.xml"), b"v1").unwrap();
    assert!(worker.wait_for("api.xml", b"v1", T));
    c.ca.issue_with_role("evil", Some("worker"));
    let evil = Hostile::issued_by(&c.ca, "evil");
    let target: SocketAddr = format!("127.0.0.1:{}", c.ports[1]).parse().unwrap();
    let signer = evil.identity.signer.as_ref();
    // What the worker logs when it refuses each takeover's change.
    for (claimed, refusal) in [
        ("ghost", "not made by its origin"),
        ("evil", "refused changes not made by a manager"),
    ] {
        let mut lead = depfs_proto::Leadership::first(node("gw1"), VersionVector::new())
            .promote(node(claimed), VersionVector::new());
        if claimed == "evil" {
            lead.sign_terms_of(&node("evil"), signer);
        }
        let hello = Message::Hello {
            node: node("evil"),
            vv: VersionVector::new(),
            lead,
            certificates: vec![evil.identity.certificate.clone()],
        };
        let takeover = change(
            claimed,
            1,
            &format!("{claimed}.xml"),
            Content::Inline(b"x".to_vec()),
            signer,
        );
        let seen = |what: &str| log_of(worker).matches(what).count();
        let before = (seen("not followed"), seen(refusal));
        let _ = evil.send_waiting(
            target,
            [frame(&hello), frame(&changes_message(vec![takeover]))].concat(),
            Duration::from_secs(1),
        );
        // The worker logs every history it does not follow and every change it
        // refuses: wait until it has judged both.
        assert!(
            wait_until(T, || seen("not followed") > before.0
                && seen(refusal) > before.1),
            "{claimed}: the worker never judged the history and the change"
        );
        assert!(worker.daemon_alive() && manager.daemon_alive());
        let status = worker.status();
        assert_eq!(status["manager"], "gw1", "{claimed}: {status}");
        assert_eq!(status["term"], 1, "{claimed}: {status}");
        for n in &c.nodes {
            assert!(
                !n.path(&format!("{claimed}.xml")).exists(),
                "{}: took {claimed}'s change",
                n.name
            );
        }
    }
    assert_eq!(manager.status()["role"], "manager");
    std::fs::write(manager.path("api.xml"), b"v2").unwrap();
    assert!(
        worker.wait_for("api.xml", b"v2", T),
        "the real manager no longer reaches the worker"
    );
}

/// A member is revoked while connected: `depfs ca revoke` adds its certificate to the
/// deny list the nodes read, and without a restart the victim disconnects it, refuses
/// its handshakes, and takes nothing more from it; the revoked node's own writes stay
/// local. Another member revoked by name cannot even complete a handshake.
#[test]
fn a_revoked_member_is_cut_off_without_a_restart() {
    let s = setup();
    let (gw1, gw2) = (&s.c.nodes[0], &s.c.nodes[1]);
    assert!(wait_until(T, || peer_names(gw1).contains(&"gw2".to_string())));
    assert!(
        s.evil.handshake(s.victim).is_ok(),
        "evil could not connect before"
    );

    s.c.ca
        .revoke(&["--cert", s.c.ca.cert_of("gw2").to_str().unwrap()]);
    s.c.ca.revoke(&["--node", "evil"]);
    assert!(
        wait_until(T, || !peer_names(gw1).contains(&"gw2".to_string())
            && peer_names(gw2).is_empty()),
        "gw2 is still connected: gw1 sees {:?}, gw2 sees {:?}",
        peer_names(gw1),
        peer_names(gw2)
    );
    // The two revocations may reach gw1 in two reloads, a second apart.
    assert!(
        wait_until(T, || s.evil.handshake(s.victim).is_err()),
        "a revoked certificate still completes a handshake; gw1's log ends with:\n{}",
        log_of(gw1)
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(log_of(gw1).contains("certificate was revoked"));

    // gw2 keeps serving its own mount, but nothing it writes reaches gw1 any more;
    // gw1 still serves and writes.
    std::fs::write(gw2.path("after-revocation.xml"), b"gw2").unwrap();
    std::fs::write(gw1.path("gw1-still-writes.xml"), b"gw1").unwrap();
    assert!(gw1.wait_for("gw1-still-writes.xml", b"gw1", T));
    assert!(
        !wait_until(Duration::from_secs(3), || gw1
            .path("after-revocation.xml")
            .exists()),
        "a write of the revoked node reached gw1"
    );
    assert!(peer_names(gw1).is_empty(), "{:?}", peer_names(gw1));
    assert!(gw1.daemon_alive() && gw2.daemon_alive());
}

/// A node whose private key other users can read does not start: whoever reads it can
/// act as the node.
#[test]
fn a_private_key_readable_by_others_is_refused_at_mount() {
    use std::os::unix::fs::PermissionsExt;
    let ca = common::Ca::new();
    let rest = format!(
        "listen = \"127.0.0.1:{}\"\npeers = []\n{}",
        common::free_port(),
        ca.issue("gw1")
    );
    let key = ca.dir.path().join("certs").join("gw1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let node = Node::with_config("gw1", &rest);
    let out = node.try_mount(&[]);
    assert!(!out.status.success(), "mounted with a key of mode 644");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("readable by other users"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    node.mount();
}
