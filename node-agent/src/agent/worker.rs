//! One executor's worker: the tokio task that owns the executor's [`Instance`] and runs the
//! commands the reconciler sends it, one at a time.
//!
//! What: [`Worker::run`] takes [`Command`]s from its channel (bind, run a task, unbind, stop,
//! release, exit) and answers each with one [`Event`] carrying the outcome and the session of
//! the instance it holds afterwards.
//!
//! Why a task per executor: executors run concurrently while each instance sees one call at a
//! time; the instance has exactly one owner, so no locks are needed.
//!
//! Interruption: the reconciler only sends a command while the worker is idle, except to
//! interrupt. A command arriving during a launch, `OnSessionEnter` or `OnTaskInvoke` cuts that
//! operation short: the instance (whose state is then unknown) is stopped, an
//! [`EventKind::Interrupted`] event is sent, and the new command runs. `OnSessionLeave` and
//! stops are never interrupted; both are bounded.
//!
//! Task timeouts: a bind fixes the binding's task timeout (the application's
//! `flame.task-timeout` label, else the agent's `task_timeout`, else none; see
//! [`crate::task_timeout`]). An `OnTaskInvoke` that outlives it is abandoned: the task is
//! reported Failed with `task exceeded its timeout of <duration>`, and then the instance, which
//! may be stuck, is stopped. The timeout only bounds the invocation; a newer command still
//! interrupts it first.
//!
//! Warm switches: when the binding's application opts in (`flame.warm-switch=true`, see
//! [`flame_proto::model::labels`]), an unbind calls `OnSessionLeave` and *parks* the process
//! instead of stopping it. The next bind of the same application (equal [`AppLaunch`])
//! re-enters the parked process; a stop, a release, a bind of another application, or a parked
//! process that fails to re-enter stops it (the last falls back to a fresh launch). A parked
//! process holds no session: the reconciler sees the executor as empty.
//!
//! Caveats: an instance found dead after a task is stopped at once (the binding ends, per spec
//! section 7.4); the next task for its session relaunches it, as it does after a timeout.
//! Output over the configured limit turns a success into a failure naming the limit.

use super::AgentMetrics;
use crate::config::AgentConfig;
use crate::instance::{AppLaunch, BindError, Instance, LaunchSpec, TaskOutcome};
use crate::task_timeout::{self, LabelTimeout};
use flame_proto::error::FlameError;
use flame_proto::v1;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

/// What every launch on this agent shares, from the configuration.
#[derive(Debug, Clone)]
pub struct LaunchTemplate {
    /// `FLAME_ENDPOINT`.
    flame_endpoint: String,
    /// `FLAME_CACHE_ENDPOINT`.
    cache_endpoint: Option<String>,
    ca_file: Option<PathBuf>,
    /// `FLAME_HOME`.
    flame_home: PathBuf,
    /// Scratch directories go under it.
    work_dir: PathBuf,
    /// Sockets go here.
    socket_dir: PathBuf,
    /// Instance logs go here.
    log_dir: Option<PathBuf>,
    /// Start plus readiness bound.
    startup_timeout: Duration,
    /// SIGTERM-to-SIGKILL grace.
    pub stop_grace: Duration,
    /// `OnSessionLeave` bound.
    pub leave_timeout: Duration,
    /// Largest output reported as a success.
    max_task_output_bytes: usize,
    /// Task timeout of bindings whose application has no `flame.task-timeout` label.
    task_timeout: Option<Duration>,
}

impl LaunchTemplate {
    /// The template of `config`, handing instances `flame_endpoint` as `FLAME_ENDPOINT`.
    pub fn new(config: &AgentConfig, flame_endpoint: String) -> Self {
        LaunchTemplate {
            flame_endpoint,
            cache_endpoint: config.cache_endpoint.clone(),
            ca_file: config.ca_file.clone(),
            flame_home: config.flame_home.clone(),
            work_dir: config.work_dir.clone(),
            socket_dir: config.socket_dir.clone(),
            log_dir: config.log_dir.clone(),
            startup_timeout: config.startup_timeout,
            stop_grace: config.stop_grace,
            leave_timeout: config.leave_timeout,
            max_task_output_bytes: config.max_task_output_bytes,
            task_timeout: config.task_timeout,
        }
    }

