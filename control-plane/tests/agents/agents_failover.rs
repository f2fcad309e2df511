//! Tasks in flight through a leader kill: three control-plane processes, one fake agent whose
//! tasks take 20 ms each, and the leader SIGKILLed once a part of the session is done.
//!
//! Claim: the agent's stream breaks, it registers again through the members it knows
//! (following the NotLeader hint) and resumes on the new leader with the executors it holds;
//! every task ends Succeed exactly once: one code-2 event, the agent's output, no failure, the
//! session's Succeed count equals the task count, each task was run once and each executor's
//! instance was launched once.
//!
//! Claim: when leadership moves without a crash (a transfer), the former leader ends the
//! agent's stream with NotLeader and the new leader's hint; the agent follows it, and tasks
//! created afterwards run on the executors it already holds.

use crate::agents_support;
use crate::frontend_support;

use agents_support::fake::{self, Behaviour, FakeAgent};
use agents_support::*;
use anyhow::ensure;
use flame_proto::v1;
use frontend_support::{DEADLINE, eventually};
use std::time::{Duration, Instant};

const NODE: &str = "node-failover";
const TASKS: usize = 300;
const SESSION: &str = "s-failover";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_in_flight_finish_exactly_once_across_a_leader_kill() -> anyhow::Result<()> {
    let mut run = start("agents-failover", None).await?;
    let [f1, f2] = run.followers;
    let old_leader = run.leader;
    let mut config = agent_config(&run, NODE, "agent-a", Behaviour::Succeed)?;
    config.task_delay = Duration::from_millis(20);
    let agent = FakeAgent::spawn(config);
    ping_session(&run, f1, SESSION).await?;
    create_tasks(&run, f1, SESSION, TASKS).await?;
    let started = Instant::now();
    let before = succeeded_at_least(&run, f1, TASKS / 5).await?;
    ensure!(
        before < TASKS,
        "tasks are still in flight when the leader dies"
    );
    run.cluster.kill(old_leader)?;
    let killed = Instant::now();
    let new_leader = run.cluster.wait_for_leader(&[f1, f2], DEADLINE).await?;
    let elected = killed.elapsed();
    fake::wait_log(&agent, "a stream to the new leader", DEADLINE, |l| {
        l.streams >= 2
    })
    .await?;
    let resumed = killed.elapsed();
    let done = wait_tasks(&run, new_leader, SESSION, TASKS, v1::TaskState::Succeed).await?;
    let finished = killed.elapsed();
    for (n, task) in done.iter().enumerate() {
        let codes: Vec<i32> = events(task).iter().map(|(code, _)| *code).collect();
        let succeeded = codes.iter().filter(|c| **c == 2).count();
        ensure!(
            succeeded == 1 && !codes.contains(&3),
            "task {n} events: {codes:?}"
        );
        let mut expected = b"out-".to_vec();
        expected.extend(input(n));
        let output = task.spec.as_ref().and_then(|s| s.output.clone());
        ensure!(output == Some(expected), "task {n} output: {output:?}");
    }
    let status = session(&run, new_leader, SESSION).await?.status;
    let counts = status.map(|s| (s.succeed, s.failed, s.pending, s.running));
    ensure!(
        counts == Some((TASKS as i32, 0, 0, 0)),
        "session counters {counts:?}"
    );
    let log = agent.log();
    let reruns = log.runs.values().filter(|n| **n > 1).count();
    let relaunches = log.binds.values().filter(|n| **n > 1).count();
    println!(
        "{before} of {TASKS} done before the kill ({:?} in); new leader after {elected:?}, \
         agent resumed after {resumed:?}, all done {finished:?} after the kill; \
         {} streams, {} redirects, {} executors, {reruns} tasks rerun, {relaunches} relaunches",
        killed.duration_since(started),
        log.streams,
        log.redirects,
        log.binds.len()
    );
    ensure!(
        log.runs.len() == TASKS && reruns == 0,
        "each task ran once: {log:?}"
    );
    ensure!(
        relaunches == 0,
        "no instance was relaunched: {:?}",
        log.binds
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leadership_transfer_ends_the_stream_with_not_leader_and_the_agent_follows()
-> anyhow::Result<()> {
    let run = start("agents-transfer", None).await?;
    let target = run.followers[0];
    let agent = FakeAgent::spawn(agent_config(&run, NODE, "agent-a", Behaviour::Succeed)?);
    ping_session(&run, run.leader, "s-before").await?;
    create_tasks(&run, run.leader, "s-before", 4).await?;
    wait_tasks(&run, run.leader, "s-before", 4, v1::TaskState::Succeed).await?;
    let reply = run
        .cluster
        .admin(run.leader)?
        .transfer_leader(flame_proto::cluster::TransferLeaderRequest { to: target })
        .await?
        .into_inner();
    ensure!(
        reply.leader_id == Some(target),
        "leadership moved: {reply:?}"
    );
    let log = fake::wait_log(&agent, "a stream to the new leader", DEADLINE, |l| {
        l.streams >= 2
    })
    .await?;
    let ended = log.ended.first().cloned();
    ensure!(
        ended.as_ref().is_some_and(
            |(code, m)| *code == tonic::Code::Unavailable && m.contains("not the leader")
        ),
        "the old stream ended with NotLeader: {ended:?}"
    );
    let binds_before = log.binds.clone();
    create_tasks_from(&run, target, "s-before", 4, 4).await?;
    wait_tasks(&run, target, "s-before", 8, v1::TaskState::Succeed).await?;
    let log = agent.log();
    ensure!(
        log.runs.values().all(|n| *n == 1) && log.runs.len() == 8,
        "every task ran once: {log:?}"
    );
    ensure!(
        log.binds == binds_before,
        "the warm executors were reused, none launched again: {:?} then {:?}",
        binds_before,
        log.binds
    );
    Ok(())
}

/// Waits until at least `count` tasks of the session succeeded; returns how many had.
async fn succeeded_at_least(run: &Running, via: u64, count: usize) -> anyhow::Result<usize> {
    eventually(&format!("{count} tasks to succeed"), || async move {
        let done = session(run, via, SESSION)
            .await
            .ok()
            .and_then(|s| s.status)
            .map_or(0, |s| usize::try_from(s.succeed).unwrap_or(0));
        Ok((done >= count).then_some(done))
    })
    .await
}
