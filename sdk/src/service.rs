//! The service side of `flame.v1.Instance`: write an application instance in Rust.
//!
//! What: implement [`FlameService`] and call [`run`]. `run` reads `FLAME_INSTANCE_ENDPOINT`
//! (an absolute filesystem path, no scheme), listens on that Unix socket and serves
//! `OnSessionEnter`, `OnTaskInvoke` and `OnSessionLeave` until SIGTERM or SIGINT. [`serve`] does
//! the same on an explicit path with a caller-supplied shutdown signal (tests, embedding).
//!
//! Why this shape: the node agent is the gRPC client and the instance the server (spec sections
//! 2.2 and 7). Calls reach the service strictly one at a time, so its methods take `&mut self`
//! and keep per-session state without locks (spec section 7.1, item 6).
//!
//! Caveats:
//! - Like flame-rs, an existing file at the socket path is an error: nothing is removed before
//!   binding (spec section 7.2). The socket file this process created is removed on a clean
//!   exit.
//! - Any error a method returns becomes `return_code = -1` with the error's text as `message`;
//!   it never becomes a gRPC error, so the agent always sees the service's own words.
//! - Shutdown is graceful: an invocation in progress when SIGTERM arrives is allowed to finish.
//!   The agent escalates to SIGKILL after its grace period.

mod server;

use bytes::Bytes;
use flame_proto::model::SessionId;
use flame_proto::v1::instance_server::InstanceServer;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// The variable that carries the instance's socket path (spec section 7.2).
pub const INSTANCE_ENDPOINT_ENV: &str = "FLAME_INSTANCE_ENDPOINT";

/// Longest accepted socket path, in bytes: `sun_path` holds 108 bytes including the final NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Largest message the instance server accepts or sends. Task payload limits are enforced by
/// the control plane; this only keeps tonic's 4 MiB default from being the effective limit.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// What `OnSessionEnter` tells the service about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionContext {
    /// The session this instance serves, for its whole life.
    pub session_id: SessionId,
    /// Name of the session's application.
    pub application: String,
    /// The session's common data, present exactly when the session has it.
    pub common_data: Option<Bytes>,
}

/// What `OnTaskInvoke` hands the service for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContext {
    /// The task id, a decimal string unique within its session.
    pub task_id: String,
    /// The task's session.
    pub session_id: SessionId,
    /// The task's input, present exactly when the task has input.
    pub input: Option<Bytes>,
}

/// Why a service call or the instance server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The service reports a failure; the text is sent to the agent unchanged.
    #[error("{0}")]
    Failed(String),
    /// The input or common data could not be understood.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// `FLAME_INSTANCE_ENDPOINT` is not set, so the process was not started by an agent.
    #[error("{INSTANCE_ENDPOINT_ENV} is not set: an instance must be started by a node agent")]
    MissingEndpoint,
    /// `FLAME_INSTANCE_ENDPOINT` is not a usable socket path.
    #[error("{INSTANCE_ENDPOINT_ENV} {endpoint:?} is invalid: {reason}")]
    InvalidEndpoint {
        /// The value as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file already exists at the socket path; it is left in place.
    #[error("socket path {} already exists; refusing to replace it", path.display())]
    SocketExists {
        /// The socket path.
        path: PathBuf,
    },
    /// Listening on the socket failed.
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The SIGTERM handler could not be installed.
    #[error("cannot install the SIGTERM handler: {0}")]
    Signal(io::Error),
    /// The gRPC server stopped with an error.
    #[error("instance server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl ServiceError {
    /// A service-defined failure with `message` as the text the agent sees.
    pub fn failed(message: impl Into<String>) -> Self {
        ServiceError::Failed(message.into())
    }
}

/// An application instance: the three calls of `flame.v1.Instance`.
///
/// Calls arrive one at a time and in order: `on_session_enter` once, `on_task_invoke` once per
/// task, `on_session_leave` once. Any error becomes `return_code = -1` with its text.
///
/// An application labelled `flame.warm-switch=true` opts in to warm switches: after
/// `on_session_leave` the same process may get `on_session_enter` for another session of the
/// same application, so the service must reset its per-session state there.
pub trait FlameService: Send + 'static {
    /// Called once, before any task, with the session this instance serves.
    fn on_session_enter(
        &mut self,
        ctx: SessionContext,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Runs one task; `Ok(None)` leaves the task's output unset.
    fn on_task_invoke(
        &mut self,
        ctx: TaskContext,
    ) -> impl Future<Output = Result<Option<Bytes>, ServiceError>> + Send;

    /// Called once when the session closes or the agent releases the instance.
    fn on_session_leave(&mut self) -> impl Future<Output = Result<(), ServiceError>> + Send {
        async { Ok(()) }
    }
}