    /// The launch spec of one binding.
    fn spec(&self, app: AppLaunch, executor_id: &str, session_id: &str) -> LaunchSpec {
        let mut spec = LaunchSpec::new(
            app,
            executor_id,
            session_id,
            &self.flame_endpoint,
            &self.work_dir,
            &self.socket_dir,
        );
        spec.cache_endpoint = self.cache_endpoint.clone();
        spec.ca_file = self.ca_file.clone();
        spec.flame_home = Some(self.flame_home.clone());
        spec.log_dir = self.log_dir.clone();
        spec.startup_timeout = self.startup_timeout;
        spec.stop_grace = self.stop_grace;
        spec.leave_timeout = self.leave_timeout;
        spec
    }
}

/// What the reconciler asks a worker to do; `seq` ties the answering event to the command.
#[derive(Debug)]
pub enum Command {
    /// Launch an instance for the session and call `OnSessionEnter`.
    Bind {
        /// Command number.
        seq: u64,
        /// The session.
        session_id: String,
        /// What to launch and the `OnSessionEnter` request.
        launch: Box<BindLaunch>,
        /// Whether the leader asked for this bind (and expects a `BindOutcome`), as opposed to
        /// a relaunch for a task of a binding whose instance is gone.
        report: bool,
    },
    /// Invoke one task on the bound instance.
    Run {
        /// Command number.
        seq: u64,
        /// The task's session.
        session_id: String,
        /// The task.
        task_id: u64,
        /// Its input.
        input: Option<Vec<u8>>,
    },
    /// `OnSessionLeave` (failures logged), then stop the instance.
    Unbind {
        /// Command number.
        seq: u64,
        /// The session the leader unbinds.
        session_id: String,
    },
    /// Stop the instance without `OnSessionLeave`.
    Stop {
        /// Command number.
        seq: u64,
    },
    /// Stop the instance and end the worker.
    Release {
        /// Command number.
        seq: u64,
    },
    /// End the worker without an event; `leave` calls `OnSessionLeave` first (agent shutdown).
    Exit {
        /// Whether to call `OnSessionLeave` before stopping.
        leave: bool,
    },
}

/// What a bind launches, and what it tells the instance.
#[derive(Debug)]
pub struct BindLaunch {
    /// What to launch.
    pub app: AppLaunch,
    /// The `OnSessionEnter` request.
    pub ctx: v1::SessionContext,
    /// What the application's labels say about the task timeout.
    pub task_timeout: LabelTimeout,
    /// Whether the application opted in to warm switches.
    pub warm_switch: bool,
}

/// A worker's answer to one command.
#[derive(Debug)]
pub struct Event {
    /// The executor.
    pub executor_id: String,
    /// Which worker (executor ids can come back after being forgotten).
    pub worker: u64,
    /// The command answered.
    pub seq: u64,
    /// The session of the instance the worker holds after the command, if any.
    pub holds: Option<String>,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to one command.
#[derive(Debug)]
pub enum EventKind {
    /// A bind finished.
    Bound {
        /// The session.
        session_id: String,
        /// Success, or the bind error with its code.
        result: Result<(), BindError>,
        /// Echo of [`Command::Bind::report`].
        report: bool,
    },
    /// A task finished.
    TaskDone {
        /// The task's session.
        session_id: String,
        /// The task.
        task_id: u64,
        /// Its outcome.
        outcome: TaskOutcome,
        /// How long the invocation took, in microseconds (0 when the instance was not invoked).
        duration_us: u64,
    },
    /// An unbind finished.
    Unbound {
        /// The session unbound.
        session_id: String,
    },
    /// A stop finished.
    Stopped,
    /// The release finished; the worker has ended.
    Released,
    /// The command was cut short by the next one; its instance was stopped.
    Interrupted,
}

/// One executor's worker.
pub struct Worker {
    /// The executor.
    id: String,
    /// This worker's number.
    nonce: u64,
    /// Commands from the reconciler.
    rx: mpsc::UnboundedReceiver<Command>,
    /// Events to the reconciler.
    events: mpsc::UnboundedSender<Event>,
    /// Launch settings.
    template: Arc<LaunchTemplate>,
    /// Counters.
    metrics: Arc<AgentMetrics>,
    /// The bound instance, entered into its session.
    instance: Option<Instance>,
    /// The task timeout of the instance's binding.
    task_timeout: Option<Duration>,
    /// The application of the instance's binding, when it opted in to warm switches.
    warm_app: Option<AppLaunch>,
    /// A process that left its session, kept for the next binding of its application.
    parked: Option<Parked>,
}

/// An instance kept alive between sessions (a warm switch).
struct Parked {
    /// The application it runs, as launched.
    app: AppLaunch,
    /// The process, after a successful `OnSessionLeave`.
    instance: Instance,
}

impl Worker {
    /// A worker for `id` numbered `nonce`; returns it and the sender for its commands.
    pub fn new(
        id: String,
        nonce: u64,
        events: mpsc::UnboundedSender<Event>,
        template: Arc<LaunchTemplate>,
        metrics: Arc<AgentMetrics>,
    ) -> (Worker, mpsc::UnboundedSender<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            id,
            nonce,
            rx,
            events,
            template,
            metrics,
            instance: None,
            task_timeout: None,
            warm_app: None,
            parked: None,
        };
        (worker, tx)
    }

