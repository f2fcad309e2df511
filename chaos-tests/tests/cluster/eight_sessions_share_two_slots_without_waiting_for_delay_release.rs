//! Claim: eight sessions at once on a node with two executor slots all complete, because an
//! executor kept warm for a finished session is taken for a waiting one after the reclaim
//! grace, not after its application's `delay_release`.
//!
//! How: three members and one agent offering 2 cores start as OS processes. An application
//! `sticky` runs the flmping service with `delay_release` one hour, so without reclaim the
//! third session would wait an hour for an executor. Eight sessions of it (1 cpu each) get 40
//! tasks each through a follower, all at once; the test waits (at most 120 s, far below the
//! hour) for every task of every session to succeed, then counts the agent's process starts:
//! - by default each session switch is a cold start, since the instance process is replaced at
//!   every unbind, so there are at least as many starts as sessions;
//! - with the application labelled `flame.warm-switch=true`, a process leaves one session and
//!   enters the next, so fewer processes start than there are sessions.

use crate::support::*;
use chaos_tests::AgentOptions;
use chaos_tests::prometheus::Scrape;
use flame_proto::v1;
use std::time::{Duration, Instant};

const SESSIONS: usize = 8;
const TASKS: usize = 40;
/// Well under the application's delay_release, which is an hour.
const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_sessions_share_two_slots_without_waiting_for_delay_release() -> anyhow::Result<()> {
    let launches = eight_sessions("chaos-eight-sessions", &[]).await?;
    anyhow::ensure!(
        launches >= SESSIONS,
        "every session ran in a process of its own: {launches} process starts"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_sessions_of_a_warm_switch_application_reuse_their_processes() -> anyhow::Result<()> {
    let launches = eight_sessions("chaos-eight-warm", &["flame.warm-switch=true"]).await?;
    anyhow::ensure!(
        launches < SESSIONS,
        "processes moved between sessions: {launches} process starts for {SESSIONS} sessions"
    );
    Ok(())
}

/// Runs the eight sessions on two slots with the application labelled `labels`; returns the
/// number of instance processes the agent started.
async fn eight_sessions(name: &str, labels: &[&str]) -> anyhow::Result<usize> {
    let mut run = start(name, &[], &[]).await?;
    let mut options = AgentOptions::new(&run.binaries);
    options.cpu = 2;
    run.cluster.start_agent("node-a", &options)?;
    let follower = run.followers[0];
    let mut client = run.cluster.frontend(follower)?;
    let registered = client
        .register_application(v1::RegisterApplicationRequest {
            name: "sticky".into(),
            application: Some(v1::ApplicationSpec {
                command: Some("${FLAME_HOME}/bin/flmping-service".into()),
                delay_release: Some(3600),
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
                ..v1::ApplicationSpec::default()
            }),
        })
        .await?
        .into_inner();
    anyhow::ensure!(registered.return_code == 0, "{registered:?}");
    let started = Instant::now();
    for i in 0..SESSIONS {
        let mut spec = chaos_tests::ping_session_spec(0, None);
        spec.application = "sticky".into();
        client
            .create_session(v1::CreateSessionRequest {
                session_id: format!("sticky-{i}"),
                session: Some(spec),
            })
            .await?;
        create_tasks(&run, follower, &format!("sticky-{i}"), TASKS, b"{}").await?;
    }
    for i in 0..SESSIONS {
        let left = LIMIT.saturating_sub(started.elapsed());
        all_succeeded(&run, follower, &format!("sticky-{i}"), TASKS, left).await?;
    }
    let (launches, executors) = run.cluster.agent("node-a")?.launches()?;
    let metrics = Scrape::parse(&run.cluster.metrics(run.leader).await?);
    let firsts = metrics.sum("flame_scheduler_first_executor_seconds_count", &[]);
    let waited = metrics.sum("flame_scheduler_first_executor_seconds_sum", &[]);
    let taken = metrics.sum("flame_scheduler_reclaims_total", &[])
        + metrics.sum("flame_scheduler_rotations_total", &[]);
    println!(
        "{SESSIONS} sessions x {TASKS} tasks on 2 slots, labels {labels:?}: done in {:?}; \
         {launches} process starts for {executors} executors; {taken} executors reclaimed or \
         rotated; mean wait for a first executor {:.2} s",
        started.elapsed(),
        waited / firsts.max(1.0)
    );
    anyhow::ensure!(
        firsts == SESSIONS as f64,
        "the leader counted {firsts} first executors for {SESSIONS} sessions"
    );
    anyhow::ensure!(
        taken >= (SESSIONS - 2) as f64,
        "six sessions got an executor another session held: {taken} reclaims and rotations"
    );
    Ok(launches)
}
