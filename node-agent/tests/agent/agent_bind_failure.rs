//! A bind that cannot work (the application's command is missing) is reported with code 11
//! and the executor backs off: a leader that keeps asking does not make the agent hot-loop.

use crate::common;

use common::Fixture;
use common::leader::{
    FakeMember, Role, RunningAgent, agent_config, application, executor, snapshot,
};
use flame_proto::agent::ExecutorAction;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_missing_command_is_code_11_and_retries_back_off() -> anyhow::Result<()> {
    let fx = Fixture::new()?;
    let leader = FakeMember::start(Role::Leader).await?;
    let agent = RunningAgent::start(agent_config(&fx, &[&leader.url])?);
    leader.wait_connected(LIMIT).await?;
    let app = application("${FLAME_HOME}/bin/no-such-service");
    let bind = |revision| {
        snapshot(
            revision,
            vec![executor(
                "e1",
                ExecutorAction::Bind,
                Some(("sess-1", &app)),
                &[],
            )],
        )
    };
    leader.send(bind(1))?;
    let first = leader
        .wait_report(LIMIT, |r| r.binds.first().cloned())
        .await?;
    assert_eq!(first.return_code, 11);
    let message = first.message.unwrap_or_default();
    assert!(message.starts_with("shim creation failed: "), "{message}");
    assert!(message.contains("not found"), "{message}");

    // A leader that keeps asking for the bind, every 20 ms for 2 s.
    let window = Duration::from_secs(2);
    let deadline = tokio::time::Instant::now() + window;
    let mut revision = 1;
    while tokio::time::Instant::now() < deadline {
        revision += 1;
        leader.send(bind(revision))?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempts: usize = leader.reports().iter().map(|r| r.binds.len()).sum();
    // Backoff 200 ms doubling (each pause at least half): at most 5 attempts in 2 s.
    assert!(
        (2..=5).contains(&attempts),
        "{attempts} bind attempts in {window:?}"
    );
    assert!(
        leader
            .reports()
            .iter()
            .flat_map(|r| &r.binds)
            .all(|b| b.return_code == 11)
    );
    assert_eq!(agent.metrics.launches(), 0);
    assert!(agent.metrics.bind_failures() >= attempts as u64);
    agent.stop().await?;
    Ok(())
}
