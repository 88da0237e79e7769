//! The cluster's members as their certificates say: for every node name, the keys that
//! may sign changes under it and the roles it may take.
//!
//! A certificate is learned from a peer's TLS handshake, or from a peer that relays the
//! changes of an origin it holds the certificate of (`Message::Changes` carries them),
//! and is kept in the store, so that changes can be checked again after a restart and
//! served to members that join later. A certificate is accepted only if the cluster CA
//! issued it. It keeps verifying the changes signed while it was valid after it expires:
//! a renewed certificate has a new key, and the old changes stay in the log. See
//! `docs/reliability.md` ("Threat model").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use depfs_proto::lead::Term;
use depfs_proto::limits::MAX_MEMBERS;
use depfs_proto::{Certificate, Change, Digest, Dot, NodeName, SealError};
use ring::signature::{UnparsedPublicKey, VerificationAlgorithm};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

use crate::pki::CertRole;
use crate::pki::{node_name_of, role_of};
use crate::revoked::SharedRevoked;

/// Certificates kept per node name: enough for years of renewals. Beyond it the one
/// issued first is forgotten (changes it signed then no longer verify on nodes that
/// learn of them later).
pub const CERTIFICATES_PER_MEMBER: usize = 8;

/// Why a certificate was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// Not a certificate, or not issued by the cluster CA.
    #[error("not a certificate of this cluster's CA: {0}")]
    NotIssued(String),
    /// Issued, but it names no node.
    #[error("the certificate names no node (no DNS subject alternative name)")]
    NoName,
    /// A key this build cannot check signatures of.
    #[error("the certificate of {0} has a key type depfs does not sign with")]
    UnsupportedKey(NodeName),
    /// More members than a cluster may have.
    #[error("more than {MAX_MEMBERS} members")]
    TooMany,
    /// The deny list names it.
    #[error("the certificate of {0} is revoked")]
    Revoked(NodeName),
}

/// Why a change was refused as not made by its origin.
#[derive(Debug, thiserror::Error)]
pub enum Forgery {
    /// The seal does not fit the change.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// No certificate of the origin is known.
    #[error("change {0}: no certificate of its origin is known")]
    UnknownOrigin(Dot),
    /// The signature verifies with no certificate of the origin.
    #[error("change {0}: its signature verifies with no certificate of its origin")]
    BadSignature(Dot),
}

/// Why a manager term is not followed.
#[derive(Debug, thiserror::Error)]
pub enum TermRefusal {
    /// The term carries no signature.
    #[error("term {0} is not signed by its manager")]
    Unsigned(u64),
    /// No certificate of the manager is known.
    #[error("term {number}: no certificate of its manager {manager} is known")]
    UnknownManager {
        /// The term.
        number: u64,
        /// The node it names.
        manager: NodeName,
    },
    /// Every certificate of the manager allows only the worker role.
    #[error("term {number}: its manager {manager} holds a worker's certificate")]
    WorkerOnly {
        /// The term.
        number: u64,
        /// The node it names.
        manager: NodeName,
    },
    /// The signature verifies with no certificate of the manager: made up by someone
    /// else.
    #[error("term {number}: its signature verifies with no certificate of {manager}")]
    Forged {
        /// The term.
        number: u64,
        /// The node it names.
        manager: NodeName,
    },
}

/// A certificate learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The node it names.
    pub node: NodeName,
    /// False if it was known already.
    pub new: bool,
}

struct Member {
    certificate: Certificate,
    fingerprint: Digest,
    algorithm: &'static dyn VerificationAlgorithm,
    key: Vec<u8>,
    role: Option<CertRole>,
    not_before: i64,
}

impl Member {
    fn verifies(&self, digest: &Digest, signature: &[u8]) -> bool {
        UnparsedPublicKey::new(self.algorithm, &self.key)
            .verify(&digest.0, signature)
            .is_ok()
    }
}

/// See the module documentation.
pub struct Members {
    ca: Arc<dyn ClientCertVerifier>,
    revoked: SharedRevoked,
    by_name: BTreeMap<NodeName, Vec<Member>>,
}

impl Members {
    /// No members yet; certificates are checked against `ca`, and refused while
    /// `revoked` names them.
    pub fn new(ca: Arc<dyn ClientCertVerifier>, revoked: SharedRevoked) -> Members {
        Members {
            ca,
            revoked,
            by_name: BTreeMap::new(),
        }
    }

    /// True if the deny list names `certificate`.
    pub fn is_revoked(&self, certificate: &Certificate) -> bool {
        self.revoked
            .read()
            .covers(&CertificateDer::from(certificate.0.as_slice()))
    }

    /// Forgets every certificate the deny list names (it was reloaded): changes and
    /// terms they sign are refused from now on. Returns the nodes that lost one.
    pub fn forget_revoked(&mut self) -> Vec<NodeName> {
        let revoked = self.revoked.read().clone();
        let mut lost = Vec::new();
        for (node, certs) in &mut self.by_name {
            let before = certs.len();
            certs.retain(|m| !revoked.covers(&CertificateDer::from(m.certificate.0.as_slice())));
            if certs.len() < before {
                lost.push(node.clone());
            }
        }
        self.by_name.retain(|_, certs| !certs.is_empty());
        lost
    }