    /// Runs commands until released, told to exit, or the reconciler goes away.
    pub async fn run(mut self) {
        let mut next: Option<Command> = None;
        loop {
            let command = match next.take() {
                Some(command) => command,
                None => self
                    .rx
                    .recv()
                    .await
                    .unwrap_or(Command::Exit { leave: false }),
            };
            next = match command {
                Command::Bind {
                    seq,
                    session_id,
                    launch,
                    report,
                } => self.bind(seq, session_id, *launch, report).await,
                Command::Run {
                    seq,
                    session_id,
                    task_id,
                    input,
                } => self.run_task(seq, session_id, task_id, input).await,
                Command::Unbind { seq, session_id } => {
                    self.leave_and_park().await;
                    self.emit(seq, EventKind::Unbound { session_id });
                    None
                }
                Command::Stop { seq } => {
                    self.stop().await;
                    self.emit(seq, EventKind::Stopped);
                    None
                }
                Command::Release { seq } => {
                    self.stop().await;
                    self.emit(seq, EventKind::Released);
                    return;
                }
                Command::Exit { leave } => {
                    if leave {
                        self.leave_and_stop().await;
                    }
                    self.stop().await;
                    return;
                }
            };
        }
    }

    /// Enters an instance for the session, re-entering a parked one of the same application or
    /// launching a new one; returns the command that interrupted it, if any.
    async fn bind(
        &mut self,
        seq: u64,
        session_id: String,
        launch: BindLaunch,
        report: bool,
    ) -> Option<Command> {
        self.stop_bound().await;
        let reusable = match self.parked.take() {
            Some(p) if launch.warm_switch && p.app == launch.app => Some(p),
            Some(stale) => {
                stale.instance.stop().await;
                None
            }
            None => None,
        };
        let warm = match reusable {
            Some(parked) => match self.reenter(parked.instance, &session_id, &launch).await {
                Err(next) => return self.interrupted(seq, next),
                Ok(warm) => warm,
            },
            None => None,
        };
        let instance = match warm {
            Some(instance) => instance,
            None => match self.launch_and_enter(&session_id, &launch).await {
                Err(next) => return self.interrupted(seq, next),
                Ok(Err(e)) => return self.bind_failed(seq, session_id, e, report),
                Ok(Ok(instance)) => instance,
            },
        };
        self.instance = Some(instance);
        self.task_timeout = launch.task_timeout.resolve(self.template.task_timeout);
        self.warm_app = launch.warm_switch.then_some(launch.app);
        let kind = EventKind::Bound {
            session_id,
            result: Ok(()),
            report,
        };
        self.emit(seq, kind);
        None
    }

