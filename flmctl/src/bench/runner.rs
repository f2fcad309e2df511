//! The two ways `flmctl bench` runs its tasks, with a live progress bar.
//!
//! What: [`run`] runs the warm-up (unmeasured, concurrent) and then the measured tasks, either
//! concurrently (each `CreateTask` then `WatchTask` to a terminal state; latency measured by
//! the client) or in `CreateTasks` batches while the session's counters are polled (latency
//! from the server's creation and completion times, read with `ListTask` at the end).
//!
//! Why two modes: the first shows what one client sees per task; the second reproduces
//! task-bench's throughput phase, where watching 30,000 tasks one by one would measure the
//! client more than the cluster.
//!
//! Caveats: a batch run ends at the first poll (every [`POLL`]) that sees every task terminal,
//! so its wall time may be up to one poll late; the counters come from any member and may lag
//! the leader by a moment. Server times are whole milliseconds of the leader's clock.

use super::Plan;
use anyhow::{Context, bail};
use flame_sdk::client::{ClientError, Connection, Session, TaskRequest, TaskState};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How often a batch run polls the session's counters.
const POLL: Duration = Duration::from_millis(25);
/// A batch run fails when no task finishes for this long (or the task timeout, if longer).
const STALL: Duration = Duration::from_secs(60);
/// How many failure messages are kept for the report.
const KEEP_ERRORS: usize = 3;
/// Highest latency the histograms hold: one hour, in µs.
const MAX_MICROS: u64 = 3_600_000_000;

/// Where the latencies of a run come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencySource {
    /// Submission to the client observing the terminal state (concurrent mode).
    Client,
    /// The server's completion time minus its creation time (batch mode).
    Server,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Tasks that ended Succeed.
    pub succeeded: u64,
    /// Tasks that ended Failed or Cancelled, could not be submitted or timed out.
    pub failed: u64,
    /// From the first submission to the last task seen terminal.
    pub wall: Duration,
    /// Latencies of the terminal tasks, in µs.
    pub latencies: Histogram<u64>,
    /// How the latencies were measured.
    pub source: LatencySource,
    /// The first few failure messages.
    pub errors: Vec<String>,
}

/// An empty latency histogram (µs, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("static histogram bounds are valid")
}

/// Runs `plan` in `session`: the warm-up, then the measured tasks.
pub async fn run(conn: &Connection, session: &Session, plan: &Plan) -> anyhow::Result<Outcome> {
    if plan.warmup > 0 {
        let bar = progress(plan, plan.warmup, "warm-up");
        let warm = concurrent(session, plan, plan.warmup, &bar).await;
        bar.finish_and_clear();
        if warm.succeeded == 0 {
            let why = warm.errors.first().map_or("", String::as_str);
            bail!("every warm-up task failed: {why}");
        }
    }
    let bar = progress(plan, plan.tasks, "tasks");
    let outcome = match plan.batch {
        None => Ok(concurrent(session, plan, plan.tasks, &bar).await),
        Some(size) => batched(conn, session, plan, size, &bar).await,
    };
    bar.finish_and_clear();
    outcome
}

/// A progress bar on stderr for `len` tasks, hidden unless the plan draws one.
fn progress(plan: &Plan, len: u64, what: &'static str) -> ProgressBar {
    if !plan.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_prefix(what);
    let style = ProgressStyle::with_template(
        "{prefix:>8} [{bar:40.cyan/blue}] {pos}/{len} {rate:>10} eta {eta}",
    )
    .expect("static template is valid")
    // indicatif's own {per_sec} prints every decimal; whole tasks per second read better.
    .with_key(
        "rate",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", state.per_sec());
        },
    )
    .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// The counts of one worker (or of all, merged).
struct Tally {
    succeeded: u64,
    failed: u64,
    latencies: Histogram<u64>,
    errors: Vec<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            succeeded: 0,
            failed: 0,
            latencies: new_histogram(),
            errors: Vec::new(),
        }
    }

    fn fail(&mut self, message: String) {
        self.failed += 1;
        if self.errors.len() < KEEP_ERRORS {
            self.errors.push(message);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latencies.add(&other.latencies);
        for e in other.errors {
            if self.errors.len() < KEEP_ERRORS {
                self.errors.push(e);
            }
        }
    }
}

