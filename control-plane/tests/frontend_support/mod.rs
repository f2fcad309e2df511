//! Shared machinery of the Frontend tests: a three-process cluster with a known leader and
//! follower, clients without per-call timeouts (watches outlive them), deadline-bounded waits,
//! status assertions and request builders.
//!
//! Caveat: every wait polls a condition with a deadline; nothing sleeps for a fixed time and
//! then asserts.

#![allow(dead_code)] // Each test binary uses a part of this module.

use anyhow::{Context, bail};
use chaos_tests::Cluster;
use flame_proto::cluster::tasks_client::TasksClient;
use flame_proto::v1;
use flame_proto::v1::frontend_client::FrontendClient;
use std::future::Future;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// The control-plane binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_flame-control-plane");

/// How long any one condition may take to become true.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The payload limit of a member with the default configuration (4 MiB).
pub const PAYLOAD_LIMIT: usize = 4 << 20;

/// A started cluster with the roles it had when the test began.
pub struct Running {
    /// The three member processes.
    pub cluster: Cluster,
    /// The leader when the cluster settled.
    pub leader: u64,
    /// The other two members.
    pub followers: [u64; 2],
}

/// Starts three members of cluster `name`, waits for a leader and for the built-in
/// applications, and returns the roles.
pub async fn start(name: &str) -> anyhow::Result<Running> {
    start_with(name, &[]).await
}

/// [`start`], passing `member_flags` to every member.
pub async fn start_with(name: &str, member_flags: &[&str]) -> anyhow::Result<Running> {
    let cluster = Cluster::start_with(Path::new(BIN), name, 3, member_flags)?;
    let leader = match cluster.wait_for_leader(&[1, 2, 3], DEADLINE).await {
        Ok(leader) => leader,
        Err(e) => bail!("{e}\n--- member 1 log:\n{}", cluster.log_tail(1, 40)),
    };
    let mut others = [1, 2, 3].into_iter().filter(|id| *id != leader);
    let followers = [
        others.next().context("a first follower")?,
        others.next().context("a second follower")?,
    ];
    let client = frontend(&cluster, leader)?;
    eventually("the three built-in applications", || {
        let mut client = client.clone();
        async move {
            let list = client.list_application(v1::ListApplicationRequest {}).await;
            Ok(list.ok().filter(|l| l.get_ref().applications.len() == 3))
        }
    })
    .await?;
    Ok(Running {
        cluster,
        leader,
        followers,
    })
}

/// A lazily connected channel to member `id` without a per-call timeout, so streams may stay
/// open as long as a test needs them.
pub fn channel(cluster: &Cluster, id: u64) -> anyhow::Result<Channel> {
    let url = cluster.member(id)?.url();
    Ok(Channel::from_shared(url)?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}

/// A Frontend client for member `id` that accepts responses larger than the 4 MiB payload.
pub fn frontend(cluster: &Cluster, id: u64) -> anyhow::Result<FrontendClient<Channel>> {
    Ok(FrontendClient::new(channel(cluster, id)?).max_decoding_message_size(4 * PAYLOAD_LIMIT))
}

/// A batch-submission client for member `id`.
pub fn tasks(cluster: &Cluster, id: u64) -> anyhow::Result<TasksClient<Channel>> {
    Ok(TasksClient::new(channel(cluster, id)?))
}

/// Polls `check` until it yields a value or [`DEADLINE`] passes; `what` names the condition.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + DEADLINE;
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    while Instant::now() < deadline {
        tick.tick().await;
        if let Some(value) = check().await? {
            return Ok(value);
        }
    }
    bail!("timed out after {DEADLINE:?} waiting for {what}")
}

/// Asserts that `result` failed with `code` and a message containing every one of `texts`.
pub fn expect_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    texts: &[&str],
) -> anyhow::Result<Status> {
    let status = match result {
        Ok(value) => bail!("expected {code:?} {texts:?}, got success: {value:?}"),
        Err(status) => status,
    };
    if status.code() != code {
        bail!("expected {code:?} {texts:?}, got {status:?}");
    }
    for text in texts {
        if !status.message().contains(text) {
            bail!("expected {code:?} with {text:?} in the message, got {status:?}");
        }
    }
    Ok(status)
}

