//! Leader discovery and leader changes against fake members: NotLeader hints, asking a member
//! for the leader, backoff while there is none, a refused node, and re-registration with the
//! executors the agent still holds, keeping their instances (no relaunch, no task run twice).

use crate::common;

use common::Fixture;
use common::leader::{
    FakeMember, Role, RunningAgent, agent_config, application, executor, outcomes_of, snapshot,
};
use flame_node_agent::agent::AgentError;
use flame_proto::agent::{ExecutorAction, HeldExecutor};
use flame_proto::error::{FlameError, LeaderHint};
use std::time::Duration;

const FLMPING: &str = "${FLAME_HOME}/bin/flmping-service";
const LIMIT: Duration = Duration::from_secs(20);

fn follower(hint: Option<&str>, status_leader: Option<&str>) -> Role {
    Role::Follower {
        hint: hint.map(str::to_owned),
        status_leader: status_leader.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_follower_hint_leads_the_agent_to_the_leader() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let member = FakeMember::start(follower(Some(&leader.url), None)).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&member.url])?);
    leader.wait_connected(LIMIT).await?;
    assert!(member.register_calls() >= 1);
    assert_eq!(member.status_calls(), 0, "a hint needs no status query");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_member_without_a_hint_is_asked_for_the_leader() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    // Cluster.Status reports the leader's address without a scheme, as members store it.
    let bare = leader.url.trim_start_matches("http://").to_owned();
    let member = FakeMember::start(follower(None, Some(&bare))).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&member.url])?);
    leader.wait_connected(LIMIT).await?;
    assert!(member.status_calls() >= 1);
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn without_a_leader_the_agent_backs_off_instead_of_looping() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let member = FakeMember::start(follower(None, None)).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&member.url])?);
    // Observe one window: rounds start 100 ms apart and the pause doubles (with jitter, at
    // least half of it), so 1.5 s holds at most 6 rounds; a hot loop would make thousands.
    let window = Duration::from_millis(1500);
    tokio::time::sleep(window).await;
    let calls = member.register_calls();
    assert!(
        (2..=6).contains(&calls),
        "{calls} registration attempts in {window:?}"
    );
    // Then a leader appears behind the member and the agent finds it.
    let leader = FakeMember::start(Role::Leader).await?;
    member.set_role(follower(Some(&leader.url), None));
    leader.wait_connected(LIMIT).await?;
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_refused_node_stops_the_agent_with_a_clear_error() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let why = "node node-test is registered by another host";
    let member = FakeMember::start(Role::Refuse(why.into())).await?;
    let mut agent = RunningAgent::start(agent_config(&fx, &[&member.url])?);
    let result = agent.finished(LIMIT).await?;
    match result {
        Err(AgentError::Refused { endpoint, message }) => {
            assert_eq!(endpoint, member.url);
            assert!(message.contains(why), "{message}");
        }
        other => anyhow::bail!("expected a refusal, got {other:?}"),
    }
    Ok(())
}

/// Binds `e1` to `sess-1` on `leader` and starts a task that runs for `ms` milliseconds.
async fn start_long_task(
    leader: &FakeMember,
    agent: &RunningAgent,
    app: &flame_proto::v1::Application,
    ms: u64,
) -> anyhow::Result<()> {
    let bound = Some(("sess-1", app));
    leader.send(snapshot(
        1,
        vec![executor("e1", ExecutorAction::Bind, bound, &[])],
    ))?;
    leader
        .wait_report(LIMIT, |r| r.binds.first().cloned())
        .await?;
    let input = format!(r#"{{"duration": {ms}}}"#);
    let run = executor("e1", ExecutorAction::Run, bound, &[(1, input.as_bytes())]);
    leader.send(snapshot(2, vec![run]))?;
    let metrics = agent.metrics.clone();
    let started = common::eventually(LIMIT, || metrics.tasks_invoked() == 1).await;
    anyhow::ensure!(started, "task 1 never started");
    Ok(())
}

/// The executor the agent says it holds while task 1 runs.
fn holding_task_1() -> HeldExecutor {
    HeldExecutor {
        executor_id: "e1".into(),
        session_id: Some("sess-1".into()),
        running_task_id: Some(1),
    }
}

#[tokio::test]
async fn a_dropped_stream_reregisters_with_the_running_instance() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    leader.wait_connected(LIMIT).await?;
    let app = application(FLMPING);
    start_long_task(&leader, &agent, &app, 1500).await?;

    leader.end_stream(None);
    let again = leader.wait_connected(LIMIT).await?;
    assert_eq!(again.executors, vec![holding_task_1()]);
    let run = executor(
        "e1",
        ExecutorAction::Run,
        Some(("sess-1", &app)),
        &[(1, b"{}")],
    );
    leader.send(snapshot(3, vec![run]))?;
    let outcome = leader
        .wait_report(LIMIT, |r| r.tasks.iter().find(|t| t.task_id == 1).cloned())
        .await?;
    assert_eq!(outcome.return_code, 0, "{:?}", outcome.message);
    assert_eq!(outcomes_of(&leader.reports(), 1), 1);
    assert_eq!(agent.metrics.launches(), 1, "the instance was relaunched");
    assert_eq!(agent.metrics.tasks_invoked(), 1, "the task ran twice");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_leader_change_keeps_instances_and_finishes_the_running_task() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let old = FakeMember::start(Role::Leader).await?;
    let new = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&old.url, &new.url])?);
    old.wait_connected(LIMIT).await?;
    let app = application(FLMPING);
    start_long_task(&old, &agent, &app, 1500).await?;

    // The old leader steps down: its stream fails with NotLeader naming the new leader.
    old.set_role(follower(Some(&new.url), None));
    old.end_stream(Some(
        FlameError::NotLeader {
            leader: Some(LeaderHint {
                id: 2,
                addr: new.url.clone(),
            }),
        }
        .into(),
    ));
    let registered = new.wait_connected(LIMIT).await?;
    assert_eq!(registered.executors, vec![holding_task_1()]);

    let bound = Some(("sess-1", &app));
    let run1 = executor("e1", ExecutorAction::Run, bound, &[(1, b"{}")]);
    new.send(snapshot(7, vec![run1]))?;
    let outcome = new
        .wait_report(LIMIT, |r| r.tasks.iter().find(|t| t.task_id == 1).cloned())
        .await?;
    assert_eq!(outcome.return_code, 0, "{:?}", outcome.message);
    let run2 = executor("e1", ExecutorAction::Run, bound, &[(2, b"{}")]);
    new.send(snapshot(8, vec![run2]))?;
    new.wait_report(LIMIT, |r| r.tasks.iter().find(|t| t.task_id == 2).cloned())
        .await?;

    assert_eq!(outcomes_of(&new.reports(), 1), 1);
    assert_eq!(agent.metrics.launches(), 1, "the instance was relaunched");
    assert_eq!(agent.metrics.tasks_invoked(), 2);
    agent.stop().await?;
    assert!(
        !fx.sockets.join("e1.sock").exists(),
        "shutdown left the instance"
    );
    Ok(())
}
