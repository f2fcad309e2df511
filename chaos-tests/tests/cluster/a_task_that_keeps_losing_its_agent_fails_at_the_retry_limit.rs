//! Claim: a task whose agent keeps dying is retried exactly `task_retry_limit` times and then
//! fails with `task exceeded retry limit (N) after executor loss`, while the other tasks of its
//! session still succeed.
//!
//! How: three members run with `cluster.recovery.task.retry_limits` = [`LIMIT`] (a config file),
//! agents heartbeating every 500 ms (`raft.agent_heartbeat_ms`) and `--node-timeout-ms 2500`;
//! two agents. One `flmping` session with `max_instances = 1`, so the session's single Bound
//! executor (ListExecutor: `session_id` and `spec.node`) is the one running its task, gets three
//! quick tasks, then a poison task that sleeps ten minutes, then three more quick tasks. Once
//! the first three succeeded, each round waits until the poison task is Running on a fresh
//! attempt, SIGKILLs the agent of the node holding it (and its instances, as a lost machine
//! would), waits until the leader has marked that node NotReady and the task left that attempt,
//! then starts the agent again under the same name so the cluster keeps two nodes. After
//! rounds 1..=LIMIT the task carries one more `requeued ... node <killed> is not ready` event
//! and is not Failed; after round LIMIT + 1 it is Failed, its last event is the retry-limit
//! code-3 event, and the six quick tasks all Succeed.
//!
//! The agent is restarted only after the requeue: an agent that re-registers before its node
//! expires keeps its executors and simply relaunches the instance (the task runs again on the
//! same executor, which is not a loss).

use crate::support::*;
use anyhow::{Context, bail, ensure};
use chaos_tests::AgentOptions;
use flame_proto::v1;
use std::time::{Duration, Instant};

const SESSION: &str = "s-retry-limit";
/// `cluster.recovery.task.retry_limits` for this cluster.
const LIMIT: usize = 2;
/// Quick tasks created before and after the poison task.
const QUICK: u64 = 3;
/// The poison task's id: it comes right after the first quick tasks.
const POISON: u64 = QUICK + 1;
/// Bound on each round's waits (node expiry is 2.5 s plus the leader's 1 s check).
const ROUND: Duration = Duration::from_secs(45);
/// Bound on the whole test after start-up.
const TOTAL: Duration = Duration::from_secs(240);
/// Agents heartbeat every 500 ms, so a 2.5 s node timeout never expires a live agent.
const NODE_TIMEOUT_MS: &str = "2500";