/// Asserts an in-band `Result{-1}` whose message contains `text`.
pub fn expect_refused(result: &v1::Result, text: &str) -> anyhow::Result<()> {
    let message = result.message.as_deref().unwrap_or("");
    if result.return_code != -1 || !message.contains(text) {
        bail!("expected Result{{-1, ..{text}..}}, got {result:?}");
    }
    Ok(())
}

/// The next message of a stream within [`DEADLINE`]: `Some` message, `None` at a clean end.
pub async fn next<T>(stream: &mut Streaming<T>) -> anyhow::Result<Option<T>> {
    match tokio::time::timeout(DEADLINE, stream.message()).await {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(status)) => bail!("the stream failed: {status:?}"),
        Err(_) => bail!("no stream message within {DEADLINE:?}"),
    }
}

/// Every message of a stream until it ends cleanly.
pub async fn collect<T>(mut stream: Streaming<T>) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(message) = next(&mut stream).await? {
        out.push(message);
    }
    Ok(out)
}

/// An application spec with a command, arguments, environment, labels and a working directory.
pub fn app_spec() -> v1::ApplicationSpec {
    v1::ApplicationSpec {
        description: Some("test application".into()),
        labels: vec!["l1".into(), "l2".into()],
        command: Some("${FLAME_HOME}/bin/svc".into()),
        arguments: vec!["--flag".into(), "x".into()],
        environments: vec![v1::Environment {
            name: "K".into(),
            value: "V".into(),
        }],
        working_directory: Some("/tmp/w".into()),
        schema: Some(v1::ApplicationSchema {
            input: Some(r#"{"type":"string"}"#.into()),
            output: None,
            common_data: None,
        }),
        installer: Some("python".into()),
        ..v1::ApplicationSpec::default()
    }
}

/// A session spec of `application` without `resreq` (the cluster default applies).
pub fn session_spec(application: &str) -> v1::SessionSpec {
    v1::SessionSpec {
        application: application.into(),
        common_data: Some(b"\x00ctx\xff".to_vec()),
        min_instances: 2,
        max_instances: None,
        batch_size: 2,
        priority: 0,
        resreq: None,
    }
}

/// The state of a wire task.
pub fn state_of(task: &v1::Task) -> v1::TaskState {
    task.status
        .as_ref()
        .map(|s| s.state())
        .unwrap_or(v1::TaskState::Pending)
}

/// The id of a wire object's metadata.
pub fn id_of(metadata: &Option<v1::Metadata>) -> String {
    metadata.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

/// The event codes of a wire task.
pub fn event_codes(task: &v1::Task) -> Vec<i32> {
    task.status
        .as_ref()
        .map(|s| s.events.iter().map(|e| e.code).collect())
        .unwrap_or_default()
}

/// The status of a wire session.
pub fn session_status(session: &v1::Session) -> anyhow::Result<&v1::SessionStatus> {
    session.status.as_ref().context("a session without status")
}

/// A CreateTask request for `session_id` with `input`.
pub fn task_request(session_id: &str, input: Option<&[u8]>) -> v1::CreateTaskRequest {
    v1::CreateTaskRequest {
        task: Some(v1::TaskSpec {
            session_id: session_id.into(),
            input: input.map(<[u8]>::to_vec),
            output: None,
        }),
    }
}

/// A CreateTask request carrying the `flame-request-id` metadata.
pub fn task_request_with_id(
    session_id: &str,
    input: &[u8],
    request_id: &'static str,
) -> tonic::Request<v1::CreateTaskRequest> {
    let mut request = tonic::Request::new(task_request(session_id, Some(input)));
    request.metadata_mut().insert(
        "flame-request-id",
        tonic::metadata::MetadataValue::from_static(request_id),
    );
    request
}