    /// Accepts `certificate` if the CA issued it.
    pub fn learn(&mut self, certificate: &Certificate) -> Result<Learned, MemberError> {
        let fingerprint = fingerprint(certificate);
        let der = CertificateDer::from(certificate.0.as_slice());
        let node = node_name_of(&der).ok_or(MemberError::NoName)?;
        if self.revoked.read().covers(&der) {
            return Err(MemberError::Revoked(node));
        }
        if let Some(known) = self.by_name.get(&node) {
            if known.iter().any(|m| m.fingerprint == fingerprint) {
                return Ok(Learned { node, new: false });
            }
        }
        let (algorithm, key, not_before) =
            public_key(&der).ok_or_else(|| MemberError::UnsupportedKey(node.clone()))?;
        // Checked as of its issue: it must have been valid when it signed.
        let at = UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(not_before).unwrap_or(0).saturating_add(1),
        ));
        self.ca
            .verify_client_cert(&der, &[], at)
            .map_err(|e| MemberError::NotIssued(e.to_string()))?;
        if !self.by_name.contains_key(&node) && self.by_name.len() >= MAX_MEMBERS {
            return Err(MemberError::TooMany);
        }
        let certs = self.by_name.entry(node.clone()).or_default();
        certs.push(Member {
            certificate: certificate.clone(),
            fingerprint,
            algorithm,
            key,
            role: role_of(&der),
            not_before,
        });
        certs.sort_by_key(|m| std::cmp::Reverse(m.not_before));
        certs.truncate(CERTIFICATES_PER_MEMBER);
        Ok(Learned { node, new: true })
    }

    /// Checks that `change` is what its origin signed.
    pub fn verify(&self, change: &Change) -> Result<(), Forgery> {
        let digest = change.sealed_digest()?;
        let certs = self
            .by_name
            .get(&change.dot.node)
            .ok_or_else(|| Forgery::UnknownOrigin(change.dot.clone()))?;
        let signed = certs
            .iter()
            .any(|m| m.verifies(&digest, &change.seal.signature));
        if signed {
            Ok(())
        } else {
            Err(Forgery::BadSignature(change.dot.clone()))
        }
    }

    /// Checks that `term` was signed by the node it names, under a certificate that
    /// allows the manager role.
    pub fn verify_term(&self, term: &Term) -> Result<(), TermRefusal> {
        let (number, manager) = (term.number, term.manager.clone());
        if !term.is_signed() {
            return Err(TermRefusal::Unsigned(number));
        }
        let Some(certs) = self.by_name.get(&term.manager) else {
            return Err(TermRefusal::UnknownManager { number, manager });
        };
        let digest = term.digest();
        let mut capable = certs
            .iter()
            .filter(|m| !matches!(m.role, Some(CertRole::Worker)))
            .peekable();
        if capable.peek().is_none() {
            return Err(TermRefusal::WorkerOnly { number, manager });
        }
        if capable.any(|m| m.verifies(&digest, &term.signature)) {
            Ok(())
        } else {
            Err(TermRefusal::Forged { number, manager })
        }
    }

    /// The certificates known for `node`, newest first.
    pub fn certificates(&self, node: &NodeName) -> Vec<Certificate> {
        self.by_name
            .get(node)
            .map(|certs| certs.iter().map(|m| m.certificate.clone()).collect())
            .unwrap_or_default()
    }

    /// True if a certificate of `node` is known.
    pub fn knows(&self, node: &NodeName) -> bool {
        self.by_name.contains_key(node)
    }

    /// True if `node` is known and none of its certificates allows the manager role.
    pub fn is_worker_only(&self, node: &NodeName) -> bool {
        self.by_name.get(node).is_some_and(|certs| {
            certs
                .iter()
                .all(|m| matches!(m.role, Some(CertRole::Worker)))
        })
    }

    /// The key under which the store keeps `certificate` (see [`Store::app_meta`]).
    ///
    /// [`Store::app_meta`]: depfs_store::Store::app_meta
    pub fn store_key(certificate: &Certificate) -> String {
        let hex: String = fingerprint(certificate).0[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{STORE_PREFIX}{hex}")
    }
}

/// The prefix of the store keys of member certificates.
pub const STORE_PREFIX: &str = "member/";

fn fingerprint(certificate: &Certificate) -> Digest {
    Digest(*blake3::hash(&certificate.0).as_bytes())
}

/// The signature algorithm of the certificate's key (the ones a node key can have:
/// `depfs ca issue` makes ECDSA P-256 keys; Ed25519 and P-384 work as well), the key's
/// bytes, and the start of its validity.
fn public_key(
    der: &CertificateDer<'_>,
) -> Option<(&'static dyn VerificationAlgorithm, Vec<u8>, i64)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let spki = parsed.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    let verify: &'static dyn VerificationAlgorithm = match (algorithm.as_str(), curve.as_deref()) {
        ("1.3.101.112", _) => &ring::signature::ED25519,
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => {
            &ring::signature::ECDSA_P256_SHA256_ASN1
        }
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => &ring::signature::ECDSA_P384_SHA384_ASN1,
        _ => return None,
    };
    let not_before = parsed.validity().not_before.timestamp();
    Some((verify, spki.subject_public_key.data.to_vec(), not_before))
}
