//! In-process clusters of caches for the integration tests: N caches on 127.0.0.1 with static
//! peers and certificates from a test CA, each with its own storage directory.

#![allow(dead_code)]

use flame_cache::CacheClient;
use flame_cache::ca::{self, CaPem};
use flame_cache::config::{CacheConfig, PeerTls, StaticPeer};
use flame_cache::serve::{CacheListeners, RunningCache, start};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One cache's fixed addresses and files.
pub struct Slot {
    pub node: String,
    pub flight: SocketAddr,
    pub peer: SocketAddr,
    pub storage: PathBuf,
    pub running: Option<RunningCache>,
}

/// A cluster of caches that know each other statically.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ca: CaPem,
    pub slots: Vec<Slot>,
    pub replicas: usize,
    pub max_memory: u64,
}

fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Cluster {
    /// `n` caches named `c0`, `c1`, ... (not started).
    pub fn new(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca::generate_ca(std::time::SystemTime::now()).unwrap();
        let slots = (0..n)
            .map(|i| Slot {
                node: format!("c{i}"),
                flight: free_tcp(),
                peer: free_udp(),
                storage: dir.path().join(format!("c{i}")),
                running: None,
            })
            .collect();
        Cluster {
            dir,
            ca,
            slots,
            replicas: 2,
            max_memory: 1 << 30,
        }
    }

    /// Writes the certificate files of `node` signed by `ca`; returns the TLS setting.
    pub fn certs(dir: &Path, ca: &CaPem, node: &str) -> PeerTls {
        let (cert, key) = ca::issue_identity(ca, node).unwrap();
        let paths = [
            dir.join(format!("{node}.pem")),
            dir.join(format!("{node}.key")),
            dir.join(format!("{node}-ca.pem")),
        ];
        std::fs::write(&paths[0], cert).unwrap();
        std::fs::write(&paths[1], key).unwrap();
        std::fs::write(&paths[2], &ca.cert_pem).unwrap();
        let [cert, key, ca] = paths;
        PeerTls::Files { cert, key, ca }
    }

    /// The configuration of cache `i`.
    pub fn config(&self, i: usize) -> CacheConfig {
        let slot = &self.slots[i];
        let mut config = CacheConfig::new(slot.node.clone());
        config.flight_addr = slot.flight;
        config.peer_addr = slot.peer;
        config.store.dir = Some(slot.storage.clone());
        config.store.max_memory_bytes = self.max_memory;
        config.replicas = self.replicas;
        config.repair_interval = Duration::from_secs(3600);
        config.static_peers = self
            .slots
            .iter()
            .filter(|s| s.node != slot.node)
            .map(|s| StaticPeer {
                node: s.node.clone(),
                peer_addr: s.peer.to_string(),
                flight_endpoint: format!("grpc://{}", s.flight),
            })
            .collect();
        config.tls = Self::certs(self.dir.path(), &self.ca, &slot.node);
        config
    }

    /// Starts cache `i` with `config`.
    pub async fn start_with(&mut self, i: usize, config: CacheConfig) {
        // A stopped cache's sockets close as its last tasks end, a moment after shutdown
        // returns; a restart on the same ports waits for that, with a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let listeners = loop {
            match CacheListeners::bind(&config).await {
                Ok(listeners) => break listeners,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("rebinding cache {i}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("binding cache {i}: {e}"),
            }
        };
        self.slots[i].running = Some(start(config, listeners).await.unwrap());
    }

    /// Starts cache `i`.
    pub async fn start(&mut self, i: usize) {
        let config = self.config(i);
        self.start_with(i, config).await;
    }

    /// Starts every cache.
    pub async fn start_all(&mut self) {
        for i in 0..self.slots.len() {
            self.start(i).await;
        }
    }

    /// Stops cache `i`.
    pub async fn stop(&mut self, i: usize) {
        if let Some(running) = self.slots[i].running.take() {
            running.shutdown().await;
        }
    }

    /// The running cache `i`.
    pub fn running(&self, i: usize) -> &RunningCache {
        self.slots[i].running.as_ref().unwrap()
    }

    /// A Flight client of cache `i`.
    pub async fn client(&self, i: usize) -> CacheClient {
        CacheClient::connect(&format!("grpc://{}", self.slots[i].flight))
            .await
            .unwrap()
    }

    /// Which caches hold `key` in their own store.
    pub fn holders(&self, key: &str) -> Vec<usize> {
        let key = flame_cache::ObjectKey::parse(key).unwrap();
        (0..self.slots.len())
            .filter(|i| {
                self.slots[*i]
                    .running
                    .as_ref()
                    .is_some_and(|r| r.node().store().meta(&key).is_some())
            })
            .collect()
    }
}

/// Polls `check` until it returns `Some`, failing after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
