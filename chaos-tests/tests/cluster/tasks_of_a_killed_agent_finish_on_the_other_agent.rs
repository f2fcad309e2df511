//! Claim: with three control-plane members (node timeout 3 s) and two real node agents
//! running a `flmping` session of 50 ms tasks, SIGKILLing one agent (and, as a lost machine
//! would, its instances) mid-run loses nothing: once the leader marks that node NotReady, the
//! tasks it was running go back to Pending (a "requeued" event each) and finish on the other
//! agent; every task ends Succeed and none fails.
//!
//! N comes from `FLAME_CHAOS_AGENT_TASKS` (default 600).

use crate::support::*;
use anyhow::{Context, ensure};
use std::time::{Duration, Instant};

const SESSION: &str = "s-agent-kill";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_a_killed_agent_finish_on_the_other_agent() -> anyhow::Result<()> {
    let tasks: usize = match std::env::var("FLAME_CHAOS_AGENT_TASKS") {
        Ok(v) => v
            .parse()
            .context("FLAME_CHAOS_AGENT_TASKS must be a number")?,
        Err(_) => 600,
    };
    let limit = Duration::from_secs(60 + (tasks as u64) / 20);
    let mut run = start(
        "chaos-agent-kill",
        &["--node-timeout-ms", "3000"],
        &["node-a", "node-b"],
    )
    .await?;
    let via = run.followers[0];
    ping_session(&run, via, SESSION).await?;
    let started = Instant::now();
    create_tasks(&run, via, SESSION, tasks, br#"{"duration": 50}"#).await?;
    // Mid-run: a third done, tasks running, and node-b has instances up.
    let victim = "node-b";
    let before = poll("a third done with node-b busy", limit, || {
        let run = &run;
        async move {
            let c = counters(run, via, SESSION).await.ok();
            let busy = run.cluster.agent(victim)?.launches()?.0 > 0;
            Ok(c.filter(|c| busy && c.1 > 0 && usize::try_from(c.2).unwrap_or(0) >= tasks / 3))
        }
    })
    .await?;
    ensure!(
        usize::try_from(before.2)? < tasks,
        "tasks are still in flight when the agent dies: {before:?}"
    );
    let killed_after = started.elapsed();
    let victim_launches = run.cluster.agent(victim)?.launches()?;
    run.cluster.kill_agent(victim)?;
    let killed = Instant::now();
    let leader = run.cluster.wait_for_leader(&[1, 2, 3], STARTUP).await?;
    all_succeeded(&run, leader, SESSION, tasks, limit).await?;
    let after_kill = killed.elapsed();
    let total = started.elapsed();
    let listed = list_tasks(&run, leader, SESSION).await?;
    let requeued = listed
        .iter()
        .filter(|t| {
            t.status.as_ref().is_some_and(|s| {
                s.events
                    .iter()
                    .any(|e| e.message.as_deref().is_some_and(|m| m.contains("requeued")))
            })
        })
        .count();
    let survivor = run.cluster.agent("node-a")?.launches()?;
    println!(
        "{tasks} tasks of 50 ms; {victim} (launches, executors) = {victim_launches:?} killed at \
         (pending, running, succeed, failed) = {before:?} after {killed_after:?}; all Succeed \
         {after_kill:?} after the kill, {total:?} in all; {requeued} tasks requeued; node-a \
         (launches, executors) = {survivor:?}"
    );
    ensure!(listed.len() == tasks, "{} tasks listed", listed.len());
    ensure!(
        requeued >= 1,
        "the killed agent's running tasks were requeued and retried"
    );
    Ok(())
}
