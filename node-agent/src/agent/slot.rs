//! One executor as the reconciler sees it: what its worker is doing, which session its
//! instance is bound to, and the outcomes the leader has not stopped asking for.
//!
//! What: [`Slot::reconcile`] compares the executor's newest assignment with that state and
//! sends its worker at most one command (the contract's "what the agent does" table);
//! [`Slot::on_event`] takes the worker's answer. Both are level-triggered: whatever happened
//! before, the next step depends only on the newest assignment and the slot.
//!
//! Rules that make resent snapshots harmless:
//! - A task outcome is remembered until a snapshot stops listing that task for this executor,
//!   and a remembered task is never run again.
//! - Bind, unbind and release outcomes are remembered while the snapshot still asks for that
//!   step; they are not redone.
//! - Every remembered outcome is sent once per stream generation, so a new leader that still
//!   lists the step gets it again without anything running twice.
//!
//! Caveats: a bind that fails backs the executor off (200 ms doubling to 30 s, with jitter,
//! reset by a successful bind) before the next bind attempt for any session. A `RUN` for a
//! session whose instance is gone (it died, or was stopped) relaunches it without a
//! `BindOutcome`; if that relaunch fails, the next task fails with the bind's message. A task
//! that exceeds its timeout leaves the executor in that state (its instance stopped).

use super::report::{Remembered, ReportBuffer};
use super::worker::{BindLaunch, Command, Event, EventKind};
use crate::instance::{AppLaunch, BindCode, BindError, TaskOutcome as RunOutcome};
use crate::task_timeout;
use flame_proto::agent::{
    BindOutcome, Binding, ExecutorAction, ExecutorAssignment, HeldExecutor, TaskAssignment,
    TaskOutcome, UnbindOutcome,
};
use flame_proto::backoff::Backoff;
use flame_proto::{model, v1};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// First pause after a failed bind.
const BIND_BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest pause between bind attempts.
const BIND_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// The reconciler's context for one step.
pub struct Cx<'a> {
    /// The current stream's generation; 0 while disconnected (nothing is sent).
    pub generation: u64,
    /// The time of this step.
    pub now: Instant,
    /// Outcomes to send.
    pub out: &'a mut ReportBuffer,
}

/// What the worker is doing, as far as the reconciler knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Waiting for a command.
    Idle,
    /// Launching and entering an instance for the session.
    Binding {
        /// The session.
        session_id: String,
    },
    /// Invoking a task.
    Running {
        /// The task's session.
        session_id: String,
        /// The task.
        task_id: u64,
    },
    /// Leaving and stopping.
    Unbinding,
    /// Stopping.
    Stopping,
    /// Stopping and ending.
    Releasing,
}

/// One executor held by the agent.
#[derive(Debug)]
pub struct Slot {
    /// The executor id.
    id: String,
    /// The current worker's number.
    worker: u64,
    /// Commands to the worker.
    tx: mpsc::UnboundedSender<Command>,
    /// Number of the last command sent.
    seq: u64,
    /// What the worker is doing.
    work: Work,
    /// The session of the worker's entered instance.
    holds: Option<String>,
    /// Task outcomes by (session, task).
    tasks: HashMap<(String, u64), Remembered<TaskOutcome>>,
    /// The outcome of the bind the leader still asks for.
    bind: Option<Remembered<BindOutcome>>,
    /// The outcome of the unbind the leader still asks for.
    unbind: Option<Remembered<UnbindOutcome>>,
    /// The release, once done.
    released: Option<Remembered<String>>,
    /// A failed relaunch (session, message), to fail the next task of that session with.
    relaunch_failure: Option<(String, String)>,
    /// Bind backoff.
    backoff: Backoff,
    /// No bind before this time.
    retry_at: Option<Instant>,
    /// Whether the worker has ended.
    ended: bool,
}

