//! The host shim: one application instance for one binding (spec sections 7.1–7.5).
//!
//! What: [`Instance::launch`] starts the application's process per the launch contract and
//! connects to its `flame.v1.Instance` server over a Unix socket; [`Instance::enter`],
//! [`Instance::invoke`] and [`Instance::leave`] make the three calls; [`Instance::stop`] ends the
//! process group and removes the socket and scratch directories. The executor loop drives one
//! `Instance` per binding and reports [`BindError`]s and [`TaskOutcome`]s to the control plane.
//!
//! Why a library API: the executor loop, recovery after leader changes and the tests all need
//! the same lifecycle, and every failure must come back as data (a bind code and a message, or
//! a failed task) rather than as a crash, so the agent can back off instead of crash-looping.
//!
//! Caveats:
//! - Calls take `&mut self`, so one instance never sees concurrent invocations.
//! - After a transport error or process exit the instance is marked dead: later calls fail at
//!   once with the reason. The caller should still [`Instance::stop`] it to clean up.
//! - Dropping an instance without `stop` SIGKILLs its group and removes its files (no grace);
//!   so does dropping an unfinished [`Instance::launch`] future, so launches can be cancelled.
//! - [`Instance::launch`] first installs the application when it has an `installer` (spec
//!   section 7.6, [`install`]); a failure is a code-10 bind error and nothing is started.
//! - [`launch_count`] counts processes started in this agent process, including launches that
//!   then failed to bind.
//! - One process serves one session unless its application opts in to warm switches; then
//!   [`Instance::switch_session`] readies a process that left its session for the next one.

mod archive;
mod connect;
mod download;
mod error;
mod expand;
pub mod install;
mod process;
mod release;
mod spec;
mod vars;

pub use connect::{MAX_MESSAGE_BYTES, connect};
pub use error::{BindCode, BindError, InstanceError};
pub use expand::expand_vars;
pub use process::{STDERR_TAIL_BYTES, group_alive};
pub use release::gc::{
    OWNER as RELEASE_OWNER, Swept, owners as release_owners, sweep as sweep_releases,
};
pub use release::{MARKER as RELEASE_MARKER, Release, releases_under};
pub use spec::{
    AppLaunch, DEFAULT_LEAVE_TIMEOUT, DEFAULT_STARTUP_TIMEOUT, DEFAULT_STOP_GRACE, InstancePaths,
    LaunchPlan, LaunchSpec, MAX_EXECUTOR_ID_LEN, MAX_SOCKET_PATH_BYTES, check_executor_id,
};
pub use vars::{EnvMode, InstallVar};

use bytes::Bytes;
use flame_proto::v1::{self, instance_client::InstanceClient};
use nix::sys::signal::Signal;
use std::future::Future;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::process::Child;
use tokio::time::Instant;
use tonic::transport::Channel;

/// How long to wait for the group to die after SIGKILL before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a transport failure waits for the process's exit to become visible.
const EXIT_GRACE: Duration = Duration::from_millis(200);
/// Longest pause between two checks of the socket while an instance starts.
const MAX_READY_POLL: Duration = Duration::from_millis(50);

/// Instance processes started by this agent process.
static LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// How many instance processes this agent process has started, failed binds included.
pub fn launch_count() -> u64 {
    LAUNCHES.load(Ordering::Relaxed)
}

/// The result of one `OnTaskInvoke`, as reported to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// 0 for success; anything else is a failure (only zero versus non-zero matters).
    pub return_code: i32,
    /// The task's output, when the service returned one.
    pub output: Option<Bytes>,
    /// Why the task failed; the text of its code-3 event.
    pub message: Option<String>,
}

impl TaskOutcome {
    /// Whether the task succeeded.
    pub fn succeeded(&self) -> bool {
        self.return_code == 0
    }

    /// A failure reported by the shim itself rather than the service.
    pub fn failed(message: impl Into<String>) -> Self {
        TaskOutcome {
            return_code: -1,
            output: None,
            message: Some(message.into()),
        }
    }
}

/// How [`Instance::stop`] ended the process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The leader's exit status, when it was observed.
    pub status: Option<ExitStatus>,
    /// Whether SIGKILL was needed because the group outlived the grace period.
    pub forced: bool,
}

/// Where the instance is in its one-session lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Launched; `OnSessionEnter` not yet called.
    Launched,
    /// `OnSessionEnter` was called and failed; only leave and stop remain.
    EnterFailed,
    /// `OnSessionEnter` succeeded; tasks may run.
    Entered,
    /// `OnSessionLeave` was called.
    Left,
}

