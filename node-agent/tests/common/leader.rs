//! A scripted, in-process fake control-plane member for the agent tests, and helpers to run an
//! agent against it.
//!
//! What: [`FakeMember`] serves `flame.agent.v1.NodeAgent` and `flame.cluster.v1.Cluster` on
//! 127.0.0.1 (port 0). As a leader it accepts `RegisterNode`, holds the `Sync` stream, acks
//! heartbeats, and lets the test push `Assignments` and read everything the agent sent. As a
//! follower it answers `NotLeader` (with or without a hint) and reports a configurable leader in
//! `Cluster.Status`.
//!
//! Why a fake: the control-plane side of the protocol is written in parallel; the agent is
//! tested against the contract (`docs/agent-protocol.md`) itself.
//!
//! Caveat: one stream at a time; a newer `Sync` replaces the older one's sender.

use super::Fixture;
use anyhow::{Context, bail};
use flame_node_agent::agent::{AgentError, AgentMetrics, run_with_metrics};
use flame_node_agent::config::{AgentConfig, Overrides};
use flame_proto::agent::node_agent_server::{NodeAgent, NodeAgentServer};
use flame_proto::agent::{
    AgentMessage, Assignments, Binding, ExecutorAction, ExecutorAssignment, HeartbeatAck,
    LeaderMessage, RegisterNodeRequest, RegisterNodeResponse, Report, TaskAssignment,
    agent_message, leader_message,
};
use flame_proto::cluster::cluster_server::{Cluster, ClusterServer};
use flame_proto::cluster::{
    AddLearnerRequest, ChangeMembershipRequest, MemberStatus, MembershipReply, StatusRequest,
    TransferLeaderReply, TransferLeaderRequest, TriggerSnapshotReply, TriggerSnapshotRequest,
};
use flame_proto::error::{FlameError, LeaderHint};
use flame_proto::v1;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// Heartbeat interval the fake asks for.
pub const HEARTBEAT_MS: u64 = 100;

/// How a fake member answers.
#[derive(Debug, Clone)]
pub enum Role {
    /// Accepts registration and streams.
    Leader,
    /// Refuses with NotLeader carrying `hint` (when set); `Cluster.Status` names `status_leader`.
    Follower {
        /// The leader hint in the NotLeader status.
        hint: Option<String>,
        /// `leader_api_addr` in `Cluster.Status`.
        status_leader: Option<String>,
    },
    /// Refuses the node with ALREADY_EXISTS and this message (a name held by another host).
    Refuse(String),
}

/// Something the fake saw.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A successful `RegisterNode`.
    Registered(RegisterNodeRequest),
    /// A `Sync` stream was accepted.
    StreamOpened,
    /// A message on the stream.
    Message(AgentMessage),
    /// The agent's side of the stream ended.
    StreamClosed,
}

/// State shared by the service and the test.
struct Shared {
    role: Mutex<Role>,
    seen: mpsc::UnboundedSender<Seen>,
    stream: Mutex<Option<mpsc::UnboundedSender<Result<LeaderMessage, Status>>>>,
    reports: Mutex<Vec<Report>>,
    register_calls: AtomicU64,
    status_calls: AtomicU64,
}

/// The gRPC services of the fake.
#[derive(Clone)]
struct Svc(Arc<Shared>);

/// A fake control-plane member.
pub struct FakeMember {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Arc<Shared>,
    seen: tokio::sync::Mutex<mpsc::UnboundedReceiver<Seen>>,
    server: JoinHandle<()>,
}

