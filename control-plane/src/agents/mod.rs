//! The `flame.agent.v1.NodeAgent` service on every member: node registration and the `Sync`
//! stream over which node agents pull their assignments from the leader
//! (docs/agent-protocol.md is the contract).
//!
//! What:
//! - `RegisterNode` ([`register`]): on the leader, validates the node (hostname-like name,
//!   bounded fields, allocatable within capacity; see
//!   `flame_proto::model::Node::from_registration`), proposes `Command::RegisterNode` and answers
//!   the heartbeat interval (`raft.agent_heartbeat_ms`). A second agent claiming a live node is
//!   refused with ALREADY_EXISTS naming the node and both agent ids.
//! - `Sync` ([`stream`]): served only by the leader. Assignments are level-triggered snapshots
//!   of the node's executors ([`snapshot`]); reports become replicated commands ([`report`]).
//!
//! Why only the leader: the leader's applied state is the newest, so snapshots computed there
//! are never older than what was committed, and a report's commands are proposed without a
//! forwarding hop. Followers answer UNAVAILABLE with the leader hint (`flame-leader-id` /
//! `flame-leader-addr`), which agents follow.
//!
//! Caveats:
//! - The executors an agent says it holds at registration are only logged: the next snapshot
//!   tells the agent which of them are still valid (those absent from it are stopped).
//! - Incoming messages may be as large as a batch of task outputs (the `Tasks` service's
//!   limit); an agent must accept snapshots carrying every binding's common data and every
//!   running task's input of its node.

pub mod register;
pub mod registry;
pub mod report;
pub mod snapshot;
pub mod stream;

use crate::config::Config;
use crate::member::handle::MemberHandle;
use crate::member::limits::{batch_payload_limit, decoding_limit};
use flame_proto::agent::node_agent_server::{NodeAgent, NodeAgentServer};
use flame_proto::agent::{AgentMessage, RegisterNodeRequest, RegisterNodeResponse};
use flame_proto::error::FlameError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

/// The `flame.agent.v1.NodeAgent` service of one member.
#[derive(Clone)]
pub struct AgentService {
    ctx: stream::Context,
}

impl AgentService {
    /// The service of `handle`: agents are told to heartbeat every `raft.agent_heartbeat_ms`;
    /// its streams end when `shutdown` turns true.
    pub fn new(handle: MemberHandle, config: &Config, shutdown: watch::Receiver<bool>) -> Self {
        AgentService {
            ctx: stream::Context {
                handle,
                streams: Arc::new(registry::Streams::default()),
                heartbeat_interval: Duration::from_millis(config.raft.agent_heartbeat_ms),
                shutdown,
            },
        }
    }

    /// The number of nodes whose agent holds a `Sync` stream on this member.
    pub fn streams(&self) -> usize {
        self.ctx.streams.len()
    }
}

/// The tonic server for the NodeAgent service of `handle`, accepting reports up to the batch
/// payload limit.
pub fn agent_server(
    handle: MemberHandle,
    config: &Config,
    shutdown: watch::Receiver<bool>,
) -> NodeAgentServer<AgentService> {
    let limit = decoding_limit(batch_payload_limit(&handle.limits));
    NodeAgentServer::new(AgentService::new(handle, config, shutdown))
        .max_decoding_message_size(limit)
}

/// Logs a failed RPC and maps it to a status: server faults ([`FlameError::is_server_fault`]) at
/// `warn`, the rest at `debug`, exactly as the client API does.
fn refuse(rpc: &'static str, error: FlameError) -> Status {
    if error.is_server_fault() {
        warn!(rpc, code = ?error.code(), %error, "agent request failed")
    } else {
        debug!(rpc, code = ?error.code(), %error, "agent request refused")
    }
    Status::from(error)
}

#[tonic::async_trait]
impl NodeAgent for AgentService {
    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        let interval = self.ctx.heartbeat_interval;
        register::register(&self.ctx.handle, interval, request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| refuse("RegisterNode", e))
    }

    type SyncStream = stream::SyncStream;

    async fn sync(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        stream::start(self.ctx.clone(), request.into_inner())
            .map(Response::new)
            .map_err(|e| refuse("Sync", e))
    }
}
