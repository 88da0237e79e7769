//! Mutual TLS for QUIC: both sides present a certificate signed by the cluster CA, and
//! a peer's node name is the DNS name in its certificate. Anything else is refused during
//! the handshake, before a byte of the depfs protocol is read.
//!
//! rustls is used with its `ring` provider, chosen explicitly (a process with two
//! providers installed panics on the first default lookup).

use std::path::Path;
use std::sync::Arc;

use depfs_proto::NodeName;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

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

/// Client and server configurations for one node.
pub struct TlsConfig {
    /// For accepting peers.
    pub server: Arc<rustls::ServerConfig>,
    /// For connecting to peers.
    pub client: Arc<rustls::ClientConfig>,
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

/// The node name a certificate was issued for (its first DNS subject alternative name).
pub fn node_name_of(cert: &CertificateDer<'_>) -> Option<NodeName> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(name) => NodeName::new(name).ok(),
        _ => None,
    })
}

/// The one-way role a certificate allows (`None`: any role).
pub fn role_of(cert: &CertificateDer<'_>) -> Option<crate::pki::CertRole> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let wanted = crate::pki::ROLE_OID
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(".");
    let ext = parsed
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == wanted)?;
    match ext.value {
        [0x0c, len, text @ ..] if *len as usize == text.len() => {
            crate::pki::CertRole::parse(std::str::from_utf8(text).ok()?)
        }
        _ => None,
    }
}

/// The role allowed by the certificate in a PEM file.
pub fn role_of_file(cert: &Path) -> Result<Option<crate::pki::CertRole>, TlsError> {
    let leaf = CertificateDer::pem_file_iter(cert)
        .map_err(file_err(cert))?
        .next()
        .ok_or_else(|| TlsError::File {
            path: cert.display().to_string(),
            detail: "no certificate in file".into(),
        })?
        .map_err(file_err(cert))?;
    Ok(role_of(&leaf))
}

/// The role the peer's certificate allows on an established connection.
pub fn peer_role(conn: &quinn::Connection) -> Option<crate::pki::CertRole> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    role_of(certs.first()?)
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
pub fn load(ca: &Path, cert: &Path, key: &Path, node: &NodeName) -> Result<TlsConfig, TlsError> {
    let ca_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(file_err(ca))?
        .collect::<Result<_, _>>()
        .map_err(file_err(ca))?;
    if ca_certs.is_empty() {
        return Err(TlsError::File {
            path: ca.display().to_string(),
            detail: "no certificate in file".into(),
        });
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(file_err(cert))?
        .collect::<Result<_, _>>()
        .map_err(file_err(cert))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::File {
            path: cert.display().to_string(),
            detail: "no certificate in file".into(),
        });
    };
    refuse_shared_key(key)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(file_err(key))?;
    match node_name_of(leaf) {
        Some(name) if &name == node => {}
        Some(name) => {
            return Err(TlsError::Mismatch(format!(
                "certificate {} is for node {name:?}, but the config names node {node:?}",
                cert.display()
            )))
        }
        None => {
            return Err(TlsError::Mismatch(format!(
                "certificate {} names no node (no DNS subject alternative name)",
                cert.display()
            )))
        }
    }

    let mut roots = RootCertStore::empty();
    for c in &ca_certs {
        roots
            .add(c.clone())
            .map_err(|e| TlsError::Config(format!("CA {}: {e}", ca.display())))?;
    }
    let roots = Arc::new(roots);
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

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key_der.clone_key())
        .map_err(|e| TlsError::Config(format!("{}: {e}", key.display())))?;
    server.alpn_protocols = vec![ALPN.to_vec()];

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
        }))
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| TlsError::Config(format!("{}: {e}", key.display())))?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    Ok(TlsConfig {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// Verifies a peer's server certificate against the CA for the node name the
/// certificate itself carries: peers are dialled by address, and their identity is
/// whatever node the CA vouched for.
#[derive(Debug)]
struct NodeVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
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
