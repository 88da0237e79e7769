//! Revoked certificates: the deny list `depfs ca revoke` writes and every node reads from
//! `[tls] revoked`. A revoked certificate is refused at the TLS handshake, its peer is
//! disconnected if connected, and changes and terms it signs are no longer accepted.
//! Changes it signed that a node applied before are kept: nothing tells them apart from
//! the ones the member made while it was trusted (docs/reliability.md, "Threat model").
//!
//! The file is text, one entry per line: `sha256:HEX` (a certificate's fingerprint, the
//! SHA-256 of its DER) or `node:NAME` (every certificate of a node); `#` starts a comment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use depfs_proto::NodeName;
use parking_lot::RwLock;
use rustls::pki_types::CertificateDer;

use crate::pki::node_name_of;

/// The deny list in force, shared by the TLS verifiers, the members' certificates and the
/// service that reloads it.
pub type SharedRevoked = Arc<RwLock<Revoked>>;

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    fingerprints: BTreeSet<[u8; 32]>,
    nodes: BTreeSet<NodeName>,
}

/// Why a deny list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RevokedError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A certificate to revoke could not be read.
    #[error("{path}: {what}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// A line is neither an entry nor a comment.
    #[error("{path}:{line}: {what} (expected `sha256:HEX` or `node:NAME`)")]
    Syntax {
        /// The file.
        path: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        what: String,
    },
}

/// The SHA-256 fingerprint of a certificate, as the deny list names it.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `fingerprint` as the deny list writes it: `sha256:` and 64 lowercase hex digits.
pub fn fingerprint_entry(der: &[u8]) -> String {
    let hex: String = fingerprint(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// One revocation, as `depfs ca revoke` adds it to a deny list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// One certificate: its DER and the node it names.
    Certificate {
        /// The certificate.
        der: Vec<u8>,
        /// The node it was issued for, if it names one.
        node: Option<NodeName>,
    },
    /// Every certificate of a node.
    Node(NodeName),
}

impl Entry {
    /// The first certificate of a PEM file.
    pub fn certificate_file(path: &Path) -> Result<Entry, RevokedError> {
        use rustls::pki_types::pem::PemObject;
        let bad = |what: String| RevokedError::Certificate {
            path: path.display().to_string(),
            what,
        };
        let der = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .next()
            .ok_or_else(|| bad("no certificate in the file".into()))?
            .map_err(|e| bad(e.to_string()))?;
        Ok(Entry::Certificate {
            node: node_name_of(&der),
            der: der.as_ref().to_vec(),
        })
    }

    /// The entry's line in the deny list.
    fn line(&self) -> String {
        match self {
            Entry::Certificate { der, .. } => fingerprint_entry(der),
            Entry::Node(node) => format!("node:{node}"),
        }
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Certificate { node: Some(n), .. } => write!(f, "a certificate of node {n}"),
            Entry::Certificate { node: None, .. } => write!(f, "a certificate naming no node"),
            Entry::Node(n) => write!(f, "every certificate of node {n}"),
        }
    }
}

/// Appends `entry` to the deny list at `path` (created if needed), with the date, after
/// checking that the list as it is parses: a revocation is never written behind a line
/// that would make every node keep its previous list.
pub fn append(path: &Path, entry: &Entry, now: std::time::SystemTime) -> Result<(), RevokedError> {
    use std::io::Write;
    Revoked::load(path)?;
    let io = |source| RevokedError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let date = time::OffsetDateTime::from(now).date();
    writeln!(file, "{}  # {entry}, revoked {date}", entry.line()).map_err(io)?;
    file.sync_all().map_err(io)
}