/// The task's input decoded from JSON (absent input is `null`), the service-side mirror of
/// the client's `TaskRequest::json`; bad JSON is [`ServiceError::InvalidInput`] naming the task.
pub fn json_input<I: serde::de::DeserializeOwned>(ctx: &TaskContext) -> Result<I, ServiceError> {
    let bytes = ctx.input.as_deref().unwrap_or(b"null");
    serde_json::from_slice(bytes)
        .map_err(|e| ServiceError::InvalidInput(format!("task {}: {e}", ctx.task_id)))
}

/// `output` as the JSON task output that the client's `decode_output` reads.
pub fn json_output<O: serde::Serialize + ?Sized>(
    output: &O,
) -> Result<Option<Bytes>, ServiceError> {
    serde_json::to_vec(output)
        .map(|v| Some(Bytes::from(v)))
        .map_err(|e| ServiceError::failed(format!("cannot encode the output: {e}")))
}

/// Serves `service` on the socket named by `FLAME_INSTANCE_ENDPOINT` until SIGTERM or SIGINT.
///
/// Fails without touching the filesystem when the variable is missing or invalid, or when a
/// file already exists at the path.
pub async fn run<S: FlameService>(service: S) -> Result<(), ServiceError> {
    let endpoint = std::env::var_os(INSTANCE_ENDPOINT_ENV).ok_or(ServiceError::MissingEndpoint)?;
    let path = PathBuf::from(endpoint);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServiceError::Signal)?;
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
    };
    serve(service, &path, shutdown).await
}

/// Serves `service` on the Unix socket `path` until `shutdown` completes.
///
/// `path` must be absolute, at most [`MAX_SOCKET_PATH_BYTES`] long, and must not exist yet.
/// The socket file is removed when serving ends, whether it ended cleanly or not.
pub async fn serve<S, F>(service: S, path: &Path, shutdown: F) -> Result<(), ServiceError>
where
    S: FlameService,
    F: Future<Output = ()> + Send,
{
    check_socket_path(path)?;
    if path.symlink_metadata().is_ok() {
        return Err(ServiceError::SocketExists {
            path: path.to_owned(),
        });
    }
    let listener = UnixListener::bind(path).map_err(|source| ServiceError::Bind {
        path: path.to_owned(),
        source,
    })?;
    tracing::info!(socket = %path.display(), "instance listening");
    let instance = InstanceServer::new(server::Server::new(service))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let result = tonic::transport::Server::builder()
        .add_service(instance)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %path.display(), error = %e, "cannot remove the socket file");
    }
    tracing::info!(socket = %path.display(), "instance stopped");
    Ok(result?)
}

/// Checks that `path` is an absolute path without a scheme that fits in `sun_path`.
fn check_socket_path(path: &Path) -> Result<(), ServiceError> {
    let invalid = |reason| ServiceError::InvalidEndpoint {
        endpoint: path.display().to_string(),
        reason,
    };
    let text = path.as_os_str().as_encoded_bytes();
    if text.starts_with(b"unix:") {
        return Err(invalid("it must be a filesystem path without a scheme"));
    }
    if !path.is_absolute() {
        return Err(invalid("it must be an absolute path"));
    }
    if text.len() > MAX_SOCKET_PATH_BYTES {
        return Err(invalid(
            "it is longer than a Unix socket path may be (107 bytes)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_input_and_output_mirror_the_client_and_bad_input_names_the_task() {
        let ctx = |input: &[u8]| TaskContext {
            task_id: "4".into(),
            session_id: "s".into(),
            input: Some(Bytes::copy_from_slice(input)),
        };
        let n: Vec<u32> = json_input(&ctx(b"[1,2]")).unwrap();
        assert_eq!(n, vec![1, 2]);
        let err = json_input::<Vec<u32>>(&ctx(b"{")).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid input: task 4: "),
            "{err}"
        );
        assert_eq!(
            json_output(&n).unwrap().unwrap(),
            Bytes::from_static(b"[1,2]")
        );
    }

    #[test]
    fn socket_paths_must_be_absolute_short_and_schemeless() {
        assert!(check_socket_path(Path::new("/tmp/x.sock")).is_ok());
        for bad in ["unix:///tmp/x.sock", "relative.sock", ""] {
            assert!(
                matches!(
                    check_socket_path(Path::new(bad)),
                    Err(ServiceError::InvalidEndpoint { .. })
                ),
                "{bad:?} accepted"
            );
        }
        let long = format!("/tmp/{}", "a".repeat(120));
        assert!(check_socket_path(Path::new(&long)).is_err());
    }

    #[test]
    fn failed_errors_carry_the_message_unchanged() {
        assert_eq!(ServiceError::failed("boom").to_string(), "boom");
    }
}
