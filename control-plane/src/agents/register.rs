//! `RegisterNode` on the leader: validate, propose `Command::RegisterNode`, answer the heartbeat
//! interval.
//!
//! Rules:
//! - Only the leader registers nodes; any other member answers NotLeader with the leader hint.
//! - The node must pass `flame_proto::model::Node::from_registration` (INVALID_ARGUMENT
//!   otherwise); `agent_id` must be non-empty and at most [`MAX_AGENT_ID_LEN`] characters; at
//!   most [`MAX_HELD_EXECUTORS`] held executors may be listed.
//! - A `cache`, when present, must pass `flame_proto::model::CacheEndpoint::validate` (a
//!   `grpc://` or `grpcs://` Flight URL with host and port, a `host:port` peer address;
//!   INVALID_ARGUMENT naming the field otherwise). It becomes part of the node description, which
//!   a re-registration replaces whole: an agent that registers without a cache clears it.
//! - The state machine refuses another agent for a live (Ready or Unknown) node; the refusal is
//!   reworded here to name the node and both agents, and says when the node becomes free.
//!
//! Caveat: the held executors are logged, not acted on; level-triggered snapshots reconcile
//! them (see the module docs of [`super`]).

use crate::member::handle::MemberHandle;
use crate::state::{Command, Outcome};
use flame_proto::agent::{RegisterNodeRequest, RegisterNodeResponse};
use flame_proto::error::FlameError;
use flame_proto::model::{CacheEndpoint, Node};
use std::time::Duration;
use tracing::{debug, info};

/// Longest accepted agent id, in characters.
pub const MAX_AGENT_ID_LEN: usize = 256;

/// Most held executors one registration may list.
pub const MAX_HELD_EXECUTORS: usize = 4096;

/// Serves one RegisterNode call; see the module docs.
pub async fn register(
    handle: &MemberHandle,
    heartbeat_interval: Duration,
    request: RegisterNodeRequest,
) -> Result<RegisterNodeResponse, FlameError> {
    if super::stream::leading_term(handle).is_none() {
        return Err(super::stream::not_leader(handle));
    }
    let held = request.executors.len();
    let (node, agent_id) = validate(request.node, request.cache, request.agent_id, held)?;
    let name = node.name.clone();
    let cache = node.cache.clone();
    let command = Command::RegisterNode {
        node,
        agent_id: agent_id.clone(),
    };
    match handle.write(command).await?.outcome {
        Outcome::Node(Ok(_)) => {}
        Outcome::Node(Err(FlameError::AlreadyExists(_))) => {
            return Err(taken(handle, &name, &agent_id));
        }
        Outcome::Node(Err(error)) => return Err(error),
        other => {
            return Err(FlameError::Internal(format!(
                "RegisterNode was answered with {other:?}"
            )));
        }
    }
    log_held(handle, &name, &request.executors);
    info!(
        node = %name,
        agent_id = %agent_id,
        cache = ?cache.as_ref().map(|c| &c.flight_endpoint),
        "node registered"
    );
    Ok(RegisterNodeResponse {
        heartbeat_interval_ms: u64::try_from(heartbeat_interval.as_millis()).unwrap_or(u64::MAX),
    })
}

/// Checks the request's node, cache endpoint, agent id and held-executor count; the node it
/// returns carries the cache.
fn validate(
    node: Option<flame_proto::v1::Node>,
    cache: Option<flame_proto::cluster::CacheEndpoint>,
    agent_id: String,
    held: usize,
) -> Result<(Node, String), FlameError> {
    let node = node.ok_or_else(|| FlameError::InvalidArgument("node is required".into()))?;
    let mut node = Node::from_registration(node)?;
    node.cache = cache.map(CacheEndpoint::try_from).transpose()?;
    if agent_id.is_empty() {
        return Err(FlameError::InvalidArgument(
            "agent_id must not be empty".into(),
        ));
    }
    let len = agent_id.chars().count();
    if len > MAX_AGENT_ID_LEN {
        return Err(FlameError::InvalidArgument(format!(
            "agent_id is {len} characters long; the limit is {MAX_AGENT_ID_LEN}"
        )));
    }
    if held > MAX_HELD_EXECUTORS {
        return Err(FlameError::InvalidArgument(format!(
            "the registration lists {held} held executors; the limit is {MAX_HELD_EXECUTORS}"
        )));
    }
    Ok((node, agent_id))
}

