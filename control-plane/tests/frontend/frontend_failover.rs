//! The Frontend through a leader failure, with three separate processes: the leader is
//! SIGKILLed while a client keeps creating tasks through a follower and while WatchTask streams
//! are held on both followers.
//!
//! Claims: a write sent through a follower right after the leader's death is held until a new
//! leader exists and applied once, with no retry by the client; a new leader is elected; every acknowledged write is present on both survivors
//! exactly once (retries carry the same `flame-request-id`); the watch held on the member that
//! stays a follower (and on the one that becomes leader) keeps delivering, so closing the
//! session through the new leader reaches it as Cancelled; and the killed member, restarted,
//! catches up and serves the same data. Also: a write held past the client's deadline, and a
//! member cut off from the majority (watches end, reads answer UNAVAILABLE).

use crate::frontend_support;

use anyhow::{Context, bail, ensure};
use flame_proto::v1;
use flame_proto::v1::frontend_client::FrontendClient;
use frontend_support::*;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Streaming;
use tonic::transport::Channel;

/// Tasks the background writer creates, across the leader's death.
const WRITES: usize = 150;
/// The writer starts one task per period, so its writes straddle the failover.
const WRITE_PERIOD: Duration = Duration::from_millis(10);
const SESSION: &str = "fo-s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_and_follower_watches_survive_a_leader_kill() -> anyhow::Result<()> {
    let mut run = start("frontend-failover").await?;
    let old_leader = run.leader;
    let [f1, f2] = run.followers;
    let mut c1 = frontend(&run.cluster, f1)?;
    prepare(&mut c1).await?;
    let mut watches = Vec::new();
    for id in [f1, f2] {
        watches.push((id, open_watch(&mut frontend(&run.cluster, id)?).await?));
    }
    let writer = tokio::spawn(write_tasks(c1.clone(), WRITES));
    wait_for_pending(&mut c1, 1 + WRITES / 8).await?;
    ensure!(
        !writer.is_finished(),
        "the writer is still writing when the leader dies"
    );
    run.cluster.kill(old_leader)?;
    let new_leader = run.cluster.wait_for_leader(&[f1, f2], DEADLINE).await?;
    ensure!(new_leader != old_leader, "a new leader was elected");
    let acked = writer.await.context("the writer task")??;
    for id in [f1, f2] {
        let mut c = frontend(&run.cluster, id)?;
        check_tasks(&mut c, &acked)
            .await
            .with_context(|| format!("on survivor {id}:\n{}", run.cluster.log_tail(id, 30)))?;
    }
    let mut leader = frontend(&run.cluster, new_leader)?;
    leader
        .close_session(v1::CloseSessionRequest {
            session_id: SESSION.into(),
        })
        .await?;
    for (id, stream) in watches {
        let role = if id == new_leader {
            "new leader"
        } else {
            "follower"
        };
        watch_ends_cancelled(stream)
            .await
            .with_context(|| format!("the watch held on the {role} {id}"))?;
    }
    rejoin(&mut run, old_leader, new_leader, &acked).await
}

/// Registers the application and the session, with task 1 to watch.
/// Claim: a write sent through a follower just after the leader died, with no deadline, no
/// request id and no retry (as flamepy sends it), is held by the follower until a new leader
/// exists, then applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_a_follower_just_after_the_leader_dies_is_held_then_applied_once()
-> anyhow::Result<()> {
    let mut run = start("frontend-hold").await?;
    let [f1, f2] = run.followers;
    let mut c1 = frontend(&run.cluster, f1)?;
    prepare(&mut c1).await?;
    run.cluster.kill(run.leader)?;
    let started = Instant::now();
    let created = c1
        .create_task(task_request(SESSION, Some(b"held")))
        .await
        .with_context(|| {
            format!(
                "the write was not held across the leader change:\n{}",
                run.cluster.log_tail(f1, 30)
            )
        })?;
    eprintln!("the write was held for {:?}", started.elapsed());
    let id = id_of(&created.get_ref().metadata);
    ensure!(id == "2", "the held write became task {id}");
    let acked = BTreeMap::from([
        ("1".to_owned(), b"w-first".to_vec()),
        (id, b"held".to_vec()),
    ]);
    eventually_list_exactly(&run, &[f1, f2], &acked).await
}