    /// Re-enters a parked instance into `session_id`: `Ok(Some)` when it entered, `Ok(None)`
    /// when it did not (it is then stopped, and the caller launches afresh), `Err` with the
    /// command that interrupted it (it is then stopped too).
    async fn reenter(
        &mut self,
        mut instance: Instance,
        session_id: &str,
        launch: &BindLaunch,
    ) -> Result<Option<Instance>, Command> {
        if let Err(e) = instance.switch_session(session_id) {
            tracing::info!(
                executor_id = %self.id, error = %e, "parked instance unusable; launching"
            );
            instance.stop().await;
            return Ok(None);
        }
        match interruptible(&mut self.rx, instance.enter(launch.ctx.clone())).await {
            Err(next) => {
                instance.stop().await;
                Err(next)
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    executor_id = %self.id, %session_id, message = %e.message,
                    "warm OnSessionEnter failed; stopping the instance and launching a new one"
                );
                let _ = instance.leave().await;
                instance.stop().await;
                Ok(None)
            }
            Ok(Ok(())) => {
                self.metrics.warm_switches.fetch_add(1, Ordering::Relaxed);
                Ok(Some(instance))
            }
        }
    }

    /// Launches an instance for the session and enters it; the outer `Err` carries the command
    /// that interrupted it (the instance is then stopped).
    async fn launch_and_enter(
        &mut self,
        session_id: &str,
        launch: &BindLaunch,
    ) -> Result<Result<Instance, BindError>, Command> {
        let spec = self.template.spec(launch.app.clone(), &self.id, session_id);
        let mut instance = match interruptible(&mut self.rx, Instance::launch(spec)).await? {
            Err(e) => return Ok(Err(e)),
            Ok(instance) => instance,
        };
        self.metrics.launches.fetch_add(1, Ordering::Relaxed);
        match interruptible(&mut self.rx, instance.enter(launch.ctx.clone())).await {
            Err(next) => {
                instance.stop().await;
                Err(next)
            }
            Ok(Err(e)) => {
                // Spec section 7.3: leave and terminate an instance whose enter failed.
                let _ = instance.leave().await;
                instance.stop().await;
                Ok(Err(e))
            }
            Ok(Ok(())) => Ok(Ok(instance)),
        }
    }

    /// Reports a failed bind.
    fn bind_failed(
        &mut self,
        seq: u64,
        session_id: String,
        error: BindError,
        report: bool,
    ) -> Option<Command> {
        self.metrics.bind_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            executor_id = %self.id, %session_id, code = error.code.value(),
            message = %error.message, "bind failed"
        );
        let kind = EventKind::Bound {
            session_id,
            result: Err(error),
            report,
        };
        self.emit(seq, kind);
        None
    }

    /// Invokes one task; returns the command that interrupted it, if any.
    async fn run_task(
        &mut self,
        seq: u64,
        session_id: String,
        task_id: u64,
        input: Option<Vec<u8>>,
    ) -> Option<Command> {
        let ctx = v1::TaskContext {
            task_id: task_id.to_string(),
            session_id: session_id.clone(),
            input,
        };
        let (outcome, duration_us) = match self.invoke(ctx).await {
            Ok(Invoked::Done(outcome, micros)) => (outcome, micros),
            Ok(Invoked::TimedOut(limit, micros)) => {
                return self
                    .timed_out(seq, session_id, task_id, limit, micros)
                    .await;
            }
            Ok(Invoked::NoInstance) => {
                let why = format!(
                    "executor {} holds no instance bound to session {session_id}",
                    self.id
                );
                (TaskOutcome::failed(why), 0)
            }
            Err(next) => {
                self.stop().await;
                return self.interrupted(seq, next);
            }
        };
        if self
            .instance
            .as_ref()
            .is_some_and(|i| i.dead_reason().is_some())
        {
            self.stop().await;
        }
        let kind = EventKind::TaskDone {
            session_id,
            task_id,
            outcome,
            duration_us,
        };
        self.emit(seq, kind);
        None
    }

    /// Calls `OnTaskInvoke` on the instance bound to the task's session, bounded by the
    /// binding's task timeout; `Err` carries the command that interrupted it.
    async fn invoke(&mut self, ctx: v1::TaskContext) -> Result<Invoked, Command> {
        let limit = self.task_timeout;
        let instance = match self.instance.as_mut() {
            Some(instance) if instance.session_id() == ctx.session_id => instance,
            _ => return Ok(Invoked::NoInstance),
        };
        self.metrics.tasks_invoked.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let outcome = interruptible(&mut self.rx, within(limit, instance.invoke(ctx))).await?;
        let micros = u64::try_from(started.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        Ok(match outcome {
            Ok(outcome) => {
                let limited = limit_output(outcome, self.template.max_task_output_bytes);
                Invoked::Done(limited, micros)
            }
            Err(limit) => Invoked::TimedOut(limit, micros),
        })
    }

    /// Reports a task that exceeded its timeout as failed, then stops its instance (it may be
    /// stuck); the next task of the session relaunches it.
    async fn timed_out(
        &mut self,
        seq: u64,
        session_id: String,
        task_id: u64,
        limit: Duration,
        duration_us: u64,
    ) -> Option<Command> {
        let message = task_timeout::message(limit);
        tracing::warn!(
            executor_id = %self.id, %session_id, task_id, "{message}; stopping the instance"
        );
        // Taken first, so the event says the executor holds nothing and the outcome is not
        // delayed by the stop's grace period.
        let instance = self.instance.take();
        let kind = EventKind::TaskDone {
            session_id,
            task_id,
            outcome: TaskOutcome::failed(message),
            duration_us,
        };
        self.emit(seq, kind);
        if let Some(instance) = instance {
            instance.stop().await;
        }
        None
    }

    /// Reports an interrupted command and hands back the interrupting one.
    fn interrupted(&mut self, seq: u64, next: Command) -> Option<Command> {
        tracing::info!(executor_id = %self.id, "operation interrupted; instance stopped");
        self.emit(seq, EventKind::Interrupted);
        Some(next)
    }

    /// Calls `OnSessionLeave` (failures are logged by the shim) and stops the instance.
    async fn leave_and_stop(&mut self) {
        self.warm_app = None;
        if let Some(mut instance) = self.instance.take() {
            let _ = instance.leave().await;
            instance.stop().await;
        }
    }

    /// Calls `OnSessionLeave`, then parks the instance when its application opted in to warm
    /// switches and it left cleanly; otherwise stops it.
    async fn leave_and_park(&mut self) {
        let warm_app = self.warm_app.take();
        let Some(mut instance) = self.instance.take() else {
            return;
        };
        let left = instance.leave().await.is_ok();
        match warm_app {
            Some(app) if left => {
                if let Some(old) = self.parked.replace(Parked { app, instance }) {
                    old.instance.stop().await;
                }
            }
            _ => {
                instance.stop().await;
            }
        }
    }

    /// Stops the bound instance, if any, keeping a parked one.
    async fn stop_bound(&mut self) {
        self.warm_app = None;
        if let Some(instance) = self.instance.take() {
            instance.stop().await;
        }
    }

    /// Stops the bound instance and the parked one, if any.
    async fn stop(&mut self) {
        self.stop_bound().await;
        if let Some(parked) = self.parked.take() {
            parked.instance.stop().await;
        }
    }

    /// Sends the event answering command `seq`.
    fn emit(&self, seq: u64, kind: EventKind) {
        let event = Event {
            executor_id: self.id.clone(),
            worker: self.nonce,
            seq,
            holds: self.instance.as_ref().map(|i| i.session_id().to_owned()),
            kind,
        };
        // The reconciler only goes away when the agent stops; nothing is left to tell then.
        let _ = self.events.send(event);
    }
}

