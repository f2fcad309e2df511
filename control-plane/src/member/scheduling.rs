//! The leader's scheduling loop: turns [`crate::scheduler::plan`] into replicated commands.
//!
//! What: while this member leads, one cycle runs every `cluster.schedule_interval` ms and
//! promptly after every applied batch that changed anything (a view with effects, or views the
//! loop never saw). Cycles are debounced: at most one runs at a time, and every trigger that
//! arrives meanwhile folds into one follow-up cycle. A cycle is `WarmTimers::observe` → `plan`
//! (new executor ids are UUIDv4s) → `WarmTimers::note_plan` → metrics (waiting sessions,
//! reclaims, rotations, first-executor waits) → propose the commands one after another, in plan
//! order.
//!
//! Why sequential proposals: the plan's order matters (an executor is created before it is
//! bound), and the proposer does not promise that concurrently proposed entries commit in the
//! order they were handed over. The bulk of the hot path, dispatch, is one `AssignTasks`.
//!
//! Why the proposer and not [`MemberHandle::write`]: `write` forwards to the new leader when
//! leadership moves, and a plan made from a former leader's view must not be applied by the
//! new one (executor creation is not capacity-checked when applied). Through the proposer the
//! rest of such a plan fails with NotLeader and is dropped.
//!
//! Caveats:
//! - A new leader starts with fresh [`WarmTimers`] (idle executors then stay warm longer) and
//!   makes its first plan from a linearizable view, so it never plans from a state older than
//!   what its predecessor committed.
//! - A refused command (its state changed since the plan was made) is logged at debug; the next
//!   cycle plans again from the new state.

use super::handle::MemberHandle;
use super::proposer::now_ms;
use crate::config::Config;
use crate::scheduler::{PlanStats, SchedulerConfig, WarmTimers, plan_with_stats};
use crate::state::{Outcome, StateView};
use flame_proto::error::FlameError;
use openraft::ServerState;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

type Metrics = watch::Receiver<openraft::RaftMetrics<u64, crate::state::Member>>;

/// Runs the scheduling loop until `stop` turns true; it schedules only while this member leads.
pub async fn run(handle: MemberHandle, config: Config, mut stop: watch::Receiver<bool>) {
    let settings = SchedulerConfig::from_config(&config);
    let period = Duration::from_millis(config.cluster.schedule_interval.max(1));
    let mut metrics = handle.raft.metrics();
    // Each pass waits for leadership, then schedules until it ends; bounded by `stop`.
    loop {
        let Some(term) = wait_for_leadership(&mut metrics, &mut stop).await else {
            return;
        };
        info!(term, "scheduling as leader");
        lead(&handle, &settings, period, term, &mut metrics, &mut stop).await;
        if *stop.borrow() {
            return;
        }
        info!(term, "stopped scheduling: no longer the leader");
    }
}

/// The term this member leads in, if it leads.
fn leading(metrics: &mut Metrics) -> Option<u64> {
    let m = metrics.borrow_and_update();
    (m.state == ServerState::Leader).then_some(m.current_term)
}

/// Waits until this member leads; `None` when it stops first.
async fn wait_for_leadership(
    metrics: &mut Metrics,
    stop: &mut watch::Receiver<bool>,
) -> Option<u64> {
    loop {
        if *stop.borrow() {
            return None;
        }
        if let Some(term) = leading(metrics) {
            return Some(term);
        }
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return None,
            changed = metrics.changed() => changed.ok()?,
        }
    }
}

