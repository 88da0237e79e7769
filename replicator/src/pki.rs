//! The cluster's certificates: a CA (`depfs ca init`) and node certificates signed by it
//! (`depfs ca issue`). A node's name is its certificate's DNS name: the identity under
//! which its changes are accepted.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use depfs_proto::NodeName;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;

/// Why a certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A certificate or key is malformed, or could not be made.
    #[error("{what}: {detail}")]
    Invalid {
        /// Which file or step.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The file to be written exists already (never overwrite a key).
    #[error("{0} exists already; refusing to overwrite it")]
    Exists(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |e| PkiError::Invalid {
        what,
        detail: e.to_string(),
    }
}

/// The role a node certificate allows in one-way mode, carried in a private,
/// non-critical X.509 extension. `depfs ca issue` always writes it (`worker` unless
/// asked otherwise); certificates without it, issued by older versions, allow any role
/// (multi-writer clusters ignore roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// May start as the manager.
    Manager,
    /// Starts as a worker (it can still be promoted by `depfs promote`).
    Worker,
}

/// OID of the role extension (a private arc; its value is a DER UTF8String).
pub const ROLE_OID: [u64; 9] = [1, 3, 6, 1, 4, 1, 58888, 1, 1];

impl CertRole {
    fn as_str(self) -> &'static str {
        match self {
            CertRole::Manager => "manager",
            CertRole::Worker => "worker",
        }
    }

    /// Parses `manager` or `worker`.
    pub fn parse(s: &str) -> Option<CertRole> {
        match s {
            "manager" => Some(CertRole::Manager),
            "worker" => Some(CertRole::Worker),
            _ => None,
        }
    }
}

/// How long certificates are valid: CA 20 years, nodes 10 years by default.
const CA_VALID_DAYS: u64 = 20 * 365;
/// Default validity of a node certificate.
pub const NODE_VALID_DAYS: u64 = 10 * 365;

fn validity(params: &mut CertificateParams, from: SystemTime, days: u64) {
    let start = time::OffsetDateTime::from(from - Duration::from_secs(3600));
    params.not_before = start;
    params.not_after = start + time::Duration::days(days as i64);
}

/// Writes `content` to `path` with mode 0600 if `secret`, refusing to overwrite.
fn write_new(path: &Path, content: &str, secret: bool) -> Result<(), PkiError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 });
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::Exists(path.to_path_buf())
        } else {
            PkiError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    f.write_all(content.as_bytes()).map_err(io(path))?;
    Ok(())
}

/// Creates a new cluster CA in `out`: `ca.pem` and `ca.key` (0600). Returns their paths.
pub fn init_ca(out: &Path) -> Result<(PathBuf, PathBuf), PkiError> {
    fs::create_dir_all(out).map_err(io(out))?;
    let (cert_path, key_path) = (out.join("ca.pem"), out.join("ca.key"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(PkiError::Exists(p.clone()));
        }
    }
    let key = KeyPair::generate().map_err(invalid("generate CA key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "depfs cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, SystemTime::now(), CA_VALID_DAYS);
    let cert = params.self_signed(&key).map_err(invalid("self-sign CA"))?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

/// Issues a certificate for node `name`, signed by the CA in `ca_dir`, valid for `days`
/// from `from`. Writes `NAME.pem` and `NAME.key` (0600) in `out`; returns their paths.
pub fn issue_node(
    ca_dir: &Path,
    name: &NodeName,
    out: &Path,
    from: SystemTime,
    days: u64,
    role: Option<CertRole>,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let ca_cert_path = ca_dir.join("ca.pem");
    let ca_key_path = ca_dir.join("ca.key");
    let ca_cert = fs::read_to_string(&ca_cert_path).map_err(io(&ca_cert_path))?;
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
    let ca_key =
        KeyPair::from_pem(&ca_key_pem).map_err(invalid(ca_key_path.display().to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)
        .map_err(invalid(ca_cert_path.display().to_string()))?;

    fs::create_dir_all(out).map_err(io(out))?;
    let cert_path = out.join(format!("{name}.pem"));
    let key_path = out.join(format!("{name}.key"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(PkiError::Exists(p.clone()));
        }
    }
    let key = KeyPair::generate().map_err(invalid("generate node key"))?;
    let mut params =
        CertificateParams::new(vec![name.to_string()]).map_err(invalid("node name"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name.as_str());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, from, days);
    if let Some(role) = role {
        let text = role.as_str().as_bytes();
        let mut der = vec![0x0c, text.len() as u8];
        der.extend_from_slice(text);
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(&ROLE_OID, der));
    }
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(invalid("sign node certificate"))?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
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
pub fn role_of(cert: &CertificateDer<'_>) -> Option<CertRole> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let wanted = ROLE_OID
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
            CertRole::parse(std::str::from_utf8(text).ok()?)
        }
        _ => None,
    }
}
