//! Claim (review finding R4): a member whose storage fails does not linger as a zombie that
//! still answers clients. Its disk fills, it exits non-zero (so a supervisor restarts it),
//! the other two keep committing, and once it has room again it restarts and catches up with
//! the same state as the leader.
//!
//! The full disk is one follower's alone: it is restarted unable to grow any file past the
//! size its largest file has then (`RLIMIT_FSIZE`, see `Cluster::spawn_with_file_limit`), and
//! tasks with 64 KiB inputs are written through the leader until it stops. No agent runs, so
//! the tasks stay pending, and the state compared is the session's tasks and counters.

use crate::support::*;
use anyhow::{Context, bail, ensure};
use flame_proto::cluster::tasks_client::TasksClient;
use flame_proto::cluster::{CreateTasksRequest, TaskSubmission};
use std::time::Duration;

const SESSION: &str = "s-disk-full";
/// Tasks per batch and bytes per task input: 1 MiB per batch.
const BATCH: usize = 16;
const INPUT: usize = 64 * 1024;
/// Batches written at most while waiting for the follower to fail (64 MiB).
const MAX_BATCHES: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_disk_fills_exits_non_zero_and_catches_up_after_restart()
-> anyhow::Result<()> {
    let mut run = start("chaos-disk-full", &[], &[]).await?;
    let (leader, [full, other]) = (run.leader, run.followers);
    ping_session(&run, leader, SESSION).await?;
    let mut written = write_batches(&run, leader, 0, 2).await?;

    run.cluster.kill(full)?;
    let limit = chaos_tests::nemesis::largest_file(&run.cluster.member(full)?.data_dir)?;
    run.cluster.spawn_with_file_limit(full, limit)?;
    let mut exited = None;
    while exited.is_none() && written < MAX_BATCHES * BATCH {
        written = write_batches(&run, leader, written, 1).await?;
        exited = run.cluster.try_exit(full)?;
    }
    let status = match exited {
        Some(status) => status,
        None => run
            .cluster
            .wait_exit(full, Duration::from_secs(30))
            .await
            .with_context(|| format!("member {full} log:\n{}", run.cluster.log_tail(full, 30)))?,
    };
    // The whole log: the member's closing error is followed by its backtrace.
    let log = run.cluster.log_tail(full, usize::MAX);
    let tail = run.cluster.log_tail(full, 30);
    ensure!(
        !status.success(),
        "a member whose disk is full exits non-zero, not {status}:\n{tail}"
    );
    ensure!(
        log.contains("the Raft core stopped"),
        "the member ({status}) says why it stopped:\n{tail}"
    );

    // The two others still commit.
    written = write_batches(&run, other, written, 2).await?;
    run.cluster.spawn(full)?;
    let want = counters(&run, leader, SESSION).await?;
    ensure!(
        usize::try_from(want.0)? == written,
        "every acknowledged task is pending on the leader: {want:?}, {written} written"
    );
    poll("the restarted member to catch up", STARTUP, || async {
        Ok(counters(&run, full, SESSION)
            .await
            .ok()
            .filter(|c| *c == want))
    })
    .await?;
    ensure!(
        task_ids(&run, full).await? == task_ids(&run, leader).await?,
        "the restarted member lists the leader's tasks"
    );
    println!("member {full} exited ({status}) at a {limit}-byte file limit; {written} tasks");
    Ok(())
}

/// Writes `batches` batches of [`BATCH`] tasks through `via`, numbering request ids from
/// `from`; the count of tasks written so far.
async fn write_batches(
    run: &Running,
    via: u64,
    from: usize,
    batches: usize,
) -> anyhow::Result<usize> {
    let mut client = TasksClient::new(run.cluster.channel(via)?);
    let mut written = from;
    for _ in 0..batches {
        let request = CreateTasksRequest {
            session_id: SESSION.into(),
            tasks: (written..written + BATCH)
                .map(|n| TaskSubmission {
                    input: Some(vec![(n % 251) as u8; INPUT]),
                    request_id: format!("disk-full-{n}"),
                })
                .collect(),
        };
        let created = client.create_tasks(request).await?.into_inner().tasks.len();
        if created != BATCH {
            bail!("created {created} tasks, expected {BATCH}");
        }
        written += BATCH;
    }
    Ok(written)
}

/// The ids of the session's tasks, as member `via` lists them.
async fn task_ids(run: &Running, via: u64) -> anyhow::Result<Vec<String>> {
    list_tasks(run, via, SESSION)
        .await?
        .into_iter()
        .map(|task| Ok(task.metadata.context("task metadata")?.id))
        .collect()
}