/// Claim: a write held for a leader change gives up at the client's own deadline (its
/// `grpc-timeout`, here 2 s, well under the 10 s default hold) with DEADLINE_EXCEEDED naming
/// the leader change, and it is never applied, not even once a leader exists again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_past_the_clients_deadline_fails_with_deadline_exceeded_and_is_not_applied()
-> anyhow::Result<()> {
    let mut run = start("frontend-hold-deadline").await?;
    let [f1, f2] = run.followers;
    let mut c1 = frontend(&run.cluster, f1)?;
    prepare(&mut c1).await?;
    // Without a majority no leader can be elected, so the write can only be held.
    run.cluster.kill(run.leader)?;
    run.cluster.kill(f2)?;
    let mut request = tonic::Request::new(task_request(SESSION, Some(b"too-late")));
    request.set_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let status = c1
        .create_task(request)
        .await
        .err()
        .context("a write without a leader succeeded")?;
    let waited = started.elapsed();
    eprintln!("the write was held for {waited:?}: {status:?}");
    ensure!(
        status.code() == tonic::Code::DeadlineExceeded
            && status.message().contains("leader change")
            && status.message().contains("not applied"),
        "{status:?}"
    );
    ensure!(
        waited < Duration::from_secs(5),
        "held {waited:?}, past the client's deadline"
    );
    run.cluster.spawn(run.leader)?;
    run.cluster.spawn(f2)?;
    run.cluster.wait_for_leader(&[1, 2, 3], DEADLINE).await?;
    let acked = BTreeMap::from([("1".to_owned(), b"w-first".to_vec())]);
    eventually_list_exactly(&run, &[1, 2, 3], &acked).await
}

/// Claim (review D10): a member cut off from the majority (here the two others are down)
/// ends a watch it holds with UNAVAILABLE once it has known no leader for the leaderless limit
/// (5 s), and answers a read with UNAVAILABLE within a bound, instead of either hanging on
/// frozen state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_a_majority_ends_watches_and_answers_reads_with_unavailable()
-> anyhow::Result<()> {
    let mut run = start("frontend-cut-off").await?;
    let [f1, f2] = run.followers;
    let mut c1 = frontend(&run.cluster, f1)?;
    prepare(&mut c1).await?;
    let mut stream = open_watch(&mut c1).await?;
    run.cluster.kill(run.leader)?;
    run.cluster.kill(f2)?;
    let started = Instant::now();
    let ended = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .context("the watch still hangs")?;
    let waited = started.elapsed();
    let status = ended
        .err()
        .context("the watch went on without a majority")?;
    eprintln!("the watch ended after {waited:?}: {status:?}");
    ensure!(
        status.code() == tonic::Code::Unavailable && status.message().contains("no leader"),
        "{status:?}"
    );
    ensure!(
        waited < Duration::from_secs(15),
        "the watch ended only after {waited:?}"
    );
    let started = Instant::now();
    let read = c1
        .get_task(v1::GetTaskRequest {
            task_id: "1".into(),
            session_id: SESSION.into(),
        })
        .await;
    let waited = started.elapsed();
    let status = read
        .err()
        .context("a read without a majority was answered")?;
    eprintln!("the read was answered after {waited:?}: {status:?}");
    ensure!(status.code() == tonic::Code::Unavailable, "{status:?}");
    ensure!(waited < Duration::from_secs(10), "the read took {waited:?}");
    Ok(())
}

async fn prepare(c: &mut FrontendClient<Channel>) -> anyhow::Result<()> {
    let r = c
        .register_application(v1::RegisterApplicationRequest {
            name: "fo-app".into(),
            application: Some(app_spec()),
        })
        .await?;
    ensure!(r.get_ref().return_code == 0, "register: {r:?}");
    c.create_session(v1::CreateSessionRequest {
        session_id: SESSION.into(),
        session: Some(session_spec("fo-app")),
    })
    .await?;
    let first = c
        .create_task(task_request_with_id(SESSION, b"w-first", "w-first"))
        .await?;
    ensure!(id_of(&first.get_ref().metadata) == "1");
    Ok(())
}

/// Opens a watch of task 1 and reads its current state.
async fn open_watch(c: &mut FrontendClient<Channel>) -> anyhow::Result<Streaming<v1::Task>> {
    let request = v1::WatchTaskRequest {
        task_id: "1".into(),
        session_id: SESSION.into(),
    };
    let mut stream = c.watch_task(request).await?.into_inner();
    let first = next(&mut stream).await?.context("the current state")?;
    ensure!(state_of(&first) == v1::TaskState::Pending);
    Ok(stream)
}

/// Creates `count` tasks one after another, retrying each (same request id) until the cluster
/// acknowledges it; returns task id → input of every acknowledged task, plus task 1.
async fn write_tasks(
    c: FrontendClient<Channel>,
    count: usize,
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut acked = BTreeMap::from([("1".to_owned(), b"w-first".to_vec())]);
    let mut pace = tokio::time::interval(WRITE_PERIOD);
    for n in 0..count {
        pace.tick().await;
        let input = format!("w-{n}").into_bytes();
        let id = create_with_retries(c.clone(), &input).await?;
        if acked.insert(id.clone(), input).is_some() {
            bail!("task {id} was acknowledged for two different submissions");
        }
    }
    Ok(acked)
}

