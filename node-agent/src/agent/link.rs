//! The connection to the leader: discovery, registration and the `Sync` stream.
//!
//! What: [`round`] makes one discovery round: it tries `RegisterNode` on the last leader hint
//! and then every configured endpoint; a follower's `NotLeader` hint is followed at once, and a
//! member that knows no leader is asked for `Cluster.Status.leader_api_addr`. On the member
//! that accepts, it opens `Sync` with a heartbeat as the first message and returns a [`Link`]:
//! a sender for agent messages and a channel of [`Inbound`] leader messages fed by a reader
//! task.
//!
//! Why one round per call: the reconciler keeps running while a round is in flight (instances
//! keep working during a failover) and owns all timing, including the backoff between rounds.
//!
//! Caveats:
//! - The held executors are read when each `RegisterNode` is sent, so a round that waits on a
//!   slow member still registers what the agent holds by then.
//! - Statuses meaning "this node is refused" (`ALREADY_EXISTS`, as for a node name held by
//!   another live host; `PERMISSION_DENIED`; `UNAUTHENTICATED`; and Flame's `InvalidArgument`,
//!   a malformed registration) end the agent with [`AgentError::Refused`]; every other failure
//!   (including `InvalidState`) is retried by the caller with backoff.
//! - Plaintext HTTP/2 only; HTTP/2 keepalive (5 s) detects a leader host that vanished.

use super::AgentError;
use super::AgentMetrics;
use super::node::NodeInfo;
use crate::config::normalize_endpoint;
use flame_proto::agent::agent_message::Message as AgentKind;
use flame_proto::agent::node_agent_client::NodeAgentClient;
use flame_proto::agent::{AgentMessage, Assignments, HeldExecutor, LeaderMessage, leader_message};
use flame_proto::error::FlameError;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

/// Bound on opening a TCP connection to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on `RegisterNode`, `Cluster.Status` and opening `Sync`.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keepalive ping interval and timeout.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Heartbeat interval when the leader answers 0.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Shortest heartbeat interval the agent honours.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// Leader hints followed in one round beyond the configured endpoints.
const MAX_REDIRECTS: usize = 4;
/// Largest leader message accepted (snapshots carry task inputs and common data).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// What a round needs: where to look and what to register.
#[derive(Debug)]
pub struct Dialer {
    /// Configured members, normalized URLs.
    pub endpoints: Vec<String>,
    /// The node description.
    pub node: NodeInfo,
    /// The executors the agent holds right now.
    pub held: watch::Receiver<Vec<HeldExecutor>>,
    /// Counters.
    pub metrics: Arc<AgentMetrics>,
}

/// A message from the leader, or the end of the stream.
#[derive(Debug)]
pub enum Inbound {
    /// A snapshot of the node's desired state.
    Assignments(Assignments),
    /// A heartbeat acknowledgement.
    Ack,
    /// The stream ended; `hint` is the leader's address when the member named one.
    Closed {
        /// Why.
        reason: String,
        /// Where the leader is, as far as the closing member knew.
        hint: Option<String>,
    },
}

/// A registered node's stream to the leader.
#[derive(Debug)]
pub struct Link {
    /// The leader's address.
    pub addr: String,
    /// The heartbeat interval the leader asked for.
    pub heartbeat: Duration,
    /// Messages to the leader.
    out: mpsc::UnboundedSender<AgentMessage>,
    /// Messages from the leader.
    pub inbound: mpsc::UnboundedReceiver<Inbound>,
    /// The task reading the stream.
    reader: JoinHandle<()>,
}

