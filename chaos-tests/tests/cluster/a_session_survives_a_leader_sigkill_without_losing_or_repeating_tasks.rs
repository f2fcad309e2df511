//! Claim: three control-plane members and two real node agents run a `flmping` session; the
//! leader is SIGKILLed when about a third of its tasks are done. Every task still ends Succeed
//! (the session's counters reach succeed == N with nothing pending, running or failed: none
//! lost, none stuck, none failed), and instances are not relaunched needlessly: the agents
//! launch at most as many instances as the scheduler could create executors (two nodes of
//! 4 cores, 1 core per executor: 8) plus a small slack.
//!
//! N comes from `FLAME_CHAOS_TASKS` (default 2000, a debug build finishes well under a
//! minute on 2 cores). The 10,000-task run is a release run:
//! `FLAME_CHAOS_TASKS=10000 cargo test --release -p chaos-tests --test
//! a_session_survives_a_leader_sigkill_without_losing_or_repeating_tasks -- --nocapture`.
//!
//! Launch count: each launch writes one `===` header line into its executor's `.out` log
//! before the process starts (see `chaos_tests::Agent::launches`).

use crate::support::*;
use anyhow::ensure;
use std::time::{Duration, Instant};

const SESSION: &str = "s-leader-kill";
/// Executors the scheduler can create: 2 agents x 4 cores / 1 core each.
const MAX_EXECUTORS: usize = 8;
/// Launches tolerated beyond that (a release and a re-creation here and there).
const SLACK: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_leader_sigkill_without_losing_or_repeating_tasks()
-> anyhow::Result<()> {
    let tasks = task_count(2000)?;
    let limit = Duration::from_secs(60 + (tasks as u64) / 50);
    let mut run = start("chaos-leader-kill", &[], &["node-a", "node-b"]).await?;
    let [f1, f2] = run.followers;
    let old_leader = run.leader;
    ping_session(&run, f1, SESSION).await?;
    let started = Instant::now();
    create_tasks(&run, f1, SESSION, tasks, b"").await?;
    let created = started.elapsed();
    let before = succeeded_at_least(&run, f1, SESSION, tasks / 3, limit).await?;
    let killed_after = started.elapsed();
    ensure!(
        usize::try_from(before.2)? < tasks,
        "tasks are still in flight when the leader dies: {before:?}"
    );
    run.cluster.kill(old_leader)?;
    let killed = Instant::now();
    let new_leader = run.cluster.wait_for_leader(&[f1, f2], STARTUP).await?;
    let elected = killed.elapsed();
    all_succeeded(&run, new_leader, SESSION, tasks, limit).await?;
    let total = started.elapsed();
    let (launches, executors) = launches(&run)?;
    let rate = tasks as f64 / total.as_secs_f64();
    println!(
        "{tasks} tasks created in {created:?}; leader {old_leader} killed at \
         (pending, running, succeed, failed) = {before:?} after {killed_after:?}; member \
         {new_leader} leads after {elected:?}; all Succeed {total:?} after creation began \
         ({rate:.0} tasks/s overall); {launches} instance launches for {executors} executors"
    );
    for agent in run.cluster.agents() {
        println!(
            "  {}: (launches, executors) = {:?}",
            agent.name,
            agent.launches()?
        );
    }
    ensure!(
        launches <= MAX_EXECUTORS + SLACK,
        "no relaunch storm: {launches} launches for {executors} executors"
    );
    Ok(())
}