impl Slot {
    /// A slot for executor `id` driven by worker `worker` through `tx`.
    pub fn new(id: String, worker: u64, tx: mpsc::UnboundedSender<Command>) -> Self {
        Slot {
            id,
            worker,
            tx,
            seq: 0,
            work: Work::Idle,
            holds: None,
            tasks: HashMap::new(),
            bind: None,
            unbind: None,
            released: None,
            relaunch_failure: None,
            backoff: Backoff::new(BIND_BACKOFF_BASE, BIND_BACKOFF_CAP),
            retry_at: None,
            ended: false,
        }
    }

    /// Whether the worker has ended, so a new one is needed for anything but a release.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Replaces an ended worker.
    pub fn attach(&mut self, worker: u64, tx: mpsc::UnboundedSender<Command>) {
        self.worker = worker;
        self.tx = tx;
        self.work = Work::Idle;
        self.holds = None;
        self.ended = false;
    }

    /// When a backed-off bind may be retried, if that is still ahead.
    pub fn retry_at(&self, now: Instant) -> Option<Instant> {
        self.retry_at.filter(|at| *at > now)
    }

    /// The executor as listed at registration; `None` once its worker has ended.
    pub fn held(&self) -> Option<HeldExecutor> {
        if self.ended {
            return None;
        }
        let running_task_id = match &self.work {
            Work::Running { task_id, .. } => Some(*task_id),
            _ => None,
        };
        Some(HeldExecutor {
            executor_id: self.id.clone(),
            session_id: self.holds.clone(),
            running_task_id,
        })
    }

    /// Tells the worker to end (the executor was forgotten, or the agent stops).
    pub fn exit(&self, leave: bool) {
        let _ = self.tx.send(Command::Exit { leave });
    }

    /// Takes a worker's answer; `false` when it came from a replaced worker.
    pub fn on_event(&mut self, event: Event, cx: &mut Cx) -> bool {
        if event.worker != self.worker {
            return false;
        }
        self.holds = event.holds;
        if event.seq == self.seq && !matches!(event.kind, EventKind::Interrupted) {
            self.work = Work::Idle;
        }
        match event.kind {
            EventKind::Bound {
                session_id,
                result: Ok(()),
                report,
            } => {
                self.backoff.reset();
                self.retry_at = None;
                if report {
                    self.bind = Some(Remembered::new(self.bind_outcome(&session_id, None)));
                }
            }
            EventKind::Bound {
                session_id,
                result: Err(error),
                report,
            } => self.bind_failed(&session_id, error, report, cx),
            EventKind::TaskDone {
                session_id,
                task_id,
                outcome,
                duration_us,
            } => {
                let mut outcome = self.task_outcome(&session_id, task_id, outcome);
                outcome.duration_us = duration_us;
                self.tasks
                    .insert((session_id, task_id), Remembered::new(outcome));
            }
            EventKind::Unbound { session_id } => {
                self.unbind = Some(Remembered::new(UnbindOutcome {
                    executor_id: self.id.clone(),
                    session_id,
                }));
            }
            EventKind::Released => {
                self.released = Some(Remembered::new(self.id.clone()));
                self.ended = true;
            }
            EventKind::Stopped | EventKind::Interrupted => {}
        }
        true
    }

    /// Moves the executor one step towards `assignment` and queues due outcomes.
    pub fn reconcile(&mut self, assignment: &ExecutorAssignment, cx: &mut Cx) {
        let action = ExecutorAction::try_from(assignment.action).ok();
        let session = assignment.binding.as_ref().map(|b| b.session_id.as_str());
        self.forget(action, session, &assignment.tasks);
        if self.work != Work::Idle {
            if !self.wanted(action, session, &assignment.tasks) {
                self.interrupt(action, session);
            }
        } else {
            match action {
                Some(ExecutorAction::Idle) => self.act_idle(),
                Some(ExecutorAction::Bind) => self.act_bind(assignment, cx),
                Some(ExecutorAction::Run) => self.act_run(assignment, cx),
                Some(ExecutorAction::Unbind) => self.act_unbind(session),
                Some(ExecutorAction::Release) => self.act_release(),
                None => tracing::warn!(
                    executor_id = %self.id, action = assignment.action, "unknown executor action"
                ),
            }
        }
        self.offer(cx);
    }

