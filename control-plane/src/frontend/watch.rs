//! WatchTask: a server stream of one task's changes, served from this member's own applied
//! state, so a watch held on a follower keeps delivering through a leader change.
//!
//! How:
//! - [`WatchHub`] follows the member's published [`StateView`]s (one subscriber per member,
//!   however many watches are open) and wakes only the watches an effect concerns:
//!   `TaskChanged` wakes the watches of that task, `SessionClosed` and `SessionRemoved` every
//!   watch of the session, and `Restored` or a revision that jumped by more than one (views
//!   this subscriber never saw) wakes them all.
//! - A woken watch reads the newest view and compares the task with the last one it sent; it
//!   sends the task when it differs, ends with OK after a terminal state (Succeed, Failed,
//!   Cancelled), and ends with NOT_FOUND when the task or its session is gone.
//! - The first message is the task as it is when the watch starts (the specification allows
//!   sending the current state first; flamepy ignores non-terminal messages). The start is a
//!   linearizable read when a leader answers, so a task just created through any member is
//!   found; without a leader the watch starts from this member's own state, and waits up to
//!   [`CATCH_UP_WAIT`] for the task to appear there, since a create acknowledged just before
//!   a leader change may not have reached this member yet.
//! - Every message carries the task's events (the specification's compatible improvement), so
//!   flamepy raises the service's real error text.
//!
//! Why a hub: each batch of commands can carry thousands of effects; scanning them once per
//! member instead of once per watch keeps the cost of a batch independent of how many watches
//! are open.
//!
//! Caveats:
//! - A watch registers with the hub before it reads its first view, and a wake-up is a stored
//!   [`Notify`] permit, so no change between the two is lost; several changes between two reads
//!   arrive as one message with the newest state (intermediate non-terminal states may be
//!   skipped, terminal ones never are, since a watch ends on them).
//! - Each watch ends when the client cancels it (its receiver is dropped), at a terminal state,
//!   when the task disappears, when the member shuts down (UNAVAILABLE), or when the member
//!   has known no leader for [`LEADERLESS_LIMIT`] (UNAVAILABLE, review D10: a member cut off
//!   from the majority would otherwise hold the watch on frozen state forever): no watch
//!   outlives its client or its member's contact with the cluster.

use super::request;
use super::tasks::lookup;
use crate::member::handle::MemberHandle;
use crate::state::{Effect, State, StateReader, StateView};
use flame_proto::error::FlameError;
use flame_proto::model::Task;
use flame_proto::v1;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{Instrument, debug, info_span};

/// How long a watch follows a member that knows no leader before it ends with UNAVAILABLE
/// (review D10): longer than any election, so a leader change never ends a watch, but short
/// enough that a client of a member cut off from the majority moves to another member.
pub const LEADERLESS_LIMIT: Duration = Duration::from_secs(5);

/// Messages a watch buffers for a slow client before it waits.
const WATCH_BUFFER: usize = 16;

/// How long a watch that could not start from a linearizable view waits for its task to reach
/// this member's applied state before answering NOT_FOUND (as long as a write is held).
pub const CATCH_UP_WAIT: Duration = crate::member::handle::WRITE_WAIT;

/// The stream a WatchTask call returns.
pub type WatchStream = ReceiverStream<Result<v1::Task, Status>>;

/// Watches of one session, by task id: each watch's registration id and wake-up.
type SessionWatches = HashMap<u64, Vec<(u64, Arc<Notify>)>>;

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// Watches registered and not yet dropped.
    open: usize,
    sessions: HashMap<String, SessionWatches>,
}

/// Routes the effects of every published view to the watches they concern; see the module docs.
pub struct WatchHub {
    registry: Mutex<Registry>,
    closed: AtomicBool,
    /// Most watches open at once on this member (review D4: each holds a task copy and a
    /// buffer, and a client could otherwise open them without end).
    limit: usize,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub::with_limit(crate::member::limits::DEFAULT_MAX_WATCHES)
    }
}

/// Which watches a published view concerns.
#[derive(Debug, PartialEq, Eq)]
enum Wake<'a> {
    /// None: the view was seen already or changed no task.
    Nothing,
    /// Every watch: the state was replaced or views were skipped.
    All,
    /// The watches of these tasks and sessions.
    Some {
        /// `(session, task)` pairs whose task changed.
        tasks: Vec<(&'a str, u64)>,
        /// Sessions that closed or were removed.
        sessions: Vec<&'a str>,
    },
}

