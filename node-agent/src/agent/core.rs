//! The reconciler's event loop: the single owner of every executor slot, the link to the
//! leader and the report buffer.
//!
//! What: [`Core::run`] waits on whichever comes first (shutdown, a finished discovery round, a
//! leader message, a worker event, or a timer: reconnect, heartbeat, report flush, bind retry)
//! and handles it; then it drains queued worker events, so outcomes that finish together go out
//! in one report, and flushes the report when due.
//!
//! Why one loop: all mutable agent state lives here and is touched by one task; workers and the
//! stream reader talk to it over channels, so there are no locks and the order of events is the
//! order they are handled in.
//!
//! Caveats:
//! - A stream that delivered at least one snapshot is "healthy": when it ends, the agent
//!   reconnects at once and the backoff starts over. Failed rounds and streams that die before
//!   their first snapshot back off (100 ms doubling to 5 s, with jitter).
//! - The leader is considered gone when nothing arrives for five heartbeat intervals (at least
//!   2 s); acks to heartbeats keep a quiet stream alive.
//! - Nothing is queued for the leader while disconnected; remembered outcomes are offered again
//!   when the new leader's first snapshot still lists their steps.

use super::link::{self, Dialer, Inbound, Link, RoundError};
use super::report::ReportBuffer;
use super::slot::{Cx, Slot};
use super::worker::{Event, LaunchTemplate, Worker};
use super::{AgentError, AgentMetrics};
use flame_proto::agent::agent_message::Message as AgentKind;
use flame_proto::agent::{Assignments, ExecutorAction, ExecutorAssignment, HeldExecutor, Pull};
use flame_proto::backoff::Backoff;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

/// First pause after a failed discovery round.
const RECONNECT_BASE: Duration = Duration::from_millis(100);
/// Longest pause between discovery rounds.
const RECONNECT_CAP: Duration = Duration::from_secs(5);
/// Worker events handled per drain before timers and the stream get a turn.
const DRAIN_LIMIT: usize = 1024;
/// Extra time, beyond leave and stop, that workers get to finish at shutdown.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// Starts executor workers.
struct Spawner {
    /// Every worker task, finished ones until joined.
    workers: JoinSet<()>,
    /// The next worker number.
    next: u64,
    /// Where workers send events.
    events: mpsc::UnboundedSender<Event>,
    /// Launch settings.
    template: Arc<LaunchTemplate>,
    /// Counters.
    metrics: Arc<AgentMetrics>,
}

impl Spawner {
    /// Starts a worker for executor `id`; returns its number and command sender.
    fn spawn(&mut self, id: &str) -> (u64, mpsc::UnboundedSender<crate::agent::worker::Command>) {
        self.next += 1;
        let (worker, tx) = Worker::new(
            id.to_owned(),
            self.next,
            self.events.clone(),
            self.template.clone(),
            self.metrics.clone(),
        );
        self.workers.spawn(worker.run().in_current_span());
        (self.next, tx)
    }
}

/// One step of the loop.
enum Step {
    /// Stop the agent.
    Shutdown,
    /// A discovery round finished.
    Round(Result<Result<Link, RoundError>, JoinError>),
    /// The leader said something, or the stream ended.
    Inbound(Inbound),
    /// A worker answered.
    Event(Event),
    /// Time to start a discovery round.
    Reconnect,
    /// Time to send a heartbeat (and check that the leader is still talking).
    Heartbeat,
    /// Time to flush the report.
    Flush,
    /// A bind backoff expired.
    Retry,
    /// A worker task ended.
    WorkerEnded(Result<(), JoinError>),
}

/// The agent's state and event loop.
pub struct Core {
    /// Discovery settings, shared with rounds.
    dialer: Arc<Dialer>,
    /// Publishes the held executors for registration.
    held: watch::Sender<Vec<HeldExecutor>>,
    /// Publishes the applications the assignments name, for the release sweeper.
    assigned: watch::Sender<BTreeSet<String>>,
    /// Starts workers.
    spawner: Spawner,
    /// Worker events.
    events: mpsc::UnboundedReceiver<Event>,
    /// Executors by id.
    slots: HashMap<String, Slot>,
    /// The newest assignment of each executor.
    desired: HashMap<String, ExecutorAssignment>,
    /// The stream to the leader.
    link: Option<Link>,
    /// The discovery round in flight.
    connecting: Option<JoinHandle<Result<Link, RoundError>>>,
    /// When to start the next round.
    reconnect_at: Option<Instant>,
    /// Where the leader was last said to be.
    hint: Option<String>,
    /// Backoff between rounds.
    backoff: Backoff,
    /// Streams opened so far; the current one's generation.
    generation: u64,
    /// Whether the current stream delivered a snapshot.
    healthy: bool,
    /// When the leader last said anything.
    last_heard: Instant,
    /// When the next heartbeat is due.
    next_heartbeat: Option<Instant>,
    /// Outcomes waiting for the next flush.
    out: ReportBuffer,
    /// Delay before a report goes out.
    flush_interval: Duration,
    /// Bound on leave plus stop at shutdown.
    shutdown_bound: Duration,
}

