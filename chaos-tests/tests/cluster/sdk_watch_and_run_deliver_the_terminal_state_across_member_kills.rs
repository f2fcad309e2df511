//! Claim: the SDK's `watch_task` and `Session::run` deliver a task's terminal state although
//! members die under them. Three members, one real node agent, a `flmping` session:
//!
//! 1. A watch held on a follower (the first endpoint of its connection) sees the 3 s task
//!    Running; that follower is SIGKILLed; the same stream then yields Succeed (resumed on
//!    another member).
//! 2. `run` of a 2 s task while the leader is SIGKILLed returns the task's output.
//! 3. `run` of a task whose input flmping rejects returns `TaskFailed` carrying the service's
//!    failure text, not a generic message.
//!
//! Every wait is bounded by a timeout.

use crate::support::*;
use anyhow::{Context, bail, ensure};
use flame_sdk::client::session::state;
use flame_sdk::client::{ClientError, Connection, SessionOptions, TaskState};
use std::time::Duration;
use tokio::time::timeout;

const SESSION: &str = "s-sdk-watch";
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_watch_and_run_deliver_the_terminal_state_across_member_kills() -> anyhow::Result<()> {
    let mut run = start("chaos-sdk-watch", &[], &["node-a"]).await?;
    let [f1, f2] = run.followers;
    let url = |id: u64| run.cluster.member(id).map(|m| m.url());
    let (leader_url, f1_url, f2_url) = (url(run.leader)?, url(f1)?, url(f2)?);
    let conn = Connection::new(&[f1_url, f2_url, leader_url])?;
    let mut options = SessionOptions::new("flmping");
    options.id = Some(SESSION.into());
    options.resreq = chaos_tests::ping_session_spec(0, None).resreq;
    let session = conn.create_session(&options).await?;

    // 1. A watch on follower f1 survives f1's death.
    let task = session
        .create_task(Some(br#"{"duration": 3000}"#.to_vec()))
        .await?;
    let id = task.metadata.context("a task id")?.id;
    let mut watch = session.watch_task(&id);
    loop {
        let seen = timeout(WAIT, watch.next())
            .await?
            .context("the watch ended")??;
        match state(&seen) {
            TaskState::Running => break,
            TaskState::Pending => {}
            other => bail!("the task is {other:?} before the kill"),
        }
    }
    run.cluster.kill(f1)?;
    let last = timeout(WAIT, watch.next())
        .await?
        .context("the watch ended")??;
    ensure!(state(&last) == TaskState::Succeed, "{:?}", state(&last));
    ensure!(
        timeout(WAIT, watch.next()).await?.is_none(),
        "the watch ends after Succeed"
    );
    run.cluster.spawn(f1)?;

    // 2. run() rides through a leader SIGKILL.
    let leader = run.cluster.wait_for_leader(&[1, 2, 3], STARTUP).await?;
    let running = {
        let session = session.clone();
        tokio::spawn(async move { session.run(Some(br#"{"duration": 2000}"#.to_vec())).await })
    };
    poll("the task to run", WAIT, || async {
        let c = conn
            .get_session(SESSION)
            .await?
            .status
            .context("a status")?;
        Ok((c.running > 0).then_some(()))
    })
    .await?;
    run.cluster.kill(leader)?;
    let output = timeout(WAIT, running).await???.context("an output")?;
    ensure!(
        String::from_utf8_lossy(&output).contains("Completed on"),
        "{output:?}"
    );
    run.cluster.spawn(leader)?;

    // 3. A failed task is an error with the service's own text.
    match timeout(WAIT, session.run(Some(b"not json".to_vec()))).await? {
        Err(ClientError::TaskFailed { message, state, .. }) => {
            ensure!(state == "failed", "{state}");
            ensure!(message != "no failure message", "{message}");
            println!("failed task message: {message}");
        }
        other => bail!("expected TaskFailed, got {other:?}"),
    }
    session.close().await?;
    Ok(())
}
