//! Mutual TLS for QUIC: both sides present a certificate signed by the cluster CA, and
//! a peer's node name is the DNS name in its certificate. Anything else is refused during
//! the handshake, before a byte of the depfs protocol is read.
//!
//! rustls is used with its `ring` provider, chosen explicitly (a process with two
//! providers installed panics on the first default lookup).

use std::path::Path;
use std::sync::Arc;

use depfs_proto::{Certificate, Digest, NodeName, SignChanges};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

pub use crate::pki::{node_name_of, role_of};
use crate::revoked::SharedRevoked;

/// The ALPN protocol name of depfs replication.
pub const ALPN: &[u8] = b"depfs/1";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The node's own certificate does not fit the config or the CA.
    #[error("{0}")]
    Mismatch(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Client and server configurations for one node, and what it signs and checks changes
/// with.
pub struct TlsConfig {
    /// For accepting peers.
    pub server: Arc<rustls::ServerConfig>,
    /// For connecting to peers.
    pub client: Arc<rustls::ClientConfig>,
    /// What this node signs its changes with and checks others' against.
    pub identity: Identity,
}

/// A node's identity in its cluster: the CA every member certificate must chain to, its
/// own certificate, and the signer of its changes (its certificate's key).
#[derive(Clone)]
pub struct Identity {
    /// Checks that the cluster CA issued a certificate (see [`crate::members`]).
    pub ca: Arc<dyn ClientCertVerifier>,
    /// This node's certificate.
    pub certificate: Certificate,
    /// Signs this node's changes with its key.
    pub signer: Arc<dyn SignChanges>,
    /// The certificates no longer trusted (empty until the daemon loads its deny list;
    /// the TLS verifiers of [`TlsConfig`] read the same list).
    pub revoked: SharedRevoked,
}

impl Identity {
    /// The identity of the node whose CA, certificate and key are in these files, with
    /// the same checks as [`load`].
    pub fn load(ca: &Path, cert: &Path, key: &Path, node: &NodeName) -> Result<Identity, TlsError> {
        Ok(load(ca, cert, key, node)?.identity)
    }
}

/// Signs change digests with the node's TLS key.
struct KeySigner {
    signer: Box<dyn rustls::sign::Signer>,
}

impl SignChanges for KeySigner {
    fn sign(&self, digest: &Digest) -> Vec<u8> {
        // ring's signing does not fail for a key it loaded; should it, the change goes
        // out unsigned and every peer refuses it, loudly.
        self.signer.sign(&digest.0).unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not sign a change");
            Vec::new()
        })
    }
}

/// The signature schemes change signatures use, by key type.
const CHANGE_SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
];

fn change_signer(
    provider: &CryptoProvider,
    key: &PrivateKeyDer<'static>,
    path: &Path,
) -> Result<Arc<dyn SignChanges>, TlsError> {
    let loaded = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
    let signer = loaded.choose_scheme(&CHANGE_SCHEMES).ok_or_else(|| {
        TlsError::Mismatch(format!(
            "{}: the key is neither Ed25519 nor ECDSA P-256/P-384, which change signatures use",
            path.display()
        ))
    })?;
    Ok(Arc::new(KeySigner { signer }))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// The role allowed by the certificate in a PEM file.
pub fn role_of_file(cert: &Path) -> Result<Option<crate::pki::CertRole>, TlsError> {
    let leaf = CertificateDer::pem_file_iter(cert)
        .map_err(file_err(cert))?
        .next()
        .ok_or_else(|| no_certificate(cert))?
        .map_err(file_err(cert))?;
    Ok(role_of(&leaf))
}

/// The peer's certificate on an established connection.
pub fn peer_certificate(conn: &quinn::Connection) -> Option<Certificate> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    Some(Certificate(certs.first()?.as_ref().to_vec()))
}

/// Refuses a private key file that users other than its owner may read: whoever reads
/// it can act as this node (`depfs ca issue` writes keys mode 600).
fn refuse_shared_key(key: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key)
        .map_err(|e| TlsError::File {
            path: key.display().to_string(),
            detail: e.to_string(),
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(TlsError::File {
            path: key.display().to_string(),
            detail: format!(
                "the private key is readable by other users (mode {:o}); run chmod 600 on it",
                mode & 0o777
            ),
        });
    }
    Ok(())
}