    /// Drops remembered outcomes of steps the assignment no longer asks for.
    fn forget(
        &mut self,
        action: Option<ExecutorAction>,
        session: Option<&str>,
        tasks: &[TaskAssignment],
    ) {
        let Some(action) = action else { return };
        let same = |s: &str| session == Some(s);
        if action == ExecutorAction::Run {
            self.tasks
                .retain(|(s, t), _| tasks.iter().any(|x| x.task_id == *t && x.session_id == *s));
        } else {
            self.tasks.clear();
        }
        if action != ExecutorAction::Bind
            || !self.bind.as_ref().is_some_and(|b| same(&b.item.session_id))
        {
            self.bind = None;
        }
        if action != ExecutorAction::Unbind
            || !self
                .unbind
                .as_ref()
                .is_some_and(|u| same(&u.item.session_id))
        {
            self.unbind = None;
        }
        if action != ExecutorAction::Release {
            self.released = None;
        }
        if action != ExecutorAction::Run
            || !self.relaunch_failure.as_ref().is_some_and(|(s, _)| same(s))
        {
            self.relaunch_failure = None;
        }
    }

    /// Whether the worker's current operation still serves the assignment.
    fn wanted(
        &self,
        action: Option<ExecutorAction>,
        session: Option<&str>,
        tasks: &[TaskAssignment],
    ) -> bool {
        match &self.work {
            Work::Binding { session_id } => {
                matches!(action, Some(ExecutorAction::Bind | ExecutorAction::Run))
                    && session == Some(session_id)
            }
            Work::Running {
                session_id,
                task_id,
            } => {
                action == Some(ExecutorAction::Run)
                    && session == Some(session_id)
                    && tasks
                        .iter()
                        .any(|t| t.task_id == *task_id && t.session_id == *session_id)
            }
            Work::Idle | Work::Unbinding | Work::Stopping | Work::Releasing => true,
        }
    }

    /// Cuts the worker's operation short with the command the assignment calls for.
    fn interrupt(&mut self, action: Option<ExecutorAction>, session: Option<&str>) {
        tracing::info!(executor_id = %self.id, work = ?self.work, ?action, "interrupting");
        match (action, session) {
            (Some(ExecutorAction::Unbind), Some(s)) => {
                let session_id = s.to_owned();
                self.send(|seq| Command::Unbind { seq, session_id }, Work::Unbinding);
            }
            (Some(ExecutorAction::Release), _) => {
                self.send(|seq| Command::Release { seq }, Work::Releasing);
            }
            _ => self.send(|seq| Command::Stop { seq }, Work::Stopping),
        }
    }

    /// `IDLE`: stop a leftover instance.
    fn act_idle(&mut self) {
        if self.holds.is_some() {
            self.send(|seq| Command::Stop { seq }, Work::Stopping);
        }
    }

    /// `BIND`: launch and enter an instance for the session, unless done or backing off.
    fn act_bind(&mut self, assignment: &ExecutorAssignment, cx: &mut Cx) {
        let Some(binding) = &assignment.binding else {
            tracing::warn!(executor_id = %self.id, "BIND without a binding; ignored");
            return;
        };
        let session = binding.session_id.as_str();
        if self.holds.as_deref() == Some(session) {
            if self.bind.is_none() {
                self.bind = Some(Remembered::new(self.bind_outcome(session, None)));
            }
            return;
        }
        if self.holds.is_some() {
            self.send(|seq| Command::Stop { seq }, Work::Stopping);
            return;
        }
        if self.retry_at(cx.now).is_some() {
            return; // Backing off; a failure is already remembered and offered.
        }
        // Retry a failure after its backoff, or redo a bind whose instance has gone.
        self.bind = None;
        self.start_bind(binding, assignment.shim, true, cx);
    }

