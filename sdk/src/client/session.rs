//! Sessions and tasks: [`SessionOptions`], [`Session`], exactly-once submission, watches.
//!
//! What: [`Connection::create_session`] / [`Connection::open_session`] /
//! [`Connection::close_session`], and on a [`Session`]: `create_task` (one task through
//! `Frontend/CreateTask` with the `flame-request-id` metadata), `create_tasks` (a batch through
//! `flame.cluster.v1.Tasks/CreateTasks`, one request id per task), `get_task`, `list_tasks`,
//! `watch_task`, `wait_task` (watch to the terminal state) and `run` (create, then wait).
//! [`Connection::open_or_create_session`] is get-or-create by id and spec.
//!
//! Why request ids: a submission whose reply was lost to a leader crash is retried with the
//! SAME ids, and the state machine answers with the task it already created, so a client never
//! creates a task twice. A retried CreateSession becomes an OpenSession with the same spec
//! (get-or-create, which checks the spec) for the same reason.
//!
//! Caveats: a watch whose stream breaks resumes with a new `WatchTask` on the next member; the
//! server sends the task's current state first, so a terminal state reached meanwhile is still
//! delivered, though intermediate states may be skipped. Consecutive failures of a watch for
//! longer than the connection's deadline end it with [`ClientError::NoMember`].

use super::ClientError;
use super::connection::{Connection, Target, retriable};
use flame_proto::cluster::tasks_client::TasksClient;
use flame_proto::cluster::{CreateTasksRequest, TaskSubmission};
use flame_proto::error::FlameError;
use flame_proto::model::SessionId;
use flame_proto::v1::frontend_client::FrontendClient;
use flame_proto::v1::{self, Task, TaskState};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::mpsc;
use tonic::{Code, Request, Status};

/// How long a finished watch waits for the server's end of stream before dropping it.
const END_OF_STREAM_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The metadata key carrying a `CreateTask` request id.
pub const REQUEST_ID_KEY: &str = "flame-request-id";

/// `CreateTask` calls in flight when a server without `CreateTasks` gets a batch.
pub const FALLBACK_IN_FLIGHT: usize = 16;

/// What a new session looks like.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// The application the session runs (for example `flmping`).
    pub application: String,
    /// The session id; `None` picks a fresh UUID.
    pub id: Option<String>,
    /// Data every instance of the session receives when it enters the session.
    pub common_data: Option<Vec<u8>>,
    /// Instances kept even when idle.
    pub min_instances: u32,
    /// The most instances the session may have; `None` is unlimited.
    pub max_instances: Option<u32>,
    /// Scheduling priority; 0 is the lowest.
    pub priority: u32,
    /// Resources per instance.
    pub resreq: Option<v1::ResourceRequirement>,
}

impl SessionOptions {
    /// Options for a session of `application` with server defaults otherwise.
    pub fn new(application: impl Into<String>) -> Self {
        SessionOptions {
            application: application.into(),
            ..SessionOptions::default()
        }
    }

    /// The wire spec.
    fn spec(&self) -> v1::SessionSpec {
        v1::SessionSpec {
            application: self.application.clone(),
            common_data: self.common_data.clone(),
            min_instances: self.min_instances,
            max_instances: self.max_instances,
            batch_size: 1,
            priority: self.priority,
            resreq: self.resreq,
        }
    }
}

/// One task to submit: its input and the client request id that makes it exactly-once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// The id the state machine deduplicates on; a fresh UUIDv4 from [`TaskRequest::new`].
    pub request_id: String,
    /// The task's input.
    pub input: Option<Vec<u8>>,
}

impl TaskRequest {
    /// A submission of `input` with a fresh request id.
    pub fn new(input: Option<Vec<u8>>) -> Self {
        TaskRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            input,
        }
    }
}

/// An open session on a [`Connection`].
#[derive(Clone)]
pub struct Session {
    conn: Connection,
    id: SessionId,
    info: v1::Session,
}

impl Connection {
    /// Creates a session; a retry after a lost reply opens it with the same spec instead.
    pub async fn create_session(&self, options: &SessionOptions) -> Result<Session, ClientError> {
        let id = options
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let spec = options.spec();
        let info = self
            .call(Target::Leader, |ch, attempt| {
                let (id, spec) = (id.clone(), spec.clone());
                async move {
                    let mut client = FrontendClient::new(ch);
                    let reply = if attempt == 0 {
                        let req = v1::CreateSessionRequest {
                            session_id: id,
                            session: Some(spec),
                        };
                        client.create_session(req).await?
                    } else {
                        let req = v1::OpenSessionRequest {
                            session_id: id,
                            session: Some(spec),
                        };
                        client.open_session(req).await?
                    };
                    Ok(reply.into_inner())
                }
            })
            .await?;
        Ok(self.session(id, info))
    }

