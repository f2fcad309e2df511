//! The service side of the SDK, end to end over a real Unix socket: a Rust service answers the
//! three Instance calls, its errors become `return_code = -1` with their text, invocations
//! reach it one at a time, and `serve`/`run` treat the socket path as the spec says.

use crate::common;

use anyhow::Context;
use bytes::Bytes;
use common::{DEADLINE, ServiceProcess, connect, session, task};
use flame_proto::v1;
use flame_sdk::service::{self, FlameService, ServiceError, SessionContext, TaskContext};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the recording service observed.
#[derive(Default)]
struct Seen {
    /// One line per call, in order.
    calls: Mutex<Vec<String>>,
    /// Invocations running right now.
    in_flight: AtomicUsize,
    /// Most invocations ever running at once.
    max_in_flight: AtomicUsize,
}

/// A service that echoes `common_data + input`, fails on demand and records its calls.
struct Recorder {
    seen: Arc<Seen>,
    common: Bytes,
}

impl Recorder {
    fn record(&self, line: String) {
        if let Ok(mut calls) = self.seen.calls.lock() {
            calls.push(line);
        }
    }
}

impl FlameService for Recorder {
    async fn on_session_enter(&mut self, ctx: SessionContext) -> Result<(), ServiceError> {
        self.record(format!("enter {} {}", ctx.session_id, ctx.application));
        if ctx.common_data.as_deref() == Some(b"refuse") {
            return Err(ServiceError::failed("enter refused: bad common data"));
        }
        self.common = ctx.common_data.unwrap_or_default();
        Ok(())
    }

    async fn on_task_invoke(&mut self, ctx: TaskContext) -> Result<Option<Bytes>, ServiceError> {
        let now = self.seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.record(format!("invoke {}", ctx.task_id));
        let result = match ctx.input.as_deref() {
            Some(b"boom") => Err(ServiceError::failed(format!(
                "task {} exploded",
                ctx.task_id
            ))),
            Some(b"none") => Ok(None),
            Some(b"slow") => {
                // Work that takes a while, so overlapping calls would be caught.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(Some(Bytes::from_static(b"slow done")))
            }
            input => Ok(Some(Bytes::from(
                [&self.common[..], input.unwrap_or_default()].concat(),
            ))),
        };
        self.seen.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn on_session_leave(&mut self) -> Result<(), ServiceError> {
        self.record("leave".to_owned());
        Ok(())
    }
}

/// A recording service served in-process on a fresh socket.
struct Served {
    seen: Arc<Seen>,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), ServiceError>>,
    _dir: tempfile::TempDir,
}

