//! The node's object cache, run inside the agent.
//!
//! What: every node runs one object cache (the `flame-cache` crate) by default, and the
//! simplest way to guarantee that is for the agent to run it. [`EmbeddedCacheArgs`] are the
//! agent's `--cache-*` flags (`--no-cache` turns the cache off); [`EmbeddedCacheArgs::config`]
//! turns them, with the agent's own configuration (node name, control-plane endpoints, work
//! directory), into a [`CacheConfig`]; [`run`] starts the cache, reports its addresses in every
//! RegisterNode ([`AgentConfig::cache`]), hands its Flight URL to instances as
//! `FLAME_CACHE_ENDPOINT`, runs the agent, and stops the cache after the agent has left.
//!
//! Why in the agent's process: one unit to deploy and supervise per node, and the cache's peers
//! learn of it through the same node record that schedules work there. A cache beside the agent
//! (`flame-cache` as its own process) is still possible: give the agent
//! `--cache-flight-endpoint` and `--cache-peer-addr` and it embeds none.
//!
//! Caveats:
//! - Peer TLS defaults to a certificate from the cluster CA (the control plane signs the cache's
//!   request), so the cache reaches its peers once a member answers; `--cache-peer-cert`,
//!   `--cache-peer-key` and `--cache-peer-ca` use files instead.
//! - The Flight face is plaintext `grpc://` unless `--cache-tls-cert` and `--cache-tls-key`
//!   are given; clients and instances then verify it with the agent's `--ca-file`
//!   (`FLAME_CA_FILE`).
//! - The advertised addresses default to the listen addresses with an unspecified IP replaced by
//!   one peers can reach; behind NAT, in compose or in Kubernetes, set `--cache-advertise` (a
//!   Service name keeps refs valid when a node goes) and `--cache-peer-advertise`.

use crate::agent::{AgentError, AgentMetrics};
use crate::config::{AgentConfig, ConfigError};
use flame_cache::config::{CacheConfig, FlightTls, PeerTls, parse_size};
use flame_cache::serve::{CacheListeners, RunningCache, start};
use flame_proto::model::CacheEndpoint;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The agent's flags for its embedded cache.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EmbeddedCacheArgs {
    /// Run no object cache on this node.
    #[arg(long)]
    pub no_cache: bool,
    /// Flight listen address of the node's cache (default 0.0.0.0:9090).
    #[arg(long, env = "FLAME_CACHE_LISTEN")]
    pub cache_listen: Option<SocketAddr>,
    /// Flight URL the cache advertises, e.g. grpc://cache.example:9090 (default: from the
    /// listen address).
    #[arg(long, env = "FLAME_CACHE_ADVERTISE")]
    pub cache_advertise: Option<String>,
    /// QUIC peer listen address (UDP) of the node's cache (default 0.0.0.0:9091).
    #[arg(long, env = "FLAME_CACHE_PEER_LISTEN")]
    pub cache_peer_listen: Option<SocketAddr>,
    /// host:port other caches reach this one at (default: from the peer listen address).
    #[arg(long, env = "FLAME_CACHE_PEER_ADVERTISE")]
    pub cache_peer_advertise: Option<String>,
    /// Storage directory of the cache (default: <work_dir>/cache).
    #[arg(long, env = "FLAME_CACHE_STORAGE")]
    pub cache_storage: Option<PathBuf>,
    /// Memory for resident objects, e.g. 1g (default 1g).
    #[arg(long, value_parser = parse_size)]
    pub cache_max_memory: Option<u64>,
    /// Largest object, e.g. 1g (default 1g).
    #[arg(long, value_parser = parse_size)]
    pub cache_max_object_size: Option<u64>,
    /// Disk quota for object bytes (default: the disk's size).
    #[arg(long, value_parser = parse_size)]
    pub cache_max_disk: Option<u64>,
    /// Copies of each object before a put is acknowledged (default 2).
    #[arg(long)]
    pub cache_replicas: Option<usize>,
    /// Serve the cache's Prometheus /metrics here.
    #[arg(long)]
    pub cache_metrics_addr: Option<SocketAddr>,
    /// The cache's peer certificate (PEM); with --cache-peer-key and --cache-peer-ca.
    #[arg(long, requires_all = ["cache_peer_key", "cache_peer_ca"])]
    pub cache_peer_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    pub cache_peer_key: Option<PathBuf>,
    /// The CA of every peer certificate (PEM).
    #[arg(long)]
    pub cache_peer_ca: Option<PathBuf>,
    /// Serve the cache's Flight face over TLS with this certificate (PEM); with
    /// --cache-tls-key. The cache then advertises grpc+tls://.
    #[arg(long, env = "FLAME_CACHE_TLS_CERT", requires = "cache_tls_key")]
    pub cache_tls_cert: Option<PathBuf>,
    /// The Flight certificate's private key (PEM).
    #[arg(long, env = "FLAME_CACHE_TLS_KEY", requires = "cache_tls_cert")]
    pub cache_tls_key: Option<PathBuf>,
}