impl Phase {
    /// The phase as a phrase for error messages.
    fn describe(self) -> &'static str {
        match self {
            Phase::Launched => "before OnSessionEnter",
            Phase::EnterFailed => "after OnSessionEnter failed",
            Phase::Entered => "after OnSessionEnter",
            Phase::Left => "after OnSessionLeave",
        }
    }
}

/// One running application instance, bound to one session.
#[derive(Debug)]
pub struct Instance {
    /// The executor this instance runs for.
    executor_id: String,
    /// The session it serves.
    session_id: String,
    /// The process group leader.
    child: Child,
    /// The process group id (the leader's pid).
    pgid: i32,
    /// Where this launch's stderr starts in the log.
    stderr_offset: u64,
    /// The gRPC client over the socket.
    client: InstanceClient<Channel>,
    /// Socket, directories and logs.
    paths: InstancePaths,
    /// Lifecycle phase.
    phase: Phase,
    /// Why the instance is dead, once it is.
    dead: Option<String>,
    /// SIGTERM-to-SIGKILL grace at stop.
    stop_grace: Duration,
    /// Bound on `OnSessionLeave`.
    leave_timeout: Duration,
    /// Set by `stop`, so `Drop` does nothing more.
    stopped: bool,
}

/// Why an instance did not become ready.
enum NotReady {
    /// The process exited first.
    Exited(String),
    /// The deadline passed first.
    TimedOut,
}

impl Instance {
    /// Installs the application when it has an installer, then starts the instance for
    /// `spec` and connects to it, within `spec.startup_timeout` (installation not counted).
    ///
    /// An installation failure is a [`BindError`] with code 10 (`application installation
    /// failed: ...`). Every other failure has code 11 (`shim creation failed: ...`); when the
    /// process started, its group is killed, its files are removed and the message ends with
    /// its stderr tail.
    pub async fn launch(mut spec: LaunchSpec) -> Result<Instance, BindError> {
        let installed = install::install(&spec).await?;
        spec.installed.extend(installed);
        let started = Instant::now();
        let plan = spec.plan()?;
        prepare(&plan.paths, spec.application.working_directory.is_some())?;
        let launch_no = LAUNCHES.load(Ordering::Relaxed) + 1;
        let header = format!(
            "launch #{launch_no}: application {} session {} command {:?}",
            spec.application.name, spec.session_id, plan.program
        );
        let mut spawned = match process::spawn(&plan, &header) {
            Ok(spawned) => spawned,
            Err(e) => {
                cleanup(&plan.paths);
                return Err(e);
            }
        };
        LAUNCHES.fetch_add(1, Ordering::Relaxed);
        // If this future is dropped before the instance is ready, kill the group and clean up.
        let mut guard = LaunchGuard {
            pgid: spawned.pgid,
            paths: plan.paths.clone(),
            armed: true,
        };
        tracing::info!(
            executor_id = %spec.executor_id, session_id = %spec.session_id,
            application = %spec.application.name, pid = spawned.pgid,
            socket = %plan.paths.socket.display(), "instance started"
        );
        let deadline = started + spec.startup_timeout;
        match wait_ready(&mut spawned.child, &plan.paths.socket, deadline).await {
            Ok(client) => {
                guard.armed = false;
                tracing::info!(
                    executor_id = %spec.executor_id, session_id = %spec.session_id,
                    pid = spawned.pgid, ready_ms = started.elapsed().as_millis() as u64,
                    "instance ready"
                );
                Ok(Instance {
                    executor_id: spec.executor_id,
                    session_id: spec.session_id,
                    child: spawned.child,
                    pgid: spawned.pgid,
                    stderr_offset: spawned.stderr_offset,
                    client,
                    paths: plan.paths,
                    phase: Phase::Launched,
                    dead: None,
                    stop_grace: spec.stop_grace,
                    leave_timeout: spec.leave_timeout,
                    stopped: false,
                })
            }
            Err(not_ready) => {
                let error = abandon(&spec, &plan, spawned, not_ready).await;
                guard.armed = false;
                Err(error)
            }
        }
    }

