//! The agent against a fake leader with real `flmping-service` instances: bind → tasks →
//! unbind → release; resent snapshots never run a task twice; an executor absent from a
//! snapshot is stopped; oversized output fails the task naming the limit.

use crate::common;

use common::Fixture;
use common::leader::{
    FakeMember, Role, RunningAgent, agent_config, application, executor, outcomes_of, snapshot,
};
use flame_proto::agent::{AgentMessage, ExecutorAction, RegisterNodeRequest, agent_message};
use flame_proto::v1::Application;
use std::time::Duration;

const FLMPING: &str = "${FLAME_HOME}/bin/flmping-service";
const LIMIT: Duration = Duration::from_secs(20);

/// Checks the node description of the first registration.
fn check_registration(registered: RegisterNodeRequest) {
    let node = registered.node.unwrap_or_default();
    let status = node.status.unwrap_or_default();
    assert_eq!(node.metadata.map(|m| m.name).as_deref(), Some("node-test"));
    assert_eq!(
        status.capacity.map(|c| (c.cpu, c.memory)),
        Some((4, 8 << 30))
    );
    assert!(registered.executors.is_empty());
    assert_eq!(registered.agent_id, "host-test");
}

/// Runs tasks `1..=n` one snapshot at a time, each after the previous outcome; returns the
/// last revision used.
async fn run_tasks(
    leader: &FakeMember,
    bound: Option<(&str, &Application)>,
    n: u64,
    mut revision: u64,
) -> anyhow::Result<u64> {
    for task in 1..=n {
        revision += 1;
        let input = br#"{"duration": 1}"#;
        let run = executor("e1", ExecutorAction::Run, bound, &[(task, input)]);
        leader.send(snapshot(revision, vec![run]))?;
        let outcome = leader
            .wait_report(LIMIT, |r| {
                r.tasks.iter().find(|t| t.task_id == task).cloned()
            })
            .await?;
        assert_eq!(outcome.return_code, 0, "{:?}", outcome.message);
        assert_eq!(outcome.session_id, "sess-1");
        let output = String::from_utf8(outcome.output.unwrap_or_default())?;
        assert!(output.contains("milliseconds"), "{output}");
    }
    Ok(revision)
}

#[tokio::test]
async fn bind_tasks_unbind_release_with_real_instances() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    check_registration(leader.wait_connected(LIMIT).await?);

    let app = application(FLMPING);
    let bound = Some(("sess-1", &app));
    leader.send(snapshot(
        1,
        vec![executor("e1", ExecutorAction::Bind, bound, &[])],
    ))?;
    // The agent acknowledges a snapshot as soon as it has acted on it, before the bind ends.
    let acked = leader
        .wait_for(LIMIT, |s| match s {
            common::leader::Seen::Message(AgentMessage {
                message: Some(agent_message::Message::Pull(p)),
            }) => Some(p.acked_revision),
            _ => None,
        })
        .await?;
    assert_eq!(acked, 1);
    let bind = leader
        .wait_report(LIMIT, |r| r.binds.first().cloned())
        .await?;
    assert_eq!((bind.executor_id.as_str(), bind.return_code), ("e1", 0));
    assert!(
        fx.sockets.join("e1.sock").exists(),
        "instance socket missing"
    );

    let mut revision = run_tasks(&leader, bound, 3, 1).await?;

    revision += 1;
    leader.send(snapshot(
        revision,
        vec![executor("e1", ExecutorAction::Unbind, bound, &[])],
    ))?;
    let unbind = leader
        .wait_report(LIMIT, |r| r.unbinds.first().cloned())
        .await?;
    assert_eq!(
        (unbind.executor_id.as_str(), unbind.session_id.as_str()),
        ("e1", "sess-1")
    );
    assert!(
        !fx.sockets.join("e1.sock").exists(),
        "socket left after unbind"
    );

    revision += 1;
    leader.send(snapshot(
        revision,
        vec![executor("e1", ExecutorAction::Release, None, &[])],
    ))?;
    let released = leader
        .wait_report(LIMIT, |r| r.released.first().cloned())
        .await?;
    assert_eq!(released, "e1");
    leader.send(snapshot(revision + 1, vec![]))?;

    assert_eq!(agent.metrics.launches(), 1);
    assert_eq!(agent.metrics.tasks_invoked(), 3);
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_resent_snapshot_never_runs_a_task_twice() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    leader.wait_connected(LIMIT).await?;
    let app = application(FLMPING);
    let bound = Some(("sess-2", &app));
    leader.send(snapshot(
        1,
        vec![executor("e2", ExecutorAction::Bind, bound, &[])],
    ))?;
    leader
        .wait_report(LIMIT, |r| r.binds.first().cloned())
        .await?;

    let run1 = || executor("e2", ExecutorAction::Run, bound, &[(1, b"{}")]);
    leader.send(snapshot(2, vec![run1()]))?;
    leader
        .wait_report(LIMIT, |r| r.tasks.iter().find(|t| t.task_id == 1).cloned())
        .await?;
    // The leader has not committed the outcome yet and resends the same desired state.
    for revision in [2, 3, 4] {
        leader.send(snapshot(revision, vec![run1()]))?;
    }
    let run2 = executor("e2", ExecutorAction::Run, bound, &[(2, b"{}")]);
    leader.send(snapshot(5, vec![run2]))?;
    leader
        .wait_report(LIMIT, |r| r.tasks.iter().find(|t| t.task_id == 2).cloned())
        .await?;

    assert_eq!(
        outcomes_of(&leader.reports(), 1),
        1,
        "task 1 reported twice"
    );
    assert_eq!(agent.metrics.tasks_invoked(), 2, "a task ran twice");
    agent.stop().await?;
    assert!(
        !fx.sockets.join("e2.sock").exists(),
        "shutdown left the instance"
    );
    Ok(())
}