    /// Opens session `options.id` with `options`' spec, creating it when it does not exist
    /// (get-or-create: an existing open session must have the same spec, else
    /// INVALID_ARGUMENT `spec mismatch`). Without an id, a fresh one is created. Safe to retry
    /// and to race: every caller ends up with the one session.
    pub async fn open_or_create_session(
        &self,
        options: &SessionOptions,
    ) -> Result<Session, ClientError> {
        let id = options
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.open(id, Some(options.spec())).await
    }

    /// Opens the existing open session `id`.
    pub async fn open_session(&self, id: &str) -> Result<Session, ClientError> {
        self.open(id.to_owned(), None).await
    }

    /// `OpenSession` on the leader: with a spec it is get-or-create, without one the session
    /// must exist. Either way a retry asks for the same thing.
    async fn open(
        &self,
        id: String,
        spec: Option<v1::SessionSpec>,
    ) -> Result<Session, ClientError> {
        let info = self
            .call(Target::Leader, |ch, _| {
                let req = v1::OpenSessionRequest {
                    session_id: id.clone(),
                    session: spec.clone(),
                };
                async move {
                    Ok(FrontendClient::new(ch)
                        .open_session(req)
                        .await?
                        .into_inner())
                }
            })
            .await?;
        Ok(self.session(id, info))
    }

    /// Closes session `id`; returns the session as closed.
    pub async fn close_session(&self, id: &str) -> Result<v1::Session, ClientError> {
        self.call(Target::Leader, |ch, _| {
            let req = v1::CloseSessionRequest {
                session_id: id.to_owned(),
            };
            async move {
                Ok(FrontendClient::new(ch)
                    .close_session(req)
                    .await?
                    .into_inner())
            }
        })
        .await
    }

    /// Session `id` as any member sees it (state and task counters).
    pub async fn get_session(&self, id: &str) -> Result<v1::Session, ClientError> {
        self.call(Target::Any, |ch, _| {
            let req = v1::GetSessionRequest {
                session_id: id.to_owned(),
            };
            async move { Ok(FrontendClient::new(ch).get_session(req).await?.into_inner()) }
        })
        .await
    }

    /// A handle on session `id` without a round trip, for a session known to be open (for
    /// example one created by another process); its [`Session::info`] is empty.
    pub fn attach_session(&self, id: &str) -> Session {
        self.session(id.to_owned(), v1::Session::default())
    }

    fn session(&self, id: String, info: v1::Session) -> Session {
        Session {
            conn: self.clone(),
            id: id.into(),
            info,
        }
    }
}

impl Session {
    /// The session id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The session as the server returned it when it was created or opened.
    pub fn info(&self) -> &v1::Session {
        &self.info
    }

    /// Closes the session.
    pub async fn close(&self) -> Result<v1::Session, ClientError> {
        self.conn.close_session(&self.id).await
    }

    /// Creates one task with a fresh request id.
    pub async fn create_task(&self, input: Option<Vec<u8>>) -> Result<Task, ClientError> {
        self.submit(&TaskRequest::new(input)).await
    }

    /// Creates one task through `CreateTask` with `request`'s id in the `flame-request-id`
    /// metadata; every retry sends the same id.
    pub async fn submit(&self, request: &TaskRequest) -> Result<Task, ClientError> {
        self.conn
            .call(Target::Leader, |ch, _| {
                let mut req = Request::new(v1::CreateTaskRequest {
                    task: Some(v1::TaskSpec {
                        session_id: self.id.clone().into(),
                        input: request.input.clone(),
                        output: None,
                    }),
                });
                let id = request.request_id.parse();
                async move {
                    let id = id.map_err(|_| Status::invalid_argument("request id is not ASCII"))?;
                    req.metadata_mut().insert(REQUEST_ID_KEY, id);
                    Ok(FrontendClient::new(ch).create_task(req).await?.into_inner())
                }
            })
            .await
    }

