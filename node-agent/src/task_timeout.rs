//! Optional task timeouts on the agent: the agent-wide default, the application label that
//! overrides it, and the failure message of a task that ran out of time.
//!
//! What: the label's parsing and precedence live with the other Flame labels in
//! [`flame_proto::model::labels`] (members check them at registration); this module re-exports
//! them under the agent's names and adds [`message`].
//!
//! Caveat: a malformed label value (possible on an application registered before members
//! checked labels) is a bind failure (code 19) whose message names the label and the value, so
//! the user sees it in the session's code-1001 event instead of a timeout that silently does
//! not apply.

use std::time::Duration;

pub use flame_proto::model::labels::{
    LabelTimeout, TASK_TIMEOUT as LABEL, parse_timeout as parse, task_timeout as from_labels,
};

/// The failure message of a task that did not finish within `limit`.
pub fn message(limit: Duration) -> String {
    format!(
        "task exceeded its timeout of {}",
        humantime::format_duration(limit)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_message_names_the_duration() {
        assert_eq!(
            message(Duration::from_millis(300)),
            "task exceeded its timeout of 300ms"
        );
        assert_eq!(
            message(Duration::from_secs(120)),
            "task exceeded its timeout of 2m"
        );
    }
}