/// What `view` means for watches when the previous view seen had revision `last`.
fn wake_for(view: &StateView, last: u64) -> Wake<'_> {
    if view.revision <= last {
        return Wake::Nothing;
    }
    if view.revision > last.saturating_add(1) {
        return Wake::All;
    }
    let (mut tasks, mut sessions) = (Vec::new(), Vec::new());
    for effect in view.effects.iter() {
        match effect {
            Effect::TaskChanged {
                session_id,
                task_id,
            } => tasks.push((session_id.as_str(), *task_id)),
            Effect::SessionClosed { session_id } | Effect::SessionRemoved { session_id } => {
                sessions.push(session_id.as_str())
            }
            Effect::Restored => return Wake::All,
            _ => {}
        }
    }
    if tasks.is_empty() && sessions.is_empty() {
        return Wake::Nothing;
    }
    Wake::Some { tasks, sessions }
}

/// One watch's place in the hub; dropping it unregisters the watch.
pub struct Registration {
    hub: Arc<WatchHub>,
    session_id: String,
    task_id: u64,
    id: u64,
    notify: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = self.hub.lock();
        registry.open = registry.open.saturating_sub(1);
        let Some(tasks) = registry.sessions.get_mut(&self.session_id) else {
            return;
        };
        if let Some(watches) = tasks.get_mut(&self.task_id) {
            watches.retain(|(id, _)| *id != self.id);
            if watches.is_empty() {
                tasks.remove(&self.task_id);
            }
        }
        if tasks.is_empty() {
            registry.sessions.remove(&self.session_id);
        }
    }
}

impl WatchHub {
    /// Starts the hub's dispatcher on `reader`; it stops, and every watch ends with
    /// UNAVAILABLE, when `shutdown` turns true or the state machine goes away.
    pub fn start(
        reader: StateReader,
        shutdown: watch::Receiver<bool>,
        limit: usize,
    ) -> Arc<WatchHub> {
        let hub = Arc::new(WatchHub::with_limit(limit));
        tokio::spawn(dispatch(hub.clone(), reader, shutdown));
        hub
    }

