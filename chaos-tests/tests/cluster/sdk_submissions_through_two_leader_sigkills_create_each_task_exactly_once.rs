//! Claim: against three control-plane members and one real node agent, the SDK's
//! [`flame_sdk::client::Connection`] submits 5,000 `flmping` tasks (two concurrent submitters,
//! batches of 100 through `Tasks/CreateTasks`, one UUID request id per task) while the leader is
//! SIGKILLed twice and restarted after each kill. The client sees no error; every request id
//! maps to exactly one task (the session lists exactly 5,000 tasks, no duplicate id, and each
//! submission's returned task id is among them); every task ends Succeed.
//!
//! How the kills overlap the submissions: each submitter pauses at two gates (after a fifth and
//! three fifths of its batches); the test kills the leader once both wait at a gate and opens
//! the gate right away, so the next batches are sent while no leader exists. The killed member
//! is restarted once a new leader is elected.
//!
//! N comes from `FLAME_CHAOS_TASKS` (default 5000).

use crate::support::*;
use anyhow::{Context, ensure};
use flame_sdk::client::{Connection, SessionOptions, TaskRequest, TaskState, session::state};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const SESSION: &str = "s-sdk-exactly-once";
const BATCH: usize = 100;
const SUBMITTERS: usize = 2;

/// One submitter's batches: `(request id, task id)` per task it submitted.
async fn submit(
    session: flame_sdk::client::Session,
    batches: usize,
    at_gate: Arc<AtomicUsize>,
    mut gate: watch::Receiver<usize>,
) -> anyhow::Result<Vec<(String, String)>> {
    let gates = [batches / 5, batches * 3 / 5];
    let mut pairs = Vec::new();
    for b in 0..batches {
        if let Some(g) = gates.iter().position(|g| *g == b) {
            at_gate.fetch_add(1, Ordering::SeqCst);
            gate.wait_for(|open| *open > g).await?;
        }
        let requests: Vec<TaskRequest> = (0..BATCH)
            .map(|_| TaskRequest::new(Some(Vec::new())))
            .collect();
        let tasks = session.create_tasks(&requests).await?;
        for (r, t) in requests.into_iter().zip(tasks) {
            let id = t.metadata.context("a task id")?.id;
            pairs.push((r.request_id, id));
        }
    }
    Ok(pairs)
}

/// Kills the current leader once `waiting` submitters wait at the gate, opens it, waits for a
/// new leader and restarts the killed member; returns the killed member.
async fn kill_leader_at_gate(
    run: &mut Running,
    at_gate: &AtomicUsize,
    waiting: usize,
    gate: &watch::Sender<usize>,
) -> anyhow::Result<u64> {
    poll("the submitters to reach the gate", STARTUP, || async {
        Ok((at_gate.load(Ordering::SeqCst) >= waiting).then_some(()))
    })
    .await?;
    let leader = run.cluster.wait_for_leader(&[1, 2, 3], STARTUP).await?;
    run.cluster.kill(leader)?;
    gate.send_modify(|open| *open += 1);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    run.cluster.wait_for_leader(&others, STARTUP).await?;
    run.cluster.spawn(leader)?;
    Ok(leader)
}

/// Waits until the session's counters show `count` Succeed (and nothing else), via the SDK.
async fn wait_all_succeeded(
    conn: &Connection,
    count: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let want = i32::try_from(count)?;
    poll(&format!("all {count} tasks to succeed"), limit, || async {
        let s = conn.get_session(SESSION).await?;
        let c = s.status.context("a session status")?;
        ensure!(c.failed == 0, "{} tasks failed", c.failed);
        Ok((c.succeed == want && c.pending == 0 && c.running == 0).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_submissions_through_two_leader_sigkills_create_each_task_exactly_once()
-> anyhow::Result<()> {
    let tasks = task_count(5000)?;
    let batches = tasks.div_ceil(BATCH * SUBMITTERS);
    let total = batches * BATCH * SUBMITTERS;
    let mut run = start("chaos-sdk-exactly-once", &[], &["node-a"]).await?;
    let urls: Vec<String> = run.cluster.members().iter().map(|m| m.url()).collect();
    let conn = Connection::new(&urls)?;
    let mut options = SessionOptions::new("flmping");
    options.id = Some(SESSION.into());
    options.resreq = chaos_tests::ping_session_spec(0, None).resreq;
    let session = conn.create_session(&options).await?;
    let started = Instant::now();
    let at_gate = Arc::new(AtomicUsize::new(0));
    let (gate, opened) = watch::channel(0usize);
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|_| {
            tokio::spawn(submit(
                session.clone(),
                batches,
                at_gate.clone(),
                opened.clone(),
            ))
        })
        .collect();
    let first = kill_leader_at_gate(&mut run, &at_gate, SUBMITTERS, &gate).await?;
    let second = kill_leader_at_gate(&mut run, &at_gate, 2 * SUBMITTERS, &gate).await?;
    let mut pairs = Vec::new();
    for s in submitters {
        pairs.extend(s.await??);
    }
    let submitted = started.elapsed();
    let limit = Duration::from_secs(120 + (total as u64) / 20);
    wait_all_succeeded(&conn, total, limit).await?;
    let finished = started.elapsed();
    check_exactly_once(&session.list_tasks().await?, &pairs, total)?;
    println!(
        "{total} tasks submitted in {submitted:?} through SIGKILLs of members {first} and \
         {second}; all Succeed after {finished:?}"
    );
    Ok(())
}

/// Every request id maps to one task, the session holds exactly those `total` tasks, once
/// each, and each is Succeed.
fn check_exactly_once(
    listed: &[flame_sdk::client::Task],
    pairs: &[(String, String)],
    total: usize,
) -> anyhow::Result<()> {
    let by_request: HashMap<&str, &str> = pairs
        .iter()
        .map(|(r, t)| (r.as_str(), t.as_str()))
        .collect();
    ensure!(
        by_request.len() == total,
        "{} request ids",
        by_request.len()
    );
    let returned: HashSet<&str> = by_request.values().copied().collect();
    ensure!(
        returned.len() == total,
        "{} distinct tasks returned for {total} request ids",
        returned.len()
    );
    ensure!(
        listed.len() == total,
        "the session lists {} tasks",
        listed.len()
    );
    let mut ids = HashSet::new();
    for task in listed {
        let id = task.metadata.as_ref().context("a task id")?.id.as_str();
        ensure!(ids.insert(id), "task {id} listed twice");
        ensure!(
            returned.contains(id),
            "task {id} was created by no request id"
        );
        ensure!(
            state(task) == TaskState::Succeed,
            "task {id} is {:?}",
            state(task)
        );
    }
    Ok(())
}