    /// Creates a batch of tasks in one `CreateTasks` call, one request id per task; returns
    /// one task per request, in order. Every retry sends the same ids.
    ///
    /// A server without Flame's `Tasks` service (a single upstream Flame server answers
    /// UNIMPLEMENTED) gets the tasks one `CreateTask` call each instead, [`FALLBACK_IN_FLIGHT`]
    /// at a time, still in order.
    pub async fn create_tasks(&self, requests: &[TaskRequest]) -> Result<Vec<Task>, ClientError> {
        let req = CreateTasksRequest {
            session_id: self.id.clone().into(),
            tasks: requests
                .iter()
                .map(|r| TaskSubmission {
                    input: r.input.clone(),
                    request_id: r.request_id.clone(),
                })
                .collect(),
        };
        let reply = self
            .conn
            .call(Target::Leader, |ch, _| {
                let req = req.clone();
                async move {
                    match TasksClient::new(ch).create_tasks(req).await {
                        Ok(reply) => Ok(Some(reply.into_inner())),
                        Err(status) if status.code() == Code::Unimplemented => Ok(None),
                        Err(status) => Err(status),
                    }
                }
            })
            .await?;
        let Some(reply) = reply else {
            return self.create_one_by_one(requests).await;
        };
        if reply.tasks.len() != requests.len() {
            return Err(ClientError::Protocol(format!(
                "CreateTasks returned {} tasks for {} submissions",
                reply.tasks.len(),
                requests.len()
            )));
        }
        Ok(reply.tasks)
    }

    /// [`Session::create_tasks`] through `CreateTask`, for servers without `CreateTasks`.
    async fn create_one_by_one(&self, requests: &[TaskRequest]) -> Result<Vec<Task>, ClientError> {
        use futures::StreamExt;
        // A loop rather than `iter().map(..).buffered(..)`: a closure over the borrowed
        // requests would make this future unusable from spawned tasks (rustc's higher-ranked
        // lifetime limitation).
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let mut next = requests.iter();
        let mut tasks = Vec::with_capacity(requests.len());
        loop {
            while in_flight.len() < FALLBACK_IN_FLIGHT {
                match next.next() {
                    Some(request) => in_flight.push_back(self.submit(request)),
                    None => break,
                }
            }
            match in_flight.next().await {
                Some(task) => tasks.push(task?),
                None => return Ok(tasks),
            }
        }
    }

    /// Task `task_id` of this session, from any member.
    pub async fn get_task(&self, task_id: &str) -> Result<Task, ClientError> {
        self.conn
            .call(Target::Any, |ch, _| {
                let req = v1::GetTaskRequest {
                    task_id: task_id.to_owned(),
                    session_id: self.id.clone().into(),
                };
                async move { Ok(FrontendClient::new(ch).get_task(req).await?.into_inner()) }
            })
            .await
    }

    /// Every task of this session, from any member (a broken stream restarts the listing).
    pub async fn list_tasks(&self) -> Result<Vec<Task>, ClientError> {
        self.conn
            .call(Target::Any, |ch, _| {
                let req = v1::ListTaskRequest {
                    session_id: self.id.clone().into(),
                };
                async move {
                    let mut stream = FrontendClient::new(ch).list_task(req).await?.into_inner();
                    let mut tasks = Vec::new();
                    while let Some(task) = stream.message().await? {
                        tasks.push(task);
                    }
                    Ok(tasks)
                }
            })
            .await
    }

    /// A stream of task `task_id`'s states, ending after a terminal one; see the module docs.
    pub fn watch_task(&self, task_id: &str) -> TaskWatch {
        let (tx, rx) = mpsc::channel(16);
        let watch = Watch {
            conn: self.conn.clone(),
            session_id: self.id.clone().into(),
            task_id: task_id.to_owned(),
            last: None,
        };
        tokio::spawn(watch.run(tx));
        TaskWatch { rx }
    }

    /// Creates a task with `input` and waits for its end: the output on Succeed, else
    /// [`ClientError::TaskFailed`] with the task's failure message.
    pub async fn run(&self, input: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, ClientError> {
        let task = self.create_task(input).await?;
        let task = self.wait_task(&task_id(&task)?).await?;
        Ok(task.spec.and_then(|s| s.output))
    }

    /// Watches task `task_id` to its end: the task on Succeed, else
    /// [`ClientError::TaskFailed`] with the task's failure message.
    pub async fn wait_task(&self, task_id: &str) -> Result<Task, ClientError> {
        let mut watch = self.watch_task(task_id);
        while let Some(task) = watch.next().await {
            let task = task?;
            match state(&task) {
                TaskState::Succeed => return Ok(task),
                TaskState::Failed | TaskState::Cancelled => return Err(failure(task_id, &task)),
                TaskState::Pending | TaskState::Running => {}
            }
        }
        Err(ClientError::Protocol(format!(
            "the watch of task {task_id} ended before a terminal state"
        )))
    }
}

/// The task's id from its metadata (a [`ClientError::Protocol`] when the server left it out).
pub fn task_id(task: &Task) -> Result<String, ClientError> {
    task.metadata
        .as_ref()
        .map(|m| m.id.clone())
        .ok_or_else(|| ClientError::Protocol("a task without metadata".into()))
}

/// The task's state (Pending when absent or unknown).
pub fn state(task: &Task) -> TaskState {
    task.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::Pending)
}

