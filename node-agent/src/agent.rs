//! The agent runtime: registration with the leader, the assignment stream, and one worker per
//! executor running real instances.
//!
//! What: [`run`] (or [`run_with_metrics`]) makes the process a child subreaper, starts the
//! orphan reaper, and runs the reconciler until the shutdown future resolves; then it leaves
//! and stops every instance and returns. The protocol is `docs/agent-protocol.md` (agent side):
//! register, hold one `Sync` stream, apply level-triggered snapshots, report in batches.
//!
//! Structure (one owner per piece of mutable state, channels between them):
//! - `core`: the event loop owning the executor slots, the link and the report buffer;
//! - `slot`: one executor's reconcile rules and remembered outcomes;
//! - `worker`: one tokio task per executor, owning its [`crate::instance::Instance`];
//! - `link`: discovery (hints, `Cluster.Status`), `RegisterNode`, the `Sync` stream;
//! - `report`, `backoff`, `node`: report batching, jittered backoff, the node description;
//! - `releases`: sweeps installed packages of applications the cluster no longer has;
//! - [`crate::relay`]: the `FLAME_ENDPOINT` instances get, reaching any live member.
//!
//! Caveats:
//! - Leader changes keep instances running: the agent re-registers with the executors it
//!   holds (with their session and running task) and acts on the new leader's snapshot;
//!   outcomes the old leader may not have committed are sent again if still asked for.
//! - A cluster that refuses the node (for example a node name held by another live host) ends
//!   [`run`] with [`AgentError::Refused`]; every other failure is retried with backoff.

mod core;
mod link;
mod node;
mod releases;
mod report;
mod slot;
mod worker;

pub use worker::limit_output;

use crate::config::AgentConfig;
use flame_proto::agent::Report;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Instrument;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The control plane refused to register this node; retrying would not help.
    #[error("the control plane at {endpoint} refused node registration: {message}")]
    Refused {
        /// The member that refused.
        endpoint: String,
        /// Its reason.
        message: String,
    },
    /// A directory the agent needs could not be created.
    #[error("cannot create the {what} {}: {source}", path.display())]
    Directory {
        /// Which directory (`work directory`, `socket directory`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The member relay for instances could not listen on loopback.
    #[error("cannot start the member relay for instances on 127.0.0.1: {source}")]
    Relay {
        /// Why.
        source: std::io::Error,
    },
    /// The node's embedded object cache could not start.
    #[error("the node's object cache cannot start: {0}")]
    Cache(#[from] flame_cache::CacheError),
}

/// Counters of one agent, for tests and metrics; all are totals since the agent started.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Instances launched (processes that started and opened their socket).
    pub(crate) launches: AtomicU64,
    /// Binds served by re-entering a parked instance instead of launching one.
    pub(crate) warm_switches: AtomicU64,
    /// Binds that failed (launch or `OnSessionEnter`).
    pub(crate) bind_failures: AtomicU64,
    /// Tasks handed to an instance.
    pub(crate) tasks_invoked: AtomicU64,
    /// Successful `RegisterNode` calls.
    pub(crate) registrations: AtomicU64,
    /// `Sync` streams opened.
    pub(crate) streams: AtomicU64,
    /// Reports sent.
    pub(crate) reports: AtomicU64,
    /// Task outcomes sent (resends included).
    pub(crate) task_outcomes_sent: AtomicU64,
}

impl AgentMetrics {
    /// Instances launched (processes that started and opened their socket).
    pub fn launches(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    /// Binds served by re-entering a parked instance (warm switches) instead of launching one.
    pub fn warm_switches(&self) -> u64 {
        self.warm_switches.load(Ordering::Relaxed)
    }

    /// Binds that failed (launch or `OnSessionEnter`).
    pub fn bind_failures(&self) -> u64 {
        self.bind_failures.load(Ordering::Relaxed)
    }

    /// Tasks handed to an instance.
    pub fn tasks_invoked(&self) -> u64 {
        self.tasks_invoked.load(Ordering::Relaxed)
    }

    /// Successful `RegisterNode` calls.
    pub fn registrations(&self) -> u64 {
        self.registrations.load(Ordering::Relaxed)
    }

    /// `Sync` streams opened.
    pub fn streams(&self) -> u64 {
        self.streams.load(Ordering::Relaxed)
    }

    /// Reports sent.
    pub fn reports(&self) -> u64 {
        self.reports.load(Ordering::Relaxed)
    }

    /// Task outcomes sent, resends included.
    pub fn task_outcomes_sent(&self) -> u64 {
        self.task_outcomes_sent.load(Ordering::Relaxed)
    }

    /// Counts a report about to be sent.
    fn count_report(&self, report: &Report) {
        self.reports.fetch_add(1, Ordering::Relaxed);
        self.task_outcomes_sent
            .fetch_add(report.tasks.len() as u64, Ordering::Relaxed);
    }
}

/// Runs the agent until `shutdown` resolves (then leaves and stops every instance) or the
/// cluster refuses the node.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    run_with_metrics(config, shutdown, Arc::new(AgentMetrics::default())).await
}

/// [`run`], counting into `metrics`.
pub async fn run_with_metrics(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
    metrics: Arc<AgentMetrics>,
) -> Result<(), AgentError> {
    let span = tracing::info_span!("agent", node = %config.node_name);
    async move {
        create_dir("work directory", &config.work_dir)?;
        create_dir("socket directory", &config.socket_dir)?;
        if let Err(e) = crate::reaper::become_subreaper() {
            tracing::warn!(error = %e, "cannot become a child subreaper; orphans go to PID 1");
        }
        let (stop_reaper, reaper_stopped) = tokio::sync::oneshot::channel::<()>();
        let reaper = tokio::spawn(crate::reaper::run(async {
            let _ = reaper_stopped.await;
        }));
        tracing::info!(
            endpoints = ?config.endpoints, work_dir = %config.work_dir.display(),
            flame_home = %config.flame_home.display(), capacity = ?config.capacity,
            "node agent starting"
        );
        let relay = match &config.flame_endpoint {
            Some(_) => None,
            None => crate::relay::Relay::start(&config.endpoints)
                .await
                .map_err(|source| AgentError::Relay { source })?,
        };
        let flame_endpoint = crate::relay::instance_endpoint(
            config.flame_endpoint.as_deref(),
            relay.as_ref(),
            &config.endpoints,
        );
        tracing::info!(%flame_endpoint, "instances reach the cluster here");
        let core = core::Core::new(
            config.endpoints.clone(),
            node::NodeInfo::new(&config),
            worker::LaunchTemplate::new(&config, flame_endpoint),
            config.report_flush_interval,
            metrics,
        );
        let sweeper = tokio::spawn(
            releases::run(
                config.work_dir.clone(),
                config.endpoints.clone(),
                core.assigned_applications(),
            )
            .in_current_span(),
        );
        let result = core.run(shutdown).await;
        sweeper.abort();
        drop(relay);
        let _ = stop_reaper.send(());
        let _ = reaper.await;
        match &result {
            Ok(()) => tracing::info!("node agent stopped"),
            Err(e) => tracing::error!(error = %e, "node agent failed"),
        }
        result
    }
    .instrument(span)
    .await
}

/// Creates `path` (and its parents).
fn create_dir(what: &'static str, path: &std::path::Path) -> Result<(), AgentError> {
    std::fs::create_dir_all(path).map_err(|source| AgentError::Directory {
        what,
        path: path.to_owned(),
        source,
    })
}
