//! Sessions through the Frontend: CreateSession, OpenSession, CloseSession, DeleteSession,
//! GetSession and ListSession (spec sections 5.3 and 4.4).
//!
//! Every write is checked here first (session id non-empty and at most 128 characters,
//! `common_data` within the payload limit, `resreq` resolved against the cluster default) and
//! then proposed; the state machine decides the rest (unknown application → NOT_FOUND,
//! duplicate → ALREADY_EXISTS, `not open`, `spec mismatch`, `Cannot close session with running
//! tasks`). Responses carry the counters and only the session-level events (1001 and 1002),
//! with `batch_size` 1 and the resolved `resreq`, by the conversions in `flame-proto`.

use super::request::{self, missing, session_outcome, session_spec};
use crate::member::handle::MemberHandle;
use crate::state::Command;
use flame_proto::error::FlameError;
use flame_proto::v1;
use tracing::{debug, instrument};

fn not_found(id: &str) -> FlameError {
    FlameError::NotFound(format!("session {id} not found"))
}

/// Proposes a session command and returns the resulting session on the wire.
async fn write(handle: &MemberHandle, command: Command) -> Result<v1::Session, FlameError> {
    let session = session_outcome(handle.write(command).await?)?;
    debug!(state = ?session.state, "session written");
    Ok(v1::Session::from(&session))
}

/// CreateSession: a new Open session; a missing spec is INVALID_ARGUMENT.
#[instrument(skip_all, fields(session_id = %req.session_id))]
pub async fn create(
    handle: &MemberHandle,
    req: v1::CreateSessionRequest,
) -> Result<v1::Session, FlameError> {
    request::session_id(&req.session_id)?;
    let spec = session_spec(
        req.session.ok_or_else(|| missing("session"))?,
        &handle.limits,
    )?;
    let command = Command::CreateSession {
        id: req.session_id,
        spec,
    };
    write(handle, command).await
}

/// OpenSession: the atomic get-or-create of spec section 5.3.
#[instrument(skip_all, fields(session_id = %req.session_id, with_spec = req.session.is_some()))]
pub async fn open(
    handle: &MemberHandle,
    req: v1::OpenSessionRequest,
) -> Result<v1::Session, FlameError> {
    request::session_id(&req.session_id)?;
    let spec = req
        .session
        .map(|s| session_spec(s, &handle.limits))
        .transpose()?;
    let command = Command::OpenSession {
        id: req.session_id,
        spec,
    };
    write(handle, command).await
}

/// CloseSession: cancels Pending tasks and closes; idempotent.
#[instrument(skip_all, fields(session_id = %req.session_id))]
pub async fn close(
    handle: &MemberHandle,
    req: v1::CloseSessionRequest,
) -> Result<v1::Session, FlameError> {
    request::session_id(&req.session_id)?;
    let command = Command::CloseSession { id: req.session_id };
    write(handle, command).await
}

/// DeleteSession: only a Closed session whose tasks are all terminal; returns it as deleted.
#[instrument(skip_all, fields(session_id = %req.session_id))]
pub async fn delete(
    handle: &MemberHandle,
    req: v1::DeleteSessionRequest,
) -> Result<v1::Session, FlameError> {
    request::session_id(&req.session_id)?;
    write(handle, Command::DeleteSession { id: req.session_id }).await
}

/// GetSession: the session with its counters and session events, or NOT_FOUND.
pub async fn get(
    handle: &MemberHandle,
    req: v1::GetSessionRequest,
) -> Result<v1::Session, FlameError> {
    let id = request::session_id(&req.session_id)?;
    let view = handle.read().await?;
    view.state
        .session(id)
        .map(v1::Session::from)
        .ok_or_else(|| not_found(id))
}

/// ListSession: every session still held, Open and Closed, by id.
pub async fn list(handle: &MemberHandle) -> Result<v1::SessionList, FlameError> {
    let view = handle.read().await?;
    Ok(v1::SessionList {
        sessions: view.state.sessions().map(v1::Session::from).collect(),
    })
}
