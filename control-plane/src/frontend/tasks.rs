//! Tasks through the Frontend and the batch `Tasks` service: CreateTask, CreateTasks, GetTask and
//! ListTask (spec section 5.4).
//!
//! - CreateTask reads an optional idempotency key from the `flame-request-id` metadata; a
//!   retried submission with the same key returns the original task (exactly-once creation
//!   across forwarding, failover and client retries). CreateTasks carries one key per task.
//!   Either way the whole submission is one `Command::CreateTasks`.
//! - GetTask and ListTask are linearizable reads; ListTask then streams from that one immutable
//!   view, in ascending id, with input, output and events, converting one task at a time.
//!
//! Caveat: a batch is bounded by [`MAX_BATCH_TASKS`] tasks and
//! [`crate::member::limits::BATCH_PAYLOAD_FACTOR`] times the payload limit in total input, so
//! one command stays far below the Raft transport's message limit.

use super::request::{
    self, check_payload, missing, request_id, request_id_from_metadata, tasks_outcome,
};
use crate::member::handle::MemberHandle;
use crate::member::limits::{Limits, batch_payload_limit};
use crate::state::{Command, NewTask};
use bytes::Bytes;
use flame_proto::cluster::{CreateTasksRequest, CreateTasksResponse};
use flame_proto::error::FlameError;
use flame_proto::model;
use flame_proto::v1;
use futures::Stream;
use std::pin::Pin;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tracing::{debug, instrument};

/// Most tasks one CreateTasks call may submit.
pub const MAX_BATCH_TASKS: usize = 10_000;

/// A stream of tasks as the Frontend's server-streaming RPCs send them.
pub type TaskStream = Pin<Box<dyn Stream<Item = Result<v1::Task, Status>> + Send + 'static>>;

/// Proposes one CreateTasks command and returns its tasks, one per submission.
async fn create_in(
    handle: &MemberHandle,
    session_id: String,
    tasks: Vec<NewTask>,
) -> Result<Vec<model::Task>, FlameError> {
    let count = tasks.len();
    let command = Command::CreateTasks {
        session_id,
        tasks,
        dispatch: Some(handle.limits.dispatch),
    };
    let created = tasks_outcome(handle.write(command).await?)?;
    if created.len() != count {
        return Err(FlameError::Internal(format!(
            "the state machine answered {count} submissions with {} tasks",
            created.len()
        )));
    }
    debug!(
        count,
        first = created.first().map(|t| t.id.get()),
        "tasks created"
    );
    Ok(created)
}

/// CreateTask: one Pending task (or the original one for a repeated request id).
#[instrument(skip_all, fields(session_id, request_id))]
pub async fn create(
    handle: &MemberHandle,
    metadata: &MetadataMap,
    req: v1::CreateTaskRequest,
) -> Result<v1::Task, FlameError> {
    let spec = req.task.ok_or_else(|| missing("task"))?;
    request::session_id(&spec.session_id)?;
    let request_id = request_id_from_metadata(metadata)?;
    let span = tracing::Span::current();
    span.record("session_id", spec.session_id.as_str());
    if let Some(id) = &request_id {
        span.record("request_id", id.as_str());
    }
    if let Some(input) = &spec.input {
        check_payload("task input", input.len(), &handle.limits)?;
    }
    let task = NewTask {
        input: spec.input.map(Bytes::from),
        request_id,
    };
    let created = create_in(handle, spec.session_id, vec![task]).await?;
    created
        .first()
        .map(v1::Task::from)
        .ok_or_else(|| FlameError::Internal("the state machine created no task".into()))
}

/// Checks a batch and turns it into the tasks of one command.
fn batch_tasks(req: &mut CreateTasksRequest, limits: &Limits) -> Result<Vec<NewTask>, FlameError> {
    if req.tasks.is_empty() {
        return Err(FlameError::InvalidArgument(
            "CreateTasks needs at least one task".into(),
        ));
    }
    if req.tasks.len() > MAX_BATCH_TASKS {
        return Err(FlameError::InvalidArgument(format!(
            "CreateTasks got {} tasks; the limit is {MAX_BATCH_TASKS} per call",
            req.tasks.len()
        )));
    }
    let mut total = 0usize;
    for submission in &req.tasks {
        let size = submission.input.as_ref().map_or(0, Vec::len);
        check_payload("task input", size, limits)?;
        total = total.saturating_add(size);
    }
    let batch_limit = batch_payload_limit(limits);
    if total > batch_limit {
        return Err(FlameError::TooLarge {
            what: "CreateTasks batch input".into(),
            size: total,
            limit: batch_limit,
        });
    }
    std::mem::take(&mut req.tasks)
        .into_iter()
        .map(|s| {
            Ok(NewTask {
                input: s.input.map(Bytes::from),
                request_id: request_id(s.request_id)?,
            })
        })
        .collect()
}

