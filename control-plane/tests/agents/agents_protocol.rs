//! The node-agent protocol (`flame.agent.v1`) against three control-plane processes, driven by
//! a fake agent written in the test (docs/agent-protocol.md is the contract).
//!
//! Claims:
//! - A follower refuses RegisterNode and Sync with UNAVAILABLE and the leader hint; an agent
//!   that follows the hint registers its node, and 20 `flmping` tasks created through a
//!   follower are bound, run once each and end Succeed with the agent's output and a code-2
//!   event.
//! - A failed bind is recorded as session event 1001 carrying the agent's message.
//! - A failed task ends Failed with the agent's message as its code-3 event.
//! - A second agent claiming a live node is refused, naming the node and both agents, and the
//!   first agent keeps running tasks.
//! - A Sync stream whose first heartbeat names an unregistered node is refused with
//!   "register the node first".

use crate::agents_support;
use crate::frontend_support;

use agents_support::fake::{self, Behaviour, FakeAgent};
use agents_support::*;
use anyhow::{Context, ensure};
use flame_proto::agent::{AgentMessage, Heartbeat, RegisterNodeRequest, agent_message};
use flame_proto::v1;
use frontend_support::{DEADLINE, eventually, expect_status, frontend, state_of};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const NODE: &str = "node-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_ping_tasks_succeed_through_an_agent_that_followed_the_leader_hint()
-> anyhow::Result<()> {
    let run = start("agents-twenty", None).await?;
    let follower = run.followers[0];
    let leader_url = run.url(run.leader)?;
    let mut on_follower = fake::client(&run.url(follower)?)?;
    let refused = on_follower
        .register_node(RegisterNodeRequest {
            node: Some(fake::wire_node(NODE)),
            executors: Vec::new(),
            agent_id: "agent-a".into(),
            cache: None,
        })
        .await;
    let status = expect_status(refused, Code::Unavailable, &["not the leader"])?;
    let hint = fake::hint_of(&status).context("a leader hint")?;
    ensure!(hint.id == run.leader, "the hint names the leader: {hint:?}");
    ensure!(
        fake::url(&hint.addr) == leader_url,
        "hint {hint:?} vs {leader_url}"
    );
    let sync = on_follower
        .sync(ReceiverStream::new(heartbeats(NODE).await?))
        .await;
    expect_status(sync, Code::Unavailable, &["not the leader"])?;

    let agent = FakeAgent::spawn(agent_config(&run, NODE, "agent-a", Behaviour::Succeed)?);
    fake::wait_log(&agent, "a Sync stream", DEADLINE, |l| l.streams >= 1).await?;
    ping_session(&run, follower, "s-twenty").await?;
    create_tasks(&run, follower, "s-twenty", 20).await?;
    let done = wait_tasks(&run, follower, "s-twenty", 20, v1::TaskState::Succeed).await?;
    for (n, task) in done.iter().enumerate() {
        let output = task.spec.as_ref().and_then(|s| s.output.clone());
        let mut expected = b"out-".to_vec();
        expected.extend(input(n));
        ensure!(output == Some(expected), "task {n} output: {output:?}");
        let succeeded = events(task).iter().filter(|(code, _)| *code == 2).count();
        ensure!(
            succeeded == 1,
            "task {n} has one code-2 event: {:?}",
            events(task)
        );
    }
    let log = agent.log();
    ensure!(log.redirects >= 1, "the agent followed a hint: {log:?}");
    ensure!(
        log.runs.len() == 20 && log.runs.values().all(|n| *n == 1),
        "each task ran once: {log:?}"
    );
    ensure!(
        !log.binds.is_empty() && log.binds.len() <= 4,
        "1 to 4 executors: {log:?}"
    );
    let nodes = frontend(&run.cluster, follower)?
        .list_nodes(v1::ListNodesRequest {})
        .await?
        .into_inner();
    let node = nodes.nodes.first().context("the node is listed")?;
    ensure!(
        node.status.as_ref().map(|s| s.state()) == Some(v1::NodeState::Ready),
        "the node is Ready: {node:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bind_is_recorded_as_session_event_1001_with_the_agent_message()
-> anyhow::Result<()> {
    let run = start("agents-bind-failure", None).await?;
    let failing = Behaviour::FailBinds("cannot start the instance: boom".into());
    let _agent = FakeAgent::spawn(agent_config(&run, NODE, "agent-a", failing)?);
    ping_session(&run, run.leader, "s-bind").await?;
    create_tasks(&run, run.leader, "s-bind", 1).await?;
    let event = eventually("session event 1001", || async {
        let s = session(&run, run.leader, "s-bind").await?;
        let found = s
            .status
            .map(|st| st.events)
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.code == 1001);
        Ok(found)
    })
    .await?;
    let message = event.message.unwrap_or_default();
    ensure!(
        message.contains("cannot start the instance: boom"),
        "the event carries the agent's message: {message}"
    );
    let task = list_tasks(&run, run.leader, "s-bind").await?;
    ensure!(
        task.iter().all(|t| state_of(t) == v1::TaskState::Pending),
        "the task waits for an executor that binds"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_ends_failed_with_the_agent_message_as_its_code_3_event() -> anyhow::Result<()>
{
    let run = start("agents-task-failure", None).await?;
    let failing = Behaviour::FailTasks("task exploded: division by zero".into());
    let agent = FakeAgent::spawn(agent_config(&run, NODE, "agent-a", failing)?);
    ping_session(&run, run.leader, "s-fail").await?;
    create_tasks(&run, run.leader, "s-fail", 2).await?;
    let done = wait_tasks(&run, run.leader, "s-fail", 2, v1::TaskState::Failed).await?;
    for task in &done {
        let failed: Vec<_> = events(task).into_iter().filter(|(c, _)| *c == 3).collect();
        ensure!(
            failed.len() == 1 && failed[0].1 == "task exploded: division by zero",
            "one code-3 event with the message: {:?}",
            events(task)
        );
    }
    ensure!(
        agent.log().runs.values().all(|n| *n == 1),
        "no task retried"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_for_a_live_node_is_refused_and_the_first_keeps_working()
-> anyhow::Result<()> {
    let run = start("agents-second", None).await?;
    let first = FakeAgent::spawn(agent_config(&run, NODE, "agent-a", Behaviour::Succeed)?);
    fake::wait_log(&first, "a Sync stream", DEADLINE, |l| l.streams >= 1).await?;
    let refused = fake::client(&run.url(run.leader)?)?
        .register_node(RegisterNodeRequest {
            node: Some(fake::wire_node(NODE)),
            executors: Vec::new(),
            agent_id: "agent-b".into(),
            cache: None,
        })
        .await;
    expect_status(refused, Code::AlreadyExists, &[NODE, "agent-a", "agent-b"])?;
    ping_session(&run, run.leader, "s-second").await?;
    create_tasks(&run, run.leader, "s-second", 3).await?;
    wait_tasks(&run, run.leader, "s-second", 3, v1::TaskState::Succeed).await?;
    let log = first.log();
    ensure!(
        log.streams == 1,
        "the first agent's stream was never broken: {log:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_stream_for_an_unregistered_node_is_refused() -> anyhow::Result<()> {
    let run = start("agents-unregistered", None).await?;
    let mut leader = fake::client(&run.url(run.leader)?)?;
    let response = leader
        .sync(ReceiverStream::new(heartbeats("nobody").await?))
        .await?;
    let mut inbound = response.into_inner();
    let ended = tokio::time::timeout(DEADLINE, inbound.message()).await?;
    expect_status(
        ended,
        Code::InvalidArgument,
        &["nobody", "register the node first"],
    )?;
    Ok(())
}

/// A queue holding one heartbeat for `node` (the sender is dropped: the stream then ends).
async fn heartbeats(node: &str) -> anyhow::Result<tokio::sync::mpsc::Receiver<AgentMessage>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let heartbeat = Heartbeat {
        node_name: node.into(),
        status: None,
    };
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Heartbeat(heartbeat)),
    })
    .await?;
    Ok(rx)
}