    /// `RUN`: invoke the first listed task without an outcome, relaunching if needed.
    fn act_run(&mut self, assignment: &ExecutorAssignment, cx: &mut Cx) {
        let Some(binding) = &assignment.binding else {
            tracing::warn!(executor_id = %self.id, "RUN without a binding; ignored");
            return;
        };
        let session = binding.session_id.as_str();
        if self.holds.as_deref().is_some_and(|h| h != session) {
            self.send(|seq| Command::Stop { seq }, Work::Stopping);
            return;
        }
        for task in &assignment.tasks {
            let key = (task.session_id.clone(), task.task_id);
            if self.tasks.contains_key(&key) {
                continue;
            }
            if task.session_id != session {
                let why = format!(
                    "task {} of session {} was assigned to executor {} bound to session {session}",
                    task.task_id, task.session_id, self.id
                );
                self.fail_task(key, why);
                continue;
            }
            if self.holds.is_none() {
                if let Some((_, message)) = self.relaunch_failure.take() {
                    self.fail_task(key, message);
                    continue;
                }
                if self.retry_at(cx.now).is_none() {
                    self.start_bind(binding, assignment.shim, false, cx);
                }
                return;
            }
            let (session_id, task_id, input) = (key.0, key.1, task.input.clone());
            let work = Work::Running {
                session_id: session_id.clone(),
                task_id,
            };
            self.send(
                |seq| Command::Run {
                    seq,
                    session_id,
                    task_id,
                    input,
                },
                work,
            );
            return;
        }
    }

    /// `UNBIND`: leave and stop the instance, then report; at once when there is none.
    fn act_unbind(&mut self, session: Option<&str>) {
        let Some(session) = session else {
            tracing::warn!(executor_id = %self.id, "UNBIND without a binding; ignored");
            return;
        };
        if self.unbind.is_some() {
            return;
        }
        let session_id = session.to_owned();
        if self.holds.is_some() {
            self.send(|seq| Command::Unbind { seq, session_id }, Work::Unbinding);
        } else {
            self.unbind = Some(Remembered::new(UnbindOutcome {
                executor_id: self.id.clone(),
                session_id,
            }));
        }
    }

    /// `RELEASE`: stop everything, end the worker, report the executor released.
    fn act_release(&mut self) {
        if self.released.is_some() {
            return;
        }
        if self.ended {
            self.released = Some(Remembered::new(self.id.clone()));
            return;
        }
        self.send(|seq| Command::Release { seq }, Work::Releasing);
    }

    /// Sends the worker a bind for `binding`, or records why it cannot even start.
    fn start_bind(&mut self, binding: &Binding, shim: i32, report: bool, cx: &mut Cx) {
        match launch_parts(binding, shim) {
            Ok(launch) => {
                let session_id = binding.session_id.clone();
                let work = Work::Binding {
                    session_id: session_id.clone(),
                };
                self.send(
                    |seq| Command::Bind {
                        seq,
                        session_id,
                        launch: Box::new(launch),
                        report,
                    },
                    work,
                );
            }
            Err(error) => self.bind_failed(&binding.session_id, error, report, cx),
        }
    }

    /// Records a failed bind and backs the executor off.
    fn bind_failed(&mut self, session: &str, error: BindError, report: bool, cx: &mut Cx) {
        self.retry_at = Some(cx.now + self.backoff.next_delay());
        if report {
            self.bind = Some(Remembered::new(self.bind_outcome(session, Some(error))));
        } else {
            self.relaunch_failure = Some((session.to_owned(), error.message));
        }
    }

