//! The Flame Rust SDK.
//!
//! What: the service side of `flame.v1.Instance` ([`service`]: the [`service::FlameService`]
//! trait and [`service::run`], which serves it on `FLAME_INSTANCE_ENDPOINT`), and the built-in
//! services that back the `flmping` and `flmexec` applications ([`builtin`]), shipped as the
//! `flmping-service` and `flmexec-service` binaries of this crate.
//!
//! Why here: an application instance is a plain process that the node agent starts and drives
//! over a Unix socket (spec section 7); writing one in Rust should take a trait impl and one
//! call, exactly as flamepy's `FlameService` + `run` do for Python.
//!
//! The client side ([`client`]): a [`client::Connection`] that finds the Raft leader among the
//! members and rides through failover, sessions, exactly-once task submission with client
//! request ids, and watches that resume on another member.
//!
//! Caveat: the client does not yet cover application management, nodes, executors, cluster
//! status or typed (serde) task inputs.

pub mod builtin;
pub mod client;
pub mod logging;
pub mod service;

pub use service::{FlameService, ServiceError, SessionContext, TaskContext, run};
