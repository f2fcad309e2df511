//! The cluster CA of the object caches: generating it and signing cache peer certificates.
//!
//! What:
//! - [`generate_ca`]: a self-signed ECDSA P-256 CA (`CN=Flame cluster CA`, about 20 years). The
//!   leader calls it when the applied state has no CA and proposes the result as
//!   `Command::SetClusterCa`; the first one applied wins (see `state::cache`).
//! - [`issue_peer_certificate`]: signs the public key of a cache's PKCS#10 request with the CA.
//!   The request's names and extensions are ignored: the leaf gets `CN=<node>`, the DNS SANs
//!   [`CACHE_PEER_SERVER_NAME`] and the node name (when it is a valid DNS name), server and
//!   client authentication, and one year of validity. Any member that has applied the CA signs;
//!   signing reads the member's clock, which is fine because nothing of it is replicated.
//!
//! Why one CA for the group: caches authenticate each other with mutual TLS over QUIC and trust
//! exactly one anchor, the same on every member and after any leader change.
//!
//! Caveats:
//! - The CA's private key is replicated: every member's state, snapshots and Raft log hold it.
//! - There is no authentication yet (a separate security issue): anyone who can reach a
//!   member's Cluster API can obtain a certificate for any node name.
//! - `not_before` is backdated by [`CLOCK_SKEW`] so members and caches whose clocks differ a
//!   little still accept a fresh certificate.

use crate::state::ClusterCa;
use flame_proto::error::FlameError;
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
/// Longest accepted CSR, in bytes; a P-256 or RSA-4096 request is far smaller.
const MAX_CSR_LEN: usize = 16 * 1024;

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

/// Generates a new cluster CA valid from `now` (less [`CLOCK_SKEW`]) for [`CA_VALIDITY`].
pub fn generate_ca(now: SystemTime) -> Result<ClusterCa, FlameError> {
    let internal = |e: rcgen::Error| FlameError::Internal(format!("cannot create the CA: {e}"));
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(internal)?;
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
    let cert = params.self_signed(&key).map_err(internal)?;
    Ok(ClusterCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
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

/// Checks the request of IssueCacheCertificate; every failure is `InvalidArgument`.
fn check_request(node: &str, csr_pem: &str) -> Result<CertificateSigningRequestParams, FlameError> {
    let invalid = |m: String| Err(FlameError::InvalidArgument(m));
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
        FlameError::InvalidArgument(format!(
            "csr_pem is not a valid PEM PKCS#10 certificate signing request: {e}"
        ))
    })
}

/// Signs a cache peer certificate for `node` with `ca`, using only the public key of
/// `csr_pem`; returns the leaf certificate, PEM. See the module docs for its contents.
///
/// The request is checked first (`InvalidArgument`); then a missing CA (none applied yet) is
/// `Unavailable`, which the caller may retry.
pub fn issue_peer_certificate(
    ca: Option<&ClusterCa>,
    node: &str,
    csr_pem: &str,
    now: SystemTime,
) -> Result<String, FlameError> {
    let csr = check_request(node, csr_pem)?;
    let ca = ca.ok_or_else(|| {
        FlameError::Unavailable("the cluster CA is not created yet; retry".into())
    })?;
    let unusable = |e: rcgen::Error| {
        FlameError::Internal(format!("the replicated cluster CA cannot sign: {e}"))
    };
    let key = KeyPair::from_pem(&ca.key_pem).map_err(unusable)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(unusable)?;
    let mut names = vec![CACHE_PEER_SERVER_NAME.to_owned()];
    if is_dns_name(node) && node != CACHE_PEER_SERVER_NAME {
        names.push(node.to_owned());
    }
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .into_iter()
        .map(|n| n.try_into().map(SanType::DnsName))
        .collect::<Result<_, _>>()
        .map_err(|e| FlameError::InvalidArgument(format!("node {node:?}: {e}")))?;
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
        .map_err(|e| FlameError::InvalidArgument(format!("cannot sign the request: {e}")))?;
    Ok(cert.pem())
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
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .and_then(|r| r.pem())
            .expect("a CSR");
        for (node, pem, text) in [
            ("", csr.as_str(), "node must not be empty"),
            ("n1", "garbage", "csr_pem is not a valid"),
            ("n\n1", csr.as_str(), "printable"),
        ] {
            let err = issue_peer_certificate(Some(&ca), node, pem, SystemTime::now()).unwrap_err();
            assert!(
                matches!(&err, FlameError::InvalidArgument(m) if m.contains(text)),
                "{err:?}"
            );
        }
        assert!(issue_peer_certificate(Some(&ca), "n1", &csr, SystemTime::now()).is_ok());
        let err = issue_peer_certificate(None, "n1", &csr, SystemTime::now()).unwrap_err();
        assert!(matches!(&err, FlameError::Unavailable(m) if m.contains("not created yet")));
    }
}