/// How one invocation ended, short of an interruption.
enum Invoked {
    /// The instance answered: the outcome (output limit applied) and the wall time in µs.
    Done(TaskOutcome, u64),
    /// The task timeout (given) ran out after the wall time in µs.
    TimedOut(Duration, u64),
    /// No instance is bound to the task's session.
    NoInstance,
}

/// Runs `op` for at most `limit` (forever when `None`); `Err(limit)` when it ran out first.
async fn within<T>(limit: Option<Duration>, op: impl Future<Output = T>) -> Result<T, Duration> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, op).await.map_err(|_| limit),
        None => Ok(op.await),
    }
}

/// Runs `op` unless a command arrives first; then `op` is dropped and the command returned.
async fn interruptible<T>(
    rx: &mut mpsc::UnboundedReceiver<Command>,
    op: impl Future<Output = T>,
) -> Result<T, Command> {
    tokio::select! {
        biased;
        out = op => Ok(out),
        command = rx.recv() => Err(command.unwrap_or(Command::Exit { leave: false })),
    }
}

/// Fails a task whose output exceeds `max` bytes, naming the limit (spec "Bad input").
pub fn limit_output(outcome: TaskOutcome, max: usize) -> TaskOutcome {
    match &outcome.output {
        Some(output) if output.len() > max => TaskOutcome::failed(
            FlameError::TooLarge {
                what: "task output".to_owned(),
                size: output.len(),
                limit: max,
            }
            .to_string(),
        ),
        _ => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_output_fails_the_task_naming_the_limit() {
        let ok = TaskOutcome {
            return_code: 0,
            output: Some(bytes::Bytes::from_static(b"0123456789")),
            message: None,
        };
        assert_eq!(limit_output(ok.clone(), 10), ok);
        let failed = limit_output(ok, 9);
        assert!(!failed.succeeded());
        assert_eq!(
            failed.message.as_deref(),
            Some("task output is too large: 10 bytes exceeds the limit of 9 bytes")
        );
    }
}
