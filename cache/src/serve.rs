//! Running a cache: binding its listeners, starting its parts, stopping them.
//!
//! What: [`start`] opens the store (reloading the storage directory), starts the Flight face,
//! the QUIC peer endpoint (at once with certificate files; once the cluster CA issued a
//! certificate otherwise), the control-plane poller (directory and object drops), the repair
//! loop (every `repair_interval`, and two seconds after the directory changes), the hourly
//! tombstone expiry and the metrics endpoint. It returns a [`RunningCache`] that tells the
//! advertised addresses (which the node agent reports to the control plane) and stops it all.
//! [`serve`] is the same until a shutdown future resolves, for binaries.
//!
//! Why listeners are passed in: tests and the node agent bind port 0 and read the address.
//!
//! Caveat: until its peer endpoint is up, a cache serves only its own objects and takes every
//! write itself (the directory holds only itself too), so a node whose control plane is down
//! at start still serves as a standalone cache.

use crate::config::{CacheConfig, FlightTls, PeerTls, reachable};
use crate::directory::{self, ControlPlane};
use crate::error::{CacheError, CacheResult};
use crate::flight::FlightFace;
use crate::metrics::{self, CacheMetrics};
use crate::node::{CacheNode, NodeSettings, now_ms};
use crate::peer::client::{PeerTuning, Peers};
use crate::peer::tls::PeerIdentity;
use crate::placement::{Directory, Member};
use crate::store::Store;
use arrow_flight::flight_service_server::FlightServiceServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::server::TcpIncoming;
use tracing::{error, info, warn};

/// The sockets a cache serves on.
#[derive(Debug)]
pub struct CacheListeners {
    /// The Flight face (TCP).
    pub flight: TcpListener,
    /// The QUIC peer endpoint (UDP).
    pub peer: std::net::UdpSocket,
    /// `/metrics`, if served.
    pub metrics: Option<TcpListener>,
}

impl CacheListeners {
    /// Binds the addresses of `config`; errors name the address.
    pub async fn bind(config: &CacheConfig) -> CacheResult<CacheListeners> {
        let tcp = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| CacheError::io(format!("binding {addr}"), e))
        };
        let flight = tcp(config.flight_addr).await?;
        let peer = std::net::UdpSocket::bind(config.peer_addr)
            .map_err(|e| CacheError::io(format!("binding UDP {}", config.peer_addr), e))?;
        let metrics = match config.metrics_addr {
            Some(addr) => Some(tcp(addr).await?),
            None => None,
        };
        Ok(CacheListeners {
            flight,
            peer,
            metrics,
        })
    }
}

/// A started cache.
#[derive(Debug)]
pub struct RunningCache {
    node: Arc<CacheNode>,
    flight_endpoint: String,
    peer_addr: String,
    stop: watch::Sender<bool>,
    flight: tokio::task::JoinHandle<()>,
    background: JoinSet<()>,
}

impl RunningCache {
    /// The Flight URL clients and instances are given.
    pub fn flight_endpoint(&self) -> &str {
        &self.flight_endpoint
    }

    /// The `host:port` other caches reach this one at.
    pub fn peer_addr(&self) -> &str {
        &self.peer_addr
    }

    /// The cache node (its store, metrics and operations).
    pub fn node(&self) -> &Arc<CacheNode> {
        &self.node
    }

    /// Stops every part; in-flight Flight calls finish first.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.node.close_peers();
        self.background.shutdown().await;
        let _ = (&mut self.flight).await;
        info!(node = %self.node.directory().me().node, "cache stopped");
    }
}

/// Starts a cache; see the module docs.
pub async fn start(config: CacheConfig, listeners: CacheListeners) -> CacheResult<RunningCache> {
    config.validate()?;
    let store = open_store(&config).await?;
    let flight_local = listeners
        .flight
        .local_addr()
        .map_err(|e| CacheError::io("reading the Flight address", e))?;
    let peer_local = listeners
        .peer
        .local_addr()
        .map_err(|e| CacheError::io("reading the peer address", e))?;
    let me = Member {
        node: config.node.clone(),
        flight_endpoint: config.advertise.clone().unwrap_or_else(|| {
            // upstream's and flamepy's spelling of TLS Flight; package URLs use grpcs://.
            let scheme = match config.flight_tls {
                Some(_) => "grpc+tls",
                None => "grpc",
            };
            format!("{scheme}://{}", reachable(flight_local))
        }),
        peer_addr: config
            .peer_advertise
            .clone()
            .unwrap_or_else(|| reachable(peer_local)),
        ready: true,
    };
    let statics = config.static_peers.iter().map(|p| Member {
        node: p.node.clone(),
        flight_endpoint: p.flight_endpoint.clone(),
        peer_addr: p.peer_addr.clone(),
        ready: true,
    });
    let (directory_tx, directory_rx) =
        watch::channel(Arc::new(Directory::new(me.clone(), statics.collect())));
    let settings = NodeSettings {
        replicas: config.replicas,
        max_object_size: config.max_object_size,
        advertised_endpoint: me.flight_endpoint.clone(),
    };
    let metrics = Arc::new(CacheMetrics::new());
    let node = Arc::new(CacheNode::new(
        store,
        directory_rx,
        settings,
        metrics.clone(),
    ));
    let (stop, stopped) = watch::channel(false);
    let flight = tokio::spawn(serve_flight(
        listeners.flight,
        node.clone(),
        &config,
        stopped.clone(),
    )?);
    let mut background = JoinSet::new();
    start_peers(&config, listeners.peer, &node, &mut background)?;
    if !config.cluster.is_empty() {
        let control = ControlPlane::new(config.cluster.clone());
        background.spawn(directory::poll(
            control,
            node.clone(),
            me.clone(),
            directory_tx,
            config.directory_interval,
        ));
    }
    background.spawn(repair_loop(node.clone(), config.repair_interval));
    background.spawn(expire_loop(node.clone(), config.store.tombstone_ttl_ms));
    if let Some(listener) = listeners.metrics {
        let node = node.clone();
        let mut stopped = stopped.clone();
        background.spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = metrics::serve(listener, node, shutdown).await {
                error!(error = %e, "the cache's metrics endpoint failed");
            }
        });
    }
    info!(node = %me.node, flight = %me.flight_endpoint, peer = %me.peer_addr, "cache started");
    Ok(RunningCache {
        node,
        flight_endpoint: me.flight_endpoint,
        peer_addr: me.peer_addr,
        stop,
        flight,
        background,
    })
}

