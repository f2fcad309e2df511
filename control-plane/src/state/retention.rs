//! Retention of closed sessions, so replicated state and snapshots stay bounded.
//!
//! What: [`closed_sessions_to_purge`] is the pure policy the leader evaluates on its own clock;
//! it proposes the answer as [`super::Command::PurgeSessions`], which every member applies
//! identically (the rules layer, `state::rules::sessions`).
//!
//! Why split: the policy depends on the leader's clock (`now_ms`), which apply must never read;
//! the command carries the decision instead.
//!
//! Caveat: only Closed sessions are ever purged. A purge command naming an Open or unknown
//! session (the state changed between decision and apply) skips it.

use super::model::State;
use flame_proto::model::SessionState;

/// The Closed sessions to purge, oldest first (by completion time, then id): every one closed
/// more than `max_age_ms` before `now_ms`, then the oldest beyond the newest `max_closed`.
/// `None` disables a limit.
pub fn closed_sessions_to_purge(
    state: &State,
    max_closed: Option<usize>,
    max_age_ms: Option<i64>,
    now_ms: i64,
) -> Vec<String> {
    let mut closed: Vec<(i64, &str)> = state
        .sessions()
        .filter(|s| s.state == SessionState::Closed)
        .map(|s| {
            let closed_at = s.completion_time_ms.unwrap_or(s.creation_time_ms);
            (closed_at, s.id.as_str())
        })
        .collect();
    closed.sort_unstable();
    let too_old =
        |closed_at: i64| max_age_ms.is_some_and(|age| now_ms.saturating_sub(closed_at) > age);
    let old = closed.iter().take_while(|(at, _)| too_old(*at)).count();
    let over = max_closed.map_or(0, |max| closed.len().saturating_sub(max));
    closed
        .into_iter()
        .take(old.max(over))
        .map(|(_, id)| id.to_owned())
        .collect()
}