impl Drop for FakeMember {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeMember {
    /// Starts a member in `role` on an ephemeral loopback port.
    pub async fn start(role: Role) -> anyhow::Result<FakeMember> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            role: Mutex::new(role),
            seen: tx,
            stream: Mutex::new(None),
            reports: Mutex::new(Vec::new()),
            register_calls: AtomicU64::new(0),
            status_calls: AtomicU64::new(0),
        });
        let svc = Svc(shared.clone());
        let server = tonic::transport::Server::builder()
            .add_service(NodeAgentServer::new(svc.clone()))
            .add_service(ClusterServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener));
        let server = tokio::spawn(async move {
            let _ = server.await;
        });
        Ok(FakeMember {
            url,
            shared,
            seen: tokio::sync::Mutex::new(rx),
            server,
        })
    }

    /// Changes how the member answers from now on.
    pub fn set_role(&self, role: Role) {
        if let Ok(mut r) = self.shared.role.lock() {
            *r = role;
        }
    }

    /// `RegisterNode` calls received, refused ones included.
    pub fn register_calls(&self) -> u64 {
        self.shared.register_calls.load(Ordering::Relaxed)
    }

    /// `Cluster.Status` calls received.
    pub fn status_calls(&self) -> u64 {
        self.shared.status_calls.load(Ordering::Relaxed)
    }

    /// Every report received so far, in order.
    pub fn reports(&self) -> Vec<Report> {
        self.shared
            .reports
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Sends a snapshot on the current stream.
    pub fn send(&self, assignments: Assignments) -> anyhow::Result<()> {
        let message = LeaderMessage {
            message: Some(leader_message::Message::Assignments(assignments)),
        };
        let guard = self
            .shared
            .stream
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let stream = guard.as_ref().context("no stream open")?;
        stream.send(Ok(message)).ok().context("stream closed")
    }

    /// Ends the current stream: cleanly, or with `status`.
    pub fn end_stream(&self, status: Option<Status>) {
        let sender = self.shared.stream.lock().ok().and_then(|mut s| s.take());
        if let (Some(sender), Some(status)) = (sender, status) {
            let _ = sender.send(Err(status));
        }
    }

    /// Waits up to `limit` for something seen that `pick` accepts, skipping the rest.
    pub async fn wait_for<T>(
        &self,
        limit: Duration,
        mut pick: impl FnMut(&Seen) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = self.seen.lock().await;
        loop {
            match tokio::time::timeout_at(deadline, seen.recv()).await {
                Ok(Some(item)) => {
                    if let Some(found) = pick(&item) {
                        return Ok(found);
                    }
                }
                Ok(None) => bail!("the fake member stopped"),
                Err(_) => bail!("nothing matching within {limit:?}"),
            }
        }
    }

    /// Waits for a report that `pick` accepts.
    pub async fn wait_report<T>(
        &self,
        limit: Duration,
        mut pick: impl FnMut(&Report) -> Option<T>,
    ) -> anyhow::Result<T> {
        self.wait_for(limit, |seen| match seen {
            Seen::Message(AgentMessage {
                message: Some(agent_message::Message::Report(r)),
            }) => pick(r),
            _ => None,
        })
        .await
    }

    /// Waits for the registration and the stream's first heartbeat; returns the request.
    pub async fn wait_connected(&self, limit: Duration) -> anyhow::Result<RegisterNodeRequest> {
        let request = self
            .wait_for(limit, |s| match s {
                Seen::Registered(r) => Some(r.clone()),
                _ => None,
            })
            .await?;
        self.wait_for(limit, |s| match s {
            Seen::Message(AgentMessage {
                message: Some(agent_message::Message::Heartbeat(_)),
            }) => Some(()),
            _ => None,
        })
        .await?;
        Ok(request)
    }
}

impl Svc {
    /// The NotLeader status of a follower, if this member is one.
    fn refusal(&self) -> Option<Status> {
        let role = self.0.role.lock().map(|r| r.clone()).ok()?;
        match role {
            Role::Leader => None,
            Role::Follower { hint, .. } => Some(Status::from(FlameError::NotLeader {
                leader: hint.map(|addr| LeaderHint { id: 1, addr }),
            })),
            Role::Refuse(message) => Some(Status::from(FlameError::AlreadyExists(message))),
        }
    }
}

#[tonic::async_trait]
impl NodeAgent for Svc {
    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeResponse>, Status> {
        self.0.register_calls.fetch_add(1, Ordering::Relaxed);
        if let Some(status) = self.refusal() {
            return Err(status);
        }
        let _ = self.0.seen.send(Seen::Registered(request.into_inner()));
        Ok(Response::new(RegisterNodeResponse {
            heartbeat_interval_ms: HEARTBEAT_MS,
        }))
    }

    type SyncStream = UnboundedReceiverStream<Result<LeaderMessage, Status>>;