/// Schedules while this member leads in `term`; returns when that ends or `stop` turns true.
async fn lead(
    handle: &MemberHandle,
    settings: &SchedulerConfig,
    period: Duration,
    term: u64,
    metrics: &mut Metrics,
    stop: &mut watch::Receiver<bool>,
) {
    let mut timers = WarmTimers::new();
    let mut reader = handle.reader.clone();
    if !caught_up(handle, period, term, metrics, stop).await {
        return;
    }
    let mut last_revision = handle.local().revision;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut due = true;
    // Bounded by leadership and `stop`: every wait below also watches both.
    loop {
        if due {
            due = false;
            if let Err(error) = cycle(handle, &mut timers, settings).await {
                debug!(%error, "scheduling cycle cut short");
            }
        }
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            changed = metrics.changed() => {
                if changed.is_err() || leading(metrics) != Some(term) {
                    return;
                }
            }
            _ = tick.tick() => due = true,
            view = reader.changed() => match view {
                Some(view) => {
                    due = relevant(&view, last_revision);
                    last_revision = last_revision.max(view.revision);
                }
                None => return,
            },
        }
    }
}

/// Waits until a linearizable read succeeds, so the local state includes everything committed
/// before this term; retries once per `period`. False when leadership in `term` ends or `stop`
/// turns true first.
async fn caught_up(
    handle: &MemberHandle,
    period: Duration,
    term: u64,
    metrics: &mut Metrics,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    // Bounded by leadership and `stop`, checked after every failed attempt.
    loop {
        match handle.read().await {
            Ok(_) => return true,
            Err(error) => warn!(%error, "could not confirm leadership before scheduling"),
        }
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return false,
            _ = tokio::time::sleep(period) => {}
        }
        if leading(metrics) != Some(term) {
            return false;
        }
    }
}

/// True when `view` (the newest after `last_seen`) may change the plan: it carries effects, or
/// views were skipped, or the state was replaced.
fn relevant(view: &StateView, last_seen: u64) -> bool {
    view.revision > last_seen
        && (view.revision != last_seen.saturating_add(1) || !view.effects.is_empty())
}

/// One scheduling cycle; returns how many commands were proposed. Stops at the first proposal
/// that fails (for example because leadership moved).
async fn cycle(
    handle: &MemberHandle,
    timers: &mut WarmTimers,
    settings: &SchedulerConfig,
) -> Result<usize, FlameError> {
    let view = handle.local();
    let now = now_ms();
    timers.observe(&view.state, now);
    let mut new_id = || uuid::Uuid::new_v4().to_string();
    let (commands, stats) = plan_with_stats(&view.state, now, timers, settings, &mut new_id);
    timers.note_plan(&commands);
    let first_waits = timers.take_first_waits();
    handle
        .metrics
        .observe_scheduling(timers.waiting_sessions(), &stats, &first_waits);
    if stats != PlanStats::default() {
        info!(
            reclaims = stats.reclaims,
            delayed_releases = stats.delayed_releases,
            rotations = stats.rotations,
            "executors taken back"
        );
    }
    if commands.is_empty() {
        return Ok(0);
    }
    let count = commands.len();
    debug!(count, revision = view.revision, "proposing a plan");
    for command in commands {
        let kind = command.kind();
        let response = handle.proposer.propose(command).await?;
        log_refusal(kind, &response.outcome);
    }
    Ok(count)
}

/// Logs what the state machine refused of a planned command (its state moved on).
fn log_refusal(kind: &'static str, outcome: &Outcome) {
    if let Outcome::TaskUpdates(items) = outcome {
        let refused = items.iter().filter(|r| r.is_err()).count();
        if refused > 0 {
            debug!(
                kind,
                refused,
                total = items.len(),
                "planned assignments refused"
            );
        }
    } else if let Some(error) = outcome.error() {
        debug!(kind, %error, "planned command refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Effect, State};
    use std::sync::Arc;

    fn view(revision: u64, effects: Vec<Effect>) -> StateView {
        StateView {
            state: State::default(),
            applied_index: 0,
            revision,
            effects: Arc::from(effects),
        }
    }

    #[test]
    fn views_with_effects_or_after_a_gap_trigger_a_cycle() {
        let changed = vec![Effect::NodeChanged { node: "n".into() }];
        assert!(relevant(&view(5, changed.clone()), 4));
        assert!(!relevant(&view(5, Vec::new()), 4), "an empty batch");
        assert!(relevant(&view(7, Vec::new()), 4), "skipped views");
        assert!(!relevant(&view(4, changed), 4), "already seen");
    }
}
