//! The composition root of a member: storage, Raft, the peer listener and the client listener.
//!
//! [`serve`] is what the `flame-control-plane` binary calls (and what tests call with port-0
//! listeners and a shutdown future). It opens raftlog's stores in the data directory, starts
//! openraft with the tonic transport, mounts `flame.raft.v1` on the peer listener and the client
//! services on the API listener (Frontend, Tasks, Cluster and the node agents' `NodeAgent`),
//! forms the group on first start, runs the leader's duties and its scheduling loop (all in
//! [`crate::member`]), and shuts everything down when `shutdown` resolves.
//!
//! Why apart: this is the only module that depends on every service; the services depend on
//! the member's core, never on the wiring.
//!
//! Caveat: TLS is not served yet; `cluster.tls` is parsed and ignored.

use crate::config::Config;
use crate::member::handle::{ForwardReply, ForwardRequest, MemberHandle};
use crate::member::limits::Limits;
use crate::member::proposer::{Proposer, ProposerLimits};
use crate::member::{admin, bootstrap, leader, scheduling};
use crate::metrics::{GrpcMetricsLayer, Metrics};
use crate::raft::{Network, RaftService, TransportConfig};
use crate::scheduler::SchedulerConfig;
use crate::state::{FlameApp, FlameTypeConfig, StateConfig};
use openraft::Raft;
use raftlog::{LogPolicy, LogStore, StateMachineStore, Storage};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tracing::{Instrument, error, info, info_span};

/// Why a member could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Which listener.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] raftlog::Error),
    /// The Raft or transport configuration is invalid.
    #[error("raft configuration: {0}")]
    Config(String),
    /// openraft failed.
    #[error("raft: {0}")]
    Raft(String),
    /// The Raft core stopped while the member ran, for the reason given (typically its
    /// storage failed: a full disk, an I/O error); restart the member once that is fixed.
    #[error("the Raft core stopped: {0}")]
    Fatal(String),
    /// A server failed.
    #[error("server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// The listeners of a member.
pub struct Listeners {
    /// Client API: Frontend, Cluster, Tasks.
    pub api: TcpListener,
    /// Raft peer traffic.
    pub raft: TcpListener,
    /// Prometheus `/metrics`, when configured.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
        let bind = |addr: String, what: &'static str| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|source| ServeError::Bind { addr, what, source })
        };
        let metrics = match &config.raft.metrics_addr {
            Some(addr) => Some(bind(addr.clone(), "metrics").await?),
            None => None,
        };
        Ok(Listeners {
            api: bind(config.raft.api_addr.clone(), "client API").await?,
            raft: bind(config.raft.raft_addr.clone(), "Raft peers").await?,
            metrics,
        })
    }

    /// The bound addresses (api, raft).
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.api.local_addr()?, self.raft.local_addr()?))
    }
}

/// The transport settings of a configuration.
pub fn transport_config(config: &Config) -> TransportConfig {
    TransportConfig {
        heartbeat_ms: config.raft.heartbeat_ms,
        election_timeout_min_ms: config.raft.election_timeout_min_ms,
        election_timeout_max_ms: config.raft.election_timeout_max_ms,
        max_message_bytes: config.raft.max_message_bytes,
        ..TransportConfig::default()
    }
}

/// The log policy of a configuration.
pub fn log_policy(config: &Config) -> LogPolicy {
    LogPolicy {
        snapshot_every: config.raft.snapshot_every,
        keep_after_snapshot: config.raft.keep_after_snapshot,
        ..LogPolicy::default()
    }
}

/// Runs a member until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let span = info_span!("member", id = config.raft.id);
    run(config, listeners, shutdown).instrument(span).await
}

