//! Warm switches against a fake leader with real `flmping-service` instances: an application
//! labelled `flame.warm-switch=true` keeps its process from one session to the next of the same
//! application (`OnSessionLeave`, then `OnSessionEnter`, no new process); without the label
//! every session gets a fresh process; a parked process is never handed to another
//! application and is stopped when its executor is released; a malformed label fails the bind
//! with code 19 naming it.

use crate::common;

use common::Fixture;
use common::leader::{
    FakeMember, Role, RunningAgent, agent_config, application, executor, snapshot,
};
use flame_proto::agent::ExecutorAction;
use flame_proto::v1;
use std::time::Duration;

const FLMPING: &str = "${FLAME_HOME}/bin/flmping-service";
const LIMIT: Duration = Duration::from_secs(20);

/// The flmping application called `name` with `labels`.
fn app(name: &str, labels: &[&str]) -> v1::Application {
    let mut app = application(FLMPING);
    if let Some(meta) = app.metadata.as_mut() {
        meta.name = name.into();
        meta.id = name.into();
    }
    if let Some(spec) = app.spec.as_mut() {
        spec.labels = labels.iter().map(|l| (*l).to_owned()).collect();
    }
    app
}

/// Drives executor `e1` through one whole binding to `session` of `app`, starting at
/// `revision`: bind, one task (`task`), unbind, idle. Returns the next free revision.
async fn one_session(
    leader: &FakeMember,
    app: &v1::Application,
    session: &str,
    task: u64,
    revision: u64,
) -> anyhow::Result<u64> {
    let bound = Some((session, app));
    leader.send(snapshot(
        revision,
        vec![executor("e1", ExecutorAction::Bind, bound, &[])],
    ))?;
    let bind = leader
        .wait_report(LIMIT, |r| {
            r.binds.iter().find(|b| b.session_id == session).cloned()
        })
        .await?;
    anyhow::ensure!(bind.return_code == 0, "bind failed: {:?}", bind.message);
    leader.send(snapshot(
        revision + 1,
        vec![executor("e1", ExecutorAction::Run, bound, &[(task, b"{}")])],
    ))?;
    let outcome = leader
        .wait_report(LIMIT, |r| {
            r.tasks.iter().find(|t| t.task_id == task).cloned()
        })
        .await?;
    anyhow::ensure!(
        outcome.return_code == 0,
        "task failed: {:?}",
        outcome.message
    );
    leader.send(snapshot(
        revision + 2,
        vec![executor("e1", ExecutorAction::Unbind, bound, &[])],
    ))?;
    leader
        .wait_report(LIMIT, |r| {
            r.unbinds.iter().find(|u| u.session_id == session).cloned()
        })
        .await?;
    leader.send(snapshot(
        revision + 3,
        vec![executor("e1", ExecutorAction::Idle, None, &[])],
    ))?;
    Ok(revision + 4)
}

#[tokio::test]
async fn an_opted_in_application_moves_between_sessions_without_a_new_process() -> anyhow::Result<()>
{
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    leader.wait_connected(LIMIT).await?;
    let warm = app("warm", &["team=ml", "flame.warm-switch=true"]);
    let mut revision = 1;
    for (i, session) in ["sess-1", "sess-2", "sess-3"].iter().enumerate() {
        revision = one_session(&leader, &warm, session, i as u64 + 1, revision).await?;
    }
    assert_eq!(
        agent.metrics.launches(),
        1,
        "one process served three sessions"
    );
    assert_eq!(agent.metrics.warm_switches(), 2);
    assert_eq!(agent.metrics.tasks_invoked(), 3);
    // Parked, not stopped: its socket is still there while the executor idles.
    assert!(fx.sockets.join("e1.sock").exists());
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn without_the_label_every_session_gets_a_fresh_process() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    leader.wait_connected(LIMIT).await?;
    let cold = app("cold", &["flame.warm-switch=false"]);
    let mut revision = 1;
    for (i, session) in ["sess-1", "sess-2"].iter().enumerate() {
        revision = one_session(&leader, &cold, session, i as u64 + 1, revision).await?;
    }
    assert_eq!(agent.metrics.launches(), 2);
    assert_eq!(agent.metrics.warm_switches(), 0);
    let socket = fx.sockets.join("e1.sock");
    let stopped = common::eventually(LIMIT, || !socket.exists()).await;
    assert!(stopped, "the unbound instance was not stopped");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_parked_process_is_not_handed_to_another_application_and_dies_with_its_executor()
-> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    leader.wait_connected(LIMIT).await?;
    let first = app("first", &["flame.warm-switch=true"]);
    let second = app("second", &["flame.warm-switch=true"]);
    let mut revision = one_session(&leader, &first, "sess-1", 1, 1).await?;
    revision = one_session(&leader, &second, "sess-2", 2, revision).await?;
    assert_eq!(
        agent.metrics.launches(),
        2,
        "another application starts afresh"
    );
    assert_eq!(agent.metrics.warm_switches(), 0);

    leader.send(snapshot(
        revision,
        vec![executor("e1", ExecutorAction::Release, None, &[])],
    ))?;
    let released = leader
        .wait_report(LIMIT, |r| r.released.first().cloned())
        .await?;
    assert_eq!(released, "e1");
    let socket = fx.sockets.join("e1.sock");
    let stopped = common::eventually(LIMIT, || !socket.exists()).await;
    assert!(stopped, "the parked instance outlived its executor");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_malformed_warm_switch_label_fails_the_bind_naming_it() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    leader.wait_connected(LIMIT).await?;
    let bad = app("bad", &["flame.warm-switch=maybe"]);
    leader.send(snapshot(
        1,
        vec![executor(
            "e1",
            ExecutorAction::Bind,
            Some(("sess-1", &bad)),
            &[],
        )],
    ))?;
    let bind = leader
        .wait_report(LIMIT, |r| r.binds.first().cloned())
        .await?;
    assert_eq!(bind.return_code, 19);
    assert_eq!(
        bind.message.as_deref(),
        Some("invalid label flame.warm-switch=maybe: expected true or false")
    );
    assert_eq!(agent.metrics.launches(), 0);
    agent.stop().await?;
    Ok(())
}
