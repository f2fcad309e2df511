//! The cache's configuration, and its command-line form for `flame-cache`.
//!
//! What: [`CacheConfig`] is everything one cache needs: its node name, where the Flight face
//! and the QUIC peer endpoint listen and what they advertise, the store's limits, the replica
//! count, where the cluster is (control-plane endpoints, a static peer list, or nothing for a
//! standalone cache), and where peer certificates come from. [`CacheArgs`] is the clap form;
//! the node agent builds a `CacheConfig` from its own flags and file.
//!
//! Defaults follow upstream's `cache` section where it has one (port 9090, `lru` with 1 GiB of
//! memory and no object limit) and add Flame's: the peer port 9091, 2 replicas, a 1 GiB object
//! limit, ZSTD level 1 for get responses.
//!
//! Caveats:
//! - Listening on `0.0.0.0` advertises the host name (a compose service or a Kubernetes pod
//!   resolves it); set `advertise` to a stable service name so `ObjectRef`s outlive a node.
//! - Without a storage directory, objects live in memory only and eviction loses them on this
//!   node (another replica may still hold them).

use crate::error::{CacheError, CacheResult};
use crate::store::StoreConfig;
use flame_proto::model::parse_memory;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where peer certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTls {
    /// PEM files managed by the operator.
    Files {
        /// This cache's certificate (chain).
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
        /// The CA every peer's certificate chains to.
        ca: PathBuf,
    },
    /// Issued by the control plane's cluster CA (needs `cluster`).
    Cluster,
    /// No peer endpoint: a standalone cache.
    None,
}

impl PeerTls {
    /// The certificates a set of settings asks for: the files when all three are given, else
    /// the cluster CA when a control plane is configured, else none.
    pub fn choose(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
        has_cluster: bool,
    ) -> PeerTls {
        match (cert, key, ca) {
            (Some(cert), Some(key), Some(ca)) => PeerTls::Files { cert, key, ca },
            _ if has_cluster => PeerTls::Cluster,
            _ => PeerTls::None,
        }
    }
}

/// Server TLS of the Flight face (spec `cache.tls.cert_file` / `key_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlightTls {
    /// The server certificate chain (PEM); its names must cover the advertised host.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl FlightTls {
    /// Issues a Flight server certificate for `hosts` signed by `ca` and writes it to
    /// `<dir>/<name>.pem` and `<dir>/<name>.key`: for `flame-cache certs` and tests.
    pub fn write_issued(
        ca: &crate::ca::CaPem,
        hosts: &[&str],
        dir: &Path,
        name: &str,
    ) -> CacheResult<FlightTls> {
        let (cert, key) = crate::ca::issue_server_identity(ca, hosts)?;
        let tls = FlightTls {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        for (path, text) in [(&tls.cert, cert), (&tls.key, key)] {
            std::fs::write(path, text)
                .map_err(|e| CacheError::io(format!("writing {}", path.display()), e))?;
        }
        Ok(tls)
    }

    /// TLS when both files are given (clap makes each flag require the other).
    pub fn from_flags(cert: Option<PathBuf>, key: Option<PathBuf>) -> Option<FlightTls> {
        Some(FlightTls {
            cert: cert?,
            key: key?,
        })
    }
}

/// One peer of a statically configured cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPeer {
    /// Its node name.
    pub node: String,
    /// Its QUIC address, `host:port`.
    pub peer_addr: String,
    /// Its Flight URL.
    pub flight_endpoint: String,
}

/// Everything one cache needs. See the module docs.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The node this cache serves: its identity in placement and in its certificate.
    pub node: String,
    /// Where the Flight face listens.
    pub flight_addr: SocketAddr,
    /// The Flight URL clients are given; derived from `flight_addr` when `None`.
    pub advertise: Option<String>,
    /// Where the QUIC peer endpoint listens (UDP).
    pub peer_addr: SocketAddr,
    /// The `host:port` other caches use; derived from `peer_addr` when `None`.
    pub peer_advertise: Option<String>,
    /// The store's settings.
    pub store: StoreConfig,
    /// Largest object, in bytes.
    pub max_object_size: u64,
    /// Copies of each object before a put is acknowledged.
    pub replicas: usize,
    /// Control-plane client-API URLs; empty without a control plane.
    pub cluster: Vec<String>,
    /// Peers when there is no control plane.
    pub static_peers: Vec<StaticPeer>,
    /// Where peer certificates come from.
    pub tls: PeerTls,
    /// TLS of the Flight face; `None` serves plaintext `grpc://`.
    pub flight_tls: Option<FlightTls>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// ZSTD level of get responses (1 is fastest).
    pub zstd_level: i32,
    /// Time between repair passes.
    pub repair_interval: Duration,
    /// Time between polls of the control plane's cache directory.
    pub directory_interval: Duration,
}

