//! Task timeouts against a fake leader with real `flmping-service` instances: a task that
//! outlives its application's `flame.task-timeout` label fails with the timeout message long
//! before it would have finished, its instance is stopped, and the next task on the same
//! executor runs on a relaunched instance; the agent's default applies without a label; a
//! newer command still interrupts a task whose timeout has not run out.

use crate::common;

use common::Fixture;
use common::leader::{
    FakeMember, Role, RunningAgent, agent_config, application, executor, snapshot,
};
use flame_proto::agent::{ExecutorAction, TaskOutcome};
use flame_proto::v1;
use std::time::{Duration, Instant};

const FLMPING: &str = "${FLAME_HOME}/bin/flmping-service";
const LIMIT: Duration = Duration::from_secs(20);
/// A flmping input that sleeps 5 s.
const SLOW: &[u8] = br#"{"duration": 5000}"#;
/// A flmping input that sleeps 30 s.
const SLOWER: &[u8] = br#"{"duration": 30000}"#;
/// A flmping input that returns at once.
const QUICK: &[u8] = b"{}";

/// The flmping application with `labels`.
fn app_with(labels: &[&str]) -> v1::Application {
    let mut app = application(FLMPING);
    if let Some(spec) = app.spec.as_mut() {
        spec.labels = labels.iter().map(|l| (*l).to_owned()).collect();
    }
    app
}

/// Binds executor `e1` to `sess-1` of `app` and waits for a successful bind.
async fn bind(leader: &FakeMember, app: &v1::Application) -> anyhow::Result<()> {
    let bound = Some(("sess-1", app));
    leader.send(snapshot(
        1,
        vec![executor("e1", ExecutorAction::Bind, bound, &[])],
    ))?;
    let outcome = leader
        .wait_report(LIMIT, |r| r.binds.first().cloned())
        .await?;
    assert_eq!(outcome.return_code, 0, "{:?}", outcome.message);
    Ok(())
}

/// Asks `e1` to run `task` with `input` at `revision`; returns its outcome and how long it
/// took to arrive.
async fn run(
    leader: &FakeMember,
    app: &v1::Application,
    revision: u64,
    task: u64,
    input: &[u8],
) -> anyhow::Result<(TaskOutcome, Duration)> {
    let started = Instant::now();
    let assignment = executor(
        "e1",
        ExecutorAction::Run,
        Some(("sess-1", app)),
        &[(task, input)],
    );
    leader.send(snapshot(revision, vec![assignment]))?;
    let outcome = leader
        .wait_report(LIMIT, |r| {
            r.tasks.iter().find(|t| t.task_id == task).cloned()
        })
        .await?;
    Ok((outcome, started.elapsed()))
}

#[tokio::test]
async fn a_task_over_its_label_timeout_fails_and_the_next_runs_on_a_relaunched_instance()
-> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    leader.wait_connected(LIMIT).await?;
    let app = app_with(&["team=ml", "flame.task-timeout=300ms"]);
    bind(&leader, &app).await?;

    let (slow, took) = run(&leader, &app, 2, 1, SLOW).await?;
    assert_ne!(slow.return_code, 0);
    assert_eq!(
        slow.message.as_deref(),
        Some("task exceeded its timeout of 300ms")
    );
    assert!(took < Duration::from_secs(3), "reported after {took:?}");
    let socket = fx.sockets.join("e1.sock");
    let stopped = common::eventually(LIMIT, || !socket.exists()).await;
    assert!(stopped, "the timed-out instance was not stopped");

    let (quick, _) = run(&leader, &app, 3, 2, QUICK).await?;
    assert_eq!(quick.return_code, 0, "{:?}", quick.message);
    assert_eq!(agent.metrics.launches(), 2, "the instance was relaunched");
    assert_eq!(agent.metrics.tasks_invoked(), 2);
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_agent_default_applies_to_an_application_without_the_label() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let mut config = agent_config(&fx, &[&leader.url])?;
    config.task_timeout = Some(Duration::from_millis(300));
    let agent = RunningAgent::start(config);
    leader.wait_connected(LIMIT).await?;
    let app = app_with(&[]);
    bind(&leader, &app).await?;

    let (slow, took) = run(&leader, &app, 2, 1, SLOW).await?;
    assert_eq!(
        slow.message.as_deref(),
        Some("task exceeded its timeout of 300ms")
    );
    assert!(took < Duration::from_secs(3), "reported after {took:?}");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_newer_command_interrupts_a_task_before_its_timeout() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    leader.wait_connected(LIMIT).await?;
    let app = app_with(&["flame.task-timeout=1m"]);
    bind(&leader, &app).await?;
    let bound = Some(("sess-1", &app));
    leader.send(snapshot(
        2,
        vec![executor("e1", ExecutorAction::Run, bound, &[(1, SLOWER)])],
    ))?;
    // Wait until the agent has started the task.
    let invoked = common::eventually(LIMIT, || agent.metrics.tasks_invoked() == 1).await;
    assert!(invoked, "task 1 never started");

    let started = Instant::now();
    leader.send(snapshot(
        3,
        vec![executor("e1", ExecutorAction::Release, None, &[])],
    ))?;
    let released = leader
        .wait_report(LIMIT, |r| r.released.first().cloned())
        .await?;
    assert_eq!(released, "e1");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the release waited for the task"
    );
    assert_eq!(
        common::leader::outcomes_of(&leader.reports(), 1),
        0,
        "an interrupted task has no outcome"
    );
    agent.stop().await?;
    Ok(())
}
