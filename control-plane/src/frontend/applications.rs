//! Applications through the Frontend: RegisterApplication, UpdateApplication,
//! UnregisterApplication, GetApplication and ListApplication (spec sections 5.1 and 5.2), plus
//! the listing-only executor and node RPCs (section 5.5).
//!
//! The two error channels of spec section 4.3:
//! - request-validation failures (missing spec, unknown shim, bad schema, relative working
//!   directory) are an INVALID_ARGUMENT **status**;
//! - business failures (bad name, duplicate, unknown name, open sessions) are gRPC OK with
//!   `Result{return_code: -1, message}`, which is what flamepy raises from.
//!
//! Failures of the cluster itself (no leader, no quorum) are a status in every RPC: they are
//! not answers about the application.
//!
//! Caveat: only RegisterApplication checks the name's syntax (spec section 4.1); update and
//! unregister of a malformed name simply find nothing (`not found`), as for any unknown name.

use super::request::{
    application_not_found, application_outcome, application_spec, done_outcome, shown,
};
use crate::member::handle::MemberHandle;
use crate::state::Command;
use flame_proto::error::FlameError;
use flame_proto::model::validate_application_name;
use flame_proto::v1;
use tracing::{info, instrument};

/// `Result{0}`.
fn success() -> v1::Result {
    v1::Result {
        return_code: 0,
        message: None,
    }
}

/// `Result{-1, message}` for a business failure reported in-band.
fn refused(error: &FlameError) -> v1::Result {
    v1::Result {
        return_code: -1,
        message: Some(error.to_string()),
    }
}

/// Turns the outcome of an application command into the in-band `Result`.
fn in_band<T>(name: &str, rpc: &'static str, result: Result<T, FlameError>) -> v1::Result {
    match result {
        Ok(_) => {
            info!(rpc, application = name, "application changed");
            success()
        }
        Err(error) => {
            info!(rpc, application = name, %error, "refused in-band");
            refused(&error)
        }
    }
}

/// RegisterApplication.
#[instrument(skip_all, fields(application = %req.name))]
pub async fn register(
    handle: &MemberHandle,
    req: v1::RegisterApplicationRequest,
) -> Result<v1::Result, FlameError> {
    let spec = application_spec(req.application)?;
    if let Err(error) = validate_application_name(&req.name) {
        return Ok(in_band::<()>(&req.name, "RegisterApplication", Err(error)));
    }
    let command = Command::RegisterApplication {
        name: req.name.clone(),
        spec,
    };
    let result = application_outcome(handle.write(command).await?);
    Ok(in_band(&req.name, "RegisterApplication", result))
}

/// UpdateApplication: every field is replaced; refused while the application has Open
/// sessions.
#[instrument(skip_all, fields(application = %req.name))]
pub async fn update(
    handle: &MemberHandle,
    req: v1::UpdateApplicationRequest,
) -> Result<v1::Result, FlameError> {
    let spec = application_spec(req.application)?;
    let command = Command::UpdateApplication {
        name: req.name.clone(),
        spec,
    };
    let result = application_outcome(handle.write(command).await?);
    Ok(in_band(&req.name, "UpdateApplication", result))
}

/// UnregisterApplication: removes the application with its (Closed) sessions; refused while
/// one is Open.
#[instrument(skip_all, fields(application = %req.name))]
pub async fn unregister(
    handle: &MemberHandle,
    req: v1::UnregisterApplicationRequest,
) -> Result<v1::Result, FlameError> {
    let command = Command::UnregisterApplication {
        name: req.name.clone(),
    };
    let result = done_outcome(handle.write(command).await?);
    Ok(in_band(&req.name, "UnregisterApplication", result))
}

/// GetApplication: NOT_FOUND `application <name> not found` for an unknown name, which flamepy
/// turns into `None`.
pub async fn get(
    handle: &MemberHandle,
    req: v1::GetApplicationRequest,
) -> Result<v1::Application, FlameError> {
    let view = handle.read().await?;
    view.state
        .application(&req.name)
        .map(v1::Application::from)
        .ok_or_else(|| application_not_found(&req.name))
}

/// ListApplication: every application, built-ins included, by name.
pub async fn list(handle: &MemberHandle) -> Result<v1::ApplicationList, FlameError> {
    let view = handle.read().await?;
    Ok(v1::ApplicationList {
        applications: view
            .state
            .applications()
            .map(v1::Application::from)
            .collect(),
    })
}

/// ListExecutor: every executor, by id.
pub async fn list_executors(handle: &MemberHandle) -> Result<v1::ExecutorList, FlameError> {
    let view = handle.read().await?;
    Ok(v1::ExecutorList {
        executors: view.state.executors().map(v1::Executor::from).collect(),
    })
}

/// ListNodes: every known node, by name.
pub async fn list_nodes(handle: &MemberHandle) -> Result<v1::NodeList, FlameError> {
    let view = handle.read().await?;
    Ok(v1::NodeList {
        nodes: view.state.nodes().map(v1::Node::from).collect(),
    })
}

/// GetNode: NOT_FOUND `node <name> not found` for an unknown name.
pub async fn get_node(
    handle: &MemberHandle,
    req: v1::GetNodeRequest,
) -> Result<v1::GetNodeResponse, FlameError> {
    let view = handle.read().await?;
    let node = view
        .state
        .node(&req.name)
        .ok_or_else(|| FlameError::NotFound(format!("node {} not found", shown(&req.name))))?;
    Ok(v1::GetNodeResponse {
        node: Some(v1::Node::from(node)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_failures_travel_in_band_with_the_error_text() {
        let r = in_band::<()>(
            "app",
            "UnregisterApplication",
            Err(FlameError::InvalidState(
                "application app has open sessions (1)".into(),
            )),
        );
        assert_eq!(r.return_code, -1);
        assert!(r.message.unwrap_or_default().contains("open sessions"));
        let ok = in_band("app", "RegisterApplication", Ok(()));
        assert_eq!((ok.return_code, ok.message), (0, None));
    }
}
