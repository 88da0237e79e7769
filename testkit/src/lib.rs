//! What depfs's tests share, so that no test file keeps its own copy: attributes and
//! names of test entries, changes signed like a node signs them, a cluster CA handing
//! out real node identities, deterministic content, and polling with a deadline.
//!
//! Test code only: it panics (with a message) on anything unexpected.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use depfs_proto::{
    Certificate, Change, ChangeOp, Dot, Hlc, Kind, Message, Meta, NodeName, RelPath, Seal,
    SignChanges, State, Timespec, VersionVector,
};
use depfs_replicator::pki::{self, CertRole};
use depfs_replicator::tls::Identity;

/// Attributes of a test entry of `kind` (directories 0755, others 0644), modified at
/// second 1 of the epoch.
pub fn meta(kind: Kind) -> Meta {
    meta_at(kind, 1)
}

/// Attributes of a test entry of `kind` modified at `secs` seconds after the epoch.
pub fn meta_at(kind: Kind, secs: i64) -> Meta {
    Meta {
        kind,
        perm: if kind == Kind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        mtime: Timespec::new(secs, 0),
        ctime: Timespec::new(secs, 0),
    }
}

/// The node name `n`.
pub fn node(n: &str) -> NodeName {
    NodeName::new(n).expect("a valid node name")
}

/// The relative path `p`.
pub fn path(p: &str) -> RelPath {
    RelPath::parse(p.as_bytes()).expect("a valid relative path")
}

/// `len` bytes of deterministic, incompressible content derived from `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Change `seq` of `origin`, putting `state` at `p` (seen `origin`'s changes up to
/// `seq`), sealed by `signer` — which need not be `origin`'s key: that is how tests
/// forge.
pub fn signed_change(
    origin: &str,
    seq: u64,
    p: &str,
    state: State,
    hlc: Hlc,
    signer: &dyn SignChanges,
) -> Change {
    let dot = Dot::new(node(origin), seq);
    let mut ctx = VersionVector::new();
    ctx.raise(&node(origin), seq);
    let op = ChangeOp {
        path: path(p),
        ctx,
        state,
    };
    let seal = Seal::of_ops(&dot, hlc, std::slice::from_ref(&op), signer);
    Change {
        dot,
        hlc,
        ops: vec![op],
        seal,
    }
}

/// A one-part `Changes` message carrying `changes`, claiming progress up to the last
/// of each origin's.
pub fn changes_message(changes: Vec<Change>) -> Message {
    let mut upto = VersionVector::new();
    for c in &changes {
        upto.raise(&c.dot.node, c.dot.seq);
    }
    Message::Changes {
        batch: 1,
        part: 0,
        last: true,
        base: VersionVector::new(),
        certificates: Vec::new(),
        changes,
        upto: Some(upto),
    }
}

/// A cluster CA in a temporary directory. A node's identity is issued on first use and
/// kept, so a node that restarts signs with the same key.
pub struct Ca {
    dir: tempfile::TempDir,
    issued: RefCell<BTreeMap<NodeName, Identity>>,
}

impl Default for Ca {
    fn default() -> Self {
        Ca::new()
    }
}

impl Ca {
    /// A new CA.
    pub fn new() -> Ca {
        let dir = tempfile::tempdir().expect("a temporary directory");
        pki::init_ca(&dir.path().join("ca")).expect("a cluster CA");
        Ca {
            dir,
            issued: RefCell::new(BTreeMap::new()),
        }
    }

    /// The identity of `node`, with a certificate that allows any role.
    pub fn identity(&self, node: &NodeName) -> Identity {
        self.identity_with_role(node, None)
    }

    /// The identity of `node`; its certificate allows `role` (issued on first use only:
    /// later calls return the first identity whatever `role` they name).
    pub fn identity_with_role(&self, node: &NodeName, role: Option<CertRole>) -> Identity {
        if let Some(known) = self.issued.borrow().get(node) {
            return known.clone();
        }
        let out = self.dir.path().join("nodes");
        let ca_dir = self.dir.path().join("ca");
        let (cert, key) = pki::issue_node(
            &ca_dir,
            node,
            &out,
            SystemTime::now(),
            pki::NODE_VALID_DAYS,
            role,
        )
        .expect("a node certificate");
        let identity =
            Identity::load(&ca_dir.join("ca.pem"), &cert, &key, node).expect("a node identity");
        self.issued
            .borrow_mut()
            .insert(node.clone(), identity.clone());
        identity
    }

    /// The certificate of `node` (issuing its identity if needed).
    pub fn certificate(&self, node: &NodeName) -> Certificate {
        self.identity(node).certificate
    }

    /// Where the CA's files are.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}
