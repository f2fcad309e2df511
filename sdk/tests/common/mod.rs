//! Helpers shared by the SDK's integration tests: a `flame.v1.Instance` client over a Unix
//! socket, and a built-in service binary started the way a node agent would start it.
//!
//! Caveat: every wait is bounded by a deadline; nothing sleeps and then asserts.

#![allow(dead_code)] // Each test binary uses a different subset.

pub mod fake;

use anyhow::{Context, bail};
use flame_proto::v1::{self, instance_client::InstanceClient};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};

/// Generous bound for anything that should happen quickly.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Connects to the Instance server at `socket`, retrying until it accepts or `DEADLINE`.
pub async fn connect(socket: &Path) -> anyhow::Result<InstanceClient<Channel>> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let path = socket.to_owned();
        let attempt = Endpoint::from_static("http://instance.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await;
        match attempt {
            Ok(channel) => return Ok(InstanceClient::new(channel)),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "no instance on {} within {DEADLINE:?}: {e}",
                    socket.display()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A session context for `session_id` of application `app`.
pub fn session(session_id: &str, app: &str, common_data: Option<&[u8]>) -> v1::SessionContext {
    v1::SessionContext {
        session_id: session_id.to_owned(),
        application: Some(v1::ApplicationContext {
            name: app.to_owned(),
            ..Default::default()
        }),
        common_data: common_data.map(<[u8]>::to_vec),
    }
}

/// A task context for task `task_id` of `session_id`.
pub fn task(session_id: &str, task_id: u64, input: Option<&[u8]>) -> v1::TaskContext {
    v1::TaskContext {
        task_id: task_id.to_string(),
        session_id: session_id.to_owned(),
        input: input.map(<[u8]>::to_vec),
    }
}

/// A service binary running on a socket in its own temporary directory.
pub struct ServiceProcess {
    /// The process; killed on drop.
    pub child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Keeps the directory alive.
    _dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts `binary` with `FLAME_INSTANCE_ENDPOINT` set to a fresh socket path.
    pub fn start(binary: &str) -> anyhow::Result<ServiceProcess> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("instance.sock");
        let child = Command::new(binary)
            .env("FLAME_INSTANCE_ENDPOINT", &socket)
            .env("RUST_LOG", "warn,flame_sdk=info")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        Ok(ServiceProcess {
            child,
            socket,
            _dir: dir,
        })
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        Ok(tokio::time::timeout(DEADLINE, self.child.wait()).await??)
    }
}