    /// Calls `OnSessionEnter`, exactly once. A non-zero return code or a transport failure is
    /// a [`BindError`] with code 12 and the service's message (`on_session_enter failed: ...`).
    pub async fn enter(&mut self, ctx: v1::SessionContext) -> Result<(), BindError> {
        let fail = |detail: String| BindError::new(BindCode::SessionEnterFailed, detail);
        self.check_phase("OnSessionEnter", Phase::Launched)
            .map_err(|e| fail(e.to_string()))?;
        if ctx.session_id != self.session_id {
            tracing::warn!(
                executor_id = %self.executor_id, expected = %self.session_id,
                got = %ctx.session_id, "OnSessionEnter for another session than launched for"
            );
        }
        // Exactly once (spec section 7.1): a failed attempt is not retried on this process.
        self.phase = Phase::EnterFailed;
        let answer = watch_exit(&mut self.child, self.client.on_session_enter(ctx)).await;
        let result = self.settle("OnSessionEnter", answer).await.map_err(fail)?;
        if result.return_code != 0 {
            return Err(fail(failure_text(result.return_code, result.message)));
        }
        self.phase = Phase::Entered;
        tracing::info!(executor_id = %self.executor_id, session_id = %self.session_id, "session entered");
        Ok(())
    }

    /// Calls `OnTaskInvoke` for one task. Never fails as a call: a service failure, a
    /// transport error or a dead process all become a failed [`TaskOutcome`] whose message
    /// says what happened.
    pub async fn invoke(&mut self, task: v1::TaskContext) -> TaskOutcome {
        if let Err(e) = self.check_phase("OnTaskInvoke", Phase::Entered) {
            return TaskOutcome::failed(e.to_string());
        }
        let task_id = task.task_id.clone();
        let answer = watch_exit(&mut self.child, self.client.on_task_invoke(task)).await;
        match self.settle("OnTaskInvoke", answer).await {
            Ok(result) => {
                let message = match result.return_code {
                    0 => result.message,
                    code => Some(failure_text(code, result.message)),
                };
                tracing::debug!(
                    executor_id = %self.executor_id, session_id = %self.session_id, %task_id,
                    return_code = result.return_code, "task invoked"
                );
                TaskOutcome {
                    return_code: result.return_code,
                    output: result.output.map(Bytes::from),
                    message,
                }
            }
            Err(why) => TaskOutcome::failed(why),
        }
    }

    /// Calls `OnSessionLeave`, at most once, bounded by the spec's leave timeout. Failures are
    /// logged and returned; per spec section 7.5 the caller proceeds to [`Instance::stop`]
    /// either way.
    pub async fn leave(&mut self) -> Result<(), InstanceError> {
        let outcome = self.leave_inner().await;
        match &outcome {
            Ok(()) => tracing::info!(
                executor_id = %self.executor_id, session_id = %self.session_id, "session left"
            ),
            Err(e) => tracing::warn!(
                executor_id = %self.executor_id, session_id = %self.session_id, error = %e,
                "OnSessionLeave failed; proceeding to stop"
            ),
        }
        outcome
    }

    /// The body of [`Instance::leave`].
    async fn leave_inner(&mut self) -> Result<(), InstanceError> {
        if self.phase == Phase::Left {
            return Err(InstanceError::WrongPhase {
                call: "OnSessionLeave",
                phase: Phase::Left.describe(),
            });
        }
        if let Some(why) = &self.dead {
            return Err(InstanceError::NotRunning(why.clone()));
        }
        self.phase = Phase::Left;
        let call = self.client.on_session_leave(v1::EmptyRequest {});
        let answer = tokio::time::timeout(self.leave_timeout, watch_exit(&mut self.child, call));
        let answer = match answer.await {
            Ok(answer) => answer,
            Err(_) => {
                let detail = format!("no answer within {:.1}s", self.leave_timeout.as_secs_f64());
                self.dead = Some(format!("OnSessionLeave: {detail}"));
                return Err(InstanceError::Transport {
                    call: "OnSessionLeave",
                    detail,
                });
            }
        };
        let result = self
            .settle("OnSessionLeave", answer)
            .await
            .map_err(|detail| InstanceError::Transport {
                call: "OnSessionLeave",
                detail,
            })?;
        if result.return_code != 0 {
            return Err(InstanceError::Rejected {
                call: "OnSessionLeave",
                return_code: result.return_code,
                message: failure_text(result.return_code, result.message),
            });
        }
        Ok(())
    }

    /// Readies an instance that left its session to enter `session_id` (a warm switch, see
    /// [`flame_proto::model::labels`]): the next call must be [`Instance::enter`]. Fails, changing nothing,
    /// unless the instance is alive and its last call was a successful `OnSessionLeave`.
    pub fn switch_session(&mut self, session_id: &str) -> Result<(), InstanceError> {
        self.check_phase("a warm switch", Phase::Left)?;
        tracing::info!(
            executor_id = %self.executor_id, from = %self.session_id, to = %session_id,
            "warm switch"
        );
        self.session_id = session_id.to_owned();
        self.phase = Phase::Launched;
        Ok(())
    }