#[tokio::test]
async fn an_executor_absent_from_the_snapshot_is_stopped() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    leader.wait_connected(LIMIT).await?;
    let app = application(FLMPING);
    let both = vec![
        executor("e3", ExecutorAction::Bind, Some(("sess-3", &app)), &[]),
        executor("e4", ExecutorAction::Bind, Some(("sess-3", &app)), &[]),
    ];
    leader.send(snapshot(1, both))?;
    let mut bound = Vec::new();
    while bound.len() < 2 {
        let mut binds = leader.wait_report(LIMIT, |r| Some(r.binds.clone())).await?;
        bound.append(&mut binds);
    }
    assert!(bound.iter().all(|b| b.return_code == 0), "{bound:?}");
    let (socket, scratch) = (fx.sockets.join("e3.sock"), fx.work.join("e3"));
    assert!(socket.exists() && scratch.exists());

    let only_e4 = vec![executor(
        "e4",
        ExecutorAction::Run,
        Some(("sess-3", &app)),
        &[],
    )];
    leader.send(snapshot(2, only_e4))?;
    let gone = common::eventually(LIMIT, || !socket.exists() && !scratch.exists()).await;
    assert!(gone, "e3's instance was not stopped");
    assert!(fx.sockets.join("e4.sock").exists(), "e4 must keep running");
    assert_eq!(agent.metrics.launches(), 2);
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn output_over_the_limit_fails_the_task_naming_the_limit() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let mut config = agent_config(&fx, &[&leader.url])?;
    config.max_task_output_bytes = 16;
    let agent = RunningAgent::start(config);
    leader.wait_connected(LIMIT).await?;
    let app = application(FLMPING);
    let bound = Some(("sess-5", &app));
    leader.send(snapshot(
        1,
        vec![executor("e5", ExecutorAction::Bind, bound, &[])],
    ))?;
    leader
        .wait_report(LIMIT, |r| r.binds.first().cloned())
        .await?;
    leader.send(snapshot(
        2,
        vec![executor("e5", ExecutorAction::Run, bound, &[(1, b"{}")])],
    ))?;
    let outcome = leader
        .wait_report(LIMIT, |r| r.tasks.first().cloned())
        .await?;
    assert_ne!(outcome.return_code, 0);
    assert!(outcome.output.is_none());
    let message = outcome.message.unwrap_or_default();
    assert!(
        message.contains("exceeds the limit of 16 bytes"),
        "{message}"
    );
    agent.stop().await?;
    Ok(())
}
