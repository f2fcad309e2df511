//! Application commands that reach other entities: UnregisterApplication removes the
//! application's sessions and records its object drop. See the table in the rules module.

use super::sessions;
use crate::state::tx::Tx;
use crate::state::{application, cache, session};
use flame_proto::error::FlameError;

/// UnregisterApplication: refused with Open sessions; removes the application and all its
/// (Closed) sessions with their tasks, and appends the object drop `<name>/*`.
pub(crate) fn unregister(tx: &mut Tx<'_>, name: &str) -> Result<(), FlameError> {
    application::check_unregister(tx, name)?;
    for id in session::of_application(tx, name) {
        sessions::remove(tx, &id);
    }
    application::remove(tx, name);
    cache::record_drop(tx, cache::application_prefix(name));
    Ok(())
}