/// Runs `count` tasks with `plan.concurrency` in flight, each submitted and watched to a
/// terminal state; latency is submission to the observed terminal state.
async fn concurrent(session: &Session, plan: &Plan, count: u64, bar: &ProgressBar) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..plan.concurrency.min(count) {
        let (session, next, bar) = (session.clone(), next.clone(), bar.clone());
        let (input, limit) = (plan.input.clone(), plan.task_timeout);
        workers.spawn(async move {
            let mut tally = Tally::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let submitted = Instant::now();
                match tokio::time::timeout(limit, one_task(&session, input.clone())).await {
                    Ok(Ok(())) => {
                        let micros = submitted.elapsed().as_micros().clamp(1, MAX_MICROS.into());
                        let _ = tally.latencies.record(micros as u64);
                        tally.succeeded += 1;
                    }
                    Ok(Err(why)) => tally.fail(why),
                    Err(_) => tally.fail(format!("a task was not terminal within {limit:?}")),
                }
                bar.inc(1);
            }
            tally
        });
    }
    let mut all = Tally::new();
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(tally) => all.merge(tally),
            Err(e) => all.fail(format!("a worker ended abnormally: {e}")),
        }
    }
    Outcome {
        succeeded: all.succeeded,
        failed: all.failed,
        wall: started.elapsed(),
        latencies: all.latencies,
        source: LatencySource::Client,
        errors: all.errors,
    }
}

/// Creates one task and watches it to a terminal state; the error says which step failed
/// (a task that ended Failed or Cancelled gives its own last message).
async fn one_task(session: &Session, input: Option<Vec<u8>>) -> Result<(), String> {
    let task = session
        .create_task(input)
        .await
        .map_err(|e| format!("CreateTask: {e}"))?;
    let id = task.metadata.map(|m| m.id).unwrap_or_default();
    let mut watch = session.watch_task(&id);
    while let Some(seen) = watch.next().await {
        let seen = seen.map_err(|e| format!("WatchTask {id}: {e}"))?;
        let Some(status) = seen.status else { continue };
        match status.state() {
            TaskState::Succeed => return Ok(()),
            state @ (TaskState::Failed | TaskState::Cancelled) => {
                let why = status.events.iter().rev().find_map(|e| e.message.clone());
                return Err(format!(
                    "task {id} {}: {}",
                    state.as_str_name().to_lowercase(),
                    why.unwrap_or_else(|| "no failure message".into())
                ));
            }
            TaskState::Pending | TaskState::Running => {}
        }
    }
    Err(format!(
        "WatchTask {id}: the watch ended before a terminal state"
    ))
}

/// The session's terminal counters: `(succeed, failed + cancelled)`.
async fn counters(conn: &Connection, session: &Session) -> Result<(u64, u64), ClientError> {
    let info = conn.get_session(session.id()).await?;
    let status = info.status.unwrap_or_default();
    let n = |v: i32| u64::try_from(v).unwrap_or(0);
    Ok((n(status.succeed), n(status.failed) + n(status.cancelled)))
}

