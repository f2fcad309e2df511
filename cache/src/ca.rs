//! Certificates of cache peers: the cluster CA, certificate requests and signing.
//!
//! What:
//! - [`generate_ca`]: a self-signed ECDSA P-256 CA (`CN=Flame cluster CA`, about 20 years).
//!   The control-plane leader creates one at bootstrap and replicates it; `flame-cache certs`
//!   creates one for clusters configured with files.
//! - [`peer_request`]: a fresh key pair and a PKCS#10 request, made by a cache that asks the
//!   control plane for its certificate (`IssueCacheCertificate`).
//! - [`issue_peer_certificate`]: signs the public key of a request with the CA. The request's
//!   names and extensions are ignored: the leaf gets `CN=<node>`, the DNS SANs
//!   [`CACHE_PEER_SERVER_NAME`] and the node name (when it is a valid DNS name), server and
//!   client authentication, and one year of validity.
//!
//! Why here: the control plane signs, caches request and verify, and tests and the `certs`
//! command do both; one module keeps the certificate's shape in one place.
//!
//! Caveat: `not_before` is backdated by [`CLOCK_SKEW`] so machines whose clocks differ a
//! little still accept a fresh certificate.

use crate::error::{CacheError, CacheResult};
use flame_proto::model::CACHE_PEER_SERVER_NAME;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    SanType, SerialNumber,
};
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;

/// The common name of the cluster CA.
pub const CA_COMMON_NAME: &str = "Flame cluster CA";
/// How long the cluster CA is valid (about 20 years).
pub const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// How long a cache peer certificate is valid.
pub const PEER_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far `not_before` is set in the past, for clocks that differ.
pub const CLOCK_SKEW: Duration = Duration::from_secs(3600);
/// Longest node name a certificate is issued for (a DNS name's limit).
const MAX_NODE_LEN: usize = 253;
/// Longest accepted request, in bytes; a P-256 or RSA-4096 request is far smaller.
const MAX_CSR_LEN: usize = 16 * 1024;

/// A CA: its certificate and private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    /// The CA certificate, the trust anchor.
    pub cert_pem: String,
    /// The CA's private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for CaPem {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPem")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// `now - back` to `now + ahead` as certificate times.
fn validity(now: SystemTime, back: Duration, ahead: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::from(now);
    (now - back, now + ahead)
}

/// A random, positive 128-bit serial number.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn internal(what: &'static str) -> impl Fn(rcgen::Error) -> CacheError {
    move |e| CacheError::Internal(format!("{what}: {e}"))
}

/// Generates a new CA valid from `now` (less [`CLOCK_SKEW`]) for [`CA_VALIDITY`].
pub fn generate_ca(now: SystemTime) -> CacheResult<CaPem> {
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(internal("cannot create the CA"))?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = validity(now, CLOCK_SKEW, CA_VALIDITY);
    params.serial_number = Some(random_serial());
    let cert = params
        .self_signed(&key)
        .map_err(internal("cannot create the CA"))?;
    Ok(CaPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A new key pair and a certificate request for it: `(key_pem, csr_pem)`.
pub fn peer_request() -> CacheResult<(String, String)> {
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(internal("cannot create a key"))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(internal("cannot create a certificate request"))?;
    Ok((key.serialize_pem(), csr))
}

/// True when `name` can be a DNS SAN: dot-separated labels of 1–63 letters, digits and `-`
/// (not at either end), at most 253 characters, and not all-numeric at the end (so an IPv4
/// address is not mistaken for a name).
pub fn is_dns_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= MAX_NODE_LEN
        && name.split('.').all(label_ok)
        && name
            .rsplit('.')
            .next()
            .is_some_and(|last| last.chars().any(|c| c.is_ascii_alphabetic()))
}

/// Checks a signing request; every failure is `InvalidArgument`.
fn check_request(node: &str, csr_pem: &str) -> CacheResult<CertificateSigningRequestParams> {
    let invalid = |m: String| Err(CacheError::InvalidArgument(m));
    if node.is_empty() {
        return invalid("node must not be empty".into());
    }
    if node.chars().count() > MAX_NODE_LEN || node.chars().any(char::is_control) {
        return invalid(format!(
            "node must be at most {MAX_NODE_LEN} printable characters"
        ));
    }
    if csr_pem.len() > MAX_CSR_LEN {
        return invalid(format!("csr_pem is longer than {MAX_CSR_LEN} bytes"));
    }
    CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        CacheError::InvalidArgument(format!(
            "csr_pem is not a valid PEM PKCS#10 certificate signing request: {e}"
        ))
    })
}

