//! Session commands that reach other entities: closing cancels tasks, unbinds executors and
//! records the object drop; removal unbinds executors. See the table in the rules module.

use crate::state::tx::Tx;
use crate::state::{cache, executor, session, task};
use flame_proto::error::FlameError;
use flame_proto::model::Session;

/// CloseSession: an Open session without Running tasks closes, its Pending tasks are
/// Cancelled, its executors unbind and its objects are dropped; a repeat changes nothing.
pub(crate) fn close(tx: &mut Tx<'_>, id: &str) -> Result<Session, FlameError> {
    if session::close(tx, id)? {
        task::cancel_pending(tx, id);
        executor::session_closed(tx, id);
        if let Some(application) = tx.state.session(id).map(|s| s.spec.application.clone()) {
            cache::record_drop(tx, cache::session_prefix(&application, id));
        }
    }
    session::current(tx, id)
}

/// DeleteSession: removes a Closed session whose tasks are all terminal; returns it.
pub(crate) fn delete(tx: &mut Tx<'_>, id: &str) -> Result<Session, FlameError> {
    let session = session::check_delete(tx, id)?;
    remove(tx, id);
    Ok(session)
}

/// Removes session `id` with its tasks, events and request ids; executors still bound to it
/// start unbinding. Callers have checked the transition.
pub(crate) fn remove(tx: &mut Tx<'_>, id: &str) {
    executor::session_closed(tx, id);
    session::remove(tx, id);
}

/// PurgeSessions: removes each Closed session named (Open or unknown ones are skipped);
/// returns those removed.
pub(crate) fn purge(tx: &mut Tx<'_>, ids: Vec<String>) -> Vec<String> {
    let mut removed = Vec::new();
    for id in ids {
        if session::check(tx, &id, session::SessionEvent::Remove)
            == Ok(session::SessionStep::Remove)
        {
            remove(tx, &id);
            removed.push(id);
        }
    }
    removed
}