impl EmbeddedCacheArgs {
    /// The cache to embed for `agent`, or `None` with `--no-cache` or when the agent reports a
    /// cache running beside it.
    pub fn config(&self, agent: &AgentConfig) -> Result<Option<CacheConfig>, ConfigError> {
        if self.no_cache || agent.cache.is_some() {
            return Ok(None);
        }
        let mut config = CacheConfig::new(agent.node_name.clone());
        if let Some(listen) = self.cache_listen {
            config.flight_addr = listen;
        }
        if let Some(listen) = self.cache_peer_listen {
            config.peer_addr = listen;
        }
        config.advertise = self.cache_advertise.clone();
        config.peer_advertise = self.cache_peer_advertise.clone();
        config.store.dir = Some(
            self.cache_storage
                .clone()
                .unwrap_or_else(|| agent.work_dir.join("cache")),
        );
        if let Some(bytes) = self.cache_max_memory {
            config.store.max_memory_bytes = bytes;
        }
        if let Some(bytes) = self.cache_max_object_size {
            config.max_object_size = bytes;
        }
        config.store.max_disk_bytes = self.cache_max_disk;
        if let Some(replicas) = self.cache_replicas {
            config.replicas = replicas;
        }
        config.metrics_addr = self.cache_metrics_addr;
        config.cluster = agent.endpoints.clone();
        config.tls = PeerTls::choose(
            self.cache_peer_cert.clone(),
            self.cache_peer_key.clone(),
            self.cache_peer_ca.clone(),
            !config.cluster.is_empty(),
        );
        config.flight_tls =
            FlightTls::from_flags(self.cache_tls_cert.clone(), self.cache_tls_key.clone());
        config.validate().map_err(|e| ConfigError::Invalid {
            key: "`cache` (--cache-* flags)".into(),
            message: e.to_string(),
        })?;
        Ok(Some(config))
    }
}

/// Starts the cache of `cache` (if any), records its addresses in `agent`, and returns it.
pub async fn start_embedded(
    agent: &mut AgentConfig,
    cache: Option<CacheConfig>,
) -> Result<Option<RunningCache>, AgentError> {
    let Some(cache) = cache else {
        return Ok(None);
    };
    let listeners = CacheListeners::bind(&cache).await?;
    let running = start(cache, listeners).await?;
    let endpoint = CacheEndpoint {
        flight_endpoint: running.flight_endpoint().to_string(),
        peer_addr: running.peer_addr().to_string(),
    };
    tracing::info!(
        flight = %endpoint.flight_endpoint, peer = %endpoint.peer_addr,
        "the node's object cache is serving"
    );
    agent
        .cache_endpoint
        .get_or_insert_with(|| endpoint.flight_endpoint.clone());
    agent.cache = Some(endpoint);
    Ok(Some(running))
}

/// Runs the agent with its embedded cache until `shutdown` resolves; the cache stops after the
/// agent has left, so instances can read objects until they are stopped.
pub async fn run(
    mut agent: AgentConfig,
    cache: Option<CacheConfig>,
    shutdown: impl Future<Output = ()> + Send,
    metrics: Arc<AgentMetrics>,
) -> Result<(), AgentError> {
    let running = start_embedded(&mut agent, cache).await?;
    let result = crate::agent::run_with_metrics(agent, shutdown, metrics).await;
    if let Some(running) = running {
        running.shutdown().await;
    }
    result
}
