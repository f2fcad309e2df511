//! Duties that only the leader performs, restarted by every new leader from replicated state.
//!
//! - On winning an election: make sure the built-in applications exist (`EnsureBuiltins`), so a
//!   fresh cluster lists exactly `flmexec`, `flmping` and `flmrun`.
//! - Periodically: purge closed sessions beyond `cluster.limits` (retention), by proposing
//!   `PurgeSessions` like any other write.
//!
//! Caveat: a duty that fails (for example because leadership moved mid-way) is simply tried
//! again by whichever member leads next; every duty is idempotent.

use super::handle::MemberHandle;
use super::proposer::now_ms;
use crate::config::Config;
use crate::state::{Command, closed_sessions_to_purge};
use openraft::ServerState;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often the leader checks retention.
const RETENTION_EVERY: Duration = Duration::from_secs(5);

/// Runs the leader's duties until `stop` turns true.
pub async fn run(handle: MemberHandle, config: Config, mut stop: watch::Receiver<bool>) {
    let mut metrics = handle.raft.metrics();
    let mut led_term = None;
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    loop {
        let (state, term) = {
            let m = metrics.borrow_and_update();
            (m.state, m.current_term)
        };
        if state == ServerState::Leader && led_term != Some(term) {
            info!(term, "became leader");
            match handle.write(Command::EnsureBuiltins { now_ms: 0 }).await {
                Ok(_) => led_term = Some(term),
                Err(e) => warn!(error = %e, "could not ensure the built-in applications"),
            }
        }
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = retention.tick() => {
                if state == ServerState::Leader {
                    purge_closed_sessions(&handle, &config).await;
                }
            }
        }
    }
}

async fn purge_closed_sessions(handle: &MemberHandle, config: &Config) {
    let limits = &config.cluster.limits;
    if limits.max_sessions.is_none() && limits.max_closed_session_age_secs.is_none() {
        return;
    }
    let view = handle.local();
    let max_age = limits.max_closed_session_age_secs.map(|s| s as i64 * 1000);
    let ids = closed_sessions_to_purge(&view.state, limits.max_sessions, max_age, now_ms());
    if ids.is_empty() {
        return;
    }
    let count = ids.len();
    match handle.write(Command::PurgeSessions { ids }).await {
        Ok(_) => info!(count, "purged closed sessions"),
        Err(e) => warn!(error = %e, "retention purge failed"),
    }
}