fn serve_recorder() -> anyhow::Result<Served> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("svc.sock");
    let seen = Arc::new(Seen::default());
    let service = Recorder {
        seen: seen.clone(),
        common: Bytes::new(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let path = socket.clone();
    let server = tokio::spawn(async move {
        service::serve(service, &path, async {
            let _ = stopped.await;
        })
        .await
    });
    Ok(Served {
        seen,
        socket,
        stop: Some(stop),
        server,
        _dir: dir,
    })
}

impl Served {
    async fn shut_down(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, &mut self.server).await???;
        Ok(())
    }

    fn calls(&self) -> Vec<String> {
        self.seen
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn service_answers_enter_invoke_leave_over_a_unix_socket() -> anyhow::Result<()> {
    let served = serve_recorder()?;
    let mut client = connect(&served.socket).await?;
    let entered = client
        .on_session_enter(session("s1", "echo-app", Some(b"common:")))
        .await?
        .into_inner();
    assert_eq!((entered.return_code, entered.message), (0, None));
    for id in 1..=3u64 {
        let input = format!("task{id}");
        let result = client
            .on_task_invoke(task("s1", id, Some(input.as_bytes())))
            .await?
            .into_inner();
        assert_eq!(result.return_code, 0);
        assert_eq!(result.output, Some(format!("common:{input}").into_bytes()));
    }
    let none = client
        .on_task_invoke(task("s1", 4, Some(b"none")))
        .await?
        .into_inner();
    assert_eq!(
        (none.return_code, none.output),
        (0, None),
        "None leaves output unset"
    );
    let left = client
        .on_session_leave(v1::EmptyRequest {})
        .await?
        .into_inner();
    assert_eq!(left.return_code, 0);
    assert_eq!(
        served.calls(),
        [
            "enter s1 echo-app",
            "invoke 1",
            "invoke 2",
            "invoke 3",
            "invoke 4",
            "leave"
        ]
    );
    served.shut_down().await
}

#[tokio::test]
async fn service_errors_become_return_code_minus_one_with_the_message() -> anyhow::Result<()> {
    let served = serve_recorder()?;
    let mut client = connect(&served.socket).await?;
    let refused = client
        .on_session_enter(session("s2", "app", Some(b"refuse")))
        .await?
        .into_inner();
    assert_eq!(refused.return_code, -1);
    assert_eq!(
        refused.message.as_deref(),
        Some("enter refused: bad common data")
    );
    let failed = client
        .on_task_invoke(task("s2", 7, Some(b"boom")))
        .await?
        .into_inner();
    assert_eq!(failed.return_code, -1);
    assert_eq!(failed.message.as_deref(), Some("task 7 exploded"));
    assert_eq!(failed.output, None);
    let later = client
        .on_task_invoke(task("s2", 8, Some(b"ok")))
        .await?
        .into_inner();
    assert_eq!(
        later.return_code, 0,
        "a failed task does not break the instance"
    );
    served.shut_down().await
}

#[tokio::test]
async fn concurrent_invocations_reach_the_service_one_at_a_time() -> anyhow::Result<()> {
    let served = serve_recorder()?;
    let client = connect(&served.socket).await?;
    let calls: Vec<_> = (1..=8u64)
        .map(|id| {
            let mut client = client.clone();
            tokio::spawn(async move { client.on_task_invoke(task("s3", id, Some(b"slow"))).await })
        })
        .collect();
    for call in calls {
        let result = tokio::time::timeout(DEADLINE, call).await???.into_inner();
        assert_eq!(result.return_code, 0);
    }
    assert_eq!(served.calls().len(), 8);
    assert_eq!(served.seen.max_in_flight.load(Ordering::SeqCst), 1);
    served.shut_down().await
}

#[tokio::test]
async fn serve_refuses_an_existing_socket_file_and_leaves_it_in_place() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("taken.sock");
    std::fs::write(&socket, b"not a socket")?;
    let service = Recorder {
        seen: Arc::default(),
        common: Bytes::new(),
    };
    let outcome = service::serve(service, &socket, std::future::pending()).await;
    let err = outcome
        .err()
        .context("serving on an existing path succeeded")?;
    assert!(matches!(err, ServiceError::SocketExists { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&socket)?, b"not a socket");
    Ok(())
}

#[tokio::test]
async fn serve_removes_its_socket_file_on_shutdown() -> anyhow::Result<()> {
    let served = serve_recorder()?;
    connect(&served.socket).await?;
    let socket = served.socket.clone();
    assert!(socket.exists());
    served.shut_down().await?;
    assert!(!socket.exists());
    Ok(())
}

#[tokio::test]
async fn run_without_instance_endpoint_fails_clearly() -> anyhow::Result<()> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flmping-service"))
        .env_remove("FLAME_INSTANCE_ENDPOINT")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE, output).await??;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("FLAME_INSTANCE_ENDPOINT is not set"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn run_serves_until_sigterm_then_exits_cleanly_and_removes_its_socket() -> anyhow::Result<()>
{
    let mut process = ServiceProcess::start(env!("CARGO_BIN_EXE_flmping-service"))?;
    let mut client = connect(&process.socket).await?;
    let result = client
        .on_task_invoke(task("s", 1, None))
        .await?
        .into_inner();
    assert_eq!(result.return_code, 0);
    let status = process.terminate().await?;
    assert!(status.success(), "exit status {status}");
    assert!(!process.socket.exists());
    Ok(())
}