/// Loads the CA, the node's certificate and key, checks that the certificate is for
/// `node` and signed by the CA and valid now, and builds the TLS configurations.
///
/// The files are read and checked first, in the order their errors are reported (CA,
/// certificate, key, node name, the certificate against the CA); then the server and
/// client configurations are built ([`server_config`], [`client_config`]), both
/// refusing the certificates of one shared deny list.
pub fn load(ca: &Path, cert: &Path, key: &Path, node: &NodeName) -> Result<TlsConfig, TlsError> {
    let ca_certs = read_certs(ca)?;
    if ca_certs.is_empty() {
        return Err(no_certificate(ca));
    }
    let chain = read_certs(cert)?;
    let Some(leaf) = chain.first() else {
        return Err(no_certificate(cert));
    };
    refuse_shared_key(key)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(file_err(key))?;
    check_node_name(leaf, cert, node)?;

    let roots = root_store(&ca_certs, ca)?;
    let provider = provider();
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    // Our own certificate must pass what peers will check.
    client_verifier
        .verify_client_cert(leaf, &chain[1..], UnixTime::now())
        .map_err(|e| {
            TlsError::Mismatch(format!(
                "certificate {} is not valid for CA {}: {e}",
                cert.display(),
                ca.display()
            ))
        })?;

    let revoked = SharedRevoked::default();
    let server = server_config(&provider, &client_verifier, &revoked, &chain, &key_der, key)?;
    let signer = change_signer(&provider, &key_der, key)?;
    let leaf_der = leaf.as_ref().to_vec();
    let client = client_config(roots, provider, &revoked, chain, key_der, key)?;
    Ok(TlsConfig {
        server: Arc::new(server),
        client: Arc::new(client),
        identity: Identity {
            ca: client_verifier,
            certificate: Certificate(leaf_der),
            signer,
            revoked,
        },
    })
}

/// The certificates in a PEM file (none is not an error here).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_file_iter(path)
        .map_err(file_err(path))?
        .collect::<Result<_, _>>()
        .map_err(file_err(path))
}

/// The error for a PEM file without a certificate.
fn no_certificate(path: &Path) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        detail: "no certificate in file".into(),
    }
}

/// Fails unless the certificate `leaf` (read from `cert`) names `node`: the config
/// and the certificate must agree on who this node is.
fn check_node_name(
    leaf: &CertificateDer<'_>,
    cert: &Path,
    node: &NodeName,
) -> Result<(), TlsError> {
    match node_name_of(leaf) {
        Some(name) if &name == node => Ok(()),
        Some(name) => Err(TlsError::Mismatch(format!(
            "certificate {} is for node {name:?}, but the config names node {node:?}",
            cert.display()
        ))),
        None => Err(TlsError::Mismatch(format!(
            "certificate {} names no node (no DNS subject alternative name)",
            cert.display()
        ))),
    }
}

/// The cluster CA's certificates (read from `ca`) as trust roots.
fn root_store(
    ca_certs: &[CertificateDer<'static>],
    ca: &Path,
) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in ca_certs {
        roots
            .add(c.clone())
            .map_err(|e| TlsError::Config(format!("CA {}: {e}", ca.display())))?;
    }
    Ok(Arc::new(roots))
}

/// The configuration for accepting peers: TLS 1.3 only, client certificates the CA
/// issued and the deny list does not name, the depfs ALPN, and no session resumption.
fn server_config(
    provider: &Arc<CryptoProvider>,
    client_verifier: &Arc<dyn ClientCertVerifier>,
    revoked: &SharedRevoked,
    chain: &[CertificateDer<'static>],
    key_der: &PrivateKeyDer<'static>,
    key: &Path,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(NotRevoked {
            inner: client_verifier.clone(),
            revoked: revoked.clone(),
        }))
        .with_single_cert(chain.to_vec(), key_der.clone_key())
        .map_err(|e| TlsError::Config(format!("{}: {e}", key.display())))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    // No session resumption: a resumed TLS 1.3 session skips the certificate checks,
    // so a certificate revoked since could come back on a ticket. Peer connections are
    // long-lived; a full handshake per connection costs nothing that matters.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    Ok(server)
}

/// The configuration for connecting to peers: TLS 1.3 only, server certificates the
/// CA issued for a node and the deny list does not name ([`NodeVerifier`]), this
/// node's certificate as client certificate, the depfs ALPN, and no resumption.
fn client_config(
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    revoked: &SharedRevoked,
    chain: Vec<CertificateDer<'static>>,
    key_der: PrivateKeyDer<'static>,
    key: &Path,
) -> Result<rustls::ClientConfig, TlsError> {
    let server_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeVerifier {
            inner: server_verifier,
            revoked: revoked.clone(),
        }))
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| TlsError::Config(format!("{}: {e}", key.display())))?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    client.resumption = rustls::client::Resumption::disabled();
    Ok(client)
}

fn revoked_error() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
}

/// Accepts a client certificate the cluster CA issued and the deny list does not name.
#[derive(Debug)]
struct NotRevoked {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: SharedRevoked,
}

impl ClientCertVerifier for NotRevoked {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        if self.revoked.read().covers(end_entity) {
            return Err(revoked_error());
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies a peer's server certificate against the CA for the node name the
/// certificate itself carries: peers are dialled by address, and their identity is
/// whatever node the CA vouched for.
#[derive(Debug)]
struct NodeVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    revoked: SharedRevoked,
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.revoked.read().covers(end_entity) {
            return Err(revoked_error());
        }
        let name = node_name_of(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName,
        ))?;
        let server_name = ServerName::try_from(name.to_string()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
        })?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The node name of the peer on an established QUIC connection.
pub fn peer_node(conn: &quinn::Connection) -> Option<NodeName> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_name_of(certs.first()?)
}