/// The members' configuration file: the retry limit and the agents' heartbeat interval.
fn config_file(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("flame-cluster.yaml");
    let text = format!(
        "cluster:\n  recovery:\n    task:\n      retry_limits: {LIMIT}\n\
         raft:\n  agent_heartbeat_ms: 500\n"
    );
    std::fs::write(&path, text)?;
    Ok(path.to_str().context("config path")?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_losing_its_agent_fails_at_the_retry_limit() -> anyhow::Result<()> {
    let config = tempfile::tempdir()?;
    let file = config_file(config.path())?;
    let flags = ["--config", &file, "--node-timeout-ms", NODE_TIMEOUT_MS];
    let mut run = start("chaos-retry-limit", &flags, &["node-a", "node-b"]).await?;
    let via = run.followers[0];
    let started = Instant::now();
    single_instance_session(&run, via).await?;
    for _ in 0..QUICK {
        create_task(&run, via, br#"{"duration": 20}"#).await?;
    }
    create_task(&run, via, br#"{"duration": 600000}"#).await?;
    for _ in 0..QUICK {
        create_task(&run, via, br#"{"duration": 20}"#).await?;
    }
    succeeded_at_least(&run, via, SESSION, QUICK as usize, ROUND).await?;
    let options = AgentOptions::new(&run.binaries);
    let mut killed = Vec::new();
    for round in 1..=LIMIT + 1 {
        ensure!(
            started.elapsed() < TOTAL,
            "{round} rounds took over {TOTAL:?}"
        );
        let node = wait_poison_running(&run, via, round - 1).await?;
        run.cluster.kill_agent(&node)?;
        killed.push(node.clone());
        let task = wait_attempt_lost(&run, via, round).await?;
        let state = task_state(&task);
        println!("round {round}: killed {node}; the poison task is now {state:?}");
        if round <= LIMIT {
            ensure!(
                state != v1::TaskState::Failed,
                "Failed after {round} losses"
            );
        }
        run.cluster.start_agent(&node, &options)?;
    }
    let task = get_task(&run, via, POISON).await?;
    check_poison_events(&task, &killed)?;
    all_settled(&run, via).await?;
    println!(
        "the poison task failed after {} losses ({killed:?}) in {:?}",
        LIMIT + 1,
        started.elapsed()
    );
    Ok(())
}

/// Creates the `flmping` session with at most one instance, through member `via`.
async fn single_instance_session(run: &Running, via: u64) -> anyhow::Result<()> {
    run.cluster
        .frontend(via)?
        .create_session(v1::CreateSessionRequest {
            session_id: SESSION.into(),
            session: Some(chaos_tests::ping_session_spec(0, Some(1))),
        })
        .await?;
    Ok(())
}

async fn create_task(run: &Running, via: u64, input: &[u8]) -> anyhow::Result<()> {
    run.cluster
        .frontend(via)?
        .create_task(v1::CreateTaskRequest {
            task: Some(v1::TaskSpec {
                session_id: SESSION.into(),
                input: Some(input.to_vec()),
                output: None,
            }),
        })
        .await?;
    Ok(())
}

async fn get_task(run: &Running, via: u64, id: u64) -> anyhow::Result<v1::Task> {
    let task = run
        .cluster
        .frontend(via)?
        .get_task(v1::GetTaskRequest {
            task_id: id.to_string(),
            session_id: SESSION.into(),
        })
        .await?;
    Ok(task.into_inner())
}

fn task_state(task: &v1::Task) -> v1::TaskState {
    task.status
        .as_ref()
        .map_or(v1::TaskState::Pending, |s| s.state())
}

fn events(task: &v1::Task) -> Vec<(i32, String)> {
    let events = task.status.as_ref().map(|s| s.events.as_slice());
    events
        .unwrap_or_default()
        .iter()
        .map(|e| (e.code, e.message.clone().unwrap_or_default()))
        .collect()
}

const REQUEUED: &str = "Task was requeued with state <Pending>: ";

fn requeues(task: &v1::Task) -> usize {
    let requeued = |(code, text): &(i32, String)| *code == 0 && text.starts_with(REQUEUED);
    events(task).iter().filter(|e| requeued(e)).count()
}

/// Waits until the poison task is Running after exactly `requeued` losses and the session's
/// one executor is Bound; returns that executor's node.
async fn wait_poison_running(run: &Running, via: u64, requeued: usize) -> anyhow::Result<String> {
    let what = format!("the poison task Running after {requeued} losses");
    let found = poll(&what, ROUND, || async move {
        let task = get_task(run, via, POISON).await?;
        if task_state(&task) != v1::TaskState::Running || requeues(&task) != requeued {
            return Ok(None);
        }
        let listed = run
            .cluster
            .frontend(via)?
            .list_executor(v1::ListExecutorRequest {})
            .await?
            .into_inner();
        let ours: Vec<&v1::Executor> = listed
            .executors
            .iter()
            .filter(|e| e.status.as_ref().and_then(|s| s.session_id.as_deref()) == Some(SESSION))
            .collect();
        let bound = |e: &v1::Executor| {
            e.status.as_ref().map(|s| s.state()) == Some(v1::ExecutorState::ExecutorBound)
        };
        Ok(match ours.as_slice() {
            [only] if bound(only) => only.spec.as_ref().map(|s| s.node.clone()),
            _ => None,
        })
    })
    .await;
    found.with_context(|| logs(run, via))
}

/// Waits until the attempt killed in round `round` is over: the task was requeued a
/// `round`-th time or, in the last round, Failed. Returns the task then.
async fn wait_attempt_lost(run: &Running, via: u64, round: usize) -> anyhow::Result<v1::Task> {
    let what = format!("the poison task to lose attempt {round}");
    let task = poll(&what, ROUND, || async move {
        let task = get_task(run, via, POISON).await?;
        let over = requeues(&task) >= round || task_state(&task) == v1::TaskState::Failed;
        Ok(over.then_some(task))
    })
    .await
    .with_context(|| logs(run, via))?;
    ensure!(
        requeues(&task) == round.min(LIMIT),
        "after {round} losses the task has {} requeue events: {:?}",
        requeues(&task),
        events(&task)
    );
    Ok(task)
}

/// The poison task is Failed; one requeue event per lost node for the first LIMIT losses, and
/// the retry-limit event last.
fn check_poison_events(task: &v1::Task, killed: &[String]) -> anyhow::Result<()> {
    let events = events(task);
    ensure!(
        task_state(task) == v1::TaskState::Failed,
        "the poison task is {:?}: {events:?}",
        task_state(task)
    );
    let requeued: Vec<&str> = events
        .iter()
        .filter_map(|(code, text)| (*code == 0).then_some(text.as_str()))
        .filter_map(|text| text.strip_prefix(REQUEUED))
        .collect();
    let expected: Vec<String> = killed[..LIMIT]
        .iter()
        .map(|node| format!("node {node} is not ready"))
        .collect();
    ensure!(requeued == expected, "requeue reasons {requeued:?}");
    let last = events.last().context("no events")?;
    let text = format!("task exceeded retry limit ({LIMIT}) after executor loss");
    ensure!(*last == (3, text), "the last event is {last:?}: {events:?}");
    Ok(())
}

/// Every quick task Succeeds; the poison task is the session's only failure.
async fn all_settled(run: &Running, via: u64) -> anyhow::Result<()> {
    let want = (0, 0, i32::try_from(2 * QUICK)?, 1);
    let settled = poll("the quick tasks to succeed", ROUND, || async move {
        Ok(counters(run, via, SESSION)
            .await
            .ok()
            .filter(|c| *c == want))
    })
    .await;
    if let Err(e) = settled {
        let tasks = list_tasks(run, via, SESSION).await?;
        let states: Vec<(String, i32)> = tasks
            .iter()
            .map(|t| {
                let id = t
                    .metadata
                    .as_ref()
                    .map(|m| m.id.clone())
                    .unwrap_or_default();
                (id, t.status.as_ref().map_or(-1, |s| s.state))
            })
            .collect();
        bail!("{e}; task states {states:?}\n{}", logs(run, via));
    }
    Ok(())
}

/// The member's and agents' log tails, for failure messages.
fn logs(run: &Running, via: u64) -> String {
    let agents: Vec<String> = run
        .cluster
        .agents()
        .iter()
        .map(|a| format!("--- agent {} log:\n{}", a.name, a.log_tail(20)))
        .collect();
    format!(
        "--- member {via} log:\n{}\n--- leader {} log:\n{}\n{}",
        run.cluster.log_tail(via, 30),
        run.leader,
        run.cluster.log_tail(run.leader, 30),
        agents.join("\n")
    )
}
