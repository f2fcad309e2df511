//! The client API every member serves: upstream's `flame.v1.Frontend` (all 18 RPCs, spec
//! sections 4–6 and the checklist of section 14) and Flame's batch `flame.cluster.v1.Tasks`.
//!
//! What each kind of RPC does:
//! - **Writes** are validated on the receiving member ([`request`]), turned into one
//!   [`crate::state::Command`] (without a time: the leader dates the entry), replicated through
//!   [`MemberHandle::write`] (forwarded to the leader from a follower, so the client sees one
//!   ordinary call; held across a leader change within the client's `grpc-timeout`, see
//!   [`MemberHandle::within`]), and the replicated outcome is converted back. RegisterApplication,
//!   UpdateApplication and UnregisterApplication report business failures in-band
//!   ([`applications`]).
//! - **Reads** (`Get*`, `List*`, and the start of ListTask) are linearizable: the leader confirms
//!   the read index and this member answers from its own state once it has applied that far
//!   ([`MemberHandle::read`] tries again when one confirmation round was too slow).
//! - **WatchTask** ([`watch`]) follows this member's own applied state, so it keeps delivering
//!   on a follower through a leader change; every message carries the task's events.
//!
//! Errors are [`FlameError`]s, mapped to statuses only by `Status::from` in `flame-proto`
//! (codes and texts of spec section 4.3; NotLeader and Unavailable carry the leader hint).
//!
//! Caveats:
//! - The servers accept requests up to the payload limit plus 1 MiB
//!   ([`crate::member::limits::decoding_limit`]), so a payload slightly over the limit gets the error that
//!   names the limit; a far larger message is refused by tonic (OUT_OF_RANGE).
//! - WatchTask streams end with UNAVAILABLE when the member shuts down, so a graceful shutdown
//!   never waits on a watch of a task that will not finish.

pub mod applications;
pub mod request;
pub mod sessions;
pub mod tasks;
pub mod watch;

use crate::member::handle::MemberHandle;
use crate::member::limits::{batch_payload_limit, decoding_limit};
use flame_proto::cluster::tasks_server::{Tasks, TasksServer};
use flame_proto::cluster::{CreateTasksRequest, CreateTasksResponse};
use flame_proto::deadline::grpc_timeout;
use flame_proto::error::FlameError;
use flame_proto::v1;
use flame_proto::v1::frontend_server::{Frontend, FrontendServer};
use std::sync::Arc;
use tokio::sync::watch as signal;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

/// The `flame.v1.Frontend` service of one member.
#[derive(Clone)]
pub struct FrontendService {
    /// The member's write and read paths.
    pub handle: MemberHandle,
    /// Routes applied changes to open WatchTask streams.
    pub watches: Arc<watch::WatchHub>,
}

impl FrontendService {
    /// A Frontend for `handle` whose watches end when `shutdown` turns true.
    pub fn new(handle: MemberHandle, shutdown: signal::Receiver<bool>) -> Self {
        let limit = handle.limits.max_watches;
        let watches = watch::WatchHub::start(handle.reader.clone(), shutdown, limit);
        FrontendService { handle, watches }
    }
}

/// The tonic server for the Frontend of `handle`, accepting payloads up to the member's limit;
/// its watches end when `shutdown` turns true.
pub fn frontend_server(
    handle: MemberHandle,
    shutdown: signal::Receiver<bool>,
) -> FrontendServer<FrontendService> {
    let limit = decoding_limit(handle.limits.max_payload_bytes);
    FrontendServer::new(FrontendService::new(handle, shutdown)).max_decoding_message_size(limit)
}

/// The `flame.cluster.v1.Tasks` service (batch task submission) of one member.
#[derive(Clone)]
pub struct TasksService {
    /// The member's write path.
    pub handle: MemberHandle,
}

/// The tonic server for the Tasks service of `handle`, accepting a batch up to its limit.
pub fn tasks_server(handle: MemberHandle) -> TasksServer<TasksService> {
    let limit = decoding_limit(batch_payload_limit(&handle.limits));
    TasksServer::new(TasksService { handle }).max_decoding_message_size(limit)
}

/// Logs a failed RPC and maps the result to tonic's: server faults
/// ([`FlameError::is_server_fault`]) at `warn`, the rest (the client's own mistakes, a routine
/// NotLeader redirect) at `debug`.
fn reply<T>(rpc: &'static str, result: Result<T, FlameError>) -> Result<Response<T>, Status> {
    match result {
        Ok(value) => Ok(Response::new(value)),
        Err(error) => {
            if error.is_server_fault() {
                warn!(rpc, code = ?error.code(), %error, "request failed")
            } else {
                debug!(rpc, code = ?error.code(), %error, "request refused")
            }
            Err(Status::from(error))
        }
    }
}