/// The default Flight port (upstream's).
pub const DEFAULT_FLIGHT_PORT: u16 = 9090;
/// The default QUIC peer port.
pub const DEFAULT_PEER_PORT: u16 = 9091;

impl CacheConfig {
    /// A standalone cache for `node` with every default.
    pub fn new(node: impl Into<String>) -> CacheConfig {
        CacheConfig {
            node: node.into(),
            flight_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_FLIGHT_PORT)),
            advertise: None,
            peer_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PEER_PORT)),
            peer_advertise: None,
            store: StoreConfig::default(),
            max_object_size: 1 << 30,
            replicas: 2,
            cluster: Vec::new(),
            static_peers: Vec::new(),
            tls: PeerTls::None,
            flight_tls: None,
            metrics_addr: None,
            zstd_level: 1,
            repair_interval: Duration::from_secs(30),
            directory_interval: Duration::from_secs(1),
        }
    }

    /// Checks the combination of settings; errors name the setting.
    pub fn validate(&self) -> CacheResult<()> {
        let bad = |m: String| Err(CacheError::Config(m));
        if self.node.is_empty() {
            return bad("node must not be empty".into());
        }
        if self.replicas == 0 {
            return bad("replicas must be at least 1".into());
        }
        if self.max_object_size == 0 {
            return bad("max_object_size must be above 0".into());
        }
        if self.store.dir.is_none() && self.max_object_size > self.store.max_memory_bytes {
            return bad(format!(
                "without a storage directory an object must fit in memory: max_object_size {} exceeds max_memory {}",
                self.max_object_size, self.store.max_memory_bytes
            ));
        }
        if self.tls == PeerTls::Cluster && self.cluster.is_empty() {
            return bad(
                "certificates from the cluster CA need control-plane endpoints (cluster)".into(),
            );
        }
        if !self.static_peers.is_empty() && !self.cluster.is_empty() {
            return bad("give either control-plane endpoints or static peers, not both".into());
        }
        if (!self.static_peers.is_empty() || !self.cluster.is_empty()) && self.tls == PeerTls::None
        {
            return bad(
                "a cache with peers needs peer certificates (files, or the cluster CA)".into(),
            );
        }
        if let Some(advertise) = &self.advertise
            && crate::client::grpc_url(advertise).is_ok_and(|(_, tls)| tls)
                != self.flight_tls.is_some()
        {
            return bad(format!(
                "advertise {advertise:?} must use grpc+tls:// (or grpcs://) exactly when the Flight face serves TLS (tls_cert)"
            ));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad(format!("zstd_level {} is outside 1..=22", self.zstd_level));
        }
        Ok(())
    }
}

/// The host name of this machine, for defaults.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The `host:port` others reach `addr` at: the host name when `addr` is unspecified.
pub fn reachable(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("{}:{}", hostname(), addr.port())
    } else {
        addr.to_string()
    }
}

/// Parses a size such as `1g`, `512Mi` or `1048576`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_memory(text).map_err(|e| e.to_string())
}

/// Parses a static peer, `node=host:port@grpc://host:port`.
pub fn parse_static_peer(text: &str) -> Result<StaticPeer, String> {
    let (node, rest) = text
        .split_once('=')
        .ok_or("expected node=host:port@grpc://host:port")?;
    let (peer_addr, flight_endpoint) = rest
        .split_once('@')
        .ok_or("expected node=host:port@grpc://host:port")?;
    if node.is_empty() || peer_addr.is_empty() || crate::client::grpc_url(flight_endpoint).is_err()
    {
        return Err(format!(
            "{text:?}: expected node=host:port@grpc://host:port"
        ));
    }
    Ok(StaticPeer {
        node: node.into(),
        peer_addr: peer_addr.into(),
        flight_endpoint: flight_endpoint.into(),
    })
}

