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
//! request ids, watches that resume on another member, typed (serde, JSON) task inputs and
//! outputs, and administration of applications, nodes, executors and the Raft group.
//!
//! The object cache ([`cache`]): an [`cache::ObjectCache`] handle that puts, gets (in full or
//! incrementally from a held version), updates, patches and deletes objects with flamepy's
//! conventions (spec Annex A), typed through serde or as raw bytes.

pub mod builtin;
pub mod cache;
pub mod client;
pub mod logging;
pub mod service;

pub use flame_proto::model::{ExecutorId, NodeName, SessionId, TaskId};
pub use service::{FlameService, ServiceError, SessionContext, TaskContext, run};