/// Whether a state is terminal.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Succeed | TaskState::Failed | TaskState::Cancelled
    )
}

/// The error for a Failed or Cancelled task, with the message of its last event.
fn failure(id: &str, task: &Task) -> ClientError {
    let message = task
        .status
        .as_ref()
        .and_then(|s| s.events.iter().rev().find_map(|e| e.message.clone()))
        .unwrap_or_else(|| "no failure message".into());
    ClientError::TaskFailed {
        task_id: id.to_owned(),
        state: format!("{:?}", state(task)).to_lowercase(),
        message,
    }
}

/// A stream of one task's states; also usable through [`TaskWatch::next`].
pub struct TaskWatch {
    rx: mpsc::Receiver<Result<Task, ClientError>>,
}

impl TaskWatch {
    /// The next state, or `None` after the terminal state (or an error).
    pub async fn next(&mut self) -> Option<Result<Task, ClientError>> {
        self.rx.recv().await
    }
}

impl tokio_stream::Stream for TaskWatch {
    type Item = Result<Task, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The background side of a [`TaskWatch`].
struct Watch {
    conn: Connection,
    session_id: String,
    task_id: String,
    /// The state last delivered, so a resumed watch does not repeat it.
    last: Option<i32>,
}

/// How one `WatchTask` stream ended.
enum Ended {
    /// A terminal state was delivered, or the receiver went away.
    Done,
    /// The stream ended or broke before a terminal state; `bool`: it delivered something.
    Resume(bool, String),
}

impl Watch {
    /// Opens watches on member after member until a terminal state, a fatal error, or
    /// failures for longer than the connection's deadline.
    async fn run(mut self, tx: mpsc::Sender<Result<Task, ClientError>>) {
        let mut backoff = self.conn.backoff();
        let mut failing_since: Option<Instant> = None;
        loop {
            let url = self.conn.read_member();
            let (progress, why) = match self.once(&url, &tx).await {
                Ok(Ended::Done) => return,
                Ok(Ended::Resume(progress, why)) => (progress, why),
                Err(status) if retriable(&status) => {
                    (false, format!("{url}: {}", status.message()))
                }
                Err(status) => {
                    let _ = tx.send(Err(FlameError::from(status).into())).await;
                    return;
                }
            };
            self.conn.rotate(&url);
            if progress {
                backoff.reset();
                failing_since = None;
            }
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.conn.options().deadline {
                let _ = tx.send(Err(self.conn.no_member(why))).await;
                return;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One `WatchTask` stream on `url`, forwarding state changes to `tx`.
    async fn once(
        &mut self,
        url: &str,
        tx: &mpsc::Sender<Result<Task, ClientError>>,
    ) -> Result<Ended, Status> {
        let channel = self
            .conn
            .channel(url)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let req = v1::WatchTaskRequest {
            task_id: self.task_id.clone(),
            session_id: self.session_id.clone(),
        };
        let mut stream = FrontendClient::new(channel)
            .watch_task(req)
            .await?
            .into_inner();
        let mut progress = false;
        loop {
            let task = match stream.message().await {
                Ok(Some(task)) => task,
                Ok(None) => return Ok(Ended::Resume(progress, format!("{url}: watch ended"))),
                Err(status) if retriable(&status) => {
                    return Ok(Ended::Resume(
                        progress,
                        format!("{url}: {}", status.message()),
                    ));
                }
                Err(status) => return Err(status),
            };
            progress = true;
            let now = state(&task);
            if self.last == Some(now as i32) {
                continue;
            }
            self.last = Some(now as i32);
            let delivered = tx.send(Ok(task)).await.is_ok();
            if delivered && is_terminal(now) {
                // The server ends the stream right after a terminal state. Dropping it before
                // its trailers arrive resets the stream, and h2 closes a connection (GOAWAY
                // ENHANCE_YOUR_CALM, failing every call on it) after 1,024 such resets.
                let _ = tokio::time::timeout(END_OF_STREAM_WAIT, stream.message()).await;
            }
            if !delivered || is_terminal(now) {
                return Ok(Ended::Done);
            }
        }
    }
}