/// Creates `plan.tasks` tasks in batches of `size`, `plan.concurrency` calls at once, polls the
/// counters until all are terminal, then reads each task's server times.
async fn batched(
    conn: &Connection,
    session: &Session,
    plan: &Plan,
    size: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Outcome> {
    let base = counters(conn, session).await?;
    let started = Instant::now();
    let submit = submit(session, plan, size);
    let wait = wait_terminal(conn, session, base, plan, bar);
    tokio::pin!(submit, wait);
    let mut ids = None;
    let (last, wall) = loop {
        tokio::select! {
            // A failed submission ends the run at once (dropping `wait`).
            done = &mut submit, if ids.is_none() => ids = Some(done?),
            last = &mut wait => break (last?, started.elapsed()),
        }
    };
    // Every task can be terminal a moment before the last CreateTasks reply arrives.
    let ids = match ids {
        Some(ids) => ids,
        None => submit.await?,
    };
    let (latencies, errors) = server_latencies(session, &ids).await?;
    Ok(Outcome {
        succeeded: last.0 - base.0,
        failed: last.1 - base.1,
        wall,
        latencies,
        source: LatencySource::Server,
        errors,
    })
}

/// Creates the tasks with `CreateTasks`; returns their ids.
async fn submit(session: &Session, plan: &Plan, size: u64) -> anyhow::Result<HashSet<String>> {
    let batches = plan.tasks.div_ceil(size);
    let mut workers = JoinSet::new();
    for w in 0..plan.concurrency.min(batches) {
        let (session, input, total) = (session.clone(), plan.input.clone(), plan.tasks);
        let step = usize::try_from(plan.concurrency).unwrap_or(usize::MAX);
        workers.spawn(async move {
            let mut ids = Vec::new();
            for b in (w..batches).step_by(step) {
                let count = size.min(total - b * size);
                let requests: Vec<TaskRequest> = (0..count)
                    .map(|_| TaskRequest::new(input.clone()))
                    .collect();
                let tasks = session
                    .create_tasks(&requests)
                    .await
                    .with_context(|| format!("CreateTasks call {} of {batches}", b + 1))?;
                ids.extend(tasks.into_iter().filter_map(|t| t.metadata.map(|m| m.id)));
            }
            anyhow::Ok(ids)
        });
    }
    let mut ids = HashSet::new();
    while let Some(done) = workers.join_next().await {
        ids.extend(done.context("a submitter ended abnormally")??);
    }
    Ok(ids)
}

/// Polls the counters until `plan.tasks` more tasks than in `base` are terminal; fails when
/// none finishes for [`STALL`] (or the task timeout, if longer).
async fn wait_terminal(
    conn: &Connection,
    session: &Session,
    base: (u64, u64),
    plan: &Plan,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, u64)> {
    let stall = STALL.max(plan.task_timeout);
    let mut ticker = tokio::time::interval(POLL);
    let (mut done, mut progressed, mut last) = (0, Instant::now(), base);
    loop {
        ticker.tick().await;
        if let Ok(now) = counters(conn, session).await {
            last = now;
        }
        let now_done = (last.0 + last.1).saturating_sub(base.0 + base.1);
        if now_done > done {
            (done, progressed) = (now_done, Instant::now());
            bar.set_position(done.min(plan.tasks));
        }
        if done >= plan.tasks {
            return Ok(last);
        }
        if progressed.elapsed() > stall {
            bail!(
                "no task finished for {stall:?}: {done} of {} terminal; hint: is a node agent \
                 running with room for an instance (flmctl list -n, flmctl list -e)?",
                plan.tasks
            );
        }
    }
}

/// Each task's server-side latency (completion minus creation time, in µs) and the first
/// failure messages, from one `ListTask` of the session restricted to `ids`.
async fn server_latencies(
    session: &Session,
    ids: &HashSet<String>,
) -> anyhow::Result<(Histogram<u64>, Vec<String>)> {
    let tasks = session
        .list_tasks()
        .await
        .context("cannot list the tasks for their server times")?;
    let mut latencies = new_histogram();
    let mut errors = Vec::new();
    for task in tasks {
        let Some(id) = task.metadata.as_ref().map(|m| m.id.as_str()) else {
            continue;
        };
        let Some(status) = task.status.as_ref().filter(|_| ids.contains(id)) else {
            continue;
        };
        if let Some(done) = status.completion_time {
            let micros = (done - status.creation_time).max(0).saturating_mul(1000);
            let _ = latencies.record((micros as u64).min(MAX_MICROS));
        }
        if status.state() != TaskState::Succeed && errors.len() < KEEP_ERRORS {
            let why = status.events.iter().rev().find_map(|e| e.message.clone());
            let state = status.state().as_str_name().to_lowercase();
            errors.push(format!(
                "task {id} {state}: {}",
                why.unwrap_or_else(|| "no failure message".into())
            ));
        }
    }
    Ok((latencies, errors))
}
