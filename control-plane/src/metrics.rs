//! Prometheus metrics of a member, served on `/metrics`.
//!
//! - Raft: role, term, last log index, committed and applied index, snapshot and purge points,
//!   refreshed whenever openraft publishes new metrics.
//! - Write path: entries proposed, commands per entry (the group-commit batch size), and the
//!   time from proposing an entry to its response (commit plus apply).
//! - Apply: time to apply one entry inside the state machine.
//! - Failover: writes a member sent to a leader again, because the leader never got them or
//!   because their fate was unknown (the answer was lost).
//! - Scheduler (leader only; a follower's stay at their last values): sessions waiting for
//!   executors, reclaims, delayed releases and rotations, and how long each session waited
//!   from creation to its first executor.
//! - Client API: requests by method and gRPC code, and latency by method, recorded by a tower
//!   layer on the API server ([`GrpcMetricsLayer`]).
//!
//! Caveat: for server-streaming calls (`WatchTask`, `ListTask`) the recorded latency is the time
//! to the response headers, and the code is that of the headers (OK unless the call failed
//! before streaming).

use crate::scheduler::PlanStats;
use crate::state::Member;
use openraft::{RaftMetrics, ServerState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Labels of a client request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The RPC, like `/flame.v1.Frontend/CreateTask`.
    pub method: String,
    /// The gRPC status code name, like `Ok` or `NotFound`.
    pub code: String,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The RPC.
    pub method: String,
}

/// Labels of a write sent again.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResendLabels {
    /// `not_received` (the leader certainly did not get it) or `unknown_fate` (it may have
    /// been applied; the request id makes the repeat harmless).
    pub reason: String,
}

/// Every metric of a member.
pub struct Metrics {
    registry: Registry,
    role: Gauge,
    term: Gauge,
    last_log_index: Gauge,
    committed: Gauge,
    applied: Gauge,
    snapshot_index: Gauge,
    purged: Gauge,
    /// Raft entries proposed by this member's proposer.
    pub proposals: Counter,
    /// Commands per proposed entry.
    pub batch_size: Histogram,
    /// Seconds from proposing an entry to its response.
    pub commit_seconds: Histogram,
    /// Seconds to apply one entry in the state machine.
    pub apply_seconds: Histogram,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<MethodLabels, Histogram>,
    write_resends: Family<ResendLabels, Counter>,
    scheduler: SchedulerMetrics,
}

/// The leader scheduler's metrics.
struct SchedulerMetrics {
    waiting_sessions: Gauge,
    reclaims: Counter,
    delayed_releases: Counter,
    rotations: Counter,
    first_executor_seconds: Histogram,
}