    /// Remembers a failed task the worker never saw.
    fn fail_task(&mut self, key: (String, u64), why: String) {
        tracing::warn!(executor_id = %self.id, task_id = key.1, reason = %why, "task failed");
        let outcome = self.task_outcome(&key.0, key.1, RunOutcome::failed(why));
        self.tasks.insert(key, Remembered::new(outcome));
    }

    /// Queues every remembered outcome not yet sent on this stream.
    fn offer(&mut self, cx: &mut Cx) {
        if cx.generation == 0 {
            return;
        }
        for remembered in self.tasks.values_mut() {
            if let Some(outcome) = remembered.take_due(cx.generation) {
                cx.out.task(outcome);
            }
        }
        if let Some(outcome) = self.bind.as_mut().and_then(|b| b.take_due(cx.generation)) {
            cx.out.bind(outcome);
        }
        if let Some(outcome) = self.unbind.as_mut().and_then(|u| u.take_due(cx.generation)) {
            cx.out.unbind(outcome);
        }
        if let Some(id) = self
            .released
            .as_mut()
            .and_then(|r| r.take_due(cx.generation))
        {
            cx.out.released(id);
        }
    }

    /// Sends a command numbered with the next `seq`; marks the worker ended if it is gone.
    fn send(&mut self, command: impl FnOnce(u64) -> Command, work: Work) {
        self.seq += 1;
        if self.tx.send(command(self.seq)).is_ok() {
            self.work = work;
        } else {
            tracing::warn!(executor_id = %self.id, "executor worker is gone");
            self.ended = true;
            self.work = Work::Idle;
            self.holds = None;
        }
    }

    /// The wire form of a bind result.
    fn bind_outcome(&self, session: &str, error: Option<BindError>) -> BindOutcome {
        BindOutcome {
            executor_id: self.id.clone(),
            session_id: session.to_owned(),
            return_code: error.as_ref().map_or(0, |e| e.code.value()),
            message: error.map(|e| e.message),
        }
    }

    /// The wire form of a task result.
    fn task_outcome(&self, session: &str, task_id: u64, outcome: RunOutcome) -> TaskOutcome {
        TaskOutcome {
            executor_id: self.id.clone(),
            session_id: session.to_owned(),
            task_id,
            return_code: outcome.return_code,
            output: outcome.output.map(|b| b.to_vec()),
            message: outcome.message,
            duration_us: 0,
        }
    }
}

/// What to launch, the `OnSessionEnter` request and the task-timeout label of a binding; a
/// bind error when the assignment cannot be launched by this agent (including a malformed
/// `flame.task-timeout` or `flame.warm-switch` label, code 19, naming the label and its value).
fn launch_parts(binding: &Binding, shim: i32) -> Result<BindLaunch, BindError> {
    if shim != v1::Shim::Host as i32 {
        return Err(BindError::shim(format!(
            "shim {shim} is not supported by this agent (only Host)"
        )));
    }
    let wire = binding.application.clone().ok_or_else(|| {
        BindError::new(BindCode::Unknown, "the assignment carries no application")
    })?;
    let app = model::Application::try_from(wire).map_err(|e| {
        BindError::new(
            BindCode::Unknown,
            format!("invalid application in the assignment: {e}"),
        )
    })?;
    let task_timeout = task_timeout::from_labels(&app.spec.labels)
        .map_err(|why| BindError::new(BindCode::Unknown, why))?;
    let warm_switch = flame_proto::model::labels::warm_switch(&app.spec.labels)
        .map_err(|why| BindError::new(BindCode::Unknown, why))?;
    let ctx = v1::SessionContext {
        session_id: binding.session_id.clone(),
        application: Some(v1::ApplicationContext::from(&app)),
        common_data: binding.common_data.clone(),
    };
    Ok(BindLaunch {
        app: AppLaunch::from(&app),
        ctx,
        task_timeout,
        warm_switch,
    })
}

#[cfg(test)]
mod tests;