/// Signs a cache peer certificate for `node` with `ca`, using only the public key of
/// `csr_pem`; returns the leaf certificate, PEM. A bad request is `InvalidArgument`; a CA that
/// cannot sign is `Internal`.
pub fn issue_peer_certificate(
    ca: &CaPem,
    node: &str,
    csr_pem: &str,
    now: SystemTime,
) -> CacheResult<String> {
    let csr = check_request(node, csr_pem)?;
    let key = KeyPair::from_pem(&ca.key_pem).map_err(internal("the cluster CA cannot sign"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key)
        .map_err(internal("the cluster CA cannot sign"))?;
    let mut names = vec![CACHE_PEER_SERVER_NAME.to_owned()];
    if is_dns_name(node) && node != CACHE_PEER_SERVER_NAME {
        names.push(node.to_owned());
    }
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .into_iter()
        .map(|n| n.try_into().map(SanType::DnsName))
        .collect::<Result<_, _>>()
        .map_err(|e| CacheError::InvalidArgument(format!("node {node:?}: {e}")))?;
    params.distinguished_name.push(DnType::CommonName, node);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity(now, CLOCK_SKEW, PEER_CERT_VALIDITY);
    params.serial_number = Some(random_serial());
    let cert = params
        .signed_by(&csr.public_key, &issuer)
        .map_err(|e| CacheError::InvalidArgument(format!("cannot sign the request: {e}")))?;
    Ok(cert.pem())
}

/// A peer identity made in one step: a fresh key, signed by `ca` for `node`. Returns
/// `(cert_pem, key_pem)`. For tests and `flame-cache certs`.
pub fn issue_identity(ca: &CaPem, node: &str) -> CacheResult<(String, String)> {
    let (key_pem, csr_pem) = peer_request()?;
    Ok((
        issue_peer_certificate(ca, node, &csr_pem, SystemTime::now())?,
        key_pem,
    ))
}

/// A server identity for the Flight face made in one step: a fresh key, signed by `ca` for
/// `hosts` (IP addresses become IP names, anything else DNS names). Returns
/// `(cert_pem, key_pem)`. For tests and `flame-cache certs`.
pub fn issue_server_identity(ca: &CaPem, hosts: &[&str]) -> CacheResult<(String, String)> {
    let names = hosts
        .iter()
        .map(|host| match host.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => (*host).to_owned().try_into().map(SanType::DnsName),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CacheError::InvalidArgument(format!("a Flight server name: {e}")))?;
    let key = KeyPair::from_pem(&ca.key_pem).map_err(internal("the cluster CA cannot sign"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key)
        .map_err(internal("the cluster CA cannot sign"))?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = names;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().copied().unwrap_or("flame-cache"),
    );
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) =
        validity(SystemTime::now(), CLOCK_SKEW, PEER_CERT_VALIDITY);
    params.serial_number = Some(random_serial());
    let leaf_key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(internal("cannot create a key"))?;
    let cert = params
        .signed_by(&leaf_key, &issuer)
        .map_err(internal("cannot sign the Flight certificate"))?;
    Ok((cert.pem(), leaf_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_exclude_ip_addresses_underscores_and_bad_labels() {
        for good in ["n1", "worker-1.example.com", "a.b2"] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in ["", "10.0.0.1", "a_b", "-a", "a-", "a..b", "a.", "é", "1"] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn requests_without_a_node_or_with_a_garbage_csr_are_invalid_arguments() {
        let ca = generate_ca(SystemTime::now()).expect("a CA");
        let (_, csr) = peer_request().expect("a CSR");
        for (node, pem, text) in [
            ("", csr.as_str(), "node must not be empty"),
            ("n1", "garbage", "csr_pem is not a valid"),
            ("n\n1", csr.as_str(), "printable"),
        ] {
            let err = issue_peer_certificate(&ca, node, pem, SystemTime::now()).unwrap_err();
            assert!(
                matches!(&err, CacheError::InvalidArgument(m) if m.contains(text)),
                "{err:?}"
            );
        }
        assert!(issue_peer_certificate(&ca, "n1", &csr, SystemTime::now()).is_ok());
    }
}