    /// A hub that holds at most `limit` watches.
    fn with_limit(limit: usize) -> WatchHub {
        WatchHub {
            registry: Mutex::new(Registry::default()),
            closed: AtomicBool::new(false),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a watch of task `task_id` of `session_id`; `Exhausted` when the member holds
    /// its limit of watches already.
    pub fn register(
        self: &Arc<Self>,
        session_id: &str,
        task_id: u64,
    ) -> Result<Registration, FlameError> {
        let notify = Arc::new(Notify::new());
        let mut registry = self.lock();
        if registry.open >= self.limit {
            return Err(FlameError::Exhausted(format!(
                "this member holds its limit of {} open watches (cluster.limits.max_watches); \
                 close some, or watch through another member",
                self.limit
            )));
        }
        registry.open += 1;
        registry.next_id = registry.next_id.wrapping_add(1);
        let id = registry.next_id;
        registry
            .sessions
            .entry(session_id.to_owned())
            .or_default()
            .entry(task_id)
            .or_default()
            .push((id, notify.clone()));
        drop(registry);
        Ok(Registration {
            hub: self.clone(),
            session_id: session_id.to_owned(),
            task_id,
            id,
            notify,
        })
    }

    /// The number of open watches.
    pub fn watches(&self) -> usize {
        self.lock().open
    }

    /// True once the hub stopped; watches then end.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn wake(&self, wake: &Wake<'_>) {
        let registry = self.lock();
        let notify_all = |tasks: &SessionWatches| {
            tasks
                .values()
                .flatten()
                .for_each(|(_, notify)| notify.notify_one())
        };
        match wake {
            Wake::Nothing => {}
            Wake::All => registry.sessions.values().for_each(notify_all),
            Wake::Some { tasks, sessions } => {
                for (session_id, task_id) in tasks {
                    let watches = registry.sessions.get(*session_id);
                    for (_, notify) in watches.and_then(|t| t.get(task_id)).into_iter().flatten() {
                        notify.notify_one();
                    }
                }
                for session_id in sessions {
                    registry
                        .sessions
                        .get(*session_id)
                        .into_iter()
                        .for_each(notify_all);
                }
            }
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake(&Wake::All);
    }
}

/// The hub's dispatcher: one pass over the effects of every view this member publishes.
async fn dispatch(
    hub: Arc<WatchHub>,
    mut reader: StateReader,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = reader.current().revision;
    // Ends when the state machine goes away or the member shuts down.
    loop {
        tokio::select! {
            view = reader.changed() => match view {
                Some(view) => {
                    hub.wake(&wake_for(&view, last));
                    last = last.max(view.revision);
                }
                None => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    debug!("watch hub stopped");
    hub.close();
}

/// What a woken watch does next.
#[derive(Debug)]
enum Step {
    /// The task is as last sent.
    Unchanged,
    /// Send this task.
    Send(Task),
    /// End the stream with this error.
    End(FlameError),
}

/// Compares the task in `state` with `last`, the task last sent. Tasks only ever gain events
/// and change state, so those (and the output and times) are what is compared; a task with
/// another creation time is a different task under a reused id, so the watched one is gone.
fn next_step(state: &State, last: &Task) -> Step {
    let task = match lookup(state, &last.session_id, last.id.into()) {
        Ok(task) => task,
        Err(error) => return Step::End(error),
    };
    if task.creation_time_ms != last.creation_time_ms {
        return Step::End(FlameError::NotFound(format!(
            "task {} of session {} no longer exists",
            last.id, last.session_id
        )));
    }
    let same = task.state == last.state
        && task.events.len() == last.events.len()
        && task.completion_time_ms == last.completion_time_ms
        && task.output.as_ref().map(|o| o.len()) == last.output.as_ref().map(|o| o.len());
    if same {
        Step::Unchanged
    } else {
        Step::Send(task.clone())
    }
}

/// A running watch: where to look and what was sent last.
struct Watcher {
    handle: MemberHandle,
    registration: Registration,
    last: Task,
    tx: mpsc::Sender<Result<v1::Task, Status>>,
}

/// Follows the task until it is terminal or gone, the client cancels, or the member stops.
async fn follow(mut w: Watcher) {
    let handle = w.handle.clone();
    let cut_off = handle.leaderless_for(LEADERLESS_LIMIT);
    tokio::pin!(cut_off);
    // Bounded by the task's lifecycle, the client's cancellation, the member's shutdown and
    // its contact with a leader.
    loop {
        tokio::select! {
            _ = w.registration.notify.notified() => {}
            _ = w.tx.closed() => {
                debug!("watch cancelled by the client");
                return;
            }
            () = &mut cut_off => {
                let stop = FlameError::Unavailable(format!(
                    "member {} has known no leader for {LEADERLESS_LIMIT:?} (cut off from the \
                     majority?), so its state may be stale; watch the task again through \
                     another member",
                    handle.id
                ));
                debug!(%stop, "watch ended");
                let _ = w.tx.send(Err(Status::from(stop))).await;
                return;
            }
        }
        if w.registration.hub.is_closed() {
            let stop = FlameError::Unavailable(
                "this member is shutting down; watch the task again through another member".into(),
            );
            let _ = w.tx.send(Err(Status::from(stop))).await;
            return;
        }
        match next_step(&w.handle.local().state, &w.last) {
            Step::Unchanged => {}
            Step::Send(task) => {
                debug!(state = ?task.state, "task changed");
                if w.tx.send(Ok(v1::Task::from(&task))).await.is_err() {
                    return;
                }
                if task.state.is_terminal() {
                    return;
                }
                w.last = task;
            }
            Step::End(error) => {
                debug!(%error, "watched task is gone");
                let _ = w.tx.send(Err(Status::from(error))).await;
                return;
            }
        }
    }
}

/// WatchTask: validates the ids, finds the task (NOT_FOUND before the stream starts), sends it,
/// and keeps sending it as it changes until it is terminal.
pub async fn watch(
    handle: &MemberHandle,
    hub: &Arc<WatchHub>,
    req: v1::WatchTaskRequest,
) -> Result<WatchStream, FlameError> {
    let task_id = request::task_id(&req.task_id)?;
    let session_id = request::session_id(&req.session_id)?;
    let span = info_span!("watch_task", session_id, task_id);
    let registration = hub.register(session_id, task_id)?;
    let first = first_sight(handle, session_id, task_id, &span).await?;
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    tx.try_send(Ok(v1::Task::from(&first)))
        .map_err(|e| FlameError::Internal(format!("cannot queue the first watch message: {e}")))?;
    if !first.state.is_terminal() {
        let watcher = Watcher {
            handle: handle.clone(),
            registration,
            last: first,
            tx,
        };
        tokio::spawn(follow(watcher).instrument(span));
    }
    Ok(ReceiverStream::new(rx))
}

/// The task as the watch first sends it: from a linearizable view, or without a leader from
/// this member's own views once the task is there (at most [`CATCH_UP_WAIT`]).
async fn first_sight(
    handle: &MemberHandle,
    session_id: &str,
    task_id: u64,
    span: &tracing::Span,
) -> Result<Task, FlameError> {
    let error = match handle.read().await {
        Ok(view) => return lookup(&view.state, session_id, task_id).cloned(),
        Err(error) => error,
    };
    debug!(parent: span, %error, "no linearizable start; watching this member's own state");
    let mut reader = handle.reader.clone();
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    // Bounded by the deadline: each pass waits for a newer applied view.
    loop {
        let missing = match lookup(&handle.local().state, session_id, task_id) {
            Ok(task) => return Ok(task.clone()),
            Err(missing) => missing,
        };
        match tokio::time::timeout_at(deadline, reader.changed()).await {
            Ok(Some(_)) => {}
            _ => return Err(missing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, NewTask, StateConfig, StateMachine};
    use flame_proto::model::{ResourceRequirement, SessionSpec, TaskState};

    fn machine_with_task() -> StateMachine {
        let mut m = StateMachine::new(StateConfig::default());
        m.apply(1, Command::EnsureBuiltins);
        let spec = SessionSpec {
            application: "flmexec".into(),
            common_data: None,
            min_instances: 0,
            max_instances: None,
            priority: 0,
            resreq: ResourceRequirement::default(),
        };
        let created = m.apply(
            2,
            Command::CreateSession {
                id: "s".into(),
                spec,
            },
        );
        assert!(created.outcome.error().is_none(), "{created:?}");
        m.apply(
            3,
            Command::CreateTasks {
                session_id: "s".into(),
                tasks: vec![NewTask {
                    input: None,
                    request_id: None,
                }],
                dispatch: None,
            },
        );
        m
    }

    fn view(revision: u64, effects: Vec<Effect>) -> StateView {
        StateView {
            state: State::default(),
            applied_index: 0,
            revision,
            effects: Arc::from(effects),
        }
    }

    #[test]
    fn effects_wake_only_the_watches_they_concern() {
        let changed = Effect::TaskChanged {
            session_id: "s".into(),
            task_id: 2,
        };
        let closed = Effect::SessionClosed {
            session_id: "t".into(),
        };
        let v = view(5, vec![changed, closed]);
        assert_eq!(
            wake_for(&v, 4),
            Wake::Some {
                tasks: vec![("s", 2)],
                sessions: vec!["t"],
            }
        );
        assert_eq!(wake_for(&v, 5), Wake::Nothing);
        assert_eq!(wake_for(&v, 3), Wake::All, "a skipped view wakes everyone");
        assert_eq!(wake_for(&view(5, vec![Effect::Restored]), 4), Wake::All);
        let unrelated = Effect::SessionChanged {
            session_id: "s".into(),
        };
        assert_eq!(wake_for(&view(5, vec![unrelated]), 4), Wake::Nothing);
    }

    #[test]
    fn a_watch_sends_changes_ends_on_cancel_and_reports_removal() {
        let mut m = machine_with_task();
        let first = m.state().task("s", 1).cloned().expect("task 1");
        assert!(matches!(next_step(m.state(), &first), Step::Unchanged));
        m.apply(4, Command::CloseSession { id: "s".into() });
        let Step::Send(cancelled) = next_step(m.state(), &first) else {
            panic!("closing the session changes the task");
        };
        assert_eq!(cancelled.state, TaskState::Cancelled);
        assert!(cancelled.state.is_terminal());
        m.apply(0, Command::DeleteSession { id: "s".into() });
        assert!(matches!(
            next_step(m.state(), &first),
            Step::End(FlameError::NotFound(m)) if m.contains("session s not found")
        ));
    }

    #[tokio::test]
    async fn dropping_a_registration_unregisters_the_watch() {
        let hub = Arc::new(WatchHub::default());
        let a = hub.register("s", 1).expect("a");
        let b = hub.register("s", 1).expect("b");
        let c = hub.register("t", 9).expect("c");
        assert_eq!(hub.watches(), 3);
        hub.wake(&Wake::Some {
            tasks: vec![("s", 1)],
            sessions: vec![],
        });
        // A stored permit completes at once: a wake-up before the watch waits is not lost.
        tokio::time::timeout(std::time::Duration::from_secs(5), a.notify.notified())
            .await
            .expect("a was woken");
        drop((a, b));
        assert_eq!(hub.watches(), 1);
        hub.close();
        assert!(hub.is_closed());
        drop(c);
        assert_eq!(hub.watches(), 0);
        assert!(hub.lock().sessions.is_empty());
    }

    #[test]
    fn a_watch_past_the_limit_is_refused_until_one_closes() {
        let hub = Arc::new(WatchHub::with_limit(2));
        let a = hub.register("s", 1).expect("a");
        let _b = hub.register("s", 2).expect("b");
        let refused = hub.register("s", 3).map(|_| ()).unwrap_err();
        assert!(
            matches!(&refused, FlameError::Exhausted(m) if m.contains("max_watches")),
            "{refused:?}"
        );
        drop(a);
        assert!(hub.register("s", 3).is_ok());
    }
}
