//! A node whose agent vanishes: the leader proposes NodeDisconnected when the `Sync` stream
//! drops, and once `raft.node_timeout_ms` (3 s here, set with `--node-timeout-ms`) passes, its
//! node timer marks the node NotReady, which removes its executors and requeues their Running
//! tasks.
//!
//! Claim: after the fake agent's stream drops with a task Running on it, ListNodes shows the
//! node NotReady and the task is Pending again with a requeue event naming the node; a Sync
//! stream for the NotReady node is refused until the agent registers again.
//!
//! Claim: while the agent stays connected and heartbeats on the interval the leader gave it,
//! its node stays Ready for well past the node timeout, and its recorded heartbeat advances.

use crate::agents_support;
use crate::frontend_support;

use agents_support::fake::{self, Behaviour, FakeAgent};
use agents_support::*;
use anyhow::{Context, ensure};
use flame_proto::agent::{AgentMessage, Heartbeat, agent_message};
use flame_proto::v1;
use frontend_support::{DEADLINE, eventually, expect_status, frontend, state_of};
use std::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const NODE: &str = "node-timeout-1";
const NODE_TIMEOUT_MS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_agent_leaves_its_node_not_ready_and_its_running_task_requeued()
-> anyhow::Result<()> {
    let run = start("agents-node-timeout", Some(NODE_TIMEOUT_MS)).await?;
    let agent = FakeAgent::spawn(agent_config(&run, NODE, "agent-a", Behaviour::Hold)?);
    ping_session(&run, run.leader, "s-hold").await?;
    create_tasks(&run, run.leader, "s-hold", 1).await?;
    wait_tasks(&run, run.leader, "s-hold", 1, v1::TaskState::Running).await?;
    fake::wait_log(&agent, "the agent to hold the task", DEADLINE, |l| {
        l.runs.len() == 1
    })
    .await?;
    agent.stop();
    let dropped = Instant::now();
    let mut c = frontend(&run.cluster, run.leader)?;
    eventually("the node to be NotReady", || {
        let mut c = c.clone();
        async move {
            let nodes = c.list_nodes(v1::ListNodesRequest {}).await?.into_inner();
            let state = nodes
                .nodes
                .iter()
                .find(|n| n.metadata.as_ref().is_some_and(|m| m.name == NODE))
                .and_then(|n| n.status.as_ref().map(|s| s.state()));
            Ok((state == Some(v1::NodeState::NotReady)).then_some(()))
        }
    })
    .await?;
    let waited = dropped.elapsed();
    ensure!(
        waited.as_millis() >= u128::from(NODE_TIMEOUT_MS),
        "NotReady only after the node timeout, got {waited:?}"
    );
    let task = c
        .get_task(v1::GetTaskRequest {
            task_id: "1".into(),
            session_id: "s-hold".into(),
        })
        .await?
        .into_inner();
    ensure!(
        state_of(&task) == v1::TaskState::Pending,
        "requeued: {task:?}"
    );
    let requeue = events(&task)
        .into_iter()
        .filter(|(code, _)| *code == 0)
        .nth(1)
        .context("a requeue event after the creation event")?;
    ensure!(
        requeue.1.contains(NODE),
        "the requeue names the node: {requeue:?}"
    );
    println!("node NotReady {waited:?} after the agent's stream dropped");
    let refused = sync_once(&run, NODE).await;
    expect_status(refused, Code::InvalidArgument, &["NotReady", "register"])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_agent_keeps_its_node_ready_past_the_node_timeout() -> anyhow::Result<()> {
    let run = start("agents-node-alive", Some(NODE_TIMEOUT_MS)).await?;
    let agent = FakeAgent::spawn(agent_config(&run, NODE, "agent-a", Behaviour::Succeed)?);
    fake::wait_log(&agent, "a Sync stream", DEADLINE, |l| l.streams >= 1).await?;
    let mut c = frontend(&run.cluster, run.leader)?;
    let window = std::time::Duration::from_millis(NODE_TIMEOUT_MS * 5 / 2);
    let started = Instant::now();
    let mut first_heartbeat = None;
    let mut last_heartbeat = 0;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    // Watches the node for a fixed window (a property over time), checking it on every tick.
    while started.elapsed() < window {
        tick.tick().await;
        let node = c
            .get_node(v1::GetNodeRequest { name: NODE.into() })
            .await?
            .into_inner();
        let status = node.node.and_then(|n| n.status).context("a node status")?;
        ensure!(
            status.state() == v1::NodeState::Ready,
            "Ready after {:?}: {status:?}",
            started.elapsed()
        );
        first_heartbeat.get_or_insert(status.last_heartbeat_time);
        last_heartbeat = status.last_heartbeat_time;
    }
    let first = first_heartbeat.unwrap_or_default();
    ensure!(
        last_heartbeat > first,
        "the recorded heartbeat advanced: {first} -> {last_heartbeat}"
    );
    ensure!(agent.log().streams == 1, "one stream throughout");
    Ok(())
}

/// Opens a Sync stream with one heartbeat for `node` and returns its first message.
async fn sync_once(run: &Running, node: &str) -> Result<(), tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let heartbeat = Heartbeat {
        node_name: node.into(),
        status: None,
    };
    let _ = tx
        .send(AgentMessage {
            message: Some(agent_message::Message::Heartbeat(heartbeat)),
        })
        .await;
    let url = run
        .url(run.leader)
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let mut client = fake::client(&url).map_err(|e| tonic::Status::internal(e.to_string()))?;
    let mut inbound = client.sync(ReceiverStream::new(rx)).await?.into_inner();
    inbound.message().await.map(|_| ())
}