impl Revoked {
    /// Parses a deny list; `path` only names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Revoked, RevokedError> {
        let mut revoked = Revoked::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let syntax = |what: String| RevokedError::Syntax {
                path: path.to_string(),
                line: i + 1,
                what,
            };
            if let Some(hex) = line.strip_prefix("sha256:") {
                revoked.fingerprints.insert(
                    parse_hex(hex)
                        .ok_or_else(|| syntax(format!("{hex:?} is not 64 hex digits")))?,
                );
            } else if let Some(name) = line.strip_prefix("node:") {
                let node =
                    NodeName::new(name).map_err(|e| syntax(format!("node {name:?}: {e}")))?;
                revoked.nodes.insert(node);
            } else {
                return Err(syntax(format!("{line:?}")));
            }
        }
        Ok(revoked)
    }

    /// Reads the deny list at `path`; a file that does not exist revokes nothing (a node
    /// may be configured with the path before anything was ever revoked).
    pub fn load(path: &Path) -> Result<Revoked, RevokedError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Revoked::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Revoked::default()),
            Err(source) => Err(RevokedError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// True if the certificate is revoked, by its fingerprint or by its node's name.
    pub fn covers(&self, der: &CertificateDer<'_>) -> bool {
        if self.is_empty() {
            return false;
        }
        self.fingerprints.contains(&fingerprint(der.as_ref()))
            || node_name_of(der).is_some_and(|node| self.nodes.contains(&node))
    }

    /// True if nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty() && self.nodes.is_empty()
    }

    /// How many entries the list has.
    pub fn len(&self) -> usize {
        self.fingerprints.len() + self.nodes.len()
    }
}

/// Re-reads a deny list file when it changes, so that a revocation takes effect on a
/// running node without a restart.
pub struct Watcher {
    path: PathBuf,
    stamp: Option<FileStamp>,
}

/// What tells one version of the file from another: inode, size and modification time.
type FileStamp = (u64, u64, i64, i64);

fn stamp_of(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).ok()?;
    Some((md.ino(), md.size(), md.mtime(), md.mtime_nsec()))
}

impl Watcher {
    /// Watches `path`, whose current content is taken as loaded.
    pub fn new(path: PathBuf) -> Watcher {
        let stamp = stamp_of(&path);
        Watcher { path, stamp }
    }

    /// If the file changed since the last call, reads it into `into` and returns how
    /// many entries it has; a file that does not parse leaves the list in force as it
    /// was and returns the error.
    pub fn reload_if_changed(
        &mut self,
        into: &SharedRevoked,
    ) -> Option<Result<usize, RevokedError>> {
        let stamp = stamp_of(&self.path);
        if stamp == self.stamp {
            return None;
        }
        self.stamp = stamp;
        Some(Revoked::load(&self.path).map(|list| {
            let len = list.len();
            *into.write() = list;
            len
        }))
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_comments_and_errors() {
        let der = b"not really a certificate";
        let text = format!(
            "# revoked 2026-12-07\n{}  # gw3's old key\n\nnode:gw9\n",
            fingerprint_entry(der)
        );
        let revoked = Revoked::parse(&text, "revoked").unwrap();
        assert_eq!(revoked.len(), 2);
        assert!(revoked.covers(&CertificateDer::from(&der[..])));
        assert!(!revoked.covers(&CertificateDer::from(&b"another"[..])));

        for bad in ["sha256:abc", "gw3", "node:", "node:a/b", "sha256:zz"] {
            let err = Revoked::parse(bad, "revoked").unwrap_err().to_string();
            assert!(err.starts_with("revoked:1:"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_missing_file_revokes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Revoked::load(&dir.path().join("revoked"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_watcher_reloads_a_changed_file_and_keeps_the_list_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked");
        let shared = SharedRevoked::default();
        let mut watcher = Watcher::new(path.clone());
        assert!(watcher.reload_if_changed(&shared).is_none());
        std::fs::write(&path, "node:gw3\n").unwrap();
        assert_eq!(watcher.reload_if_changed(&shared).unwrap().unwrap(), 1);
        assert!(watcher.reload_if_changed(&shared).is_none());
        std::fs::write(&path, "node:gw3\nnonsense line\n").unwrap();
        assert!(watcher.reload_if_changed(&shared).unwrap().is_err());
        assert_eq!(
            shared.read().len(),
            1,
            "a bad file replaced the list in force"
        );
    }
}