#[tonic::async_trait]
impl Frontend for FrontendService {
    async fn register_application(
        &self,
        request: Request<v1::RegisterApplicationRequest>,
    ) -> Result<Response<v1::Result>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let result = MemberHandle::within(
            timeout,
            applications::register(&self.handle, request.into_inner()),
        )
        .await;
        reply("RegisterApplication", result)
    }

    async fn unregister_application(
        &self,
        request: Request<v1::UnregisterApplicationRequest>,
    ) -> Result<Response<v1::Result>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let result = MemberHandle::within(
            timeout,
            applications::unregister(&self.handle, request.into_inner()),
        )
        .await;
        reply("UnregisterApplication", result)
    }

    async fn update_application(
        &self,
        request: Request<v1::UpdateApplicationRequest>,
    ) -> Result<Response<v1::Result>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let result = MemberHandle::within(
            timeout,
            applications::update(&self.handle, request.into_inner()),
        )
        .await;
        reply("UpdateApplication", result)
    }

    async fn get_application(
        &self,
        request: Request<v1::GetApplicationRequest>,
    ) -> Result<Response<v1::Application>, Status> {
        let result = applications::get(&self.handle, request.into_inner()).await;
        reply("GetApplication", result)
    }

    async fn list_application(
        &self,
        _request: Request<v1::ListApplicationRequest>,
    ) -> Result<Response<v1::ApplicationList>, Status> {
        reply("ListApplication", applications::list(&self.handle).await)
    }

    async fn list_executor(
        &self,
        _request: Request<v1::ListExecutorRequest>,
    ) -> Result<Response<v1::ExecutorList>, Status> {
        reply(
            "ListExecutor",
            applications::list_executors(&self.handle).await,
        )
    }

    async fn list_nodes(
        &self,
        _request: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::NodeList>, Status> {
        reply("ListNodes", applications::list_nodes(&self.handle).await)
    }

    async fn get_node(
        &self,
        request: Request<v1::GetNodeRequest>,
    ) -> Result<Response<v1::GetNodeResponse>, Status> {
        let result = applications::get_node(&self.handle, request.into_inner()).await;
        reply("GetNode", result)
    }

    async fn create_session(
        &self,
        request: Request<v1::CreateSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let result = MemberHandle::within(
            timeout,
            sessions::create(&self.handle, request.into_inner()),
        )
        .await;
        reply("CreateSession", result)
    }

    async fn delete_session(
        &self,
        request: Request<v1::DeleteSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let result = MemberHandle::within(
            timeout,
            sessions::delete(&self.handle, request.into_inner()),
        )
        .await;
        reply("DeleteSession", result)
    }

    async fn open_session(
        &self,
        request: Request<v1::OpenSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let result =
            MemberHandle::within(timeout, sessions::open(&self.handle, request.into_inner())).await;
        reply("OpenSession", result)
    }

    async fn close_session(
        &self,
        request: Request<v1::CloseSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let result =
            MemberHandle::within(timeout, sessions::close(&self.handle, request.into_inner()))
                .await;
        reply("CloseSession", result)
    }

    async fn get_session(
        &self,
        request: Request<v1::GetSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let result = sessions::get(&self.handle, request.into_inner()).await;
        reply("GetSession", result)
    }

    async fn list_session(
        &self,
        _request: Request<v1::ListSessionRequest>,
    ) -> Result<Response<v1::SessionList>, Status> {
        reply("ListSession", sessions::list(&self.handle).await)
    }

    async fn create_task(
        &self,
        request: Request<v1::CreateTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let (metadata, _, message) = request.into_parts();
        let timeout = grpc_timeout(&metadata);
        let call = tasks::create(&self.handle, &metadata, message);
        let result = MemberHandle::within(timeout, call).await;
        reply("CreateTask", result)
    }

    async fn get_task(
        &self,
        request: Request<v1::GetTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        let result = tasks::get(&self.handle, request.into_inner()).await;
        reply("GetTask", result)
    }

    type WatchTaskStream = watch::WatchStream;

    async fn watch_task(
        &self,
        request: Request<v1::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let result = watch::watch(&self.handle, &self.watches, request.into_inner()).await;
        reply("WatchTask", result)
    }

    type ListTaskStream = tasks::TaskStream;

    async fn list_task(
        &self,
        request: Request<v1::ListTaskRequest>,
    ) -> Result<Response<Self::ListTaskStream>, Status> {
        let result = tasks::list(&self.handle, request.into_inner()).await;
        reply("ListTask", result)
    }
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create_tasks(
        &self,
        request: Request<CreateTasksRequest>,
    ) -> Result<Response<CreateTasksResponse>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let call = tasks::create_batch(&self.handle, request.into_inner());
        let result = MemberHandle::within(timeout, call).await;
        reply("CreateTasks", result)
    }
}
