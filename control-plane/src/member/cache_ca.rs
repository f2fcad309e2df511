//! The cluster CA of the object caches, as the control plane uses it: created by the leader,
//! replicated, and used by any member to sign cache peer certificates.
//!
//! What:
//! - [`generate_ca`]: a new CA ([`flame_cache::ca::generate_ca`]). The leader calls it when the
//!   applied state has no CA and proposes the result as `Command::SetClusterCa`; the first one
//!   applied wins (see `state::cache`).
//! - [`issue_peer_certificate`]: signs the public key of a cache's PKCS#10 request with the
//!   applied CA ([`flame_cache::ca::issue_peer_certificate`] says what the leaf holds). Any
//!   member that has applied the CA signs; signing reads the member's clock, which is fine
//!   because nothing of it is replicated.
//!
//! Why one CA for the group: caches authenticate each other with mutual TLS over QUIC and trust
//! exactly one anchor, the same on every member and after any leader change.
//!
//! Caveats:
//! - The CA's private key is replicated: every member's state, snapshots and Raft log hold it.
//! - There is no authentication yet (a separate security issue): anyone who can reach a
//!   member's Cluster API can obtain a certificate for any node name.

use crate::state::ClusterCa;
use flame_cache::ca::{self, CaPem};
use flame_proto::error::FlameError;
use std::time::SystemTime;

/// Generates a new cluster CA valid from `now`.
pub fn generate_ca(now: SystemTime) -> Result<ClusterCa, FlameError> {
    let CaPem { cert_pem, key_pem } = ca::generate_ca(now)?;
    Ok(ClusterCa { cert_pem, key_pem })
}

/// Signs a cache peer certificate for `node` with `ca`; returns the leaf certificate, PEM.
///
/// The request is checked first (`InvalidArgument`); then a missing CA (none applied yet) is
/// `Unavailable`, which the caller may retry.
pub fn issue_peer_certificate(
    ca: Option<&ClusterCa>,
    node: &str,
    csr_pem: &str,
    now: SystemTime,
) -> Result<String, FlameError> {
    let Some(ca) = ca else {
        // Check the request anyway so a bad one is told so at once, not after the CA exists.
        let probe = ca::generate_ca(now)?;
        ca::issue_peer_certificate(&probe, node, csr_pem, now)?;
        return Err(FlameError::Unavailable(
            "the cluster CA is not created yet; retry".into(),
        ));
    };
    let pem = CaPem {
        cert_pem: ca.cert_pem.clone(),
        key_pem: ca.key_pem.clone(),
    };
    Ok(ca::issue_peer_certificate(&pem, node, csr_pem, now)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_before_a_missing_ca_is_reported() {
        let (_, csr) = ca::peer_request().expect("a CSR");
        let err = issue_peer_certificate(None, "", &csr, SystemTime::now()).unwrap_err();
        assert!(
            matches!(&err, FlameError::InvalidArgument(m) if m.contains("node must not be empty"))
        );
        let err = issue_peer_certificate(None, "n1", &csr, SystemTime::now()).unwrap_err();
        assert!(matches!(&err, FlameError::Unavailable(m) if m.contains("not created yet")));
        let ca = generate_ca(SystemTime::now()).expect("a CA");
        assert!(issue_peer_certificate(Some(&ca), "n1", &csr, SystemTime::now()).is_ok());
    }
}