impl SchedulerMetrics {
    fn new() -> Self {
        SchedulerMetrics {
            // 10 ms to about 5.8 minutes.
            waiting_sessions: Gauge::default(),
            reclaims: Counter::default(),
            delayed_releases: Counter::default(),
            rotations: Counter::default(),
            first_executor_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "scheduler_waiting_sessions",
            "Open sessions with Pending tasks and fewer executors than they want (leader)",
            self.waiting_sessions.clone(),
        );
        r.register(
            "scheduler_reclaims",
            "Idle executors unbound for a waiting session before their delay_release",
            self.reclaims.clone(),
        );
        r.register(
            "scheduler_delayed_releases",
            "Idle executors unbound after their application's delay_release",
            self.delayed_releases.clone(),
        );
        r.register(
            "scheduler_rotations",
            "Executors yielded to a waiting session at a task boundary",
            self.rotations.clone(),
        );
        r.register(
            "scheduler_first_executor_seconds",
            "From a session's creation to its first bound executor",
            self.first_executor_seconds.clone(),
        );
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `flame` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flame");
        let m = Metrics {
            role: Gauge::default(),
            term: Gauge::default(),
            last_log_index: Gauge::default(),
            committed: Gauge::default(),
            applied: Gauge::default(),
            snapshot_index: Gauge::default(),
            purged: Gauge::default(),
            proposals: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            commit_seconds: latency_histogram(),
            apply_seconds: latency_histogram(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            write_resends: Family::default(),
            scheduler: SchedulerMetrics::new(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        m.scheduler.register(r);
        r.register(
            "raft_role",
            "0 learner, 1 follower, 2 candidate, 3 leader, 4 shutdown",
            m.role.clone(),
        );
        r.register("raft_term", "Current Raft term", m.term.clone());
        r.register(
            "raft_last_log_index",
            "Last log index",
            m.last_log_index.clone(),
        );
        r.register(
            "raft_committed_index",
            "Committed index (applied, as openraft 0.9 reports it)",
            m.committed.clone(),
        );
        r.register(
            "raft_applied_index",
            "Last applied index",
            m.applied.clone(),
        );
        r.register(
            "raft_snapshot_index",
            "Last index in the newest snapshot",
            m.snapshot_index.clone(),
        );
        r.register(
            "raft_purged_index",
            "Last purged log index",
            m.purged.clone(),
        );
        r.register("proposals", "Raft entries proposed", m.proposals.clone());
        r.register(
            "proposal_batch_size",
            "Commands per proposed entry",
            m.batch_size.clone(),
        );
        r.register(
            "proposal_commit_seconds",
            "Proposal to response (commit and apply)",
            m.commit_seconds.clone(),
        );
        r.register(
            "apply_seconds",
            "Time to apply one entry",
            m.apply_seconds.clone(),
        );
        r.register(
            "requests",
            "Client API requests by method and code",
            m.requests.clone(),
        );
        r.register(
            "request_seconds",
            "Client API latency by method",
            m.request_seconds.clone(),
        );
        r.register(
            "write_resends",
            "Writes this member sent to a leader again, by why",
            m.write_resends.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records a write sent again for `reason` (see [`ResendLabels`]).
    pub fn observe_resend(&self, reason: &str) {
        self.write_resends
            .get_or_create(&ResendLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records one scheduling cycle of the leader: the sessions waiting as of its observation,
    /// what its plan decided, and the first-executor waits (milliseconds) it observed.
    pub fn observe_scheduling(&self, waiting: usize, stats: &PlanStats, first_waits: &[i64]) {
        let s = &self.scheduler;
        s.waiting_sessions
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        s.reclaims.inc_by(u64::from(stats.reclaims));
        s.delayed_releases.inc_by(u64::from(stats.delayed_releases));
        s.rotations.inc_by(u64::from(stats.rotations));
        for ms in first_waits {
            s.first_executor_seconds.observe(*ms as f64 / 1000.0);
        }
    }

    /// Copies openraft's metrics into the gauges.
    pub fn observe_raft(&self, m: &RaftMetrics<u64, Member>) {
        let role = match m.state {
            ServerState::Learner => 0,
            ServerState::Follower => 1,
            ServerState::Candidate => 2,
            ServerState::Leader => 3,
            ServerState::Shutdown => 4,
        };
        let applied = m.last_applied.map_or(0, |l| l.index) as i64;
        self.role.set(role);
        self.term.set(m.current_term as i64);
        self.last_log_index
            .set(m.last_log_index.unwrap_or(0) as i64);
        self.committed.set(applied);
        self.applied.set(applied);
        self.snapshot_index
            .set(m.snapshot.map_or(0, |l| l.index) as i64);
        self.purged.set(m.purged.map_or(0, |l| l.index) as i64);
    }

    /// Records one client request.
    pub fn observe_request(&self, method: &str, code: &str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                code: code.to_owned(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(seconds);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    m.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A tower layer that records every client request's method, gRPC code and latency.
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service made by [`GrpcMetricsLayer`].
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from);
            let code = format!("{code:?}");
            metrics.observe_request(&method, &code, started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduling_cycles_add_up_in_the_scheduler_metrics() {
        let m = Metrics::new();
        let stats = PlanStats {
            reclaims: 2,
            delayed_releases: 1,
            rotations: 3,
        };
        m.observe_scheduling(4, &stats, &[1_500]);
        m.observe_scheduling(1, &stats, &[]);
        let text = m.render();
        for line in [
            "flame_scheduler_waiting_sessions 1",
            "flame_scheduler_reclaims_total 4",
            "flame_scheduler_delayed_releases_total 2",
            "flame_scheduler_rotations_total 6",
            "flame_scheduler_first_executor_seconds_sum 1.5",
            "flame_scheduler_first_executor_seconds_count 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