async fn create_with_retries(
    mut c: FrontendClient<Channel>,
    input: &[u8],
) -> anyhow::Result<String> {
    let deadline = Instant::now() + DEADLINE;
    let request_id = String::from_utf8_lossy(input).into_owned();
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    let mut last_error = None;
    while Instant::now() < deadline {
        tick.tick().await;
        let mut request = tonic::Request::new(task_request(SESSION, Some(input)));
        request.set_timeout(Duration::from_secs(5));
        request
            .metadata_mut()
            .insert("flame-request-id", request_id.parse()?);
        match c.create_task(request).await {
            Ok(task) => return Ok(id_of(&task.get_ref().metadata)),
            Err(status) => last_error = Some(status),
        }
    }
    bail!("task {request_id} was never acknowledged; last error: {last_error:?}")
}

/// Waits until each of `members` lists exactly the `acked` tasks.
async fn eventually_list_exactly(
    run: &Running,
    members: &[u64],
    acked: &BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<()> {
    for member in members {
        let c = frontend(&run.cluster, *member)?;
        eventually("the member to list exactly the acknowledged tasks", || {
            let mut c = c.clone();
            async move { Ok(check_tasks(&mut c, acked).await.ok()) }
        })
        .await
        .with_context(|| format!("member {member}"))?;
    }
    Ok(())
}

/// Waits until the session has at least `count` tasks.
async fn wait_for_pending(c: &mut FrontendClient<Channel>, count: usize) -> anyhow::Result<()> {
    eventually("the writer to get going", || {
        let mut c = c.clone();
        async move {
            let request = v1::GetSessionRequest {
                session_id: SESSION.into(),
            };
            let pending = c
                .get_session(request)
                .await
                .ok()
                .and_then(|s| s.into_inner().status)
                .map_or(0, |s| s.pending as usize);
            Ok((pending >= count).then_some(()))
        }
    })
    .await
}

/// Every acknowledged task is there with its input, and nothing else is.
async fn check_tasks(
    c: &mut FrontendClient<Channel>,
    acked: &BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<()> {
    let stream = c
        .list_task(v1::ListTaskRequest {
            session_id: SESSION.into(),
        })
        .await?
        .into_inner();
    let listed: BTreeMap<String, Vec<u8>> = collect(stream)
        .await?
        .into_iter()
        .map(|t| {
            let input = t.spec.and_then(|s| s.input).unwrap_or_default();
            (id_of(&t.metadata), input)
        })
        .collect();
    ensure!(
        &listed == acked,
        "tasks differ from the acknowledged writes: listed {} vs acknowledged {}",
        listed.len(),
        acked.len()
    );
    let app = c
        .get_application(v1::GetApplicationRequest {
            name: "fo-app".into(),
        })
        .await?;
    ensure!(id_of(&app.get_ref().metadata) == "fo-app");
    Ok(())
}

/// The held watch delivers Cancelled and ends cleanly.
async fn watch_ends_cancelled(mut stream: Streaming<v1::Task>) -> anyhow::Result<()> {
    let last = next(&mut stream)
        .await?
        .context("a message after the failover")?;
    ensure!(state_of(&last) == v1::TaskState::Cancelled, "{last:?}");
    ensure!(
        next(&mut stream).await?.is_none(),
        "the stream ends after Cancelled"
    );
    Ok(())
}

/// Restarts the killed member; it catches up and answers with the same data.
async fn rejoin(
    run: &mut Running,
    old: u64,
    leader: u64,
    acked: &BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<()> {
    let applied = run
        .cluster
        .status(leader)
        .await
        .context("the new leader answers")?
        .applied;
    run.cluster.spawn(old)?;
    run.cluster.wait_applied(old, applied, DEADLINE).await?;
    let mut c = frontend(&run.cluster, old)?;
    check_tasks(&mut c, acked).await.with_context(|| {
        format!(
            "on the restarted member:\n{}",
            run.cluster.log_tail(old, 30)
        )
    })?;
    let session = c
        .get_session(v1::GetSessionRequest {
            session_id: SESSION.into(),
        })
        .await?
        .into_inner();
    let status = session_status(&session)?;
    ensure!(status.state() == v1::SessionState::Closed);
    ensure!(
        status.cancelled as usize == acked.len(),
        "counters: {status:?}"
    );
    let request = v1::WatchTaskRequest {
        task_id: "1".into(),
        session_id: SESSION.into(),
    };
    let again = collect(c.watch_task(request).await?.into_inner()).await?;
    ensure!(again.len() == 1 && state_of(&again[0]) == v1::TaskState::Cancelled);
    Ok(())
}