async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (handle, transport) = start_member(&config).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let peer_task = tokio::spawn(peer_server(&handle, &transport, listeners.raft, &stop_rx));
    let api_task = tokio::spawn(api_server(&handle, &config, listeners.api, &stop_rx));
    if let Some(listener) = listeners.metrics {
        let metrics = handle.metrics.clone();
        tokio::spawn(crate::metrics::serve(metrics, listener, stopped(&stop_rx)));
    }
    let mut raft_watch = tokio::spawn(watch_raft_metrics(
        handle.raft.clone(),
        handle.metrics.clone(),
    ));
    tokio::spawn(bootstrap::form_group(handle.clone(), config.clone()));
    let duties = tokio::spawn(leader::run(handle.clone(), config.clone(), stop_rx.clone()));
    let scheduling = tokio::spawn(scheduling::run(handle.clone(), config.clone(), stop_rx));
    info!(cluster = %config.cluster_id(), "member started");
    // A member whose Raft core stopped by itself (its storage failed) must not linger as a
    // zombie that still answers clients: it stops, and the binary exits non-zero so a
    // supervisor restarts it.
    let failure = tokio::select! {
        () = shutdown => None,
        stopped = &mut raft_watch => Some(stopped.unwrap_or_else(|e| e.to_string())),
    };
    match &failure {
        Some(why) => error!(error = %why, "the Raft core stopped; shutting down"),
        None => info!("shutting down"),
    }
    let _ = stop_tx.send(true);
    // A duty or scheduling cycle caught in a write that cannot commit (the other members
    // stopped first, as they do under `flmctl local up`) would wait for a quorum forever; both
    // are idempotent and redone by the next leader, so they are cut off. Graceful shutdown
    // waits for clients to close their connections; a client that never does must not keep
    // the member from stopping. The four drain together, so stopping takes one timeout at most.
    let (_, _, api, peer) = tokio::join!(
        drain(duties, "leader duties"),
        drain(scheduling, "scheduling"),
        drain(api_task, "client API"),
        drain(peer_task, "Raft peer"),
    );
    let (api, peer) = (api.unwrap_or(Ok(())), peer.unwrap_or(Ok(())));
    let stopped = handle.raft.shutdown().await;
    if let Some(why) = failure {
        return Err(ServeError::Fatal(why));
    }
    stopped.map_err(|e| ServeError::Raft(e.to_string()))?;
    api.map_err(ServeError::from)?;
    peer.map_err(ServeError::from)?;
    info!("stopped");
    Ok(())
}

/// Opens the member's storage and starts Raft, the proposer and the handle every service
/// shares; also returns the transport settings the peer server uses.
async fn start_member(config: &Config) -> Result<(MemberHandle, TransportConfig), ServeError> {
    let id = config.raft.id;
    let cluster_id = config.cluster_id().to_owned();
    let storage = Storage::new(&config.raft.data_dir, cluster_id.as_str());
    let log = LogStore::open_in(&storage)?;
    let metrics = Arc::new(Metrics::new());
    let apply_metrics = metrics.clone();
    // The retry limits and caps travel on every entry this member proposes while it leads (R2).
    let policy = StateConfig {
        bind_retry_limit: config.cluster.recovery.session.retry_limits,
        task_retry_limit: config.cluster.recovery.task.retry_limits,
        max_open_sessions: config.cluster.limits.max_open_sessions,
        max_tasks_per_session: config.cluster.limits.max_tasks_per_session,
    };
    let app = FlameApp::new().with_apply_observer(Box::new(move |d| {
        apply_metrics.apply_seconds.observe(d.as_secs_f64())
    }));
    let reader = app.reader();
    let sm = StateMachineStore::open(&storage, app)?;
    let digest = sm.digest_handle();
    let transport = transport_config(config);
    let raft_config = transport
        .openraft_config(&cluster_id, &log_policy(config))
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let network = Network::new(id, cluster_id, transport.clone());
    let raft = Raft::<FlameTypeConfig>::new(id, Arc::new(raft_config), network.clone(), log, sm)
        .await
        .map_err(|e| ServeError::Raft(e.to_string()))?;
    let handle = MemberHandle {
        id,
        raft: raft.clone(),
        reader,
        proposer: Proposer::spawn(
            raft,
            ProposerLimits::for_messages(transport.max_message_bytes),
            policy,
            metrics.clone(),
        ),
        network,
        metrics,
        digest,
        limits: Arc::new(Limits {
            max_payload_bytes: config.cluster.limits.max_payload_bytes,
            max_watches: config.cluster.limits.max_watches,
            default_resreq: config.default_resreq(),
            dispatch: config.cluster.dispatch.policy(),
        }),
    };
    Ok((handle, transport))
}

/// Resolves once the member is told to stop.
fn stopped(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The peer server: `flame.raft.v1`, with writes forwarded by followers served by `handle`.
fn peer_server(
    handle: &MemberHandle,
    transport: &TransportConfig,
    listener: TcpListener,
    stop: &watch::Receiver<bool>,
) -> impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static {
    let forward_handle = handle.clone();
    let cluster_id = handle.network.cluster_id().to_owned();
    let service = RaftService::new(handle.raft.clone(), cluster_id, transport)
        .with_forward(Arc::new(move |_from: u64, bytes: Vec<u8>| {
            let h = forward_handle.clone();
            async move { serve_forward(&h, &bytes).await }
        }))
        .into_server();
    transport
        .server_builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming(listener), stopped(stop))
}