/// `flame-cache`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// Node name: this cache's identity among its peers (default: the host name).
    #[arg(long, env = "FLAME_CACHE_NODE")]
    pub node: Option<String>,
    /// Flight listen address.
    #[arg(long, default_value = "0.0.0.0:9090", env = "FLAME_CACHE_LISTEN")]
    pub listen: SocketAddr,
    /// Flight URL given to clients, e.g. grpc://cache.example:9090, or grpc+tls://… with
    /// --tls-cert (default: from --listen).
    #[arg(long, env = "FLAME_CACHE_ADVERTISE")]
    pub advertise: Option<String>,
    /// QUIC peer listen address (UDP).
    #[arg(long, default_value = "0.0.0.0:9091", env = "FLAME_CACHE_PEER_LISTEN")]
    pub peer_listen: SocketAddr,
    /// host:port other caches reach this one at (default: from --peer-listen).
    #[arg(long, env = "FLAME_CACHE_PEER_ADVERTISE")]
    pub peer_advertise: Option<String>,
    /// Storage directory; objects survive restarts there (default: memory only).
    #[arg(long, env = "FLAME_CACHE_STORAGE")]
    pub storage: Option<PathBuf>,
    /// Memory for resident objects, e.g. 1g.
    #[arg(long, default_value = "1g", value_parser = parse_size)]
    pub max_memory: u64,
    /// Most resident objects (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_objects: usize,
    /// Disk quota for object bytes (default: the disk's size).
    #[arg(long, value_parser = parse_size)]
    pub max_disk: Option<u64>,
    /// Largest object, e.g. 1g.
    #[arg(long, default_value = "1g", value_parser = parse_size)]
    pub max_object_size: u64,
    /// fsync every record before it is renamed into place.
    #[arg(long)]
    pub fsync: bool,
    /// Copies of each object before a put is acknowledged.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Control-plane endpoints (comma-separated), for the directory and the cluster CA.
    #[arg(long, env = "FLAME_ENDPOINT", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// Static peers instead of a control plane: node=host:port@grpc://host:port, repeatable.
    #[arg(long = "peer", value_parser = parse_static_peer)]
    pub peers: Vec<StaticPeer>,
    /// This cache's peer certificate (PEM); with --peer-key and --peer-ca.
    #[arg(long, requires_all = ["peer_key", "peer_ca"])]
    pub peer_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    pub peer_key: Option<PathBuf>,
    /// The CA of every peer certificate (PEM).
    #[arg(long)]
    pub peer_ca: Option<PathBuf>,
    /// Serve the Flight face over TLS with this certificate (PEM); with --tls-key. Clients
    /// then use grpcs:// or grpc+tls:// and a CA file (FLAME_CA_FILE).
    #[arg(long, env = "FLAME_CACHE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The Flight certificate's private key (PEM).
    #[arg(long, env = "FLAME_CACHE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve Prometheus /metrics here.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// ZSTD level of get responses.
    #[arg(long, default_value_t = 1)]
    pub zstd_level: i32,
}

impl CacheArgs {
    /// The configuration these flags describe, checked.
    pub fn into_config(self) -> CacheResult<CacheConfig> {
        let mut config = CacheConfig::new(self.node.unwrap_or_else(hostname));
        config.flight_addr = self.listen;
        config.advertise = self.advertise;
        config.peer_addr = self.peer_listen;
        config.peer_advertise = self.peer_advertise;
        config.store.dir = self.storage;
        config.store.max_memory_bytes = self.max_memory;
        config.store.max_objects = self.max_objects;
        config.store.max_disk_bytes = self.max_disk;
        config.store.fsync = self.fsync;
        config.max_object_size = self.max_object_size;
        config.replicas = self.replicas;
        config.cluster = self.cluster.into_iter().filter(|e| !e.is_empty()).collect();
        config.static_peers = self.peers;
        config.tls = PeerTls::choose(
            self.peer_cert,
            self.peer_key,
            self.peer_ca,
            !config.cluster.is_empty(),
        );
        config.flight_tls = FlightTls::from_flags(self.tls_cert, self.tls_key);
        config.metrics_addr = self.metrics_addr;
        config.zstd_level = self.zstd_level;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_peer_names_its_node_peer_address_and_flight_url() {
        let p = parse_static_peer("n2=10.0.0.2:9091@grpc://10.0.0.2:9090").unwrap();
        assert_eq!(
            (
                p.node.as_str(),
                p.peer_addr.as_str(),
                p.flight_endpoint.as_str()
            ),
            ("n2", "10.0.0.2:9091", "grpc://10.0.0.2:9090")
        );
        assert!(parse_static_peer("n2=10.0.0.2:9091").is_err());
    }

    #[test]
    fn contradictory_settings_are_refused_with_the_setting_named() {
        let mut c = CacheConfig::new("n1");
        c.validate().unwrap();
        c.replicas = 0;
        assert!(c.validate().unwrap_err().to_string().contains("replicas"));
        let mut c = CacheConfig::new("n1");
        c.cluster = vec!["http://cp:8080".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("certificates")
        );
        c.tls = PeerTls::Cluster;
        c.validate().unwrap();
        let mut c = CacheConfig::new("n1");
        c.max_object_size = 2 << 30;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("fit in memory")
        );
    }
}