/// Starts a cache and runs it until `shutdown` resolves.
pub async fn serve(
    config: CacheConfig,
    listeners: CacheListeners,
    shutdown: impl Future<Output = ()>,
) -> CacheResult<()> {
    let running = start(config, listeners).await?;
    shutdown.await;
    running.shutdown().await;
    Ok(())
}

async fn open_store(config: &CacheConfig) -> CacheResult<Arc<Store>> {
    let store_config = config.store.clone();
    let (store, report) = tokio::task::spawn_blocking(move || Store::open(store_config, now_ms()))
        .await
        .map_err(|e| CacheError::Internal(format!("opening the store failed: {e}")))??;
    for (path, why) in &report.quarantined {
        warn!(path = %path.display(), why, "a corrupt cache file was moved to quarantine");
    }
    info!(
        objects = report.objects,
        bytes = report.bytes,
        stale_removed = report.stale_removed,
        durable = store.is_durable(),
        "cache store opened"
    );
    Ok(Arc::new(store))
}

/// The Flight server future.
fn serve_flight(
    listener: TcpListener,
    node: Arc<CacheNode>,
    config: &CacheConfig,
    mut stopped: watch::Receiver<bool>,
) -> CacheResult<impl Future<Output = ()> + Send + 'static> {
    let face = FlightFace::new(node, config.zstd_level)?;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &config.flight_tls {
        server = server
            .tls_config(server_tls(tls)?)
            .map_err(|e| CacheError::Config(format!("the Flight TLS settings: {e}")))?;
    }
    // Room for the largest object in one message, as upstream's cache allows.
    let limit = usize::try_from(config.max_object_size)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    let service = FlightServiceServer::new(face)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    Ok(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let result = server
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20))
            .add_service(service)
            // `Server::tcp_nodelay` only applies to listeners tonic binds itself; without this a
            // get's messages wait about 40 ms each for the client's delayed ACK.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await;
        if let Err(e) = result {
            error!(error = %e, "the cache's Flight server failed");
        }
    })
}

/// The Flight face's TLS identity, read from its files.
fn server_tls(tls: &FlightTls) -> CacheResult<tonic::transport::ServerTlsConfig> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            CacheError::Config(format!(
                "cannot read the Flight TLS {what} {}: {e}",
                path.display()
            ))
        })
    };
    let identity = tonic::transport::Identity::from_pem(
        read(&tls.cert, "certificate")?,
        read(&tls.key, "key")?,
    );
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

/// Starts the peer endpoint now (certificate files) or once the cluster CA issued a
/// certificate; a standalone cache has none.
fn start_peers(
    config: &CacheConfig,
    socket: std::net::UdpSocket,
    node: &Arc<CacheNode>,
    tasks: &mut JoinSet<()>,
) -> CacheResult<()> {
    match &config.tls {
        PeerTls::None => Ok(()),
        PeerTls::Files { cert, key, ca } => {
            let identity = PeerIdentity::from_files(cert, key, ca)?;
            run_peers(socket, &identity, node, tasks)
        }
        PeerTls::Cluster => {
            let (node, mut control, name) = (
                node.clone(),
                ControlPlane::new(config.cluster.clone()),
                config.node.clone(),
            );
            tasks.spawn(async move {
                let started = match directory::issue_identity(&mut control, &name).await {
                    Ok(identity) => {
                        let mut peer_tasks = JoinSet::new();
                        run_peers(socket, &identity, &node, &mut peer_tasks).map(|()| peer_tasks)
                    }
                    Err(e) => Err(e),
                };
                match started {
                    Ok(mut peer_tasks) => while peer_tasks.join_next().await.is_some() {},
                    Err(e) => error!(error = %e, "the cache's peer endpoint cannot start; it serves only its own objects"),
                }
            });
            Ok(())
        }
    }
}

fn run_peers(
    socket: std::net::UdpSocket,
    identity: &PeerIdentity,
    node: &Arc<CacheNode>,
    tasks: &mut JoinSet<()>,
) -> CacheResult<()> {
    let endpoint = crate::peer::endpoint(socket, identity)?;
    node.set_peers(Peers::new(endpoint.clone(), PeerTuning::default()));
    tasks.spawn(crate::peer::server::serve(endpoint, node.clone()));
    info!("cache peer endpoint started");
    Ok(())
}

/// Repairs every `interval`, and two seconds after each directory change.
async fn repair_loop(node: Arc<CacheNode>, interval: Duration) {
    let mut changes = node.watch_directory();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(interval).await;
                } else {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        node.repair().await;
    }
}

/// Expires old tombstones every hour.
async fn expire_loop(node: Arc<CacheNode>, ttl_ms: i64) {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        if let Err(e) = node.store().expire_tombstones(now_ms() - ttl_ms) {
            warn!(error = %e, "cannot expire old tombstones");
        }
    }
}
