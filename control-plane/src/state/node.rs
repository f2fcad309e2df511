//! The node lifecycle (spec section 9.1, with the recommended improvements: heartbeat times are
//! stored, so a new leader can restart the drain timers from replicated state).
//!
//! [`node_transition`] decides every event:
//!
//! | State | Event (command) | Result |
//! |---|---|---|
//! | (none) | Register (RegisterNode) | Ready |
//! | Ready, Unknown | Register by the same agent | Ready, node description replaced, executors kept |
//! | Ready, Unknown | Register by another agent | `AlreadyExists`: `node <n> is registered by another agent ...` |
//! | NotReady | Register by any agent | Ready, owned by that agent |
//! | Ready, Unknown | Heartbeat | Ready, `last_heartbeat` stored |
//! | NotReady | Heartbeat | `InvalidState`: `node <n> is not ready; register it again` |
//! | Ready, Unknown | Disconnect (NodeDisconnected) | Unknown (draining) |
//! | NotReady | Disconnect | NotReady |
//! | Ready, Unknown | Expire (MarkNodeNotReady) | NotReady: executors deleted, their Running tasks requeued |
//! | NotReady | Expire | NotReady (nothing to do) |
//! | (none) | Heartbeat, Disconnect, Expire | `NotFound`: `node <n> not found` |
//!
//! Caveat: `last_heartbeat_ms` never moves backwards; a heartbeat carrying an older time than the
//! stored one keeps the stored time.

use super::model::NodeEntry;
use super::tx::Tx;
use flame_proto::error::FlameError;
use flame_proto::model::{Node, NodeState};
use std::sync::Arc;

/// Something that happens to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeEvent {
    /// An agent registers the node.
    Register {
        /// The registering agent is the one that owns the node.
        same_agent: bool,
    },
    /// The agent's heartbeat.
    Heartbeat,
    /// The agent's connection ended.
    Disconnect,
    /// The heartbeat or drain timer fired.
    Expire,
}

/// The node transition function; `state` is `None` for an unknown node. See the module docs.
pub fn node_transition(
    name: &str,
    state: Option<NodeState>,
    event: NodeEvent,
) -> Result<NodeState, FlameError> {
    use NodeEvent as E;
    use NodeState as S;
    let live = |s: NodeState| matches!(s, S::Ready | S::Unknown);
    match (state, event) {
        (None, E::Register { .. }) => Ok(S::Ready),
        (None, _) => Err(FlameError::NotFound(format!("node {name} not found"))),
        (Some(s), E::Register { same_agent: false }) if live(s) => Err(FlameError::AlreadyExists(
            format!("node {name} is registered by another agent that is still alive"),
        )),
        (Some(_), E::Register { .. }) => Ok(S::Ready),
        (Some(S::NotReady), E::Heartbeat) => Err(FlameError::InvalidState(format!(
            "node {name} is not ready; register it again"
        ))),
        (Some(_), E::Heartbeat) => Ok(S::Ready),
        (Some(S::NotReady), E::Disconnect | E::Expire) => Ok(S::NotReady),
        (Some(_), E::Disconnect) => Ok(S::Unknown),
        (Some(_), E::Expire) => Ok(S::NotReady),
    }
}

fn current(tx: &Tx<'_>, name: &str) -> Result<Node, FlameError> {
    tx.state
        .node(name)
        .cloned()
        .ok_or_else(|| FlameError::NotFound(format!("node {name} not found")))
}

/// RegisterNode: stores the agent's description of the node as Ready.
pub(crate) fn register(
    tx: &mut Tx<'_>,
    mut node: Node,
    agent_id: String,
) -> Result<Node, FlameError> {
    let now_ms = tx.now_ms;
    if node.name.is_empty() {
        return Err(FlameError::InvalidArgument(
            "node name must not be empty".into(),
        ));
    }
    let stored = tx.state.node_entry(&node.name);
    let same_agent = stored.is_some_and(|n| n.agent_id == agent_id);
    let event = NodeEvent::Register { same_agent };
    node.state = node_transition(&node.name, stored.map(|n| n.node.state), event)?;
    node.last_heartbeat_ms = now_ms.max(stored.map_or(i64::MIN, |n| n.node.last_heartbeat_ms));
    let name = node.name.clone();
    tx.log.node_changed(&name);
    tx.state
        .nodes
        .insert(name.clone().into(), Arc::new(NodeEntry { node, agent_id }));
    current(tx, &name)
}

/// Runs `event` for node `name` and stores the new state (and heartbeat time, if given).
fn step(
    tx: &mut Tx<'_>,
    name: &str,
    event: NodeEvent,
    heartbeat_ms: Option<i64>,
) -> Result<(NodeState, NodeState), FlameError> {
    let before = tx.state.node(name).map(|n| n.state);
    let after = node_transition(name, before, event)?;
    let Some(entry) = tx.state.node_mut(name) else {
        return Err(FlameError::NotFound(format!("node {name} not found")));
    };
    let old = (entry.node.state, entry.node.last_heartbeat_ms);
    entry.node.state = after;
    if let Some(at) = heartbeat_ms {
        entry.node.last_heartbeat_ms = entry.node.last_heartbeat_ms.max(at);
    }
    if (entry.node.state, entry.node.last_heartbeat_ms) != old {
        tx.log.node_changed(name);
    }
    Ok((before.unwrap_or(after), after))
}

/// Heartbeat: stores the time; an Unknown (draining) node is Ready again.
pub(crate) fn heartbeat(tx: &mut Tx<'_>, name: &str) -> Result<Node, FlameError> {
    step(tx, name, NodeEvent::Heartbeat, Some(tx.now_ms))?;
    current(tx, name)
}

/// NodeDisconnected: the node drains as Unknown.
pub(crate) fn disconnected(tx: &mut Tx<'_>, name: &str) -> Result<Node, FlameError> {
    step(tx, name, NodeEvent::Disconnect, None)?;
    current(tx, name)
}

/// MarkNodeNotReady, the node's part: the node becomes NotReady. Returns it and whether it
/// expired now (then the rules layer drops its executors).
pub(crate) fn mark_not_ready(tx: &mut Tx<'_>, name: &str) -> Result<(Node, bool), FlameError> {
    let (before, _) = step(tx, name, NodeEvent::Expire, None)?;
    Ok((current(tx, name)?, before != NodeState::NotReady))
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeState as S;

    #[test]
    fn another_agent_is_refused_while_the_node_is_live() {
        let other = NodeEvent::Register { same_agent: false };
        for live in [S::Ready, S::Unknown] {
            let err = node_transition("n1", Some(live), other).unwrap_err();
            assert!(matches!(err, FlameError::AlreadyExists(_)));
        }
        assert_eq!(
            node_transition("n1", Some(S::NotReady), other),
            Ok(S::Ready)
        );
        assert_eq!(node_transition("n1", None, other), Ok(S::Ready));
    }

    #[test]
    fn heartbeats_revive_draining_nodes_but_not_expired_ones() {
        let hb = NodeEvent::Heartbeat;
        assert_eq!(node_transition("n", Some(S::Unknown), hb), Ok(S::Ready));
        assert!(matches!(
            node_transition("n", Some(S::NotReady), hb),
            Err(FlameError::InvalidState(_))
        ));
        assert!(matches!(
            node_transition("n", None, NodeEvent::Expire),
            Err(FlameError::NotFound(m)) if m == "node n not found"
        ));
    }
}