/// The client API server: Cluster (admin), Frontend, Tasks and the agents' NodeAgent.
fn api_server(
    handle: &MemberHandle,
    config: &Config,
    listener: TcpListener,
    stop: &watch::Receiver<bool>,
) -> impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static {
    let scheduler = SchedulerConfig::from_config(config);
    // Bounds on what one client connection can hold (review D4): tonic leaves HTTP/2 streams
    // per connection unlimited otherwise, and without keepalives a half-open connection keeps
    // its watches and streams forever.
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(API_MAX_STREAMS))
        .concurrency_limit_per_connection(API_MAX_STREAMS as usize)
        .http2_keepalive_interval(Some(API_KEEPALIVE))
        .http2_keepalive_timeout(Some(API_KEEPALIVE))
        .tcp_keepalive(Some(API_KEEPALIVE))
        .layer(GrpcMetricsLayer(handle.metrics.clone()))
        .add_service(admin::server(
            handle.clone(),
            config.cluster.name.clone(),
            scheduler,
        ))
        .add_service(crate::frontend::frontend_server(
            handle.clone(),
            stop.clone(),
        ))
        .add_service(crate::frontend::tasks_server(handle.clone()))
        .add_service(crate::agents::agent_server(
            handle.clone(),
            config,
            stop.clone(),
        ))
        .serve_with_incoming_shutdown(incoming(listener), stopped(stop))
}

/// Most concurrent HTTP/2 streams (calls, watches, listings) on one client connection.
const API_MAX_STREAMS: u32 = 1024;

/// Keepalive interval (HTTP/2 pings and TCP) on client connections; a peer that does not answer
/// a ping within the same time is dropped with everything it held.
const API_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(20);

/// How long a task may take to finish after shutdown begins.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for `task` to finish after shutdown began, aborting it after [`DRAIN_TIMEOUT`];
/// `None` when it was aborted or had panicked (both logged).
async fn drain<T>(mut task: JoinHandle<T>, what: &str) -> Option<T> {
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut task).await {
        Ok(Ok(result)) => Some(result),
        Ok(Err(e)) => {
            tracing::error!(task = what, error = %e, "task failed during shutdown");
            None
        }
        Err(_) => {
            tracing::warn!(task = what, "still busy after shutdown began; cut off");
            task.abort();
            None
        }
    }
}

/// Connections accepted on `listener` with Nagle's algorithm off. `Server::tcp_nodelay` does not
/// apply to streams handed to `serve_with_incoming*`, and with Nagle on, small replies wait for
/// the peer's delayed ACK (about 40 ms per round trip on Linux).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Keeps the Raft gauges in step with openraft's metrics until the Raft core stops, and says
/// why it stopped (a storage error, a panic, or a shutdown).
async fn watch_raft_metrics(raft: Raft<FlameTypeConfig>, metrics: Arc<Metrics>) -> String {
    let mut rx = raft.metrics();
    loop {
        {
            let current = rx.borrow_and_update();
            metrics.observe_raft(&current);
            if let Err(fatal) = &current.running_state {
                return fatal.to_string();
            }
        }
        if rx.changed().await.is_err() {
            return "the Raft core ended".into();
        }
    }
}

async fn serve_forward(handle: &MemberHandle, bytes: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let request: ForwardRequest = postcard::from_bytes(bytes)
        .map_err(|e| tonic::Status::invalid_argument(format!("cannot decode a forward: {e}")))?;
    let reply: ForwardReply = handle.serve_forward(request).await?;
    postcard::to_stdvec(&reply).map_err(|e| tonic::Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Sets its flag when dropped, i.e. when the task holding it is aborted.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_task_stuck_after_shutdown_is_cut_off_and_a_finished_one_returns_its_result() {
        assert_eq!(drain(tokio::spawn(async { 7 }), "quick").await, Some(7));
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        // A write waiting for a quorum that is gone: it never finishes by itself.
        let stuck = tokio::spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await
        });
        let started = std::time::Instant::now();
        assert_eq!(drain(stuck, "stuck").await, None);
        assert!(started.elapsed() >= DRAIN_TIMEOUT);
        // Aborting drops the task's future at its next poll; wait for that, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !dropped.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the task was not aborted"
            );
            tokio::task::yield_now().await;
        }
    }
}