impl Core {
    /// A core for the node `dialer` describes, launching with `template`.
    pub fn new(
        endpoints: Vec<String>,
        node: super::node::NodeInfo,
        template: LaunchTemplate,
        flush_interval: Duration,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        let (held, held_rx) = watch::channel(Vec::new());
        let (events_tx, events) = mpsc::unbounded_channel();
        let shutdown_bound = template.leave_timeout + template.stop_grace + SHUTDOWN_SLACK;
        Core {
            dialer: Arc::new(Dialer {
                endpoints,
                node,
                held: held_rx,
                metrics: metrics.clone(),
            }),
            held,
            assigned: watch::Sender::new(BTreeSet::new()),
            spawner: Spawner {
                workers: JoinSet::new(),
                next: 0,
                events: events_tx,
                template: Arc::new(template),
                metrics,
            },
            events,
            slots: HashMap::new(),
            desired: HashMap::new(),
            link: None,
            connecting: None,
            reconnect_at: Some(Instant::now()),
            hint: None,
            backoff: Backoff::new(RECONNECT_BASE, RECONNECT_CAP),
            generation: 0,
            healthy: false,
            last_heard: Instant::now(),
            next_heartbeat: None,
            out: ReportBuffer::default(),
            flush_interval,
            shutdown_bound,
        }
    }

    /// The applications the newest assignments name (bound, binding or unbinding executors);
    /// the channel closes when the core stops.
    pub fn assigned_applications(&self) -> watch::Receiver<BTreeSet<String>> {
        self.assigned.subscribe()
    }

