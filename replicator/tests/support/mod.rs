//! What the replicator's tests share: a cluster CA that hands out real node identities
//! (so the state machine signs and checks changes exactly as the daemon does), and the
//! attributes of test entries.

#![allow(dead_code)] // Each test file uses a part of it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use depfs_proto::{Certificate, Kind, Meta, NodeName, Timespec};
use depfs_replicator::pki::{self, CertRole};
use depfs_replicator::tls::Identity;

/// A cluster CA in a temporary directory. A node's identity is issued on first use and
/// kept, so a node that restarts signs with the same key.
pub struct Ca {
    dir: tempfile::TempDir,
    issued: RefCell<BTreeMap<NodeName, Identity>>,
}

impl Ca {
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

/// Attributes of a test entry of `kind`.
pub fn meta(kind: Kind) -> Meta {
    Meta {
        kind,
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: Timespec::new(1, 0),
        ctime: Timespec::new(1, 0),
    }
}
