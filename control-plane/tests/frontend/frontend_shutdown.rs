//! A member started in-process with `flame_control_plane::serve` shuts down gracefully while a
//! client holds a WatchTask stream on a task that will never finish: the stream ends with
//! UNAVAILABLE instead of keeping the server's graceful shutdown waiting forever.

use crate::frontend_support;

use anyhow::{Context, bail, ensure};
use flame_control_plane::config::{Config, Overrides};
use flame_control_plane::{Listeners, serve};
use flame_proto::v1;
use flame_proto::v1::frontend_client::FrontendClient;
use frontend_support::{DEADLINE, eventually, next, session_spec, task_request};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watches_and_completes() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let api = TcpListener::bind("127.0.0.1:0").await?;
    let raft = TcpListener::bind("127.0.0.1:0").await?;
    let (api_addr, raft_addr) = (api.local_addr()?, raft.local_addr()?);
    let overrides = Overrides {
        id: Some(1),
        api_addr: Some(api_addr.to_string()),
        raft_addr: Some(raft_addr.to_string()),
        data_dir: Some(data.path().to_path_buf()),
        cluster_name: Some("frontend-shutdown".into()),
        ..Overrides::default()
    };
    let config = Config::load(None, |_| None, &overrides)?;
    let listeners = Listeners {
        api,
        raft,
        metrics: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let member = tokio::spawn(serve(config, listeners, async {
        let _ = stop_rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{api_addr}"))?.connect_lazy();
    let mut client = FrontendClient::new(channel);
    let mut stream = watch_a_pending_task(&mut client).await?;
    let _ = stop_tx.send(());
    let end = tokio::time::timeout(DEADLINE, stream.message()).await;
    match end.context("the watch did not end at shutdown")? {
        Err(status) if status.code() == Code::Unavailable => {}
        other => bail!("expected UNAVAILABLE at shutdown, got {other:?}"),
    }
    let stopped = tokio::time::timeout(DEADLINE, member).await;
    stopped.context("the member did not stop")???;
    Ok(())
}

/// Creates a session with one task on the single-member cluster and watches the task.
async fn watch_a_pending_task(
    client: &mut FrontendClient<Channel>,
) -> anyhow::Result<tonic::Streaming<v1::Task>> {
    eventually("the member to lead and hold the built-ins", || {
        let mut client = client.clone();
        async move {
            let list = client.list_application(v1::ListApplicationRequest {}).await;
            Ok(list.ok().filter(|l| l.get_ref().applications.len() == 3))
        }
    })
    .await?;
    client
        .create_session(v1::CreateSessionRequest {
            session_id: "sd".into(),
            session: Some(session_spec("flmping")),
        })
        .await?;
    client.create_task(task_request("sd", None)).await?;
    let request = v1::WatchTaskRequest {
        task_id: "1".into(),
        session_id: "sd".into(),
    };
    let mut stream = client.watch_task(request).await?.into_inner();
    let first = next(&mut stream).await?.context("the current state")?;
    ensure!(first.status.map(|s| s.state()) == Some(v1::TaskState::Pending));
    Ok(stream)
}