    /// Ends the instance: SIGTERM to its process group, up to the grace period for the whole
    /// group to exit, then SIGKILL; finally removes the socket file and the scratch and
    /// temporary directories. Log files are kept.
    pub async fn stop(mut self) -> Stopped {
        self.stopped = true;
        if let Err(e) = process::signal_group(self.pgid, Signal::SIGTERM) {
            tracing::warn!(executor_id = %self.executor_id, pgid = self.pgid, error = %e, "SIGTERM failed");
        }
        let graceful =
            tokio::time::timeout(self.stop_grace, wait_group_exit(&mut self.child, self.pgid));
        let stopped = match graceful.await {
            Ok(status) => Stopped {
                status,
                forced: false,
            },
            Err(_) => {
                kill_now(&mut self.child, self.pgid).await;
                Stopped {
                    status: self.child.try_wait().ok().flatten(),
                    forced: true,
                }
            }
        };
        cleanup(&self.paths);
        tracing::info!(
            executor_id = %self.executor_id, session_id = %self.session_id,
            status = ?stopped.status, forced = stopped.forced, "instance stopped"
        );
        stopped
    }

    /// Checks that the instance is alive and in `expected` phase before `call`.
    fn check_phase(&self, call: &'static str, expected: Phase) -> Result<(), InstanceError> {
        if let Some(why) = &self.dead {
            return Err(InstanceError::NotRunning(why.clone()));
        }
        if self.phase != expected {
            return Err(InstanceError::WrongPhase {
                call,
                phase: self.phase.describe(),
            });
        }
        Ok(())
    }

    /// Turns the answer of a call into its message, or into a description of the failure,
    /// marking the instance dead on any transport error or process exit.
    ///
    /// A killed process closes its socket before it can be waited for, so after a transport
    /// error the exit gets [`EXIT_GRACE`] to show up and be named as the reason.
    async fn settle<T>(
        &mut self,
        call: &'static str,
        answer: Result<Result<tonic::Response<T>, tonic::Status>, String>,
    ) -> Result<T, String> {
        let why = match answer {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) => match tokio::time::timeout(EXIT_GRACE, self.child.wait()).await {
                Ok(Ok(exit)) => format!("instance process exited ({exit}) during {call}"),
                _ => format!(
                    "{call} failed in transport: {:?}: {}",
                    status.code(),
                    status.message()
                ),
            },
            Err(exit) => format!("instance {exit} during {call}"),
        };
        let tail = process::stderr_tail(&self.paths.stderr_log, self.stderr_offset);
        let why = format!("{why}; stderr: {tail}");
        tracing::warn!(
            executor_id = %self.executor_id, session_id = %self.session_id, reason = %why,
            "instance is dead"
        );
        self.dead = Some(why.clone());
        Err(why)
    }

    /// The executor this instance runs for.
    pub fn executor_id(&self) -> &str {
        &self.executor_id
    }

    /// The session this instance serves.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The instance's process group id (also the leader's pid).
    pub fn process_group(&self) -> i32 {
        self.pgid
    }

    /// The binding's socket, directories and logs.
    pub fn paths(&self) -> &InstancePaths {
        &self.paths
    }

    /// The socket path (`FLAME_INSTANCE_ENDPOINT`).
    pub fn socket_path(&self) -> &Path {
        &self.paths.socket
    }

    /// Why the instance is dead, or `None` while it is believed alive.
    pub fn dead_reason(&self) -> Option<&str> {
        self.dead.as_deref()
    }
}

impl Drop for Instance {
    /// Without [`Instance::stop`], SIGKILLs the group and removes the binding's files.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        tracing::warn!(executor_id = %self.executor_id, pgid = self.pgid, "instance dropped without stop; killing it");
        let _ = process::signal_group(self.pgid, Signal::SIGKILL);
        cleanup(&self.paths);
    }
}

/// Kills a started process group and removes its files when [`Instance::launch`] is dropped
/// (cancelled) before the instance is ready; a launch that finishes disarms it.
struct LaunchGuard {
    /// The group to kill.
    pgid: i32,
    /// The files to remove.
    paths: InstancePaths,
    /// Whether dropping still has to clean up.
    armed: bool,
}

impl Drop for LaunchGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::warn!(pgid = self.pgid, "instance launch cancelled; killing it");
            let _ = process::signal_group(self.pgid, Signal::SIGKILL);
            cleanup(&self.paths);
        }
    }
}