    async fn sync(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        if let Some(status) = self.refusal() {
            return Err(status);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut stream) = self.0.stream.lock() {
            *stream = Some(tx);
        }
        let _ = self.0.seen.send(Seen::StreamOpened);
        tokio::spawn(read_agent(self.0.clone(), request.into_inner()));
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// Records the agent's messages, acking heartbeats on the current stream.
async fn read_agent(shared: Arc<Shared>, mut inbound: Streaming<AgentMessage>) {
    while let Ok(Some(message)) = inbound.message().await {
        match &message.message {
            Some(agent_message::Message::Heartbeat(_)) => {
                let ack = LeaderMessage {
                    message: Some(leader_message::Message::Ack(HeartbeatAck {
                        timestamp_ms: 1,
                    })),
                };
                if let Some(stream) = shared.stream.lock().ok().and_then(|s| s.clone()) {
                    let _ = stream.send(Ok(ack));
                }
            }
            Some(agent_message::Message::Report(report)) => {
                if let Ok(mut reports) = shared.reports.lock() {
                    reports.push(report.clone());
                }
            }
            _ => {}
        }
        let _ = shared.seen.send(Seen::Message(message));
    }
    let _ = shared.seen.send(Seen::StreamClosed);
}

#[tonic::async_trait]
impl Cluster for Svc {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<MemberStatus>, Status> {
        self.0.status_calls.fetch_add(1, Ordering::Relaxed);
        let leader = match self.0.role.lock().map(|r| r.clone()) {
            Ok(Role::Follower { status_leader, .. }) => status_leader,
            _ => None,
        };
        Ok(Response::new(MemberStatus {
            leader_api_addr: leader,
            ..MemberStatus::default()
        }))
    }

    async fn add_learner(
        &self,
        _: Request<AddLearnerRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn change_membership(
        &self,
        _: Request<ChangeMembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn transfer_leader(
        &self,
        _: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn trigger_snapshot(
        &self,
        _: Request<TriggerSnapshotRequest>,
    ) -> Result<Response<TriggerSnapshotReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// The `flmping` application running `command`.
pub fn application(command: &str) -> v1::Application {
    v1::Application {
        metadata: Some(v1::Metadata {
            id: "flmping".into(),
            name: "flmping".into(),
        }),
        spec: Some(v1::ApplicationSpec {
            command: Some(command.into()),
            ..Default::default()
        }),
        status: None,
    }
}

/// An executor assignment with `action`, bound to `session` of `app` when given.
pub fn executor(
    id: &str,
    action: ExecutorAction,
    binding: Option<(&str, &v1::Application)>,
    tasks: &[(u64, &[u8])],
) -> ExecutorAssignment {
    let session = binding.map(|(s, _)| s.to_owned()).unwrap_or_default();
    ExecutorAssignment {
        executor_id: id.into(),
        action: action as i32,
        binding: binding.map(|(s, app)| Binding {
            application: Some(app.clone()),
            session_id: s.into(),
            common_data: Some(b"common".to_vec()),
        }),
        tasks: tasks
            .iter()
            .map(|(id, input)| TaskAssignment {
                task_id: *id,
                session_id: session.clone(),
                input: Some(input.to_vec()),
            })
            .collect(),
        ..Default::default()
    }
}

/// A snapshot at `revision`.
pub fn snapshot(revision: u64, executors: Vec<ExecutorAssignment>) -> Assignments {
    Assignments {
        revision,
        executors,
    }
}

/// An agent configuration for `fx` talking to `endpoints`.
pub fn agent_config(fx: &Fixture, endpoints: &[&str]) -> anyhow::Result<AgentConfig> {
    let overrides = Overrides {
        endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
        node_name: Some("node-test".into()),
        agent_id: Some("host-test".into()),
        cpu: Some(4),
        memory: Some("8g".into()),
        gpu: Some(0),
        work_dir: Some(fx.work.clone()),
        socket_dir: Some(fx.sockets.clone()),
        flame_home: Some(fx.home.clone()),
        instance_stop_grace_ms: Some(2000),
        instance_leave_timeout_ms: Some(5000),
        instance_startup_timeout_ms: Some(20_000),
        ..Overrides::default()
    };
    Ok(AgentConfig::load(None, |_| None, &overrides)?)
}

/// An agent running in this process.
pub struct RunningAgent {
    /// Its counters.
    pub metrics: Arc<AgentMetrics>,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    /// Starts an agent with `config`.
    pub fn start(config: AgentConfig) -> RunningAgent {
        let metrics = Arc::new(AgentMetrics::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(run_with_metrics(
            config,
            async {
                let _ = stopped.await;
            },
            metrics.clone(),
        ));
        RunningAgent {
            metrics,
            stop: Some(stop),
            handle,
        }
    }

    /// Signals shutdown and waits (bounded) for the agent to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let joined = tokio::time::timeout(Duration::from_secs(30), &mut self.handle)
            .await
            .context("the agent did not stop within 30s")?;
        Ok(joined??)
    }

    /// Waits (bounded) for the agent to end by itself.
    pub async fn finished(&mut self, limit: Duration) -> anyhow::Result<Result<(), AgentError>> {
        Ok(tokio::time::timeout(limit, &mut self.handle).await??)
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The task outcomes in `reports` for `task_id`.
pub fn outcomes_of(reports: &[Report], task_id: u64) -> usize {
    reports
        .iter()
        .flat_map(|r| &r.tasks)
        .filter(|t| t.task_id == task_id)
        .count()
}