/// The refusal of agent `agent_id` for node `name`, naming the agent that owns it.
fn taken(handle: &MemberHandle, name: &str, agent_id: &str) -> FlameError {
    let view = handle.local();
    let owner = view.state.node_entry(name).map_or_else(
        || "another agent".to_owned(),
        |n| format!("agent '{}'", n.agent_id),
    );
    FlameError::AlreadyExists(format!(
        "node '{name}' is registered by {owner}, which is still alive; agent '{agent_id}' \
         cannot register it until that agent is gone and the node is NotReady"
    ))
}

/// Logs the executors the agent holds that the replicated state no longer places on its node
/// (the next snapshot tells the agent to stop them).
fn log_held(handle: &MemberHandle, node: &str, held: &[flame_proto::agent::HeldExecutor]) {
    if held.is_empty() {
        return;
    }
    let view = handle.local();
    let stale = held
        .iter()
        .filter(|h| {
            view.state
                .executor(&h.executor_id)
                .is_none_or(|e| e.spec.node != node)
        })
        .count();
    debug!(
        node,
        held = held.len(),
        stale,
        "agent re-registered with executors"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use flame_proto::v1;

    fn wire_node() -> v1::Node {
        v1::Node {
            metadata: Some(v1::Metadata {
                id: "n1".into(),
                name: "n1".into(),
            }),
            spec: None,
            status: Some(v1::NodeStatus {
                capacity: Some(v1::ResourceRequirement {
                    cpu: 4,
                    memory: 8 << 30,
                    gpu: 0,
                }),
                ..v1::NodeStatus::default()
            }),
        }
    }

    fn wire_cache(flight: &str, peer: &str) -> Option<flame_proto::cluster::CacheEndpoint> {
        Some(flame_proto::cluster::CacheEndpoint {
            flight_endpoint: flight.into(),
            peer_addr: peer.into(),
        })
    }

    #[test]
    fn registrations_need_a_node_and_a_bounded_agent_id() {
        assert!(validate(Some(wire_node()), None, "agent-a".into(), 0).is_ok());
        let refused = [
            validate(None, None, "a".into(), 0),
            validate(Some(wire_node()), None, String::new(), 0),
            validate(Some(wire_node()), None, "a".repeat(257), 0),
            validate(Some(wire_node()), None, "a".into(), MAX_HELD_EXECUTORS + 1),
        ];
        for result in refused {
            assert!(
                matches!(result, Err(FlameError::InvalidArgument(_))),
                "{result:?}"
            );
        }
    }

    #[test]
    fn a_registered_cache_is_validated_and_kept_on_the_node() {
        let cache = wire_cache("grpc://10.0.0.5:9090", "10.0.0.5:9091");
        let (node, _) = validate(Some(wire_node()), cache, "a".into(), 0).expect("valid");
        let cache = node.cache.expect("the node carries its cache");
        assert_eq!(cache.flight_endpoint, "grpc://10.0.0.5:9090");
        assert_eq!(cache.peer_addr, "10.0.0.5:9091");
        for (bad, field) in [
            (
                wire_cache("http://10.0.0.5:9090", "h:1"),
                "cache.flight_endpoint",
            ),
            (
                wire_cache("grpc://10.0.0.5:9090", "10.0.0.5"),
                "cache.peer_addr",
            ),
        ] {
            let err = validate(Some(wire_node()), bad, "a".into(), 0).unwrap_err();
            assert!(
                matches!(&err, FlameError::InvalidArgument(m) if m.contains(field)),
                "{err:?}"
            );
        }
    }
}
