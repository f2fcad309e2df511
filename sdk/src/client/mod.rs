//! The client side of the SDK: connections with leader discovery, sessions, exactly-once task
//! submission and failover-proof watches.
//!
//! What: [`Connection`] talks to a three-member (or any size) control plane from a list of
//! endpoints or `FLAME_ENDPOINT`; writes go to the Raft leader, reads and watches to any
//! member, and NotLeader / UNAVAILABLE / broken connections are retried with bounded
//! exponential backoff and jitter ([`connection`]). [`Session`] creates tasks with client
//! request ids so a retried submission never creates a second task, lists and gets them,
//! watches them across member failures and runs one to completion ([`session`]).
//! Applications, nodes, executors and the Raft group are administered through the same
//! [`Connection`] ([`admin`]), and endpoints resolve from explicit ones, `FLAME_ENDPOINT`, the
//! current context of `~/.flame/flame.yaml`, or `http://127.0.0.1:8080`, in that order
//! ([`context`]).
//!
//! Why: upstream clients take one endpoint and never retry, so every leader change fails their
//! futures; Flame's control plane is replicated, and its clients should ride through failover.
//!
//! Caveats: errors are [`ClientError`], by meaning, wrapping the server's
//! [`FlameError`] when the server gave one; in-band application refusals are
//! [`ClientError::Refused`]; typed (serde, JSON) inputs and outputs that do not encode or
//! decode are [`ClientError::Codec`] naming the task ([`typed`]).

pub mod admin;
pub mod connection;
pub mod context;
pub mod endpoints;
pub mod session;
pub mod typed;

pub use admin::{ClusterStatus, MemberReport, MemberView};
pub use connection::{ConnectOptions, Connection};
pub use context::{DEFAULT_ENDPOINT, FlameConfig, resolve_endpoints};
pub use endpoints::{ENDPOINT_ENV, endpoints_from_env, parse_endpoints};
pub use flame_proto::error::FlameError;
pub use flame_proto::v1::{Application, ApplicationSpec, Task, TaskState};
pub use session::{Session, SessionOptions, TaskRequest, TaskWatch};
pub use typed::decode_output;

use std::time::Duration;

/// A client-side failure, by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a domain error (not found, invalid state, too large, ...).
    #[error(transparent)]
    Flame(#[from] FlameError),
    /// No member answered successfully before the deadline.
    #[error(
        "no Flame member answered within {deadline:?} (tried {}); last failure: {last}",
        tried.join(", ")
    )]
    NoMember {
        /// Every endpoint and leader hint the operation was sent to.
        tried: Vec<String>,
        /// The deadline that passed.
        deadline: Duration,
        /// The last failure seen.
        last: String,
    },
    /// An endpoint is malformed or none was given.
    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(String),
    /// A task ended Failed (or Cancelled); the message is the task's own failure text.
    #[error("task {task_id} {state}: {message}")]
    TaskFailed {
        /// The task's id.
        task_id: String,
        /// `failed` or `cancelled`.
        state: String,
        /// The failure message from the task's last event, or a generic one.
        message: String,
    },
    /// The server refused an application change in-band (gRPC OK with a non-zero
    /// `Result.return_code`): duplicate or bad name, unknown name, open sessions.
    #[error("{operation} refused: {message}")]
    Refused {
        /// The RPC, for example `RegisterApplication`.
        operation: String,
        /// The non-zero return code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// The request cannot be sent as asked (checked client-side, before any RPC).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The client configuration (`~/.flame/flame.yaml`) is unreadable or incomplete.
    #[error("invalid config: {0}")]
    Config(String),
    /// A typed task input could not be encoded, or an output decoded, as JSON.
    #[error("cannot {action} of task {task}: {message}")]
    Codec {
        /// The task id, or `with request id <id>` before the task exists.
        task: String,
        /// `encode the input` or `decode the output`.
        action: &'static str,
        /// serde's explanation.
        message: String,
    },
    /// A reply lacks something the protocol promises (a bug on one side).
    #[error("protocol: {0}")]
    Protocol(String),
    /// A typed cache object could not be encoded, or a stored one decoded, as JSON
    /// ([`crate::cache`]).
    #[error("cannot {action} of object {key}: {message}")]
    ObjectCodec {
        /// The object's key, or the put target before the object exists.
        key: String,
        /// `encode the value`, `decode the base` or `decode a patch`.
        action: &'static str,
        /// serde's explanation.
        message: String,
    },
}

impl ClientError {
    /// Whether the server said the thing asked for does not exist (gRPC NOT_FOUND).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Flame(FlameError::NotFound(_)))
    }
}