/// Kills an instance that did not become ready, removes its files, and describes why as a
/// code-11 bind error ending with its stderr tail.
async fn abandon(
    spec: &LaunchSpec,
    plan: &LaunchPlan,
    mut spawned: process::Spawned,
    not_ready: NotReady,
) -> BindError {
    let socket = plan.paths.socket.display();
    let reason = match not_ready {
        NotReady::Exited(how) => format!("instance {how} before opening its socket {socket}"),
        NotReady::TimedOut => format!(
            "instance did not open its socket {socket} within {:.1}s",
            spec.startup_timeout.as_secs_f64()
        ),
    };
    kill_now(&mut spawned.child, spawned.pgid).await;
    cleanup(&plan.paths);
    let tail = process::stderr_tail(&plan.paths.stderr_log, spawned.stderr_offset);
    tracing::warn!(
        executor_id = %spec.executor_id, session_id = %spec.session_id,
        %reason, stderr = %tail, "instance failed to start"
    );
    BindError::shim(format!("{reason}; stderr: {tail}"))
}

/// The message of a non-zero answer: the service's own text, or a note that it sent none.
fn failure_text(return_code: i32, message: Option<String>) -> String {
    message
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| format!("the instance returned {return_code} without a message"))
}

/// Runs `call` unless the process exits first; the error describes the exit.
async fn watch_exit<T>(child: &mut Child, call: impl Future<Output = T>) -> Result<T, String> {
    tokio::select! {
        biased;
        out = call => Ok(out),
        status = child.wait() => Err(match status {
            Ok(status) => format!("process exited ({status})"),
            Err(e) => format!("process could not be waited for ({e})"),
        }),
    }
}

/// Waits until the socket accepts a gRPC connection, the process exits, or `deadline`.
async fn wait_ready(
    child: &mut Child,
    socket: &Path,
    deadline: Instant,
) -> Result<InstanceClient<Channel>, NotReady> {
    let connect = async {
        let mut pause = Duration::from_millis(2);
        loop {
            if socket.exists() {
                match connect::connect(socket).await {
                    Ok(client) => return client,
                    Err(e) => tracing::trace!(socket = %socket.display(), error = %e, "not ready"),
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_READY_POLL);
        }
    };
    tokio::select! {
        biased;
        status = child.wait() => Err(NotReady::Exited(match status {
            Ok(status) => format!("exited ({status})"),
            Err(e) => format!("could not be waited for ({e})"),
        })),
        client = connect => Ok(client),
        () = tokio::time::sleep_until(deadline) => Err(NotReady::TimedOut),
    }
}

/// Waits for the leader to exit and then for the rest of its group.
async fn wait_group_exit(child: &mut Child, pgid: i32) -> Option<ExitStatus> {
    let status = child.wait().await.ok();
    let mut pause = Duration::from_millis(2);
    while group_alive(pgid) {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_READY_POLL);
    }
    status
}

/// SIGKILLs the group and waits (bounded) for it to be gone.
async fn kill_now(child: &mut Child, pgid: i32) {
    if let Err(e) = process::signal_group(pgid, Signal::SIGKILL) {
        tracing::warn!(pgid, error = %e, "SIGKILL failed");
    }
    if tokio::time::timeout(KILL_WAIT, wait_group_exit(child, pgid))
        .await
        .is_err()
    {
        tracing::error!(pgid, "process group still alive after SIGKILL");
    }
}

/// Creates the binding's directories and makes sure no file is at the socket path.
fn prepare(paths: &InstancePaths, app_working_dir: bool) -> Result<(), BindError> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        BindError::shim(format!("cannot {what} {}: {e}", path.display()))
    };
    if let Some(dir) = paths.socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail("create socket directory", dir, e))?;
    }
    match std::fs::remove_file(&paths.socket) {
        Ok(()) => tracing::warn!(socket = %paths.socket.display(), "removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail("remove stale socket", &paths.socket, e)),
    }
    match std::fs::remove_dir_all(&paths.scratch_dir) {
        Ok(()) => {
            tracing::warn!(dir = %paths.scratch_dir.display(), "removed a stale scratch directory")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(fail(
                "remove stale scratch directory",
                &paths.scratch_dir,
                e,
            ));
        }
    }
    std::fs::create_dir_all(&paths.tmp_dir)
        .map_err(|e| fail("create temporary directory", &paths.tmp_dir, e))?;
    if app_working_dir {
        std::fs::create_dir_all(&paths.working_dir)
            .map_err(|e| fail("create working directory", &paths.working_dir, e))?;
    }
    Ok(())
}

/// Removes the socket file and the scratch directory (with the temporary directory in it).
fn cleanup(paths: &InstancePaths) {
    if let Err(e) = std::fs::remove_file(&paths.socket)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %paths.socket.display(), error = %e, "cannot remove socket");
    }
    if let Err(e) = std::fs::remove_dir_all(&paths.scratch_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %paths.scratch_dir.display(), error = %e, "cannot remove scratch directory");
    }
}
