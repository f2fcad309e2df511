//! Prometheus metrics of a cache, served on `/metrics`.
//!
//! Counters: client gets that found the object on this node (hits) or had to fetch it from a
//! peer (misses), objects and bytes put and served, peer fetches and their bytes, replica
//! writes, evictions from memory, reloads from disk, and errors answered to clients. Gauges,
//! read at each scrape: objects held, objects and bytes resident in memory, bytes on disk,
//! tombstones, and the peers this cache can reach (other caches in its view, 0 until its QUIC
//! endpoint is up).
//!
//! Caveat: hits and misses count gets by clients of this cache, not peer reads.

use crate::node::CacheNode;
use crate::store::Store;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Every metric of a cache.
#[derive(Debug)]
pub struct CacheMetrics {
    registry: Registry,
    /// Gets served from this node's own copy.
    pub hits: Counter,
    /// Gets that fetched the object from a peer.
    pub misses: Counter,
    /// Bytes received from clients in puts and patches.
    pub bytes_in: Counter,
    /// Bytes sent to clients in gets.
    pub bytes_out: Counter,
    /// Records fetched from peers.
    pub peer_fetches: Counter,
    /// Bytes fetched from peers.
    pub peer_fetch_bytes: Counter,
    /// Copies written to other caches (replication and repair).
    pub replica_writes: Counter,
    /// Requests answered to clients with an error.
    pub errors: Counter,
    evictions: Counter,
    disk_loads: Counter,
    objects: Gauge,
    resident_objects: Gauge,
    resident_bytes: Gauge,
    disk_bytes: Gauge,
    tombstones: Gauge,
    peers: Gauge,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        CacheMetrics::new()
    }
}

impl CacheMetrics {
    /// Registers every metric under the `flame_cache_` prefix.
    pub fn new() -> CacheMetrics {
        let mut registry = Registry::with_prefix("flame_cache");
        let metrics = CacheMetrics {
            registry: Registry::default(),
            hits: Counter::default(),
            misses: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            peer_fetches: Counter::default(),
            peer_fetch_bytes: Counter::default(),
            replica_writes: Counter::default(),
            errors: Counter::default(),
            evictions: Counter::default(),
            disk_loads: Counter::default(),
            objects: Gauge::default(),
            resident_objects: Gauge::default(),
            resident_bytes: Gauge::default(),
            disk_bytes: Gauge::default(),
            tombstones: Gauge::default(),
            peers: Gauge::default(),
        };
        let counters: [(&str, &str, &Counter); 10] = [
            (
                "hits",
                "Client gets served from this node's own copy",
                &metrics.hits,
            ),
            (
                "misses",
                "Client gets that fetched the object from a peer",
                &metrics.misses,
            ),
            (
                "bytes_in",
                "Bytes received from clients in puts and patches",
                &metrics.bytes_in,
            ),
            (
                "bytes_out",
                "Bytes sent to clients in gets",
                &metrics.bytes_out,
            ),
            (
                "peer_fetches",
                "Records fetched from peer caches",
                &metrics.peer_fetches,
            ),
            (
                "peer_fetch_bytes",
                "Bytes fetched from peer caches",
                &metrics.peer_fetch_bytes,
            ),
            (
                "replica_writes",
                "Object copies written to peer caches",
                &metrics.replica_writes,
            ),
            (
                "errors",
                "Client requests answered with an error",
                &metrics.errors,
            ),
            (
                "evictions",
                "Objects dropped from memory by LRU eviction",
                &metrics.evictions,
            ),
            (
                "disk_loads",
                "Objects read back into memory from the storage directory",
                &metrics.disk_loads,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let gauges: [(&str, &str, &Gauge); 6] = [
            ("objects", "Objects held by this cache", &metrics.objects),
            (
                "resident_objects",
                "Objects resident in memory",
                &metrics.resident_objects,
            ),
            (
                "resident_bytes",
                "Bytes resident in memory",
                &metrics.resident_bytes,
            ),
            ("disk_bytes", "Object bytes on disk", &metrics.disk_bytes),
            ("tombstones", "Delete tombstones held", &metrics.tombstones),
            (
                "peers",
                "Other caches this cache can reach (0 until its QUIC endpoint is up)",
                &metrics.peers,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        CacheMetrics {
            registry,
            ..metrics
        }
    }

    /// The text exposition, with the store's gauges and the count of reachable `peers` read
    /// now.
    pub fn render(&self, store: &Store, peers: usize) -> String {
        let stats = store.stats();
        let gauge = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.objects, stats.objects);
        gauge(&self.resident_objects, stats.resident_objects);
        gauge(&self.resident_bytes, stats.resident_bytes);
        gauge(&self.disk_bytes, stats.disk_bytes);
        gauge(&self.tombstones, stats.tombstones);
        gauge(&self.peers, peers as u64);
        self.evictions
            .inner()
            .store(stats.evictions, std::sync::atomic::Ordering::Relaxed);
        self.disk_loads
            .inner()
            .store(stats.disk_loads, std::sync::atomic::Ordering::Relaxed);
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<CacheNode>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = node.metrics().render(node.store(), node.reachable_peers());
            async move { text }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
