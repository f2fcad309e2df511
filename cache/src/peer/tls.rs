//! TLS and QUIC settings of the peer endpoint: mutual TLS 1.3 with the cluster CA, on rustls
//! with the `ring` provider.
//!
//! What: [`PeerIdentity`] is a cache's certificate chain and key plus the CA it trusts, from
//! PEM files (operator-managed certificates) or from PEM text (a certificate the control plane
//! issued). It builds the quinn server and client configurations: both sides present a
//! certificate, both verify the other against the CA, and clients expect the server name
//! [`CACHE_PEER_SERVER_NAME`], which every peer certificate carries. A peer without a
//! certificate from the cluster CA cannot complete a handshake in either direction.
//!
//! Why these transport settings: caches move large objects between each other, so stream and
//! connection windows are large (tens of MiB in flight). Keep-alives keep idle peer connections
//! open across quiet periods.
//!
//! Caveat on packet size: MTU discovery's upper bound is also capped by the peer's
//! `max_udp_payload_size`, which [`quinn::EndpointConfig`] leaves at 1472, so packets stop at
//! 1472 bytes even on loopback or jumbo-frame links; the 65,000 bound below does not apply.
//! Raising `max_udp_payload_size` was tried (cache-bench, loopback): discovery then reaches
//! 65,000, but the first loss bursts under load (socket buffer overflow, reordering) trip
//! quinn's black-hole detector, which drops the connection to 1,200-byte packets for ten
//! minutes, slower than staying at 1472.
//!
//! Caveat: certificates are read once at start; rotating them needs a restart.

use crate::error::{CacheError, CacheResult};
use crate::peer::proto::ALPN;
use flame_proto::model::CACHE_PEER_SERVER_NAME;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{MtuDiscoveryConfig, TransportConfig, VarInt};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A cache's certificate, key and trusted CA.
#[derive(Debug)]
pub struct PeerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

impl Clone for PeerIdentity {
    fn clone(&self) -> Self {
        PeerIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
        }
    }
}

fn config_error(what: &str) -> impl Fn(String) -> CacheError + '_ {
    move |why| CacheError::Config(format!("{what}: {why}"))
}

impl PeerIdentity {
    /// From PEM text: the certificate (chain), its private key, and the CA certificate(s).
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> CacheResult<PeerIdentity> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| config_error("the peer certificate")(e.to_string()))?;
        if chain.is_empty() {
            return Err(CacheError::Config(
                "the peer certificate PEM holds no certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| config_error("the peer key")(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let ca = ca.map_err(|e| config_error("the peer CA")(e.to_string()))?;
            roots
                .add(ca)
                .map_err(|e| config_error("the peer CA")(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(CacheError::Config(
                "the peer CA PEM holds no certificate".into(),
            ));
        }
        Ok(PeerIdentity {
            chain,
            key,
            roots: Arc::new(roots),
        })
    }

    /// From PEM files; errors name the file.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> CacheResult<PeerIdentity> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| CacheError::Config(format!("cannot read {}: {e}", path.display())))
        };
        PeerIdentity::from_pem(&read(cert)?, &read(key)?, &read(ca)?)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The QUIC server configuration: TLS 1.3, client certificates required.
    pub fn server_config(&self) -> CacheResult<quinn::ServerConfig> {
        let tls = config_error("the peer TLS server");
        let provider = Self::provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| tls(e.to_string()))?;
        let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls(e.to_string()))?;
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(crypto).map_err(|e| tls(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport());
        Ok(config)
    }

    /// The QUIC client configuration: TLS 1.3, presenting this certificate.
    pub fn client_config(&self) -> CacheResult<quinn::ClientConfig> {
        let tls = config_error("the peer TLS client");
        let mut crypto = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls(e.to_string()))?;
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(crypto).map_err(|e| tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport());
        Ok(config)
    }
}

/// The server name peers connect to.
pub fn server_name() -> &'static str {
    CACHE_PEER_SERVER_NAME
}

/// Transport settings shared by both directions; see the module docs.
fn transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(1024))
        .stream_receive_window(VarInt::from_u32(32 << 20))
        .receive_window(VarInt::from_u32(256 << 20))
        .send_window(256 << 20)
        // A peer killed without closing its connection is noticed within the idle timeout.
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .max_idle_timeout(Some(VarInt::from_u32(10_000).into()));
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(65_000);
    transport.mtu_discovery_config(Some(mtu));
    Arc::new(transport)
}