impl Link {
    /// Queues `message` for the leader; `false` when the stream is gone.
    pub fn send(&self, message: AgentKind) -> bool {
        self.out
            .send(AgentMessage {
                message: Some(message),
            })
            .is_ok()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Why a round did not produce a link.
#[derive(Debug)]
pub enum RoundError {
    /// The cluster refused this node; retrying will not help.
    Fatal(AgentError),
    /// Nothing accepted this time; retry after a backoff.
    Retry(String),
}

/// What one member answered.
enum Attempt {
    /// Registered and streaming.
    Connected(Link),
    /// Not the leader; try this address.
    Redirect(String),
    /// Failed; why.
    Failed(String),
    /// Refused this node.
    Refused(String),
}

/// One discovery round: `hint` first, then every configured endpoint, following redirects.
pub async fn round(dialer: Arc<Dialer>, hint: Option<String>) -> Result<Link, RoundError> {
    let mut queue: VecDeque<String> = hint.into_iter().collect();
    queue.extend(dialer.endpoints.iter().cloned());
    let mut tried = HashSet::new();
    let mut last = "no control-plane endpoint answered".to_owned();
    while let Some(addr) = queue.pop_front() {
        if tried.len() >= dialer.endpoints.len() + MAX_REDIRECTS {
            break;
        }
        if !tried.insert(addr.clone()) {
            continue;
        }
        match attempt(&dialer, &addr).await {
            Attempt::Connected(link) => return Ok(link),
            Attempt::Redirect(to) => {
                tracing::debug!(member = %addr, leader = %to, "following the leader hint");
                queue.push_front(to);
            }
            Attempt::Failed(why) => {
                tracing::debug!(member = %addr, reason = %why, "member did not take the node");
                last = format!("{addr}: {why}");
            }
            Attempt::Refused(message) => {
                return Err(RoundError::Fatal(AgentError::Refused {
                    endpoint: addr,
                    message,
                }));
            }
        }
    }
    Err(RoundError::Retry(last))
}

/// Registers at `addr` and opens the stream, or says where to go instead.
async fn attempt(dialer: &Dialer, addr: &str) -> Attempt {
    let channel = match connect(addr).await {
        Ok(channel) => channel,
        Err(why) => return Attempt::Failed(why),
    };
    let mut client = NodeAgentClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let request = dialer.node.register_request(dialer.held.borrow().clone());
    let held = request.executors.len();
    let response = match bounded(client.register_node(request)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return not_taken(status, addr, &channel).await,
    };
    dialer.metrics.registrations.fetch_add(1, Ordering::Relaxed);
    let heartbeat = match response.heartbeat_interval_ms {
        0 => DEFAULT_HEARTBEAT,
        ms => Duration::from_millis(ms).max(MIN_HEARTBEAT),
    };
    let (out, rx) = mpsc::unbounded_channel();
    let _ = out.send(dialer.node.heartbeat());
    let stream = match bounded(client.sync(UnboundedReceiverStream::new(rx))).await {
        Ok(response) => response.into_inner(),
        Err(status) => return not_taken(status, addr, &channel).await,
    };
    dialer.metrics.streams.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        node = %dialer.node.name(), leader = %addr, held,
        heartbeat_ms = heartbeat.as_millis() as u64, "registered"
    );
    let (tx, inbound) = mpsc::unbounded_channel();
    Attempt::Connected(Link {
        addr: addr.to_owned(),
        heartbeat,
        out,
        inbound,
        reader: tokio::spawn(read(stream, tx)),
    })
}

/// Opens a channel to `addr`.
async fn connect(addr: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(addr.to_owned())
        .map_err(|e| format!("invalid address: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true);
    endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", flame_proto::error::source_chain(&e)))
}

/// Runs an RPC within [`RPC_TIMEOUT`].
async fn bounded<T>(
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<tonic::Response<T>, Status> {
    tokio::time::timeout(RPC_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer within 5s")))
}

/// Classifies a refusal: a redirect (from the hint, or from the member's own status), a
/// refusal of the node, or a plain failure.
async fn not_taken(status: Status, addr: &str, channel: &Channel) -> Attempt {
    if matches!(
        status.code(),
        Code::AlreadyExists | Code::PermissionDenied | Code::Unauthenticated
    ) {
        return Attempt::Refused(status.message().to_owned());
    }
    match FlameError::from(status) {
        // The request itself is malformed (say, an invalid node name): retrying cannot help.
        FlameError::InvalidArgument(message) => Attempt::Refused(message),
        FlameError::NotLeader { leader: Some(hint) } => match normalize_endpoint(&hint.addr) {
            Ok(to) => Attempt::Redirect(to),
            Err(why) => Attempt::Failed(format!("unusable leader hint: {why}")),
        },
        e @ (FlameError::NotLeader { leader: None } | FlameError::Unavailable(_)) => {
            match leader_from_status(addr, channel).await {
                Some(to) => Attempt::Redirect(to),
                None => Attempt::Failed(e.to_string()),
            }
        }
        e => Attempt::Failed(e.to_string()),
    }
}

/// The leader's client address as the member at `addr` reports it in `Cluster.Status`
/// (`addr` itself when it has become the leader since it refused).
async fn leader_from_status(addr: &str, channel: &Channel) -> Option<String> {
    let asked = flame_proto::endpoint::leader_from_status(addr, channel.clone(), RPC_TIMEOUT);
    asked.await.ok().flatten()
}

/// Forwards the leader's messages until the stream ends, then reports why.
async fn read(mut stream: Streaming<LeaderMessage>, tx: mpsc::UnboundedSender<Inbound>) {
    loop {
        let inbound = match stream.message().await {
            Ok(Some(LeaderMessage { message })) => match message {
                Some(leader_message::Message::Assignments(a)) => Inbound::Assignments(a),
                Some(leader_message::Message::Ack(_)) => Inbound::Ack,
                None => continue,
            },
            Ok(None) => Inbound::Closed {
                reason: "the leader ended the stream".to_owned(),
                hint: None,
            },
            Err(status) => closed_by(status),
        };
        let last = matches!(inbound, Inbound::Closed { .. });
        if tx.send(inbound).is_err() || last {
            return;
        }
    }
}

/// The end of a stream that failed with `status`.
fn closed_by(status: Status) -> Inbound {
    let error = FlameError::from(status);
    let hint = match &error {
        FlameError::NotLeader { leader: Some(h) } => normalize_endpoint(&h.addr).ok(),
        _ => None,
    };
    Inbound::Closed {
        reason: error.to_string(),
        hint,
    }
}