/// CreateTasks (`flame.cluster.v1.Tasks`): many tasks in one session with one command.
#[instrument(skip_all, fields(session_id = %req.session_id, count = req.tasks.len()))]
pub async fn create_batch(
    handle: &MemberHandle,
    mut req: CreateTasksRequest,
) -> Result<CreateTasksResponse, FlameError> {
    request::session_id(&req.session_id)?;
    let tasks = batch_tasks(&mut req, &handle.limits)?;
    let created = create_in(handle, req.session_id, tasks).await?;
    Ok(CreateTasksResponse {
        tasks: created.iter().map(v1::Task::from).collect(),
    })
}

/// `NotFound` for task `task_id` of session `session_id`: the session's text when the session
/// is unknown, the task's otherwise.
pub fn lookup<'a>(
    state: &'a crate::state::State,
    session_id: &str,
    task_id: u64,
) -> Result<&'a model::Task, FlameError> {
    let entry = state
        .session_entry(session_id)
        .ok_or_else(|| FlameError::NotFound(format!("session {session_id} not found")))?;
    entry.task(task_id).map(|t| &t.task).ok_or_else(|| {
        FlameError::NotFound(format!("task {task_id} not found in session {session_id}"))
    })
}

/// GetTask: the full task with input, output and events.
pub async fn get(handle: &MemberHandle, req: v1::GetTaskRequest) -> Result<v1::Task, FlameError> {
    let task_id = request::task_id(&req.task_id)?;
    let session_id = request::session_id(&req.session_id)?;
    let view = handle.read().await?;
    lookup(&view.state, session_id, task_id).map(v1::Task::from)
}

/// ListTask: every task of the session in ascending id, from one linearizable view.
pub async fn list(
    handle: &MemberHandle,
    req: v1::ListTaskRequest,
) -> Result<TaskStream, FlameError> {
    request::session_id(&req.session_id)?;
    let view = handle.read().await?;
    if view.state.session_entry(&req.session_id).is_none() {
        return Err(FlameError::NotFound(format!(
            "session {} not found",
            req.session_id
        )));
    }
    let stream = futures::stream::unfold(
        (view, req.session_id, 1u64),
        |(view, session_id, next)| async move {
            let task = v1::Task::from(view.state.task(&session_id, next)?);
            let after = next.checked_add(1)?;
            Some((Ok(task), (view, session_id, after)))
        },
    );
    Ok(Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flame_proto::cluster::TaskSubmission;

    fn limits() -> Limits {
        Limits {
            max_payload_bytes: 4,
            default_resreq: model::ResourceRequirement::default(),
            dispatch: Default::default(),
            max_watches: 8,
        }
    }

    fn submission(input: &[u8], request_id: &str) -> TaskSubmission {
        TaskSubmission {
            input: Some(input.to_vec()),
            request_id: request_id.into(),
        }
    }

    #[test]
    fn batches_keep_order_presence_and_request_ids() {
        let mut req = CreateTasksRequest {
            session_id: "s".into(),
            tasks: vec![
                submission(b"a", "r1"),
                TaskSubmission {
                    input: None,
                    request_id: String::new(),
                },
            ],
        };
        let tasks = batch_tasks(&mut req, &limits()).expect("valid batch");
        assert_eq!(tasks[0].input.as_deref(), Some(&b"a"[..]));
        assert_eq!(tasks[0].request_id.as_deref(), Some("r1"));
        assert_eq!(
            (tasks[1].input.is_none(), tasks[1].request_id.is_none()),
            (true, true)
        );
    }

    #[test]
    fn empty_oversized_and_overlong_batches_are_refused() {
        let mut empty = CreateTasksRequest::default();
        assert!(matches!(
            batch_tasks(&mut empty, &limits()),
            Err(FlameError::InvalidArgument(_))
        ));
        let mut big_task = CreateTasksRequest {
            session_id: "s".into(),
            tasks: vec![submission(b"12345", "")],
        };
        assert!(matches!(
            batch_tasks(&mut big_task, &limits()),
            Err(FlameError::TooLarge { what, limit: 4, .. }) if what == "task input"
        ));
        let mut big_batch = CreateTasksRequest {
            session_id: "s".into(),
            tasks: (0..5).map(|_| submission(b"1234", "")).collect(),
        };
        assert!(matches!(
            batch_tasks(&mut big_batch, &limits()),
            Err(FlameError::TooLarge { limit: 16, .. })
        ));
        let mut too_many = CreateTasksRequest {
            session_id: "s".into(),
            tasks: vec![TaskSubmission::default(); MAX_BATCH_TASKS + 1],
        };
        assert!(matches!(
            batch_tasks(&mut too_many, &limits()),
            Err(FlameError::InvalidArgument(_))
        ));
    }
}
