//! The tonic `Instance` implementation that adapts a [`FlameService`] to the wire.
//!
//! What: converts `flame.v1` messages to the SDK's context structs, calls the service under one
//! async mutex, and turns every service error into `return_code = -1` with the error's text.
//!
//! Why a mutex: tonic runs each request on its own task, but an instance must see its calls
//! strictly one at a time (spec section 7.1). tokio's mutex is fair, so queued calls run in the
//! order they arrived.
//!
//! Caveat: no gRPC error is ever returned for a service failure; only tonic itself produces
//! transport-level errors.

use super::{FlameService, SessionContext, TaskContext};
use bytes::Bytes;
use flame_proto::v1;
use std::sync::Arc;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

/// Return code of a failed call, as flamepy and flame-rs send it.
const FAILURE: i32 = -1;

/// The `Instance` server for one service.
pub(super) struct Server<S> {
    /// The service; locked for the whole of each call.
    service: Arc<Mutex<S>>,
}

impl<S> Server<S> {
    /// Wraps `service`.
    pub(super) fn new(service: S) -> Self {
        Server {
            service: Arc::new(Mutex::new(service)),
        }
    }
}

/// A `Result` message for `outcome`.
fn result_message(outcome: Result<(), super::ServiceError>) -> v1::Result {
    match outcome {
        Ok(()) => v1::Result {
            return_code: 0,
            message: None,
        },
        Err(e) => v1::Result {
            return_code: FAILURE,
            message: Some(e.to_string()),
        },
    }
}

#[tonic::async_trait]
impl<S: FlameService> v1::instance_server::Instance for Server<S> {
    async fn on_session_enter(
        &self,
        request: Request<v1::SessionContext>,
    ) -> Result<Response<v1::Result>, Status> {
        let wire = request.into_inner();
        let ctx = SessionContext {
            session_id: wire.session_id.into(),
            application: wire.application.map(|a| a.name).unwrap_or_default(),
            common_data: wire.common_data.map(Bytes::from),
        };
        let session_id = ctx.session_id.clone();
        let mut service = self.service.lock().await;
        let outcome = service.on_session_enter(ctx).await;
        match &outcome {
            Ok(()) => tracing::info!(%session_id, "session entered"),
            Err(e) => tracing::warn!(%session_id, error = %e, "on_session_enter failed"),
        }
        Ok(Response::new(result_message(outcome)))
    }

    async fn on_task_invoke(
        &self,
        request: Request<v1::TaskContext>,
    ) -> Result<Response<v1::TaskResult>, Status> {
        let wire = request.into_inner();
        let ctx = TaskContext {
            task_id: wire.task_id,
            session_id: wire.session_id.into(),
            input: wire.input.map(Bytes::from),
        };
        let (task_id, session_id) = (ctx.task_id.clone(), ctx.session_id.clone());
        let mut service = self.service.lock().await;
        let result = match service.on_task_invoke(ctx).await {
            Ok(output) => {
                tracing::debug!(%session_id, %task_id, "task succeeded");
                v1::TaskResult {
                    return_code: 0,
                    output: output.map(Vec::from),
                    message: None,
                }
            }
            Err(e) => {
                tracing::warn!(%session_id, %task_id, error = %e, "task failed");
                v1::TaskResult {
                    return_code: FAILURE,
                    output: None,
                    message: Some(e.to_string()),
                }
            }
        };
        Ok(Response::new(result))
    }

    async fn on_session_leave(
        &self,
        _request: Request<v1::EmptyRequest>,
    ) -> Result<Response<v1::Result>, Status> {
        let mut service = self.service.lock().await;
        let outcome = service.on_session_leave().await;
        match &outcome {
            Ok(()) => tracing::info!("session left"),
            Err(e) => tracing::warn!(error = %e, "on_session_leave failed"),
        }
        Ok(Response::new(result_message(outcome)))
    }
}