    /// Runs until `shutdown` resolves or the cluster refuses the node; then leaves and stops
    /// every instance.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        let result = loop {
            let step = self.next_step(&mut shutdown).await;
            match self.handle(step) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
            self.drain_events();
            self.flush_if_due();
            if self.connecting.is_some() {
                self.publish_held();
            }
        };
        self.shutdown().await;
        result
    }

    /// Waits for the next thing to handle.
    async fn next_step(&mut self, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> Step {
        let now = Instant::now();
        let flush = self
            .link
            .as_ref()
            .and_then(|_| self.out.deadline(self.flush_interval));
        let retry = self
            .slots
            .values()
            .filter_map(|s| s.retry_at(now.into_std()))
            .min();
        let (reconnect, heartbeat) = (self.reconnect_at, self.next_heartbeat);
        tokio::select! {
            () = shutdown => Step::Shutdown,
            round = joined(&mut self.connecting) => Step::Round(round),
            inbound = recv_inbound(&mut self.link) => Step::Inbound(inbound),
            Some(event) = self.events.recv() => Step::Event(event),
            () = at(reconnect) => Step::Reconnect,
            () = at(heartbeat) => Step::Heartbeat,
            () = at(flush) => Step::Flush,
            () = at(retry) => Step::Retry,
            Some(ended) = self.spawner.workers.join_next(), if !self.spawner.workers.is_empty() => {
                Step::WorkerEnded(ended)
            }
        }
    }

    /// Handles one step; `Ok(false)` to stop.
    fn handle(&mut self, step: Step) -> Result<bool, AgentError> {
        match step {
            Step::Shutdown => return Ok(false),
            Step::Round(Ok(Ok(link))) => self.connected(link),
            Step::Round(Ok(Err(RoundError::Fatal(e)))) => return Err(e),
            Step::Round(Ok(Err(RoundError::Retry(why)))) => self.round_failed(&why),
            Step::Round(Err(e)) => self.round_failed(&e.to_string()),
            Step::Inbound(Inbound::Assignments(a)) => self.assignments(a),
            Step::Inbound(Inbound::Ack) => self.last_heard = Instant::now(),
            Step::Inbound(Inbound::Closed { reason, hint }) => self.disconnected(&reason, hint),
            Step::Event(event) => self.event(event),
            Step::Reconnect => self.start_round(),
            Step::Heartbeat => self.heartbeat(),
            Step::Flush => self.flush(),
            Step::Retry => self.reconcile_all(),
            Step::WorkerEnded(Err(e)) => tracing::error!(error = %e, "executor worker failed"),
            Step::WorkerEnded(Ok(())) => {}
        }
        Ok(true)
    }

    /// Starts a discovery round.
    fn start_round(&mut self) {
        self.reconnect_at = None;
        self.publish_held();
        let round = link::round(self.dialer.clone(), self.hint.take());
        self.connecting = Some(tokio::spawn(round.in_current_span()));
    }

    /// Schedules the next round after a failed one.
    fn round_failed(&mut self, why: &str) {
        let delay = self.backoff.next_delay();
        tracing::warn!(
            reason = %why, attempt = self.backoff.failures(),
            retry_in_ms = delay.as_millis() as u64, "no leader accepted the node"
        );
        self.reconnect_at = Some(Instant::now() + delay);
    }

    /// Takes a new stream into use.
    fn connected(&mut self, link: Link) {
        self.generation += 1;
        self.healthy = false;
        self.out.clear();
        let now = Instant::now();
        self.last_heard = now;
        self.next_heartbeat = Some(now + link.heartbeat);
        self.link = Some(link);
    }

    /// Drops the stream and schedules discovery.
    fn disconnected(&mut self, reason: &str, hint: Option<String>) {
        let Some(link) = self.link.take() else { return };
        self.next_heartbeat = None;
        self.out.clear();
        let delay = if self.healthy {
            self.backoff.reset();
            Duration::ZERO
        } else {
            self.backoff.next_delay()
        };
        tracing::warn!(
            leader = %link.addr, %reason, hint = ?hint,
            retry_in_ms = delay.as_millis() as u64, "lost the leader stream"
        );
        self.hint = hint;
        self.reconnect_at = Some(Instant::now() + delay);
    }

    /// Applies the newest of the queued snapshots, then acknowledges it.
    fn assignments(&mut self, first: Assignments) {
        let mut latest = first;
        let mut closed = None;
        while let Some(link) = self.link.as_mut() {
            match link.inbound.try_recv() {
                Ok(Inbound::Assignments(a)) if a.revision >= latest.revision => latest = a,
                Ok(Inbound::Assignments(_) | Inbound::Ack) => {}
                Ok(Inbound::Closed { reason, hint }) => {
                    closed = Some((reason, hint));
                    break;
                }
                Err(_) => break,
            }
        }
        self.apply(latest);
        if let Some((reason, hint)) = closed {
            self.disconnected(&reason, hint);
        }
    }

    /// Makes `snapshot` the desired state: forgets absent executors and reconciles the rest.
    fn apply(&mut self, snapshot: Assignments) {
        self.last_heard = Instant::now();
        self.healthy = true;
        let revision = snapshot.revision;
        let desired: HashMap<String, ExecutorAssignment> = snapshot
            .executors
            .into_iter()
            .map(|e| (e.executor_id.clone(), e))
            .collect();
        self.slots.retain(|id, slot| {
            let keep = desired.contains_key(id);
            if !keep {
                tracing::info!(executor_id = %id, "executor no longer assigned; stopping it");
                slot.exit(false);
            }
            keep
        });
        self.desired = desired;
        let apps: BTreeSet<String> = self
            .desired
            .values()
            .filter_map(|a| a.binding.as_ref()?.application.as_ref()?.metadata.as_ref())
            .map(|m| m.name.clone())
            .collect();
        self.assigned.send_if_modified(|current| {
            let changed = *current != apps;
            *current = apps;
            changed
        });
        self.reconcile_all();
        if let Some(link) = &self.link {
            link.send(AgentKind::Pull(Pull {
                acked_revision: revision,
            }));
        }
    }

    /// Reconciles every executor against its newest assignment.
    fn reconcile_all(&mut self) {
        let mut cx = Cx {
            generation: if self.link.is_some() {
                self.generation
            } else {
                0
            },
            now: Instant::now().into_std(),
            out: &mut self.out,
        };
        for (id, assignment) in &self.desired {
            let slot = self.slots.entry(id.clone()).or_insert_with(|| {
                let (worker, tx) = self.spawner.spawn(id);
                Slot::new(id.clone(), worker, tx)
            });
            ensure_worker(slot, assignment, &mut self.spawner, id);
            slot.reconcile(assignment, &mut cx);
        }
    }

    /// Takes a worker's answer and reconciles its executor.
    fn event(&mut self, event: Event) {
        let id = event.executor_id.clone();
        let Some(slot) = self.slots.get_mut(&id) else {
            return; // A forgotten executor's worker finishing up.
        };
        let mut cx = Cx {
            generation: if self.link.is_some() {
                self.generation
            } else {
                0
            },
            now: Instant::now().into_std(),
            out: &mut self.out,
        };
        if !slot.on_event(event, &mut cx) {
            return;
        }
        if let Some(assignment) = self.desired.get(&id) {
            ensure_worker(slot, assignment, &mut self.spawner, &id);
            slot.reconcile(assignment, &mut cx);
        }
    }

    /// Handles the worker events already queued, up to [`DRAIN_LIMIT`].
    fn drain_events(&mut self) {
        for _ in 0..DRAIN_LIMIT {
            match self.events.try_recv() {
                Ok(event) => self.event(event),
                Err(_) => return,
            }
        }
    }

    /// Sends a heartbeat, or drops a stream whose leader went silent.
    fn heartbeat(&mut self) {
        let Some(link) = &self.link else {
            self.next_heartbeat = None;
            return;
        };
        let now = Instant::now();
        let silence = (link.heartbeat * 5).max(Duration::from_secs(2));
        if now.duration_since(self.last_heard) > silence {
            let why = format!("nothing from the leader for {}ms", silence.as_millis());
            self.disconnected(&why, None);
            return;
        }
        let beat = self.dialer.node.heartbeat().message;
        if let Some(beat) = beat {
            link.send(beat);
        }
        self.next_heartbeat = Some(now + link.heartbeat);
    }

    /// Flushes the report if its deadline passed (or at once with a zero interval).
    fn flush_if_due(&mut self) {
        let due = self.out.deadline(self.flush_interval);
        if due.is_some_and(|d| d <= Instant::now().into_std()) {
            self.flush();
        }
    }

    /// Sends the queued outcomes as one report.
    fn flush(&mut self) {
        let Some(report) = self.out.take() else {
            return;
        };
        match &self.link {
            Some(link) => {
                self.dialer.metrics.count_report(&report);
                link.send(AgentKind::Report(report));
            }
            None => tracing::debug!("report dropped: no stream"),
        }
    }

    /// Publishes the executors held right now, for registration.
    fn publish_held(&self) {
        let mut held: Vec<HeldExecutor> = self.slots.values().filter_map(Slot::held).collect();
        held.sort_by(|a, b| a.executor_id.cmp(&b.executor_id));
        self.held.send_if_modified(|current| {
            let changed = *current != held;
            if changed {
                *current = held;
            }
            changed
        });
    }

    /// Leaves and stops every instance, bounded; then returns.
    async fn shutdown(mut self) {
        if let Some(round) = self.connecting.take() {
            round.abort();
        }
        self.flush();
        for slot in self.slots.values() {
            slot.exit(true);
        }
        self.slots.clear();
        self.link = None;
        let workers = &mut self.spawner.workers;
        let all = async { while workers.join_next().await.is_some() {} };
        if tokio::time::timeout(self.shutdown_bound, all)
            .await
            .is_err()
        {
            tracing::warn!("instances did not stop in time; killing them");
            self.spawner.workers.abort_all();
            while self.spawner.workers.join_next().await.is_some() {}
        }
        tracing::info!("all instances stopped");
    }
}

/// Gives an executor whose worker ended a new one, unless it is being released.
fn ensure_worker(
    slot: &mut Slot,
    assignment: &ExecutorAssignment,
    spawner: &mut Spawner,
    id: &str,
) {
    if slot.ended() && assignment.action != ExecutorAction::Release as i32 {
        let (worker, tx) = spawner.spawn(id);
        slot.attach(worker, tx);
    }
}

/// Waits for the round in flight, if any.
async fn joined<T>(handle: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match handle {
        Some(h) => {
            let result = h.await;
            *handle = None;
            result
        }
        None => std::future::pending().await,
    }
}

/// Waits for the next leader message, if connected.
async fn recv_inbound(link: &mut Option<Link>) -> Inbound {
    match link {
        Some(link) => link.inbound.recv().await.unwrap_or(Inbound::Closed {
            reason: "the stream reader stopped".to_owned(),
            hint: None,
        }),
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn at(deadline: Option<impl Into<Instant>>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
